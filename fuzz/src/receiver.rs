//! Target `receiver`: whole HTTP requests through the receiver's router in-process
//! (`tower::ServiceExt::oneshot` on `intake_receiver::app`), its publisher pointed at a port
//! where no broker listens — so a request that passes every check is answered 503.
//!
//! The input chooses the method, the path (each test endpoint, unknown ones, the ops paths, any
//! text), the token segment, the content type, valid / missing / tampered credentials for the
//! endpoint (computed by the harness over the final body), extra headers, a `Content-Length`
//! (right, short, long, over the limit, garbage), how the body is split into frames and whether
//! the stream then fails (as hyper reports broken chunked framing); the rest is the body.
//!
//! Oracles: an answer within 5 s (no hang) and no panic; every answer on `/webhooks/…` is one of
//! 400 401 404 405 413 415 503, without a body, and a 503 carries `Retry-After`; and when the
//! request is fully known (a listed endpoint, no extra headers), the status is the one the
//! README's rules give, in the order the receiver applies them: 405, 404, 401 (header
//! credentials), 415, 413 (declared, then streamed), 400 (broken stream), 401 (body signature),
//! 400 (not JSON the decoder reads, or not an object), else 503.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::BodyExt;
use intake_broker::{Publisher, PublisherConfig};
use intake_core::Provider;
use intake_receiver::{ReceiverConfig, endpoints};
use sha2::Sha256;
use tokio::runtime::Runtime;
use tower::ServiceExt;

use crate::{Input, Seed};

/// The body limit of the fuzzed receiver (small, so 413 is reachable).
pub const LIMIT: usize = 4096;
/// A request not answered within this is a hang.
const DEADLINE: Duration = Duration::from_secs(5);

const ENDPOINTS: &str = r#"
[[endpoints]]
name = "spark-a"
provider = "spark"
auth = [{ kind = "path_token", secret_env = "SPARK_TOKEN" }, { kind = "basic", username = "spark", password_env = "SPARK_PASSWORD" }]

[[endpoints]]
name = "loop"
provider = "sparkloop"
auth = [{ kind = "header_token", secret_env = "LOOP_TOKEN" }]

[[endpoints]]
name = "s360"
provider = "spark360"
auth = [{ kind = "hmac_sha256", header = "X-Spark360-Signature", secret_env = "S360_KEY" }]

[[endpoints]]
name = "s360-b64"
provider = "spark360"
auth = [{ kind = "hmac_sha256", header = "X-Signature", secret_env = "S360_KEY", encoding = "base64" }]

[[endpoints]]
name = "hs"
provider = "healthsherpa"
auth = [{ kind = "bearer", secret_env = "HS_TOKEN" }]

[[endpoints]]
name = "std"
provider = "standard"
auth = [{ kind = "standard_webhooks", secret_env = "STD_SECRETS" }]
"#;

const SPARK_TOKEN: &str = "path-secret-1";
const SPARK_PASSWORD: &str = "basic-secret";
const LOOP_TOKEN: &str = "loop-secret";
const S360_KEY: &str = "hmac-key";
const HS_TOKEN: &str = "hs-bearer";
const WHSEC: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_UNKNOWN: &str = "whsec_dW5rbm93biBrZXkgZm9yIGZ1enppbmc=";

/// The test endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    /// Spark: path token + basic.
    SparkA,
    /// SparkLoop: header token.
    Loop,
    /// Spark360: HMAC hex.
    S360,
    /// Spark360: HMAC base64.
    S360Base64,
    /// HealthSherpa: bearer.
    Hs,
    /// Standard Webhooks.
    Std,
}

impl Endpoint {
    /// Every test endpoint, in selector order.
    pub const ALL: [Endpoint; 6] = [
        Endpoint::SparkA,
        Endpoint::Loop,
        Endpoint::S360,
        Endpoint::S360Base64,
        Endpoint::Hs,
        Endpoint::Std,
    ];

