//! [`Slot`]: where the running incarnation of a supervised actor is found.
//!
//! A supervisor restarts a child as a new actor with a new reference, so a
//! caller cannot keep the reference it was first given. The child publishes
//! itself in a slot when it starts and withdraws when it stops; a caller
//! asks the slot, which waits (up to a limit) for an incarnation while the
//! child is between a failure and its restart.

use std::fmt;
use std::time::Duration;

use ractor::rpc::CallResult;
use ractor::{ActorRef, ActorStatus, Message, RpcReplyPort};
use tokio::sync::watch;

/// Why a [`Slot::call`] got no answer.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SlotError {
    /// No incarnation of the actor ran within the wait.
    #[error("the {actor} actor was not running for {waited:?} (restarting, or its supervisor gave up)")]
    NotRunning {
        /// The actor's name.
        actor: &'static str,
        /// How long the caller waited.
        waited: Duration,
    },
    /// The actor stopped (or failed) before it answered.
    #[error("the {actor} actor stopped before it answered; its supervisor restarts it")]
    Stopped {
        /// The actor's name.
        actor: &'static str,
    },
}

/// The running incarnation of the actor `name`, if any. Clones share it.
pub struct Slot<M: Message> {
    name: &'static str,
    current: watch::Sender<Option<ActorRef<M>>>,
    wait: Duration,
}

impl<M: Message> Clone for Slot<M> {
    fn clone(&self) -> Self {
        Slot { name: self.name, current: self.current.clone(), wait: self.wait }
    }
}

impl<M: Message> fmt::Debug for Slot<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot").field("name", &self.name).field("running", &self.running()).finish()
    }
}

impl<M: Message> Slot<M> {
    /// An empty slot for the actor `name`; calls wait up to `wait` for an
    /// incarnation (longer than the supervisor's longest restart backoff).
    pub fn new(name: &'static str, wait: Duration) -> Self {
        Slot { name, current: watch::Sender::new(None), wait }
    }

    /// The actor's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// Whether an incarnation is published now.
    pub fn running(&self) -> bool {
        self.current.borrow().as_ref().is_some_and(|actor| actor.get_status() < ActorStatus::Stopping)
    }

    /// Called by the actor when it has started.
    pub fn publish(&self, actor: &ActorRef<M>) {
        self.current.send_replace(Some(actor.clone()));
    }

    /// Called by the actor when it stops: empties the slot unless a newer
    /// incarnation already took it.
    pub fn withdraw(&self, actor: &ActorRef<M>) {
        self.current.send_if_modified(|current| {
            let mine = current.as_ref().is_some_and(|c| c.get_id() == actor.get_id());
            if mine {
                *current = None;
            }
            mine
        });
    }

    /// Sends the message `build` makes and waits for the answer. A message
    /// the actor had not answered when it stopped is not resent: the caller
    /// decides what a lost step means.
    pub async fn call<T, F>(&self, build: F) -> Result<T, SlotError>
    where
        T: Send + 'static,
        F: FnOnce(RpcReplyPort<T>) -> M,
    {
        let actor = self.running_actor().await?;
        match actor.call(build, None).await {
            Ok(CallResult::Success(answer)) => Ok(answer),
            Ok(CallResult::Timeout | CallResult::SenderError) | Err(_) => {
                Err(SlotError::Stopped { actor: self.name })
            }
        }
    }

    async fn running_actor(&self) -> Result<ActorRef<M>, SlotError> {
        let mut rx = self.current.subscribe();
        // A failed incarnation may still be in the slot (a panic skips
        // `post_stop`) until its restart publishes the next one.
        let alive = |current: &Option<ActorRef<M>>| {
            current.as_ref().is_some_and(|actor| actor.get_status() < ActorStatus::Stopping)
        };
        let waited = tokio::time::timeout(self.wait, rx.wait_for(alive)).await;
        match waited {
            Ok(Ok(actor)) => Ok(actor.clone().expect("wait_for returned a published actor")),
            // The sender lives in `self`: the channel cannot close here.
            Ok(Err(_)) | Err(_) => Err(SlotError::NotRunning { actor: self.name, waited: self.wait }),
        }
    }
}

#[cfg(test)]
mod tests {
    use ractor::{Actor, ActorProcessingErr};

    use super::*;

    struct Echo;

    enum EchoMsg {
        Twice(u32, RpcReplyPort<u32>),
        Swallow(RpcReplyPort<u32>),
    }

    impl Actor for Echo {
        type Msg = EchoMsg;
        type State = Slot<EchoMsg>;
        type Arguments = Slot<EchoMsg>;

        async fn pre_start(
            &self,
            myself: ActorRef<EchoMsg>,
            slot: Slot<EchoMsg>,
        ) -> Result<Slot<EchoMsg>, ActorProcessingErr> {
            slot.publish(&myself);
            Ok(slot)
        }

        async fn handle(
            &self,
            myself: ActorRef<EchoMsg>,
            msg: EchoMsg,
            _slot: &mut Slot<EchoMsg>,
        ) -> Result<(), ActorProcessingErr> {
            match msg {
                EchoMsg::Twice(n, reply) => {
                    let _ = reply.send(n * 2);
                }
                EchoMsg::Swallow(_reply) => myself.stop(None),
            }
            Ok(())
        }

        async fn post_stop(
            &self,
            myself: ActorRef<EchoMsg>,
            slot: &mut Slot<EchoMsg>,
        ) -> Result<(), ActorProcessingErr> {
            slot.withdraw(&myself);
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_call_waits_for_an_incarnation_and_names_the_actor_when_none_comes() {
        let slot = Slot::new("echo", Duration::from_millis(200));
        let early = tokio::spawn({
            let slot = slot.clone();
            async move { slot.call(|reply| EchoMsg::Twice(21, reply)).await }
        });
        let (first, handle) = Actor::spawn(None, Echo, slot.clone()).await.unwrap();
        assert_eq!(early.await.unwrap(), Ok(42), "a call made before the start is answered");

        assert_eq!(
            slot.call(EchoMsg::Swallow).await,
            Err(SlotError::Stopped { actor: "echo" }),
            "an actor that stops without answering is reported"
        );
        handle.await.unwrap();
        assert!(!slot.running(), "a stopped actor leaves the slot empty");
        let err = slot.call(|reply| EchoMsg::Twice(1, reply)).await.unwrap_err();
        assert!(err.to_string().contains("the echo actor was not running"), "{err}");

        let (second, handle) = Actor::spawn(None, Echo, slot.clone()).await.unwrap();
        assert_ne!(first.get_id(), second.get_id());
        slot.withdraw(&first);
        assert!(slot.running(), "an old incarnation does not withdraw a newer one");
        assert_eq!(slot.call(|reply| EchoMsg::Twice(2, reply)).await, Ok(4));
        second.stop(None);
        handle.await.unwrap();
    }
}
