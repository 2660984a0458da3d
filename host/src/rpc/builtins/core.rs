//! The built-ins every node serves that need nothing but the node and its cluster view
//! (protocol.md §4): `echo`, `echos`, `cluster_map`. The rest of discovery is in
//! [`discovery`](super::discovery).

use std::sync::Arc;

use serde_json::Value;

use super::{BuiltinSpec, Builtins, DuplicateBuiltin, Scope};
use crate::clock::unix_now;
use crate::cluster::catalog::PeerNode;
use crate::identity::NodeInfo;
use crate::plugin::Registry;
use crate::protocol::discovery::{ClusterMap, ClusterNode, NodeLoad};
use crate::rpc::port::CallError;

/// Registers the discovery built-ins every node serves.
pub fn register(b: &mut Builtins) -> Result<(), DuplicateBuiltin> {
    b.register(BuiltinSpec::now(
        "echo",
        "func(value: any) -> any",
        "returns its argument",
        |_, cmd| match cmd.args.as_slice() {
            [one] => Ok(one.clone()),
            other => Err(CallError::Failed(format!(
                "echo takes exactly 1 argument, got {}",
                other.len()
            ))),
        },
    ))?;
    b.register(BuiltinSpec::now(
        "echos",
        "func(values: any...) -> list<any>",
        "returns its arguments as a list",
        |_, cmd| Ok(Value::Array(cmd.args.clone())),
    ))?;
    b.register(BuiltinSpec::now(
        "cluster_map",
        "func() -> cluster-map",
        "nodes of the cluster with URLs and load",
        |s, _| to_json(&cluster_map(s)),
    ))?;
    Ok(())
}

/// This node and every live peer, as `cluster_map` answers (and the dashboard shows).
pub fn cluster_map(s: &Scope<'_>) -> ClusterMap {
    let mut nodes = vec![describe_self(s.node, s.registry)];
    nodes.extend(
        peers(s)
            .iter()
            .map(|p| describe_peer(p, &s.node.cluster_id)),
    );
    ClusterMap {
        cluster_id: s.node.cluster_id.clone(),
        generated_at: unix_now(),
        nodes,
    }
}

/// The discovery built-ins answer for the whole cluster when the node is in one.
fn peers(s: &Scope<'_>) -> Vec<Arc<PeerNode>> {
    s.cluster
        .map(|c| c.view().nodes.clone())
        .unwrap_or_default()
}

/// `name@version` of every function this node serves.
fn local_functions(registry: &Registry) -> Vec<String> {
    let mut fs: Vec<String> = registry
        .all()
        .iter()
        .map(|e| format!("{}@{}", e.function().name, e.version()))
        .collect();
    fs.sort();
    fs
}

fn peer_functions(p: &PeerNode) -> Vec<String> {
    let mut fs: Vec<String> = p
        .functions
        .iter()
        .map(|f| format!("{}@{}", f.name, f.version))
        .collect();
    fs.sort();
    fs
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, CallError> {
    serde_json::to_value(v).map_err(|e| CallError::Failed(e.to_string()))
}

/// A peer's load as `cluster_map` reports it.
pub fn load_of(p: &PeerNode) -> NodeLoad {
    NodeLoad {
        load_score: p.load.score,
        active_clients: p.load.clients,
        active_requests: p.load.requests,
        running_calls: p.load.score as u64,
    }
}

/// This node's load as `cluster_map` and `/health` report it.
pub fn own_load(node: &NodeInfo) -> NodeLoad {
    let load = node.load();
    NodeLoad {
        load_score: load.running_calls as f64,
        active_clients: load.active_clients as u64,
        active_requests: load.active_requests as u64,
        running_calls: load.running_calls as u64,
    }
}

/// This node's `cluster_map` entry.
fn describe_self(node: &NodeInfo, registry: &Registry) -> ClusterNode {
    ClusterNode {
        node_id: node.node_id.clone(),
        cluster_id: node.cluster_id.clone(),
        advertised_urls: node.advertised_urls.clone(),
        resources: node.resources.clone(),
        region: node.region.clone(),
        status: "healthy".into(),
        last_seen: unix_now(),
        started_at: node.started_at,
        load: own_load(node),
        functions: local_functions(registry),
    }
}

/// A peer's `cluster_map` entry: the same shape as this node's.
fn describe_peer(p: &PeerNode, cluster_id: &str) -> ClusterNode {
    ClusterNode {
        node_id: p.node_id.clone(),
        cluster_id: cluster_id.to_owned(),
        advertised_urls: p.urls.clone(),
        resources: p.resources.clone(),
        region: p.region.clone(),
        status: "healthy".into(),
        last_seen: unix_now(),
        started_at: p.started,
        load: load_of(p),
        functions: peer_functions(p),
    }
}
