//! Cluster figures for `docs/benchmarks.md`: `cargo bench -p mpreg-tests --bench cluster`
//!
//! - a call forwarded A → B (the client talks to A, only B has the function) vs the same call
//!   made on B directly,
//! - a 3-step chain whose steps can only run on three different nodes,
//! - throughput with 100 calls in flight through a coordinator that hosts nothing,
//! - formation: time until node 0 can call a function only the last node has, for 3 and 10
//!   nodes,
//! - failure detection: time from a crash until a survivor's catalog has dropped the node,
//! - state at once: subscribe on B (all example plugins loaded on every node, so each view
//!   rebuild has real entries), publish on A right after the ack, receive, unsubscribe: rounds
//!   per second and the subscribe ack's latency, beside a subscribe on a node alone.
//!
//! Nodes run in this process on 127.0.0.1:0 with the default gossip settings (100 ms rounds,
//! phi 8); calls go over real WebSockets and real peer links. `MPREG_BENCH_ONLY` selects parts.

use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mpreg::client::Client;
use mpreg::config::NodeConfig;
use mpreg::protocol::RpcCommand;
use mpreg_tests::{TestCluster, TestNode, eventually, plugin, test_config};
use serde_json::json;

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

/// A node with default cluster settings, tags `tags`, and the named plugins.
fn node(id: &str, tags: &[&str], plugins: &[&str]) -> NodeConfig {
    let mut cfg = test_config();
    cfg.node.id = Some(id.into());
    cfg.node.resources = tags.iter().map(|t| t.to_string()).collect();
    cfg.plugins = plugins.iter().map(|p| plugin(p).into()).collect();
    // Nodes without plugins need few instance slots; keeps 10 nodes in one process small.
    if plugins.is_empty() {
        cfg.runtime.max_instances = 8;
    }
    cfg
}

async fn sequential(client: &Client, cmds: &[RpcCommand], n: usize) -> Result<Vec<f64>> {
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        client.request(cmds.to_vec()).await?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(us)
}

async fn forwarded() -> Result<()> {
    let cluster = TestCluster::start(vec![node("a", &[], &[]), node("b", &[], &["text"])]).await?;
    let via_a = cluster.node(0).client().await?;
    let on_b = cluster.node(1).client().await?;
    let cmd = vec![RpcCommand::new("x", "identity", vec![json!("hello")])];
    sequential(&via_a, &cmd, 500).await?;
    sequential(&on_b, &cmd, 500).await?;
    let (f50, f99) = percentiles(sequential(&via_a, &cmd, 5000).await?);
    let (d50, d99) = percentiles(sequential(&on_b, &cmd, 5000).await?);
    println!("| call on B directly (5000 sequential) | {d50:.0} µs | {d99:.0} µs |");
    println!("| call A → B forwarded (5000 sequential) | {f50:.0} µs | {f99:.0} µs |");
    println!(
        "| forwarding adds | {:.0} µs | {:.0} µs |",
        f50 - d50,
        f99 - d99
    );

    // Chain across three nodes, asked of a fourth that has nothing.
    let cluster = TestCluster::start(vec![
        node("coord", &[], &[]),
        node("n-a", &["a"], &["math"]),
        node("n-b", &["b"], &["math"]),
        node("n-c", &["c"], &["math"]),
    ])
    .await?;
    let client = cluster.node(0).client().await?;
    let step = |name: &str, fun: &str, args, tag: &str| {
        let mut c = RpcCommand::new(name, fun, args);
        c.locs = vec![tag.to_owned()];
        c
    };
    let chain = vec![
        step("x", "add", vec![json!(1), json!(2)], "a"),
        step("y", "mul", vec![json!("x"), json!(10)], "b"),
        step("z", "add", vec![json!("y"), json!(5)], "c"),
    ];
    sequential(&client, &chain, 200).await?;
    let (c50, c99) = percentiles(sequential(&client, &chain, 2000).await?);
    println!("| 3-step chain, one step per node (2000 sequential) | {c50:.0} µs | {c99:.0} µs |");
    Ok(())
}

