//! The cluster: gossip membership and catalog ([`membership`], [`catalog`]), persistent peer
//! links ([`link`], [`wire`]), and plugin distribution ([`distribute`]).
//!
//! Three background tasks keep this node in step: the advertiser writes this node's functions,
//! plugin records and load into the gossip state; the link keeper dials every live peer and
//! drops links to nodes that left; the distributor installs and retires plugin versions to
//! follow the newest state anywhere in the cluster.

pub mod catalog;
pub mod distribute;
pub mod keyring;
pub mod link;
pub mod membership;
pub mod overlay;
pub mod sealed;
pub mod wire;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use self::catalog::{
    EXACT_INTEREST_PREFIX, FUNCTION_PREFIX, FunctionAd, INTEREST_PREFIX, KEY_LOAD, KEY_REGION,
    KEY_RESOURCES, KEY_STARTED, KEY_URLS, LoadAd, PLUGIN_PREFIX, PluginAd, QUEUE_PREFIX,
};
use self::distribute::Action;
use self::link::{LinkIdentity, PeerLink, PeerLinks};
use self::membership::{GossipError, GossipSettings, GossipTransport, Membership};
use crate::config::{ClusterConfig, seed_addr};
use crate::digest::sha256_hex;
use crate::identity::NodeInfo;
use crate::plugin::{PluginManager, PublishOptions, StoreError};
use crate::pubsub::exchange::{Exchange, Fanout};
use crate::queue::manager::QueueManager;
use crate::shutdown::Tasks;

/// How long a failed install waits before it is tried again.
const RETRY_INSTALL: Duration = Duration::from_secs(3);
/// The distributor also runs this often without a trigger (a missed wake-up heals).
const DISTRIBUTE_EVERY: Duration = Duration::from_secs(2);

/// What this node has that the cluster advertises and serves.
pub struct Services {
    /// Published plugins (distributed) and the functions they serve (advertised).
    pub plugins: Arc<PluginManager>,
    /// Subscriptions (their patterns are advertised; publishes are forwarded through it).
    pub exchange: Arc<Exchange>,
    /// Queues (their names are advertised).
    pub queues: Arc<QueueManager>,
}

/// This node's part in the cluster.
pub struct Cluster {
    membership: Membership,
    links: Arc<PeerLinks>,
    node: Arc<NodeInfo>,
    max_hops: u8,
    plugins: Arc<PluginManager>,
    /// Weak: the exchange holds the cluster (its fan-out).
    exchange: Weak<Exchange>,
    queues: Arc<QueueManager>,
    /// Whether this node follows the cluster's plugin states (`distribute_plugins`).
    follows_plugins: bool,
    /// How long [`Cluster::settle`] waits for peers.
    push_timeout: Duration,
}

/// A part of this node's state that clients wait on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// Subscription patterns.
    Interest,
    /// Queues it owns.
    Queues,
    /// Functions it serves and its plugin records.
    Plugins,
}

/// How a change reached the live peers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settled {
    /// Peers that confirmed they have it.
    pub confirmed: usize,
    /// Peers that did not confirm within the timeout (gossip carries it to them).
    pub unconfirmed: Vec<String>,
}

/// What a service holds to make a change it just made known to the cluster before it answers
/// its client: created before the cluster starts (services register first), attached when it
/// does. A standalone node's handle settles at once.
#[derive(Default)]
pub struct StateSync {
    cluster: OnceLock<Weak<Cluster>>,
}

impl StateSync {
    /// A handle not attached to any cluster yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// The cluster, once it started (and while it lives).
    pub fn cluster(&self) -> Option<Arc<Cluster>> {
        self.cluster.get().and_then(Weak::upgrade)
    }

    /// Pushes `part` to the live peers and waits for them (see [`Cluster::settle`]).
    pub async fn settle(&self, part: Part) -> Settled {
        match self.cluster.get().and_then(Weak::upgrade) {
            Some(c) => c.settle(part).await,
            None => Settled::default(),
        }
    }
}

