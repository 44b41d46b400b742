//! Metric names of the sync crate (described once by [`describe`]); the HealthSherpa request
//! metrics live in `intake_healthsherpa::metrics`.

/// Counter: sync messages handled, by `outcome` (created, updated, coalesced — its state was
/// already sent, superseded — a newer change will send it, no_contact, retried, dead_lettered,
/// requeued).
pub const MESSAGES_TOTAL: &str = "intake_sync_messages_total";
/// Counter: sync dead letters by `reason` (missing_field, rejected, retries_exhausted, …).
pub const DEAD_LETTERS_TOTAL: &str = "intake_sync_dead_letters_total";
/// Histogram: time to handle one sync message, lock wait included.
pub const PROCESSING_SECONDS: &str = "intake_sync_processing_seconds";
/// Counter: outbox rows published by the relay.
pub const OUTBOX_PUBLISHED_TOTAL: &str = "intake_outbox_published_total";
/// Gauge: unpublished outbox rows, as the relay last saw them.
pub const OUTBOX_BACKLOG: &str = "intake_outbox_backlog";

/// Registers descriptions for the metrics above (and the client's) with the installed recorder.
pub fn describe() {
    intake_healthsherpa::metrics::describe();
    intake_broker::metrics::describe();
    metrics::describe_counter!(MESSAGES_TOTAL, "Sync messages handled by outcome");
    metrics::describe_counter!(DEAD_LETTERS_TOTAL, "Sync messages dead-lettered by reason");
    metrics::describe_histogram!(
        PROCESSING_SECONDS,
        metrics::Unit::Seconds,
        "Time to handle one sync message"
    );
    metrics::describe_counter!(OUTBOX_PUBLISHED_TOTAL, "Outbox rows published to the broker");
    metrics::describe_gauge!(OUTBOX_BACKLOG, "Unpublished outbox rows");
}
