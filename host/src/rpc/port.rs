//! The RPC call port: what a call is ([`Call`]), how it fails ([`CallError`]) and what runs it
//! ([`Dispatcher`]). Vocabulary shared by the executor, the dispatcher, the built-ins of every
//! service and the queue push consumers, so none of them imports another to name a call.
//!
//! [`CallError`] is the one place where a failure becomes a wire code (protocol.md §3): code
//! elsewhere matches on variants, never on integers.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;

use super::version::VersionConstraint;
use crate::auth::{Denied, Principal};
use crate::protocol::{RpcCommand, codes};

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One command, arguments already substituted, ready to run somewhere.
#[derive(Debug, Clone)]
pub struct Call {
    /// The command with substituted `args` and `kwargs`.
    pub command: RpcCommand,
    /// Its parsed version constraint.
    pub constraint: Option<VersionConstraint>,
    /// The request's `u`, for logs.
    pub request_id: Arc<str>,
    /// 0 for a command of a client request; n for a call made by a plugin at depth n − 1.
    pub depth: u32,
    /// When the request it belongs to must be answered (a forwarded call carries what is left).
    pub deadline: Option<Instant>,
    /// Who it runs for: the client's identity, carried into the nested calls its plugins make
    /// and the peers it is forwarded to; [`Principal::system`] for the node's own work.
    pub principal: Principal,
}

/// Why one call failed. Each variant carries the cause shown in the reply's details (the
/// executor prefixes the command).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nothing serves the command (name, `function_id`, version, `locs`, cluster): 1001.
    #[error("{0}")]
    NotFound(String),
    /// The call ran and failed, or its arguments were wrong: 1003.
    #[error("{0}")]
    Failed(String),
    /// The deadline passed: 1004.
    #[error("{0}")]
    Deadline(String),
    /// The call could not be read (a forwarded frame): 1005.
    #[error("{0}")]
    Malformed(String),
    /// Not run: the target is stopping or has no free instance; another node may take it: 1007.
    #[error("{0}")]
    Overloaded(String),
    /// A plugin hit a resource limit (time, memory, stack, fuel): 1008.
    #[error("{0}")]
    ResourceLimit(String),
    /// The node running it was lost after it was sent; it may or may not have run: 1009.
    #[error("{0}")]
    NodeLost(String),
    /// Credentials missing or wrong: 1006.
    #[error("{0}")]
    Unauthorized(String),
}

impl CallError {
    /// The wire code of this failure.
    pub fn code(&self) -> i64 {
        match self {
            CallError::NotFound(_) => codes::COMMAND_NOT_FOUND,
            CallError::Failed(_) => codes::EXECUTION_FAILED,
            CallError::Deadline(_) => codes::DEADLINE_EXCEEDED,
            CallError::Malformed(_) => codes::MALFORMED_REQUEST,
            CallError::Overloaded(_) => codes::OVERLOADED,
            CallError::ResourceLimit(_) => codes::RESOURCE_LIMIT,
            CallError::NodeLost(_) => codes::NODE_LOST,
            CallError::Unauthorized(_) => codes::UNAUTHORIZED,
        }
    }

    /// The failure a wire code stands for (a peer's reply); an unknown code counts as a failed
    /// call, so nothing a peer sends can make this node retry.
    pub fn from_code(code: i64, cause: impl Into<String>) -> CallError {
        let cause = cause.into();
        match code {
            codes::COMMAND_NOT_FOUND => CallError::NotFound(cause),
            codes::DEADLINE_EXCEEDED => CallError::Deadline(cause),
            codes::MALFORMED_REQUEST => CallError::Malformed(cause),
            codes::OVERLOADED => CallError::Overloaded(cause),
            codes::RESOURCE_LIMIT => CallError::ResourceLimit(cause),
            codes::NODE_LOST => CallError::NodeLost(cause),
            codes::UNAUTHORIZED => CallError::Unauthorized(cause),
            _ => CallError::Failed(cause),
        }
    }

    /// What went wrong.
    pub fn cause(&self) -> &str {
        match self {
            CallError::NotFound(c)
            | CallError::Failed(c)
            | CallError::Deadline(c)
            | CallError::Malformed(c)
            | CallError::Overloaded(c)
            | CallError::ResourceLimit(c)
            | CallError::NodeLost(c)
            | CallError::Unauthorized(c) => c,
        }
    }

    /// The same failure with a new cause (to add where it happened).
    pub fn map_cause(self, f: impl FnOnce(String) -> String) -> CallError {
        let code = self.code();
        CallError::from_code(code, f(self.into_cause()))
    }

    /// The cause, by value.
    pub fn into_cause(self) -> String {
        self.cause().to_owned()
    }

    /// Whether the call was refused without running, so another node may be offered it.
    pub fn not_run(&self) -> bool {
        matches!(self, CallError::Overloaded(_))
    }
}

impl From<Denied> for CallError {
    fn from(d: Denied) -> Self {
        CallError::Unauthorized(d.to_string())
    }
}

/// Where calls run: local runtime, built-ins, peers.
pub trait Dispatcher: Send + Sync + 'static {
    /// Fails fast when nothing can serve `call` (so a typo in the last level fails before the
    /// first level runs).
    fn check(&self, call: &Call) -> Result<(), CallError>;
    /// Runs the call.
    fn dispatch(&self, call: Call) -> BoxFuture<Result<Value, CallError>>;
    /// Answers at once when the target needs no waiting (a built-in); `None` otherwise.
    /// `request_id` names the request in a failure's log line; `principal` is who asks.
    fn immediate(
        &self,
        _cmd: &RpcCommand,
        _constraint: Option<&VersionConstraint>,
        _request_id: &str,
        _principal: &Principal,
    ) -> Option<Result<Value, CallError>> {
        None
    }
}

/// A dispatcher made after the services that call through it (a service that calls other
/// built-ins or other nodes registers before the dispatcher exists): set once at start-up,
/// held weakly so the dispatcher's own built-ins do not keep it alive.
#[derive(Default)]
pub struct LateDispatcher(std::sync::OnceLock<std::sync::Weak<dyn Dispatcher>>);

impl LateDispatcher {
    /// A handle not set yet.
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// Sets the dispatcher (later calls are ignored).
    pub fn set(&self, d: std::sync::Weak<dyn Dispatcher>) {
        let _ = self.0.set(d);
    }

    /// The dispatcher, while it lives.
    pub fn get(&self) -> Option<Arc<dyn Dispatcher>> {
        self.0.get().and_then(std::sync::Weak::upgrade)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_round_trips_through_its_wire_code() {
        let all = [
            CallError::NotFound("a".into()),
            CallError::Failed("b".into()),
            CallError::Deadline("c".into()),
            CallError::Malformed("d".into()),
            CallError::Overloaded("e".into()),
            CallError::ResourceLimit("f".into()),
            CallError::NodeLost("g".into()),
            CallError::Unauthorized("h".into()),
        ];
        for e in all {
            assert_eq!(CallError::from_code(e.code(), e.cause()), e);
        }
        assert_eq!(
            CallError::from_code(42, "odd"),
            CallError::Failed("odd".into())
        );
    }

    #[test]
    fn only_a_refusal_may_be_retried_elsewhere() {
        assert!(CallError::Overloaded("busy".into()).not_run());
        assert!(!CallError::NodeLost("gone".into()).not_run());
        assert!(!CallError::Failed("x".into()).not_run());
        let e = CallError::Failed("boom".into()).map_cause(|c| format!("on n1: {c}"));
        assert_eq!(e, CallError::Failed("on n1: boom".into()));
    }
}
