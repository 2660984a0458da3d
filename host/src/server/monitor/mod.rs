//! The monitoring endpoints (docs/observability.md, "Monitoring endpoints"): JSON under
//! `/monitor`, NATS-style (`varz`, `connz`, `funcz`, `clusterz`, `subsz`, `queuez`, `cachez`,
//! lists paged with `offset` and `limit`), `live` (what the dashboard and `mpreg top` draw), and
//! the paths of MPREG's own monitoring server (`health`, `health/summary`, `metrics/<system>`)
//! so `mpreg monitor … --url http://host:port/monitor` works against a node.
//!
//! Rates and percentiles come from [`history`]: the node samples its counters once a second.

pub mod history;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::ServerState;
use history::{FnTick, Rates, Tick};

/// Items a list returns when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// The most a list returns at once.
pub const MAX_LIMIT: usize = 1000;

/// The endpoints, for the index and the docs.
const ENDPOINTS: &[(&str, &str)] = &[
    (
        "/monitor/varz",
        "the node: identity, uptime, version, config summary, load, memory, CPU",
    ),
    ("/monitor/connz", "open client connections (paged)"),
    (
        "/monitor/funcz",
        "functions and plugins with per-version call stats (paged)",
    ),
    (
        "/monitor/clusterz",
        "cluster members, their functions, and this node's peer links",
    ),
    (
        "/monitor/subsz",
        "subscriptions held by this node's clients (paged)",
    ),
    (
        "/monitor/queuez",
        "queues hosted here with depths and totals (paged)",
    ),
    ("/monitor/cachez", "the cache's tiers and namespaces"),
    (
        "/monitor/live",
        "rates, latency percentiles, errors and the trend (dashboard, mpreg top)",
    ),
    ("/monitor/health", "MPREG's monitoring shape: health"),
    (
        "/monitor/health/summary",
        "MPREG's monitoring shape: health summary",
    ),
    (
        "/monitor/metrics/{system}",
        "MPREG's monitoring shape: unified, rpc, pubsub, queue, cache, connections, transport, federation",
    ),
];

/// The routes under `/monitor`.
pub fn routes() -> Router<Arc<ServerState>> {
    Router::new()
        .route("/monitor", get(index))
        .route("/monitor/", get(index))
        .route("/monitor/endpoints", get(index))
        .route("/monitor/varz", get(varz))
        .route("/monitor/connz", get(connz))
        .route("/monitor/funcz", get(funcz))
        .route("/monitor/clusterz", get(clusterz))
        .route("/monitor/subsz", get(subsz))
        .route("/monitor/queuez", get(queuez))
        .route("/monitor/cachez", get(cachez))
        .route("/monitor/live", get(live))
        .route("/monitor/health", get(health))
        .route("/monitor/health/summary", get(health_summary))
        .route(
            "/monitor/metrics",
            get(|s| system(s, Path("unified".to_owned()))),
        )
        .route("/monitor/metrics/{system}", get(system))
        .route("/monitor/{*rest}", get(unknown))
}

async fn unknown(Path(rest): Path<String>) -> Response {
    let known: Vec<&str> = ENDPOINTS.iter().map(|(p, _)| *p).collect();
    (
        StatusCode::NOT_FOUND,
        Json(json!({
            "status": "error",
            "error": format!("no monitoring endpoint /monitor/{rest}"),
            "endpoints": known,
        })),
    )
        .into_response()
}

/// `offset` and `limit` of a paged list.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Page {
    /// Items to skip.
    #[serde(default)]
    offset: usize,
    /// Items to return (at most [`MAX_LIMIT`]).
    limit: Option<usize>,
}

fn bad_request(why: String) -> Response {
    (
        StatusCode::BAD_REQUEST,
        Json(json!({"status": "error", "error": why})),
    )
        .into_response()
}

/// Reads the page of a list; unknown parameters and a limit over the maximum are refused.
fn page(q: PageQuery) -> Result<(usize, usize), String> {
    let Query(p) = q.map_err(|e| {
        format!(
            "{}; a list takes offset and limit (e.g. ?offset=0&limit=100)",
            e.body_text()
        )
    })?;
    let limit = p.limit.unwrap_or(DEFAULT_LIMIT);
    if limit == 0 || limit > MAX_LIMIT {
        return Err(format!("limit must be 1..={MAX_LIMIT}, got {limit}"));
    }
    Ok((p.offset, limit))
}

