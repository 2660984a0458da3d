//! A seeded mutation fuzzer over the frames a node reads: client frames (RPC, pub/sub, queue
//! calls) on a client connection, and peer-link frames after a valid hello on the peer path.
//! Against a real node process with the example plugins, it checks that nothing panics
//! (stderr), the process stays up, its memory stays bounded, every connection either answers a
//! probe or was closed by the node (nothing hangs), and a fresh client is served after each
//! round.
//!
//! CI runs a few seconds of it. A longer run: `MPREG_FUZZ_FRAMES=200000 MPREG_FUZZ_SEED=7
//! cargo test -p mpreg --test fuzz -- --nocapture` (docs/limits.md records one).

mod support;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use mpreg::cluster::wire::{ForwardedCall, PEER_PATH, PeerFrame};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Valid client frames to start from.
fn client_corpus() -> Vec<Vec<u8>> {
    let frames = [
        json!({"role": "rpc", "u": "a", "cmds": [{"name": "e", "fun": "echo", "args": [1, "two", {"x": [null, true]}]}]}),
        json!({"role": "rpc", "u": "b", "cmds": [
            {"name": "x", "fun": "add", "args": [1, 2]},
            {"name": "y", "fun": "mul", "args": ["x", 3]},
            {"name": "z", "fun": "echos", "args": ["x", "y"], "kwargs": {}, "locs": []}]}),
        json!({"role": "rpc", "u": "c", "timeout_ms": 500, "return_intermediate_results": true,
            "cmds": [{"name": "h", "fun": "hog", "args": [2]}, {"name": "s", "fun": "upper", "args": ["h"]}]}),
        json!({"role": "rpc", "u": "d", "cmds": [{"name": "q", "fun": "queue.create", "args": ["fq", {"max_messages": 10}]},
            {"name": "s", "fun": "queue.send", "args": ["fq", {"k": 1}]}]}),
        json!({"role": "pubsub-subscribe", "u": "s1", "subscription": {"subscription_id": "f", "patterns": [{"pattern": "fz.#", "exact_match": false}], "subscriber": "me", "get_backlog": true}}),
        json!({"role": "pubsub-publish", "u": "p1", "message": {"topic": "fz.a", "payload": {"v": [1, 2]}, "message_id": "m", "publisher": "me", "headers": {}, "timestamp": 1.0}}),
        json!({"role": "pubsub-unsubscribe", "u": "s2", "subscription_id": "f"}),
        json!({"role": "rpc", "u": "f", "cmds": [{"name": "b", "fun": "busy", "args": [3]}]}),
    ];
    frames
        .iter()
        .map(|f| serde_json::to_vec(f).expect("json"))
        .collect()
}

/// Valid peer frames to start from (after the hello).
fn peer_corpus() -> Vec<Vec<u8>> {
    let call = ForwardedCall {
        request_id: "r".into(),
        command: r#"{"name":"e","fun":"echo","args":[1]}"#.into(),
        hops_left: 1,
        path: vec!["fuzzer".into()],
        timeout_ms: 1_000,
        depth: 0,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        principal: mpreg::cluster::wire::ForwardedPrincipal {
            name: "fuzzer".into(),
            policy: Some(r#"{"functions":["echo"]}"#.into()),
        },
    };
    [
        PeerFrame::Call { id: 1, call },
        PeerFrame::Fetch {
            id: 2,
            sha256: "00".repeat(32),
        },
        PeerFrame::Publish {
            message: r#"{"topic":"fz.p","payload":1,"message_id":"x","publisher":"p","headers":{},"timestamp":1.0}"#.into(),
        },
        PeerFrame::Backlog {
            id: 3,
            patterns: vec![("fz.#".into(), false)],
            within_ms: 1_000,
        },
    ]
    .iter()
    .map(|f| f.encode().expect("encode"))
    .collect()
}

/// JSON fragments a mutation splices in: the shapes that have broken parsers before.
const SPLICES: &[&str] = &[
    "null",
    "-0",
    "1e999",
    "123456789012345678901234567890",
    "\"\\ud800\"",
    "[]",
    "{}",
    "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]",
    "\"u\":\"dup\"",
    ",",
    "\"cmds\"",
    "\"rpc\"",
    "\"x\"",
    "true",
    "\"\\u0000\"",
    "\"e\"",
    "-9223372036854775809",
];

/// One mutation of `frame`.
fn mutate(rng: &mut StdRng, frame: &[u8]) -> Vec<u8> {
    let mut out = frame.to_vec();
    let rounds = rng.random_range(1..=4);
    for _ in 0..rounds {
        if out.is_empty() {
            out.push(b'{');
        }
        let at = rng.random_range(0..out.len());
        match rng.random_range(0..8) {
            0 => out[at] ^= 1 << rng.random_range(0..8),
            1 => out[at] = rng.random(),
            2 => {
                out.remove(at);
            }
            3 => out.insert(at, rng.random()),
            4 => out.truncate(at),
            5 => {
                let s = SPLICES[rng.random_range(0..SPLICES.len())];
                let end = (at + rng.random_range(0..8)).min(out.len());
                out.splice(at..end, s.bytes());
            }
            6 => {
                // Repeat a slice: long strings, many keys, deep nesting.
                let end = (at + rng.random_range(1..32)).min(out.len());
                let piece = out[at..end].to_vec();
                for _ in 0..rng.random_range(1..64) {
                    out.splice(at..at, piece.iter().copied());
                }
            }
            _ => {
                let j = rng.random_range(0..out.len());
                out.swap(at, j);
            }
        }
    }
    out
}

async fn connect(url: &str) -> Option<Ws> {
    tokio_tungstenite::connect_async(url)
        .await
        .ok()
        .map(|c| c.0)
}

/// After a burst: does the connection still answer, or did the node close it? `false` only if
/// it neither answers nor closes (a hung connection).
async fn answers_or_closed(ws: &mut Ws, probe: Message, probe_u: &str) -> bool {
    if ws.send(probe).await.is_err() {
        return true;
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match tokio::time::timeout(left, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(Message::Text(t)))) if t.contains(probe_u) => return true,
            Ok(Some(Ok(Message::Binary(b)))) if String::from_utf8_lossy(&b).contains(probe_u) => {
                return true;
            }
            Ok(Some(Ok(_))) => {}
        }
    }
    false
}

