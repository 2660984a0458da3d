//! The built-in registry: functions a node serves without a plugin. Every service registers
//! its own here at start-up (name, signature and description for `rpc_list` /
//! `rpc_describe`, handler, placement); the dispatcher routes them like any function and
//! knows no service by name. [`core`] registers the discovery built-ins (protocol.md §4);
//! `queue::api` the `queue.*` functions.

pub mod core;
pub mod discovery;
pub mod feed;

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use serde_json::Value;

use super::port::{BoxFuture, Call, CallError};
use crate::auth::{Denied, Principal};
use crate::cluster::Cluster;
use crate::cluster::catalog::PeerNode;
use crate::identity::NodeInfo;
use crate::plugin::Registry;
use crate::protocol::RpcCommand;

/// What a built-in that answers at once may read: this node, its plugins, its cluster and the
/// built-ins themselves (for listings).
pub struct Scope<'a> {
    /// This node's identity and load.
    pub node: &'a NodeInfo,
    /// Its loaded plugin functions.
    pub registry: &'a Registry,
    /// Its cluster, when it is in one.
    pub cluster: Option<&'a Cluster>,
    /// Every built-in.
    pub builtins: &'a Builtins,
    /// Who asks: listings show it only what it may call.
    pub principal: &'a Principal,
}

/// A handler that answers at once and never blocks (served inline by the session).
pub type NowHandler = dyn Fn(&Scope<'_>, &RpcCommand) -> Result<Value, CallError> + Send + Sync;
/// A handler that waits (storage, other calls).
pub type LaterHandler = dyn Fn(RpcCommand) -> BoxFuture<Result<Value, CallError>> + Send + Sync;
/// What a built-in of [`Access::Check`] asks of its caller's policy, read from the command
/// (the queue or cache namespace it names).
pub type AccessCheck = dyn Fn(&Principal, &RpcCommand) -> Result<(), Denied> + Send + Sync;

/// Who may call a built-in. The dispatcher checks it wherever the call comes from (a client,
/// a plugin's nested call, a peer), before the call is placed.
#[derive(Clone)]
pub enum Access {
    /// Any connected identity: it reads nothing private (`echo`, discovery, whose listings
    /// are filtered by the caller's policy).
    Open,
    /// The resource it names must be allowed (`queue_send` for `queue.send`, `cache_read`
    /// for `cache.get`, ...).
    Check(Arc<AccessCheck>),
}

impl Access {
    /// `Ok` when `principal` may run `cmd`.
    pub fn check(&self, principal: &Principal, cmd: &RpcCommand) -> Result<(), Denied> {
        match self {
            Access::Open => Ok(()),
            Access::Check(_) if principal.unrestricted() => Ok(()),
            Access::Check(f) => f(principal, cmd),
        }
    }
}

/// How a built-in runs.
#[derive(Clone)]
pub enum Handler {
    /// At once.
    Now(Arc<NowHandler>),
    /// As a future.
    Later(Arc<LaterHandler>),
}

/// Which node serves a call of a built-in.
#[derive(Clone)]
pub enum Placement {
    /// Every node: a call runs here unless its `locs` (or `version`) name another node's.
    Everywhere,
    /// One node owns each named resource (a queue): the call runs on its owner.
    Owner(Arc<dyn Ownership>),
}

/// Where the owner of a resource is, as [`Ownership::locate`] finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Located {
    /// This node.
    Here,
    /// The peer at this index of the candidates.
    Peer(usize),
    /// Nobody owns it.
    Nobody,
}

/// The owner rule of a [`Placement::Owner`] built-in family.
pub trait Ownership: Send + Sync {
    /// The resource a call addresses; `None` when any node answers it here (`queue.list`).
    fn resource<'c>(&self, cmd: &'c RpcCommand) -> Option<Cow<'c, str>>;
    /// Whether this node owns `name`.
    fn owned_here(&self, name: &str) -> bool;
    /// Whether peer `node` owns `name`, as it gossips.
    fn owned_by(&self, node: &PeerNode, name: &str) -> bool;
    /// Whether `fun` creates the resource, so it runs here when nobody owns it yet.
    fn creates(&self, fun: &str) -> bool;
    /// The error of a call whose resource nobody owns.
    fn missing(&self, fun: &str, name: &str) -> CallError;
    /// Who owns `name` among this node (`here`, its id) and the reachable `peers`. By default
    /// this node when [`Ownership::owned_here`], else the first peer that
    /// [`Ownership::owned_by`]; a rule that computes owners (hashing) overrides it.
    fn locate(&self, name: &str, here: &str, peers: &[Arc<PeerNode>]) -> Located {
        let _ = here;
        if self.owned_here(name) {
            return Located::Here;
        }
        peers
            .iter()
            .position(|n| self.owned_by(n, name))
            .map_or(Located::Nobody, Located::Peer)
    }
}

/// One built-in function.
#[derive(Clone)]
pub struct BuiltinSpec {
    /// The name clients call.
    pub name: &'static str,
    /// Its signature in WIT-like notation, for `rpc_describe`.
    pub signature: &'static str,
    /// What it does, for listings.
    pub description: &'static str,
    /// How it runs.
    pub handler: Handler,
    /// Where it runs.
    pub placement: Placement,
    /// Who may call it.
    pub access: Access,
}

impl std::fmt::Debug for BuiltinSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinSpec")
            .field("name", &self.name)
            .field("signature", &self.signature)
            .finish_non_exhaustive()
    }
}

