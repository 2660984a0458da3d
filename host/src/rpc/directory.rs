//! The cluster directory the discovery built-ins answer from: every function endpoint, node,
//! queue and topic interest this node knows (its own and, through the cluster view, every live
//! peer's), and the filters, order and paging of MPREG's discovery requests.
//!
//! Requests are read as leniently as the original reads them (`mpreg/core/rpc_discovery.py`,
//! `cluster_map.py`, `discovery_summary.py`): one object, every field optional, a list given as
//! a single string is a list of one, unknown fields ignored. Paging tokens are the original's
//! `offset:limit`. Pure: the caller gathers the [`Directory`]; no I/O here.

use std::collections::BTreeMap;

use semver::Version;
use serde_json::{Map, Value, json};

use super::signature::{self, TypeSpec as ParsedType};
use super::version::VersionConstraint;
use crate::digest::sha256_hex;
use crate::protocol::catalog::{
    CatalogResponse, ClusterMapResponse, DEFAULT_SCOPE, DefaultSpec, DescribeResponse, DocSpec,
    ENTRY_TTL_SECONDS, FunctionIdentity, FunctionItem, ListResponse, NodeSnapshot, ParamSpec,
    PeerSnapshot, ReportCount, ReportResponse, ReturnSpec, SPEC_VERSION, ServiceSummary, Spec,
    SpecSummary, SummaryResponse, TransportEndpoint, TypeSpec,
};
use crate::protocol::discovery::NodeLoad;
use crate::pubsub::topic::Pattern;

/// Items per page when a request names no limit, and the most one page holds.
pub const PAGE: (usize, usize) = (200, 2000);

/// A function version served by a node.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionEntry {
    /// Name clients call.
    pub name: String,
    /// Identity for `function_id` matching.
    pub function_id: String,
    /// Version.
    pub version: Version,
    /// The node serving it.
    pub node_id: String,
    /// The function's and the node's resource tags, sorted.
    pub resources: Vec<String>,
    /// One line about it.
    pub description: Option<String>,
    /// WIT signature.
    pub signature: String,
    /// The plugin providing it; `None` for a built-in.
    pub plugin: Option<String>,
}

/// A live node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeEntry {
    /// Node id.
    pub node_id: String,
    /// Region label (may be empty).
    pub region: String,
    /// Resource tags.
    pub resources: Vec<String>,
    /// URLs clients reach it by.
    pub urls: Vec<String>,
    /// Start time, Unix seconds.
    pub started: f64,
    /// Its load.
    pub load: NodeLoad,
    /// Names of the functions it serves (built-ins too).
    pub functions: Vec<String>,
}

/// What a node holds of a named resource kind (`queues`: names; `topics`: patterns).
#[derive(Debug, Clone, PartialEq)]
pub struct Held {
    /// The node.
    pub node_id: String,
    /// The names, sorted.
    pub names: Vec<String>,
}

/// Everything the discovery built-ins can answer from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Directory {
    /// This cluster's id.
    pub cluster_id: String,
    /// The answering node.
    pub local_node: String,
    /// When it was gathered (Unix seconds).
    pub generated_at: f64,
    /// Function endpoints, in any order.
    pub functions: Vec<FunctionEntry>,
    /// Live nodes, this one included.
    pub nodes: Vec<NodeEntry>,
    /// Other entry types (`queues`, `topics`, …): what each node holds.
    pub resources: BTreeMap<&'static str, Vec<Held>>,
}

/// A discovery request: the union of the fields MPREG's discovery requests carry.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Query {
    /// `catalog_query`'s entry type, normalised (`functions`, `nodes`, …).
    pub entry_type: Option<String>,
    /// Namespace prefix (`namespace`, or `cluster_map_v2`'s `namespace_filter`).
    pub namespace: Option<String>,
    /// `local`, `zone` (alias `cluster`), `region` or `global`.
    pub scope: Option<String>,
    /// Required capabilities (we advertise none: any makes the answer empty).
    pub capabilities: Vec<String>,
    /// Required resource tags.
    pub resources: Vec<String>,
    /// Required tags (we advertise none).
    pub tags: Vec<String>,
    /// Only this cluster.
    pub cluster_id: Option<String>,
    /// Only this node.
    pub node_id: Option<String>,
    /// Function names (`function_name` and `function_names`).
    pub function_names: Vec<String>,
    /// Function ids (`function_id` and `function_ids`).
    pub function_ids: Vec<String>,
    /// Spec digests.
    pub spec_digests: Vec<String>,
    /// Version constraint, MPREG or semver syntax.
    pub version_constraint: Option<VersionConstraint>,
    /// Substring of name, namespace, description or function id (case-insensitive).
    pub query: Option<String>,
    /// Queue name (`catalog_query` of queues).
    pub queue_name: Option<String>,
    /// A topic: topic entries whose patterns match it.
    pub topic: Option<String>,
    /// `summary_query`'s service id.
    pub service_id: Option<String>,
    /// `summary_query`: add the URLs that reach each cluster.
    pub include_ingress: bool,
    /// At most this many ingress URLs per cluster.
    pub ingress_limit: Option<usize>,
    /// `rpc_describe`: `summary` or `full` (default).
    pub full: bool,
    /// `rpc_describe`'s mode: `auto`, `local`/`node`, `catalog` or `scatter`.
    pub mode: String,
    /// Page size.
    pub limit: Option<usize>,
    /// `offset:limit` of the page.
    pub page_token: Option<String>,
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.trim().is_empty() => None,
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        other => Some(other.to_string()),
    }
}

fn list(v: &Value) -> Vec<String> {
    match v {
        Value::Array(a) => a.iter().filter_map(scalar).collect(),
        other => scalar(other).into_iter().collect(),
    }
}

fn count(fields: &Map<String, Value>, key: &str) -> Result<Option<usize>, String> {
    match fields.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => {
            let n = match v {
                Value::Number(n) => n.as_i64(),
                Value::String(s) => s.trim().parse::<i64>().ok(),
                _ => None,
            };
            match n {
                Some(n) => Ok(Some(n.max(0) as usize)),
                None => Err(format!("{key} must be an integer, got {v}")),
            }
        }
    }
}

