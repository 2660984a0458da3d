//! Start-up from a config file, the Rust client, and graceful shutdown.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use mpreg::client::ClientError;
use mpreg::config::NodeConfig;
use mpreg::protocol::RpcCommand;
use mpreg_tests::{TestNode, error_of, plugin, rpc_frame, test_config};
use serde_json::{Value, json};

#[tokio::test]
async fn config_file_loads_plugins_and_rejects_bad_ones() -> Result<()> {
    let dir = std::env::temp_dir().join(format!("mpreg-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "plugins = [{:?}]\n[server]\nport = 0\n[node]\nresources = [\"ssd\"]\n",
            plugin("text").display().to_string()
        ),
    )?;
    let cfg = NodeConfig::from_file(&path)?;
    let node = TestNode::with_config(cfg).await?;
    let client = node.client().await?;
    assert_eq!(
        client.call("upper", vec![json!("abc")]).await?,
        json!("ABC")
    );
    // Not a component: a clear start-up error.
    let bogus = dir.join("bogus.wasm");
    std::fs::write(&bogus, b"\0asm\x01\0\0\0garbage")?;
    let mut cfg = test_config();
    cfg.plugins = vec![bogus.into()];
    let err = mpreg::node::start(cfg).await.err().expect("must fail");
    assert!(
        err.to_string()
            .contains("is not a loadable WebAssembly component"),
        "{err}"
    );
    // The same plugin twice: duplicate versions are refused.
    let mut cfg = test_config();
    cfg.plugins = vec![plugin("math").into(), plugin("math").into()];
    let err = mpreg::node::start(cfg).await.err().expect("must fail");
    assert!(err.to_string().contains("already provided"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

#[tokio::test]
async fn client_keeps_many_requests_in_flight_and_types_errors() -> Result<()> {
    let node = TestNode::start().await?;
    let client = node.client().await?;
    let calls = (0..500).map(|i| {
        let c = client.clone();
        async move { c.call("add", vec![json!(i), json!(i)]).await }
    });
    let results = futures_util::future::join_all(calls).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r?, json!(2 * i));
    }
    let r = client
        .request(vec![
            RpcCommand::new("a", "add", vec![json!(1), json!(2)]),
            RpcCommand::new("b", "mul", vec![json!("a"), json!(2.5)]),
        ])
        .await?;
    assert_eq!(r["b"], json!(7.5));
    let err = client.call("nope", vec![]).await.expect_err("unknown");
    assert_eq!(err.code(), Some(1001));
    let err = client
        .call("add", vec![json!("x"), json!(1)])
        .await
        .expect_err("bad arg");
    assert!(matches!(err, ClientError::Rpc { code: 1003, .. }), "{err}");
    Ok(())
}

/// A pipelining client: frames written back to back, without waiting, are read ahead by the
/// session and their plugin calls run on tasks of their own. Every frame still gets exactly one
/// reply, whatever kind it is, and every reply is right.
#[tokio::test]
async fn a_pipelined_burst_gets_exactly_one_right_reply_per_frame() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let n = 300;
    let mut expected = std::collections::HashMap::new();
    for i in 0..n {
        let u = format!("burst-{i}");
        let (frame, want) = match i % 4 {
            0 => (
                rpc_frame(&u, json!([{"name": "s", "fun": "add", "args": [i, 1]}])),
                json!({"s": i + 1}),
            ),
            1 => (
                rpc_frame(&u, json!([{"name": "e", "fun": "echo", "args": [i]}])),
                json!({"e": i}),
            ),
            2 => (
                rpc_frame(
                    &u,
                    json!([
                        {"name": "a", "fun": "add", "args": [i, i]},
                        {"name": "b", "fun": "mul", "args": ["a", 2]},
                    ]),
                ),
                json!({"b": f64::from(4 * i)}),
            ),
            _ => (
                rpc_frame(&u, json!([{"name": "x", "fun": "add", "args": ["no", 1]}])),
                Value::Null,
            ),
        };
        if i % 2 == 0 {
            ws.send_text(&frame).await?;
        } else {
            ws.send_binary(&frame).await?;
        }
        expected.insert(u, want);
    }
    for _ in 0..n {
        let reply = ws.recv().await?;
        let u = reply["u"].as_str().unwrap_or_default().to_owned();
        let want = expected
            .remove(&u)
            .unwrap_or_else(|| panic!("unexpected or repeated reply {reply}"));
        if want.is_null() {
            assert_eq!(reply["error"]["code"], json!(1003), "{reply}");
        } else {
            assert_eq!(reply["r"], want, "{reply}");
            assert_eq!(reply["error"], Value::Null, "{reply}");
        }
    }
    assert!(expected.is_empty());
    ws.silent_for(Duration::from_millis(200)).await?;
    Ok(())
}

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_then_closes() -> Result<()> {
    let mut cfg = test_config();
    cfg.runtime.call_timeout_ms = 5_000;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    ws.send_binary(&rpc_frame(
        "inflight",
        json!([{"name": "b", "fun": "busy", "args": [400]}]),
    ))
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let url = node.url.clone();
    let t = Instant::now();
    let stopping = tokio::spawn(node.handle.clone().shutdown());
    let reply = ws.recv().await?;
    assert_eq!(
        reply["r"]["b"],
        json!(400),
        "the in-flight request finished: {reply}"
    );
    let close = ws.closed().await?;
    if let Some(c) = close {
        assert_eq!(u16::from(c.code), 1001);
    }
    tokio::time::timeout(Duration::from_secs(5), stopping).await??;
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        t.elapsed()
    );
    assert!(
        mpreg_tests::RawWs::connect(&url).await.is_err(),
        "no longer accepting"
    );
    Ok(())
}

