//! Pub/sub and queue figures for `docs/benchmarks.md`: `cargo bench -p mpreg-tests --bench messaging`
//!
//! - publish → notification throughput over real WebSockets: one publisher connection keeps a
//!   window of publishes in flight; 1 and 10 subscriber connections each hold one subscription
//!   matching every message; the figure is notifications received per second by all of them;
//! - durable queue sends (a node with a data directory: each acknowledged send is flushed to
//!   disk): one by one with 64 in flight, and batched (`queue.send_batch` of 1000, 8 batches in flight);
//! - send + receive + ack: a producer and a consumer (receive max 100, ack the batch) at once.
//!
//! The node runs in this process on 127.0.0.1:0; clients and node share the machine's cores.
//! `MPREG_BENCH_ONLY=pubsub|queue` selects a part.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use mpreg::client::Client;
use mpreg_tests::{TestNode, test_config};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const RUN: Duration = Duration::from_secs(3);

async fn subscriber(
    url: &str,
    id: usize,
    count: Arc<AtomicU64>,
) -> Result<tokio::task::JoinHandle<()>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let sub = json!({"role": "pubsub-subscribe", "u": format!("s{id}"), "subscription": {
        "subscription_id": format!("sub-{id}"), "patterns": [{"pattern": "bench.#", "exact_match": false}],
        "subscriber": "bench", "created_at": 0.0, "get_backlog": false, "backlog_seconds": 0}});
    ws.send(Message::Text(sub.to_string().into())).await?;
    let ack = ws.next().await.ok_or_else(|| anyhow::anyhow!("closed"))??;
    ensure!(
        ack.to_text()?.contains("\"success\":true"),
        "subscribe failed: {ack:?}"
    );
    Ok(tokio::spawn(async move {
        while let Some(Ok(m)) = ws.next().await {
            if matches!(m, Message::Text(_)) {
                count.fetch_add(1, Ordering::Relaxed);
            }
        }
    }))
}

