//! The optional access log (`[logs] access`, `--access-log`; docs/observability.md): one
//! `INFO` line per RPC request answered, under the target `mpreg::access`, so it can be routed
//! or filtered apart from the node's own events (`--log-level warn,mpreg::access=info`).

use std::net::SocketAddr;
use std::time::Duration;

use super::metrics::Outcome;

/// Logs a request answered with `outcome` (`code` for an error) after `took` (`None` when it
/// was answered inline, without waiting).
#[allow(clippy::too_many_arguments)]
pub fn log(
    request_id: &str,
    remote: Option<SocketAddr>,
    commands: usize,
    outcome: Outcome,
    code: Option<i64>,
    took: Option<Duration>,
    frame_bytes: u64,
) {
    let outcome = match outcome {
        Outcome::Ok => "ok",
        Outcome::Error => "error",
        Outcome::Refused => "refused",
    };
    let remote = remote.map(|a| a.to_string());
    tracing::info!(
        target: "mpreg::access",
        request_id,
        remote = remote.as_deref().unwrap_or("-"),
        commands,
        outcome,
        code = code.unwrap_or(0),
        duration_ms = took.map_or(0.0, |t| t.as_secs_f64() * 1000.0),
        frame_bytes,
        "request"
    );
}
