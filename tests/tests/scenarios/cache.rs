//! The cache as clients use it (docs/cache.md): MPREG's `cache-request` envelope and the
//! `cache.*` built-ins on one node, bad input refused with nothing changed, entries that
//! survive a crash, and keys shared by a cluster (put on A, get on C, invalidate on B, an owner
//! killed).

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use mpreg_tests::{RawWs, TestCluster, TestNode, cluster_config, rpc_frame, test_config};
use serde_json::{Value, json};

/// One `cache-request` and its `cache-response`.
async fn envelope(ws: &mut RawWs, u: &str, body: Value) -> Result<Value> {
    let mut frame = json!({"role": "cache-request", "u": u});
    for (k, v) in body.as_object().into_iter().flatten() {
        frame[k] = v.clone();
    }
    let reply = ws.roundtrip(&frame).await?;
    ensure!(
        reply["role"] == "cache-response",
        "not a cache-response: {reply}"
    );
    ensure!(reply["u"] == u, "answered another request: {reply}");
    Ok(reply)
}

fn key(ns: &str, id: &str) -> Value {
    json!({"namespace": ns, "identifier": id, "version": "v1.0.0", "tags": []})
}

/// One call of a built-in; its result, or its error code and text.
async fn call(
    ws: &mut RawWs,
    fun: &str,
    args: Value,
) -> Result<std::result::Result<Value, (i64, String)>> {
    let reply = ws
        .roundtrip(&rpc_frame(
            "c",
            json!([{"name": "cache-call", "fun": fun, "args": args}]),
        ))
        .await?;
    if reply["error"].is_null() {
        return Ok(Ok(reply["r"]["cache-call"].clone()));
    }
    let code = reply["error"]["code"].as_i64().unwrap_or(0);
    Ok(Err((code, reply["error"]["details"].to_string())))
}

async fn ok(ws: &mut RawWs, fun: &str, args: Value) -> Result<Value> {
    match call(ws, fun, args.clone()).await? {
        Ok(v) => Ok(v),
        Err(e) => bail!("{fun}({args}) failed: {e:?}"),
    }
}

async fn refused(ws: &mut RawWs, fun: &str, args: Value, says: &str) -> Result<()> {
    match call(ws, fun, args.clone()).await? {
        Ok(v) => bail!("{fun}({args}) should fail, answered {v}"),
        Err((code, text)) => {
            ensure!(code == 1003 || code == 1008, "{fun}: code {code}: {text}");
            ensure!(text.contains(says), "{fun}: '{text}' does not say '{says}'");
            Ok(())
        }
    }
}

