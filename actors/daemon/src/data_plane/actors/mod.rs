//! The data plane's actors: [`WireGuardPart`] (keys, main and lane
//! devices), [`RoutingPart`] (link, rules, routes, MTU, MSS clamp) and
//! [`BpfPart`] (programs, links, maps, pod interfaces). Each owns its
//! state; the stream client's [`NodeDataPlane`](super::NodeDataPlane)
//! sends them typed messages in the order that keeps traffic encrypted or
//! dropped and gathers their answers into one ack.
//!
//! Each runs as a supervised child. Its first incarnation takes over what
//! `NodeDataPlane::open` opened (so a daemon that cannot open its data
//! plane fails before the tree starts); a restarted one re-adopts what the
//! kernel holds (the devices, the pinned maps and links, the routes and
//! rules) the way a restarted daemon does, flushing nothing. A message the
//! failed incarnation had not answered is lost: the command it belonged
//! to fails and the next one redoes every component.

mod bpf;
mod routing;
mod wireguard;

pub use bpf::{BpfMsg, BpfOpener, BpfPart};
pub use routing::{RoutingMsg, RoutingPart};
pub use wireguard::{
    HandshakeAttempt, KeyFacts, LaneDevice, MainDevice, Processes, WireGuardMsg, WireGuardOpener,
    WireGuardPart,
};

use std::future::Future;
use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, Message};
use vpblu_runtime::{ChildSpec, Slot, SlotError};

use super::{DataPlaneError, lock};
use crate::routing::RoutingConfig;

/// How long a call waits for a restarting actor (longer than the
/// supervisor's longest restart backoff, 5 s).
const WAIT_FOR_RESTART: Duration = Duration::from_secs(30);

/// A part of the data plane that one actor owns.
pub trait Part: Sized + Send + 'static {
    /// What it does.
    type Msg: Message;
    /// What it opens from, again after a restart.
    type Opener: Send + Sync + 'static;
    /// The actor's name (logs, fault injection, errors).
    const NAME: &'static str;

    /// Opens it, adopting what the kernel holds.
    fn open(opener: &Self::Opener) -> impl Future<Output = Result<Self, DataPlaneError>> + Send;

    /// Does one thing; the answer goes on the message's reply port.
    fn handle(&mut self, msg: Self::Msg) -> impl Future<Output = ()> + Send;
}

/// Where the running incarnation of each data plane actor is found.
#[derive(Clone, Debug)]
pub struct PartSlots {
    /// The WireGuard actor.
    pub wireguard: Slot<WireGuardMsg>,
    /// The Routing actor.
    pub routing: Slot<RoutingMsg>,
    /// The BPF-map actor.
    pub bpf: Slot<BpfMsg>,
}

impl PartSlots {
    pub(super) fn new() -> Self {
        PartSlots {
            wireguard: Slot::new(WireGuardPart::NAME, WAIT_FOR_RESTART),
            routing: Slot::new(RoutingPart::NAME, WAIT_FOR_RESTART),
            bpf: Slot::new(BpfPart::NAME, WAIT_FOR_RESTART),
        }
    }
}

/// Calls `slot`'s actor and flattens its answer.
pub(super) async fn ask<M: Message, T: Send + 'static>(
    slot: &Slot<M>,
    build: impl FnOnce(ractor::RpcReplyPort<Result<T, DataPlaneError>>) -> M,
) -> Result<T, DataPlaneError> {
    slot.call(build).await.map_err(DataPlaneError::Actor)?
}

/// Calls `slot`'s actor for an answer that cannot fail.
pub(super) async fn query<M: Message, T: Send + 'static>(
    slot: &Slot<M>,
    build: impl FnOnce(ractor::RpcReplyPort<T>) -> M,
) -> Result<T, DataPlaneError> {
    slot.call(build).await.map_err(DataPlaneError::Actor)
}

/// The three parts as opened at start, with what restarts re-open from.
pub(super) struct Opened {
    pub wireguard: (WireGuardPart, WireGuardOpener),
    pub routing: (RoutingPart, RoutingConfig),
    pub bpf: (BpfPart, BpfOpener),
}

/// The supervised children for `opened`, publishing into `slots`, in the
/// order they start (the WireGuard devices before the routing that
/// sizes the lane's MTU).
pub(super) fn children(opened: Opened, slots: &PartSlots) -> Vec<ChildSpec> {
    let Opened { wireguard, routing, bpf } = opened;
    vec![
        child(wireguard.0, wireguard.1, slots.wireguard.clone()),
        child(routing.0, routing.1, slots.routing.clone()),
        child(bpf.0, bpf.1, slots.bpf.clone()),
    ]
}

fn child<P: Part>(first: P, opener: P::Opener, slot: Slot<P::Msg>) -> ChildSpec {
    let args = PartArgs { first: Arc::new(Mutex::new(Some(first))), opener: Arc::new(opener), slot };
    ChildSpec::new(P::NAME, move || (PartActor::<P>(PhantomData), args.clone()))
}

/// The actor that owns a [`Part`].
struct PartActor<P>(PhantomData<fn() -> P>);

struct PartArgs<P: Part> {
    /// The part as opened at start, for the first incarnation.
    first: Arc<Mutex<Option<P>>>,
    opener: Arc<P::Opener>,
    slot: Slot<P::Msg>,
}

impl<P: Part> Clone for PartArgs<P> {
    fn clone(&self) -> Self {
        PartArgs { first: Arc::clone(&self.first), opener: Arc::clone(&self.opener), slot: self.slot.clone() }
    }
}

struct PartState<P: Part> {
    part: P,
    slot: Slot<P::Msg>,
}

impl<P: Part> Actor for PartActor<P> {
    type Msg = P::Msg;
    type State = PartState<P>;
    type Arguments = PartArgs<P>;

    async fn pre_start(
        &self,
        myself: ActorRef<P::Msg>,
        args: PartArgs<P>,
    ) -> Result<PartState<P>, ActorProcessingErr> {
        let first = lock(&args.first).take();
        let part = match first {
            Some(part) => part,
            None => {
                let part = P::open(&args.opener).await.map_err(|e| {
                    format!("the {} actor could not re-adopt the node's data plane: {e}", P::NAME)
                })?;
                tracing::info!(
                    actor = P::NAME,
                    "restarted: re-adopted what the kernel holds, nothing flushed"
                );
                part
            }
        };
        args.slot.publish(&myself);
        Ok(PartState { part, slot: args.slot })
    }

    async fn handle(
        &self,
        _myself: ActorRef<P::Msg>,
        msg: P::Msg,
        state: &mut PartState<P>,
    ) -> Result<(), ActorProcessingErr> {
        state.part.handle(msg).await;
        Ok(())
    }

    async fn post_stop(
        &self,
        myself: ActorRef<P::Msg>,
        state: &mut PartState<P>,
    ) -> Result<(), ActorProcessingErr> {
        state.slot.withdraw(&myself);
        Ok(())
    }
}

impl From<SlotError> for DataPlaneError {
    fn from(e: SlotError) -> Self {
        DataPlaneError::Actor(e)
    }
}
