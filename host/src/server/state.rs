//! What every session, peer link and admin handler of a node shares.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::auth::Guard;
use crate::config::ServerConfig;
use crate::identity::NodeInfo;
use crate::plugin::{PluginManager, Registry};
use crate::pubsub::exchange::Exchange;
use crate::rpc::dispatch::NodeDispatcher;

/// What every session shares.
pub struct ServerState {
    /// Runs calls, here or on peers.
    pub dispatcher: Arc<NodeDispatcher>,
    /// Identity and load counters.
    pub node: Arc<NodeInfo>,
    /// Loaded functions (for /health).
    pub registry: Arc<Registry>,
    /// Publishes and retires plugins (admin API).
    pub manager: Arc<PluginManager>,
    /// Who is asking: clients, the admin API, monitoring.
    pub guard: Guard,
    /// The request buckets of identities with a connection open (`server.max_requests_per_second_per_identity`).
    pub identities: Arc<super::rate::Identities>,
    /// Largest accepted upload.
    pub max_upload_bytes: usize,
    /// Limits.
    pub config: ServerConfig,
    /// Cancelled when the node starts shutting down.
    pub shutdown: CancellationToken,
    /// Cancelled when the grace period is over: unfinished requests get an error.
    pub hard_stop: CancellationToken,
    /// Every session task and what runs for it (queue push consumers): `serve` returns only
    /// when they have all ended.
    pub sessions: TaskTracker,
    /// Cancelled when the node is killed (tests of crashes): connections drop at once.
    pub killed: CancellationToken,
    /// The cluster CA peer links must present a certificate of (`tls.cluster_ca`).
    pub cluster_ca: Option<std::path::PathBuf>,
    /// Largest peer-link frame (a component being fetched).
    pub max_peer_frame_bytes: usize,
    /// Topic exchange.
    pub exchange: Arc<Exchange>,
    /// Open connections against the caps.
    pub gate: Arc<super::listen::Gate>,
    /// Every service's metrics, served on `GET /metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Log every request answered (`[logs] access`).
    pub access_log: bool,
    /// What sessions count.
    pub counts: super::metrics::ServerMetrics,
    /// Open client connections (`/monitor/connz`).
    pub connections: Arc<super::connz::Connections>,
    /// The last seconds of counters (rates for `/monitor/live` and the dashboard).
    pub history: super::monitor::history::History,
    /// Queues (`/monitor/queuez`).
    pub queues: Arc<crate::queue::manager::QueueManager>,
    /// What the client ports speak (TLS, plaintext or both).
    pub security: super::handshake::Security,
    /// Connections that closed before their first request.
    pub handshakes: super::handshake::HandshakeCounts,
    /// The cache (`/monitor/cachez`).
    pub cache: Arc<crate::cache::store::Cache>,
}