#[tokio::test]
async fn the_envelope_in_the_originals_shape() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let put = envelope(&mut ws, "p1", json!({
        "operation": "put",
        "key": key("ml", "model-a"),
        "value": {"weights": [1, 2, 3]},
        "metadata": {"computation_cost_ms": 120.0, "ttl_seconds": 60, "dependencies": ["dataset:v2"],
                      "replication_policy": "geographic", "quality_score": 1.0},
        "options": {"consistency_level": "eventual", "timeout_ms": 5000, "cache_levels": ["L1", "L2", "L3"],
                    "include_metadata": true, "replication_factor": 2, "prefer_local": true},
        "timestamp": 1.0, "version": "2.0",
    })).await?;
    ensure!(put["status"] == "hit", "{put}");
    let got = envelope(
        &mut ws,
        "g1",
        json!({"operation": "get", "key": key("ml", "model-a"), "options": {}}),
    )
    .await?;
    ensure!(
        got["status"] == "hit" && got["cache_level"] == "L1",
        "{got}"
    );
    let entry = &got["entry"];
    ensure!(entry["value"] == json!({"weights": [1, 2, 3]}), "{entry}");
    ensure!(entry["access_count"] == 1, "{entry}");
    ensure!(entry["computation_cost_ms"] == 120.0, "{entry}");
    ensure!(entry["dependencies"] == json!(["dataset:v2"]), "{entry}");
    ensure!(
        entry["ttl_seconds"]
            .as_f64()
            .is_some_and(|t| t > 50.0 && t <= 60.0),
        "{entry}"
    );
    for field in ["creation_time", "last_access_time", "size_bytes", "key"] {
        ensure!(!entry[field].is_null(), "entry has no {field}: {entry}");
    }
    ensure!(got["operation_id"].is_string(), "{got}");

    let miss = envelope(
        &mut ws,
        "g2",
        json!({"operation": "get", "key": key("ml", "nothing")}),
    )
    .await?;
    ensure!(
        miss["status"] == "miss" && miss.get("entry").is_none(),
        "{miss}"
    );

    // A lock: the first test-and-set takes it, the second is a conflict.
    let lock = json!({"operation": "atomic", "key": key("locks", "job-1"), "atomic_operation": {
        "operation_type": "test_and_set", "expected_value": null, "new_value": "worker-1", "ttl_seconds": 30}});
    let first = envelope(&mut ws, "a1", lock.clone()).await?;
    ensure!(first["status"] == "hit", "{first}");
    let second = envelope(&mut ws, "a2", lock).await?;
    ensure!(second["status"] == "conflict", "{second}");
    ensure!(second["result"]["value"] == "worker-1", "{second}");

    let push = json!({"operation": "structure", "key": key("s", "queue"), "structure_operation": {
        "structure_type": "list", "operation": "push", "values": [1, 2]}});
    ensure!(envelope(&mut ws, "s1", push).await?["result"] == 2);

    // Invalidating the tag drops the model.
    let inv = envelope(
        &mut ws,
        "i1",
        json!({"operation": "invalidate", "key": {"namespace": "ml", "identifier": "*"},
        "invalidation_tag": "dataset:v2"}),
    )
    .await?;
    ensure!(inv["result"] == 1, "{inv}");
    let gone = envelope(
        &mut ws,
        "g3",
        json!({"operation": "get", "key": key("ml", "model-a")}),
    )
    .await?;
    ensure!(gone["status"] == "miss", "{gone}");

    let stats = envelope(
        &mut ws,
        "st",
        json!({"operation": "stats", "key": key("", "")}),
    )
    .await?;
    ensure!(
        stats["entry"]["value"]["l1"]["entries"].as_u64().is_some(),
        "{stats}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_envelopes_are_errors_that_change_nothing() -> Result<()> {
    let mut cfg = test_config();
    cfg.cache.max_value_bytes = 1000;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    envelope(
        &mut ws,
        "p",
        json!({"operation": "put", "key": key("n", "k"), "value": "kept"}),
    )
    .await?;
    let cases = [
        (
            json!({"operation": "explode", "key": key("n", "k")}),
            "Unsupported operation: explode",
        ),
        (json!({"operation": "get"}), "needs a key"),
        (
            json!({"operation": "put", "key": key("n", "k")}),
            "requires value",
        ),
        (
            json!({"operation": "put", "key": key("n", "k"), "value": "x".repeat(2000)}),
            "cache.max_value_bytes",
        ),
        (
            json!({"operation": "put", "key": {"namespace": "", "identifier": "k"}, "value": 1}),
            "namespace must not be empty",
        ),
        (
            json!({"operation": "structure", "key": key("n", "k"), "structure_operation": {
            "structure_type": "set", "operation": "add", "values": [1]}}),
            "wrong type",
        ),
        (
            json!({"operation": "atomic", "key": key("n", "k"), "atomic_operation": {"operation_type": "increment"}}),
            "wrong type",
        ),
        (
            json!({"operation": "atomic", "key": key("n", "k")}),
            "needs atomic_operation",
        ),
        (
            json!({"operation": "put", "key": key("n", "k"), "value": 1, "options": {"consistency_level": "psychic"}}),
            "unknown consistency_level",
        ),
        (json!({"operation": "get", "key": "n:k"}), "key"),
    ];
    for (i, (body, says)) in cases.into_iter().enumerate() {
        let reply = envelope(&mut ws, &format!("b{i}"), body.clone()).await?;
        ensure!(reply["status"] == "error", "{body} answered {reply}");
        let text = reply["error_message"].as_str().unwrap_or("");
        ensure!(
            text.contains(says),
            "{body}: '{text}' does not say '{says}'"
        );
    }
    let kept = envelope(
        &mut ws,
        "g",
        json!({"operation": "get", "key": key("n", "k")}),
    )
    .await?;
    ensure!(
        kept["entry"]["value"] == "kept",
        "changed by a refused request: {kept}"
    );
    Ok(())
}

