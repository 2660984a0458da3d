//! MPREG's discovery built-ins (protocol.md §4): `list_peers`, `cluster_map_v2`,
//! `catalog_query`, `catalog_watch`, `summary_query`, `summary_watch`, `rpc_list`,
//! `rpc_describe`, `rpc_describe_local` and `rpc_report`, answered at once from what this
//! node knows: its own functions and resources and the cluster view (no scatter-gather: the
//! view already holds every live node's functions, signatures, queues and topic interest,
//! pushed as they change). The shapes and filters are in [`crate::rpc::directory`]; the
//! watches' topics are fed by [`crate::cluster::watch`].

use std::sync::Arc;

use serde_json::Value;

use super::{BuiltinSpec, Builtins, CatalogSource, DuplicateBuiltin, Scope};
use crate::auth::Principal;
use crate::auth::policy::Need;
use crate::clock::unix_now;
use crate::cluster::catalog::PeerNode;
use crate::protocol::RpcCommand;
use crate::protocol::catalog::{DELTA_TOPIC, SUMMARY_TOPIC, WatchResponse};
use crate::pubsub::exchange::Exchange;
use crate::rpc::directory::{Directory, FunctionEntry, Held, NodeEntry, Query};
use crate::rpc::port::CallError;

type Answer = fn(&Directory, &Query) -> Result<Value, CallError>;

const BUILTINS: &[(&str, &str, &str, Answer)] = &[
    (
        "list_peers",
        "func(request?: {scope, cluster_id}) -> list<peer>",
        "every other live node",
        |d, q| to_json(&d.list_peers(q)),
    ),
    (
        "cluster_map_v2",
        "func(request?: cluster-map-request) -> cluster-map-response",
        "live nodes, filtered and paged",
        |d, q| to_json(&d.cluster_map_v2(q)),
    ),
    (
        "catalog_query",
        "func(request: {entry_type, ...filters}) -> catalog-query-response",
        "catalog entries of one type: functions, nodes, queues, topics",
        |d, q| to_json(&d.catalog_query(q).map_err(CallError::Failed)?),
    ),
    (
        "catalog_watch",
        "func(request?: {namespace, scope, cluster_id}) -> watch-response",
        "the topic catalog changes are published on",
        |d, q| {
            let topic = Directory::watch_topic(DELTA_TOPIC, None, q.namespace.as_deref());
            to_json(&watch(d, q, topic))
        },
    ),
    (
        "summary_query",
        "func(request?: summary-query-request) -> summary-query-response",
        "one summary per function name",
        |d, q| to_json(&d.summary_query(q)),
    ),
    (
        "summary_watch",
        "func(request?: {namespace, scope, cluster_id}) -> watch-response",
        "the topic summaries are published on",
        |d, q| {
            let topic =
                Directory::watch_topic(SUMMARY_TOPIC, q.scope.as_deref(), q.namespace.as_deref());
            to_json(&watch(d, q, topic))
        },
    ),
    (
        "rpc_list",
        "func(request?: rpc-list-request) -> rpc-list-response",
        "callable functions with summaries, filtered and paged",
        |d, q| to_json(&d.rpc_list(q)),
    ),
    (
        "rpc_describe",
        "func(request?: rpc-describe-request) -> rpc-describe-response",
        "functions with their specs and WIT signatures",
        |d, q| match q.mode.as_str() {
            "auto" | "catalog" | "scatter" => to_json(&d.rpc_describe(q, false)),
            "local" | "node" => to_json(&d.rpc_describe(q, true)),
            other => Err(CallError::Failed(format!(
                "Unsupported rpc_describe mode: {other} (auto, local, node, catalog, scatter)"
            ))),
        },
    ),
    (
        "rpc_describe_local",
        "func(request?: rpc-describe-request) -> rpc-describe-response",
        "this node's functions with their specs",
        |d, q| to_json(&d.rpc_describe(q, true)),
    ),
    (
        "rpc_report",
        "func(request?: {namespace, scope}) -> rpc-report-response",
        "function counts by namespace and cluster",
        |d, q| to_json(&d.rpc_report(q)),
    ),
];

/// Registers the discovery built-ins, and the topic interest of `exchange` as the `topics`
/// entries of `catalog_query`.
pub fn register(b: &mut Builtins, exchange: Arc<Exchange>) -> Result<(), DuplicateBuiltin> {
    b.add_source(Arc::new(Topics(exchange)));
    for &(name, signature, description, answer) in BUILTINS {
        b.register(BuiltinSpec::now(
            name,
            signature,
            description,
            move |s, cmd| answer(&gather(s), &query(cmd)?),
        ))?;
    }
    Ok(())
}