async fn through_coordinator() -> Result<()> {
    let cluster = TestCluster::start(vec![
        node("coord", &[], &[]),
        node("w1", &[], &["text"]),
        node("w2", &[], &["text"]),
    ])
    .await?;
    let client = cluster.node(0).client().await?;
    let run = Duration::from_secs(4);
    let until = Instant::now() + run;
    let mut workers = FuturesUnordered::new();
    for _ in 0..100 {
        let c = client.clone();
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                c.call("identity", vec![json!("x")]).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    while let Some(r) = workers.next().await {
        total += r??;
    }
    let calls = |i: usize| -> u64 {
        cluster
            .node(i)
            .handle
            .registry()
            .plugins()
            .iter()
            .map(|p| p.stats.calls.load(std::sync::atomic::Ordering::Relaxed))
            .sum()
    };
    println!(
        "| 100 in flight through a coordinator to 2 workers | {:.0} calls/s | split {} / {} |",
        total as f64 / run.as_secs_f64(),
        calls(1),
        calls(2)
    );
    Ok(())
}

/// Starts `n` nodes (the last alone has tag `last`) and returns (all started, formed, served)
/// in ms from the first start.
async fn formation(n: usize) -> Result<(f64, f64, f64)> {
    let t0 = Instant::now();
    let mut configs: Vec<NodeConfig> = (0..n - 1)
        .map(|i| node(&format!("f{n}-{i}"), &[], &[]))
        .collect();
    configs.push(node(&format!("f{n}-last"), &["last"], &["math"]));
    let first = TestNode::with_config(configs.remove(0)).await?;
    let seed = first.handle.addr().to_string();
    let mut starting = FuturesUnordered::new();
    for mut cfg in configs {
        cfg.cluster.peers = vec![seed.clone()];
        starting.push(TestNode::with_config(cfg));
    }
    let mut nodes = vec![Some(first)];
    while let Some(n) = starting.next().await {
        nodes.push(Some(n?));
    }
    let started = t0.elapsed().as_secs_f64() * 1000.0;
    let cluster = TestCluster::of_udp_nodes(nodes);
    cluster.wait_formed(Duration::from_secs(30)).await?;
    let formed = t0.elapsed().as_secs_f64() * 1000.0;
    let client = cluster.node(0).client().await?;
    let mut cmd = RpcCommand::new("x", "add", vec![json!(1), json!(2)]);
    cmd.locs = vec!["last".into()];
    eventually(Duration::from_secs(30), "remote function served", || {
        let (client, cmd) = (&client, cmd.clone());
        async move { client.call_command(cmd).await.is_ok() }
    })
    .await?;
    let served = t0.elapsed().as_secs_f64() * 1000.0;
    for n in cluster.nodes.iter().flatten() {
        n.handle.clone().shutdown().await;
    }
    Ok((started, formed, served))
}

async fn formation_times() -> Result<()> {
    for n in [3, 10] {
        let mut runs = Vec::new();
        for _ in 0..3 {
            runs.push(formation(n).await?);
        }
        let med = |f: fn(&(f64, f64, f64)) -> f64| {
            let mut v: Vec<f64> = runs.iter().map(f).collect();
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        println!(
            "| {n} nodes (median of 3) | all started {:.0} ms | formed {:.0} ms | remote function served {:.0} ms | served − started {:.0} ms |",
            med(|r| r.0),
            med(|r| r.1),
            med(|r| r.2),
            med(|r| r.2 - r.0)
        );
    }
    Ok(())
}

async fn failure_detection() -> Result<()> {
    let mut times = Vec::new();
    let configs = || {
        vec![
            node("d0", &[], &[]),
            node("d1", &[], &[]),
            node("d2", &[], &["math"]),
        ]
    };
    let mut cluster = TestCluster::start(configs()).await?;
    for round in 0..5 {
        // Let the failure detector learn the heartbeat interval, as in a running cluster.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = Instant::now();
        cluster.crash(2).await;
        let n0 = cluster.node(0);
        eventually(Duration::from_secs(30), "crash detected", || async {
            n0.handle
                .cluster()
                .is_some_and(|c| c.view().node("d2").is_none())
        })
        .await?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
        ensure!(round < 10);
        cluster.restart(2, configs().remove(2)).await?;
        cluster.wait_formed(Duration::from_secs(30)).await?;
    }
    times.sort_by(f64::total_cmp);
    println!(
        "| failure detected (crash → gone from a survivor's catalog, 5 crashes) | median {:.0} ms | max {:.0} ms |",
        times[times.len() / 2],
        times[times.len() - 1]
    );
    Ok(())
}

fn subscribe_frame(i: usize) -> String {
    json!({"role": "pubsub-subscribe", "u": format!("s{i}"), "subscription": {
        "subscription_id": format!("sub-{i}"), "patterns": [{"pattern": format!("round.{i}"), "exact_match": true}],
        "subscriber": "bench", "created_at": 0.0, "get_backlog": false, "backlog_seconds": 0}})
    .to_string()
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn next_text(ws: &mut Ws) -> Result<String> {
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => return Ok(t.to_string()),
            Some(Ok(_)) => continue,
            other => anyhow::bail!("connection ended: {other:?}"),
        }
    }
}

/// Subscribe on `sub`, publish on `publ`, receive, unsubscribe, `n` times; returns the
/// subscribe-ack latencies (µs) and the rounds per second.
async fn rounds(sub: &str, publ: &str, n: usize) -> Result<(Vec<f64>, f64)> {
    use futures_util::SinkExt;
    use tokio_tungstenite::tungstenite::Message;
    let (mut s, _) = tokio_tungstenite::connect_async(sub).await?;
    let (mut p, _) = tokio_tungstenite::connect_async(publ).await?;
    let mut acks = Vec::with_capacity(n);
    let started = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        s.send(Message::Text(subscribe_frame(i).into())).await?;
        let ack = next_text(&mut s).await?;
        acks.push(t.elapsed().as_secs_f64() * 1e6);
        ensure!(ack.contains("\"success\":true"), "{ack}");
        let msg = json!({"role": "pubsub-publish", "u": format!("p{i}"), "message": {
            "topic": format!("round.{i}"), "payload": i, "timestamp": 0.0, "message_id": format!("m{i}"),
            "publisher": "bench", "headers": {}, "routing_path": null, "current_hop": null}});
        p.send(Message::Text(msg.to_string().into())).await?;
        next_text(&mut p).await?;
        let got = next_text(&mut s).await?;
        ensure!(got.contains(&format!("\"m{i}\"")), "round {i}: {got}");
        let un = json!({"role": "pubsub-unsubscribe", "u": format!("u{i}"), "subscription_id": format!("sub-{i}")});
        s.send(Message::Text(un.to_string().into())).await?;
        next_text(&mut s).await?;
    }
    Ok((acks, n as f64 / started.elapsed().as_secs_f64()))
}

