//! Runs calls where they belong: built-ins here; otherwise the highest matching version
//! anywhere in the cluster, on this node or forwarded to a peer over its link, choosing among the
//! nodes that have it by load. A call that could not be sent to a peer is routed to the next
//! match; one lost after it was sent fails with [`codes::NODE_LOST`].

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

use semver::Version;
use serde_json::Value;

use super::builtins::Builtin;
use super::execute::{BoxFuture, Call, CallError, Dispatcher};
use super::route::{self, Candidate};
use super::version::VersionConstraint;
use crate::cluster::Cluster;
use crate::cluster::catalog::RemoteFunction;
use crate::cluster::link::LinkError;
use crate::cluster::wire::{ForwardedCall, RemoteFailure};
use crate::identity::{Counted, NodeInfo, RunningCalls};
use crate::plugin::{FunctionEntry, Registry};
use crate::protocol::{RpcCommand, codes};
use crate::pubsub::exchange::Exchange;
use crate::queue::api as queue_api;
use crate::queue::manager::QueueManager;
use crate::runtime::{
    CallContext, InvokeError, NestedCall, NestedCalls, NestedError, NestedFuture, Runtime,
};

/// The node's dispatcher.
pub struct NodeDispatcher {
    node: Arc<NodeInfo>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    builtin_version: Version,
    /// Itself, handed to plugins as the target of their `call` import.
    this: Weak<NodeDispatcher>,
    /// The cluster, once joined (a standalone node has none).
    cluster: OnceLock<Arc<Cluster>>,
    /// Breaks ties between equally loaded nodes, so sequential calls spread.
    rotation: AtomicUsize,
    /// This node's queues (`queue.*` built-ins).
    queues: OnceLock<Arc<QueueManager>>,
    /// The topic exchange plugins publish on.
    exchange: OnceLock<Arc<Exchange>>,
}

/// How many other nodes a call not sent (link down) is offered to before it fails.
const MAX_REROUTES: usize = 3;

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
    /// A `queue.*` built-in on a queue of this node.
    Queue(Arc<QueueManager>),
    Plugin(FunctionEntry),
    Remote(RemoteFunction),
}

