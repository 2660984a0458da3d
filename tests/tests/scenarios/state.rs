//! Cluster state that is true at once (docs/cluster.md, "What an ack means"): a subscription,
//! a queue, a published or retired plugin version is known to every live node by the time
//! the client hears back, not a gossip round later.

use std::time::Duration;

use anyhow::{Result, ensure};
use mpreg_tests::{RawWs, TestCluster, cluster_config, plugin, rpc_frame};
use serde_json::{Value, json};

fn subscribe(u: &str, sid: &str, topic: &str) -> Value {
    json!({"role": "pubsub-subscribe", "u": u, "subscription": {
        "subscription_id": sid, "patterns": [{"pattern": topic, "exact_match": true}],
        "subscriber": "test", "created_at": 1795329920.68, "get_backlog": false,
        "backlog_seconds": 0}})
}

fn publish(u: &str, topic: &str, id: &str, payload: Value, headers: Value) -> Value {
    json!({"role": "pubsub-publish", "u": u, "message": {"topic": topic, "payload": payload,
        "timestamp": 1795329920.68, "message_id": id, "publisher": "test", "headers": headers,
        "routing_path": null, "current_hop": null}})
}

fn unsubscribe(u: &str, sid: &str) -> Value {
    json!({"role": "pubsub-unsubscribe", "u": u, "subscription_id": sid})
}

async fn acked(ws: &mut RawWs, frame: &Value) -> Result<()> {
    let a = ws.roundtrip(frame).await?;
    ensure!(
        a["role"] == "pubsub-ack" && a["success"] == true,
        "not acked: {a}"
    );
    Ok(())
}

