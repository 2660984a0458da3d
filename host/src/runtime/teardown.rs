//! Tearing a call's `Store` down after its caller has the result.
//!
//! Dropping a fresh instance's `Store` returns its pool slot, which resets the dirty pages of its
//! linear memory and tables: about a third of a fresh call's cost (see docs/benchmarks.md). None
//! of that needs to happen before the reply is on its way. So [`Runtime::invoke`] parks the
//! finished `Store` with the worker thread that ran it, and the thread drops it once the reply
//! has been written ([`run_deferred`], called by the session after a flush) or when it has
//! nothing else to do (the node's runtime calls [`run_deferred`] before a worker parks).
//!
//! The teardown stays on the thread that ran the call, so the slot it frees is the one the next
//! call on that thread reuses, still in cache. (Handing stores to another thread was measured and
//! was slower: queued stores rotate through cold slots.)
//!
//! Parked stores hold pool slots, so they are bounded twice: at most [`MAX_PARKED`] per thread,
//! and per runtime at most an eighth of its slots (none at all for a pool of fewer than 16).
//! Past either bound the store is dropped at once, as before; so is a store that grew past
//! [`MAX_PARKED_MEMORY`], whose memory the node's guest-memory budget wants back now.
//!
//! A program that runs a node on a tokio runtime of its own gets the flush-time teardown without
//! doing anything. Adding `.on_thread_park(mpreg::runtime::teardown::run_deferred)` to its
//! runtime builder also tears down, as soon as a worker idles, the stores of calls whose results
//! no connection writes (nested calls, for one).
//!
//! [`Runtime::invoke`]: super::Runtime::invoke

use std::cell::RefCell;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use wasmtime::Store;

use super::host::HostState;

/// Finished stores one thread may hold before it drops them inline.
pub const MAX_PARKED: usize = 2;

/// How many of one runtime's stores may wait for teardown, over all threads.
#[derive(Debug)]
pub(super) struct Budget {
    parked: AtomicUsize,
    limit: usize,
}

impl Budget {
    /// An eighth of the pool's `slots`; nothing for a pool of fewer than 16.
    pub(super) fn for_pool(slots: u32) -> Arc<Budget> {
        let limit = if slots < 16 { 0 } else { slots as usize / 8 };
        Arc::new(Budget {
            parked: AtomicUsize::new(0),
            limit,
        })
    }

    /// Takes one place for a parked store, if the limit allows.
    fn reserve(&self) -> bool {
        self.parked
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok()
    }
}

/// One thread's parked stores, each with the budget it counts against; settles the budgets
/// when dropped, including when the thread exits with stores still parked.
#[derive(Default)]
struct Parked(Vec<(Store<HostState>, Arc<Budget>)>);

impl Drop for Parked {
    fn drop(&mut self) {
        for (store, budget) in self.0.drain(..) {
            drop(store);
            budget.parked.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

thread_local! {
    static PARKED: RefCell<Parked> = RefCell::new(Parked::default());
}

/// A store holding more linear memory than this is torn down at once: parking it would keep that
/// memory out of the node's guest-memory budget until its thread next flushes or idles, and its
/// reset costs little next to what the call did.
pub const MAX_PARKED_MEMORY: usize = 4 << 20;

/// Hands a finished store to this thread's teardown list, or drops it when a bound is reached.
pub(super) fn defer(store: Store<HostState>, budget: &Arc<Budget>) {
    if store.data().limiter.committed > MAX_PARKED_MEMORY {
        drop(store);
        return;
    }
    let mut store = Some(store);
    // `try_with`: a thread already tearing down its locals just drops the store here.
    let _ = PARKED.try_with(|p| {
        if let Ok(mut parked) = p.try_borrow_mut()
            && parked.0.len() < MAX_PARKED
            && budget.reserve()
        {
            parked.0.extend(store.take().map(|s| (s, budget.clone())));
        }
    });
    // Refused (full, over budget, or the list is being drained on this thread): drop it now.
    drop(store);
}

/// Drops the stores this thread has parked. Cheap when there are none.
///
/// Call it where the thread has just sent replies or is about to go idle; the node does so after
/// each flush of a connection and from the tokio runtime's `on_thread_park` hook.
pub fn run_deferred() {
    let parked = PARKED.try_with(|p| p.try_borrow_mut().map(|mut v| std::mem::take(&mut *v)));
    // Dropped outside the borrow: a store's teardown must never find the list borrowed.
    drop(parked);
}

/// Stores parked on this thread (for tests).
pub fn parked() -> usize {
    PARKED
        .try_with(|p| p.try_borrow().map_or(0, |v| v.0.len()))
        .unwrap_or(0)
}
