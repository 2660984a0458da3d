//! `mpreg bench`: a load generator over real WebSockets against a running node.
//!
//! Latency runs use the [`Client`] one call at a time. Throughput runs use a lean pipelined
//! sender (pre-rendered frames, a window of N requests in flight, replies checked for
//! `"error":null`) so that the figure measures the node, not the load generator's JSON work.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, ClientError};
use crate::protocol::{RpcCommand, RpcRequest};

/// What the bench should do.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// Node to load.
    pub url: String,
    /// Length of each throughput run.
    pub duration: Duration,
    /// Calls per latency run.
    pub latency_calls: usize,
    /// Plugin function that returns its string input (`identity` of the `text` plugin).
    pub plugin_function: String,
    /// Aggregate for the fan-out scenario: takes (list<string>, sep) (`join` of `text`).
    pub join_function: String,
    /// Run only scenarios whose name contains this (all when empty).
    pub only: String,
}

/// Percentiles of one latency run, in microseconds.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Latency {
    /// Scenario.
    pub name: String,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Calls measured.
    pub calls: usize,
}

/// One throughput run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Throughput {
    /// Scenario.
    pub name: String,
    /// Connections used.
    pub connections: usize,
    /// Requests in flight per connection.
    pub in_flight: usize,
    /// Successful requests per second.
    pub per_second: f64,
    /// Successful requests.
    pub ok: u64,
    /// Error replies.
    pub errors: u64,
}

/// Everything measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Latency runs.
    pub latency: Vec<Latency>,
    /// Throughput runs.
    pub throughput: Vec<Throughput>,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1e6
}

/// One task sends a request, waits for its reply, and repeats: the round trip a synchronous
/// caller sees, without the hops of a multiplexed client. `template` is a request frame with
/// `__U__` where each call's unique id goes; every reply must contain `"error":null`.
pub async fn latency(
    name: &str,
    url: &str,
    calls: usize,
    template: &str,
) -> Result<Latency, ClientError> {
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
        .await
        .map_err(|e| ClientError::Connect {
            url: url.into(),
            reason: e.to_string(),
        })?;
    let (prefix, suffix) = template.split_once("__U__").unwrap_or((template, ""));
    let warmup = calls.min(200);
    let mut samples = Vec::with_capacity(calls);
    for n in 0..warmup + calls {
        let t = Instant::now();
        ws.send(Message::Text(format!("{prefix}l{n}{suffix}").into()))
            .await
            .map_err(|_| ClientError::Closed)?;
        let reply = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => break t,
                Some(Ok(_)) => continue,
                _ => return Err(ClientError::Closed),
            }
        };
        if !reply.contains("\"error\":null") {
            return Err(ClientError::Protocol(format!("{name}: {reply}")));
        }
        if n >= warmup {
            samples.push(t.elapsed());
        }
    }
    let _ = ws.close(None).await;
    samples.sort();
    Ok(Latency {
        name: name.into(),
        p50_us: percentile(&samples, 0.5),
        p99_us: percentile(&samples, 0.99),
        calls,
    })
}

