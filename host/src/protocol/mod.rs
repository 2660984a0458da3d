//! Wire types for every message of `docs/protocol.md`, shared by the node and the Rust client.
//!
//! Field names and shapes follow MPREG's Python client exactly: unknown fields are ignored, `null`
//! is accepted wherever that client may send it, and replies never break the shape rules that
//! client enforces (a reply it rejects would leave the caller waiting forever).

pub mod admin;
pub mod catalog;
pub mod codes;
pub mod discovery;
pub mod frame;
pub mod numbers;
pub mod pubsub;

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

/// `null` in the input becomes the type's default (the Python client sends `null` for empty
/// `locs`/`kwargs` in some paths).
pub(crate) fn null_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// How a function its plugin declares pure is memoized (the optional `caching` export of
/// `wit/plugin.wit`): a call with no `cache` extension of its own is memoized with these.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct CacheRule {
    /// How long a result is kept (the `mpreg.memo` namespace's default when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<f64>,
    /// Dependency tags that drop the results when invalidated.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dependencies: Vec<String>,
}

/// One named call inside an RPC request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcCommand {
    /// Result key, and the label other commands reference.
    pub name: String,
    /// Function to call.
    pub fun: String,
    /// Positional arguments; strings naming other commands are dependencies.
    #[serde(default, deserialize_with = "null_default")]
    pub args: Vec<Value>,
    /// Keyword arguments, matched to parameters by name.
    #[serde(default, deserialize_with = "null_default")]
    pub kwargs: Map<String, Value>,
    /// Resource tags the target must have (set semantics).
    #[serde(default, deserialize_with = "null_default")]
    pub locs: Vec<String>,
    /// Exact function identity to match, if any.
    #[serde(default)]
    pub function_id: Option<String>,
    /// Version constraint in MPREG or semver syntax.
    #[serde(default)]
    pub version_constraint: Option<String>,
    /// Only run in this cluster.
    #[serde(default)]
    pub target_cluster: Option<String>,
    /// Accepted and ignored, as MPREG does.
    #[serde(default)]
    pub routing_topic: Option<String>,
    /// Our extension (original clients never send it): memoize this call's result,
    /// `{"ttl_seconds": …, "dependencies": […]}` or `true`; `false` turns off the memoizing a
    /// function declares (docs/cache.md, "Memoized functions").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<Value>,
}

impl RpcCommand {
    /// A command with no constraints: what `MPREGClientAPI.call` sends.
    pub fn new(name: impl Into<String>, fun: impl Into<String>, args: Vec<Value>) -> Self {
        RpcCommand {
            name: name.into(),
            fun: fun.into(),
            args,
            kwargs: Map::new(),
            locs: Vec::new(),
            function_id: None,
            version_constraint: None,
            target_cluster: None,
            routing_topic: None,
            cache: None,
        }
    }
}

/// An RPC request (`role: "rpc"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcRequest {
    /// Always `"rpc"` on the wire.
    pub role: String,
    /// Request id, echoed in the reply.
    pub u: String,
    /// The commands, in any order.
    pub cmds: Vec<RpcCommand>,
    /// Add `intermediate_results` (one entry per completed level) to the reply.
    #[serde(default, deserialize_with = "null_default")]
    pub return_intermediate_results: bool,
    /// Publish each level's results on this topic (needs pub/sub).
    #[serde(default)]
    pub intermediate_result_callback_topic: Option<String>,
    /// Add `execution_summary` to the reply.
    #[serde(default, deserialize_with = "null_default")]
    pub include_execution_summary: bool,
    /// Accepted; only adds logging.
    #[serde(default, deserialize_with = "null_default")]
    pub debug_mode: bool,
    /// OURS: request deadline in milliseconds (default 30 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    /// OURS: also send each level's results as an `rpc-intermediate` message as it completes.
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_false"
    )]
    pub stream_intermediate_results: bool,
    /// OURS (an extension field): the client's W3C trace context; the request's trace
    /// continues it (docs/observability.md, "Traces").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub traceparent: Option<String>,
    /// OURS: a field path into a dependency's result that does not resolve (`prev.missing`)
    /// fails the command instead of being passed as a literal string (MPREG's behaviour,
    /// the default).
    #[serde(
        default,
        deserialize_with = "null_default",
        skip_serializing_if = "is_false"
    )]
    pub strict_references: bool,
}