/// The normalised scope, or why it is not one.
fn scope_of(raw: Option<String>) -> Result<Option<String>, String> {
    let Some(raw) = raw else { return Ok(None) };
    let value = raw.trim().to_lowercase();
    let value = if value == "cluster" {
        "zone".to_owned()
    } else {
        value
    };
    match value.as_str() {
        "local" | "zone" | "region" | "global" => Ok(Some(value)),
        _ => Err(format!("Unsupported discovery scope: {raw}")),
    }
}

fn entry_type_of(raw: &str) -> Result<String, String> {
    let value = raw.trim().to_lowercase();
    let value = match value.as_str() {
        "function" => "functions",
        "node" => "nodes",
        "queue" => "queues",
        "topic" => "topics",
        "cache" => "caches",
        "service" => "services",
        "cache-profile" | "cache_profile" => "cache_profiles",
        other => other,
    };
    match value {
        "functions" | "nodes" | "queues" | "topics" | "caches" | "services" | "cache_profiles" => {
            Ok(value.to_owned())
        }
        _ => Err(format!("Unsupported catalog entry_type: {raw}")),
    }
}

impl Query {
    /// Reads a request: the object MPREG's clients pass as the one argument, with keyword
    /// arguments on top. Plain strings as arguments are function names (`rpc_describe("add")`).
    pub fn parse(args: &[Value], kwargs: &Map<String, Value>) -> Result<Query, String> {
        let mut fields = Map::new();
        let mut names = Vec::new();
        for a in args {
            match a {
                Value::Object(o) => fields.extend(o.clone()),
                Value::String(s) => names.push(s.clone()),
                Value::Null => {}
                other => return Err(format!("expected a request object, got {other}")),
            }
        }
        fields.extend(kwargs.clone());
        let get = |k: &str| fields.get(k).and_then(scalar);
        let many = |k: &str| fields.get(k).map(list).unwrap_or_default();
        names.extend(get("function_name"));
        names.extend(many("function_names"));
        let mut ids = many("function_ids");
        ids.extend(get("function_id"));
        let version_constraint =
            VersionConstraint::parse_optional(get("version_constraint").as_deref())
                .map_err(|e| e.to_string())?;
        let detail = get("detail_level").map(|d| d.to_lowercase());
        Ok(Query {
            entry_type: get("entry_type").map(|t| entry_type_of(&t)).transpose()?,
            namespace: get("namespace")
                .or_else(|| get("namespace_filter"))
                .map(|n| n.trim().to_owned()),
            scope: scope_of(get("scope"))?,
            capabilities: many("capabilities"),
            resources: many("resources"),
            tags: many("tags"),
            cluster_id: get("cluster_id"),
            node_id: get("node_id"),
            function_names: names,
            function_ids: ids,
            spec_digests: many("spec_digests"),
            version_constraint,
            query: get("query").map(|q| q.to_lowercase()),
            queue_name: get("queue_name"),
            topic: get("topic"),
            service_id: get("service_id"),
            include_ingress: fields
                .get("include_ingress")
                .is_some_and(|v| v == &json!(true)),
            ingress_limit: count(&fields, "ingress_limit")?,
            full: detail.as_deref() != Some("summary"),
            mode: get("mode").map_or_else(|| "auto".to_owned(), |m| m.to_lowercase()),
            limit: count(&fields, "limit")?,
            page_token: get("page_token"),
        })
    }

    /// The cluster and node the scope limits the answer to, or `None` when the request can
    /// match nothing here (it names another cluster or node than the scope allows).
    fn bounds<'d>(&'d self, d: &'d Directory) -> Option<(Option<&'d str>, Option<&'d str>)> {
        let (scope_cluster, scope_node) = match self.scope.as_deref() {
            Some("local") => (Some(d.cluster_id.as_str()), Some(d.local_node.as_str())),
            Some("zone") => (Some(d.cluster_id.as_str()), None),
            _ => (None, None),
        };
        let cluster = match (self.cluster_id.as_deref(), scope_cluster) {
            (Some(a), Some(b)) if a != b => return None,
            (a, b) => a.or(b),
        };
        let node = match (self.node_id.as_deref(), scope_node) {
            (Some(a), Some(b)) if a != b => return None,
            (a, b) => a.or(b),
        };
        if cluster.is_some_and(|c| c != d.cluster_id) {
            return None;
        }
        Some((cluster, node))
    }

    /// Whether an entry of scope [`DEFAULT_SCOPE`] is visible at the requested scope (the
    /// original's rank rule: an entry is listed at its own scope and narrower ones).
    fn scope_allows(&self) -> bool {
        !matches!(self.scope.as_deref(), Some("region" | "global"))
    }

    fn page<T>(&self, items: Vec<T>) -> (Vec<T>, Option<String>) {
        let (mut offset, mut limit) = (0, PAGE.0);
        if let Some((o, l)) = self.page_token.as_deref().and_then(|t| t.split_once(':'))
            && let (Ok(o), Ok(l)) = (o.trim().parse::<usize>(), l.trim().parse::<usize>())
        {
            (offset, limit) = (o, l.max(1));
        }
        if let Some(l) = self.limit {
            limit = l;
        }
        let limit = limit.min(PAGE.1);
        let total = items.len();
        let page = items.into_iter().skip(offset).take(limit).collect();
        let next = offset + limit;
        (
            page,
            (next < total && limit > 0).then(|| format!("{next}:{limit}")),
        )
    }
}

/// The namespace of a function name: up to its last `.`; `""` when it has none.
pub fn namespace_of(name: &str) -> &str {
    name.rsplit_once('.').map_or("", |(ns, _)| ns)
}

/// The original's namespace rule: equal, or under it (`a` covers `a.b`).
fn in_namespace(filter: &str, value: &str) -> bool {
    filter.is_empty()
        || value == filter
        || value
            .strip_prefix(filter)
            .is_some_and(|r| r.starts_with('.'))
}

fn type_spec(t: &ParsedType) -> TypeSpec {
    TypeSpec {
        display: t.display.clone(),
        args: t.args.clone(),
        is_optional: t.is_optional,
        origin: t.origin.clone(),
    }
}

