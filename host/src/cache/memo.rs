//! Memoized functions (docs/cache.md, "Memoized functions"): a command that carries
//! `"cache": {"ttl_seconds": …, "dependencies": […]}` (or `true`) is answered from the cache
//! when the same function version was called with the same arguments before, and otherwise run
//! once for everyone who asks meanwhile.
//!
//! - **The key** is the function's identity (name, `function_id`), the exact version that would
//!   run and its component's sha256, and the arguments in canonical JSON (object keys sorted),
//!   hashed with sha256, in the namespace `mpreg.memo`.
//! - **Single flight across the cluster.** Every node sends a memoized call to the key's owner
//!   (`cache.memo`, placed like any key); the owner answers from its cache, or joins the one
//!   execution already running for the key, or starts it (through the dispatcher, pinned to the
//!   resolved version, on whichever node serves it). Failures are not stored.
//! - **Retiring a version** drops its results on every node: each result carries the tag
//!   `memo:<plugin>@<version>`, invalidated when the plugin manager reports the retirement.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared};
use serde_json::{Map, Value, json};

use super::key::{CacheKey, Dependency, KeyId};
use super::store::{Cache, Levels, Put};
use crate::protocol::RpcCommand;
use crate::rpc::builtins::{Memoizer, Resolved};
use crate::rpc::port::{Call, CallError, LateDispatcher};

/// The namespace memoized results live in.
pub const NAMESPACE: &str = "mpreg.memo";
/// The built-in that serves a memoized call on its key's owner.
pub const BUILTIN: &str = super::access::MEMO;

type Flight = Shared<BoxFuture<'static, Result<Value, CallError>>>;

/// The memoizer: registered with the built-ins, serving `cache.memo` on key owners.
pub struct Memo {
    cache: Arc<Cache>,
    dispatcher: Arc<LateDispatcher>,
    inflight: Arc<Mutex<HashMap<KeyId, Flight>>>,
}

/// The tag every result of a plugin version carries.
pub fn version_tag(plugin: &str, version: &str) -> String {
    format!("memo:{plugin}@{version}")
}

/// JSON with every object's keys in order, so equal arguments hash equal however a client
/// ordered them.
pub fn canonical(v: &Value) -> String {
    fn sorted(v: &Value) -> Value {
        match v {
            Value::Object(m) => {
                let mut keys: Vec<&String> = m.keys().collect();
                keys.sort();
                let mut out = Map::new();
                for k in keys {
                    out.insert(k.clone(), sorted(&m[k]));
                }
                Value::Object(out)
            }
            Value::Array(a) => Value::Array(a.iter().map(sorted).collect()),
            other => other.clone(),
        }
    }
    // A map that keeps insertion order (serde_json's `preserve_order`) now holds sorted keys.
    sorted(v).to_string()
}

/// What a memoized command asks for.
#[derive(Debug, Default, PartialEq)]
struct Ask {
    ttl_seconds: Option<f64>,
    dependencies: Vec<Dependency>,
}

fn ask(v: &Value) -> Result<Option<Ask>, CallError> {
    let bad = |m: String| CallError::Failed(format!("cache: {m}"));
    match v {
        Value::Bool(false) | Value::Null => Ok(None),
        Value::Bool(true) => Ok(Some(Ask::default())),
        Value::Object(m) => {
            if let Some(k) = m
                .keys()
                .find(|k| !matches!(k.as_str(), "ttl_seconds" | "dependencies"))
            {
                return Err(bad(format!(
                    "unknown field '{k}'; the command's cache takes ttl_seconds and dependencies"
                )));
            }
            let ttl_seconds = match m.get("ttl_seconds") {
                None | Some(Value::Null) => None,
                Some(t) => Some(
                    t.as_f64()
                        .filter(|t| *t > 0.0 && t.is_finite())
                        .ok_or_else(|| bad("ttl_seconds must be a positive number".into()))?,
                ),
            };
            let dependencies = Dependency::list_from_json(m.get("dependencies"))
                .map_err(|e| bad(format!("dependencies: {e}")))?;
            Ok(Some(Ask {
                ttl_seconds,
                dependencies,
            }))
        }
        other => Err(bad(format!(
            "must be true, false or {{\"ttl_seconds\", \"dependencies\"}}, got {other}"
        ))),
    }
}

