//! The discovery built-ins every node serves (protocol.md §4): `echo`, `echos`,
//! `cluster_map`, `list_peers`, `rpc_list`, `rpc_describe`.

use std::sync::Arc;

use serde_json::{Value, json};

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
        |s, _| {
            let mut nodes = vec![describe_self(s.node, s.registry)];
            nodes.extend(
                peers(s)
                    .iter()
                    .map(|p| describe_peer(p, &s.node.cluster_id)),
            );
            to_json(&ClusterMap {
                cluster_id: s.node.cluster_id.clone(),
                generated_at: unix_now(),
                nodes,
            })
        },
    ))?;
    b.register(BuiltinSpec::now(
        "list_peers",
        "func() -> list<peer>",
        "every other node",
        |s, _| {
            Ok(Value::Array(
                peers(s)
                    .iter()
                    .map(|p| list_peer(p, &s.node.cluster_id))
                    .collect(),
            ))
        },
    ))?;
    b.register(BuiltinSpec::now(
        "rpc_list",
        "func() -> list<function>",
        "every callable function",
        |s, _| Ok(Value::Array(list(s, None, false))),
    ))?;
    b.register(BuiltinSpec::now(
        "rpc_describe",
        "func(names: string...) -> list<function>",
        "functions with WIT signatures",
        |s, cmd| {
            let names: Vec<&str> = cmd.args.iter().filter_map(Value::as_str).collect();
            // No names: describe everything.
            let filter = (!names.is_empty()).then_some(names.as_slice());
            Ok(Value::Array(list(s, filter, true)))
        },
    ))?;
    Ok(())
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

fn load_of(p: &PeerNode) -> NodeLoad {
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

/// A peer as MPREG's `list_peers` reports it.
fn list_peer(p: &PeerNode, cluster_id: &str) -> Value {
    let mut funs: Vec<&str> = p.functions.iter().map(|f| f.name.as_str()).collect();
    funs.sort();
    funs.dedup();
    json!({
        "url": p.url(),
        "node_id": p.node_id,
        "cluster_id": cluster_id,
        "funs": funs,
        "locs": p.resources,
        "last_seen": unix_now(),
        "status": "healthy",
        "advertised_urls": p.urls,
        "region": p.region,
        "load": load_of(p),
    })
}

fn list(s: &Scope<'_>, names: Option<&[&str]>, detailed: bool) -> Vec<Value> {
    let (node, registry) = (s.node, s.registry);
    let wanted = |n: &str| names.is_none_or(|ns| ns.contains(&n));
    let mut out = Vec::new();
    for b in s.builtins.iter().filter(|b| wanted(b.name)) {
        let mut v = json!({
            "name": b.name, "function_id": b.name, "version": env!("CARGO_PKG_VERSION"),
            "resources": node.resources, "node_id": node.node_id, "cluster_id": node.cluster_id,
            "kind": "builtin", "description": b.description,
        });
        if detailed {
            v["signature"] = json!(b.signature);
        }
        out.push(v);
    }
    for entry in registry.all().iter().filter(|e| wanted(&e.function().name)) {
        let f = entry.function();
        let mut resources = node.resources.clone();
        resources.extend(f.resources.iter().cloned());
        resources.sort();
        resources.dedup();
        let mut v = json!({
            "name": f.name, "function_id": f.function_id, "version": entry.version().to_string(),
            "resources": resources, "node_id": node.node_id, "cluster_id": node.cluster_id,
            "kind": "plugin", "plugin": entry.plugin.manifest.name, "description": f.description,
        });
        if detailed {
            v["signature"] = json!(f.signature);
            v["export"] = json!(f.export_name);
        }
        out.push(v);
    }
    if let Some(c) = s.cluster {
        let view = c.view();
        let mut remote: Vec<_> = view
            .all_functions()
            .filter(|f| wanted(&f.ad.name))
            .collect();
        remote.sort_by(|a, b| {
            (&a.ad.name, &a.ad.version, &a.node.node_id).cmp(&(
                &b.ad.name,
                &b.ad.version,
                &b.node.node_id,
            ))
        });
        for f in remote {
            let mut resources = f.node.resources.clone();
            resources.extend(f.ad.resources.iter().cloned());
            resources.sort();
            resources.dedup();
            let mut v = json!({
                "name": f.ad.name, "function_id": f.ad.function_id,
                "version": f.ad.version.to_string(), "resources": resources,
                "node_id": f.node.node_id, "cluster_id": node.cluster_id, "kind": "plugin",
                "plugin": f.ad.plugin, "description": f.ad.description,
            });
            if detailed {
                v["signature"] = json!(f.ad.signature);
            }
            out.push(v);
        }
    }
    out
}