impl FunctionEntry {
    fn identity(&self) -> FunctionIdentity {
        FunctionIdentity {
            name: self.name.clone(),
            function_id: self.function_id.clone(),
            version: self.version.to_string(),
        }
    }

    fn kind(&self) -> &'static str {
        if self.plugin.is_some() {
            "plugin"
        } else {
            "builtin"
        }
    }

    /// The full `RpcSpec`, its digest computed over everything but the digest.
    pub fn spec(&self) -> Spec {
        let parsed = signature::parse(&self.signature);
        let parameters = parsed
            .params
            .iter()
            .map(|p| ParamSpec {
                name: p.name.clone(),
                kind: if p.variadic {
                    "var_positional"
                } else {
                    "positional_or_keyword"
                }
                .into(),
                type_spec: type_spec(&p.ty),
                required: p.required,
                default: DefaultSpec {
                    has_default: false,
                    encoding: "none".into(),
                },
                doc: String::new(),
            })
            .collect();
        let returns = parsed.returns.as_ref().map_or(
            TypeSpec {
                display: "None".into(),
                args: Vec::new(),
                is_optional: false,
                origin: None,
            },
            type_spec,
        );
        let summary = self.description.clone().unwrap_or_default();
        let mut spec = Spec {
            identity: self.identity(),
            namespace: namespace_of(&self.name).to_owned(),
            doc: DocSpec {
                summary: summary.clone(),
                description: summary,
                param_docs: Vec::new(),
                return_doc: String::new(),
            },
            parameters,
            return_spec: ReturnSpec {
                type_spec: returns,
                doc: String::new(),
            },
            resources: self.resources.clone(),
            tags: Vec::new(),
            scope: DEFAULT_SCOPE.into(),
            capabilities: Vec::new(),
            examples: Vec::new(),
            spec_version: SPEC_VERSION.into(),
            spec_digest: String::new(),
            signature: self.signature.clone(),
            kind: self.kind().into(),
            plugin: self.plugin.clone(),
        };
        let text = serde_json::to_vec(&spec).unwrap_or_default();
        spec.spec_digest = sha256_hex(&text);
        spec
    }

    fn item(&self, cluster_id: &str, with_spec: bool) -> FunctionItem {
        let spec = self.spec();
        let summary = SpecSummary {
            identity: spec.identity.clone(),
            namespace: spec.namespace.clone(),
            summary: spec.doc.summary.clone(),
            parameter_count: spec.parameters.len(),
            required_parameter_count: spec.parameters.iter().filter(|p| p.required).count(),
            return_type: spec.return_spec.type_spec.clone(),
            spec_version: SPEC_VERSION.into(),
            spec_digest: spec.spec_digest.clone(),
        };
        FunctionItem {
            identity: spec.identity.clone(),
            namespace: spec.namespace.clone(),
            node_id: self.node_id.clone(),
            cluster_id: cluster_id.to_owned(),
            resources: self.resources.clone(),
            tags: Vec::new(),
            scope: DEFAULT_SCOPE.into(),
            spec_digest: spec.spec_digest.clone(),
            summary,
            kind: self.kind().into(),
            signature: self.signature.clone(),
            spec: with_spec.then_some(spec),
        }
    }
}

impl Directory {
    /// Function endpoints matching `q`, sorted by name, function id, version and node.
    fn matching_functions(&self, q: &Query) -> Vec<&FunctionEntry> {
        let Some((_, node)) = q.bounds(self) else {
            return Vec::new();
        };
        if !q.scope_allows() || !q.capabilities.is_empty() || !q.tags.is_empty() {
            return Vec::new();
        }
        let namespace = q.namespace.as_deref().unwrap_or("");
        let mut out: Vec<&FunctionEntry> = self
            .functions
            .iter()
            .filter(|f| node.is_none_or(|n| f.node_id == n))
            .filter(|f| in_namespace(namespace, namespace_of(&f.name)))
            .filter(|f| q.resources.iter().all(|r| f.resources.contains(r)))
            .filter(|f| q.function_names.is_empty() || q.function_names.contains(&f.name))
            .filter(|f| q.function_ids.is_empty() || q.function_ids.contains(&f.function_id))
            .filter(|f| {
                q.version_constraint
                    .as_ref()
                    .is_none_or(|c| c.matches(&f.version))
            })
            .filter(|f| {
                q.query.as_deref().is_none_or(|needle| {
                    f.name.to_lowercase().contains(needle)
                        || namespace_of(&f.name).to_lowercase().contains(needle)
                        || f.function_id.to_lowercase().contains(needle)
                        || f.description
                            .as_deref()
                            .is_some_and(|d| d.to_lowercase().contains(needle))
                })
            })
            .collect();
        if !q.spec_digests.is_empty() {
            out.retain(|f| q.spec_digests.contains(&f.spec().spec_digest));
        }
        out.sort_by(|a, b| {
            (&a.name, &a.function_id, &a.version, &a.node_id).cmp(&(
                &b.name,
                &b.function_id,
                &b.version,
                &b.node_id,
            ))
        });
        out
    }

