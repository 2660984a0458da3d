//! Node / NodeHandle: builds the subsystems in order (runtime, plugins, listener, server) and
//! owns the shutdown order (stop accepting, drain requests, close connections).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cluster::membership::{GossipError, GossipTransport, udp};
use crate::cluster::{Cluster, Services, StateSync};
use crate::config::{ConfigError, NodeConfig};
use crate::identity::NodeInfo;
use crate::plugin::{
    PluginManager, PluginStore, PublishError, Registry, RegistryError, StoreError,
};
use crate::pubsub::exchange::Exchange;
use crate::queue::manager::{QueueManager, system_clock};
use crate::queue::store::QueueStore;
use crate::rpc::builtins::Builtins;
use crate::rpc::dispatch::{DispatcherParts, NodeDispatcher};
use crate::rpc::port::LateDispatcher;
use crate::runtime::{LoadError, Runtime};
use crate::server::{self, ServerState};
use crate::shutdown::Tasks;
use crate::{cache, queue, rpc};

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A plugin file could not be read.
    #[error("cannot read plugin {path}: {source}")]
    PluginFile {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A plugin could not be loaded.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A plugin from the config could not be loaded.
    #[error(transparent)]
    Plugin(#[from] PublishError),
    /// The plugin store could not be opened (another node using the same data directory?).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Something the node needs at start-up failed (the random source, a blocking task).
    #[error("start-up failed: {0}")]
    Startup(String),
    /// Two plugins provide the same function version.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Gossip could not start (the UDP port is taken?).
    #[error(transparent)]
    Gossip(#[from] GossipError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

fn generate_node_id() -> String {
    format!(
        "node-{:012x}",
        crate::protocol::random_u64() & 0xffff_ffff_ffff
    )
}

/// A running node. Clones share it (any clone can stop it or wait for it).
#[derive(Clone)]
pub struct NodeHandle {
    addr: SocketAddr,
    tcp_addr: Option<SocketAddr>,
    /// The client ports speak TLS.
    secure: bool,
    info: Arc<NodeInfo>,
    registry: Arc<Registry>,
    manager: Arc<PluginManager>,
    generated_token: Option<Arc<str>>,
    cluster: Option<Arc<Cluster>>,
    exchange: Arc<Exchange>,
    cache: Arc<cache::store::Cache>,
    guest_memory: Arc<crate::runtime::budget::GuestMemory>,
    /// Every task of the node: the server (and through it each session), the cluster's tasks,
    /// gossip, peer links, the queue timer, deferred deliveries.
    tasks: Tasks,
    killed: CancellationToken,
}

impl NodeHandle {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The bound address of MPREG's TCP transport, when it is on.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// The node's guest-memory budget (bytes in use and the limit).
    pub fn guest_memory(&self) -> &crate::runtime::budget::GuestMemory {
        &self.guest_memory
    }

    /// The topic exchange (subscriptions, backlog, counters).
    pub fn exchange(&self) -> &Arc<Exchange> {
        &self.exchange
    }

    /// This node's cache tiers (what it holds, as owner of its keys).
    pub fn cache(&self) -> &Arc<cache::store::Cache> {
        &self.cache
    }

    /// `ws://addr` (`wss://` when the port speaks TLS).
    pub fn url(&self) -> String {
        let s = if self.secure { "s" } else { "" };
        format!("ws{s}://{}", self.addr)
    }

    /// `tcp://addr` (`tcps://` with TLS) of MPREG's TCP transport, when it is on.
    pub fn tcp_url(&self) -> Option<String> {
        let s = if self.secure { "s" } else { "" };
        self.tcp_addr.map(|a| format!("tcp{s}://{a}"))
    }

    /// Identity and load.
    pub fn info(&self) -> &Arc<NodeInfo> {
        &self.info
    }

    /// Loaded functions.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Publishes and retires plugins.
    pub fn plugins(&self) -> &Arc<PluginManager> {
        &self.manager
    }

    /// The admin token this start generated (first start without a configured token): shown
    /// once, since only its hash is stored.
    pub fn generated_admin_token(&self) -> Option<&str> {
        self.generated_token.as_deref()
    }

    /// `http://addr`, the base of the admin API.
    pub fn http_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The cluster this node is in (`None` when `cluster.enabled` is off).
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Stops the node the way a crash would, for failure tests: gossip goes silent, every
    /// connection and peer link drops at once, nothing is drained or answered.
    pub async fn crash(self) {
        if let Some(c) = &self.cluster {
            c.stop_gossip();
        }
        self.killed.cancel();
        self.tasks.stop();
        self.wait().await;
    }

    /// A token that stops the node when cancelled, without leaving the cluster first (peers
    /// notice through the failure detector); [`NodeHandle::shutdown`] is the graceful way.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.tasks.stopping().clone()
    }

    /// Leaves the cluster (peers drop this node at once), stops accepting, lets in-flight
    /// requests finish within the grace period (the rest get a 1007 error), closes every
    /// connection, and returns when every task of the node has ended and its ports are free.
    pub async fn shutdown(self) {
        if let Some(c) = &self.cluster
            && !self.tasks.is_stopping()
        {
            c.leave().await;
        }
        self.tasks.stop();
        self.wait().await;
    }

    /// Waits until the node has stopped (after it was told to) and every task has ended.
    pub async fn wait(self) {
        self.tasks.stopping().cancelled().await;
        self.tasks.wait().await;
    }

    /// Tasks of the node still running (0 once `shutdown` returned).
    pub fn live_tasks(&self) -> usize {
        self.tasks.live()
    }
}

/// What a node is started with besides its config: parts a program (or a test) may supply.
#[derive(Clone, Default)]
pub struct NodeOptions {
    /// What gossip travels over; UDP when `None`. Tests build clusters on chitchat's in-memory
    /// `ChannelTransport` to simulate partitions and deaths without sockets.
    pub gossip_transport: Option<GossipTransport>,
}

/// The connection caps, with the node-wide one lowered to what the process's open-file limit
/// allows (raised to its hard limit first).
fn connection_limits(c: &crate::config::ServerConfig) -> server::listen::Limits {
    /// Descriptors kept for plugins, the data directory, peer links and the runtime.
    const RESERVE: usize = 256;
    let fit = server::listen::connections_that_fit(c.max_connections, RESERVE);
    if fit < c.max_connections {
        tracing::warn!(
            configured = c.max_connections,
            allowed = fit,
            "server.max_connections lowered to fit the open-file limit"
        );
    }
    server::listen::Limits {
        max_connections: fit,
        max_per_address: c.max_connections_per_address,
        header_timeout: Duration::from_millis(c.header_timeout_ms),
    }
}

/// Binds `host:port` and says which address it got (port 0 picks one).
async fn bind(host: &str, port: u16) -> Result<(TcpListener, SocketAddr), NodeError> {
    let addr = format!("{host}:{port}");
    let listener = TcpListener::bind(&addr)
        .await
        .map_err(|source| NodeError::Bind {
            addr: addr.clone(),
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| NodeError::Bind { addr, source })?;
    Ok((listener, bound))
}

/// Starts a node: validates the config, loads every plugin, binds, and serves.
pub async fn start(config: NodeConfig) -> Result<NodeHandle, NodeError> {
    start_with(config, NodeOptions::default()).await
}

/// [`start`] with [`NodeOptions`].
pub async fn start_with(config: NodeConfig, options: NodeOptions) -> Result<NodeHandle, NodeError> {
    config.validate()?;
    let secrets = crate::secrets::SecretStore::read(&config.secrets, &|k| std::env::var(k).ok())
        .map_err(|e| NodeError::Startup(format!("[secrets]: {e}")))?;
    let runtime = Arc::new(Runtime::new(config.runtime.clone())?.with_secrets(secrets));
    let registry = Arc::new(Registry::new());
    if let Some(dir) = &config.node.data_dir {
        std::fs::create_dir_all(dir).map_err(|source| NodeError::PluginFile {
            path: dir.display().to_string(),
            source,
        })?;
    }
    let dir = config.node.data_dir.clone();
    let store = tokio::task::spawn_blocking(move || PluginStore::open(dir.as_deref()))
        .await
        .map_err(|e| NodeError::Startup(format!("opening the plugin store: {e}")))??;
    // Before anything starts: a keys file or JWT key that cannot be read stops the start.
    let authenticator =
        crate::auth::authenticate::Authenticator::new(&config.auth, &|k| std::env::var(k).ok())
            .map_err(|e| NodeError::Startup(format!("[auth]: {e}")))?;
    if authenticator.is_some() {
        tracing::info!(
            anonymous = ?config.auth.anonymous,
            "clients must authenticate (docs/security.md)"
        );
    }
    let (admin, generated_token) = admin_auth(&config, &store).await?;
    let node_id = match config.node.id.clone() {
        Some(id) => id,
        None => stored_node_id(&store).await?,
    };
    let manager = Arc::new(
        PluginManager::new(
            runtime.clone(),
            registry.clone(),
            store,
            config.node.resources.clone(),
        )
        .with_replace_versions(config.admin.replace_versions),
    );
    for spec in &config.plugins {
        let shown = spec.path.display().to_string();
        let bytes = tokio::fs::read(&spec.path)
            .await
            .map_err(|source| NodeError::PluginFile {
                path: shown.clone(),
                source,
            })?;
        let plugin = manager
            .load_static(bytes, &shown, spec.sandbox.clone())
            .await?;
        tracing::info!(plugin = %plugin.manifest.name, version = %plugin.manifest.version,
            functions = plugin.functions.len(), source = %shown, load_ms = plugin.load_ms,
            "plugin loaded");
        registry.add(plugin)?;
    }
    let restored = manager.restore().await?;
    if restored > 0 {
        tracing::info!(restored, "published plugins restored");
    }
    let (listener, addr) = bind(&config.server.host, config.server.port).await?;
    let tcp_listener = match config.server.tcp_port {
        Some(port) => Some(bind(&config.server.host, port).await?),
        None => None,
    };
    let tcp_addr = tcp_listener.as_ref().map(|(_, a)| *a);
    let tls = match crate::tls::server::TlsFiles::from_config(&config.tls) {
        Some(files) => Some(
            crate::tls::server::ServerTls::load(files)
                .map_err(|e| NodeError::Startup(format!("[tls]: {e}")))?,
        ),
        None => None,
    };
    let id = &config.node;
    let advertised_urls = if id.advertised_urls.is_empty() {
        let s = if tls.is_some() { "s" } else { "" };
        let mut urls = vec![format!("ws{s}://{addr}")];
        urls.extend(tcp_addr.map(|a| format!("tcp{s}://{a}")));
        urls
    } else {
        id.advertised_urls.clone()
    };
    let info = Arc::new(NodeInfo::new(
        node_id,
        id.cluster_id.clone(),
        id.region.clone(),
        id.resources.clone(),
        advertised_urls,
    ));
    let dir = config.node.data_dir.clone();
    let max_queues = config.queues.max_queues;
    let queues = tokio::task::spawn_blocking(move || {
        let store = QueueStore::open(dir.as_deref())?;
        QueueManager::open(store, system_clock(), max_queues)
    })
    .await
    .map_err(|e| NodeError::Startup(format!("opening the queue store: {e}")))?
    .map_err(|e| NodeError::Startup(format!("opening the queue store: {e}")))?;
    let queues = Arc::new(queues);
    let tasks = Tasks::new();
    let killed = CancellationToken::new();
    // A peer fetching a component needs a frame as large as the largest upload.
    let max_peer_frame_bytes = ((config.admin.max_upload_mib as usize) << 20) + (1 << 20);
    // Visibility timeouts and delays take effect on time, not only when the queue is used.
    tasks.spawn(
        queues
            .clone()
            .run_timer(Duration::from_millis(50), tasks.stopping().clone()),
    );
    let exchange = Exchange::new((&config.pubsub).into(), tasks.clone());
    let (cache_config, dir) = (config.cache.clone(), config.node.data_dir.clone());
    let cache = tokio::task::spawn_blocking(move || {
        let clock: cache::store::Clock = Arc::new(crate::clock::unix_millis);
        cache::store::Cache::open(&cache_config, dir.as_deref(), clock)
    })
    .await
    .map_err(|e| NodeError::Startup(format!("opening the cache: {e}")))?
    .map_err(|e| NodeError::Startup(format!("opening the cache: {e}")))?;
    let cache = Arc::new(cache);
    let cache_handle = cache.clone();
    cache.start(&tasks);
    if config.cache.events {
        tasks.spawn(cache::events::Events::listen(
            exchange.clone(),
            cache.clone(),
            tasks.stopping().clone(),
        ));
    }
    // Services that call through the dispatcher (the cache's fan-out) get it once it exists.
    let late = LateDispatcher::new();
    // Every service registers its built-ins; the dispatcher knows none of them by name.
    let mut builtins = Builtins::new();
    // Services that must tell the cluster of a change before they answer hold this; the
    // cluster attaches itself when it starts.
    let sync = StateSync::new();
    let registered = rpc::builtins::core::register(&mut builtins)
        .and_then(|()| rpc::builtins::discovery::register(&mut builtins, exchange.clone()))
        .and_then(|()| queue::api::register(&mut builtins, queues.clone(), sync.clone()))
        .and_then(|()| {
            let events =
                cache::events::Events::new(exchange.clone(), &info.node_id, config.cache.events);
            let id = info.node_id.clone();
            cache::api::register(&mut builtins, cache, id, late.clone(), sync.clone(), events)
        });
    let cache_service = registered.map_err(|e| NodeError::Startup(e.to_string()))?;
    tasks.spawn(
        cache_service
            .clone()
            .drop_retired(manager.retirements(), tasks.stopping().clone()),
    );
    tasks.spawn(cache_service.hand_off(tasks.stopping().clone()));
    // The cluster starts before the server: the dispatcher routes through it from its first
    // call. The listener is bound already, so peers dialling in wait in its backlog.
    // A keyring that cannot be read stops the start: gossip in the clear is never a fallback.
    let keyring = match (&config.cluster.gossip_keyring, config.cluster.enabled) {
        (Some(path), true) => Some(
            crate::cluster::sealed::KeyringFile::open(path)
                .map_err(|e| NodeError::Startup(e.to_string()))?,
        ),
        _ => None,
    };
    let cluster = if config.cluster.enabled {
        let transport = match (&options.gossip_transport, &keyring) {
            (Some(t), _) => t.clone(),
            (None, Some(k)) => Arc::new(crate::cluster::sealed::SealedUdp::new(k.clone())),
            (None, None) => udp(),
        };
        let gossip_addr = match &config.cluster.gossip_addr {
            Some(a) => a.parse().map_err(|_| {
                ConfigError::Invalid(format!("cluster.gossip_addr '{a}' is not ip:port"))
            })?,
            None => addr,
        };
        let cluster = Cluster::start(
            &config.cluster,
            info.clone(),
            Services {
                plugins: manager.clone(),
                exchange: exchange.clone(),
                queues: queues.clone(),
            },
            (gossip_addr, transport),
            crate::cluster::link::LinkSettings {
                max_frame_bytes: max_peer_frame_bytes,
                // With a cluster CA, links speak TLS: this node's certificate, peers' checked.
                tls: config
                    .tls
                    .cluster_ca
                    .clone()
                    .map(|ca| crate::tls::ClientTls {
                        ca_file: Some(ca),
                        identity: config.tls.cert.clone().zip(config.tls.key.clone()),
                    }),
            },
            &sync,
            &tasks,
        )
        .await;
        let cluster = match cluster {
            Ok(c) => c,
            Err(e) => {
                tasks.stop();
                tasks.wait().await;
                return Err(e.into());
            }
        };
        tracing::info!(%gossip_addr, peers = ?config.cluster.peers, "gossip started");
        Some(cluster)
    } else {
        None
    };
    let dispatcher = NodeDispatcher::new(DispatcherParts {
        node: info.clone(),
        registry: registry.clone(),
        runtime,
        builtins: Arc::new(builtins),
        exchange: exchange.clone(),
        cluster: cluster.clone(),
    });
    late.set(Arc::downgrade(&dispatcher) as std::sync::Weak<dyn rpc::port::Dispatcher>);
    let gate = server::listen::Gate::new(connection_limits(&config.server));
    let guard = server::Guard::new(authenticator, admin, config.auth.public_metrics);
    let counts = server::metrics::ServerMetrics::new(config.metrics.enabled);
    let metrics = {
        let mut m = crate::metrics::Metrics::new(config.metrics.enabled);
        let r = m.registry();
        let runtime = dispatcher.runtime();
        runtime.metrics().calls.set_enabled(config.metrics.enabled);
        runtime.register_metrics(r);
        dispatcher.register_metrics(r);
        manager.register_metrics(r);
        exchange.register_metrics(r);
        queues.register_metrics(r);
        cache_handle.register_metrics(r);
        if let Some(c) = &cluster {
            c.register_metrics(r);
        }
        counts.register(r, &gate, &info);
        guard.register(r);
        if let Some(k) = &keyring {
            let k = Arc::downgrade(k);
            crate::metrics::collect(r, move |m| {
                let Some(k) = k.upgrade() else { return Ok(()) };
                let load = std::sync::atomic::Ordering::Relaxed;
                m.counter(
                    "gossip_rejected",
                    "Gossip datagrams dropped because they did not open with the cluster keyring",
                    k.rejected.load(load),
                )?;
                m.counter(
                    "gossip_keyring_reload_errors",
                    "Re-reads of the gossip keyring file that failed (the previous keys stayed)",
                    k.reload_errors.load(load),
                )
            });
        }
        Arc::new(m)
    };
    let state = Arc::new(ServerState {
        metrics,
        counts,
        connections: Arc::default(),
        access_log: config.logs.access,
        history: Default::default(),
        queues: queues.clone(),
        cache: cache_handle.clone(),
        exchange: exchange.clone(),
        dispatcher,
        node: info.clone(),
        registry: registry.clone(),
        manager: manager.clone(),
        guard,
        identities: Default::default(),
        max_upload_bytes: (config.admin.max_upload_mib as usize) << 20,
        config: config.server.clone(),
        shutdown: tasks.stopping().clone(),
        hard_stop: CancellationToken::new(),
        sessions: TaskTracker::new(),
        killed: killed.clone(),
        max_peer_frame_bytes,
        gate,
        security: server::handshake::Security {
            tls: tls.clone(),
            allow_plaintext: config.tls.allow_plaintext,
        },
        handshakes: Default::default(),
        cluster_ca: config.tls.cluster_ca.clone(),
    });
    let secure = tls.is_some();
    if let Some(tls) = tls {
        let every = Duration::from_millis(config.tls.reload_interval_ms);
        tasks.spawn(crate::tls::server::watch(
            tls,
            every,
            tasks.stopping().clone(),
        ));
    }
    // The topics `catalog_watch` and `summary_watch` name.
    let feed = state.dispatcher.clone();
    tasks.spawn(rpc::builtins::feed::run(
        move || feed.directory(),
        exchange.clone(),
        tasks.stopping().clone(),
    ));
    tasks.spawn(server::monitor::sample(
        state.clone(),
        tasks.stopping().clone(),
    ));
    let grace = Duration::from_millis(config.server.shutdown_grace_ms);
    let guest_memory = state.dispatcher.runtime().guest_memory().clone();
    let tcp = tcp_listener.map(|(l, _)| l);
    tasks.spawn(server::serve(listener, tcp, state, grace));
    tracing::info!(%addr, tcp = ?tcp_addr, node_id = %info.node_id, "node listening");
    Ok(NodeHandle {
        addr,
        tcp_addr,
        secure,
        info,
        registry,
        manager,
        generated_token,
        cluster,
        exchange,
        cache: cache_handle,
        guest_memory,
        tasks,
        killed,
    })
}

/// The node id kept in the data directory, so a restarted node is the same node to its peers;
/// generated (and kept) on the first start.
async fn stored_node_id(store: &PluginStore) -> Result<String, NodeError> {
    if let Some(id) = store.node_id()? {
        return Ok(id);
    }
    let id = generate_node_id();
    store.set_node_id(&id)?;
    store.flush().await?;
    Ok(id)
}

/// The admin API's credentials: the configured token, else the one generated on an earlier
/// start (only its hash was kept), else a new one, returned so it can be shown once.
async fn admin_auth(
    config: &NodeConfig,
    store: &PluginStore,
) -> Result<(server::AdminAuth, Option<Arc<str>>), NodeError> {
    if let Some(token) = &config.admin.token {
        return Ok((server::AdminAuth::from_token(token), None));
    }
    if let Some(hash) = store.admin_token_hash()? {
        return Ok((server::AdminAuth::from_hash(hash), None));
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw)
        .map_err(|e| NodeError::Startup(format!("generating the admin token: {e}")))?;
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("mpreg-{token}");
    let auth = server::AdminAuth::from_token(&token);
    store.set_admin_token_hash(auth.hash())?;
    store.flush().await?;
    tracing::warn!(
        "generated an admin token (shown once; set admin.token or MPREG_ADMIN_TOKEN to choose one)"
    );
    Ok((auth, Some(token.into())))
}
