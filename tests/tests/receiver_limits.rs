//! Abuse limits at the front door, against a real RabbitMQ: a burst over an endpoint's rate gets
//! exactly its quota of 200s and 429 + Retry-After for the rest, other endpoints unaffected, and
//! 200 again once a token is back; requests beyond the in-flight cap get 503 + Retry-After at
//! once while the held ones finish, and every request answered 200 is in the queue. The
//! slow-client protections (body deadline, connection cap, idle timeout) are tested in
//! `receiver.rs`.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use intake_core::Provider;
use intake_it::receiver::RunningReceiver;
use intake_it::{AMQP_URL, QueueProbe, TcpProxy, wait_until};
use reqwest::{Client, Response};

/// Every endpoint a HealthSherpa endpoint with the same token, so all land in one queue.
fn endpoint(name: &str, rate_limit: Option<&str>) -> String {
    let rate = rate_limit
        .map(|r| format!("rate_limit = \"{r}\"\n"))
        .unwrap_or_default();
    format!(
        "[[endpoints]]\nname = \"{name}\"\nprovider = \"healthsherpa\"\n\
         auth = [{{ kind = \"bearer\", secret_env = \"HS_TOKEN\" }}]\n{rate}"
    )
}

async fn send(client: &Client, url: &str, token: &str, body: &str) -> Response {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {token}"))
        .body(body.to_owned())
        .send()
        .await
        .expect("request")
}

