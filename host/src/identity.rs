//! This node's identity and live counters ([`NodeInfo`]), and the one guard type that counts
//! something for as long as it lives ([`Counted`]).
//!
//! Vocabulary: the gossip advertiser, the dispatcher, the built-ins and the server all read the
//! same `NodeInfo`, so it lives below all of them.

use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// This node's identity and live load, as `cluster_map` reports it.
#[derive(Debug)]
pub struct NodeInfo {
    /// Node id.
    pub node_id: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Region label.
    pub region: String,
    /// Resource tags of the node.
    pub resources: Vec<String>,
    /// URLs clients use to reach it.
    pub advertised_urls: Vec<String>,
    /// When this node started (Unix seconds).
    pub started_at: f64,
    /// Open client connections.
    pub active_clients: AtomicUsize,
    /// Requests being executed.
    pub active_requests: AtomicUsize,
    /// Plugin calls running on this node (for any coordinator): the load score.
    pub running_calls: AtomicUsize,
}

/// A snapshot of a node's load counters.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Load {
    /// Plugin calls running (the load score).
    pub running_calls: usize,
    /// Open client connections.
    pub active_clients: usize,
    /// Requests being executed.
    pub active_requests: usize,
}

impl NodeInfo {
    /// A node with zeroed counters.
    pub fn new(
        node_id: String,
        cluster_id: String,
        region: String,
        resources: Vec<String>,
        advertised_urls: Vec<String>,
    ) -> NodeInfo {
        NodeInfo {
            node_id,
            cluster_id,
            region,
            resources,
            advertised_urls,
            started_at: crate::clock::unix_now(),
            active_clients: AtomicUsize::new(0),
            active_requests: AtomicUsize::new(0),
            running_calls: AtomicUsize::new(0),
        }
    }

    /// The counters now.
    pub fn load(&self) -> Load {
        Load {
            running_calls: self.running_calls.load(Ordering::Relaxed),
            active_clients: self.active_clients.load(Ordering::Relaxed),
            active_requests: self.active_requests.load(Ordering::Relaxed),
        }
    }
}

/// A counter that a [`Counted`] guard raises and lowers.
pub trait Gauge {
    /// One more.
    fn up(&self);
    /// One fewer.
    fn down(&self);
}

impl Gauge for AtomicUsize {
    fn up(&self) {
        self.fetch_add(1, Ordering::Relaxed);
    }
    fn down(&self) {
        self.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Gauge for AtomicU64 {
    fn up(&self) {
        self.fetch_add(1, Ordering::Relaxed);
    }
    fn down(&self) {
        self.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one of something (a call, a connection, a request) in a gauge for as long as it
/// lives, so no early return or panic can leave the count high. `P` is how the gauge is held:
/// a reference, or an owning pointer such as [`RunningCalls`] where the guard must be `'static`.
pub struct Counted<P: Deref>(P)
where
    P::Target: Gauge;

impl<P: Deref> Counted<P>
where
    P::Target: Gauge,
{
    /// Raises the gauge; it is lowered when the guard drops.
    pub fn enter(gauge: P) -> Self {
        gauge.up();
        Counted(gauge)
    }
}

impl<P: Deref> Drop for Counted<P>
where
    P::Target: Gauge,
{
    fn drop(&mut self) {
        self.0.down();
    }
}

/// The node's `running_calls` gauge, held by an owning pointer (for guards inside futures).
#[derive(Clone)]
pub struct RunningCalls(pub Arc<NodeInfo>);

impl Deref for RunningCalls {
    type Target = AtomicUsize;
    fn deref(&self) -> &AtomicUsize {
        &self.0.running_calls
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guard_counts_while_it_lives() {
        let n = AtomicUsize::new(0);
        {
            let _a = Counted::enter(&n);
            let _b = Counted::enter(&n);
            assert_eq!(n.load(Ordering::Relaxed), 2);
        }
        assert_eq!(n.load(Ordering::Relaxed), 0);
        let wide = AtomicU64::new(5);
        drop(Counted::enter(&wide));
        assert_eq!(wide.load(Ordering::Relaxed), 5);
    }

    #[test]
    fn an_owned_guard_counts_running_calls() {
        let node = Arc::new(NodeInfo::new(
            "n".into(),
            "c".into(),
            "r".into(),
            vec![],
            vec![],
        ));
        let g = Counted::enter(RunningCalls(node.clone()));
        assert_eq!(node.load().running_calls, 1);
        drop(g);
        assert_eq!(node.load(), Load::default());
    }
}
