//! How the sync worker meets HealthSherpa failures, with real RabbitMQ and Postgres: a 429 is
//! retried no earlier than its `Retry-After`, 5xx through the delay tiers, a 422 and a contact
//! missing a required field are dead-lettered with their reason (the latter without a request).

mod sync_support;

use std::time::{Duration, Instant};

use intake_broker::retry::{H_DEAD_REASON, H_LAST_ERROR};
use serde_json::json;
use sync_support::{Mode, SyncWorld, header, spark_contact};
use wiremock::ResponseTemplate;

#[tokio::test]
async fn rate_limited_then_retried_after_retry_after() {
    let world = SyncWorld::new("s-429", Mode::ApiKey).await;
    world
        .hs
        .fail(
            "POST",
            1,
            ResponseTemplate::new(429).insert_header("Retry-After", "1"),
        )
        .await;
    let mut config = world.sync_config();
    // A tier long enough for the asked delay (the delay fits the shortest such tier).
    config.broker.retry_tiers = "100ms,200ms,3s".into();
    let sync = world.start_sync(config).await;

    let started = Instant::now();
    world
        .apply_contact(&spark_contact(
            "601",
            "Grace",
            Some("Hopper"),
            "grace@example.com",
        ))
        .await;
    world.wait_synced("601").await;
    let requests = world.hs.server.received_requests().await.expect("recorded");
    let posts: Vec<_> = requests.iter().filter(|r| r.method.as_str() == "POST").collect();
    assert_eq!(posts.len(), 2, "the 429, then the create that succeeded");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "not before Retry-After"
    );
    assert_eq!(world.hs.contacts().len(), 1);
    assert_eq!(world.probe.count(&world.topology.dead_letter_queue()).await, 0);

    sync.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn three_server_errors_then_success() {
    let world = SyncWorld::new("s-500", Mode::ApiKey).await;
    world.hs.fail("POST", 3, ResponseTemplate::new(500)).await;
    let sync = world.start_sync(world.sync_config()).await;

    world
        .apply_contact(&spark_contact("602", "Alan", Some("Turing"), "alan@example.com"))
        .await;
    let (id, _) = world.wait_synced("602").await;
    assert_eq!(world.hs.count("POST").await, 4, "three 500s, then the create");
    // A 5xx may hide a create that happened: every retry searched first.
    assert_eq!(world.hs.count("GET").await, 3);
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, id);
    assert_eq!(world.probe.count(&world.topology.dead_letter_queue()).await, 0);

    sync.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn validation_error_is_dead_lettered_with_the_message() {
    let world = SyncWorld::new("s-422", Mode::ApiKey).await;
    world
        .hs
        .fail(
            "POST",
            1,
            ResponseTemplate::new(422).set_body_json(json!({
                "errors": [{"field": "email", "message": "is not a valid address: katherine@example.com"}]
            })),
        )
        .await;
    let sync = world.start_sync(world.sync_config()).await;

    world
        .apply_contact(&spark_contact(
            "603",
            "Katherine",
            Some("Johnson"),
            "katherine@example.com",
        ))
        .await;
    let dead = world.take_dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], H_DEAD_REASON).as_deref(), Some("rejected"));
    let error = header(&dead[0], H_LAST_ERROR).expect("error header");
    assert!(
        error.contains("HTTP 422") && error.contains("email: is not a valid address"),
        "{error}"
    );
    assert!(
        !error.contains("katherine@example.com"),
        "sent values are scrubbed: {error}"
    );
    let message: serde_json::Value = serde_json::from_slice(&dead[0].body).expect("json");
    assert_eq!(message["contact_id"], "603");
    assert_eq!(world.hs.count("POST").await, 1, "not retried");
    assert!(world.hs.contacts().is_empty());
    let row = world.sync_row("603").await.expect("create marker row");
    assert_eq!(row.0, None, "no HealthSherpa id stored");

    sync.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn missing_last_name_is_dead_lettered_without_a_request() {
    let world = SyncWorld::new("s-missing", Mode::ApiKey).await;
    let sync = world.start_sync(world.sync_config()).await;

    world
        .apply_contact(&spark_contact("604", "Cher", None, "cher@example.com"))
        .await;
    let dead = world.take_dead_letters(1).await;
    assert_eq!(dead.len(), 1);
    assert_eq!(header(&dead[0], H_DEAD_REASON).as_deref(), Some("missing_field"));
    let error = header(&dead[0], H_LAST_ERROR).expect("error header");
    assert!(error.contains("last_name"), "{error}");
    assert!(
        world.hs.requests().await.is_empty(),
        "no request reached HealthSherpa"
    );
    assert_eq!(world.sync_row("604").await, None);

    sync.stop().await;
    world.cleanup().await;
}
