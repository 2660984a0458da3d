//! The node's Prometheus metrics (docs/observability.md, "Metrics"), on the `prometheus-client`
//! crate.
//!
//! Vocabulary: every layer that counts something names these types. The rule that keeps the hot
//! path cheap is that a counter a call touches is a handle held by what the call already has
//! (a loaded function, a built-in, the session), never a label lookup per call; values other
//! engines already keep (queue depths, cache hits, pub/sub counters) are read at scrape time by a
//! [`collect`] closure the engine registers, so they cost nothing between scrapes.
//!
//! - [`Metrics`]: the registry a node builds at start-up (each service registers into it) and
//!   encodes on `GET /metrics`;
//! - [`CallMetrics`]: the families of calls to functions (plugins and built-ins), shared by the
//!   runtime and the dispatcher; [`FunctionCalls`]: one function version's handles;
//! - [`Scrape`]: what a collector writes at scrape time.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use prometheus_client::encoding::EncodeLabelSet;
pub use prometheus_client::metrics::counter::Counter;
pub use prometheus_client::metrics::family::Family;
pub use prometheus_client::metrics::gauge::Gauge;
pub use prometheus_client::metrics::histogram::Histogram;
pub use prometheus_client::registry::{Registry, Unit};

pub mod latency;
pub use latency::{LatencyHistogram, SizeHistogram};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// The exposition formats `GET /metrics` speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4 (what a scraper gets unless it asks for OpenMetrics).
    Text,
    /// OpenMetrics 1.0 text.
    OpenMetrics,
}

impl Format {
    /// The format an `Accept` header asks for.
    pub fn from_accept(accept: Option<&str>) -> Format {
        match accept {
            Some(a) if a.contains("application/openmetrics-text") => Format::OpenMetrics,
            _ => Format::Text,
        }
    }

    /// The reply's `Content-Type`.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }
}

/// A node's metrics: the registry every service registered into, read on each scrape.
pub struct Metrics {
    registry: Registry,
    enabled: bool,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.enabled)
            .finish()
    }
}

impl Metrics {
    /// A registry whose metric names start with `mpreg_`; `enabled: false` makes the hot-path
    /// handles no-ops (the scrape still answers, with what collectors read).
    pub fn new(enabled: bool) -> Metrics {
        Metrics {
            registry: Registry::with_prefix("mpreg"),
            enabled,
        }
    }

    /// Whether call-path instrumentation records.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Where services register their families and collectors.
    pub fn registry(&mut self) -> &mut Registry {
        &mut self.registry
    }

    /// The exposition in `format`.
    pub fn encode(&self, format: Format) -> String {
        let mut out = String::with_capacity(16 << 10);
        // Writing into a String cannot fail; a collector that fails ends the output early.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        match format {
            Format::OpenMetrics => out,
            Format::Text => openmetrics_to_text(&out),
        }
    }
}

/// Rewrites OpenMetrics text as Prometheus text 0.0.4: counter families are named by their
/// `_total` sample, info families become gauges named `_info`, and `# UNIT` / `# EOF` go (0.0.4
/// has neither).
pub fn openmetrics_to_text(om: &str) -> String {
    let mut out = String::with_capacity(om.len());
    // The kind of each family, known from its TYPE line, which precedes its HELP line only in
    // some encoders: read all TYPE lines first.
    let mut kinds: std::collections::HashMap<&str, &str> = std::collections::HashMap::new();
    for line in om.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some((name, kind)) = rest.split_once(' ')
        {
            kinds.insert(name, kind);
        }
    }
    for line in om.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let header = ["# HELP ", "# TYPE "]
            .into_iter()
            .find(|p| line.starts_with(p));
        if let Some(prefix) = header {
            let rest = &line[prefix.len()..];
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            let (name, tail) = match (kinds.get(name).copied(), prefix) {
                (Some("counter"), _) => (format!("{name}_total"), Cow::Borrowed(tail)),
                (Some("info"), "# TYPE ") => (format!("{name}_info"), Cow::Borrowed("gauge")),
                (Some("info"), _) => (format!("{name}_info"), Cow::Borrowed(tail)),
                _ => (name.to_owned(), Cow::Borrowed(tail)),
            };
            let _ = writeln!(out, "{prefix}{name} {tail}");
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A family of latency histograms.
pub type LatencyFamily<L> = Family<L, LatencyHistogram>;

/// A new family of latency histograms.
pub fn latency_family<L: Clone + std::hash::Hash + Eq>() -> LatencyFamily<L> {
    Family::default()
}

/// Labels of a function version (bounded: only loaded functions and built-ins).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FunctionLabels {
    /// Function name (or built-in name).
    pub function: String,
    /// Its version.
    pub version: String,
}

