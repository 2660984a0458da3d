//! RPC error codes. 1001–1004 are MPREG's; 1005 and up are ours, each documented once here and
//! in `docs/protocol.md`.

/// No function matches `fun` + `function_id` + `version_constraint` + `locs` (+ `target_cluster`).
pub const COMMAND_NOT_FOUND: i64 = 1001;
/// A command failed (raised, trapped, bad arguments), a dependency cycle, a duplicate name,
/// empty `cmds`, or an unparsable version constraint.
pub const EXECUTION_FAILED: i64 = 1003;
/// Missing or unknown `role`.
pub const UNKNOWN_ROLE: i64 = 1004;
/// The request exceeded its deadline (same code as MPREG uses for timeouts).
pub const DEADLINE_EXCEEDED: i64 = 1004;
/// OURS: the frame is JSON with a readable `u` but not a valid request (missing field, wrong
/// type).
pub const MALFORMED_REQUEST: i64 = 1005;
/// OURS: credentials missing or wrong (reserved for the admin and auth features).
pub const UNAUTHORIZED: i64 = 1006;
/// OURS: the node is shutting down or over its in-flight limit; retry elsewhere or later.
pub const OVERLOADED: i64 = 1007;
/// OURS: a plugin call hit a resource limit (execution time, memory, stack) or its result is
/// larger than a reply may be.
pub const RESOURCE_LIMIT: i64 = 1008;

/// OURS: the node running a command was lost (crashed, link broken) after the call was sent to
/// it; the call may or may not have run, so it is not retried automatically.
pub const NODE_LOST: i64 = 1009;

/// The short, stable `message` for a code.
pub fn message(code: i64) -> &'static str {
    match code {
        COMMAND_NOT_FOUND => "Command not found",
        EXECUTION_FAILED => "Command execution failed",
        // 1004 covers both; the details say which.
        UNKNOWN_ROLE => "Unknown role or deadline exceeded",
        MALFORMED_REQUEST => "Malformed request",
        UNAUTHORIZED => "Unauthorized",
        OVERLOADED => "Overloaded",
        RESOURCE_LIMIT => "Resource limit exceeded",
        NODE_LOST => "Node lost",
        _ => "Error",
    }
}

/// Every code, as the text a metric label carries.
pub const ALL: [&str; 8] = [
    "1001", "1003", "1004", "1005", "1006", "1007", "1008", "1009",
];

/// `code` as a metric label (`"other"` for a code this list does not know).
pub fn label(code: i64) -> &'static str {
    match code {
        COMMAND_NOT_FOUND => "1001",
        EXECUTION_FAILED => "1003",
        UNKNOWN_ROLE => "1004",
        MALFORMED_REQUEST => "1005",
        UNAUTHORIZED => "1006",
        OVERLOADED => "1007",
        RESOURCE_LIMIT => "1008",
        NODE_LOST => "1009",
        _ => "other",
    }
}
