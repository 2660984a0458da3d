//! Backpressure end to end: a request holds its connection's slot until its reply is on the
//! socket, replies go out while a pipelining client is still sending, and a client that stops
//! reading is disconnected after `server.stalled_client_ms` with its work cancelled.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use mpreg_tests::{TestNode, eventually, test_config};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_and_its_work_cancelled() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.stalled_client_ms = 300;
    let node = TestNode::with_config(cfg).await?;
    let calls = 200;
    let mut stuck = node.raw().await?;
    stuck.pipeline("huge", json!([1]), calls).await?;
    let info = node.handle.info().clone();
    eventually(
        Duration::from_secs(10),
        "the stalled session ended",
        || async {
            info.active_clients.load(Ordering::Relaxed) == 0
                && info.active_requests.load(Ordering::Relaxed) == 0
        },
    )
    .await?;
    node.serves_echo()
        .await
        .context("other clients are still served")?;
    // What the client can still read is what sat in the socket buffers: far from every reply.
    let got = stuck.replies_until_closed().await?;
    assert!(
        got < calls / 2,
        "{got} of {calls} replies reached the client"
    );
    Ok(())
}

/// A connection never has more requests running, or replies unwritten, than its window: with
/// a window of 8, 300 pipelined requests can all be answered only if the session writes replies
/// between the frames it reads (before, it wrote them only when no frame was waiting).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pipelining_client_gets_replies_while_its_requests_are_still_being_read() -> Result<()> {
    let mut cfg = test_config();
    cfg.server.max_in_flight_per_connection = 8;
    let node = TestNode::with_config(cfg).await?;
    let info = node.handle.info().clone();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let watch = tokio::spawn({
        let (info, peak) = (info.clone(), peak.clone());
        async move {
            loop {
                peak.fetch_max(
                    info.active_requests.load(Ordering::Relaxed),
                    Ordering::Relaxed,
                );
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        }
    });
    let mut ws = node.raw().await?;
    let n = 300;
    ws.pipeline("busy", json!([2]), n).await?;
    for _ in 0..n {
        let reply = ws.recv().await?;
        assert_eq!(reply["r"]["c"], json!(2), "{reply}");
    }
    watch.abort();
    let peak = peak.load(Ordering::Relaxed);
    assert!(peak <= 8, "{peak} requests ran at once on a window of 8");
    ws.silent_for(Duration::from_millis(100)).await?;
    Ok(())
}

/// The window admits a whole pipeline of small replies: 1,024 requests in flight on one
/// connection still all run concurrently once its replies show they are small.
#[tokio::test]
async fn small_replies_keep_the_whole_window_open() -> Result<()> {
    let node = TestNode::start().await?;
    let mut ws = node.raw().await?;
    let n = 2_000;
    ws.pipeline("echo", json!(["x"]), n).await?;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let reply = ws.recv().await?;
        assert_eq!(reply["r"]["c"], json!("x"), "{reply}");
        assert!(seen.insert(reply["u"].as_str().unwrap_or_default().to_owned()));
    }
    Ok(())
}