/// The query of a paged list, as axum extracts it (a rejection is answered with a 400).
type PageQuery = Result<Query<Page>, axum::extract::rejection::QueryRejection>;

/// A paged list named `name`: the page `q` asks for of what `items` returns.
fn list<T: serde::Serialize>(q: PageQuery, name: &str, items: impl FnOnce() -> Vec<T>) -> Response {
    match page(q) {
        Ok(p) => paged(name, items(), p),
        Err(why) => bad_request(why),
    }
}

/// A page of `items` as `{total, offset, limit, <name>: [...]}`.
fn paged<T: serde::Serialize>(
    name: &str,
    items: Vec<T>,
    (offset, limit): (usize, usize),
) -> Response {
    let total = items.len();
    let shown: Vec<T> = items.into_iter().skip(offset).take(limit).collect();
    let mut m = serde_json::Map::new();
    m.insert("now".into(), json!(crate::clock::unix_now()));
    m.insert("total".into(), json!(total));
    m.insert("offset".into(), json!(offset));
    m.insert("limit".into(), json!(limit));
    m.insert("count".into(), json!(shown.len()));
    m.insert(name.into(), json!(shown));
    Json(Value::Object(m)).into_response()
}

async fn index() -> Response {
    let endpoints: Vec<Value> = ENDPOINTS
        .iter()
        .map(|(path, what)| json!({"path": path, "description": what}))
        .collect();
    Json(json!({"status": "ok", "endpoints": endpoints, "metrics": "/metrics", "dashboard": "/dashboard"}))
        .into_response()
}

/// Reads every counter the history keeps, now.
pub fn tick(state: &ServerState) -> Tick {
    let mut functions = BTreeMap::new();
    for p in state.registry.plugins() {
        for f in &p.functions {
            let m = &f.metrics;
            functions.insert(
                format!("{}@{}", f.name, p.manifest.version),
                FnTick {
                    builtin: false,
                    ok: m.ok(),
                    errors: m.errors(),
                    durations: m.durations(),
                },
            );
        }
    }
    for m in state.dispatcher.builtin_calls() {
        let l = m.labels();
        functions.insert(
            format!("{}@{}", l.function, l.version),
            FnTick {
                builtin: true,
                ok: m.ok(),
                errors: m.errors(),
                durations: m.durations(),
            },
        );
    }
    let s = &state.exchange.stats;
    Tick {
        at: crate::clock::unix_now(),
        rpc: state.counts.rpc_totals(),
        functions,
        published: s.published.load(Ordering::Relaxed),
        notifications: s.delivered.load(Ordering::Relaxed),
        forwarded: state.dispatcher.forwarding_totals()[0],
    }
}

/// Samples the counters once a second into `state.history` until `stop`.
pub async fn sample(state: Arc<ServerState>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        state.history.push(tick(&state));
    }
}

fn cpu_and_rss() -> Value {
    json!({
        "rss_bytes": super::metrics::resident_bytes(),
        "cpu_seconds": super::metrics::cpu_seconds(),
    })
}

/// `GET /monitor/varz`.
pub fn varz_value(state: &ServerState) -> Value {
    let node = &state.node;
    let now = crate::clock::unix_now();
    let c = &state.config;
    let rt = state.dispatcher.runtime();
    let totals = state.counts.rpc_totals();
    let [forwarded, reroutes, received] = state.dispatcher.forwarding_totals();
    json!({
        "node_id": node.node_id,
        "cluster_id": node.cluster_id,
        "region": node.region,
        "resources": node.resources,
        "urls": node.advertised_urls,
        "version": env!("CARGO_PKG_VERSION"),
        "started_at": node.started_at,
        "now": now,
        "uptime_s": (now - node.started_at).max(0.0),
        "status": if state.shutdown.is_cancelled() { "shutting_down" } else { "ok" },
        "in_cluster": state.dispatcher.cluster().is_some(),
        "config": {
            "host": c.host,
            "port": c.port,
            "max_message_bytes": c.max_message_bytes,
            "max_reply_bytes": c.max_reply_bytes,
            "max_connections": c.max_connections,
            "max_in_flight_per_connection": c.max_in_flight_per_connection,
            "request_timeout_ms": c.request_timeout_ms,
            "run_slots": rt.slots().size(),
            "guest_memory_limit_bytes": rt.guest_memory().limit(),
            "metrics_enabled": state.metrics.enabled(),
        },
        "load": crate::rpc::builtins::core::own_load(node),
        "process": cpu_and_rss(),
        "guest_memory": {
            "used_bytes": rt.guest_memory().used(),
            "limit_bytes": rt.guest_memory().limit(),
        },
        "connections": {
            "clients": state.connections.len(),
            "open": state.gate.open(),
            "refused": state.gate.refused.load(Ordering::Relaxed),
        },
        "requests": {"ok": totals[0], "error": totals[1], "refused": totals[2]},
        "forwarding": {"sent": forwarded, "reroutes": reroutes, "received": received},
        "functions": state.registry.all().len(),
        "plugins": state.registry.plugins().len(),
        "subscriptions": state.exchange.subscriptions(),
        "queues": state.queues.names().len(),
    })
}

