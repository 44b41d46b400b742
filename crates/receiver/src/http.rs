//! The webhook route: endpoint lookup → authentication → content type → size-limited body →
//! body signature → JSON well-formedness → confirmed publish → answer.
//!
//! Answers carry no body (SparkLoop requires a blank 200, and no error text leaks); the status
//! says everything: 200 confirmed, 400 malformed JSON, 401 bad credentials, 404 unknown endpoint,
//! 405 other methods, 408 body too slow, 413 too large, 415 not JSON, 503 + Retry-After when
//! the broker could not confirm.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use intake_broker::{BrokerError, Publisher};
use intake_core::{Envelope, KEPT_HEADERS};

use crate::auth::{self, Presented};
use crate::endpoints::Endpoint;
use crate::metrics as m;

/// What the webhook handler needs; shared by all requests.
#[derive(Debug)]
pub struct AppState {
    /// Endpoints by name.
    pub endpoints: HashMap<String, Endpoint>,
    /// The confirmed publisher.
    pub publisher: Publisher,
    /// Largest accepted body.
    pub max_body_bytes: usize,
    /// Longest time to receive the body.
    pub body_timeout: Duration,
    /// `Retry-After` value for 503 answers.
    pub retry_after: HeaderValue,
}

/// `POST /webhooks/{name}`.
pub async fn webhook(
    State(app): State<Arc<AppState>>,
    Path(name): Path<String>,
    request: Request,
) -> Response {
    handle(&app, &name, None, request).await
}

/// `POST /webhooks/{name}/{token}` (endpoints authenticated by a path token).
pub async fn webhook_with_token(
    State(app): State<Arc<AppState>>,
    Path((name, token)): Path<(String, String)>,
    request: Request,
) -> Response {
    handle(&app, &name, Some(&token), request).await
}

async fn handle(app: &AppState, name: &str, path_token: Option<&str>, request: Request) -> Response {
    let Some(endpoint) = app.endpoints.get(name) else {
        metrics::counter!(m::REQUESTS_TOTAL, "endpoint" => "unknown", "provider" => "unknown", "status" => "404")
            .increment(1);
        return StatusCode::NOT_FOUND.into_response();
    };
    // A token segment on an endpoint that does not use one is not a URL we serve.
    let status = if path_token.is_some() && !endpoint.wants_path_token() {
        Err(StatusCode::NOT_FOUND)
    } else {
        accept(app, endpoint, path_token, request).await
    };
    let code = match status {
        Ok(()) => StatusCode::OK,
        Err(code) => code,
    };
    metrics::counter!(
        m::REQUESTS_TOTAL,
        "endpoint" => endpoint.name.clone(),
        "provider" => endpoint.provider.as_str(),
        "status" => code.as_str().to_owned()
    )
    .increment(1);
    let mut response = code.into_response();
    if code == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, app.retry_after.clone());
    }
    response
}

async fn accept(
    app: &AppState,
    endpoint: &Endpoint,
    path_token: Option<&str>,
    request: Request,
) -> Result<(), StatusCode> {
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;

    // Credentials in headers and URL first, so an unauthenticated sender cannot make us read a body.
    let header_checks = endpoint.checks.iter().filter(|c| !c.needs_body());
    if !auth::all_pass(
        header_checks,
        Presented {
            headers,
            path_token,
            body: None,
        },
    ) {
        tracing::info!(endpoint = %endpoint.name, "rejected: authentication failed");
        return Err(StatusCode::UNAUTHORIZED);
    }
    if !is_json_content_type(headers) {
        return Err(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    let body = read_body(body, headers, app.max_body_bytes, app.body_timeout).await?;
    let body_checks = endpoint.checks.iter().filter(|c| c.needs_body());
    if !auth::all_pass(
        body_checks,
        Presented {
            headers,
            path_token,
            body: Some(&body),
        },
    ) {
        tracing::info!(endpoint = %endpoint.name, "rejected: signature check failed");
        return Err(StatusCode::UNAUTHORIZED);
    }
    // Well-formedness only: decoding into the provider's shape is the worker's job, where a
    // failure is dead-lettered with its reason instead of bouncing the provider.
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        tracing::info!(endpoint = %endpoint.name, "rejected: malformed JSON");
        return Err(StatusCode::BAD_REQUEST);
    }

    let envelope = Envelope::new(
        endpoint.name.clone(),
        endpoint.provider,
        kept_headers(headers),
        body,
    );
    let provider = endpoint.provider.as_str();
    let started = Instant::now();
    match app.publisher.publish_envelope(&envelope).await {
        Ok(()) => {
            metrics::histogram!(m::ENQUEUE_SECONDS, "provider" => provider)
                .record(started.elapsed().as_secs_f64());
            tracing::debug!(envelope_id = %envelope.id, endpoint = %endpoint.name, provider, "enqueued");
            Ok(())
        }
        Err(err) => {
            let reason = failure_reason(&err);
            metrics::counter!(m::PUBLISH_FAILURES_TOTAL, "provider" => provider, "reason" => reason)
                .increment(1);
            tracing::warn!(envelope_id = %envelope.id, endpoint = %endpoint.name, provider, reason, error = %err,
                "not enqueued; answering 503");
            Err(StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

fn failure_reason(err: &BrokerError) -> &'static str {
    match err {
        BrokerError::Unavailable => "unavailable",
        BrokerError::Nacked => "nacked",
        BrokerError::Unroutable => "unroutable",
        BrokerError::ConfirmTimeout(_) => "confirm_timeout",
        BrokerError::Malformed(_) => "malformed",
        BrokerError::Amqp(_) => "amqp_error",
    }
}

/// `application/json` or any `+json` type, parameters (charset) allowed.
fn is_json_content_type(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let mime = value.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

async fn read_body(
    body: Body,
    headers: &HeaderMap,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, StatusCode> {
    // A declared length over the limit is refused without reading a byte.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(StatusCode::PAYLOAD_TOO_LARGE);
    }
    match tokio::time::timeout(deadline, axum::body::to_bytes(body, limit)).await {
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
        Ok(Ok(bytes)) => Ok(bytes),
        // to_bytes fails when the limit is hit, or when the client went away mid-body.
        Ok(Err(_)) => Err(StatusCode::PAYLOAD_TOO_LARGE),
    }
}

fn kept_headers(headers: &HeaderMap) -> Vec<(String, String)> {
    KEPT_HEADERS
        .iter()
        .filter_map(|name| {
            let value = headers.get(*name)?.to_str().ok()?;
            Some(((*name).to_owned(), value.to_owned()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for (value, ok) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON", true),
            ("application/vnd.api+json", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json_content_type(&h), ok, "{value}");
        }
        assert!(!is_json_content_type(&HeaderMap::new()));
    }

    #[test]
    fn credentials_are_not_kept() {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer x"));
        h.insert("sparkloop-token", HeaderValue::from_static("t"));
        h.insert("webhook-signature", HeaderValue::from_static("v1,abc"));
        h.insert(header::USER_AGENT, HeaderValue::from_static("spark/1"));
        assert_eq!(
            kept_headers(&h),
            vec![("user-agent".to_owned(), "spark/1".to_owned())]
        );
    }
}