impl Cluster {
    /// Joins the cluster through `config.peers` (none: this node starts a cluster of its own)
    /// over `transport` and starts the background tasks in `tasks`; they stop with it.
    pub async fn start(
        config: &ClusterConfig,
        node: Arc<NodeInfo>,
        services: Services,
        gossip: (SocketAddr, GossipTransport),
        links: link::LinkSettings,
        sync: &StateSync,
        tasks: &Tasks,
    ) -> Result<Arc<Cluster>, GossipError> {
        let (gossip_addr, transport) = gossip;
        let Services {
            plugins: manager,
            exchange,
            queues,
        } = services;
        let settings = GossipSettings {
            node_id: node.node_id.clone(),
            cluster_id: node.cluster_id.clone(),
            addr: gossip_addr,
            seeds: config.peers.iter().map(|p| seed_addr(p)).collect(),
            interval: Duration::from_millis(config.gossip_interval_ms),
            phi_threshold: config.phi_threshold,
        };
        let mut initial = vec![
            (KEY_URLS.to_owned(), json_text(&node.advertised_urls)),
            (KEY_REGION.to_owned(), node.region.clone()),
            (KEY_RESOURCES.to_owned(), json_text(&node.resources)),
            (KEY_STARTED.to_owned(), node.started_at.to_string()),
            (KEY_LOAD.to_owned(), json_text(&load(&node))),
        ];
        // Functions loaded before the start are advertised in the very first gossip round.
        initial.extend(advertised(&manager));
        initial.extend(exchange.interest());
        initial.extend(queue_keys(&queues));
        let membership = Membership::start(settings, initial, &*transport, tasks).await?;
        let links = Arc::new(PeerLinks::new(
            LinkIdentity {
                node_id: node.node_id.clone(),
                cluster_id: node.cluster_id.clone(),
                max_frame_bytes: links.max_frame_bytes,
                tls: links.tls,
                own: membership.own_state().clone(),
            },
            tasks.clone(),
        ));
        let cluster = Arc::new(Cluster {
            membership,
            links,
            node,
            max_hops: config.max_hops,
            plugins: manager.clone(),
            exchange: Arc::downgrade(&exchange),
            queues: queues.clone(),
            follows_plugins: config.distribute_plugins,
            push_timeout: Duration::from_millis(config.state_push_timeout_ms),
        });
        let _ = sync.cluster.set(Arc::downgrade(&cluster));
        exchange.join(cluster.clone());
        let stop = tasks.stopping();
        tasks.spawn(advertise_interest(cluster.clone(), exchange, stop.clone()));
        tasks.spawn(advertise_queues(cluster.clone(), queues, stop.clone()));
        tasks.spawn(keep_links(cluster.clone(), stop.clone()));
        tasks.spawn(advertise(
            cluster.clone(),
            manager.clone(),
            Duration::from_millis(config.load_report_ms),
            stop.clone(),
        ));
        if config.distribute_plugins {
            tasks.spawn(distribute(cluster.clone(), manager, stop.clone()));
        }
        Ok(cluster)
    }

    /// The other live nodes and what they serve.
    pub fn view(&self) -> arc_swap::Guard<Arc<catalog::ClusterView>> {
        self.membership.view_ref()
    }

    /// The link to `node_id`.
    pub fn link(&self, node_id: &str) -> Option<Arc<PeerLink>> {
        self.links.get(node_id)
    }

    /// Every link, for tests and status.
    pub fn links(&self) -> &PeerLinks {
        &self.links
    }

    /// Registers a collector of the cluster as this node sees it: live members, the catalog,
    /// and each peer link (up, connections made, calls in flight), labelled by peer node id
    /// (bounded by the cluster's size).
    pub fn register_metrics(self: &Arc<Self>, r: &mut crate::metrics::Registry) {
        let weak = Arc::downgrade(self);
        crate::metrics::collect(r, move |m| {
            let Some(c) = weak.upgrade() else {
                return Ok(());
            };
            let view = c.view();
            m.gauges(
                "cluster_members",
                "Cluster members this node sees, by state (this node counts as live)",
                [(
                    vec![("state", "live".to_owned())],
                    (view.nodes.len() + 1) as f64,
                )],
            )?;
            m.gauge(
                "cluster_catalog_functions",
                "Function versions the other live nodes advertise",
                view.all_functions().count() as f64,
            )?;
            let links: Vec<_> = view
                .nodes
                .iter()
                .filter_map(|n| c.link(&n.node_id))
                .collect();
            let per = |f: fn(&link::PeerLink) -> f64| {
                links
                    .iter()
                    .map(move |l| (vec![("peer", l.node_id.clone())], f(l)))
            };
            m.gauges(
                "peer_link_up",
                "Whether the link to a peer is connected (1) or not (0)",
                per(|l| f64::from(u8::from(l.is_connected()))),
            )?;
            m.counters(
                "peer_link_connects",
                "Connections made on a peer link (more than one: it reconnected)",
                links
                    .iter()
                    .map(|l| (vec![("peer", l.node_id.clone())], l.connects())),
            )?;
            m.gauges(
                "peer_link_calls_in_flight",
                "Calls this node has running on a peer",
                per(|l| l.in_flight() as f64),
            )
        });
    }

