//! Authentication and authorization against a real node (docs/security.md): API keys and JWTs
//! on the upgrade, refusals before a session starts, per-identity permissions checked for every
//! command of a request (before any runs), for the nested calls and host imports of the plugins
//! it calls, for pub/sub, queues and the cache, and listings that show only what may be called.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use mpreg::auth::jwt::{Claims, mint};
use mpreg::auth::keys::KeysFile;
use mpreg::auth::policy::PolicySpec;
use mpreg::client::{Client, ClientError, ConnectOptions};
use mpreg::config::NodeConfig;
use mpreg::config::auth::JwtKeyConfig;
use mpreg::protocol::{RpcCommand, codes};
use mpreg_tests::{TestNode, test_config};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes!!";

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Keys of a node with roles `calc` (alice), `root` (everything) and `ops` (admin read):
/// returns the config and the keys, in that order.
fn secured(dir: &Path) -> Result<(NodeConfig, String, String, String)> {
    let keys_path = dir.join("keys.toml");
    let mut file = KeysFile::default();
    let (alice, _) = file.add("alice", strings(&["calc"]))?;
    let (root, _) = file.add("root", strings(&["root"]))?;
    let (ops, _) = file.add("ops", strings(&["ops"]))?;
    file.save(&keys_path)?;
    std::fs::write(dir.join("jwt.secret"), SECRET)?;
    let mut cfg = test_config();
    let mut relay: mpreg::config::PluginSpec = mpreg_tests::plugin("relay").into();
    relay.sandbox.cache_namespaces = strings(&["relay"]);
    cfg.plugins
        .retain(|p| !p.path.ends_with("mpreg_plugin_relay.wasm"));
    cfg.plugins.push(relay);
    cfg.server.tcp_port = Some(0);
    cfg.auth.keys_file = Some(keys_path);
    cfg.auth.jwt = vec![JwtKeyConfig {
        algorithm: "HS256".into(),
        secret_env: None,
        secret_file: Some(dir.join("jwt.secret")),
        public_key_file: None,
        issuer: None,
        audience: None,
        leeway_s: 0,
    }];
    cfg.auth.roles.insert(
        "calc".into(),
        PolicySpec {
            functions: strings(&[
                "double", "announce", "enqueue", "visit", "upper", "greet@<2",
            ]),
            publish: strings(&["news.#"]),
            subscribe: strings(&["news.#", "!news.secret.#"]),
            queue_send: strings(&["jobs"]),
            cache_read: strings(&["public"]),
            ..PolicySpec::default()
        },
    );
    cfg.auth
        .roles
        .insert("root".into(), PolicySpec::everything());
    cfg.auth.roles.insert(
        "ops".into(),
        PolicySpec {
            admin: strings(&["read"]),
            ..PolicySpec::default()
        },
    );
    Ok((cfg, alice, root, ops))
}

fn with_key(key: &str) -> ConnectOptions {
    ConnectOptions {
        api_key: Some(key.to_owned()),
        ..Default::default()
    }
}

fn with_token(token: &str) -> ConnectOptions {
    ConnectOptions {
        auth_token: Some(token.to_owned()),
        ..Default::default()
    }
}

/// The wire code of a failed call, and its details as text.
fn failure(r: Result<Value, ClientError>) -> Result<(i64, String)> {
    match r {
        Err(ClientError::Rpc { code, details, .. }) => Ok((code, details.to_string())),
        other => anyhow::bail!("expected an RPC error, got {other:?}"),
    }
}

fn refused_with(r: Result<Client, ClientError>, status: &str) -> Result<String> {
    match r {
        Err(e) => {
            let text = e.to_string();
            ensure!(text.contains(status), "expected {status}: {text}");
            Ok(text)
        }
        Ok(_) => anyhow::bail!("connected, expected {status}"),
    }
}

