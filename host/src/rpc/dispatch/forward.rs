//! Calls that cross a peer link: sent from here (re-routed by the rule of
//! [`route::after_miss`] while the peer did not run them) and run here for a peer.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracing::Instrument;

use super::{NodeDispatcher, Target};
use crate::auth::Principal;
use crate::cluster::catalog::RemoteFunction;
use crate::cluster::link::LinkError;
use crate::cluster::wire::{ForwardedCall, ForwardedPrincipal, RemoteFailure};
use crate::protocol::RpcCommand;
use crate::rpc::port::{Call, CallError};
use crate::rpc::route::{self, Miss, Next};
use crate::rpc::version::VersionConstraint;

/// How a link's answer looks to the re-route rule.
fn miss(node_id: &str, e: LinkError) -> Miss {
    match e {
        LinkError::NotSent(why) => Miss::NotRun(why),
        LinkError::Remote(RemoteFailure { code, cause }) => {
            Miss::from(CallError::from_code(code, cause)).prefixed(node_id)
        }
        LinkError::Lost(why) => Miss::Failed(CallError::NodeLost(why)),
        LinkError::Protocol(why) => Miss::Failed(CallError::Failed(why)),
    }
}

impl Miss {
    /// The same miss, its cause saying which node it happened on.
    fn prefixed(self, node_id: &str) -> Miss {
        match self {
            Miss::NotRun(why) => Miss::NotRun(format!("node {node_id}: {why}")),
            Miss::Failed(e) => Miss::Failed(e.map_cause(|c| format!("on node {node_id}: {c}"))),
        }
    }
}

impl NodeDispatcher {
    /// Runs `call` on a peer, re-routing while it was not run; `path` are the nodes it went
    /// through (this one last).
    pub(super) async fn forward(
        self: Arc<Self>,
        first: RemoteFunction,
        call: Call,
        path: Vec<String>,
        hops_left: u8,
    ) -> Result<Value, CallError> {
        let Some(cluster) = self.cluster.clone() else {
            return Err(CallError::NotFound("not in a cluster".into()));
        };
        let command =
            serde_json::to_string(&call.command).map_err(|e| CallError::Failed(e.to_string()))?;
        let (name, policy) = call.principal.to_parts();
        let principal = ForwardedPrincipal { name, policy };
        let mut target = first;
        let mut tried: Vec<String> = path.clone();
        let mut not_run = Vec::new();
        loop {
            let node_id = target.node.node_id.clone();
            let timeout_ms = call.deadline.map_or(30_000, |d| {
                d.saturating_duration_since(Instant::now()).as_millis() as u64
            });
            if timeout_ms == 0 {
                return Err(CallError::Deadline(
                    "deadline passed before the call could be forwarded".into(),
                ));
            }
            let span = tracing::debug_span!(
                target: "mpreg::forward",
                "forward",
                request_id = %call.request_id,
                command = %call.command.name,
                peer = %node_id,
                node = %self.node.node_id,
            );
            let fwd = ForwardedCall {
                request_id: call.request_id.to_string(),
                command: command.clone(),
                hops_left,
                path: path.clone(),
                timeout_ms,
                depth: call.depth,
                traceparent: crate::trace::traceparent(&span),
                principal: principal.clone(),
            };
            let outcome = match cluster.link(&node_id) {
                Some(link) => {
                    self.metrics.forwarded.inc();
                    let sent = Instant::now();
                    let answer = link.call(fwd).instrument(span).await;
                    if self.metrics.calls.enabled() {
                        let peer = vec![("peer", node_id.clone())];
                        self.metrics
                            .round_trip
                            .get_or_create(&peer)
                            .observe(sent.elapsed());
                    }
                    answer
                }
                None => Err(LinkError::NotSent(format!(
                    "node {node_id} left the cluster"
                ))),
            };
            let text = match outcome {
                Ok(text) => text,
                Err(e) => {
                    match route::after_miss(&call.command.fun, miss(&node_id, e), &mut not_run) {
                        Next::Fail(e) => return Err(e),
                        Next::Reroute => {
                            tracing::debug!(node = %node_id, why = ?not_run.last(), "call not run there; re-routing");
                            tried.push(node_id);
                            self.metrics.reroutes.inc();
                            match self.resolve(&call, &tried) {
                                Ok(Target::Remote(next)) => {
                                    target = next;
                                    continue;
                                }
                                Ok(other) => return self.run_here(other, call).await,
                                Err(_) => {
                                    return Err(route::unreachable(&call.command.fun, &not_run));
                                }
                            }
                        }
                    }
                }
            };
            return serde_json::from_str(&text).map_err(|e| {
                CallError::Failed(format!("node {node_id} sent an unreadable result: {e}"))
            });
        }
    }

    /// Runs a call a peer forwarded here: locally when this node has it, else onward while the
    /// hop budget lasts, never back through `path`.
    pub async fn run_forwarded(self: Arc<Self>, fwd: ForwardedCall) -> Result<Value, CallError> {
        let command: RpcCommand = serde_json::from_str(&fwd.command)
            .map_err(|e| CallError::Malformed(format!("forwarded command: {e}")))?;
        let constraint = VersionConstraint::parse_optional(command.version_constraint.as_deref())
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let timeout = Duration::from_millis(fwd.timeout_ms);
        let principal = Principal::from_parts(&fwd.principal.name, fwd.principal.policy.as_deref())
            .map_err(|e| CallError::Malformed(e.to_string()))?;
        let call = Call {
            command,
            constraint,
            request_id: fwd.request_id.as_str().into(),
            depth: fwd.depth,
            deadline: Some(Instant::now() + timeout),
            principal,
        };
        let mut path = fwd.path;
        path.push(self.node.node_id.clone());
        self.metrics.received.inc();
        let span = tracing::debug_span!(
            target: "mpreg::forward",
            "run_forwarded",
            request_id = %fwd.request_id,
            command = %call.command.name,
            from = %path.first().map_or("", String::as_str),
            node = %self.node.node_id,
        );
        crate::trace::continue_from(&span, fwd.traceparent.as_deref());
        let run = async {
            let target = self
                .resolve(&call, &path)
                .inspect_err(|e| self.unplaced(&call, e))?;
            match target {
                Target::Remote(next) => {
                    if fwd.hops_left == 0 {
                        return Err(CallError::NotFound(format!(
                            "Command not found: {} here, and the hop budget is spent (path {})",
                            call.command.fun,
                            path.join(" -> ")
                        )));
                    }
                    self.clone()
                        .forward(next, call, path.clone(), fwd.hops_left - 1)
                        .await
                }
                local => self.run_here(local, call).await,
            }
        };
        match tokio::time::timeout(timeout, run).instrument(span).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Deadline(format!(
                "deadline of {} ms exceeded",
                fwd.timeout_ms
            ))),
        }
    }
}
