//! Node configuration: TOML file, then `MPREG_*` environment variables, then command-line flags
//! (each overrides the one before). Unknown keys are errors, so a typo never silently does
//! nothing.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::sandbox::Sandbox;

pub mod auth;
pub mod cache;
mod overlay;
mod runtime;
pub mod secrets;

pub use auth::AuthConfig;
pub use cache::CacheConfig;
pub use overlay::Overrides;
pub use runtime::{Compiler, RuntimeConfig};

/// Everything a node needs to start.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Listening and connection limits.
    pub server: ServerConfig,
    /// Identity and resources.
    pub node: IdentityConfig,
    /// Plugin execution limits.
    pub runtime: RuntimeConfig,
    /// Plugin publishing and the admin API.
    pub admin: AdminConfig,
    /// Gossip, peer links and plugin distribution.
    pub cluster: ClusterConfig,
    /// Topic exchange: backlog and slow subscribers.
    pub pubsub: PubsubConfig,
    /// Durable queues.
    pub queues: QueuesConfig,
    /// The multi-tier cache.
    pub cache: CacheConfig,
    /// Metrics and monitoring endpoints.
    pub metrics: MetricsConfig,
    /// What the node logs beyond its own events.
    pub logs: LogsConfig,
    /// TLS for client connections (`wss://`, `tcps://`).
    pub tls: TlsConfig,
    /// Who may connect and what each identity may do (docs/security.md).
    pub auth: AuthConfig,
    /// Secrets plugins may read when their sandbox grants them: name → `{ env = "VAR" }` or
    /// `{ file = "path" }` (docs/security.md).
    pub secrets: std::collections::BTreeMap<String, secrets::SecretSource>,
    /// Component files to load at start-up (relative paths are relative to the config file):
    /// a path, or `{ path = "x.wasm", sandbox = { memory_limit_mib = 256 } }`.
    pub plugins: Vec<PluginSpec>,
}

/// A component file to load at start-up, with its sandbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "PluginSpecRepr")]
pub struct PluginSpec {
    /// The `.wasm` file.
    pub path: PathBuf,
    /// Limits and grants (default: node limits, nothing granted).
    pub sandbox: Sandbox,
}

impl From<PathBuf> for PluginSpec {
    fn from(path: PathBuf) -> Self {
        PluginSpec {
            path,
            sandbox: Sandbox::default(),
        }
    }
}

/// The two ways to write a plugin entry.
#[derive(Deserialize)]
#[serde(untagged)]
enum PluginSpecRepr {
    Path(PathBuf),
    Table(PluginTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginTable {
    path: PathBuf,
    #[serde(default)]
    sandbox: Sandbox,
}

impl From<PluginSpecRepr> for PluginSpec {
    fn from(r: PluginSpecRepr) -> Self {
        match r {
            PluginSpecRepr::Path(path) => path.into(),
            PluginSpecRepr::Table(t) => PluginSpec {
                path: t.path,
                sandbox: t.sandbox,
            },
        }
    }
}

/// `[admin]`: the HTTP admin API (`/admin/...`) used to publish, list, describe and retire
/// plugins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Bearer token the admin API requires (at least 16 characters). When unset, a token is
    /// generated on the first start, printed once, and only its hash is kept in the data
    /// directory.
    pub token: Option<String>,
    /// Largest component accepted by publish.
    pub max_upload_mib: u64,
    /// A dev node: publishing other bytes under a version it holds replaces that version in
    /// place (what `mpreg dev` runs). Off by default: versions are immutable.
    pub replace_versions: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            token: None,
            max_upload_mib: 64,
            replace_versions: false,
        }
    }
}