/// Sends `count` requests at once to `url`; returns (body, status, Retry-After seconds, time to
/// answer) for each.
async fn burst(
    client: &Client,
    url: &str,
    tag: &str,
    count: usize,
) -> Vec<(String, u16, Option<u64>, Duration)> {
    let tasks: Vec<_> = (0..count)
        .map(|i| {
            let (client, url) = (client.clone(), url.to_owned());
            let body = format!("{{\"transaction_id\":\"{tag}-{i}\"}}");
            tokio::spawn(async move {
                let started = Instant::now();
                let r = send(&client, &url, "t", &body).await;
                let retry_after = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().expect("ascii").parse().expect("whole seconds"));
                (body, r.status().as_u16(), retry_after, started.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::with_capacity(count);
    for task in tasks {
        answers.push(task.await.expect("task"));
    }
    answers
}

fn with_status(answers: &[(String, u16, Option<u64>, Duration)], status: u16) -> usize {
    answers.iter().filter(|a| a.1 == status).count()
}

/// The value of the series `name{labels…}` in the receiver's `/metrics` (0 if absent).
async fn metric(receiver: &RunningReceiver, name: &str, labels: &[(&str, &str)]) -> f64 {
    let text = reqwest::get(receiver.ops_url("/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    text.lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|(k, v)| line.contains(&format!("{k}=\"{v}\""))))
        .and_then(|line| line.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

#[tokio::test]
async fn a_burst_over_an_endpoints_rate_gets_429_with_retry_after_and_other_endpoints_are_unaffected() {
    // `rl-limited`: 5 per 10 s (a token every 2 s); `rl-default`: the receiver's default, 3 per
    // minute; `rl-free`: declared "off", exempt from the default.
    let endpoints = [
        endpoint("rl-limited", Some("5/10s")),
        endpoint("rl-default", None),
        endpoint("rl-free", Some("off")),
    ]
    .concat();
    let receiver = RunningReceiver::start(AMQP_URL, &endpoints, &[("HS_TOKEN", "t")], |c| {
        c.rate_limit = Some("3/m".parse().expect("rate"));
    })
    .await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let client = Client::new();
    let limited = receiver.url("rl-limited");

    // Senders without the endpoint's credentials are refused before the rate limit: they
    // cannot use up the quota of the provider behind it.
    for _ in 0..8 {
        assert_eq!(send(&client, &limited, "wrong", "{}").await.status(), 401);
    }

    let started = Instant::now();
    let answers = burst(&client, &limited, "limited", 12).await;
    assert_eq!(
        with_status(&answers, 200),
        5,
        "exactly the burst of 5 accepted: {answers:?}"
    );
    assert_eq!(
        with_status(&answers, 429),
        7,
        "every other one refused: {answers:?}"
    );
    for (_, status, retry_after, _) in &answers {
        match status {
            200 => assert_eq!(*retry_after, None),
            _ => assert!(
                matches!(retry_after, Some(1..=2)),
                "429 says when the next token is due (≤ 2 s): {retry_after:?}"
            ),
        }
    }

    // The other endpoints have their own buckets.
    let free = burst(&client, &receiver.url("rl-free"), "free", 12).await;
    assert_eq!(
        with_status(&free, 200),
        12,
        "an exempt endpoint is unaffected: {free:?}"
    );
    let defaulted = burst(&client, &receiver.url("rl-default"), "default", 6).await;
    assert_eq!(
        with_status(&defaulted, 200),
        3,
        "INTAKE_RATE_LIMIT applies: {defaulted:?}"
    );
    assert_eq!(with_status(&defaulted, 429), 3, "{defaulted:?}");

    // Once a token is back (2 s after the burst), the limited endpoint accepts again.
    let accepted_later = Arc::new(Mutex::new(None));
    let mut n = 0;
    let healed = wait_until(Duration::from_secs(10), || {
        n += 1;
        let body = format!("{{\"transaction_id\":\"later-{n}\"}}");
        let (client, url, accepted_later) = (client.clone(), limited.clone(), accepted_later.clone());
        async move {
            let ok = send(&client, &url, "t", &body).await.status() == 200;
            if ok {
                *accepted_later.lock().expect("lock") = Some(body);
            }
            ok
        }
    })
    .await;
    assert!(healed, "200 again after the window");
    let accepted_later = accepted_later.lock().expect("lock").take();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1500),
        "not before a token is due ({waited:?})"
    );

    // Exactly the requests answered 200 are in the queue, once each; no refused one.
    let expected: BTreeSet<String> = answers
        .iter()
        .chain(&free)
        .chain(&defaulted)
        .filter(|a| a.1 == 200)
        .map(|a| a.0.clone())
        .chain(accepted_later)
        .collect();
    let queued: Vec<String> = probe
        .drain(&receiver.topology.provider_queue(Provider::HealthSherpa))
        .await
        .into_iter()
        .map(|t| String::from_utf8(t.body).expect("utf8"))
        .collect();
    assert_eq!(
        queued.len(),
        expected.len(),
        "no duplicate, nothing refused enqueued"
    );
    assert_eq!(queued.into_iter().collect::<BTreeSet<_>>(), expected);

    // Every refusal is counted, by status and by reason.
    let requests = "intake_receiver_requests_total";
    let limited_total = "intake_receiver_limited_total";
    let refused_429 = metric(
        &receiver,
        requests,
        &[("endpoint", "rl-limited"), ("status", "429")],
    )
    .await;
    assert!(refused_429 >= 7.0, "429s counted: {refused_429}");
    let by_reason = metric(
        &receiver,
        limited_total,
        &[("endpoint", "rl-limited"), ("reason", "rate_limit")],
    )
    .await;
    assert_eq!(by_reason, refused_429, "each 429 has its reason");
    assert_eq!(
        metric(
            &receiver,
            limited_total,
            &[("endpoint", "rl-default"), ("reason", "rate_limit")]
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(&receiver, limited_total, &[("endpoint", "rl-free")]).await,
        0.0
    );
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn requests_beyond_the_in_flight_cap_get_503_at_once_and_every_200_is_queued() {
    const CAP: usize = 4;
    // The broker connection stays up but swallows everything (a stalled TCP proxy), so the
    // first CAP requests wait for their confirm, holding their places.
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let proxy = TcpProxy::start(rabbit).await.expect("proxy");
    let amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let receiver = RunningReceiver::start(&amqp_url, &endpoint("if-held", None), &[("HS_TOKEN", "t")], |c| {
        c.max_in_flight = CAP;
        c.confirm_timeout_ms = 30_000;
        c.idle_timeout_secs = 60;
    })
    .await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let client = Client::new();
    let url = receiver.url("if-held");

    proxy.stall();
    let held: Vec<_> = (0..CAP)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            let body = format!("{{\"transaction_id\":\"held-{i}\"}}");
            tokio::spawn(async move {
                let status = send(&client, &url, "t", &body).await.status().as_u16();
                (body, status)
            })
        })
        .collect();
    let in_flight = "intake_receiver_in_flight";
    assert!(
        wait_until(Duration::from_secs(10), || async {
            metric(&receiver, in_flight, &[("endpoint", "if-held")]).await == CAP as f64
        })
        .await,
        "the first {CAP} requests hold every place"
    );

    // Beyond the cap: 503 + Retry-After at once (not after the 30 s confirm deadline).
    let extras = burst(&client, &url, "extra", 6).await;
    for (_, status, retry_after, took) in &extras {
        assert_eq!(*status, 503, "{extras:?}");
        assert_eq!(*retry_after, Some(5), "the configured Retry-After");
        assert!(*took < Duration::from_secs(2), "answered at once ({took:?})");
    }
    assert!(
        held.iter().all(|h| !h.is_finished()),
        "the held requests are still waiting for their confirm"
    );
    assert_eq!(
        metric(
            &receiver,
            "intake_receiver_limited_total",
            &[("endpoint", "if-held"), ("reason", "in_flight")]
        )
        .await,
        6.0
    );
    assert_eq!(
        metric(
            &receiver,
            "intake_receiver_requests_total",
            &[("endpoint", "if-held"), ("status", "503")]
        )
        .await,
        6.0
    );

    // The broker comes back: the held requests are confirmed and answered 200, and the places
    // are free again.
    proxy.restore();
    let mut accepted = BTreeSet::new();
    for h in held {
        let (body, status) = tokio::time::timeout(Duration::from_secs(30), h)
            .await
            .expect("held request answered")
            .expect("task");
        assert_eq!(status, 200, "a held request completes once the broker answers");
        accepted.insert(body);
    }
    let after = burst(&client, &url, "after", CAP).await;
    assert_eq!(with_status(&after, 200), CAP, "places free again: {after:?}");
    accepted.extend(after.into_iter().map(|a| a.0));
    assert_eq!(
        metric(&receiver, in_flight, &[("endpoint", "if-held")]).await,
        0.0,
        "every place given back"
    );

    // Nothing answered 200 is lost, and no refused request was enqueued.
    let queued: Vec<String> = probe
        .drain(&receiver.topology.provider_queue(Provider::HealthSherpa))
        .await
        .into_iter()
        .map(|t| String::from_utf8(t.body).expect("utf8"))
        .collect();
    assert_eq!(
        queued.len(),
        accepted.len(),
        "each accepted body once: {queued:?}"
    );
    assert_eq!(queued.into_iter().collect::<BTreeSet<_>>(), accepted);
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}
