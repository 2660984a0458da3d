//! The replies of the discovery built-ins MPREG's clients parse (protocol.md §4): `rpc_list`,
//! `rpc_describe`, `rpc_describe_local`, `rpc_report`, `catalog_query`, `catalog_watch`,
//! `summary_query`, `summary_watch`, `cluster_map_v2` and `list_peers`, with the field names of
//! the original's dataclasses (`mpreg/core/rpc_discovery.py`, `cluster_map.py`,
//! `discovery_summary.py`, `fabric/catalog.py`). Typed once here so the node that builds them
//! and the tests that read them cannot drift apart.
//!
//! Fields the original leaves out when empty are left out here too (`skip_serializing_if`);
//! lists it always sends are always sent. Our additions are marked as extensions.

use serde::Serialize;
use serde_json::Value;

use super::discovery::NodeLoad;

/// Every endpoint's visibility scope: a cluster-wide one (MPREG's default, `zone`).
pub const DEFAULT_SCOPE: &str = "zone";
/// `RpcSpec.spec_version` of the specs we build.
pub const SPEC_VERSION: &str = "1";
/// How long a catalog entry stays valid without news, as entries report it (gossip refreshes
/// ours continuously; a dead node leaves at once).
pub const ENTRY_TTL_SECONDS: f64 = 30.0;
/// Topic of `catalog_watch` deltas (the original's `DISCOVERY_DELTA_TOPIC`).
pub const DELTA_TOPIC: &str = "mpreg.discovery.delta";
/// Topic of `summary_watch` summaries (the original's `DISCOVERY_SUMMARY_TOPIC`).
pub const SUMMARY_TOPIC: &str = "mpreg.discovery.summary";

/// `FunctionIdentity`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct FunctionIdentity {
    /// The name clients call.
    pub name: String,
    /// Its identity for `function_id` matching.
    pub function_id: String,
    /// Its version.
    pub version: String,
}

/// `RpcTypeSpec`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TypeSpec {
    /// As written.
    pub display: String,
    /// Generic arguments.
    pub args: Vec<String>,
    /// `option<…>`.
    pub is_optional: bool,
    /// The generic's name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

/// `RpcSpecSummary`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpecSummary {
    /// Which function.
    pub identity: FunctionIdentity,
    /// Its namespace: the name up to its last `.` (`""` when it has none).
    pub namespace: String,
    /// One line about it (the manifest's description).
    pub summary: String,
    /// Parameters.
    pub parameter_count: usize,
    /// Parameters a caller must pass.
    pub required_parameter_count: usize,
    /// What it returns.
    pub return_type: TypeSpec,
    /// Always [`SPEC_VERSION`].
    pub spec_version: String,
    /// sha256 of the spec.
    pub spec_digest: String,
}

/// `RpcDefaultSpec`: our functions have no default values.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DefaultSpec {
    /// Always false.
    pub has_default: bool,
    /// Always `none`.
    pub encoding: String,
}

/// `RpcParamSpec`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ParamSpec {
    /// Its name.
    pub name: String,
    /// `positional_or_keyword`, or `var_positional` for one that takes the rest.
    pub kind: String,
    /// Its type.
    pub type_spec: TypeSpec,
    /// Whether a caller must pass it.
    pub required: bool,
    /// No defaults.
    pub default: DefaultSpec,
    /// Empty: WIT carries no per-parameter docs.
    pub doc: String,
}

/// `RpcDocSpec`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DocSpec {
    /// One line.
    pub summary: String,
    /// More.
    pub description: String,
    /// Per-parameter docs (none).
    pub param_docs: Vec<Value>,
    /// About the result.
    pub return_doc: String,
}

/// `RpcReturnSpec`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReturnSpec {
    /// Its type.
    pub type_spec: TypeSpec,
    /// About it.
    pub doc: String,
}

/// `RpcSpec`, plus the WIT signature and where the function comes from (extensions).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spec {
    /// Which function.
    pub identity: FunctionIdentity,
    /// Its namespace.
    pub namespace: String,
    /// Its docs.
    pub doc: DocSpec,
    /// Its parameters.
    pub parameters: Vec<ParamSpec>,
    /// Its result.
    pub return_spec: ReturnSpec,
    /// Resource tags it runs with.
    pub resources: Vec<String>,
    /// Tags (none).
    pub tags: Vec<String>,
    /// [`DEFAULT_SCOPE`].
    pub scope: String,
    /// Capabilities (none).
    pub capabilities: Vec<String>,
    /// Examples (none).
    pub examples: Vec<Value>,
    /// [`SPEC_VERSION`].
    pub spec_version: String,
    /// sha256 of the spec without this field.
    pub spec_digest: String,
    /// Extension: the WIT signature (`func(a: s32, b: s32) -> s32`).
    pub signature: String,
    /// Extension: `builtin` or `plugin`.
    pub kind: String,
    /// Extension: the plugin that provides it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

/// `RpcListItem` and `RpcDescribeItem` (which adds `spec`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FunctionItem {
    /// Which function.
    pub identity: FunctionIdentity,
    /// Its namespace.
    pub namespace: String,
    /// The node serving it.
    pub node_id: String,
    /// That node's cluster.
    pub cluster_id: String,
    /// Resource tags (the function's and its node's).
    pub resources: Vec<String>,
    /// Tags (none).
    pub tags: Vec<String>,
    /// [`DEFAULT_SCOPE`].
    pub scope: String,
    /// Its summary.
    pub summary: SpecSummary,
    /// The full spec (`rpc_describe` with `detail_level` `full`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spec: Option<Spec>,
    /// sha256 of the spec.
    pub spec_digest: String,
    /// Extension: `builtin` or `plugin`.
    pub kind: String,
    /// Extension: the WIT signature.
    pub signature: String,
}

