//! The `mpreg` binary end to end: `server start --port 0` prints its URL, `call` and `request`
//! talk to it, SIGTERM stops it cleanly.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use support::{mpreg, mpreg_env, start};

#[test]
fn start_call_request_and_sigterm() {
    let (mut server, url) = start(&["--resources", "edge,ssd", "--cluster-id", "c1"]);
    let (ok, out, _) = mpreg(&["call", &url, "echo", "{\"a\": [1, 2]}"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("json"),
        serde_json::json!({"a": [1, 2]})
    );
    let (ok, out, _) = mpreg(&["call", &url, "echos", "1", "word", "--locs", "edge"]);
    assert!(ok, "{out}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).expect("json"),
        serde_json::json!([1, "word"])
    );
    let (ok, _, err) = mpreg(&["call", &url, "nope"]);
    assert!(!ok);
    assert!(err.contains("1001"), "{err}");
    let (ok, _, err) = mpreg(&["call", &url, "echo", "1", "--locs", "gpu"]);
    assert!(!ok && err.contains("1001"), "{err}");

    let file = std::env::temp_dir().join(format!("mpreg-req-{}.json", std::process::id()));
    std::fs::write(
        &file,
        r#"[{"name":"a","fun":"echo","args":["x"]},{"name":"b","fun":"echos","args":["a","a"]}]"#,
    )
    .expect("write");
    let (ok, out, _) = mpreg(&["request", &url, file.to_str().expect("path")]);
    assert!(ok, "{out}");
    let reply: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(reply["r"], serde_json::json!({"b": ["x", "x"]}));
    let _ = std::fs::remove_file(&file);

    server.terminate(Duration::from_secs(10));
}

#[test]
fn bad_flags_and_files_fail_with_a_message() {
    let (ok, out, _) = mpreg(&["--help"]);
    assert!(ok && out.contains("server") && out.contains("bench"));
    let (ok, _, err) = mpreg(&[
        "server",
        "start",
        "--port",
        "0",
        "--plugin",
        "/nonexistent.wasm",
    ]);
    assert!(
        !ok && err.contains("cannot read plugin /nonexistent.wasm"),
        "{err}"
    );
    let cfg = std::env::temp_dir().join(format!("mpreg-bad-{}.toml", std::process::id()));
    std::fs::write(&cfg, "[server]\nprot = 1\n").expect("write");
    let (ok, _, err) = mpreg(&["server", "start", "--config", cfg.to_str().expect("path")]);
    assert!(!ok && err.contains("prot"), "{err}");
    let _ = std::fs::remove_file(&cfg);
    let (ok, _, err) = mpreg(&["call", "ws://127.0.0.1:1", "echo", "1"]);
    assert!(!ok && err.contains("cannot connect"), "{err}");
}

/// `mpreg plugin new` → `build` → `publish` → `call` → `list` / `describe` → `retire`, with the
/// binary only, as a user would. The plugin's cargo build shares a target folder under
/// `plugins/target` so repeated runs do not rebuild its dependencies.
#[test]
fn plugin_new_build_publish_describe_retire() {
    let work = std::env::temp_dir().join(format!("mpreg-cli-plugin-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).expect("work dir");
    let project = work.join("hello-fn");
    let project_s = project.to_str().expect("path");
    let (ok, out, err) = mpreg(&[
        "plugin", "new", "hello-fn", "--lang", "rust", "--dir", project_s,
    ]);
    assert!(ok, "{out}{err}");
    let (ok, _, err) = mpreg(&["plugin", "new", "hello-fn", "--dir", project_s]);
    assert!(!ok && err.contains("already exists"), "{err}");
    let (ok, _, err) = mpreg(&["plugin", "new", "Bad_Name"]);
    assert!(
        !ok && err.contains("must start with a lowercase letter"),
        "{err}"
    );

    let shared_target = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/target/scaffold");
    let out = Command::new(support::BIN)
        .args(["plugin", "build", project_s])
        .env("CARGO_TARGET_DIR", shared_target)
        .output()
        .expect("run build");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(
        stdout.contains("hello_fn_add [hello-fn.add] func(a: s32, b: s32) -> result<s32, string>"),
        "{stdout}"
    );
    let wasm = project.join("hello-fn.wasm");

    let data = work.join("data");
    let token = "cli-test-token-0123456789";
    let (_server, url) = start(&[
        "--data-dir",
        data.to_str().expect("path"),
        "--admin-token",
        token,
    ]);
    let admin = |args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--node", &url, "--token", token]);
        mpreg(&all)
    };
    let (ok, out, err) = admin(&[
        "plugin",
        "publish",
        wasm.to_str().expect("path"),
        "--memory-mib",
        "32",
    ]);
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("published hello-fn 0.1.0"), "{out}");
    // A project folder is built (the same bytes again: the stamp makes the build reproducible).
    let out = Command::new(support::BIN)
        .args([
            "plugin", "publish", project_s, "--node", &url, "--token", token,
        ])
        .env("CARGO_TARGET_DIR", shared_target)
        .output()
        .expect("publish dir");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.starts_with("unchanged hello-fn 0.1.0"), "{stdout}");
    let (ok, out, _) = mpreg(&["call", &url, "hello_fn_add", "2", "3"]);
    assert!(ok && out.trim() == "5", "{out}");
    let (ok, out, err) = admin(&["plugin", "list"]);
    assert!(
        ok && out.contains("hello-fn") && out.contains("0.1.0"),
        "{out}{err}"
    );
    let (ok, out, err) = admin(&["plugin", "list", "--json"]);
    assert!(ok, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).expect("plugin list --json");
    assert!(listed.to_string().contains("hello-fn"), "{listed}");
    let (ok, out, _) = admin(&["plugin", "describe", "hello-fn"]);
    assert!(ok, "{out}");
    let d: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(d["limits"]["memory_limit_mib"], 32);
    assert_eq!(d["calls"], 1);
    let (ok, out, err) = mpreg(&[
        "plugin",
        "publish",
        wasm.to_str().expect("path"),
        "--node",
        &url,
        "--token",
        "wrong-token-000000000",
    ]);
    assert!(!ok && err.contains("wrong admin token"), "{err}");
    assert!(
        out.is_empty(),
        "a refused publish prints nothing on stdout: {out}"
    );
    // Other bytes under the version it already serves: refused, and never "published".
    let mut other = std::fs::read(&wasm).expect("wasm");
    other.extend_from_slice(&[0, 6, 3, b'p', b'a', b'd', b'x', b'y']);
    let other_path = work.join("other.wasm");
    std::fs::write(&other_path, &other).expect("write");
    let (ok, out, err) = admin(&["plugin", "publish", other_path.to_str().expect("path")]);
    assert!(!ok, "{out}");
    assert!(
        out.is_empty(),
        "a refused publish prints nothing on stdout: {out}"
    );
    assert!(
        err.contains("mpreg.toml"),
        "the refusal says where to bump it: {err}"
    );
    let (ok, out, _) = admin(&["plugin", "retire", "hello-fn", "0.1.0"]);
    assert!(ok && out.contains("drained: true"), "{out}");
    let (ok, _, err) = mpreg(&["call", &url, "hello_fn_add", "2", "3"]);
    assert!(!ok && err.contains("1001"), "{err}");
    let _ = std::fs::remove_dir_all(&work);
}