/// The key of a call of `target` with the arguments of `cmd`.
fn key_of(cmd: &RpcCommand, target: &Resolved) -> CacheKey {
    let identity = json!({
        "name": target.name,
        "function_id": target.function_id,
        "version": target.version.to_string(),
        "sha256": target.sha256,
        "args": cmd.args,
        "kwargs": cmd.kwargs,
    });
    let hex = crate::digest::sha256_hex(canonical(&identity).as_bytes());
    CacheKey {
        namespace: NAMESPACE.to_owned(),
        identifier: hex,
        version: target.version.to_string(),
        tags: vec![version_tag(&target.plugin, &target.version.to_string())],
    }
}

/// Removes a key's flight when the flight ends (or every waiter gave up on it).
struct Landed {
    inflight: Arc<Mutex<HashMap<KeyId, Flight>>>,
    id: KeyId,
}

impl Drop for Landed {
    fn drop(&mut self) {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&self.id);
    }
}

impl Memo {
    /// A memoizer over the node's cache, running calls through `dispatcher`.
    pub fn new(cache: Arc<Cache>, dispatcher: Arc<LateDispatcher>) -> Arc<Self> {
        Arc::new(Memo {
            cache,
            dispatcher,
            inflight: Arc::default(),
        })
    }

    /// Serves `cache.memo`: `[key id, {key, command, ttl_seconds, dependencies}]`, on the key's
    /// owner.
    pub async fn serve(&self, cmd: RpcCommand) -> Result<Value, CallError> {
        let bad = |m: &str| CallError::Malformed(format!("{BUILTIN}: {m}"));
        let spec = cmd.args.get(1).ok_or_else(|| bad("missing the call"))?;
        let key: CacheKey =
            serde_json::from_value(spec["key"].clone()).map_err(|e| bad(&format!("key: {e}")))?;
        let inner: RpcCommand = serde_json::from_value(spec["command"].clone())
            .map_err(|e| bad(&format!("command: {e}")))?;
        let ask = Ask {
            ttl_seconds: spec["ttl_seconds"].as_f64(),
            dependencies: Dependency::list_from_json(spec.get("dependencies"))
                .map_err(|e| bad(&format!("dependencies: {e}")))?,
        };
        let id = key.id();
        if let Some(hit) = self.cache.get(&id, Levels::default()).await? {
            return Ok((*hit.found.entry.value).clone());
        }
        let flight = {
            let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
            match map.get(&id) {
                Some(f) => {
                    self.cache.note_flight(true);
                    f.clone()
                }
                None => {
                    self.cache.note_flight(false);
                    let f = self.fly(id.clone(), key, inner, ask, cmd.name.clone());
                    map.insert(id, f.clone());
                    f
                }
            }
        };
        flight.await
    }

    /// The one execution of a key: runs the call, stores a success, tells every waiter.
    fn fly(&self, id: KeyId, key: CacheKey, command: RpcCommand, ask: Ask, name: String) -> Flight {
        let (cache, dispatcher) = (self.cache.clone(), self.dispatcher.clone());
        let landed = Landed {
            inflight: self.inflight.clone(),
            id,
        };
        async move {
            let _landed = landed;
            let d = dispatcher
                .get()
                .ok_or_else(|| CallError::Overloaded("node stopping".into()))?;
            let started = Instant::now();
            let result = d
                .dispatch(Call {
                    command,
                    constraint: None,
                    request_id: name.into(),
                    depth: 1,
                    deadline: None,
                    // The caller was allowed this function where it asked (the memoizer
                    // runs only calls the dispatcher resolved for it).
                    principal: crate::auth::Principal::system(),
                })
                .await;
            if let Ok(v) = &result {
                let mut put = Put::new(key, v.clone());
                put.ttl_seconds = ask.ttl_seconds;
                put.dependencies = ask.dependencies;
                put.cost_ms = started.elapsed().as_secs_f64() * 1000.0;
                if let Err(e) = cache.put(put).await {
                    tracing::warn!(error = %e, "memoized result not stored");
                }
            }
            result
        }
        .boxed()
        .shared()
    }
}

impl Memoizer for Memo {
    fn wants(&self, cmd: &RpcCommand, declared: bool) -> bool {
        match &cmd.cache {
            None => declared,
            Some(c) => !matches!(c, Value::Bool(false) | Value::Null),
        }
    }