#[tokio::test]
async fn the_call_forms_and_their_bad_input() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let stored = ok(
        &mut ws,
        "cache.put",
        json!(["users", "u1", {"name": "Ada"}, {"ttl_seconds": 60, "tags": ["people"]}]),
    )
    .await?;
    ensure!(stored["stored"] == true, "{stored}");
    ensure!(ok(&mut ws, "cache.get", json!(["users", "u1"])).await? == json!({"name": "Ada"}));
    ensure!(
        ok(
            &mut ws,
            "cache.get",
            json!(["users", "nobody", {"default": "none"}])
        )
        .await?
            == "none"
    );
    let entry = ok(
        &mut ws,
        "cache.entry",
        json!([{"namespace": "users", "identifier": "u1"}]),
    )
    .await?;
    ensure!(entry["value"]["name"] == "Ada", "{entry}");
    ensure!(ok(&mut ws, "cache.incr", json!(["counters", "hits"])).await? == 1);
    ensure!(ok(&mut ws, "cache.incr", json!(["counters", "hits", 10])).await? == 11);
    let cas = ok(&mut ws, "cache.cas", json!(["counters", "hits", 11, 20])).await?;
    ensure!(cas["swapped"] == true, "{cas}");
    let stale = ok(&mut ws, "cache.cas", json!(["counters", "hits", 11, 30])).await?;
    ensure!(stale["swapped"] == false && stale["value"] == 20, "{stale}");
    ensure!(
        ok(
            &mut ws,
            "cache.set_if_absent",
            json!(["users", "u1", "other"])
        )
        .await?["set"]
            == false
    );
    ensure!(
        ok(
            &mut ws,
            "cache.set_if_absent",
            json!(["users", "u2", "Bob"])
        )
        .await?["set"]
            == true
    );
    let many = ok(&mut ws, "cache.mset", json!(["m", {"a": 1, "b": 2}])).await?;
    ensure!(many["stored"] == 2, "{many}");
    ensure!(ok(&mut ws, "cache.mget", json!(["m", ["a", "b", "c"]])).await? == json!([1, 2, null]));
    let zadd = json!({"structure_type": "sorted_set", "operation": "add", "scored_values": [
        {"member": "x", "score": 2}, {"member": "y", "score": 1}]});
    ensure!(ok(&mut ws, "cache.structure", json!(["board", "top", zadd])).await? == 2);
    let range = json!({"structure_type": "sorted_set", "operation": "range"});
    ensure!(
        ok(&mut ws, "cache.structure", json!(["board", "top", range])).await?
            == json!([["y", 1.0], ["x", 2.0]])
    );
    let keys = ok(&mut ws, "cache.keys", json!(["users", "u*"])).await?;
    ensure!(
        keys == json!(["users:u1:v1.0.0", "users:u2:v1.0.0"]),
        "{keys}"
    );
    let cleared = ok(&mut ws, "cache.namespace", json!([{"operation_type": "clear", "namespace": "users", "pattern": "u*", "max_entries": 1}])).await?;
    ensure!(cleared == 1, "{cleared}");
    let inv = ok(
        &mut ws,
        "cache.invalidate",
        json!([{"namespace": "users", "tag": "people"}]),
    )
    .await?;
    ensure!(inv["invalidated"].as_u64().is_some(), "{inv}");
    let stats = ok(&mut ws, "cache.stats", json!(["counters"])).await?;
    ensure!(
        stats["entries"] == 1 && stats["policy"] == "s4lru",
        "{stats}"
    );
    ensure!(ok(&mut ws, "cache.delete", json!(["counters", "hits"])).await?["deleted"] == true);

    // Bad input: a clear error, nothing changed.
    refused(&mut ws, "cache.get", json!([]), "the key comes first").await?;
    refused(&mut ws, "cache.get", json!(["ns"]), "the key comes first").await?;
    refused(
        &mut ws,
        "cache.put",
        json!(["ns", "k"]),
        "a value follows the key",
    )
    .await?;
    refused(
        &mut ws,
        "cache.put",
        json!(["ns", "k", 1, {"ttl": 5}]),
        "unknown option 'ttl'",
    )
    .await?;
    refused(
        &mut ws,
        "cache.put",
        json!(["ns", "k", "x".repeat(5 << 20)]),
        "max_value_bytes",
    )
    .await?;
    ok(&mut ws, "cache.put", json!(["ns", "text", "hello"])).await?;
    refused(&mut ws, "cache.incr", json!(["ns", "text"]), "wrong type").await?;
    let push = json!({"structure_type": "list", "operation": "push", "values": [1]});
    refused(
        &mut ws,
        "cache.structure",
        json!(["ns", "text", push]),
        "wrong type",
    )
    .await?;
    let bogus = json!({"structure_type": "tree", "operation": "add"});
    refused(
        &mut ws,
        "cache.structure",
        json!(["ns", "other", bogus]),
        "unknown structure_type",
    )
    .await?;
    refused(
        &mut ws,
        "cache.invalidate",
        json!([{"namespace": "ns"}]),
        "exactly one of",
    )
    .await?;
    refused(&mut ws, "cache.mget", json!(["ns", "a"]), "identifiers").await?;
    ensure!(
        ok(&mut ws, "cache.get", json!(["ns", "text"])).await? == "hello",
        "changed by a refused call"
    );
    Ok(())
}