fn math_plugin() -> String {
    support::example_plugin("math")
}

/// Polls `mpreg call` until `check` accepts its outcome; returns how long that took.
fn call_until(
    args: &[&str],
    limit: Duration,
    check: impl Fn(bool, &str, &str) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        let mut all = vec!["call"];
        all.extend_from_slice(args);
        let (ok, out, err) = mpreg(&all);
        if check(ok, &out, &err) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "not within {limit:?}: {args:?} → {out} {err}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_sigkilled_node_process_leaves_the_cluster_and_calls_go_to_the_survivor() {
    let math = math_plugin();
    let (_a, url_a) = start(&["--node-id", "proc-a", "--plugin", &math]);
    let seed = url_a.trim_start_matches("ws://").to_owned();
    let (mut b, _url_b) = start(&[
        "--node-id",
        "proc-b",
        "--resources",
        "only-b",
        "--peers",
        &seed,
        "--plugin",
        &math,
    ]);
    // Formed: a call that only node b can serve works through node a.
    call_until(
        &[&url_a, "add", "2", "3", "--locs", "only-b"],
        Duration::from_secs(10),
        |ok, out, _| ok && out.trim() == "5",
    );
    let (ok, out, _) = mpreg(&["cluster", "status", &url_a]);
    assert!(
        ok && out.contains("proc-a") && out.contains("proc-b"),
        "{out}"
    );

    b.0.kill().expect("SIGKILL");
    let _ = b.0.wait();
    let t = Instant::now();
    // Its link dropped with the process: it is not routed to even before gossip gives up on it.
    let unrouted = call_until(
        &[&url_a, "add", "2", "3", "--locs", "only-b"],
        Duration::from_secs(10),
        |ok, _, err| !ok && err.contains("1001"),
    );
    assert!(
        unrouted < Duration::from_secs(2),
        "dead node still routed after {unrouted:?}"
    );
    let (ok, out, _) = mpreg(&["call", &url_a, "add", "2", "3"]);
    assert!(ok && out.trim() == "5", "the survivor serves: {out}");
    // The failure detector then drops it from the catalog.
    loop {
        let (ok, out, _) = mpreg(&["cluster", "status", &url_a]);
        assert!(ok, "{out}");
        if !out.contains("proc-b") {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(6), "still listed: {out}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Crash durability of queues: sends are acknowledged only once durable, acks likewise. A
/// consumer acks messages one by one while the node process is SIGKILLed; after a restart on
/// the same data directory every sent message that was not acknowledged is delivered again,
/// and no acknowledged one comes back.
#[test]
fn queue_messages_survive_sigkill_and_acked_ones_never_return() {
    use mpreg::client::Client;
    use serde_json::{Value, json};
    use std::collections::BTreeSet;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path").to_owned();
    let (mut node, url) = start(&["--data-dir", &data]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    const N: u64 = 400;
    let (acked, uncertain) = rt.block_on(async {
        let c = Client::connect(&url).await.expect("connect");
        c.call(
            "queue.create",
            vec![json!("crash"), json!({"visibility_timeout_ms": 600000})],
        )
        .await
        .expect("create");
        // Half one by one, half in batches: every send below was acknowledged.
        for i in 0..N / 2 {
            c.call("queue.send", vec![json!("crash"), json!(i)])
                .await
                .expect("send");
        }
        for chunk in (N / 2..N).collect::<Vec<_>>().chunks(50) {
            let batch: Vec<Value> = chunk.iter().map(|i| json!({"body": i})).collect();
            c.call("queue.send_batch", vec![json!("crash"), json!(batch)])
                .await
                .expect("batch");
        }
        // Consume: receive and ack one at a time, and kill the process part-way.
        let mut acked = BTreeSet::new();
        let mut uncertain = BTreeSet::new();
        let mut held = 0;
        loop {
            let got = c
                .call("queue.receive", vec![json!("crash"), json!({"max": 1})])
                .await
                .expect("receive");
            let d = &got[0];
            let body = d["body"].as_u64().expect("body");
            if acked.len() == 150 {
                // Killed while this ack may be in flight: it may or may not have happened.
                uncertain.insert(body);
                let ack = c.call("queue.ack", vec![json!("crash"), d["receipt"].clone()]);
                let (_, ()) = tokio::join!(ack, async {
                    node.0.kill().expect("SIGKILL");
                    let _ = node.0.wait();
                });
                break;
            }
            // Every tenth message is received and never acked: it must come back too.
            if body % 10 == 3 {
                held += 1;
                continue;
            }
            c.call("queue.ack", vec![json!("crash"), d["receipt"].clone()])
                .await
                .expect("ack");
            acked.insert(body);
        }
        assert!(held > 0);
        (acked, uncertain)
    });
    let (_node, url) = start(&["--data-dir", &data]);
    let returned: BTreeSet<u64> = rt.block_on(async {
        let c = Client::connect(&url).await.expect("reconnect");
        let mut seen = BTreeSet::new();
        loop {
            let got = c
                .call("queue.receive", vec![json!("crash"), json!({"max": 1000})])
                .await
                .expect("receive after restart");
            let Some(items) = got.as_array().filter(|a| !a.is_empty()) else {
                break;
            };
            for d in items {
                assert!(
                    seen.insert(d["body"].as_u64().expect("body")),
                    "delivered twice: {d}"
                );
            }
        }
        seen
    });
    for i in 0..N {
        if acked.contains(&i) {
            assert!(!returned.contains(&i), "acked message {i} came back");
        } else if !uncertain.contains(&i) {
            assert!(returned.contains(&i), "sent, unacked message {i} was lost");
        }
    }
    assert_eq!(
        returned.len() as u64 + acked.len() as u64 + uncertain.len() as u64
            - uncertain.intersection(&returned).count() as u64,
        N
    );
}

/// Crash durability of the cache: every `strong` put acknowledged before a SIGKILL is served
/// after the restart on the same data directory, with its TTL still counting; `mpreg cache
/// stats` shows what the restarted node holds.
#[test]
fn strong_cache_puts_survive_sigkill_with_their_ttls_and_cache_stats_shows_them() {
    use mpreg::client::Client;
    use serde_json::json;

    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().to_str().expect("path").to_owned();
    let (mut node, url) = start(&["--data-dir", &data]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    const N: u64 = 300;
    async fn put(
        c: &Client,
        i: u64,
        ttl: f64,
    ) -> Result<serde_json::Value, mpreg::client::ClientError> {
        let opts = json!({"consistency": "strong", "ttl_seconds": ttl});
        c.call(
            "cache.put",
            vec![
                json!("durable"),
                json!(format!("k{i}")),
                json!({"i": i}),
                opts,
            ],
        )
        .await
    }
    let short_until = rt.block_on(async {
        let c = Client::connect(&url).await.expect("connect");
        // Every tenth key lives 1.5 s; the others 10 minutes.
        for i in 0..N {
            let ttl = if i % 10 == 0 { 1.5 } else { 600.0 };
            put(&c, i, ttl).await.expect("strong put");
        }
        let short_until = Instant::now() + Duration::from_millis(1500);
        // Killed while one more put is in flight: it may or may not be there.
        let (_, ()) = tokio::join!(put(&c, N, 600.0), async {
            node.0.kill().expect("SIGKILL");
            let _ = node.0.wait();
        });
        short_until
    });
    let (_node, url) = start(&["--data-dir", &data]);
    rt.block_on(async {
        let c = Client::connect(&url).await.expect("reconnect");
        for i in (0..N).filter(|i| i % 10 != 0) {
            let e = c
                .call(
                    "cache.entry",
                    vec![json!("durable"), json!(format!("k{i}"))],
                )
                .await
                .expect("get after restart");
            assert_eq!(e["value"], json!({"i": i}), "k{i} lost");
            let ttl = e["ttl_seconds"].as_f64().expect("ttl");
            assert!(ttl > 0.0 && ttl <= 600.0, "k{i} ttl {ttl}");
        }
        tokio::time::sleep(short_until.saturating_duration_since(Instant::now())).await;
        for i in (0..N).step_by(10) {
            let v = c
                .call("cache.get", vec![json!("durable"), json!(format!("k{i}"))])
                .await
                .expect("get");
            assert!(v.is_null(), "k{i} outlived its TTL: {v}");
        }
    });
    let (ok, out, err) = mpreg(&["cache", "stats", &url]);
    assert!(ok, "{err}");
    let row = out
        .lines()
        .find(|l| l.starts_with("durable "))
        .unwrap_or_else(|| panic!("no durable row: {out}"));
    let served: u64 = row
        .split_whitespace()
        .nth(3)
        .and_then(|h| h.parse().ok())
        .expect("hits column");
    assert!(served >= 270, "{row}");
    let (ok, out, _) = mpreg(&["cache", "stats", &url, "--json"]);
    assert!(ok && out.contains("\"l2\""), "{out}");
    let (ok, _, err) = mpreg(&["cache", "stats", "not a url"]);
    assert!(!ok && !err.is_empty());
}

/// Each failed call writes one log line with the request id, command, function@version, node,
/// code, kind and duration, in both `--log-format`s; text has no colour codes when written to
/// a file.
/// A node started with `--log-format format` and `extra`, its log written to a file.
fn start_logged(
    format: &str,
    extra: &[&str],
) -> (support::Server, String, tempfile::NamedTempFile) {
    use std::io::Read;
    use std::process::Stdio;
    let log = tempfile::NamedTempFile::new().expect("log file");
    let mut child = Command::new(support::BIN)
        .args(["--log-format", format, "server", "start", "--port", "0"])
        .args(extra)
        .env_remove("RUST_LOG")
        .stdout(Stdio::piped())
        .stderr(log.reopen().expect("log"))
        .spawn()
        .expect("spawn mpreg");
    let mut out = child.stdout.take().expect("stdout");
    let mut first = [0u8; 256];
    let n = out.read(&mut first).expect("first line");
    let line = String::from_utf8_lossy(&first[..n]).to_string();
    let url = line.split_whitespace().nth(5).expect("url").to_owned();
    (support::Server(child), url, log)
}

#[test]
fn a_failed_call_writes_one_log_line_in_either_format() {
    let chaos = support::example_plugin("chaos");
    for format in ["json", "text"] {
        let (server, url, log) = start_logged(format, &["--node-id", "logger", "--plugin", &chaos]);
        // A trap, an unknown function, a built-in with the wrong arguments; then a success.
        assert!(!mpreg(&["call", &url, "trap"]).0);
        assert!(!mpreg(&["call", &url, "no_such_function"]).0);
        assert!(!mpreg(&["call", &url, "echo", "1", "2"]).0);
        assert!(mpreg(&["call", &url, "echo", "1"]).0);
        // A request refused before any command runs: its own line.
        let bad = tempfile::NamedTempFile::new().expect("request file");
        std::fs::write(
            bad.path(),
            r#"{"u": "refused-1", "cmds": [{"name": "e", "fun": "echo", "args": [1]},
                {"name": "f", "fun": "echo", "args": [2]}],
                "intermediate_result_callback_topic": "not.a.*.topic"}"#,
        )
        .expect("write request");
        let path = bad.path().to_str().expect("path");
        assert!(!mpreg(&["request", &url, path]).0);
        drop(server);
        let text = std::fs::read_to_string(log.path()).expect("read log");
        let failed: Vec<&str> = text.lines().filter(|l| l.contains("call failed")).collect();
        assert_eq!(failed.len(), 3, "{format}: {text}");
        let refused: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("request refused"))
            .collect();
        assert_eq!(refused.len(), 1, "{format}: {text}");
        assert!(
            refused[0].contains("refused-1") && refused[0].contains("1005"),
            "{}",
            refused[0]
        );
        assert!(!text.contains('\u{1b}'), "colour codes in a file: {text}");
        let want = [
            ("trap@", 1003, "failed"),
            ("no_such_function", 1001, "not_found"),
            ("echo", 1003, "failed"),
        ];
        for (line, (function, code, kind)) in failed.iter().zip(want) {
            if format == "json" {
                let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
                assert!(
                    v["function"]
                        .as_str()
                        .is_some_and(|f| f.starts_with(function)),
                    "{v}"
                );
                assert_eq!(
                    (v["code"].as_i64(), v["kind"].as_str()),
                    (Some(code), Some(kind)),
                    "{v}"
                );
                assert_eq!(v["node"], "logger", "{v}");
                assert!(!v["request_id"].as_str().unwrap_or("").is_empty(), "{v}");
                assert!(
                    v["command"].is_string() && v["duration_ms"].is_number(),
                    "{v}"
                );
                assert_eq!(v["level"], "WARN", "{v}");
            } else {
                for field in [
                    format!("function=\"{function}"),
                    format!("code={code}"),
                    format!("kind=\"{kind}\""),
                    "node=\"logger\"".to_owned(),
                    "request_id=".to_owned(),
                    "duration_ms=".to_owned(),
                ] {
                    assert!(line.contains(&field), "{field} not in {line}");
                }
            }
        }
    }
}

#[test]
fn metrics_top_and_monitor_read_a_running_node() {
    let (mut server, url) = start(&["--node-id", "watched", "--region", "eu"]);
    for i in 0..3 {
        assert!(mpreg(&["call", &url, "echo", &i.to_string()]).0);
    }
    assert!(!mpreg(&["call", &url, "nope"]).0);
    let (ok, out, err) = mpreg(&["metrics", &url, "--grep", "mpreg_requests_total"]);
    assert!(ok, "{err}");
    assert!(
        out.contains(r#"mpreg_requests_total{role="rpc",outcome="ok"} 3"#),
        "{out}"
    );
    assert!(out.contains(r#"mpreg_requests_total{role="rpc",outcome="error"} 1"#));
    let (ok, out, _) = mpreg(&["metrics", &url, "--openmetrics"]);
    assert!(ok && out.ends_with("# EOF\n"));

    // The port alone names a node on this machine.
    let port = url.rsplit(':').next().expect("port").to_owned();
    let (ok, out, err) = mpreg(&["top", &format!(":{port}"), "--once"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("MPREG watched"), "{out}");
    assert!(out.contains("echo@") && out.contains("FUNCTION"), "{out}");
    assert!(
        !out.contains('\u{1b}'),
        "no screen codes when not a terminal"
    );

    let (ok, out, _) = mpreg(&["monitor", "varz", &url]);
    assert!(ok);
    let varz: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(
        (varz["node_id"].as_str(), varz["region"].as_str()),
        (Some("watched"), Some("eu"))
    );
    let (ok, out, _) = mpreg(&["monitor", "funcz", &url, "--limit", "1"]);
    assert!(ok);
    let funcz: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(funcz["limit"], 1);

    let (ok, _, err) = mpreg(&["monitor", "nope", &url]);
    assert!(
        !ok && err.contains("HTTP 404") && err.contains("/monitor/varz"),
        "{err}"
    );
    let (ok, _, err) = mpreg(&["top", "nonsense", "--once"]);
    assert!(!ok && err.contains("ws://host:port"), "{err}");
    let (ok, _, err) = mpreg(&["top", &url, "--interval", "0"]);
    assert!(!ok && err.contains("--interval"), "{err}");
    server.terminate(Duration::from_secs(10));
}

#[test]
fn the_access_log_writes_one_line_per_request_when_asked() {
    let (server, url, log) = start_logged("json", &["--node-id", "door", "--access-log"]);
    assert!(mpreg(&["call", &url, "echo", "1"]).0);
    assert!(!mpreg(&["call", &url, "nope"]).0);
    drop(server);
    let text = std::fs::read_to_string(log.path()).expect("read log");
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "mpreg::access")
        .collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert_eq!(
        (lines[0]["outcome"].as_str(), lines[0]["code"].as_i64()),
        (Some("ok"), Some(0))
    );
    assert_eq!(
        (lines[1]["outcome"].as_str(), lines[1]["code"].as_i64()),
        (Some("error"), Some(1001))
    );
    for l in &lines {
        assert!(
            l["remote"]
                .as_str()
                .is_some_and(|r| r.starts_with("127.0.0.1:")),
            "{l}"
        );
        assert!(l["frame_bytes"].as_u64().is_some_and(|b| b > 20), "{l}");
        assert_eq!(l["commands"], 1, "{l}");
        assert!(!l["request_id"].as_str().unwrap_or("").is_empty(), "{l}");
    }
}

#[test]
fn auth_keys_are_made_listed_and_revoked_and_a_node_requires_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = dir.path().join("keys.toml");
    let keys = keys.to_str().expect("path");
    let (ok, key, err) = mpreg(&["auth", "key", "new", "--keys-file", keys, "--name", "ci"]);
    assert!(ok, "{err}");
    let key = key.trim().to_owned();
    assert!(key.starts_with("mpreg_"), "{key}");
    let stored = std::fs::read_to_string(dir.path().join("keys.toml")).expect("keys file");
    assert!(!stored.contains(&key), "only the hash is stored");
    let (_, list, _) = mpreg(&["auth", "key", "list", "--keys-file", keys, "--json"]);
    let list: serde_json::Value = serde_json::from_str(&list).expect("json");
    assert_eq!(list[0]["name"], "ci");

    let (mut server, url) = start(&["--auth-keys", keys]);
    let (ok, _, err) = mpreg(&["call", &url, "echo", "1"]);
    assert!(!ok && err.contains("401"), "no key: {err}");
    let (ok, out, err) = mpreg_env(&["call", &url, "echo", "1"], &[("MPREG_API_KEY", &key)]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "1");
    let (ok, out, _) = mpreg(&["auth", "key", "revoke", "--keys-file", keys, "ci"]);
    assert!(ok && out.contains("revoked 1"), "{out}");
    // The node re-reads the file: the revoked key no longer opens a connection.
    let (ok, _, err) = mpreg_env(&["call", &url, "echo", "1"], &[("MPREG_API_KEY", &key)]);
    assert!(!ok && err.contains("401"), "revoked: {err}");
    server.terminate(Duration::from_secs(10));

    let secret = dir.path().join("secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").expect("secret");
    let secret = secret.to_str().expect("path");
    let (ok, token, err) = mpreg(&["auth", "token", "--sub", "ci", "--key-file", secret]);
    assert!(ok, "{err}");
    assert_eq!(token.trim().split('.').count(), 3, "{token}");
    let (ok, _, err) = mpreg(&["auth", "token", "--sub", "ci"]);
    assert!(!ok && err.contains("--key-file"), "{err}");
}

#[test]
fn run_and_plugin_test_execute_a_component_without_a_node() {
    let math = support::example_plugin("math");
    let (ok, out, err) = mpreg(&["run", &math, "add", "2", "3"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "5");
    let (ok, _, err) = mpreg(&["run", &math, "nope"]);
    assert!(!ok && err.contains("it has: add, mul"), "{err}");
    let (ok, _, err) = mpreg(&["run", &math, "add", "2", "x"]);
    assert!(!ok && err.contains("bad_arguments"), "{err}");

    let dir = tempfile::tempdir().expect("tempdir");
    let cases = dir.path().join("cases.toml");
    std::fs::write(
        &cases,
        "[[case]]\ncall = \"add\"\nargs = [2, 3]\nexpect = 5\n\n\
         [[case]]\nname = \"bad type\"\ncall = \"add\"\nargs = [2, \"x\"]\nexpect_error = \"expected s32\"\n",
    )
    .expect("write");
    let cases = cases.to_str().expect("path");
    let (ok, out, err) = mpreg(&["plugin", "test", &math, cases]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("2 passed, 0 failed"), "{out}");
    let (ok, out, err) = mpreg(&["plugin", "test", &math, cases, "--json"]);
    assert!(ok, "{out}{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("plugin test --json");
    assert_eq!(
        (report["passed"].as_u64(), report["failed"].as_u64()),
        (Some(2), Some(0))
    );
    let wrong = dir.path().join("wrong.json");
    std::fs::write(&wrong, r#"[{"call": "add", "args": [1, 1], "expect": 3}]"#).expect("write");
    let (ok, out, _) = mpreg(&["plugin", "test", &math, wrong.to_str().expect("path")]);
    assert!(!ok, "a failed case fails the command");
    assert!(out.contains("FAILED add: expected 3, got 2"), "{out}");
}

/// Lines of a child's pipe, read on a thread, for waiting on one with a deadline.
fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines until one contains `want` (panics with what was seen after `limit`).
fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    want: &str,
    limit: Duration,
    seen: &mut Vec<String>,
) -> String {
    let until = Instant::now() + limit;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => {
                seen.push(line.clone());
                if line.contains(want) {
                    return line;
                }
            }
            Err(_) => panic!(
                "no line with '{want}' within {limit:?}; saw:\n{}",
                seen.join("\n")
            ),
        }
    }
}

/// The dev loop of a Rust project, through the binary only: new → dev serving → edit →
/// serving the edit (same version, replaced in place) → a compile error shown and survived →
/// fixed; the plugin's log line tagged with function and request.
#[test]
fn dev_loop_serves_a_rust_project_and_every_edit() {
    let work = tempfile::tempdir().expect("work dir");
    let home = work.path().join("home");
    let project = work.path().join("dev-fn");
    let project_s = project.to_str().expect("path");
    let env = [
        ("XDG_DATA_HOME", home.join("data")),
        ("XDG_CACHE_HOME", home.join("cache")),
    ];
    let env_s: Vec<(&str, &str)> = env
        .iter()
        .map(|(k, v)| (*k, v.to_str().expect("path")))
        .collect();
    let (ok, out, err) = mpreg_env(&["plugin", "new", "dev-fn", "--dir", project_s], &env_s);
    assert!(ok && out.contains("mpreg dev"), "{out}{err}");
    let manifest = std::fs::read_to_string(project.join("mpreg.toml")).expect("mpreg.toml");
    assert!(manifest.contains("version = \"0.1.0\""), "{manifest}");
    // The SDK came from the binary, not from this checkout.
    let cargo = std::fs::read_to_string(project.join("Cargo.toml")).expect("Cargo.toml");
    assert!(cargo.contains(home.to_str().expect("path")), "{cargo}");

    let shared_target = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/target/scaffold");
    let mut child = Command::new(support::BIN)
        .args(["dev", project_s, "--listen", "127.0.0.1:0"])
        .envs(env_s.iter().copied())
        .env("CARGO_TARGET_DIR", shared_target)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mpreg dev");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    let mut dev = support::Server(child);
    let mut seen = Vec::new();
    let first = wait_line(
        &out,
        "mpreg dev: dev-fn",
        Duration::from_secs(30),
        &mut seen,
    );
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("url")
        .to_owned();
    wait_line(
        &out,
        "serving dev-fn 0.1.0",
        Duration::from_secs(300),
        &mut seen,
    );
    let call_line = wait_line(&out, "mpreg call", Duration::from_secs(5), &mut seen);
    assert!(call_line.contains(&url), "{call_line}");
    let (ok, got, e) = mpreg(&["call", &url, "dev_fn_hello", "ada"]);
    assert!(
        ok && got.trim() == "\"hello, ada, from dev-fn\"",
        "{got}{e}"
    );
    let mut logs = Vec::new();
    let tagged = wait_line(&err, "greeting ada", Duration::from_secs(10), &mut logs);
    assert!(tagged.starts_with("[dev_fn_hello "), "{tagged}");

    // An edit is served under the same version.
    let lib = project.join("src/lib.rs");
    let source = std::fs::read_to_string(&lib).expect("lib.rs");
    std::fs::write(&lib, source.replace("hello, {name}", "hi {name}")).expect("edit");
    wait_line(
        &out,
        "serving dev-fn 0.1.0",
        Duration::from_secs(120),
        &mut seen,
    );
    let (ok, got, e) = mpreg(&["call", &url, "dev_fn_hello", "ada"]);
    assert!(ok && got.trim() == "\"hi ada, from dev-fn\"", "{got}{e}");

    // A compile error: the compiler's message, the loop keeps watching, the old code serves.
    std::fs::write(&lib, source.replace("checked_add(b)", "checked_add(b, c)")).expect("break");
    wait_line(&out, "build failed", Duration::from_secs(120), &mut seen);
    let line = wait_line(
        &out,
        "waiting for a change",
        Duration::from_secs(5),
        &mut seen,
    );
    assert!(!line.contains("rustup target"), "{line}");
    wait_line(&err, "error[E", Duration::from_secs(5), &mut logs);
    let (ok, got, _) = mpreg(&["call", &url, "dev_fn_hello", "ada"]);
    assert!(ok && got.contains("hi ada"), "{got}");
    std::fs::write(&lib, &source).expect("fix");
    wait_line(
        &out,
        "serving dev-fn 0.1.0",
        Duration::from_secs(120),
        &mut seen,
    );
    let (ok, got, _) = mpreg(&["call", &url, "dev_fn_add", "2", "3"]);
    assert!(ok && got.trim() == "5", "{got}");
    dev.terminate(Duration::from_secs(10));
}

/// Every command takes `ws://host:port`, `host:port` and `:port`; a wrong one is answered with
/// the accepted forms.
#[test]
fn every_command_takes_the_same_url_forms() {
    let (mut server, url) = start(&["--admin-token", "url-forms-token-0123456"]);
    let port = url.rsplit(':').next().expect("port").to_owned();
    for form in [url.clone(), format!("127.0.0.1:{port}"), format!(":{port}")] {
        let (ok, out, err) = mpreg(&["call", &form, "echo", "1"]);
        assert!(ok && out.trim() == "1", "{form}: {out}{err}");
        let (ok, out, err) = mpreg(&[
            "plugin",
            "list",
            "--node",
            &form,
            "--token",
            "url-forms-token-0123456",
        ]);
        assert!(ok && out.contains("name"), "{form}: {out}{err}");
        let (ok, out, err) = mpreg(&["metrics", &form, "--grep", "mpreg_build_info"]);
        assert!(ok, "{form}: {out}{err}");
    }
    for bad in ["127.0.0.1", "gopher://h:1", "h:port"] {
        let (ok, _, err) = mpreg(&["call", bad, "echo", "1"]);
        assert!(!ok && err.contains("host:port or :port"), "{bad}: {err}");
    }
    server.terminate(Duration::from_secs(10));
}

/// The toolchains `plugins/build_support.rs` installs (componentize-py, componentize-js),
/// prepended to `PATH` for the binary.
fn tool_path() -> String {
    let tools = concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/target/tools");
    let py = format!("{tools}/python-venv/bin");
    let js = format!("{tools}/js/node_modules/.bin");
    assert!(
        std::path::Path::new(&py).join("componentize-py").is_file(),
        "componentize-py missing under {py}: build the plugins first (cargo build -p mpreg-tests)"
    );
    format!("{py}:{js}:{}", std::env::var("PATH").unwrap_or_default())
}

/// `mpreg dev` of a typed project: new → serving → the template's `hello` → `edited` written
/// → serving again → `check` the edit over `mpreg call` → a source whose build must fail (its
/// message has `broken_says`) → still serving the edit → `run` and `plugin test` on the
/// component it built.
fn typed_dev_loop(
    lang: &str,
    helper: (&str, &str),
    source_file: &str,
    edited: &str,
    calls: &[(&[&str], &str)],
    broken: &str,
    broken_says: &str,
) {
    let work = tempfile::tempdir().expect("work dir");
    let home = work.path().join("home");
    let name = format!("typed-{lang}");
    let project = work.path().join(&name);
    let project_s = project.to_str().expect("path");
    let path = tool_path();
    let env = [
        ("XDG_DATA_HOME", home.join("data").display().to_string()),
        ("XDG_CACHE_HOME", home.join("cache").display().to_string()),
        ("PATH", path),
    ];
    let env_s: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, out, err) = mpreg_env(
        &["plugin", "new", &name, "--lang", lang, "--dir", project_s],
        &env_s,
    );
    assert!(ok, "{out}{err}");
    assert!(!project.join("wit").exists(), "a typed project has no WIT");
    // A module of the project's own, imported by the edit.
    std::fs::write(project.join(helper.0), helper.1).expect("helper module");

    let mut child = Command::new(support::BIN)
        .args(["dev", project_s, "--listen", "127.0.0.1:0"])
        .envs(env_s.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn mpreg dev");
    let out = lines_of(child.stdout.take().expect("stdout"));
    let err = lines_of(child.stderr.take().expect("stderr"));
    let mut dev = support::Server(child);
    let mut seen = Vec::new();
    let first = wait_line(&out, "mpreg dev:", Duration::from_secs(30), &mut seen);
    let url = first
        .split_whitespace()
        .find(|w| w.starts_with("ws://"))
        .expect("url")
        .to_owned();
    let serving = format!("serving {name} 0.1.0");
    wait_line(&out, &serving, Duration::from_secs(400), &mut seen);
    let (ok, got, e) = mpreg(&["call", &url, "hello", "ada"]);
    assert!(
        ok && got.trim() == format!("\"hello, ada, from {name}\""),
        "{got}{e}"
    );
    let mut logs = Vec::new();
    let tagged = wait_line(&err, "greeting ada", Duration::from_secs(10), &mut logs);
    assert!(tagged.starts_with("[hello "), "{tagged}");

    // Saved as many editors do, a new file renamed over the old one (twice: the second save
    // must be seen too).
    let source = project.join(source_file);
    let save = |text: &str| {
        let tmp = project.join(format!(".{source_file}.swp"));
        std::fs::write(&tmp, text).expect("write");
        std::fs::rename(&tmp, &source).expect("rename");
    };
    save(edited);
    wait_line(&out, &serving, Duration::from_secs(400), &mut seen);
    for (args, want) in calls {
        let mut full = vec!["call", url.as_str()];
        full.extend_from_slice(args);
        let (ok, got, e) = mpreg(&full);
        let got: serde_json::Value = serde_json::from_str(got.trim())
            .unwrap_or_else(|_| panic!("{args:?}: not JSON: {got}{e}"));
        let want: serde_json::Value = serde_json::from_str(want).expect("expected JSON");
        assert!(ok && got == want, "{args:?}: {got} != {want} {e}");
    }

    // A build that cannot succeed: the reason (in the build error on stdout, or the
    // toolchain's report on stderr), and the loop keeps the edit serving.
    save(broken);
    let mark = seen.len();
    wait_line(&out, "build failed", Duration::from_secs(300), &mut seen);
    wait_line(
        &out,
        "waiting for a change",
        Duration::from_secs(10),
        &mut seen,
    );
    if !seen[mark..].iter().any(|l| l.contains(broken_says)) {
        wait_line(&err, broken_says, Duration::from_secs(10), &mut logs);
    }
    let (args, want) = calls[0];
    let want: serde_json::Value = serde_json::from_str(want).expect("expected JSON");
    let mut full = vec!["call", url.as_str()];
    full.extend_from_slice(args);
    let (ok, got, _) = mpreg(&full);
    assert!(ok, "{got}");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(got.trim()).ok(),
        Some(want.clone())
    );
    dev.terminate(Duration::from_secs(10));

    // The component it built runs without a node, with the same JSON.
    let wasm = project.join(format!("{name}.wasm"));
    let wasm_s = wasm.to_str().expect("path");
    let mut run = vec!["run", wasm_s];
    run.extend_from_slice(args);
    let (ok, got, e) = mpreg_env(&run, &env_s);
    assert!(ok, "{e}");
    let got: serde_json::Value = serde_json::from_str(got.trim()).expect("run prints JSON");
    assert_eq!(got, want);
    let cases = work.path().join("cases.json");
    let case_list: Vec<serde_json::Value> = calls
        .iter()
        .map(|(args, want)| {
            let parsed: Vec<serde_json::Value> = args[1..]
                .iter()
                .map(|a| serde_json::from_str(a).unwrap_or_else(|_| serde_json::json!(a)))
                .collect();
            serde_json::json!({"call": args[0], "args": parsed,
                "expect": serde_json::from_str::<serde_json::Value>(want).expect("json")})
        })
        .collect();
    std::fs::write(&cases, serde_json::to_string(&case_list).expect("json")).expect("write");
    let (ok, got, e) = mpreg_env(
        &["plugin", "test", wasm_s, cases.to_str().expect("path")],
        &env_s,
    );
    assert!(ok, "{got}{e}");
    assert!(
        got.contains(&format!("{} passed, 0 failed", calls.len())),
        "{got}"
    );
}

/// Typed Python through the binary: no WIT in the project; a dataclass with an `Optional` and
/// a list, a dict, `heapq` and a module of the project imported lazily inside functions; a
/// lazily imported module that does not exist fails the build naming it and the line.
#[test]
fn dev_loop_serves_typed_python_without_wit() {
    typed_dev_loop(
        "python",
        (
            "helpers.py",
            "def words(text: str) -> list[str]:\n    return text.split()\n",
        ),
        "app.py",
        r#"from dataclasses import dataclass
from typing import Optional


@dataclass
class Summary:
    count: int
    smallest: list[int]
    label: Optional[str]


def hello(name: str) -> str:
    return f"hi {name}"


def summarize(xs: list[int], k: int, label: Optional[str]) -> Summary:
    """The k smallest of xs."""
    import heapq

    return Summary(count=len(xs), smallest=heapq.nsmallest(k, xs), label=label)


def word_count(text: str) -> dict[str, int]:
    from helpers import words

    out: dict[str, int] = {}
    for w in words(text):
        out[w] = out.get(w, 0) + 1
    return out
"#,
        &[
            (
                &["summarize", "[5,1,3]", "2", "null"],
                r#"{"count": 3, "smallest": [1, 3], "label": null}"#,
            ),
            (&["word_count", "a b a"], r#"{"a": 2, "b": 1}"#),
            (&["hello", "ada"], r#""hi ada""#),
        ],
        "def hello(name: str) -> str:\n    import no_such_module_xyz\n\n    return name\n",
        "no_such_module_xyz (imported at app.py:2)",
    );
}

/// Typed JavaScript through the binary: JSDoc types only; a typedef record with an optional
/// field and a list, a map; a function without JSDoc fails the build naming it.
#[test]
fn dev_loop_serves_typed_javascript_without_wit() {
    typed_dev_loop(
        "js",
        (
            "helpers.js",
            "export function words(text) {\n  return text.split(/\\s+/).filter(Boolean);\n}\n",
        ),
        "app.js",
        r#"import { words } from "./helpers.js";

/**
 * @typedef {Object} Summary
 * @property {number} count
 * @property {number[]} smallest
 * @property {?string} label
 */

/**
 * @param {string} name
 * @returns {string}
 */
export function hello(name) {
  return `hi ${name}`;
}

/**
 * The k smallest of xs.
 * @param {number[]} xs
 * @param {number} k
 * @param {?string} label
 * @returns {Summary}
 */
export function summarize(xs, k, label) {
  const smallest = [...xs].sort((a, b) => a - b).slice(0, k);
  return { count: xs.length, smallest, label };
}

/**
 * @param {string} text
 * @returns {Object<string, number>}
 */
export function wordCount(text) {
  const out = {};
  for (const w of words(text)) out[w] = (out[w] ?? 0) + 1;
  return out;
}
"#,
        &[
            (
                &["summarize", "[5,1,3]", "2", "null"],
                r#"{"count": 3, "smallest": [1, 3], "label": null}"#,
            ),
            (&["wordCount", "a b a"], r#"{"a": 2, "b": 1}"#),
            (&["hello", "ada"], r#""hi ada""#),
        ],
        "export function hello(name) {\n  return name;\n}\n",
        "hello needs a JSDoc comment",
    );
}

/// `mpreg doctor` names what is missing and how to install it, exits 1 for a language whose
/// toolchain is missing, 0 when it is all there, and prints JSON when asked.
#[test]
fn doctor_says_what_is_missing_and_how_to_install_it() {
    let empty = tempfile::tempdir().expect("tempdir");
    let nothing = empty.path().to_str().expect("path");
    let (ok, out, _) = mpreg_env(&["doctor", nothing], &[("PATH", nothing)]);
    assert!(!ok, "nothing is installed: {out}");
    for want in [
        "MISS rust   cargo",
        "fix: rustup target add wasm32-wasip2",
        "fix: pip install componentize-py==0.25.0",
    ] {
        assert!(out.contains(want), "{want} missing from:\n{out}");
    }
    let path = tool_path();
    let (ok, out, err) = mpreg_env(
        &["doctor", nothing, "--lang", "python", "--json"],
        &[("PATH", &path)],
    );
    assert!(ok, "componentize-py is there: {out}{err}");
    let checks: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
    let py = checks
        .iter()
        .find(|c| c["what"] == "componentize-py")
        .expect("componentize-py check");
    assert_eq!(py["ok"], true, "{py}");
    assert!(
        py["found"].as_str().is_some_and(|f| f.contains("0.25.0")),
        "{py}"
    );
}