    fn name(self) -> &'static str {
        match self {
            Endpoint::SparkA => "spark-a",
            Endpoint::Loop => "loop",
            Endpoint::S360 => "s360",
            Endpoint::S360Base64 => "s360-b64",
            Endpoint::Hs => "hs",
            Endpoint::Std => "std",
        }
    }

    /// Its provider.
    pub fn provider(self) -> Provider {
        match self {
            Endpoint::SparkA => Provider::Spark,
            Endpoint::Loop => Provider::SparkLoop,
            Endpoint::S360 | Endpoint::S360Base64 => Provider::Spark360,
            Endpoint::Hs => Provider::HealthSherpa,
            Endpoint::Std => Provider::Standard,
        }
    }

    fn signs_body(self) -> bool {
        matches!(self, Endpoint::S360 | Endpoint::S360Base64 | Endpoint::Std)
    }
}

struct Harness {
    runtime: Runtime,
    app: Router,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let mut config = ReceiverConfig::local_defaults();
        // Nothing listens on port 1: the publisher never connects.
        config.broker.amqp_url = "amqp://guest:guest@127.0.0.1:1/%2f".into();
        config.max_body_bytes = LIMIT;
        config.body_timeout_ms = 2_000;
        let secrets: HashMap<&str, &str> = [
            ("SPARK_TOKEN", SPARK_TOKEN),
            ("SPARK_PASSWORD", SPARK_PASSWORD),
            ("LOOP_TOKEN", LOOP_TOKEN),
            ("S360_KEY", S360_KEY),
            ("HS_TOKEN", HS_TOKEN),
            ("STD_SECRETS", WHSEC),
        ]
        .into_iter()
        .collect();
        let specs = endpoints::parse(ENDPOINTS).expect("endpoint TOML");
        let endpoints =
            endpoints::resolve(specs, &|var| secrets.get(var).map(|s| (*s).to_owned())).expect("endpoints");
        let app = runtime.block_on(async {
            let publisher = Publisher::start(PublisherConfig {
                amqp_url: config.broker.amqp_url.clone(),
                topology: config.broker.topology().expect("topology"),
                channels: 1,
                confirm_timeout: Duration::from_millis(500),
                role: "fuzz",
            });
            intake_receiver::app(&config, endpoints, publisher).expect("app")
        });
        Harness { runtime, app }
    })
}

const METHODS: [Method; 11] = [
    Method::POST,
    Method::POST,
    Method::POST,
    Method::POST,
    Method::POST,
    Method::POST,
    Method::GET,
    Method::PUT,
    Method::HEAD,
    Method::OPTIONS,
    Method::DELETE,
];

