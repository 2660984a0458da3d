//! What the server counts and serves (docs/observability.md, "Metrics"): requests by role
//! and outcome, their sizes, durations and levels, connections, the process (RSS, CPU, start
//! time, build), and `GET /metrics` itself.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::listen::Gate;
use crate::identity::NodeInfo;
use crate::metrics::{Counter, Family, Registry, Unit};

/// How a request ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome {
    /// Answered with a result.
    Ok,
    /// Answered with an error after it ran (a command failed, the deadline passed).
    Error,
    /// Refused before any command ran (malformed, overloaded, shutting down).
    Refused,
}

type RequestLabels = Vec<(&'static str, &'static str)>;

/// The server's metrics: handles made once, so recording is a few atomic operations.
#[derive(Debug, Clone)]
pub struct ServerMetrics {
    enabled: bool,
    requests: Family<RequestLabels, Counter>,
    rpc: [Counter; 3],
    bytes: crate::metrics::SizeHistogram,
    duration: crate::metrics::LatencyHistogram,
    levels: crate::metrics::SizeHistogram,
    throttled: Family<RequestLabels, Counter>,
}

impl ServerMetrics {
    /// The families; `enabled: false` records nothing.
    pub fn new(enabled: bool) -> ServerMetrics {
        let requests: Family<RequestLabels, Counter> = Family::default();
        let rpc = [Outcome::Ok, Outcome::Error, Outcome::Refused]
            .map(|o| requests.get_or_create_owned(&labels("rpc", o)));
        ServerMetrics {
            enabled,
            requests,
            rpc,
            bytes: crate::metrics::SizeHistogram::new(64),
            duration: crate::metrics::LatencyHistogram::default(),
            levels: crate::metrics::SizeHistogram::new(1),
            throttled: Family::default(),
        }
    }

    /// Whether recording is on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Counts an RPC request that ended with `outcome` after `took`.
    pub fn rpc(&self, outcome: Outcome, took: Option<Duration>) {
        if !self.enabled {
            return;
        }
        self.rpc[outcome as usize].inc();
        if let Some(t) = took {
            self.duration.observe(t);
        }
    }

    /// Requests by outcome so far: ok, error, refused (RPC only).
    pub fn rpc_totals(&self) -> [u64; 3] {
        [self.rpc[0].get(), self.rpc[1].get(), self.rpc[2].get()]
    }

    /// Counts a request of another role (`pubsub`, an envelope such as `cache-request`).
    pub fn other(&self, role: &'static str, outcome: Outcome) {
        if self.enabled {
            self.requests.get_or_create(&labels(role, outcome)).inc();
        }
    }

    /// Counts a connection paused by a rate limit (counted even with metrics off: a refusal).
    pub fn throttled(&self, limit: super::rate::Limit) {
        self.throttled
            .get_or_create(&vec![("limit", limit.label())])
            .inc();
    }

    /// Records a frame's size.
    pub fn frame(&self, len: usize) {
        if self.enabled {
            self.bytes.observe(len as u64);
        }
    }

    /// The histogram of levels per request, for the executor (`None` when off).
    pub fn levels(&self) -> Option<crate::metrics::SizeHistogram> {
        self.enabled.then(|| self.levels.clone())
    }

    /// Registers the families, and collectors of connections and the process.
    pub fn register(&self, r: &mut Registry, gate: &Arc<Gate>, node: &Arc<NodeInfo>) {
        r.register(
            "requests",
            "Requests answered, by role (rpc, pubsub, cache-request…) and outcome (ok, error, refused)",
            self.requests.clone(),
        );
        r.register_with_unit(
            "request_frame",
            "Size of request frames read",
            Unit::Bytes,
            self.bytes.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from reading an RPC request to its reply (requests that waited)",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register(
            "throttled",
            "Times a connection went unread because it was over a rate limit, by limit",
            self.throttled.clone(),
        );
        r.register(
            "request_levels",
            "Dependency levels per RPC request",
            self.levels.clone(),
        );
        r.register(
            "build",
            "The node's build",
            prometheus_client::metrics::info::Info::new(vec![
                ("version", env!("CARGO_PKG_VERSION")),
                ("rustc", option_env!("MPREG_RUSTC").unwrap_or("unknown")),
            ]),
        );
        let (gate, node) = (gate.clone(), node.clone());
        crate::metrics::collect(r, move |s| {
            let load = node.load();
            s.gauge(
                "connections_open",
                "Open connections (clients and peer links)",
                gate.open() as f64,
            )?;
            s.gauge(
                "clients_active",
                "Open client sessions",
                load.active_clients as f64,
            )?;
            s.counter(
                "connections_refused",
                "Connections refused for a cap",
                gate.refused.load(Ordering::Relaxed),
            )?;
            s.counter(
                "accept_errors",
                "accept() calls that failed",
                gate.accept_errors.load(Ordering::Relaxed),
            )?;
            s.gauge(
                "requests_in_flight",
                "Requests being executed",
                load.active_requests as f64,
            )?;
            s.gauge(
                "calls_running",
                "Plugin calls running on this node (its load score)",
                load.running_calls as f64,
            )?;
            s.gauge(
                "start_time_seconds",
                "When the node started (Unix seconds)",
                node.started_at,
            )?;
            if let Some(rss) = resident_bytes() {
                s.bytes("process_resident_memory", "Resident set size", rss)?;
            }
            if let Some(cpu) = cpu_seconds() {
                s.counter_f64(
                    "process_cpu_seconds",
                    "User and system CPU time the process has used, in seconds",
                    cpu,
                )?;
            }
            Ok(())
        });
    }
}

fn labels(role: &'static str, o: Outcome) -> RequestLabels {
    let outcome = match o {
        Outcome::Ok => "ok",
        Outcome::Error => "error",
        Outcome::Refused => "refused",
    };
    vec![("role", role), ("outcome", outcome)]
}

/// User plus system CPU seconds of this process (Linux `/proc/self/stat`).
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    let hz = rustix::param::clock_ticks_per_second() as f64;
    Some(ticks as f64 / hz)
}

/// This process's resident set size (Linux `/proc/self/statm`); `None` elsewhere.
pub fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    let page = rustix::param::page_size() as u64;
    Some(pages * page)
}
