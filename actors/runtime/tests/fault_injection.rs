//! `--fault-injection` with real ractor actors: an injected panic happens
//! in the named actor's own task, even an idle one, and its supervisor
//! restarts it; its siblings are untouched; a bad name is refused with
//! the names there are; an orderly stop injects nothing.
//!
//! Its own test binary: enabling injection is process-wide.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use vpblu_runtime::fault;
use vpblu_runtime::{ChildSpec, RestartPolicy, Supervisor, SupervisorArgs};

/// Idle: takes no messages, counts its starts and orderly stops. Keeps
/// ractor's default supervision handler, which stops the actor when any
/// child of its ends: the pin must never reach it.
struct Idle;

#[derive(Clone, Default)]
struct Counts {
    starts: Arc<AtomicUsize>,
    stops: Arc<AtomicUsize>,
}

impl Actor for Idle {
    type Msg = ();
    type State = Counts;
    type Arguments = Counts;

    async fn pre_start(&self, _: ActorRef<()>, counts: Counts) -> Result<Counts, ActorProcessingErr> {
        counts.starts.fetch_add(1, Ordering::SeqCst);
        Ok(counts)
    }

    async fn post_stop(&self, _: ActorRef<()>, counts: &mut Counts) -> Result<(), ActorProcessingErr> {
        counts.stops.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn an_injected_panic_restarts_only_the_named_actor() {
    fault::enable();
    let (victim, bystander) = (Counts::default(), Counts::default());
    let children = vec![
        ChildSpec::new("victim", {
            let c = victim.clone();
            move || (Idle, c.clone())
        }),
        ChildSpec::new("bystander", {
            let c = bystander.clone();
            move || (Idle, c.clone())
        }),
    ];
    let policy = RestartPolicy { backoff_initial: Duration::from_millis(10), ..RestartPolicy::default() };
    let (supervisor, handle) =
        Actor::spawn(None, Supervisor, SupervisorArgs { children, policy, on_exit: None }).await.unwrap();
    until("both children to register", || fault::children() == ["bystander", "victim"]).await;

    assert_eq!(fault::inject_panic("victim"), Ok(1));
    until("the victim's restart", || victim.starts.load(Ordering::SeqCst) == 2).await;
    // A panic skips post_stop: the actor died mid-life, it was not stopped.
    assert_eq!(victim.stops.load(Ordering::SeqCst), 0);
    assert_eq!(bystander.starts.load(Ordering::SeqCst), 1);
    // The restarted victim has a pin again: it can be hit twice.
    until("the new victim to register", || fault::children() == ["bystander", "victim"]).await;
    assert_eq!(fault::inject_panic("victim"), Ok(1));
    until("the second restart", || victim.starts.load(Ordering::SeqCst) == 3).await;

    let err = fault::inject_panic("nobody").unwrap_err();
    assert!(err.contains("\"nobody\"") && err.contains("bystander, victim"), "{err}");

    // An orderly stop ends the pins too, without a panic or a restart.
    supervisor.stop(None);
    handle.await.unwrap();
    assert_eq!((victim.starts.load(Ordering::SeqCst), victim.stops.load(Ordering::SeqCst)), (3, 1));
    assert_eq!((bystander.starts.load(Ordering::SeqCst), bystander.stops.load(Ordering::SeqCst)), (1, 1));
    until("no pins left", || fault::children().is_empty()).await;
}
