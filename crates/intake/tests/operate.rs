//! The operator commands run as `intake` processes against the real RabbitMQ and Postgres, with
//! workers in-process (so a test can inject faults): replaying an `ordering_timeout` dead letter
//! after its prerequisite arrived applies it, and a second replay is refused as a duplicate; a
//! sync dead letter replayed after HealthSherpa recovered creates exactly one contact; a message
//! that crashes its handler every time is recorded with reason `delivery_limit`; a dead-letter
//! publish that is blocked waits instead of burning the delivery limit; `status` counts what
//! the test enqueued and parked; `trace` shows a parked-then-released event's steps in order.

#[path = "../../../tests/tests/sync_support/mod.rs"]
mod sync_support;
#[path = "../../../tests/tests/worker_support/mod.rs"]
mod worker_support;

use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use intake_core::{Envelope, Provider};
use intake_it::{AMQP_URL, TEST_QUEUE_EXPIRY_SECS, TcpProxy, wait_until};
use intake_providers::fixtures;
use intake_store::{ApplyOptions, Store, StoreConfig};
use intake_worker::Hooks;
use serde_json::Value;
use worker_support::{TEST_TIERS, World};

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");
const DEADLINE: Duration = Duration::from_secs(40);

/// Runs `intake <args>` against the world's database and prefix; returns its output.
async fn intake(world: &World, args: &[&str]) -> Output {
    intake_at(&world.db.url, world.topology.prefix(), TEST_TIERS, args).await
}

/// Runs `intake <args>` against a database, a queue prefix and its retry tiers.
async fn intake_at(database_url: &str, prefix: &str, tiers: &str, args: &[&str]) -> Output {
    let mut command = Command::new(INTAKE);
    command
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("INTAKE_AMQP_URL", AMQP_URL)
        .env("INTAKE_DATABASE_URL", database_url)
        .env("INTAKE_QUEUE_PREFIX", prefix)
        .env("INTAKE_ENCRYPTION_KEYS", intake_it::TEST_ENCRYPTION_KEYS)
        .env("INTAKE_HMAC_KEY", intake_it::TEST_HMAC_KEY)
        .env("INTAKE_RETRY_TIERS", tiers)
        .env("INTAKE_QUEUE_EXPIRES_SECS", TEST_QUEUE_EXPIRY_SECS.to_string())
        // No RabbitMQ Prometheus endpoint is needed for these tests.
        .env("INTAKE_RABBITMQ_METRICS_URL", "http://127.0.0.1:9")
        .stdin(Stdio::null());
    tokio::task::spawn_blocking(move || command.output().expect("run intake"))
        .await
        .expect("intake task")
}

fn json_of(output: &Output) -> Value {
    serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "intake printed no JSON ({e}): stdout {:?} stderr {:?}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    })
}

fn code(output: &Output) -> i32 {
    output.status.code().expect("exited")
}

