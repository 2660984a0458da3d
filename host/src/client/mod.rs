//! The Rust client: one WebSocket connection carrying many requests at once.
//!
//! Compiles without the `node` feature (no wasmtime), so applications that only call functions
//! stay small. Requests are matched to replies by `u`; a writer task batches outgoing frames and
//! a reader task routes replies, so thousands of calls can be in flight on one connection.
//!
//! ```no_run
//! # async fn demo() -> Result<(), mpreg::client::ClientError> {
//! use mpreg::client::Client;
//! use mpreg::protocol::RpcCommand;
//! use serde_json::json;
//!
//! let client = Client::connect("ws://127.0.0.1:6666").await?;
//! let sum = client.call("add", vec![json!(2), json!(3)]).await?;
//! let r = client
//!     .request(vec![
//!         RpcCommand::new("raw", "ingest", vec![json!("1, 2, x, 3")]),
//!         RpcCommand::new("clean", "clean", vec![json!("raw")]),
//!         RpcCommand::new("stats", "analyze", vec![json!("clean")]),
//!     ])
//!     .await?;
//! println!("{sum} {}", r["stats"]);
//! # Ok(()) }
//! ```

mod cache;
mod cluster;
mod pubsub;
mod routes;
pub mod transport;

pub use cluster::ClusterClient;
pub use pubsub::Subscription;
pub use transport::ConnectOptions;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;

use crate::burst::write_burst;
use crate::protocol::{RpcCommand, RpcErrorBody, RpcRequest, RpcResponse};

/// What can go wrong for a caller.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    /// The connection could not be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// The connection closed before the reply arrived.
    #[error("connection closed before the reply arrived")]
    Closed,
    /// No reply within the client-side timeout.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The node answered with an error.
    #[error("rpc error {code} ({message}): {details}")]
    Rpc {
        /// The error code (see `protocol::codes`).
        code: i64,
        /// The code's message.
        message: String,
        /// What failed and why.
        details: Value,
    },
    /// The reply did not have the expected shape.
    #[error("unexpected reply: {0}")]
    Protocol(String),
    /// A pub/sub request was refused (the ack's `error`).
    #[error("refused: {0}")]
    Refused(String),
}

impl From<RpcErrorBody> for ClientError {
    fn from(e: RpcErrorBody) -> Self {
        ClientError::Rpc {
            code: e.code,
            message: e.message,
            details: e.details,
        }
    }
}

impl ClientError {
    /// The RPC error code, if the node answered with an error.
    pub fn code(&self) -> Option<i64> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<RpcResponse>>>>;

/// A connection to one node. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Client {
    tx: mpsc::Sender<Message>,
    pending: Pending,
    /// Pub/sub acks and subscriptions.
    routes: routes::Shared,
    /// Set when the connection is gone: later requests fail at once instead of waiting.
    closed: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    prefix: Arc<str>,
    timeout: Duration,
}

fn lock(p: &Pending) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<RpcResponse>>> {
    // A panic while holding this lock cannot leave the map inconsistent (single inserts/removes).
    p.lock().unwrap_or_else(|e| e.into_inner())
}

impl Client {
    /// Connects to `url`: `ws://host:port`, `wss://`, `tcp://` or `tcps://` (trusting the web
    /// PKI's roots; [`Client::connect_with`] for a CA file or credentials).
    pub async fn connect(url: &str) -> Result<Client, ClientError> {
        Self::connect_with(url, &ConnectOptions::default()).await
    }

