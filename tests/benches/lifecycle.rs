//! Plugin lifecycle figures for `docs/benchmarks.md`:
//! `cargo bench -p mpreg-tests --bench lifecycle`
//!
//! - publish → first successful call (cold compile; re-publish of known bytes from the compile
//!   cache; re-publish of the active bytes),
//! - sequential call latency of the same kind of function in Rust, Python and JavaScript,
//! - calls/s and failed calls while a new version is published and the old one retired.
//!
//! Nodes run in this process on 127.0.0.1:0; calls go over real WebSockets and uploads over HTTP.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mpreg::client::Client;
use mpreg_tests::{ADMIN_TOKEN, TestNode, admin, plugin, publish, test_config};
use serde_json::{Value, json};

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    (percentile(&v, 0.5), percentile(&v, 0.99), v[0])
}

fn empty_node_config() -> mpreg::config::NodeConfig {
    let mut cfg = test_config();
    cfg.plugins.clear();
    cfg.runtime.call_timeout_ms = 10_000;
    cfg
}

/// Publishes over HTTP, then calls until the first success; returns ms from upload start.
async fn publish_then_call(url: &str, bytes: Vec<u8>) -> Result<(f64, Value)> {
    let started = Instant::now();
    let reply = publish(url, bytes).await?;
    let client = Client::connect(url).await?;
    let out = client.call("identity", vec![json!("x")]).await?;
    ensure!(out == json!("x"));
    Ok((started.elapsed().as_secs_f64() * 1000.0, reply))
}

async fn publish_latency() -> Result<()> {
    let text = std::fs::read(plugin("text"))?;
    let mut cold = Vec::new();
    for _ in 0..5 {
        let node = TestNode::with_config(empty_node_config()).await?;
        let (ms, reply) = publish_then_call(&node.url, text.clone()).await?;
        ensure!(reply["code"] == "compiled", "{reply}");
        cold.push(ms);
        node.handle.clone().shutdown().await;
    }
    let node = TestNode::with_config(empty_node_config()).await?;
    publish_then_call(&node.url, text.clone()).await?;
    let (mut cached, mut cached_server, mut unchanged) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..50 {
        admin(&node.url, ADMIN_TOKEN, |c| c.retire("text", "2.1.0")).await?;
        let (ms, reply) = publish_then_call(&node.url, text.clone()).await?;
        ensure!(reply["code"] == "cache", "{reply}");
        cached.push(ms);
        cached_server.push(reply["ready_ms"].as_f64().context("ready_ms")?);
        let (ms, reply) = publish_then_call(&node.url, text.clone()).await?;
        ensure!(reply["outcome"] == "unchanged", "{reply}");
        unchanged.push(ms);
    }
    println!(
        "## publish → first successful call (text plugin, {} KiB)\n",
        text.len() / 1024
    );
    println!("| case | runs | p50 ms | p99 ms | min ms |");
    println!("|---|---:|---:|---:|---:|");
    for (name, v) in [
        ("cold: compile with Cranelift (new node)", cold),
        (
            "known bytes, retired → re-published (compile cache)",
            cached,
        ),
        (
            "  of which the node's publish handling (`ready_ms`)",
            cached_server,
        ),
        ("known bytes, already active (no-op)", unchanged),
    ] {
        let n = v.len();
        let (p50, p99, min) = stats(v);
        println!("| {name} | {n} | {p50:.2} | {p99:.2} | {min:.2} |");
    }
    println!();
    Ok(())
}

/// One node with the Rust, Python and JavaScript examples; `warm_instances = 0` turns instance
/// reuse off, so every call instantiates afresh (the policy before warm instances).
async fn language_node(warm_instances: usize) -> Result<TestNode> {
    let mut cfg = test_config();
    cfg.plugins = ["text", "pystats", "jstext"]
        .into_iter()
        .map(|n| plugin(n).into())
        .collect();
    cfg.runtime.call_timeout_ms = 10_000;
    cfg.runtime.warm_instances = warm_instances;
    // Its own folder per node (the compiled images are kept for the next run).
    let dir = format!("mpreg-bench-languages-{warm_instances}");
    cfg.node.data_dir = Some(std::env::temp_dir().join(dir));
    TestNode::with_config(cfg).await
}

/// Calls/s of `fun` with `window` calls in flight on one connection for `secs` (bounded).
async fn throughput(client: &Client, fun: &str, args: &[Value], window: usize) -> Result<f64> {
    let until = Instant::now() + Duration::from_secs(2);
    let (mut done, mut running) = (0u64, FuturesUnordered::new());
    let t = Instant::now();
    loop {
        while Instant::now() < until && running.len() < window && done < 1_000_000 {
            let c = client.clone();
            let args = args.to_vec();
            let fun = fun.to_owned();
            running.push(async move { c.call(&fun, args).await });
        }
        match running.next().await {
            Some(r) => {
                r?;
                done += 1;
            }
            None => break,
        }
    }
    Ok(done as f64 / t.elapsed().as_secs_f64())
}

