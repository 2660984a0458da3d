//! Connection limits: a node-wide and a per-address cap answered with HTTP 503, a deadline for
//! the request head (slowloris), and close codes for WebSocket protocol violations.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use mpreg_tests::{TestNode, eventually, test_config};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `addr` from the loopback address `from`.
async fn dial_from(from: &str, addr: SocketAddr) -> Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse()?)?;
    Ok(socket.connect(addr).await?)
}

const UPGRADE: &str = "GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// Sends a WebSocket upgrade and returns the status line of the answer.
async fn upgrade(tcp: &mut TcpStream) -> Result<String> {
    tcp.write_all(UPGRADE.as_bytes()).await?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(Duration::from_secs(5), tcp.read(&mut byte)).await??;
        if n == 0 {
            break;
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    Ok(head.lines().next().unwrap_or_default().to_owned())
}

/// Reads until the peer closes; how long that took.
async fn closed_within(tcp: &mut TcpStream, limit: Duration) -> Result<Duration> {
    let t = Instant::now();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit, tcp.read(&mut buf)).await {
            Err(_) => bail!("still open after {limit:?}"),
            Ok(Ok(0) | Err(_)) => return Ok(t.elapsed()),
            Ok(Ok(_)) => {}
        }
    }
}

#[tokio::test]
async fn connections_over_a_cap_get_503_and_a_freed_place_is_reused() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.max_connections = 3;
    cfg.server.max_connections_per_address = 2;
    let node = TestNode::with_config(cfg).await?;
    let addr = node.handle.addr();
    let mut a1 = dial_from("127.0.0.1", addr).await?;
    assert!(upgrade(&mut a1).await?.starts_with("HTTP/1.1 101"));
    let mut a2 = dial_from("127.0.0.1", addr).await?;
    assert!(upgrade(&mut a2).await?.starts_with("HTTP/1.1 101"));
    // A third from the same address: over the per-address cap.
    let mut a3 = dial_from("127.0.0.1", addr).await?;
    assert!(
        upgrade(&mut a3).await?.starts_with("HTTP/1.1 503"),
        "per address"
    );
    // Another address may still connect, until the node-wide cap.
    let mut b1 = dial_from("127.0.0.2", addr).await?;
    assert!(upgrade(&mut b1).await?.starts_with("HTTP/1.1 101"));
    let mut b2 = dial_from("127.0.0.2", addr).await?;
    assert!(
        upgrade(&mut b2).await?.starts_with("HTTP/1.1 503"),
        "node-wide"
    );
    // A place given back is taken again.
    drop(a1);
    eventually(Duration::from_secs(5), "a place came back", || async {
        let Ok(mut again) = dial_from("127.0.0.1", addr).await else {
            return false;
        };
        upgrade(&mut again)
            .await
            .is_ok_and(|s| s.starts_with("HTTP/1.1 101"))
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_unfinished_request_head_is_closed_at_the_header_deadline() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.header_timeout_ms = 300;
    let node = TestNode::with_config(cfg).await?;
    let addr = node.handle.addr();
    // Slowloris: half a request head, then nothing.
    let mut slow = TcpStream::connect(addr).await?;
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await?;
    // And a connection that never says anything.
    let mut mute = TcpStream::connect(addr).await?;
    let took = closed_within(&mut slow, Duration::from_secs(5)).await?;
    assert!(took < Duration::from_secs(3), "{took:?}");
    closed_within(&mut mute, Duration::from_secs(5))
        .await
        .context("a silent connection is closed too")?;
    node.serves_echo().await?;
    Ok(())
}

/// Writes one masked client frame.
fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [1u8, 2, 3, 4];
    let mut f = vec![first, 0x80 | payload.len() as u8];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// The close code of the close frame the server sends next.
async fn close_code(tcp: &mut TcpStream) -> Result<u16> {
    let mut head = [0u8; 4];
    tokio::time::timeout(Duration::from_secs(5), tcp.read_exact(&mut head)).await??;
    if head[0] != 0x88 {
        bail!("expected a close frame, got {head:?}");
    }
    Ok(u16::from_be_bytes([head[2], head[3]]))
}

#[tokio::test]
async fn protocol_violations_get_their_close_codes() -> Result<()> {
    let node = TestNode::start().await?;
    let addr = node.handle.addr();
    let cases: [(&str, Vec<u8>, u16); 3] = [
        ("unmasked frame", vec![0x81, 0x02, b'h', b'i'], 1002),
        ("reserved opcode", frame(0x83, b"x"), 1002),
        ("text that is not UTF-8", frame(0x81, &[0xff, 0xfe]), 1007),
    ];
    for (what, bytes, want) in cases {
        let mut tcp = TcpStream::connect(addr).await?;
        assert!(upgrade(&mut tcp).await?.starts_with("HTTP/1.1 101"));
        tcp.write_all(&bytes).await?;
        assert_eq!(close_code(&mut tcp).await.context(what)?, want, "{what}");
    }
    node.serves_echo().await?;
    Ok(())
}
