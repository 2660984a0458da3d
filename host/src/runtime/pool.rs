//! Where guest code runs: a thread pool of its own, so guests cannot delay the node's sessions.
//!
//! Guests that compute yield at every epoch tick, but a tokio worker that always has a ready
//! task looks at the network and at tasks woken from other threads only every 61 polls: with
//! guests spinning on every worker, a connection's `echo` waited 110–200 ms per round trip, and
//! the guests' own deadlines were overrun by seconds. So a call runs its first slice where it
//! was started (a call that finishes in one slice, as most do, costs no hand-off), and a call
//! that has to come back later continues on this pool. The node's own workers then stay free
//! for sessions and timers, and the OS shares the cores between the two.

use std::future::Future;
use std::task::Poll;

use crate::abort::AbortOnDrop;

/// The guest threads.
pub struct GuestPool {
    runtime: Option<tokio::runtime::Runtime>,
}

impl GuestPool {
    /// A pool with one thread per core, each tearing down its parked stores when it idles.
    pub fn new() -> std::io::Result<GuestPool> {
        let threads = std::thread::available_parallelism().map_or(2, usize::from);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("mpreg-guest")
            .on_thread_park(super::teardown::run_deferred)
            .enable_all()
            .build()?;
        Ok(GuestPool {
            runtime: Some(runtime),
        })
    }

    /// Runs `call`: its first slice here, the rest (if any) on the pool. Dropping the returned
    /// future stops the call wherever it runs. `Err` says why the pool's task failed.
    pub fn run<F, T>(&self, call: F) -> impl Future<Output = Result<T, String>> + Send + 'static
    where
        F: Future<Output = T> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.runtime.as_ref().map(|r| r.handle().clone());
        async move {
            let mut call = Box::pin(call);
            if let Poll::Ready(out) = futures_util::poll!(&mut call) {
                return Ok(out);
            }
            let Some(handle) = handle else {
                return Ok(call.await);
            };
            AbortOnDrop(handle.spawn(call))
                .await
                .map_err(|e| e.to_string())
        }
    }
}

impl Drop for GuestPool {
    fn drop(&mut self) {
        // Dropping a runtime blocks, which async code may not do: let its threads go instead.
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}