#[tokio::test]
async fn strong_puts_and_their_ttls_outlive_a_crash() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut cfg = test_config();
    cfg.node.data_dir = Some(dir.path().to_path_buf());
    let node = TestNode::with_config(cfg.clone()).await?;
    let mut ws = node.raw().await?;
    for i in 0..20 {
        let opts = json!({"consistency": "strong"});
        ok(
            &mut ws,
            "cache.put",
            json!(["durable", format!("k{i}"), i, opts]),
        )
        .await?;
    }
    ok(
        &mut ws,
        "cache.put",
        json!(["durable", "short", 1, {"consistency": "strong", "ttl_seconds": 1}]),
    )
    .await?;
    ok(
        &mut ws,
        "cache.put",
        json!(["durable", "long", 2, {"consistency": "strong", "ttl_seconds": 600}]),
    )
    .await?;
    drop(ws);
    node.handle.clone().crash().await;
    drop(node);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    for i in 0..20 {
        let v = ok(&mut ws, "cache.get", json!(["durable", format!("k{i}")])).await?;
        ensure!(v == i, "k{i} after the crash: {v}");
    }
    ensure!(
        ok(&mut ws, "cache.get", json!(["durable", "short"]))
            .await?
            .is_null(),
        "expired while down"
    );
    let long = ok(&mut ws, "cache.entry", json!(["durable", "long"])).await?;
    ensure!(
        long["ttl_seconds"]
            .as_f64()
            .is_some_and(|t| t > 500.0 && t < 600.0),
        "{long}"
    );
    Ok(())
}

#[tokio::test]
async fn a_cluster_shares_keys_invalidates_everywhere_and_survives_an_owner() -> Result<()> {
    let mut cluster = TestCluster::start(vec![
        cluster_config("cache-a", &[], &[], &[]),
        cluster_config("cache-b", &[], &[], &[]),
        cluster_config("cache-c", &[], &[], &[]),
    ])
    .await?;
    let (mut a, mut b, mut c) = (
        cluster.node(0).raw().await?,
        cluster.node(1).raw().await?,
        cluster.node(2).raw().await?,
    );
    // Put on A, get on C.
    for i in 0..30 {
        let opts = json!({"tags": ["batch-1"]});
        ok(
            &mut a,
            "cache.put",
            json!(["shared", format!("k{i}"), i, opts]),
        )
        .await?;
    }
    let mut remote = 0;
    for i in 0..30 {
        let reply = envelope(
            &mut c,
            &format!("g{i}"),
            json!({"operation": "get", "key": key("shared", &format!("k{i}"))}),
        )
        .await?;
        ensure!(reply["entry"]["value"] == i, "k{i} from C: {reply}");
        if reply["cache_level"] == "L3" {
            remote += 1;
        }
    }
    ensure!(remote > 0, "every key was owned by C?");
    // Owners spread over the nodes.
    let mut held = Vec::new();
    for ws in [&mut a, &mut b, &mut c] {
        let s = ok(ws, "cache.stats", json!(["shared"])).await?;
        held.push(s["entries"].as_u64().unwrap_or(0));
    }
    ensure!(
        held.iter().sum::<u64>() == 30 && held.iter().all(|&n| n > 0),
        "spread: {held:?}"
    );
    // A counter incremented from every node is one counter.
    for _ in 0..5 {
        for ws in [&mut a, &mut b, &mut c] {
            ok(ws, "cache.incr", json!(["shared", "counter"])).await?;
        }
    }
    ensure!(ok(&mut b, "cache.get", json!(["shared", "counter"])).await? == 15);
    // Invalidate on B: no node serves the old values.
    let inv = ok(
        &mut b,
        "cache.invalidate",
        json!([{"namespace": "shared", "tag": "batch-1"}]),
    )
    .await?;
    ensure!(inv["invalidated"] == 30, "{inv}");
    for ws in [&mut a, &mut b, &mut c] {
        for i in 0..30 {
            let v = ok(ws, "cache.get", json!(["shared", format!("k{i}")])).await?;
            ensure!(v.is_null(), "k{i} still served: {v}");
        }
    }
    // Keys everywhere, then B dies: every call answers, its keys are re-owned.
    for i in 0..30 {
        ok(&mut a, "cache.put", json!(["after", format!("k{i}"), i])).await?;
    }
    let b_id = cluster.node(1).handle.info().node_id.clone();
    cluster.crash(1).await;
    cluster.wait_gone(&b_id, Duration::from_secs(10)).await?;
    let started = std::time::Instant::now();
    let mut kept = 0;
    for i in 0..30 {
        let v = tokio::time::timeout(
            Duration::from_secs(5),
            ok(&mut c, "cache.get", json!(["after", format!("k{i}")])),
        )
        .await??;
        if v == i {
            kept += 1;
        } else {
            ensure!(v.is_null(), "k{i}: {v}");
        }
        ok(&mut c, "cache.put", json!(["after", format!("k{i}"), i])).await?;
        ensure!(
            ok(&mut a, "cache.get", json!(["after", format!("k{i}")])).await? == i,
            "k{i} re-owned"
        );
    }
    ensure!(
        kept < 30 && kept > 0,
        "B's keys went with it, the others stayed: {kept}"
    );
    ensure!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    Ok(())
}

