//! The last seconds of a node's counters, sampled once a second, and the rates and latency
//! percentiles read from them: what the dashboard, `mpreg top` and the monitoring endpoints
//! show as "now". Counters only grow, so a rate is the difference of two samples over the time
//! between them, and a window's percentiles come from the difference of two histogram
//! snapshots.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde::Serialize;

use crate::metrics::latency::Snapshot;

/// Samples kept at full detail: rates and percentiles are read over the last ten seconds.
const RECENT: usize = 11;
/// Points of the trend line kept (five minutes).
const TREND: usize = 300;

/// One function version's counters at a sample.
#[derive(Debug, Clone)]
pub struct FnTick {
    /// Built-in or plugin.
    pub builtin: bool,
    /// Successful calls so far.
    pub ok: u64,
    /// Failed calls so far.
    pub errors: u64,
    /// Durations so far.
    pub durations: Snapshot,
}

/// The node's counters at one moment.
#[derive(Debug, Clone, Default)]
pub struct Tick {
    /// Unix seconds.
    pub at: f64,
    /// RPC requests ok / error / refused so far.
    pub rpc: [u64; 3],
    /// Per function version (`name@version`).
    pub functions: BTreeMap<String, FnTick>,
    /// Messages published here so far.
    pub published: u64,
    /// Notifications delivered here so far.
    pub notifications: u64,
    /// Calls forwarded to peers so far.
    pub forwarded: u64,
}

/// A function's rates over the window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct FnRates {
    /// `name@version`.
    pub function: String,
    /// A built-in.
    pub builtin: bool,
    /// Calls per second (all outcomes).
    pub calls_per_s: f64,
    /// Failed calls per second.
    pub errors_per_s: f64,
    /// Median duration, ms (`null` without calls in the window).
    pub p50_ms: Option<f64>,
    /// 99th percentile, ms.
    pub p99_ms: Option<f64>,
    /// Calls so far (ok + errors).
    pub total_calls: u64,
    /// Failures so far.
    pub total_errors: u64,
}

/// The node's rates over the window, and its trend.
#[derive(Debug, Clone, Serialize, PartialEq, Default)]
pub struct Rates {
    /// Seconds the rates cover (0 until two samples exist).
    pub window_s: f64,
    /// RPC requests per second (answered ok or with an error).
    pub requests_per_s: f64,
    /// Of which answered with an error.
    pub errors_per_s: f64,
    /// Refused before running, per second.
    pub refused_per_s: f64,
    /// Calls of every function per second.
    pub calls_per_s: f64,
    /// Percentiles of call durations over the window (every function), ms.
    pub p50_ms: Option<f64>,
    /// 90th percentile.
    pub p90_ms: Option<f64>,
    /// 99th percentile.
    pub p99_ms: Option<f64>,
    /// Messages published per second.
    pub published_per_s: f64,
    /// Notifications delivered per second.
    pub notifications_per_s: f64,
    /// Calls forwarded to peers per second.
    pub forwarded_per_s: f64,
    /// Per function version with calls so far, busiest first.
    pub functions: Vec<FnRates>,
}

/// One point of the trend line.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Point {
    /// Unix seconds.
    pub at: f64,
    /// Requests per second.
    pub requests_per_s: f64,
    /// Calls per second.
    pub calls_per_s: f64,
    /// Errors per second.
    pub errors_per_s: f64,
    /// Call p99 over the last second, ms.
    pub p99_ms: Option<f64>,
    /// Notifications per second.
    pub notifications_per_s: f64,
}

/// The samples.
#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<(VecDeque<Tick>, VecDeque<Point>)>,
}

fn per_s(new: u64, old: u64, dt: f64) -> f64 {
    if dt <= 0.0 {
        0.0
    } else {
        new.saturating_sub(old) as f64 / dt
    }
}

fn ms(s: Option<f64>) -> Option<f64> {
    s.map(|v| (v * 1e6).round() / 1e3)
}

