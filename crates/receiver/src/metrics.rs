//! Metric names the receiver records (described once by [`describe`]). Labels: endpoint
//! (operator-configured, so bounded), provider, status, reason — never an id.

/// Counter: webhook requests answered, by `endpoint`, `provider` and HTTP `status`.
pub const REQUESTS_TOTAL: &str = "intake_receiver_requests_total";
/// Histogram: seconds from the start of publish to the broker's confirm, by `provider`.
pub const ENQUEUE_SECONDS: &str = "intake_receiver_enqueue_seconds";
/// Counter: publishes that did not end in a confirm, by `provider` and `reason`.
pub const PUBLISH_FAILURES_TOTAL: &str = "intake_receiver_publish_failures_total";

/// Counter: requests refused by an abuse limit, by `endpoint`, `provider` and `reason`
/// (`rate_limit` → 429, `in_flight` → 503); each is also in [`REQUESTS_TOTAL`] by status.
pub const LIMITED_TOTAL: &str = "intake_receiver_limited_total";
/// Gauge: webhook requests in flight (holding a place of `INTAKE_MAX_IN_FLIGHT`), by `endpoint`.
pub const IN_FLIGHT: &str = "intake_receiver_in_flight";

/// Registers descriptions with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(
        REQUESTS_TOTAL,
        "Webhook requests answered, by endpoint, provider and status"
    );
    metrics::describe_histogram!(
        ENQUEUE_SECONDS,
        metrics::Unit::Seconds,
        "Time from publish to broker confirm of an accepted webhook"
    );
    metrics::describe_counter!(PUBLISH_FAILURES_TOTAL, "Publishes not confirmed, by reason");
    metrics::describe_counter!(
        LIMITED_TOTAL,
        "Requests refused by the rate limit (429) or the in-flight cap (503), by reason"
    );
    metrics::describe_gauge!(IN_FLIGHT, "Webhook requests in flight");
    intake_broker::metrics::describe();
}
