//! Group commit against real RabbitMQ and Postgres: a batch's deliveries applied in one
//! transaction keep every promise of one-by-one application — exactly once across a crash between
//! the commit and the acks, each event's own outcome inside a mixed batch, and two workers batching
//! the same entities at once without a deadlock, ending where one-by-one application ends.

mod worker_support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_it::{TcpProxy, wait_until};
use intake_providers::{DecodedEvent, fixtures};
use intake_store::{ApplyOptions, BatchDelivery, Outcome, Store, StoreConfig};
use intake_worker::Hooks;
use worker_support::{World, events_with_outcome, metric_sum};

const DEADLINE: Duration = Duration::from_secs(60);

fn contact(id: usize, first_name: &str) -> String {
    fixtures::SPARK_CONTACT
        .replacen("\"id\": 1234,", &format!("\"id\": {id},"), 1)
        .replacen(
            "\"first_name\": \"Anthony\"",
            &format!("\"first_name\": \"{first_name}\""),
            1,
        )
}

/// A contact Postgres refuses to store: a NUL character in a text column (SQLSTATE 22021), a
/// permanent failure of that one event.
fn contact_postgres_refuses(id: usize) -> String {
    contact(id, "Nul\\u0000Byte")
}

/// A Spark360 lead's four events, in document order (enriched is the prerequisite of the alert
/// and the contact request; the preview only fills gaps once enriched is there).
fn lead_events(lead: usize) -> Vec<String> {
    [
        fixtures::SPARK360_ADDRESS_PREVIEW,
        fixtures::SPARK360_ENRICHED,
        fixtures::SPARK360_RENTAL_ALERT,
        fixtures::SPARK360_CONTACT_REQUESTED,
    ]
    .iter()
    .map(|body| {
        body.replace("lead_7f3a9c", &format!("lead_batch_{lead}"))
            .replace("evt_01HX", &format!("evt_batch_{lead}_"))
    })
    .collect()
}

/// Two status events of one HealthSherpa policy, older then newer.
fn policy_events(app: usize) -> Vec<String> {
    [
        ("pending_effectuation", "2026-01-01T00:00:00Z"),
        ("effectuated", "2026-02-01T00:00:00Z"),
    ]
    .iter()
    .enumerate()
    .map(|(n, (status, at))| {
        fixtures::HEALTHSHERPA_OFF_EXCHANGE
            .replace("txn_7c1d2e3f", &format!("txn_batch_{app}_{n}"))
            .replace("pol_9001", &format!("pol_batch_{app}"))
            .replace("app_5512", &format!("app_batch_{app}"))
            .replace("\"effectuated\"", &format!("\"{status}\""))
            .replace("2026-02-03T14:05:06Z", at)
    })
    .collect()
}

fn decode_all(envelopes: &[Envelope]) -> Vec<Vec<DecodedEvent>> {
    envelopes
        .iter()
        .map(|e| intake_providers::decode(e).expect("decodes"))
        .collect()
}

/// The batch `Store::apply_batch` takes: each envelope with its decoded events.
fn batch_of<'a>(envelopes: &'a [Envelope], decoded: &'a [Vec<DecodedEvent>]) -> Vec<BatchDelivery<'a>> {
    envelopes
        .iter()
        .zip(decoded)
        .map(|(envelope, events)| BatchDelivery { envelope, events })
        .collect()
}

async fn store(db: &TestDb) -> Store {
    db.migrated_store(4, Duration::from_secs(5)).await
}

/// Sum and count of the worker's `intake_consumer_batch_size` histogram.
async fn batch_sizes(addr: std::net::SocketAddr) -> (f64, f64) {
    let worker = "consumer=\"worker\"";
    (
        metric_sum(addr, "intake_consumer_batch_size_sum", worker).await,
        metric_sum(addr, "intake_consumer_batch_size_count", worker).await,
    )
}

