//! Membership over chitchat (scuttlebutt gossip with a phi-accrual failure detector): this node's
//! advertised key-values go out, the live nodes' key-values come back as a [`ClusterView`].
//!
//! Gossip runs over UDP on the same port number as the node's HTTP listener (TCP and UDP ports
//! are separate), so a peer is named by one `host:port` for both. The transport is injected:
//! the node uses chitchat's `UdpTransport`; tests may build whole clusters on its in-memory
//! `ChannelTransport`, where partitions and deaths are simulated and time can be paused.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use chitchat::transport::{Transport, UdpTransport};
use chitchat::{ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState};
use tokio::sync::watch;

use super::catalog::{ClusterView, KEY_LEAVING, KEY_SEQ, ParseCache, PeerNode, is_pushed};
use super::overlay::{Gossiped, Overlay};
use super::wire::{PeerFrame, StateBatch};
use crate::shutdown::Tasks;

/// What gossip travels over: UDP for real nodes, chitchat's in-memory channels in tests.
pub type GossipTransport = Arc<dyn Transport>;

/// The node's default transport.
pub fn udp() -> GossipTransport {
    Arc::new(UdpTransport)
}

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
    handle: Arc<ChitchatHandle>,
    interval: Duration,
    view: Arc<ArcSwap<ClusterView>>,
    changes: watch::Receiver<Arc<ClusterView>>,
    builder: Arc<ViewBuilder>,
    own: Arc<OwnState>,
    /// Wakes the task that writes the pushed state into gossip.
    flush: Arc<tokio::sync::Notify>,
}

/// This node's pushed keys (`catalog::is_pushed`) and their sequence number: what a peer link
/// sends first when it comes up, so the peer has all of it before anything newer.
#[derive(Debug)]
pub struct OwnState {
    generation: u64,
    inner: Mutex<(u64, BTreeMap<String, String>)>,
}