/// `[cluster]`: how this node finds the others and shares work with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// Nodes to join through, as `host:port` or `ws://host:port` (their port serves both
    /// WebSocket and gossip). Empty: this node starts a cluster others can join.
    pub peers: Vec<String>,
    /// Gossip on; off makes a standalone node (no UDP socket, nothing forwarded).
    pub enabled: bool,
    /// UDP address for gossip; default: the server's host and bound port.
    pub gossip_addr: Option<String>,
    /// Time between gossip rounds.
    pub gossip_interval_ms: u64,
    /// Failure detector threshold: a node silent for about this many mean heartbeat intervals
    /// is declared dead and leaves the catalog.
    pub phi_threshold: f64,
    /// How often the node's load is re-advertised (when it changed).
    pub load_report_ms: u64,
    /// How many times a call may be forwarded after the coordinator's own forward.
    pub max_hops: u8,
    /// Install plugin versions published on other nodes (by placement) and follow their
    /// retirement.
    pub distribute_plugins: bool,
    /// How long a subscribe, `queue.create` or retire waits for the live peers to confirm they
    /// have the change before it answers anyway (gossip then carries it to a slow peer).
    pub state_push_timeout_ms: u64,
    /// The cluster keyring: a file of keys (64 hex digits a line, `mpreg cluster keygen`), the
    /// first sealing what this node gossips, all opening what it receives. Set: gossip is
    /// encrypted and authenticated, and nodes without a key are ignored (docs/security.md).
    pub gossip_keyring: Option<PathBuf>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            peers: Vec::new(),
            enabled: true,
            gossip_addr: None,
            gossip_interval_ms: 100,
            phi_threshold: 8.0,
            load_report_ms: 200,
            max_hops: 2,
            distribute_plugins: true,
            state_push_timeout_ms: 500,
            gossip_keyring: None,
        }
    }
}

/// `[queues]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueuesConfig {
    /// Queues (dead-letter queues included) this node may hold; creating more fails with 1008.
    pub max_queues: usize,
}

impl Default for QueuesConfig {
    fn default() -> Self {
        QueuesConfig { max_queues: 10_000 }
    }
}

/// `[metrics]` (docs/observability.md).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Record call-path metrics (`false`: `/metrics` still answers, with what engines keep
    /// anyway: depths, sizes, cache and pub/sub counters).
    pub enabled: bool,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true }
    }
}

/// `[logs]` (docs/observability.md, "Logs").
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogsConfig {
    /// One `INFO` line per request answered (target `mpreg::access`): request id, client
    /// address, role, commands, outcome, code, duration, frame size.
    pub access: bool,
}

/// `[tls]`: TLS for the client port and the TCP port (docs/security.md, "TLS"). Relative paths
/// are relative to the config file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// Certificate chain (PEM, leaf first). With `key`, client ports speak TLS.
    pub cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    pub key: Option<PathBuf>,
    /// CA (PEM) that client certificates are checked against (mTLS); unset: none asked for.
    pub client_ca: Option<PathBuf>,
    /// Refuse clients without a valid certificate (needs `client_ca`); otherwise optional.
    pub require_client_cert: bool,
    /// Also accept plaintext on the TLS ports (the first byte tells which a client speaks).
    pub allow_plaintext: bool,
    /// How often the files are checked for a change (a renewed certificate is served without
    /// a restart).
    pub reload_interval_ms: u64,
    /// The cluster's CA (PEM). Set: peer links speak TLS with mutual authentication: this node
    /// presents `cert` to the peers it dials and checks theirs against this CA, and its peer
    /// endpoint refuses a link without a certificate of this CA (docs/security.md).
    pub cluster_ca: Option<PathBuf>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            client_ca: None,
            require_client_cert: false,
            allow_plaintext: false,
            reload_interval_ms: 1000,
            cluster_ca: None,
        }
    }
}

/// `[pubsub]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PubsubConfig {
    /// Messages kept per topic for subscribers that ask for the backlog (0: no backlog).
    pub backlog_per_topic: usize,
    /// Oldest message kept, in seconds.
    pub backlog_max_age_s: u64,
    /// Topics with a backlog; the least recently published one goes first.
    pub backlog_max_topics: usize,
    /// Total size of retained messages; the oldest goes first.
    pub backlog_max_mib: usize,
    /// How long a subscriber's full queue may take nothing before that subscriber is
    /// disconnected as a slow consumer (publishers never wait for it).
    pub slow_subscriber_ms: u64,
    /// Notifications held for a subscriber whose outbound queue is full, beyond the queue; a
    /// subscriber further behind is disconnected as a slow consumer.
    pub subscriber_overflow: usize,
    /// Bytes of notifications (and streamed results) one connection may have unwritten; a
    /// subscriber further behind is disconnected as a slow consumer.
    pub subscriber_max_mib: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Patterns one subscription may hold.
    pub max_patterns_per_subscription: usize,
}