#[tokio::test]
async fn requests_past_the_grace_period_get_an_error_not_silence() -> Result<()> {
    let mut cfg = test_config();
    cfg.runtime.call_timeout_ms = 10_000;
    cfg.server.shutdown_grace_ms = 200;
    let node = TestNode::with_config(cfg).await?;
    let mut ws = node.raw().await?;
    ws.send_binary(&rpc_frame(
        "long",
        json!([{"name": "b", "fun": "busy", "args": [5000]}]),
    ))
    .await?;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let stopping = tokio::spawn(node.handle.clone().shutdown());
    let reply = ws.recv().await?;
    let (code, details) = error_of(&reply)?;
    assert_eq!(code, 1007);
    assert!(details.contains("shut down"), "{details}");
    tokio::time::timeout(Duration::from_secs(10), stopping).await??;
    Ok(())
}

#[tokio::test]
async fn health_endpoint_reports_the_node() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let node = TestNode::start().await?;
    let mut tcp = tokio::net::TcpStream::connect(node.handle.addr()).await?;
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await?;
    let mut raw = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut raw)).await??;
    assert!(raw.starts_with("HTTP/1.1 200"), "{raw}");
    let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
    let health: serde_json::Value = serde_json::from_str(body)?;
    assert_eq!(health["status"], json!("ok"));
    assert_eq!(health["node_id"], json!("test-node"));
    assert!(health["functions"].as_u64().unwrap_or(0) > 20, "{health}");
    Ok(())
}

/// A client that pipelines large replies and never reads them: the node's writes to it block
/// once the socket buffers are full.
async fn pipeline_unread(node: &TestNode, calls: usize) -> Result<mpreg_tests::RawWs> {
    let mut ws = node.raw().await?;
    ws.pipeline("huge", json!([1]), calls).await?;
    Ok(ws)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_finishes_within_the_grace_period_while_a_client_stops_reading() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.shutdown_grace_ms = 500;
    let node = TestNode::with_config(cfg).await?;
    let _stuck = pipeline_unread(&node, 64).await?;
    // Let the replies pile up until the node's writes to this client block.
    tokio::time::sleep(Duration::from_millis(500)).await;
    node.serves_echo()
        .await
        .context("other clients are still served")?;
    let t = Instant::now();
    let stopped =
        tokio::time::timeout(Duration::from_secs(5), node.handle.clone().shutdown()).await;
    assert!(
        stopped.is_ok(),
        "shutdown hung with a client that does not read"
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(node.handle.live_tasks(), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_leaves_with_replies_unread_leaves_no_session_behind() -> Result<()> {
    let mut cfg = test_config();
    // Fewer queued replies than calls: request tasks wait to queue theirs.
    cfg.server.outbound_queue = 4;
    let node = TestNode::with_config(cfg).await?;
    let leaving = pipeline_unread(&node, 64).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    drop(leaving);
    let info = node.handle.info().clone();
    mpreg_tests::eventually(Duration::from_secs(5), "the session ended", || async {
        info.active_clients
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0
            && info
                .active_requests
                .load(std::sync::atomic::Ordering::Relaxed)
                == 0
    })
    .await?;
    let stopped =
        tokio::time::timeout(Duration::from_secs(5), node.handle.clone().shutdown()).await;
    assert!(stopped.is_ok(), "shutdown hung on a leaked session");
    Ok(())
}
