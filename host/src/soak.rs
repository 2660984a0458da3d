//! `mpreg bench --soak SECONDS`: mixed traffic against a running node for a long while, hostile
//! clients among it, with the node's resident memory sampled from `/health` all along. What it
//! shows is whether the node's memory comes back to where it started: a leak shows as a curve
//! that keeps rising, a bound that holds as one that stays flat.
//!
//! The traffic, each a task of its own until the time is up:
//! - RPC: pipelined `echo`, the plugin `identity` and a 3-step chain on two connections.
//! - Pub/sub: a publisher and a reading subscriber.
//! - Queues: a producer and a consumer that receives and acks.
//! - Hostile clients, one every 200 ms, in turn: garbage frames; 200 pipelined 1 MiB replies
//!   left unread and the connection dropped (needs the `chaos` plugin's `huge`); an amplifying
//!   request; half an HTTP request head held open; a subscriber that never reads.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

use crate::client::{Client, ClientError};

/// What the soak should do.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// Node to load.
    pub url: String,
    /// How long.
    pub duration: Duration,
    /// How often the node's RSS is read.
    pub sample_every: Duration,
    /// Plugin function that returns its string input (`identity` of the `text` plugin).
    pub plugin_function: String,
}

/// Outcomes of one kind of traffic.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Counts {
    /// Operations that did what they should (for hostile clients: were refused or cut off as
    /// they should be).
    pub ok: u64,
    /// Operations that failed.
    pub errors: u64,
}

/// What a soak measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SoakReport {
    /// Seconds it ran.
    pub seconds: f64,
    /// `(seconds since start, node RSS in MiB)`.
    pub rss: Vec<(f64, f64)>,
    /// Outcomes per kind of traffic.
    pub traffic: BTreeMap<String, Counts>,
}

#[derive(Default)]
struct Tally {
    ok: AtomicU64,
    errors: AtomicU64,
}

