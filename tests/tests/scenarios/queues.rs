//! Queues over real WebSockets through plain `call()` (docs/queues.md): ordering, delay,
//! visibility timeout, dead letters and redrive, dedup, delivery modes, long-poll, use inside a
//! dependency graph, bad input, and a queue owned by one node used from the others.

use std::time::{Duration, Instant};

use anyhow::Result;
use mpreg::client::Client;
use mpreg::protocol::RpcCommand;
use mpreg_tests::{TestCluster, TestNode, cluster_config, eventually, rpc_error};
use serde_json::{Value, json};

async fn call(c: &Client, fun: &str, args: Value) -> Result<Value> {
    let Value::Array(args) = args else {
        anyhow::bail!("args must be an array")
    };
    Ok(c.call(fun, args).await?)
}

fn bodies(v: &Value) -> Vec<Value> {
    v.as_array()
        .map(|a| a.iter().map(|d| d["body"].clone()).collect())
        .unwrap_or_default()
}

fn receipts(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d["receipt"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_priority_delay_dedup_and_stats_over_the_wire() -> Result<()> {
    let node = TestNode::start().await?;
    let c = node.client().await?;
    assert_eq!(
        call(&c, "queue.create", json!(["jobs"])).await?,
        json!({"name": "jobs", "created": true})
    );
    // Same settings again: fine, not created twice. Other settings: refused.
    assert_eq!(
        call(&c, "queue.create", json!(["jobs"])).await?["created"],
        false
    );
    let (code, why) = rpc_error(
        c.call(
            "queue.create",
            vec![json!("jobs"), json!({"order": "priority"})],
        )
        .await,
    );
    assert_eq!(code, 1003);
    assert!(why.contains("other settings"), "{why}");

    for i in 0..3 {
        let sent = call(&c, "queue.send", json!(["jobs", {"n": i}])).await?;
        assert_eq!(sent["duplicate"], false);
    }
    let got = call(&c, "queue.receive", json!(["jobs", {"max": 10}])).await?;
    assert_eq!(
        bodies(&got),
        [json!({"n": 0}), json!({"n": 1}), json!({"n": 2})]
    );
    assert_eq!(got[0]["attempt"], 1);
    let acked = call(&c, "queue.ack", json!(["jobs", receipts(&got)])).await?;
    assert_eq!(acked, json!({"acked": 3, "failed": []}));
    // Acking again: the receipt is gone, a clear error.
    let (code, why) = rpc_error(
        c.call("queue.ack", vec![json!("jobs"), json!(receipts(&got)[0])])
            .await,
    );
    assert_eq!(code, 1003);
    assert!(why.contains("not held"), "{why}");

    call(&c, "queue.create", json!(["prio", {"order": "priority"}])).await?;
    for (b, p) in [("low", 1), ("high", 9), ("mid", 5)] {
        call(&c, "queue.send", json!(["prio", b, {"priority": p}])).await?;
    }
    let got = call(&c, "queue.receive", json!(["prio", {"max": 3}])).await?;
    assert_eq!(bodies(&got), [json!("high"), json!("mid"), json!("low")]);

    call(
        &c,
        "queue.send",
        json!(["jobs", "later", {"delay_ms": 300}]),
    )
    .await?;
    call(&c, "queue.send", json!(["jobs", "now"])).await?;
    let got = call(&c, "queue.receive", json!(["jobs", {"max": 10}])).await?;
    assert_eq!(bodies(&got), [json!("now")]);
    // A long-poll receive waits for the delayed one.
    let t = Instant::now();
    let got = call(&c, "queue.receive", json!(["jobs", {"wait_ms": 3000}])).await?;
    assert_eq!(bodies(&got), [json!("later")]);
    assert!(t.elapsed() < Duration::from_secs(2));

    let a = call(
        &c,
        "queue.send",
        json!(["jobs", 1, {"dedup_id": "order-7"}]),
    )
    .await?;
    let b = call(
        &c,
        "queue.send",
        json!(["jobs", 2, {"dedup_id": "order-7"}]),
    )
    .await?;
    assert_eq!(b["duplicate"], true);
    assert_eq!(a["message_id"], b["message_id"]);
    let stats = call(&c, "queue.stats", json!(["jobs"])).await?;
    assert_eq!(stats["duplicates"], 1);
    assert_eq!(stats["visible"], 1);
    assert_eq!(stats["in_flight"], 2);
    assert_eq!(
        call(&c, "queue.purge", json!(["jobs"])).await?,
        json!({"purged": 3})
    );
    // The queue built-ins are listed like the others.
    let described = call(&c, "rpc_describe", json!(["queue.send"])).await?;
    let described = &described["items"];
    assert_eq!(described[0]["kind"], "builtin");
    assert!(
        described[0]["signature"]
            .as_str()
            .unwrap_or_default()
            .contains("dedup_id")
    );
    let names: Vec<Value> = call(&c, "queue.list", json!([]))
        .await?
        .as_array()
        .map(|a| a.iter().map(|q| q["name"].clone()).collect())
        .unwrap_or_default();
    assert_eq!(
        names,
        [
            json!("jobs"),
            json!("jobs.dlq"),
            json!("prio"),
            json!("prio.dlq")
        ]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacked_messages_come_back_and_fail_over_to_the_dead_letters() -> Result<()> {
    let node = TestNode::start().await?;
    let c = node.client().await?;
    call(
        &c,
        "queue.create",
        json!(["work", {"visibility_timeout_ms": 150, "max_receives": 2}]),
    )
    .await?;
    call(&c, "queue.send", json!(["work", {"task": 1}])).await?;
    let first = call(&c, "queue.receive", json!(["work"])).await?;
    assert_eq!(first[0]["attempt"], 1);
    assert!(
        bodies(&call(&c, "queue.receive", json!(["work"])).await?).is_empty(),
        "invisible while held"
    );
    // Not acked within the visibility timeout: delivered again.
    let second = call(&c, "queue.receive", json!(["work", {"wait_ms": 2000}])).await?;
    assert_eq!(second[0]["attempt"], 2);
    assert_eq!(second[0]["message_id"], first[0]["message_id"]);
    // The second failure (a nack) was the last one allowed: dead-lettered.
    let out = call(&c, "queue.nack", json!(["work", second[0]["receipt"]])).await?;
    assert_eq!(out, json!({"outcome": "dead_lettered"}));
    let dead = call(&c, "queue.peek", json!(["work.dlq"])).await?;
    assert_eq!(bodies(&dead), [json!({"task": 1})]);
    let why = &dead[0]["dead_letter"];
    assert_eq!(why["source"], "work");
    assert!(
        why["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("max_receives 2"),
        "{why}"
    );
    // Redrive puts it back with a fresh count.
    assert_eq!(
        call(&c, "queue.redrive", json!(["work"])).await?,
        json!({"moved": 1})
    );
    let again = call(&c, "queue.receive", json!(["work"])).await?;
    assert_eq!(again[0]["attempt"], 1);
    assert_eq!(
        call(&c, "queue.ack", json!(["work", again[0]["receipt"]])).await?["acked"],
        1
    );
    let stats = call(&c, "queue.stats", json!(["work"])).await?;
    assert_eq!(
        (stats["messages"].clone(), stats["expired"].clone()),
        (json!(0), json!(1))
    );
    // A nack with a delay hides it for that long.
    call(&c, "queue.send", json!(["work", "retry-me"])).await?;
    let d = call(&c, "queue.receive", json!(["work"])).await?;
    call(
        &c,
        "queue.nack",
        json!(["work", d[0]["receipt"], {"delay_ms": 5000}]),
    )
    .await?;
    assert!(bodies(&call(&c, "queue.receive", json!(["work"])).await?).is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_quorum_and_fire_and_forget_complete_as_documented() -> Result<()> {
    let node = TestNode::start().await?;
    let c = node.client().await?;
    call(
        &c,
        "queue.create",
        json!(["fan", {"mode": "broadcast", "consumers": ["a", "b"]}]),
    )
    .await?;
    call(&c, "queue.send", json!(["fan", "hello"])).await?;
    let (code, why) = rpc_error(c.call("queue.receive", vec![json!("fan")]).await);
    assert_eq!(code, 1003);
    assert!(why.contains("consumer"), "{why}");
    let a = call(&c, "queue.receive", json!(["fan", {"consumer": "a"}])).await?;
    let b = call(&c, "queue.receive", json!(["fan", {"consumer": "b"}])).await?;
    assert_eq!(
        (bodies(&a), bodies(&b)),
        (vec![json!("hello")], vec![json!("hello")])
    );
    call(&c, "queue.ack", json!(["fan", a[0]["receipt"]])).await?;
    assert_eq!(
        call(&c, "queue.stats", json!(["fan"])).await?["messages"],
        1,
        "b has not acked"
    );
    call(&c, "queue.ack", json!(["fan", b[0]["receipt"]])).await?;
    assert_eq!(
        call(&c, "queue.stats", json!(["fan"])).await?["messages"],
        0
    );

    call(
        &c,
        "queue.create",
        json!(["votes", {"mode": "quorum", "quorum": 2}]),
    )
    .await?;
    call(&c, "queue.send", json!(["votes", "ballot"])).await?;
    let x = call(&c, "queue.receive", json!(["votes", {"consumer": "x"}])).await?;
    let y = call(&c, "queue.receive", json!(["votes", {"consumer": "y"}])).await?;
    assert!(
        bodies(&call(&c, "queue.receive", json!(["votes", {"consumer": "z"}])).await?).is_empty()
    );
    call(&c, "queue.ack", json!(["votes", x[0]["receipt"]])).await?;
    call(&c, "queue.ack", json!(["votes", y[0]["receipt"]])).await?;
    assert_eq!(
        call(&c, "queue.stats", json!(["votes"])).await?["messages"],
        0
    );

    call(
        &c,
        "queue.create",
        json!(["logs", {"mode": "fire_and_forget"}]),
    )
    .await?;
    call(&c, "queue.send", json!(["logs", "line"])).await?;
    assert_eq!(
        bodies(&call(&c, "queue.receive", json!(["logs"])).await?),
        [json!("line")]
    );
    assert_eq!(
        call(&c, "queue.stats", json!(["logs"])).await?["messages"],
        0
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_calls_compose_in_requests_and_bad_input_is_clear() -> Result<()> {
    let node = TestNode::start().await?;
    let c = node.client().await?;
    // A dependency graph: create, then send a computed body, then read it back.
    let r = c
        .request(vec![
            RpcCommand::new("q", "queue.create", vec![json!("graph")]),
            RpcCommand::new("n", "echos", vec![json!("q"), json!(42)]),
            RpcCommand::new("s", "queue.send", vec![json!("graph"), json!("n")]),
        ])
        .await?;
    assert_eq!(r["s"]["duplicate"], false);
    let got = call(&c, "queue.receive", json!(["graph"])).await?;
    assert_eq!(
        bodies(&got),
        [json!([{"name": "graph", "created": true}, 42])]
    );

    let cases: Vec<(&str, Value, i64, &str)> = vec![
        ("queue.send", json!(["nope", 1]), 1001, "no queue 'nope'"),
        ("queue.receive", json!(["nope"]), 1001, "no queue 'nope'"),
        (
            "queue.create",
            json!(["bad name!"]),
            1003,
            "invalid queue name",
        ),
        (
            "queue.create",
            json!(["q2", {"visiblity_timeout_ms": 5}]),
            1003,
            "unknown field",
        ),
        (
            "queue.create",
            json!(["q2", {"mode": "quorum"}]),
            1003,
            "needs `quorum`",
        ),
        ("queue.send", json!([]), 1003, "queue name"),
        ("queue.send", json!(["graph"]), 1003, "message body"),
        (
            "queue.send",
            json!(["graph", 1, {"priority": "high"}]),
            1003,
            "options: invalid type",
        ),
        (
            "queue.receive",
            json!(["graph", {"max": 0}]),
            1003,
            "max must be",
        ),
        ("queue.ack", json!(["graph", 7]), 1003, "receipt"),
    ];
    for (fun, args, code, text) in cases {
        let Value::Array(a) = args.clone() else {
            unreachable!()
        };
        let (got, why) = rpc_error(c.call(fun, a).await);
        assert_eq!(got, code, "{fun} {args}: {why}");
        assert!(why.contains(text), "{fun} {args}: {why}");
    }
    call(
        &c,
        "queue.create",
        json!(["small", {"max_message_bytes": 16, "max_messages": 1}]),
    )
    .await?;
    let (code, why) = rpc_error(
        c.call("queue.send", vec![json!("small"), json!("x".repeat(64))])
            .await,
    );
    assert_eq!(code, 1008, "{why}");
    call(&c, "queue.send", json!(["small", 1])).await?;
    let (code, why) = rpc_error(c.call("queue.send", vec![json!("small"), json!(2)]).await);
    assert_eq!(code, 1007, "{why}");
    assert!(why.contains("full"), "{why}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_lives_on_one_node_and_is_used_from_every_node() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("qn-0", &[], &[], &[]),
        cluster_config("qn-1", &[], &[], &[]),
        cluster_config("qn-2", &[], &[], &[]),
    ])
    .await?;
    let c1 = cluster.node(1).client().await?;
    call(&c1, "queue.create", json!(["shared"])).await?;
    let c0 = cluster.node(0).client().await?;
    let c2 = cluster.node(2).client().await?;
    // The queue's name reaches the other nodes by gossip.
    eventually(Duration::from_secs(5), "queue known cluster-wide", || {
        let (c0, c2) = (&c0, &c2);
        async move {
            c0.call("queue.stats", vec![json!("shared")]).await.is_ok()
                && c2.call("queue.stats", vec![json!("shared")]).await.is_ok()
        }
    })
    .await?;
    call(&c0, "queue.send", json!(["shared", "from-0"])).await?;
    call(&c2, "queue.send", json!(["shared", "from-2"])).await?;
    let got = call(&c2, "queue.receive", json!(["shared", {"max": 5}])).await?;
    assert_eq!(bodies(&got), [json!("from-0"), json!("from-2")]);
    call(&c0, "queue.ack", json!(["shared", receipts(&got)])).await?;
    assert!(cluster.node(1).handle.exchange().subscriptions() == 0);
    assert_eq!(
        call(&c1, "queue.stats", json!(["shared"])).await?["messages"],
        0
    );
    // Creating it again from another node goes to the owner: not a second queue.
    assert_eq!(
        call(&c0, "queue.create", json!(["shared"])).await?["created"],
        false
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_sends_to_a_queue_through_its_import() -> Result<()> {
    let node = TestNode::start().await?;
    let c = node.client().await?;
    call(
        &c,
        "queue.create",
        json!(["from-plugin", {"order": "priority"}]),
    )
    .await?;
    let low = call(&c, "enqueue", json!(["from-plugin", "{\"n\":1}", 1])).await?;
    let high = call(&c, "enqueue", json!(["from-plugin", "{\"n\":2}", 5])).await?;
    assert_ne!(low, high);
    let got = call(&c, "queue.receive", json!(["from-plugin", {"max": 5}])).await?;
    assert_eq!(bodies(&got), [json!({"n": 2}), json!({"n": 1})]);
    assert_eq!(got[0]["message_id"], high);
    let err = c
        .call("enqueue", vec![json!("missing"), json!("1"), json!(0)])
        .await
        .expect_err("no such queue");
    assert!(err.to_string().contains("no queue 'missing'"), "{err}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pubsub_subscription_to_a_queue_topic_is_a_push_consumer_with_credit() -> Result<()> {
    let node = TestNode::start().await?;
    let c = node.client().await?;
    call(
        &c,
        "queue.create",
        json!(["pushq", {"visibility_timeout_ms": 60000}]),
    )
    .await?;
    for i in 0..40 {
        call(&c, "queue.send", json!(["pushq", i])).await?;
    }
    let sub = |u: &str, pattern: &str| {
        json!({"role": "pubsub-subscribe", "u": u, "subscription": {"subscription_id": "worker-1",
            "patterns": [{"pattern": pattern, "exact_match": true}], "subscriber": "w",
            "created_at": 1.0, "get_backlog": false, "backlog_seconds": 0}})
    };
    let mut ws = node.raw().await?;
    let a = ws.roundtrip(&sub("bad", "mpreg.queue.nope")).await?;
    assert_eq!(a["success"], false);
    assert!(
        a["error"]
            .as_str()
            .unwrap_or_default()
            .contains("no queue 'nope'"),
        "{a}"
    );
    let a = ws.roundtrip(&sub("s1", "mpreg.queue.pushq")).await?;
    assert_eq!(a["success"], true, "{a}");
    // The credit: 32 unacknowledged deliveries, then nothing until some are acked.
    let mut held = Vec::new();
    for i in 0..32 {
        let n = ws.recv().await?;
        assert_eq!(n["role"], "pubsub-notification");
        assert_eq!(n["subscription_id"], "worker-1");
        assert_eq!(n["message"]["topic"], "mpreg.queue.pushq");
        assert_eq!(n["message"]["payload"], i);
        held.push(n["message"]["headers"]["receipt"].clone());
    }
    ws.silent_for(Duration::from_millis(200)).await?;
    let acked = call(
        &c,
        "queue.ack",
        json!(["pushq", held.drain(..5).collect::<Vec<_>>()]),
    )
    .await?;
    assert_eq!(acked["acked"], 5);
    for i in 32..37 {
        assert_eq!(ws.recv().await?["message"]["payload"], i);
    }
    // Publishing on a queue topic is refused: queues are fed with queue.send.
    let p = json!({"role": "pubsub-publish", "u": "p", "message": {"topic": "mpreg.queue.pushq", "payload": 1}});
    let a = ws.roundtrip(&p).await?;
    assert_eq!(a["success"], false);
    // The consumer leaves: what it held is given back at once, not after 60 s.
    drop(ws);
    let t = Instant::now();
    let mut back = Vec::new();
    while back.len() < 35 && t.elapsed() < Duration::from_secs(5) {
        let got = call(
            &c,
            "queue.receive",
            json!(["pushq", {"max": 100, "wait_ms": 500}]),
        )
        .await?;
        back.extend(bodies(&got));
    }
    assert_eq!(
        back.len(),
        35,
        "27 released + 3 never pushed + 5 pushed after the acks"
    );
    assert!(!back.contains(&json!(0)), "acked messages do not return");
    Ok(())
}