/// A kind of named resource a service holds on each node (queues, topic interest, cache
/// namespaces), for `catalog_query`: the service registers it with its built-ins and the
/// discovery built-ins list it without knowing the service.
pub trait CatalogSource: Send + Sync {
    /// The `catalog_query` entry type it answers (`queues`).
    fn entry_type(&self) -> &'static str;
    /// What this node holds.
    fn local(&self) -> Vec<String>;
    /// What peer `node` holds, as it gossips.
    fn remote(&self, node: &PeerNode) -> Vec<String>;
}

/// A message role a service answers with one of its built-ins (`cache-request`): the session
/// runs the built-in with `[frame, this node's id]` and answers with its result object, to
/// which it adds `role: reply_role` and the request's `u`.
#[derive(Debug, Clone, Copy)]
pub struct Envelope {
    /// The role it answers.
    pub role: &'static str,
    /// The role of its replies.
    pub reply_role: &'static str,
    /// The built-in that serves it.
    pub builtin: &'static str,
}

/// The exact function version a call resolved to, as a memoizer keys its result.
#[derive(Debug, Clone, PartialEq)]
pub struct Resolved {
    /// The name called.
    pub name: String,
    /// Its `function_id`.
    pub function_id: String,
    /// The version that would run.
    pub version: semver::Version,
    /// The plugin providing it.
    pub plugin: String,
    /// The sha256 of that plugin's component.
    pub sha256: String,
    /// How its plugin declares it memoized, if it does.
    pub rule: Option<crate::protocol::CacheRule>,
}

/// Serves calls whose command asks for its result to be memoized (`"cache": {…}`): the
/// dispatcher resolves the function as usual and hands the call here instead of running it.
/// Registered by the cache service; the dispatcher knows no more of it.
pub trait Memoizer: Send + Sync {
    /// Whether `cmd` is to be memoized: it asks, or its function is `declared` memoized and
    /// the command does not turn that off.
    fn wants(&self, cmd: &RpcCommand, declared: bool) -> bool;
    /// Answers `call` of `target`, from the cache or by running it once.
    fn run(&self, call: Call, target: Resolved) -> BoxFuture<Result<Value, CallError>>;
    /// The result of `cmd` of `target` if this node holds it now (no waiting, no hop).
    fn held(&self, _cmd: &RpcCommand, _target: &Resolved) -> Option<Value> {
        None
    }
}

/// Two services registered the same name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("built-in '{0}' is registered twice")]
pub struct DuplicateBuiltin(pub String);

/// Every built-in of a node, in registration order. Built once at start-up, read-only after.
#[derive(Default)]
pub struct Builtins {
    specs: Vec<Arc<BuiltinSpec>>,
    by_name: HashMap<&'static str, usize>,
    sources: Vec<Arc<dyn CatalogSource>>,
    envelopes: Vec<Envelope>,
    memoizer: Option<Arc<dyn Memoizer>>,
}

impl Builtins {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a built-in; a name may be registered once.
    pub fn register(&mut self, spec: BuiltinSpec) -> Result<(), DuplicateBuiltin> {
        if self.by_name.contains_key(spec.name) {
            return Err(DuplicateBuiltin(spec.name.to_owned()));
        }
        self.by_name.insert(spec.name, self.specs.len());
        self.specs.push(Arc::new(spec));
        Ok(())
    }

    /// Adds a kind of resource `catalog_query` lists.
    pub fn add_source(&mut self, source: Arc<dyn CatalogSource>) {
        self.sources.push(source);
    }

    /// Sets the service that memoizes calls.
    pub fn set_memoizer(&mut self, m: Arc<dyn Memoizer>) {
        self.memoizer = Some(m);
    }

    /// The service that memoizes calls, if one is registered.
    pub fn memoizer(&self) -> Option<&Arc<dyn Memoizer>> {
        self.memoizer.as_ref()
    }

    /// Adds a message role served by a built-in.
    pub fn add_envelope(&mut self, envelope: Envelope) {
        self.envelopes.push(envelope);
    }

    /// The envelope that answers `role`.
    pub fn envelope(&self, role: &str) -> Option<Envelope> {
        self.envelopes.iter().find(|e| e.role == role).copied()
    }

    /// Every registered resource kind.
    pub fn sources(&self) -> &[Arc<dyn CatalogSource>] {
        &self.sources
    }

    /// The built-in called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<BuiltinSpec>> {
        self.by_name.get(name).map(|&i| &self.specs[i])
    }

    /// Every built-in, in registration order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<BuiltinSpec>> {
        self.specs.iter()
    }
}

impl BuiltinSpec {
    /// A built-in that answers at once, on every node.
    pub fn now(
        name: &'static str,
        signature: &'static str,
        description: &'static str,
        f: impl Fn(&Scope<'_>, &RpcCommand) -> Result<Value, CallError> + Send + Sync + 'static,
    ) -> Self {
        BuiltinSpec {
            name,
            signature,
            description,
            handler: Handler::Now(Arc::new(f)),
            placement: Placement::Everywhere,
            access: Access::Open,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_registered_once_and_found_in_order() {
        let mut b = Builtins::new();
        b.register(BuiltinSpec::now("a", "func()", "a", |_, _| Ok(Value::Null)))
            .expect("first");
        b.register(BuiltinSpec::now("b", "func()", "b", |_, _| Ok(Value::Null)))
            .expect("second");
        let again = b.register(BuiltinSpec::now("a", "func()", "x", |_, _| Ok(Value::Null)));
        assert_eq!(again, Err(DuplicateBuiltin("a".into())));
        assert_eq!(b.get("b").map(|s| s.name), Some("b"));
        assert!(b.get("c").is_none());
        let names: Vec<_> = b.iter().map(|s| s.name).collect();
        assert_eq!(names, ["a", "b"]);
    }
}
