//! The cache on the wire (docs/cache.md): MPREG's `cache-request` envelope and the `cache.*`
//! built-ins, both run by one executor over the node's [`Cache`].
//!
//! - **Owners (L3).** A keyed operation (get, put, delete, atomic, structure, invalidating one
//!   key) runs on the key's owner: rendezvous hashing of the key over this node and the live
//!   peers whose links are up. The dispatcher forwards it there like any owned built-in, so a
//!   put on A and a get on C meet on the same node, and when the owner dies the next one by
//!   hash takes its keys (a miss, never a stale value: entries live only on their owner).
//! - **Everyone.** Invalidation by tag or pattern, namespace `clear` and key listings reach
//!   every live node (through `cache.local`, owned by each node's id) and are summed.
//! - **L4** (federation) is a seam: `cache_levels` may name it; nothing answers it yet.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::events::{Event, Events};
use super::key::{CacheKey, Dependency, Entry, KeyId, Select};
use super::memo::{self, Memo};
use super::ops::{AtomicOp, Change, StructureOp};
use super::store::{Cache, CacheError, Levels, Put};
use crate::cluster::StateSync;
use crate::cluster::catalog::PeerNode;
use crate::config::cache::Consistency;
use crate::protocol::RpcCommand;
use crate::rpc::builtins::{
    Access, BuiltinSpec, Builtins, CatalogSource, DuplicateBuiltin, Envelope, Handler, Located,
    Ownership, Placement,
};
use crate::rpc::port::{Call, CallError, LateDispatcher};

pub use super::access::{LOCAL, REQUEST};
/// How long a fan-out waits for each peer.
const FAN_OUT_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the hand-off looks for new members.
const HAND_OFF_EVERY: Duration = Duration::from_millis(250);
/// Entries per hand-off message.
const HAND_OFF_BATCH: usize = 256;
/// Most keys one listing returns.
const MAX_LISTED: usize = 10_000;

/// The `cache.*` built-ins with their signatures (docs/cache.md lists them with examples).
pub const FUNCTIONS: [(&str, &str); 18] = [
    (
        "cache.get",
        "func(namespace: string, identifier: string, options?: {version, default, cache_levels}) -> any",
    ),
    (
        "cache.entry",
        "func(namespace: string, identifier: string, options?: {version, cache_levels}) -> option<entry>",
    ),
    (
        "cache.put",
        "func(namespace: string, identifier: string, value: any, options?: {version, tags, ttl_seconds, dependencies, cost_ms, consistency}) -> {stored, size_bytes, ttl_seconds}",
    ),
    (
        "cache.delete",
        "func(namespace: string, identifier: string, options?: {version, consistency}) -> {deleted, invalidated}",
    ),
    (
        "cache.invalidate",
        "func(target: {namespace, identifier?, version?, tag?, pattern?}) -> {invalidated}",
    ),
    (
        "cache.incr",
        "func(namespace: string, identifier: string, by?: number, options?: {version, ttl_seconds, initial}) -> number",
    ),
    (
        "cache.cas",
        "func(namespace: string, identifier: string, expected: any, new: any, options?: {version, ttl_seconds}) -> {swapped, value, previous?}",
    ),
    (
        "cache.test_and_set",
        "func(namespace: string, identifier: string, expected: any, new: any, options?: {version, ttl_seconds}) -> {swapped, value, previous?}",
    ),
    (
        "cache.set_if_absent",
        "func(namespace: string, identifier: string, value: any, options?: {version, ttl_seconds}) -> {set, value}",
    ),
    (
        "cache.mget",
        "func(namespace: string, identifiers: list<string>, options?: {version, default}) -> list<any>",
    ),
    (
        "cache.mset",
        "func(namespace: string, values: map<string, any>, options?: {version, ttl_seconds, consistency}) -> {stored}",
    ),
    (
        "cache.structure",
        "func(namespace: string, identifier: string, operation: structure-operation) -> any",
    ),
    (
        "cache.namespace",
        "func(operation: {operation_type: clear|list_keys|statistics, namespace, pattern?, max_entries?, dry_run?}) -> any",
    ),
    ("cache.stats", "func(namespace?: string) -> stats"),
    (
        "cache.keys",
        "func(namespace: string, pattern?: string, max?: u32) -> list<string>",
    ),
    (
        REQUEST,
        "func(request: cache-request, origin: string) -> cache-response",
    ),
    (
        LOCAL,
        "func(node: string, request: cache-request) -> cache-response",
    ),
    (
        memo::BUILTIN,
        "func(key: string, call: {key, command, ttl_seconds, dependencies}) -> any",
    ),
];

/// The cache service: the node's cache and what it needs to reach the others.
pub struct CacheService {
    cache: Arc<Cache>,
    node_id: String,
    dispatcher: Arc<LateDispatcher>,
    sync: Arc<StateSync>,
    memo: Arc<Memo>,
    events: Events,
}

/// Registers the `cache.*` built-ins, the `cache-request` envelope and the memoizer; returns
/// the service (its tasks start with [`CacheService::drop_retired`]).
pub fn register(
    b: &mut Builtins,
    cache: Arc<Cache>,
    node_id: String,
    dispatcher: Arc<LateDispatcher>,
    sync: Arc<StateSync>,
    events: Events,
) -> Result<Arc<CacheService>, DuplicateBuiltin> {
    let clustered = cache.config().cluster;
    let memo = Memo::new(cache.clone(), dispatcher.clone());
    b.set_memoizer(memo.clone());
    let service = Arc::new(CacheService {
        cache,
        node_id: node_id.clone(),
        dispatcher,
        sync,
        memo,
        events,
    });
    let owners: Arc<dyn Ownership> = Arc::new(KeyOwners { clustered });
    let nodes: Arc<dyn Ownership> = Arc::new(NodeOwners);
    for (name, signature) in FUNCTIONS {
        let s = service.clone();
        b.register(BuiltinSpec {
            name,
            signature,
            description: "cache operation (docs/cache.md)",
            handler: Handler::Later(Arc::new(move |cmd: RpcCommand| {
                let s = s.clone();
                Box::pin(async move { s.call(cmd).await })
            })),
            placement: Placement::Owner(if name == LOCAL {
                nodes.clone()
            } else {
                owners.clone()
            }),
            access: Access::Check(Arc::new(super::access::check)),
        })?;
    }
    b.add_source(Arc::new(CacheRoles {
        invalidator: service.cache.config().events,
    }));
    b.add_envelope(Envelope {
        role: "cache-request",
        reply_role: "cache-response",
        builtin: REQUEST,
    });
    Ok(service)
}