/// `RpcListResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ListResponse {
    /// Unix seconds.
    pub generated_at: f64,
    /// This page.
    pub items: Vec<FunctionItem>,
    /// The next page's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `RpcDescribeError`: a node that could not be asked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DescribeError {
    /// The node.
    pub node_id: String,
    /// Its cluster.
    pub cluster_id: String,
    /// What went wrong.
    pub error: String,
}

/// `RpcDescribeResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DescribeResponse {
    /// Unix seconds.
    pub generated_at: f64,
    /// This page.
    pub items: Vec<FunctionItem>,
    /// Nodes that could not answer (always sent).
    pub errors: Vec<DescribeError>,
    /// The next page's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `RpcReportCount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReportCount {
    /// What is counted.
    pub key: String,
    /// How many.
    pub count: usize,
}

/// `RpcReportResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReportResponse {
    /// Unix seconds.
    pub generated_at: f64,
    /// Function endpoints counted.
    pub total_functions: usize,
    /// By namespace, most first.
    pub namespace_counts: Vec<ReportCount>,
    /// By cluster, most first.
    pub cluster_counts: Vec<ReportCount>,
    /// By tag, most first.
    pub tag_counts: Vec<ReportCount>,
}

/// `CatalogQueryResponse`: items are the entry type's own shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CatalogResponse {
    /// `functions`, `nodes`, `queues`, `topics` or `caches`.
    pub entry_type: String,
    /// Unix seconds.
    pub generated_at: f64,
    /// This page.
    pub items: Vec<Value>,
    /// The next page's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `CatalogWatchResponse` and `SummaryWatchResponse`: where to subscribe.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WatchResponse {
    /// The topic changes are published on.
    pub topic: String,
    /// Unix seconds.
    pub generated_at: f64,
    /// The scope asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The namespace asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The cluster.
    pub cluster_id: String,
}

/// `ServiceSummary`: one function name across the cluster.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceSummary {
    /// The name up to its last `.` (the whole name when it has none).
    pub namespace: String,
    /// The function name.
    pub service_id: String,
    /// Regions of the nodes serving it.
    pub regions: Vec<String>,
    /// Endpoints (node × version) serving it.
    pub endpoint_count: usize,
    /// `healthy`: only live nodes are counted.
    pub health_band: String,
    /// Not measured: `[0, 0]`.
    pub latency_band_ms: [u64; 2],
    /// [`ENTRY_TTL_SECONDS`].
    pub ttl_seconds: f64,
    /// Unix seconds.
    pub generated_at: f64,
    /// The scope asked for.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
    /// The cluster it is served in.
    pub source_cluster: String,
}

/// `SummaryQueryResponse`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SummaryResponse {
    /// Unix seconds.
    pub generated_at: f64,
    /// This page.
    pub items: Vec<ServiceSummary>,
    /// Cluster id → URLs to reach it, when asked for (`include_ingress`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ingress: Option<std::collections::BTreeMap<String, Vec<String>>>,
    /// The next page's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `ClusterNodeSnapshot`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NodeSnapshot {
    /// Node id.
    pub node_id: String,
    /// Cluster id.
    pub cluster_id: String,
    /// Resource tags.
    pub resources: Vec<String>,
    /// Capabilities (none).
    pub capabilities: Vec<String>,
    /// Region label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// [`DEFAULT_SCOPE`].
    pub scope: String,
    /// Transport endpoints.
    pub transport_endpoints: Vec<TransportEndpoint>,
    /// URLs clients reach it by.
    pub advertised_urls: Vec<String>,
    /// When it started (Unix seconds).
    pub advertised_at: f64,
    /// Its load.
    pub load: NodeLoad,
}

/// `TransportEndpoint`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransportEndpoint {
    /// `client`.
    pub connection_type: String,
    /// `ws` or `wss`.
    pub protocol: String,
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// `protocol://host:port`.
    pub endpoint: String,
}

/// `ClusterMapResponse` (`cluster_map_v2`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClusterMapResponse {
    /// The cluster.
    pub cluster_id: String,
    /// Unix seconds.
    pub generated_at: f64,
    /// This page.
    pub nodes: Vec<NodeSnapshot>,
    /// The next page's token.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_page_token: Option<String>,
}

/// `PeerSnapshot` (`list_peers`), plus `node_id` (an extension; `url` is MPREG's node key).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PeerSnapshot {
    /// The URL clients and peers use.
    pub url: String,
    /// Extension: the node id.
    pub node_id: String,
    /// Its cluster.
    pub cluster_id: String,
    /// Function names it serves.
    pub funs: Vec<String>,
    /// Resource tags.
    pub locs: Vec<String>,
    /// When this was true (Unix seconds).
    pub last_seen: f64,
    /// `healthy`.
    pub status: String,
    /// When the status was taken.
    pub status_timestamp: f64,
    /// [`DEFAULT_SCOPE`].
    pub scope: String,
    /// Region label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// URLs it advertises.
    pub advertised_urls: Vec<String>,
    /// Transport endpoints.
    pub transport_endpoints: Vec<TransportEndpoint>,
    /// Its load.
    pub load: NodeLoad,
}