fn echo_probe(u: &str) -> Message {
    let v = json!({"role": "rpc", "u": u, "cmds": [{"name": "e", "fun": "echo", "args": [u]}]});
    Message::Text(serde_json::to_string(&v).expect("json").into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutated_client_and_peer_frames_never_take_the_node_down() {
    let seed = env_or("MPREG_FUZZ_SEED", 1);
    let frames = env_or("MPREG_FUZZ_FRAMES", 3_000);
    let mut rng = StdRng::seed_from_u64(seed);
    let stderr = tempfile::NamedTempFile::new().expect("stderr file");
    let mut child = Command::new(support::BIN)
        .args(["server", "start", "--port", "0", "--node-id", "fuzz-node"])
        .args(["--plugin", &support::example_plugin("chaos")])
        .args(["--plugin", &support::example_plugin("math")])
        .args(["--plugin", &support::example_plugin("text")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(stderr.reopen().expect("stderr"))
        .spawn()
        .expect("spawn");
    let mut line = String::new();
    {
        use std::io::BufRead;
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("url");
    }
    let server = support::Server(child);
    let url = line.split_whitespace().last().expect("url").to_owned();
    let peer_url = format!("{url}{PEER_PATH}");
    let clients = client_corpus();
    let peers = peer_corpus();
    let hello = PeerFrame::Hello {
        node_id: "fuzzer".into(),
        cluster_id: "default".into(),
    }
    .encode()
    .expect("hello");
    let started = Instant::now();
    let (mut sent, mut rounds, mut peak) = (0u64, 0u64, 0u64);
    let burst = 50;
    while sent < frames {
        rounds += 1;
        let peer_round = rounds % 3 == 0;
        let target = if peer_round { &peer_url } else { &url };
        let Some(mut ws) = connect(target).await else {
            panic!("round {rounds}: the node refused a connection");
        };
        if peer_round {
            let first = if rng.random_range(0..10) == 0 {
                mutate(&mut rng, &hello)
            } else {
                hello.clone()
            };
            let _ = ws.send(Message::Binary(first.into())).await;
        }
        for _ in 0..burst {
            let corpus = if peer_round { &peers } else { &clients };
            let base = &corpus[rng.random_range(0..corpus.len())];
            let bytes = mutate(&mut rng, base);
            // Text frames must be UTF-8 on the wire; invalid bytes go as binary.
            let msg = match (peer_round, String::from_utf8(bytes)) {
                (false, Ok(text)) if rng.random_bool(0.5) => Message::Text(text.into()),
                (_, Ok(text)) => Message::Binary(text.into_bytes().into()),
                (_, Err(e)) => Message::Binary(e.into_bytes().into()),
            };
            sent += 1;
            if ws.send(msg).await.is_err() {
                break;
            }
        }
        if !peer_round {
            let u = format!("probe-{rounds}");
            assert!(
                answers_or_closed(&mut ws, echo_probe(&u), &u).await,
                "round {rounds} (seed {seed}): the connection neither answered nor closed"
            );
        }
        drop(ws);
        if rounds % 10 == 0 {
            let mut fresh = connect(&url).await.expect("a fresh client connects");
            let u = format!("fresh-{rounds}");
            fresh.send(echo_probe(&u)).await.expect("send");
            let reply = tokio::time::timeout(Duration::from_secs(10), fresh.next())
                .await
                .unwrap_or_else(|_| panic!("round {rounds} (seed {seed}): no echo"));
            assert!(matches!(reply, Some(Ok(_))), "round {rounds}: {reply:?}");
            peak = peak.max(server.rss_mib());
        }
    }
    peak = peak.max(server.rss_mib());
    let mut log = String::new();
    std::fs::File::open(stderr.path())
        .expect("stderr")
        .read_to_string(&mut log)
        .expect("read");
    assert!(!log.contains("panicked"), "seed {seed}: a panic:\n{log}");
    eprintln!(
        "fuzz: seed {seed}, {sent} frames in {rounds} rounds, {:?}, peak RSS {peak} MiB",
        started.elapsed()
    );
    assert!(peak < 1024, "peak RSS {peak} MiB");
    drop(server);
}