    fn held(&self, cmd: &RpcCommand, target: &Resolved) -> Option<Value> {
        // A `cache` the run would refuse is refused there, with its error.
        if let Some(c) = &cmd.cache {
            ask(c).ok()??;
        }
        let (found, _) = self
            .cache
            .memory()
            .get(&key_of(cmd, target).id(), self.cache.now());
        found.map(|f| (*f.entry.value).clone())
    }

    fn run(
        &self,
        call: Call,
        target: Resolved,
    ) -> crate::rpc::port::BoxFuture<Result<Value, CallError>> {
        let (dispatcher, cache) = (self.dispatcher.clone(), self.cache.clone());
        Box::pin(async move {
            let asked = match &call.command.cache {
                Some(c) => ask(c)?,
                // Declared by its plugin: the declaration's TTL and dependency tags.
                None => target.rule.as_ref().map(|r| Ask {
                    ttl_seconds: r.ttl_seconds,
                    dependencies: r
                        .dependencies
                        .iter()
                        .map(|t| Dependency::Tag(t.clone()))
                        .collect(),
                }),
            };
            let Some(ask) = asked else {
                return Err(CallError::Failed("cache: nothing to memoize".into()));
            };
            let key = key_of(&call.command, &target);
            // Held here already (this node owns the key, or still holds it from before a
            // membership change; invalidations reach every node): answered without a hop.
            let now = cache.now();
            if let (Some(found), _) = cache.memory().get(&key.id(), now) {
                return Ok((*found.entry.value).clone());
            }
            // Run exactly this version, wherever it is served, and not memoized again.
            let mut inner = call.command.clone();
            inner.cache = Some(Value::Bool(false));
            inner.version_constraint = Some(format!("={}", target.version));
            inner.function_id = Some(target.function_id.clone());
            let spec = json!({
                "key": key,
                "command": inner,
                "ttl_seconds": ask.ttl_seconds,
                "dependencies": ask.dependencies.iter().map(|d| match d {
                    Dependency::Tag(t) => json!(t),
                    Dependency::Key(k) => json!({"namespace": k.namespace(), "identifier": k.identifier(), "version": k.version()}),
                }).collect::<Vec<_>>(),
            });
            let memo = RpcCommand::new(
                call.command.name.clone(),
                BUILTIN,
                vec![json!(key.id().as_str()), spec],
            );
            let d = dispatcher
                .get()
                .ok_or_else(|| CallError::Overloaded("node stopping".into()))?;
            d.dispatch(Call {
                command: memo,
                constraint: None,
                request_id: call.request_id,
                depth: call.depth,
                deadline: call.deadline,
                // The hop to the key's owner is the node's: the caller's permission to call
                // the function was checked when it resolved.
                principal: crate::auth::Principal::system(),
            })
            .await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_arguments_give_one_key_whatever_their_order() {
        let target = Resolved {
            name: "f".into(),
            function_id: "f".into(),
            version: semver::Version::new(1, 0, 0),
            plugin: "p".into(),
            sha256: "abc".into(),
            rule: None,
        };
        let mut a = RpcCommand::new("x", "f", vec![json!({"b": 1, "a": [ {"d": 1, "c": 2} ]})]);
        let b = RpcCommand::new("y", "f", vec![json!({"a": [ {"c": 2, "d": 1} ], "b": 1})]);
        assert_eq!(key_of(&a, &target), key_of(&b, &target));
        a.args = vec![json!({"b": 2})];
        assert_ne!(key_of(&a, &target), key_of(&b, &target));
        let other = Resolved {
            sha256: "def".into(),
            ..target.clone()
        };
        assert_ne!(key_of(&b, &other), key_of(&b, &target), "another build");
        assert_eq!(key_of(&b, &target).tags, ["memo:p@1.0.0"]);
    }

    #[test]
    fn what_a_command_may_ask() {
        assert_eq!(ask(&json!(true)).expect("true"), Some(Ask::default()));
        assert_eq!(ask(&json!(false)).expect("false"), None);
        let a = ask(&json!({"ttl_seconds": 5, "dependencies": ["dataset:v2"]}))
            .expect("object")
            .expect("asks");
        assert_eq!(a.ttl_seconds, Some(5.0));
        assert_eq!(a.dependencies, [Dependency::Tag("dataset:v2".into())]);
        assert!(ask(&json!({"ttl": 5})).is_err());
        assert!(ask(&json!({"ttl_seconds": -1})).is_err());
        assert!(ask(&json!("yes")).is_err());
    }
}