/// Calls of `fun` the plugins of `node` have started.
fn calls_of(node: &TestNode, plugin: &str) -> u64 {
    node.handle
        .registry()
        .plugins()
        .iter()
        .filter(|p| p.manifest.name == plugin)
        .map(|p| p.stats.calls.load(std::sync::atomic::Ordering::Relaxed))
        .sum()
}

fn memo_call(u: &str, fun: &str, args: Value, cache: Value) -> Value {
    rpc_frame(
        u,
        json!([{"name": "m", "fun": fun, "args": args, "cache": cache}]),
    )
}

#[tokio::test]
async fn a_memoized_call_runs_once_for_fifty_callers_on_three_nodes() -> Result<()> {
    let mut cluster = TestCluster::start(vec![
        cluster_config("memo-a", &[], &["chaos", "math"], &[]),
        cluster_config("memo-b", &[], &["chaos", "math"], &[]),
        cluster_config("memo-c", &[], &["chaos", "math"], &[]),
    ])
    .await?;
    let mut waits = Vec::new();
    for i in 0..50 {
        let url = cluster.node(i % 3).url.clone();
        waits.push(tokio::spawn(async move {
            let mut ws = RawWs::connect(&url).await?;
            let reply = ws
                .roundtrip(&memo_call(
                    &format!("c{i}"),
                    "busy",
                    json!([300]),
                    json!({"ttl_seconds": 60}),
                ))
                .await?;
            anyhow::Ok(reply)
        }));
    }
    for w in waits {
        let reply = w.await??;
        ensure!(reply["r"]["m"] == 300, "{reply}");
    }
    let runs: u64 = (0..3).map(|i| calls_of(cluster.node(i), "chaos")).sum();
    ensure!(runs == 1, "busy ran {runs} times for 50 memoized calls");
    // Another argument is another result; an unmemoized call runs.
    let mut ws = cluster.node(1).raw().await?;
    ws.roundtrip(&memo_call("o", "busy", json!([1]), json!(true)))
        .await?;
    ws.roundtrip(&rpc_frame(
        "p",
        json!([{"name": "m", "fun": "busy", "args": [1]}]),
    ))
    .await?;
    let runs: u64 = (0..3).map(|i| calls_of(cluster.node(i), "chaos")).sum();
    ensure!(runs == 3, "{runs}");

    // A dependency invalidation drops the results that depend on it.
    let add = |u: &str| {
        memo_call(
            u,
            "add",
            json!([2, 3]),
            json!({"dependencies": ["dataset:v2"]}),
        )
    };
    ensure!(ws.roundtrip(&add("d1")).await?["r"]["m"] == 5);
    ensure!(ws.roundtrip(&add("d2")).await?["r"]["m"] == 5);
    let math_runs = |c: &TestCluster| (0..3).map(|i| calls_of(c.node(i), "math")).sum::<u64>();
    ensure!(
        math_runs(&cluster) == 1,
        "add ran {} times",
        math_runs(&cluster)
    );
    ok(
        &mut ws,
        "cache.invalidate",
        json!([{"namespace": "mpreg.memo", "tag": "dataset:v2"}]),
    )
    .await?;
    ensure!(ws.roundtrip(&add("d3")).await?["r"]["m"] == 5);
    ensure!(
        math_runs(&cluster) == 2,
        "add not run again after the invalidation"
    );

    // Failures are not cached.
    let fail = memo_call("f1", "fail", json!(["no"]), json!(true));
    ensure!(!ws.roundtrip(&fail).await?["error"].is_null());
    let fail = memo_call("f2", "fail", json!(["no"]), json!(true));
    ensure!(!ws.roundtrip(&fail).await?["error"].is_null());
    let runs: u64 = (0..3).map(|i| calls_of(cluster.node(i), "chaos")).sum();
    ensure!(
        runs == 5,
        "a failure was served from the cache: {runs} runs"
    );

    // Retiring the version drops its results everywhere.
    let keys = ok(&mut ws, "cache.keys", json!(["mpreg.memo"])).await?;
    ensure!(keys.as_array().is_some_and(|k| k.len() == 3), "{keys}");
    let version = cluster
        .node(0)
        .handle
        .registry()
        .plugins()
        .iter()
        .find(|p| p.manifest.name == "chaos")
        .map(|p| p.manifest.version.to_string())
        .unwrap_or_default();
    // Retired on one node; the others unlist it when its state reaches them.
    cluster
        .node(0)
        .handle
        .plugins()
        .retire("chaos", &version)
        .await?;
    mpreg_tests::eventually(Duration::from_secs(5), "chaos results dropped", || {
        let url = cluster.node(0).url.clone();
        async move {
            let Ok(mut ws) = RawWs::connect(&url).await else {
                return false;
            };
            ok(&mut ws, "cache.keys", json!(["mpreg.memo"]))
                .await
                .is_ok_and(|k| k.as_array().is_some_and(|k| k.len() == 1))
        }
    })
    .await?;
    let _ = &mut cluster;
    Ok(())
}

