//! One-for-one supervision with backoff and an intensity limit.
//!
//! ractor's default supervisor stops itself when a child dies. vpblu's
//! children are permanent: any exit that the supervisor did not ask for is
//! restarted after a backoff that doubles per recent restart. More than
//! `max_restarts` restarts within `within` means something is wrong that a
//! restart will not fix: the supervisor fails, and its own supervisor (or
//! the root runner, which exits non-zero) decides.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::sync::oneshot;

use crate::Backoff;
use crate::fault::Faultable;

type StartFn = Arc<dyn Fn(ActorCell) -> BoxFuture<'static, Result<ActorCell, SpawnErr>> + Send + Sync>;

/// How to start (and restart) one child.
#[derive(Clone)]
pub struct ChildSpec {
    name: String,
    start: StartFn,
}

impl fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildSpec").field("name", &self.name).finish_non_exhaustive()
    }
}

impl ChildSpec {
    /// A child made by `make`, called again for every restart so each start
    /// gets fresh arguments. Actors are spawned unnamed (ractor names are
    /// process-global and tests run several trees in one process); `name`
    /// is for logs, [`SupervisorMsg::Child`] and
    /// [`inject_panic`](crate::fault::inject_panic).
    pub fn new<A, F>(name: impl Into<String>, make: F) -> Self
    where
        A: Actor,
        F: Fn() -> (A, A::Arguments) + Send + Sync + 'static,
    {
        let make = Arc::new(make);
        let name = name.into();
        let child_name = name.clone();
        // Every incarnation logs under `actor{name}`, itself under the span
        // this spec is made in (the binary's, naming the node or replica),
        // whichever task sends it its messages or restarts it.
        let parent = tracing::Span::current();
        ChildSpec {
            name,
            start: Arc::new(move |supervisor| {
                let (actor, args) = make();
                let span = tracing::info_span!(parent: &parent, "actor", name = %child_name);
                let actor = Faultable::new(child_name.clone(), actor, span);
                Box::pin(async move {
                    let (child, _handle) = Actor::spawn_linked(None, actor, args, supervisor).await?;
                    Ok(child.get_cell())
                })
            }),
        }
    }

    /// The child's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Starts the child linked to `supervisor` (which receives its
    /// supervision events); for supervisors other than [`Supervisor`].
    pub async fn start_linked(&self, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
        (self.start)(supervisor).await
    }
}

/// When to restart and when to give up.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    /// Restarts allowed within `within` before the supervisor fails.
    pub max_restarts: usize,
    /// The window for `max_restarts`.
    pub within: Duration,
    /// Delay before the first restart.
    pub backoff_initial: Duration,
    /// Longest delay between restarts.
    pub backoff_max: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            max_restarts: 5,
            within: Duration::from_secs(30),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
        }
    }
}

impl RestartPolicy {
    fn backoff(&self, recent_restarts: usize) -> Duration {
        let backoff = Backoff { initial: self.backoff_initial, max: self.backoff_max };
        backoff.ceiling(u32::try_from(recent_restarts).unwrap_or(u32::MAX))
    }
}

/// What a supervisor starts with.
#[derive(Debug)]
pub struct SupervisorArgs {
    /// Its children, started in order.
    pub children: Vec<ChildSpec>,
    /// Restart policy.
    pub policy: RestartPolicy,
    /// Told how the supervisor ended: `Ok` after an orderly stop, `Err`
    /// with the reason when it gave up. The root runner uses this.
    pub on_exit: Option<oneshot::Sender<Result<(), String>>>,
}

/// Messages a supervisor takes.
#[derive(Debug)]
pub enum SupervisorMsg {
    /// Start child `index` again (sent to itself after the backoff).
    Restart(usize),
    /// The running actor of the child with this name, if it is up.
    Child(String, RpcReplyPort<Option<ActorCell>>),
}

/// A one-for-one supervisor. Empty: everything lives in its state.
#[derive(Debug, Default)]
pub struct Supervisor;

