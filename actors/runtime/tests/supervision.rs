//! Supervision behaviour with real ractor actors: a child that fails is
//! restarted, one that keeps failing makes the tree give up, and a shutdown
//! stops children in order.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, call_t};
use vpblu_runtime::{
    ChildSpec, RestartPolicy, RootExit, Supervisor, SupervisorArgs, SupervisorMsg, run_root,
};

/// Counts its starts and stops; fails on `Crash`.
struct Flaky;

#[derive(Debug)]
enum FlakyMsg {
    Crash,
}

struct Counters {
    starts: Arc<AtomicUsize>,
    stops: Arc<AtomicUsize>,
    fail_on_start_after: Option<usize>,
    crash_soon: bool,
}

impl Actor for Flaky {
    type Msg = FlakyMsg;
    type State = (Arc<AtomicUsize>, bool);
    type Arguments = Counters;

    async fn pre_start(&self, _: ActorRef<FlakyMsg>, c: Counters) -> Result<Self::State, ActorProcessingErr> {
        let n = c.starts.fetch_add(1, Ordering::SeqCst) + 1;
        if c.fail_on_start_after.is_some_and(|limit| n > limit) {
            return Err(format!("start {n} refused").into());
        }
        Ok((c.stops, c.crash_soon))
    }

    async fn post_start(
        &self,
        myself: ActorRef<FlakyMsg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.1 {
            myself.send_after(Duration::from_millis(5), || FlakyMsg::Crash);
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _: ActorRef<FlakyMsg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        state.0.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<FlakyMsg>,
        msg: FlakyMsg,
        _: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            FlakyMsg::Crash => Err("asked to crash".into()),
        }
    }
}

fn fast_policy(max_restarts: usize) -> RestartPolicy {
    RestartPolicy {
        max_restarts,
        within: Duration::from_secs(10),
        backoff_initial: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
    }
}

fn flaky_spec(starts: &Arc<AtomicUsize>, stops: &Arc<AtomicUsize>, fail_after: Option<usize>) -> ChildSpec {
    let (starts, stops) = (starts.clone(), stops.clone());
    ChildSpec::new("flaky", move || {
        (
            Flaky,
            Counters {
                starts: starts.clone(),
                stops: stops.clone(),
                fail_on_start_after: fail_after,
                crash_soon: false,
            },
        )
    })
}

async fn child(sup: &ActorRef<SupervisorMsg>, name: &str) -> Option<ActorRef<FlakyMsg>> {
    let cell = call_t!(sup, SupervisorMsg::Child, 1000, name.to_owned()).expect("supervisor answers")?;
    Some(cell.into())
}

async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..200 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn failed_child_is_restarted() {
    let (starts, stops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let args = SupervisorArgs {
        children: vec![flaky_spec(&starts, &stops, None)],
        policy: fast_policy(3),
        on_exit: None,
    };
    let (sup, handle) = Actor::spawn(None, Supervisor, args).await.expect("supervisor starts");
    assert_eq!(starts.load(Ordering::SeqCst), 1);

    let first = child(&sup, "flaky").await.expect("child is up");
    first.cast(FlakyMsg::Crash).expect("child takes messages");
    wait_for("a restart", || starts.load(Ordering::SeqCst) == 2).await;
    let mut second = None;
    for _ in 0..100 {
        second = child(&sup, "flaky").await;
        if second.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let second = second.expect("restarted child is registered");
    assert_ne!(first.get_id(), second.get_id(), "a new actor replaced the failed one");

    sup.stop(None);
    handle.await.expect("supervisor task joins");
}

#[tokio::test]
async fn root_gives_up_past_the_intensity_limit() {
    let (starts, stops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (s, t) = (starts.clone(), stops.clone());
    // Crashes 5 ms after every start: a fault a restart does not fix.
    let children = vec![ChildSpec::new("crasher", move || {
        let c = Counters { starts: s.clone(), stops: t.clone(), fail_on_start_after: None, crash_soon: true };
        (Flaky, c)
    })];
    let exit = tokio::time::timeout(
        Duration::from_secs(5),
        run_root(children, fast_policy(3), std::future::pending()),
    )
    .await
    .expect("the tree gives up by itself");
    match exit {
        RootExit::Failed(reason) => assert!(reason.contains("crasher"), "reason names the child: {reason}"),
        RootExit::Stopped => panic!("a tree whose child keeps crashing must fail, not stop"),
    }
    assert_eq!(starts.load(Ordering::SeqCst), 4, "one start plus three restarts, then escalation");
}

#[tokio::test]
async fn a_child_that_cannot_start_fails_the_root() {
    let (starts, stops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let exit =
        run_root(vec![flaky_spec(&starts, &stops, Some(0))], fast_policy(3), std::future::pending()).await;
    assert!(matches!(exit, RootExit::Failed(ref r) if r.contains("flaky")), "{exit:?}");
}

#[tokio::test]
async fn shutdown_stops_children_in_order() {
    let (starts, stops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let shutdown = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        "test"
    };
    let exit = run_root(vec![flaky_spec(&starts, &stops, None)], fast_policy(3), shutdown).await;
    assert_eq!(exit, RootExit::Stopped);
    assert_eq!(stops.load(Ordering::SeqCst), 1, "the child's post_stop ran before the root returned");
}

#[tokio::test]
async fn a_gate_runs_its_child_only_while_open() {
    let (starts, stops) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let (open, open_rx) = tokio::sync::watch::channel(false);
    let gate = vpblu_runtime::GateArgs { open: open_rx, child: flaky_spec(&starts, &stops, None) };
    let (gate, handle) = Actor::spawn(None, vpblu_runtime::Gate, gate).await.expect("gate starts");
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(starts.load(Ordering::SeqCst), 0, "closed gate: nothing runs");

    open.send_replace(true);
    wait_for("start when opened", || starts.load(Ordering::SeqCst) == 1).await;
    open.send_replace(false);
    wait_for("stop when closed", || stops.load(Ordering::SeqCst) == 1).await;
    open.send_replace(true);
    wait_for("start again", || starts.load(Ordering::SeqCst) == 2).await;

    gate.stop(None);
    handle.await.expect("gate joins");
    assert_eq!(stops.load(Ordering::SeqCst), 2, "stopping the gate stops its child");
}