fn query(cmd: &RpcCommand) -> Result<Query, CallError> {
    Query::parse(&cmd.args, &cmd.kwargs).map_err(|e| CallError::Failed(format!("{}: {e}", cmd.fun)))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value, CallError> {
    serde_json::to_value(v).map_err(|e| CallError::Failed(e.to_string()))
}

fn watch(d: &Directory, q: &Query, topic: String) -> WatchResponse {
    WatchResponse {
        topic,
        generated_at: d.generated_at,
        scope: q.scope.clone(),
        namespace: q.namespace.clone(),
        cluster_id: q.cluster_id.clone().unwrap_or_else(|| d.cluster_id.clone()),
    }
}

/// Topic interest: the patterns this node's subscriptions hold, and each peer's.
struct Topics(Arc<Exchange>);

impl CatalogSource for Topics {
    fn entry_type(&self) -> &'static str {
        "topics"
    }
    fn local(&self) -> Vec<String> {
        patterns(self.0.interest().into_keys())
    }
    fn remote(&self, node: &PeerNode) -> Vec<String> {
        let mut v: Vec<String> = node.interest.iter().map(|p| p.to_string()).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Patterns from interest keys (`s:a.#`, `e:a.b`).
fn patterns(keys: impl Iterator<Item = String>) -> Vec<String> {
    let mut v: Vec<String> = keys
        .filter_map(|k| k.split_once(':').map(|(_, p)| p.to_owned()))
        .collect();
    v.sort();
    v.dedup();
    v
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v.dedup();
    v
}

/// Everything this node knows, as the directory the built-ins answer from.
pub fn gather(s: &Scope<'_>) -> Directory {
    let (node, registry) = (s.node, s.registry);
    let mut d = Directory {
        cluster_id: node.cluster_id.clone(),
        local_node: node.node_id.clone(),
        generated_at: unix_now(),
        ..Directory::default()
    };
    let mut local_names = Vec::new();
    for b in s.builtins.iter() {
        local_names.push(b.name.to_owned());
        d.functions.push(FunctionEntry {
            name: b.name.to_owned(),
            function_id: b.name.to_owned(),
            version: semver::Version::parse(env!("CARGO_PKG_VERSION"))
                .unwrap_or_else(|_| semver::Version::new(0, 0, 0)),
            node_id: node.node_id.clone(),
            resources: sorted(node.resources.clone()),
            description: Some(b.description.to_owned()),
            signature: b.signature.to_owned(),
            plugin: None,
        });
    }
    for entry in registry.all() {
        let f = entry.function();
        local_names.push(f.name.clone());
        let mut resources = node.resources.clone();
        resources.extend(f.resources.iter().cloned());
        d.functions.push(FunctionEntry {
            name: f.name.clone(),
            function_id: f.function_id.clone(),
            version: entry.version().clone(),
            node_id: node.node_id.clone(),
            resources: sorted(resources),
            description: f.description.clone(),
            signature: f.signature.clone(),
            plugin: Some(entry.plugin.manifest.name.clone()),
        });
    }
    d.nodes.push(NodeEntry {
        node_id: node.node_id.clone(),
        region: node.region.clone(),
        resources: sorted(node.resources.clone()),
        urls: node.advertised_urls.clone(),
        started: node.started_at,
        load: super::core::own_load(node),
        functions: local_names,
    });
    for source in s.builtins.sources() {
        d.resources
            .entry(source.entry_type())
            .or_default()
            .push(Held {
                node_id: node.node_id.clone(),
                names: source.local(),
            });
    }
    if let Some(c) = s.cluster {
        let view = c.view();
        for f in view.all_functions() {
            let mut resources = f.node.resources.clone();
            resources.extend(f.ad.resources.iter().cloned());
            d.functions.push(FunctionEntry {
                name: f.ad.name.clone(),
                function_id: f.ad.function_id.clone(),
                version: f.ad.version.clone(),
                node_id: f.node.node_id.clone(),
                resources: sorted(resources),
                description: f.ad.description.clone(),
                signature: f.ad.signature.clone(),
                plugin: Some(f.ad.plugin.clone()),
            });
        }
        for p in &view.nodes {
            d.nodes.push(NodeEntry {
                node_id: p.node_id.clone(),
                region: p.region.clone(),
                resources: sorted(p.resources.clone()),
                urls: p.urls.clone(),
                started: p.started,
                load: super::core::load_of(p),
                functions: p.functions.iter().map(|f| f.name.clone()).collect(),
            });
            for source in s.builtins.sources() {
                d.resources
                    .entry(source.entry_type())
                    .or_default()
                    .push(Held {
                        node_id: p.node_id.clone(),
                        names: source.remote(p),
                    });
            }
        }
    }
    if !s.principal.unrestricted() {
        visible_to(&mut d, s.principal);
    }
    d
}

/// Keeps of `d` only the plugin functions `principal` may call (built-ins stay: each checks
/// its own use), in the function list and in each node's names.
fn visible_to(d: &mut Directory, principal: &Principal) {
    d.functions.retain(|f| {
        f.plugin.is_none()
            || principal.may(&Need::Call {
                name: &f.name,
                function_id: &f.function_id,
                version: Some(&f.version),
            })
    });
    for n in &mut d.nodes {
        let node_id = &n.node_id;
        n.functions.retain(|name| {
            d.functions
                .iter()
                .any(|f| &f.node_id == node_id && &f.name == name)
        });
    }
}
