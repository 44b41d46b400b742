//! Graceful shutdown: once told to stop, the receiver finishes the requests it is serving (each
//! answered 200 is in the queue), refuses new connections, and `run` returns cleanly.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use intake_core::Provider;
use intake_it::receiver::RunningReceiver;
use intake_it::{AMQP_URL, QueueProbe, wait_until};
use reqwest::Client;

const ENDPOINTS: &str = r#"
[[endpoints]]
name = "hs"
provider = "healthsherpa"
auth = [{ kind = "bearer", secret_env = "HS_TOKEN" }]
"#;

#[tokio::test]
async fn shutdown_finishes_in_flight_requests_and_loses_none() {
    // Every one of the 400 requests gets a place: the in-flight cap is tested in receiver_limits.rs.
    let receiver = RunningReceiver::start(AMQP_URL, ENDPOINTS, &[("HS_TOKEN", "t")], |c| {
        c.max_in_flight = 1024;
    })
    .await;
    receiver.wait_ready().await;
    let probe = QueueProbe::connect().await;
    let topology = receiver.topology.clone();
    let queue = topology.provider_queue(Provider::HealthSherpa);
    let client = Client::new();
    let url = receiver.url("hs");
    let answered = Arc::new(AtomicUsize::new(0));

    let requests: Vec<_> = (0..400)
        .map(|i| {
            let (client, url, answered) = (client.clone(), url.clone(), answered.clone());
            tokio::spawn(async move {
                let body = format!("{{\"transaction_id\":\"s-{i}\"}}");
                let sent = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer t")
                    .body(body.clone())
                    .send()
                    .await;
                answered.fetch_add(1, Ordering::Relaxed);
                (body, sent.map(|r| r.status().as_u16()).ok())
            })
        })
        .collect();
    // Stop while requests are still being served.
    assert!(
        wait_until(Duration::from_secs(10), || async {
            answered.load(Ordering::Relaxed) >= 20
        })
        .await
    );
    let stopped = tokio::spawn(receiver.stop());

    let mut accepted = HashSet::new();
    for request in requests {
        let (body, status) = request.await.expect("request task");
        match status {
            Some(200) => {
                accepted.insert(body);
            }
            // Refused or reset after shutdown began: the provider will retry; nothing was promised.
            None => {}
            Some(other) => panic!("request answered {other} during shutdown"),
        }
    }
    stopped.await.expect("stop task").expect("run returned cleanly");
    assert!(accepted.len() >= 20, "requests before the stop were served");

    let queued: HashSet<String> = probe
        .drain(&queue)
        .await
        .into_iter()
        .map(|t| String::from_utf8(t.body).expect("utf8"))
        .collect();
    let lost: Vec<&String> = accepted.difference(&queued).collect();
    assert!(lost.is_empty(), "answered 200 but not queued: {lost:?}");
    let refused = client
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await;
    assert!(refused.is_err(), "no longer accepting connections");
    probe.cleanup(&topology).await;
}
