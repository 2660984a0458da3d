//! The node-wide budget for guest linear memory.
//!
//! Each call is capped by its plugin's memory limit, but that alone let a hundred concurrent
//! `hog(60)` calls take 5 GiB. Every store's limiter reserves its growth here as well: a call
//! starts only when the budget has room for what its plugin's instances begin with (waiting
//! briefly, else 1007 so another node may take it), and a guest growing past what is left is
//! refused (1008). What a store reserved comes back when it is dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::Notify;

/// Bytes of guest linear memory all stores of a node may hold at once.
#[derive(Debug)]
pub struct GuestMemory {
    limit: usize,
    used: AtomicUsize,
    released: Notify,
}

impl GuestMemory {
    /// A budget of `limit` bytes, none in use.
    pub fn new(limit: usize) -> Arc<GuestMemory> {
        Arc::new(GuestMemory {
            limit,
            used: AtomicUsize::new(0),
            released: Notify::new(),
        })
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Reserves `n` bytes if they fit.
    pub fn try_reserve(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|&total| total <= self.limit)
            })
            .is_ok()
    }

    /// Gives back `n` bytes.
    pub fn release(&self, n: usize) {
        if n == 0 {
            return;
        }
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
        self.released.notify_waiters();
    }

    /// Waits up to `patience` until `need` bytes are free (without reserving them: the store's
    /// limiter reserves as the instance grows). `false` when they never were.
    pub async fn admit(&self, need: usize, patience: Duration) -> bool {
        let fits = || self.used().saturating_add(need) <= self.limit;
        if fits() {
            return true;
        }
        let wait = async {
            loop {
                let released = self.released.notified();
                if fits() {
                    return;
                }
                released.await;
            }
        };
        tokio::time::timeout(patience, wait).await.is_ok()
    }
}

/// Half of this machine's memory, the default budget when none is configured; 2 GiB when
/// `/proc/meminfo` cannot be read.
pub fn default_limit() -> usize {
    let total_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|rest| {
                    rest.trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .ok()
                })
        });
    match total_kib {
        Some(kib) => kib.saturating_mul(1024) / 2,
        None => 2 << 30,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_fit_the_limit_and_come_back() {
        let b = GuestMemory::new(100);
        assert!(b.try_reserve(60));
        assert!(!b.try_reserve(41));
        assert!(b.try_reserve(40));
        b.release(60);
        assert_eq!(b.used(), 40);
        b.release(1000);
        assert_eq!(b.used(), 0, "never below zero");
    }

    #[tokio::test(start_paused = true)]
    async fn admission_waits_for_a_release_and_gives_up_after_its_patience() {
        let b = GuestMemory::new(100);
        assert!(b.try_reserve(90));
        assert!(!b.admit(20, Duration::from_millis(50)).await);
        let waiter = tokio::spawn({
            let b = b.clone();
            async move { b.admit(20, Duration::from_secs(5)).await }
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        b.release(90);
        assert!(waiter.await.expect("join"));
    }

    #[test]
    fn the_default_is_half_the_machine() {
        assert!(default_limit() >= 64 << 20);
    }
}
