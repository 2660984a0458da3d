//! The nested-call port: how a plugin's `call` and `publish` imports reach the node. The RPC
//! layer implements [`NestedCalls`], so the runtime never depends on routing; the runtime only
//! counts depth.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::auth::Principal;

/// Boxed future of a nested call.
pub type NestedFuture = Pin<Box<dyn Future<Output = Result<Value, NestedError>> + Send>>;

/// The node as a plugin's imports reach it: `call` (and `queue.send`, which is a call of the
/// `queue.send` built-in) and `publish`. Implemented by the RPC layer, so a nested call is
/// routed like any other; the runtime only enforces the depth limit.
pub trait NestedCalls: Send + Sync {
    /// Runs `call` and returns its result.
    fn call(&self, call: NestedCall) -> NestedFuture;

    /// Publishes `payload` (JSON text) on `topic` for plugin `plugin` during request
    /// `request_id`, if `principal` (the caller the plugin runs for) may publish there;
    /// returns the message id.
    fn publish(
        &self,
        topic: &str,
        payload: &str,
        plugin: &str,
        request_id: &str,
        principal: &Principal,
    ) -> Result<String, String>;
}

/// One `call` from inside a plugin.
#[derive(Debug, Clone)]
pub struct NestedCall {
    /// Function name.
    pub fun: String,
    /// Positional arguments.
    pub args: Vec<Value>,
    /// Keyword arguments.
    pub kwargs: Map<String, Value>,
    /// `function_id` to match.
    pub function_id: Option<String>,
    /// Version constraint.
    pub version: Option<String>,
    /// Resource tags to match.
    pub locs: Vec<String>,
    /// The request the outermost call belongs to.
    pub request_id: Arc<str>,
    /// Nesting depth of the callee (1 for a call made by a top-level call).
    pub depth: u32,
    /// Who the outermost call runs for: a plugin calls with its caller's permissions.
    pub principal: Principal,
}

/// Why a nested call failed; maps onto the WIT `call-error`.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NestedError {
    /// Nothing matches.
    #[error("{0}")]
    NotFound(String),
    /// Arguments do not fit.
    #[error("{0}")]
    BadArguments(String),
    /// The callee failed.
    #[error("{0}")]
    Failed(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// Who a call runs for: the request id (for logs), its nesting depth, and how to make nested
/// calls (absent where plugins may not call out, e.g. while loading).
#[derive(Clone)]
pub struct CallContext {
    /// The request's `u`.
    pub request_id: Arc<str>,
    /// 0 for a call from a client request.
    pub depth: u32,
    /// Where `call` goes.
    pub nested: Option<Arc<dyn NestedCalls>>,
    /// Who the call runs for.
    pub principal: Principal,
}

impl CallContext {
    /// A top-level call that may not call out.
    pub fn isolated(request_id: Arc<str>) -> Self {
        CallContext {
            request_id,
            depth: 0,
            nested: None,
            principal: Principal::system(),
        }
    }
}
