//! What each `cache.*` built-in asks of its caller's policy: `cache_read` or `cache_write` on
//! the namespace it names. Read from the command's JSON as it arrives (before the service
//! parses it), so the dispatcher can refuse a call before it is placed; a call whose namespace
//! cannot be found fails on its own arguments when it runs, and is not refused here.
//!
//! An operation that names no namespace (`cache.stats` of every namespace, an envelope that
//! invalidates by pattern across them) needs the permission on `*`, which only a rule that
//! covers every namespace grants.

use serde_json::Value;

use crate::auth::policy::Need;
use crate::auth::{Denied, Principal};
use crate::protocol::RpcCommand;

/// Whether an operation reads or changes a namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
}

/// The built-in the `cache-request` envelope is served by (`cache::api`).
pub const REQUEST: &str = "cache.request";
/// The built-in that runs an envelope on one named node (`cache::api`'s fan-out).
pub const LOCAL: &str = "cache.local";
/// The built-in that serves a memoized call on its key's owner (`cache::memo`).
pub const MEMO: &str = "cache.memo";

/// Namespace a namespace-less operation is checked on.
const EVERY: &str = "*";

/// `Ok` when `principal` may run `cmd`.
pub fn check(principal: &Principal, cmd: &RpcCommand) -> Result<(), Denied> {
    if cmd.fun == MEMO {
        // The memoizer's hop to a key's owner: node-internal, a function like any other to
        // whoever else asks.
        return principal.check(&Need::Call {
            name: &cmd.fun,
            function_id: &cmd.fun,
            version: None,
        });
    }
    let Some((kind, namespace)) = needs(cmd) else {
        return Ok(());
    };
    principal.check(&match kind {
        Kind::Read => Need::CacheRead(namespace),
        Kind::Write => Need::CacheWrite(namespace),
    })
}

/// What `cmd` reads or writes, when it can be told.
fn needs(cmd: &RpcCommand) -> Option<(Kind, &str)> {
    let first = cmd.args.first();
    let named = || {
        first
            .and_then(|a| a.as_str().or_else(|| a.get("namespace")?.as_str()))
            .or_else(|| cmd.kwargs.get("namespace")?.as_str())
    };
    Some(match cmd.fun.as_str() {
        "cache.get" | "cache.entry" | "cache.mget" | "cache.keys" => (Kind::Read, named()?),
        "cache.stats" => (Kind::Read, named().unwrap_or(EVERY)),
        "cache.put"
        | "cache.delete"
        | "cache.invalidate"
        | "cache.incr"
        | "cache.cas"
        | "cache.test_and_set"
        | "cache.set_if_absent"
        | "cache.mset"
        | "cache.structure" => (Kind::Write, named()?),
        "cache.namespace" => {
            let op = first?;
            let kind = match op.get("operation_type")?.as_str()? {
                "clear" => Kind::Write,
                _ => Kind::Read,
            };
            (kind, op.get("namespace")?.as_str()?)
        }
        REQUEST => frame(first?)?,
        LOCAL => frame(cmd.args.get(1)?)?,
        _ => return None,
    })
}

/// What a `cache-request` envelope reads or writes.
fn frame(frame: &Value) -> Option<(Kind, &str)> {
    let kind = match frame.get("operation")?.as_str()? {
        "get" | "query" | "stats" => Kind::Read,
        "namespace" => match frame
            .get("namespace_operation")?
            .get("operation_type")?
            .as_str()?
        {
            "clear" => Kind::Write,
            _ => Kind::Read,
        },
        _ => Kind::Write,
    };
    let namespace = frame
        .get("key")
        .and_then(|k| k.get("namespace"))
        .or_else(|| frame.get("namespace_operation")?.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(EVERY);
    Some((kind, namespace))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;
    use crate::auth::policy::{Policy, PolicySpec};

    fn reader_of_public() -> Principal {
        let p = Policy::new(PolicySpec {
            cache_read: vec!["public".into(), "shared.*".into()],
            cache_write: vec!["shared.*".into()],
            ..PolicySpec::default()
        })
        .expect("policy");
        Principal::new("reader", Arc::new(p))
    }

    fn cmd(fun: &str, args: Vec<Value>) -> RpcCommand {
        RpcCommand::new("c", fun, args)
    }

    #[test]
    fn reads_and_writes_are_checked_on_the_namespace_named() {
        let p = reader_of_public();
        assert!(check(&p, &cmd("cache.get", vec![json!("public"), json!("k")])).is_ok());
        let e = check(
            &p,
            &cmd("cache.put", vec![json!("public"), json!("k"), json!(1)]),
        )
        .expect_err("write denied");
        assert!(
            e.to_string().contains("write cache namespace 'public'"),
            "{e}"
        );
        assert!(
            check(
                &p,
                &cmd("cache.put", vec![json!("shared.x"), json!("k"), json!(1)])
            )
            .is_ok()
        );
        let keyed = json!({"namespace": "secret", "identifier": "k"});
        assert!(check(&p, &cmd("cache.get", vec![keyed])).is_err());
        let mut by_kw = cmd("cache.get", vec![]);
        by_kw.kwargs.insert("namespace".into(), json!("secret"));
        assert!(check(&p, &by_kw).is_err());
    }

    #[test]
    fn envelopes_namespace_operations_and_stats_are_checked_too() {
        let p = reader_of_public();
        let get = json!({"operation": "get", "key": {"namespace": "public", "identifier": "k"}});
        assert!(check(&p, &cmd(REQUEST, vec![get, json!("n1")])).is_ok());
        let put = json!({"operation": "put", "key": {"namespace": "public", "identifier": "k"}});
        assert!(check(&p, &cmd(REQUEST, vec![put.clone(), json!("n1")])).is_err());
        assert!(check(&p, &cmd(LOCAL, vec![json!("n1"), put])).is_err());
        let clear = json!({"operation_type": "clear", "namespace": "public"});
        assert!(check(&p, &cmd("cache.namespace", vec![clear])).is_err());
        let list = json!({"operation_type": "list_keys", "namespace": "public"});
        assert!(check(&p, &cmd("cache.namespace", vec![list])).is_ok());
        assert!(
            check(&p, &cmd("cache.stats", vec![])).is_err(),
            "every namespace"
        );
        assert!(check(&p, &cmd("cache.stats", vec![json!("public")])).is_ok());
        assert!(check(&p, &cmd(MEMO, vec![])).is_err(), "internal");
        assert!(check(&Principal::system(), &cmd(MEMO, vec![])).is_ok());
    }

    #[test]
    fn a_call_without_a_namespace_is_left_to_fail_on_its_arguments() {
        let p = reader_of_public();
        assert!(check(&p, &cmd("cache.get", vec![json!(42)])).is_ok());
    }
}
