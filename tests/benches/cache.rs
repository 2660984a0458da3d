//! Cache figures for `docs/benchmarks.md`: `cargo bench -p mpreg-tests --bench cache`
//!
//! - **L1 hit in process**: `Cache::get` of a key held in memory, one thread, 1M reads.
//! - **Against Redis, same run**: a node in a child process (this binary re-run with
//!   `MPREG_BENCH_NODE=1`, so its CPU is its own) and `redis-server` from the system's packages,
//!   each loaded by 50 clients: non-pipelined (one request in flight per client, like
//!   `redis-benchmark -c 50`) and 16 in flight per client (`-P 16`). Ours are `cache-request`
//!   GET envelopes over WebSocket; Redis's are `redis-benchmark -t get`. For each: throughput,
//!   p50/p99, and the server's CPU time per operation from `/proc/<pid>/stat`.
//! - **Memoized call hit vs the built-in echo**: sequential round trips on one connection.
//!
//! `MPREG_BENCH_ONLY=l1|redis|memo` selects a part.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use mpreg::cache::key::CacheKey;
use mpreg::cache::store::{Cache, Clock, Levels, Put};
use mpreg::config::NodeConfig;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

/// The allocator the `mpreg` binary uses, so the figures are the node's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLIENTS: usize = 50;
const RUN: Duration = Duration::from_secs(4);

fn wanted(part: &str) -> bool {
    std::env::var("MPREG_BENCH_ONLY").map_or(true, |o| o.is_empty() || o == part)
}

fn main() -> Result<()> {
    if std::env::var_os("MPREG_BENCH_NODE").is_some() {
        return serve();
    }
    // `cargo bench` passes `--bench`; nothing else is taken.
    if wanted("l1") {
        l1_hit()?;
    }
    let rt = tokio::runtime::Runtime::new()?;
    if wanted("redis") || wanted("memo") {
        let node = NodeProcess::start()?;
        if wanted("memo") {
            rt.block_on(memo_vs_echo(&node.url))?;
        }
        if wanted("redis") {
            rt.block_on(against_redis(&node))?;
        }
    }
    Ok(())
}

/// The child: a node on 127.0.0.1:0 with the `text` plugin; prints its URL, serves until
/// its stdin closes.
fn serve() -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let mut cfg = NodeConfig::default();
        cfg.server.port = 0;
        cfg.plugins = vec![mpreg_tests::plugin("text").into()];
        let node = mpreg::node::start(cfg).await?;
        println!("{}", node.url());
        tokio::task::spawn_blocking(|| {
            let mut line = String::new();
            while std::io::stdin().read_line(&mut line).is_ok_and(|n| n > 0) {}
        })
        .await?;
        node.shutdown().await;
        Ok(())
    })
}

struct NodeProcess {
    child: Child,
    url: String,
}

impl NodeProcess {
    fn start() -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .env("MPREG_BENCH_NODE", "1")
            .env("RUST_LOG", "error")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let out = child.stdout.take().context("child stdout")?;
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line)?;
        ensure!(line.starts_with("ws://"), "node did not start: {line}");
        Ok(NodeProcess {
            child,
            url: line.trim().to_owned(),
        })
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time (user + system) process `pid` has used.
fn cpu_of(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f[11].parse::<u64>()? + f[12].parse::<u64>()?;
    let hz = clock_ticks();
    Ok(Duration::from_secs_f64(ticks as f64 / hz))
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn l1_hit() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread().build()?;
    let clock: Clock = Arc::new(mpreg::clock::unix_millis);
    let cache = Cache::with_disk(&Default::default(), None, clock);
    let key = CacheKey::new("bench", "model:v3");
    rt.block_on(cache.put(Put::new(key.clone(), json!({"weights": [0.12, 0.5, -0.3]}))))?;
    let id = key.id();
    const N: u32 = 1_000_000;
    let best = (0..3)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..N {
                let hit = rt.block_on(cache.get(&id, Levels::default()));
                std::hint::black_box(hit.ok().flatten());
            }
            t.elapsed() / N
        })
        .min()
        .unwrap_or_default();
    // The executor's own cost of one block_on, to subtract.
    let t = Instant::now();
    for _ in 0..N {
        std::hint::black_box(rt.block_on(async { 1 }));
    }
    let floor = t.elapsed() / N;
    println!(
        "L1 hit (Cache::get, memory, one thread): {} ns per read ({} ns with block_on's {} ns)",
        best.saturating_sub(floor).as_nanos(),
        best.as_nanos(),
        floor.as_nanos()
    );
    Ok(())
}