async fn varz(State(state): State<Arc<ServerState>>) -> Response {
    Json(varz_value(&state)).into_response()
}

async fn connz(State(state): State<Arc<ServerState>>, q: PageQuery) -> Response {
    list(q, "connections", || {
        let now = crate::clock::unix_now();
        let mut subs: BTreeMap<u64, usize> = BTreeMap::new();
        for (conn, _, _) in state.exchange.subscription_list() {
            *subs.entry(conn).or_default() += 1;
        }
        let list: Vec<Value> = state
            .connections
            .list()
            .iter()
            .map(|c| {
                json!({
                    "id": c.id,
                    "remote": c.remote.map(|a| a.to_string()),
                    "connected_at": c.connected_at,
                    "uptime_s": (now - c.connected_at).max(0.0),
                    "frames_in": c.frames.load(Ordering::Relaxed),
                    "bytes_in": c.bytes_in.load(Ordering::Relaxed),
                    "subscriptions": subs.get(&c.id).copied().unwrap_or(0),
                })
            })
            .collect();
        list
    })
}

async fn funcz(State(state): State<Arc<ServerState>>, q: PageQuery) -> Response {
    list(q, "functions", || {
        let rates: BTreeMap<String, history::FnRates> = state
            .history
            .rates(Some(tick(&state)))
            .functions
            .into_iter()
            .map(|f| (f.function.clone(), f))
            .collect();
        let mut list = Vec::new();
        for plugin in state.registry.plugins() {
            let version = plugin.manifest.version.to_string();
            for f in &plugin.functions {
                let key = format!("{}@{version}", f.name);
                let mut entry = call_stats(&f.metrics, rates.get(&key));
                entry.extend(
                    [
                        ("function", json!(f.name)),
                        ("version", json!(version)),
                        ("function_id", json!(f.function_id)),
                        ("plugin", json!(plugin.manifest.name)),
                        ("sha256", json!(plugin.sha256)),
                        ("signature", json!(f.signature)),
                        ("resources", json!(f.resources)),
                        ("builtin", json!(false)),
                        (
                            "in_flight",
                            json!(plugin.stats.in_flight.load(Ordering::Relaxed)),
                        ),
                    ]
                    .map(|(k, v)| (k.to_owned(), v)),
                );
                list.push(Value::Object(entry));
            }
        }
        let mut builtins: Vec<Value> = state
            .dispatcher
            .builtin_calls()
            .iter()
            .filter_map(|m| {
                let l = m.labels();
                let key = format!("{}@{}", l.function, l.version);
                let mut entry = call_stats(m, rates.get(&key));
                if entry["calls"] == json!(0) {
                    return None;
                }
                entry.extend(
                    [
                        ("function", json!(l.function)),
                        ("version", json!(l.version)),
                        ("builtin", json!(true)),
                    ]
                    .map(|(k, v)| (k.to_owned(), v)),
                );
                Some(Value::Object(entry))
            })
            .collect();
        builtins.sort_by(|a, b| a["function"].as_str().cmp(&b["function"].as_str()));
        list.sort_by(|a, b| {
            (a["function"].as_str(), a["version"].as_str())
                .cmp(&(b["function"].as_str(), b["version"].as_str()))
        });
        list.extend(builtins);
        list
    })
}