async fn language_overhead() -> Result<()> {
    let warm = language_node(mpreg::config::RuntimeConfig::default().warm_instances).await?;
    let fresh = language_node(0).await?;
    println!(
        "## per-call cost by guest language (sequential on one connection; then 100 in flight)\n"
    );
    println!(
        "| function | language | instances | calls | p50 µs | p99 µs | calls/s, 100 in flight |"
    );
    println!("|---|---|---|---:|---:|---:|---:|");
    let cases: [(&str, &str, Vec<Value>, usize); 5] = [
        ("echo", "built-in (no wasm)", vec![json!("x")], 2000),
        ("identity", "Rust", vec![json!("x")], 2000),
        (
            "js_slugify",
            "JavaScript",
            vec![json!("Hello, World!")],
            2000,
        ),
        ("py_mean", "Python", vec![json!([1.0, 2.0, 4.5])], 2000),
        ("py_shout", "Python", vec![json!("x"), json!(1)], 2000),
    ];
    for (node, policy) in [(&warm, "default"), (&fresh, "fresh per call")] {
        let client = node.client().await?;
        for (fun, lang, args, calls) in &cases {
            if policy != "default" && matches!(*lang, "Rust" | "built-in (no wasm)") {
                continue; // already fresh per call (Rust) or no instance at all
            }
            let instances = match (*lang, policy) {
                ("built-in (no wasm)", _) => "none",
                ("Rust", _) => "fresh per call (default)",
                (_, "default") => "warm, serial (default)",
                _ => "fresh per call",
            };
            for _ in 0..50 {
                client.call(fun, args.clone()).await?;
            }
            let calls = if policy == "default" {
                *calls
            } else {
                calls / 4
            };
            let mut v = Vec::with_capacity(calls);
            for _ in 0..calls {
                let t = Instant::now();
                client.call(fun, args.clone()).await?;
                v.push(t.elapsed().as_secs_f64() * 1e6);
            }
            let (p50, p99, _) = stats(v);
            let rate = throughput(&client, fun, args, 100).await?;
            println!(
                "| {fun} | {lang} | {instances} | {calls} | {p50:.0} | {p99:.0} | {rate:.0} |"
            );
        }
    }
    println!();
    Ok(())
}

async fn hot_swap_throughput() -> Result<()> {
    let node = TestNode::with_config(empty_node_config()).await?;
    let (v1, v2) = (
        std::fs::read(plugin("greeter"))?,
        std::fs::read(plugin("greeter2"))?,
    );
    publish(&node.url, v1.clone()).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let connections = 4;
    let window = 64;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let client = Client::connect(&node.url).await?;
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tasks.push(tokio::spawn(async move {
            let until = Instant::now() + Duration::from_secs(30);
            let mut running = FuturesUnordered::new();
            loop {
                let go = !stop.load(Ordering::Relaxed) && Instant::now() < until;
                while go && running.len() < window {
                    let c = client.clone();
                    running.push(async move { c.call("greet", vec![json!("b")]).await });
                }
                match running.next().await {
                    Some(Ok(_)) => ok.fetch_add(1, Ordering::Relaxed),
                    Some(Err(e)) => {
                        eprintln!("failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    None => break,
                };
            }
        }));
    }
    let phase = |label: &'static str| {
        let ok = ok.clone();
        async move {
            let before = ok.load(Ordering::Relaxed);
            let t = Instant::now();
            tokio::time::sleep(Duration::from_secs(2)).await;
            let rate = (ok.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
            (label, rate)
        }
    };
    let mut rows = vec![phase("steady, v1 only").await];
    let t = Instant::now();
    let before = ok.load(Ordering::Relaxed);
    let published = publish(&node.url, v2.clone()).await?;
    let publish_ms = t.elapsed().as_secs_f64() * 1000.0;
    rows.push(phase("right after publishing v2").await);
    let t2 = Instant::now();
    let retired = admin(&node.url, ADMIN_TOKEN, |c| c.retire("greeter", "1.0.0")).await?;
    let retire_ms = t2.elapsed().as_secs_f64() * 1000.0;
    rows.push(phase("right after retiring v1").await);
    let swap_rate = (ok.load(Ordering::Relaxed) - before) as f64 / t.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    for task in tasks {
        task.await?;
    }
    println!(
        "## calls during a hot swap (`greet`, {connections} connections × {window} in flight)\n"
    );
    println!("| phase | calls/s |");
    println!("|---|---:|");
    for (label, rate) in rows {
        println!("| {label} | {rate:.0} |");
    }
    println!("| whole swap window (publish v2 … 2 s after retiring v1) | {swap_rate:.0} |");
    println!();
    println!(
        "publish of v2 took {publish_ms:.1} ms ({}), retire of v1 {retire_ms:.1} ms (drained: {}); \
         calls: {} ok, **{} failed**\n",
        published["code"],
        retired["drained"],
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    ensure!(
        failed.load(Ordering::Relaxed) == 0,
        "calls failed during the swap"
    );
    Ok(())
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this too, so skip unless benching.
    if !std::env::args().any(|a| a == "--bench") {
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let only = std::env::var("MPREG_BENCH_ONLY").unwrap_or_default();
        if only.is_empty() || only.contains("publish") {
            publish_latency().await?;
        }
        if only.is_empty() || only.contains("language") {
            language_overhead().await?;
        }
        if only.is_empty() || only.contains("swap") {
            hot_swap_throughput().await?;
        }
        Ok(())
    })
}
