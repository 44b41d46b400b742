//! Metric names the worker records, described once by [`describe`]. Labels are bounded:
//! `provider`, `event_type` (from the provider specs, or `unknown`), `outcome`.

/// Counter: events processed, by `provider`, `event_type` and `outcome` (applied, duplicate,
/// parked, released, stale, retried, dead_lettered).
pub const EVENTS_TOTAL: &str = "intake_worker_events_total";
/// Histogram: from receipt by the receiver to the effect committed, by `provider` and `event_type`.
pub const END_TO_END_SECONDS: &str = "intake_worker_end_to_end_seconds";
/// Gauge: events parked right now.
pub const PARKED: &str = "intake_worker_parked_events";
/// Gauge: age of the oldest parked event.
pub const OLDEST_PARKED_SECONDS: &str = "intake_worker_oldest_parked_age_seconds";
/// Gauge: parked events past their deadline that the sweeper has not dead-lettered yet.
pub const PARKED_OVERDUE: &str = "intake_worker_parked_overdue_events";
/// Gauge: unpublished outbox rows (contact changes not yet relayed to the sync queue).
pub const OUTBOX_BACKLOG: &str = "intake_outbox_backlog";
/// Gauge: Unix time of the last sweep whose gauges were all read.
pub const SWEEP_LAST_SUCCESS: &str = "intake_worker_sweep_last_success_timestamp_seconds";
/// Gauge: dead letters that still need an operator (neither replayed nor purged).
pub const DEAD_LETTERS: &str = "intake_worker_dead_letters";
/// Counter: rows deleted by retention, by `table`.
pub const RETENTION_DELETED_TOTAL: &str = "intake_worker_retention_deleted_total";
/// Counter: optional fields read as absent because their value was unreadable, by `provider` and
/// `field` (the declared pointer, `*` for any index, so the label stays bounded).
pub const FIELD_ISSUES_TOTAL: &str = "intake_worker_field_issues_total";
/// Counter: batch transactions that conflicted (deadlock, serialization failure, lock timeout) and
/// were applied again in halves.
pub const BATCH_SPLITS_TOTAL: &str = "intake_worker_batch_splits_total";
/// Counter: deliveries put off to a following transaction of their batch because another
/// transaction held one of their entities.
pub const BATCH_DEFERRED_TOTAL: &str = "intake_worker_batch_deferred_total";

/// Registers descriptions for the metrics above (and the broker's) with the installed recorder.
pub fn describe() {
    intake_broker::metrics::describe();
    intake_runtime::metrics::describe();
    metrics::describe_counter!(
        EVENTS_TOTAL,
        "Events processed by provider, event type and outcome"
    );
    metrics::describe_histogram!(
        END_TO_END_SECONDS,
        metrics::Unit::Seconds,
        "Time from receipt by the receiver to the effect committed"
    );
    metrics::describe_gauge!(PARKED, "Events parked waiting for a prerequisite");
    metrics::describe_counter!(
        BATCH_SPLITS_TOTAL,
        "Batch transactions that conflicted and were applied again in halves"
    );
    metrics::describe_counter!(
        BATCH_DEFERRED_TOTAL,
        "Deliveries put off to a following transaction because another held their entity"
    );
    metrics::describe_gauge!(
        OLDEST_PARKED_SECONDS,
        metrics::Unit::Seconds,
        "Age of the oldest parked event"
    );
    metrics::describe_gauge!(
        DEAD_LETTERS,
        "Dead letters that still need an operator (neither replayed nor purged)"
    );
    metrics::describe_gauge!(
        PARKED_OVERDUE,
        "Parked events past their deadline, not yet dead-lettered"
    );
    metrics::describe_gauge!(OUTBOX_BACKLOG, "Unpublished outbox rows");
    metrics::describe_gauge!(
        SWEEP_LAST_SUCCESS,
        metrics::Unit::Seconds,
        "Unix time of the last sweep whose gauges were all read"
    );
    metrics::describe_counter!(RETENTION_DELETED_TOTAL, "Rows deleted by retention, by table");
    metrics::describe_counter!(
        FIELD_ISSUES_TOTAL,
        "Optional fields stored as absent because their value could not be read, by declared pointer"
    );
}

/// Counts one event outcome.
pub(crate) fn outcome(provider: &'static str, event_type: &str, outcome: &'static str) {
    metrics::counter!(EVENTS_TOTAL, "provider" => provider, "event_type" => event_type.to_owned(), "outcome" => outcome)
        .increment(1);
}

/// Counts the field issues of one event (once, with the inbox row that notes them).
pub(crate) fn field_issues(provider: &'static str, event: &intake_providers::DecodedEvent) {
    for issue in &event.field_issues {
        metrics::counter!(FIELD_ISSUES_TOTAL, "provider" => provider, "field" => issue.pointer.clone())
            .increment(1);
    }
}
