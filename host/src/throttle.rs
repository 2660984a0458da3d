//! Log lines a remote party can cause at will (a malformed frame, an oversized message) are
//! throttled: at most one per interval, and that one says how many were suppressed since the
//! last. A hostile client then costs the log a line a second, not a line a frame.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// One throttled kind of log line. `const`-constructible, so it can be a `static`.
pub struct Throttle {
    every_ms: u64,
    /// Milliseconds since [`epoch`] of the last line let through, plus one (0: never).
    last: AtomicU64,
    suppressed: AtomicU64,
}

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

impl Throttle {
    /// At most one line per `every`.
    pub const fn new(every: Duration) -> Throttle {
        Throttle {
            every_ms: every.as_millis() as u64,
            last: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)` when a line may be written now (`n` lines were suppressed since the last one),
    /// `None` when this one is suppressed.
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(epoch().elapsed())
    }

    fn admit_at(&self, now: Duration) -> Option<u64> {
        let now = now.as_millis() as u64 + 1;
        let last = self.last.load(Ordering::Relaxed);
        let due = last == 0 || now.saturating_sub(last) >= self.every_ms;
        if due
            && self
                .last
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            return Some(self.suppressed.swap(0, Ordering::Relaxed));
        }
        self.suppressed.fetch_add(1, Ordering::Relaxed);
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_interval_counting_the_rest() {
        let t = Throttle::new(Duration::from_secs(1));
        let at = Duration::from_millis;
        assert_eq!(t.admit_at(at(0)), Some(0));
        for ms in [1, 10, 500, 999] {
            assert_eq!(t.admit_at(at(ms)), None);
        }
        assert_eq!(t.admit_at(at(1000)), Some(4), "four suppressed since");
        assert_eq!(t.admit_at(at(1500)), None);
        assert_eq!(t.admit_at(at(5000)), Some(1));
    }
}
