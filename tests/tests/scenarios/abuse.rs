//! Limits on what a client may send (docs/limits.md): commands per request, JSON nesting, and
//! request rates. A flooding connection is slowed to its rate (not read while over it) and
//! counted, while another client is still served.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use mpreg_tests::{TestNode, rpc_frame, test_config};
use serde_json::{Value, json};

#[tokio::test]
async fn too_many_commands_and_too_deep_json_are_refused_with_their_codes() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.max_commands_per_request = 3;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    let cmds: Vec<Value> = (0..4)
        .map(|i| json!({"name": format!("c{i}"), "fun": "echo", "args": [i]}))
        .collect();
    let reply = ws.roundtrip(&rpc_frame("many", Value::Array(cmds))).await?;
    ensure!(reply["error"]["code"] == 1008, "{reply}");
    let details = reply["error"]["details"].as_str().unwrap_or_default();
    ensure!(details.contains("at most 3"), "{details}");
    ensure!(details.contains("max_commands_per_request"), "{details}");
    // Nesting past serde_json's limit of 128 levels: a 1005 naming the problem, not a crash
    // or a deep recursion.
    let deep = format!("{}1{}", "[".repeat(200), "]".repeat(200));
    let text = format!(
        r#"{{"role":"rpc","u":"deep","cmds":[{{"name":"e","fun":"echo","args":[{deep}]}}]}}"#
    );
    ws.send_raw(&text).await?;
    let reply: Value = serde_json::from_str(&ws.recv_text().await?)?;
    ensure!(reply["error"]["code"] == 1005, "{reply}");
    ensure!(
        reply["error"]["details"]
            .as_str()
            .is_some_and(|d| d.contains("recursion limit")),
        "{reply}"
    );
    // Three commands are fine.
    let cmds: Vec<Value> = (0..3)
        .map(|i| json!({"name": format!("c{i}"), "fun": "echo", "args": [i]}))
        .collect();
    let reply = ws.roundtrip(&rpc_frame("ok", Value::Array(cmds))).await?;
    ensure!(reply["error"].is_null(), "{reply}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_connection_is_slowed_to_its_rate_and_others_are_served() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.max_requests_per_second = 400;
    let node = TestNode::with_config(cfg).await?;
    let mut flood = node.raw().await?;
    // 1,200 echoes at once: 400 pass on the burst, the other 800 at 400 a second.
    let started = Instant::now();
    flood.pipeline("echo", json!([1]), 1_200).await?;
    // Meanwhile another client is answered at once.
    let other = node.client().await?;
    let t = Instant::now();
    ensure!(other.call("echo", vec![json!(2)]).await? == json!(2));
    let other_took = t.elapsed();
    let mut got = 0;
    while got < 1_200 {
        let reply: Value = serde_json::from_str(&flood.recv_text().await?)?;
        ensure!(reply["error"].is_null(), "not refused, slowed: {reply}");
        got += 1;
    }
    let took = started.elapsed();
    ensure!(
        took >= Duration::from_millis(1_500),
        "1,200 requests at 400/s took only {took:?}"
    );
    ensure!(took < Duration::from_secs(20), "{took:?}");
    ensure!(
        other_took < Duration::from_millis(1_000),
        "the other client waited {other_took:?}"
    );
    let scrape = mpreg_tests::scrape(&node.url).await?;
    let throttled = mpreg_tests::sample(
        &scrape,
        "mpreg_throttled_total",
        &[("limit", "connection_requests")],
    );
    ensure!(throttled > 0.0, "pauses are counted");
    Ok(())
}
