//! PHI at rest, against real Postgres (and RabbitMQ for the pipeline): webhooks applied by the
//! worker leave no plaintext PHI in any column of any table (bytes searched as text and as hex);
//! the keys open what they sealed; a sealed value moved to another row or column does not open
//! (nor does the sync worker send it); rotation re-seals everything under the new key in batches
//! while the old data stays readable, and is idempotent; a missing or wrong key fails clearly
//! without quoting the data; a database migrated before V7 has its plaintext sealed at migrate.

mod worker_support;

use std::time::Duration;

use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_it::{TEST_ENCRYPTION_KEYS, TEST_HMAC_KEY};
use intake_providers::fixtures;
use intake_store::{ApplyOptions, CryptoError, KeySettings, Outcome, Store, StoreConfig, StoreError};
use worker_support::World;

const DEADLINE: Duration = Duration::from_secs(20);

/// The PHI of the fixtures (and of the HealthSherpa member renamed below), as stored nowhere in
/// plaintext. Contacts' names, phones and addresses are not sealed (see README, PHI at rest), so
/// the member's name is made unique to the HealthSherpa event.
const PHI: &[&str] = &[
    "T0NY-S0PR4N0",                                   // MBI
    "1959-08-22",                                     // date of birth
    "Meadowlark",                                     // HealthSherpa member's first name
    "Aprile-Member",                                  // HealthSherpa member's last name
    "AARP Medicare Advantage from UHC NJ-0004 (PPO)", // policy name
    "H8768-022",                                      // bid id
    "Accreted App",                                   // BEQ status
    "UnitedHealthcare",                               // carrier
    "\"drug_subsidy\"",                               // the raw body's keys are gone too
];

/// Where the old key alone is current (`t1`), and where the new one is (`t2`, `t1` still held).
fn old_key() -> &'static str {
    TEST_ENCRYPTION_KEYS.split(',').nth(1).expect("t1")
}
fn new_key() -> &'static str {
    TEST_ENCRYPTION_KEYS.split(',').next().expect("t2")
}

fn store_with(db: &TestDb, keys: &str) -> Store {
    let keys = KeySettings::new(keys, TEST_HMAC_KEY).keyring().expect("keys");
    Store::new(&StoreConfig::new(
        db.url.clone(),
        keys,
        4,
        Duration::from_secs(10),
    ))
    .expect("store")
}

fn envelope(provider: Provider, body: String) -> Envelope {
    Envelope::new("ep-phi", provider, vec![], body.into())
}

