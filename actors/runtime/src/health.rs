//! The `/healthz`, `/readyz` and `/metrics` endpoints as a supervised actor.
//!
//! Liveness says the process and its actor system run; readiness is a flag
//! the tree sets when it can do its job (the controller: caches synced;
//! the daemon: data plane applied). Metrics come from one shared
//! prometheus-client registry.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use prometheus_client::registry::Registry;
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::oneshot;

use crate::exposition;

/// What the endpoints read: the registry and the readiness flag.
#[derive(Clone, Debug, Default)]
pub struct Health {
    registry: Arc<Mutex<Registry>>,
    ready: Arc<AtomicBool>,
}

impl Health {
    /// An empty registry with the `vpblu` prefix, not ready.
    pub fn new() -> Self {
        Health { registry: Arc::new(Mutex::new(Registry::with_prefix("vpblu"))), ready: Arc::default() }
    }

    /// Registers metrics: `f` gets the registry under its lock.
    pub fn register(&self, f: impl FnOnce(&mut Registry)) {
        let mut registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut registry);
    }

    /// Registers a component's metrics under `vpblu_<component>_`: `f`
    /// gets a sub-registry with that prefix, so a component names its
    /// metrics once (`rejected`, not `controller_stream_rejected`) and no
    /// name can carry the prefix twice. `component` may itself hold an
    /// underscore (`controller_stream`).
    pub fn register_component(&self, component: &str, f: impl FnOnce(&mut Registry)) {
        self.register(|registry| f(registry.sub_registry_with_prefix(component)));
    }

    /// Sets readiness.
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let registry = self.registry.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }

    fn router(&self) -> Router {
        let router = Router::new()
            .route("/healthz", get(|| async { "ok\n" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics));
        // Only with --fault-injection: chaos tests make one actor panic.
        let router = if crate::fault::enabled() {
            router.route("/debug/panic", get(panic_targets)).route("/debug/panic/{child}", post(inject_panic))
        } else {
            router
        };
        router.with_state(self.clone())
    }
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    if health.ready.load(Ordering::Relaxed) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// The children a panic can be injected into, one per line.
async fn panic_targets() -> String {
    crate::fault::children().iter().map(|name| format!("{name}\n")).collect()
}

async fn inject_panic(Path(child): Path<String>) -> impl IntoResponse {
    match crate::fault::inject_panic(&child) {
        Ok(count) => (StatusCode::OK, format!("injected a panic into {count} actor(s) named {child:?}\n")),
        Err(e) => (StatusCode::NOT_FOUND, format!("{e}\n")),
    }
}

/// OpenMetrics for a scraper that asks for it (Prometheus does), the
/// classic text format for anyone else (`curl | promtool check metrics`).
async fn metrics(State(health): State<Health>, headers: HeaderMap) -> impl IntoResponse {
    let page = health.render();
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    if exposition::wants_openmetrics(accept) {
        ([(header::CONTENT_TYPE, exposition::OPENMETRICS_CONTENT_TYPE)], page)
    } else {
        ([(header::CONTENT_TYPE, exposition::CLASSIC_CONTENT_TYPE)], exposition::classic_text(&page))
    }
}

/// Serves [`Health`] on an address. Empty; the server task is its state.
#[derive(Debug, Default)]
pub struct HealthServer;

impl HealthServer {
    /// The supervised child that serves `health` on `addr`.
    pub fn child(addr: SocketAddr, health: &Health) -> crate::ChildSpec {
        let health = health.clone();
        crate::ChildSpec::new("health", move || {
            (HealthServer, HealthServerArgs { addr, health: health.clone() })
        })
    }
}

/// Where and what to serve.
#[derive(Debug)]
pub struct HealthServerArgs {
    /// Listen address.
    pub addr: SocketAddr,
    /// What to serve.
    pub health: Health,
}

/// The running server: dropping `stop` ends it gracefully.
#[derive(Debug)]
pub struct HealthServerState {
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

/// Messages the health server takes: none yet; it only serves.
#[derive(Debug)]
pub enum HealthServerMsg {}

impl Actor for HealthServer {
    type Msg = HealthServerMsg;
    type State = HealthServerState;
    type Arguments = HealthServerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: HealthServerArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let listener = tokio::net::TcpListener::bind(args.addr).await.map_err(|e| {
            format!(
                "cannot listen on {} for /healthz and /metrics: {e} (pick another --metrics-addr)",
                args.addr
            )
        })?;
        tracing::info!(addr = %args.addr, "serving /healthz, /readyz, /metrics");
        let (stop, stopped) = oneshot::channel::<()>();
        let router = args.health.router();
        let task = crate::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move {
                    let _ = stopped.await;
                })
                .await;
            if let Err(e) = served {
                tracing::error!(error = %e, "health server failed");
                // Let the supervisor restart us.
                myself.stop(Some(format!("health server failed: {e}")));
            }
        });
        Ok(HealthServerState { stop: Some(stop), task })
    }

    async fn post_stop(
        &self,
        _: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if let Some(stop) = state.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut state.task).await;
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Self::Msg>,
        msg: Self::Msg,
        _: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {}
    }
}