impl Default for PubsubConfig {
    fn default() -> Self {
        PubsubConfig {
            backlog_per_topic: 1000,
            backlog_max_age_s: 300,
            backlog_max_topics: 10_000,
            backlog_max_mib: 64,
            slow_subscriber_ms: 2000,
            subscriber_overflow: 1024,
            subscriber_max_mib: 8,
            max_subscriptions_per_connection: 10_000,
            max_patterns_per_subscription: 256,
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to bind.
    pub host: String,
    /// Port to bind; 0 picks a free one.
    pub port: u16,
    /// Port of MPREG's TCP transport (`tcp://`, or `tcps://` with `[tls]`): 4-byte big-endian
    /// length-prefixed JSON frames. Unset: no TCP listener; 0 picks a free one.
    pub tcp_port: Option<u16>,
    /// Largest inbound WebSocket message; larger ones close the connection with 1009.
    pub max_message_bytes: usize,
    /// Largest reply; a larger result is replaced by a 1008 error (MPREG clients close at 20 MiB).
    pub max_reply_bytes: usize,
    /// Bytes one multi-command request may hold at once in results and substituted arguments;
    /// past it the request fails with 1008 before the value is built (amplifying requests).
    pub max_request_bytes: usize,
    /// Requests one connection may have running at once; further ones wait (backpressure).
    pub max_in_flight_per_connection: usize,
    /// Notifications (and streamed intermediate results) queued per connection.
    pub outbound_queue: usize,
    /// Bytes of replies one connection may hold unwritten (built, or expected from its running
    /// requests); past it the session stops reading new requests until the client reads.
    pub max_buffered_reply_bytes: usize,
    /// A client whose socket takes nothing for this long is disconnected (close code 1008).
    pub stalled_client_ms: u64,
    /// Requests a second one connection may send (0: no limit); past it the connection is not
    /// read until its budget refills (docs/limits.md, "Rates").
    pub max_requests_per_second: u64,
    /// Bytes a second one connection may send (0: no limit); likewise.
    pub max_bytes_per_second: u64,
    /// Requests a second all connections of one authenticated identity may send together (0:
    /// no limit); likewise.
    pub max_requests_per_second_per_identity: u64,
    /// Commands one request may hold; a larger request is refused with 1008.
    pub max_commands_per_request: usize,
    /// Open connections of every kind at most; further ones get HTTP 503. Lowered at start to
    /// what the open-file limit allows.
    pub max_connections: usize,
    /// Open connections from one IP address at most; further ones get HTTP 503.
    pub max_connections_per_address: usize,
    /// How long a new connection may take to send its HTTP request head (the WebSocket upgrade),
    /// and how long an HTTP connection may sit idle between requests.
    pub header_timeout_ms: u64,
    /// Default request deadline (requests may ask for another with `timeout_ms`).
    pub request_timeout_ms: u64,
    /// Upper bound for a request's `timeout_ms`.
    pub max_request_timeout_ms: u64,
    /// On shutdown, how long in-flight requests get to finish.
    pub shutdown_grace_ms: u64,
    /// Serve clients without credentials on a non-loopback address (`--insecure`). Without
    /// it, a node refuses to serve clients on anything but loopback.
    pub insecure: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            host: "127.0.0.1".into(),
            port: 6666,
            tcp_port: None,
            max_message_bytes: 16 << 20,
            max_reply_bytes: 16 << 20,
            max_request_bytes: 64 << 20,
            max_in_flight_per_connection: 1024,
            outbound_queue: 1024,
            max_buffered_reply_bytes: 32 << 20,
            stalled_client_ms: 10_000,
            max_requests_per_second: 0,
            max_bytes_per_second: 0,
            max_requests_per_second_per_identity: 0,
            max_commands_per_request: 100_000,
            max_connections: 10_000,
            max_connections_per_address: 1_000,
            header_timeout_ms: 10_000,
            request_timeout_ms: 30_000,
            max_request_timeout_ms: 600_000,
            shutdown_grace_ms: 10_000,
            insecure: false,
        }
    }
}

