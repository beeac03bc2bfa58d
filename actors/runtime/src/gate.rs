//! Runs a child only while a flag is true: the controller's stream server
//! runs only while its replica holds the Lease, so daemons reach the leader
//! and nobody else.

use futures::StreamExt;
use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;

use crate::{ChildSpec, Forward, forward, watch_changes};

/// A gate: starts `child` when `open` turns true, stops it when it turns
/// false. A child that fails while the gate is open fails the gate, so
/// the gate's own supervisor applies its restart policy.
#[derive(Debug, Default)]
pub struct Gate;

/// What a gate starts with.
#[derive(Debug, Clone)]
pub struct GateArgs {
    /// The flag.
    pub open: watch::Receiver<bool>,
    /// What runs while it is true.
    pub child: ChildSpec,
}

/// Messages a gate takes.
#[derive(Debug)]
pub enum GateMsg {
    /// The flag changed to this value (sent by its watch task).
    Open(bool),
}

/// The gate's state.
#[derive(Debug)]
pub struct GateState {
    child: ChildSpec,
    running: Option<ActorCell>,
    _watcher: Forward,
}

impl Gate {
    /// The supervised child `name` that runs `child` while `open` is true.
    pub fn child(name: impl Into<String>, open: watch::Receiver<bool>, child: ChildSpec) -> ChildSpec {
        let args = GateArgs { open, child };
        ChildSpec::new(name, move || (Gate, args.clone()))
    }
}

async fn close(state: &mut GateState) {
    if let Some(cell) = state.running.take() {
        tracing::info!(child = state.child.name(), "gate closed: stopping");
        let _ =
            cell.stop_and_wait(Some("gate closed".into()), Some(std::time::Duration::from_secs(10))).await;
    }
}

impl Actor for Gate {
    type Msg = GateMsg;
    type State = GateState;
    type Arguments = GateArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<GateMsg>,
        args: GateArgs,
    ) -> Result<GateState, ActorProcessingErr> {
        let mut open = args.open;
        let initial = *open.borrow_and_update();
        myself.cast(GateMsg::Open(initial))?;
        let watcher = forward(watch_changes(open).map(GateMsg::Open), myself);
        Ok(GateState { child: args.child, running: None, _watcher: watcher })
    }

    async fn post_stop(&self, _: ActorRef<GateMsg>, state: &mut GateState) -> Result<(), ActorProcessingErr> {
        close(state).await;
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<GateMsg>,
        msg: GateMsg,
        state: &mut GateState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GateMsg::Open(true) if state.running.is_none() => {
                tracing::info!(child = state.child.name(), "gate open: starting");
                let cell = state
                    .child
                    .start_linked(myself.get_cell())
                    .await
                    .map_err(|e| format!("gate could not start {:?}: {e}", state.child.name()))?;
                state.running = Some(cell);
            }
            GateMsg::Open(false) => close(state).await,
            GateMsg::Open(true) => {}
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<GateMsg>,
        event: SupervisionEvent,
        state: &mut GateState,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_else(|| "no reason given".into())))
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => return Ok(()),
        };
        if state.running.as_ref().is_some_and(|running| running.get_id() == cell.get_id()) {
            state.running = None;
            return Err(format!("{:?} {why} while the gate was open", state.child.name()).into());
        }
        Ok(())
    }
}
