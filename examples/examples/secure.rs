//! Run with: `cargo run -p mpreg-examples --example secure`
//!
//! A node that requires credentials (docs/security.md): an API keys file with two identities,
//! roles that say what each may call, publish and use, a JWT verified with a shared secret, a
//! client refused without a key, and the denials a restricted identity gets (a step of a
//! request, a plugin's nested call, a topic, a queue) while an unrestricted one is served.

use anyhow::Result;
use mpreg::auth::jwt::{Claims, mint};
use mpreg::auth::keys::KeysFile;
use mpreg::auth::policy::PolicySpec;
use mpreg::client::{Client, ConnectOptions};
use mpreg::config::NodeConfig;
use mpreg::config::auth::JwtKeyConfig;
use mpreg::protocol::RpcCommand;
use serde_json::json;

fn plugin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("MPREG_PLUGIN_DIR")).join(format!("mpreg_plugin_{name}.wasm"))
}

fn list(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    // The keys file holds only sha256 hashes; each key is printed once, here as by
    // `mpreg auth key new --keys-file keys.toml --name analyst --role analyst`.
    let keys_file = dir.path().join("keys.toml");
    let mut keys = KeysFile::default();
    let (analyst, _) = keys.add("analyst", list(&["analyst"]))?;
    let (ops, _) = keys.add("ops", list(&["ops"]))?;
    keys.save(&keys_file)?;
    let secret = "example-secret-of-at-least-32-bytes!!";
    std::fs::write(dir.path().join("jwt.secret"), secret)?;

    let mut cfg = NodeConfig::default();
    cfg.server.port = 0;
    cfg.plugins = vec![
        plugin("math").into(),
        plugin("relay").into(),
        plugin("text").into(),
    ];
    cfg.auth.keys_file = Some(keys_file);
    cfg.auth.jwt = vec![JwtKeyConfig {
        algorithm: "HS256".into(),
        secret_env: None,
        secret_file: Some(dir.path().join("jwt.secret")),
        public_key_file: None,
        issuer: None,
        audience: None,
        leeway_s: 30,
    }];
    cfg.auth.roles.insert(
        "analyst".into(),
        PolicySpec {
            functions: list(&["upper", "double"]),
            publish: list(&["reports.#"]),
            subscribe: list(&["reports.#"]),
            queue_send: list(&["jobs"]),
            ..PolicySpec::default()
        },
    );
    cfg.auth
        .roles
        .insert("ops".into(), PolicySpec::everything());
    let node = mpreg::node::start(cfg).await?;
    println!("node at {} (clients must authenticate)", node.url());

    println!("\n== who may connect ==");
    match Client::connect(&node.url()).await {
        Err(e) => println!("  no credential: {e}"),
        Ok(_) => anyhow::bail!("an anonymous client was let in"),
    }
    let key = |k: &str| ConnectOptions {
        api_key: Some(k.to_owned()),
        ..Default::default()
    };
    let ops = Client::connect_with(&node.url(), &key(&ops)).await?;
    let analyst = Client::connect_with(&node.url(), &key(&analyst)).await?;
    println!("  ops and analyst connected with their API keys");
    let token = mint(
        &Claims {
            sub: "dashboard".into(),
            exp: mpreg::clock::unix_now() as u64 + 600,
            nbf: None,
            iat: None,
            iss: None,
            aud: None,
            roles: list(&["analyst"]),
            mpreg: None,
        },
        "HS256",
        secret.as_bytes(),
    )?;
    let bearer = ConnectOptions {
        auth_token: Some(token),
        ..Default::default()
    };
    let dashboard = Client::connect_with(&node.url(), &bearer).await?;
    println!(
        "  'dashboard' connected with a JWT: upper('hi') = {}",
        dashboard.call("upper", vec![json!("hi")]).await?
    );

    println!("\n== what each may do ==");
    ops.call("queue.create", vec![json!("jobs")]).await?;
    let steps = vec![
        RpcCommand::new("sent", "queue.send", vec![json!("jobs"), json!({"n": 1})]),
        RpcCommand::new("sum", "add", vec![json!(1), json!(2)]),
    ];
    match analyst.request(steps.clone()).await {
        Err(e) => println!("  analyst, queue.send then add: {e}"),
        Ok(r) => anyhow::bail!("ran: {r:?}"),
    }
    let stats = ops.call("queue.stats", vec![json!("jobs")]).await?;
    println!(
        "  nothing ran: queue 'jobs' holds {} messages",
        stats["messages"]
    );
    let ran = serde_json::Value::Object(ops.request(steps).await?);
    println!("  ops, the same request: {ran}");
    match analyst.call("double", vec![json!(21)]).await {
        Err(e) => println!("  analyst, double(21) (calls add inside): {e}"),
        Ok(v) => anyhow::bail!("ran: {v}"),
    }
    println!(
        "  ops, double(21) = {}",
        ops.call("double", vec![json!(21)]).await?
    );
    match analyst.publish("audit.login", json!({})).await {
        Err(e) => println!("  analyst, publish to audit.login: {e}"),
        Ok(_) => anyhow::bail!("published"),
    }
    analyst.publish("reports.daily", json!({"rows": 3})).await?;
    println!("  analyst, publish to reports.daily: ok");
    let visible: Vec<String> = analyst.call("rpc_list", vec![]).await?["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| !i["identity"]["name"].as_str().unwrap_or("").contains('.'))
        .filter_map(|i| i["identity"]["name"].as_str().map(str::to_owned))
        .collect();
    println!("  analyst's rpc_list (without dotted built-ins): {visible:?}");
    node.shutdown().await;
    Ok(())
}