/// `[node]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentityConfig {
    /// Node id; generated when absent.
    pub id: Option<String>,
    /// Cluster this node belongs to (`target_cluster` matches it).
    pub cluster_id: String,
    /// Free-form region label shown in `cluster_map`.
    pub region: String,
    /// Resource tags of this node; every function here has them (matched against `locs`).
    pub resources: Vec<String>,
    /// URLs clients should use to reach this node; derived from the bound address when empty.
    pub advertised_urls: Vec<String>,
    /// Where published plugins (and later queues and caches) are kept. Unset: in memory only,
    /// so nothing survives a restart.
    pub data_dir: Option<PathBuf>,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        IdentityConfig {
            id: None,
            cluster_id: "default".into(),
            region: "local".into(),
            resources: Vec::new(),
            advertised_urls: Vec::new(),
            data_dir: None,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this schema.
    #[error("invalid config {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// An environment variable has a bad value.
    #[error("environment variable {name}: {message}")]
    Env {
        /// The variable.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// Values that do not make sense together.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// Whether `host` names only this machine (`localhost`, `127.0.0.0/8`, `::1`).
pub fn is_loopback_host(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl NodeConfig {
    /// Reads a TOML file; plugin paths are made relative to the file's folder.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut cfg = Self::from_toml(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in &mut cfg.plugins {
            if p.path.is_relative() {
                p.path = base.join(&p.path);
            }
        }
        let tls = &mut cfg.tls;
        for path in [
            &mut tls.cert,
            &mut tls.key,
            &mut tls.client_ca,
            &mut tls.cluster_ca,
        ]
        .into_iter()
        .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        cfg.auth.resolve_paths(base);
        for source in cfg.secrets.values_mut() {
            if let secrets::SecretSource::File(p) = source
                && p.is_relative()
            {
                *p = base.join(&*p);
            }
        }
        if let Some(k) = &mut cfg.cluster.gossip_keyring
            && k.is_relative()
        {
            *k = base.join(&*k);
        }
        Ok(cfg)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    /// Applies `MPREG_HOST`, `MPREG_PORT`, `MPREG_CLUSTER_ID`, `MPREG_REGION`, `MPREG_RESOURCES`
    /// (comma-separated), `MPREG_NODE_ID`, `MPREG_DATA_DIR`, `MPREG_ADMIN_TOKEN` and `MPREG_PEERS`
    /// (comma-separated) from `env`.
    pub fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        if let Some(v) = env("MPREG_HOST") {
            self.server.host = v;
        }
        if let Some(v) = env("MPREG_PORT") {
            self.server.port = v.parse().map_err(|e| ConfigError::Env {
                name: "MPREG_PORT".into(),
                message: format!("{e}"),
            })?;
        }
        if let Some(v) = env("MPREG_CLUSTER_ID") {
            self.node.cluster_id = v;
        }
        if let Some(v) = env("MPREG_REGION") {
            self.node.region = v;
        }
        if let Some(v) = env("MPREG_NODE_ID") {
            self.node.id = Some(v);
        }
        if let Some(v) = env("MPREG_RESOURCES") {
            self.node.resources = split_list(&v);
        }
        if let Some(v) = env("MPREG_DATA_DIR") {
            self.node.data_dir = Some(v.into());
        }
        if let Some(v) = env("MPREG_ADMIN_TOKEN") {
            self.admin.token = Some(v);
        }
        if let Some(v) = env("MPREG_PEERS") {
            self.cluster.peers = split_list(&v);
        }
        Ok(())
    }

    /// Rejects values that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: &str| Err(ConfigError::Invalid(m.to_owned()));
        let s = &self.server;
        if s.max_commands_per_request == 0 {
            return bad("server.max_commands_per_request must be at least 1");
        }
        if s.max_message_bytes < 1024 {
            return bad("server.max_message_bytes must be at least 1024");
        }
        if s.max_reply_bytes < 1024 || s.max_reply_bytes > 20 << 20 {
            return bad(
                "server.max_reply_bytes must be between 1 KiB and 20 MiB (MPREG clients close above 20 MiB)",
            );
        }
        if s.max_request_bytes < 1024 || s.max_request_bytes > 16 << 30 {
            return bad("server.max_request_bytes must be between 1 KiB and 16 GiB");
        }
        if s.max_in_flight_per_connection == 0 || s.outbound_queue == 0 {
            return bad(
                "server.max_in_flight_per_connection and server.outbound_queue must be positive",
            );
        }
        if s.max_buffered_reply_bytes < 1024 || s.max_buffered_reply_bytes > 4 << 30 {
            return bad("server.max_buffered_reply_bytes must be between 1 KiB and 4 GiB");
        }
        if s.stalled_client_ms == 0 || s.stalled_client_ms > 600_000 {
            return bad("server.stalled_client_ms must be between 1 and 600000");
        }
        if s.max_connections == 0 || s.max_connections_per_address == 0 {
            return bad(
                "server.max_connections and server.max_connections_per_address must be positive",
            );
        }
        if s.header_timeout_ms == 0 || s.header_timeout_ms > 600_000 {
            return bad("server.header_timeout_ms must be between 1 and 600000");
        }
        if s.request_timeout_ms == 0 || s.request_timeout_ms > s.max_request_timeout_ms {
            return bad(
                "server.request_timeout_ms must be positive and at most server.max_request_timeout_ms",
            );
        }
        let r = &self.runtime;
        if r.call_timeout_ms == 0 || r.epoch_tick_ms == 0 || r.epoch_tick_ms > r.call_timeout_ms {
            return bad(
                "runtime.call_timeout_ms and runtime.epoch_tick_ms must be positive, tick <= timeout",
            );
        }
        if r.memory_limit_mib == 0 || r.memory_limit_mib > 4096 {
            return bad("runtime.memory_limit_mib must be between 1 and 4096");
        }
        if r.max_instances == 0 || r.max_stack_kib < 64 {
            return bad(
                "runtime.max_instances must be positive and runtime.max_stack_kib at least 64",
            );
        }
        if r.memory_limit_mib > r.max_memory_limit_mib {
            return bad("runtime.memory_limit_mib must not exceed runtime.max_memory_limit_mib");
        }
        if r.max_guest_memory_mib != 0 && r.max_guest_memory_mib < r.memory_limit_mib {
            return bad(
                "runtime.max_guest_memory_mib must be 0 (half the machine) or at least runtime.memory_limit_mib",
            );
        }
        if r.max_running_calls > r.max_instances as usize {
            return bad("runtime.max_running_calls must not exceed runtime.max_instances");
        }
        if r.max_call_depth == 0 || r.max_call_depth > 64 {
            return bad("runtime.max_call_depth must be between 1 and 64");
        }
        if self.admin.token.as_ref().is_some_and(|t| t.len() < 16) {
            return bad("admin.token must be at least 16 characters");
        }
        if self.admin.max_upload_mib == 0 || self.admin.max_upload_mib > 1024 {
            return bad("admin.max_upload_mib must be between 1 and 1024");
        }
        let t = &self.tls;
        if t.cert.is_some() != t.key.is_some() {
            return bad("tls.cert and tls.key must be given together");
        }
        if t.require_client_cert && t.client_ca.is_none() {
            return bad("tls.require_client_cert needs tls.client_ca");
        }
        if t.cert.is_none() && (t.client_ca.is_some() || t.allow_plaintext) {
            return bad("tls.client_ca and tls.allow_plaintext need tls.cert and tls.key");
        }
        if t.cluster_ca.is_some() && t.cert.is_none() {
            return bad(
                "tls.cluster_ca needs tls.cert and tls.key (the node's certificate, issued by the cluster CA)",
            );
        }
        if t.reload_interval_ms == 0 {
            return bad("tls.reload_interval_ms must be positive");
        }
        self.auth.validate().map_err(ConfigError::Invalid)?;
        if !s.insecure && !self.auth.enabled() && !is_loopback_host(&s.host) {
            return Err(ConfigError::Invalid(format!(
                "server.host = '{}' is not a loopback address and this node does not authenticate \
                 clients: anyone who can reach it could call every function. Configure [auth] \
                 (docs/security.md), bind 127.0.0.1, or pass --insecure (server.insecure = true) \
                 to serve unauthenticated clients anyway",
                s.host
            )));
        }
        if self.node.cluster_id.is_empty() {
            return bad("node.cluster_id must not be empty");
        }
        let p = &self.pubsub;
        if p.slow_subscriber_ms == 0
            || p.subscriber_overflow == 0
            || p.subscriber_max_mib == 0
            || p.max_subscriptions_per_connection == 0
            || p.max_patterns_per_subscription == 0
        {
            return bad(
                "pubsub.slow_subscriber_ms, subscriber_overflow, subscriber_max_mib, max_subscriptions_per_connection and max_patterns_per_subscription must be positive",
            );
        }
        if let Some(problem) = self.cache.problem() {
            return bad(&problem);
        }
        if self.queues.max_queues == 0 || self.queues.max_queues > 1_000_000 {
            return bad("queues.max_queues must be between 1 and 1000000");
        }
        let c = &self.cluster;
        if c.gossip_interval_ms == 0 || c.gossip_interval_ms > 10_000 {
            return bad("cluster.gossip_interval_ms must be between 1 and 10000");
        }
        if !(c.phi_threshold >= 1.0 && c.phi_threshold <= 100.0) {
            return bad("cluster.phi_threshold must be between 1 and 100");
        }
        if c.load_report_ms == 0 {
            return bad("cluster.load_report_ms must be positive");
        }
        if let Some(a) = &c.gossip_addr
            && a.parse::<std::net::SocketAddr>().is_err()
        {
            return bad("cluster.gossip_addr must be an ip:port address");
        }
        if let Some(p) = c.peers.iter().find(|p| {
            let addr = seed_addr(p);
            addr.rsplit_once(':')
                .is_none_or(|(h, port)| h.is_empty() || port.parse::<u16>().is_err())
        }) {
            return Err(ConfigError::Invalid(format!(
                "cluster.peers: '{p}' is not host:port or ws://host:port"
            )));
        }
        Ok(())
    }
}