fn healthsherpa_member() -> String {
    fixtures::HEALTHSHERPA_OFF_EXCHANGE
        .replace("\"first_name\": \"Anthony\"", "\"first_name\": \"Meadowlark\"")
        .replace("\"last_name\": \"Soprano\"", "\"last_name\": \"Aprile-Member\"")
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

/// `table: needle` for every table whose rows, as text (bytea shows as hex, jsonb as JSON),
/// contain a needle or its hex.
async fn plaintext_hits(client: &tokio_postgres::Client, needles: &[&str]) -> Vec<String> {
    let tables: Vec<String> = client
        .query(
            "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public'",
            &[],
        )
        .await
        .expect("tables")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(tables.len() > 15, "every table scanned: {tables:?}");
    let mut hits = Vec::new();
    for table in tables {
        let rows = client
            .query(&format!("SELECT scanned::text FROM \"{table}\" scanned"), &[])
            .await
            .expect("scan");
        for row in rows {
            let text: String = row.try_get(0).unwrap_or_else(|e| panic!("{table}: {e:?}"));
            for needle in needles {
                if text.contains(needle) || text.contains(&hex(needle)) {
                    hits.push(format!("{table}: {needle}"));
                }
            }
        }
    }
    hits.sort();
    hits.dedup();
    hits
}

#[tokio::test]
async fn webhooks_through_the_pipeline_leave_no_plaintext_phi_in_any_column() {
    let world = World::new("phi-scan").await;
    let worker = world.start_worker(world.worker_config()).await;
    world
        .publish(Provider::Spark, fixtures::SPARK_CONTACT.as_bytes().to_vec())
        .await;
    let member = world.publish(Provider::HealthSherpa, healthsherpa_member()).await;
    // Parked until its lead is enriched: its stored form is sealed too.
    world
        .publish(
            Provider::Spark360,
            fixtures::SPARK360_CONTACT_REQUESTED.as_bytes().to_vec(),
        )
        .await;
    // A contact without its id: dead-lettered, with its body (full of PHI) kept for replay.
    let broken = world
        .publish(
            Provider::Spark,
            fixtures::SPARK_CONTACT.replacen("\"id\": 1234", "\"ident\": 1234", 1),
        )
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE outcome = 'applied'",
            2,
            DEADLINE,
        )
        .await;
    world
        .wait_count("SELECT count(*) FROM parked_events", 1, DEADLINE)
        .await;
    world
        .wait_count("SELECT count(*) FROM dead_letters", 1, DEADLINE)
        .await;
    worker.stop().await.expect("stop");

    let client = world.db.client().await;
    // The scan finds plaintext where there is some (text, jsonb and bytea alike).
    client
        .batch_execute(
            "CREATE TABLE scan_control (t text, j jsonb, b bytea);
             INSERT INTO scan_control VALUES ('T0NY-S0PR4N0', NULL, NULL),
                 (NULL, '{\"dob\": \"1959-08-22\"}', NULL), (NULL, NULL, convert_to('x Meadowlark x', 'UTF8'));",
        )
        .await
        .expect("control");
    assert_eq!(
        plaintext_hits(&client, PHI).await,
        [
            "scan_control: 1959-08-22",
            "scan_control: Meadowlark",
            "scan_control: T0NY-S0PR4N0"
        ]
    );
    client
        .batch_execute("DROP TABLE scan_control")
        .await
        .expect("drop");
    let spark360_phone = "201-555-5678";
    let mut needles = PHI.to_vec();
    needles.push(spark360_phone);
    let hits = plaintext_hits(&client, &needles).await;
    // The contact's phone numbers are contact details (not sealed); the parked event's copy is.
    assert_eq!(hits, ["contacts: 201-555-5678"], "plaintext PHI found");

    // What is sealed opens with the keys: the store reads it back.
    let store = store_with(&world.db, TEST_ENCRYPTION_KEYS);
    assert_eq!(
        store
            .open_sealed_text("contact_phi", "mbi", &["1234"])
            .await
            .expect("open")
            .as_deref(),
        Some("T0NY-S0PR4N0")
    );
    let application: String = client
        .query_one("SELECT application_key FROM healthsherpa_members", &[])
        .await
        .expect("member")
        .get(0);
    assert_eq!(
        store
            .open_sealed_text("healthsherpa_members", "first_name", &[&application, "mem_1"])
            .await
            .expect("open")
            .as_deref(),
        Some("Meadowlark")
    );
    let raw = store
        .open_sealed("raw_events", "body", &[&member.id.to_string()])
        .await
        .expect("open");
    assert_eq!(raw.as_deref(), Some(healthsherpa_member().as_bytes()));
    let dead_letter_id: i64 = client
        .query_one("SELECT id FROM dead_letters", &[])
        .await
        .expect("row")
        .get(0);
    let dead_letter = store
        .dead_letter(dead_letter_id)
        .await
        .expect("read")
        .expect("row");
    assert_eq!(dead_letter.body.as_deref(), Some(broken.body.as_ref()));
    let parked_id: i64 = client
        .query_one("SELECT id FROM parked_events", &[])
        .await
        .expect("row")
        .get(0);
    let event = store
        .open_sealed_text("parked_events", "event", &[&parked_id.to_string()])
        .await
        .expect("open")
        .expect("event");
    assert!(event.contains(spark360_phone), "the parked event is all there");
    world.cleanup().await;
}

