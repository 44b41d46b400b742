//! The receiver: the HTTP front door of intake.
//!
//! A provider that gets a 2xx from us may forget its webhook, so we answer 200 only after
//! RabbitMQ confirmed the envelope is in a quorum queue (see [`http`] for every other answer).
//!
//! - [`config`]: environment configuration;
//! - [`endpoints`]: operator-declared endpoints (TOML) with secrets from the environment;
//! - [`auth`]: constant-time credential checks;
//! - [`http`]: the webhook handler;
//! - [`limits`]: the in-flight cap and per-endpoint rate limits;
//! - [`listener`]: the TCP listener with a bound on open connections;
//! - [`run`]: wires it together; the `intake` binary (`intake receiver`) only adds tracing and
//!   the signal handler.
#![forbid(unsafe_code)]

pub mod auth;
pub mod config;
pub mod endpoints;
pub mod http;
pub mod limits;
pub mod listener;
pub mod metrics;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::HeaderValue;
use axum::routing::post;
use intake_broker::{Publisher, PublisherConfig};
use tokio::net::TcpListener;
use tower_http::limit::RequestBodyLimitLayer;

pub use config::ReceiverConfig;

/// Reads endpoints from the file and/or inline TOML of `config`, secrets from the environment.
pub fn load_endpoints(
    config: &ReceiverConfig,
) -> Result<std::collections::HashMap<String, endpoints::Endpoint>, anyhow::Error> {
    let mut specs = Vec::new();
    if let Some(path) = &config.endpoints_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading INTAKE_ENDPOINTS_FILE {}", path.display()))?;
        specs.extend(endpoints::parse(&text)?);
    }
    if let Some(text) = &config.endpoints_toml {
        specs.extend(endpoints::parse(text).context("parsing INTAKE_ENDPOINTS")?);
    }
    Ok(endpoints::resolve(specs, &|var| std::env::var(var).ok())?)
}

/// Serves webhooks on `listener` until `shutdown` resolves, then stops accepting, lets
/// in-flight requests finish their publish (bounded by the grace period) and closes the broker
/// connection.
pub async fn run(
    config: ReceiverConfig,
    endpoints: std::collections::HashMap<String, endpoints::Endpoint>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let topology = config.broker.topology()?;
    anyhow::ensure!(
        config.publish_channels >= 1,
        "INTAKE_PUBLISH_CHANNELS must be at least 1"
    );
    anyhow::ensure!(
        config.max_body_bytes >= 1,
        "INTAKE_MAX_BODY_BYTES must be at least 1"
    );
    anyhow::ensure!(
        config.max_in_flight >= 1,
        "INTAKE_MAX_IN_FLIGHT must be at least 1"
    );
    metrics::describe();
    let publisher = Publisher::start(PublisherConfig {
        amqp_url: config.broker.amqp_url.clone(),
        topology,
        channels: config.publish_channels,
        confirm_timeout: config.confirm_timeout(),
        role: "receiver",
    });
    let app = app(&config, endpoints, publisher.clone())?;

    tracing::info!(addr = %listener.local_addr()?, endpoints = config_summary(&config), "receiver listening");
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let (stopped_tx, stopped_rx) = tokio::sync::oneshot::channel::<()>();
    let listener =
        crate::listener::LimitedListener::new(listener, config.max_connections, config.idle_timeout());
    let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopped_tx.send(());
    });
    // Graceful shutdown waits for in-flight requests; bound that wait by the grace period.
    let serve = async move {
        let serve = std::pin::pin!(serve.into_future());
        tokio::select! {
            result = serve => result.map_err(anyhow::Error::from),
            _ = async { let _ = stopped_rx.await; tokio::time::sleep(grace).await } => {
                tracing::warn!("shutdown grace period over; closing with requests in flight");
                Ok(())
            }
        }
    };
    let result = serve.await;
    publisher.close().await;
    tracing::info!("receiver stopped");
    result
}

/// The receiver's routes as [`run`] serves them: the webhook route with its layers and the ops
/// endpoints, over `endpoints` and `publisher`. Tests and fuzz targets drive it in-process
/// (`tower::ServiceExt::oneshot`); with a publisher that cannot reach its broker, every webhook
/// that passes all checks is answered 503.
pub fn app(
    config: &ReceiverConfig,
    endpoints: std::collections::HashMap<String, endpoints::Endpoint>,
    publisher: Publisher,
) -> anyhow::Result<Router> {
    let retry_after =
        HeaderValue::from_str(&config.retry_after_secs.to_string()).context("INTAKE_RETRY_AFTER_SECS")?;
    let limits = Arc::new(limits::Limits::new(
        config.max_in_flight,
        endpoints.values(),
        config.rate_limit,
    ));
    let state = Arc::new(http::AppState {
        endpoints: endpoints
            .into_iter()
            .map(|(name, endpoint)| (name, Arc::new(endpoint)))
            .collect(),
        publisher: publisher.clone(),
        body_timeout: config.body_timeout(),
        retry_after,
    });
    let ready_publisher = publisher.clone();
    let ops = intake_telemetry::ops_router(Arc::new(move || {
        let connected = ready_publisher.is_connected();
        Box::pin(async move { connected })
    }));
    // Layers run outside in: `screen` (endpoint, credentials, content type), then the abuse
    // limits (in flight, rate), then the body limit, then the handler. On the method router, so
    // a 405 never reaches them. No
    // `TimeoutLayer`: the body deadline (408) and the confirm deadline (503) already bound a
    // request, each with its own status; one overall timeout would answer 408 for a slow broker.
    let webhook = post(http::receive)
        .route_layer(RequestBodyLimitLayer::new(config.max_body_bytes))
        .route_layer(axum::middleware::from_fn_with_state(limits, limits::guard))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), http::screen));
    let app = Router::new()
        .route("/webhooks/{name}", webhook.clone())
        .route("/webhooks/{name}/{token}", webhook)
        .with_state(state)
        .merge(ops);
    Ok(app)
}

fn config_summary(config: &ReceiverConfig) -> String {
    format!(
        "prefix={} max_body={}",
        config.broker.queue_prefix, config.max_body_bytes
    )
}