fn three() -> Vec<mpreg::config::NodeConfig> {
    (0..3)
        .map(|i| cluster_config(&format!("st-{i}"), &[], &[], &[]))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_right_after_the_subscribe_ack_arrives_on_every_node_exactly_once() -> Result<()>
{
    let cluster = TestCluster::start(three()).await?;
    let mut subs = Vec::new();
    let mut pubs = Vec::new();
    for i in 0..3 {
        subs.push(cluster.node(i).raw().await?);
        pubs.push(cluster.node(i).raw().await?);
    }
    // Every ordered pair of nodes, over and over: subscribe on one, publish on another the
    // moment the ack is in, then unsubscribe. A notification missing or doubled fails.
    for i in 0..1000 {
        let (s, p) = (i % 3, (i + 1 + i / 3 % 2) % 3);
        let (topic, sid) = (format!("race.{i}"), format!("sub-{i}"));
        acked(&mut subs[s], &subscribe(&format!("s{i}"), &sid, &topic)).await?;
        let msg = publish(
            &format!("p{i}"),
            &topic,
            &format!("m{i}"),
            json!(i),
            json!({}),
        );
        acked(&mut pubs[p], &msg).await?;
        let got = tokio::time::timeout(Duration::from_secs(2), subs[s].recv())
            .await
            .map_err(|_| anyhow::anyhow!("message {i} (node {p} → {s}) never arrived"))??;
        ensure!(got["role"] == "pubsub-notification", "{got}");
        ensure!(
            got["message"]["payload"] == json!(i),
            "message {i}: got {got}"
        );
        // The unsubscribe's ack comes next: a second copy would come before it.
        acked(&mut subs[s], &unsubscribe(&format!("u{i}"), &sid)).await?;
    }
    for s in &mut subs {
        s.silent_for(Duration::from_millis(100)).await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_reply_over_pubsub_across_nodes_with_an_immediate_responder() -> Result<()> {
    let cluster = TestCluster::start(three()).await?;
    // The responder on node 0 answers each request at once on its `reply_to` topic, as
    // MPREG's `publish_with_reply` expects.
    let mut responder = cluster.node(0).raw().await?;
    acked(&mut responder, &subscribe("r", "svc", "svc.echo")).await?;
    let serve = tokio::spawn(async move {
        let mut answered = 0u32;
        while let Ok(Ok(n)) = tokio::time::timeout(Duration::from_secs(5), responder.recv()).await {
            if n["role"] != "pubsub-notification" {
                continue;
            }
            let m = &n["message"];
            let reply_to = m["headers"]["reply_to"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let reply = publish(
                &format!("a{answered}"),
                &reply_to,
                &format!("reply-{answered}"),
                m["payload"].clone(),
                json!({"correlation_id": m["message_id"]}),
            );
            if responder.send_text(&reply).await.is_err() {
                break;
            }
            answered += 1;
        }
        answered
    });
    for i in 0..200 {
        let node = 1 + i % 2;
        let mut c = cluster.node(node).raw().await?;
        let reply_to = format!("reply.{i}");
        acked(&mut c, &subscribe(&format!("s{i}"), "reply", &reply_to)).await?;
        let req = publish(
            &format!("q{i}"),
            "svc.echo",
            &format!("req-{i}"),
            json!({"n": i}),
            json!({"reply_to": reply_to}),
        );
        acked(&mut c, &req).await?;
        let reply = tokio::time::timeout(Duration::from_secs(2), c.recv())
            .await
            .map_err(|_| anyhow::anyhow!("request {i} from node {node}: no reply"))??;
        ensure!(reply["message"]["payload"] == json!({"n": i}), "{reply}");
        ensure!(
            reply["message"]["headers"]["correlation_id"] == format!("req-{i}"),
            "{reply}"
        );
    }
    // The responder's own reply acks end its loop once nothing more comes.
    let answered = serve.await?;
    ensure!(answered == 200, "answered {answered}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_created_on_one_node_is_usable_from_another_at_once() -> Result<()> {
    let cluster = TestCluster::start(three()).await?;
    let mut a = cluster.node(0).raw().await?;
    let mut b = cluster.node(1).raw().await?;
    let mut c = cluster.node(2).raw().await?;
    let call = |u: &str, fun: &str, args: Value| {
        rpc_frame(
            u,
            json!([{"name": "r", "fun": fun, "args": args, "locs": []}]),
        )
    };
    for i in 0..50 {
        let q = format!("jobs-{i}");
        let made = a.roundtrip(&call("c", "queue.create", json!([q]))).await?;
        ensure!(made["r"]["r"]["created"] == true, "{made}");
        let sent = b
            .roundtrip(&call("s", "queue.send", json!([q, {"n": i}])))
            .await?;
        ensure!(
            sent["r"]["r"]["message_id"].is_string(),
            "send from node 1: {sent}"
        );
        let got = c.roundtrip(&call("g", "queue.receive", json!([q]))).await?;
        ensure!(
            got["r"]["r"][0]["body"] == json!({"n": i}),
            "receive from node 2: {got}"
        );
        let gone = a.roundtrip(&call("d", "queue.delete", json!([q]))).await?;
        ensure!(gone["r"]["r"]["deleted"] == true, "{gone}");
        let after = b
            .roundtrip(&call("s", "queue.send", json!([q, {"n": i}])))
            .await?;
        ensure!(
            after["error"]["code"].is_i64(),
            "deleted queue still usable: {after}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_version_is_callable_everywhere_and_a_retired_one_nowhere_at_once() -> Result<()>
{
    let mut cfgs = three();
    // Node 2 does not install what others publish: it must forward to a node that has it.
    cfgs[2].cluster.distribute_plugins = false;
    let cluster = TestCluster::start(cfgs).await?;
    let url0 = cluster.node(0).handle.http_url();
    let bytes = std::fs::read(plugin("greeter"))?;
    mpreg_tests::publish(&url0, bytes).await?;
    let c2 = cluster.node(2).client().await?;
    let hello = c2.call("greet", vec![json!("ada")]).await?;
    ensure!(
        hello.as_str().unwrap_or_default().contains("ada"),
        "{hello}"
    );
    // Node 1 installs it from node 0 (the retire below must take it from a node that serves
    // it, not race its install).
    let n1 = cluster.node(1);
    mpreg_tests::eventually(Duration::from_secs(10), "greeter on node 1", || async {
        !n1.handle.registry().plugins().is_empty()
    })
    .await?;
    mpreg_tests::admin(&url0, mpreg_tests::ADMIN_TOKEN, |c| {
        c.retire("greeter", "1.0.0")
    })
    .await?;
    // Node 1 may have installed it meanwhile; none serves it now, nor routes to one that does.
    for i in 1..3 {
        let err = cluster
            .node(i)
            .client()
            .await?
            .call("greet", vec![json!("bo")])
            .await
            .expect_err("retired");
        ensure!(err.code() == Some(1001), "node {i}: {err}");
    }
    Ok(())
}