/// `a, b,,c` → `["a", "b", "c"]`.
pub fn split_list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// `host:port` from a peer given as `host:port` or a `ws://` / `http://` URL.
pub fn seed_addr(peer: &str) -> String {
    let rest = peer.split_once("://").map_or(peer, |(_, r)| r);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_may_be_given_as_urls_or_addresses() {
        assert_eq!(seed_addr("127.0.0.1:6666"), "127.0.0.1:6666");
        assert_eq!(seed_addr("ws://10.0.0.2:7000"), "10.0.0.2:7000");
        assert_eq!(seed_addr("ws://host:1/some/path"), "host:1");
        assert_eq!(seed_addr("http://host:2/"), "host:2");
    }

    #[test]
    fn parses_sections_and_rejects_unknown_keys() {
        let cfg = NodeConfig::from_toml(
            "plugins = [\"a.wasm\"]\n[server]\nport = 0\n[node]\nresources = [\"gpu\"]\n[runtime]\ncall_timeout_ms = 100\n",
        )
        .expect("parses");
        assert_eq!(cfg.server.port, 0);
        assert_eq!(cfg.node.resources, ["gpu"]);
        assert_eq!(cfg.runtime.call_timeout_ms, 100);
        assert!(cfg.validate().is_ok());
        let err = NodeConfig::from_toml("[server]\nprot = 1\n").expect_err("typo");
        assert!(err.contains("prot"), "{err}");
    }

    #[test]
    fn plugin_entries_are_paths_or_tables_with_a_sandbox() {
        let cfg = NodeConfig::from_toml(
            "plugins = [\"a.wasm\", { path = \"b.wasm\", sandbox = { memory_limit_mib = 200, env = { MODE = \"x\" } } }]\n[admin]\ntoken = \"0123456789abcdef\"\n",
        )
        .expect("parses");
        assert_eq!(cfg.plugins[0], PluginSpec::from(PathBuf::from("a.wasm")));
        assert_eq!(cfg.plugins[1].sandbox.memory_limit_mib, Some(200));
        assert_eq!(cfg.plugins[1].sandbox.env["MODE"], "x");
        assert!(cfg.validate().is_ok());
        assert!(NodeConfig::from_toml("plugins = [{ path = \"b.wasm\", sandbx = {} }]").is_err());
        let mut short = cfg.clone();
        short.admin.token = Some("short".into());
        assert!(short.validate().is_err());
    }

    #[test]
    fn env_overrides_and_validation() {
        let mut cfg = NodeConfig::default();
        cfg.apply_env(|k| match k {
            "MPREG_PORT" => Some("7000".into()),
            "MPREG_RESOURCES" => Some("a, b,,c".into()),
            _ => None,
        })
        .expect("env");
        assert_eq!(cfg.server.port, 7000);
        assert_eq!(cfg.node.resources, ["a", "b", "c"]);
        cfg.apply_env(|k| (k == "MPREG_PEERS").then(|| "10.0.0.1:6666, ws://h:7".into()))
            .expect("peers");
        assert_eq!(cfg.cluster.peers, ["10.0.0.1:6666", "ws://h:7"]);
        assert!(cfg.validate().is_ok());
        let mut bad = cfg.clone();
        bad.cluster.peers = vec!["nohostport".into()];
        assert!(bad.validate().is_err());
        bad.cluster.peers = vec!["ws://h:notaport".into()];
        assert!(bad.validate().is_err());
        assert!(
            cfg.apply_env(|k| (k == "MPREG_PORT").then(|| "x".into()))
                .is_err()
        );
        cfg.server.max_reply_bytes = 100 << 20;
        assert!(cfg.validate().is_err());
        let mut budget = NodeConfig::default();
        budget.server.max_request_bytes = 10;
        assert!(budget.validate().is_err(), "a request budget under 1 KiB");
        budget.server.max_request_bytes = 1 << 20;
        assert!(budget.validate().is_ok());
    }
}
