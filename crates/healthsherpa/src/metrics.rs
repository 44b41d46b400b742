//! Metric names the HealthSherpa client records (described once by [`describe`]), and the one
//! function that records a finished request.

use std::time::Instant;

use crate::HealthSherpaError;

/// Counter: HealthSherpa requests by `operation` (search, create, update, token) and `outcome`
/// (`ok` or [`HealthSherpaError::kind`]).
pub const REQUESTS_TOTAL: &str = "intake_sync_requests_total";
/// Histogram: HealthSherpa request latency by `operation`, retries after a 401 included.
pub const REQUEST_SECONDS: &str = "intake_sync_request_seconds";

/// Registers descriptions for the metrics above with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(REQUESTS_TOTAL, "HealthSherpa requests by operation and outcome");
    metrics::describe_histogram!(
        REQUEST_SECONDS,
        metrics::Unit::Seconds,
        "HealthSherpa request latency by operation"
    );
}

/// Records one finished request.
pub(crate) fn record<T>(operation: &'static str, started: Instant, result: &Result<T, HealthSherpaError>) {
    let outcome = match result {
        Ok(_) => "ok",
        Err(e) => e.kind(),
    };
    metrics::counter!(REQUESTS_TOTAL, "operation" => operation, "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_SECONDS, "operation" => operation).record(started.elapsed().as_secs_f64());
}
