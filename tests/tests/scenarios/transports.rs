//! MPREG's other transports against a real node: `tcp://` (length-prefixed frames), `wss://` and
//! `tcps://` with a test CA, and what a client on the wrong one is told.

use anyhow::{Result, ensure};
use mpreg::client::{Client, ConnectOptions};
use mpreg::tls::ClientTls;
use mpreg_tests::pki::TestPki;
use mpreg_tests::{TestNode, test_config};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn trusting(pki: &TestPki) -> ConnectOptions {
    ConnectOptions {
        tls: ClientTls {
            ca_file: Some(pki.ca.clone()),
            identity: None,
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn tcp_carries_calls_and_answers_ping() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.tcp_port = Some(0);
    let node = TestNode::with_config(cfg).await?;
    let url = node.handle.tcp_url().expect("tcp is on");
    let client = Client::connect(&url).await?;
    ensure!(client.call("echo", vec![json!("hi")]).await? == json!("hi"));
    // A raw PING frame is answered with PONG, as the original's TCPTransport.ping expects.
    let addr = node.handle.tcp_addr().expect("tcp addr");
    let mut raw = tokio::net::TcpStream::connect(addr).await?;
    raw.write_all(b"\0\0\0\x04PING").await?;
    let mut pong = [0u8; 8];
    raw.read_exact(&mut pong).await?;
    ensure!(&pong == b"\0\0\0\x04PONG", "got {pong:?}");
    // An oversized length prefix closes the connection without a reply.
    raw.write_all(&[0x7f, 0xff, 0xff, 0xff]).await?;
    let mut rest = Vec::new();
    let n = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        raw.read_to_end(&mut rest),
    )
    .await??;
    ensure!(n == 0, "nothing is sent before the close");
    Ok(())
}

#[tokio::test]
async fn tls_serves_wss_and_tcps_and_tells_plaintext_clients() -> Result<()> {
    let pki = TestPki::new("transports")?;
    let cert = pki.issue("node")?;
    let mut cfg = test_config();
    cfg.server.tcp_port = Some(0);
    cfg.tls.cert = Some(cert.cert.clone());
    cfg.tls.key = Some(cert.key.clone());
    let node = TestNode::with_config(cfg).await?;
    ensure!(node.url.starts_with("wss://"));
    let opts = trusting(&pki);
    let wss = Client::connect_with(&node.url, &opts).await?;
    ensure!(wss.call("echo", vec![json!(1)]).await? == json!(1));
    let tcps_url = node.handle.tcp_url().expect("tcp is on");
    let tcps = Client::connect_with(&tcps_url, &opts).await?;
    ensure!(tcps.call("echo", vec![json!(2)]).await? == json!(2));
    // A client that does not trust the CA is refused by its own TLS check.
    ensure!(Client::connect(&node.url).await.is_err());
    // ws:// on the TLS port gets an HTTP answer that says what to use.
    let plain = node.url.replacen("wss://", "ws://", 1);
    let err = Client::connect(&plain).await.err().expect("refused");
    ensure!(err.to_string().contains("wss://"), "{err}");
    Ok(())
}

/// The leaf certificate a TLS port at `addr` serves now, as a client trusting `pki` sees it.
async fn served_leaf(addr: std::net::SocketAddr, pki: &TestPki) -> Result<Vec<u8>> {
    let config = trusting(pki).tls.config()?;
    let connector = tokio_rustls::TlsConnector::from(config);
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1")?;
    let tls = connector.connect(name, tcp).await?;
    let leaf = tls
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.as_ref().to_vec())
        .unwrap_or_default();
    Ok(leaf)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_certificate_serves_new_connections_while_open_ones_keep_working() -> Result<()> {
    let pki = TestPki::new("rotation")?;
    let cert = pki.issue("node")?;
    let mut cfg = test_config();
    cfg.server.tcp_port = Some(0);
    cfg.tls.cert = Some(cert.cert.clone());
    cfg.tls.key = Some(cert.key.clone());
    cfg.tls.reload_interval_ms = 100;
    let node = TestNode::with_config(cfg).await?;
    let opts = trusting(&pki);
    let wss = Client::connect_with(&node.url, &opts).await?;
    let tcps = Client::connect_with(&node.handle.tcp_url().expect("tcp"), &opts).await?;
    let before = served_leaf(node.handle.addr(), &pki).await?;
    // Renewed in place, as a certificate manager does.
    pki.reissue_into(&cert)?;
    mpreg_tests::eventually(
        std::time::Duration::from_secs(10),
        "the new certificate is served",
        || async {
            served_leaf(node.handle.addr(), &pki)
                .await
                .is_ok_and(|now| !now.is_empty() && now != before)
        },
    )
    .await?;
    // Connections opened before keep working on their session; new ones get the new one.
    ensure!(wss.call("echo", vec![json!("old wss")]).await? == json!("old wss"));
    ensure!(tcps.call("echo", vec![json!("old tcps")]).await? == json!("old tcps"));
    let fresh = Client::connect_with(&node.url, &opts).await?;
    ensure!(fresh.call("echo", vec![json!("new")]).await? == json!("new"));
    let tcp_leaf = served_leaf(node.handle.tcp_addr().expect("tcp addr"), &pki).await?;
    ensure!(
        tcp_leaf != before,
        "the TCP port serves the new certificate too"
    );
    Ok(())
}