#[tokio::test]
async fn a_batch_whose_acks_are_lost_after_its_commit_comes_back_as_duplicates_only() {
    let world = World::new("wb-noack").await;
    let proxy = Arc::new(
        TcpProxy::start("127.0.0.1:5672".parse().unwrap())
            .await
            .expect("proxy"),
    );
    // A backlog, so that batches of several deliveries form.
    for id in 0..40 {
        world
            .publish(Provider::Spark, contact(500 + id, "Anthony").into_bytes())
            .await;
    }
    let mut config = world.worker_config();
    config.broker.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr()).into();
    config.concurrency = 1;
    config.batch_size = 16;
    config.batch_linger_ms = 50;
    // The first committed batch of several deliveries loses its broker connection before its
    // acks can be sent.
    let cut_batch: Arc<Mutex<Option<Vec<uuid::Uuid>>>> = Arc::default();
    let cut = Arc::new(AtomicBool::new(false));
    let hooks = Hooks {
        after_commit: Some({
            let (proxy, cut_batch, cut) = (proxy.clone(), cut_batch.clone(), cut.clone());
            Arc::new(move |batch: &[&Envelope]| {
                if batch.len() >= 2 && !cut.swap(true, Ordering::SeqCst) {
                    proxy.cut();
                    *cut_batch.lock().expect("lock") = Some(batch.iter().map(|e| e.id).collect());
                }
            })
        }),
        ..Hooks::default()
    };
    let worker = world.start_worker_with(config, hooks).await;
    assert!(
        wait_until(DEADLINE, || async { cut.load(Ordering::SeqCst) }).await,
        "a batch of several deliveries committed"
    );
    proxy.restore();
    let cut_batch = cut_batch.lock().expect("lock").clone().expect("cut batch");

    // Every delivery of the cut batch came back and was recognised: one duplicate each.
    let ids = cut_batch
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    world
        .wait_count(
            &format!("SELECT count(*) FROM inbox WHERE duplicates = 1 AND envelope_id IN ({ids})"),
            cut_batch.len() as i64,
            DEADLINE,
        )
        .await;
    world
        .wait_count("SELECT count(*) FROM contacts", 40, DEADLINE)
        .await;
    // Nothing applied twice: one inbox row, one outbox row per contact; no delivery came back
    // more than once; nothing retried or dead-lettered.
    assert_eq!(world.count("SELECT count(*) FROM inbox").await, 40);
    assert_eq!(world.count("SELECT count(*) FROM outbox").await, 40);
    assert_eq!(
        world
            .count("SELECT COALESCE(max(duplicates), 0)::bigint FROM inbox")
            .await,
        1
    );
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);
    let queue = world.topology.provider_queue(Provider::Spark);
    assert!(wait_until(DEADLINE, || async { world.probe.count(&queue).await == 0 }).await);
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn a_batch_holding_a_refused_event_a_parked_event_and_its_prerequisite_settles_each_on_its_own() {
    let db = fresh_database("wb-mixed").await;
    let store = store(&db).await;
    let lead = lead_events(1);
    let bodies = [
        (Provider::Spark, contact(601, "Anthony")),
        (Provider::Spark, contact_postgres_refuses(602)),
        // The alert comes before its prerequisite: parked, then released by the next delivery.
        (Provider::Spark360, lead[2].clone()),
        (Provider::Spark360, lead[1].clone()),
        (Provider::Spark, contact(603, "Carmela")),
    ];
    let mut envelopes: Vec<Envelope> = bodies
        .iter()
        .map(|(p, b)| Envelope::new("ep", *p, vec![], Bytes::from(b.clone())))
        .collect();
    // The first delivery once more, as a redelivery in the same batch.
    envelopes.push(envelopes[0].clone());
    let decoded = decode_all(&envelopes);
    let batch = batch_of(&envelopes, &decoded);

    let (results, stats) = store
        .apply_batch(&batch, ApplyOptions::default(), Duration::from_secs(10))
        .await;
    assert_eq!(stats.commits, 1, "one transaction for the whole batch");
    assert_eq!(stats.splits, 0);
    let outcome = |i: usize| {
        let r = &results[i];
        assert!(r.failed.is_none(), "delivery {i}: {:?}", r.failed);
        r.reports[0].outcome
    };
    assert_eq!(outcome(0), Outcome::Applied);
    let (failed_at, error) = results[1].failed.clone().expect("the refused contact failed");
    assert_eq!(failed_at, 0);
    assert!(!error.is_retryable(), "a permanent failure: {error}");
    assert_eq!(error.code(), Some("22021"));
    assert_eq!(outcome(2), Outcome::Parked);
    assert_eq!(outcome(3), Outcome::Applied);
    let released: Vec<&str> = results[3].reports[0]
        .released
        .iter()
        .map(|r| r.event_type.as_str())
        .collect();
    assert_eq!(released, ["lead.rental_alert"]);
    assert_eq!(outcome(4), Outcome::Applied);
    assert_eq!(outcome(5), Outcome::Duplicate);

    // Committed: everything but the refused event, which left no trace (its savepoint rolled back).
    let c = db.client().await;
    let count = |sql: &'static str| {
        let c = &c;
        async move { c.query_one(sql, &[]).await.expect(sql).get::<_, i64>(0) }
    };
    assert_eq!(count("SELECT count(*) FROM contacts").await, 2);
    assert_eq!(
        count("SELECT count(*) FROM inbox WHERE dedupe_key LIKE '602%'").await,
        0
    );
    assert_eq!(count("SELECT count(*) FROM inbox").await, 4);
    assert_eq!(
        count("SELECT count(*) FROM inbox WHERE outcome = 'released'").await,
        1
    );
    assert_eq!(count("SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(
        count("SELECT COALESCE(sum(duplicates), 0)::bigint FROM inbox").await,
        1
    );
    assert_eq!(count("SELECT count(*) FROM outbox").await, 2);
    let rental: Option<String> = c
        .query_one(
            "SELECT rental_alert::text FROM leads WHERE id = 'lead_batch_1'",
            &[],
        )
        .await
        .map(|r| r.get(0))
        .unwrap_or(None);
    assert!(rental.is_some(), "the released alert's effect is committed");
    drop(c);
    db.drop_database().await;
}