/// Pipelines `template` (with `__U__` replaced by a unique id) over `connections` connections
/// with `in_flight` requests outstanding on each, for `duration`. Replies without
/// `"error":null` count as errors.
pub async fn throughput(
    name: &str,
    url: &str,
    template: &str,
    connections: usize,
    in_flight: usize,
    duration: Duration,
) -> Result<Throughput, ClientError> {
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let (prefix, suffix) = template.split_once("__U__").unwrap_or((template, ""));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for c in 0..connections {
        let (ws, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|e| ClientError::Connect {
                url: url.into(),
                reason: e.to_string(),
            })?;
        let (mut sink, mut stream) = ws.split();
        let window = Arc::new(Semaphore::new(in_flight));
        let (ok, errors, w) = (ok.clone(), errors.clone(), window.clone());
        let reader = tokio::spawn(async move {
            while let Some(Ok(msg)) = stream.next().await {
                let text = match &msg {
                    Message::Text(t) => t.as_str(),
                    _ => continue,
                };
                if text.contains("\"error\":null") {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                w.add_permits(1);
            }
        });
        let (prefix, suffix) = (prefix.to_owned(), suffix.to_owned());
        let deadline = started + duration;
        let sender = tokio::spawn(async move {
            let mut n: u64 = 0;
            // Bounded in time and in count.
            while Instant::now() < deadline && n < 100_000_000 {
                let permit = match window.try_acquire() {
                    Ok(p) => p,
                    Err(_) => {
                        if sink.flush().await.is_err() {
                            break;
                        }
                        match window.acquire().await {
                            Ok(p) => p,
                            Err(_) => break,
                        }
                    }
                };
                permit.forget();
                let frame = format!("{prefix}{c}-{n}{suffix}");
                n += 1;
                if sink.feed(Message::Text(frame.into())).await.is_err() {
                    break;
                }
            }
            let _ = sink.flush().await;
            // Wait for the outstanding replies, then close.
            let _ = tokio::time::timeout(
                Duration::from_secs(10),
                window.acquire_many(in_flight as u32),
            )
            .await;
            let _ = sink.close().await;
        });
        tasks.push((sender, reader));
    }
    for (sender, reader) in tasks {
        let _ = sender.await;
        let _ = tokio::time::timeout(Duration::from_secs(10), reader).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ok = ok.load(Ordering::Relaxed);
    Ok(Throughput {
        name: name.into(),
        connections,
        in_flight,
        per_second: ok as f64 / elapsed,
        ok,
        errors: errors.load(Ordering::Relaxed),
    })
}

fn frame(cmds: &[RpcCommand]) -> String {
    serde_json::to_string(&RpcRequest::new("__U__", cmds.to_vec())).unwrap_or_default()
}

fn cmd(name: &str, fun: &str, args: Vec<Value>) -> RpcCommand {
    RpcCommand::new(name, fun, args)
}

/// Runs every scenario and returns the figures.
pub async fn run(cfg: &BenchConfig) -> Result<Report, ClientError> {
    // Fail early, with a clear message, when the node lacks the plugin functions.
    let client = Client::connect(&cfg.url).await?;
    let f = cfg.plugin_function.as_str();
    client.call(f, vec![json!("probe")]).await?;
    let echo = vec![cmd("echo", "echo", vec![json!("hello")])];
    let plugin = vec![cmd(f, f, vec![json!("hello")])];
    let chain = vec![
        cmd("a", f, vec![json!("hello")]),
        cmd("b", f, vec![json!("a")]),
        cmd("c", f, vec![json!("b")]),
    ];
    let mut fan: Vec<RpcCommand> = (0..10)
        .map(|i| cmd(&format!("p{i}"), f, vec![json!(format!("part{i}"))]))
        .collect();
    let parts: Vec<Value> = (0..10).map(|i| json!(format!("p{i}"))).collect();
    fan.push(cmd(
        "all",
        &cfg.join_function,
        vec![Value::Array(parts), json!(",")],
    ));

    let wanted = |name: &str| name.contains(&cfg.only);
    let mut latency_runs = Vec::new();
    let u = &cfg.url;
    let n = cfg.latency_calls;
    let plugin_label = format!("{f} (plugin)");
    let scenarios: [(&str, &Vec<RpcCommand>, usize); 4] = [
        ("echo (built-in)", &echo, n),
        (&plugin_label, &plugin, n),
        ("3-step chain", &chain, n / 2),
        ("10-way fan-out + aggregate", &fan, n / 4),
    ];
    for (name, cmds, calls) in scenarios.iter().filter(|s| wanted(s.0)) {
        latency_runs.push(latency(name, u, *calls, &frame(cmds)).await?);
    }

    let mut runs = Vec::new();
    let d = cfg.duration;
    for (name, cmds, _) in scenarios.iter().filter(|s| wanted(s.0)) {
        let tpl = frame(cmds);
        let shapes: &[(usize, usize)] = if *name == "echo (built-in)" || *name == plugin_label {
            &[(1, 1), (1, 10), (1, 100), (4, 100)]
        } else {
            &[(1, 100)]
        };
        for &(connections, in_flight) in shapes {
            runs.push(throughput(name, &cfg.url, &tpl, connections, in_flight, d).await?);
        }
    }
    Ok(Report {
        latency: latency_runs,
        throughput: runs,
    })
}

/// The report as a Markdown table.
pub fn render(report: &Report) -> String {
    let mut out =
        String::from("| latency scenario | calls | p50 µs | p99 µs |\n|---|---:|---:|---:|\n");
    for l in &report.latency {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} |\n",
            l.name, l.calls, l.p50_us, l.p99_us
        ));
    }
    out.push_str("\n| throughput scenario | connections | in flight each | requests/s | ok | errors |\n|---|---:|---:|---:|---:|---:|\n");
    for t in &report.throughput {
        out.push_str(&format!(
            "| {} | {} | {} | {:.0} | {} | {} |\n",
            t.name, t.connections, t.in_flight, t.per_second, t.ok, t.errors
        ));
    }
    out
}
