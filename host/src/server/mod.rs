//! HTTP side of a node: WebSocket upgrade on any path (MPREG clients connect to `ws://host:port`)
//! `GET /health`, and the admin API under `/admin` (see [`admin`]).

mod access;
pub mod admin;
mod auth;
pub mod connz;
mod dashboard;
pub mod handshake;
pub mod listen;
pub mod metrics;
pub mod monitor;
mod peer;
mod pubsub;
pub mod rate;
mod session;
mod tcp;

mod state;
mod window;

pub use auth::{AdminAuth, Guard, Refusal};
pub use state::ServerState;

use std::sync::Arc;
use std::time::Duration;

use crate::metrics::Format;
use axum::Extension;
use axum::Router;
use axum::extract::{RawQuery, State, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::cluster::wire::PEER_PATH;
use listen::ConnectionTicket;

/// Accepts connections until shutdown, then drains sessions within `grace`: WebSocket and
/// HTTP on `listener`, MPREG's TCP transport on `tcp` when it is configured.
pub async fn serve(
    listener: TcpListener,
    tcp: Option<TcpListener>,
    state: Arc<ServerState>,
    grace: Duration,
) {
    let app = Router::new()
        .route("/health", get(health))
        .route(PEER_PATH, get(peer_upgrade))
        .route("/admin/plugins", get(admin::list).post(admin::publish))
        .route("/admin/plugins/{name}", get(admin::describe))
        .route(
            "/admin/plugins/{name}/{version}",
            get(admin::describe).delete(admin::retire),
        )
        .merge(
            Router::new()
                .route("/metrics", get(scrape))
                .merge(monitor::routes())
                .merge(dashboard::routes())
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    monitoring_gate,
                )),
        )
        .fallback(upgrade)
        .with_state(state.clone());
    let token = state.shutdown.clone();
    let connections = TaskTracker::new();
    let http = {
        let state = state.clone();
        move |tcp: tokio::net::TcpStream, ticket: listen::Ticket| {
            let (state, app) = (state.clone(), app.clone());
            async move {
                let remote = tcp.peer_addr().ok();
                let deadline = Duration::from_millis(state.config.header_timeout_ms);
                match handshake::open(tcp, &state.security, deadline, &state.handshakes).await {
                    Ok((conn, peer)) => {
                        let ticket = ConnectionTicket {
                            ticket: Arc::new(ticket),
                            remote,
                            peer,
                        };
                        let (shutdown, hard_stop) =
                            (state.shutdown.clone(), state.hard_stop.clone());
                        listen::serve_http(conn, ticket, app, deadline, shutdown, hard_stop).await;
                    }
                    Err(handshake::HandshakeError::Plaintext(tcp)) => {
                        listen::refuse_plaintext(tcp).await
                    }
                    Err(e) => handshake::failed(remote, &e),
                }
            }
        }
    };
    let accepting = listen::accept_loop(
        listener,
        state.gate.clone(),
        token.clone(),
        connections.clone(),
        true,
        http,
    );
    let tcp_accepting = {
        let (state, token, connections) = (state.clone(), token.clone(), connections.clone());
        async move {
            if let Some(tcp) = tcp {
                let gate = state.gate.clone();
                let serve = move |conn: tokio::net::TcpStream, ticket: listen::Ticket| {
                    tcp::serve(conn, ticket, state.clone())
                };
                listen::accept_loop(tcp, gate, token, connections, false, serve).await;
            }
        }
    };
    // Stop accepting, then wait for every connection and session (and what runs for it) to end.
    let sessions = state.sessions.clone();
    let drained = async move {
        tokio::join!(accepting, tcp_accepting);
        connections.close();
        connections.wait().await;
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
        "process": {
            "rss_bytes": metrics::resident_bytes(),
        },
        "guest_memory": {
            "used_bytes": state.dispatcher.runtime().guest_memory().used(),
            "limit_bytes": state.dispatcher.runtime().guest_memory().limit(),
        },
        "connections": {
            "open": state.gate.open(),
            "refused": state.gate.refused.load(std::sync::atomic::Ordering::Relaxed),
            "accept_errors": state.gate.accept_errors.load(std::sync::atomic::Ordering::Relaxed),
        },
    }))
    .into_response()
}