/// A function version's call figures since it loaded (`calls`, `errors`, mean and
/// percentiles), and its calls per second now.
fn call_stats(
    m: &crate::metrics::FunctionCalls,
    now: Option<&history::FnRates>,
) -> serde_json::Map<String, Value> {
    let d = m.durations();
    let errors = m.errors();
    let ms = |s: Option<f64>| s.map(|s| s * 1e3);
    let v = json!({
        "calls": m.ok() + errors,
        "errors": errors,
        "mean_ms": ms(d.mean()),
        "p50_ms": ms(d.quantile(0.5)),
        "p99_ms": ms(d.quantile(0.99)),
        "calls_per_s": now.map_or(0.0, |r| r.calls_per_s),
    });
    match v {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    }
}

/// The cluster as this node sees it: members (with their functions) and its links.
pub fn clusterz_value(state: &ServerState) -> Value {
    let map = state.dispatcher.cluster_map();
    let me = &state.node.node_id;
    let nodes: Vec<Value> = map
        .nodes
        .iter()
        .map(|n| {
            let link = state.dispatcher.cluster().and_then(|c| c.link(&n.node_id));
            json!({
                "node_id": n.node_id,
                "self": &n.node_id == me,
                "region": n.region,
                "resources": n.resources,
                "urls": n.advertised_urls,
                "started_at": n.started_at,
                "load": n.load,
                "functions": n.functions,
                "link": link.map(|l| json!({
                    "up": l.is_connected(),
                    "connects": l.connects(),
                    "calls_in_flight": l.in_flight(),
                })),
            })
        })
        .collect();
    json!({
        "now": crate::clock::unix_now(),
        "cluster_id": map.cluster_id,
        "node_id": me,
        "members": nodes.len(),
        "nodes": nodes,
    })
}

async fn clusterz(State(state): State<Arc<ServerState>>) -> Response {
    Json(clusterz_value(&state)).into_response()
}

async fn subsz(State(state): State<Arc<ServerState>>, q: PageQuery) -> Response {
    list(q, "subscriptions", || {
        let list: Vec<Value> = state
        .exchange
        .subscription_list()
        .into_iter()
        .map(|(conn, id, patterns)| json!({"connection": conn, "subscription_id": id, "patterns": patterns}))
        .collect();
        list
    })
}

async fn queuez(State(state): State<Arc<ServerState>>, q: PageQuery) -> Response {
    list(q, "queues", || state.queues.list())
}

async fn cachez(State(state): State<Arc<ServerState>>) -> Response {
    let mut v = state.cache.stats();
    if let Value::Object(m) = &mut v {
        m.insert("now".into(), json!(crate::clock::unix_now()));
        m.insert("node_id".into(), json!(state.node.node_id));
    }
    Json(v).into_response()
}

/// What the dashboard and `mpreg top` draw: the node, the cluster, rates, queues, the trend.
pub fn live_value(state: &ServerState) -> Value {
    let rates: Rates = state.history.rates(Some(tick(state)));
    let queues: Vec<Value> = state
        .queues
        .list()
        .into_iter()
        .take(50)
        .map(|q| {
            json!({
                "name": q.name,
                "depth": q.stats.messages,
                "visible": q.stats.visible,
                "in_flight": q.stats.in_flight,
                "dead_lettered": q.stats.dead_lettered,
            })
        })
        .collect();
    json!({
        "node": varz_value(state),
        "cluster": clusterz_value(state),
        "rates": rates,
        "queues": queues,
        "pubsub": state.exchange.describe(),
        "trend": state.history.trend(120),
    })
}

async fn live(State(state): State<Arc<ServerState>>) -> Response {
    Json(live_value(&state)).into_response()
}

