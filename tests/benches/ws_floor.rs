//! The floor under every figure of `mpreg bench`: a bare axum WebSocket server that answers each
//! frame with a fixed reply, with no MPREG code in it, loaded by `mpreg bench`'s own loops
//! (`mpreg::bench::latency` and `throughput`).
//!
//! `cargo bench -p mpreg-tests --bench ws_floor` starts the server in a child process (the bench
//! binary run again with `MPREG_FLOOR_SERVER=1`), so client and server are two processes that
//! the kernel schedules like `mpreg bench` and a node. It prints the sequential round trip
//! (p50/p99 of 5,000 calls after 200 warm-up) and the pipelined rate with 100 frames in flight
//! on one connection. Compare a node's figures with these, measured the same day: what a node
//! cannot go below here.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};

/// Same allocator as the node.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The request `mpreg bench` sends for the built-in `echo` (`__U__`: the unique id).
const FRAME: &str = r#"{"role":"rpc","u":"__U__","cmds":[{"name":"echo","fun":"echo","args":["hello"],"kwargs":{},"locs":[]}]}"#;
/// A reply of the size and shape a node gives it.
const REPLY: &str = r#"{"role":"rpc-response","r":{"echo":"hello"},"error":null,"u":"floor"}"#;
const CALLS: usize = 5_000;
const IN_FLIGHT: usize = 100;
const SECONDS: u64 = 3;

async fn answer(ws: WebSocketUpgrade) -> axum::response::Response {
    ws.on_upgrade(|mut socket: WebSocket| async move {
        while let Some(Ok(msg)) = socket.recv().await {
            if matches!(msg, Message::Text(_))
                && socket.send(Message::Text(REPLY.into())).await.is_err()
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
    let app = axum::Router::new().route("/", axum::routing::get(answer));
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
        .context("starting the floor server")?;
    let mut port = String::new();
    BufReader::new(child.stdout.take().context("child stdout")?).read_line(&mut port)?;
    let url = format!("ws://127.0.0.1:{}/", port.trim());
    let result = rt.block_on(async {
        let seq = mpreg::bench::latency("floor", &url, CALLS, FRAME).await?;
        let window = Duration::from_secs(SECONDS);
        let piped = mpreg::bench::throughput("floor", &url, FRAME, 1, IN_FLIGHT, window).await?;
        anyhow::Ok((seq, piped))
    });
    drop(child.stdin.take());
    let _ = child.wait();
    let (seq, piped) = result?;
    println!("bare WebSocket server (no MPREG code), client and server in two processes");
    println!("| figure | value |\n|---|---:|");
    println!("| sequential round trip p50 | {:.1} µs |", seq.p50_us);
    println!("| sequential round trip p99 | {:.1} µs |", seq.p99_us);
    println!(
        "| pipelined, 1 connection x {IN_FLIGHT} in flight | {:.0} frames/s ({} errors) |",
        piped.per_second, piped.errors
    );
    Ok(())
}
