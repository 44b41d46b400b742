//! Metric names the broker crate records (described once by [`describe`]).

/// Gauge: 1 while the named connection (label `role`) is open, else 0.
pub const CONNECTED: &str = "intake_broker_connected";
/// Counter: connections (re-)established, by `role`.
pub const CONNECTS_TOTAL: &str = "intake_broker_connects_total";
/// Counter: connections lost, by `role`.
pub const DISCONNECTS_TOTAL: &str = "intake_broker_disconnects_total";

/// Registers descriptions for the metrics above with the installed recorder.
pub fn describe() {
    metrics::describe_gauge!(CONNECTED, "1 while the broker connection is open, 0 otherwise");
    metrics::describe_counter!(
        CONNECTS_TOTAL,
        "Broker connections established (including reconnects)"
    );
    metrics::describe_counter!(DISCONNECTS_TOTAL, "Broker connections lost");
}
