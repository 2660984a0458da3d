//! What the runtime counts (docs/observability.md, "Metrics"): the calls to each loaded
//! function (handles made at load, so a call records without a lookup), instantiations, traps
//! and limit hits by kind, refusals, compile time and compiled-code cache hits; and, read at
//! scrape time, run slots and guest memory in use.

use std::sync::Arc;

use super::invoke::InvokeError;
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

/// A failed call's kind as the `kind` label of `mpreg_plugin_failures_total`.
fn failure_kind(e: &InvokeError) -> &'static str {
    match e {
        InvokeError::BadArguments(_) => "bad_arguments",
        InvokeError::Trapped(_) => "trap",
        InvokeError::Returned(_) => "returned_error",
        InvokeError::Timeout(_) => "deadline",
        InvokeError::OutOfFuel(_) => "fuel",
        InvokeError::MemoryLimit(_) => "memory_limit",
        InvokeError::StackOverflow => "stack_overflow",
        InvokeError::NodeMemory(_) => "node_memory",
        InvokeError::Overloaded(_) => "no_instance_slot",
        InvokeError::Busy(_) => "run_slots_busy",
        InvokeError::MemoryBusy(_) => "guest_memory_busy",
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

    /// Counts a failed plugin call by kind.
    pub(super) fn failed(&self, e: &InvokeError) {
        if self.calls_enabled() {
            self.failures
                .get_or_create(&vec![("kind", failure_kind(e))])
                .inc();
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

    /// Registers the families, and a collector of the run slots and guest memory in use.
    pub fn register(&self, r: &mut Registry, runtime: &Arc<super::Runtime>) {
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
        let rt = Arc::downgrade(runtime);
        crate::metrics::collect(r, move |s| {
            let Some(rt) = rt.upgrade() else {
                return Ok(());
            };
            s.gauge(
                "run_slots_in_use",
                "Guest calls running now (run slots taken)",
                rt.slots().running() as f64,
            )?;
            s.gauge(
                "run_slots",
                "Run slots: guest calls that may run at once",
                rt.slots().size() as f64,
            )?;
            s.bytes(
                "guest_memory_used",
                "Guest linear memory held by running calls",
                rt.guest_memory().used() as u64,
            )?;
            s.bytes(
                "guest_memory_limit",
                "The node's guest-memory budget",
                rt.guest_memory().limit() as u64,
            )
        });
    }
}