/// Rates between two ticks.
pub fn rates(old: &Tick, new: &Tick) -> Rates {
    let dt = new.at - old.at;
    let mut all = Snapshot::default();
    let mut calls = 0.0;
    let mut functions: Vec<FnRates> = new
        .functions
        .iter()
        .filter(|(_, f)| f.ok + f.errors > 0)
        .map(|(name, f)| {
            let before = old.functions.get(name);
            let d = before.map_or(f.durations, |b| f.durations.since(&b.durations));
            all.add(&d);
            let (ok0, err0) = before.map_or((0, 0), |b| (b.ok, b.errors));
            let r = FnRates {
                function: name.clone(),
                builtin: f.builtin,
                calls_per_s: per_s(f.ok + f.errors, ok0 + err0, dt),
                errors_per_s: per_s(f.errors, err0, dt),
                p50_ms: ms(d.quantile(0.5)),
                p99_ms: ms(d.quantile(0.99)),
                total_calls: f.ok + f.errors,
                total_errors: f.errors,
            };
            calls += r.calls_per_s;
            r
        })
        .collect();
    functions.sort_by(|a, b| {
        b.calls_per_s
            .total_cmp(&a.calls_per_s)
            .then(b.total_calls.cmp(&a.total_calls))
            .then(a.function.cmp(&b.function))
    });
    Rates {
        window_s: dt.max(0.0),
        requests_per_s: per_s(new.rpc[0] + new.rpc[1], old.rpc[0] + old.rpc[1], dt),
        errors_per_s: per_s(new.rpc[1], old.rpc[1], dt),
        refused_per_s: per_s(new.rpc[2], old.rpc[2], dt),
        calls_per_s: calls,
        p50_ms: ms(all.quantile(0.5)),
        p90_ms: ms(all.quantile(0.9)),
        p99_ms: ms(all.quantile(0.99)),
        published_per_s: per_s(new.published, old.published, dt),
        notifications_per_s: per_s(new.notifications, old.notifications, dt),
        forwarded_per_s: per_s(new.forwarded, old.forwarded, dt),
        functions,
    }
}

impl History {
    fn lock(&self) -> std::sync::MutexGuard<'_, (VecDeque<Tick>, VecDeque<Point>)> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds a sample (and a trend point from the one before it).
    pub fn push(&self, tick: Tick) {
        let mut g = self.lock();
        let (recent, trend) = &mut *g;
        if let Some(prev) = recent.back() {
            let r = rates(prev, &tick);
            trend.push_back(Point {
                at: tick.at,
                requests_per_s: r.requests_per_s,
                calls_per_s: r.calls_per_s,
                errors_per_s: r.errors_per_s,
                p99_ms: r.p99_ms,
                notifications_per_s: r.notifications_per_s,
            });
            if trend.len() > TREND {
                trend.pop_front();
            }
        }
        recent.push_back(tick);
        if recent.len() > RECENT {
            recent.pop_front();
        }
    }

    /// Rates over the last ten seconds (or as many as were sampled); `now`, when given, is a
    /// fresh tick read at the call, so totals are current.
    pub fn rates(&self, now: Option<Tick>) -> Rates {
        let g = self.lock();
        let (recent, _) = &*g;
        match (recent.front(), now.as_ref().or(recent.back())) {
            (Some(old), Some(new)) => rates(old, new),
            (None, Some(new)) => rates(
                &Tick {
                    at: new.at,
                    ..Tick::default()
                },
                new,
            ),
            _ => Rates::default(),
        }
    }

    /// The trend line, oldest first, at most `last` points.
    pub fn trend(&self, last: usize) -> Vec<Point> {
        let g = self.lock();
        let skip = g.1.len().saturating_sub(last);
        g.1.iter().skip(skip).copied().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::LatencyHistogram;
    use std::time::Duration;

    fn tick(at: f64, ok: u64, errors: u64, h: &LatencyHistogram) -> Tick {
        let mut functions = BTreeMap::new();
        functions.insert(
            "add@1.0.0".to_owned(),
            FnTick {
                builtin: false,
                ok,
                errors,
                durations: h.snapshot(),
            },
        );
        Tick {
            at,
            rpc: [ok, errors, 0],
            functions,
            published: ok * 2,
            ..Tick::default()
        }
    }

    #[test]
    fn rates_are_differences_over_time_and_percentiles_cover_the_window() {
        let h = LatencyHistogram::default();
        let history = History::default();
        for _ in 0..10 {
            h.observe(Duration::from_millis(50));
        }
        history.push(tick(100.0, 10, 0, &h));
        for _ in 0..100 {
            h.observe(Duration::from_micros(15));
        }
        history.push(tick(102.0, 100, 10, &h));
        let r = history.rates(None);
        assert_eq!(r.window_s, 2.0);
        assert_eq!(r.requests_per_s, 50.0);
        assert_eq!(r.errors_per_s, 5.0);
        assert_eq!(r.published_per_s, 90.0);
        let f = &r.functions[0];
        assert_eq!((f.calls_per_s, f.errors_per_s), (50.0, 5.0));
        assert_eq!((f.total_calls, f.total_errors), (110, 10));
        // The window saw only the 15 µs calls: the 50 ms ones came before it.
        assert!(f.p99_ms.expect("calls") < 0.03, "{f:?}");
        let trend = history.trend(10);
        assert_eq!(trend.len(), 1);
        assert_eq!(trend[0].requests_per_s, 50.0);
    }

    #[test]
    fn no_samples_means_no_rates() {
        let history = History::default();
        assert_eq!(history.rates(None), Rates::default());
        assert!(history.trend(5).is_empty());
    }
}
