//! What an operator watches: `/metrics` after known traffic (calls, errors by code, traps,
//! forwarded calls, queue depth), the JSON monitoring endpoints, and the dashboard in a real
//! headless Chromium (docs/observability.md).

use std::time::Duration;

use anyhow::{Context, Result};
use mpreg::protocol::RpcCommand;
use mpreg_tests::{
    TestCluster, TestNode, browser, cluster_config, http_get, http_json, sample, scrape,
};
use serde_json::{Value, json};

fn on(fun: &str, args: Vec<Value>, locs: &[&str]) -> RpcCommand {
    let mut c = RpcCommand::new(fun, fun, args);
    c.locs = locs.iter().map(|s| s.to_string()).collect();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_errors_traps_forwards_and_queue_depth() -> Result<()> {
    let cluster = TestCluster::start(vec![
        cluster_config("front", &[], &[], &[]),
        cluster_config("worker", &["w"], &["math", "chaos"], &[]),
    ])
    .await?;
    let (front, worker) = (cluster.node(0), cluster.node(1));
    let client = front.client().await?;
    for i in 0..5 {
        assert_eq!(client.call("echo", vec![json!(i)]).await?, json!(i));
    }
    // Three calls forwarded to the worker, one trap there, one unknown function here.
    for _ in 0..3 {
        let r = client
            .call_command(on("add", vec![json!(2), json!(3)], &["w"]))
            .await?;
        assert_eq!(r, json!(5));
    }
    assert!(
        client
            .call_command(on("trap", vec![], &["w"]))
            .await
            .is_err()
    );
    assert!(client.call("no_such_function", vec![]).await.is_err());
    client.call("queue.create", vec![json!("jobs")]).await?;
    for n in 0..4 {
        client
            .call("queue.send", vec![json!("jobs"), json!({"n": n})])
            .await?;
    }

    let f = scrape(&front.url).await?;
    let ok_echo = [("function", "echo"), ("outcome", "ok")];
    assert_eq!(sample(&f, "mpreg_commands_total", &ok_echo), 5.0);
    assert_eq!(
        sample(
            &f,
            "mpreg_commands_total",
            &[("function", ""), ("code", "1001")]
        ),
        1.0,
        "the unknown function, counted without its name"
    );
    assert_eq!(
        sample(&f, "mpreg_call_duration_seconds", &[("function", "echo")]),
        5.0
    );
    assert_eq!(
        sample(&f, "mpreg_forwarded_calls_total", &[]),
        4.0,
        "3 adds and the trap"
    );
    assert_eq!(
        sample(
            &f,
            "mpreg_requests_total",
            &[("role", "rpc"), ("outcome", "ok")]
        ),
        13.0
    );
    assert_eq!(
        sample(
            &f,
            "mpreg_requests_total",
            &[("role", "rpc"), ("outcome", "error")]
        ),
        2.0
    );
    // The queue lives on one node (its owner): its depth is there.
    let depth = |s: &prometheus_parse::Scrape| sample(s, "mpreg_queue_depth", &[("queue", "jobs")]);
    let w = scrape(&worker.url).await?;
    assert_eq!(depth(&f) + depth(&w), 4.0);
    assert_eq!(
        sample(&f, "mpreg_cluster_members", &[("state", "live")]),
        2.0
    );
    assert_eq!(sample(&f, "mpreg_peer_link_up", &[("peer", "worker")]), 1.0);
    assert_eq!(
        sample(
            &f,
            "mpreg_peer_call_round_trip_seconds",
            &[("peer", "worker")]
        ),
        4.0
    );

    let add = [("function", "add"), ("version", "1.0.0")];
    assert_eq!(
        sample(
            &w,
            "mpreg_commands_total",
            &[add[0], add[1], ("outcome", "ok")]
        ),
        3.0
    );
    assert_eq!(
        sample(
            &w,
            "mpreg_commands_total",
            &[("function", "trap"), ("code", "1003")]
        ),
        1.0
    );
    assert_eq!(
        sample(&w, "mpreg_plugin_failures_total", &[("kind", "trap")]),
        1.0
    );
    assert_eq!(sample(&w, "mpreg_forwarded_calls_received_total", &[]), 4.0);
    for phase in ["queue_wait", "instantiate", "run"] {
        let name = format!("mpreg_call_{phase}_seconds");
        assert_eq!(sample(&w, &name, &add), 3.0, "{name}");
    }
    assert!(sample(&w, "mpreg_instantiations_total", &[]) >= 4.0);
    assert_eq!(
        sample(&w, "mpreg_plugin_versions_active", &[("plugin", "math")]),
        1.0
    );
    assert!(sample(&w, "mpreg_process_resident_memory_bytes", &[]) > 0.0);
    assert_eq!(sample(&w, "mpreg_build_info", &[]), 1.0);

    // Every metric the Grafana dashboard in docs/ queries is exported.
    let text = format!(
        "{}{}",
        http_get(&front.url, "/metrics", None).await?,
        http_get(&worker.url, "/metrics", None).await?
    );
    let dashboard = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../docs/grafana-dashboard.json"
    ))?;
    let mut missing = Vec::new();
    for (at, _) in dashboard.match_indices("mpreg_") {
        let name: String = dashboard[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let family = name.trim_end_matches("_bucket");
        if !text.contains(&format!("# TYPE {family} ")) {
            missing.push(name);
        }
    }
    assert!(
        missing.is_empty(),
        "the dashboard queries metrics no node exports: {missing:?}"
    );

    // OpenMetrics when asked: same families, `# EOF` at the end.
    let om = http_get(
        &front.url,
        "/metrics",
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .await?;
    assert!(om.ends_with("# EOF\n"));
    assert!(om.contains("# TYPE mpreg_commands counter"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retired_version_leaves_the_exposition_and_disabled_metrics_record_nothing() -> Result<()>
{
    let node = TestNode::with_config(cluster_config("solo", &[], &["math"], &[])).await?;
    let client = node.client().await?;
    client.call("add", vec![json!(1), json!(1)]).await?;
    let s = scrape(&node.url).await?;
    assert_eq!(
        sample(
            &s,
            "mpreg_commands_total",
            &[("function", "add"), ("outcome", "ok")]
        ),
        1.0
    );
    node.handle.plugins().retire("math", "1.0.0").await?;
    let text = http_get(&node.url, "/metrics", None).await?;
    assert!(
        !text.contains(r#"function="add""#),
        "series of a retired version stay"
    );

    let mut cfg = cluster_config("quiet", &[], &["math"], &[]);
    cfg.metrics.enabled = false;
    let quiet = TestNode::with_config(cfg).await?;
    let c = quiet.client().await?;
    c.call("add", vec![json!(1), json!(1)]).await?;
    c.call("echo", vec![json!(1)]).await?;
    let s = scrape(&quiet.url).await?;
    assert_eq!(
        sample(&s, "mpreg_commands_total", &[("outcome", "ok")]),
        0.0
    );
    assert_eq!(sample(&s, "mpreg_requests_total", &[]), 0.0);
    // What engines keep anyway is still there.
    let loaded = quiet.handle.registry().all().len() as f64;
    assert!(loaded > 0.0);
    assert_eq!(sample(&s, "mpreg_functions_loaded", &[]), loaded);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn monitoring_endpoints_answer_in_json_and_page_their_lists() -> Result<()> {
    let node = TestNode::with_config(cluster_config("mon", &["gpu"], &["math"], &[])).await?;
    let client = node.client().await?;
    client.call("add", vec![json!(1), json!(2)]).await?;
    client.call("queue.create", vec![json!("q1")]).await?;
    client
        .call("queue.send", vec![json!("q1"), json!("x")])
        .await?;

    let index = http_json(&node.url, "/monitor").await?;
    let paths: Vec<&str> = index["endpoints"]
        .as_array()
        .context("endpoints")?
        .iter()
        .filter_map(|e| e["path"].as_str())
        .collect();
    assert!(paths.contains(&"/monitor/varz") && paths.contains(&"/monitor/live"));

    let varz = http_json(&node.url, "/monitor/varz").await?;
    assert_eq!(varz["node_id"], "mon");
    assert_eq!(varz["resources"], json!(["gpu"]));
    assert!(varz["uptime_s"].as_f64().context("uptime")? >= 0.0);
    assert_eq!(varz["requests"]["ok"], 3);

    let connz = http_json(&node.url, "/monitor/connz").await?;
    assert_eq!(connz["total"], 1, "{connz}");
    assert!(
        connz["connections"][0]["frames_in"]
            .as_u64()
            .context("frames")?
            >= 3
    );
    assert!(
        connz["connections"][0]["remote"]
            .as_str()
            .context("remote")?
            .starts_with("127.0.0.1:")
    );

    let funcz = http_json(&node.url, "/monitor/funcz?limit=2&offset=0").await?;
    assert_eq!(funcz["limit"], 2);
    assert_eq!(funcz["count"], 2);
    let all = http_json(&node.url, "/monitor/funcz?limit=1000").await?;
    let add = all["functions"]
        .as_array()
        .context("functions")?
        .iter()
        .find(|f| f["function"] == "add")
        .context("add listed")?;
    assert_eq!(
        (add["calls"].clone(), add["errors"].clone()),
        (json!(1), json!(0))
    );
    assert_eq!(add["plugin"], "math");

    let queuez = http_json(&node.url, "/monitor/queuez").await?;
    assert_eq!(queuez["queues"][0]["name"], "q1");
    assert_eq!(queuez["queues"][0]["stats"]["messages"], 1);
    let clusterz = http_json(&node.url, "/monitor/clusterz").await?;
    assert_eq!(clusterz["nodes"][0]["self"], true);
    let cachez = http_json(&node.url, "/monitor/cachez").await?;
    assert!(cachez["l1"].is_object());
    let subsz = http_json(&node.url, "/monitor/subsz").await?;
    assert_eq!(subsz["total"], 0);

    // MPREG's monitoring paths.
    let health = http_json(&node.url, "/monitor/health").await?;
    assert_eq!(health["status"], "ok");
    assert_eq!(health["federation_health"]["overall_status"], "healthy");
    let rpc = http_json(&node.url, "/monitor/metrics/rpc").await?;
    assert_eq!(rpc["system"], "rpc");
    assert!(rpc["metrics"]["requests_per_second"].is_number());

    // Bad input gets a clear 4xx.
    for (path, status) in [
        ("/monitor/funcz?limit=0", 400),
        ("/monitor/funcz?limit=5000", 400),
        ("/monitor/connz?bogus=1", 400),
        ("/monitor/metrics/nope", 404),
    ] {
        let err = http_get(&node.url, path, None).await.expect_err(path);
        let text = format!("{err:#}");
        assert!(text.contains(&format!("HTTP {status}")), "{path}: {text}");
    }
    Ok(())
}

/// Evaluates `expr` in the page until `done` holds of its value (20 s at most).
async fn until(
    page: &mut browser::Browser,
    expr: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Result<Value> {
    let give_up = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let v = page.eval(expr).await?;
        if done(&v) {
            return Ok(v);
        }
        if std::time::Instant::now() > give_up {
            anyhow::bail!("{what}: still {v} after 20 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The dashboard of a 3-node cluster in headless Chromium: it lists the nodes, and its numbers
/// move when calls are made. With `MPREG_DASHBOARD_SCREENSHOT=path` it also saves a screenshot
/// (docs/dashboard.png is one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_cluster_and_moves_with_calls() -> Result<()> {
    let Some(chromium) = browser::chromium() else {
        if std::env::var_os("CI").is_some() {
            anyhow::bail!(
                "no Chromium on this machine; .ci/run installs it (apt-get install chromium)"
            );
        }
        eprintln!("SKIPPED: no Chromium (install the `chromium` package, or set MPREG_CHROMIUM)");
        return Ok(());
    };
    let cluster = TestCluster::start(vec![
        cluster_config("dash-1", &["cpu"], &["math"], &[]),
        cluster_config("dash-2", &["gpu"], &["math"], &[]),
        cluster_config("dash-3", &["ssd"], &["text"], &[]),
    ])
    .await?;
    cluster.wait_formed(Duration::from_secs(20)).await?;
    let url = format!(
        "{}/dashboard",
        cluster.node(0).url.replacen("ws://", "http://", 1)
    );
    let mut page = browser::Browser::open(&chromium, &url, 1400, 1300).await?;

    let nodes_shown = "Array.from(document.querySelectorAll('#nodes .node')).map(n => n.dataset.nodeId).sort().join(',')";
    until(
        &mut page,
        nodes_shown,
        "the dashboard lists the three nodes",
        |v| v == &json!("dash-1,dash-2,dash-3"),
    )
    .await?;
    let total = "Number(document.getElementById('requests-total').dataset.value || -1)";
    let before = page.eval(total).await?.as_f64().context("total")?;

    let client = cluster.node(0).client().await?;
    for i in 0..25 {
        client
            .call_command(on("add", vec![json!(i), json!(1)], &["gpu"]))
            .await?;
    }
    until(&mut page, total, "the request count moves", |v| {
        v.as_f64().unwrap_or(0.0) >= before + 25.0
    })
    .await?;
    // The calls ran on dash-2, so this node's table lists the built-ins it ran; the rates of
    // `echo` move as well once it is called here.
    for i in 0..10 {
        client.call("echo", vec![json!(i)]).await?;
    }
    let rows = "Array.from(document.querySelectorAll('#functions tbody tr')).map(r => r.dataset.function).join(',')";
    until(&mut page, rows, "echo in the function table", |v| {
        v.as_str().unwrap_or("").contains("echo@")
    })
    .await?;
    let live = page
        .eval("document.getElementById('live').className")
        .await?;
    assert_eq!(live, json!("dot on"), "the event stream is connected");
    let updates = page.eval("Number(document.body.dataset.updates)").await?;
    assert!(
        updates.as_f64().unwrap_or(0.0) >= 2.0,
        "updated live: {updates}"
    );
    let forwarded =
        "Array.from(document.querySelectorAll('.node')).map(n => n.textContent).join('|')";
    let cards = page.eval(forwarded).await?;
    assert!(
        cards.as_str().unwrap_or("").contains("add@1.0.0"),
        "functions per node: {cards}"
    );

    if let Some(path) = std::env::var_os("MPREG_DASHBOARD_SCREENSHOT") {
        tokio::time::sleep(Duration::from_secs(3)).await;
        std::fs::write(&path, page.screenshot().await?)?;
    }
    page.close().await;
    Ok(())
}

/// The in-process span collector every node of this test binary exports to (installed once:
/// the subscriber is process-wide).
fn collector() -> &'static (
    opentelemetry_sdk::trace::InMemorySpanExporter,
    opentelemetry_sdk::trace::SdkTracerProvider,
) {
    use tracing_subscriber::layer::SubscriberExt as _;
    static COLLECTOR: std::sync::OnceLock<(
        opentelemetry_sdk::trace::InMemorySpanExporter,
        opentelemetry_sdk::trace::SdkTracerProvider,
    )> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(|| {
        let exporter = opentelemetry_sdk::trace::InMemorySpanExporter::default();
        let e = exporter.clone();
        let provider = mpreg::trace::provider_with(|b| b.with_simple_exporter(e));
        let subscriber = tracing_subscriber::registry().with(mpreg::trace::layer(&provider));
        // Another test may have installed one first; then this one sees no spans and says so.
        let _ = tracing::subscriber::set_global_default(subscriber);
        (exporter, provider)
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_across_three_nodes_is_one_trace_with_parent_links() -> Result<()> {
    use opentelemetry::trace::{SpanId, TraceId};
    let (exporter, provider) = collector();
    let cluster = TestCluster::start(vec![
        cluster_config("t-coord", &[], &[], &[]),
        cluster_config("t-a", &["a"], &["math"], &[]),
        cluster_config("t-b", &["b"], &["math"], &[]),
        cluster_config("t-c", &["c"], &["math"], &[]),
    ])
    .await?;
    cluster.wait_formed(Duration::from_secs(20)).await?;
    let trace_hex = "4bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "00f067aa0ba902b7";
    let mut frame = mpreg_tests::rpc_frame(
        "traced-1",
        json!([
            {"name": "x", "fun": "add", "args": [1, 2], "locs": ["a"]},
            {"name": "y", "fun": "mul", "args": ["x", 10], "locs": ["b"]},
            {"name": "z", "fun": "add", "args": ["y", 5], "locs": ["c"]},
        ]),
    );
    frame["traceparent"] = json!(format!("00-{trace_hex}-{client_span}-01"));
    let mut ws = cluster.node(0).raw().await?;
    let reply = ws.roundtrip(&frame).await?;
    assert_eq!(reply["r"], json!({"z": 35}), "{reply}");
    provider.force_flush()?;

    let trace = TraceId::from_hex(trace_hex)?;
    let spans: Vec<_> = exporter
        .get_finished_spans()?
        .into_iter()
        .filter(|s| s.span_context.trace_id() == trace)
        .collect();
    let named = |n: &str| {
        spans
            .iter()
            .filter(move |s| s.name == n)
            .collect::<Vec<_>>()
    };
    let attr = |s: &opentelemetry_sdk::trace::SpanData, key: &str| {
        s.attributes
            .iter()
            .find(|kv| kv.key.as_str() == key)
            .map(|kv| kv.value.to_string())
    };
    let request = named("request");
    assert_eq!(
        request.len(),
        1,
        "one request span in the trace: {:?}",
        spans.iter().map(|s| &s.name).collect::<Vec<_>>()
    );
    let request = request[0];
    assert_eq!(
        request.parent_span_id,
        SpanId::from_hex(client_span)?,
        "child of the client's span"
    );
    assert_eq!(attr(request, "node").as_deref(), Some("t-coord"));

    let commands = named("command");
    assert_eq!(commands.len(), 3);
    let request_id = request.span_context.span_id();
    assert!(commands.iter().all(|c| c.parent_span_id == request_id));
    let children_of = |parents: &[&opentelemetry_sdk::trace::SpanData], name: &str| {
        let ids: Vec<SpanId> = parents.iter().map(|p| p.span_context.span_id()).collect();
        named(name)
            .into_iter()
            .filter(|s| ids.contains(&s.parent_span_id))
            .collect::<Vec<_>>()
    };
    let forwards = children_of(&commands, "forward");
    assert_eq!(forwards.len(), 3, "one hop per command");
    let remote = children_of(&forwards, "run_forwarded");
    assert_eq!(remote.len(), 3, "each hop continues on the peer");
    let mut ran_on: Vec<String> = remote.iter().filter_map(|s| attr(s, "node")).collect();
    ran_on.sort();
    assert_eq!(ran_on, ["t-a", "t-b", "t-c"]);
    let plugin_calls = children_of(&remote, "plugin_call");
    assert_eq!(plugin_calls.len(), 3);
    assert!(
        plugin_calls
            .iter()
            .all(|s| attr(s, "request_id").as_deref() == Some("traced-1"))
    );
    Ok(())
}
