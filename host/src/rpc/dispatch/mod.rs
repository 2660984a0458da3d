//! Runs calls where they belong: a built-in (from the registry every service registered into),
//! else the highest matching version anywhere in the cluster, on this node or forwarded to a
//! peer over its link, choosing among the nodes that have it by load. The rules are the pure
//! functions of [`route`](super::route); this module gathers their snapshot (registry, cluster
//! view, reachable links, loads) and acts on the answer.
//!
//! - [`forward`]: calls sent to a peer (re-routed while not run) and calls a peer sent here;
//! - [`nested`]: the plugin imports `call` and `publish`.

mod failure;
mod forward;
mod metrics;
mod nested;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use semver::Version;
use serde_json::Value;
use tracing::Instrument;

use super::builtins::{
    BuiltinSpec, Builtins, Handler, Located, Memoizer, Placement, Resolved, Scope,
};
use super::port::{BoxFuture, Call, CallError, Dispatcher};
use super::route::{self, Candidate, Route, Wanted};
use super::version::VersionConstraint;
use crate::auth::Principal;
use crate::auth::policy::Need;
use crate::cluster::Cluster;
use crate::cluster::catalog::{FunctionAd, PeerNode, RemoteFunction};
use crate::identity::{Counted, NodeInfo, RunningCalls};
use crate::plugin::{FunctionEntry, Registry};
use crate::protocol::RpcCommand;
use crate::pubsub::exchange::Exchange;
use crate::runtime::{CallContext, InvokeError, NestedCalls, Runtime};

/// The node's dispatcher.
pub struct NodeDispatcher {
    node: Arc<NodeInfo>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
    builtins: Arc<Builtins>,
    builtin_version: Version,
    /// Itself, handed to plugins as the target of their `call` import.
    this: Weak<NodeDispatcher>,
    /// The cluster (a standalone node has none).
    cluster: Option<Arc<Cluster>>,
    /// Breaks ties between equally loaded nodes, so sequential calls spread.
    rotation: AtomicUsize,
    /// The topic exchange plugins publish on.
    exchange: Arc<Exchange>,
    /// What it counts.
    metrics: metrics::DispatchMetrics,
}

/// What a dispatcher is built from, in the order `node::start` makes them.
pub struct DispatcherParts {
    /// This node.
    pub node: Arc<NodeInfo>,
    /// Its plugin functions.
    pub registry: Arc<Registry>,
    /// The runtime that runs them.
    pub runtime: Arc<Runtime>,
    /// Every built-in, registered by each service.
    pub builtins: Arc<Builtins>,
    /// The topic exchange (plugin publishes).
    pub exchange: Arc<Exchange>,
    /// The cluster, when the node is in one.
    pub cluster: Option<Arc<Cluster>>,
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
    Builtin(Arc<BuiltinSpec>),
    Plugin(FunctionEntry),
    Remote(RemoteFunction),
}

impl NodeDispatcher {
    /// The runtime its plugin calls run in.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// A dispatcher over this node's built-ins and plugins, and its cluster's.
    pub fn new(parts: DispatcherParts) -> Arc<Self> {
        let builtin_version =
            Version::parse(env!("CARGO_PKG_VERSION")).unwrap_or(Version::new(0, 0, 0));
        let metrics = metrics::DispatchMetrics::new(
            parts.runtime.metrics().calls.clone(),
            &parts.builtins,
            &builtin_version.to_string(),
        );
        Arc::new_cyclic(|this| NodeDispatcher {
            metrics,
            node: parts.node,
            registry: parts.registry,
            runtime: parts.runtime,
            builtins: parts.builtins,
            builtin_version,
            this: this.clone(),
            cluster: parts.cluster,
            rotation: AtomicUsize::new(0),
            exchange: parts.exchange,
        })
    }

    /// The cluster as `cluster_map` answers.
    pub fn cluster_map(&self) -> crate::protocol::discovery::ClusterMap {
        crate::rpc::builtins::core::cluster_map(&self.scope(&Principal::system()))
    }