    /// Live nodes matching `q`, sorted by node id.
    fn matching_nodes(&self, q: &Query) -> Vec<&NodeEntry> {
        let Some((_, node)) = q.bounds(self) else {
            return Vec::new();
        };
        if !q.scope_allows() || !q.capabilities.is_empty() {
            return Vec::new();
        }
        let namespace = q.namespace.as_deref().unwrap_or("");
        let mut out: Vec<&NodeEntry> = self
            .nodes
            .iter()
            .filter(|n| node.is_none_or(|id| n.node_id == id))
            .filter(|n| q.resources.iter().all(|r| n.resources.contains(r)))
            .filter(|n| {
                namespace.is_empty()
                    || n.node_id.starts_with(namespace)
                    || self.cluster_id.starts_with(namespace)
                    || n.resources.iter().any(|r| r.starts_with(namespace))
            })
            .collect();
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// `rpc_list`.
    pub fn rpc_list(&self, q: &Query) -> ListResponse {
        let items: Vec<FunctionItem> = self
            .matching_functions(q)
            .into_iter()
            .map(|f| f.item(&self.cluster_id, false))
            .collect();
        let (items, next_page_token) = q.page(items);
        ListResponse {
            generated_at: self.generated_at,
            items,
            next_page_token,
        }
    }

    /// `rpc_describe` (every mode answers from the directory: the cluster view already holds
    /// every node's signatures) and `rpc_describe_local` (`local`: this node's only).
    pub fn rpc_describe(&self, q: &Query, local: bool) -> DescribeResponse {
        let mut scoped;
        let q = if local {
            scoped = q.clone();
            if scoped
                .node_id
                .as_deref()
                .is_some_and(|n| n != self.local_node)
            {
                return DescribeResponse {
                    generated_at: self.generated_at,
                    items: Vec::new(),
                    errors: Vec::new(),
                    next_page_token: None,
                };
            }
            scoped.node_id = Some(self.local_node.clone());
            &scoped
        } else {
            q
        };
        let items: Vec<FunctionItem> = self
            .matching_functions(q)
            .into_iter()
            .map(|f| f.item(&self.cluster_id, q.full))
            .collect();
        let (items, next_page_token) = q.page(items);
        DescribeResponse {
            generated_at: self.generated_at,
            items,
            errors: Vec::new(),
            next_page_token,
        }
    }

    /// `rpc_report`.
    pub fn rpc_report(&self, q: &Query) -> ReportResponse {
        let functions = self.matching_functions(q);
        let mut namespaces: BTreeMap<String, usize> = BTreeMap::new();
        for f in &functions {
            *namespaces
                .entry(namespace_of(&f.name).to_owned())
                .or_default() += 1;
        }
        let ranked = |m: BTreeMap<String, usize>| {
            let mut v: Vec<ReportCount> = m
                .into_iter()
                .map(|(key, count)| ReportCount { key, count })
                .collect();
            v.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.key.cmp(&b.key)));
            v
        };
        let clusters = if functions.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([(self.cluster_id.clone(), functions.len())])
        };
        ReportResponse {
            generated_at: self.generated_at,
            total_functions: functions.len(),
            namespace_counts: ranked(namespaces),
            cluster_counts: ranked(clusters),
            tag_counts: Vec::new(),
        }
    }

    fn node_snapshot(&self, n: &NodeEntry) -> NodeSnapshot {
        NodeSnapshot {
            node_id: n.node_id.clone(),
            cluster_id: self.cluster_id.clone(),
            resources: n.resources.clone(),
            capabilities: Vec::new(),
            region: (!n.region.is_empty()).then(|| n.region.clone()),
            scope: DEFAULT_SCOPE.into(),
            transport_endpoints: endpoints(&n.urls),
            advertised_urls: n.urls.clone(),
            advertised_at: n.started,
            load: n.load.clone(),
        }
    }

    /// `cluster_map_v2`.
    pub fn cluster_map_v2(&self, q: &Query) -> ClusterMapResponse {
        let nodes: Vec<NodeSnapshot> = self
            .matching_nodes(q)
            .into_iter()
            .map(|n| self.node_snapshot(n))
            .collect();
        let (nodes, next_page_token) = q.page(nodes);
        ClusterMapResponse {
            cluster_id: self.cluster_id.clone(),
            generated_at: self.generated_at,
            nodes,
            next_page_token,
        }
    }

    /// `list_peers`: every live node but this one.
    pub fn list_peers(&self, q: &Query) -> Vec<PeerSnapshot> {
        if q.scope.as_deref() == Some("local") {
            return Vec::new();
        }
        let Some((cluster, _)) = q.bounds(self) else {
            return Vec::new();
        };
        if cluster.is_some_and(|c| c != self.cluster_id) {
            return Vec::new();
        }
        let mut peers: Vec<PeerSnapshot> = self
            .nodes
            .iter()
            .filter(|n| n.node_id != self.local_node)
            .map(|n| {
                let mut funs = n.functions.clone();
                funs.sort();
                funs.dedup();
                PeerSnapshot {
                    url: n.urls.first().cloned().unwrap_or_else(|| n.node_id.clone()),
                    node_id: n.node_id.clone(),
                    cluster_id: self.cluster_id.clone(),
                    funs,
                    locs: n.resources.clone(),
                    last_seen: self.generated_at,
                    status: "healthy".into(),
                    status_timestamp: self.generated_at,
                    scope: DEFAULT_SCOPE.into(),
                    region: (!n.region.is_empty()).then(|| n.region.clone()),
                    advertised_urls: n.urls.clone(),
                    transport_endpoints: endpoints(&n.urls),
                    load: n.load.clone(),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.url.cmp(&b.url));
        peers
    }

    /// `catalog_query`.
    pub fn catalog_query(&self, q: &Query) -> Result<CatalogResponse, String> {
        let entry_type = q
            .entry_type
            .clone()
            .ok_or_else(|| "catalog_query needs an entry_type".to_owned())?;
        let items: Vec<Value> = match entry_type.as_str() {
            "functions" => self
                .matching_functions(q)
                .into_iter()
                .map(|f| self.function_endpoint(f))
                .collect(),
            "nodes" => self
                .matching_nodes(q)
                .into_iter()
                .map(|n| self.node_descriptor(n))
                .collect(),
            "queues" => self
                .matching_held("queues", q)
                .into_iter()
                .flat_map(|h| {
                    h.names
                        .iter()
                        .filter(|name| q.queue_name.as_ref().is_none_or(|w| w == *name))
                        .filter(|name| in_namespace(q.namespace.as_deref().unwrap_or(""), name))
                        .map(|name| self.queue_endpoint(&h.node_id, name, self.generated_at))
                        .collect::<Vec<_>>()
                })
                .collect(),
            "topics" => self
                .matching_held("topics", q)
                .into_iter()
                .filter(|h| {
                    q.topic
                        .as_deref()
                        .is_none_or(|t| h.names.iter().any(|p| pattern_matches(p, t)))
                })
                .filter(|h| {
                    q.namespace.as_deref().is_none_or(|ns| {
                        h.names
                            .iter()
                            .any(|p| in_namespace(ns, p) || p.starts_with(ns))
                    })
                })
                .map(|h| self.topic_subscription(h, self.generated_at))
                .collect(),
            other => {
                // The original's `CacheRoleEntry` names a cache's role; others are named.
                let field = if other == "caches" { "role" } else { "name" };
                self.matching_held(other, q)
                    .into_iter()
                    .flat_map(|h| {
                        h.names.iter().map(|name| {
                            json!({field: name, "node_id": h.node_id, "cluster_id": self.cluster_id,
                                "scope": DEFAULT_SCOPE, "tags": [], "advertised_at": self.generated_at,
                                "ttl_seconds": ENTRY_TTL_SECONDS})
                        }).collect::<Vec<_>>()
                    })
                    .collect()
            }
        };
        let (items, next_page_token) = q.page(items);
        Ok(CatalogResponse {
            entry_type,
            generated_at: self.generated_at,
            items,
            next_page_token,
        })
    }

    fn matching_held(&self, kind: &str, q: &Query) -> Vec<&Held> {
        let Some((_, node)) = q.bounds(self) else {
            return Vec::new();
        };
        if !q.scope_allows() || !q.tags.is_empty() {
            return Vec::new();
        }
        let mut out: Vec<&Held> = self
            .resources
            .get(kind)
            .map(|v| v.iter().collect())
            .unwrap_or_default();
        out.retain(|h| node.is_none_or(|n| h.node_id == n) && !h.names.is_empty());
        out.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        out
    }

    /// A node as the original's catalog holds it (`NodeDescriptor`).
    fn node_descriptor(&self, n: &NodeEntry) -> Value {
        json!({
            "node_id": n.node_id, "cluster_id": self.cluster_id, "scope": DEFAULT_SCOPE,
            "resources": n.resources, "capabilities": [], "tags": [],
            "transport_endpoints": endpoints(&n.urls), "advertised_at": n.started,
            "ttl_seconds": ENTRY_TTL_SECONDS, "region": n.region,
        })
    }

    /// A queue as the original's catalog holds it (`QueueEndpoint`).
    fn queue_endpoint(&self, node_id: &str, name: &str, advertised_at: f64) -> Value {
        json!({
            "queue_name": name, "cluster_id": self.cluster_id, "node_id": node_id,
            "delivery_guarantees": ["at_least_once"], "health": "healthy",
            "current_subscribers": 0, "metadata": {}, "scope": DEFAULT_SCOPE, "tags": [],
            "advertised_at": advertised_at, "ttl_seconds": ENTRY_TTL_SECONDS,
        })
    }

    /// A node's subscription patterns as one `TopicSubscription` (the catalog holds each
    /// node's patterns, which is what routing needs, not each subscription).
    fn topic_subscription(&self, h: &Held, advertised_at: f64) -> Value {
        json!({
            "subscription_id": format!("{}/interest", h.node_id), "node_id": h.node_id,
            "cluster_id": self.cluster_id, "patterns": h.names, "scope": DEFAULT_SCOPE,
            "tags": [], "advertised_at": advertised_at, "ttl_seconds": ENTRY_TTL_SECONDS,
        })
    }

    /// A function as the original's catalog holds it (`FunctionEndpoint`).
    pub fn function_endpoint(&self, f: &FunctionEntry) -> Value {
        let item = f.item(&self.cluster_id, false);
        json!({
            "identity": item.identity, "resources": item.resources, "node_id": item.node_id,
            "cluster_id": item.cluster_id, "scope": item.scope, "tags": item.tags,
            "advertised_at": self.generated_at, "ttl_seconds": ENTRY_TTL_SECONDS,
            "rpc_summary": item.summary, "spec_digest": item.spec_digest,
        })
    }

    /// `summary_query`: one summary per function name.
    pub fn summary_query(&self, q: &Query) -> SummaryResponse {
        let mut by_service: BTreeMap<&str, Vec<&FunctionEntry>> = BTreeMap::new();
        for f in self.matching_functions(&Query {
            scope: q.scope.clone(),
            cluster_id: q.cluster_id.clone(),
            ..Query::default()
        }) {
            by_service.entry(f.name.as_str()).or_default().push(f);
        }
        let region_of = |node: &str| {
            self.nodes
                .iter()
                .find(|n| n.node_id == node)
                .map(|n| n.region.clone())
                .unwrap_or_default()
        };
        let namespace = q.namespace.as_deref().unwrap_or("");
        let items: Vec<ServiceSummary> = by_service
            .into_iter()
            .map(|(service, endpoints)| {
                let ns = service.rsplit_once('.').map_or(service, |(ns, _)| ns);
                let mut regions: Vec<String> = endpoints
                    .iter()
                    .map(|e| region_of(&e.node_id))
                    .filter(|r| !r.is_empty())
                    .collect();
                regions.sort();
                regions.dedup();
                ServiceSummary {
                    namespace: ns.to_owned(),
                    service_id: service.to_owned(),
                    regions,
                    endpoint_count: endpoints.len(),
                    health_band: "healthy".into(),
                    latency_band_ms: [0, 0],
                    ttl_seconds: ENTRY_TTL_SECONDS,
                    generated_at: self.generated_at,
                    scope: q.scope.clone(),
                    source_cluster: self.cluster_id.clone(),
                }
            })
            .filter(|s| in_namespace(namespace, &s.namespace))
            .filter(|s| q.service_id.as_ref().is_none_or(|id| *id == s.service_id))
            .collect();
        let (items, next_page_token) = q.page(items);
        let ingress = (q.include_ingress && !items.is_empty()).then(|| {
            let mut urls: Vec<String> = self
                .nodes
                .iter()
                .flat_map(|n| n.urls.first().cloned())
                .collect();
            urls.sort();
            if let Some(limit) = q.ingress_limit {
                urls.truncate(limit);
            }
            BTreeMap::from([(self.cluster_id.clone(), urls)])
        });
        SummaryResponse {
            generated_at: self.generated_at,
            items,
            ingress,
            next_page_token,
        }
    }

    /// The topic a watch's changes are published on: `base`, then `.scope` (summaries only)
    /// and `.namespace` when given.
    pub fn watch_topic(base: &str, scope: Option<&str>, namespace: Option<&str>) -> String {
        let mut topic = base.to_owned();
        for part in [scope, namespace].into_iter().flatten() {
            topic.push('.');
            topic.push_str(part);
        }
        topic
    }
}

fn held<'d>(d: &'d Directory, kind: &str) -> Vec<&'d Held> {
    d.resources
        .get(kind)
        .map(|v| v.iter().collect())
        .unwrap_or_default()
}