/// Sequential round trips of `frame` on one connection: (p50, p99) in µs.
async fn sequential(url: &str, frame: &str, n: usize) -> Result<(f64, f64)> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await?;
    let mut samples = Vec::with_capacity(n);
    for i in 0..n + n / 10 {
        let t = Instant::now();
        ws.send(Message::Text(frame.into())).await?;
        let reply = ws.next().await.context("closed")??;
        if i >= n / 10 {
            samples.push(t.elapsed().as_secs_f64() * 1e6);
        }
        ensure!(
            !reply.to_text()?.contains("\"status\":\"error\""),
            "error: {reply}"
        );
    }
    samples.sort_by(f64::total_cmp);
    Ok((
        samples[samples.len() / 2],
        samples[samples.len() * 99 / 100],
    ))
}

async fn memo_vs_echo(url: &str) -> Result<()> {
    let echo = json!({"role": "rpc", "u": "e", "cmds": [{"name": "e", "fun": "echo",
        "args": ["results everywhere"], "locs": []}]})
    .to_string();
    let memo = json!({"role": "rpc", "u": "m", "cmds": [{"name": "m", "fun": "upper",
        "args": ["results everywhere"], "locs": [], "cache": {"ttl_seconds": 600}}]})
    .to_string();
    let plain = json!({"role": "rpc", "u": "p", "cmds": [{"name": "p", "fun": "upper",
        "args": ["results everywhere"], "locs": []}]})
    .to_string();
    println!("\nsequential round trips on one connection, 5000 each, alternating twice:");
    println!("| call | p50 µs | p99 µs |\n|---|---:|---:|");
    for _ in 0..2 {
        for (name, frame) in [
            ("echo (built-in)", &echo),
            ("upper, memoized hit", &memo),
            ("upper, run", &plain),
        ] {
            let (p50, p99) = sequential(url, frame, 5000).await?;
            println!("| {name} | {p50:.1} | {p99:.1} |");
        }
    }
    Ok(())
}

/// One load run of ours: `CLIENTS` connections, each with `depth` GETs in flight, for `RUN`.
/// Returns (ops/s, p50 µs, p99 µs, server CPU µs per op).
async fn our_load(
    node: &NodeProcess,
    depth: usize,
    frame: &str,
    expect: &'static str,
) -> Result<(f64, f64, f64, f64)> {
    let frame: Arc<str> = frame.into();
    let mut conns = Vec::new();
    for _ in 0..CLIENTS {
        conns.push(tokio_tungstenite::connect_async(&node.url).await?.0);
    }
    let pid = node.child.id();
    let cpu0 = cpu_of(pid)?;
    let started = Instant::now();
    let end = started + RUN;
    let mut tasks = Vec::new();
    for ws in conns {
        let frame = frame.clone();
        tasks.push(tokio::spawn(async move {
            let (mut tx, mut rx) = ws.split();
            let mut sent: std::collections::VecDeque<Instant> = Default::default();
            let mut lat = Vec::new();
            let mut done = 0u64;
            loop {
                while sent.len() < depth && Instant::now() < end {
                    tx.send(Message::Text((&*frame).into())).await?;
                    sent.push_back(Instant::now());
                }
                let Some(t) = sent.pop_front() else { break };
                let reply = rx.next().await.context("closed")??;
                ensure!(reply.to_text()?.contains(expect), "unexpected: {reply}");
                lat.push(t.elapsed().as_secs_f64() * 1e6);
                done += 1;
            }
            Ok::<_, anyhow::Error>((done, lat))
        }));
    }
    let mut total = 0;
    let mut lat = Vec::new();
    for t in tasks {
        let (d, l) = t.await??;
        total += d;
        lat.extend(l);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_of(pid)? - cpu0;
    lat.sort_by(f64::total_cmp);
    Ok((
        total as f64 / elapsed.as_secs_f64(),
        lat[lat.len() / 2],
        lat[lat.len() * 99 / 100],
        cpu.as_secs_f64() * 1e6 / total as f64,
    ))
}

struct Redis(Child, u16);

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> Result<Redis> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("redis-server (apt-get install redis-server)")?;
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if started.elapsed() > Duration::from_secs(5) {
            bail!("redis-server did not start");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Redis(child, port))
}