impl OwnState {
    fn new(generation: u64, initial: &[(String, String)]) -> Self {
        let keys = initial
            .iter()
            .filter(|(k, _)| is_pushed(k))
            .cloned()
            .collect();
        OwnState {
            generation,
            inner: Mutex::new((0, keys)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (u64, BTreeMap<String, String>)> {
        // Updated whole under the lock: a panic elsewhere cannot leave it half-changed.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// This node's gossip generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The sequence number of the latest change.
    pub fn seq(&self) -> u64 {
        self.lock().0
    }

    /// The whole pushed state as one full batch.
    pub fn snapshot(&self) -> PeerFrame {
        let inner = self.lock();
        PeerFrame::State {
            generation: self.generation,
            batch: StateBatch {
                seq: inner.0,
                full: true,
                changes: inner
                    .1
                    .iter()
                    .map(|(k, v)| (k.clone(), Some(v.clone())))
                    .collect(),
            },
        }
    }
}

/// What a view is built from, and the parsed entries of the last build.
struct Inputs {
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    overlay: Overlay,
    parsed: std::collections::HashMap<String, NodeCache>,
}

/// Builds the view from the latest gossip state and the peers' pushed batches. One lock for
/// both sources, so a view built from older inputs never replaces a newer one.
struct ViewBuilder {
    me: String,
    inputs: Mutex<Inputs>,
    view: Arc<ArcSwap<ClusterView>>,
    changes: watch::Sender<Arc<ClusterView>>,
}

impl ViewBuilder {
    /// Builds and publishes the view; `push` is a peer's batch to record first.
    fn rebuild(&self, push: Option<(&str, u64, StateBatch)>) {
        let mut inputs = self.inputs.lock().unwrap_or_else(|e| e.into_inner());
        let Inputs {
            live,
            overlay,
            parsed,
        } = &mut *inputs;
        let now = Instant::now();
        if let Some((node, generation, batch)) = push {
            overlay.insert(node, generation, batch, now);
        }
        let next = Arc::new(build_view(
            &self.me,
            &live.borrow_and_update(),
            overlay,
            parsed,
            now,
        ));
        self.view.store(next.clone());
        let _ = self.changes.send(next);
    }
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
    /// Opens the gossip socket on `transport`, starts gossiping with the seeds, and keeps the
    /// view current until `tasks` stops; then gossip is shut down and its socket closed.
    pub async fn start(
        s: GossipSettings,
        initial: Vec<(String, String)>,
        transport: &dyn Transport,
        tasks: &Tasks,
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
        let own = Arc::new(OwnState::new(generation, &initial));
        let handle = chitchat::spawn_chitchat(config, initial, transport)
            .await
            .map_err(|e| GossipError {
                addr: s.addr,
                message: format!("{e:#}"),
            })?;
        let handle = Arc::new(handle);
        let view = Arc::new(ArcSwap::from_pointee(ClusterView::default()));
        let (tx, changes) = watch::channel(Arc::new(ClusterView::default()));
        let live = handle.with_chitchat(|c| c.live_nodes_watcher()).await;
        let mut woken = live.clone();
        let builder = Arc::new(ViewBuilder {
            me: s.node_id.clone(),
            inputs: Mutex::new(Inputs {
                live,
                overlay: Overlay::default(),
                parsed: Default::default(),
            }),
            view: view.clone(),
            changes: tx,
        });
        let (views, gossip) = (builder.clone(), handle.clone());
        let stop = tasks.stopping().clone();
        // Owns gossip's end: when the node stops, chitchat is shut down and this task returns
        // only once its socket is closed.
        tasks.spawn(async move {
            loop {
                woken.borrow_and_update();
                views.rebuild(None);
                tokio::select! {
                    _ = stop.cancelled() => break,
                    changed = woken.changed() => if changed.is_err() { break },
                }
            }
            let _ = gossip.initiate_shutdown();
            if let Err(e) = gossip.termination_watcher().await {
                tracing::debug!(error = %e, "gossip ended");
            }
        });
        let flush = Arc::new(tokio::sync::Notify::new());
        let (wake, writer, mine, stop) = (
            flush.clone(),
            handle.clone(),
            own.clone(),
            tasks.stopping().clone(),
        );
        // Writes the pushed state into gossip, coalescing what changed within one interval.
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = wake.notified() => {}
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(s.interval) => {}
                }
                write_gossip(&writer, &mine).await;
            }
        });
        Ok(Membership {
            handle,
            interval: s.interval,
            view,
            changes,
            builder,
            own,
            flush,
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

    /// Makes this node's pushed keys (`catalog::is_pushed`) under `prefixes` exactly `desired`
    /// (others are left alone): what changed gets the next sequence number and comes back as
    /// the batch to push to peers. Gossip gets the new state at most one gossip interval later,
    /// all changes since the last write at once (keys, then `seq`): a subscription that comes
    /// and goes within the interval never reaches gossip, so short-lived ones (a reply topic
    /// per request) leave no tombstones behind.
    pub fn advertise(
        &self,
        prefixes: &[&str],
        desired: &BTreeMap<String, String>,
    ) -> Option<StateBatch> {
        let mut inner = self.own.lock();
        let mut changes: Vec<(String, Option<String>)> = inner
            .1
            .keys()
            .filter(|k| prefixes.iter().any(|p| k.starts_with(p)) && !desired.contains_key(*k))
            .map(|k| (k.clone(), None))
            .collect();
        for (k, v) in desired {
            if inner.1.get(k) != Some(v) {
                changes.push((k.clone(), Some(v.clone())));
            }
        }
        changes.retain(|(k, _)| is_pushed(k));
        if changes.is_empty() {
            return None;
        }
        inner.0 += 1;
        for (k, v) in &changes {
            match v {
                Some(v) => inner.1.insert(k.clone(), v.clone()),
                None => inner.1.remove(k),
            };
        }
        let batch = StateBatch {
            seq: inner.0,
            full: false,
            changes,
        };
        drop(inner);
        self.flush.notify_one();
        Some(batch)
    }

    /// This node's pushed state, for the links to send when they come up.
    pub fn own_state(&self) -> &Arc<OwnState> {
        &self.own
    }

    /// Records a batch pushed by peer `node_id` and rebuilds the view: when this returns, the
    /// view (routing, publish fan-out, listings) includes it.
    pub fn apply_pushed(&self, node_id: &str, generation: u64, batch: StateBatch) {
        self.builder.rebuild(Some((node_id, generation, batch)));
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

    /// Stops gossiping at once (a crash, for tests: no goodbye is sent).
    pub fn stop(&self) {
        let _ = self.handle.initiate_shutdown();
    }

    /// Leaves the cluster on purpose: marks this node as leaving and gossips that to every
    /// live peer at once, then gives the exchange one gossip interval to complete. Peers drop
    /// the node from their view as soon as they hear it, instead of after the failure
    /// detector's timeout. Gossip itself is shut down when the node's tasks stop.
    pub async fn leave(&self) {
        let peers: Vec<std::net::SocketAddr> = self
            .handle
            .with_chitchat(|c| {
                c.self_node_state().set(KEY_LEAVING, "1");
                let me = c.self_chitchat_id().clone();
                c.live_nodes()
                    .filter(|id| **id != me)
                    .map(|id| id.gossip_advertise_addr)
                    .collect()
            })
            .await;
        if peers.is_empty() {
            return;
        }
        for addr in peers {
            let _ = self.handle.gossip(addr);
        }
        tokio::time::sleep(self.interval).await;
    }
}

/// Makes this node's pushed keys in gossip what `own` holds now, then writes its sequence
/// number: a peer that gossips this `seq` has every change up to it.
async fn write_gossip(handle: &ChitchatHandle, own: &OwnState) {
    let (seq, keys) = {
        let inner = own.lock();
        (inner.0, inner.1.clone())
    };
    handle
        .with_chitchat(|c| {
            let state = c.self_node_state();
            let stale: Vec<String> = state
                .key_values()
                .filter(|(k, _)| is_pushed(k) && !keys.contains_key(*k))
                .map(|(k, _)| k.to_owned())
                .collect();
            for k in stale {
                state.delete(&k);
            }
            for (k, v) in &keys {
                if state.get(k) != Some(v.as_str()) {
                    state.set(k.clone(), v.clone());
                }
            }
            let seq = seq.to_string();
            if state.get(KEY_SEQ) != Some(seq.as_str()) {
                state.set(KEY_SEQ, seq);
            }
        })
        .await;
}

/// The view of every live node but `me`, with the batches peers pushed and gossip has not
/// delivered yet laid over their state; of two generations of one node id (a restart not yet
/// noticed as the old one's death) the newest wins.
fn build_view(
    me: &str,
    live: &BTreeMap<ChitchatId, NodeState>,
    overlay: &mut Overlay,
    parsed: &mut std::collections::HashMap<String, NodeCache>,
    now: Instant,
) -> ClusterView {
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
            let cache = parsed.entry(id.node_id.to_string()).or_default();
            let inputs = (
                id.generation_id,
                state.max_version(),
                overlay.revision(&id.node_id),
            );
            if cache.inputs == Some(inputs) {
                // Neither its gossip nor its pushed batches changed: the same node.
                overlay.touch(&id.node_id, now);
                return cache.node.clone();
            }
            let pushed = overlay.holds(&id.node_id).then(|| {
                overlay.apply(
                    Gossiped {
                        node_id: &id.node_id,
                        generation: id.generation_id,
                        kvs: state.key_values(),
                    },
                    now,
                )
            });
            let node = match pushed.flatten() {
                Some(kvs) => PeerNode::parse_cached(
                    &id.node_id,
                    id.generation_id,
                    kvs,
                    &mut cache.entries,
                    &mut skipped,
                ),
                None => PeerNode::parse_cached(
                    &id.node_id,
                    id.generation_id,
                    state.key_values(),
                    &mut cache.entries,
                    &mut skipped,
                ),
            }
            .map(Arc::new);
            // Keyed by the overlay's revision after `apply` (which may have dropped batches
            // gossip now covers).
            cache.inputs = Some((
                id.generation_id,
                state.max_version(),
                overlay.revision(&id.node_id),
            ));
            cache.node = node.clone();
            node
        })
        .collect::<Vec<_>>();
    // What was built for nodes that are gone goes with them.
    parsed.retain(|id, _| live.keys().any(|l| *l.node_id == **id));
    overlay.prune(now);
    if !skipped.is_empty() {
        tracing::warn!(?skipped, "malformed gossip entries ignored");
    }
    ClusterView::from_shared(nodes)
}

/// What the last build made of one node, and from what.
#[derive(Default)]
struct NodeCache {
    /// Parsed entries by key.
    entries: ParseCache,
    /// `(generation, gossip max version, overlay revision)` it was built from.
    inputs: Option<(u64, u64, u64)>,
    /// The node built (`None`: not routable yet).
    node: Option<Arc<PeerNode>>,
}

#[cfg(test)]
mod tests {
    //! Membership and failure detection on chitchat's in-memory transport with paused time: no
    //! socket, no real sleep; partitions are cut links, deaths are stopped members.

    use std::net::SocketAddr;
    use std::time::Duration;

    use chitchat::transport::ChannelTransport;

    use super::*;
    use crate::cluster::catalog::KEY_URLS;

    const INTERVAL: Duration = Duration::from_millis(50);

    fn addr(i: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], 7000 + i))
    }

    async fn member(i: u16, seeds: &[u16], net: &ChannelTransport, tasks: &Tasks) -> Membership {
        let settings = GossipSettings {
            node_id: format!("n{i}"),
            cluster_id: "test".into(),
            addr: addr(i),
            seeds: seeds.iter().map(|s| addr(*s).to_string()).collect(),
            interval: INTERVAL,
            phi_threshold: 8.0,
        };
        let urls = (KEY_URLS.to_owned(), format!(r#"["ws://{}"]"#, addr(i)));
        Membership::start(settings, vec![urls], net, tasks)
            .await
            .expect("member starts")
    }

    /// Three members, each seeded by the first.
    async fn trio(net: &ChannelTransport, tasks: &Tasks) -> Vec<Membership> {
        let mut out = vec![member(0, &[], net, tasks).await];
        for i in 1..3 {
            out.push(member(i, &[0], net, tasks).await);
        }
        out
    }

    fn peers(m: &Membership) -> Vec<String> {
        m.view().nodes.iter().map(|n| n.node_id.clone()).collect()
    }

    /// Waits (in paused time) until `m`'s view holds exactly `want`; returns how long it took.
    async fn sees(m: &Membership, want: &[&str], within: Duration) -> Duration {
        let started = tokio::time::Instant::now();
        let mut changes = m.changes();
        loop {
            if peers(m) == want {
                return started.elapsed();
            }
            let left = within.saturating_sub(started.elapsed());
            let woke = tokio::time::timeout(left, changes.changed()).await;
            assert!(
                woke.is_ok(),
                "view {:?} is not {want:?} within {within:?}",
                peers(m)
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn members_find_each_other_through_a_seed() {
        let (net, tasks) = (ChannelTransport::default(), Tasks::new());
        let ms = trio(&net, &tasks).await;
        sees(&ms[0], &["n1", "n2"], Duration::from_secs(5)).await;
        sees(&ms[1], &["n0", "n2"], Duration::from_secs(5)).await;
        sees(&ms[2], &["n0", "n1"], Duration::from_secs(5)).await;
        assert_eq!(ms[0].view().nodes[0].url(), format!("ws://{}", addr(1)));
        tasks.stop();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_member_is_declared_dead_and_a_leaving_one_is_dropped_at_once() {
        let (net, tasks) = (ChannelTransport::default(), Tasks::new());
        let ms = trio(&net, &tasks).await;
        sees(&ms[0], &["n1", "n2"], Duration::from_secs(5)).await;
        sees(&ms[1], &["n0", "n2"], Duration::from_secs(5)).await;
        // A crash: gossip stops without a word. The failure detector needs a few seconds.
        ms[2].stop();
        let detected = sees(&ms[0], &["n1"], Duration::from_secs(30)).await;
        assert!(
            detected > INTERVAL * 4,
            "declared dead by the detector, after {detected:?}"
        );
        sees(&ms[1], &["n0"], Duration::from_secs(30)).await;
        // A graceful leave: the others drop it within about a gossip round.
        ms[1].leave().await;
        let dropped = sees(&ms[0], &[], Duration::from_secs(30)).await;
        assert!(
            dropped <= INTERVAL * 2,
            "left, not timed out: {dropped:?} vs {detected:?}"
        );
        tasks.stop();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_partition_splits_the_views_and_healing_joins_them_again() {
        let (net, tasks) = (ChannelTransport::default(), Tasks::new());
        let ms = trio(&net, &tasks).await;
        sees(&ms[2], &["n0", "n1"], Duration::from_secs(5)).await;
        for other in [0, 1] {
            net.remove_link(addr(2), addr(other)).await;
        }
        sees(&ms[0], &["n1"], Duration::from_secs(30)).await;
        sees(&ms[2], &[], Duration::from_secs(30)).await;
        for other in [0, 1] {
            net.add_link(addr(2), addr(other)).await;
        }
        sees(&ms[0], &["n1", "n2"], Duration::from_secs(30)).await;
        sees(&ms[2], &["n0", "n1"], Duration::from_secs(30)).await;
        tasks.stop();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_pushed_change_is_in_the_view_at_once_and_gossip_then_carries_it() {
        let (net, tasks) = (ChannelTransport::default(), Tasks::new());
        let ms = trio(&net, &tasks).await;
        sees(&ms[1], &["n0", "n2"], Duration::from_secs(5)).await;
        let wanted = BTreeMap::from([("s:a.#".to_owned(), String::new())]);
        let batch = ms[0].advertise(&["s:"], &wanted).expect("a change");
        assert_eq!((batch.seq, batch.full), (1, false));
        assert!(
            ms[0].advertise(&["s:"], &wanted).is_none(),
            "no change, no batch"
        );
        assert!(
            ms[1].view().interested("a.b").is_empty(),
            "no gossip round has run"
        );
        let generation = ms[0].own_state().generation();
        ms[1].apply_pushed("n0", generation, batch);
        assert_eq!(ms[1].view().interested("a.b").len(), 1, "known at once");
        // Gossip delivers the same state (and sequence number): the view keeps it.
        tokio::time::sleep(INTERVAL * 20).await;
        assert_eq!(ms[1].view().interested("a.b").len(), 1);
        assert_eq!(
            ms[2].view().interested("a.b").len(),
            1,
            "gossip reached the others"
        );
        // A link's first frame: the whole pushed state.
        let PeerFrame::State { batch, .. } = ms[0].own_state().snapshot() else {
            panic!("a state frame")
        };
        assert!(batch.full);
        assert_eq!(batch.seq, 1);
        assert_eq!(batch.changes, [("s:a.#".to_owned(), Some(String::new()))]);
        tasks.stop();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_key_that_comes_and_goes_within_an_interval_never_reaches_gossip() {
        let (net, tasks) = (ChannelTransport::default(), Tasks::new());
        let ms = trio(&net, &tasks).await;
        sees(&ms[1], &["n0", "n2"], Duration::from_secs(5)).await;
        let reply = BTreeMap::from([("s:reply.1".to_owned(), String::new())]);
        let stay = BTreeMap::from([("s:orders.#".to_owned(), String::new())]);
        assert!(ms[0].advertise(&["s:"], &reply).is_some());
        assert!(
            ms[0].advertise(&["s:"], &stay).is_some(),
            "reply.1 gone, orders.# new"
        );
        assert_eq!(ms[0].own_state().seq(), 2);
        tokio::time::sleep(INTERVAL * 20).await;
        assert_eq!(
            ms[2].view().interested("orders.new").len(),
            1,
            "the lasting one is gossiped"
        );
        let ever = ms[0]
            .handle
            .with_chitchat(|c| {
                let state = c.self_node_state();
                (
                    state
                        .key_values_including_deleted()
                        .any(|(k, _)| k == "s:reply.1"),
                    state.get(KEY_SEQ).map(str::to_owned),
                )
            })
            .await;
        assert_eq!(
            ever,
            (false, Some("2".to_owned())),
            "no tombstone; seq covers both"
        );
        tasks.stop();
        tasks.wait().await;
    }

    #[tokio::test(start_paused = true)]
    async fn stopping_ends_every_task_and_frees_the_address() {
        let (net, tasks) = (ChannelTransport::default(), Tasks::new());
        let m = member(0, &[], &net, &tasks).await;
        assert!(tasks.live() > 0);
        tasks.stop();
        tasks.wait().await;
        assert_eq!(tasks.live(), 0);
        drop(m);
        // The in-memory socket was closed: the address can be opened again.
        let again = Tasks::new();
        let _m = member(0, &[], &net, &again).await;
        again.stop();
        again.wait().await;
    }
}
