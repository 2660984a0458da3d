//! Pub/sub over real WebSockets (protocol.md §3): exact ack and notification frames, one
//! notification per subscription, backlog, unsubscribe, disconnect cleanup, bad input, slow
//! consumers, a request's callback topic, and publishes crossing a 3-node cluster.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Result;
use mpreg_tests::{RawWs, TestCluster, TestNode, cluster_config, eventually, test_config};
use serde_json::{Value, json};

fn subscribe(u: &str, sid: &str, patterns: &[(&str, bool)], backlog: bool) -> Value {
    let patterns: Vec<Value> = patterns
        .iter()
        .map(|(p, exact)| json!({"pattern": p, "exact_match": exact}))
        .collect();
    json!({"role": "pubsub-subscribe", "u": u, "subscription": {
        "subscription_id": sid, "patterns": patterns, "subscriber": "test",
        "created_at": 1795329920.68, "get_backlog": backlog, "backlog_seconds": 300}})
}

fn message(topic: &str, id: &str, payload: Value) -> Value {
    json!({"topic": topic, "payload": payload, "timestamp": 1795329920.68, "message_id": id,
        "publisher": "test", "headers": {"k": "v"}, "routing_path": null, "current_hop": null})
}

fn publish(u: &str, msg: &Value) -> Value {
    json!({"role": "pubsub-publish", "u": u, "message": msg})
}

fn ack(u: &str) -> Value {
    json!({"role": "pubsub-ack", "u": format!("ack_{u}"), "operation_id": u, "success": true, "error": null})
}