/// One `redis-benchmark -t get` run: (ops/s, p50 µs, p99 µs, server CPU µs per op).
fn redis_load(redis: &Redis, pipeline: usize) -> Result<(f64, f64, f64, f64)> {
    let n = if pipeline > 1 { 4_000_000 } else { 300_000 };
    let cpu0 = cpu_of(redis.0.id())?;
    let out = Command::new("redis-benchmark")
        .args(["-p", &redis.1.to_string(), "-c", &CLIENTS.to_string()])
        .args(["-n", &n.to_string(), "-P", &pipeline.to_string()])
        .args(["-t", "get", "-d", "40", "--csv"])
        .output()
        .context("redis-benchmark")?;
    let cpu = cpu_of(redis.0.id())? - cpu0;
    let text = String::from_utf8(out.stdout)?;
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let row = text
        .lines()
        .find(|l| l.starts_with("\"GET\""))
        .with_context(|| format!("redis-benchmark said: {text}"))?;
    let f: Vec<f64> = row
        .split(',')
        .skip(1)
        .map(|c| c.trim_matches('"').parse().unwrap_or(f64::NAN))
        .collect();
    Ok((
        f[0],
        f[3] * 1000.0,
        f[5] * 1000.0,
        cpu.as_secs_f64() * 1e6 / n as f64,
    ))
}

async fn against_redis(node: &NodeProcess) -> Result<()> {
    // 1000 keys of a 40-byte value, like redis-benchmark's default `-d`.
    let client = mpreg::client::Client::connect(&node.url).await?;
    for i in 0..1000 {
        client
            .call(
                "cache.put",
                vec![
                    json!("bench"),
                    json!(format!("key:{i:06}")),
                    json!("x".repeat(38)),
                ],
            )
            .await?;
    }
    let redis = match start_redis() {
        Ok(r) => Some(r),
        Err(e) => {
            println!("\nRedis part skipped: {e:#}");
            None
        }
    };
    println!(
        "\n{CLIENTS} clients, GET of a 40-byte value, twice each, alternating (server CPU from /proc):"
    );
    println!(
        "| server | in flight per client | ops/s | p50 µs | p99 µs | server CPU µs/op |\n|---|---:|---:|---:|---:|---:|"
    );
    let get = json!({"role": "cache-request", "u": "g", "operation": "get",
        "key": {"namespace": "bench", "identifier": "key:000042", "version": "v1.0.0", "tags": []},
        "options": {"include_metadata": false}})
    .to_string();
    // The floor: the same clients on the built-in echo of a 40-byte value.
    let echo = json!({"role": "rpc", "u": "e", "cmds": [{"name": "e", "fun": "echo",
        "args": ["x".repeat(38)], "locs": []}]})
    .to_string();
    for _ in 0..2 {
        for depth in [1, 16] {
            let (ops, p50, p99, cpu) = our_load(node, depth, &echo, "\"error\":null").await?;
            println!(
                "| mpreg echo (the floor) | {depth} | {ops:.0} | {p50:.0} | {p99:.0} | {cpu:.2} |"
            );
            let (ops, p50, p99, cpu) = our_load(node, depth, &get, "\"hit\"").await?;
            println!(
                "| mpreg cache-request | {depth} | {ops:.0} | {p50:.0} | {p99:.0} | {cpu:.2} |"
            );
            if let Some(r) = &redis {
                let (ops, p50, p99, cpu) = redis_load(r, depth)?;
                println!(
                    "| redis-server GET | {depth} | {ops:.0} | {p50:.0} | {p99:.0} | {cpu:.2} |"
                );
            }
        }
    }
    Ok(())
}
