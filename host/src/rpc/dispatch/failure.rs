//! The node's log line for a failed call (docs/observability.md, "Logs"): one per call that
//! fails here (a command this node ran, or could not place), with the request id, the command,
//! the function and version that ran, this node, the error's code and kind, and how long it took.
//! A call forwarded to another node is logged there, where it ran.

use std::time::Duration;

use crate::rpc::port::CallError;

/// The name of an error's kind, as logged.
pub fn kind(e: &CallError) -> &'static str {
    match e {
        CallError::NotFound(_) => "not_found",
        CallError::Failed(_) => "failed",
        CallError::Deadline(_) => "deadline",
        CallError::Malformed(_) => "malformed",
        CallError::Overloaded(_) => "overloaded",
        CallError::ResourceLimit(_) => "resource_limit",
        CallError::NodeLost(_) => "node_lost",
        CallError::Unauthorized(_) => "unauthorized",
    }
}

/// Logs the failure `e` of command `command` of request `request_id` after `took`;
/// `function` is `name@version` of what ran (or the name asked for, when nothing did).
pub fn log(
    node: &str,
    request_id: &str,
    command: &str,
    function: &str,
    e: &CallError,
    took: Duration,
) {
    tracing::warn!(
        request_id,
        command,
        function,
        node,
        code = e.code(),
        kind = kind(e),
        duration_ms = took.as_secs_f64() * 1000.0,
        error = %e,
        "call failed"
    );
}