    /// Connects with TLS trust, a client certificate or credentials.
    pub async fn connect_with(url: &str, opts: &ConnectOptions) -> Result<Client, ClientError> {
        let (mut sink, mut stream) =
            transport::open(url, opts)
                .await
                .map_err(|reason| ClientError::Connect {
                    url: url.to_owned(),
                    reason,
                })?;
        let (tx, mut rx) = mpsc::channel::<Message>(4096);
        tokio::spawn(async move {
            while let Some(first) = rx.recv().await {
                if write_burst(&mut sink, first, &mut rx, |m| m).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let pending: Pending = Arc::default();
        let reader_pending = pending.clone();
        let closed = Arc::new(AtomicBool::new(false));
        let reader_closed = closed.clone();
        let routes = routes::Shared::default();
        let reader_routes = routes.clone();
        tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let bytes = match &msg {
                    Message::Text(t) => t.as_bytes(),
                    Message::Binary(b) => b,
                    Message::Close(_) => break,
                    _ => continue,
                };
                // RPC replies and pub/sub frames are routed; streamed intermediates are skipped.
                let Ok(reply) = serde_json::from_slice::<RpcResponse>(bytes) else {
                    if let Ok(head) = serde_json::from_slice::<crate::protocol::FrameHead>(bytes)
                        && let Some(role) = head.role
                    {
                        routes::route(&reader_routes, &role, bytes).await;
                    }
                    continue;
                };
                if reply.role != "rpc-response" {
                    routes::route(&reader_routes, &reply.role, bytes).await;
                    continue;
                }
                if let Some(waiter) = lock(&reader_pending).remove(&reply.u) {
                    let _ = waiter.send(reply);
                }
            }
            // Connection gone: dropping the senders wakes every waiter with `Closed`; the flag
            // (set under the lock) turns away requests registered after this.
            let mut pending = lock(&reader_pending);
            reader_closed.store(true, Ordering::Release);
            pending.clear();
            drop(pending);
            routes::close(&reader_routes);
        });
        let prefix = format!("{:x}", crate::protocol::random_u64());
        Ok(Client {
            tx,
            pending,
            routes,
            closed,
            next: Arc::new(AtomicU64::new(0)),
            prefix: prefix.into(),
            timeout: Duration::from_secs(60),
        })
    }

    /// Whether the connection is gone.
    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Sets how long to wait for any reply (default 60 s; the node's own deadline is 30 s).
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// A fresh request id.
    pub fn next_id(&self) -> String {
        format!(
            "{}-{}",
            self.prefix,
            self.next.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Sends a full request and returns the raw reply (errors included as data).
    pub async fn send(&self, mut req: RpcRequest) -> Result<RpcResponse, ClientError> {
        if req.u.is_empty() {
            req.u = self.next_id();
        }
        let text = serde_json::to_string(&req).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let (done, wait) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if self.closed.load(Ordering::Acquire) {
                return Err(ClientError::Closed);
            }
            pending.insert(req.u.clone(), done);
        }
        if self.tx.send(Message::Text(text.into())).await.is_err() {
            lock(&self.pending).remove(&req.u);
            return Err(ClientError::Closed);
        }
        match tokio::time::timeout(self.timeout, wait).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(ClientError::Closed),
            Err(_) => {
                lock(&self.pending).remove(&req.u);
                Err(ClientError::Timeout(self.timeout))
            }
        }
    }

    /// Runs a multi-command request and returns `r` (the last level's results).
    pub async fn request(&self, cmds: Vec<RpcCommand>) -> Result<Map<String, Value>, ClientError> {
        results(self.send(RpcRequest::new("", cmds)).await?)
    }

    /// Calls one function, like MPREG's `call(fun, *args)`.
    pub async fn call(&self, fun: &str, args: Vec<Value>) -> Result<Value, ClientError> {
        self.call_command(RpcCommand::new(fun, fun, args)).await
    }

    /// Calls one command (with `locs`, `function_id`, `version_constraint` or kwargs set).
    pub async fn call_command(&self, cmd: RpcCommand) -> Result<Value, ClientError> {
        let name = cmd.name.clone();
        result_named(self.request(vec![cmd]).await?, &name)
    }
}

/// `r` of a reply, or its error.
fn results(reply: RpcResponse) -> Result<Map<String, Value>, ClientError> {
    if let Some(e) = reply.error {
        return Err(e.into());
    }
    reply
        .r
        .ok_or_else(|| ClientError::Protocol("reply has neither `r` nor `error`".into()))
}

/// The result called `name` in `r`.
fn result_named(mut r: Map<String, Value>, name: &str) -> Result<Value, ClientError> {
    r.remove(name)
        .ok_or_else(|| ClientError::Protocol(format!("reply lacks result '{name}'")))
}