#[tokio::test]
async fn a_key_whose_event_failed_in_a_batch_is_applied_by_a_later_event_of_the_same_batch() {
    // The batch takes every inbox key in one statement before applying any event; a failed
    // event gives its key back, so a later event with the same key is applied, as one by one.
    let db = fresh_database("wb-giveback").await;
    let store = store(&db).await;
    let envelopes: Vec<Envelope> = [
        contact_postgres_refuses(602),
        contact(604, "Other"),
        contact(602, "Fixed"),
    ]
    .into_iter()
    .map(|b| Envelope::new("ep", Provider::Spark, vec![], Bytes::from(b)))
    .collect();
    let mut decoded = decode_all(&envelopes);
    // The provider's retry of the refused event, under the same key, with a body we can store.
    let refused_key = decoded[0][0].dedupe_key.clone();
    decoded[2][0].dedupe_key = refused_key.clone();
    let batch = batch_of(&envelopes, &decoded);

    let (results, stats) = store
        .apply_batch(&batch, ApplyOptions::default(), Duration::from_secs(10))
        .await;
    assert_eq!(stats.commits, 1, "one transaction for the whole batch");
    let (_, error) = results[0].failed.clone().expect("the refused contact failed");
    assert_eq!(error.code(), Some("22021"));
    for i in [1, 2] {
        assert!(
            results[i].failed.is_none(),
            "delivery {i}: {:?}",
            results[i].failed
        );
        assert_eq!(results[i].reports[0].outcome, Outcome::Applied, "delivery {i}");
    }
    let c = db.client().await;
    let row = c
        .query_one(
            "SELECT envelope_id, duplicates FROM inbox WHERE dedupe_key = $1",
            &[&refused_key],
        )
        .await
        .expect("the retried key has its row");
    assert_eq!(
        row.get::<_, uuid::Uuid>(0),
        envelopes[2].id,
        "the row is the retry's"
    );
    assert_eq!(row.get::<_, i32>(1), 0, "the retry is no duplicate");
    let first_name: String = c
        .query_one("SELECT first_name FROM contacts WHERE spark_id = '602'", &[])
        .await
        .expect("the retry's contact is stored")
        .get(0);
    assert_eq!(first_name, "Fixed");
    drop(c);
    db.drop_database().await;
}

