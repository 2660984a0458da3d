//! Runs calls on this node: built-ins first, then the best matching plugin version.

use std::sync::{Arc, Weak};

use semver::Version;
use serde_json::Value;

use super::builtins::Builtin;
use super::execute::{BoxFuture, Call, CallFailure, Dispatcher};
use super::route::{self, Candidate};
use super::version::VersionConstraint;
use crate::node::NodeInfo;
use crate::plugin::{FunctionEntry, Registry};
use crate::protocol::{RpcCommand, codes};
use crate::runtime::{
    CallContext, InvokeError, NestedCall, NestedCalls, NestedError, NestedFuture, Runtime,
};

/// The node's dispatcher.
pub struct LocalDispatcher {
    node: Arc<NodeInfo>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    builtin_version: Version,
    /// Itself, handed to plugins as the target of their `call` import.
    this: Weak<LocalDispatcher>,
}

/// A candidate as this node sees it: node resources count for every function.
struct Local<'a> {
    node: &'a NodeInfo,
    function_id: &'a str,
    version: &'a Version,
    resources: &'a [String],
    /// The plugin version behind it; `None` for a built-in.
    entry: Option<&'a FunctionEntry>,
}

impl Candidate for Local<'_> {
    fn function_id(&self) -> &str {
        self.function_id
    }
    fn version(&self) -> &Version {
        self.version
    }
    fn has_resource(&self, tag: &str) -> bool {
        self.resources
            .iter()
            .chain(&self.node.resources)
            .any(|r| r == tag)
    }
}

enum Target {
    Builtin(Builtin),
    Plugin(FunctionEntry),
}

impl LocalDispatcher {
    /// A dispatcher over this node's built-ins and plugins.
    pub fn new(node: Arc<NodeInfo>, registry: Arc<Registry>, runtime: Arc<Runtime>) -> Arc<Self> {
        let builtin_version =
            Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0));
        Arc::new_cyclic(|this| LocalDispatcher {
            node,
            registry,
            runtime,
            builtin_version,
            this: this.clone(),
        })
    }

    /// Runs `call` on the plugin version `entry`, in a context that lets it call back in.
    fn run_plugin(
        &self,
        entry: FunctionEntry,
        call: Call,
    ) -> impl Future<Output = Result<Value, InvokeError>> + Send + 'static {
        let runtime = self.runtime.clone();
        let ctx = self.context(&call);
        async move {
            let c = call.command;
            runtime
                .invoke(&entry.plugin, entry.function(), &c.args, &c.kwargs, ctx)
                .await
        }
    }

    /// The context a plugin call runs in: plugins may call back into this dispatcher.
    fn context(&self, call: &Call) -> CallContext {
        CallContext {
            request_id: call.request_id.clone(),
            depth: call.depth,
            nested: self.this.upgrade().map(|d| d as Arc<dyn NestedCalls>),
        }
    }

    /// The built-in `cmd` names, if it also satisfies the command's constraints.
    fn builtin(&self, cmd: &RpcCommand, vc: Option<&VersionConstraint>) -> Option<Builtin> {
        let b = Builtin::lookup(&cmd.fun)?;
        let cand = Local {
            node: &self.node,
            function_id: &cmd.fun,
            version: &self.builtin_version,
            resources: &[],
            entry: None,
        };
        route::matches(&cand, cmd, vc, &self.node.cluster_id).then_some(b)
    }

    fn resolve(&self, call: &Call) -> Result<Target, CallFailure> {
        let cmd = &call.command;
        let vc = call.constraint.as_ref();
        if let Some(b) = self.builtin(cmd, vc) {
            return Ok(Target::Builtin(b));
        }
        // Route against a borrowed snapshot: no copy of the version list per call.
        let table = self.registry.snapshot();
        let versions = table
            .get(cmd.fun.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let candidates = versions.iter().map(|e| Local {
            node: &self.node,
            function_id: &e.function().function_id,
            version: e.version(),
            resources: &e.function().resources,
            entry: Some(e),
        });
        match route::best(candidates, cmd, vc, &self.node.cluster_id).and_then(|c| c.entry) {
            Some(entry) => Ok(Target::Plugin(entry.clone())),
            None => Err(CallFailure::new(
                codes::COMMAND_NOT_FOUND,
                not_found(call, versions.len()),
            )),
        }
    }
}

