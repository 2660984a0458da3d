//! Warm instances: a plugin version whose calls may reuse instances (`instance_reuse =
//! "serial"`, see [`crate::sandbox::InstanceReuse`]) keeps the instances its finished calls
//! leave, and hands each to one later call at a time.
//!
//! Why: a Python or JavaScript component carries a 12–18 MB interpreter image; instantiating it
//! fresh for every call costs far more than the call (docs/benchmarks.md). A warm instance has
//! its image in place, so a call costs what its function costs.
//!
//! What keeps it safe:
//! - an instance is taken out of the pool for a call and put back only when that call is over,
//!   so two calls never run in one instance;
//! - only an instance whose call returned is put back: a trap, a deadline, a fuel or memory
//!   limit hit, or a call whose future was dropped discards it (it is torn down as any
//!   finished call's instance is);
//! - after `runtime.max_calls_per_instance` calls it is replaced by a fresh one;
//! - the pool belongs to one loaded version: a hot swap or a retire drops the old version and
//!   its idle instances with it, and calls of other versions never see them;
//! - idle instances keep their memory counted in the node's guest-memory budget (their
//!   limiter still holds it) and their instance slot, and at most `runtime.warm_instances`
//!   wait per version.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime::Store;
use wasmtime::component::Instance;

use super::host::HostState;

/// An instance between calls, with the store that owns it.
pub(super) struct Warm {
    pub(super) store: Store<HostState>,
    pub(super) instance: Instance,
    /// Calls it has served.
    pub(super) calls: u32,
}

/// The idle instances of one plugin version.
#[derive(Default)]
pub struct WarmPool {
    idle: Mutex<Vec<Warm>>,
    /// Calls served by an instance an earlier call left (for `describe` and the tests).
    reused: AtomicU64,
}

impl WarmPool {
    /// An idle instance, if one waits; the caller owns it until it gives it back.
    pub(super) fn take(&self) -> Option<Warm> {
        let warm = self.idle.lock().ok()?.pop();
        if warm.is_some() {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        warm
    }

    /// Puts `warm` back for a later call; hands it back when `cap` instances already wait
    /// (the caller tears it down).
    pub(super) fn give(&self, warm: Warm, cap: usize) -> Option<Warm> {
        let Ok(mut idle) = self.idle.lock() else {
            return Some(warm);
        };
        if idle.len() >= cap {
            return Some(warm);
        }
        idle.push(warm);
        None
    }

    /// Instances waiting now.
    pub fn idle(&self) -> usize {
        self.idle.lock().map(|i| i.len()).unwrap_or(0)
    }

    /// Calls that ran in an instance an earlier call had left.
    pub fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }

    /// Drops every idle instance (their memory and slots go back now).
    pub fn clear(&self) {
        let drained: Vec<Warm> = match self.idle.lock() {
            Ok(mut idle) => std::mem::take(&mut *idle),
            Err(_) => return,
        };
        drop(drained);
    }
}

impl std::fmt::Debug for WarmPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WarmPool")
            .field("idle", &self.idle())
            .field("reused", &self.reused())
            .finish()
    }
}