/// The cache roles of each node, as `catalog_query` entries of type `caches` (the original's
/// `CacheRoleEntry`): every node owns keys (`coordinator`); one that applies published
/// invalidations (it subscribes to `cache.invalidation.#`) is an `invalidator` too.
struct CacheRoles {
    invalidator: bool,
}

impl CatalogSource for CacheRoles {
    fn entry_type(&self) -> &'static str {
        "caches"
    }
    fn local(&self) -> Vec<String> {
        let mut roles = vec!["coordinator".to_owned()];
        if self.invalidator {
            roles.push("invalidator".to_owned());
        }
        roles
    }
    fn remote(&self, node: &PeerNode) -> Vec<String> {
        let mut roles = vec!["coordinator".to_owned()];
        if node
            .interest
            .iter()
            .any(|p| p.to_string() == super::events::INVALIDATION_PATTERN)
        {
            roles.push("invalidator".to_owned());
        }
        roles
    }
}

/// Keys are owned by rendezvous hashing over the live members.
struct KeyOwners {
    clustered: bool,
}

/// The score of `node` for `key`: the highest owns it.
fn score(node: &str, key: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(node.as_bytes());
    h.update(&[0xff]);
    h.update(key.as_bytes());
    h.digest()
}

impl Ownership for KeyOwners {
    fn resource<'c>(&self, cmd: &'c RpcCommand) -> Option<Cow<'c, str>> {
        if !self.clustered {
            return None;
        }
        routed_key(cmd).map(|id| Cow::Owned(id.as_str().to_owned()))
    }
    fn owned_here(&self, _name: &str) -> bool {
        true
    }
    fn owned_by(&self, _node: &PeerNode, _name: &str) -> bool {
        false
    }
    fn creates(&self, _fun: &str) -> bool {
        true
    }
    fn missing(&self, fun: &str, name: &str) -> CallError {
        CallError::NotFound(format!("{fun}: no owner for '{name}'"))
    }
    fn locate(&self, name: &str, here: &str, peers: &[Arc<PeerNode>]) -> Located {
        let mut best = (score(here, name), Located::Here);
        for (i, p) in peers.iter().enumerate() {
            let s = score(&p.node_id, name);
            if s > best.0 {
                best = (s, Located::Peer(i));
            }
        }
        best.1
    }
}

/// `cache.local` runs on the node its first argument names.
struct NodeOwners;

impl Ownership for NodeOwners {
    fn resource<'c>(&self, cmd: &'c RpcCommand) -> Option<Cow<'c, str>> {
        cmd.args.first().and_then(Value::as_str).map(Cow::Borrowed)
    }
    fn owned_here(&self, _name: &str) -> bool {
        false
    }
    fn owned_by(&self, node: &PeerNode, name: &str) -> bool {
        node.node_id == name
    }
    fn creates(&self, _fun: &str) -> bool {
        false
    }
    fn missing(&self, fun: &str, name: &str) -> CallError {
        CallError::NotFound(format!("{fun}: node '{name}' is not reachable"))
    }
    fn locate(&self, name: &str, here: &str, peers: &[Arc<PeerNode>]) -> Located {
        if name == here {
            return Located::Here;
        }
        peers
            .iter()
            .position(|n| n.node_id == name)
            .map_or(Located::Nobody, Located::Peer)
    }
}

/// The key a call must run at the owner of, if it is a keyed operation.
fn routed_key(cmd: &RpcCommand) -> Option<KeyId> {
    match cmd.fun.as_str() {
        memo::BUILTIN => cmd
            .args
            .first()
            .and_then(Value::as_str)
            .and_then(KeyId::parse),
        REQUEST => {
            let frame = cmd.args.first()?;
            let op = frame.get("operation")?.as_str()?;
            let keyed = match op {
                "get" | "put" | "delete" | "atomic" | "structure" => true,
                "invalidate" => {
                    frame
                        .get("invalidation_pattern")
                        .and_then(Value::as_str)
                        .is_none_or(str::is_empty)
                        && frame.get("invalidation_tag").is_none()
                }
                _ => false,
            };
            if !keyed {
                return None;
            }
            let key: CacheKey = serde_json::from_value(frame.get("key")?.clone()).ok()?;
            key.validate().ok()?;
            Some(key.id())
        }
        "cache.get"
        | "cache.entry"
        | "cache.put"
        | "cache.delete"
        | "cache.incr"
        | "cache.cas"
        | "cache.test_and_set"
        | "cache.set_if_absent"
        | "cache.structure" => key_arg(cmd).ok().map(|(k, _)| k.id()),
        "cache.invalidate" => {
            let t = target(cmd).ok()?;
            if t.tag.is_some() || t.pattern.is_some() {
                return None;
            }
            let key = CacheKey {
                namespace: t.namespace,
                identifier: t.identifier?,
                version: t
                    .version
                    .unwrap_or_else(|| super::key::DEFAULT_VERSION.into()),
                tags: Vec::new(),
            };
            key.validate().ok()?;
            Some(key.id())
        }
        _ => None,
    }
}

/// A `cache.local` call running envelope `frame` on node `node`, named `what` in logs.
fn on_node(node: &str, frame: Value, what: &str) -> Call {
    Call {
        command: RpcCommand::new(what, LOCAL, vec![json!(node), frame]),
        constraint: None,
        request_id: format!("cache-{what}").into(),
        depth: 1,
        deadline: Some(Instant::now() + FAN_OUT_TIMEOUT),
        // The node's fan-out of an operation its caller was allowed.
        principal: crate::auth::Principal::system(),
    }
}

fn bad(fun: &str, msg: impl std::fmt::Display) -> CallError {
    CallError::Failed(format!("{fun}: {msg}"))
}

impl From<CacheError> for CallError {
    fn from(e: CacheError) -> Self {
        match e {
            CacheError::TooLarge { .. } | CacheError::Memory(_) => {
                CallError::ResourceLimit(e.to_string())
            }
            _ => CallError::Failed(e.to_string()),
        }
    }
}

