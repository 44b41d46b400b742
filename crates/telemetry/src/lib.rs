//! Operations plumbing shared by every intake process:
//!
//! - [`metrics_handle`]: installs the Prometheus recorder once per process (histogram buckets set
//!   for every `*_seconds` metric, upkeep running) and returns the handle that renders it;
//! - [`init_tracing`]: structured logs, JSON when `INTAKE_LOG_FORMAT=json`, filtered by `RUST_LOG`;
//! - [`ops_router`]: `/metrics`, `/healthz` (alive) and `/readyz` (dependencies reachable);
//! - [`shutdown_signal`]: resolves on SIGTERM or SIGINT.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Histogram buckets (seconds) for every `*_seconds` metric: 0.5 ms to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Histogram buckets for every `*_batch_size` metric (deliveries per batch).
const BATCH_SIZE_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];

/// The process-wide Prometheus handle; the first call installs the global recorder.
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .expect("bucket list is not empty")
                .set_buckets_for_metric(Matcher::Suffix("_batch_size".into()), BATCH_SIZE_BUCKETS)
                .expect("bucket list is not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (e.g. by a test harness); then ours
            // still renders, it just sees nothing — better than refusing to start.
            let _ = metrics::set_global_recorder(recorder);
            let upkeep = handle.clone();
            // Upkeep drains histogram buffers; without it memory grows with every sample.
            std::thread::Builder::new()
                .name("metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                })
                .expect("spawn metrics upkeep thread");
            handle
        })
        .clone()
}

/// The most verbose level a dependency (any log target outside our `intake*` crates) may log at,
/// whatever `RUST_LOG` says. Below it, dependencies log what they handle: tokio-postgres logs
/// every statement's parameters at debug — contact names, dates of birth, MBIs — and HTTP and
/// AMQP clients log URLs, headers and frames at debug or trace. `RUST_LOG=trace` (or
/// `RUST_LOG=tokio_postgres=debug`) therefore raises only our own crates' verbosity; the
/// `log_privacy` test (crates/intake/tests) runs the pipeline at trace and checks no secret or
/// PHI is written.
pub const DEPENDENCY_MAX_LEVEL: tracing::Level = tracing::Level::INFO;

/// Whether a log target is one of our crates (`intake`, `intake_*`), whose logs never carry a
/// body, a credential or a PHI field at any level.
fn ours(target: &str) -> bool {
    target
        .strip_prefix("intake")
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('_') || rest.starts_with("::"))
}

/// Installs the tracing subscriber (idempotent). `RUST_LOG` filters (default `info`), with
/// dependencies capped at [`DEPENDENCY_MAX_LEVEL`]; `INTAKE_LOG_FORMAT=json` switches to one
/// JSON object per line. Records of the `log` crate (tokio-postgres, reqwest) are included.
pub fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    use tracing_subscriber::filter::{FilterExt, filter_fn};
    use tracing_subscriber::prelude::*;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let cap = filter_fn(|meta| ours(meta.target()) || *meta.level() <= DEPENDENCY_MAX_LEVEL);
    let json = std::env::var("INTAKE_LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let layer = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };
    let _ = tracing_subscriber::registry()
        .with(layer.with_filter(filter.and(cap)))
        .try_init();
}

/// Answers whether the process's dependencies are reachable right now.
pub type ReadinessCheck = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = bool> + Send>> + Send + Sync>;

#[derive(Clone)]
struct OpsState {
    metrics: PrometheusHandle,
    ready: ReadinessCheck,
}

/// `/metrics` (Prometheus text), `/healthz` (200 while the process runs), `/readyz` (200 when
/// `ready` says so, else 503).
pub fn ops_router(ready: ReadinessCheck) -> Router {
    let state = OpsState {
        metrics: metrics_handle(),
        ready,
    };
    Router::new()
        .route(
            "/metrics",
            get(|State(s): State<OpsState>| async move { s.metrics.render() }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(|State(s): State<OpsState>| async move {
                if (s.ready)().await {
                    (StatusCode::OK, "ready")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "not ready")
                }
            }),
        )
        .with_state(state)
}

/// Resolves when the process receives SIGTERM or SIGINT (Ctrl-C).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
    tracing::info!("shutdown signal received");
}

#[cfg(test)]
mod tests {
    use super::{metrics_handle, ours};

    #[test]
    fn seconds_and_batch_sizes_render_as_histograms_with_their_buckets() {
        let handle = metrics_handle();
        metrics::histogram!("intake_test_handle_seconds").record(0.003);
        metrics::histogram!("intake_test_batch_size", "consumer" => "worker").record(3.0);
        let text = handle.render();
        assert!(
            text.contains("intake_test_handle_seconds_bucket{le=\"0.005\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("intake_test_batch_size_bucket{consumer=\"worker\",le=\"4\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn our_targets_are_the_intake_crates_only() {
        for target in ["intake", "intake_worker", "intake_store::apply", "intake::roles"] {
            assert!(ours(target), "{target}");
        }
        for target in [
            "tokio_postgres::query",
            "lapin::io_loop",
            "hyper_util::client",
            "intakeish",
            "reqwest",
        ] {
            assert!(!ours(target), "{target}");
        }
    }
}