#[tokio::test]
async fn deliveries_of_a_busy_entity_are_deferred_then_split_on_lock_timeouts_and_never_dropped() {
    let db = fresh_database("wb-busy").await;
    let mut config = StoreConfig::new(db.url.clone(), intake_it::test_keys(), 4, Duration::from_secs(5));
    config.lock_timeout = Some(Duration::from_millis(300));
    let store = Store::new(&config).expect("store");
    store.migrate().await.expect("migrate");
    let busy = 901;
    let envelopes: Vec<Envelope> = [
        contact(900, "Free"),
        contact(busy, "First"),
        contact(busy, "Second"),
    ]
    .into_iter()
    .map(|b| Envelope::new("ep", Provider::Spark, vec![], Bytes::from(b)))
    .collect();
    let decoded = decode_all(&envelopes);
    let batch = batch_of(&envelopes, &decoded);

    // Another session holds the busy contact's entity row.
    let mut holder = db.client().await;
    holder
        .execute(
            "INSERT INTO entities (kind, id) VALUES ('contact', $1)",
            &[&busy.to_string()],
        )
        .await
        .expect("entity row");
    let holding = holder.transaction().await.expect("begin");
    holding
        .execute(
            "SELECT 1 FROM entities WHERE kind = 'contact' AND id = $1 FOR UPDATE",
            &[&busy.to_string()],
        )
        .await
        .expect("lock");

    let (results, stats) = store
        .apply_batch(&batch, ApplyOptions::default(), Duration::from_secs(10))
        .await;
    // The free contact commits at once; the busy one's two deliveries are put off, then wait in
    // a transaction of their own, time out on the lock, are split, and each comes back failed —
    // retryable, so the worker sends it to a retry tier.
    assert!(results[0].failed.is_none());
    assert_eq!(results[0].reports[0].outcome, Outcome::Applied);
    for result in &results[1..] {
        let (_, error) = result
            .failed
            .clone()
            .expect("the busy entity's deliveries failed");
        assert_eq!(error.code(), Some("55P03"), "lock timeout: {error}");
        assert!(error.is_retryable());
    }
    // Put off twice (after the free one's commit, once more without waiting; then, nothing
    // being free, they wait), and one split of the waiting pair.
    assert_eq!(stats.deferred, 4);
    assert_eq!(stats.splits, 1);
    assert_eq!(stats.commits, 2, "the free contact's, and the empty try");

    // Once the holder is gone, the same deliveries apply, in order.
    holding.rollback().await.expect("release");
    let (results, _) = store
        .apply_batch(&batch[1..], ApplyOptions::default(), Duration::from_secs(10))
        .await;
    assert!(results.iter().all(|r| r.failed.is_none()));
    let name: String = db
        .client()
        .await
        .query_one(
            "SELECT first_name FROM contacts WHERE spark_id = $1",
            &[&busy.to_string()],
        )
        .await
        .expect("contact")
        .get(0);
    assert_eq!(name, "Second", "the newer snapshot wins");
    drop(holder);
    db.drop_database().await;
}

