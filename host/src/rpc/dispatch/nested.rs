//! The plugin imports that reach the node: `call` (routed like any command; a plugin's
//! `queue.send` is a call of the built-in) and `publish` (onto this node's exchange).

use serde_json::Value;
use tracing::Instrument;

use super::{NodeDispatcher, Target};
use crate::auth::Principal;
use crate::auth::policy::Need;
use crate::clock::unix_now;
use crate::protocol::pubsub::PubsubMessage;
use crate::protocol::{RpcCommand, random_u64};
use crate::rpc::port::{Call, CallError};
use crate::rpc::version::VersionConstraint;
use crate::runtime::{InvokeError, NestedCall, NestedCalls, NestedError, NestedFuture};

impl NestedCalls for NodeDispatcher {
    fn publish(
        &self,
        topic: &str,
        payload: &str,
        plugin: &str,
        request_id: &str,
        principal: &Principal,
    ) -> Result<String, String> {
        principal
            .check(&Need::Publish(topic))
            .map_err(|d| d.to_string())?;
        let _span = tracing::debug_span!(
            target: "mpreg::pubsub",
            "publish",
            request_id,
            topic,
            plugin,
            node = %self.node.node_id,
        )
        .entered();
        let exchange = &self.exchange;
        let payload: Value =
            serde_json::from_str(payload).map_err(|e| format!("payload is not valid JSON: {e}"))?;
        let id = format!("{}-{:016x}", self.node.node_id, random_u64());
        let mut headers = serde_json::Map::new();
        headers.insert("request_id".into(), request_id.into());
        let message = PubsubMessage {
            topic: topic.to_owned(),
            payload,
            timestamp: unix_now(),
            message_id: id.clone(),
            publisher: format!("plugin:{plugin}"),
            headers,
            routing_path: None,
            current_hop: None,
        };
        let raw = serde_json::to_string(&message).map_err(|e| e.to_string())?;
        exchange
            .publish_detached(&raw, &id)
            .map_err(|e| e.to_string())?;
        Ok(id)
    }

    fn call(&self, nested: NestedCall) -> NestedFuture {
        let constraint = match VersionConstraint::parse_optional(nested.version.as_deref()) {
            Ok(vc) => vc,
            Err(e) => {
                let msg = format!("invalid version constraint: {e}");
                return Box::pin(async move { Err(NestedError::BadArguments(msg)) });
            }
        };
        let mut command = RpcCommand::new(nested.fun.clone(), nested.fun, nested.args);
        command.kwargs = nested.kwargs;
        command.locs = nested.locs;
        command.function_id = nested.function_id;
        command.version_constraint = nested.version;
        let call = Call {
            command,
            constraint,
            request_id: nested.request_id,
            depth: nested.depth,
            deadline: None,
            principal: nested.principal,
        };
        let span = tracing::debug_span!(
            target: "mpreg::plugin",
            "nested_call",
            request_id = %call.request_id,
            fun = %call.command.fun,
            depth = call.depth,
            node = %self.node.node_id,
        );
        let run = span.in_scope(|| self.nested(call));
        Box::pin(run.instrument(span))
    }
}

impl NodeDispatcher {
    /// Runs a plugin's `call` (in its span).
    fn nested(&self, call: Call) -> NestedFuture {
        match self.resolve(&call, &[]) {
            Err(CallError::NotFound(cause)) => {
                Box::pin(async move { Err(NestedError::NotFound(cause)) })
            }
            Err(f) => Box::pin(async move { Err(NestedError::Failed(f.into_cause())) }),
            Ok(Target::Plugin(entry)) => {
                let fun = call.command.fun.clone();
                let run = self.run_plugin(entry, call);
                Box::pin(async move {
                    run.await.map_err(|e| match e {
                        InvokeError::BadArguments(m) => NestedError::BadArguments(m),
                        InvokeError::Overloaded(_)
                        | InvokeError::MemoryBusy(_)
                        | InvokeError::Busy(_) => NestedError::Other(e.to_string()),
                        other => NestedError::Failed(format!("'{fun}' {other}")),
                    })
                })
            }
            Ok(target) => {
                let run = self.start(target, call);
                Box::pin(async move {
                    run.await.map_err(|f| match f {
                        CallError::NotFound(cause) => NestedError::NotFound(cause),
                        other => NestedError::Failed(other.into_cause()),
                    })
                })
            }
        }
    }
}