impl Tally {
    fn count(&self, ok: bool) {
        if ok {
            self.ok.fetch_add(1, Ordering::Relaxed);
        } else {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }
}

type Tallies = Arc<BTreeMap<&'static str, Tally>>;

const KINDS: &[&str] = &[
    "rpc",
    "pubsub published",
    "pubsub received",
    "queue sent",
    "queue acked",
    "hostile: garbage",
    "hostile: unread replies",
    "hostile: amplification",
    "hostile: slow header",
    "hostile: stuck subscriber",
];

/// The node's resident set in MiB, from its `/health`.
fn node_rss_mib(url: &str) -> Option<f64> {
    let http = url.replacen("ws://", "http://", 1);
    let body = ureq::get(&format!("{}/health", http.trim_end_matches('/')))
        .call()
        .ok()?
        .into_body()
        .read_to_string()
        .ok()?;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["process"]["rss_bytes"]
        .as_u64()
        .map(|b| b as f64 / f64::from(1 << 20))
}

async fn sample(url: &str) -> Option<f64> {
    let url = url.to_owned();
    tokio::task::spawn_blocking(move || node_rss_mib(&url))
        .await
        .ok()
        .flatten()
}

/// Runs the soak.
pub async fn run(cfg: &SoakConfig) -> Result<SoakReport, ClientError> {
    // The node must be there and report its memory before anything starts.
    let first = sample(&cfg.url).await.ok_or_else(|| ClientError::Connect {
        url: cfg.url.clone(),
        reason: "no /health with process.rss_bytes".into(),
    })?;
    let setup = Client::connect(&cfg.url).await?;
    setup
        .call(
            "queue.create",
            vec![json!("soak"), json!({"max_receives": 0})],
        )
        .await?;
    let has_huge = setup.call("huge", vec![json!(0)]).await.is_ok();
    let tallies: Tallies = Arc::new(KINDS.iter().map(|k| (*k, Tally::default())).collect());
    let start = Instant::now();
    let until = start + cfg.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for conn in 0..2 {
        tasks.spawn(rpc_load(cfg.clone(), tallies.clone(), until, conn));
    }
    tasks.spawn(pubsub_load(cfg.url.clone(), tallies.clone(), until));
    tasks.spawn(queue_load(cfg.url.clone(), tallies.clone(), until));
    tasks.spawn(hostile_load(
        cfg.url.clone(),
        tallies.clone(),
        until,
        has_huge,
    ));
    let mut rss = vec![(0.0, first)];
    while Instant::now() < until {
        let wait = cfg
            .sample_every
            .min(until.saturating_duration_since(Instant::now()));
        tokio::time::sleep(wait).await;
        if let Some(mib) = sample(&cfg.url).await {
            rss.push((start.elapsed().as_secs_f64(), mib));
        }
    }
    while tasks.join_next().await.is_some() {}
    // Let the node settle (deferred teardown, closed sessions), then the last sample.
    tokio::time::sleep(Duration::from_secs(2)).await;
    if let Some(mib) = sample(&cfg.url).await {
        rss.push((start.elapsed().as_secs_f64(), mib));
    }
    let traffic = tallies
        .iter()
        .map(|(k, t)| {
            (
                (*k).to_owned(),
                Counts {
                    ok: t.ok.load(Ordering::Relaxed),
                    errors: t.errors.load(Ordering::Relaxed),
                },
            )
        })
        .collect();
    Ok(SoakReport {
        seconds: start.elapsed().as_secs_f64(),
        rss,
        traffic,
    })
}

async fn rpc_load(cfg: SoakConfig, tallies: Tallies, until: Instant, conn: usize) {
    let Ok((ws, _)) = tokio_tungstenite::connect_async(&cfg.url).await else {
        tallies["rpc"].count(false);
        return;
    };
    let (mut tx, mut rx) = ws.split();
    let f = &cfg.plugin_function;
    let templates = [
        json!([{"name": "e", "fun": "echo", "args": ["soak"]}]),
        json!([{"name": "i", "fun": f, "args": ["soak"]}]),
        json!([{"name": "a", "fun": f, "args": ["x"]}, {"name": "b", "fun": f, "args": ["a"]},
               {"name": "c", "fun": f, "args": ["b"]}]),
    ];
    let window = Arc::new(tokio::sync::Semaphore::new(20));
    let reader = {
        let (tallies, window) = (tallies.clone(), window.clone());
        tokio::spawn(async move {
            while let Some(Ok(msg)) = rx.next().await {
                if let Message::Text(t) = msg {
                    tallies["rpc"].count(t.contains("\"error\":null"));
                    window.add_permits(1);
                }
            }
        })
    };
    let mut n = 0u64;
    while Instant::now() < until {
        let Ok(permit) = window.acquire().await else {
            break;
        };
        permit.forget();
        let cmds = &templates[(n % 3) as usize];
        let frame = json!({"role": "rpc", "u": format!("s{conn}-{n}"), "cmds": cmds});
        n += 1;
        if tx
            .send(Message::Text(frame.to_string().into()))
            .await
            .is_err()
        {
            tallies["rpc"].count(false);
            break;
        }
    }
    // The replies still on their way.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while window.available_permits() < 20 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    reader.abort();
}

async fn pubsub_load(url: String, tallies: Tallies, until: Instant) {
    let (Ok(sub_client), Ok(publisher)) =
        (Client::connect(&url).await, Client::connect(&url).await)
    else {
        tallies["pubsub published"].count(false);
        return;
    };
    let Ok(mut sub) = sub_client.subscribe("soak", &["soak.#"], None).await else {
        tallies["pubsub received"].count(false);
        return;
    };
    let reader = {
        let tallies = tallies.clone();
        tokio::spawn(async move {
            while sub.next().await.is_some() {
                tallies["pubsub received"].count(true);
            }
        })
    };
    let mut n = 0u64;
    while Instant::now() < until {
        let ok = publisher
            .publish(
                &format!("soak.t{}", n % 8),
                json!({"n": n, "pad": "p".repeat(256)}),
            )
            .await
            .is_ok();
        tallies["pubsub published"].count(ok);
        n += 1;
        if n.is_multiple_of(50) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    reader.abort();
}

async fn queue_load(url: String, tallies: Tallies, until: Instant) {
    let (Ok(producer), Ok(consumer)) = (Client::connect(&url).await, Client::connect(&url).await)
    else {
        tallies["queue sent"].count(false);
        return;
    };
    let consume = {
        let tallies = tallies.clone();
        tokio::spawn(async move {
            loop {
                let got = consumer
                    .call(
                        "queue.receive",
                        vec![json!("soak"), json!({"max": 50, "wait_ms": 500})],
                    )
                    .await;
                let Ok(Value::Array(msgs)) = got else {
                    tallies["queue acked"].count(false);
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let receipts: Vec<Value> = msgs.iter().map(|m| m["receipt"].clone()).collect();
                if receipts.is_empty() {
                    if Instant::now() > until {
                        return;
                    }
                    continue;
                }
                let n = receipts.len() as u64;
                let acked = consumer
                    .call("queue.ack", vec![json!("soak"), Value::Array(receipts)])
                    .await
                    .is_ok();
                for _ in 0..n {
                    tallies["queue acked"].count(acked);
                }
            }
        })
    };
    let mut n = 0u64;
    while Instant::now() < until {
        let ok = producer
            .call("queue.send", vec![json!("soak"), json!({"n": n})])
            .await
            .is_ok();
        tallies["queue sent"].count(ok);
        n += 1;
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), consume).await;
}

async fn hostile_load(url: String, tallies: Tallies, until: Instant, has_huge: bool) {
    let mut n = 0u64;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let kind = match n % 5 {
            0 => "hostile: garbage",
            1 if has_huge => "hostile: unread replies",
            2 => "hostile: amplification",
            3 => "hostile: slow header",
            _ => "hostile: stuck subscriber",
        };
        n += 1;
        let ok = match kind {
            "hostile: garbage" => garbage(&url).await,
            "hostile: unread replies" => unread_replies(&url).await,
            "hostile: amplification" => amplification(&url).await,
            "hostile: slow header" => slow_header(&url).await,
            _ => stuck_subscriber(&url).await,
        };
        tallies[kind].count(ok);
    }
}

/// Garbage frames: the node must still answer a valid one on the same connection (or have
/// closed it).
async fn garbage(url: &str) -> bool {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return false;
    };
    for g in [
        "{not json",
        "[1,2,3]",
        r#"{"role":"rpc","u":"g","cmds":"x"}"#,
        r#"{"role":"rpc","u":"g2","cmds":[{"name":"a","fun":"echo","args":[123456789012345678901234567890]}]}"#,
        r#"{"role":"nope","u":"g3"}"#,
    ] {
        if ws.send(Message::Text(g.into())).await.is_err() {
            return true;
        }
    }
    let probe = r#"{"role":"rpc","u":"gp","cmds":[{"name":"e","fun":"echo","args":[1]}]}"#;
    if ws.send(Message::Text(probe.into())).await.is_err() {
        return true;
    }
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(m)) = ws.next().await {
            if let Message::Text(t) = m
                && t.contains("\"gp\"")
            {
                return true;
            }
        }
        false
    })
    .await;
    answered.unwrap_or(false)
}