#[tokio::test]
async fn a_worker_batch_with_a_malformed_a_refused_a_parked_and_a_prerequisite_delivery_settles_each() {
    let world = World::new("wb-worker-mixed").await;
    // A backlog of such groups, so that batches of several deliveries form.
    for n in 0..10 {
        let lead = lead_events(100 + n);
        world
            .publish(Provider::Spark360, b"{\"event\": \"lead.enriched\"".to_vec())
            .await;
        world
            .publish(Provider::Spark, contact_postgres_refuses(700 + n).into_bytes())
            .await;
        world
            .publish(Provider::Spark360, lead[2].clone().into_bytes())
            .await;
        world
            .publish(Provider::Spark360, lead[1].clone().into_bytes())
            .await;
    }
    let mut config = world.worker_config();
    config.concurrency = 1;
    config.batch_size = 16;
    config.batch_linger_ms = 50;
    let worker = world.start_worker(config).await;

    // Each malformed and each refused delivery is dead-lettered with its own reason; every alert
    // is applied after its prerequisite, whether it parked first or not.
    world
        .wait_count("SELECT count(*) FROM dead_letters", 20, DEADLINE)
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM leads WHERE rental_alert IS NOT NULL",
            10,
            DEADLINE,
        )
        .await;
    assert_eq!(
        world
            .count("SELECT count(*) FROM dead_letters WHERE reason = 'store_rejected'")
            .await,
        10
    );
    assert_eq!(
        world
            .count("SELECT count(DISTINCT reason) FROM dead_letters WHERE reason <> 'store_rejected'")
            .await,
        1,
        "the malformed deliveries share their decode reason"
    );
    assert_eq!(world.count("SELECT count(*) FROM contacts").await, 0);
    assert_eq!(world.count("SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(world.count("SELECT count(*) FROM inbox").await, 20);
    // Batches of several deliveries did form.
    let (sum, count) = batch_sizes(worker.addr).await;
    assert!(
        count > 0.0 && sum > count,
        "batches of several: {sum} deliveries in {count} batches"
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

/// Every domain table and the entity rows, as sorted JSON lines without what depends on timing
/// (`*updated_at`, `created_at`, `recorded_at`) or on a fresh nonce (sealed `bytea` values). An
/// entity's `applied_types` is left out: it records which events *applied*, and a Spark360
/// preview that arrives before its lead's enrichment applies (it only fills gaps once enriched is
/// there) — by design the domain rows end the same in either order, not that bookkeeping.
async fn state(db: &TestDb) -> BTreeMap<&'static str, Vec<String>> {
    const TABLES: &[&str] = &[
        "contacts",
        "contact_policies",
        "sparkloop_subscribers",
        "sparkloop_referrals",
        "sparkloop_rewards",
        "leads",
        "widgets",
        "healthsherpa_applications",
        "healthsherpa_members",
        "healthsherpa_policies",
        "healthsherpa_policy_members",
        "entities",
    ];
    let c = db.client().await;
    let mut out = BTreeMap::new();
    for table in TABLES {
        let rows = c
            .query(&format!("SELECT to_jsonb(t) FROM {table} t"), &[])
            .await
            .unwrap_or_else(|e| panic!("{table}: {e}"));
        let mut lines: Vec<String> = rows
            .iter()
            .map(|r| {
                let mut v: serde_json::Value = r.get(0);
                if let Some(o) = v.as_object_mut() {
                    o.retain(|k, v| {
                        !(k.ends_with("updated_at")
                            || k == "created_at"
                            || k == "recorded_at"
                            || k == "applied_types"
                            || v.as_str().is_some_and(|s| s.starts_with("\\x")))
                    });
                }
                v.to_string()
            })
            .collect();
        lines.sort();
        out.insert(*table, lines);
    }
    out
}

#[tokio::test]
async fn two_workers_batching_the_same_entities_under_load_end_as_one_by_one_without_a_deadlock() {
    let world = World::new("wb-overlap").await;
    // Many events per entity, interleaved, so both workers' batches hold the same entities.
    let mut bodies: Vec<(Provider, String)> = Vec::new();
    for round in 0..3 {
        for c in 0..30 {
            bodies.push((Provider::Spark, contact(800 + c, &format!("Name{round}"))));
        }
        for lead in 0..20 {
            // Rounds 0..3 carry the lead's events in the order alert, enriched, request+preview:
            // prerequisites arrive after their dependents half of the time.
            let events = lead_events(200 + lead);
            match round {
                0 => bodies.push((Provider::Spark360, events[2].clone())),
                1 => bodies.push((Provider::Spark360, events[1].clone())),
                _ => {
                    bodies.push((Provider::Spark360, events[3].clone()));
                    bodies.push((Provider::Spark360, events[0].clone()));
                }
            }
        }
        for app in 0..10 {
            if round < 2 {
                let events = policy_events(300 + app);
                // The newer status first for even applications.
                let pick = if app % 2 == 0 { 1 - round } else { round };
                bodies.push((Provider::HealthSherpa, events[pick].clone()));
            }
        }
    }
    let envelopes: Vec<Envelope> = bodies
        .iter()
        .map(|(p, b)| Envelope::new("ep-test", *p, vec![], Bytes::from(b.clone())))
        .collect();

    // The one-by-one result: the same envelopes through `Store::apply`, in order, alone.
    let reference = fresh_database("wb-overlap-ref").await;
    {
        let store = store(&reference).await;
        for envelope in &envelopes {
            for event in intake_providers::decode(envelope).expect("decodes") {
                store
                    .apply(envelope, &event, ApplyOptions::default())
                    .await
                    .expect("apply");
            }
        }
    }

    let (one, by_one) = world.start_counting_worker().await;
    let (two, by_two) = world.start_counting_worker().await;
    for provider in [Provider::Spark, Provider::Spark360, Provider::HealthSherpa] {
        world.wait_consumers(provider, 2, DEADLINE).await;
    }
    // All at once from several publishers: both workers take batches of the same entities.
    let shared = Arc::new(envelopes);
    let mut publishers = tokio::task::JoinSet::new();
    for part in 0..4 {
        let (publisher, shared) = (world.publisher.clone(), shared.clone());
        publishers.spawn(async move {
            for envelope in shared.iter().skip(part).step_by(4) {
                publisher.publish_envelope(envelope).await.expect("publish");
            }
        });
    }
    while let Some(done) = publishers.join_next().await {
        done.expect("publisher");
    }
    let total = shared.len() as i64;
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE outcome <> 'parked'",
            total,
            DEADLINE,
        )
        .await;

    // Both workers took part, with batches of several deliveries.
    assert!(by_one.load(Ordering::SeqCst) > 0 && by_two.load(Ordering::SeqCst) > 0);
    for worker in [&one, &two] {
        let (sum, count) = batch_sizes(worker.addr).await;
        assert!(
            sum > count,
            "batches of several: {sum} deliveries in {count} batches"
        );
    }
    // No deadlock surfaced: nothing retried or dead-lettered, and Postgres counted none.
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);
    assert_eq!(
        world
            .count("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
            .await,
        0
    );
    for worker in [&one, &two] {
        assert_eq!(events_with_outcome(worker.addr, "retried").await, 0.0);
    }
    // The same state as one by one.
    let (batched, alone) = (state(&world.db).await, state(&reference).await);
    for (table, rows) in &alone {
        assert!(
            !rows.is_empty()
                || *table == "widgets"
                || table.starts_with("sparkloop")
                || *table == "contact_policies"
        );
        assert_eq!(&batched[table], rows, "{table}");
    }
    one.stop().await.expect("stop");
    two.stop().await.expect("stop");
    reference.drop_database().await;
    world.cleanup().await;
}

#[tokio::test]
async fn deliveries_arriving_while_a_transaction_runs_gather_into_the_next_batch() {
    let world = World::new("wb-gather").await;
    let mut config = world.worker_config();
    // Long enough that only the running transaction's end (or a full batch) closes the batch,
    // and that the transaction waiting on the lock below waits instead of timing out.
    config.batch_gather_ms = 10_000;
    config.db_timeout_ms = 30_000;
    let worker = world.start_worker(config).await;
    let queue = world.topology.provider_queue(Provider::Spark);
    let all_taken = || async { world.probe.count(&queue).await == 0 };

    // Contact 700 exists; another session then holds its entity row.
    world.publish(Provider::Spark, contact(700, "First")).await;
    world.wait_count("SELECT count(*) FROM inbox", 1, DEADLINE).await;
    let mut holder = world.db.client().await;
    let held = holder.transaction().await.expect("begin");
    held.execute(
        "SELECT 1 FROM entities WHERE kind = 'contact' AND id = '700' FOR UPDATE",
        &[],
    )
    .await
    .expect("lock contact 700");
    // Its next snapshot is taken alone (nothing else runs) and its transaction waits on the lock.
    world.publish(Provider::Spark, contact(700, "Second")).await;
    world
        .wait_count(
            "SELECT count(*) FROM pg_stat_activity
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
            1,
            DEADLINE,
        )
        .await;
    // Ten contacts, each published once the one before reached the worker: without gathering,
    // each would go in a batch of its own.
    for id in 701..711 {
        world.publish(Provider::Spark, contact(id, "Other")).await;
        assert!(wait_until(DEADLINE, all_taken).await, "delivered to the worker");
    }
    assert_eq!(
        world.count("SELECT count(*) FROM inbox").await,
        1,
        "none of them applied while the transaction runs"
    );
    held.rollback().await.expect("release contact 700");
    world.wait_count("SELECT count(*) FROM inbox", 12, DEADLINE).await;

    // The ten went together: one transaction (at most two, with a straggler taken between the
    // last delivery reaching the worker and the lock's release). An inbox row's `processed_at` is
    // its transaction's start, and this database is the test's own — unlike the metrics, which
    // every worker of this test binary shares.
    let transactions = world
        .count(
            "SELECT count(DISTINCT processed_at) FROM inbox
             WHERE entity_kind = 'contact' AND entity_id <> '700'",
        )
        .await;
    assert!(transactions <= 2, "ten deliveries in {transactions} transactions");
    assert_eq!(
        world
            .count("SELECT count(*) FROM contacts WHERE spark_id = '700' AND first_name = 'Second'")
            .await,
        1
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}