    /// Forwards a call may still make after the coordinator's.
    pub fn max_hops(&self) -> u8 {
        self.max_hops
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.node.node_id
    }

    /// Writes `part` of this node's state into gossip and pushes what changed to every live
    /// peer; returns the state sequence number that covers it (a concurrent call may have
    /// pushed this very change already: the number covers that too).
    pub fn announce(&self, part: Part) -> u64 {
        let own = self.membership.own_state();
        let (prefixes, desired): (&[&str], _) = match part {
            Part::Interest => match self.exchange.upgrade() {
                Some(exchange) => (
                    &[INTEREST_PREFIX, EXACT_INTEREST_PREFIX],
                    exchange.interest(),
                ),
                // The node is gone: nothing to tell.
                None => return own.seq(),
            },
            Part::Queues => (&[QUEUE_PREFIX], queue_keys(&self.queues)),
            Part::Plugins => (&[FUNCTION_PREFIX, PLUGIN_PREFIX], advertised(&self.plugins)),
        };
        if let Some(batch) = self.membership.advertise(prefixes, &desired) {
            let frame = wire::PeerFrame::State {
                generation: own.generation(),
                batch,
            };
            match frame.encode() {
                Ok(bytes) => {
                    let bytes = bytes::Bytes::from(bytes);
                    for node in &self.view().nodes {
                        if let Some(link) = self.links.get(&node.node_id) {
                            link.post(bytes.clone());
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "cannot encode a state change for peers"),
            }
        }
        own.seq()
    }

    /// Announces `part` and waits until every live peer has applied it, at most
    /// `cluster.state_push_timeout_ms`. A peer whose link is being dialled for the first time
    /// is waited for (the link's first frame is this node's whole state); one whose link
    /// broke is not (it is failing; gossip, and the link's first frame when it is back, bring
    /// it up to date).
    pub async fn settle(&self, part: Part) -> Settled {
        let seq = self.announce(part);
        let until = tokio::time::Instant::now() + self.push_timeout;
        let view = self.view();
        let waits = view.nodes.iter().filter_map(|node| {
            let link = self.links.get(&node.node_id)?;
            let id = node.node_id.clone();
            Some(async move {
                let ok =
                    (link.is_connected() || link.is_new()) && link.wait_acked(seq, until).await;
                (id, ok)
            })
        });
        let mut settled = Settled::default();
        for (id, ok) in futures_util::future::join_all(waits).await {
            if ok {
                settled.confirmed += 1;
            } else {
                settled.unconfirmed.push(id);
            }
        }
        if !settled.unconfirmed.is_empty() {
            tracing::debug!(seq, ?part, unconfirmed = ?settled.unconfirmed,
                "peers did not confirm a state change in time; gossip carries it");
        }
        settled
    }

    /// Applies a state change pushed by peer `from`. When it retires plugin versions this
    /// node serves, they are taken out of its registry before this returns, so once the peer
    /// hears back no node routes a new call to them.
    pub async fn receive_state(&self, from: &str, generation: u64, batch: wire::StateBatch) {
        let plugins = batch
            .changes
            .iter()
            .any(|(k, _)| k.starts_with(PLUGIN_PREFIX));
        self.membership.apply_pushed(from, generation, batch);
        if !(plugins && self.follows_plugins) {
            return;
        }
        let local = match plugin_ads(&self.plugins) {
            Ok(l) => l,
            Err(e) => return tracing::error!(error = %e, "cannot read plugin records"),
        };
        let view = self.view();
        for action in distribute::decide(&self.node.resources, &local, &view) {
            if let Action::Retire {
                name,
                version,
                changed_at,
            } = action
                && let Err(e) = self
                    .plugins
                    .unlist_at(&name, &version, Some(changed_at))
                    .await
            {
                tracing::warn!(plugin = %name, %version, error = %e, "retire from the cluster failed");
            }
        }
    }

    /// Stops gossip at once, as a crash would (tests).
    pub fn stop_gossip(&self) {
        self.membership.stop();
    }

    /// Tells the other nodes this one is leaving, so they drop it at once (graceful shutdown).
    pub async fn leave(&self) {
        self.membership.leave().await;
    }
}

impl Fanout for Cluster {
    fn wants(&self, topic: &str) -> bool {
        !self.membership.view_ref().interested(topic).is_empty()
    }

    fn forward(&self, topic: &str, raw: &Arc<str>) {
        let view = self.membership.view_ref();
        let nodes = view.interested(topic);
        if nodes.is_empty() {
            return;
        }
        let frame = wire::PeerFrame::Publish {
            message: raw.to_string(),
        };
        let bytes = match frame.encode() {
            Ok(b) => bytes::Bytes::from(b),
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a publish for peers");
                return;
            }
        };
        for node in nodes {
            match self.links.get(&node.node_id) {
                Some(link) => link.post(bytes.clone()),
                None => tracing::debug!(peer = %node.node_id, "no link; publish not forwarded"),
            }
        }
    }
}

/// Keeps this node's subscription patterns in its gossip state (and its peers' views), so
/// other nodes forward it exactly the messages its subscribers want. A subscribe also settles
/// its own change before its ack; this catches every other change (unsubscribes, connections
/// gone).
async fn advertise_interest(
    cluster: Arc<Cluster>,
    exchange: Arc<Exchange>,
    shutdown: CancellationToken,
) {
    loop {
        cluster.announce(Part::Interest);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = exchange.interest_changed().notified() => {}
        }
    }
}

