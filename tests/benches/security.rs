//! What security costs, for `docs/benchmarks.md`: `cargo bench -p mpreg-tests --bench security`
//!
//! - the built-in `echo` and the `identity` plugin over `ws://`, `wss://`, `tcp://` and
//!   `tcps://`, with authentication and authorization off and on (an API key, or the anonymous
//!   role on TCP, whose policy every command is checked against): sequential p50/p99 and
//!   throughput with 100 calls in flight on one connection, all in one run;
//! - a flooding client under `server.max_requests_per_second`: another client's echo p99 while
//!   it floods, beside the same client's idle p99.
//!
//! Nodes and clients run in this process on 127.0.0.1:0, so the figures compare with each other,
//! not with other machines. `MPREG_BENCH_ONLY=transports|flood` selects a part.

use std::time::{Duration, Instant};

use anyhow::Result;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use mpreg::auth::keys::KeysFile;
use mpreg::auth::policy::PolicySpec;
use mpreg::client::{Client, ConnectOptions};
use mpreg::config::NodeConfig;
use mpreg::tls::ClientTls;
use mpreg_tests::pki::TestPki;
use mpreg_tests::{TestNode, plugin, test_config};
use serde_json::json;

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SEQUENTIAL: usize = 3_000;
const IN_FLIGHT: usize = 100;
const SECONDS: u64 = 2;

fn percentiles(mut v: Vec<f64>) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let at = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
    (at(0.5), at(0.99))
}

async fn sequential(c: &Client, fun: &str, n: usize) -> Result<Vec<f64>> {
    let mut us = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        c.call(fun, vec![json!("hello")]).await?;
        us.push(t.elapsed().as_secs_f64() * 1e6);
    }
    Ok(us)
}

async fn throughput(c: &Client, fun: &str) -> Result<f64> {
    let until = Instant::now() + Duration::from_secs(SECONDS);
    let mut workers = FuturesUnordered::new();
    for _ in 0..IN_FLIGHT {
        let (c, fun) = (c.clone(), fun.to_owned());
        workers.push(tokio::spawn(async move {
            let mut done = 0u64;
            while Instant::now() < until {
                c.call(&fun, vec![json!("hello")]).await?;
                done += 1;
            }
            anyhow::Ok(done)
        }));
    }
    let mut total = 0;
    while let Some(r) = workers.next().await {
        total += r??;
    }
    Ok(total as f64 / SECONDS as f64)
}

/// A node with the `text` plugin, TCP on, TLS when `pki` is given, auth when `auth` is:
/// returns it and the API key of an identity allowed `echo` and `identity`.
async fn node(
    pki: Option<&TestPki>,
    auth: bool,
    tweak: impl FnOnce(&mut NodeConfig),
) -> Result<(TestNode, Option<String>)> {
    let mut cfg: NodeConfig = test_config();
    tweak(&mut cfg);
    cfg.plugins = vec![plugin("text").into()];
    cfg.server.tcp_port = Some(0);
    if let Some(pki) = pki {
        let cert = pki.issue(if auth { "auth" } else { "plain" })?;
        cfg.tls.cert = Some(cert.cert);
        cfg.tls.key = Some(cert.key);
    }
    let mut key = None;
    if auth {
        let dir = tempfile::tempdir()?.keep();
        let path = dir.join("keys.toml");
        let mut file = KeysFile::default();
        let (k, _) = file.add("bench", vec!["caller".into()])?;
        file.save(&path)?;
        key = Some(k);
        cfg.auth.keys_file = Some(path);
        cfg.auth.anonymous = Some("caller".into());
        cfg.auth.roles.insert(
            "caller".into(),
            PolicySpec {
                functions: vec!["identity".into(), "upper".into(), "!secret.*".into()],
                publish: vec!["bench.#".into()],
                ..PolicySpec::default()
            },
        );
    }
    Ok((TestNode::with_config(cfg).await?, key))
}

