//! Panics injected into single actors, for chaos tests only.
//!
//! Off unless a binary is started with `--fault-injection` (which calls
//! [`enable`]); then `POST /debug/panic/<child>` on the metrics port makes
//! the supervised child of that name panic in its own task, mid-life, the
//! way a bug would, and its supervisor restarts it. Production installs
//! never set the flag (the Helm chart has no value for it), and without it
//! the route does not exist.
//!
//! How a panic reaches an actor that may be idle: every child started by a
//! [`ChildSpec`](crate::ChildSpec) runs inside [`Faultable`], which
//! delegates everything to the actor and, when injection is enabled, links
//! a tiny "pin" actor under it. Injecting stops the pin with a marked
//! reason; the owner receives that supervision event in its own task and
//! panics there. A pin that ends for any other reason (its owner stopping)
//! is ignored.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, ActorStatus, SupervisionEvent};
use tracing::Instrument as _;

static ENABLED: AtomicBool = AtomicBool::new(false);
static PINS: Mutex<Vec<(String, ActorCell)>> = Mutex::new(Vec::new());

/// The stop reason that tells a pin's owner to panic.
const INJECTED: &str = "vpblu fault injection: panic";

/// Turns injection on for this process (the `--fault-injection` flag),
/// and says so in a warning. Children started after this call can be made
/// to panic.
pub fn enable() {
    ENABLED.store(true, Ordering::SeqCst);
    tracing::warn!(
        "--fault-injection: POST /debug/panic/<child> makes an actor panic; never use it in production"
    );
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::SeqCst)
}

fn live_pins() -> std::sync::MutexGuard<'static, Vec<(String, ActorCell)>> {
    let mut pins = PINS.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    pins.retain(|(_, pin)| pin.get_status() < ActorStatus::Stopping);
    pins
}

/// The children that can be made to panic now, by name (sorted, once each).
pub fn children() -> Vec<String> {
    let mut names: Vec<String> = live_pins().iter().map(|(name, _)| name.clone()).collect();
    names.sort();
    names.dedup();
    names
}

/// Makes every running child named `name` panic. Returns how many were
/// hit; an error names the children there are when none is called `name`,
/// or says that injection is off.
pub fn inject_panic(name: &str) -> Result<usize, String> {
    if !enabled() {
        return Err(
            "fault injection is off: start the binary with --fault-injection (never in production)".into()
        );
    }
    let hit: Vec<ActorCell> =
        live_pins().iter().filter(|(child, _)| child == name).map(|(_, pin)| pin.clone()).collect();
    if hit.is_empty() {
        return Err(format!("no running child is called {name:?}; children: {}", children().join(", ")));
    }
    for pin in &hit {
        pin.stop(Some(INJECTED.into()));
    }
    tracing::warn!(child = name, count = hit.len(), "injecting a panic (--fault-injection)");
    Ok(hit.len())
}

/// An actor run under [`ChildSpec`](crate::ChildSpec): `A` itself, plus
/// the pin that lets [`inject_panic`] reach it.
pub(crate) struct Faultable<A> {
    name: String,
    inner: A,
    /// Everything `inner` does runs in it.
    span: tracing::Span,
}

impl<A> Faultable<A> {
    pub(crate) fn new(name: String, inner: A, span: tracing::Span) -> Self {
        Faultable { name, inner, span }
    }
}

/// `A`'s state and, with injection on, its pin.
pub(crate) struct FaultableState<S> {
    inner: S,
    pin: Option<ActorCell>,
}

impl<A: Actor> Actor for Faultable<A> {
    type Msg = A::Msg;
    type State = FaultableState<A::State>;
    type Arguments = A::Arguments;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        let inner = self.inner.pre_start(myself, args).instrument(self.span.clone()).await?;
        Ok(FaultableState { inner, pin: None })
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if enabled() {
            let (pin, _handle) = Actor::spawn_linked(None, Pin, (), myself.get_cell()).await?;
            live_pins().push((self.name.clone(), pin.get_cell()));
            state.pin = Some(pin.get_cell());
        }
        self.inner.post_start(myself, &mut state.inner).instrument(self.span.clone()).await
    }

    async fn post_stop(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(pin) = state.pin.take() {
            pin.stop(None);
        }
        self.inner.post_stop(myself, &mut state.inner).instrument(self.span.clone()).await
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        self.inner.handle(myself, message, &mut state.inner).instrument(self.span.clone()).await
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<Self::Msg>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let pin_id = state.pin.as_ref().map(ActorCell::get_id);
        match &event {
            SupervisionEvent::ActorTerminated(cell, _, reason) if Some(cell.get_id()) == pin_id => {
                state.pin = None;
                if reason.as_deref() == Some(INJECTED) {
                    panic!("{}: {INJECTED}", self.name);
                }
                Ok(())
            }
            SupervisionEvent::ActorFailed(cell, _) | SupervisionEvent::ActorStarted(cell)
                if Some(cell.get_id()) == pin_id =>
            {
                Ok(())
            }
            _ => {
                let inner = self.inner.handle_supervisor_evt(myself, event, &mut state.inner);
                inner.instrument(self.span.clone()).await
            }
        }
    }
}

/// Does nothing; its stop is the signal.
struct Pin;

impl Actor for Pin {
    type Msg = ();
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, _myself: ActorRef<()>, _args: ()) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}
