//! Running the root of a supervision tree for the life of the process.

use std::future::Future;

use ractor::{Actor, ActorRef};
use tokio::sync::oneshot;

use crate::{ChildSpec, RestartPolicy, Supervisor, SupervisorArgs, SupervisorMsg};

/// How the root of a tree ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootExit {
    /// Stopped on request (SIGTERM, SIGINT): exit 0.
    Stopped,
    /// The tree gave up: exit non-zero with this reason.
    Failed(String),
}

impl RootExit {
    /// Logs how `program` ended and turns it into its exit code: 0 after an
    /// orderly stop, 1 when the tree gave up.
    pub fn into_exit_code(self, program: &str) -> std::process::ExitCode {
        match self {
            RootExit::Stopped => {
                tracing::info!(program, "stopped");
                std::process::ExitCode::SUCCESS
            }
            RootExit::Failed(reason) => {
                tracing::error!(program, %reason, "supervision tree gave up");
                std::process::ExitCode::FAILURE
            }
        }
    }
}

/// Resolves on the first SIGTERM or SIGINT.
pub async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (mut term, mut int) = match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(t), Ok(i)) => (t, i),
        // Without signal handlers we can only wait forever; the process
        // still dies on the default action.
        _ => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

/// Starts a root [`Supervisor`] over `children` and runs it until
/// `shutdown` resolves (then stops it in order: children first) or the tree
/// gives up.
pub async fn run_root<S>(children: Vec<ChildSpec>, policy: RestartPolicy, shutdown: S) -> RootExit
where
    S: Future<Output = &'static str>,
{
    run_root_observed(children, policy, shutdown, |_| {}).await
}

/// [`run_root`], handing the root supervisor to `started` once every child
/// has started: a program that embeds the tree (a test, a benchmark) finds
/// its actors from there ([`SupervisorMsg::Child`](crate::SupervisorMsg::Child)).
pub async fn run_root_observed<S>(
    children: Vec<ChildSpec>,
    policy: RestartPolicy,
    shutdown: S,
    started: impl FnOnce(ActorRef<SupervisorMsg>),
) -> RootExit
where
    S: Future<Output = &'static str>,
{
    let (tx, rx) = oneshot::channel();
    let args = SupervisorArgs { children, policy, on_exit: Some(tx) };
    let (root, handle) = match Actor::spawn(None, Supervisor, args).await {
        Ok(pair) => pair,
        Err(e) => return RootExit::Failed(format!("could not start the supervision tree: {e}")),
    };
    started(root.clone());
    tokio::pin!(handle);
    tokio::select! {
        signal = shutdown => {
            tracing::info!(signal, "shutting down");
            root.stop(Some(format!("received {signal}")));
            let _ = (&mut handle).await;
        }
        _ = &mut handle => {}
    }
    match rx.await {
        Ok(Ok(())) => RootExit::Stopped,
        Ok(Err(reason)) => RootExit::Failed(reason),
        Err(_) => RootExit::Failed("the supervision tree ended without saying why".into()),
    }
}

/// What both binaries' `main` does once its flags are parsed: installs
/// logging, turns fault injection on when asked, then runs `tree` in the
/// span `span` makes (the one that names this node or replica on every
/// line; made after logging is up, or it would record nothing) and turns
/// how it ended into the process's exit code.
pub async fn run_binary(
    program: &'static str,
    log_format: crate::LogFormat,
    fault_injection: bool,
    span: impl FnOnce() -> tracing::Span,
    tree: impl Future<Output = RootExit>,
) -> std::process::ExitCode {
    use tracing::Instrument as _;
    crate::init_logging(log_format);
    if fault_injection {
        crate::fault::enable();
    }
    let tree = async {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "{program} starting");
        tree.await
    };
    tree.instrument(span()).await.into_exit_code(program)
}
