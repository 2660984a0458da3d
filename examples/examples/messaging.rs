//! Run with: `cargo run -p mpreg-examples --example messaging`
//!
//! Pub/sub and queues on one node with a data directory: a subscription with wildcards and a
//! backlog, a plugin publishing through its import, a request streaming its levels to a topic,
//! a durable queue with priorities, a visibility timeout, dead letters and redrive, and a push
//! consumer fed through pub/sub.

use std::time::Duration;

use anyhow::{Context, Result};
use mpreg::client::Client;
use mpreg::config::NodeConfig;
use mpreg::protocol::{RpcCommand, RpcRequest};
use serde_json::json;

fn plugin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("MPREG_PLUGIN_DIR")).join(format!("mpreg_plugin_{name}.wasm"))
}

#[tokio::main]
async fn main() -> Result<()> {
    let data = tempfile::tempdir()?;
    let mut cfg = NodeConfig::default();
    cfg.server.port = 0;
    cfg.node.data_dir = Some(data.path().to_path_buf());
    cfg.plugins = vec![plugin("relay").into(), plugin("math").into()];
    let node = mpreg::node::start(cfg).await?;
    println!("node at {}", node.url());
    let c = Client::connect(&node.url()).await?;

    println!("\n== pub/sub ==");
    let first = c.publish("orders.eu.created", json!({"id": 1})).await?;
    println!("published {first} before anyone subscribed (it is retained)");
    let mut sub = c
        .subscribe(
            "dashboard",
            &["orders.*.created", "audit.#"],
            Some(Duration::from_secs(60)),
        )
        .await?;
    c.publish("orders.us.created", json!({"id": 2})).await?;
    // A plugin publishes through its `publish` import.
    c.call(
        "announce",
        vec![json!("audit.plugin"), json!(r#"{"by":"relay"}"#)],
    )
    .await?;
    for _ in 0..3 {
        let n = sub.next().await.context("notification")?;
        println!(
            "  {:<44} topic {:<18} payload {}",
            n.u, n.message["topic"], n.message["payload"]
        );
    }
    // A request whose levels are published on a topic as they complete.
    let mut progress = c.subscribe("progress", &["jobs.#"], None).await?;
    let mut req = RpcRequest::new(
        "",
        vec![
            RpcCommand::new("a", "add", vec![json!(2), json!(3)]),
            RpcCommand::new("b", "mul", vec![json!("a"), json!(10)]),
        ],
    );
    req.intermediate_result_callback_topic = Some("jobs.42".into());
    let reply = c.send(req).await?;
    for _ in 0..2 {
        let n = progress.next().await.context("level")?;
        println!(
            "  level {} done: {}",
            n.message["payload"]["level_index"], n.message["payload"]["level_results"]
        );
    }
    println!("  reply: {}", json!(reply.r));

    println!("\n== queues ==");
    c.call(
        "queue.create",
        vec![
            json!("work"),
            json!({"order": "priority", "visibility_timeout_ms": 300, "max_receives": 2}),
        ],
    )
    .await?;
    for (task, priority) in [("resize", 1), ("bill", 9), ("email", 5)] {
        c.call(
            "queue.send",
            vec![json!("work"), json!(task), json!({"priority": priority})],
        )
        .await?;
    }
    let got = c
        .call("queue.receive", vec![json!("work"), json!({"max": 3})])
        .await?;
    let order: Vec<_> = got
        .as_array()
        .into_iter()
        .flatten()
        .map(|d| d["body"].clone())
        .collect();
    println!("received by priority: {order:?}");
    // Ack two; let the third's visibility timeout pass twice: it ends in the dead letters.
    for d in got.as_array().into_iter().flatten().take(2) {
        c.call("queue.ack", vec![json!("work"), d["receipt"].clone()])
            .await?;
    }
    let again = c
        .call(
            "queue.receive",
            vec![json!("work"), json!({"wait_ms": 2000})],
        )
        .await?;
    println!(
        "redelivered after the visibility timeout: attempt {}",
        again[0]["attempt"]
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    let dead = c.call("queue.peek", vec![json!("work.dlq")]).await?;
    println!(
        "dead letter: {} ({})",
        dead[0]["body"], dead[0]["dead_letter"]["reason"]
    );
    let moved = c.call("queue.redrive", vec![json!("work")]).await?;
    println!("redriven: {moved}");

    println!("\n== push consumer ==");
    c.call("queue.create", vec![json!("inbox")]).await?;
    let mut worker = c
        .subscribe("worker-1", &["mpreg.queue.inbox"], None)
        .await?;
    // A plugin sends through its `queue.send` import.
    c.call(
        "enqueue",
        vec![json!("inbox"), json!(r#"{"job":"thumbnail"}"#), json!(0)],
    )
    .await?;
    let n = worker.next().await.context("pushed")?;
    println!("pushed to worker-1: {}", n.message["payload"]);
    c.call(
        "queue.ack",
        vec![json!("inbox"), n.message["headers"]["receipt"].clone()],
    )
    .await?;
    println!(
        "stats: {}",
        c.call("queue.stats", vec![json!("inbox")]).await?
    );
    node.shutdown().await;
    Ok(())
}