fn queue_keys(queues: &QueueManager) -> BTreeMap<String, String> {
    queues
        .names()
        .into_iter()
        .map(|n| (format!("{QUEUE_PREFIX}{n}"), String::new()))
        .collect()
}

/// Keeps the names of this node's queues in its gossip state (and its peers' views), so
/// `queue.*` calls from any node reach the owner.
async fn advertise_queues(
    cluster: Arc<Cluster>,
    queues: Arc<QueueManager>,
    shutdown: CancellationToken,
) {
    loop {
        cluster.announce(Part::Queues);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = queues.changed().notified() => {}
        }
    }
}

fn json_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

fn load(node: &NodeInfo) -> LoadAd {
    LoadAd {
        score: node.running_calls.load(Ordering::Relaxed) as f64,
        clients: node.active_clients.load(Ordering::Relaxed) as u64,
        requests: node.active_requests.load(Ordering::Relaxed) as u64,
    }
}

/// This node's plugin states as the cluster sees them, from its stored records.
fn plugin_ads(manager: &PluginManager) -> Result<HashMap<(String, String), PluginAd>, StoreError> {
    Ok(manager
        .records()?
        .into_iter()
        .map(|r| {
            let ad = PluginAd {
                sha256: r.sha256.clone(),
                size: r.size,
                active: r.active,
                changed_at: r.changed(),
                placement: r.placement.clone(),
                sandbox: r.sandbox.clone(),
            };
            ((r.name, r.version), ad)
        })
        .collect())
}

/// This node's function and plugin keys: what its registry serves and its store holds.
fn advertised(manager: &PluginManager) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for p in manager.registry().plugins() {
        for f in &p.functions {
            let ad = FunctionAd {
                name: f.name.clone(),
                version: p.manifest.version.clone(),
                function_id: f.function_id.clone(),
                resources: f.resources.clone(),
                signature: f.signature.clone(),
                description: f.description.clone(),
                plugin: p.manifest.name.clone(),
                sha256: p.sha256.clone(),
                cache: f.cache.clone(),
            };
            let key = catalog::function_key(&f.name, &ad.version.to_string(), &f.function_id);
            out.insert(key, json_text(&ad));
        }
    }
    match plugin_ads(manager) {
        Ok(ads) => {
            for ((name, version), ad) in ads {
                out.insert(catalog::plugin_key(&name, &version), json_text(&ad));
            }
        }
        Err(e) => tracing::error!(error = %e, "cannot read plugin records to advertise"),
    }
    out
}

async fn keep_links(cluster: Arc<Cluster>, shutdown: CancellationToken) {
    let mut changes = cluster.membership.changes();
    loop {
        let view = changes.borrow_and_update().clone();
        cluster.links.sync(&view);
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = changes.changed() => if r.is_err() { break },
        }
    }
}

/// Writes functions and plugin records when they change, and the load every `every`.
async fn advertise(
    cluster: Arc<Cluster>,
    manager: Arc<PluginManager>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_full = Instant::now();
    loop {
        let full = tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = manager.changed().notified() => true,
            _ = tick.tick() => last_full.elapsed() >= DISTRIBUTE_EVERY,
        };
        if full {
            last_full = Instant::now();
            cluster.announce(Part::Plugins);
        }
        cluster
            .membership
            .set(KEY_LOAD, json_text(&load(&cluster.node)))
            .await;
    }
}

