//! Run with: `cargo run -p mpreg-examples --example cache`
//!
//! The cache (docs/cache.md) on two nodes of one cluster, each with a data directory: MPREG's
//! `cache-request` envelope and the `cache.*` built-ins, a key put on one node and read on the
//! other (L3), dependency-aware invalidation, a lock by test-and-set, a sorted set, a memoized
//! function call answered from the cache, a plugin using the cache through its import, events
//! on pub/sub and an invalidation published as a pattern, then the stats.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mpreg::client::Client;
use mpreg::config::NodeConfig;
use mpreg::node::NodeHandle;
use mpreg::protocol::{RpcCommand, RpcRequest};
use serde_json::{Value, json};

fn plugin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("MPREG_PLUGIN_DIR")).join(format!("mpreg_plugin_{name}.wasm"))
}

async fn start(id: &str, data: &std::path::Path, peers: &[String]) -> Result<NodeHandle> {
    let mut cfg = NodeConfig::default();
    cfg.server.port = 0;
    cfg.node.id = Some(id.into());
    cfg.node.data_dir = Some(data.join(id));
    cfg.cluster.peers = peers.to_vec();
    let mut relay: mpreg::config::PluginSpec = plugin("relay").into();
    relay.sandbox.cache_namespaces = vec!["relay".into(), "lookup*".into()];
    cfg.plugins = vec![plugin("text").into(), plugin("math").into(), relay];
    Ok(mpreg::node::start(cfg).await?)
}