/// What changed between two directories, as the original's `DiscoveryDeltaMessage` body
/// (`delta`, `counts`, `namespaces`), or `None` when nothing did. Functions are keyed by name,
/// id, version and node; nodes by id; queues by node and name; topics by node.
pub fn delta(before: &Directory, after: &Directory) -> Option<Value> {
    fn diff<K: Ord + Clone>(
        old: BTreeMap<K, Value>,
        new: BTreeMap<K, Value>,
    ) -> (Vec<Value>, Vec<K>) {
        let added = new
            .iter()
            .filter(|(k, v)| old.get(*k) != Some(*v))
            .map(|(_, v)| v.clone())
            .collect();
        let removed = old
            .keys()
            .filter(|k| !new.contains_key(*k))
            .cloned()
            .collect();
        (added, removed)
    }
    let functions = |d: &Directory| -> BTreeMap<(String, String, String, String), Value> {
        d.functions
            .iter()
            .map(|f| {
                let key = (
                    f.name.clone(),
                    f.function_id.clone(),
                    f.version.to_string(),
                    f.node_id.clone(),
                );
                let mut v = d.function_endpoint(f);
                v["advertised_at"] = json!(0.0);
                (key, v)
            })
            .collect()
    };
    let nodes = |d: &Directory| -> BTreeMap<String, Value> {
        d.nodes
            .iter()
            .map(|n| (n.node_id.clone(), d.node_descriptor(n)))
            .collect()
    };

    let queues = |d: &Directory| -> BTreeMap<(String, String), Value> {
        held(d, "queues")
            .into_iter()
            .flat_map(|h| {
                h.names.iter().map(|q| {
                    let v = d.queue_endpoint(&h.node_id, q, 0.0);
                    ((h.node_id.clone(), q.clone()), v)
                })
            })
            .collect()
    };
    let topics = |d: &Directory| -> BTreeMap<String, Value> {
        held(d, "topics")
            .into_iter()
            .filter(|h| !h.names.is_empty())
            .map(|h| (h.node_id.clone(), d.topic_subscription(h, 0.0)))
            .collect()
    };
    let (fa, fr) = diff(functions(before), functions(after));
    let (na, nr) = diff(nodes(before), nodes(after));
    let (qa, qr) = diff(queues(before), queues(after));
    let (ta, tr) = diff(topics(before), topics(after));
    if fa.is_empty()
        && fr.is_empty()
        && na.is_empty()
        && nr.is_empty()
        && qa.is_empty()
        && qr.is_empty()
        && ta.is_empty()
        && tr.is_empty()
    {
        return None;
    }
    let mut namespaces: Vec<String> = fa
        .iter()
        .filter_map(|f| {
            f["identity"]["name"]
                .as_str()
                .map(|n| namespace_of(n).to_owned())
        })
        .chain(fr.iter().map(|(name, ..)| namespace_of(name).to_owned()))
        .filter(|ns| !ns.is_empty())
        .collect();
    namespaces.sort();
    namespaces.dedup();
    let counts = json!({
        "functions_added": fa.len(), "functions_removed": fr.len(),
        "topics_added": ta.len(), "topics_removed": tr.len(),
        "queues_added": qa.len(), "queues_removed": qr.len(),
        "services_added": 0, "services_removed": 0, "caches_added": 0, "caches_removed": 0,
        "cache_profiles_added": 0, "cache_profiles_removed": 0,
        "nodes_added": na.len(), "nodes_removed": nr.len(),
    });
    let function_removals: Vec<Value> = fr
        .iter()
        .map(|(name, id, version, node)| {
            json!({"cluster_id": after.cluster_id, "node_id": node,
                "identity": {"name": name, "function_id": id, "version": version}, "resources": []})
        })
        .collect();
    let delta = json!({
        "update_id": format!("{}-{}", after.local_node, after.generated_at),
        "cluster_id": after.cluster_id, "sent_at": after.generated_at,
        "functions": fa, "function_removals": function_removals,
        "topics": ta, "topic_removals": tr,
        "queues": qa,
        "queue_removals": qr.iter().map(|(node, q)| json!({"cluster_id": after.cluster_id, "node_id": node, "queue_name": q})).collect::<Vec<_>>(),
        "services": [], "service_removals": [], "caches": [], "cache_removals": [],
        "cache_profiles": [], "cache_profile_removals": [],
        "nodes": na,
        "node_removals": nr.iter().map(|n| json!({"cluster_id": after.cluster_id, "node_id": n})).collect::<Vec<_>>(),
    });
    Some(json!({
        "delta": delta, "counts": counts, "namespaces": namespaces,
        "source_node": after.local_node, "source_cluster": after.cluster_id,
        "published_at": after.generated_at,
    }))
}

