//! Metric names the receiver records (described once by [`describe`]). Labels: endpoint
//! (operator-configured, so bounded), provider, status, reason — never an id.

/// Counter: webhook requests answered, by `endpoint`, `provider` and HTTP `status`.
pub const REQUESTS_TOTAL: &str = "intake_receiver_requests_total";
/// Histogram: seconds from the start of publish to the broker's confirm, by `provider`.
pub const ENQUEUE_SECONDS: &str = "intake_receiver_enqueue_seconds";
/// Counter: publishes that did not end in a confirm, by `provider` and `reason`.
pub const PUBLISH_FAILURES_TOTAL: &str = "intake_receiver_publish_failures_total";

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
    intake_broker::metrics::describe();
}