/// Follows the cluster's plugin states (see [`distribute`]).
async fn distribute(
    cluster: Arc<Cluster>,
    manager: Arc<PluginManager>,
    shutdown: CancellationToken,
) {
    let mut changes = cluster.membership.changes();
    let mut failed: HashMap<(String, String, String), Instant> = HashMap::new();
    loop {
        let view = changes.borrow_and_update().clone();
        let local = match plugin_ads(&manager) {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(error = %e, "cannot read plugin records");
                HashMap::new()
            }
        };
        failed.retain(|_, at| at.elapsed() < RETRY_INSTALL);
        for action in distribute::decide(&cluster.node.resources, &local, &view) {
            if shutdown.is_cancelled() {
                return;
            }
            match action {
                Action::Install {
                    name,
                    version,
                    ad,
                    sources,
                } => {
                    let key = (name.clone(), version.clone(), ad.sha256.clone());
                    if failed.contains_key(&key) {
                        continue;
                    }
                    if let Err(e) = install(&cluster, &manager, &ad, &sources).await {
                        tracing::warn!(plugin = %name, %version, error = %e, "install from the cluster failed; will retry");
                        failed.insert(key, Instant::now());
                    }
                }
                Action::Retire {
                    name,
                    version,
                    changed_at,
                } => {
                    if let Err(e) = manager.retire_at(&name, &version, Some(changed_at)).await {
                        tracing::warn!(plugin = %name, %version, error = %e, "retire from the cluster failed");
                    }
                }
            }
        }
        tokio::select! {
            _ = shutdown.cancelled() => break,
            r = changes.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(DISTRIBUTE_EVERY) => {}
        }
    }
}

/// Gets the bytes (held already, or from the first source that has them), checks their
/// sha256, and publishes them with the cluster's state.
async fn install(
    cluster: &Cluster,
    manager: &PluginManager,
    ad: &PluginAd,
    sources: &[String],
) -> Result<(), String> {
    let bytes = match manager.blob(&ad.sha256).map_err(|e| e.to_string())? {
        Some(b) => b,
        None => fetch(cluster, &ad.sha256, sources).await?,
    };
    let options = PublishOptions {
        sandbox: Some(ad.sandbox.clone()),
        placement: Some(ad.placement.clone()),
        changed_at: Some(ad.changed_at),
    };
    let done = manager
        .publish_with(bytes.into(), options)
        .await
        .map_err(|e| e.to_string())?;
    // Retired elsewhere while it was being fetched and compiled: it must not serve.
    if retired_since(cluster, &done.name, &done.version, ad.changed_at) {
        manager
            .unlist_at(&done.name, &done.version, None)
            .await
            .map_err(|e| e.to_string())?;
        return Ok(());
    }
    tracing::info!(plugin = %done.name, version = %done.version, outcome = %done.outcome,
        "plugin installed from the cluster");
    Ok(())
}

/// Whether a peer's newest record for `name@version` is a retirement later than `after`.
fn retired_since(cluster: &Cluster, name: &str, version: &str, after: f64) -> bool {
    cluster.view().nodes.iter().any(|n| {
        n.plugins
            .iter()
            .any(|(p, v, ad)| p == name && v == version && !ad.active && ad.changed_at > after)
    })
}

async fn fetch(cluster: &Cluster, sha256: &str, sources: &[String]) -> Result<Vec<u8>, String> {
    let mut why = Vec::new();
    for node in sources {
        let Some(link) = cluster.link(node) else {
            why.push(format!("{node}: no link"));
            continue;
        };
        if !cluster
            .links
            .wait_connected(node, Duration::from_secs(2))
            .await
        {
            why.push(format!("{node}: unreachable"));
            continue;
        }
        match link.fetch(sha256).await {
            Ok(Some(bytes)) if sha256_hex(&bytes) == sha256 => return Ok(bytes),
            Ok(Some(_)) => why.push(format!("{node}: bytes do not match sha256 {sha256}")),
            Ok(None) => why.push(format!("{node}: does not hold it")),
            Err(e) => why.push(format!("{node}: {e}")),
        }
    }
    Err(format!("cannot fetch {sha256}: {}", why.join("; ")))
}
