//! `relay`: functions that call other functions through the host's `call` import, including one
//! that recurses without end so the node's depth limit can be seen to stop it.

use mpreg_plugin_sdk::call::{self, CallOptions};
use mpreg_plugin_sdk::{Command, Manifest};

mpreg_plugin_sdk::plugin! {
    wit: "../../wit",
    inline: r#"
        package mpreg-examples:relay;

        world relay {
            include mpreg:plugin/plugin@0.1.0;

            /// `add(x, x)`, computed by whichever node function `add` is.
            export double: func(x: s32) -> result<s32, string>;
            /// Calls `fun` with the JSON array `args` and returns its JSON result.
            export forward: func(fun: string, args: string) -> result<string, string>;
            /// Calls itself with `n + 1`, forever: only the depth limit ends it.
            export descend: func(n: u32) -> result<u32, string>;
            /// Calls `greet` pinned to a version constraint.
            export greet-version: func(name: string, version: string) -> result<string, string>;
            /// Publishes the JSON `payload` on `topic`; returns the message id.
            export announce: func(topic: string, payload: string) -> result<string, string>;
            /// Sends the JSON `body` to queue `name` with `priority`; returns the message id.
            export enqueue: func(name: string, body: string, priority: s64) -> result<string, string>;
            /// Counts a visit of `page` in the cache (namespace `relay`); the count so far.
            export visit: func(page: string) -> result<s64, string>;
            /// Looks `key` up in cache namespace `ns`; computes it with `fun(key)` and stores it
            /// for `ttl` seconds when absent. Returns `{"value", "cached"}` as JSON.
            export lookup: func(ns: string, key: string, fun: string, ttl: f64) -> result<string, string>;
            /// Whether secret `name` (through the `secrets` import) equals `guess`, and its
            /// length: never the value itself.
            export check-secret: func(name: string, guess: string) -> result<tuple<bool, u32>, string>;
        }
    "#,
    world: "mpreg-examples:relay/relay",
    export: Relay,
    describe: {
        Manifest::new("relay", env!("CARGO_PKG_VERSION"))
            .command(Command::new("double").describe("add(x, x) through a nested call"))
            .command(Command::new("forward").describe("Calls any function with JSON arguments"))
            .command(Command::new("descend").describe("Calls itself until the depth limit"))
            .command(
                Command::new("greet_version").describe("Calls greet with a version constraint"),
            )
            .command(Command::new("announce").describe("Publishes a message on a topic"))
            .command(Command::new("enqueue").describe("Sends a message to a queue"))
            .command(Command::new("visit").describe("Counts visits of a page in the cache"))
            .command(
                Command::new("lookup").describe("Read-through cache: computes and stores a miss"),
            )
            .command(
                Command::new("check_secret").describe("Compares a granted secret with a guess"),
            )
    },
}

struct Relay;

impl Guest for Relay {
    fn double(x: i32) -> Result<i32, String> {
        call::call("add", &[x.into(), x.into()]).map_err(|e| e.message())
    }

    fn forward(fun: String, args: String) -> Result<String, String> {
        call::call_json(&fun, &args, &CallOptions::default()).map_err(|e| e.message())
    }

    fn descend(n: u32) -> Result<u32, String> {
        mpreg_plugin_sdk::log::debug(&format!("recursing at depth {n}"));
        call::call("descend", &[(n + 1).into()]).map_err(|e| e.message())
    }

    fn greet_version(name: String, version: String) -> Result<String, String> {
        let options = CallOptions {
            version: Some(version),
            ..CallOptions::default()
        };
        call::call_with("greet", &[name.into()], &options).map_err(|e| e.message())
    }

    fn announce(topic: String, payload: String) -> Result<String, String> {
        mpreg_plugin_sdk::publish::publish_json(&topic, &payload)
    }

    fn enqueue(name: String, body: String, priority: i64) -> Result<String, String> {
        let body: serde_json::Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
        let options = mpreg_plugin_sdk::queue::SendOptions {
            priority,
            ..Default::default()
        };
        mpreg_plugin_sdk::queue::send_with(&name, &body, &options)
    }

    fn visit(page: String) -> Result<i64, String> {
        mpreg_plugin_sdk::cache::incr("relay", &format!("visits:{page}"), 1)
    }

    fn check_secret(name: String, guess: String) -> Result<(bool, u32), String> {
        let value = mpreg_plugin_sdk::secrets::get(&name)?;
        Ok((value == guess, value.len() as u32))
    }

    fn lookup(ns: String, key: String, fun: String, ttl: f64) -> Result<String, String> {
        use mpreg_plugin_sdk::cache;
        if let Some(v) = cache::get::<serde_json::Value>(&ns, &key)? {
            return Ok(serde_json::json!({"value": v, "cached": true}).to_string());
        }
        let v: serde_json::Value =
            call::call(&fun, &[key.clone().into()]).map_err(|e| e.message())?;
        let options = cache::PutOptions {
            ttl_seconds: Some(ttl),
            ..Default::default()
        };
        cache::put_with(&ns, &key, &v, &options)?;
        Ok(serde_json::json!({"value": v, "cached": false}).to_string())
    }
}