impl FunctionLabels {
    /// The labels of this function's commands that ended with `outcome` and `code`.
    fn outcome(&self, outcome: &'static str, code: &'static str) -> OutcomeLabels {
        OutcomeLabels {
            function: self.function.clone(),
            version: self.version.clone(),
            outcome,
            code,
        }
    }
}

/// Labels of a finished command.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// Function name; empty when nothing matched (a name asked for is request data).
    pub function: String,
    /// Its version; empty when nothing matched.
    pub version: String,
    /// `ok` or `error`.
    pub outcome: &'static str,
    /// MPREG's error code (`1001`…); empty for `ok`.
    pub code: &'static str,
}

/// The phases of a plugin call the runtime times.
#[derive(Debug, Clone, Copy)]
pub enum Phase {
    /// Waiting for a run slot and guest-memory room.
    QueueWait,
    /// Instantiating the component.
    Instantiate,
    /// Running the export.
    Run,
}

/// The families of calls to functions, shared by the runtime (plugin calls) and the dispatcher
/// (built-ins and calls that match nothing).
#[derive(Debug, Clone)]
pub struct CallMetrics {
    enabled: Arc<AtomicBool>,
    commands: Family<OutcomeLabels, Counter>,
    duration: LatencyFamily<FunctionLabels>,
    queue_wait: LatencyFamily<FunctionLabels>,
    instantiate: LatencyFamily<FunctionLabels>,
    run: LatencyFamily<FunctionLabels>,
}

impl Default for CallMetrics {
    fn default() -> Self {
        CallMetrics {
            enabled: Arc::new(AtomicBool::new(true)),
            commands: Family::default(),
            duration: latency_family(),
            queue_wait: latency_family(),
            instantiate: latency_family(),
            run: latency_family(),
        }
    }
}

impl CallMetrics {
    /// Turns recording on or off (`[metrics] enabled`); handles made before see the change.
    pub fn set_enabled(&self, on: bool) {
        self.enabled.store(on, Ordering::Relaxed);
    }

    /// Whether recording is on.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Registers the families.
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "commands",
            "Commands run on this node, by function, version and outcome (code is MPREG's error code)",
            self.commands.clone(),
        );
        r.register_with_unit(
            "call_duration",
            "Time from a command's start on this node to its result",
            Unit::Seconds,
            self.duration.clone(),
        );
        r.register_with_unit(
            "call_queue_wait",
            "Time a plugin call waited for a run slot and guest-memory room",
            Unit::Seconds,
            self.queue_wait.clone(),
        );
        r.register_with_unit(
            "call_instantiate",
            "Time instantiating a plugin component for a call",
            Unit::Seconds,
            self.instantiate.clone(),
        );
        r.register_with_unit(
            "call_run",
            "Time a plugin export ran",
            Unit::Seconds,
            self.run.clone(),
        );
    }

    /// The handles of a built-in: commands and durations (it has no plugin phases).
    pub fn builtin(&self, function: &str, version: &str) -> FunctionCalls {
        self.handles(function, version, false)
    }

    /// The handles of one function version.
    pub fn function(&self, function: &str, version: &str) -> FunctionCalls {
        self.handles(function, version, true)
    }

    /// Handles in these families; without `phases`, the phase histograms are detached (not
    /// exported).
    fn handles(&self, function: &str, version: &str, phases: bool) -> FunctionCalls {
        let labels = FunctionLabels {
            function: function.to_owned(),
            version: version.to_owned(),
        };
        let phase = |fam: &LatencyFamily<FunctionLabels>| {
            if phases {
                fam.get_or_create_owned(&labels)
            } else {
                LatencyHistogram::default()
            }
        };
        FunctionCalls {
            enabled: self.enabled.clone(),
            ok: self.commands.get_or_create_owned(&labels.outcome("ok", "")),
            duration: self.duration.get_or_create_owned(&labels),
            queue_wait: phase(&self.queue_wait),
            instantiate: phase(&self.instantiate),
            run: phase(&self.run),
            commands: self.commands.clone(),
            labels: Arc::new(labels),
        }
    }

    /// Drops the series of a function version that is gone (retired), so label sets stay
    /// bounded by what is loaded.
    pub fn forget(&self, function: &str, version: &str) {
        let labels = FunctionLabels {
            function: function.to_owned(),
            version: version.to_owned(),
        };
        for fam in [
            &self.duration,
            &self.queue_wait,
            &self.instantiate,
            &self.run,
        ] {
            fam.remove(&labels);
        }
        self.commands.remove(&labels.outcome("ok", ""));
        for code in crate::protocol::codes::ALL {
            self.commands.remove(&labels.outcome("error", code));
        }
    }

    /// Counts a command that matched nothing (or failed before anything ran).
    pub fn unmatched(&self, code: &'static str) {
        if self.enabled.load(Ordering::Relaxed) {
            let nothing = FunctionLabels {
                function: String::new(),
                version: String::new(),
            };
            self.commands
                .get_or_create(&nothing.outcome("error", code))
                .inc();
        }
    }
}

