//! Run with: `cargo run -p mpreg-examples --example cluster`
//!
//! Three nodes on 127.0.0.1 form a cluster through gossip: a request whose steps can each run on
//! one node only, a plugin published to one node and called on another the moment the publish
//! returns, a subscription on one node receiving a message published on another right after its
//! ack, discovery with filters, the cluster map, and a node crashing: its calls go to the
//! survivors and its functions leave the catalog.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use mpreg::admin_client::AdminClient;
use mpreg::client::{Client, ClusterClient};
use mpreg::config::NodeConfig;
use mpreg::node::NodeHandle;
use mpreg::protocol::RpcCommand;
use serde_json::json;

const TOKEN: &str = "cluster-example-token-0123";

fn plugin(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("MPREG_PLUGIN_DIR")).join(format!("mpreg_plugin_{name}.wasm"))
}

async fn start(id: &str, tags: &[&str], plugins: &[&str], peers: &[String]) -> Result<NodeHandle> {
    let mut cfg = NodeConfig::default();
    cfg.server.port = 0;
    cfg.node.id = Some(id.into());
    cfg.node.resources = tags.iter().map(|t| t.to_string()).collect();
    cfg.admin.token = Some(TOKEN.into());
    cfg.plugins = plugins.iter().map(|p| plugin(p).into()).collect();
    cfg.cluster.peers = peers.to_vec();
    Ok(mpreg::node::start(cfg).await?)
}

/// Waits until `node` sees `peers` other nodes with their links up.
async fn until_formed(node: &NodeHandle, peers: usize) -> Result<()> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if let Some(c) = node.cluster() {
            let view = c.view();
            let linked = view
                .nodes
                .iter()
                .all(|p| c.link(&p.node_id).is_some_and(|l| l.is_connected()));
            if view.nodes.len() == peers && linked {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    bail!("cluster did not form")
}

#[tokio::main]
async fn main() -> Result<()> {
    let started = Instant::now();
    let a = start("node-a", &["gpu"], &["math"], &[]).await?;
    let seed = vec![a.addr().to_string()];
    let b = start("node-b", &["ssd"], &["math"], &seed).await?;
    let c = start("node-c", &[], &[], &seed).await?;
    until_formed(&c, 2).await?;
    println!("3 nodes formed in {:?}\n", started.elapsed());

    let client = ClusterClient::connect(&[c.url()]).await?;
    let step = |name: &str, fun: &str, args, tag: &str| {
        let mut cmd = RpcCommand::new(name, fun, args);
        cmd.locs = vec![tag.to_owned()];
        cmd
    };
    let r = client
        .request(vec![
            step("x", "add", vec![json!(1), json!(2)], "gpu"),
            step("y", "mul", vec![json!("x"), json!(10)], "ssd"),
            step("z", "add", vec![json!("y"), json!(5)], "gpu"),
        ])
        .await?;
    println!("chain asked of node-c, run on node-a, node-b, node-a: {r:?}");

    let admin = AdminClient::new(&a.http_url(), TOKEN);
    let text = std::fs::read(plugin("text"))?;
    let published =
        tokio::task::spawn_blocking(move || admin.publish(&text, None, &mut |_| {})).await??;
    println!("published text {} on node-a", published.version);
    // The publish answered once every live node could route the new version: no waiting.
    let upper = client
        .call("upper", vec![json!("called on node-c")])
        .await?;
    println!("upper via node-c: {upper}");

    // Subscribe on node-b; the ack means every node knows of it, so a message published on
    // node-a right after it arrives.
    let on_b = Client::connect(&b.url()).await?;
    let on_a = Client::connect(&a.url()).await?;
    let mut sub = on_b.subscribe("orders", &["orders.#"], None).await?;
    on_a.publish("orders.created", json!({"id": 7})).await?;
    match tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
        Ok(Some(n)) => println!("node-b got {} from node-a", n.message["payload"]),
        _ => bail!("the message published on node-a did not reach node-b"),
    }

    // Discovery in MPREG's shapes, with filters: functions on gpu nodes, one page of two.
    let listed = client
        .call("rpc_list", vec![json!({"resources": ["gpu"], "limit": 2})])
        .await?;
    let text = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
    for item in listed["items"].as_array().into_iter().flatten() {
        println!(
            "  {}@{} on {}: {}",
            text(&item["identity"]["name"]),
            text(&item["identity"]["version"]),
            text(&item["node_id"]),
            text(&item["signature"])
        );
    }
    println!("  next page: {}", listed["next_page_token"]);

    let map = client.call("cluster_map", vec![]).await?;
    for n in map["nodes"].as_array().into_iter().flatten() {
        println!(
            "  {} {} tags {} load {} functions {}",
            n["node_id"],
            n["advertised_urls"][0],
            n["resources"],
            n["load"]["load_score"],
            n["functions"].as_array().map_or(0, Vec::len)
        );
    }

    let crashed = Instant::now();
    b.crash().await;
    let gone = loop {
        if c.cluster()
            .is_some_and(|cl| cl.view().node("node-b").is_none())
        {
            break crashed.elapsed();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    println!("\nnode-b crashed; node-c dropped it from its catalog after {gone:?}");
    println!(
        "mul without locs now runs on node-a: {}",
        client.call("mul", vec![json!(6), json!(7)]).await?
    );
    let mut on_b = RpcCommand::new("m", "mul", vec![json!(6), json!(7)]);
    on_b.locs = vec!["ssd".into()];
    match client.call_command(on_b).await {
        Err(e) => println!("mul with locs [ssd]: {e}"),
        Ok(v) => println!("unexpected: {v}"),
    }
    c.shutdown().await;
    a.shutdown().await;
    Ok(())
}
