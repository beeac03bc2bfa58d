//! Feeding an actor's mailbox from a stream: a watch channel, a broadcast
//! channel, a kube watcher. Actors never block on a channel themselves
//! (STYLE: "streams run in tasks that `cast` into their actor"); this is
//! that task, written once.

use futures::{Stream, StreamExt};
use ractor::{ActorRef, Message};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;

/// The task [`forward`] started. Dropping it aborts the task, so an actor
/// keeps it in its state and the task ends with the actor, however the
/// actor ends (stopped, failed, killed).
#[derive(Debug)]
#[must_use = "dropping a Forward stops forwarding at once"]
pub struct Forward(JoinHandle<()>);

impl Drop for Forward {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Casts every item of `stream` into `actor`, in order, until the stream
/// ends or the actor is gone (a cast fails). To tell the actor that the
/// stream ended, chain a last message onto it
/// (`stream.chain(futures::stream::once(async { Msg::Ended }))`).
pub fn forward<S, M>(stream: S, actor: ActorRef<M>) -> Forward
where
    S: Stream<Item = M> + Send + 'static,
    M: Message,
{
    Forward(crate::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        while let Some(msg) = stream.next().await {
            if actor.cast(msg).is_err() {
                return; // the actor is stopping
            }
        }
    }))
}

/// Every value `rx` takes from now on (not the one it holds now); ends when
/// the sender is dropped. Values set faster than they are read coalesce
/// into the newest, as a watch channel does.
pub fn watch_changes<T>(rx: watch::Receiver<T>) -> impl Stream<Item = T> + Send + 'static
where
    T: Clone + Send + Sync + 'static,
{
    futures::stream::unfold(rx, |mut rx| async move {
        rx.changed().await.ok()?;
        let value = rx.borrow_and_update().clone();
        Some((value, rx))
    })
}

/// Every message sent on the broadcast channel `rx` subscribed to: `Ok`
/// with the message, or `Err(n)` when the receiver fell behind and `n`
/// messages were lost. Ends when every sender is dropped.
pub fn broadcast_messages<T>(
    rx: broadcast::Receiver<T>,
) -> impl Stream<Item = Result<T, u64>> + Send + 'static
where
    T: Clone + Send + 'static,
{
    futures::stream::unfold(rx, |mut rx| async move {
        let item = match rx.recv().await {
            Ok(message) => Ok(message),
            Err(broadcast::error::RecvError::Lagged(lost)) => Err(lost),
            Err(broadcast::error::RecvError::Closed) => return None,
        };
        Some((item, rx))
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use ractor::{Actor, ActorProcessingErr, ActorRef};
    use tokio::sync::mpsc;

    use super::*;

    /// Passes every message it gets to a test channel.
    struct Echo;

    impl Actor for Echo {
        type Msg = String;
        type State = mpsc::UnboundedSender<String>;
        type Arguments = mpsc::UnboundedSender<String>;

        async fn pre_start(
            &self,
            _: ActorRef<String>,
            out: Self::Arguments,
        ) -> Result<Self::State, ActorProcessingErr> {
            Ok(out)
        }

        async fn handle(
            &self,
            _: ActorRef<String>,
            msg: String,
            out: &mut Self::State,
        ) -> Result<(), ActorProcessingErr> {
            out.send(msg)?;
            Ok(())
        }
    }

    async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a message within 5 s")
            .expect("the echo actor is up")
    }

    #[tokio::test]
    async fn watch_changes_arrive_in_order_then_the_end() {
        let (out, mut got) = mpsc::unbounded_channel();
        let (echo, handle) = Actor::spawn(None, Echo, out).await.expect("echo starts");
        let (tx, rx) = watch::channel(0u32);
        let ended = futures::stream::once(async { "ended".to_owned() });
        let _forward = forward(watch_changes(rx).map(|v| v.to_string()).chain(ended), echo.clone());
        tx.send_replace(1);
        assert_eq!(next(&mut got).await, "1", "the value held at the start is not repeated");
        tx.send_replace(2);
        assert_eq!(next(&mut got).await, "2");
        drop(tx);
        assert_eq!(next(&mut got).await, "ended");
        echo.stop(None);
        handle.await.expect("echo stops");
    }

    #[tokio::test]
    async fn a_lagging_broadcast_receiver_says_how_much_it_lost() {
        let (tx, rx) = broadcast::channel(2);
        for i in 0..5 {
            tx.send(i).expect("a receiver exists");
        }
        drop(tx);
        let items: Vec<Result<i32, u64>> = broadcast_messages(rx).collect().await;
        assert_eq!(items, vec![Err(3), Ok(3), Ok(4)]);
    }

    #[tokio::test]
    async fn dropping_the_forward_stops_the_task() {
        let (out, mut got) = mpsc::unbounded_channel();
        let (echo, handle) = Actor::spawn(None, Echo, out).await.expect("echo starts");
        let (tx, rx) = watch::channel(0u32);
        let forward = forward(watch_changes(rx).map(|v| v.to_string()), echo.clone());
        tx.send_replace(1);
        assert_eq!(next(&mut got).await, "1");
        drop(forward);
        tokio::task::yield_now().await;
        tx.send_replace(2);
        let late = tokio::time::timeout(Duration::from_millis(200), got.recv()).await;
        assert!(late.is_err(), "nothing is forwarded after the Forward is dropped: {late:?}");
        echo.stop(None);
        handle.await.expect("echo stops");
    }
}