/// The next notification `ws` gets, within a few seconds.
async fn notification(ws: &mut RawWs) -> Result<Value> {
    let n = tokio::time::timeout(Duration::from_secs(5), ws.recv()).await??;
    ensure!(
        n["role"] == "pubsub-notification",
        "not a notification: {n}"
    );
    Ok(n["message"].clone())
}

#[tokio::test]
async fn changes_are_published_and_published_patterns_invalidate() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("events-a", &[], &[], &[]),
        cluster_config("events-b", &[], &[], &[]),
    ])
    .await?;
    let (mut a, mut b) = (cluster.node(0).raw().await?, cluster.node(1).raw().await?);
    // A watcher on B, as MPREG's client guide subscribes.
    let mut watcher = cluster.node(1).raw().await?;
    let sub = json!({"role": "pubsub-subscribe", "u": "w", "subscription": {
        "subscription_id": "watch", "patterns": [{"pattern": "cache.events.ml.#", "exact_match": false}],
        "subscriber": "test", "get_backlog": false}});
    ensure!(watcher.roundtrip(&sub).await?["success"] == true);
    // Changes made through A, wherever their keys live, reach it once each; reads do not.
    for id in ["model-1", "model-2", "model-3"] {
        ok(&mut a, "cache.put", json!(["ml", id, {"w": 1}])).await?;
        let m = notification(&mut watcher).await?;
        ensure!(m["topic"] == "cache.events.ml.put", "{m}");
        ensure!(m["payload"]["event_type"] == "cache_put", "{m}");
        ensure!(m["payload"]["cache_key"]["identifier"] == id, "{m}");
        ensure!(m["headers"]["event_type"] == "cache_put", "{m}");
        ok(&mut b, "cache.get", json!(["ml", id])).await?;
    }
    ok(&mut a, "cache.put", json!(["other", "c", 1])).await?;
    ok(&mut b, "cache.incr", json!(["ml", "hits"])).await?;
    let m = notification(&mut watcher).await?;
    ensure!(m["topic"] == "cache.events.ml.atomic", "{m}");
    ensure!(m["payload"]["result"] == 1, "{m}");
    let d = ok(&mut b, "cache.delete", json!(["ml", "missing"])).await?;
    ensure!(d["deleted"] == false, "{d}");
    ok(&mut b, "cache.delete", json!(["ml", "hits"])).await?;
    let m = notification(&mut watcher).await?;
    ensure!(
        m["topic"] == "cache.events.ml.delete",
        "a read or a no-op delete published: {m}"
    );
    // Publishing a pattern invalidates on every node; keys outside it stay.
    let publish = json!({"role": "pubsub-publish", "u": "p", "message": {
        "topic": "cache.invalidation.pattern.ml.*", "payload": {"pattern": "ml.*", "reason": "model_updated"},
        "timestamp": 1795329920.68, "message_id": "inv-1", "publisher": "test", "headers": {}}});
    let ack = a.roundtrip(&publish).await?;
    ensure!(ack["success"] == true, "{ack}");
    let held = || {
        [cluster.node(0), cluster.node(1)]
            .iter()
            .map(|n| n.handle.cache().keys("ml", "*", 100).map_or(0, |k| k.len()))
            .sum::<usize>()
    };
    mpreg_tests::eventually(Duration::from_secs(5), "ml keys invalidated", || {
        let n = held();
        async move { n == 0 }
    })
    .await?;
    ensure!(ok(&mut b, "cache.get", json!(["other", "c"])).await? == 1);
    // A payload that names nothing changes nothing.
    let mut bad = publish.clone();
    bad["message"]["payload"] = json!({"reason": "no pattern"});
    bad["message"]["topic"] = json!("cache.invalidation.pattern.other");
    ensure!(a.roundtrip(&bad).await?["success"] == true);
    ensure!(ok(&mut b, "cache.get", json!(["other", "c"])).await? == 1);
    // Discovery lists each node's cache roles in the original's CacheRoleEntry shape.
    let roles = ok(&mut a, "catalog_query", json!([{"entry_type": "caches"}])).await?;
    let mut seen: Vec<(String, String)> = roles["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            let s = |f: &str| e[f].as_str().unwrap_or("").to_owned();
            (s("node_id"), s("role"))
        })
        .collect();
    seen.sort();
    let want: Vec<(String, String)> = ["events-a", "events-b"]
        .iter()
        .flat_map(|n| ["coordinator", "invalidator"].map(|r| (n.to_string(), r.to_string())))
        .collect();
    ensure!(seen == want, "{roles}");
    Ok(())
}

