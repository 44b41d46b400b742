//! Receiver against a real RabbitMQ: every authenticated webhook is in its provider's queue,
//! byte for byte, before the 200; everything else is refused with its status and enqueues nothing.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use intake_broker::codec::decode_envelope;
use intake_core::Provider;
use intake_it::receiver::RunningReceiver;
use intake_it::{AMQP_URL, QueueProbe};
use reqwest::Client;
use sha2::Sha256;

const SPARK_CONTACT: &str = include_str!("../fixtures/spark_contact.json");
const WHSEC_OLD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const WHSEC_NEW: &str = "whsec_bmV3IGtleSBmb3IgdGVzdGluZyByb3RhdGlvbg==";

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

fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("SPARK_TOKEN", "path-secret-1"),
        ("SPARK_PASSWORD", "basic-secret"),
        ("LOOP_TOKEN", "loop-secret"),
        ("S360_KEY", "hmac-key"),
        ("HS_TOKEN", "hs-bearer"),
        (
            "STD_SECRETS",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_bmV3IGtleSBmb3IgdGVzdGluZyByb3RhdGlvbg==",
        ),
    ]
}

async fn start() -> (RunningReceiver, QueueProbe) {
    let receiver = RunningReceiver::start(AMQP_URL, ENDPOINTS, &secrets(), |_| {}).await;
    receiver.wait_ready().await;
    (receiver, QueueProbe::connect().await)
}