/// One function version's handles: recording is a few atomic operations, no lookup, except for
/// a failure's counter (failures are rare and already slow).
#[derive(Debug, Clone)]
pub struct FunctionCalls {
    enabled: Arc<AtomicBool>,
    labels: Arc<FunctionLabels>,
    ok: Counter,
    duration: LatencyHistogram,
    queue_wait: LatencyHistogram,
    instantiate: LatencyHistogram,
    run: LatencyHistogram,
    commands: Family<OutcomeLabels, Counter>,
}

impl FunctionCalls {
    /// Whether recording is on (callers skip taking the time when it is off).
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Records a finished command: `code` is `None` for success, else MPREG's error code.
    pub fn finished(&self, code: Option<&'static str>, took: Duration) {
        if !self.enabled() {
            return;
        }
        match code {
            None => {
                self.ok.inc();
            }
            Some(code) => {
                self.commands
                    .get_or_create(&self.labels.outcome("error", code))
                    .inc();
            }
        }
        self.duration.observe(took);
    }

    /// The function and version these handles count.
    pub fn labels(&self) -> &FunctionLabels {
        &self.labels
    }

    /// Failed commands so far (every code).
    pub fn errors(&self) -> u64 {
        crate::protocol::codes::ALL
            .iter()
            .filter_map(|&code| {
                let labels = self.labels.outcome("error", code);
                self.commands.get(&labels).map(|c| c.get())
            })
            .sum()
    }

    /// Successful commands so far.
    pub fn ok(&self) -> u64 {
        self.ok.get()
    }

    /// The durations of its commands (all outcomes) so far.
    pub fn durations(&self) -> latency::Snapshot {
        self.duration.snapshot()
    }

    /// Records how long a phase of a plugin call took.
    pub fn phase(&self, phase: Phase, took: Duration) {
        if !self.enabled() {
            return;
        }
        let h = match phase {
            Phase::QueueWait => &self.queue_wait,
            Phase::Instantiate => &self.instantiate,
            Phase::Run => &self.run,
        };
        h.observe(took);
    }
}

/// What a collector writes on a scrape: gauges and counters read from an engine's own state.
pub struct Scrape<'a, 'b> {
    enc: &'b mut DescriptorEncoder<'a>,
}

/// Labels of a collected sample: pairs of name and value.
pub type Labels = Vec<(&'static str, String)>;

impl Scrape<'_, '_> {
    /// One sample with no labels.
    fn one(
        &mut self,
        name: &str,
        help: &str,
        unit: Option<&Unit>,
        m: impl EncodeMetric,
    ) -> std::fmt::Result {
        let e = self
            .enc
            .encode_descriptor(name, help, unit, m.metric_type())?;
        m.encode(e)
    }

    /// A family of samples of kind `kind`.
    fn family<M: EncodeMetric>(
        &mut self,
        name: &str,
        help: &str,
        kind: MetricType,
        samples: impl IntoIterator<Item = (Labels, M)>,
    ) -> std::fmt::Result {
        let mut e = self.enc.encode_descriptor(name, help, None, kind)?;
        for (labels, m) in samples {
            m.encode(e.encode_family(&labels)?)?;
        }
        Ok(())
    }

    /// One gauge with no labels.
    pub fn gauge(&mut self, name: &str, help: &str, value: f64) -> std::fmt::Result {
        self.one(name, help, None, ConstGauge::new(value))
    }

    /// A gauge family.
    pub fn gauges(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, f64)>,
    ) -> std::fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstGauge::new(v)));
        self.family(name, help, MetricType::Gauge, samples)
    }

    /// One counter with no labels (`name` without `_total`).
    pub fn counter(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        self.one(name, help, None, ConstCounter::new(value))
    }

    /// One counter of fractional value (seconds), no labels.
    pub fn counter_f64(&mut self, name: &str, help: &str, value: f64) -> std::fmt::Result {
        self.one(name, help, None, ConstCounter::new(value))
    }

    /// A counter family (values `u64`, or `f64` for seconds).
    pub fn counters<N: prometheus_client::encoding::EncodeCounterValue>(
        &mut self,
        name: &str,
        help: &str,
        samples: impl IntoIterator<Item = (Labels, N)>,
    ) -> std::fmt::Result {
        let samples = samples.into_iter().map(|(l, v)| (l, ConstCounter::new(v)));
        self.family(name, help, MetricType::Counter, samples)
    }

    /// A gauge in bytes (`name` ends `_bytes`).
    pub fn bytes(&mut self, name: &str, help: &str, value: u64) -> std::fmt::Result {
        self.one(
            name,
            help,
            Some(&Unit::Bytes),
            ConstGauge::new(value as f64),
        )
    }
}

