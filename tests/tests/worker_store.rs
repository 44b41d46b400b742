//! The store's one-transaction apply against a real Postgres: ordering rules whatever the arrival
//! order, duplicates, stale events, concurrent migrations and the parked-event sweeper.

use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_providers::fixtures;
use intake_store::{ApplyOptions, Outcome, Store, StoreConfig};

async fn store(db: &TestDb) -> Store {
    db.migrated_store(8, Duration::from_secs(5)).await
}

fn envelope(provider: Provider, body: String) -> Envelope {
    Envelope::new("ep", provider, vec![], Bytes::from(body))
}

/// Decodes and applies one body; returns the outcome and the released event types.
async fn apply(store: &Store, envelope: &Envelope, options: ApplyOptions) -> (Outcome, Vec<String>) {
    let events = intake_providers::decode(envelope).expect("decode");
    assert_eq!(events.len(), 1);
    let report = store.apply(envelope, &events[0], options).await.expect("apply");
    (
        report.outcome,
        report.released.into_iter().map(|r| r.event_type).collect(),
    )
}

/// A dead-letter sink that accepts everything.
struct AcceptAll;

impl intake_store::DeadLetterSink for AcceptAll {
    fn publish<'a>(
        &'a self,
        _: &'a intake_store::ExpiredParked,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send + 'a>> {
        Box::pin(async { true })
    }
}

fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut all = Vec::new();
    for (i, first) in items.iter().enumerate() {
        let mut rest = items.to_vec();
        rest.remove(i);
        for mut tail in permutations(&rest) {
            tail.insert(0, *first);
            all.push(tail);
        }
    }
    all
}

/// Versions of the files in `crates/store/migrations`, ascending.
fn migration_files() -> Vec<i32> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/store/migrations");
    let mut versions: Vec<i32> = std::fs::read_dir(dir)
        .expect("migrations dir")
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            name.strip_prefix('V')?.split_once("__")?.0.parse().ok()
        })
        .collect();
    versions.sort_unstable();
    versions
}

