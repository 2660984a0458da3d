//! The attacks of issue 13, against a real node process (the `mpreg` binary with the example
//! plugins), scaled to run in seconds: each asserts that the node's resident memory stays within
//! a stated bound while a second connection's `echo` keeps answering, and the shutdown ones
//! that SIGTERM ends the node within its grace period whatever its clients do.
//!
//! Figures from before the fixes are in docs/limits.md.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use support::{Server, example_plugin, start};
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// A node with the `chaos` and `text` plugins and `config` (TOML) on top of short limits.
fn node(config: &str) -> (Server, String) {
    let dir = std::env::temp_dir().join(format!(
        "mpreg-attack-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("node.toml");
    let text = format!(
        "plugins = [{:?}, {:?}]\n{config}\n",
        example_plugin("chaos"),
        example_plugin("text")
    );
    std::fs::write(&path, text).expect("write config");
    start(&["--config", path.to_str().expect("path")])
}

static NEXT: AtomicU64 = AtomicU64::new(0);

async fn connect(url: &str) -> Ws {
    tokio_tungstenite::connect_async(url)
        .await
        .expect("connect")
        .0
}

fn frame(u: &str, cmds: Value) -> Message {
    let v = json!({"role": "rpc", "u": u, "cmds": cmds});
    Message::Binary(serde_json::to_vec(&v).expect("json").into())
}

async fn recv(ws: &mut Ws, limit: Duration) -> Value {
    loop {
        let msg = tokio::time::timeout(limit, ws.next())
            .await
            .expect("a reply in time")
            .expect("open")
            .expect("frame");
        match msg {
            Message::Text(t) => return serde_json::from_str(&t).expect("json"),
            Message::Binary(b) => return serde_json::from_slice(&b).expect("json"),
            _ => {}
        }
    }
}

/// Pipelines `n` requests `fun(args)` on `ws` without reading a reply (the node may close the
/// connection meanwhile: sending then just stops).
async fn pipeline(ws: &mut Ws, fun: &str, args: Value, n: usize) {
    for i in 0..n {
        let f = frame(
            &format!("{fun}-{i}"),
            json!([{"name": "c", "fun": fun, "args": args}]),
        );
        if ws.feed(f).await.is_err() {
            return;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), ws.flush()).await;
}

/// A fresh connection's `echo` answers within two seconds (the tests of this file run side by
/// side on two cores).
async fn echo_answers(url: &str) {
    let mut ws = connect(url).await;
    ws.send(frame(
        "probe",
        json!([{"name": "e", "fun": "echo", "args": ["hi"]}]),
    ))
    .await
    .expect("send");
    // Generous: these tests share two cores with each other's nodes (CI once took over 2 s
    // here while another test's hundred memory hogs ran); what matters is that it is served.
    let reply = recv(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(reply["r"]["e"], "hi", "{reply}");
}

/// Samples the node's RSS until dropped; reports the peak.
struct Peak {
    peak: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Peak {
    fn watch(server: &Server) -> Peak {
        let pid = server.0.id();
        let peak = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (peak, stop) = (peak.clone(), stop.clone());
            move || {
                while !stop.load(Ordering::Relaxed) {
                    peak.fetch_max(rss_of(pid), Ordering::Relaxed);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        Peak {
            peak,
            stop,
            thread: Some(thread),
        }
    }

    fn mib(&self) -> u64 {
        self.peak.load(Ordering::Relaxed)
    }
}

impl Drop for Peak {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn rss_of(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

/// Warms the node (plugins compiled and instantiated once), then returns its RSS.
async fn baseline(server: &Server, url: &str) -> u64 {
    let mut ws = connect(url).await;
    for (i, (fun, args)) in [
        ("huge", json!([1])),
        ("hog", json!([8])),
        ("echo", json!([1])),
    ]
    .into_iter()
    .enumerate()
    {
        ws.send(frame(
            &format!("w{i}"),
            json!([{"name": "c", "fun": fun, "args": args}]),
        ))
        .await
        .expect("send");
        recv(&mut ws, Duration::from_secs(30)).await;
    }
    server.rss_mib()
}

fn report(what: &str, base: u64, peak: u64, bound: u64) {
    eprintln!(
        "{what}: RSS {base} MiB at rest, {peak} MiB at peak (+{} MiB; bound +{bound} MiB)",
        peak.saturating_sub(base)
    );
    assert!(
        peak.saturating_sub(base) <= bound,
        "{what}: RSS grew by {} MiB, bound {bound} MiB",
        peak.saturating_sub(base)
    );
}

/// Attack 1: a 1.3 KB request whose value doubles per command (it took 1.9 GB), and one
/// result referenced by 300 commands (a 314 MB reply built before being refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn amplifying_requests_fail_at_their_byte_budget() {
    let (server, url) = node("");
    let base = baseline(&server, &url).await;
    let peak = Peak::watch(&server);
    let mut ws = connect(&url).await;
    let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": ["x".repeat(64)]})];
    for i in 1..26 {
        let prev = format!("c{}", i - 1);
        cmds.push(json!({"name": format!("c{i}"), "fun": "echos", "args": [prev, prev]}));
    }
    ws.send(frame("doubling", json!(cmds))).await.expect("send");
    let reply = recv(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(reply["error"]["code"], 1008, "{}", reply["error"]);
    let mut cmds = vec![json!({"name": "big", "fun": "echo", "args": ["y".repeat(1 << 20)]})];
    for i in 0..300 {
        cmds.push(json!({"name": format!("r{i}"), "fun": "echo", "args": ["big"]}));
    }
    ws.send(frame("fanout", json!(cmds))).await.expect("send");
    let reply = recv(&mut ws, Duration::from_secs(30)).await;
    assert_eq!(reply["error"]["code"], 1008, "{}", reply["error"]);
    echo_answers(&url).await;
    report("amplification", base, peak.mib(), 400);
}

/// Attack 2: an 8,000-level chain with `return_intermediate_results` (it peaked at 4.5 GB,
/// copying the accumulated results per level).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deep_chain_with_intermediate_results_stays_linear() {
    let (server, url) = node("");
    let base = baseline(&server, &url).await;
    let peak = Peak::watch(&server);
    let mut ws = connect(&url).await;
    let mut cmds = vec![json!({"name": "c0", "fun": "echo", "args": ["z".repeat(32)]})];
    for i in 1..8_000 {
        cmds.push(json!({"name": format!("c{i}"), "fun": "echo", "args": [format!("c{}", i - 1)]}));
    }
    let v = json!({"role": "rpc", "u": "deep", "cmds": cmds, "return_intermediate_results": true});
    ws.send(Message::Binary(
        serde_json::to_vec(&v).expect("json").into(),
    ))
    .await
    .expect("send");
    let reply = recv(&mut ws, Duration::from_secs(60)).await;
    assert!(
        reply["error"].is_null() || reply["error"]["code"] == 1008,
        "{}",
        reply["error"]
    );
    echo_answers(&url).await;
    report(
        "deep chain with intermediate results",
        base,
        peak.mib(),
        400,
    );
}

/// Attack 3: 1,500 pipelined 1 MiB replies that the client never reads (they held 3.7 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_its_replies_holds_little_and_is_cut_off() {
    let (server, url) = node("[server]\nstalled_client_ms = 2000\n");
    let base = baseline(&server, &url).await;
    let peak = Peak::watch(&server);
    let mut stuck = connect(&url).await;
    pipeline(&mut stuck, "huge", json!([1]), 1_500).await;
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        echo_answers(&url).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    report("pipelined unread replies", base, peak.mib(), 300);
}

/// Attack 4: clients that stop reading, or leave with a thousand large replies unread: SIGTERM
/// still ends the node within its grace period (before, it never exited).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_node_within_its_grace_with_stuck_and_leaked_clients() {
    let (mut server, url) = node("[server]\nshutdown_grace_ms = 1000\n");
    baseline(&server, &url).await;
    let mut leaving = connect(&url).await;
    let mut stuck = connect(&url).await;
    pipeline(&mut leaving, "huge", json!([1]), 1_100).await;
    pipeline(&mut stuck, "huge", json!([1]), 64).await;
    drop(leaving);
    tokio::time::sleep(Duration::from_millis(500)).await;
    echo_answers(&url).await;
    let took = server.terminate(Duration::from_secs(5));
    eprintln!("SIGTERM with a stuck and a leaked client: exited after {took:?} (grace 1 s)");
    assert!(took < Duration::from_secs(3), "{took:?}");
    drop(stuck);
}

/// Attack 5: a hundred concurrent 60 MiB guests (they took 5.3 GB): the node's guest-memory
/// budget (512 MiB here) holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_memory_hogs_stay_within_the_guest_memory_budget() {
    let (server, url) = node("[runtime]\nmemory_limit_mib = 100\nmax_guest_memory_mib = 512\n");
    let base = baseline(&server, &url).await;
    let peak = Peak::watch(&server);
    let mut conns = Vec::new();
    for _ in 0..10 {
        conns.push(connect(&url).await);
    }
    for ws in &mut conns {
        pipeline(ws, "hog", json!([60]), 10).await;
    }
    let (mut ran, mut refused) = (0, 0);
    for ws in &mut conns {
        for _ in 0..10 {
            let reply = recv(ws, Duration::from_secs(30)).await;
            if reply["error"].is_null() {
                ran += 1;
            } else {
                let code = reply["error"]["code"].as_i64().unwrap_or_default();
                assert!(code == 1007 || code == 1008, "{reply}");
                refused += 1;
            }
        }
    }
    eprintln!("memory hogs: {ran} ran, {refused} refused");
    assert!(ran > 0);
    echo_answers(&url).await;
    report("concurrent memory hogs", base, peak.mib(), 512 + 150);
}

/// Attack 6: idle connections (each took ~135 KB: 15,000 → 2.1 GB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_cheap() {
    let (server, url) = node("[server]\nmax_connections_per_address = 5000\n");
    let base = baseline(&server, &url).await;
    let n = 2_000;
    let mut idle = Vec::with_capacity(n);
    for _ in 0..n {
        idle.push(connect(&url).await);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    echo_answers(&url).await;
    let grown = server.rss_mib().saturating_sub(base);
    let per_kib = grown * 1024 / n as u64;
    eprintln!("idle connections: {n} cost {grown} MiB, {per_kib} KiB each");
    assert!(per_kib <= 48, "{per_kib} KiB per idle connection");
    drop(idle);
}

/// Attack 7: a queue filled with 100,000 messages of 1 KiB (before, every body and record was
/// held in memory: ~900 bytes per message besides the body). Bodies now stay on disk; only
/// the records are in memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_keeps_its_bodies_on_disk() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().display().to_string();
    let (server, url) = node(&format!("[node]\ndata_dir = {data:?}\n"));
    let base = baseline(&server, &url).await;
    let mut ws = connect(&url).await;
    ws.send(frame("c", json!([{"name": "c", "fun": "queue.create", "args": ["full", {"max_receives": 0, "max_messages": 200000}]}])))
        .await
        .expect("send");
    recv(&mut ws, Duration::from_secs(10)).await;
    let batch = 1_000;
    let body = "b".repeat(1024);
    let mut fill = async |from: usize, n: usize| {
        for b in (from..from + n).step_by(batch) {
            let msgs: Vec<Value> = (0..batch).map(|_| json!({"body": body})).collect();
            ws.send(frame(
                &format!("s{b}"),
                json!([{"name": "s", "fun": "queue.send_batch", "args": ["full", msgs]}]),
            ))
            .await
            .expect("send");
            let reply = recv(&mut ws, Duration::from_secs(60)).await;
            assert!(reply["error"].is_null(), "{}", reply["error"]);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        server.rss_mib()
    };
    // The first half fills sled's bounded cache; the second shows what a message costs.
    let half = 60_000;
    let first = fill(0, half).await;
    let second = fill(half, half).await;
    let per_msg = second.saturating_sub(first) * (1 << 20) / half as u64;
    eprintln!(
        "a full queue: {} messages of 1 KiB, RSS {base} → {first} → {second} MiB, {per_msg} bytes per further message",
        2 * half
    );
    // A message's record and index (about 680 bytes; up to 1,000 seen when sled's cache was
    // still filling): not its body, which in memory would add its 1 KiB and more.
    assert!(per_msg < 1_400, "{per_msg} bytes per message");
    // The bodies are still there to deliver.
    ws.send(frame(
        "r",
        json!([{"name": "r", "fun": "queue.receive", "args": ["full", {"max": 3}]}]),
    ))
    .await
    .expect("send");
    let reply = recv(&mut ws, Duration::from_secs(10)).await;
    assert_eq!(
        reply["r"]["r"][0]["body"],
        json!(body),
        "{}",
        reply["error"]
    );
    echo_answers(&url).await;
}

/// Attack 8: twenty subscribers that never read (each held a publisher ~2 s: ~40 s of stalls).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stuck_subscribers_neither_stall_publishers_nor_grow_the_node() {
    let (server, url) = node("");
    let base = baseline(&server, &url).await;
    let peak = Peak::watch(&server);
    let mut stuck = Vec::new();
    for i in 0..20 {
        let mut ws = connect(&url).await;
        let sub = json!({"role": "pubsub-subscribe", "u": format!("s{i}"), "subscription": {
            "subscription_id": "s", "patterns": [{"pattern": "wide.#", "exact_match": false}],
            "subscriber": "stuck", "get_backlog": false}});
        ws.send(Message::Text(sub.to_string().into()))
            .await
            .expect("send");
        recv(&mut ws, Duration::from_secs(5)).await;
        stuck.push(ws);
    }
    let mut publisher = connect(&url).await;
    let payload = "w".repeat(32 * 1024);
    let mut slowest = Duration::ZERO;
    for i in 0..1_000 {
        let msg = json!({"role": "pubsub-publish", "u": format!("p{i}"), "message": {
            "topic": "wide.t", "payload": payload, "message_id": format!("m{i}"),
            "publisher": "attack", "headers": {}, "timestamp": 1.0}});
        let t = Instant::now();
        publisher
            .send(Message::Text(msg.to_string().into()))
            .await
            .expect("send");
        let ack = recv(&mut publisher, Duration::from_secs(10)).await;
        slowest = slowest.max(t.elapsed());
        assert_eq!(ack["success"], true, "{ack}");
    }
    eprintln!("stuck subscribers: slowest publish ack {slowest:?}");
    assert!(
        slowest < Duration::from_secs(1),
        "a publish waited {slowest:?}"
    );
    echo_answers(&url).await;
    report("stuck subscribers", base, peak.mib(), 300);
    drop(stuck);
}

/// Attack 9: 400 spinning guests (another connection's echo waited seconds; limits overran).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spinning_guests_leave_the_node_responsive() {
    let (server, url) = node("[runtime]\ncall_timeout_ms = 1000\n");
    let base = baseline(&server, &url).await;
    let peak = Peak::watch(&server);
    let mut spinners = Vec::new();
    for _ in 0..4 {
        let mut ws = connect(&url).await;
        pipeline(&mut ws, "spin", json!([]), 100).await;
        spinners.push(ws);
    }
    let mut probe = connect(&url).await;
    let mut worst = Duration::ZERO;
    let t0 = Instant::now();
    let mut n = 0;
    while t0.elapsed() < Duration::from_secs(2) {
        let t = Instant::now();
        probe
            .send(frame(
                &format!("e{n}"),
                json!([{"name": "e", "fun": "echo", "args": [n]}]),
            ))
            .await
            .expect("send");
        let reply = recv(&mut probe, Duration::from_secs(5)).await;
        assert_eq!(reply["r"]["e"], n, "{reply}");
        worst = worst.max(t.elapsed());
        n += 1;
    }
    eprintln!("spinning guests: {n} echo round trips in 2 s, worst {worst:?}");
    assert!(worst < Duration::from_millis(500), "an echo took {worst:?}");
    report("spinning guests", base, peak.mib(), 300);
    drop(spinners);
}
