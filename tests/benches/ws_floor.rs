//! The floor under every figure of `mpreg bench`: a bare axum WebSocket server that echoes each
//! frame back, with no MPREG code in it, measured the way `mpreg bench` measures a node.
//!
//! `cargo bench -p mpreg-tests --bench ws_floor` starts the server in a child process (the bench
//! binary run again with `MPREG_FLOOR_SERVER=1`), so client and server are two processes that
//! the kernel schedules like `mpreg bench` and a node. It prints the sequential round trip
//! (p50/p99 of 5,000 calls after 200 warm-up) and the pipelined rate with 100 frames in flight
//! on one connection (the sender flushes when its window is full, as `mpreg bench` does).
//! Compare a node's figures with these, measured the same day: what a node cannot go below here.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use axum::extract::ws::{Message as ServerMessage, WebSocket, WebSocketUpgrade};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

/// Same allocator as the node.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A request of the size `mpreg bench` sends for the built-in `echo`.
const FRAME: &str = r#"{"role":"rpc","u":"floor-0","cmds":[{"name":"echo","fun":"echo","args":["hello"],"kwargs":{},"locs":[]}]}"#;
const CALLS: usize = 5_000;
const WARMUP: usize = 200;
const IN_FLIGHT: usize = 100;
const SECONDS: u64 = 3;

async fn echo(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if let ServerMessage::Text(t) = msg
                && socket.send(ServerMessage::Text(t)).await.is_err()
            {
                break;
            }
        }
    })
}

/// Child: serve until the parent closes our stdin.
async fn serve() -> Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("{}", listener.local_addr()?.port());
    std::io::stdout().flush()?;
    let app = axum::Router::new().route("/", axum::routing::get(echo));
    let stop = tokio::task::spawn_blocking(|| {
        let mut sink = String::new();
        let _ = std::io::stdin().read_line(&mut sink);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = stop.await;
        })
        .await?;
    Ok(())
}

async fn connect(
    url: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
> {
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true).await?;
    Ok(ws)
}

async fn sequential(url: &str) -> Result<(f64, f64)> {
    let mut ws = connect(url).await?;
    let mut samples = Vec::with_capacity(CALLS);
    for n in 0..WARMUP + CALLS {
        let t = Instant::now();
        ws.send(Message::Text(FRAME.into())).await?;
        match ws.next().await {
            Some(Ok(Message::Text(_))) => {}
            other => bail!("unexpected reply: {other:?}"),
        }
        if n >= WARMUP {
            samples.push(t.elapsed());
        }
    }
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    Ok((at(0.5), at(0.99)))
}

async fn pipelined(url: &str) -> Result<f64> {
    let (mut sink, mut stream) = connect(url).await?.split();
    let window = Arc::new(Semaphore::new(IN_FLIGHT));
    let replies = Arc::new(AtomicU64::new(0));
    let (w, r) = (window.clone(), replies.clone());
    let reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            if matches!(msg, Message::Text(_)) {
                r.fetch_add(1, Ordering::Relaxed);
                w.add_permits(1);
            }
        }
    });
    let started = Instant::now();
    let deadline = started + Duration::from_secs(SECONDS);
    let mut sent: u64 = 0;
    // Bounded in time and in count.
    while Instant::now() < deadline && sent < 100_000_000 {
        let permit = match window.try_acquire() {
            Ok(p) => p,
            Err(_) => {
                sink.flush().await?;
                window.acquire().await?
            }
        };
        permit.forget();
        sink.feed(Message::Text(FRAME.into())).await?;
        sent += 1;
    }
    sink.flush().await?;
    let rate = replies.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    let _ = sink.close().await;
    reader.abort();
    Ok(rate)
}

fn main() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    if std::env::var_os("MPREG_FLOOR_SERVER").is_some() {
        return rt.block_on(serve());
    }
    let mut child = Command::new(std::env::current_exe()?)
        .env("MPREG_FLOOR_SERVER", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .context("starting the echo server")?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut port)?;
    let url = format!("ws://127.0.0.1:{}/", port.trim());
    let result = rt.block_on(async {
        let (p50, p99) = sequential(&url).await?;
        let rate = pipelined(&url).await?;
        anyhow::Ok((p50, p99, rate))
    });
    drop(child.stdin.take());
    let _ = child.wait();
    let (p50, p99, rate) = result?;
    println!("bare WebSocket echo (no MPREG code), client and server in two processes");
    println!("| figure | value |\n|---|---:|");
    println!("| sequential round trip p50 | {p50:.1} µs |");
    println!("| sequential round trip p99 | {p99:.1} µs |");
    println!("| pipelined, 1 connection x {IN_FLIGHT} in flight | {rate:.0} frames/s |");
    Ok(())
}