async fn pubsub(node: &TestNode, subscribers: usize) -> Result<()> {
    let counts: Vec<Arc<AtomicU64>> = (0..subscribers)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let mut tasks = Vec::new();
    for (i, c) in counts.iter().enumerate() {
        tasks.push(subscriber(&node.url, i, c.clone()).await?);
    }
    let slowest = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    };
    let total = || {
        counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum::<u64>()
    };
    let (ws, _) = tokio_tungstenite::connect_async(&node.url).await?;
    let (mut tx, mut rx) = ws.split();
    let payload = json!({"reading": 42.5, "unit": "C", "sensor": "s-17"}).to_string();
    // A publisher never waits for subscribers (a node acks a publish at once and cuts off a
    // subscriber that falls too far behind), so the bench paces itself on deliveries: at most
    // this many publishes ahead of what every subscriber has received.
    const AHEAD: u64 = 512;
    let acked = Arc::new(AtomicU64::new(0));
    let acks = {
        let acked = acked.clone();
        tokio::spawn(async move {
            while let Some(Ok(_)) = rx.next().await {
                acked.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let start = Instant::now();
    let (base, base_slowest) = (total(), slowest());
    let mut i = 0u64;
    while start.elapsed() < RUN {
        if slowest() - base_slowest + AHEAD < i {
            // Too far ahead of the slowest subscriber: send what is buffered, then wait.
            tx.flush().await?;
            let waited = Instant::now();
            while slowest() - base_slowest + AHEAD < i {
                ensure!(
                    waited.elapsed() < Duration::from_secs(5),
                    "a subscriber stopped receiving ({} cut off)",
                    node.handle
                        .exchange()
                        .stats
                        .slow_consumers
                        .load(Ordering::Relaxed)
                );
                tokio::time::sleep(Duration::from_micros(100)).await;
            }
        }
        // Built as text: the client's own JSON encoding would otherwise dominate this machine.
        let frame = format!(
            r#"{{"role":"pubsub-publish","u":"p{i}","message":{{"topic":"bench.sensor.{}","payload":{payload},"timestamp":0.0,"message_id":"m{i}","publisher":"bench","headers":{{}}}}}}"#,
            i % 64
        );
        tx.feed(Message::Text(frame.into())).await?;
        i += 1;
        if i.is_multiple_of(64) {
            tx.flush().await?;
        }
    }
    tx.flush().await?;
    let elapsed = start.elapsed().as_secs_f64();
    let delivered = total() - base;
    println!(
        "pubsub: {subscribers:>2} subscriber(s): {:>9.0} notifications/s received ({:.0} publishes/s acked, {i} sent in {elapsed:.1} s)",
        delivered as f64 / elapsed,
        acked.load(Ordering::Relaxed) as f64 / elapsed
    );
    let cut_off = node
        .handle
        .exchange()
        .stats
        .slow_consumers
        .load(Ordering::Relaxed);
    ensure!(
        cut_off == 0,
        "{cut_off} subscriber(s) cut off as slow consumers"
    );
    acks.abort();
    for t in tasks {
        t.abort();
    }
    Ok(())
}

async fn queue_sends(url: &str) -> Result<()> {
    let c = Client::connect(url).await?;
    c.call(
        "queue.create",
        vec![json!("one"), json!({"max_messages": 10_000_000})],
    )
    .await?;
    c.call(
        "queue.create",
        vec![json!("batched"), json!({"max_messages": 10_000_000})],
    )
    .await?;
    let body = json!({"order": 1234, "items": ["a", "b"], "total": 99.5});

    // One message per call, 64 calls in flight.
    let start = Instant::now();
    let mut n = 0u64;
    let mut inflight = FuturesUnordered::new();
    while start.elapsed() < RUN {
        while inflight.len() < 64 {
            inflight.push(c.call("queue.send", vec![json!("one"), body.clone()]));
        }
        if let Some(r) = inflight.next().await {
            r?;
            n += 1;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
        n += 1;
    }
    let e = start.elapsed().as_secs_f64();
    println!(
        "queue: durable send, 1 per call, 64 in flight: {:>8.0} messages/s",
        n as f64 / e
    );

    // Batches of 500, 4 batches in flight.
    let batch = json!(
        (0..500)
            .map(|_| json!({"body": body}))
            .collect::<Vec<Value>>()
    );
    let start = Instant::now();
    let mut n = 0u64;
    let mut inflight = FuturesUnordered::new();
    while start.elapsed() < RUN {
        while inflight.len() < 8 {
            inflight.push(c.call("queue.send_batch", vec![json!("batched"), batch.clone()]));
        }
        if let Some(r) = inflight.next().await {
            r?;
            n += 1000;
        }
    }
    while let Some(r) = inflight.next().await {
        r?;
        n += 1000;
    }
    let e = start.elapsed().as_secs_f64();
    println!(
        "queue: durable send, batches of 1000:         {:>8.0} messages/s",
        n as f64 / e
    );
    Ok(())
}

async fn send_receive_ack(url: &str) -> Result<()> {
    let p = Client::connect(url).await?;
    let c = Client::connect(url).await?;
    p.call(
        "queue.create",
        vec![json!("flow"), json!({"max_messages": 10_000_000})],
    )
    .await?;
    let body = json!({"job": 1});
    let batch = json!(
        (0..100)
            .map(|_| json!({"body": body}))
            .collect::<Vec<Value>>()
    );
    let start = Instant::now();
    let producer = async {
        let mut sent = 0u64;
        while start.elapsed() < RUN {
            p.call("queue.send_batch", vec![json!("flow"), batch.clone()])
                .await?;
            sent += 100;
        }
        anyhow::Ok(sent)
    };
    let consumer = async {
        let mut done = 0u64;
        while start.elapsed() < RUN + Duration::from_millis(500) {
            let got = c
                .call(
                    "queue.receive",
                    vec![json!("flow"), json!({"max": 100, "wait_ms": 100})],
                )
                .await?;
            let receipts: Vec<Value> = got
                .as_array()
                .map(|a| a.iter().map(|d| d["receipt"].clone()).collect())
                .unwrap_or_default();
            if receipts.is_empty() {
                continue;
            }
            let r = c
                .call("queue.ack", vec![json!("flow"), json!(receipts)])
                .await?;
            done += r["acked"].as_u64().unwrap_or(0);
        }
        anyhow::Ok(done)
    };
    let (sent, done) = tokio::try_join!(producer, consumer)?;
    let e = start.elapsed().as_secs_f64();
    println!(
        "queue: send (batches of 100) + receive (max 100) + ack, concurrently: {:>8.0} messages/s fully processed ({sent} sent)",
        done as f64 / e
    );
    Ok(())
}

fn main() -> Result<()> {
    let only = std::env::var("MPREG_BENCH_ONLY").unwrap_or_default();
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        if only.is_empty() || only == "pubsub" {
            let mut cfg = test_config();
            cfg.plugins.clear();
            let node = TestNode::with_config(cfg).await?;
            pubsub(&node, 1).await?;
            pubsub(&node, 10).await?;
        }
        if only.is_empty() || only == "queue" {
            let dir = tempfile::tempdir()?;
            let mut cfg = test_config();
            cfg.plugins.clear();
            cfg.node.data_dir = Some(dir.path().to_path_buf());
            let node = TestNode::with_config(cfg).await?;
            queue_sends(&node.url).await?;
            send_receive_ack(&node.url).await?;
        }
        anyhow::Ok(())
    })
}