fn now() -> u64 {
    mpreg::clock::unix_now() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_are_authenticated_on_the_upgrade() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (cfg, alice, _, _) = secured(dir.path())?;
    let node = TestNode::with_config(cfg).await?;
    // No credential, an unknown key, a bad token: refused before a session starts, saying
    // why, never echoing what was sent.
    refused_with(Client::connect(&node.url).await, "401")?;
    let guess = "mpreg_0000000000000000000000000000000000000000000000000000000000000000";
    let text = refused_with(
        Client::connect_with(&node.url, &with_key(guess)).await,
        "401",
    )?;
    ensure!(!text.contains(guess), "the key is echoed: {text}");
    refused_with(
        Client::connect_with(&node.url, &with_token("eyJhbGciOi.not.a-token")).await,
        "401",
    )?;
    // A key, and a JWT signed with the configured secret, are let in as their identity.
    let by_key = Client::connect_with(&node.url, &with_key(&alice)).await?;
    ensure!(by_key.call("echo", vec![json!(1)]).await? == json!(1));
    let claims = |exp: u64| Claims {
        sub: "bob".into(),
        exp,
        nbf: None,
        iat: None,
        iss: None,
        aud: None,
        roles: strings(&["calc"]),
        mpreg: None,
    };
    let token = mint(&claims(now() + 600), "HS256", SECRET.as_bytes())?;
    let by_token = Client::connect_with(&node.url, &with_token(&token)).await?;
    ensure!(by_token.call("upper", vec![json!("hi")]).await? == json!("HI"));
    let (code, details) = failure(by_token.call("add", vec![json!(1), json!(2)]).await)?;
    ensure!(code == codes::UNAUTHORIZED, "{code}: {details}");
    ensure!(
        details.contains("'bob' is not allowed to call function 'add'"),
        "{details}"
    );
    // An expired token is refused.
    let expired = mint(&claims(now() - 120), "HS256", SECRET.as_bytes())?;
    let text = refused_with(
        Client::connect_with(&node.url, &with_token(&expired)).await,
        "401",
    )?;
    ensure!(text.contains("expired"), "{text}");
    // MPREG's TCP transport carries no headers: without a client certificate or an anonymous
    // role it is closed before a session starts.
    let tcp = node.handle.tcp_url().context("tcp is on")?;
    let refused = match Client::connect(&tcp).await {
        Ok(c) => c.call("echo", vec![json!(1)]).await.is_err(),
        Err(_) => true,
    };
    ensure!(refused, "an anonymous TCP client was served");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command_and_nested_call_is_authorized_before_anything_runs() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (cfg, alice, root, _) = secured(dir.path())?;
    let node = TestNode::with_config(cfg).await?;
    let root = Client::connect_with(&node.url, &with_key(&root)).await?;
    root.call("queue.create", vec![json!("jobs")]).await?;
    let alice = Client::connect_with(&node.url, &with_key(&alice)).await?;
    // A denied step in a 3-step request fails the request before the first step runs: the
    // allowed `queue.send` of step one leaves nothing in the queue.
    let steps = vec![
        RpcCommand::new("sent", "queue.send", vec![json!("jobs"), json!({"n": 1})]),
        RpcCommand::new("up", "upper", vec![json!("x")]),
        RpcCommand::new("sum", "add", vec![json!(1), json!(2)]),
    ];
    match alice.request(steps).await {
        Err(ClientError::Rpc { code, details, .. }) => {
            ensure!(code == codes::UNAUTHORIZED, "{code}: {details}");
            ensure!(details.to_string().contains("'sum'"), "{details}");
        }
        other => anyhow::bail!("the request ran: {other:?}"),
    }
    let stats = root.call("queue.stats", vec![json!("jobs")]).await?;
    ensure!(stats["messages"] == json!(0), "a step ran: {stats}");
    // The same request without the denied step runs.
    let steps = vec![
        RpcCommand::new("sent", "queue.send", vec![json!("jobs"), json!({"n": 1})]),
        RpcCommand::new("up", "upper", vec![json!("x")]),
    ];
    let out = alice.request(steps).await?;
    ensure!(out["up"] == json!("X"), "{out:?}");
    // A plugin calls with its caller's permissions: relay.double's nested `add` is refused.
    let (code, details) = failure(alice.call("double", vec![json!(2)]).await)?;
    ensure!(code == codes::EXECUTION_FAILED, "{code}: {details}");
    ensure!(
        details.contains("'alice' is not allowed to call function 'add'"),
        "{details}"
    );
    ensure!(root.call("double", vec![json!(2)]).await? == json!(4));
    // ...and so are its host imports: a publish outside `news.#`, a queue it may not send to,
    // a cache namespace it may not write.
    let (_, details) = failure(
        alice
            .call("announce", vec![json!("audit.x"), json!("{}")])
            .await,
    )?;
    ensure!(details.contains("publish to topic 'audit.x'"), "{details}");
    ensure!(
        alice
            .call("announce", vec![json!("news.x"), json!("{}")])
            .await
            .is_ok()
    );
    let (_, details) = failure(
        alice
            .call("enqueue", vec![json!("other"), json!("{}"), json!(0)])
            .await,
    )?;
    ensure!(details.contains("send to queue 'other'"), "{details}");
    let (_, details) = failure(alice.call("visit", vec![json!("home")]).await)?;
    ensure!(
        details.contains("write cache namespace 'relay'"),
        "{details}"
    );
    // A version constraint in a permission: `greet@<2` gets 1.0.0 although 2.0.0 is newer, and
    // asking for 2.x is refused, not "not found".
    let hello = alice.call("greet", vec![json!("ada")]).await?;
    ensure!(hello.to_string().contains("1.0.0"), "{hello}");
    let mut v2 = RpcCommand::new("g", "greet", vec![json!("ada")]);
    v2.version_constraint = Some(">=2".into());
    let (code, details) = failure(alice.call_command(v2).await)?;
    ensure!(code == codes::UNAUTHORIZED, "{code}: {details}");
    ensure!(details.contains("version 2.0.0"), "{details}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pubsub_queues_and_the_cache_are_held_to_the_policy() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (cfg, alice, root, _) = secured(dir.path())?;
    let node = TestNode::with_config(cfg).await?;
    let root = Client::connect_with(&node.url, &with_key(&root)).await?;
    root.call("queue.create", vec![json!("jobs")]).await?;
    root.call("cache.put", vec![json!("public"), json!("k"), json!(7)])
        .await?;
    let alice = Client::connect_with(&node.url, &with_key(&alice)).await?;
    // Subscriptions: inside `news.#` and clear of `news.secret.#`.
    for denied in ["#", "news.secret.plans", "news.*.plans", "audit.log"] {
        let r = alice.subscribe("s", &[denied], None).await;
        match r {
            Err(ClientError::Refused(why)) => {
                ensure!(why.contains("not allowed to subscribe"), "{denied}: {why}")
            }
            other => anyhow::bail!("{denied} was allowed: {:?}", other.is_ok()),
        }
    }
    let mut sub = alice.subscribe("ok", &["news.public.#"], None).await?;
    // Publishing: `news.#` only.
    match alice.publish("audit.log", json!(1)).await {
        Err(ClientError::Refused(why)) => ensure!(why.contains("publish to topic"), "{why}"),
        other => anyhow::bail!("published: {other:?}"),
    }
    alice.publish("news.public.a", json!(2)).await?;
    let note = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await?
        .context("notification")?;
    ensure!(note.message["payload"] == json!(2), "{}", note.message);
    // Queues: send allowed, receive and administration refused; a push subscription to the
    // queue's topic needs receive too.
    alice
        .call("queue.send", vec![json!("jobs"), json!({"n": 1})])
        .await?;
    for (fun, args) in [
        ("queue.receive", json!(["jobs"])),
        ("queue.purge", json!(["jobs"])),
        ("queue.create", json!(["mine"])),
    ] {
        let args = args.as_array().cloned().unwrap_or_default();
        let (code, details) = failure(alice.call(fun, args).await)?;
        ensure!(code == codes::UNAUTHORIZED, "{fun}: {code} {details}");
    }
    ensure!(
        alice
            .subscribe("push", &["mpreg.queue.jobs"], None)
            .await
            .is_err()
    );
    // The cache: read `public`, write nothing; the original's cache-request envelope too.
    ensure!(
        alice
            .call("cache.get", vec![json!("public"), json!("k")])
            .await?
            == json!(7)
    );
    let (code, _) = failure(
        alice
            .call("cache.put", vec![json!("public"), json!("k"), json!(8)])
            .await,
    )?;
    ensure!(code == codes::UNAUTHORIZED);
    let (code, _) = failure(
        alice
            .call("cache.get", vec![json!("private"), json!("k")])
            .await,
    )?;
    ensure!(code == codes::UNAUTHORIZED);
    let put =
        json!({"operation": "put", "key": {"namespace": "public", "identifier": "k"}, "value": 9});
    let resp = alice.cache_request(put).await?;
    ensure!(resp["status"] == json!("error"), "{resp}");
    ensure!(
        resp["error_message"]
            .as_str()
            .is_some_and(|e| e.contains("write cache namespace 'public'")),
        "{resp}"
    );
    ensure!(
        root.call("cache.get", vec![json!("public"), json!("k")])
            .await?
            == json!(7)
    );
    Ok(())
}

fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|i| i["identity"]["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_show_what_may_be_called_and_admin_scopes_are_enforced() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (cfg, alice, root, ops) = secured(dir.path())?;
    let node = TestNode::with_config(cfg).await?;
    let alice_c = Client::connect_with(&node.url, &with_key(&alice)).await?;
    let root_c = Client::connect_with(&node.url, &with_key(&root)).await?;
    let mine = names(&alice_c.call("rpc_list", vec![]).await?);
    let all = names(&root_c.call("rpc_list", vec![]).await?);
    ensure!(mine.contains(&"double".to_owned()), "{mine:?}");
    ensure!(!mine.contains(&"add".to_owned()), "{mine:?}");
    ensure!(all.contains(&"add".to_owned()), "{all:?}");
    ensure!(
        mine.iter().filter(|n| *n == "greet").count() == 1,
        "only greet 1.x: {mine:?}"
    );
    let hidden = alice_c.call("rpc_describe", vec![json!("add")]).await?;
    ensure!(names(&hidden).is_empty(), "{hidden}");
    let shown = root_c.call("rpc_describe", vec![json!("add")]).await?;
    ensure!(names(&shown) == ["add"], "{shown}");
    // Monitoring needs the admin scope `read`; the admin API checks each route's scope.
    let status = |method: &'static str, path: &'static str, key: Option<String>| {
        let url = node.url.clone();
        async move {
            let headers: Vec<(&str, &str)> =
                key.iter().map(|k| ("X-API-Key", k.as_str())).collect();
            mpreg_tests::http_request(&url, method, path, &headers)
                .await
                .map(|(s, _)| s)
        }
    };
    ensure!(status("GET", "/metrics", None).await? == 401);
    ensure!(status("GET", "/metrics", Some(ops.clone())).await? == 200);
    ensure!(status("GET", "/monitor/varz", Some(alice.clone())).await? == 403);
    ensure!(status("GET", "/admin/plugins", Some(ops.clone())).await? == 200);
    ensure!(
        status("DELETE", "/admin/plugins/math/0.1.0", Some(ops.clone())).await? == 403,
        "read may not retire"
    );
    ensure!(status("GET", "/health", None).await? == 200);
    let bearer = format!("Bearer {}", mpreg_tests::ADMIN_TOKEN);
    let (code, _) = mpreg_tests::http_request(
        &node.url,
        "GET",
        "/admin/plugins",
        &[("Authorization", &bearer)],
    )
    .await?;
    ensure!(code == 200, "the admin token still works: {code}");
    let (_, scrape) =
        mpreg_tests::http_request(&node.url, "GET", "/metrics", &[("X-API-Key", &ops)]).await?;
    ensure!(
        scrape.contains("mpreg_auth_refused_total{surface=\"monitoring\""),
        "refusals counted: {scrape}"
    );
    Ok(())
}