/// 200 pipelined 1 MiB replies, none read, then the connection dropped.
async fn unread_replies(url: &str) -> bool {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return false;
    };
    for i in 0..200 {
        let f = json!({"role": "rpc", "u": format!("h{i}"),
                       "cmds": [{"name": "h", "fun": "huge", "args": [1]}]});
        if ws.feed(Message::Text(f.to_string().into())).await.is_err() {
            break;
        }
    }
    let _ = tokio::time::timeout(Duration::from_millis(500), ws.flush()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    true
}

/// A request whose value doubles per command: must fail with 1008.
async fn amplification(url: &str) -> bool {
    let Ok(client) = Client::connect(url).await else {
        return false;
    };
    let mut cmds = vec![crate::protocol::RpcCommand::new(
        "c0",
        "echo",
        vec![json!("x".repeat(64))],
    )];
    for i in 1..26 {
        let prev = format!("c{}", i - 1);
        cmds.push(crate::protocol::RpcCommand::new(
            format!("c{i}"),
            "echos",
            vec![json!(prev), json!(prev)],
        ));
    }
    matches!(client.request(cmds).await, Err(e) if e.code() == Some(1008))
}

/// Half a request head, held for two seconds.
async fn slow_header(url: &str) -> bool {
    let addr = url.trim_start_matches("ws://").trim_end_matches('/');
    let Ok(mut tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let sent = tcp
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n")
        .await
        .is_ok();
    tokio::time::sleep(Duration::from_secs(2)).await;
    sent
}

/// A subscriber that never reads, while the soak's publisher runs: cut off or left behind.
async fn stuck_subscriber(url: &str) -> bool {
    let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
        return false;
    };
    let sub = json!({"role": "pubsub-subscribe", "u": "stuck", "subscription": {
        "subscription_id": "stuck", "patterns": [{"pattern": "soak.#", "exact_match": false}],
        "subscriber": "stuck", "get_backlog": false}});
    let ok = ws.send(Message::Text(sub.to_string().into())).await.is_ok();
    tokio::time::sleep(Duration::from_secs(3)).await;
    ok
}

/// The report as Markdown: traffic, then the RSS curve.
pub fn render(r: &SoakReport) -> String {
    let mut out = format!(
        "soak: {:.0} s\n\n| traffic | ok | errors |\n|---|---:|---:|\n",
        r.seconds
    );
    for (k, c) in &r.traffic {
        out.push_str(&format!("| {k} | {} | {} |\n", c.ok, c.errors));
    }
    out.push_str("\n| t (s) | node RSS (MiB) |\n|---:|---:|\n");
    for (t, mib) in &r.rss {
        out.push_str(&format!("| {t:.0} | {mib:.1} |\n"));
    }
    if let (Some(first), Some(last)) = (r.rss.first(), r.rss.last()) {
        let peak = r.rss.iter().map(|s| s.1).fold(0.0, f64::max);
        out.push_str(&format!(
            "\nRSS: {:.1} MiB at start, {peak:.1} MiB at peak, {:.1} MiB at the end ({:+.1} MiB)\n",
            first.1,
            last.1,
            last.1 - first.1
        ));
    }
    out
}
