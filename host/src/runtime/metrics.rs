//! What the runtime counts (docs/observability.md, "Metrics"): the calls to each loaded
//! function (handles made at load, so a call records without a lookup), instantiations, traps
//! and limit hits by kind, refusals, compile time and compiled-code cache hits; and, read at
//! scrape time, run slots and guest memory in use.

use crate::metrics::{CallMetrics, Counter, Family, Histogram, Registry, Unit};

/// The runtime's metrics.
#[derive(Debug, Clone)]
pub struct RuntimeMetrics {
    /// Calls to functions, by function and version (the dispatcher records built-ins here too).
    pub calls: CallMetrics,
    instantiations: Counter,
    failures: Family<Vec<(&'static str, &'static str)>, Counter>,
    compile: Histogram,
    compile_cache_hits: Counter,
}

impl Default for RuntimeMetrics {
    fn default() -> Self {
        RuntimeMetrics {
            calls: CallMetrics::default(),
            instantiations: Counter::default(),
            failures: Family::default(),
            // Compiles take milliseconds to tens of seconds.
            compile: Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.001, 2.0, 16,
            )),
            compile_cache_hits: Counter::default(),
        }
    }
}

impl RuntimeMetrics {
    /// Counts an instantiation.
    pub(super) fn instantiated(&self) {
        if self.calls_enabled() {
            self.instantiations.inc();
        }
    }

    fn calls_enabled(&self) -> bool {
        self.calls.enabled()
    }

    /// Counts a failed plugin call of `kind` (`InvokeError::kind`).
    pub(super) fn failed(&self, kind: &'static str) {
        if self.calls_enabled() {
            self.failures.get_or_create(&vec![("kind", kind)]).inc();
        }
    }

    /// Records a compile.
    pub(super) fn compiled(&self, took: std::time::Duration) {
        self.compile.observe(took.as_secs_f64());
    }

    /// Counts code loaded from the compiled-code cache.
    pub(super) fn cache_hit(&self) {
        self.compile_cache_hits.inc();
    }

    /// Registers the families.
    pub fn register(&self, r: &mut Registry) {
        self.calls.register(r);
        r.register(
            "instantiations",
            "Plugin component instances created",
            self.instantiations.clone(),
        );
        r.register(
            "plugin_failures",
            "Plugin calls that failed, by kind (trap, deadline, fuel, memory_limit, stack_overflow, node_memory, returned_error, bad_arguments, and refusals: no_instance_slot, run_slots_busy, guest_memory_busy)",
            self.failures.clone(),
        );
        r.register_with_unit(
            "compile",
            "Time compiling a component with Cranelift",
            Unit::Seconds,
            self.compile.clone(),
        );
        r.register(
            "compile_cache_hits",
            "Components loaded from the compiled-code cache instead of compiled",
            self.compile_cache_hits.clone(),
        );
    }
}