async fn state_at_once() -> Result<()> {
    const N: usize = 2000;
    let all = [
        "math", "text", "pipeline", "chaos", "greeter", "greeter2", "relay",
    ];
    let alone = TestNode::with_config(node("solo", &[], &all)).await?;
    let (acks, rate) = rounds(&alone.url, &alone.url, N).await?;
    let (p50, p99) = percentiles(acks);
    println!("one node: {rate:.0} rounds/s; subscribe ack p50 {p50:.0} µs, p99 {p99:.0} µs");
    let cluster = TestCluster::start(vec![
        node("a", &[], &all),
        node("b", &[], &all),
        node("c", &[], &all),
    ])
    .await?;
    let (a, b) = (cluster.node(0).url.clone(), cluster.node(1).url.clone());
    let (acks, rate) = rounds(&b, &a, N).await?;
    let (p50, p99) = percentiles(acks);
    println!(
        "3 nodes, subscribe on b, publish on a: {rate:.0} rounds/s; subscribe ack p50 {p50:.0} µs, p99 {p99:.0} µs"
    );
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so skip unless benching.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    // MPREG_BENCH_THREADS=1: everything on one thread (no cross-thread wake-ups), to separate
    // the cost of thread hand-offs from the cost of the work.
    let threads: usize = std::env::var("MPREG_BENCH_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(0);
    let rt = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?,
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build()?,
    };
    rt.block_on(async {
        let only = std::env::var("MPREG_BENCH_ONLY").unwrap_or_default();
        if only.is_empty() || only.contains("forward") {
            forwarded().await?;
        }
        if only.is_empty() || only.contains("throughput") {
            through_coordinator().await?;
        }
        if only.is_empty() || only.contains("formation") {
            formation_times().await?;
        }
        if only.is_empty() || only.contains("failure") {
            failure_detection().await?;
        }
        if only.is_empty() || only.contains("state") {
            state_at_once().await?;
        }
        Ok(())
    })
}