#[tokio::test]
async fn concurrent_migrations_apply_once() {
    let db = fresh_database("w-migrate").await;
    let stores: Vec<Store> = (0..4)
        .map(|_| {
            Store::new(&StoreConfig::new(
                db.url.clone(),
                intake_it::test_keys(),
                2,
                Duration::from_secs(5),
            ))
            .expect("store")
        })
        .collect();
    let results = futures_util::future::join_all(stores.iter().map(|s| s.migrate())).await;
    for r in results {
        r.expect("migrate");
    }
    let client = db.client().await;
    // Every migration file recorded once (a second run of one would have failed on its CREATE
    // TABLEs, failing its `migrate` above).
    let recorded: Vec<i32> = client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(recorded, migration_files());
    let tables: i64 = client
        .query_one("SELECT count(*) FROM pg_tables WHERE tablename = 'inbox'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 1);
    db.drop_database().await;
}

#[tokio::test]
async fn spark360_final_state_is_the_same_for_all_24_arrival_orders() {
    let db = fresh_database("w-s360").await;
    let store = store(&db).await;
    let bodies = [
        fixtures::SPARK360_ADDRESS_PREVIEW,
        fixtures::SPARK360_ENRICHED,
        fixtures::SPARK360_RENTAL_ALERT,
        fixtures::SPARK360_CONTACT_REQUESTED,
    ];
    let (enriched, contact) = (1, 3);
    let orders = permutations(&[0, 1, 2, 3]);
    assert_eq!(orders.len(), 24);
    for (n, order) in orders.iter().enumerate() {
        let lead = format!("lead_p{n}");
        let mut seen_parked = false;
        for &i in order {
            let body = bodies[i]
                .replace("lead_7f3a9c", &lead)
                .replace("evt_01HX", &format!("evt_p{n}_"));
            let (outcome, released) = apply(
                &store,
                &envelope(Provider::Spark360, body),
                ApplyOptions::default(),
            )
            .await;
            let before_enriched =
                order.iter().position(|&x| x == i) < order.iter().position(|&x| x == enriched);
            if i == contact && before_enriched {
                assert_eq!(outcome, Outcome::Parked, "order {order:?}");
                seen_parked = true;
            }
            if i == enriched && seen_parked {
                assert!(
                    released.contains(&"lead.contact_requested".to_owned()),
                    "order {order:?}: {released:?}"
                );
            }
        }
    }
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT id, status, address::text, owner_occupied, enrichment::text, rental_alert::text,
                    contact_request::text, source_tracking::text, enriched_at
             FROM leads ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 24);
    let state = |r: &tokio_postgres::Row| {
        let id: String = r.get(0);
        let strip = |v: Option<String>| v.map(|s| s.replace(&id, "LEAD"));
        (
            r.get::<_, String>(1),
            strip(r.get(2)),
            r.get::<_, Option<bool>>(3),
            strip(r.get(4)),
            strip(r.get(5)),
            strip(r.get(6)),
            strip(r.get(7)),
            r.get::<_, Option<chrono::DateTime<Utc>>>(8),
        )
    };
    let first = state(&rows[0]);
    for r in &rows {
        assert_eq!(state(r), first);
    }
    assert_eq!(first.0, "contact_info_provided");
    assert!(
        first.1.as_deref().unwrap().contains("07006-1234"),
        "enriched address wins: {:?}",
        first.1
    );
    assert_eq!(first.2, Some(false));
    assert!(first.3.is_some() && first.4.is_some() && first.5.is_some());
    assert!(first.6.as_deref().unwrap().contains("Instagram"));
    let parked: i64 = client
        .query_one("SELECT count(*) FROM parked_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parked, 0);
    let released: i64 = client
        .query_one("SELECT count(*) FROM inbox WHERE outcome = 'released'", &[])
        .await
        .unwrap()
        .get(0);
    assert!(released >= 12, "{released}");
    db.drop_database().await;
}

fn hs_event(txn: &str, status: &str, at: &str) -> String {
    fixtures::HEALTHSHERPA_OFF_EXCHANGE
        .replace("txn_7c1d2e3f", txn)
        .replace("\"effectuated\"", &format!("\"{status}\""))
        .replace("2026-02-03T14:05:06Z", at)
}

#[tokio::test]
async fn healthsherpa_status_follows_the_newest_event_timestamp() {
    let db = fresh_database("w-hs").await;
    let store = store(&db).await;
    let events = [
        ("t1", "pending_effectuation", "2026-01-01T00:00:00Z"),
        ("t2", "effectuated", "2026-02-01T00:00:00Z"),
        ("t3", "terminated", "2026-05-01T00:00:00Z"),
        ("t4", "cancelled", "2026-03-01T00:00:00Z"),
        ("t5", "effectuated", "2026-04-01T00:00:00Z"),
    ];
    // Shuffled: newest in the middle.
    for i in [4, 0, 2, 3, 1] {
        let (txn, status, at) = events[i];
        apply(
            &store,
            &envelope(Provider::HealthSherpa, hs_event(txn, status, at)),
            ApplyOptions::default(),
        )
        .await;
    }
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT status, status_event_at FROM healthsherpa_policies WHERE policy_id = 'pol_9001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "terminated");
    assert_eq!(
        row.get::<_, chrono::DateTime<Utc>>(1),
        Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap()
    );
    let app: String = client
        .query_one(
            "SELECT policy_status FROM healthsherpa_applications WHERE application_key = 'app_5512'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "terminated");
    let history: Vec<String> = client
        .query(
            "SELECT transaction_id FROM healthsherpa_status_history ORDER BY event_timestamp",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(history, ["t1", "t2", "t4", "t5", "t3"]);
    db.drop_database().await;
}

#[tokio::test]
async fn sparkloop_referral_never_moves_back_and_redeemed_is_kept_without_unlock() {
    let db = fresh_database("w-sl").await;
    let store = store(&db).await;
    let verified = envelope(
        Provider::SparkLoop,
        fixtures::SPARKLOOP_PARTNER_VERIFIED.to_owned(),
    );
    let pending = envelope(
        Provider::SparkLoop,
        fixtures::SPARKLOOP_PARTNER_PENDING.to_owned(),
    );
    apply(&store, &verified, ApplyOptions::default()).await;
    apply(&store, &pending, ApplyOptions::default()).await;
    let redeemed = envelope(
        Provider::SparkLoop,
        fixtures::SPARKLOOP_REWARD_REDEEMED.to_owned(),
    );
    apply(&store, &redeemed, ApplyOptions::default()).await;
    let client = db.client().await;
    let status: String = client
        .query_one(
            "SELECT status FROM sparkloop_referrals WHERE subscriber_id = 'sub_042448acb02a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "verified");
    let row = client
        .query_one(
            "SELECT unlocked_at IS NULL, redeemed_at IS NOT NULL, shipping_city FROM sparkloop_rewards
             WHERE subscriber_id = 'sub_hjdgc74u' AND reward_id = 'reward_cdebf4f013'",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    assert_eq!(row.get::<_, String>(2), "Sun City");
    db.drop_database().await;
}

#[tokio::test]
async fn an_older_spark_snapshot_never_overwrites_a_newer_one_and_duplicates_count() {
    let db = fresh_database("w-spark").await;
    let store = store(&db).await;
    let mut older = envelope(
        Provider::Spark,
        fixtures::SPARK_CONTACT.replace("\"Tony\"", "\"Old Tony\""),
    );
    older.received_at = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut newer = envelope(Provider::Spark, fixtures::SPARK_CONTACT.to_owned());
    newer.received_at = Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
    assert_eq!(
        apply(&store, &newer, ApplyOptions::default()).await.0,
        Outcome::Applied
    );
    assert_eq!(
        apply(&store, &older, ApplyOptions::default()).await.0,
        Outcome::Stale
    );
    // The provider sends the current snapshot again: a duplicate of the current state.
    let mut again = envelope(Provider::Spark, fixtures::SPARK_CONTACT.to_owned());
    again.received_at = Utc::now();
    assert_eq!(
        apply(&store, &again, ApplyOptions::default()).await.0,
        Outcome::Duplicate
    );
    // The broker redelivers that envelope: the inbox key recognises it.
    assert_eq!(
        apply(&store, &again, ApplyOptions::default()).await.0,
        Outcome::Duplicate
    );
    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT preferred_name, agent_email, poc_relationship FROM contacts WHERE spark_id = '1234'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "Tony");
    assert_eq!(row.get::<_, String>(1), "dwight.harris@fbi.gov");
    assert_eq!(row.get::<_, String>(2), "Spouse");
    // PHI is sealed: read back through the store, which opens it.
    let phi = |column: &'static str| store.open_sealed_text("contact_phi", column, &["1234"]);
    assert_eq!(phi("mbi").await.unwrap().as_deref(), Some("T0NY-S0PR4N0"));
    assert_eq!(phi("dob").await.unwrap().as_deref(), Some("1959-08-22"));
    let policies: i64 = client
        .query_one(
            "SELECT count(*) FROM contact_policies WHERE spark_id = '1234'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(policies, 12);
    let outbox: i64 = client
        .query_one("SELECT count(*) FROM outbox WHERE contact_id = '1234'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outbox, 1, "only the applied snapshot notifies");
    let dups: (i64, i32) = client
        .query_one(
            "SELECT count(*) FILTER (WHERE outcome = 'duplicate'), max(duplicates)::int FROM inbox",
            &[],
        )
        .await
        .map(|r| (r.get(0), r.get(1)))
        .unwrap();
    assert_eq!(dups, (1, 1));
    db.drop_database().await;
}

#[tokio::test]
async fn a_parked_event_past_its_limit_is_swept_as_ordering_timeout() {
    let db = fresh_database("w-sweep").await;
    let store = store(&db).await;
    let contact = envelope(
        Provider::Spark360,
        fixtures::SPARK360_CONTACT_REQUESTED.to_owned(),
    );
    let options = ApplyOptions {
        park_limit: Some(Duration::ZERO),
    };
    assert_eq!(apply(&store, &contact, options).await.0, Outcome::Parked);
    let swept = store.sweep_expired_parked(10, &AcceptAll).await.expect("sweep");
    assert_eq!(
        swept,
        vec![(Provider::Spark360, "lead.contact_requested".to_owned())]
    );
    assert!(
        store
            .sweep_expired_parked(10, &AcceptAll)
            .await
            .expect("sweep")
            .is_empty()
    );
    let client = db.client().await;
    let row = client
        .query_one("SELECT reason, body, envelope_id::text FROM dead_letters", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "ordering_timeout");
    assert_eq!(
        intake_it::open_body(row.get(2), &row.get::<_, Vec<u8>>(1)),
        fixtures::SPARK360_CONTACT_REQUESTED.as_bytes()
    );
    let outcome: String = client
        .query_one("SELECT outcome FROM inbox", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(outcome, "dead_lettered");
    // A later enriched no longer finds it.
    let enriched = envelope(Provider::Spark360, fixtures::SPARK360_ENRICHED.to_owned());
    assert_eq!(
        apply(&store, &enriched, ApplyOptions::default()).await,
        (Outcome::Applied, vec![])
    );
    db.drop_database().await;
}