/// Where the request goes.
#[derive(Debug, Clone)]
enum Target {
    /// `/webhooks/{endpoint}` with a token segment as chosen.
    Endpoint(Endpoint, Token),
    /// Any other path.
    Path(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A segment when the endpoint wants one, with its value.
    Right,
    /// No segment.
    None,
    /// A segment with a wrong value.
    Wrong,
    /// A segment with any (percent-encoded) text.
    Any(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Credentials {
    Valid,
    Missing,
    Tampered,
}

struct Case {
    method: Method,
    target: Target,
    content_type: Option<HeaderValue>,
    credentials: Credentials,
    extra: Vec<(HeaderName, HeaderValue)>,
    content_length: Option<HeaderValue>,
    frames: usize,
    fails: bool,
}

fn segment(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (*b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Case {
    fn read(input: &mut Input<'_>) -> Case {
        let method = match input.byte() % 12 {
            11 => Method::from_bytes(input.short()).unwrap_or(Method::POST),
            n => METHODS[usize::from(n)].clone(),
        };
        let target = match input.byte() % 16 {
            n @ 0..=9 => {
                let endpoint = Endpoint::ALL[usize::from(n) % Endpoint::ALL.len()];
                let token = match input.byte() % 4 {
                    0 => Token::Right,
                    1 => Token::None,
                    2 => Token::Wrong,
                    _ => Token::Any(segment(input.short())),
                };
                Target::Endpoint(endpoint, token)
            }
            10 => Target::Path("/webhooks/nope".into()),
            11 => Target::Path("/healthz".into()),
            12 => Target::Path("/readyz".into()),
            13 => Target::Path("/metrics".into()),
            14 => Target::Path(format!(
                "/webhooks/{}/{SPARK_TOKEN}/x",
                input.pick(&Endpoint::ALL).name()
            )),
            _ => Target::Path(format!("/{}", String::from_utf8_lossy(input.short()))),
        };
        let content_type = match input.byte() % 8 {
            0 | 7 => Some(HeaderValue::from_static("application/json")),
            1 => Some(HeaderValue::from_static("application/json; charset=utf-8")),
            2 => Some(HeaderValue::from_static("application/vnd.spark+json")),
            3 => Some(HeaderValue::from_static("text/plain")),
            4 => None,
            5 => Some(HeaderValue::from_static("APPLICATION/JSON")),
            _ => HeaderValue::from_bytes(input.short()).ok(),
        };
        let credentials = match input.byte() % 4 {
            0 | 1 => Credentials::Valid,
            2 => Credentials::Missing,
            _ => Credentials::Tampered,
        };
        let mut extra = Vec::new();
        let count = input.byte() % 8;
        for _ in 0..count.saturating_sub(4) {
            let name = HeaderName::from_bytes(input.short());
            let value = HeaderValue::from_bytes(input.short());
            if let (Ok(name), Ok(value)) = (name, value) {
                extra.push((name, value));
            }
        }
        let content_length = match input.byte() % 8 {
            4 => Some(HeaderValue::from_static("exact")),
            5 => Some(HeaderValue::from_static("short")),
            6 => Some(HeaderValue::from_static("long")),
            7 => HeaderValue::from_bytes(input.short()).ok(),
            _ => None,
        };
        let frames = usize::from(input.byte() % 8);
        let fails = input.byte() % 4 == 3;
        Case {
            method,
            target,
            content_type,
            credentials,
            extra,
            content_length,
            frames,
            fails,
        }
    }
}

fn hmac(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("any key length");
    for part in parts {
        mac.update(part);
    }
    mac.finalize().into_bytes().to_vec()
}

/// The headers that authenticate `body` on `endpoint` (or fail to, as `credentials` says).
fn credentials(endpoint: Endpoint, credentials: Credentials, body: &[u8]) -> Vec<(&'static str, String)> {
    let valid = credentials == Credentials::Valid;
    match (endpoint, credentials) {
        (_, Credentials::Missing) => vec![],
        (Endpoint::SparkA, _) => {
            let password = if valid { SPARK_PASSWORD } else { "basic-secreX" };
            vec![(
                "authorization",
                format!("Basic {}", BASE64.encode(format!("spark:{password}"))),
            )]
        }
        (Endpoint::Loop, _) => vec![(
            "sparkloop-token",
            if valid { LOOP_TOKEN } else { "loop-secreX" }.to_owned(),
        )],
        (Endpoint::Hs, _) => vec![(
            "authorization",
            format!("Bearer {}", if valid { HS_TOKEN } else { "hs-bearex" }),
        )],
        (Endpoint::S360 | Endpoint::S360Base64, _) => {
            let key: &[u8] = if valid { S360_KEY.as_bytes() } else { b"other-key" };
            let mac = hmac(key, &[body]);
            if endpoint == Endpoint::S360 {
                vec![("x-spark360-signature", format!("sha256={}", hex::encode(mac)))]
            } else {
                vec![("x-signature", BASE64.encode(mac))]
            }
        }
        (Endpoint::Std, _) => {
            let secret = if valid { WHSEC } else { WHSEC_UNKNOWN };
            let key = BASE64
                .decode(secret.trim_start_matches("whsec_"))
                .expect("base64");
            let ts = chrono::Utc::now().timestamp();
            let id = "msg_fuzz";
            let mac = hmac(
                &key,
                &[id.as_bytes(), b".", ts.to_string().as_bytes(), b".", body],
            );
            vec![
                ("webhook-id", id.to_owned()),
                ("webhook-timestamp", ts.to_string()),
                ("webhook-signature", format!("v1,{}", BASE64.encode(mac))),
            ]
        }
    }
}

/// The request, and the status the rules give when the model covers it.
fn build(case: &Case, body: &[u8]) -> (Request<Body>, Option<StatusCode>) {
    let path = match &case.target {
        Target::Endpoint(endpoint, token) => {
            let wants = *endpoint == Endpoint::SparkA;
            match token {
                Token::Right if wants => format!("/webhooks/{}/{SPARK_TOKEN}", endpoint.name()),
                Token::Right | Token::None => format!("/webhooks/{}", endpoint.name()),
                Token::Wrong => format!("/webhooks/{}/wrong-token", endpoint.name()),
                Token::Any(text) => format!("/webhooks/{}/{text}", endpoint.name()),
            }
        }
        Target::Path(path) => path.clone(),
    };
    let uri = Uri::try_from(path.as_str()).unwrap_or_else(|_| Uri::from_static("/"));
    let mut headers = HeaderMap::new();
    for (name, value) in &case.extra {
        headers.append(name.clone(), value.clone());
    }
    if let Some(ct) = &case.content_type {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    if let Target::Endpoint(endpoint, _) = &case.target {
        for (name, value) in credentials(*endpoint, case.credentials, body) {
            headers.insert(name, HeaderValue::from_str(&value).expect("ASCII"));
        }
    }
    if let Some(cl) = &case.content_length {
        let value = match cl.as_bytes() {
            b"exact" => HeaderValue::from(body.len()),
            b"short" => HeaderValue::from(body.len().saturating_sub(1)),
            b"long" => HeaderValue::from(body.len() + 10),
            _ => cl.clone(),
        };
        headers.insert(header::CONTENT_LENGTH, value);
    }
    let request_body = if case.frames == 0 && !case.fails {
        Body::from(body.to_vec())
    } else {
        let size = body.len().div_ceil(case.frames.max(1)).max(1);
        let mut frames: Vec<Result<Bytes, std::io::Error>> =
            body.chunks(size).map(|c| Ok(Bytes::copy_from_slice(c))).collect();
        if case.fails {
            frames.push(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "broken chunk",
            )));
        }
        Body::from_stream(futures_util::stream::iter(frames))
    };
    let expected = expect(case, &headers, body);
    let mut request = Request::new(request_body);
    *request.method_mut() = case.method.clone();
    *request.uri_mut() = uri;
    *request.headers_mut() = headers;
    (request, expected)
}

/// The status the README's rules give, for requests the model fully knows.
fn expect(case: &Case, headers: &HeaderMap, body: &[u8]) -> Option<StatusCode> {
    let Target::Endpoint(endpoint, token) = &case.target else {
        return None;
    };
    let endpoint = *endpoint;
    let known_method = METHODS.contains(&case.method);
    let json = match case.content_type.as_ref().map(HeaderValue::to_str) {
        None | Some(Ok("text/plain")) => false,
        Some(Ok(
            "application/json"
            | "application/json; charset=utf-8"
            | "application/vnd.spark+json"
            | "APPLICATION/JSON",
        )) => true,
        Some(_) => return None,
    };
    if !case.extra.is_empty() || !known_method || matches!(token, Token::Any(_)) {
        return None;
    }
    if case.method != Method::POST {
        return Some(StatusCode::METHOD_NOT_ALLOWED);
    }
    let wants_token = endpoint == Endpoint::SparkA;
    let segment = match token {
        Token::Right => wants_token,
        Token::None => false,
        Token::Wrong | Token::Any(_) => true,
    };
    if segment && !wants_token {
        return Some(StatusCode::NOT_FOUND);
    }
    let valid = case.credentials == Credentials::Valid;
    let header_checks = match endpoint {
        Endpoint::SparkA => valid && *token == Token::Right,
        Endpoint::Loop | Endpoint::Hs => valid,
        _ => true,
    };
    if !header_checks {
        return Some(StatusCode::UNAUTHORIZED);
    }
    if !json {
        return Some(StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }
    // tower-http's RequestBodyLimitLayer: a declared length over the limit at once, else the
    // body is cut at the smaller of the limit and the declared length.
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > LIMIT) {
        return Some(StatusCode::PAYLOAD_TOO_LARGE);
    }
    if body.len() > declared.unwrap_or(LIMIT).min(LIMIT) {
        return Some(StatusCode::PAYLOAD_TOO_LARGE);
    }
    if case.fails {
        return Some(StatusCode::BAD_REQUEST);
    }
    if endpoint.signs_body() && !valid {
        return Some(StatusCode::UNAUTHORIZED);
    }
    // The Standard Webhooks crate verifies UTF-8 bodies only.
    if endpoint == Endpoint::Std && std::str::from_utf8(body).is_err() {
        return Some(StatusCode::UNAUTHORIZED);
    }
    let object = serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object());
    Some(if object {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::BAD_REQUEST
    })
}

const WEBHOOK_ANSWERS: [u16; 7] = [400, 401, 404, 405, 413, 415, 503];

/// Runs one input.
pub fn run(data: &[u8]) {
    check(data);
}

/// Runs one input; returns the status and the one the model expected, if it covers the request.
pub fn check(data: &[u8]) -> (StatusCode, Option<StatusCode>) {
    let harness = harness();
    let mut input = Input::new(data);
    let case = Case::read(&mut input);
    let body = input.rest();
    let (request, expected) = build(&case, body);
    let path = request.uri().path().to_owned();
    let answer = harness.runtime.block_on(async {
        tokio::time::timeout(DEADLINE, async {
            let response = harness.app.clone().oneshot(request).await.expect("infallible");
            let status = response.status();
            let retry_after = response.headers().contains_key(header::RETRY_AFTER);
            let body = response.into_body().collect().await.map(|c| c.to_bytes());
            (status, retry_after, body)
        })
        .await
    });
    let (status, retry_after, answer_body) = answer.expect("the receiver answers within 5 s");
    let answer_body = answer_body.expect("the answer's body can be read");
    if path.starts_with("/webhooks/") {
        assert!(
            WEBHOOK_ANSWERS.contains(&status.as_u16()),
            "{status} on {path}: not an answer the receiver gives"
        );
        assert!(
            answer_body.is_empty(),
            "{status} on {path} carries a body: {answer_body:?}"
        );
        if status == StatusCode::SERVICE_UNAVAILABLE {
            assert!(retry_after, "503 without Retry-After");
        }
    } else {
        assert!(
            !status.is_server_error() || status == StatusCode::SERVICE_UNAVAILABLE,
            "{status} on {path}"
        );
    }
    if let Some(expected) = expected {
        assert_eq!(status, expected, "{} {path}", case.method);
    }
    (status, expected)
}

/// A seed: `body` posted to `endpoint` with valid credentials.
pub fn seed(endpoint: Endpoint, body: &[u8]) -> Vec<u8> {
    let index = Endpoint::ALL.iter().position(|e| *e == endpoint).unwrap_or(0);
    Seed::new()
        .byte(0) // POST
        .byte(index as u8)
        .byte(0) // the right token arrangement
        .byte(0) // application/json
        .byte(0) // valid credentials
        .byte(0) // no extra headers
        .byte(4) // exact Content-Length
        .byte(0) // one frame
        .byte(0) // no stream error
        .rest(body)
}

/// Seeds off the happy path: other methods, paths, content types, credentials, framing.
pub fn variations(body: &[u8]) -> Vec<Vec<u8>> {
    let base = |method: u8, target: u8, token: u8, ct: u8, creds: u8, cl: u8, frames: u8, fails: u8| {
        Seed::new()
            .byte(method)
            .byte(target)
            .byte(token)
            .byte(ct)
            .byte(creds)
            .byte(0)
            .byte(cl)
            .byte(frames)
            .byte(fails)
            .rest(body)
    };
    vec![
        base(6, 4, 0, 0, 0, 0, 0, 0),  // GET hs
        base(0, 4, 2, 0, 0, 0, 0, 0),  // token segment on hs
        base(0, 0, 1, 0, 0, 0, 0, 0),  // spark-a without its token
        base(0, 4, 0, 3, 0, 0, 0, 0),  // text/plain
        base(0, 4, 0, 0, 3, 0, 0, 0),  // tampered bearer
        base(0, 2, 0, 0, 3, 0, 0, 0),  // tampered HMAC
        base(0, 5, 0, 0, 3, 0, 0, 0),  // tampered Standard Webhooks
        base(0, 4, 0, 0, 0, 6, 0, 0),  // Content-Length too long
        base(0, 4, 0, 0, 0, 5, 0, 0),  // Content-Length too short
        base(0, 4, 0, 0, 0, 0, 3, 0),  // three frames
        base(0, 4, 0, 0, 0, 0, 2, 3),  // two frames, then a broken stream
        base(0, 11, 0, 0, 0, 0, 0, 0), // /healthz
        base(6, 12, 0, 0, 0, 0, 0, 0), // GET /readyz
    ]
}
