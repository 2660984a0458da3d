//! How many requests one connection may start: the admission rule that keeps a client which
//! pipelines large replies, and does not read them, from making the node build them all.
//!
//! A request holds its in-flight slot until its reply has been handed to the socket, so a
//! connection never has more than `max_in_flight` requests *or unwritten replies*. That alone
//! still lets 1,024 one-MiB replies pile up (a GiB for one socket), so admission also counts
//! bytes: the replies built and not yet written, and the replies the running requests are about
//! to build, estimated from this connection's recent reply sizes. A connection whose replies are
//! small keeps its whole window; one whose replies are large gets as many slots as fit its byte
//! budget. Before any reply is seen the estimate is pessimistic (a window of [`START_WINDOW`]),
//! so a burst cannot be admitted wholesale before the first replies show what they weigh.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Requests admitted before the first replies tell how large they are.
pub const START_WINDOW: usize = 64;

/// One connection's admission state. The session owns it; request tasks share only
/// [`Unwritten`].
#[derive(Debug)]
pub struct Window {
    /// Bytes of replies (built or expected) the connection may hold.
    budget: usize,
    /// Requests (running or with an unwritten reply) at most.
    max_in_flight: usize,
    /// Moving average of this connection's reply sizes, in bytes.
    avg_reply: usize,
    unwritten: Unwritten,
}

/// Bytes of replies built by request tasks and not yet written to the socket.
#[derive(Debug, Clone, Default)]
pub struct Unwritten(Arc<AtomicUsize>);

impl Unwritten {
    /// A task has built a reply of `n` bytes and queued it.
    pub fn add(&self, n: usize) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    fn sub(&self, n: usize) {
        // Never below zero, even if a caller miscounts.
        let _ = self
            .0
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_sub(n))
            });
    }

    fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

impl Window {
    pub fn new(budget: usize, max_in_flight: usize) -> Window {
        let budget = budget.max(1);
        Window {
            budget,
            max_in_flight: max_in_flight.max(1),
            avg_reply: budget.div_ceil(START_WINDOW),
            unwritten: Unwritten::default(),
        }
    }

    /// The counter request tasks add their replies to.
    pub fn unwritten(&self) -> Unwritten {
        self.unwritten.clone()
    }

    /// May a new request start while `held` requests hold a slot (running or unwritten)?
    pub fn admits(&self, held: usize) -> bool {
        if held >= self.max_in_flight {
            return false;
        }
        if held == 0 {
            // One request at a time always runs, whatever its replies weigh.
            return true;
        }
        let expected = held.saturating_mul(self.avg_reply);
        self.unwritten.get() < self.budget && expected < self.budget
    }

    /// A reply of `n` bytes went to the socket. `queued` says it came from a request task
    /// (counted in [`Unwritten`]) rather than being answered inline.
    pub fn written(&mut self, n: usize, queued: bool) {
        if queued {
            self.unwritten.sub(n);
        }
        // avg += (n - avg) / 8, in integers.
        self.avg_reply = self.avg_reply - self.avg_reply / 8 + n / 8;
    }

    /// Requests that may be held at once with replies of the current average size.
    #[cfg(test)]
    fn slots(&self) -> usize {
        (self.budget / self.avg_reply.max(1)).clamp(1, self.max_in_flight)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    #[test]
    fn starts_with_a_small_window_and_opens_it_for_small_replies() {
        let mut w = Window::new(32 * MIB, 1024);
        assert_eq!(w.slots(), START_WINDOW);
        assert!(w.admits(START_WINDOW - 1));
        assert!(!w.admits(START_WINDOW));
        for _ in 0..200 {
            w.written(100, false);
        }
        assert!(w.admits(1023));
        assert!(!w.admits(1024), "never past max_in_flight");
    }

    #[test]
    fn large_replies_shrink_the_window_to_the_byte_budget() {
        let mut w = Window::new(32 * MIB, 1024);
        for _ in 0..100 {
            w.written(MIB, false);
        }
        let slots = w.slots();
        assert!((30..=34).contains(&slots), "{slots}");
        assert!(!w.admits(40));
    }

    #[test]
    fn unwritten_replies_stop_admission_until_written() {
        let mut w = Window::new(4 * MIB, 1024);
        for _ in 0..100 {
            w.written(10, false);
        }
        let tasks = w.unwritten();
        tasks.add(5 * MIB);
        assert!(!w.admits(3), "over budget in unwritten replies");
        w.written(5 * MIB, true);
        // One huge reply raised the average, but the budget is free again.
        assert!(w.admits(1));
    }

    #[test]
    fn one_request_always_runs() {
        let mut w = Window::new(1024, 4);
        w.written(100 * MIB, false);
        w.unwritten().add(100 * MIB);
        assert!(w.admits(0));
        assert!(!w.admits(1));
    }

    #[test]
    fn miscounted_writes_do_not_underflow() {
        let mut w = Window::new(MIB, 8);
        w.written(500, true);
        assert!(w.admits(1));
    }
}
