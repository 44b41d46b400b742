//! Spark envelope → ingest worker → outbox → relay → sync worker → (fake) HealthSherpa, with real
//! RabbitMQ and Postgres: a new contact is created and its id and quote URL stored, a later
//! change is an update carrying the new fields, and ten rapid changes end with HealthSherpa
//! holding our latest state.

mod sync_support;

use serde_json::json;
use sync_support::{DEADLINE, Mode, SyncWorld, spark_contact};

#[tokio::test]
async fn new_contact_is_created_then_a_change_is_an_update() {
    let world = SyncWorld::new("s-flow", Mode::ApiKey).await;
    let ingest = world.start_ingest().await;
    let sync = world.start_sync(world.sync_config()).await;

    world
        .publish_contact(&spark_contact("501", "Ada", Some("Lovelace"), "ada@example.com"))
        .await;
    let (id, url) = world.wait_synced("501").await;
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1, "one contact created");
    assert_eq!(held[0].id, id, "the returned id is stored");
    assert_eq!(url, format!("https://healthsherpa.test/quotes/{id}"));
    let body = &held[0].body;
    assert_eq!(body["external_id"], "501");
    assert_eq!(body["first_name"], "Ada");
    assert_eq!(body["last_name"], "Lovelace");
    assert_eq!(body["email"], "ada@example.com");
    assert_eq!(body["phone"], "201-555-0100");
    assert_eq!(
        body["address"],
        json!({"street_address": "14 Aspen Drive", "city": "North Caldwell", "state": "NJ", "zip_code": "07006"})
    );
    assert_eq!(
        body["medicare"],
        json!({"mbi": "1EG4-TE5-MK73", "part_a_effective_date": "2024-01-01", "part_b_effective_date": "2024-02-01"})
    );
    assert_eq!(world.hs.count("GET").await, 0, "a first create needs no search");

    world
        .publish_contact(&spark_contact("501", "Ada", Some("King"), "ada.king@example.com"))
        .await;
    let ok = intake_it::wait_until(DEADLINE, || async {
        world.hs.contacts().first().is_some_and(|c| c.writes == 2)
    })
    .await;
    assert!(ok, "the change reached HealthSherpa");
    world.wait_synced("501").await;
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1, "updated, not created again");
    assert_eq!(held[0].body["last_name"], "King");
    assert_eq!(held[0].body["email"], "ada.king@example.com");
    assert_eq!(world.hs.count("POST").await, 1);
    assert_eq!(world.hs.count("PATCH").await, 1);
    let requests = world.hs.requests().await;
    assert!(
        requests
            .iter()
            .any(|(m, p, _)| m == "PATCH" && *p == format!("/api/v1/contacts/{id}"))
    );

    // The ops endpoints: alive, ready, and the request metrics by operation and outcome.
    let ops = format!("http://{}", sync.addr);
    let get = |p: &str| reqwest::get(format!("{ops}{p}"));
    assert_eq!(get("/healthz").await.expect("healthz").status(), 200);
    assert_eq!(get("/readyz").await.expect("readyz").status(), 200);
    let metrics = get("/metrics")
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        r#"intake_sync_requests_total{operation="create",outcome="ok"}"#,
        r#"intake_sync_requests_total{operation="update",outcome="ok"}"#,
        r#"intake_sync_messages_total{outcome="created"}"#,
        "intake_sync_request_seconds_bucket",
    ] {
        assert!(metrics.contains(line), "{line} in /metrics");
    }

    sync.stop().await;
    ingest.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn ten_rapid_changes_end_with_our_latest_state() {
    let world = SyncWorld::new("s-coalesce", Mode::ApiKey).await;
    let ingest = world.start_ingest().await;
    let sync = world.start_sync(world.sync_config()).await;

    for i in 0..10 {
        world
            .publish_contact(&spark_contact(
                "777",
                &format!("First{i}"),
                Some(&format!("Last{i}")),
                &format!("v{i}@example.com"),
            ))
            .await;
    }
    // Every envelope was handled (applied, or stale when an older one lost the race).
    let client = world.db.client().await;
    let ok = intake_it::wait_until(DEADLINE, || async {
        client
            .query_one("SELECT count(*) FROM inbox WHERE entity_id = '777'", &[])
            .await
            .map(|r| r.get::<_, i64>(0) == 10)
            .unwrap_or(false)
    })
    .await;
    assert!(ok, "all ten changes ingested");
    world.wait_synced("777").await;

    let row = client
        .query_one(
            "SELECT first_name, last_name, email FROM contacts WHERE spark_id = '777'",
            &[],
        )
        .await
        .expect("contact");
    let (first, last, email): (String, String, String) = (row.get(0), row.get(1), row.get(2));
    assert_eq!(first, "First9", "newest received snapshot wins");
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1, "one contact in HealthSherpa");
    let body = &held[0].body;
    assert_eq!(
        (
            body["first_name"].as_str(),
            body["last_name"].as_str(),
            body["email"].as_str()
        ),
        (Some(first.as_str()), Some(last.as_str()), Some(email.as_str())),
        "HealthSherpa's last received state is our latest"
    );
    let writes = held[0].writes;
    assert!(writes <= 10, "never more calls than changes ({writes})");
    eprintln!("ten rapid changes cost {writes} HealthSherpa write(s)");

    sync.stop().await;
    ingest.stop().await;
    world.cleanup().await;
}
