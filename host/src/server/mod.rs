//! HTTP side of a node: WebSocket upgrade on any path (MPREG clients connect to `ws://host:port`)
//! `GET /health`, and the admin API under `/admin` (see [`admin`]).

pub mod admin;
mod auth;
mod peer;
mod pubsub;
mod session;

mod state;
mod window;

pub use auth::AdminAuth;
pub use state::ServerState;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::cluster::wire::PEER_PATH;

/// Accepts connections until shutdown, then drains sessions within `grace`.
pub async fn serve(listener: TcpListener, state: Arc<ServerState>, grace: Duration) {
    let app = Router::new()
        .route("/health", get(health))
        .route(PEER_PATH, get(peer_upgrade))
        .route("/admin/plugins", get(admin::list).post(admin::publish))
        .route("/admin/plugins/{name}", get(admin::describe))
        .route(
            "/admin/plugins/{name}/{version}",
            get(admin::describe).delete(admin::retire),
        )
        .fallback(upgrade)
        .with_state(state.clone());
    let token = state.shutdown.clone();
    // Replies are small and latency matters more than packet count.
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    let accepting = axum::serve(listener, app).with_graceful_shutdown({
        let token = token.clone();
        async move { token.cancelled().await }
    });
    // Stop accepting, then wait for every session (and what runs for it) to end.
    let sessions = state.sessions.clone();
    let drained = async move {
        if let Err(e) = accepting.await {
            tracing::error!(error = %e, "server stopped with an error");
        }
        sessions.close();
        sessions.wait().await;
    };
    // The grace period: once shutdown starts, unfinished requests are failed after `grace`.
    let grace_over = async {
        token.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::pin!(drained);
    tokio::select! {
        _ = &mut drained => {}
        _ = grace_over => {
            state.hard_stop.cancel();
            drained.await;
        }
    }
}

async fn health(State(state): State<Arc<ServerState>>) -> Response {
    axum::Json(json!({
        "status": if state.shutdown.is_cancelled() { "shutting_down" } else { "ok" },
        "node_id": state.node.node_id,
        "cluster_id": state.node.cluster_id,
        "functions": state.registry.all().len(),
        "load": crate::rpc::builtins::core::own_load(&state.node),
        "pubsub": state.exchange.describe(),
    }))
    .into_response()
}

/// A peer link: frames as large as a component being fetched.
async fn peer_upgrade(State(state): State<Arc<ServerState>>, ws: WebSocketUpgrade) -> Response {
    let limit = state.max_peer_frame_bytes;
    accept(ws, limit, &state.sessions.clone(), move |socket| {
        peer::run(socket, state)
    })
}

/// A client connection.
async fn upgrade(State(state): State<Arc<ServerState>>, ws: WebSocketUpgrade) -> Response {
    let limit = state.config.max_message_bytes;
    accept(ws, limit, &state.sessions.clone(), move |socket| {
        session::run(socket, state)
    })
}

/// Upgrades with a message limit and runs the connection as a tracked session task.
fn accept<F, Fut>(ws: WebSocketUpgrade, limit: usize, sessions: &TaskTracker, run: F) -> Response
where
    F: FnOnce(axum::extract::ws::WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sessions = sessions.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .on_upgrade(move |socket| {
            let fut = run(socket);
            async move {
                sessions.spawn(fut);
            }
        })
}
