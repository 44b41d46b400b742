//! Shared pieces of the benchmark binaries: latency recording, RSS reading, result formatting.
#![forbid(unsafe_code)]

use std::time::Duration;

use hdrhistogram::Histogram;

/// Spark contact payload from the provider document (~6 KB), the envelope size benchmarked.
pub const SPARK_CONTACT: &str = include_str!("../../../tests/fixtures/spark_contact.json");

/// Latency histogram in microseconds, 1 µs to 60 s.
pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// Records one latency.
pub fn record(h: &mut Histogram<u64>, d: Duration) {
    let _ = h.record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

/// A percentile of a histogram, in milliseconds.
pub fn percentile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Peak resident set size (VmHWM) of a process, in MiB, from `/proc/<pid>/status`.
pub fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