/// Waits until `node` sees one peer with its link up.
async fn until_formed(node: &NodeHandle) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(c) = node.cluster() {
            let view = c.view();
            if view.nodes.len() == 1
                && view
                    .nodes
                    .iter()
                    .all(|p| c.link(&p.node_id).is_some_and(|l| l.is_connected()))
            {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("cluster did not form")
}

#[tokio::main]
async fn main() -> Result<()> {
    let data = tempfile::tempdir()?;
    let a = start("cache-a", data.path(), &[]).await?;
    let b = start("cache-b", data.path(), &[a.addr().to_string()]).await?;
    until_formed(&a).await?;
    until_formed(&b).await?;
    println!("nodes at {} and {}", a.url(), b.url());
    let (ca, cb) = (
        Client::connect(&a.url()).await?,
        Client::connect(&b.url()).await?,
    );

    println!("\n== watching events (published on cache.events.<namespace>.<op>) ==");
    let mut events = cb.subscribe("watch", &["cache.events.ml.#"], None).await?;

    println!("\n== put on A, get on B ==");
    let put = ca
        .call(
            "cache.put",
            vec![
                json!("ml"),
                json!("model:v3"),
                json!({"weights": [0.12, 0.5, -0.3]}),
                json!({"ttl_seconds": 600, "dependencies": ["dataset:v2"], "consistency": "strong"}),
            ],
        )
        .await?;
    println!("cache.put → {put}");
    for _ in 0..3 {
        ca.call("cache.get", vec![json!("ml"), json!("model:v3")])
            .await?;
    }
    let entry = cb
        .call("cache.entry", vec![json!("ml"), json!("model:v3")])
        .await?;
    println!(
        "cache.entry on B → value {}, ttl {:.0} s, accessed {} times, dependencies {}",
        entry["value"],
        entry["ttl_seconds"].as_f64().unwrap_or(0.0),
        entry["access_count"],
        entry["dependencies"]
    );
    let n = events.next().await.context("put event")?;
    println!(
        "  event {} {}",
        n.message["topic"], n.message["payload"]["cache_key"]["identifier"]
    );

    println!("\n== the original's envelope ==");
    let reply = cb
        .cache_request(json!({
            "operation": "get",
            "key": {"namespace": "ml", "identifier": "model:v3", "version": "v1.0.0", "tags": []},
            "options": {"include_metadata": false},
        }))
        .await?;
    println!(
        "cache-response: status {}, cache_level {}, value {}",
        reply["status"], reply["cache_level"], reply["entry"]["value"]
    );

    println!("\n== invalidating a dependency drops what depends on it ==");
    ca.call(
        "cache.put",
        vec![
            json!("ml"),
            json!("features:eu"),
            json!([1, 2, 3]),
            json!({"dependencies": ["dataset:v2"]}),
        ],
    )
    .await?;
    let _ = events.next().await.context("put event")?;
    let inv = cb
        .call(
            "cache.invalidate",
            vec![json!({"namespace": "ml", "tag": "dataset:v2"})],
        )
        .await?;
    println!("cache.invalidate tag dataset:v2 → {inv}");
    let n = events.next().await.context("invalidate event")?;
    println!(
        "  event {} {}",
        n.message["topic"], n.message["payload"]["result"]
    );
    let gone = ca
        .call("cache.get", vec![json!("ml"), json!("model:v3")])
        .await?;
    println!("model:v3 now: {gone}");

    println!("\n== a lock and a leaderboard ==");
    let lock = |who: &'static str| json!(["locks", "nightly-job", null, who, {"ttl_seconds": 30}]);
    let first = ca
        .call("cache.test_and_set", lock_args(lock("worker-a")))
        .await?;
    let second = cb
        .call("cache.test_and_set", lock_args(lock("worker-b")))
        .await?;
    println!("worker-a takes the lock: {first}\nworker-b tries: {second}");
    for (who, score) in [("ada", 91), ("bob", 78), ("cy", 99)] {
        cb.call(
            "cache.structure",
            vec![
                json!("games"),
                json!("board"),
                json!({"structure_type": "sorted_set",
                "operation": "add", "scored_values": [{"member": who, "score": score}]}),
            ],
        )
        .await?;
    }
    let top = ca
        .call(
            "cache.structure",
            vec![
                json!("games"),
                json!("board"),
                json!({"structure_type": "sorted_set",
                "operation": "range_by_score", "range_spec": {"min": 80, "max": 100}}),
            ],
        )
        .await?;
    println!("scores 80..100: {top}");

    println!("\n== a memoized call ==");
    for round in 1..=2 {
        let mut cmd = RpcCommand::new("slug", "upper", vec![json!("results everywhere")]);
        cmd.cache = Some(json!({"ttl_seconds": 60}));
        let started = Instant::now();
        let reply = cb.send(RpcRequest::new("", vec![cmd])).await?;
        println!(
            "  round {round}: {} in {:?}",
            json!(reply.r)["slug"],
            started.elapsed()
        );
    }
    let memo = ca.call("cache.stats", vec![json!("mpreg.memo")]).await?;
    let memo_b = cb.call("cache.stats", vec![json!("mpreg.memo")]).await?;
    println!(
        "  mpreg.memo hits (A + B): {}",
        memo["hits"].as_u64().unwrap_or(0) + memo_b["hits"].as_u64().unwrap_or(0)
    );

    println!("\n== a plugin with the cache import ==");
    for c in [&ca, &cb, &ca] {
        let n = c.call("visit", vec![json!("home")]).await?;
        println!("  relay.visit(home) → {n}");
    }
    for _ in 0..2 {
        let r = cb
            .call(
                "lookup",
                vec![
                    json!("lookups"),
                    json!("hello"),
                    json!("upper"),
                    json!(60.0),
                ],
            )
            .await?;
        println!("  relay.lookup(hello) → {r}");
    }

    println!("\n== publishing an invalidation pattern ==");
    ca.call("cache.put", vec![json!("ml"), json!("a"), json!(1)])
        .await?;
    ca.call("cache.put", vec![json!("ml"), json!("b"), json!(2)])
        .await?;
    ca.publish(
        "cache.invalidation.pattern.ml.*",
        json!({"pattern": "ml.*", "reason": "model_updated"}),
    )
    .await?;
    let started = Instant::now();
    loop {
        let left = [&a, &b]
            .iter()
            .map(|n| n.cache().keys("ml", "*", 100).map_or(0, |k| k.len()))
            .sum::<usize>();
        if left == 0 {
            println!("  every ml key gone after {:?}", started.elapsed());
            break;
        }
        if started.elapsed() > Duration::from_secs(5) {
            bail!("{left} ml keys left");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    println!(
        "\n== stats (what `mpreg cache stats {}` prints) ==",
        a.url()
    );
    let mut rows = Vec::new();
    for (id, c) in [("cache-a", &ca), ("cache-b", &cb)] {
        let s: Value = c.call("cache.stats", Vec::new()).await?;
        rows.push((id.to_owned(), Ok(s)));
    }
    print!("{}", mpreg::render::cache_table(&rows));
    b.shutdown().await;
    a.shutdown().await;
    Ok(())
}

/// `cache.test_and_set`'s arguments from one array.
fn lock_args(v: Value) -> Vec<Value> {
    v.as_array().cloned().unwrap_or_default()
}