    /// The call counters of every built-in.
    pub fn builtin_calls(&self) -> Vec<Arc<crate::metrics::FunctionCalls>> {
        self.metrics.builtins()
    }

    /// Calls sent to peers, re-routes, and calls peers sent here, so far.
    pub fn forwarding_totals(&self) -> [u64; 3] {
        let m = &self.metrics;
        [m.forwarded.get(), m.reroutes.get(), m.received.get()]
    }

    /// Registers what the dispatcher counts (forwarded calls, re-routes).
    pub fn register_metrics(&self, r: &mut crate::metrics::Registry) {
        self.metrics.register(r);
    }

    /// Every built-in (and the message roles services answer).
    pub fn builtins(&self) -> &Builtins {
        &self.builtins
    }

    /// The cluster, if the node is in one.
    pub fn cluster(&self) -> Option<&Arc<Cluster>> {
        self.cluster.as_ref()
    }

    /// Everything this node knows, as the discovery built-ins answer from it.
    pub fn directory(&self) -> crate::rpc::directory::Directory {
        crate::rpc::builtins::discovery::gather(&self.scope(&Principal::system()))
    }

    /// What a built-in answering `principal` reads.
    fn scope<'a>(&'a self, principal: &'a Principal) -> Scope<'a> {
        Scope {
            node: &self.node,
            registry: &self.registry,
            cluster: self.cluster.as_deref(),
            builtins: &self.builtins,
            principal,
        }
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
        let span = tracing::debug_span!(
            target: "mpreg::plugin",
            "plugin_call",
            request_id = %call.request_id,
            function = %entry.function().name,
            version = %entry.version(),
            plugin = %entry.plugin.manifest.name,
            node = %self.node.node_id,
        );
        self.runtime.isolate(
            async move {
                let _running = running;
                let c = call.command;
                runtime
                    .invoke(&entry.plugin, entry.function(), &c.args, &c.kwargs, ctx)
                    .await
            }
            .instrument(span),
        )
    }

    /// The context a plugin call runs in: plugins may call back into this dispatcher.
    fn context(&self, call: &Call) -> CallContext {
        CallContext {
            request_id: call.request_id.clone(),
            depth: call.depth,
            nested: self.this.upgrade().map(|d| d as Arc<dyn NestedCalls>),
            principal: call.principal.clone(),
        }
    }

    /// This node's copy of built-in `spec` as a routing candidate.
    fn builtin_here<'a>(&'a self, spec: &'a BuiltinSpec) -> Local<'a> {
        Local {
            node: &self.node,
            function_id: spec.name,
            version: &self.builtin_version,
            resources: &[],
            entry: None,
        }
    }