/// The dead letter ids with `reason`, as `intake dead-letters list` shows them.
async fn dead_letter_ids(world: &World, reason: &str) -> Vec<i64> {
    let output = intake(world, &["dead-letters", "list", "--reason", reason, "--json"]).await;
    assert_eq!(code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    json_of(&output)
        .as_array()
        .expect("array")
        .iter()
        .map(|r| r["id"].as_i64().expect("id"))
        .collect()
}

#[tokio::test]
async fn an_ordering_timeout_replayed_after_its_prerequisite_arrived_is_applied_once() {
    let world = World::new("op-replay").await;
    let mut config = world.worker_config();
    config.park_limit_secs = Some(1);
    let worker = world.start_worker(config).await;
    let requested = world
        .publish(
            Provider::Spark360,
            fixtures::SPARK360_CONTACT_REQUESTED.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM dead_letters WHERE reason = 'ordering_timeout'",
            1,
            DEADLINE,
        )
        .await;
    // The prerequisite arrives after the timeout.
    world
        .publish(
            Provider::Spark360,
            fixtures::SPARK360_ENRICHED.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE event_type = 'lead.enriched' AND outcome = 'applied'",
            1,
            DEADLINE,
        )
        .await;
    let ids = dead_letter_ids(&world, "ordering_timeout").await;
    assert_eq!(ids.len(), 1);
    let id = ids[0].to_string();

    let dry = intake(&world, &["dead-letters", "replay", &id, "--dry-run", "--json"]).await;
    assert_eq!(code(&dry), 0);
    assert_eq!(json_of(&dry)[0]["outcome"], "would_replay");

    let first = intake(&world, &["dead-letters", "replay", &id, "--json"]).await;
    assert_eq!(code(&first), 0, "{}", String::from_utf8_lossy(&first.stderr));
    assert_eq!(json_of(&first)[0]["outcome"], "replayed");
    world
        .wait_count(
            &format!(
                "SELECT count(*) FROM inbox WHERE envelope_id = '{}' AND outcome = 'applied'",
                requested.id
            ),
            1,
            DEADLINE,
        )
        .await;
    // Replayed again: it took effect, so it is refused (exit 4) and nothing is applied twice.
    let second = intake(&world, &["dead-letters", "replay", &id, "--json"]).await;
    assert_eq!(code(&second), 4);
    assert_eq!(json_of(&second)[0]["outcome"], "skipped_already_applied");
    assert_eq!(
        world
            .count("SELECT count(*) FROM inbox WHERE event_type = 'lead.contact_requested'")
            .await,
        1
    );
    assert_eq!(
        world.count("SELECT replay_count::bigint FROM dead_letters").await,
        1,
        "one replay recorded"
    );
    // It no longer counts as needing an operator.
    let open = intake(&world, &["dead-letters", "list", "--json"]).await;
    assert_eq!(json_of(&open).as_array().map(Vec::len), Some(0));
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn a_sync_dead_letter_replayed_after_healthsherpa_recovered_creates_one_contact() {
    use sync_support::{Mode, SyncWorld, spark_contact};
    let world = SyncWorld::new("op-sync", Mode::ApiKey).await;
    // HealthSherpa fails every attempt (one plus three retry tiers), then recovers.
    world
        .hs
        .fail("POST", 4, wiremock::ResponseTemplate::new(500))
        .await;
    let ingest = world.start_ingest().await; // runs the dead-letter recorder
    let sync = world.start_sync(world.sync_config()).await;
    world
        .apply_contact(&spark_contact(
            "801",
            "Grace",
            Some("Hopper"),
            "grace@example.com",
        ))
        .await;
    let db = world.db.client().await;
    let row = async || {
        db.query_opt("SELECT id, reason FROM dead_letters WHERE source = 'sync'", &[])
            .await
            .expect("query")
    };
    assert!(
        wait_until(DEADLINE, || async { row().await.is_some() }).await,
        "sync dead letter recorded"
    );
    let dead = row().await.expect("row");
    assert_eq!(dead.get::<_, String>(1), "retries_exhausted");
    assert_eq!(world.hs.count("POST").await, 4);
    assert!(world.hs.contacts().is_empty());

    let id = dead.get::<_, i64>(0).to_string();
    let prefix = world.topology.prefix().to_owned();
    let output = intake_at(
        &world.db.url,
        &prefix,
        sync_support::TEST_TIERS,
        &["dead-letters", "replay", &id, "--json"],
    )
    .await;
    assert_eq!(code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(json_of(&output)[0]["outcome"], "replayed");
    let (hs_id, _) = world.wait_synced("801").await;
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1, "exactly one contact created");
    assert_eq!(held[0].id, hs_id);
    assert_eq!(
        world.hs.count("POST").await,
        5,
        "four failures, then the one create"
    );
    drop(db);
    sync.stop().await;
    ingest.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn a_message_that_crashes_its_handler_every_time_is_listed_as_delivery_limit() {
    let world = World::new("op-limit").await;
    let hooks = Hooks {
        after_commit: Some(Arc::new(|_: &[&Envelope]| panic!("simulated handler bug"))),
        ..Hooks::default()
    };
    let worker = world.start_worker_with(world.worker_config(), hooks).await;
    let doomed = world
        .publish(
            Provider::SparkLoop,
            fixtures::SPARKLOOP_NEW_REFERRAL.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM dead_letters WHERE reason = 'delivery_limit'",
            1,
            Duration::from_secs(90),
        )
        .await;
    let output = intake(
        &world,
        &["dead-letters", "list", "--reason", "delivery_limit", "--json"],
    )
    .await;
    let rows = json_of(&output);
    let row = &rows[0];
    assert_eq!(row["message_id"], doomed.id.to_string());
    assert_eq!(row["provider"], "sparkloop");
    assert_eq!(row["queue"], world.topology.provider_queue(Provider::SparkLoop));
    assert!(row["attempts"].as_i64().expect("attempts") >= 20, "{row}");
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn a_blocked_dead_letter_publish_waits_and_is_not_dead_lettered_by_the_broker() {
    let world = World::new("op-stall").await;
    let proxy = TcpProxy::start("127.0.0.1:5672".parse().expect("addr"))
        .await
        .expect("proxy");
    let hooks = Hooks {
        // Retries and dead letters go through the proxy; consuming does not.
        publish_amqp_url: Some(format!("amqp://guest:guest@{}/%2f", proxy.addr()).into()),
        ..Hooks::default()
    };
    let worker = world.start_worker_with(world.worker_config(), hooks).await;
    assert!(
        wait_until(DEADLINE, || async {
            world
                .probe
                .consumers(&world.topology.provider_queue(Provider::SparkLoop))
                .await
                > 0
        })
        .await
    );
    proxy.stall();
    let unknown = world
        .publish(
            Provider::SparkLoop,
            br#"{"type":"reward_exploded","campaign_id":"c","subscriber":{"id":"s"}}"#.to_vec(),
        )
        .await;
    let queue = world.topology.provider_queue(Provider::SparkLoop);
    // Taken by the worker (nothing ready), held unacked while its dead-letter publish is blocked.
    assert!(wait_until(DEADLINE, || async { world.probe.count(&queue).await == 0 }).await);
    // Handing it back every 500 ms, as before, would have reached the delivery limit (20) in
    // about 10 s and had the broker dead-letter it without a reason. Held, it stays ours.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(world.dead_letter_queue_count().await, 0);
    assert_eq!(world.probe.count(&queue).await, 0, "still held by the worker");
    proxy.restore();
    world
        .wait_count("SELECT count(*) FROM dead_letters", 1, DEADLINE)
        .await;
    let c = world.db.client().await;
    let row = c
        .query_one("SELECT envelope_id, reason, attempts FROM dead_letters", &[])
        .await
        .expect("row");
    assert_eq!(row.get::<_, uuid::Uuid>(0), unknown.id);
    assert_eq!(row.get::<_, String>(1), "unknown_event_type");
    assert_eq!(
        row.get::<_, i32>(2),
        1,
        "one attempt: never redelivered meanwhile"
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

fn envelope(provider: Provider, body: &str) -> Envelope {
    Envelope::new("ep-test", provider, vec![], Bytes::from(body.to_owned()))
}

async fn store_of(world: &World) -> Store {
    let store = Store::new(&StoreConfig::new(
        world.db.url.clone(),
        intake_it::test_keys(),
        2,
        Duration::from_secs(5),
    ))
    .expect("store");
    store.migrate().await.expect("migrate");
    store
}

async fn apply(store: &Store, envelope: &Envelope) {
    for event in intake_providers::decode(envelope).expect("decodes") {
        store
            .apply(envelope, &event, ApplyOptions::default())
            .await
            .expect("apply");
    }
}

/// A Spark360 body of `event` for lead `lead`.
fn lead_body(fixture: &str, lead: &str) -> String {
    let mut v: Value = serde_json::from_str(fixture).expect("fixture");
    v["lead"]["id"] = Value::String(lead.to_owned());
    if v.get("event_id").is_some() {
        v["event_id"] = Value::String(format!("{lead}-{}", v["event"].as_str().unwrap_or("e")));
    }
    v.to_string()
}

#[tokio::test]
async fn status_counts_what_was_enqueued_parked_and_dead_lettered() {
    let world = World::new("op-status").await;
    let store = store_of(&world).await;
    // Two events parked (contact_requested before enriched, two leads).
    for lead in ["L-a", "L-b"] {
        apply(
            &store,
            &envelope(
                Provider::Spark360,
                &lead_body(fixtures::SPARK360_CONTACT_REQUESTED, lead),
            ),
        )
        .await;
    }
    // Three webhooks waiting in the Spark queue (no worker runs).
    for n in 0..3 {
        world
            .publish(
                Provider::Spark,
                fixtures::SPARK_CONTACT
                    .replace("\"1234\"", &format!("\"{n}\""))
                    .into_bytes(),
            )
            .await;
    }
    let output = intake(&world, &["status", "--json"]).await;
    assert_eq!(code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    let status = json_of(&output);
    let queue = |name: String| {
        status["queues"]
            .as_array()
            .expect("queues")
            .iter()
            .find(|q| q["queue"] == name.as_str())
            .cloned()
            .unwrap_or_else(|| panic!("{name} in {status}"))
    };
    let spark = queue(world.topology.provider_queue(Provider::Spark));
    assert_eq!(spark["ready"], 3);
    assert_eq!(spark["consumers"], 0);
    assert_eq!(
        queue(world.topology.provider_queue(Provider::Spark360))["ready"],
        0
    );
    assert_eq!(status["parked"], 2);
    assert_eq!(status["outbox_backlog"], 0);
    assert_eq!(status["open_dead_letters"], serde_json::json!({}));
    // The human form says the same.
    let text = intake(&world, &["status"]).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("parked events: 2"), "{text}");
    world.cleanup().await;
}

#[tokio::test]
async fn trace_shows_a_parked_then_released_event_in_order() {
    let world = World::new("op-trace").await;
    let store = store_of(&world).await;
    let requested = envelope(
        Provider::Spark360,
        &lead_body(fixtures::SPARK360_CONTACT_REQUESTED, "L-t"),
    );
    apply(&store, &requested).await;
    apply(
        &store,
        &envelope(Provider::Spark360, &lead_body(fixtures::SPARK360_ENRICHED, "L-t")),
    )
    .await;
    let id = requested.id.to_string();
    let output = intake(&world, &["trace", &id, "--json"]).await;
    assert_eq!(code(&output), 0, "{}", String::from_utf8_lossy(&output.stderr));
    let trace = json_of(&output);
    let steps: Vec<&str> = trace["steps"]
        .as_array()
        .expect("steps")
        .iter()
        .map(|s| s["step"].as_str().expect("step"))
        .collect();
    assert_eq!(steps, ["received", "parked", "released"], "{trace}");
    let at: Vec<&str> = trace["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["at"].as_str().unwrap())
        .collect();
    assert!(at.windows(2).all(|w| w[0] <= w[1]), "in time order: {at:?}");
    // The same by endpoint and dedupe key.
    let key: String = world
        .db
        .client()
        .await
        .query_one(
            "SELECT dedupe_key FROM inbox WHERE envelope_id = $1",
            &[&requested.id],
        )
        .await
        .expect("inbox")
        .get(0);
    let by_key = intake(
        &world,
        &["trace", "--endpoint", "ep-test", "--dedupe-key", &key, "--json"],
    )
    .await;
    assert_eq!(json_of(&by_key)["envelope_id"], id);
    // Unknown: exit 3.
    let missing = intake(&world, &["trace", "00000000-0000-7000-8000-000000000000"]).await;
    assert_eq!(code(&missing), 3);
    world.cleanup().await;
}