/// The key of a keyed call form: `(namespace, identifier, …)` or `({namespace, identifier,
/// version, tags}, …)`; returns it and the index of the next positional argument.
fn key_arg(cmd: &RpcCommand) -> Result<(CacheKey, usize), CallError> {
    let fun = cmd.fun.as_str();
    let (mut key, next) = match (cmd.args.first(), cmd.args.get(1)) {
        (Some(Value::Object(_)), _) => {
            let k: CacheKey = serde_json::from_value(cmd.args[0].clone())
                .map_err(|e| bad(fun, format!("key: {e}")))?;
            (k, 1)
        }
        (Some(Value::String(ns)), Some(Value::String(id))) => (CacheKey::new(ns, id), 2),
        _ => match (cmd.kwargs.get("namespace"), cmd.kwargs.get("identifier")) {
            (Some(Value::String(ns)), Some(Value::String(id))) => (CacheKey::new(ns, id), 0),
            _ => {
                return Err(bad(
                    fun,
                    "the key comes first: (namespace, identifier, …) as strings, or a key object {namespace, identifier, version?, tags?}",
                ));
            }
        },
    };
    // `version` and `tags` may come in the options object or as keywords (which win); the
    // owner is chosen from the same key the call then uses.
    let positional = options_at(cmd, next)
        .and_then(|at| cmd.args.get(at))
        .and_then(Value::as_object);
    let pick = |name: &str| {
        cmd.kwargs
            .get(name)
            .or_else(|| positional.and_then(|o| o.get(name)))
    };
    if let Some(v) = pick("version") {
        key.version = v
            .as_str()
            .ok_or_else(|| bad(fun, "version must be a string"))?
            .to_owned();
    }
    if let Some(t) = pick("tags") {
        key.tags = serde_json::from_value(t.clone())
            .map_err(|_| bad(fun, "tags must be a list of strings"))?;
    }
    key.validate().map_err(|e| bad(fun, e))?;
    Ok((key, next))
}

/// Where a keyed call form's options object is, given the index after its key.
fn options_at(cmd: &RpcCommand, next: usize) -> Option<usize> {
    match cmd.fun.as_str() {
        "cache.get" | "cache.entry" | "cache.delete" => Some(next),
        "cache.put" | "cache.set_if_absent" => Some(next + 1),
        "cache.incr" => Some(match cmd.args.get(next) {
            Some(Value::Number(_)) => next + 1,
            _ => next,
        }),
        "cache.cas" | "cache.test_and_set" => Some(next + 2),
        _ => None,
    }
}

/// The options object at positional `at`, merged with the keywords (keywords win).
fn options(cmd: &RpcCommand, at: usize) -> Result<Map<String, Value>, CallError> {
    let mut merged = match cmd.args.get(at) {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            return Err(bad(
                &cmd.fun,
                format!("options must be an object, got {other}"),
            ));
        }
    };
    for (k, v) in &cmd.kwargs {
        if !matches!(k.as_str(), "namespace" | "identifier") {
            merged.insert(k.clone(), v.clone());
        }
    }
    Ok(merged)
}

fn known(fun: &str, opts: &Map<String, Value>, allowed: &[&str]) -> Result<(), CallError> {
    match opts.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(bad(
            fun,
            format!("unknown option '{k}'; known: {}", allowed.join(", ")),
        )),
        None => Ok(()),
    }
}

/// What `cache.invalidate` takes.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    namespace: String,
    identifier: Option<String>,
    version: Option<String>,
    tag: Option<String>,
    pattern: Option<String>,
}

fn target(cmd: &RpcCommand) -> Result<Target, CallError> {
    let opts = options(cmd, 0)?;
    let mut opts = opts;
    if let Some(ns) = cmd.kwargs.get("namespace") {
        opts.insert("namespace".into(), ns.clone());
    }
    if let Some(id) = cmd.kwargs.get("identifier") {
        opts.insert("identifier".into(), id.clone());
    }
    serde_json::from_value(Value::Object(opts)).map_err(|e| bad(&cmd.fun, e))
}

/// A `cache-request` as the original sends it (unknown fields are accepted, as its server
/// does: `timestamp`, `version`, replication hints).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Request {
    operation: String,
    key: Option<Value>,
    value: Option<Value>,
    metadata: Option<Metadata>,
    options: RequestOptions,
    invalidation_pattern: String,
    /// Our extension: invalidate by tag.
    invalidation_tag: Option<String>,
    atomic_operation: Option<AtomicOp>,
    structure_operation: Option<StructureOp>,
    namespace_operation: Option<NamespaceOp>,
    /// Between nodes (`adopt`): entries a former owner hands over.
    entries: Vec<Entry>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Metadata {
    computation_cost_ms: f64,
    dependencies: Vec<Value>,
    ttl_seconds: Option<f64>,
}

#[derive(Debug, Deserialize)]
#[serde(default)]
struct RequestOptions {
    include_metadata: bool,
    consistency_level: Option<String>,
    timeout_ms: u64,
    /// Absent: every level.
    cache_levels: Option<Vec<String>>,
}