#[tokio::test]
async fn a_sealed_value_moved_to_another_row_or_column_does_not_open() {
    let db = fresh_database("phi-moved").await;
    let store = store_with(&db, TEST_ENCRYPTION_KEYS);
    store.migrate().await.expect("migrate");
    let other = fixtures::SPARK_CONTACT
        .replacen("\"id\": 1234", "\"id\": 1235", 1)
        .replace("T0NY-S0PR4N0", "0THER-MB1");
    let tony = envelope(Provider::Spark, fixtures::SPARK_CONTACT.to_owned());
    let someone = envelope(Provider::Spark, other);
    for e in [&tony, &someone] {
        let event = intake_providers::decode(e).expect("decode").remove(0);
        let report = store
            .apply(e, &event, ApplyOptions::default())
            .await
            .expect("apply");
        assert_eq!(report.outcome, Outcome::Applied);
    }
    let client = db.client().await;
    // Tony's MBI copied into the other contact's row; Tony's date of birth into his own MBI.
    client
        .batch_execute(
            "UPDATE contact_phi SET mbi = (SELECT mbi FROM contact_phi WHERE spark_id = '1234') WHERE spark_id = '1235';
             UPDATE contact_phi SET mbi = dob WHERE spark_id = '1234';
             UPDATE raw_events SET body = (SELECT body FROM raw_events r WHERE r.envelope_id <> raw_events.envelope_id);",
        )
        .await
        .expect("move");
    for (table, column, key) in [
        ("contact_phi", "mbi", vec!["1235".to_owned()]),
        ("contact_phi", "mbi", vec!["1234".to_owned()]),
        ("raw_events", "body", vec![tony.id.to_string()]),
        ("raw_events", "body", vec![someone.id.to_string()]),
    ] {
        let key: Vec<&str> = key.iter().map(String::as_str).collect();
        let error = store
            .open_sealed(table, column, &key)
            .await
            .expect_err("a moved value must not open");
        assert!(
            matches!(
                &error,
                StoreError::Sealed {
                    source: CryptoError::Forged,
                    ..
                }
            ),
            "{table}.{column}: {error}"
        );
        assert!(!error.is_retryable());
        let text = error.to_string();
        assert!(text.contains("moved") && !text.contains("T0NY"), "{text}");
    }
    // The sync worker refuses to send a contact whose PHI does not open.
    let sync = store.lock_contact_sync("1235").await.expect("lock");
    let error = sync.contact().await.expect_err("not sent");
    assert!(error.to_string().contains("contact_phi.mbi"), "{error}");
    sync.release().await.expect("release");
    db.drop_database().await;
}