#[tokio::test]
async fn plugins_use_the_cache_in_the_namespaces_their_sandbox_grants() -> Result<()> {
    let granted = |id: &str| {
        let mut cfg = cluster_config(id, &[], &["text"], &[]);
        let mut spec: mpreg::config::PluginSpec = mpreg_tests::plugin("relay").into();
        spec.sandbox.cache_namespaces = vec!["relay".into(), "lookup*".into()];
        cfg.plugins.push(spec);
        cfg
    };
    let cluster = TestCluster::start(vec![granted("import-a"), granted("import-b")]).await?;
    let (mut a, mut b) = (cluster.node(0).raw().await?, cluster.node(1).raw().await?);
    // One counter for the cluster, whichever node's plugin counts.
    for i in 0..4 {
        let ws = if i % 2 == 0 { &mut a } else { &mut b };
        let n = ok(ws, "visit", json!(["home"])).await?;
        ensure!(n == json!(i + 1), "visit {i}: {n}");
    }
    ensure!(ok(&mut a, "cache.get", json!(["relay", "visits:home"])).await? == 4);
    // Read-through: the first lookup computes (a nested call) and stores, the next is cached,
    // a client's delete makes the plugin compute again.
    let first = ok(&mut a, "lookup", json!(["lookups", "hello", "upper", 60.0])).await?;
    ensure!(
        first == json!(r#"{"cached":false,"value":"HELLO"}"#),
        "{first}"
    );
    let again = ok(&mut b, "lookup", json!(["lookups", "hello", "upper", 60.0])).await?;
    ensure!(
        again == json!(r#"{"cached":true,"value":"HELLO"}"#),
        "{again}"
    );
    ensure!(ok(&mut b, "cache.get", json!(["lookups", "hello"])).await? == "HELLO");
    ok(&mut b, "cache.delete", json!(["lookups", "hello"])).await?;
    let recomputed = ok(&mut a, "lookup", json!(["lookups", "hello", "upper", 60.0])).await?;
    ensure!(
        recomputed == json!(r#"{"cached":false,"value":"HELLO"}"#),
        "{recomputed}"
    );
    // A namespace the sandbox does not grant is refused, naming the grant; nothing is stored.
    match call(&mut a, "lookup", json!(["secrets", "k", "upper", 60.0])).await? {
        Ok(v) => bail!("an ungranted namespace answered {v}"),
        Err((_, text)) => ensure!(
            text.contains("'secrets' is not granted") && text.contains("cache_namespaces"),
            "{text}"
        ),
    }
    ensure!(
        ok(&mut a, "cache.get", json!(["secrets", "k"]))
            .await?
            .is_null()
    );
    Ok(())
}

#[tokio::test]
async fn a_joining_node_takes_over_its_keys_and_a_departed_owner_leaves_nothing_stale() -> Result<()>
{
    let mut cluster = TestCluster::start(vec![
        cluster_config("handoff-a", &[], &[], &[]),
        cluster_config("handoff-b", &[], &[], &[]),
    ])
    .await?;
    let b_id = cluster.node(1).handle.info().node_id.clone();
    cluster.crash(1).await;
    cluster.wait_gone(&b_id, Duration::from_secs(10)).await?;
    let mut a = cluster.node(0).raw().await?;
    const N: usize = 60;
    for i in 0..N {
        ok(&mut a, "cache.put", json!(["moving", format!("k{i}"), i])).await?;
    }
    let held = |n: &TestNode| {
        n.handle
            .cache()
            .keys("moving", "*", 1000)
            .map_or(0, |k| k.len())
    };
    ensure!(held(cluster.node(0)) == N);
    // B joins again: A hands it the keys it owns now, and keeps the rest.
    cluster
        .restart(1, cluster_config("handoff-b", &[], &[], &[]))
        .await?;
    cluster.wait_formed(Duration::from_secs(10)).await?;
    mpreg_tests::eventually(Duration::from_secs(10), "keys handed to B", || {
        let (on_a, on_b) = (held(cluster.node(0)), held(cluster.node(1)));
        async move { on_b > 0 && on_a + on_b == N }
    })
    .await?;
    let mut b = cluster.node(1).raw().await?;
    for i in 0..N {
        for ws in [&mut a, &mut b] {
            let v = ok(ws, "cache.get", json!(["moving", format!("k{i}")])).await?;
            ensure!(v == i, "k{i} after the hand-off: {v}");
        }
    }
    // Changed and deleted on B, then B dies: A serves none of the old values it handed over.
    let on_b: Vec<String> = cluster
        .node(1)
        .handle
        .cache()
        .keys("moving", "*", 1000)?
        .iter()
        .map(|k| k.identifier().to_owned())
        .collect();
    for (j, id) in on_b.iter().enumerate() {
        if j % 2 == 0 {
            ok(&mut a, "cache.delete", json!(["moving", id])).await?;
        } else {
            ok(&mut a, "cache.put", json!(["moving", id, "new"])).await?;
        }
    }
    cluster.crash(1).await;
    cluster.wait_gone(&b_id, Duration::from_secs(10)).await?;
    for (j, id) in on_b.iter().enumerate() {
        let v = ok(&mut a, "cache.get", json!(["moving", id])).await?;
        ensure!(
            v.is_null() || (j % 2 == 1 && v == "new"),
            "{id}: a stale value came back: {v}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_command_its_plugin_declares_pure_is_memoized_without_asking() -> Result<()> {
    let mut cfg = test_config();
    cfg.plugins = vec![mpreg_tests::plugin("pipeline").into()];
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    let plain = |u: &str, cache: Option<Value>| {
        let mut cmd = json!({"name": "stats", "fun": "analyze", "args": [[1.0, 2.0, 3.0]]});
        if let Some(c) = cache {
            cmd["cache"] = c;
        }
        rpc_frame(u, json!([cmd]))
    };
    let before = calls_of(&node, "pipeline");
    for i in 0..5 {
        let r = ws.roundtrip(&plain(&format!("a{i}"), None)).await?;
        ensure!(r["r"]["stats"]["mean"] == 2.0, "{r}");
    }
    ensure!(
        calls_of(&node, "pipeline") == before + 1,
        "ran {} times",
        calls_of(&node, "pipeline") - before
    );
    // The declared TTL and dependency tag hold.
    let stats = ok(&mut ws, "cache.stats", json!(["mpreg.memo"])).await?;
    ensure!(stats["entries"] == 1, "{stats}");
    let keys = ok(&mut ws, "cache.keys", json!(["mpreg.memo"])).await?;
    let id = keys[0]
        .as_str()
        .unwrap_or("")
        .split(':')
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let entry = ok(
        &mut ws,
        "cache.entry",
        json!([{"namespace": "mpreg.memo", "identifier": id,
        "version": "1.0.0"}]),
    )
    .await?;
    ensure!(
        entry["ttl_seconds"]
            .as_f64()
            .is_some_and(|t| t > 590.0 && t <= 600.0),
        "{entry}"
    );
    ensure!(
        entry["dependencies"] == json!(["pipeline:stats"]),
        "{entry}"
    );
    // A caller can still turn it off, and the tag drops the result.
    ws.roundtrip(&plain("off", Some(json!(false)))).await?;
    ensure!(calls_of(&node, "pipeline") == before + 2);
    ok(
        &mut ws,
        "cache.invalidate",
        json!([{"namespace": "mpreg.memo", "tag": "pipeline:stats"}]),
    )
    .await?;
    ws.roundtrip(&plain("again", None)).await?;
    ensure!(calls_of(&node, "pipeline") == before + 3);
    // Other commands of the plugin are not memoized.
    for i in 0..2 {
        let total = json!([{"name": "t", "fun": "total", "args": [[1.0, 2.0]]}]);
        ws.roundtrip(&rpc_frame(&format!("t{i}"), total)).await?;
    }
    ensure!(calls_of(&node, "pipeline") == before + 5);
    Ok(())
}