/// The supervisor's state.
#[derive(Debug)]
pub struct SupervisorState {
    children: Vec<ChildSpec>,
    running: HashMap<ActorId, usize>,
    policy: RestartPolicy,
    restarts: VecDeque<Instant>,
    on_exit: Option<oneshot::Sender<Result<(), String>>>,
    /// The span it started in (the binary's, or its own child span): its
    /// lines go there whichever task woke it.
    span: tracing::Span,
}

impl SupervisorState {
    fn name_of(&self, index: usize) -> &str {
        self.children[index].name()
    }

    fn report(&mut self, result: Result<(), String>) {
        if let Some(tx) = self.on_exit.take() {
            let _receiver_gone = tx.send(result);
        }
    }
}

async fn start_child(
    myself: &ActorRef<SupervisorMsg>,
    state: &mut SupervisorState,
    index: usize,
) -> Result<(), ActorProcessingErr> {
    let spec = state.children[index].clone();
    let cell = (spec.start)(myself.get_cell())
        .await
        .map_err(|e| format!("could not start child {:?}: {e}", spec.name()))?;
    state.running.insert(cell.get_id(), index);
    Ok(())
}

impl Actor for Supervisor {
    type Msg = SupervisorMsg;
    type State = SupervisorState;
    type Arguments = SupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SupervisorArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let mut state = SupervisorState {
            children: args.children,
            running: HashMap::new(),
            policy: args.policy,
            restarts: VecDeque::new(),
            on_exit: args.on_exit,
            span: tracing::Span::current(),
        };
        for index in 0..state.children.len() {
            if let Err(e) = start_child(&myself, &mut state, index).await {
                state.report(Err(e.to_string()));
                return Err(e);
            }
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Orderly: children stop (and run their own post_stop) before we go.
        state.running.clear();
        myself
            .stop_children_and_wait(Some("supervisor stopping".into()), Some(Duration::from_secs(10)))
            .await;
        state.report(Ok(()));
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMsg::Restart(index) => {
                tracing::info!(parent: &state.span, child = state.name_of(index), "restarting child");
                if let Err(e) = start_child(&myself, state, index).await {
                    state.report(Err(e.to_string()));
                    return Err(e);
                }
            }
            SupervisorMsg::Child(name, reply) => {
                let cell = myself.get_children().into_iter().find(|cell| {
                    state.running.get(&cell.get_id()).is_some_and(|i| state.children[*i].name() == name)
                });
                let _caller_gone = reply.send(cell);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, why) = match event {
            SupervisionEvent::ActorFailed(cell, err) => (cell, format!("failed: {err}")),
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                (cell, format!("stopped: {}", reason.unwrap_or_else(|| "no reason given".into())))
            }
            SupervisionEvent::ActorStarted(_) | SupervisionEvent::ProcessGroupChanged(_) => return Ok(()),
        };
        let Some(index) = state.running.remove(&cell.get_id()) else {
            return Ok(()); // not ours, or already being replaced
        };
        let name = state.name_of(index).to_owned();
        let now = Instant::now();
        let within = state.policy.within;
        while state.restarts.front().is_some_and(|t| now.duration_since(*t) > within) {
            state.restarts.pop_front();
        }
        if state.restarts.len() >= state.policy.max_restarts {
            let reason = format!(
                "child {name:?} {why}; {} restarts within {within:?} already: giving up",
                state.restarts.len()
            );
            tracing::error!(parent: &state.span, child = %name, %reason, "supervisor escalating");
            state.report(Err(reason.clone()));
            return Err(reason.into());
        }
        let delay = state.policy.backoff(state.restarts.len());
        state.restarts.push_back(now);
        let delay_ms = delay.as_millis() as u64;
        tracing::warn!(parent: &state.span, child = %name, %why, delay_ms, "child exited; will restart");
        myself.send_after(delay, move || SupervisorMsg::Restart(index));
        Ok(())
    }
}