/// A collector from a closure an engine registers: it reads the engine's state on each scrape.
struct FnCollector<F>(F);

impl<F> std::fmt::Debug for FnCollector<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("FnCollector")
    }
}

impl<F> Collector for FnCollector<F>
where
    F: Fn(&mut Scrape<'_, '_>) -> std::fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        (self.0)(&mut Scrape { enc: &mut encoder })
    }
}

/// Registers `f` to run on every scrape.
pub fn collect<F>(r: &mut Registry, f: F)
where
    F: Fn(&mut Scrape<'_, '_>) -> std::fmt::Result + Send + Sync + 'static,
{
    r.register_collector(Box::new(FnCollector(f)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_function_counts_calls_and_failures_by_code() {
        let mut m = Metrics::new(true);
        let calls = CallMetrics::default();
        calls.register(m.registry());
        let f = calls.function("add", "1.0.0");
        f.finished(None, Duration::from_micros(30));
        f.finished(None, Duration::from_micros(30));
        f.finished(Some("1003"), Duration::from_millis(2));
        calls.unmatched("1001");
        let text = m.encode(Format::Text);
        assert!(
            text.contains("# TYPE mpreg_commands_total counter"),
            "{text}"
        );
        assert!(
            text.contains(
                r#"mpreg_commands_total{function="add",version="1.0.0",outcome="ok",code=""} 2"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"mpreg_commands_total{function="add",version="1.0.0",outcome="error",code="1003"} 1"#
        ));
        assert!(text.contains(
            r#"mpreg_commands_total{function="",version="",outcome="error",code="1001"} 1"#
        ));
        assert!(
            text.contains(r#"mpreg_call_duration_seconds_count{function="add",version="1.0.0"} 3"#)
        );
        assert!(!text.contains("# EOF") && !text.contains("# UNIT"));
        let om = m.encode(Format::OpenMetrics);
        assert!(om.ends_with("# EOF\n") && om.contains("# TYPE mpreg_commands counter"));
        calls.forget("add", "1.0.0");
        let text = m.encode(Format::Text);
        assert!(!text.contains(r#"function="add""#), "{text}");
    }

    #[test]
    fn disabled_handles_record_nothing() {
        let mut m = Metrics::new(false);
        let calls = CallMetrics::default();
        calls.set_enabled(false);
        calls.register(m.registry());
        let f = calls.function("add", "1.0.0");
        f.finished(None, Duration::from_micros(30));
        f.phase(Phase::Run, Duration::from_micros(30));
        calls.unmatched("1001");
        let text = m.encode(Format::Text);
        assert!(text.contains(r#"outcome="ok",code=""} 0"#), "{text}");
        assert!(!text.contains(r#"code="1001""#), "{text}");
    }

    #[test]
    fn collectors_write_gauges_and_counters_at_scrape_time() {
        let mut m = Metrics::new(true);
        let depth = Arc::new(std::sync::atomic::AtomicU64::new(7));
        let d = depth.clone();
        collect(m.registry(), move |s| {
            s.gauges(
                "queue_depth",
                "Messages waiting",
                [(
                    vec![("queue", "jobs".to_owned())],
                    d.load(Ordering::Relaxed) as f64,
                )],
            )?;
            s.counter("things", "Things", 3)?;
            s.bytes("cache_memory", "Bytes", 10)
        });
        depth.store(9, Ordering::Relaxed);
        let text = m.encode(Format::Text);
        assert!(
            text.contains(r#"mpreg_queue_depth{queue="jobs"} 9"#),
            "{text}"
        );
        assert!(
            text.contains("# TYPE mpreg_things_total counter\nmpreg_things_total 3"),
            "{text}"
        );
        assert!(text.contains("mpreg_cache_memory_bytes 10"), "{text}");
    }

    #[test]
    fn info_families_become_gauges_in_text_format() {
        let om = "# HELP mpreg_build Build.\n# TYPE mpreg_build info\nmpreg_build_info{version=\"1\"} 1\n# EOF\n";
        let text = openmetrics_to_text(om);
        assert_eq!(
            text,
            "# HELP mpreg_build_info Build.\n# TYPE mpreg_build_info gauge\nmpreg_build_info{version=\"1\"} 1\n"
        );
        assert_eq!(
            Format::from_accept(Some("application/openmetrics-text; version=1.0.0")),
            Format::OpenMetrics
        );
        assert_eq!(Format::from_accept(Some("text/plain")), Format::Text);
        assert_eq!(Format::from_accept(None), Format::Text);
    }
}
