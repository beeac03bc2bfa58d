//! The dashboard's HTTP surface, read-only: the page (HTML, JS and CSS
//! embedded in the binary: no CDN, no build step), the read model as JSON,
//! and server-sent events carrying it each time it is rebuilt.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::{Stream, StreamExt};
use ractor::ActorRef;
use tokio::sync::watch;
use vpblu_view::{API_PATH, STREAM_PATH};

use super::DashboardMsg;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");
const STYLE: &str = include_str!("page.css");

/// Where the page's first view goes, so it renders without a round trip.
const INITIAL_MARKER: &str = "<!--initial-view-->";

/// How long a request waits for a fresh view before taking the last one.
const FRESH_WAIT: Duration = Duration::from_secs(6);

/// What the handlers share: the latest view as JSON (empty until the
/// first build) and the actor that builds it.
#[derive(Clone, Debug)]
pub(super) struct Served {
    pub(super) view: Arc<watch::Sender<Arc<str>>>,
    pub(super) builder: ActorRef<DashboardMsg>,
    /// Turns `true` when the dashboard stops.
    pub(super) stopping: watch::Receiver<bool>,
}

/// The router.
pub(super) fn router(served: Served) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/app.js", get(|| async { asset(SCRIPT, "text/javascript; charset=utf-8") }))
        .route("/app.css", get(|| async { asset(STYLE, "text/css; charset=utf-8") }))
        .route(API_PATH, get(api))
        .route(STREAM_PATH, get(stream))
        .with_state(served)
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Asks the actor for a view built now and waits for it (a view nobody
/// watches is not rebuilt every tick), else the last one.
async fn fresh(served: &Served) -> Arc<str> {
    let mut rx = served.view.subscribe();
    rx.mark_unchanged();
    if served.builder.cast(DashboardMsg::Refresh).is_ok() {
        let _ = tokio::time::timeout(FRESH_WAIT, rx.changed()).await;
    }
    rx.borrow().clone()
}

async fn api(State(served): State<Served>) -> Response {
    let view = fresh(&served).await;
    if view.is_empty() {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "the dashboard has not built a view yet; retry in a second\n",
        )
            .into_response();
    }
    let mut response = view.to_string().into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn page(State(served): State<Served>) -> Response {
    let view = fresh(&served).await;
    // The view rides in a JSON data block, which never executes; `<` is
    // escaped so no string in it can close the block.
    let initial = if view.is_empty() { "null".to_owned() } else { view.replace('<', "\\u003c") };
    let body = PAGE.replace(INITIAL_MARKER, &initial);
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'self'"));
    response
}

/// One `mesh` event per rebuilt view; ends when the dashboard stops, so
/// open pages do not hold a stopping server (graceful shutdown waits for
/// every connection).
async fn stream(State(served): State<Served>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let first = fresh(&served).await;
    let changes = vpblu_runtime::watch_changes(served.view.subscribe());
    let views = futures::stream::once(async move { first }).chain(changes).filter(|v| {
        let built = !v.is_empty();
        async move { built }
    });
    let mut stopping = served.stopping.clone();
    let views = views.take_until(async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    });
    Sse::new(views.map(|view| Ok(Event::default().event("mesh").data(view.as_ref()))))
        .keep_alive(KeepAlive::default())
}
