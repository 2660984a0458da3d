//! The discovery replies every node serves (protocol.md §4): the shape of `cluster_map` and
//! its node entries, typed once so the node that builds them and the clients that read them
//! cannot drift apart. Field names are those of the original MPREG; only `node_id` and
//! `advertised_urls` are required when reading, so a leaner map from another implementation
//! still parses.

use serde::{Deserialize, Serialize};

/// A node's load as `cluster_map` reports it (MPREG's cluster client reads `load_score`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeLoad {
    /// Plugin calls running there: lower is better.
    pub load_score: f64,
    /// Open client connections.
    #[serde(default)]
    pub active_clients: u64,
    /// Requests being executed.
    #[serde(default)]
    pub active_requests: u64,
    /// Plugin calls running (the same count as `load_score`).
    #[serde(default)]
    pub running_calls: u64,
}

/// One node of `cluster_map`: this node and each live peer have the same shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterNode {
    /// Node id.
    pub node_id: String,
    /// Cluster id.
    #[serde(default)]
    pub cluster_id: String,
    /// URLs clients reach it by (the first is preferred).
    pub advertised_urls: Vec<String>,
    /// Resource tags.
    #[serde(default)]
    pub resources: Vec<String>,
    /// Region label.
    #[serde(default)]
    pub region: String,
    /// Always `healthy`: dead nodes leave the map.
    #[serde(default = "healthy")]
    pub status: String,
    /// When this was last known true (Unix seconds).
    #[serde(default)]
    pub last_seen: f64,
    /// When the node started (Unix seconds).
    #[serde(default)]
    pub started_at: f64,
    /// Its load.
    #[serde(default)]
    pub load: NodeLoad,
    /// `name@version` of every function it serves, sorted.
    #[serde(default)]
    pub functions: Vec<String>,
}

fn healthy() -> String {
    "healthy".into()
}

/// The reply of `cluster_map`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClusterMap {
    /// The cluster's id.
    #[serde(default)]
    pub cluster_id: String,
    /// When the map was made (Unix seconds).
    #[serde(default)]
    pub generated_at: f64,
    /// The answering node first, then every live peer.
    pub nodes: Vec<ClusterNode>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_entry_from_another_implementation_parses() {
        let map: ClusterMap = serde_json::from_str(
            r#"{"nodes":[{"node_id":"a","advertised_urls":["ws://h:1"],
                 "load":{"load_score":2.0}}]}"#,
        )
        .expect("parses");
        assert_eq!(map.nodes[0].advertised_urls[0], "ws://h:1");
        assert_eq!(map.nodes[0].status, "healthy");
        assert_eq!(map.nodes[0].load.load_score, 2.0);
    }
}