/// MPREG's `/health` shape for one cluster: this node's view of it.
async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let members = state
        .dispatcher
        .cluster()
        .map_or(1, |c| c.view().nodes.len() + 1);
    let links = state.dispatcher.cluster().map(|c| {
        let view = c.view();
        let up = view
            .nodes
            .iter()
            .filter(|n| c.link(&n.node_id).is_some_and(|l| l.is_connected()))
            .count();
        (view.nodes.len(), up)
    });
    let (total, active) = links.unwrap_or((0, 0));
    let healthy = total == active;
    let status = if state.shutdown.is_cancelled() {
        "unavailable"
    } else if healthy {
        "healthy"
    } else {
        "degraded"
    };
    Json(json!({
        "status": "ok",
        "federation_health": {
            "overall_status": status,
            "health_score": if total == 0 { 100.0 } else { 100.0 * active as f64 / total as f64 },
            "total_clusters": 1,
            "healthy_clusters": u8::from(status == "healthy"),
            "degraded_clusters": u8::from(status == "degraded"),
            "critical_clusters": 0,
            "unavailable_clusters": u8::from(status == "unavailable"),
            "connection_health": {
                "total_connections": total,
                "active_connections": active,
                "success_rate_percent": if total == 0 { 100.0 } else { 100.0 * active as f64 / total as f64 },
            },
            "cluster": {"cluster_id": state.node.cluster_id, "members": members, "status": status},
            "last_updated": crate::clock::unix_now(),
        },
        "timestamp": crate::clock::unix_now(),
    }))
    .into_response()
}

async fn health_summary(State(state): State<Arc<ServerState>>) -> Response {
    Json(json!({
        "status": "ok",
        "health_summary": {
            "overall": {"status": if state.shutdown.is_cancelled() { "unavailable" } else { "healthy" }},
            "cluster_counts": {"total": 1},
            "cluster_details": { state.node.cluster_id.clone(): clusterz_value(&state) },
        },
        "timestamp": crate::clock::unix_now(),
    }))
    .into_response()
}

/// One system's figures in MPREG's `SystemMetrics` shape.
fn system_metrics(
    name: &str,
    ops_per_s: f64,
    p50: Option<f64>,
    p99: Option<f64>,
    errors_per_s: f64,
    active: usize,
) -> Value {
    json!({
        "system_type": name,
        "system_name": name,
        "requests_per_second": ops_per_s,
        "average_latency_ms": p50.unwrap_or(0.0),
        "p95_latency_ms": p99.unwrap_or(0.0),
        "p99_latency_ms": p99.unwrap_or(0.0),
        "error_rate_percent": if ops_per_s > 0.0 { 100.0 * errors_per_s / ops_per_s } else { 0.0 },
        "active_connections": active,
        "total_operations_last_hour": Value::Null,
        "last_updated": crate::clock::unix_now(),
    })
}

async fn system(State(state): State<Arc<ServerState>>, Path(name): Path<String>) -> Response {
    let r = state.history.rates(Some(tick(&state)));
    let clients = state.connections.len();
    let rpc = system_metrics(
        "rpc",
        r.requests_per_s,
        r.p50_ms,
        r.p99_ms,
        r.errors_per_s,
        clients,
    );
    let pubsub = system_metrics(
        "pubsub",
        r.published_per_s,
        None,
        None,
        0.0,
        state.exchange.subscriptions(),
    );
    let queue = system_metrics("queue", 0.0, None, None, 0.0, state.queues.names().len());
    let cache = system_metrics("cache", 0.0, None, None, 0.0, 0);
    let federation = system_metrics("federation", r.forwarded_per_s, None, None, 0.0, 0);
    let one = |system: &str, metrics: Value| {
        Json(json!({"status": "ok", "system": system, "metrics": metrics, "timestamp": crate::clock::unix_now()}))
            .into_response()
    };
    match name.as_str() {
        "rpc" => one("rpc", rpc),
        "pubsub" => one("pubsub", pubsub),
        "queue" => one("queue", queue),
        "cache" => one("cache", json!({"system": cache, "stats": state.cache.stats()})),
        "federation" => one("federation", federation),
        "connections" => one("connections", json!({"clients": clients, "open": state.gate.open()})),
        "transport" => one("transport", json!({"websocket": {"open": state.gate.open(), "refused": state.gate.refused.load(Ordering::Relaxed)}})),
        "unified" => Json(json!({
            "status": "ok",
            "unified_metrics": {
                "rpc": rpc, "pubsub": pubsub, "queue": queue, "cache": cache, "federation": federation,
            },
            "timestamp": crate::clock::unix_now(),
        }))
        .into_response(),
        other => (
            StatusCode::NOT_FOUND,
            Json(json!({
                "status": "error",
                "error": format!("no metrics system '{other}'; one of unified, rpc, pubsub, queue, cache, connections, transport, federation"),
            })),
        )
            .into_response(),
    }
}
