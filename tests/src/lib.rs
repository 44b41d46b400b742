//! Support code for the integration tests in `tests/tests/` (and the binary's in
//! `crates/intake/tests/`): run-unique names so tests never share queues, a TCP proxy the test
//! controls to simulate outages of RabbitMQ or Postgres, child processes with their logs, a real
//! Prometheus, and waiting on a condition with a deadline instead of sleeping.
#![forbid(unsafe_code)]

mod amqp;
pub mod compose;
pub mod pg;
pub mod process;
pub mod prometheus;
mod proxy;
pub mod receiver;

use std::future::Future;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use amqp::{QueueProbe, Taken, test_broker};
pub use proxy::TcpProxy;

/// Test queues are deleted by the broker after this long unused, so a failed or aborted test
/// leaves no quorum queues behind to slow RabbitMQ down for later runs.
pub const TEST_QUEUE_EXPIRY_SECS: u64 = 600;

/// RabbitMQ on this machine (guest/guest).
pub const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";

/// A name no earlier or concurrent test run uses: `it-<tag>-<pid>-<time>-<n>`.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("it-{tag}-{}-{:x}-{n}", std::process::id(), nanos % (1 << 40))
}

/// Polls `condition` every 20 ms until it holds or `deadline` passes; returns whether it held.
pub async fn wait_until<F, Fut>(deadline: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
