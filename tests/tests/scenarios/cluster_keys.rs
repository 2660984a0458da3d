//! Cluster security (docs/security.md, "The cluster"), over real UDP: a node without the
//! gossip key, or with another, cannot join, and its gossip is dropped and counted; the key of a
//! running 3-node cluster is rotated in three edits of the keyring files without a failed call;
//! peer links speak TLS with certificates of the cluster CA, and nothing else opens one.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use mpreg::cluster::keyring::Keyring;
use mpreg::config::NodeConfig;
use mpreg::protocol::RpcCommand;
use mpreg_tests::{TestCluster, TestNode, cluster_config, eventually};
use serde_json::json;

/// Writes `keys` (one a line, the first seals) to `path`.
fn write(path: &Path, keys: &[&str]) -> Result<()> {
    std::fs::write(path, keys.join("\n") + "\n")?;
    Ok(())
}

fn keyed(id: &str, tags: &[&str], plugins: &[&str], keyring: &Path) -> NodeConfig {
    let mut cfg = cluster_config(id, tags, plugins, &[]);
    cfg.cluster.gossip_keyring = Some(keyring.to_owned());
    cfg
}

/// The keyring file of node `i`.
fn ring(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("keyring-{i}"))
}

async fn rejected(url: &str) -> Result<f64> {
    let scrape = mpreg_tests::scrape(url).await?;
    Ok(mpreg_tests::sample(
        &scrape,
        "mpreg_gossip_rejected_total",
        &[],
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_cluster_key_cannot_join_and_its_gossip_is_dropped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let key = Keyring::generate()?;
    for i in 0..2 {
        write(&ring(dir.path(), i), &[&key])?;
    }
    let cluster = TestCluster::start_udp(vec![
        keyed("key-a", &[], &["math"], &ring(dir.path(), 0)),
        keyed("key-b", &[], &["text"], &ring(dir.path(), 1)),
    ])
    .await?;
    let seed = cluster.seed()?;
    // One outsider with another key, one with none: both gossip at the seed.
    let other = dir.path().join("other");
    write(&other, &[&Keyring::generate()?])?;
    let mut wrong = cluster_config("key-wrong", &[], &[], std::slice::from_ref(&seed));
    wrong.cluster.gossip_keyring = Some(other);
    let wrong = TestNode::with_config(wrong).await?;
    let plain = TestNode::with_config(cluster_config("key-none", &[], &[], &[seed])).await?;
    let a = cluster.node(0);
    eventually(
        Duration::from_secs(10),
        "outsiders' gossip rejected",
        || async { rejected(&a.url).await.unwrap_or(0.0) >= 2.0 },
    )
    .await?;
    // A few more gossip rounds: still nobody new in anyone's view, either way round.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for n in [&wrong, &plain] {
        let c = n.handle.cluster().expect("clustered");
        ensure!(
            c.view().nodes.is_empty(),
            "an outsider sees {:?}",
            c.view().nodes
        );
    }
    ensure!(
        cluster.formed(),
        "the keyed cluster still holds exactly its two nodes"
    );
    // And calls are served across it as before.
    let client = a.client().await?;
    ensure!(client.call("upper", vec![json!("x")]).await? == json!("X"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cluster_key_is_rotated_on_a_running_cluster_without_a_failed_call() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (old, new) = (Keyring::generate()?, Keyring::generate()?);
    for i in 0..3 {
        write(&ring(dir.path(), i), &[&old])?;
    }
    let cluster = TestCluster::start_udp(vec![
        keyed("rot-a", &[], &[], &ring(dir.path(), 0)),
        keyed("rot-b", &[], &[], &ring(dir.path(), 1)),
        keyed("rot-c", &["c"], &["math"], &ring(dir.path(), 2)),
    ])
    .await?;
    // Calls from node a that only node c can run, all through the rotation.
    let client = cluster.node(0).client().await?;
    let stop = flag();
    let caller = {
        let (client, stop) = (client.clone(), stop.clone());
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0u64, Vec::new());
            let until = Instant::now() + Duration::from_secs(60);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && Instant::now() < until {
                let mut cmd = RpcCommand::new("s", "add", vec![json!(2), json!(3)]);
                cmd.locs = vec!["c".into()];
                match client.call_command(cmd).await {
                    Ok(v) if v == json!(5) => ok += 1,
                    other => failed.push(format!("{other:?}")),
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (ok, failed)
        })
    };
    // Each step on every node, then long enough for every node to re-read its file (once a
    // second) and gossip a few rounds.
    let steps: [&[&str]; 3] = [&[&old, &new], &[&new, &old], &[&new]];
    for keys in steps {
        for i in 0..3 {
            write(&ring(dir.path(), i), keys)?;
        }
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        ensure!(cluster.formed(), "the cluster split at step {keys:?}");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = caller.await?;
    ensure!(
        failed.is_empty(),
        "{} calls failed: {failed:?}",
        failed.len()
    );
    ensure!(ok > 50, "only {ok} calls ran");
    // The old key no longer opens anything: a node holding only it stays outside.
    let stale = dir.path().join("stale");
    write(&stale, &[&old])?;
    let mut outsider = cluster_config("rot-stale", &[], &[], &[cluster.seed()?]);
    outsider.cluster.gossip_keyring = Some(stale);
    let outsider = TestNode::with_config(outsider).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let c = outsider.handle.cluster().expect("clustered");
    ensure!(c.view().nodes.is_empty(), "joined with the retired key");
    Ok(())
}

fn flag() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false))
}