impl Default for RequestOptions {
    fn default() -> Self {
        RequestOptions {
            include_metadata: true,
            consistency_level: None,
            timeout_ms: 5000,
            cache_levels: None,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct NamespaceOp {
    operation_type: String,
    namespace: String,
    pattern: Option<String>,
    max_entries: Option<usize>,
    dry_run: bool,
}

/// The response's fields besides `role` and `u` (the session adds those).
#[derive(Debug)]
struct Response {
    status: &'static str,
    cache_level: Option<&'static str>,
    entry: Option<Value>,
    result: Option<Value>,
    error: Option<String>,
    /// Whether this node's cache changed (what an event reports).
    changed: bool,
}

impl Response {
    fn error(e: impl std::fmt::Display) -> Self {
        Response {
            status: "error",
            cache_level: None,
            entry: None,
            result: None,
            error: Some(e.to_string()),
            changed: false,
        }
    }
    fn ok(result: Value) -> Self {
        Response {
            status: "hit",
            cache_level: None,
            entry: None,
            result: Some(result),
            error: None,
            changed: false,
        }
    }
    fn to_json(&self, node: &str) -> Value {
        let mut m = Map::new();
        m.insert("status".into(), json!(self.status));
        m.insert("operation_id".into(), json!(operation_id()));
        m.insert("timestamp".into(), json!(crate::clock::unix_now()));
        m.insert("version".into(), json!("2.0"));
        m.insert("node".into(), json!(node));
        if let Some(l) = self.cache_level {
            m.insert("cache_level".into(), json!(l));
        }
        if let Some(e) = &self.entry {
            m.insert("entry".into(), e.clone());
        }
        if let Some(r) = &self.result {
            m.insert("result".into(), r.clone());
        }
        if let Some(e) = &self.error {
            m.insert("error_message".into(), json!(e));
        }
        Value::Object(m)
    }
}

fn operation_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!(
        "{:x}-{:x}",
        crate::clock::unix_nanos() as u64,
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn consistency(name: Option<&str>) -> Result<Option<Consistency>, String> {
    match name {
        None => Ok(None),
        Some("strong") => Ok(Some(Consistency::Strong)),
        Some("eventual") | Some("weak") | Some("session") | Some("causal") => {
            Ok(Some(Consistency::Eventual))
        }
        Some(other) => Err(format!(
            "unknown consistency_level '{other}'; one of: strong, eventual"
        )),
    }
}

const OPERATIONS: &str = "get, put, delete, invalidate, query, stats, atomic, structure, namespace";

impl CacheService {
    /// Runs one built-in call (on the node the dispatcher chose).
    async fn call(self: Arc<Self>, cmd: RpcCommand) -> Result<Value, CallError> {
        let fun = cmd.fun.clone();
        match fun.as_str() {
            REQUEST => {
                let frame = cmd.args.first().cloned().unwrap_or(Value::Null);
                let origin = cmd.args.get(1).and_then(Value::as_str).unwrap_or("");
                let mut resp = self.clone().request(frame, true).await;
                // Served by another node than the client's: the cluster tier answered.
                if !origin.is_empty() && origin != self.node_id && resp.status == "hit" {
                    resp.cache_level = Some("L3");
                }
                Ok(resp.to_json(&self.node_id))
            }
            memo::BUILTIN => self.memo.serve(cmd).await,
            LOCAL => {
                let frame = cmd.args.get(1).cloned().unwrap_or(Value::Null);
                Ok(self
                    .clone()
                    .request(frame, false)
                    .await
                    .to_json(&self.node_id))
            }
            _ => self.call_form(&cmd).await,
        }
    }

    /// Runs an envelope here; with `spread`, operations that concern every node are sent to
    /// each live peer too and their answers summed.
    async fn request(self: Arc<Self>, frame: Value, spread: bool) -> Response {
        let req = match Request::deserialize(&frame) {
            Ok(r) => r,
            Err(e) => return Response::error(format!("invalid cache-request: {e}")),
        };
        match self.run(&req).await {
            Ok(mut resp) => {
                if spread && broadcast(&req) {
                    let (more, failed) = self.fan_out(&frame).await;
                    if let Some(Value::Number(n)) = &resp.result
                        && let Some(n) = n.as_u64()
                    {
                        let total = n + more.iter().filter_map(Value::as_u64).sum::<u64>();
                        resp.result = Some(json!(total));
                    } else if let Some(Value::Array(keys)) = &mut resp.result {
                        for m in more {
                            if let Value::Array(k) = m {
                                keys.extend(k);
                            }
                        }
                    }
                    if !failed.is_empty() {
                        resp.status = "partial";
                        resp.error = Some(format!("not reached: {}", failed.join("; ")));
                    }
                }
                if spread {
                    self.report(&req, &resp);
                }
                resp
            }
            Err(e) => Response::error(e),
        }
    }

    /// Publishes the event of a change this node made or led (once per operation: the owner
    /// of a key, or the node that spread a cluster-wide one).
    fn report(&self, req: &Request, resp: &Response) {
        let op = req.operation.as_str();
        let spread = broadcast(req);
        let changed = if spread {
            resp.result.as_ref().and_then(Value::as_u64).unwrap_or(0) > 0
        } else {
            resp.changed
        };
        if !changed {
            return;
        }
        let (op, namespace) = match (op, &req.namespace_operation) {
            ("namespace", Some(n)) => ("clear", n.namespace.as_str()),
            _ => (
                op,
                req.key
                    .as_ref()
                    .and_then(|k| k.get("namespace"))
                    .and_then(Value::as_str)
                    .unwrap_or(""),
            ),
        };
        let Some(topic) = self.events.watched(namespace, op) else {
            return;
        };
        let keyed = !spread && op != "clear";
        let metadata = match op {
            "invalidate" if req.invalidation_tag.is_some() => {
                json!({"tag": req.invalidation_tag})
            }
            "invalidate" | "clear" if !keyed => json!({
                "pattern": req.namespace_operation.as_ref().and_then(|n| n.pattern.clone())
                    .unwrap_or_else(|| req.invalidation_pattern.clone()),
            }),
            "atomic" => {
                json!({"operation_type": req.atomic_operation.as_ref().map(|a| &a.operation_type)})
            }
            "structure" => json!({
                "structure_type": req.structure_operation.as_ref().map(|s| &s.structure_type),
                "operation": req.structure_operation.as_ref().map(|s| &s.operation),
            }),
            _ => json!({}),
        };
        self.events.emit(
            topic,
            Event {
                op,
                namespace,
                key: if keyed { req.key.as_ref() } else { None },
                cache_level: resp.cache_level,
                result: resp.result.as_ref(),
                metadata,
            },
        );
    }

    /// Drops the memoized results of every version the plugin manager retires, on every node,
    /// until `stop`.
    pub async fn drop_retired(
        self: Arc<Self>,
        mut retired: tokio::sync::broadcast::Receiver<(String, String)>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                r = retired.recv() => match r {
                    Ok((plugin, version)) => json!({
                        "operation": "invalidate",
                        "key": {"namespace": memo::NAMESPACE, "identifier": "*"},
                        "invalidation_tag": memo::version_tag(&plugin, &version),
                    }),
                    // Missed some: every memoized result goes rather than a stale one stays.
                    Err(RecvError::Lagged(_)) => json!({
                        "operation": "invalidate",
                        "key": {"namespace": memo::NAMESPACE, "identifier": "*"},
                        "invalidation_pattern": "*",
                    }),
                    Err(RecvError::Closed) => return,
                },
            };
            let resp = self.clone().request(frame, true).await;
            if resp.status != "hit" {
                tracing::warn!(status = resp.status, error = ?resp.error, "memoized results of a retired version not dropped everywhere");
            }
        }
    }

    /// Hands the keys this node no longer owns to their owners whenever a node joins (or this
    /// one starts with entries on disk), until `stop`. A leave needs nothing: the keys the
    /// node took with it are misses on their next owner.
    pub async fn hand_off(self: Arc<Self>, stop: tokio_util::sync::CancellationToken) {
        if !self.cache.config().cluster {
            return;
        }
        let mut known: Vec<String> = Vec::new();
        let mut tick = tokio::time::interval(HAND_OFF_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Some(cluster) = self.sync.cluster() else {
                continue;
            };
            let peers: Vec<Arc<PeerNode>> = cluster
                .view()
                .nodes
                .iter()
                .filter(|n| cluster.link(&n.node_id).is_some_and(|l| l.is_connected()))
                .cloned()
                .collect();
            let mut ids: Vec<String> = peers.iter().map(|p| p.node_id.clone()).collect();
            ids.sort();
            let joined = ids.iter().any(|id| !known.contains(id));
            known = ids;
            if joined {
                match self.move_keys(&peers).await {
                    Ok(0) => {}
                    Ok(n) => tracing::info!(keys = n, "cache keys handed to their new owners"),
                    Err(e) => {
                        tracing::warn!(error = %e, "cache hand-off incomplete; the rest stay here")
                    }
                }
            }
        }
    }

    /// Sends every entry held here whose owner is now one of `peers` to it, in batches, and
    /// forgets each batch its owner answered for. How many were moved.
    async fn move_keys(&self, peers: &[Arc<PeerNode>]) -> Result<usize, String> {
        let Some(d) = self.dispatcher.get() else {
            return Ok(0);
        };
        let owners = KeyOwners { clustered: true };
        let mut by_peer: Vec<Vec<KeyId>> = vec![Vec::new(); peers.len()];
        for id in self
            .cache
            .select(&Select::dotted("*"), usize::MAX)
            .map_err(|e| e.to_string())?
        {
            if let Located::Peer(i) = owners.locate(id.as_str(), &self.node_id, peers) {
                by_peer[i].push(id);
            }
        }
        let mut moved = 0;
        for (peer, ids) in peers.iter().zip(by_peer) {
            for batch in ids.chunks(HAND_OFF_BATCH) {
                let mut entries = Vec::with_capacity(batch.len());
                for id in batch {
                    if let Some(e) = self.cache.peek(id).map_err(|e| e.to_string())? {
                        entries.push(json!(&*e));
                    }
                }
                let frame = json!({"operation": "adopt", "entries": entries});
                match d.dispatch(on_node(&peer.node_id, frame, "hand-off")).await {
                    Ok(v) if v["status"] != "error" => {}
                    Ok(v) => return Err(format!("{}: {}", peer.node_id, v["error_message"])),
                    Err(e) => return Err(format!("{}: {e}", peer.node_id)),
                }
                for id in batch {
                    self.cache.forget(id).await.map_err(|e| e.to_string())?;
                }
                moved += batch.len();
            }
        }
        Ok(moved)
    }

    /// Sends `frame` to every live peer as `cache.local`; their results, and who failed.
    async fn fan_out(&self, frame: &Value) -> (Vec<Value>, Vec<String>) {
        let (Some(d), Some(cluster)) = (self.dispatcher.get(), self.sync.cluster()) else {
            return (Vec::new(), Vec::new());
        };
        let peers: Vec<String> = cluster
            .view()
            .nodes
            .iter()
            .map(|n| n.node_id.clone())
            .filter(|id| *id != self.node_id)
            .collect();
        let calls = peers.iter().map(|peer| {
            let run = d.dispatch(on_node(peer, frame.clone(), "fan-out"));
            async move {
                match tokio::time::timeout(FAN_OUT_TIMEOUT, run).await {
                    Ok(Ok(v)) if v["status"] != "error" => Ok(v["result"].clone()),
                    Ok(Ok(v)) => Err(format!("{peer}: {}", v["error_message"])),
                    Ok(Err(e)) => Err(format!("{peer}: {e}")),
                    Err(_) => Err(format!("{peer}: no answer in time")),
                }
            }
        });
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for r in futures_util::future::join_all(calls).await {
            match r {
                Ok(v) => ok.push(v),
                Err(e) => failed.push(e),
            }
        }
        (ok, failed)
    }

    /// Runs an envelope on this node's cache.
    async fn run(&self, req: &Request) -> Result<Response, String> {
        let levels = req
            .options
            .cache_levels
            .as_deref()
            .map_or_else(Levels::default, Levels::from_names);
        let strength = consistency(req.options.consistency_level.as_deref())?;
        let key = || -> Result<CacheKey, String> {
            let raw = req
                .key
                .as_ref()
                .ok_or_else(|| format!("'{}' needs a key", req.operation))?;
            let key = CacheKey::deserialize(raw).map_err(|e| format!("key: {e}"))?;
            key.validate().map_err(|e| format!("key: {e}"))?;
            Ok(key)
        };
        let now = self.cache.now();
        let include = req.options.include_metadata;
        let c = &self.cache;
        match req.operation.as_str() {
            "get" => {
                let key = key()?;
                Ok(
                    match c.get(&key.id(), levels).await.map_err(|e| e.to_string())? {
                        Some(hit) => {
                            let entry = if include {
                                let mut entry = hit.found.entry.to_json(now);
                                entry["access_count"] = json!(hit.found.access_count);
                                entry["last_access_time"] =
                                    json!(hit.found.accessed_ms as f64 / 1000.0);
                                entry
                            } else {
                                json!({"key": key, "value": &*hit.found.entry.value})
                            };
                            Response {
                                status: "hit",
                                cache_level: Some(hit.tier.name()),
                                entry: Some(entry),
                                result: None,
                                error: None,
                                changed: false,
                            }
                        }
                        None => Response {
                            status: "miss",
                            cache_level: None,
                            entry: None,
                            result: None,
                            error: None,
                            changed: false,
                        },
                    },
                )
            }
            "put" => {
                let key = key()?;
                let value = req.value.clone().ok_or("PUT operation requires value")?;
                let meta = req.metadata.as_ref();
                let deps = Dependency::list_from_json(
                    meta.map(|m| Value::Array(m.dependencies.clone())).as_ref(),
                )
                .map_err(|e| format!("metadata.dependencies: {e}"))?;
                let put = Put {
                    key,
                    value,
                    ttl_seconds: meta.and_then(|m| m.ttl_seconds),
                    dependencies: deps,
                    cost_ms: meta.map_or(0.0, |m| m.computation_cost_ms),
                    consistency: strength,
                    levels,
                };
                let entry = c.put(put).await.map_err(|e| e.to_string())?;
                Ok(Response {
                    status: "hit",
                    cache_level: Some(if levels.l1 { "L1" } else { "L2" }),
                    entry: Some(entry.to_json(now)),
                    result: Some(json!({"stored": true, "size_bytes": entry.size})),
                    error: None,
                    changed: true,
                })
            }
            "delete" => {
                let key = key()?;
                let (existed, cascaded) = c
                    .delete(&key.id(), strength)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Response {
                    status: if existed { "hit" } else { "miss" },
                    result: Some(json!({"deleted": existed, "invalidated": cascaded})),
                    changed: existed || cascaded > 0,
                    ..Response::ok(Value::Null)
                })
            }
            "invalidate" => {
                let n = if let Some(tag) = &req.invalidation_tag {
                    c.invalidate_tag(tag).await.map_err(|e| e.to_string())?
                } else if !req.invalidation_pattern.is_empty() {
                    let ns = req
                        .key
                        .as_ref()
                        .and_then(|k| k.get("namespace"))
                        .and_then(Value::as_str)
                        .ok_or("invalidation by pattern needs key.namespace")?;
                    c.clear(ns, &req.invalidation_pattern, usize::MAX, false)
                        .await
                        .map_err(|e| e.to_string())?
                        .len()
                } else {
                    c.invalidate_key(&key()?.id())
                        .await
                        .map_err(|e| e.to_string())?
                };
                Ok(Response {
                    changed: n > 0,
                    ..Response::ok(json!(n))
                })
            }
            "query" => {
                let raw = req.key.as_ref().ok_or("'query' needs key.namespace")?;
                let ns = raw
                    .get("namespace")
                    .and_then(Value::as_str)
                    .ok_or("'query' needs key.namespace")?;
                let pattern = if req.invalidation_pattern.is_empty() {
                    "*"
                } else {
                    &req.invalidation_pattern
                };
                let keys = c.keys(ns, pattern, MAX_LISTED).map_err(|e| e.to_string())?;
                Ok(Response::ok(json!(
                    keys.iter().map(|k| k.display()).collect::<Vec<_>>()
                )))
            }
            "stats" => {
                let stats = match req
                    .key
                    .as_ref()
                    .and_then(|k| k.get("namespace"))
                    .and_then(Value::as_str)
                    .filter(|ns| !ns.is_empty())
                {
                    Some(ns) => c.namespace_stats(ns),
                    None => c.stats(),
                };
                Ok(Response {
                    entry: Some(json!({"key": req.key, "value": stats})),
                    ..Response::ok(stats)
                })
            }
            "atomic" => {
                let op = req
                    .atomic_operation
                    .as_ref()
                    .ok_or("'atomic' needs atomic_operation")?;
                let out = c
                    .atomic(key()?, op, strength)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Response {
                    status: if out.applied { "hit" } else { "conflict" },
                    changed: out.change != Change::Keep,
                    ..Response::ok(out.result)
                })
            }
            "structure" => {
                let op = req
                    .structure_operation
                    .as_ref()
                    .ok_or("'structure' needs structure_operation")?;
                let ttl = req.metadata.as_ref().and_then(|m| m.ttl_seconds);
                let out = c
                    .structure(key()?, op, ttl, strength)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok(Response {
                    changed: out.change != Change::Keep,
                    ..Response::ok(out.result)
                })
            }
            "adopt" => {
                let mut adopted = 0;
                for e in &req.entries {
                    if c.adopt(e.clone()).await.map_err(|e| e.to_string())? {
                        adopted += 1;
                    }
                }
                Ok(Response::ok(json!(adopted)))
            }
            "namespace" => {
                let op = req
                    .namespace_operation
                    .as_ref()
                    .ok_or("'namespace' needs namespace_operation")?;
                if op.namespace.is_empty() {
                    return Err("namespace_operation.namespace must not be empty".into());
                }
                let pattern = op.pattern.as_deref().unwrap_or("*");
                let max = op.max_entries.unwrap_or(usize::MAX);
                match op.operation_type.as_str() {
                    "clear" => {
                        let gone = c
                            .clear(&op.namespace, pattern, max, op.dry_run)
                            .await
                            .map_err(|e| e.to_string())?;
                        Ok(Response {
                            changed: !op.dry_run && !gone.is_empty(),
                            ..Response::ok(json!(gone.len()))
                        })
                    }
                    "list_keys" => {
                        let keys = c
                            .keys(&op.namespace, pattern, max.min(MAX_LISTED))
                            .map_err(|e| e.to_string())?;
                        Ok(Response::ok(json!(
                            keys.iter().map(|k| k.display()).collect::<Vec<_>>()
                        )))
                    }
                    "statistics" => Ok(Response::ok(c.namespace_stats(&op.namespace))),
                    other => Err(format!(
                        "unknown namespace operation_type '{other}'; one of: clear, list_keys, statistics"
                    )),
                }
            }
            "" => Err(format!(
                "a cache-request needs an operation: one of {OPERATIONS}"
            )),
            other => Err(format!(
                "Unsupported operation: {other}; one of {OPERATIONS}"
            )),
        }
    }