#[tokio::test]
async fn rotation_reseals_everything_under_the_new_key_while_old_data_stays_readable() {
    let db = fresh_database("phi-rotate").await;
    // Written under t1 alone: contacts, a member, a parked event, a dead letter.
    let old = store_with(&db, old_key());
    old.migrate().await.expect("migrate");
    let mut written = Vec::new();
    for n in 0..5 {
        let body = fixtures::SPARK_CONTACT
            .replacen("\"id\": 1234", &format!("\"id\": {}", 2000 + n), 1)
            .replace("T0NY-S0PR4N0", &format!("MBI-{n}"));
        written.push(envelope(Provider::Spark, body));
    }
    written.push(envelope(Provider::HealthSherpa, healthsherpa_member()));
    written.push(envelope(
        Provider::Spark360,
        fixtures::SPARK360_CONTACT_REQUESTED.to_owned(),
    ));
    for e in &written {
        let event = intake_providers::decode(e).expect("decode").remove(0);
        old.apply(e, &event, ApplyOptions::default())
            .await
            .expect("apply");
    }
    let broken = envelope(Provider::Spark, fixtures::SPARK_CONTACT.to_owned());
    old.record_dead_letter(&intake_store::NewDeadLetter {
        source: "ingest",
        queue: None,
        message_id: broken.id,
        endpoint: Some("ep-phi"),
        provider: Some("spark"),
        event_type: None,
        dedupe_key: None,
        reason: "missing_field",
        attempts: 1,
        first_error: None,
        last_error: Some("test"),
        received_at: broken.received_at,
        headers: serde_json::json!([]),
        properties: serde_json::json!({}),
        body: &broken.body,
    })
    .await
    .expect("dead letter");

    // The new key first, the old one still listed: old data reads, new data is sealed under t2.
    let rotating = store_with(&db, TEST_ENCRYPTION_KEYS);
    let newer = envelope(
        Provider::Spark,
        fixtures::SPARK_CONTACT.replacen("\"id\": 1234", "\"id\": 3000", 1),
    );
    let event = intake_providers::decode(&newer).expect("decode").remove(0);
    rotating
        .apply(&newer, &event, ApplyOptions::default())
        .await
        .expect("apply");
    let before = rotating.key_usage().await.expect("usage");
    assert!(
        before
            .iter()
            .any(|u| u.key_id == "t1" && u.column == "contact_phi.mbi" && u.values == 5)
    );
    assert!(
        before
            .iter()
            .any(|u| u.key_id == "t2" && u.column == "contact_phi.mbi" && u.values == 1)
    );

    let id: i64 = db
        .client()
        .await
        .query_one("SELECT id FROM dead_letters", &[])
        .await
        .expect("row")
        .get(0);
    // Readers keep reading while rotation runs one row per batch.
    let rotation = tokio::spawn({
        let store = rotating.clone();
        async move { store.rotate_keys(1).await }
    });
    let mut reads = 0;
    while !rotation.is_finished() || reads == 0 {
        for n in 0..5 {
            let id = format!("{}", 2000 + n);
            let mbi = rotating.open_sealed_text("contact_phi", "mbi", &[&id]).await;
            assert_eq!(
                mbi.expect("readable during rotation").as_deref(),
                Some(format!("MBI-{n}").as_str())
            );
        }
        let dead = rotating.dead_letter(id).await.expect("readable during rotation");
        assert_eq!(dead.and_then(|d| d.body).as_deref(), Some(broken.body.as_ref()));
        reads += 1;
    }
    let report = rotation.await.expect("task").expect("rotate");
    let resealed = |column: &str| report.iter().find(|r| r.column == column).map(|r| r.resealed);
    assert_eq!(resealed("contact_phi.mbi"), Some(5));
    assert_eq!(resealed("contact_phi.dob"), Some(5));
    assert_eq!(resealed("contact_policies.carrier"), Some(5 * 12));
    assert_eq!(resealed("healthsherpa_members.date_of_birth"), Some(1));
    assert_eq!(resealed("raw_events.body"), Some(7));
    assert_eq!(resealed("parked_events.event"), Some(1));
    assert_eq!(resealed("dead_letters.body"), Some(1));
    let after = rotating.key_usage().await.expect("usage");
    assert!(after.iter().all(|u| u.key_id == "t2"), "{after:?}");
    // Idempotent: nothing left to do.
    let again = rotating.rotate_keys(100).await.expect("rotate again");
    assert!(again.iter().all(|r| r.resealed == 0), "{again:?}");

    // t1 can go: a store holding t2 alone reads everything, the dead letter's body included.
    let new_only = store_with(&db, new_key());
    for n in 0..5 {
        let id = format!("{}", 2000 + n);
        let mbi = new_only
            .open_sealed_text("contact_phi", "mbi", &[&id])
            .await
            .expect("open");
        assert_eq!(mbi, Some(format!("MBI-{n}")));
    }
    let dead = new_only.dead_letter(id).await.expect("read").expect("row");
    assert_eq!(dead.body.as_deref(), Some(broken.body.as_ref()));

    // A process still holding only the old key fails clearly, naming the key id, quoting nothing.
    let error = old
        .open_sealed_text("contact_phi", "mbi", &["2000"])
        .await
        .expect_err("t2 unknown to it");
    assert!(
        matches!(&error, StoreError::Sealed { source: CryptoError::UnknownKey(id), .. } if id == "t2"),
        "{error}"
    );
    let text = error.to_string();
    assert!(
        text.contains("INTAKE_ENCRYPTION_KEYS") && !text.contains("MBI-0"),
        "{text}"
    );
    let error = old.dead_letter(id).await.expect_err("body under t2");
    assert!(error.to_string().contains("envelope.body"), "{error}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_database_migrated_before_v7_has_its_plaintext_sealed_at_migrate() {
    let db = fresh_database("phi-legacy").await;
    let client = db.client().await;
    // A database at V6, as the former runner recorded it (adopted by refinery at migrate), with
    // PHI in plaintext everywhere it used to be.
    for sql in [
        include_str!("../../crates/store/migrations/V1__init.sql"),
        include_str!("../../crates/store/migrations/V2__healthsherpa_sync.sql"),
        include_str!("../../crates/store/migrations/V3__field_issues.sql"),
        include_str!("../../crates/store/migrations/V4__ordering_semantics.sql"),
        include_str!("../../crates/store/migrations/V5__retention.sql"),
        include_str!("../../crates/store/migrations/V6__dead_letter_store.sql"),
    ] {
        client.batch_execute(sql).await.expect("old migration");
    }
    client
        .batch_execute(
            "CREATE TABLE intake_schema_migrations (version integer PRIMARY KEY, name text NOT NULL);
             INSERT INTO intake_schema_migrations VALUES (1, 'init'), (2, 'healthsherpa_sync'),
                 (3, 'field_issues'), (4, 'ordering_semantics'), (5, 'retention'), (6, 'dead_letter_store');
             INSERT INTO contacts (spark_id, first_name, snapshot_received_at, snapshot_envelope_id)
                 VALUES ('1234', 'Anthony', now(), '0190d5a8-0000-7000-8000-000000000001');
             INSERT INTO contact_phi (spark_id, dob, mbi, has_lis, part_a_enrollment_date)
                 VALUES ('1234', '1959-08-22', 'T0NY-S0PR4N0', true, '2000-01-01');
             INSERT INTO contact_policies (spark_id, category, slot, carrier, effective_date)
                 VALUES ('1234', 'active', 'policy_1', 'UnitedHealthcare', '1999-01-10');
             INSERT INTO healthsherpa_members (application_key, member_id, first_name, date_of_birth)
                 VALUES ('app_1', 'mem_1', 'Meadowlark', '1959-08-22');
             INSERT INTO raw_events (envelope_id, endpoint, provider, received_at, headers, body)
                 VALUES ('0190d5a8-0000-7000-8000-000000000001', 'ep', 'spark', now(), '[]',
                         convert_to('{\"mbi\": \"T0NY-S0PR4N0\"}', 'UTF8'));
             INSERT INTO dead_letters (envelope_id, endpoint, provider, reason, attempts, received_at, body)
                 VALUES ('0190d5a8-0000-7000-8000-000000000002', 'ep', 'spark', 'missing_field', 1, now(),
                         convert_to('{\"dob\": \"1959-08-22\"}', 'UTF8'));
             INSERT INTO parked_events (entity_kind, entity_id, waits_for, endpoint, dedupe_key, envelope_id,
                     provider, event_type, event, received_at, deadline)
                 VALUES ('lead', 'l1', 'lead.enriched', 'ep', 'k1', '0190d5a8-0000-7000-8000-000000000003',
                         'spark360', 'lead.contact_requested', '{\"member\": \"Meadowlark\"}', now(), now());",
        )
        .await
        .expect("old data");
    assert_eq!(
        plaintext_hits(&client, PHI).await,
        [
            "contact_phi: 1959-08-22",
            "contact_phi: T0NY-S0PR4N0",
            "contact_policies: UnitedHealthcare",
            "dead_letters: 1959-08-22",
            "healthsherpa_members: 1959-08-22",
            "healthsherpa_members: Meadowlark",
            "parked_events: Meadowlark",
            "raw_events: T0NY-S0PR4N0",
        ],
        "plaintext before"
    );

    let store = store_with(&db, TEST_ENCRYPTION_KEYS);
    store.migrate().await.expect("migrate");
    assert_eq!(store.pending_plaintext().await.expect("pending"), 0);
    assert_eq!(plaintext_hits(&client, PHI).await, Vec::<String>::new());
    let text = |table: &'static str, column: &'static str, key: Vec<&'static str>| {
        let store = store.clone();
        async move { store.open_sealed_text(table, column, &key).await.expect("open") }
    };
    assert_eq!(
        text("contact_phi", "dob", vec!["1234"]).await.as_deref(),
        Some("1959-08-22")
    );
    assert_eq!(
        text("contact_phi", "mbi", vec!["1234"]).await.as_deref(),
        Some("T0NY-S0PR4N0")
    );
    assert_eq!(
        text("contact_phi", "has_lis", vec!["1234"]).await.as_deref(),
        Some("true")
    );
    assert_eq!(text("contact_phi", "has_ssi", vec!["1234"]).await, None);
    assert_eq!(
        text(
            "contact_policies",
            "effective_date",
            vec!["1234", "active", "policy_1"]
        )
        .await
        .as_deref(),
        Some("1999-01-10")
    );
    assert_eq!(
        text("healthsherpa_members", "first_name", vec!["app_1", "mem_1"])
            .await
            .as_deref(),
        Some("Meadowlark")
    );
    assert_eq!(
        text("raw_events", "body", vec!["0190d5a8-0000-7000-8000-000000000001"])
            .await
            .as_deref(),
        Some("{\"mbi\": \"T0NY-S0PR4N0\"}")
    );
    // The sync reads the contact's PHI from its new form.
    let sync = store.lock_contact_sync("1234").await.expect("lock");
    let contact = sync.contact().await.expect("read").expect("contact");
    assert_eq!(contact.mbi.as_deref(), Some("T0NY-S0PR4N0"));
    assert_eq!(
        contact.part_a_date.map(|d| d.to_string()).as_deref(),
        Some("2000-01-01")
    );
    sync.release().await.expect("release");
    // A second migrate has nothing to seal and changes nothing.
    store.migrate().await.expect("again");
    assert_eq!(
        text("contact_phi", "mbi", vec!["1234"]).await.as_deref(),
        Some("T0NY-S0PR4N0")
    );
    drop(client);
    db.drop_database().await;
}