/// A config of a node whose client port and peer links speak TLS with certificates of `pki`.
fn tls_node(id: &str, plugins: &[&str], pki: &mpreg_tests::pki::TestPki) -> Result<NodeConfig> {
    let mut cfg = cluster_config(id, &[], plugins, &[]);
    let cert = pki.issue(id)?;
    cfg.tls.cert = Some(cert.cert);
    cfg.tls.key = Some(cert.key);
    cfg.tls.cluster_ca = Some(pki.ca.clone());
    Ok(cfg)
}

/// The status line a TLS connection to `addr` trusting `ca` gets for a peer-link upgrade
/// without a client certificate.
async fn peer_upgrade_status(addr: std::net::SocketAddr, ca: &Path) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let tls = mpreg::tls::ClientTls {
        ca_file: Some(ca.to_owned()),
        identity: None,
    };
    let connector = tokio_rustls::TlsConnector::from(tls.config()?);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let mut s = connector.connect(name, tcp).await?;
    let req = format!(
        "GET {} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        mpreg::cluster::wire::PEER_PATH
    );
    s.write_all(req.as_bytes()).await?;
    let mut buf = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf)).await??;
    Ok(String::from_utf8_lossy(&buf[..n])
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peer_links_need_a_certificate_of_the_cluster_ca() -> Result<()> {
    let pki = mpreg_tests::pki::TestPki::new("cluster")?;
    let cluster = TestCluster::start_udp(vec![
        tls_node("tls-a", &[], &pki)?,
        tls_node("tls-b", &["math"], &pki)?,
    ])
    .await?;
    // Links are up over TLS both ways: a call on A runs on B.
    let opts = mpreg::client::ConnectOptions {
        tls: mpreg::tls::ClientTls {
            ca_file: Some(pki.ca.clone()),
            identity: None,
        },
        ..Default::default()
    };
    let client = mpreg::client::Client::connect_with(&cluster.node(0).url, &opts).await?;
    ensure!(client.call("add", vec![json!(2), json!(3)]).await? == json!(5));
    // Without a client certificate, the peer endpoint refuses before the upgrade.
    let status = peer_upgrade_status(cluster.node(0).handle.addr(), &pki.ca).await?;
    ensure!(status.contains("403"), "{status}");
    // A node of another CA is seen in gossip but no link opens, either way round.
    let other = mpreg_tests::pki::TestPki::new("intruder")?;
    let mut intruder = tls_node("tls-x", &[], &other)?;
    intruder.cluster.peers = vec![cluster.seed()?];
    let intruder = TestNode::with_config(intruder).await?;
    let a = cluster.node(0).handle.cluster().expect("clustered").clone();
    eventually(Duration::from_secs(10), "the intruder gossips", || async {
        a.view().node("tls-x").is_some()
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ensure!(
        !a.link("tls-x").is_some_and(|l| l.is_connected()),
        "a link to a node of another CA opened"
    );
    let x = intruder.handle.cluster().expect("clustered");
    ensure!(
        !x.link("tls-a").is_some_and(|l| l.is_connected()),
        "the intruder opened a link"
    );
    Ok(())
}
