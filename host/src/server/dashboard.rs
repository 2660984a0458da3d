//! The live dashboard at `/dashboard` (docs/observability.md, "Dashboard"): one page, its
//! script and stylesheet compiled into the binary (no CDN, works offline), drawing what
//! `/monitor/live` reports, kept current by server-sent events on `/dashboard/events` (one
//! update a second, ended when the node shuts down so a drain never waits on a browser).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::{Stream, StreamExt};

use super::ServerState;

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/app.js");
const STYLE: &str = include_str!("dashboard/style.css");

/// Only the node's own assets and endpoints: nothing else may load.
const POLICY: &str = "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'";

/// The dashboard's routes.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route(
            "/dashboard",
            get(|| asset("text/html; charset=utf-8", INDEX)),
        )
        .route(
            "/dashboard/",
            get(|| asset("text/html; charset=utf-8", INDEX)),
        )
        .route(
            "/dashboard/app.js",
            get(|| asset("text/javascript; charset=utf-8", SCRIPT)),
        )
        .route(
            "/dashboard/style.css",
            get(|| asset("text/css; charset=utf-8", STYLE)),
        )
        .route("/dashboard/events", get(events))
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CONTENT_SECURITY_POLICY, POLICY),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// A `live` event now and every second after, until the node shuts down.
async fn events(
    State(state): State<Arc<ServerState>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stop = state.shutdown.clone().cancelled_owned();
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let stream = futures_util::stream::unfold((state, every), |(state, mut every)| async move {
        every.tick().await;
        let data = super::monitor::live_value(&state).to_string();
        Some((
            Ok(Event::default().event("live").data(data)),
            (state, every),
        ))
    })
    .take_until(stop);
    Sse::new(stream).keep_alive(KeepAlive::default())
}
