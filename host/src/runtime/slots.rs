//! How many guest calls run at once: a bounded pool, so guests cannot starve the node.
//!
//! A guest that computes yields to the async runtime at every epoch tick, and with no bound
//! on how many do so, a thousand spinning guests filled the run queue: another connection's
//! `echo` waited 2.5 s for its turn, and a guest's deadline (checked only when it runs) was
//! overrun by seconds. With at most a few calls per core running, session and timer tasks wait
//! behind a handful of guests, and each running guest gets a tick often enough to meet its
//! deadline within a few ticks. A call waits for a slot for at most its own time limit, then
//! gets 1007 without having run (so another node may take it). A guest waiting on a nested
//! `call` gives its slot back meanwhile, so nested calls cannot deadlock the pool.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The pool's slots.
#[derive(Debug, Clone)]
pub struct RunSlots {
    sem: Arc<Semaphore>,
    size: usize,
}

/// A running call's place in the pool.
pub type Slot = OwnedSemaphorePermit;

impl RunSlots {
    /// `size` slots; 0 means four per core.
    pub fn new(size: usize) -> RunSlots {
        let size = match size {
            0 => 4 * std::thread::available_parallelism().map_or(2, usize::from),
            n => n,
        };
        RunSlots {
            sem: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// Slots in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Calls running now.
    pub fn running(&self) -> usize {
        self.size - self.sem.available_permits()
    }

    /// Waits for a slot, in arrival order, for at most `patience`.
    pub async fn acquire(&self, patience: Duration) -> Option<Slot> {
        if let Ok(slot) = self.sem.clone().try_acquire_owned() {
            return Some(slot);
        }
        tokio::time::timeout(patience, self.sem.clone().acquire_owned())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// Waits for a slot however long it takes (a guest resuming after a nested call: it has
    /// started, and its own deadline still applies).
    pub async fn reacquire(&self) -> Option<Slot> {
        self.sem.clone().acquire_owned().await.ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn calls_past_the_pool_wait_in_order_and_give_up_after_their_patience() {
        let pool = RunSlots::new(2);
        let a = pool.acquire(Duration::ZERO).await.expect("a");
        let _b = pool.acquire(Duration::ZERO).await.expect("b");
        assert_eq!(pool.running(), 2);
        assert!(pool.acquire(Duration::from_millis(100)).await.is_none());
        let waiter = tokio::spawn({
            let pool = pool.clone();
            async move { pool.acquire(Duration::from_secs(5)).await.is_some() }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        drop(a);
        assert!(waiter.await.expect("join"));
    }

    #[test]
    fn zero_means_four_per_core() {
        assert!(RunSlots::new(0).size() >= 4);
        assert_eq!(RunSlots::new(3).size(), 3);
    }
}
