//! Membership over chitchat (scuttlebutt gossip with a phi-accrual failure detector): this node's
//! advertised key-values go out, the live nodes' key-values come back as a [`ClusterView`].
//!
//! Gossip runs over UDP on the same port number as the node's HTTP listener (TCP and UDP ports
//! are separate), so a peer is named by one `host:port` for both.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use chitchat::transport::UdpTransport;
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::catalog::{ClusterView, PeerNode};

/// Gossip settings (from `[cluster]`).
#[derive(Debug, Clone)]
pub struct GossipSettings {
    /// This node's id.
    pub node_id: String,
    /// Only nodes with the same cluster id gossip together.
    pub cluster_id: String,
    /// UDP address to bind and advertise.
    pub addr: SocketAddr,
    /// `host:port` of nodes to join through.
    pub seeds: Vec<String>,
    /// Time between gossip rounds.
    pub interval: Duration,
    /// Phi above which a silent node is declared dead: roughly "this many mean heartbeat
    /// intervals without news".
    pub phi_threshold: f64,
}

/// The running gossip member.
pub struct Membership {
    handle: ChitchatHandle,
    view: Arc<ArcSwap<ClusterView>>,
    changes: watch::Receiver<Arc<ClusterView>>,
}

/// Gossip could not start.
#[derive(Debug, thiserror::Error)]
#[error("cluster gossip on udp {addr}: {message}")]
pub struct GossipError {
    /// The UDP address.
    pub addr: SocketAddr,
    /// What failed.
    pub message: String,
}

impl Membership {
    /// Binds the UDP socket, starts gossiping with the seeds, and keeps the view current until
    /// `shutdown`.
    pub async fn start(
        s: GossipSettings,
        initial: Vec<(String, String)>,
        shutdown: CancellationToken,
    ) -> Result<Membership, GossipError> {
        // The generation tells a restarted node from its previous life.
        let generation = crate::clock::unix_millis();
        let config = ChitchatConfig {
            chitchat_id: ChitchatId::new(s.node_id.clone(), generation, s.addr),
            cluster_id: s.cluster_id.clone(),
            gossip_interval: s.interval,
            listen_addr: s.addr,
            seed_nodes: s.seeds.clone(),
            failure_detector_config: FailureDetectorConfig {
                phi_threshold: s.phi_threshold,
                sampling_window_size: 1000,
                max_interval: Duration::from_secs(10),
                // The prior mean heartbeat interval, before samples come in: about two rounds.
                initial_interval: s.interval * 2,
                // Dead nodes are dropped from routing at once; their gossip state is kept a
                // while so a late message cannot resurrect them.
                dead_node_grace_period: Duration::from_secs(120),
            },
            marked_for_deletion_grace_period: Duration::from_secs(3600),
            catchup_callback: None,
            extra_liveness_predicate: None,
            protocol_version: chitchat::ProtocolVersion::V0,
        };
        let handle = chitchat::spawn_chitchat(config, initial, &UdpTransport)
            .await
            .map_err(|e| GossipError {
                addr: s.addr,
                message: format!("{e:#}"),
            })?;
        let view = Arc::new(ArcSwap::from_pointee(ClusterView::default()));
        let (tx, changes) = watch::channel(Arc::new(ClusterView::default()));
        let mut live = handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        let (me, shared) = (s.node_id.clone(), view.clone());
        tokio::spawn(async move {
            loop {
                let next = Arc::new(build_view(&me, &live.borrow_and_update()));
                shared.store(next.clone());
                let _ = tx.send(next);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    changed = live.changed() => if changed.is_err() { break },
                }
            }
        });
        Ok(Membership {
            handle,
            view,
            changes,
        })
    }

    /// The other live nodes now.
    pub fn view(&self) -> Arc<ClusterView> {
        self.view.load_full()
    }

    /// The view, for routing without a clone per call.
    pub fn view_ref(&self) -> arc_swap::Guard<Arc<ClusterView>> {
        self.view.load()
    }

    /// A receiver that wakes on every view change.
    pub fn changes(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.changes.clone()
    }

    /// Makes this node's keys under `prefixes` exactly `desired` (others are left alone):
    /// sets what changed, deletes what is gone. Unchanged values are not touched, so they
    /// cost no gossip.
    pub async fn advertise(&self, prefixes: &[&str], desired: &BTreeMap<String, String>) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                let stale: Vec<String> = state
                    .key_values()
                    .filter(|(k, _)| {
                        prefixes.iter().any(|p| k.starts_with(p)) && !desired.contains_key(*k)
                    })
                    .map(|(k, _)| k.to_owned())
                    .collect();
                for k in stale {
                    state.delete(&k);
                }
                for (k, v) in desired {
                    if state.get(k) != Some(v.as_str()) {
                        state.set(k.clone(), v.clone());
                    }
                }
            })
            .await;
    }

    /// Sets one key if its value changed.
    pub async fn set(&self, key: &str, value: String) {
        self.handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                if state.get(key) != Some(value.as_str()) {
                    state.set(key, value.clone());
                }
            })
            .await;
    }

    /// Stops gossiping at once (a crash, for tests: no goodbye is sent either way).
    pub fn stop(&self) {
        let _ = self.handle.initiate_shutdown();
    }
}

/// The view of every live node but `me`; of two generations of one node id (a restart not yet
/// noticed as the old one's death) the newest wins.
fn build_view(me: &str, live: &BTreeMap<ChitchatId, NodeState>) -> ClusterView {
    let mut newest: BTreeMap<&str, (&ChitchatId, &NodeState)> = BTreeMap::new();
    for (id, state) in live {
        if &*id.node_id == me {
            continue;
        }
        let slot = newest.entry(&id.node_id).or_insert((id, state));
        if id.generation_id > slot.0.generation_id {
            *slot = (id, state);
        }
    }
    let mut skipped = Vec::new();
    let nodes = newest
        .into_values()
        .filter_map(|(id, state)| {
            PeerNode::parse(
                &id.node_id,
                id.generation_id,
                state.key_values(),
                &mut skipped,
            )
        })
        .collect();
    if !skipped.is_empty() {
        tracing::warn!(?skipped, "malformed gossip entries ignored");
    }
    ClusterView::new(nodes)
}