fn hmac(key: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn basic(user: &str, pass: &str) -> String {
    format!("Basic {}", BASE64.encode(format!("{user}:{pass}")))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64
}

fn std_sign(secret: &str, id: &str, ts: i64, body: &[u8]) -> String {
    standardwebhooks::Webhook::new(secret)
        .expect("secret")
        .sign(id, ts, body)
        .expect("sign")
}

/// Posts `body` as JSON with extra headers; returns the status.
async fn post(client: &Client, url: &str, headers: &[(&str, String)], body: &[u8]) -> reqwest::Response {
    let mut request = client
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    for (k, v) in headers {
        request = request.header(*k, v);
    }
    request.send().await.expect("request")
}

/// Asserts the provider queue holds exactly one message, equal to `body`, from `endpoint`.
async fn assert_one_enqueued(
    probe: &QueueProbe,
    receiver: &RunningReceiver,
    provider: Provider,
    endpoint: &str,
    body: &[u8],
) {
    let taken = probe.drain(&receiver.topology.provider_queue(provider)).await;
    assert_eq!(taken.len(), 1, "{provider}: exactly one message");
    assert_eq!(taken[0].body, body, "{provider}: body byte for byte");
    let envelope = decode_envelope(&taken[0].properties, &taken[0].body).expect("envelope");
    assert_eq!(envelope.provider, provider);
    assert_eq!(envelope.endpoint, endpoint);
    assert_eq!(envelope.id.get_version_num(), 7, "UUIDv7 id");
}

async fn assert_all_queues_empty(probe: &QueueProbe, receiver: &RunningReceiver) {
    for p in Provider::ALL {
        assert_eq!(
            probe.count(&receiver.topology.provider_queue(p)).await,
            0,
            "{p} queue must be empty"
        );
    }
}

#[tokio::test]
async fn each_provider_with_valid_credentials_gets_200_and_exactly_one_message() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    // Whitespace and a trailing newline must survive: the body is kept byte for byte.
    let body = format!("{SPARK_CONTACT}\n").into_bytes();

    let spark = post(
        &client,
        &receiver.url("spark-a/path-secret-1"),
        &[("authorization", basic("spark", "basic-secret"))],
        &body,
    )
    .await;
    assert_eq!(spark.status(), 200);
    assert!(spark.bytes().await.expect("body").is_empty(), "blank 200");
    assert_one_enqueued(&probe, &receiver, Provider::Spark, "spark-a", &body).await;

    let body = br#"{"type":"new_referral","campaign_id":"MF6319db9890","subscriber":{"id":"sub_1"}}"#;
    let r = post(
        &client,
        &receiver.url("loop"),
        &[("SparkLoop-Token", "loop-secret".into())],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_one_enqueued(&probe, &receiver, Provider::SparkLoop, "loop", body).await;

    let body = br#"{"event":"lead.enriched","lead":{"id":"L1"}}"#;
    let sig = format!("sha256={}", hex(&hmac("hmac-key", body)));
    let r = post(
        &client,
        &receiver.url("s360"),
        &[("X-Spark360-Signature", sig)],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_one_enqueued(&probe, &receiver, Provider::Spark360, "s360", body).await;
    let r = post(
        &client,
        &receiver.url("s360-b64"),
        &[("X-Signature", BASE64.encode(hmac("hmac-key", body)))],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_one_enqueued(&probe, &receiver, Provider::Spark360, "s360-b64", body).await;

    let body = br#"{"transaction_id":"t1","event_type":"sync","policy_status":"effectuated"}"#;
    let r = post(
        &client,
        &receiver.url("hs"),
        &[("authorization", "Bearer hs-bearer".into())],
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_one_enqueued(&probe, &receiver, Provider::HealthSherpa, "hs", body).await;

    let body = br#"{"type":"invoice.paid","data":{"id":"inv_1"}}"#;
    let ts = now();
    let headers = [
        ("webhook-id", "msg_1".to_owned()),
        ("webhook-timestamp", ts.to_string()),
        ("webhook-signature", std_sign(WHSEC_OLD, "msg_1", ts, body)),
    ];
    let r = post(&client, &receiver.url("std"), &headers, body).await;
    assert_eq!(r.status(), 200);
    let taken = probe
        .drain(&receiver.topology.provider_queue(Provider::Standard))
        .await;
    assert_eq!(taken.len(), 1);
    let envelope = decode_envelope(&taken[0].properties, &taken[0].body).expect("envelope");
    assert_eq!(
        envelope.header("webhook-id"),
        Some("msg_1"),
        "webhook-id is kept for dedupe"
    );
    assert_eq!(
        envelope.header("webhook-signature"),
        None,
        "signatures are not kept"
    );

    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn wrong_or_missing_credentials_get_401_and_enqueue_nothing() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    let body = br#"{"hello":"world"}"#;
    let good_basic = basic("spark", "basic-secret");
    let ts = now();
    let cases: Vec<(String, Vec<(&str, String)>)> = vec![
        // Spark: wrong path token, missing basic, wrong password, wrong user.
        (
            receiver.url("spark-a/wrong"),
            vec![("authorization", good_basic.clone())],
        ),
        (
            receiver.url("spark-a"),
            vec![("authorization", good_basic.clone())],
        ),
        (receiver.url("spark-a/path-secret-1"), vec![]),
        (
            receiver.url("spark-a/path-secret-1"),
            vec![("authorization", basic("spark", "nope"))],
        ),
        (
            receiver.url("spark-a/path-secret-1"),
            vec![("authorization", basic("other", "basic-secret"))],
        ),
        // SparkLoop: missing, wrong, prefix of the right token.
        (receiver.url("loop"), vec![]),
        (receiver.url("loop"), vec![("SparkLoop-Token", "nope".into())]),
        (
            receiver.url("loop"),
            vec![("SparkLoop-Token", "loop-secre".into())],
        ),
        // Spark360 HMAC: missing, signature of another body, wrong key, garbage.
        (receiver.url("s360"), vec![]),
        (
            receiver.url("s360"),
            vec![("X-Spark360-Signature", hex(&hmac("hmac-key", b"{}")))],
        ),
        (
            receiver.url("s360"),
            vec![("X-Spark360-Signature", hex(&hmac("other-key", body)))],
        ),
        (
            receiver.url("s360"),
            vec![("X-Spark360-Signature", "sha256=zz".into())],
        ),
        // HealthSherpa bearer: missing, wrong, wrong scheme.
        (receiver.url("hs"), vec![]),
        (receiver.url("hs"), vec![("authorization", "Bearer nope".into())]),
        (
            receiver.url("hs"),
            vec![("authorization", "Token hs-bearer".into())],
        ),
        // Standard Webhooks: missing, bad signature, stale timestamp, future timestamp, unknown key.
        (receiver.url("std"), vec![]),
        (
            receiver.url("std"),
            vec![
                ("webhook-id", "m".into()),
                ("webhook-timestamp", ts.to_string()),
                (
                    "webhook-signature",
                    "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=".into(),
                ),
            ],
        ),
        (
            receiver.url("std"),
            vec![
                ("webhook-id", "m".into()),
                ("webhook-timestamp", (ts - 600).to_string()),
                ("webhook-signature", std_sign(WHSEC_OLD, "m", ts - 600, body)),
            ],
        ),
        (
            receiver.url("std"),
            vec![
                ("webhook-id", "m".into()),
                ("webhook-timestamp", (ts + 600).to_string()),
                ("webhook-signature", std_sign(WHSEC_OLD, "m", ts + 600, body)),
            ],
        ),
        (
            receiver.url("std"),
            vec![
                ("webhook-id", "m".into()),
                ("webhook-timestamp", ts.to_string()),
                (
                    "webhook-signature",
                    std_sign("whsec_dW5rbm93biBrZXk=", "m", ts, body),
                ),
            ],
        ),
    ];
    for (url, headers) in &cases {
        let r = post(&client, url, headers, body).await;
        assert_eq!(
            r.status(),
            401,
            "{url} {:?}",
            headers.iter().map(|h| h.0).collect::<Vec<_>>()
        );
        assert!(
            r.bytes().await.expect("body").is_empty(),
            "401 says nothing about which part failed"
        );
    }
    assert_all_queues_empty(&probe, &receiver).await;
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn standard_webhooks_accepts_a_rotated_key_and_several_signatures() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    let body = br#"{"type":"x"}"#;
    let ts = now();
    // Signed only with the second (new) key.
    let new_only = std_sign(WHSEC_NEW, "m1", ts, body);
    // The sender lists an outdated signature first, then a valid one.
    let several = format!(
        "v1,AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= {}",
        std_sign(WHSEC_OLD, "m2", ts, body)
    );
    for (id, sig) in [("m1", new_only), ("m2", several)] {
        let headers = [
            ("webhook-id", id.to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", sig),
        ];
        assert_eq!(
            post(&client, &receiver.url("std"), &headers, body).await.status(),
            200,
            "{id}"
        );
    }
    assert_eq!(
        probe
            .drain(&receiver.topology.provider_queue(Provider::Standard))
            .await
            .len(),
        2
    );
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_input_gets_its_status_and_enqueues_nothing() {
    let receiver = RunningReceiver::start(AMQP_URL, ENDPOINTS, &secrets(), |c| c.max_body_bytes = 1024).await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let client = Client::new();
    let auth = [("authorization", "Bearer hs-bearer".to_owned())];
    let url = receiver.url("hs");

    // 404: unknown endpoint, and a token segment on an endpoint without path tokens.
    assert_eq!(
        post(&client, &receiver.url("nope"), &auth, b"{}").await.status(),
        404
    );
    assert_eq!(
        post(&client, &receiver.url("hs/extra"), &auth, b"{}")
            .await
            .status(),
        404
    );
    // 405: other methods.
    assert_eq!(client.get(&url).send().await.expect("get").status(), 405);
    assert_eq!(
        client.put(&url).body("{}").send().await.expect("put").status(),
        405
    );
    // 413: over the limit (1 KiB here), whether the length is declared or streamed.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));
    assert_eq!(post(&client, &url, &auth, big.as_bytes()).await.status(), 413);
    let chunks: Vec<Result<bytes::Bytes, std::io::Error>> = vec![
        Ok(bytes::Bytes::from(big.clone().into_bytes())),
        Ok(bytes::Bytes::from_static(b" ")),
    ];
    let streamed = client
        .post(&url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer hs-bearer")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(chunks)))
        .send()
        .await
        .expect("streamed");
    assert_eq!(streamed.status(), 413);
    // 415: not a JSON content type, or none.
    let r = client
        .post(&url)
        .header("authorization", "Bearer hs-bearer")
        .header("content-type", "text/plain")
        .body("{}");
    assert_eq!(r.send().await.expect("send").status(), 415);
    let r = client
        .post(&url)
        .header("authorization", "Bearer hs-bearer")
        .body("{}");
    assert_eq!(r.send().await.expect("send").status(), 415);
    // 400: malformed JSON, and an empty body.
    for bad in [&b"{\"a\":"[..], b"not json", b"", b"{} {}"] {
        let r = post(&client, &url, &auth, bad).await;
        assert_eq!(r.status(), 400, "{:?}", String::from_utf8_lossy(bad));
        assert!(
            r.bytes().await.expect("body").is_empty(),
            "no error text in the body"
        );
    }
    // Exactly at the limit is fine.
    let exact = format!("{{\"pad\":\"{}\"}}", "x".repeat(1024 - 10));
    assert_eq!(exact.len(), 1024);
    assert_eq!(post(&client, &url, &auth, exact.as_bytes()).await.status(), 200);
    assert_eq!(
        probe
            .drain(&receiver.topology.provider_queue(Provider::HealthSherpa))
            .await
            .len(),
        1
    );
    assert_all_queues_empty(&probe, &receiver).await;
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn unroutable_publish_gets_503_with_retry_after() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    // With the provider's queue gone, the mandatory publish comes back: not a 200.
    probe
        .delete(&receiver.topology.provider_queue(Provider::HealthSherpa))
        .await;
    let r = post(
        &client,
        &receiver.url("hs"),
        &[("authorization", "Bearer hs-bearer".into())],
        b"{}",
    )
    .await;
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers().get("retry-after").and_then(|v| v.to_str().ok()),
        Some("5")
    );
    assert!(r.bytes().await.expect("body").is_empty());
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn thousand_concurrent_webhooks_are_each_enqueued_exactly_once() {
    // Concurrency, not the in-flight cap (tested in receiver_limits.rs), is what this test is
    // about: every request gets a place.
    let receiver = RunningReceiver::start(AMQP_URL, ENDPOINTS, &secrets(), |c| c.max_in_flight = 1024).await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let client = Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .expect("client");
    let url = receiver.url("hs");
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let client = client.clone();
            let url = url.clone();
            tokio::spawn(async move {
                let body = format!("{{\"transaction_id\":\"t-{i}\"}}");
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer hs-bearer")
                    .body(body)
                    .send()
                    .await
                    .expect("request");
                r.status().as_u16()
            })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.expect("task"), 200);
    }
    let mut bodies: Vec<String> = probe
        .drain(&receiver.topology.provider_queue(Provider::HealthSherpa))
        .await
        .into_iter()
        .map(|t| String::from_utf8(t.body).expect("utf8"))
        .collect();
    bodies.sort();
    let mut expected: Vec<String> = (0..1000)
        .map(|i| format!("{{\"transaction_id\":\"t-{i}\"}}"))
        .collect();
    expected.sort();
    assert_eq!(bodies, expected, "each body exactly once");
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn ops_endpoints_report_health_readiness_and_metrics() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    assert_eq!(
        client
            .get(receiver.ops_url("/healthz"))
            .send()
            .await
            .expect("healthz")
            .status(),
        200
    );
    assert_eq!(
        client
            .get(receiver.ops_url("/readyz"))
            .send()
            .await
            .expect("readyz")
            .status(),
        200
    );
    let r = post(
        &client,
        &receiver.url("hs"),
        &[("authorization", "Bearer hs-bearer".into())],
        b"{}",
    )
    .await;
    assert_eq!(r.status(), 200);
    let text = client
        .get(receiver.ops_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        text.contains("intake_receiver_requests_total"),
        "requests counter"
    );
    assert!(
        text.contains("intake_receiver_enqueue_seconds_bucket"),
        "enqueue histogram with buckets"
    );
    assert!(text.contains("intake_broker_connected"), "connection gauge");
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn connections_are_bounded_and_idle_ones_closed() {
    use tokio::io::AsyncReadExt;
    let receiver = RunningReceiver::start(AMQP_URL, ENDPOINTS, &secrets(), |c| {
        c.max_connections = 1;
        c.idle_timeout_secs = 2;
        c.body_timeout_ms = 500;
        c.confirm_timeout_ms = 500;
    })
    .await;
    let probe = QueueProbe::connect().await;
    // The one place is taken by a client that connects and says nothing.
    let mut idle = tokio::net::TcpStream::connect(receiver.addr)
        .await
        .expect("connect");
    let client = Client::new();
    let url = receiver.url("hs");
    let request = tokio::spawn(async move {
        post(
            &client,
            &url,
            &[("authorization", "Bearer hs-bearer".into())],
            b"{}",
        )
        .await
        .status()
    });
    // The idle connection is closed by the receiver after its idle timeout ...
    let mut buf = [0u8; 16];
    let closed = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "idle connection closed by the server"
    );
    assert!(
        !request.is_finished(),
        "the waiting client was not served while the place was taken"
    );
    // ... which frees the place for the waiting client.
    let status = tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("served")
        .expect("task");
    assert_eq!(status, 200);
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

/// Writes a raw HTTP/1.1 request head, then `body` in pieces `pause` apart, and returns the
/// status line's code (the server may answer before the body is complete).
async fn raw_post(
    addr: std::net::SocketAddr,
    head: &str,
    body: &[u8],
    pieces: usize,
    pause: Duration,
) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(head.as_bytes()).await.expect("head");
    let (mut read_half, mut write_half) = tokio::io::split(stream);
    // Writes the pieces, then waits: the answer ends the exchange, not the writer.
    let writer = async move {
        for piece in body.chunks(body.len().div_ceil(pieces.max(1)).max(1)) {
            if write_half.write_all(piece).await.is_err() {
                break;
            }
            tokio::time::sleep(pause).await;
        }
        std::future::pending::<()>().await;
    };
    let reader = async move {
        let mut answer = Vec::new();
        let mut buf = [0u8; 256];
        while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
            match read_half.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
        answer
    };
    let answer = tokio::time::timeout(Duration::from_secs(20), async {
        tokio::select! {
            answer = reader => answer,
            () = writer => unreachable!("the writer never finishes"),
        }
    })
    .await
    .expect("an answer within 20 s");
    let line = String::from_utf8_lossy(&answer);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {line:?}"))
}

#[tokio::test]
async fn body_limit_and_deadline_come_after_the_header_checks_and_answer_without_text() {
    let receiver = RunningReceiver::start(AMQP_URL, ENDPOINTS, &secrets(), |c| {
        c.max_body_bytes = 1024;
        c.body_timeout_ms = 600;
    })
    .await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let client = Client::new();
    let url = receiver.url("hs");
    let auth = [("authorization", "Bearer hs-bearer".to_owned())];
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(2000));

    // Too large and unauthenticated, or not JSON: the header checks answer first.
    assert_eq!(post(&client, &url, &[], big.as_bytes()).await.status(), 401);
    assert_eq!(
        post(&client, &receiver.url("nope"), &auth, big.as_bytes())
            .await
            .status(),
        404
    );
    let r = client
        .post(&url)
        .header("authorization", "Bearer hs-bearer")
        .header("content-type", "text/plain")
        .body(big.clone());
    assert_eq!(r.send().await.expect("send").status(), 415);
    // Declared too large: 413 from the body limit, with no text in the body.
    let r = post(&client, &url, &auth, big.as_bytes()).await;
    assert_eq!(r.status(), 413);
    assert!(
        r.bytes().await.expect("body").is_empty(),
        "no error text in a 413"
    );

    // A body that stops arriving: 408 once the deadline passes.
    let head = |len: usize| {
        format!(
            "POST /webhooks/hs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer hs-bearer\r\n\
             content-type: application/json\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n"
        )
    };
    let started = std::time::Instant::now();
    assert_eq!(
        raw_post(receiver.addr, &head(100), b"{\"a\":", 1, Duration::from_secs(5)).await,
        408
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "408 at the deadline, not at the pause's end"
    );
    // A body trickling in a byte every 100 ms keeps the connection busy but still misses the
    // deadline for the whole body (600 ms for 20 bytes): the deadline is not per chunk.
    let trickle = br#"{"a":"xxxxxxxxxxxx"}"#;
    assert_eq!(trickle.len(), 20);
    assert_eq!(
        raw_post(
            receiver.addr,
            &head(trickle.len()),
            trickle,
            trickle.len(),
            Duration::from_millis(100)
        )
        .await,
        408
    );
    // The same body sent at once is accepted.
    assert_eq!(
        raw_post(receiver.addr, &head(trickle.len()), trickle, 1, Duration::ZERO).await,
        200
    );
    assert_eq!(
        probe
            .drain(&receiver.topology.provider_queue(Provider::HealthSherpa))
            .await
            .len(),
        1
    );
    assert_all_queues_empty(&probe, &receiver).await;
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

/// The URL path and headers that authenticate `body` on the test endpoint `endpoint`.
fn credentials(endpoint: &str, body: &[u8]) -> (String, Vec<(&'static str, String)>) {
    match endpoint {
        "spark-a" => (
            "spark-a/path-secret-1".into(),
            vec![("authorization", basic("spark", "basic-secret"))],
        ),
        "loop" => ("loop".into(), vec![("SparkLoop-Token", "loop-secret".into())]),
        "s360" => (
            "s360".into(),
            vec![(
                "X-Spark360-Signature",
                format!("sha256={}", hex(&hmac("hmac-key", body))),
            )],
        ),
        "hs" => ("hs".into(), vec![("authorization", "Bearer hs-bearer".into())]),
        "std" => {
            let ts = now();
            let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
            // Signed by hand: the crate signs only UTF-8 bodies.
            let key = BASE64
                .decode(WHSEC_OLD.trim_start_matches("whsec_"))
                .expect("whsec key");
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).expect("key");
            mac.update(format!("{id}.{ts}.").as_bytes());
            mac.update(body);
            let signature = format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()));
            (
                "std".into(),
                vec![
                    ("webhook-id", id),
                    ("webhook-timestamp", ts.to_string()),
                    ("webhook-signature", signature),
                ],
            )
        }
        other => panic!("no credentials for {other}"),
    }
}

#[tokio::test]
async fn invalid_utf8_bare_scalars_and_broken_chunking_get_400_and_enqueue_nothing() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    let endpoints = [
        ("spark-a", Provider::Spark),
        ("loop", Provider::SparkLoop),
        ("s360", Provider::Spark360),
        ("hs", Provider::HealthSherpa),
        ("std", Provider::Standard),
    ];
    // JSON is UTF-8 (RFC 8259 section 8.1): bytes that are not, inside a string or a key, are a
    // malformed body. Every provider sends an object: a bare scalar or an array is malformed too.
    let bad: [&[u8]; 10] = [
        b"{\"name\":\"\xff\xfe\"}",
        b"{\"name\":\"caf\xc3\"}",
        b"{\"a\":{\"b\":[\"\xed\xa0\x80\"]}}",
        b"{\"\xc0\xaf\":1}",
        b"42",
        b"\"x\"",
        b"true",
        b"null",
        b" [ ] ",
        b"[{\"type\":\"x\"}]",
    ];
    for (endpoint, _) in endpoints {
        for body in bad {
            let (path, headers) = credentials(endpoint, body);
            let r = post(&client, &receiver.url(&path), &headers, body).await;
            // The Standard Webhooks check (the `standardwebhooks` crate) verifies only UTF-8
            // bodies, so there a body that is not UTF-8 fails its signature before its JSON.
            let expected = if endpoint == "std" && std::str::from_utf8(body).is_err() {
                401
            } else {
                400
            };
            assert_eq!(
                r.status(),
                expected,
                "{endpoint}: {:?}",
                String::from_utf8_lossy(body)
            );
            assert!(r.bytes().await.expect("body").is_empty(), "no error text");
        }
    }
    assert_all_queues_empty(&probe, &receiver).await;

    // A chunked body whose framing breaks mid-way is malformed (400), not too large (413).
    let head = "POST /webhooks/hs HTTP/1.1\r\nhost: x\r\nauthorization: Bearer hs-bearer\r\n\
                content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n";
    for broken in [
        &b"zz\r\n{}\r\n0\r\n\r\n"[..],
        b"2\r\n{}XX0\r\n\r\n",
        b"5\r\n{}\r\n0\r\n\r\n",
        b"2\r\n{}\r\n-1\r\n\r\n",
        b"ffffffffffffffffff\r\n{}\r\n0\r\n\r\n",
    ] {
        assert_eq!(
            raw_post(receiver.addr, head, broken, 1, Duration::ZERO).await,
            400,
            "{:?}",
            String::from_utf8_lossy(broken)
        );
    }
    assert_all_queues_empty(&probe, &receiver).await;

    // The same credentials with an object body are accepted: the 400s above were the body's.
    for (endpoint, provider) in endpoints {
        let body = br#"{"ok":true}"#;
        let (path, headers) = credentials(endpoint, body);
        assert_eq!(
            post(&client, &receiver.url(&path), &headers, body).await.status(),
            200,
            "{endpoint}"
        );
        assert_one_enqueued(&probe, &receiver, provider, endpoint, body).await;
    }
    let chunked = b"2\r\n{}\r\n0\r\n\r\n";
    assert_eq!(
        raw_post(receiver.addr, head, chunked, 1, Duration::ZERO).await,
        200
    );
    assert_one_enqueued(&probe, &receiver, Provider::HealthSherpa, "hs", b"{}").await;
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn a_path_segment_that_is_not_utf8_gets_404_without_text() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    let body = br#"{"ok":true}"#;
    // Percent-encoded bytes that are not UTF-8, in the name or in the token segment.
    for path in [
        "hs%FF",
        "spark-a/%FF%FE",
        "spark-a/path-secret-1%C3",
        "%ED%A0%80/x",
    ] {
        let (_, headers) = credentials(if path.starts_with("hs") { "hs" } else { "spark-a" }, body);
        let r = post(&client, &receiver.url(path), &headers, body).await;
        assert_eq!(r.status(), 404, "{path}");
        assert!(r.bytes().await.expect("body").is_empty(), "{path}: no error text");
    }
    // A percent-encoded name or token that decodes to the real one is that endpoint.
    let (_, headers) = credentials("spark-a", body);
    let r = post(
        &client,
        &receiver.url("spark%2Da/path%2Dsecret-1"),
        &headers,
        body,
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_one_enqueued(&probe, &receiver, Provider::Spark, "spark-a", body).await;
    assert_all_queues_empty(&probe, &receiver).await;
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn standard_webhooks_timestamps_at_the_ends_of_i64_get_401() {
    let (receiver, probe) = start().await;
    let client = Client::new();
    let body = br#"{"type":"invoice.paid"}"#;
    // Signed correctly: only the timestamp is wrong. The crate's `now - timestamp` overflowed
    // on i64::MIN (a panic in a build with overflow checks; accepted as fresh without).
    for ts in [i64::MIN, i64::MIN + 1, i64::MAX, now() - 301, now() + 301] {
        let headers = [
            ("webhook-id", "msg_edge".to_owned()),
            ("webhook-timestamp", ts.to_string()),
            ("webhook-signature", std_sign(WHSEC_OLD, "msg_edge", ts, body)),
        ];
        let r = post(&client, &receiver.url("std"), &headers, body).await;
        assert_eq!(r.status(), 401, "timestamp {ts}");
    }
    assert_all_queues_empty(&probe, &receiver).await;
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}
