//! Metric names the consumer runtime records, for every consumer (label `consumer`: `worker`,
//! `sync`, `dead_letters`), described once by [`describe`].

/// Counter: deliveries settled, by `consumer` and `outcome` (`done`, `retried`, `dead_lettered`,
/// `handed_back`).
pub const DELIVERIES_TOTAL: &str = "intake_consumer_deliveries_total";
/// Histogram: time from taking a delivery to settling it, by `consumer`.
pub const HANDLE_SECONDS: &str = "intake_consumer_handle_seconds";
/// Gauge: deliveries being handled right now, by `consumer`.
pub const IN_FLIGHT: &str = "intake_consumer_in_flight";
/// Counter: retry or dead-letter publishes that failed and will be tried again, by `consumer`
/// and `target` (`retry`, `dead_letter`).
pub const PUBLISH_FAILURES_TOTAL: &str = "intake_consumer_publish_failures_total";
/// Gauge: deliveries held back because their retry or dead-letter publish keeps failing (the
/// consumer is paused on them), by `consumer`.
pub const WAITING_TO_PUBLISH: &str = "intake_consumer_waiting_to_publish";
/// Histogram: deliveries per batch handed to a batch handler (the ingest worker's group commit),
/// by `consumer`.
pub const BATCH_SIZE: &str = "intake_consumer_batch_size";
/// Counter: dead letters written to Postgres by the recorder, by `source` and `reason`.
pub const DEAD_LETTERS_RECORDED_TOTAL: &str = "intake_dead_letters_recorded_total";

/// Registers descriptions for the metrics above with the installed recorder.
pub fn describe() {
    metrics::describe_counter!(DELIVERIES_TOTAL, "Deliveries settled, by consumer and outcome");
    metrics::describe_histogram!(
        HANDLE_SECONDS,
        metrics::Unit::Seconds,
        "Time from taking a delivery to settling it"
    );
    metrics::describe_gauge!(IN_FLIGHT, "Deliveries being handled right now");
    metrics::describe_histogram!(BATCH_SIZE, "Deliveries per batch handed to a batch handler");
    metrics::describe_counter!(
        PUBLISH_FAILURES_TOTAL,
        "Retry or dead-letter publishes that failed and are being tried again"
    );
    metrics::describe_gauge!(
        WAITING_TO_PUBLISH,
        "Deliveries held back because their retry or dead-letter publish keeps failing"
    );
    metrics::describe_counter!(
        DEAD_LETTERS_RECORDED_TOTAL,
        "Dead letters recorded in Postgres, by source and reason"
    );
}
