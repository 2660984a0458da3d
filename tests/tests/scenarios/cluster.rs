//! Several real nodes on loopback forming a cluster: routing by `locs` across nodes, discovery
//! built-ins, plugin distribution, crashes and rejoins, load-aware choice, client failover.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mpreg::client::{ClientError, ClusterClient};
use mpreg::protocol::RpcCommand;
use mpreg_tests::{TestCluster, TestNode, cluster_config, eventually, plugin};
use serde_json::{Value, json};

/// Calls started on plugin `name` of `node`.
fn calls(node: &TestNode, name: &str) -> u64 {
    node.handle
        .registry()
        .plugins()
        .iter()
        .filter(|p| p.manifest.name == name)
        .map(|p| p.stats.calls.load(Ordering::Relaxed))
        .sum()
}

fn has(node: &TestNode, fun: &str, version: &str) -> bool {
    node.handle
        .registry()
        .all()
        .iter()
        .any(|e| e.function().name == fun && e.version().to_string() == version)
}

fn cmd(name: &str, fun: &str, args: Vec<Value>, locs: &[&str]) -> RpcCommand {
    let mut c = RpcCommand::new(name, fun, args);
    c.locs = locs.iter().map(|s| s.to_string()).collect();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_run_where_their_locs_are_and_discovery_sees_the_cluster() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("coord", &[], &[], &[]),
        cluster_config("node-a", &["a"], &["math"], &[]),
        cluster_config("node-b", &["b"], &["math"], &[]),
        cluster_config("node-c", &["c"], &["math"], &[]),
    ])
    .await?;
    let client = cluster.node(0).client().await?;

    // Three commands that can each run on one node only; the coordinator has no plugins.
    let r = client
        .request(vec![
            cmd("x", "add", vec![json!(1), json!(2)], &["a"]),
            cmd("y", "mul", vec![json!("x"), json!(10)], &["b"]),
            cmd("z", "add", vec![json!("y"), json!(5)], &["c"]),
        ])
        .await?;
    assert_eq!(Value::Object(r), json!({"z": 35}), "only the last level");
    for i in 1..=3 {
        assert_eq!(
            calls(cluster.node(i), "math"),
            1,
            "node {i} ran exactly one command"
        );
    }

    // Nothing has both tags: 1001, fast, before anything runs.
    let started = Instant::now();
    let err = client
        .call_command(cmd("w", "add", vec![json!(1), json!(1)], &["a", "b"]))
        .await
        .expect_err("no node has a and b");
    assert_eq!(err.code(), Some(1001), "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));

    // Built-ins are on every node, so they route by `locs` too.
    let there = client
        .call_command(cmd("e", "cluster_map", vec![], &["c"]))
        .await?;
    assert_eq!(
        there["nodes"][0]["node_id"], "node-c",
        "answered by node c itself"
    );

    // A failure on the remote node comes back with its cause and where it happened.
    let err = client
        .call_command(cmd("f", "fib", vec![json!("not a number")], &["b"]))
        .await
        .expect_err("bad argument");
    assert_eq!(err.code(), Some(1003));
    assert!(err.to_string().contains("node-b"), "{err}");

    // Discovery: every node with the fields MPREG's cluster client reads.
    let map = client.call("cluster_map", vec![]).await?;
    let nodes = map["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 4);
    for n in nodes {
        assert!(
            n["node_id"].is_string() && n["advertised_urls"][0].is_string(),
            "{n}"
        );
        assert!(n["load"]["load_score"].is_number(), "{n}");
    }
    let peers = client.call("list_peers", vec![]).await?;
    let peers = peers.as_array().expect("peers");
    assert_eq!(peers.len(), 3, "every node but this one");
    let b = peers
        .iter()
        .find(|p| p["node_id"] == "node-b")
        .expect("node-b listed");
    assert_eq!(b["locs"], json!(["b"]));
    assert!(b["funs"].as_array().expect("funs").contains(&json!("mul")));
    assert!(
        b["url"]
            .as_str()
            .expect("url")
            .starts_with("ws://127.0.0.1:")
    );
    let described = client.call("rpc_describe", vec![json!("mul")]).await?;
    let described = described["items"].as_array().expect("items");
    assert_eq!(described.len(), 3, "mul on three nodes: {described:?}");
    assert!(described.iter().all(|d| {
        d["signature"]
            .as_str()
            .is_some_and(|s| s.starts_with("func("))
    }));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_published_on_one_node_reaches_the_others_and_retire_follows() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("pub-0", &[], &[], &[]),
        cluster_config("pub-1", &["gpu"], &[], &[]),
        cluster_config("pub-2", &[], &[], &[]),
    ])
    .await?;
    let (n0, n1, n2) = (cluster.node(0), cluster.node(1), cluster.node(2));
    let c2 = n2.client().await?;

    // Publish on node 0 → installed (fetched, verified, loaded) on node 2.
    let v1 = std::fs::read(plugin("greeter"))?;
    mpreg_tests::publish(&n0.handle.http_url(), v1).await?;
    eventually(
        Duration::from_secs(10),
        "greeter 1.0.0 on node 2",
        || async { has(n2, "greet", "1.0.0") },
    )
    .await?;
    let hello = c2.call("greet", vec![json!("ada")]).await?;
    assert!(hello.as_str().expect("text").contains("ada"), "{hello}");
    // Every node hosts it by now (each announces its install at once): it ran on one of them.
    assert_eq!(
        calls(n0, "greeter") + calls(n1, "greeter") + calls(n2, "greeter"),
        1
    );

    // Hot swap from another node: v2 published on node 1 becomes what node 2 serves; v1 stays
    // reachable by constraint.
    let v2 = std::fs::read(plugin("greeter2"))?;
    mpreg_tests::publish(&n1.handle.http_url(), v2).await?;
    eventually(
        Duration::from_secs(10),
        "greeter 2.0.0 on nodes 0 and 2",
        || async { has(n0, "greet", "2.0.0") && has(n2, "greet", "2.0.0") },
    )
    .await?;
    let new = c2.call("greet", vec![json!("bo")]).await?;
    let mut old = RpcCommand::new("g", "greet", vec![json!("bo")]);
    old.version_constraint = Some("^1".into());
    let old = c2.call_command(old).await?;
    assert_ne!(new, old, "v2 by default, v1 by constraint");

    // Retire v1 on node 2 → it leaves every node.
    mpreg_tests::admin(&n2.handle.http_url(), mpreg_tests::ADMIN_TOKEN, |c| {
        c.retire("greeter", "1.0.0")
    })
    .await?;
    eventually(
        Duration::from_secs(10),
        "greeter 1.0.0 retired everywhere",
        || async { !has(n0, "greet", "1.0.0") && !has(n1, "greet", "1.0.0") },
    )
    .await?;
    let mut old = RpcCommand::new("g", "greet", vec![json!("bo")]);
    old.version_constraint = Some("^1".into());
    let err = n0
        .client()
        .await?
        .call_command(old)
        .await
        .expect_err("retired");
    assert_eq!(err.code(), Some(1001), "{err}");

    // Placement: only the gpu node hosts it; the node it was published to only stores it, and
    // every node can still call it (forwarded).
    let text = std::fs::read(plugin("text"))?;
    let placed = mpreg_tests::admin(&n0.handle.http_url(), mpreg_tests::ADMIN_TOKEN, move |c| {
        c.publish_placed(&text, None, &["gpu".to_owned()], &mut |_| {})
    })
    .await?;
    assert_eq!(placed["outcome"], "stored", "{placed}");
    eventually(Duration::from_secs(10), "text on the gpu node", || async {
        has(n1, "upper", "2.1.0")
    })
    .await?;
    assert!(!has(n0, "upper", "2.1.0") && !has(n2, "upper", "2.1.0"));
    eventually(
        Duration::from_secs(5),
        "node 2 learns where upper is",
        || async {
            n2.handle
                .cluster()
                .is_some_and(|c| !c.view().functions("upper").is_empty())
        },
    )
    .await?;
    assert_eq!(c2.call("upper", vec![json!("hi")]).await?, json!("HI"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_node_leaves_the_catalog_its_calls_fail_fast_and_it_rejoins() -> Result<()> {
    let mut only_c = cluster_config("crash-c", &["c"], &["math", "chaos"], &[]);
    only_c.runtime.call_timeout_ms = 3_000;
    // End to end as the binary runs: gossip over real UDP.
    let mut cluster = TestCluster::start_udp(vec![
        cluster_config("crash-0", &[], &["math"], &[]),
        cluster_config("crash-1", &[], &["math"], &[]),
        only_c.clone(),
    ])
    .await?;
    let c0 = cluster.node(0).client().await?;

    // A call running on node c when it dies fails at once with 1009, not at its deadline.
    let slow = {
        let c0 = c0.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let r = c0
                .call_command(cmd("s", "busy", vec![json!(2_500)], &["c"]))
                .await;
            (r, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let crashed_at = Instant::now();
    cluster.crash(2).await;
    let (r, took) = slow.await?;
    let err = r.expect_err("its node died");
    assert_eq!(err.code(), Some(1009), "{err}");
    assert!(took < Duration::from_millis(2_000), "failed fast: {took:?}");

    // Detected: its entries leave the catalog on both survivors.
    cluster.wait_gone("crash-c", Duration::from_secs(6)).await?;
    let n1 = cluster.node(1);
    eprintln!("failure detected after {:?}", crashed_at.elapsed());

    // Only node c had tag c: 1001 quickly. Everything else goes to the survivors.
    let started = Instant::now();
    let err = c0
        .call_command(cmd("x", "add", vec![json!(1), json!(1)], &["c"]))
        .await
        .expect_err("no node with c");
    assert_eq!(err.code(), Some(1001), "{err}");
    assert!(started.elapsed() < Duration::from_millis(500));
    let c1 = n1.client().await?;
    for i in 0..50 {
        let c = if i % 2 == 0 { &c0 } else { &c1 };
        assert_eq!(c.call("add", vec![json!(i), json!(1)]).await?, json!(i + 1));
    }

    // Restarted, it rejoins and serves again.
    cluster.restart(2, only_c).await?;
    cluster.wait_formed(Duration::from_secs(10)).await?;
    let back = c0
        .call_command(cmd("x", "add", vec![json!(20), json!(22)], &["c"]))
        .await?;
    assert_eq!(back, json!(42));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sustained_calls_spread_over_the_nodes_that_have_the_function() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("spread-0", &[], &[], &[]),
        cluster_config("spread-1", &[], &["chaos"], &[]),
        cluster_config("spread-2", &[], &["chaos"], &[]),
    ])
    .await?;
    let client = cluster.node(0).client().await?;
    // Sequential calls: equal load, so ties alternate.
    for _ in 0..40 {
        client.call("busy", vec![json!(1)]).await?;
    }
    // Concurrent calls: the less busy node gets the next one.
    let mut running = Vec::new();
    for _ in 0..40 {
        let c = client.clone();
        running.push(tokio::spawn(async move {
            c.call("busy", vec![json!(20)]).await
        }));
    }
    for r in running {
        r.await??;
    }
    let (a, b) = (
        calls(cluster.node(1), "chaos"),
        calls(cluster.node(2), "chaos"),
    );
    assert_eq!(a + b, 80);
    assert!(a >= 20 && b >= 20, "spread over both: {a} / {b}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_client_fails_over_when_its_node_dies() -> Result<()> {
    let mut cluster = TestCluster::start(vec![
        cluster_config("fo-0", &[], &["math"], &[]),
        cluster_config("fo-1", &[], &["math"], &[]),
    ])
    .await?;
    let url0 = cluster.node(0).url.clone();
    let url1 = cluster.node(1).url.clone();
    // Given only one seed, it learns the other node from the cluster map.
    let client = ClusterClient::connect(&[url0.as_str()]).await?;
    assert_eq!(client.current_url(), url0);
    assert!(
        client.known_urls().contains(&url1),
        "{:?}",
        client.known_urls()
    );
    assert_eq!(
        client.call("add", vec![json!(1), json!(2)]).await?,
        json!(3)
    );

    cluster.crash(0).await;
    assert_eq!(
        client.call("add", vec![json!(3), json!(4)]).await?,
        json!(7)
    );
    assert_eq!(client.current_url(), url1);

    // With every node gone, a clear connect error rather than a hang.
    cluster.crash(1).await;
    let err = client
        .call("add", vec![json!(1), json!(1)])
        .await
        .expect_err("none left");
    assert!(matches!(err, ClientError::Connect { .. }), "{err}");
    Ok(())
}

/// Speaks the peer protocol directly to node `url`: hello, then each frame, returning replies.
async fn peer_exchange(
    url: &str,
    cluster_id: &str,
    frames: Vec<mpreg::cluster::wire::PeerFrame>,
) -> Result<Vec<mpreg::cluster::wire::PeerFrame>> {
    use futures_util::{SinkExt, StreamExt};
    use mpreg::cluster::wire::{PEER_PATH, PeerFrame};
    use tokio_tungstenite::tungstenite::Message;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("{url}{PEER_PATH}")).await?;
    let hello = PeerFrame::Hello {
        node_id: "tester".into(),
        cluster_id: cluster_id.into(),
    };
    let mut out = Vec::new();
    for f in std::iter::once(hello).chain(frames) {
        ws.send(Message::Binary(f.encode()?.into())).await?;
        let next = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?;
        match next {
            Some(Ok(Message::Binary(b))) => out.push(PeerFrame::decode(&b)?),
            _ => break,
        }
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_calls_respect_the_hop_budget_and_path_and_peers_must_match() -> Result<()> {
    use mpreg::cluster::wire::{ForwardedCall, PeerFrame, RemoteFailure};
    let cluster = TestCluster::start(vec![
        cluster_config("hop-a", &[], &[], &[]),
        cluster_config("hop-b", &["b"], &["math"], &[]),
    ])
    .await?;
    let a = &cluster.node(0).url;
    let call = |hops_left: u8, path: Vec<String>, id: u64| PeerFrame::Call {
        id,
        call: ForwardedCall {
            request_id: "hop-test".into(),
            command: r#"{"name":"x","fun":"add","args":[2,3]}"#.into(),
            hops_left,
            path,
            timeout_ms: 5_000,
            depth: 0,
            traceparent: None,
            principal: Default::default(),
        },
    };
    let replies = peer_exchange(
        a,
        "default",
        vec![
            // Node a lacks `add`: with budget it forwards to b; without, 1001; never back
            // through a node on the path.
            call(1, vec!["tester".into()], 1),
            call(0, vec!["tester".into()], 2),
            call(1, vec!["hop-b".into()], 3),
            PeerFrame::Fetch {
                id: 4,
                sha256: "00".repeat(32),
            },
        ],
    )
    .await?;
    assert!(
        matches!(&replies[0], PeerFrame::Welcome { refused: None, .. }),
        "{replies:?}"
    );
    assert_eq!(
        replies[1],
        PeerFrame::Reply {
            id: 1,
            result: Ok("5".into())
        }
    );
    for (i, id) in [(2, 2u64), (3, 3)] {
        let PeerFrame::Reply {
            id: got,
            result: Err(RemoteFailure { code, cause }),
        } = &replies[i]
        else {
            panic!("{:?}", replies[i])
        };
        assert_eq!((*got, *code), (id, 1001), "{cause}");
    }
    assert_eq!(
        replies[4],
        PeerFrame::Blob { id: 4, bytes: None },
        "unknown sha256"
    );

    // Another cluster's node is refused.
    let refused = peer_exchange(a, "elsewhere", vec![]).await?;
    assert!(
        matches!(&refused[0], PeerFrame::Welcome { refused: Some(why), .. } if why.contains("elsewhere")),
        "{refused:?}"
    );
    // Garbage instead of a hello is refused; garbage after it closes the link; the node keeps
    // serving throughout.
    {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let url = format!("{a}{}", mpreg::cluster::wire::PEER_PATH);
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
        ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
            .await?;
        let Some(Ok(Message::Binary(b))) = ws.next().await else {
            anyhow::bail!("no welcome")
        };
        assert!(matches!(
            PeerFrame::decode(&b)?,
            PeerFrame::Welcome {
                refused: Some(_),
                ..
            }
        ));
        let (mut ws, _) = tokio_tungstenite::connect_async(&url).await?;
        let hello = PeerFrame::Hello {
            node_id: "tester".into(),
            cluster_id: "default".into(),
        };
        ws.send(Message::Binary(hello.encode()?.into())).await?;
        let _welcome = ws.next().await;
        ws.send(Message::Binary(vec![0xff, 0xff, 0xff].into()))
            .await?;
        let end = tokio::time::timeout(Duration::from_secs(5), ws.next()).await?;
        assert!(!matches!(end, Some(Ok(Message::Binary(_)))), "{end:?}");
    }
    let c = cluster.node(0).client().await?;
    assert_eq!(c.call("add", vec![json!(1), json!(1)]).await?, json!(2));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shut_down_leaves_at_once_ends_every_task_and_frees_its_ports() -> Result<()> {
    let mut cluster = TestCluster::start_udp(vec![
        cluster_config("leave-0", &[], &["math"], &[]),
        cluster_config("leave-1", &[], &["math"], &[]),
    ])
    .await?;
    let leaving = cluster.nodes[1].take().context("node 1")?;
    let addr = leaving.handle.addr();
    let started = Instant::now();
    leaving.handle.clone().shutdown().await;
    assert_eq!(
        leaving.handle.live_tasks(),
        0,
        "no task of the node is alive"
    );
    // Its ports are free: the same TCP and UDP address can be bound again at once.
    drop(std::net::TcpListener::bind(addr).context("tcp port still taken")?);
    drop(std::net::UdpSocket::bind(addr).context("udp port still taken")?);
    // The survivor saw it leave, rather than waiting for the failure detector (seconds).
    let gone = cluster.wait_gone("leave-1", Duration::from_secs(2)).await?;
    eprintln!(
        "left after {:?} (shutdown took {:?})",
        gone,
        started.elapsed()
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_from_gossip_leaves_the_views_and_returns_when_healed() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("part-0", &[], &["math"], &[]),
        cluster_config("part-1", &[], &["math"], &[]),
        cluster_config("part-2", &["c"], &["math"], &[]),
    ])
    .await?;
    let c0 = cluster.node(0).client().await?;
    cluster.partition(2, 0).await?;
    cluster.partition(2, 1).await?;
    cluster.wait_gone("part-2", Duration::from_secs(10)).await?;
    let err = c0
        .call_command(cmd("x", "add", vec![json!(1), json!(1)], &["c"]))
        .await
        .expect_err("no reachable node has c");
    assert_eq!(err.code(), Some(1001), "{err}");
    cluster.heal(2, 0).await?;
    cluster.heal(2, 1).await?;
    cluster.wait_formed(Duration::from_secs(10)).await?;
    let back = c0
        .call_command(cmd("x", "add", vec![json!(20), json!(22)], &["c"]))
        .await?;
    assert_eq!(back, json!(42));
    Ok(())
}