/// Lets a request to `/metrics`, `/monitor/*` or the dashboard's data through when it may
/// read monitoring ([`Guard::monitoring`]; `?access_token=` works for a browser). The
/// dashboard's page, script and style hold no data and are served to anyone, so a browser
/// opened on `/dashboard?access_token=…` can load them.
async fn monitoring_gate(
    State(state): State<Arc<ServerState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = request.uri().path();
    let asset = path.starts_with("/dashboard") && path != "/dashboard/events";
    if !asset
        && let Err(r) = state
            .guard
            .monitoring(request.headers(), request.uri().query())
    {
        return (r.status, r.message).into_response();
    }
    next.run(request).await
}

/// `GET /metrics`: Prometheus text, or OpenMetrics when the `Accept` header asks for it.
pub async fn scrape(State(state): State<Arc<ServerState>>, headers: HeaderMap) -> Response {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let format = Format::from_accept(accept);
    let body = state.metrics.encode(format);
    ([(header::CONTENT_TYPE, format.content_type())], body).into_response()
}

/// A peer link: frames as large as a component being fetched. With `tls.cluster_ca`, only
/// over TLS with a client certificate of the cluster CA (refused with 403 before the upgrade).
async fn peer_upgrade(
    State(state): State<Arc<ServerState>>,
    ticket: Option<Extension<ConnectionTicket>>,
    ws: WebSocketUpgrade,
) -> Response {
    if let Some(ca) = &state.cluster_ca {
        let cert = ticket.as_ref().and_then(|t| t.peer.client_cert.as_ref());
        let verdict = match cert {
            None => Err("peer links need a certificate of the cluster CA".to_owned()),
            Some(c) => crate::tls::server::verify_peer(ca, &c.der)
                .map_err(|e| format!("not a certificate of the cluster CA: {e}")),
        };
        if let Err(why) = verdict {
            let remote = ticket.as_ref().and_then(|t| t.remote);
            let r = auth::Refusal {
                status: axum::http::StatusCode::FORBIDDEN,
                kind: "forbidden",
                message: why,
            };
            auth::log_refused(remote, &r);
            state.guard.count_peer_refusal();
            return (r.status, r.message).into_response();
        }
    }
    let limit = state.max_peer_frame_bytes;
    accept(ws, limit, ticket, &state.sessions.clone(), move |socket| {
        peer::run(socket, state)
    })
}

/// A client connection: authenticated before it is upgraded (a refusal is a plain HTTP 401 or
/// 403 saying why), with MPREG's subprotocol selected when the client offers it (browsers that
/// carry their token as `mpreg.bearer.<token>` must be answered with one they offered).
async fn upgrade(
    State(state): State<Arc<ServerState>>,
    ticket: Option<Extension<ConnectionTicket>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    ws: WebSocketUpgrade,
) -> Response {
    let limit = state.config.max_message_bytes;
    let remote = ticket.as_ref().and_then(|t| t.remote);
    let peer = ticket.as_ref().map(|t| t.peer.clone()).unwrap_or_default();
    let principal = match state.guard.client(&headers, query.as_deref(), &peer) {
        Ok(p) => p,
        Err(r) => {
            auth::log_refused(remote, &r);
            return (r.status, r.message).into_response();
        }
    };
    let ws = ws.protocols([crate::auth::credentials::PROTOCOL]);
    accept(ws, limit, ticket, &state.sessions.clone(), move |socket| {
        session::run(socket, state, remote, principal)
    })
}

/// Bytes a WebSocket reads into at once; larger frames grow the buffer as they need. The
/// library's default of 128 KiB, allocated for every connection, was most of an idle
/// connection's footprint; 16 KiB cost pipelined throughput (more, smaller reads), 32 KiB was
/// measured level with 128 KiB (docs/benchmarks.md).
const READ_BUFFER: usize = 32 << 10;

/// Upgrades with a message limit and runs the connection as a tracked session task, which
/// keeps the connection's place under the caps (`ticket`) for as long as it runs.
fn accept<F, Fut>(
    ws: WebSocketUpgrade,
    limit: usize,
    ticket: Option<Extension<ConnectionTicket>>,
    sessions: &TaskTracker,
    run: F,
) -> Response
where
    F: FnOnce(axum::extract::ws::WebSocket) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let sessions = sessions.clone();
    ws.max_message_size(limit)
        .max_frame_size(limit)
        .read_buffer_size(READ_BUFFER)
        .on_upgrade(move |socket| {
            let fut = run(socket);
            async move {
                sessions.spawn(async move {
                    let _ticket = ticket;
                    fut.await
                });
            }
        })
}
