//! Functions every node serves without a plugin (protocol.md §4): `echo`, `echos`,
//! `cluster_map`, `list_peers`, `rpc_list`, `rpc_describe`.

use serde_json::{Value, json};

use super::execute::CallFailure;
use crate::node::NodeInfo;
use crate::plugin::Registry;
use crate::protocol::{RpcCommand, codes};

/// A built-in function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// `echo(x)` → `x`.
    Echo,
    /// `echos(*xs)` → `[xs…]`.
    Echos,
    /// The node map MPREG's cluster client polls.
    ClusterMap,
    /// Every node but this one.
    ListPeers,
    /// Every function with identity, resources and node.
    RpcList,
    /// Like `rpc_list`, with WIT signatures, optionally filtered by name.
    RpcDescribe,
}

/// Name, signature and description of each built-in, for lookup and listings.
const TABLE: [(&str, Builtin, &str, &str); 6] = [
    (
        "echo",
        Builtin::Echo,
        "func(value: any) -> any",
        "returns its argument",
    ),
    (
        "echos",
        Builtin::Echos,
        "func(values: any...) -> list<any>",
        "returns its arguments as a list",
    ),
    (
        "cluster_map",
        Builtin::ClusterMap,
        "func() -> cluster-map",
        "nodes of the cluster with URLs and load",
    ),
    (
        "list_peers",
        Builtin::ListPeers,
        "func() -> list<peer>",
        "every other node",
    ),
    (
        "rpc_list",
        Builtin::RpcList,
        "func() -> list<function>",
        "every callable function",
    ),
    (
        "rpc_describe",
        Builtin::RpcDescribe,
        "func(names: string...) -> list<function>",
        "functions with WIT signatures",
    ),
];

impl Builtin {
    /// The built-in called `name`.
    pub fn lookup(name: &str) -> Option<Builtin> {
        TABLE.iter().find(|(n, ..)| *n == name).map(|(_, b, ..)| *b)
    }

    /// Runs the built-in. All of them are quick and never block.
    pub fn run(
        self,
        cmd: &RpcCommand,
        node: &NodeInfo,
        registry: &Registry,
    ) -> Result<Value, CallFailure> {
        match self {
            Builtin::Echo => match cmd.args.as_slice() {
                [one] => Ok(one.clone()),
                other => Err(CallFailure::new(
                    codes::EXECUTION_FAILED,
                    format!("echo takes exactly 1 argument, got {}", other.len()),
                )),
            },
            Builtin::Echos => Ok(Value::Array(cmd.args.clone())),
            Builtin::ClusterMap => Ok(json!({
                "cluster_id": node.cluster_id,
                "generated_at": crate::node::unix_now(),
                "nodes": [node.describe()],
            })),
            Builtin::ListPeers => Ok(json!([])),
            Builtin::RpcList => Ok(Value::Array(list(node, registry, None, false))),
            Builtin::RpcDescribe => {
                let names: Vec<&str> = cmd.args.iter().filter_map(Value::as_str).collect();
                // No names: describe everything.
                let filter = (!names.is_empty()).then_some(names.as_slice());
                Ok(Value::Array(list(node, registry, filter, true)))
            }
        }
    }
}

fn list(
    node: &NodeInfo,
    registry: &Registry,
    names: Option<&[&str]>,
    detailed: bool,
) -> Vec<Value> {
    let wanted = |n: &str| names.is_none_or(|ns| ns.contains(&n));
    let mut out = Vec::new();
    for (name, _, signature, description) in TABLE.iter().filter(|(n, ..)| wanted(n)) {
        let mut v = json!({
            "name": name, "function_id": name, "version": env!("CARGO_PKG_VERSION"),
            "resources": node.resources, "node_id": node.node_id, "cluster_id": node.cluster_id,
            "kind": "builtin", "description": description,
        });
        if detailed {
            v["signature"] = json!(signature);
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
    out
}