/// Transport endpoints of a node's URLs.
fn endpoints(urls: &[String]) -> Vec<TransportEndpoint> {
    urls.iter()
        .filter_map(|u| {
            let (protocol, rest) = u.split_once("://")?;
            let authority = rest.split('/').next()?;
            let (host, port) = authority.rsplit_once(':')?;
            Some(TransportEndpoint {
                connection_type: "client".into(),
                protocol: protocol.to_owned(),
                host: host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned(),
                port: port.parse().ok()?,
                endpoint: u.clone(),
            })
        })
        .collect()
}

/// Whether subscription pattern `pattern` matches `topic`.
fn pattern_matches(pattern: &str, topic: &str) -> bool {
    Pattern::parse(pattern, false).is_ok_and(|p| p.matches(topic))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(name: &str, version: &str, node: &str, res: &[&str]) -> FunctionEntry {
        FunctionEntry {
            name: name.into(),
            function_id: format!("id.{name}"),
            version: Version::parse(version).expect("version"),
            node_id: node.into(),
            resources: res.iter().map(|s| s.to_string()).collect(),
            description: Some(format!("does {name}")),
            signature: "func(a: s32, b?: s32) -> s32".into(),
            plugin: Some("math".into()),
        }
    }

    fn n(id: &str, res: &[&str]) -> NodeEntry {
        NodeEntry {
            node_id: id.into(),
            region: "eu".into(),
            resources: res.iter().map(|s| s.to_string()).collect(),
            urls: vec![format!("ws://127.0.0.1:{}", 7000 + id.len())],
            started: 1.0,
            load: NodeLoad::default(),
            functions: vec!["add".into()],
        }
    }

    fn dir() -> Directory {
        Directory {
            cluster_id: "c".into(),
            local_node: "a".into(),
            generated_at: 5.0,
            functions: vec![
                f("math.add", "1.0.0", "b", &["cpu"]),
                f("math.add", "2.0.0", "a", &["cpu", "gpu"]),
                f("text.upper", "1.0.0", "a", &[]),
                f("echo", "0.1.0", "a", &[]),
            ],
            nodes: vec![n("b", &["cpu"]), n("a", &["cpu", "gpu"])],
            resources: BTreeMap::from([
                (
                    "queues",
                    vec![
                        Held {
                            node_id: "a".into(),
                            names: vec!["jobs".into()],
                        },
                        Held {
                            node_id: "b".into(),
                            names: vec!["mail.out".into()],
                        },
                    ],
                ),
                (
                    "topics",
                    vec![Held {
                        node_id: "b".into(),
                        names: vec!["orders.#".into()],
                    }],
                ),
            ]),
        }
    }

    fn q(v: Value) -> Query {
        Query::parse(&[v], &Map::new()).expect("query")
    }

    fn names(items: &[FunctionItem]) -> Vec<String> {
        items
            .iter()
            .map(|i| format!("{}@{}/{}", i.identity.name, i.identity.version, i.node_id))
            .collect()
    }

    #[test]
    fn rpc_list_filters_sorts_and_pages() {
        let d = dir();
        let all = d.rpc_list(&Query::default());
        assert_eq!(
            names(&all.items),
            [
                "echo@0.1.0/a",
                "math.add@1.0.0/b",
                "math.add@2.0.0/a",
                "text.upper@1.0.0/a"
            ]
        );
        assert!(all.next_page_token.is_none());
        assert_eq!(
            names(&d.rpc_list(&q(json!({"namespace": "math"}))).items).len(),
            2
        );
        assert_eq!(
            names(&d.rpc_list(&q(json!({"resources": "gpu"}))).items),
            ["math.add@2.0.0/a"]
        );
        assert_eq!(
            names(&d.rpc_list(&q(json!({"node_id": "b"}))).items),
            ["math.add@1.0.0/b"]
        );
        assert_eq!(
            names(
                &d.rpc_list(&q(
                    json!({"function_name": "math.add", "version_constraint": ">=2"})
                ))
                .items
            ),
            ["math.add@2.0.0/a"]
        );
        assert_eq!(
            names(&d.rpc_list(&q(json!({"query": "UPPER"}))).items),
            ["text.upper@1.0.0/a"]
        );
        assert!(
            d.rpc_list(&q(json!({"cluster_id": "other"})))
                .items
                .is_empty()
        );
        assert!(
            d.rpc_list(&q(json!({"scope": "global"}))).items.is_empty(),
            "zone entries only"
        );
        assert!(d.rpc_list(&q(json!({"tags": ["x"]}))).items.is_empty());
        assert_eq!(
            d.rpc_list(&q(json!({"scope": "local"}))).items.len(),
            3,
            "this node's"
        );
        // Pages of two: a token for the rest, then none.
        let first = d.rpc_list(&q(json!({"limit": 2})));
        assert_eq!(first.items.len(), 2);
        let token = first.next_page_token.expect("more");
        assert_eq!(token, "2:2");
        let second = d.rpc_list(&q(json!({"page_token": token})));
        assert_eq!(
            names(&second.items),
            ["math.add@2.0.0/a", "text.upper@1.0.0/a"]
        );
        assert!(second.next_page_token.is_none());
    }

    #[test]
    fn items_carry_the_original_fields_and_a_stable_digest() {
        let d = dir();
        let item =
            serde_json::to_value(&d.rpc_list(&q(json!({"node_id": "b"}))).items[0]).expect("json");
        assert_eq!(
            item["identity"],
            json!({"name": "math.add", "function_id": "id.math.add", "version": "1.0.0"})
        );
        assert_eq!(item["namespace"], "math");
        assert_eq!(item["scope"], "zone");
        assert_eq!(item["summary"]["parameter_count"], 2);
        assert_eq!(item["summary"]["required_parameter_count"], 1);
        assert_eq!(item["summary"]["return_type"]["display"], "s32");
        assert_eq!(item["spec_digest"].as_str().map(str::len), Some(64));
        assert!(item.get("spec").is_none(), "rpc_list has no spec");
        let again =
            serde_json::to_value(&d.rpc_list(&q(json!({"node_id": "b"}))).items[0]).expect("json");
        assert_eq!(item["spec_digest"], again["spec_digest"]);
        let by_digest = d.rpc_describe(&q(json!({"spec_digests": [item["spec_digest"]]})), false);
        assert_eq!(names(&by_digest.items), ["math.add@1.0.0/b"]);
    }

    #[test]
    fn rpc_describe_full_summary_and_local() {
        let d = dir();
        let full = d.rpc_describe(&q(json!({"function_names": ["math.add"]})), false);
        assert_eq!(full.items.len(), 2);
        let spec = full.items[0].spec.as_ref().expect("full by default");
        assert_eq!(spec.parameters[0].name, "a");
        assert!(!spec.parameters[1].required);
        assert_eq!(spec.signature, "func(a: s32, b?: s32) -> s32");
        let brief = d.rpc_describe(&q(json!({"detail_level": "summary"})), false);
        assert!(brief.items.iter().all(|i| i.spec.is_none()));
        let local = d.rpc_describe(&Query::default(), true);
        assert!(local.items.iter().all(|i| i.node_id == "a"));
        assert!(
            d.rpc_describe(&q(json!({"node_id": "b"})), true)
                .items
                .is_empty()
        );
        // Plain names, as our own clients send them.
        let named = d.rpc_describe(
            &Query::parse(&[json!("echo")], &Map::new()).expect("q"),
            false,
        );
        assert_eq!(names(&named.items), ["echo@0.1.0/a"]);
    }

    #[test]
    fn report_counts_by_namespace_and_cluster() {
        let r = dir().rpc_report(&Query::default());
        assert_eq!(r.total_functions, 4);
        assert_eq!(
            r.namespace_counts[0],
            ReportCount {
                key: "math".into(),
                count: 2
            }
        );
        assert_eq!(
            r.cluster_counts,
            [ReportCount {
                key: "c".into(),
                count: 4
            }]
        );
    }

    #[test]
    fn catalog_query_answers_each_entry_type() {
        let d = dir();
        let types = |t: &str, extra: Value| {
            let mut req = json!({"entry_type": t});
            if let (Value::Object(r), Value::Object(e)) = (&mut req, extra) {
                r.extend(e);
            }
            d.catalog_query(&q(req)).expect("answers").items
        };
        let fs = types("functions", json!({"function_id": "id.text.upper"}));
        assert_eq!(fs.len(), 1);
        assert_eq!(fs[0]["rpc_summary"]["identity"]["name"], "text.upper");
        let nodes = types("node", json!({}));
        assert_eq!(
            nodes
                .iter()
                .map(|n| n["node_id"].clone())
                .collect::<Vec<_>>(),
            [json!("a"), json!("b")]
        );
        assert_eq!(types("nodes", json!({"resources": ["gpu"]})).len(), 1);
        let queues = types("queues", json!({}));
        assert_eq!(queues.len(), 2);
        assert_eq!(queues[0]["queue_name"], "jobs");
        assert_eq!(
            types("queues", json!({"queue_name": "mail.out"}))[0]["node_id"],
            "b"
        );
        assert_eq!(types("queues", json!({"namespace": "mail"})).len(), 1);
        let topics = types("topics", json!({"topic": "orders.created"}));
        assert_eq!(topics[0]["patterns"], json!(["orders.#"]));
        assert!(types("topics", json!({"topic": "users.x"})).is_empty());
        assert!(types("caches", json!({})).is_empty());
        let bad = d
            .catalog_query(&Query::default())
            .expect_err("needs a type");
        assert!(bad.contains("entry_type"));
        assert!(Query::parse(&[json!({"entry_type": "bananas"})], &Map::new()).is_err());
    }

    #[test]
    fn peers_maps_and_summaries() {
        let d = dir();
        let peers = d.list_peers(&Query::default());
        assert_eq!(peers.len(), 1, "every node but this one");
        assert_eq!(peers[0].node_id, "b");
        assert!(d.list_peers(&q(json!({"cluster_id": "nope"}))).is_empty());
        assert!(d.list_peers(&q(json!({"scope": "local"}))).is_empty());
        assert_eq!(d.list_peers(&q(json!({"scope": "cluster"}))).len(), 1);
        let map = d.cluster_map_v2(&q(json!({"limit": 1})));
        assert_eq!(map.nodes.len(), 1);
        assert_eq!(map.next_page_token.as_deref(), Some("1:1"));
        assert_eq!(map.nodes[0].transport_endpoints[0].protocol, "ws");
        let s = d.summary_query(&q(json!({"include_ingress": true, "ingress_limit": 1})));
        let ids: Vec<&str> = s.items.iter().map(|i| i.service_id.as_str()).collect();
        assert_eq!(ids, ["echo", "math.add", "text.upper"]);
        assert_eq!(s.items[1].endpoint_count, 2);
        assert_eq!(
            s.items[0].namespace, "echo",
            "a name without a dot is its own namespace"
        );
        assert_eq!(s.ingress.expect("asked for")["c"].len(), 1);
        assert_eq!(
            d.summary_query(&q(json!({"service_id": "math.add"})))
                .items
                .len(),
            1
        );
    }

    #[test]
    fn a_delta_names_what_was_added_and_removed() {
        let before = dir();
        assert!(delta(&before, &before).is_none(), "nothing changed");
        let mut after = before.clone();
        after.generated_at = 9.0;
        after.functions.retain(|f| f.name != "text.upper");
        after.functions.push(f("math.mul", "1.0.0", "b", &[]));
        after.nodes.retain(|n| n.node_id != "b");
        after.resources.get_mut("queues").expect("queues")[0]
            .names
            .push("new".into());
        let d = delta(&before, &after).expect("changed");
        assert_eq!(d["counts"]["functions_added"], 1);
        assert_eq!(d["counts"]["functions_removed"], 1);
        assert_eq!(d["counts"]["nodes_removed"], 1);
        assert_eq!(d["counts"]["queues_added"], 1);
        assert_eq!(d["delta"]["functions"][0]["identity"]["name"], "math.mul");
        assert_eq!(
            d["delta"]["function_removals"][0]["identity"]["name"],
            "text.upper"
        );
        assert_eq!(d["delta"]["queues"][0]["queue_name"], "new");
        assert_eq!(d["namespaces"], json!(["math", "text"]));
        assert_eq!(d["source_node"], "a");
    }

    #[test]
    fn bad_requests_say_what_is_wrong() {
        let bad = |v: Value| Query::parse(&[v], &Map::new()).expect_err("refused");
        assert!(bad(json!({"scope": "galaxy"})).contains("scope"));
        assert!(bad(json!({"limit": "ten"})).contains("limit"));
        assert!(bad(json!({"version_constraint": ">=x"})).contains("version"));
        assert!(Query::parse(&[json!(3)], &Map::new()).is_err());
        // A garbage page token starts at the beginning, as the original does.
        let page = dir().rpc_list(&q(json!({"page_token": "zz"})));
        assert_eq!(page.items.len(), 4);
    }
}
