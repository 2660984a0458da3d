//! Run with: `cargo run -p mpreg-examples --example demo`
//!
//! Starts a node on an embedded default (127.0.0.1, free port, no external service) with the
//! example plugins, then calls it over a real WebSocket: single calls, typed records, a 3-step
//! dependency chain, a fan-out/fan-in, versions side by side, `locs` routing, a misbehaving
//! plugin failing alone, and a plugin published over HTTP that calls other functions.

use anyhow::Result;
use mpreg::client::Client;
use mpreg::config::NodeConfig;
use mpreg::protocol::RpcCommand;
use serde_json::{Value, json};

fn plugin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("MPREG_PLUGIN_DIR")).join(format!("mpreg_plugin_{name}.wasm"))
}

fn show(title: &str, v: &Value) {
    println!(
        "{title}\n    {}",
        serde_json::to_string(v).unwrap_or_default()
    );
}

#[tokio::main]
async fn main() -> Result<()> {
    let mut cfg = NodeConfig::default();
    cfg.server.port = 0;
    cfg.node.resources = vec!["demo-box".into()];
    cfg.runtime.call_timeout_ms = 500;
    cfg.admin.token = Some("demo-admin-token-0123".into());
    cfg.plugins = ["math", "text", "pipeline", "chaos", "greeter", "greeter2"]
        .into_iter()
        .map(|name| plugin(name).into())
        .collect();
    let node = mpreg::node::start(cfg).await?;
    println!("node {} listening on {}\n", node.info().node_id, node.url());

    let client = Client::connect(&node.url()).await?;
    show(
        "add(2, 3)",
        &client.call("add", vec![json!(2), json!(3)]).await?,
    );
    show(
        "centroid([{x:0,y:0},{x:4,y:2}])  (records in, record out)",
        &client
            .call(
                "centroid",
                vec![json!([{"x": 0, "y": 0}, {"x": 4, "y": 2}])],
            )
            .await?,
    );
    show(
        "safe_div(1, 0)  (option → null)",
        &client.call("safe_div", vec![json!(1), json!(0)]).await?,
    );

    // 3-step chain: each command names the one before it; the node orders and substitutes.
    let r = client
        .request(vec![
            RpcCommand::new("raw", "ingest", vec![json!("3, 1, oops, 4, 1, 5, 9, 2, 6")]),
            RpcCommand::new("clean", "clean", vec![json!("raw")]),
            RpcCommand::new("stats", "analyze", vec![json!("clean")]),
        ])
        .await?;
    show(
        "chain ingest → clean → analyze  (reply holds only the last level)",
        &Value::Object(r),
    );

    // Fan-out / fan-in: three scalings run concurrently, then merge, then total.
    let mut cmds = vec![RpcCommand::new(
        "data",
        "clean",
        vec![json!([1.0, 2.0, null, 3.0])],
    )];
    for f in 1..=3 {
        cmds.push(RpcCommand::new(
            format!("x{f}"),
            "scale",
            vec![json!("data"), json!(f)],
        ));
    }
    cmds.push(RpcCommand::new(
        "merged",
        "merge",
        vec![json!(["x1", "x2", "x3"])],
    ));
    cmds.push(RpcCommand::new("sum", "total", vec![json!("merged")]));
    cmds.push(RpcCommand::new("shape", "stats", vec![json!("merged")]));
    show(
        "fan-out scale×3 → merge → {total, stats}",
        &Value::Object(client.request(cmds).await?),
    );

    // Versions side by side, picked by constraint or by resource tags.
    show(
        "greet (newest)",
        &client.call("greet", vec![json!("ada")]).await?,
    );
    let mut v1 = RpcCommand::new("greet", "greet", vec![json!("ada")]);
    v1.version_constraint = Some(">=1.0, <2".into());
    show(
        "greet with version '>=1.0, <2'",
        &client.call_command(v1).await?,
    );
    let mut gpu = RpcCommand::new("greet", "greet", vec![json!("ada")]);
    gpu.locs = vec!["gpu".into()];
    show("greet with locs [gpu]", &client.call_command(gpu).await?);

    // Bad input and bad plugins fail alone, with clear errors.
    for (fun, args) in [
        ("add", vec![json!(1), json!("two")]),
        ("spin", vec![]),
        ("boom", vec![json!("on purpose")]),
    ] {
        match client.call(fun, args).await {
            Ok(v) => show(&format!("{fun} unexpectedly returned"), &v),
            Err(e) => println!("{fun} → {e}"),
        }
    }
    show(
        "\nstill serving: echo",
        &client.call("echo", vec![json!("done")]).await?,
    );

    // Publish a plugin to the running node over its admin API, then call it: `relay.double`
    // calls `add` through the node (the host's `call` import).
    let relay = std::fs::read(plugin("relay"))?;
    let admin = mpreg::admin_client::AdminClient::new(&node.url(), "demo-admin-token-0123");
    let published =
        tokio::task::spawn_blocking(move || admin.publish(&relay, None, &mut |_| {})).await??;
    println!(
        "\npublished {} {} over HTTP: {:?}",
        published.name, published.version, published.functions
    );
    show(
        "double(21)  (a published plugin calling add through the node)",
        &client.call("double", vec![json!(21)]).await?,
    );
    node.shutdown().await;
    Ok(())
}
