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

/// CPU seconds (user + system) a process has used so far, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The RabbitMQ server's pid on this machine, if it can be found (for CPU accounting).
pub fn broker_pid() -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|entry| {
        let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok()?;
        (cmdline.contains("beam.smp") && cmdline.contains("rabbit")).then_some(pid)
    })
}

/// CPU used by the broker, the load generator (this process) and the receiver over a phase.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuUse {
    /// RabbitMQ, CPU seconds.
    pub broker: f64,
    /// This benchmark process, CPU seconds.
    pub generator: f64,
    /// The receiver process, CPU seconds.
    pub receiver: f64,
}

/// Samples CPU counters now; `CpuUse::since` gives the use since a sample.
pub fn cpu_sample(receiver: Option<u32>) -> CpuUse {
    CpuUse {
        broker: broker_pid().and_then(cpu_seconds).unwrap_or(0.0),
        generator: cpu_seconds(std::process::id()).unwrap_or(0.0),
        receiver: receiver.and_then(cpu_seconds).unwrap_or(0.0),
    }
}

impl CpuUse {
    /// The use between `earlier` and `self`.
    pub fn since(self, earlier: CpuUse) -> CpuUse {
        CpuUse {
            broker: self.broker - earlier.broker,
            generator: self.generator - earlier.generator,
            receiver: self.receiver - earlier.receiver,
        }
    }
}