async fn transports() -> Result<()> {
    println!(
        "| transport | auth | echo p50 | echo p99 | echo 100 in flight | identity p50 | identity p99 | identity 100 in flight |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let pki = TestPki::new("bench")?;
    for tls in [false, true] {
        for auth in [false, true] {
            let (node, key) = node(tls.then_some(&pki), auth, |_| {}).await?;
            let opts = ConnectOptions {
                tls: ClientTls {
                    ca_file: Some(pki.ca.clone()),
                    identity: None,
                },
                api_key: key,
                ..Default::default()
            };
            let tcp = node.handle.tcp_url().unwrap_or_default();
            for (name, url) in [
                (if tls { "wss://" } else { "ws://" }, node.url.clone()),
                (if tls { "tcps://" } else { "tcp://" }, tcp),
            ] {
                let client = Client::connect_with(&url, &opts).await?;
                sequential(&client, "echo", 300).await?;
                let (e50, e99) = percentiles(sequential(&client, "echo", SEQUENTIAL).await?);
                let et = throughput(&client, "echo").await?;
                sequential(&client, "identity", 300).await?;
                let (i50, i99) = percentiles(sequential(&client, "identity", SEQUENTIAL).await?);
                let it = throughput(&client, "identity").await?;
                let auth = match (auth, name.starts_with("tcp")) {
                    (false, _) => "off",
                    (true, false) => "API key + policy",
                    (true, true) => "anonymous role + policy",
                };
                println!(
                    "| {name} | {auth} | {e50:.0} µs | {e99:.0} µs | {:.1}k/s | {i50:.0} µs | {i99:.0} µs | {:.1}k/s |",
                    et / 1e3,
                    it / 1e3
                );
            }
        }
    }
    Ok(())
}

async fn flood() -> Result<()> {
    println!(
        "| quiet client's echo (anonymous role) | p50 | p99 | p99 / idle p99 | the flooder got |"
    );
    println!("|---|---:|---:|---:|---:|");
    for limit in [0u64, 2_000] {
        let (node, key) = node(None, true, |cfg| {
            cfg.server.max_requests_per_second_per_identity = limit;
        })
        .await?;
        let quiet = node.client().await?;
        sequential(&quiet, "echo", 300).await?;
        let (idle50, idle99) = percentiles(sequential(&quiet, "echo", SEQUENTIAL).await?);
        // One identity flooding on 4 connections, 64 calls in flight on each.
        let opts = ConnectOptions {
            api_key: key,
            ..Default::default()
        };
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let mut flooders = Vec::new();
        for _ in 0..4 {
            let c = Client::connect_with(&node.url, &opts).await?;
            let stop = stop.clone();
            flooders.push(tokio::spawn(async move {
                let mut sent = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let batch: FuturesUnordered<_> =
                        (0..64).map(|_| c.call("echo", vec![json!(1)])).collect();
                    sent += batch.count().await as u64;
                }
                sent
            }));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let started = Instant::now();
        let (busy50, busy99) = percentiles(sequential(&quiet, "echo", SEQUENTIAL).await?);
        let busy_for = started.elapsed() + Duration::from_millis(500);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let mut flooded = 0;
        for f in flooders {
            flooded += f.await?;
        }
        let rate = flooded as f64 / busy_for.as_secs_f64();
        let what = if limit == 0 {
            "while one identity floods, no rate limit".to_owned()
        } else {
            format!("while one identity floods, limited to {limit} req/s per identity")
        };
        println!("| idle | {idle50:.0} µs | {idle99:.0} µs | | |");
        println!(
            "| {what} | {busy50:.0} µs | {busy99:.0} µs | {:.2}× | {rate:.0} req/s |",
            busy99 / idle99
        );
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let only = std::env::var("MPREG_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only == "transports" {
        transports().await?;
    }
    if only.is_empty() || only == "flood" {
        flood().await?;
    }
    Ok(())
}