    /// The `cache.*` call forms, each an envelope run here (the dispatcher brought keyed ones
    /// to their owner), its response turned into the call's result.
    async fn call_form(self: Arc<Self>, cmd: &RpcCommand) -> Result<Value, CallError> {
        let fun = cmd.fun.as_str();
        let envelope = |op: &str, key: &CacheKey| -> Map<String, Value> {
            let mut m = Map::new();
            m.insert("operation".into(), json!(op));
            m.insert("key".into(), json!(key));
            m
        };
        let run = |frame: Map<String, Value>| {
            let s = self.clone();
            async move {
                let resp = s.request(Value::Object(frame), true).await;
                match resp.error {
                    Some(e) if resp.status == "error" => {
                        Err(CallError::Failed(format!("{}: {e}", "cache")))
                    }
                    _ => Ok(resp),
                }
            }
        };
        // An atomic operation's envelope, with the call's consistency and levels.
        let atomic = |key: &CacheKey, op: Value, opts: &Map<String, Value>| {
            let mut frame = envelope("atomic", key);
            frame.insert("atomic_operation".into(), op);
            frame.insert("options".into(), request_options(opts));
            frame
        };
        let fail =
            |e: CallError| e.map_cause(|c| format!("{fun}: {}", c.trim_start_matches("cache: ")));
        // What an envelope's `result` holds, as the call's result.
        let answer = |frame: Map<String, Value>| {
            let run = run(frame);
            async move {
                let resp = run.await.map_err(fail)?;
                Ok::<_, CallError>(resp.result.unwrap_or(Value::Null))
            }
        };
        match fun {
            "cache.get" | "cache.entry" => {
                let (key, at) = key_arg(cmd)?;
                let opts = options(cmd, at)?;
                known(fun, &opts, &["version", "tags", "default", "cache_levels"])?;
                let mut frame = envelope("get", &key);
                if let Some(l) = opts.get("cache_levels") {
                    frame.insert("options".into(), json!({"cache_levels": l}));
                }
                let resp = run(frame).await.map_err(fail)?;
                Ok(match (fun, resp.entry) {
                    ("cache.get", Some(e)) => e["value"].clone(),
                    ("cache.get", None) => opts.get("default").cloned().unwrap_or(Value::Null),
                    (_, e) => e.unwrap_or(Value::Null),
                })
            }
            "cache.put" => {
                let (key, at) = key_arg(cmd)?;
                let value = cmd
                    .args
                    .get(at)
                    .or_else(|| cmd.kwargs.get("value"))
                    .cloned()
                    .ok_or_else(|| bad(fun, "a value follows the key"))?;
                let mut opts = options(cmd, at + 1)?;
                opts.remove("value");
                known(
                    fun,
                    &opts,
                    &[
                        "version",
                        "tags",
                        "ttl_seconds",
                        "dependencies",
                        "cost_ms",
                        "consistency",
                        "cache_levels",
                    ],
                )?;
                let mut frame = envelope("put", &key);
                frame.insert("value".into(), value);
                frame.insert(
                    "metadata".into(),
                    json!({
                        "ttl_seconds": opts.get("ttl_seconds"),
                        "dependencies": opts.get("dependencies").cloned().unwrap_or(json!([])),
                        "computation_cost_ms": opts.get("cost_ms").cloned().unwrap_or(json!(0.0)),
                    }),
                );
                frame.insert("options".into(), request_options(&opts));
                let resp = run(frame).await.map_err(fail)?;
                let entry = resp.entry.unwrap_or(Value::Null);
                Ok(json!({
                    "stored": true,
                    "size_bytes": entry["size_bytes"],
                    "ttl_seconds": entry["ttl_seconds"],
                }))
            }
            "cache.delete" => {
                let (key, at) = key_arg(cmd)?;
                let opts = options(cmd, at)?;
                known(fun, &opts, &["version", "tags", "consistency"])?;
                let mut frame = envelope("delete", &key);
                frame.insert("options".into(), request_options(&opts));
                answer(frame).await
            }
            "cache.invalidate" => {
                let t = target(cmd)?;
                let key = CacheKey {
                    namespace: t.namespace.clone(),
                    identifier: t.identifier.clone().unwrap_or_else(|| "*".into()),
                    version: t
                        .version
                        .clone()
                        .unwrap_or_else(|| super::key::DEFAULT_VERSION.into()),
                    tags: Vec::new(),
                };
                let mut frame = envelope("invalidate", &key);
                match (&t.tag, &t.pattern, &t.identifier) {
                    (Some(tag), None, None) => {
                        frame.insert("invalidation_tag".into(), json!(tag));
                    }
                    (None, Some(p), None) => {
                        frame.insert("invalidation_pattern".into(), json!(p));
                    }
                    (None, None, Some(_)) => {}
                    _ => {
                        return Err(bad(
                            fun,
                            "give exactly one of identifier, tag or pattern (with the namespace)",
                        ));
                    }
                }
                let n = run(frame).await.map_err(fail)?.result.unwrap_or(json!(0));
                Ok(json!({"invalidated": n}))
            }
            "cache.incr" => {
                let (key, at) = key_arg(cmd)?;
                let (by, at) = match cmd.args.get(at) {
                    Some(Value::Number(n)) => (Some(json!(n)), at + 1),
                    _ => (cmd.kwargs.get("by").cloned(), at),
                };
                let mut opts = options(cmd, at)?;
                opts.remove("by");
                known(
                    fun,
                    &opts,
                    &["version", "tags", "ttl_seconds", "initial", "consistency"],
                )?;
                let op = json!({
                    "operation_type": "increment",
                    "increment_by": by,
                    "initial_value": opts.get("initial"),
                    "ttl_seconds": opts.get("ttl_seconds"),
                });
                answer(atomic(&key, op, &opts)).await
            }
            "cache.cas" | "cache.test_and_set" => {
                let (key, at) = key_arg(cmd)?;
                let (Some(expected), Some(new)) = (cmd.args.get(at), cmd.args.get(at + 1)) else {
                    return Err(bad(
                        fun,
                        "the expected value and the new value follow the key",
                    ));
                };
                let opts = options(cmd, at + 2)?;
                known(
                    fun,
                    &opts,
                    &["version", "tags", "ttl_seconds", "consistency"],
                )?;
                let op = json!({
                    "operation_type": if fun == "cache.cas" { "compare_and_swap" } else { "test_and_set" },
                    "expected_value": expected,
                    "new_value": new,
                    "ttl_seconds": opts.get("ttl_seconds"),
                });
                answer(atomic(&key, op, &opts)).await
            }
            "cache.set_if_absent" => {
                let (key, at) = key_arg(cmd)?;
                let value = cmd
                    .args
                    .get(at)
                    .cloned()
                    .ok_or_else(|| bad(fun, "a value follows the key"))?;
                let opts = options(cmd, at + 1)?;
                known(
                    fun,
                    &opts,
                    &["version", "tags", "ttl_seconds", "consistency"],
                )?;
                let op = json!({
                    "operation_type": "set_if_absent",
                    "new_value": value,
                    "ttl_seconds": opts.get("ttl_seconds"),
                });
                answer(atomic(&key, op, &opts)).await
            }
            "cache.structure" => {
                let (key, at) = key_arg(cmd)?;
                let op = cmd
                    .args
                    .get(at)
                    .or_else(|| cmd.kwargs.get("operation"))
                    .filter(|v| v.is_object())
                    .cloned()
                    .ok_or_else(|| {
                        bad(
                            fun,
                            "a structure operation {structure_type, operation, …} follows the key",
                        )
                    })?;
                serde_json::from_value::<StructureOp>(op.clone())
                    .map_err(|e| bad(fun, format!("structure operation: {e}")))?;
                let mut frame = envelope("structure", &key);
                frame.insert("structure_operation".into(), op);
                answer(frame).await
            }
            "cache.namespace" => {
                let op = cmd
                    .args
                    .first()
                    .filter(|v| v.is_object())
                    .cloned()
                    .or_else(|| (!cmd.kwargs.is_empty()).then(|| Value::Object(cmd.kwargs.clone())))
                    .ok_or_else(|| {
                        bad(
                            fun,
                            "takes {operation_type, namespace, pattern?, max_entries?, dry_run?}",
                        )
                    })?;
                serde_json::from_value::<NamespaceOp>(op.clone())
                    .map_err(|e| bad(fun, format!("namespace operation: {e}")))?;
                let mut frame = Map::new();
                frame.insert("operation".into(), json!("namespace"));
                frame.insert("namespace_operation".into(), op);
                answer(frame).await
            }
            "cache.keys" => {
                let ns = cmd
                    .args
                    .first()
                    .or_else(|| cmd.kwargs.get("namespace"))
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad(fun, "the namespace comes first"))?;
                let pattern = cmd
                    .args
                    .get(1)
                    .or_else(|| cmd.kwargs.get("pattern"))
                    .map(|p| {
                        p.as_str()
                            .ok_or_else(|| bad(fun, "pattern must be a string"))
                    })
                    .transpose()?
                    .unwrap_or("*");
                let mut frame = Map::new();
                frame.insert("operation".into(), json!("query"));
                frame.insert("key".into(), json!({"namespace": ns}));
                frame.insert("invalidation_pattern".into(), json!(pattern));
                let mut keys = run(frame).await.map_err(fail)?.result.unwrap_or(json!([]));
                if let (Value::Array(k), Some(max)) =
                    (&mut keys, cmd.args.get(2).and_then(Value::as_u64))
                {
                    k.sort_by_key(|v| v.to_string());
                    k.truncate(max as usize);
                }
                Ok(keys)
            }
            "cache.mget" | "cache.mset" => self.clone().many(cmd).await,
            "cache.stats" => {
                let ns = cmd.args.first().or_else(|| cmd.kwargs.get("namespace"));
                Ok(match ns {
                    Some(Value::String(ns)) => self.cache.namespace_stats(ns),
                    None | Some(Value::Null) => {
                        let mut s = self.cache.stats();
                        s["node"] = json!(self.node_id);
                        s
                    }
                    Some(other) => {
                        return Err(bad(fun, format!("namespace must be a string, got {other}")));
                    }
                })
            }
            other => Err(CallError::NotFound(format!("Command not found: {other}"))),
        }
    }

    /// `cache.mget` / `cache.mset`: one keyed call per identifier, each to its owner, at once.
    async fn many(self: Arc<Self>, cmd: &RpcCommand) -> Result<Value, CallError> {
        let fun = cmd.fun.as_str();
        let ns = cmd
            .args
            .first()
            .and_then(Value::as_str)
            .ok_or_else(|| bad(fun, "the namespace comes first"))?;
        let opts = options(cmd, 2)?;
        let d = self
            .dispatcher
            .get()
            .ok_or_else(|| CallError::Overloaded("node stopping".into()))?;
        let one = |fun: &str, args: Vec<Value>| {
            let call = Call {
                command: RpcCommand {
                    kwargs: opts.clone(),
                    ..RpcCommand::new("many", fun, args)
                },
                constraint: None,
                request_id: "cache-many".into(),
                depth: 1,
                deadline: Some(Instant::now() + FAN_OUT_TIMEOUT),
                // Per key of a namespace the caller was allowed.
                principal: crate::auth::Principal::system(),
            };
            d.dispatch(call)
        };
        let calls: Vec<_> =
            if fun == "cache.mget" {
                known(fun, &opts, &["version", "default"])?;
                let ids = cmd.args.get(1).and_then(Value::as_array).ok_or_else(|| {
                    bad(fun, "identifiers (a list of strings) follow the namespace")
                })?;
                if ids.len() > MAX_LISTED {
                    return Err(bad(fun, format!("at most {MAX_LISTED} identifiers")));
                }
                ids.iter()
                    .map(|id| one("cache.get", vec![json!(ns), id.clone()]))
                    .collect()
            } else {
                known(
                    fun,
                    &opts,
                    &[
                        "version",
                        "ttl_seconds",
                        "consistency",
                        "tags",
                        "dependencies",
                    ],
                )?;
                let values = cmd.args.get(1).and_then(Value::as_object).ok_or_else(|| {
                    bad(fun, "an object of identifier → value follows the namespace")
                })?;
                if values.len() > MAX_LISTED {
                    return Err(bad(fun, format!("at most {MAX_LISTED} values")));
                }
                values
                    .iter()
                    .map(|(id, v)| one("cache.put", vec![json!(ns), json!(id), v.clone()]))
                    .collect()
            };
        let results = futures_util::future::join_all(calls).await;
        if fun == "cache.mget" {
            results
                .into_iter()
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array)
        } else {
            let stored = results.iter().filter(|r| r.is_ok()).count();
            let errors: Vec<String> = results
                .into_iter()
                .filter_map(|r| r.err().map(|e| e.to_string()))
                .collect();
            Ok(json!({"stored": stored, "errors": errors}))
        }
    }
}

/// The envelope options of a call form's `consistency` and `cache_levels`.
fn request_options(opts: &Map<String, Value>) -> Value {
    let mut o = Map::new();
    if let Some(c) = opts.get("consistency") {
        o.insert("consistency_level".into(), c.clone());
    }
    if let Some(l) = opts.get("cache_levels") {
        o.insert("cache_levels".into(), l.clone());
    }
    Value::Object(o)
}

/// Whether an envelope concerns every node (tag and pattern invalidation, clears, listings).
fn broadcast(req: &Request) -> bool {
    match req.operation.as_str() {
        "invalidate" => req.invalidation_tag.is_some() || !req.invalidation_pattern.is_empty(),
        "query" => true,
        "namespace" => req
            .namespace_operation
            .as_ref()
            .is_some_and(|o| matches!(o.operation_type.as_str(), "clear" | "list_keys")),
        _ => false,
    }
}