    /// The next turn for tie-breaking.
    fn turn(&self) -> usize {
        self.rotation.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the link to `node_id` is up now.
    fn reachable(&self, node_id: &str) -> bool {
        self.cluster
            .as_ref()
            .and_then(|c| c.link(node_id))
            .is_some_and(|l| l.is_connected())
    }

    /// Where `call` runs: a built-in, else the highest matching version here or on a live peer
    /// not in `exclude`, the least loaded node among those that have it.
    fn resolve(&self, call: &Call, exclude: &[String]) -> Result<Target, CallError> {
        self.resolve_command(
            &call.command,
            call.constraint.as_ref(),
            exclude,
            &call.principal,
        )
    }

    /// [`Self::resolve`] of a command and its parsed constraint, for `principal`: a built-in
    /// it may not call, or a function none of whose matching versions it may call, is
    /// refused (1006) here, before anything runs; versions it may not call are never chosen.
    fn resolve_command(
        &self,
        cmd: &RpcCommand,
        constraint: Option<&VersionConstraint>,
        exclude: &[String],
        principal: &Principal,
    ) -> Result<Target, CallError> {
        let wanted = Wanted {
            cmd,
            constraint,
            cluster_id: &self.node.cluster_id,
        };
        if let Some(spec) = self.builtins.get(&cmd.fun) {
            spec.access.check(principal, cmd)?;
            if let Some(target) = self.resolve_builtin(spec, wanted, exclude) {
                return target;
            }
        }
        if principal.unrestricted() {
            return self.route_function(cmd, wanted, exclude, |_, _| true);
        }
        let allowed = |function_id: &str, version: &Version| {
            principal.may(&Need::Call {
                name: &cmd.fun,
                function_id,
                version: Some(version),
            })
        };
        match self.route_function(cmd, wanted, exclude, allowed) {
            Err(CallError::NotFound(why)) => {
                // Refused rather than missing when a version it may not call would have run.
                match self.route_function(cmd, wanted, exclude, |_, _| true) {
                    Ok(found) => Err(denied(principal, &cmd.fun, &found)),
                    Err(_) => Err(CallError::NotFound(why)),
                }
            }
            other => other,
        }
    }

    /// The highest version of plugin function `cmd.fun` matching `wanted` among those
    /// `allowed` (by `function_id` and version), here or on a live peer not in `exclude`.
    fn route_function(
        &self,
        cmd: &RpcCommand,
        wanted: Wanted<'_>,
        exclude: &[String],
        allowed: impl Fn(&str, &Version) -> bool,
    ) -> Result<Target, CallError> {
        // Route against borrowed snapshots: no copy of the version lists per call.
        let table = self.registry.snapshot();
        let versions = table
            .get(cmd.fun.as_str())
            .map(Vec::as_slice)
            .unwrap_or(&[]);
        let candidates = versions
            .iter()
            .filter(|e| allowed(&e.function().function_id, e.version()))
            .map(|e| Local {
                node: &self.node,
                function_id: &e.function().function_id,
                version: e.version(),
                resources: &e.function().resources,
                entry: Some(e),
            });
        let view = self.cluster.as_ref().map(|c| c.view());
        let all_remote: &[RemoteFunction] = view.as_ref().map_or(&[], |v| v.functions(&cmd.fun));
        let remote: Vec<&RemoteFunction> = all_remote
            .iter()
            .filter(|f| !exclude.contains(&f.node.node_id) && self.reachable(&f.node.node_id))
            .filter(|f| allowed(&f.ad.function_id, &f.ad.version))
            .collect();
        // Load of each candidate node: calls running there as it last said, or the calls this
        // node has outstanding there, whichever is higher (gossip lags; our own count does not).
        let load_of = |f: &&RemoteFunction| -> f64 {
            let ours = self
                .cluster
                .as_ref()
                .and_then(|c| c.link(&f.node.node_id))
                .map_or(0, |l| l.in_flight());
            f.node.load.score.max(ours as f64)
        };
        let here = self.node.running_calls.load(Ordering::Relaxed) as f64;
        match route::choose(candidates, &remote, load_of, here, wanted, self.turn()) {
            Route::Local(l) => l
                .entry
                .cloned()
                .map(Target::Plugin)
                .ok_or_else(|| CallError::NotFound(not_found(cmd, 0))),
            Route::Remote(i) => Ok(Target::Remote(remote[i].clone())),
            Route::NotFound => {
                let existing = versions
                    .iter()
                    .map(|e| e.version())
                    .chain(all_remote.iter().map(|f| &f.ad.version));
                let mut text = not_found(cmd, versions.len() + all_remote.len());
                if versions.is_empty() && all_remote.is_empty() {
                    // A typo? The closest name served here or anywhere in the cluster.
                    let names = table.keys().map(|k| &**k).chain(
                        view.as_ref()
                            .into_iter()
                            .flat_map(|v| v.all_functions().map(|f| f.ad.name.as_str())),
                    );
                    if let Some(near) = crate::rpc::suggest::closest(&cmd.fun, names) {
                        text.push_str(&format!(" (did you mean '{near}'?)"));
                    }
                } else if cmd.version_constraint.is_some() {
                    text.push_str(&format!(
                        "; versions that exist: {}",
                        crate::rpc::suggest::versions_listed(existing)
                    ));
                }
                Err(CallError::NotFound(text))
            }
        }
    }

    /// Where a built-in call runs. One served everywhere runs here when this node matches the
    /// command (its `locs`, version), else on the least loaded reachable peer that does (none:
    /// `None`, and plugins of that name are looked for); one owned per resource runs on the
    /// owner.
    fn resolve_builtin(
        &self,
        spec: &Arc<BuiltinSpec>,
        wanted: Wanted<'_>,
        exclude: &[String],
    ) -> Option<Result<Target, CallError>> {
        let cmd = wanted.cmd;
        match &spec.placement {
            Placement::Everywhere => {
                let here = self.builtin_here(spec);
                if route::matches(&here, cmd, wanted.constraint, wanted.cluster_id) {
                    return Some(Ok(Target::Builtin(spec.clone())));
                }
                let remote: Vec<RemoteFunction> = self
                    .reachable_peers(exclude)
                    .into_iter()
                    .map(|n| self.builtin_on(n, spec.name))
                    .collect();
                let load = |f: &RemoteFunction| f.node.load.score;
                match route::choose(Vec::<Local>::new(), &remote, load, 0.0, wanted, self.turn()) {
                    Route::Remote(i) => Some(Ok(Target::Remote(remote[i].clone()))),
                    Route::Local(_) | Route::NotFound => None,
                }
            }
            Placement::Owner(owners) => {
                let Some(name) = owners.resource(cmd) else {
                    return Some(Ok(Target::Builtin(spec.clone())));
                };
                let peers = self.reachable_peers(exclude);
                Some(match owners.locate(&name, &self.node.node_id, &peers) {
                    Located::Here => Ok(Target::Builtin(spec.clone())),
                    Located::Peer(i) => {
                        Ok(Target::Remote(self.builtin_on(peers[i].clone(), spec.name)))
                    }
                    Located::Nobody if owners.creates(&cmd.fun) => {
                        Ok(Target::Builtin(spec.clone()))
                    }
                    Located::Nobody => Err(owners.missing(&cmd.fun, &name)),
                })
            }
        }
    }

    /// Live peers whose link is up, minus `exclude`.
    fn reachable_peers(&self, exclude: &[String]) -> Vec<Arc<PeerNode>> {
        let Some(cluster) = &self.cluster else {
            return Vec::new();
        };
        cluster
            .view()
            .nodes
            .iter()
            .filter(|n| !exclude.contains(&n.node_id) && self.reachable(&n.node_id))
            .cloned()
            .collect()
    }

    /// Built-in `fun` as served by peer `node` (every node has the built-ins).
    fn builtin_on(&self, node: Arc<PeerNode>, fun: &str) -> RemoteFunction {
        RemoteFunction {
            node,
            ad: Arc::new(FunctionAd {
                name: fun.to_owned(),
                version: self.builtin_version.clone(),
                function_id: fun.to_owned(),
                resources: Vec::new(),
                signature: String::new(),
                description: None,
                plugin: String::new(),
                sha256: String::new(),
                cache: None,
            }),
        }
    }

    /// The memoizer and the exact version, when `call` asks for its plugin result to be
    /// memoized.
    fn memoized(&self, cmd: &RpcCommand, target: &Target) -> Option<(Arc<dyn Memoizer>, Resolved)> {
        let m = self.builtins.memoizer()?;
        let rule = match target {
            Target::Builtin(_) => return None,
            Target::Plugin(e) => e.function().cache.clone(),
            Target::Remote(f) => f.ad.cache.clone(),
        };
        if !m.wants(cmd, rule.is_some()) {
            return None;
        }
        let resolved = match target {
            Target::Builtin(_) => return None,
            Target::Plugin(e) => Resolved {
                name: e.function().name.clone(),
                function_id: e.function().function_id.clone(),
                version: e.version().clone(),
                plugin: e.plugin.manifest.name.clone(),
                sha256: e.plugin.sha256.clone(),
                rule,
            },
            Target::Remote(f) => Resolved {
                name: f.ad.name.clone(),
                function_id: f.ad.function_id.clone(),
                version: f.ad.version.clone(),
                plugin: f.ad.plugin.clone(),
                sha256: f.ad.sha256.clone(),
                rule,
            },
        };
        Some((m.clone(), resolved))
    }

    /// A memoized call's result when this node holds it, answered without waiting (as a
    /// built-in is); `None` when the call is not memoized or the result is not here. Cheap
    /// for other plugin calls: one registry lookup unless the command asks for memoizing.
    fn memoized_here(
        &self,
        cmd: &RpcCommand,
        constraint: Option<&VersionConstraint>,
        principal: &Principal,
    ) -> Option<Value> {
        let memoizer = self.builtins.memoizer()?;
        let asked = match &cmd.cache {
            Some(Value::Bool(false) | Value::Null) => return None,
            Some(_) => true,
            None => false,
        };
        if !asked {
            let table = self.registry.snapshot();
            let declared = table
                .get(cmd.fun.as_str())
                .is_some_and(|v| v.iter().any(|e| e.function().cache.is_some()));
            if !declared {
                return None;
            }
        }
        let target = self.resolve_command(cmd, constraint, &[], principal).ok()?;
        let (_, resolved) = self.memoized(cmd, &target)?;
        memoizer.held(cmd, &resolved)
    }

    /// Starts `call` on `target`.
    fn start(&self, target: Target, call: Call) -> BoxFuture<Result<Value, CallError>> {
        match target {
            Target::Builtin(spec) => match &spec.handler {
                Handler::Now(f) => {
                    let out = f(&self.scope(&call.principal), &call.command);
                    Box::pin(async move { out })
                }
                Handler::Later(f) => f(call.command),
            },
            Target::Plugin(entry) => {
                let run = self.run_plugin(entry, call);
                Box::pin(async move { run.await.map_err(CallError::from) })
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

    /// Starts `call` on `target` and, when it runs here, records its outcome: the command
    /// metrics, and the log line of a failure (a call forwarded elsewhere is recorded where it
    /// runs).
    fn run_here(&self, target: Target, call: Call) -> BoxFuture<Result<Value, CallError>> {
        let ran = match &target {
            Target::Plugin(e) => Ran::Plugin(e.clone()),
            Target::Builtin(spec) => match self.metrics.builtin(spec.name) {
                Some(m) => Ran::Builtin(spec.name, m.clone()),
                None => return self.start(target, call),
            },
            Target::Remote(_) => return self.start(target, call),
        };
        let (node, request_id, name) = (
            self.node.clone(),
            call.request_id.clone(),
            call.command.name.clone(),
        );
        let started = Instant::now();
        let run = self.start(target, call);
        Box::pin(async move {
            let out = run.await;
            let took = started.elapsed();
            let calls = match &ran {
                Ran::Plugin(e) => &e.function().metrics,
                Ran::Builtin(_, m) => m,
            };
            calls.finished(out.as_ref().err().map(code_label), took);
            if let Err(e) = &out {
                let function = match ran {
                    Ran::Plugin(f) => format!("{}@{}", f.function().name, f.version()),
                    Ran::Builtin(builtin, _) => builtin.to_owned(),
                };
                failure::log(&node.node_id, &request_id, &name, &function, e, took);
            }
            out
        })
    }

    /// A command that failed before anything ran (nothing matched it, or it cannot be placed).
    fn unplaced(&self, call: &Call, e: &CallError) {
        self.metrics.calls.unmatched(code_label(e));
        let c = &call.command;
        failure::log(
            &self.node.node_id,
            &call.request_id,
            &c.name,
            &c.fun,
            e,
            Duration::ZERO,
        );
    }

    fn max_hops(&self) -> u8 {
        self.cluster.as_ref().map_or(0, |c| c.max_hops())
    }
}

/// What ran a call here, named in its metrics and its failure's log line.
enum Ran {
    Plugin(FunctionEntry),
    Builtin(&'static str, Arc<crate::metrics::FunctionCalls>),
}

/// An error's code as a metric label.
fn code_label(e: &CallError) -> &'static str {
    crate::protocol::codes::label(e.code())
}

/// The 1006 of `principal` asking for `fun`, which would have run as `found`.
fn denied(principal: &Principal, fun: &str, found: &Target) -> CallError {
    let (function_id, version) = match found {
        Target::Plugin(e) => (e.function().function_id.as_str(), Some(e.version())),
        Target::Remote(f) => (f.ad.function_id.as_str(), Some(&f.ad.version)),
        Target::Builtin(spec) => (spec.name, None),
    };
    let need = Need::Call {
        name: fun,
        function_id,
        version,
    };
    match principal.check(&need) {
        Err(d) => d.into(),
        Ok(()) => CallError::Unauthorized(format!(
            "'{}' is not allowed to call function '{fun}'",
            principal.name()
        )),
    }
}

fn not_found(c: &RpcCommand, versions: usize) -> String {
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
        let cause = e.to_string();
        match e {
            InvokeError::Timeout(_)
            | InvokeError::MemoryLimit(_)
            | InvokeError::StackOverflow
            | InvokeError::NodeMemory(_)
            | InvokeError::OutOfFuel(_) => CallError::ResourceLimit(cause),
            InvokeError::Overloaded(_) | InvokeError::MemoryBusy(_) | InvokeError::Busy(_) => {
                CallError::Overloaded(cause)
            }
            InvokeError::BadArguments(_) | InvokeError::Trapped(_) | InvokeError::Returned(_) => {
                CallError::Failed(cause)
            }
        }
    }
}

impl Dispatcher for NodeDispatcher {
    fn immediate(
        &self,
        cmd: &RpcCommand,
        constraint: Option<&VersionConstraint>,
        request_id: &str,
        principal: &Principal,
    ) -> Option<Result<Value, CallError>> {
        let Some(spec) = self.builtins.get(&cmd.fun) else {
            return self.memoized_here(cmd, constraint, principal).map(Ok);
        };
        let (Handler::Now(f), Placement::Everywhere) = (&spec.handler, &spec.placement) else {
            return None;
        };
        if !route::matches(
            &self.builtin_here(spec),
            cmd,
            constraint,
            &self.node.cluster_id,
        ) {
            return None;
        }
        let calls = self.metrics.builtin(spec.name);
        let started = calls.filter(|m| m.enabled()).map(|_| Instant::now());
        let out = match spec.access.check(principal, cmd) {
            Ok(()) => f(&self.scope(principal), cmd),
            Err(d) => Err(d.into()),
        };
        let took = started.map_or(Duration::ZERO, |t| t.elapsed());
        if let Some(m) = calls {
            m.finished(out.as_ref().err().map(code_label), took);
        }
        if let Err(e) = &out {
            failure::log(
                &self.node.node_id,
                request_id,
                &cmd.name,
                spec.name,
                e,
                took,
            );
        }
        Some(out)
    }

    fn check(&self, call: &Call) -> Result<(), CallError> {
        // A resource (a queue) may be created by an earlier command of the same request:
        // whether it exists is known only when the call runs; whether it may be used, now.
        if let Some(spec) = self.builtins.get(&call.command.fun)
            && matches!(spec.placement, Placement::Owner(_))
        {
            return Ok(spec.access.check(&call.principal, &call.command)?);
        }
        self.resolve(call, &[]).map(|_| ())
    }

    fn dispatch(&self, call: Call) -> BoxFuture<Result<Value, CallError>> {
        match self.resolve(&call, &[]) {
            Err(f) => {
                self.unplaced(&call, &f);
                Box::pin(async move { Err(f) })
            }
            Ok(target) => match self.memoized(&call.command, &target) {
                Some((m, resolved)) => m.run(call, resolved),
                None => self.run_here(target, call),
            },
        }
    }
}