impl NodeDispatcher {
    /// A dispatcher over this node's built-ins and plugins.
    pub fn new(node: Arc<NodeInfo>, registry: Arc<Registry>, runtime: Arc<Runtime>) -> Arc<Self> {
        let builtin_version =
            Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0));
        Arc::new_cyclic(|this| NodeDispatcher {
            node,
            registry,
            runtime,
            builtin_version,
            this: this.clone(),
            cluster: OnceLock::new(),
            rotation: AtomicUsize::new(0),
            queues: OnceLock::new(),
            exchange: OnceLock::new(),
        })
    }

    /// Routes to peers from now on.
    pub fn join(&self, cluster: Arc<Cluster>) {
        let _ = self.cluster.set(cluster);
    }

    /// Serves the `queue.*` built-ins from `queues` from now on.
    pub fn serve_queues(&self, queues: Arc<QueueManager>) {
        let _ = self.queues.set(queues);
    }

    /// Plugins publish on `exchange` from now on.
    pub fn serve_pubsub(&self, exchange: Arc<Exchange>) {
        let _ = self.exchange.set(exchange);
    }

    /// The cluster, if joined.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.get()
    }

    /// Runs `call` on the plugin version `entry`, in a context that lets it call back in.
    fn run_plugin(
        &self,
        entry: FunctionEntry,
        call: Call,
    ) -> impl Future<Output = Result<Value, InvokeError>> + Send + 'static {
        let runtime = self.runtime.clone();
        let ctx = self.context(&call);
        let running = Counted::enter(RunningCalls(self.node.clone()));
        async move {
            let _running = running;
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

    /// Where `call` runs: a built-in, else the highest matching version here or on a live peer
    /// not in `exclude`, the least loaded node among those that have it.
    fn resolve(&self, call: &Call, exclude: &[String]) -> Result<Target, CallError> {
        let cmd = &call.command;
        let vc = call.constraint.as_ref();
        if queue_api::is_queue_function(&cmd.fun) {
            return self.resolve_queue(call, exclude);
        }
        if let Some(b) = self.builtin(cmd, vc) {
            return Ok(Target::Builtin(b));
        }
        if Builtin::lookup(&cmd.fun).is_some()
            && let Some(remote) = self.builtin_elsewhere(call, exclude)
        {
            return Ok(Target::Remote(remote));
        }
        // Route against borrowed snapshots: no copy of the version lists per call.
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
        let local = route::best(candidates, cmd, vc, &self.node.cluster_id).and_then(|c| c.entry);
        let view = self.cluster.get().map(|c| (c, c.view()));
        let remote: Vec<&RemoteFunction> = match &view {
            None => Vec::new(),
            Some((cluster, view)) => {
                let fs = view.functions(&cmd.fun);
                let reachable = fs.iter().filter(|f| {
                    !exclude.contains(&f.node.node_id)
                        && cluster
                            .link(&f.node.node_id)
                            .is_some_and(|l| l.is_connected())
                });
                let best = route::best(reachable.clone(), cmd, vc, &self.node.cluster_id);
                match (best, local) {
                    (None, _) => Vec::new(),
                    (Some(b), Some(l)) if l.version() > &b.ad.version => Vec::new(),
                    (Some(b), _) => reachable
                        .filter(|f| {
                            f.ad.version == b.ad.version
                                && route::matches(*f, cmd, vc, &self.node.cluster_id)
                        })
                        .collect(),
                }
            }
        };
        let local = local.filter(|l| remote.first().is_none_or(|r| l.version() >= &r.ad.version));
        if remote.is_empty() {
            return match local {
                Some(entry) => Ok(Target::Plugin(entry.clone())),
                None => {
                    let known = versions.len()
                        + view
                            .as_ref()
                            .map_or(0, |(_, v)| v.functions(&cmd.fun).len());
                    Err(CallError::NotFound(not_found(call, known)))
                }
            };
        }
        // Load of each candidate node: calls running there as it last said, or the calls this
        // node has outstanding there, whichever is higher (gossip lags; our own count does not).
        let cluster = view.as_ref().map(|(c, _)| c);
        let load_of = |f: &RemoteFunction| -> f64 {
            let ours = cluster
                .and_then(|c| c.link(&f.node.node_id))
                .map_or(0, |l| l.in_flight());
            f.node.load.score.max(ours as f64)
        };
        let mut loads: Vec<f64> = remote.iter().map(|f| load_of(f)).collect();
        if local.is_some() {
            loads.push(self.node.running_calls.load(Ordering::Relaxed) as f64);
        }
        let pick = self.least_loaded(&loads).unwrap_or(0);
        Ok(match remote.get(pick) {
            Some(f) => Target::Remote((*f).clone()),
            None => match local {
                Some(entry) => Target::Plugin(entry.clone()),
                None => Target::Remote(remote[0].clone()),
            },
        })
    }

    /// Where a `queue.*` call runs: on the node that owns the queue (creating one runs here,
    /// unless another node has it already).
    fn resolve_queue(&self, call: &Call, exclude: &[String]) -> Result<Target, CallError> {
        let cmd = &call.command;
        let Some(queues) = self.queues.get() else {
            return Err(CallError::NotFound(format!(
                "Command not found: {} (this node serves no queues)",
                cmd.fun
            )));
        };
        let name = match queue_api::queue_name(cmd) {
            Some(n) if cmd.fun != "queue.list" && !queues.has(n) => n,
            _ => return Ok(Target::Queue(queues.clone())),
        };
        let owner = self.cluster.get().and_then(|cluster| {
            let view = cluster.view();
            let node = view
                .nodes
                .iter()
                .find(|n| n.queues.iter().any(|q| q == name) && !exclude.contains(&n.node_id))?
                .clone();
            cluster
                .link(&node.node_id)
                .is_some_and(|l| l.is_connected())
                .then(|| self.builtin_on(node, &cmd.fun))
        });
        match owner {
            Some(remote) => Ok(Target::Remote(remote)),
            None if cmd.fun == "queue.create" => Ok(Target::Queue(queues.clone())),
            None => Err(CallError::NotFound(format!(
                "{}: no queue '{name}' in the cluster",
                cmd.fun
            ))),
        }
    }

    /// Built-in `fun` as served by peer `node` (every node has the built-ins).
    fn builtin_on(
        &self,
        node: Arc<crate::cluster::catalog::PeerNode>,
        fun: &str,
    ) -> RemoteFunction {
        RemoteFunction {
            node,
            ad: crate::cluster::catalog::FunctionAd {
                name: fun.to_owned(),
                version: self.builtin_version.clone(),
                function_id: fun.to_owned(),
                resources: Vec::new(),
                signature: String::new(),
                description: None,
                plugin: String::new(),
            },
        }
    }

    /// A peer whose copy of built-in `call.command.fun` matches where this node's does not (its
    /// `locs` name another node's tags): every node has the built-ins, so they route like any
    /// function.
    fn builtin_elsewhere(&self, call: &Call, exclude: &[String]) -> Option<RemoteFunction> {
        let cluster = self.cluster.get()?;
        let cmd = &call.command;
        let view = cluster.view();
        let candidates: Vec<RemoteFunction> = view
            .nodes
            .iter()
            .filter(|n| {
                !exclude.contains(&n.node_id)
                    && cluster.link(&n.node_id).is_some_and(|l| l.is_connected())
            })
            .map(|n| self.builtin_on(n.clone(), &cmd.fun))
            .filter(|f| route::matches(f, cmd, call.constraint.as_ref(), &self.node.cluster_id))
            .collect();
        let loads: Vec<f64> = candidates.iter().map(|f| f.node.load.score).collect();
        candidates.get(self.least_loaded(&loads)?).cloned()
    }

    /// The index of the lowest load; ties rotate, so sequential calls spread.
    fn least_loaded(&self, loads: &[f64]) -> Option<usize> {
        let least = loads.iter().copied().fold(f64::INFINITY, f64::min);
        let tied: Vec<usize> = (0..loads.len()).filter(|&i| loads[i] <= least).collect();
        let turn = self.rotation.fetch_add(1, Ordering::Relaxed);
        tied.get(turn % tied.len().max(1)).copied()
    }

    /// Runs `call` on a peer, re-routing while it could not be sent; `path` are the nodes it
    /// went through (this one last).
    async fn forward(
        self: Arc<Self>,
        first: RemoteFunction,
        call: Call,
        path: Vec<String>,
        hops_left: u8,
    ) -> Result<Value, CallError> {
        let Some(cluster) = self.cluster.get().cloned() else {
            return Err(CallError::NotFound("not in a cluster".into()));
        };
        let command =
            serde_json::to_string(&call.command).map_err(|e| CallError::Failed(e.to_string()))?;
        let mut target = first;
        let mut tried: Vec<String> = path.clone();
        let mut not_sent = Vec::new();
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
            let fwd = ForwardedCall {
                request_id: call.request_id.to_string(),
                command: command.clone(),
                hops_left,
                path: path.clone(),
                timeout_ms,
                depth: call.depth,
            };
            let outcome = match cluster.link(&node_id) {
                Some(link) => link.call(fwd).await,
                None => Err(LinkError::NotSent(format!(
                    "node {node_id} left the cluster"
                ))),
            };
            // Refused without running it (link down, shutting down, no free instance): the
            // next node gets it. Anything else is final.
            let refused = match outcome {
                Ok(text) => {
                    return serde_json::from_str(&text).map_err(|e| {
                        CallError::Failed(format!("node {node_id} sent an unreadable result: {e}"))
                    });
                }
                Err(LinkError::NotSent(why)) => why,
                Err(LinkError::Remote(RemoteFailure { code, cause }))
                    if code == codes::OVERLOADED =>
                {
                    format!("node {node_id}: {cause}")
                }
                Err(LinkError::Remote(RemoteFailure { code, cause })) => {
                    return Err(CallError::from_code(
                        code,
                        format!("on node {node_id}: {cause}"),
                    ));
                }
                Err(LinkError::Lost(why)) => return Err(CallError::NodeLost(why)),
                Err(LinkError::Protocol(why)) => {
                    return Err(CallError::Failed(why));
                }
            };
            tracing::debug!(node = %node_id, why = %refused, "call not run there; re-routing");
            not_sent.push(refused);
            tried.push(node_id);
            if not_sent.len() > MAX_REROUTES {
                break;
            }
            match self.resolve(&call, &tried) {
                Ok(Target::Remote(next)) => target = next,
                Ok(other) => return self.start(other, call).await,
                Err(_) => break,
            }
        }
        Err(CallError::NotFound(format!(
            "Command not found: {} (every node that has it is unreachable: {})",
            call.command.fun,
            not_sent.join("; ")
        )))
    }

    /// Runs a call a peer forwarded here: locally when this node has it, else onward while the
    /// hop budget lasts, never back through `path`.
    pub async fn run_forwarded(self: Arc<Self>, fwd: ForwardedCall) -> Result<Value, CallError> {
        let command: RpcCommand = serde_json::from_str(&fwd.command)
            .map_err(|e| CallError::Malformed(format!("forwarded command: {e}")))?;
        let constraint = command
            .version_constraint
            .as_deref()
            .map(VersionConstraint::parse)
            .transpose()
            .map_err(|e| CallError::Failed(e.to_string()))?;
        let timeout = Duration::from_millis(fwd.timeout_ms);
        let call = Call {
            command,
            constraint,
            request_id: fwd.request_id.as_str().into(),
            depth: fwd.depth,
            deadline: Some(Instant::now() + timeout),
        };
        let mut path = fwd.path;
        path.push(self.node.node_id.clone());
        let run = async {
            match self.resolve(&call, &path)? {
                Target::Builtin(b) => b.run(
                    &call.command,
                    &self.node,
                    &self.registry,
                    self.cluster.get().map(|c| &**c),
                ),
                Target::Plugin(entry) => {
                    self.run_plugin(entry, call).await.map_err(CallError::from)
                }
                Target::Queue(queues) => queue_api::call(&queues, &call.command).await,
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
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(r) => r,
            Err(_) => Err(CallError::Deadline(format!(
                "deadline of {} ms exceeded",
                fwd.timeout_ms
            ))),
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

impl From<InvokeError> for CallError {
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
        CallError::from_code(code, e.to_string())
    }
}

impl NodeDispatcher {
    fn cluster_ref(&self) -> Option<&Cluster> {
        self.cluster.get().map(|c| &**c)
    }

    /// Starts `call` on `target`.
    fn start(&self, target: Target, call: Call) -> BoxFuture<Result<Value, CallError>> {
        match target {
            Target::Builtin(b) => {
                let out = b.run(
                    &call.command,
                    &self.node,
                    &self.registry,
                    self.cluster_ref(),
                );
                Box::pin(async move { out })
            }
            Target::Plugin(entry) => {
                let run = self.run_plugin(entry, call);
                Box::pin(async move { run.await.map_err(CallError::from) })
            }
            Target::Queue(queues) => {
                Box::pin(async move { queue_api::call(&queues, &call.command).await })
            }
            Target::Remote(f) => match self.this.upgrade() {
                Some(this) => {
                    let (path, hops) = (vec![self.node.node_id.clone()], self.max_hops());
                    Box::pin(this.forward(f, call, path, hops))
                }
                None => Box::pin(async { Err(CallError::Overloaded("node stopping".into())) }),
            },
        }
    }

    fn max_hops(&self) -> u8 {
        self.cluster.get().map_or(0, |c| c.max_hops())
    }
}

impl Dispatcher for NodeDispatcher {
    fn immediate(
        &self,
        cmd: &RpcCommand,
        constraint: Option<&VersionConstraint>,
    ) -> Option<Result<Value, CallError>> {
        let b = self.builtin(cmd, constraint)?;
        Some(b.run(cmd, &self.node, &self.registry, self.cluster_ref()))
    }

    fn check(&self, call: &Call) -> Result<(), CallError> {
        // A queue may be created by an earlier command of the same request: whether it exists
        // is known only when the call runs.
        if queue_api::is_queue_function(&call.command.fun) && self.queues.get().is_some() {
            return Ok(());
        }
        self.resolve(call, &[]).map(|_| ())
    }

    fn dispatch(&self, call: Call) -> BoxFuture<Result<Value, CallError>> {
        match self.resolve(&call, &[]) {
            Err(f) => Box::pin(async move { Err(f) }),
            Ok(target) => self.start(target, call),
        }
    }
}

impl NestedCalls for NodeDispatcher {
    fn publish(
        &self,
        topic: &str,
        payload: &str,
        plugin: &str,
        request_id: &str,
    ) -> Result<String, String> {
        let Some(exchange) = self.exchange.get() else {
            return Err("this node has no topic exchange".into());
        };
        let payload: Value =
            serde_json::from_str(payload).map_err(|e| format!("payload is not valid JSON: {e}"))?;
        let id = format!(
            "{}-{:016x}",
            self.node.node_id,
            crate::protocol::random_u64()
        );
        let mut headers = serde_json::Map::new();
        headers.insert("request_id".into(), request_id.into());
        let message = crate::protocol::pubsub::PubsubMessage {
            topic: topic.to_owned(),
            payload,
            timestamp: crate::clock::unix_now(),
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
            deadline: None,
        };
        match self.resolve(&call, &[]) {
            Err(f) => Box::pin(async move { Err(NestedError::NotFound(f.into_cause())) }),
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
