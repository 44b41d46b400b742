//! The webhook route, in two stages around tower-http's body limit:
//!
//! 1. [`screen`] (middleware, before any body byte is read): endpoint lookup → credentials in
//!    headers and URL → content type. Only an authenticated JSON request gets past it, so an
//!    unauthenticated sender cannot make us buffer a megabyte. It also shapes every answer.
//! 2. [`limits::guard`](crate::limits::guard): a place among `INTAKE_MAX_IN_FLIGHT` (503) and a
//!    token of the endpoint's rate limit (429 + Retry-After).
//! 3. `RequestBodyLimitLayer` (`INTAKE_MAX_BODY_BYTES`): a declared length over the limit is
//!    refused at once, a streamed body is cut off at the limit.
//! 4. [`receive`] (handler): body within its deadline → body signature → JSON well-formedness
//!    → confirmed publish.
//!
//! Answers carry no body (SparkLoop requires a blank 200, and no error text leaks — [`screen`]
//! drops whatever body an inner layer wrote); the status says everything: 200 confirmed, 400
//! malformed JSON, 401 bad credentials, 404 unknown endpoint, 405 other methods, 408 body too
//! slow, 413 too large, 415 not JSON, 429 + Retry-After over the endpoint's rate, 503 +
//! Retry-After when the broker could not confirm or too many requests are in flight.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Extension;
use axum::body::Body;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError};
use intake_broker::{BrokerError, Publisher};
use intake_core::{Envelope, KEPT_HEADERS};

use crate::auth::{self, Presented};
use crate::endpoints::Endpoint;
use crate::metrics as m;

/// What the webhook route needs; shared by all requests.
#[derive(Debug)]
pub struct AppState {
    /// Endpoints by name.
    pub endpoints: HashMap<String, Arc<Endpoint>>,
    /// The confirmed publisher.
    pub publisher: Publisher,
    /// Longest time to receive the body.
    pub body_timeout: Duration,
    /// `Retry-After` value for 503 answers.
    pub retry_after: HeaderValue,
}

/// What [`screen`] hands to the inner layers and [`receive`]: the endpoint whose header and URL
/// checks passed.
#[derive(Debug, Clone)]
pub struct Screened {
    endpoint: Arc<Endpoint>,
    path_token: Option<String>,
}

impl Screened {
    /// The endpoint the request is for.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
}

/// Middleware of `POST /webhooks/{name}` and `/webhooks/{name}/{token}`: the checks that need
/// no body, then the inner layers; counts every answer and sends it without a body.
pub async fn screen(
    State(app): State<Arc<AppState>>,
    params: Result<Path<HashMap<String, String>>, PathRejection>,
    mut request: Request,
    next: Next,
) -> Response {
    let mut retry_after = None;
    // A name or token that is not UTF-8 once percent-decoded names no endpoint we serve: 404
    // like any unknown endpoint (axum's own rejection would answer 400 with text).
    let params = params.map(|Path(params)| params).unwrap_or_default();
    let name = params.get("name").map(String::as_str).unwrap_or_default();
    let Some(endpoint) = app.endpoints.get(name) else {
        metrics::counter!(m::REQUESTS_TOTAL, "endpoint" => "unknown", "provider" => "unknown", "status" => "404")
            .increment(1);
        return StatusCode::NOT_FOUND.into_response();
    };
    let path_token = params.get("token");
    let headers = request.headers();
    let code = if path_token.is_some() && !endpoint.wants_path_token() {
        // A token segment on an endpoint that does not use one is not a URL we serve.
        StatusCode::NOT_FOUND
    } else if !auth::all_pass(
        endpoint.checks.iter().filter(|c| !c.needs_body()),
        Presented {
            headers,
            path_token: path_token.map(String::as_str),
            body: None,
        },
    ) {
        tracing::info!(endpoint = %endpoint.name, "rejected: authentication failed");
        StatusCode::UNAUTHORIZED
    } else if !is_json_content_type(headers) {
        StatusCode::UNSUPPORTED_MEDIA_TYPE
    } else {
        request.extensions_mut().insert(Screened {
            endpoint: endpoint.clone(),
            path_token: path_token.cloned(),
        });
        let answer = next.run(request).await;
        // An inner layer's Retry-After (the rate limit's wait) is the one header kept.
        retry_after = answer.headers().get(header::RETRY_AFTER).cloned();
        answer.status()
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
        retry_after.get_or_insert_with(|| app.retry_after.clone());
    }
    if let Some(value) = retry_after {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// The handler behind [`screen`] and the body limit: reads, checks and publishes the body.
pub async fn receive(
    State(app): State<Arc<AppState>>,
    Extension(screened): Extension<Screened>,
    request: Request,
) -> StatusCode {
    match accept(&app, &screened, request).await {
        Ok(()) => StatusCode::OK,
        Err(code) => code,
    }
}

async fn accept(app: &AppState, screened: &Screened, request: Request) -> Result<(), StatusCode> {
    let endpoint = &screened.endpoint;
    let (parts, body) = request.into_parts();
    let headers = &parts.headers;
    let body = read_body(body, app.body_timeout).await?;
    let body_checks = endpoint.checks.iter().filter(|c| c.needs_body());
    if !auth::all_pass(
        body_checks,
        Presented {
            headers,
            path_token: screened.path_token.as_deref(),
            body: Some(&body),
        },
    ) {
        tracing::info!(endpoint = %endpoint.name, "rejected: signature check failed");
        return Err(StatusCode::UNAUTHORIZED);
    }
    // JSON the decoder can parse (UTF-8, well formed) with the top-level kind the provider
    // sends; decoding into the provider's shape is the worker's job, where a failure is
    // dead-lettered with its reason instead of bouncing the provider.
    if let Err(err) = intake_providers::check_body(endpoint.provider, &body) {
        tracing::info!(endpoint = %endpoint.name, reason = %err, "rejected: malformed JSON");
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

/// The whole body within `deadline`; the size limit is the `RequestBodyLimitLayer`'s.
async fn read_body(body: Body, deadline: Duration) -> Result<Bytes, StatusCode> {
    // A deadline for the whole body, not tower-http's `RequestBodyTimeoutLayer`: that one
    // restarts at every frame, so a client trickling a byte at a time would never trip it.
    match tokio::time::timeout(deadline, body.collect()).await {
        Err(_) => Err(StatusCode::REQUEST_TIMEOUT),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(err)) if is_length_limit(&err) => Err(StatusCode::PAYLOAD_TOO_LARGE),
        // The client went away or broke the framing mid-body.
        Ok(Err(_)) => Err(StatusCode::BAD_REQUEST),
    }
}

/// Whether a body error is the body limit's (anywhere in the chain of sources).
fn is_length_limit(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(err);
    while let Some(e) = current {
        if e.is::<LengthLimitError>() {
            return true;
        }
        current = e.source();
    }
    false
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
