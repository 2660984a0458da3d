//! The wall clock as MPREG reads it: one place that turns `SystemTime` into the Unix timestamps
//! the wire carries (seconds as `f64`) and the ones storage and gossip keep (milliseconds).
//!
//! A clock before 1970 reads as 0 rather than failing: a timestamp is information, never a
//! reason to refuse a request.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the Unix epoch, as MPREG timestamps are.
pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Milliseconds since the Unix epoch.
pub fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Nanoseconds since the Unix epoch (a seed for ids, not a measurement).
pub fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_three_readings_agree() {
        let s = unix_now();
        let ms = unix_millis();
        let ns = unix_nanos();
        assert!(s > 1.6e9, "after 2020: {s}");
        assert!((ms as f64 / 1000.0 - s).abs() < 5.0);
        assert!(((ns / 1_000_000) as i128 - ms as i128).abs() < 5_000);
    }
}
