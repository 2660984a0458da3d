//! Rate limits on what clients send (docs/limits.md, "Rates"): token buckets of requests and of
//! bytes per connection, and of requests per identity (shared by every connection of one
//! authenticated identity). A client over its rate is not answered with errors, which would
//! still cost the node a parse per frame: its connection is simply not read until the bucket
//! has refilled, so TCP pushes back on the sender and everyone else keeps their share. Each
//! pause is counted by the limit that caused it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A token bucket: `rate` tokens a second, at most `burst` saved up. Taking more than is there
/// leaves a debt, and [`Bucket::take`] says how long until it is paid.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket of `rate` a second holding one second's worth (at least `min_burst`).
    pub fn new(rate: u64, min_burst: u64, now: Instant) -> Bucket {
        let burst = rate.max(min_burst).max(1) as f64;
        Bucket {
            rate: rate.max(1) as f64,
            burst,
            tokens: burst,
            at: now,
        }
    }

    /// Takes `n` tokens at `now`; the wait before the bucket is out of debt again (zero while
    /// tokens remain).
    pub fn take(&mut self, n: f64, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = now;
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst) - n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

/// Which limit paused a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `server.max_requests_per_second`.
    ConnectionRequests,
    /// `server.max_bytes_per_second`.
    ConnectionBytes,
    /// `server.max_requests_per_second_per_identity`.
    IdentityRequests,
}

impl Limit {
    /// Its label in `mpreg_throttled_total`.
    pub fn label(self) -> &'static str {
        match self {
            Limit::ConnectionRequests => "connection_requests",
            Limit::ConnectionBytes => "connection_bytes",
            Limit::IdentityRequests => "identity_requests",
        }
    }
}

/// The rates, from `[server]`; 0 turns one off.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    /// Requests a second per connection.
    pub requests: u64,
    /// Bytes a second per connection.
    pub bytes: u64,
    /// Requests a second per identity.
    pub identity_requests: u64,
}

/// The shared buckets of identities, each kept while a connection of it is open.
#[derive(Default)]
pub struct Identities {
    buckets: Mutex<HashMap<Arc<str>, Arc<Mutex<Bucket>>>>,
}

impl Identities {
    /// The bucket of `name` (made full at `rate`).
    fn bucket(&self, name: &Arc<str>, rate: u64, now: Instant) -> Arc<Mutex<Bucket>> {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(name.clone())
            .or_insert_with(|| Arc::new(Mutex::new(Bucket::new(rate, 1, now))))
            .clone()
    }

    /// Forgets the buckets no connection holds any more.
    fn prune(&self) {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, b| Arc::strong_count(b) > 1);
    }

    /// Identities with a bucket now.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether none has.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One connection's limits.
pub struct ConnectionRate {
    requests: Option<Bucket>,
    bytes: Option<Bucket>,
    identity: Option<Arc<Mutex<Bucket>>>,
    identities: Option<Arc<Identities>>,
}

impl ConnectionRate {
    /// The limits of a connection of `identity` (`None`: anonymous, which has no shared
    /// bucket), under `rates`.
    pub fn new(
        rates: Rates,
        identity: Option<&Arc<str>>,
        identities: &Arc<Identities>,
        max_frame: usize,
        now: Instant,
    ) -> ConnectionRate {
        let on = |r: u64| r > 0;
        let shared = identity.filter(|_| on(rates.identity_requests));
        ConnectionRate {
            requests: on(rates.requests).then(|| Bucket::new(rates.requests, 1, now)),
            // One frame of the largest size always fits the burst.
            bytes: on(rates.bytes).then(|| Bucket::new(rates.bytes, max_frame as u64, now)),
            identity: shared.map(|name| identities.bucket(name, rates.identity_requests, now)),
            identities: shared.map(|_| identities.clone()),
        }
    }

    /// Whether any limit is on.
    pub fn enabled(&self) -> bool {
        self.requests.is_some() || self.bytes.is_some() || self.identity.is_some()
    }