fn not_found(call: &Call, versions: usize) -> String {
    let c = &call.command;
    let mut text = format!("Command not found: {}", c.fun);
    if versions > 0 {
        text.push_str(&format!(" ({versions} version(s) exist, none matches"));
        if let Some(id) = &c.function_id {
            text.push_str(&format!(" function_id '{id}'"));
        }
        if let Some(vc) = &c.version_constraint {
            text.push_str(&format!(" version '{vc}'"));
        }
        if !c.locs.is_empty() {
            text.push_str(&format!(" locs {:?}", c.locs));
        }
        if let Some(t) = &c.target_cluster {
            text.push_str(&format!(" cluster '{t}'"));
        }
        text.push(')');
    }
    text
}

impl From<InvokeError> for CallFailure {
    fn from(e: InvokeError) -> Self {
        let code = match e {
            InvokeError::Timeout(_)
            | InvokeError::MemoryLimit(_)
            | InvokeError::StackOverflow
            | InvokeError::OutOfFuel(_) => codes::RESOURCE_LIMIT,
            InvokeError::Overloaded(_) => codes::OVERLOADED,
            InvokeError::BadArguments(_) | InvokeError::Trapped(_) | InvokeError::Returned(_) => {
                codes::EXECUTION_FAILED
            }
        };
        CallFailure::new(code, e.to_string())
    }
}

impl Dispatcher for LocalDispatcher {
    fn immediate(
        &self,
        cmd: &RpcCommand,
        constraint: Option<&VersionConstraint>,
    ) -> Option<Result<Value, CallFailure>> {
        let b = self.builtin(cmd, constraint)?;
        Some(b.run(cmd, &self.node, &self.registry))
    }

    fn check(&self, call: &Call) -> Result<(), CallFailure> {
        self.resolve(call).map(|_| ())
    }

    fn dispatch(&self, call: Call) -> BoxFuture<Result<Value, CallFailure>> {
        let target = self.resolve(&call);
        match target {
            Err(f) => Box::pin(async move { Err(f) }),
            Ok(Target::Builtin(b)) => {
                let out = b.run(&call.command, &self.node, &self.registry);
                Box::pin(async move { out })
            }
            Ok(Target::Plugin(entry)) => {
                let run = self.run_plugin(entry, call);
                Box::pin(async move { run.await.map_err(CallFailure::from) })
            }
        }
    }
}

impl NestedCalls for LocalDispatcher {
    fn call(&self, nested: NestedCall) -> NestedFuture {
        let constraint = match nested.version.as_deref().map(VersionConstraint::parse) {
            None => None,
            Some(Ok(vc)) => Some(vc),
            Some(Err(e)) => {
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
        };
        match self.resolve(&call) {
            Err(f) => Box::pin(async move { Err(NestedError::NotFound(f.cause)) }),
            Ok(Target::Builtin(b)) => {
                let out = b
                    .run(&call.command, &self.node, &self.registry)
                    .map_err(|f| NestedError::Failed(f.cause));
                Box::pin(async move { out })
            }
            Ok(Target::Plugin(entry)) => {
                let fun = call.command.fun.clone();
                let run = self.run_plugin(entry, call);
                Box::pin(async move {
                    run.await.map_err(|e| match e {
                        InvokeError::BadArguments(m) => NestedError::BadArguments(m),
                        InvokeError::Overloaded(_) => NestedError::Other(e.to_string()),
                        other => NestedError::Failed(format!("'{fun}' {other}")),
                    })
                })
            }
        }
    }
}
