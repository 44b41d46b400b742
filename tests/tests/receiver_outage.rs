//! Broker outage between receiver and RabbitMQ (a TCP proxy the test cuts): the receiver answers
//! 503 with Retry-After while it cannot confirm, heals by itself once the broker is back, and
//! every request it answered 200 is in the queue.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use intake_core::Provider;
use intake_it::receiver::RunningReceiver;
use intake_it::{QueueProbe, TcpProxy, wait_until};
use reqwest::Client;

const ENDPOINTS: &str = r#"
[[endpoints]]
name = "hs"
provider = "healthsherpa"
auth = [{ kind = "bearer", secret_env = "HS_TOKEN" }]
"#;

async fn send(client: &Client, url: &str, body: String) -> Option<reqwest::Response> {
    client
        .post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer t")
        .body(body)
        .send()
        .await
        .ok()
}

#[tokio::test]
async fn broker_outage_gives_503_then_heals_without_losing_an_accepted_webhook() {
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let proxy = TcpProxy::start(rabbit).await.expect("proxy");
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let receiver = RunningReceiver::start(&url, ENDPOINTS, &[("HS_TOKEN", "t")], |c| {
        c.confirm_timeout_ms = 1000;
    })
    .await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let client = Client::new();
    let webhook_url = receiver.url("hs");

    // Steady load from the side, remembering every body answered 200.
    let accepted = Arc::new(Mutex::new(HashSet::new()));
    let stop_load = tokio_util::sync::CancellationToken::new();
    let load = {
        let (client, url, accepted, stop) = (
            client.clone(),
            webhook_url.clone(),
            accepted.clone(),
            stop_load.clone(),
        );
        tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.is_cancelled() {
                i += 1;
                let body = format!("{{\"transaction_id\":\"load-{i}\"}}");
                if let Some(r) = send(&client, &url, body.clone()).await
                    && r.status() == 200
                {
                    accepted.lock().expect("lock").insert(body);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };

    let first = send(&client, &webhook_url, "{\"transaction_id\":\"before\"}".into())
        .await
        .expect("response");
    assert_eq!(first.status(), 200);
    accepted
        .lock()
        .expect("lock")
        .insert("{\"transaction_id\":\"before\"}".to_owned());

    proxy.cut();
    let retry_after = Arc::new(Mutex::new(None::<String>));
    let saw_503 = wait_until(Duration::from_secs(10), || {
        let (client, url, retry_after) = (client.clone(), webhook_url.clone(), retry_after.clone());
        async move {
            match send(&client, &url, "{\"transaction_id\":\"during\"}".into()).await {
                Some(r) if r.status() == 503 => {
                    *retry_after.lock().expect("lock") = r
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned);
                    true
                }
                _ => false,
            }
        }
    })
    .await;
    assert!(saw_503, "a request during the outage gets 503");
    assert_eq!(
        retry_after.lock().expect("lock").as_deref(),
        Some("5"),
        "503 carries Retry-After"
    );
    let not_ready = client
        .get(receiver.ops_url("/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(
        not_ready.status(),
        503,
        "not ready while the broker is unreachable"
    );

    proxy.restore();
    let healed = wait_until(Duration::from_secs(30), || {
        let (client, url) = (client.clone(), webhook_url.clone());
        async move {
            send(&client, &url, "{\"transaction_id\":\"after\"}".into())
                .await
                .is_some_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(
        healed,
        "the same receiver serves 200 again once the broker is back"
    );
    accepted
        .lock()
        .expect("lock")
        .insert("{\"transaction_id\":\"after\"}".to_owned());

    stop_load.cancel();
    load.await.expect("load task");
    let queued: HashSet<String> = probe
        .drain(&receiver.topology.provider_queue(Provider::HealthSherpa))
        .await
        .into_iter()
        .map(|t| String::from_utf8(t.body).expect("utf8"))
        .collect();
    let accepted = accepted.lock().expect("lock").clone();
    let lost: Vec<&String> = accepted.difference(&queued).collect();
    assert!(lost.is_empty(), "accepted but not queued: {lost:?}");
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}

#[tokio::test]
async fn broker_that_never_confirms_gets_503_after_the_deadline_then_heals() {
    let rabbit: SocketAddr = "127.0.0.1:5672".parse().expect("addr");
    let proxy = TcpProxy::start(rabbit).await.expect("proxy");
    let url = format!("amqp://guest:guest@{}/%2f", proxy.addr());
    let receiver = RunningReceiver::start(&url, ENDPOINTS, &[("HS_TOKEN", "t")], |c| {
        c.confirm_timeout_ms = 500;
    })
    .await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let client = Client::new();
    let webhook_url = receiver.url("hs");

    // The connection stays up but nothing gets through: the confirm never comes.
    proxy.stall();
    let started = std::time::Instant::now();
    let r = send(&client, &webhook_url, "{\"transaction_id\":\"stalled\"}".into())
        .await
        .expect("response");
    let waited = started.elapsed();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert!(
        waited >= Duration::from_millis(500),
        "answered only after the confirm deadline ({waited:?})"
    );
    assert!(waited < Duration::from_secs(5), "and not much later ({waited:?})");

    proxy.restore();
    let healed = wait_until(Duration::from_secs(30), || {
        let (client, url) = (client.clone(), webhook_url.clone());
        async move {
            send(&client, &url, "{\"transaction_id\":\"after\"}".into())
                .await
                .is_some_and(|r| r.status() == 200)
        }
    })
    .await;
    assert!(healed, "serves 200 again once confirms flow");
    probe.cleanup(&receiver.topology).await;
    receiver.stop().await.expect("clean stop");
}