/// Expects a failed ack for `u` and returns its error text.
async fn refused(ws: &mut RawWs, frame: &Value) -> Result<String> {
    let u = frame["u"].as_str().unwrap_or_default().to_owned();
    let a = ws.roundtrip(frame).await?;
    assert_eq!(a["role"], "pubsub-ack");
    assert_eq!(a["operation_id"], u.as_str());
    assert_eq!(a["success"], false, "{a}");
    Ok(a["error"].as_str().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_per_matching_subscription_with_exact_frames() -> Result<()> {
    let node = TestNode::start().await?;
    let mut a = node.raw().await?;
    let mut b = node.raw().await?;
    let mut p = node.raw().await?;
    let s = subscribe(
        "s1",
        "sub-a",
        &[("user.*.login", false), ("user.#", false)],
        false,
    );
    assert_eq!(a.roundtrip(&s).await?, ack("s1"));
    let s = subscribe("s2", "sub-b", &[("metrics.#", false)], false);
    assert_eq!(b.roundtrip(&s).await?, ack("s2"));
    // The publisher subscribes too: its own notification comes before its ack.
    let s = subscribe("s3", "sub-p", &[("user.2.login", true)], false);
    assert_eq!(p.roundtrip(&s).await?, ack("s3"));

    let msg = message("user.2.login", "m1", json!({"any": ["json", 1]}));
    p.send_text(&publish("p1", &msg)).await?;
    assert_eq!(
        p.recv().await?,
        json!({"role": "pubsub-notification", "u": "notification_m1_sub-p",
            "subscription_id": "sub-p", "message": msg})
    );
    assert_eq!(p.recv().await?, ack("p1"));
    // Two patterns of sub-a match; it gets one notification, with the message verbatim.
    assert_eq!(
        a.recv().await?,
        json!({"role": "pubsub-notification", "u": "notification_m1_sub-a",
            "subscription_id": "sub-a", "message": msg})
    );
    a.silent_for(Duration::from_millis(150)).await?;
    b.silent_for(Duration::from_millis(50)).await?;

    // `#` matches zero segments; `*` exactly one.
    p.send_binary(&publish("p2", &message("metrics", "m2", json!(1))))
        .await?;
    assert_eq!(p.recv().await?, ack("p2"));
    assert_eq!(b.recv().await?["u"], "notification_m2_sub-b");
    p.send_binary(&publish("p3", &message("user.2.x.login", "m3", json!(1))))
        .await?;
    assert_eq!(p.recv().await?, ack("p3"));
    // Only `user.#` matches that topic.
    assert_eq!(a.recv().await?["u"], "notification_m3_sub-a");
    a.silent_for(Duration::from_millis(100)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backlog_is_delivered_first_in_order_then_live_messages() -> Result<()> {
    let node = TestNode::start().await?;
    let mut p = node.raw().await?;
    for (i, topic) in ["orders.eu", "other", "orders.us", "orders.eu"]
        .iter()
        .enumerate()
    {
        let f = publish(
            &format!("p{i}"),
            &message(topic, &format!("m{i}"), json!(i)),
        );
        assert_eq!(p.roundtrip(&f).await?, ack(&format!("p{i}")));
    }
    let mut s = node.raw().await?;
    s.send_binary(&subscribe("s1", "sub", &[("orders.*", false)], true))
        .await?;
    for i in [0, 2, 3] {
        let n = s.recv().await?;
        assert_eq!(n["u"], format!("backlog_m{i}_sub"));
        assert_eq!(n["subscription_id"], "sub");
        assert_eq!(n["message"]["payload"], i);
    }
    assert_eq!(s.recv().await?, ack("s1"));
    p.send_binary(&publish("p9", &message("orders.eu", "m9", json!(9))))
        .await?;
    assert_eq!(s.recv().await?["u"], "notification_m9_sub");
    // Without get_backlog: only live messages.
    let mut t = node.raw().await?;
    assert_eq!(
        t.roundtrip(&subscribe("s2", "sub2", &[("orders.#", false)], false))
            .await?,
        ack("s2")
    );
    t.silent_for(Duration::from_millis(100)).await?;
    // A zero-second window delivers nothing old.
    let mut z = node.raw().await?;
    let mut f = subscribe("s3", "sub3", &[("orders.#", false)], true);
    f["subscription"]["backlog_seconds"] = json!(0);
    assert_eq!(z.roundtrip(&f).await?, ack("s3"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unsubscribe_and_disconnect_end_subscriptions() -> Result<()> {
    let node = TestNode::start().await?;
    let ex = node.handle.exchange().clone();
    let mut s = node.raw().await?;
    let mut p = node.raw().await?;
    assert_eq!(
        s.roundtrip(&subscribe("s1", "a", &[("t.#", false)], false))
            .await?,
        ack("s1")
    );
    assert_eq!(
        s.roundtrip(&subscribe("s2", "b", &[("t.x", false)], false))
            .await?,
        ack("s2")
    );
    assert_eq!(ex.subscriptions(), 2);
    let un = json!({"role": "pubsub-unsubscribe", "u": "u1", "subscription_id": "a"});
    assert_eq!(s.roundtrip(&un).await?, ack("u1"));
    // Unknown (and already ended) ids ack with success false.
    let err = refused(
        &mut s,
        &json!({"role": "pubsub-unsubscribe", "u": "u2", "subscription_id": "a"}),
    )
    .await?;
    assert!(err.contains("no subscription 'a'"), "{err}");
    p.send_binary(&publish("p1", &message("t.x", "m1", json!(1))))
        .await?;
    assert_eq!(p.recv().await?, ack("p1"));
    assert_eq!(s.recv().await?["u"], "notification_m1_b");
    s.silent_for(Duration::from_millis(100)).await?;

    // Re-subscribing with the same id replaces the subscription.
    assert_eq!(
        s.roundtrip(&subscribe("s3", "b", &[("q", false)], false))
            .await?,
        ack("s3")
    );
    assert_eq!(ex.subscriptions(), 1);
    drop(s);
    eventually(
        Duration::from_secs(5),
        "subscriptions end with their connection",
        || {
            let ex = ex.clone();
            // What is left is the node's own cache subscription (docs/cache.md, "Events").
            async move {
                ex.subscriptions() == 0
                    && ex
                        .interest()
                        .keys()
                        .all(|k| k.ends_with("cache.invalidation.#"))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_patterns_topics_and_frames_get_clear_failed_acks() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.max_message_bytes = 64 * 1024;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    let err = refused(&mut ws, &subscribe("s1", "x", &[("a*.b", false)], false)).await?;
    assert!(
        err.contains("a*.b") && err.contains("whole segments"),
        "{err}"
    );
    let err = refused(&mut ws, &subscribe("s2", "x", &[("a.*", true)], false)).await?;
    assert!(err.contains("exact_match"), "{err}");
    let err = refused(&mut ws, &subscribe("s3", "x", &[], false)).await?;
    assert!(err.contains("at least one pattern"), "{err}");
    let err = refused(&mut ws, &subscribe("s4", "", &[("a", false)], false)).await?;
    assert!(err.contains("subscription_id"), "{err}");
    let err = refused(&mut ws, &subscribe("s5", "x", &[("", false)], false)).await?;
    assert!(err.contains("empty"), "{err}");
    let err = refused(&mut ws, &publish("p1", &message("a.*.c", "m", json!(1)))).await?;
    assert!(err.contains("a.*.c"), "{err}");
    let err = refused(&mut ws, &json!({"role": "pubsub-publish", "u": "p2"})).await?;
    assert!(err.contains("message"), "{err}");
    let err = refused(
        &mut ws,
        &json!({"role": "pubsub-publish", "u": "p3", "message": {"payload": 1}}),
    )
    .await?;
    assert!(err.contains("topic"), "{err}");
    let err = refused(
        &mut ws,
        &json!({"role": "pubsub-subscribe", "u": "s6", "subscription": {"patterns": "x"}}),
    )
    .await?;
    assert!(err.contains("invalid subscribe"), "{err}");
    // A nameless subscription never existed: nothing is left behind.
    assert_eq!(node.handle.exchange().subscriptions(), 0);
    // Still serving RPC on the same connection.
    let r = ws
        .roundtrip(&mpreg_tests::rpc_frame(
            "r",
            json!([{"name": "e", "fun": "echo", "args": [1]}]),
        ))
        .await?;
    assert_eq!(r["r"]["e"], 1);
    // An oversized publish closes this connection with 1009; others are unaffected.
    let mut other = node.raw().await?;
    let big = message("a.b", "big", json!("x".repeat(100 * 1024)));
    ws.send_text(&publish("p4", &big)).await?;
    let close = ws.closed().await?;
    assert_eq!(close.map(|c| u16::from(c.code)), Some(1009));
    assert_eq!(
        other
            .roundtrip(&subscribe("s7", "y", &[("a.b", false)], false))
            .await?,
        ack("s7")
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_cut_off_and_publishers_go_on() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.outbound_queue = 4;
    cfg.pubsub.slow_subscriber_ms = 200;
    let node = TestNode::with_config(cfg).await?;
    let mut slow = node.raw().await?;
    assert_eq!(
        slow.roundtrip(&subscribe("s", "slow", &[("bulk", false)], false))
            .await?,
        ack("s")
    );
    // Never read from `slow` again: its socket buffers and then its queue fill up.
    let mut p = node.raw().await?;
    let payload = json!("y".repeat(16 * 1024));
    let started = std::time::Instant::now();
    let mut acked = 0;
    for i in 0..2000 {
        let a = p
            .roundtrip(&publish(
                &format!("p{i}"),
                &message("bulk", &format!("m{i}"), payload.clone()),
            ))
            .await?;
        assert_eq!(a["success"], true);
        acked += 1;
        if node
            .handle
            .exchange()
            .stats
            .slow_consumers
            .load(Ordering::Relaxed)
            > 0
        {
            break;
        }
    }
    assert!(
        node.handle
            .exchange()
            .stats
            .slow_consumers
            .load(Ordering::Relaxed)
            == 1,
        "slow subscriber detected after {acked} publishes"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
    eventually(
        Duration::from_secs(5),
        "slow subscriber's subscription removed",
        || async { node.handle.exchange().subscriptions() == 0 },
    )
    .await?;
    // Publishing goes on at full speed.
    let a = p
        .roundtrip(&publish("after", &message("bulk", "after", json!(1))))
        .await?;
    assert_eq!(a, ack("after"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requests_callback_topic_receives_each_level() -> Result<()> {
    let node = TestNode::start().await?;
    let mut s = node.raw().await?;
    assert_eq!(
        s.roundtrip(&subscribe("s", "progress", &[("jobs.#", false)], false))
            .await?,
        ack("s")
    );
    let mut c = node.raw().await?;
    let mut req = mpreg_tests::rpc_frame(
        "job-1",
        json!([
            {"name": "a", "fun": "echo", "args": [1]},
            {"name": "b", "fun": "echos", "args": ["a", 2]},
        ]),
    );
    req["intermediate_result_callback_topic"] = json!("jobs.job-1");
    let reply = c.roundtrip(&req).await?;
    assert_eq!(reply["r"], json!({"b": [1, 2]}));
    for level in 0..2 {
        let n = s.recv().await?;
        let id = format!("rpc_intermediate_job-1_{level}");
        assert_eq!(n["u"], format!("notification_{id}_progress"));
        assert_eq!(n["message"]["message_id"], id.as_str());
        assert_eq!(n["message"]["topic"], "jobs.job-1");
        assert_eq!(n["message"]["headers"]["event"], "rpc.intermediate_result");
        assert_eq!(n["message"]["payload"]["level_index"], level);
        assert_eq!(n["message"]["payload"]["total_levels"], 2);
    }
    // A callback topic with a wildcard is refused before anything runs.
    req["u"] = json!("job-2");
    req["intermediate_result_callback_topic"] = json!("jobs.*");
    let reply = c.roundtrip(&req).await?;
    assert_eq!(reply["error"]["code"], 1005);
    s.silent_for(Duration::from_millis(100)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_cross_the_cluster_only_to_interested_nodes() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("ps-0", &[], &[], &[]),
        cluster_config("ps-1", &[], &[], &[]),
        cluster_config("ps-2", &[], &[], &[]),
    ])
    .await?;
    let mut s1 = cluster.node(1).raw().await?;
    let mut s2 = cluster.node(2).raw().await?;
    let mut s2b = cluster.node(2).raw().await?;
    assert_eq!(
        s1.roundtrip(&subscribe("a", "on-1", &[("orders.#", false)], false))
            .await?,
        ack("a")
    );
    assert_eq!(
        s2.roundtrip(&subscribe("b", "on-2", &[("orders.created", true)], false))
            .await?,
        ack("b")
    );
    assert_eq!(
        s2b.roundtrip(&subscribe("c", "on-2b", &[("x.#", false)], false))
            .await?,
        ack("c")
    );
    let c0 = cluster.node(0).handle.cluster().expect("clustered").clone();
    let c2 = cluster.node(2).handle.cluster().expect("clustered").clone();
    eventually(
        Duration::from_secs(5),
        "interest gossiped to nodes 0 and 2",
        || {
            let c0 = c0.clone();
            let c2 = c2.clone();
            async move {
                let view = c0.view();
                // Node 2 publishes later too: it must know node 1's pattern.
                view.interested("orders.created").len() == 2
                    && view.interested("x.y").len() == 1
                    && c2.view().interested("orders.created").len() == 1
            }
        },
    )
    .await?;
    let mut p = cluster.node(0).raw().await?;
    let msg = message("orders.created", "m1", json!({"id": 7}));
    assert_eq!(p.roundtrip(&publish("p1", &msg)).await?, ack("p1"));
    let want = |sid: &str| {
        json!({"role": "pubsub-notification", "u": format!("notification_m1_{sid}"),
            "subscription_id": sid, "message": msg})
    };
    assert_eq!(s1.recv().await?, want("on-1"));
    assert_eq!(s2.recv().await?, want("on-2"));
    // Exactly once per subscription, and not to the subscription that does not match.
    s1.silent_for(Duration::from_millis(150)).await?;
    s2.silent_for(Duration::from_millis(50)).await?;
    s2b.silent_for(Duration::from_millis(50)).await?;

    // `orders.updated` interests node 1 only: node 2 is not sent it at all.
    let received = |i: usize| {
        cluster
            .node(i)
            .handle
            .exchange()
            .stats
            .received
            .load(Ordering::Relaxed)
    };
    let before = (received(1), received(2));
    let msg2 = message("orders.updated", "m2", json!(2));
    assert_eq!(p.roundtrip(&publish("p2", &msg2)).await?, ack("p2"));
    assert_eq!(s1.recv().await?["u"], "notification_m2_on-1");
    assert_eq!(received(1), before.0 + 1);
    assert_eq!(received(2), before.1, "node 2 has no matching subscription");

    // A publish on node 2 reaches node 1 too, and nothing comes back around. (Published well
    // after m2, beyond the millisecond the backlog's cross-node order resolves.)
    tokio::time::sleep(Duration::from_millis(20)).await;
    let mut p2 = cluster.node(2).raw().await?;
    let msg3 = message("orders.created", "m3", json!(3));
    assert_eq!(p2.roundtrip(&publish("p3", &msg3)).await?, ack("p3"));
    assert_eq!(s1.recv().await?["u"], "notification_m3_on-1");
    assert_eq!(s2.recv().await?["u"], "notification_m3_on-2");
    s1.silent_for(Duration::from_millis(150)).await?;
    s2.silent_for(Duration::from_millis(50)).await?;

    // A late subscriber on node 1 gets the backlog of the whole cluster, oldest first: m1 and
    // m2 were published (and retained) on node 0, m3 on node 2.
    let mut late = cluster.node(1).raw().await?;
    late.send_binary(&subscribe("late", "late-sub", &[("orders.#", false)], true))
        .await?;
    for id in ["m1", "m2", "m3"] {
        assert_eq!(late.recv().await?["u"], format!("backlog_{id}_late-sub"));
    }
    assert_eq!(late.recv().await?, ack("late"));
    drop(late);

    // When node 1's subscriber leaves, node 0 stops forwarding to it.
    drop(s1);
    eventually(Duration::from_secs(5), "interest withdrawn", || {
        let c0 = c0.clone();
        async move { c0.view().interested("orders.updated").is_empty() }
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_publishes_through_its_import() -> Result<()> {
    let node = TestNode::start().await?;
    let mut s = node.raw().await?;
    assert_eq!(
        s.roundtrip(&subscribe("s", "events", &[("plugin.#", false)], false))
            .await?,
        ack("s")
    );
    let c = node.client().await?;
    let id = c
        .call(
            "announce",
            vec![json!("plugin.done"), json!(r#"{"ok":true}"#)],
        )
        .await?;
    let n = s.recv().await?;
    assert_eq!(n["message"]["message_id"], id);
    assert_eq!(n["message"]["topic"], "plugin.done");
    assert_eq!(n["message"]["payload"], json!({"ok": true}));
    assert_eq!(n["message"]["publisher"], "plugin:relay");
    // Bad topic and bad payload come back to the plugin as errors.
    for (topic, payload, text) in [
        ("a.*", "1", "a.*"),
        ("plugin.x", "{not json", "not valid JSON"),
    ] {
        let err = c
            .call("announce", vec![json!(topic), json!(payload)])
            .await
            .expect_err("refused");
        assert!(err.to_string().contains(text), "{err}");
    }
    s.silent_for(Duration::from_millis(100)).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_client_publishes_subscribes_and_consumes_a_queue_by_push() -> Result<()> {
    use mpreg::client::ClientError;
    let node = TestNode::start().await?;
    let c = node.client().await?;
    let early = c.publish("news.early", json!("before")).await?;
    let mut sub = c
        .subscribe("reader", &["news.#"], Some(Duration::from_secs(60)))
        .await?;
    let first = sub.next().await.expect("backlog");
    assert_eq!(first.u, format!("backlog_{early}_reader"));
    let id = c.publish("news.late", json!({"n": 2})).await?;
    let live = sub.next().await.expect("live");
    assert_eq!(live.u, format!("notification_{id}_reader"));
    assert_eq!(live.message["payload"], json!({"n": 2}));
    sub.unsubscribe().await?;
    match c.publish("news.*", json!(1)).await {
        Err(ClientError::Refused(why)) => assert!(why.contains("news.*"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    match c.subscribe("bad", &["a*"], None).await {
        Err(ClientError::Refused(why)) => assert!(why.contains("whole segments"), "{why}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
    // Push consumption of a queue from Rust.
    c.call("queue.create", vec![json!("inbox")]).await?;
    c.call("queue.send", vec![json!("inbox"), json!("job")])
        .await?;
    let mut worker = c.subscribe("worker", &["mpreg.queue.inbox"], None).await?;
    let n = worker.next().await.expect("pushed");
    assert_eq!(n.message["payload"], "job");
    let receipt = n.message["headers"]["receipt"].clone();
    assert_eq!(
        c.call("queue.ack", vec![json!("inbox"), receipt]).await?["acked"],
        1
    );
    Ok(())
}

/// Before, a publisher waited up to `slow_subscriber_ms` for each stuck subscriber in turn:
/// twenty of them held every publish for about forty seconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_subscribers_never_hold_a_publisher_and_a_reader_gets_everything() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.outbound_queue = 4;
    cfg.pubsub.subscriber_overflow = 16;
    cfg.pubsub.slow_subscriber_ms = 2_000;
    let node = TestNode::with_config(cfg).await?;
    let stuck_count = 20;
    let mut stuck = Vec::new();
    for i in 0..stuck_count {
        let mut s = node.raw().await?;
        let u = format!("s{i}");
        assert_eq!(
            s.roundtrip(&subscribe(&u, "stuck", &[("wide", false)], false))
                .await?,
            ack(&u)
        );
        stuck.push(s);
    }
    let mut reader = node.raw().await?;
    assert_eq!(
        reader
            .roundtrip(&subscribe("r", "reader", &[("wide", false)], false))
            .await?,
        ack("r")
    );
    let n = 400;
    let read_all = tokio::spawn(async move {
        let mut ids = Vec::new();
        for _ in 0..n {
            let note = reader.recv().await?;
            ids.push(
                note["message"]["message_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            );
        }
        anyhow::Ok((ids, reader))
    });
    let mut p = node.raw().await?;
    let payload = json!("z".repeat(32 * 1024));
    let started = std::time::Instant::now();
    let mut slowest = Duration::ZERO;
    for i in 0..n {
        let t = std::time::Instant::now();
        let a = p
            .roundtrip(&publish(
                &format!("p{i}"),
                &message("wide", &format!("m{i}"), payload.clone()),
            ))
            .await?;
        slowest = slowest.max(t.elapsed());
        assert_eq!(a["success"], true, "{a}");
    }
    let took = started.elapsed();
    assert!(
        slowest < Duration::from_secs(1),
        "one publish waited {slowest:?} (stuck subscribers must not hold it)"
    );
    assert!(
        took < Duration::from_secs(20),
        "{n} publishes took {took:?}"
    );
    let (ids, _reader) = read_all.await??;
    let want: Vec<String> = (0..n).map(|i| format!("m{i}")).collect();
    assert_eq!(
        ids, want,
        "the reading subscriber got every message, in order"
    );
    eventually(
        Duration::from_secs(10),
        "every stuck subscriber cut off",
        || async {
            node.handle
                .exchange()
                .stats
                .slow_consumers
                .load(Ordering::Relaxed)
                == stuck_count
        },
    )
    .await?;
    assert_eq!(node.handle.exchange().subscriptions(), 1);
    Ok(())
}