/// A random number from the standard library's hasher seed, for ids that only need to differ
/// between processes and connections.
pub fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(crate::clock::unix_nanos());
    h.finish()
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl RpcRequest {
    /// A plain request with default options.
    pub fn new(u: impl Into<String>, cmds: Vec<RpcCommand>) -> Self {
        RpcRequest {
            role: "rpc".to_owned(),
            u: u.into(),
            cmds,
            return_intermediate_results: false,
            intermediate_result_callback_topic: None,
            include_execution_summary: false,
            debug_mode: false,
            timeout_ms: None,
            stream_intermediate_results: false,
            traceparent: None,
            strict_references: false,
        }
    }
}

/// The error object of a failed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcErrorBody {
    /// One of [`codes`].
    pub code: i64,
    /// Short, stable text for the code.
    pub message: String,
    /// What failed and why (a string naming the command and the cause).
    #[serde(default)]
    pub details: Value,
}

impl RpcErrorBody {
    /// An error with the standard message for `code` and the given details.
    pub fn new(code: i64, details: impl Into<String>) -> Self {
        RpcErrorBody {
            code,
            message: codes::message(code).to_owned(),
            details: Value::String(details.into()),
        }
    }
}

/// One completed level, as in MPREG's enhanced replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IntermediateResult {
    /// The request's `u`.
    pub request_id: String,
    /// Which level completed.
    pub level_index: usize,
    /// Results of that level's commands.
    pub level_results: Map<String, Value>,
    /// Results of every level completed so far.
    pub accumulated_results: Map<String, Value>,
    /// Number of levels in the plan.
    pub total_levels: usize,
    /// Levels completed so far, this one included.
    pub completed_levels: usize,
    /// Seconds since the Unix epoch.
    pub timestamp: f64,
    /// Time from the request's start to this level's completion.
    pub execution_time_ms: f64,
}

/// Timing of a whole request, as in MPREG's enhanced replies.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecutionSummary {
    /// The request's `u`.
    pub request_id: String,
    /// Wall time from plan to reply.
    pub total_execution_time_ms: f64,
    /// Number of levels.
    pub total_levels: usize,
    /// For each level, the time from its first command's start to its last command's end.
    pub level_execution_times: Vec<f64>,
    /// Index of the slowest level.
    pub bottleneck_level_index: usize,
    /// Mean of `level_execution_times`.
    pub average_level_time_ms: f64,
    /// Commands that ran while at least one other command of the request was running.
    pub parallel_commands_executed: usize,
    /// Calls forwarded to other clusters (0 until federation exists).
    pub cross_cluster_hops: usize,
}

/// A reply to an RPC request (`role: "rpc-response"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcResponse {
    /// Always `"rpc-response"`.
    #[serde(default = "rpc_response_role")]
    pub role: String,
    /// The request's `u`.
    pub u: String,
    /// The results of the last level, keyed by command name; `null` on error.
    pub r: Option<Map<String, Value>>,
    /// `null` on success.
    pub error: Option<RpcErrorBody>,
    /// Present when asked for; always an array.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_results: Option<Vec<IntermediateResult>>,
    /// Present when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_summary: Option<ExecutionSummary>,
}

fn rpc_response_role() -> String {
    "rpc-response".to_owned()
}

impl RpcResponse {
    /// A successful reply.
    pub fn ok(u: String, r: Map<String, Value>) -> Self {
        RpcResponse {
            role: rpc_response_role(),
            u,
            r: Some(r),
            error: None,
            intermediate_results: None,
            execution_summary: None,
        }
    }

    /// A failed reply.
    pub fn err(u: String, error: RpcErrorBody) -> Self {
        RpcResponse {
            role: rpc_response_role(),
            u,
            r: None,
            error: Some(error),
            intermediate_results: None,
            execution_summary: None,
        }
    }
}

/// OURS: one level's results streamed while the request is still running
/// (`role: "rpc-intermediate"`), sent when the request set `stream_intermediate_results`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcIntermediate {
    /// Always `"rpc-intermediate"`.
    pub role: String,
    /// The request's `u`.
    pub u: String,
    /// The completed level.
    pub result: IntermediateResult,
}

/// The fields every incoming frame is first read into: enough to dispatch by role and to find
/// `u` for an error reply. Unknown fields are ignored.
#[derive(Debug, Deserialize)]
pub struct FrameHead {
    /// Message kind.
    #[serde(default)]
    pub role: Option<String>,
    /// Request id, when it is a string.
    #[serde(default)]
    pub u: Option<Value>,
}
