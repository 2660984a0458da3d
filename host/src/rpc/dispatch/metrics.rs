//! What the dispatcher counts: built-in calls (handles made once per built-in, in the
//! runtime's call families, so `mpreg_commands_total` covers plugins and built-ins alike),
//! commands that matched nothing, and calls sent to and run for peers.

use std::sync::{Arc, OnceLock};

use crate::metrics::{CallMetrics, Counter, Family, FunctionCalls, LatencyHistogram, Registry};
use crate::rpc::builtins::Builtins;

/// The dispatcher's metrics.
pub(super) struct DispatchMetrics {
    /// Every call family (the runtime's).
    pub calls: CallMetrics,
    /// Made at a built-in's first call, so the exposition lists only built-ins in use.
    builtins: foldhash::HashMap<&'static str, OnceLock<Arc<FunctionCalls>>>,
    version: String,
    /// Calls sent to a peer (each attempt).
    pub forwarded: Counter,
    /// Calls sent on to another node after one did not run them.
    pub reroutes: Counter,
    /// Calls peers sent here.
    pub received: Counter,
    /// Round trip of a call sent to a peer, by peer (bounded by the cluster's size).
    pub round_trip: Family<Vec<(&'static str, String)>, LatencyHistogram>,
}

impl DispatchMetrics {
    /// Handles for every built-in, in `calls`.
    pub fn new(calls: CallMetrics, builtins: &Builtins, version: &str) -> DispatchMetrics {
        let builtins = builtins
            .iter()
            .map(|spec| (spec.name, OnceLock::new()))
            .collect();
        DispatchMetrics {
            calls,
            builtins,
            version: version.to_owned(),
            forwarded: Counter::default(),
            reroutes: Counter::default(),
            received: Counter::default(),
            round_trip: Family::default(),
        }
    }

    /// The handles of built-in `name`.
    pub fn builtin(&self, name: &str) -> Option<&Arc<FunctionCalls>> {
        let (name, cell) = self.builtins.get_key_value(name)?;
        Some(cell.get_or_init(|| Arc::new(self.calls.builtin(name, &self.version))))
    }

    /// Every built-in's handles.
    pub fn builtins(&self) -> Vec<Arc<FunctionCalls>> {
        self.builtins
            .values()
            .filter_map(|c| c.get().cloned())
            .collect()
    }

    /// Registers the forwarding counters (the call families are the runtime's to register).
    pub fn register(&self, r: &mut Registry) {
        r.register(
            "forwarded_calls",
            "Calls this node sent to a peer to run (each attempt)",
            self.forwarded.clone(),
        );
        r.register(
            "reroutes",
            "Calls sent on to another node after the one chosen did not run them",
            self.reroutes.clone(),
        );
        r.register_with_unit(
            "peer_call_round_trip",
            "A call sent to a peer until its answer, by peer (the link's round trip plus the call's run there)",
            crate::metrics::Unit::Seconds,
            self.round_trip.clone(),
        );
        r.register(
            "forwarded_calls_received",
            "Calls peers sent this node to run (or pass on)",
            self.received.clone(),
        );
    }
}