    /// Charges a request frame of `len` bytes at `now`: how long not to read the connection,
    /// and the limit that asks the longest.
    pub fn charge(&mut self, len: usize, now: Instant) -> Option<(Duration, Limit)> {
        let mut worst: Option<(Duration, Limit)> = None;
        let mut consider = |wait: Duration, limit: Limit| {
            if wait > Duration::ZERO && worst.is_none_or(|(w, _)| wait > w) {
                worst = Some((wait, limit));
            }
        };
        if let Some(b) = &mut self.requests {
            consider(b.take(1.0, now), Limit::ConnectionRequests);
        }
        if let Some(b) = &mut self.bytes {
            consider(b.take(len as f64, now), Limit::ConnectionBytes);
        }
        if let Some(b) = &self.identity {
            let wait = b.lock().unwrap_or_else(|e| e.into_inner()).take(1.0, now);
            consider(wait, Limit::IdentityRequests);
        }
        worst
    }
}

impl Drop for ConnectionRate {
    fn drop(&mut self) {
        if let Some(ids) = self.identities.take() {
            self.identity = None;
            ids.prune();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_lets_its_burst_through_then_paces_to_its_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 1, t0);
        for _ in 0..10 {
            assert_eq!(b.take(1.0, t0), Duration::ZERO);
        }
        let wait = b.take(1.0, t0);
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "{wait:?}");
        // After paying the debt and 0.5 s more, five are back.
        let later = t0 + Duration::from_millis(600);
        for _ in 0..5 {
            assert_eq!(b.take(1.0, later), Duration::ZERO);
        }
        assert!(b.take(1.0, later) > Duration::ZERO);
        // Never more than the burst saved up.
        let much_later = later + Duration::from_secs(3600);
        for _ in 0..10 {
            assert_eq!(b.take(1.0, much_later), Duration::ZERO);
        }
        assert!(b.take(1.0, much_later) > Duration::ZERO);
    }

    #[test]
    fn connections_of_one_identity_share_its_bucket_and_it_is_forgotten_after() {
        let ids = Arc::new(Identities::default());
        let t0 = Instant::now();
        let rates = Rates {
            identity_requests: 4,
            ..Rates::default()
        };
        let alice: Arc<str> = "alice".into();
        let mut a = ConnectionRate::new(rates, Some(&alice), &ids, 1 << 20, t0);
        let mut b = ConnectionRate::new(rates, Some(&alice), &ids, 1 << 20, t0);
        let mut anon = ConnectionRate::new(rates, None, &ids, 1 << 20, t0);
        assert!(!anon.enabled());
        for _ in 0..2 {
            assert_eq!(a.charge(10, t0), None);
            assert_eq!(b.charge(10, t0), None);
        }
        let paused = a.charge(10, t0).expect("the shared bucket is empty");
        assert_eq!(paused.1, Limit::IdentityRequests);
        assert_eq!(anon.charge(10, t0), None, "anonymous has no shared bucket");
        assert_eq!(ids.len(), 1);
        drop(a);
        assert_eq!(ids.len(), 1, "b still holds it");
        drop(b);
        assert!(ids.is_empty());
    }

    #[test]
    fn the_longest_wait_wins_and_a_large_frame_fits_the_byte_burst() {
        let ids = Arc::new(Identities::default());
        let t0 = Instant::now();
        let rates = Rates {
            requests: 1000,
            bytes: 100,
            ..Rates::default()
        };
        let mut c = ConnectionRate::new(rates, None, &ids, 4096, t0);
        assert_eq!(c.charge(4096, t0), None, "one largest frame fits");
        let (wait, limit) = c.charge(200, t0).expect("bytes run out first");
        assert_eq!(limit, Limit::ConnectionBytes);
        assert!((wait.as_secs_f64() - 2.0).abs() < 1e-9, "{wait:?}");
    }
}
