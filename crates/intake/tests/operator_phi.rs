//! The operator commands and PHI, run as processes against real Postgres: `dead-letters show`
//! prints a body (opened) only with `--body`; a body under a key the process lacks fails with a
//! clear error that quotes nothing; `keys status` counts values per key and `keys rotate`
//! re-seals them under the current key, idempotently.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_it::{AMQP_URL, TEST_ENCRYPTION_KEYS, TEST_HMAC_KEY};
use intake_providers::fixtures;
use intake_store::{ApplyOptions, KeySettings, NewDeadLetter, Store, StoreConfig};

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");
const MBI: &str = "T0NY-S0PR4N0";

fn run(args: &[&str], db: &TestDb, keys: &str) -> Output {
    Command::new(INTAKE)
        .args(args)
        .env_clear()
        .env("RUST_LOG", "warn")
        .env("INTAKE_AMQP_URL", AMQP_URL)
        .env("INTAKE_DATABASE_URL", &db.url)
        .env("INTAKE_ENCRYPTION_KEYS", keys)
        .env("INTAKE_HMAC_KEY", TEST_HMAC_KEY)
        .stdin(Stdio::null())
        .output()
        .expect("run intake")
}

fn text(output: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json(output: &Output) -> serde_json::Value {
    assert!(output.status.success(), "{:?}", text(output));
    serde_json::from_slice(&output.stdout).expect("json")
}

#[tokio::test]
async fn bodies_are_shown_only_with_body_and_keys_rotate_through_the_cli() {
    let db = fresh_database("cli-phi").await;
    // Data written by a process whose current key is the old one (t1).
    let old_key = TEST_ENCRYPTION_KEYS.split(',').nth(1).expect("t1");
    let keys = KeySettings::new(old_key, TEST_HMAC_KEY).keyring().expect("keys");
    let store = Store::new(&StoreConfig::new(
        db.url.clone(),
        keys,
        2,
        Duration::from_secs(10),
    ))
    .expect("store");
    store.migrate().await.expect("migrate");
    let contact = Envelope::new("ep", Provider::Spark, vec![], fixtures::SPARK_CONTACT.into());
    let event = intake_providers::decode(&contact).expect("decode").remove(0);
    store
        .apply(&contact, &event, ApplyOptions::default())
        .await
        .expect("apply");
    store
        .record_dead_letter(&NewDeadLetter {
            source: "ingest",
            queue: None,
            message_id: contact.id,
            endpoint: Some("ep"),
            provider: Some("spark"),
            event_type: Some("contact.snapshot"),
            dedupe_key: Some("k"),
            reason: "missing_field",
            attempts: 1,
            first_error: None,
            last_error: Some("missing /details/id"),
            received_at: contact.received_at,
            headers: serde_json::json!([]),
            properties: serde_json::json!({}),
            body: &contact.body,
        })
        .await
        .expect("dead letter");
    let listed = json(&run(
        &["dead-letters", "list", "--json"],
        &db,
        TEST_ENCRYPTION_KEYS,
    ));
    let id = listed[0]["id"].as_i64().expect("id").to_string();

    // Without --body: its size, nothing of it.
    let shown = run(&["dead-letters", "show", &id], &db, TEST_ENCRYPTION_KEYS);
    let (out, err) = text(&shown);
    assert!(shown.status.success(), "{err}");
    assert!(!out.contains(MBI) && !err.contains(MBI), "{out}");
    assert!(
        out.contains(&format!("{} bytes (--body", contact.body.len())),
        "{out}"
    );
    let shown = run(
        &["dead-letters", "show", &id, "--json"],
        &db,
        TEST_ENCRYPTION_KEYS,
    );
    assert!(!text(&shown).0.contains(MBI));
    assert_eq!(json(&shown)["body"], serde_json::Value::Null);
    // With --body: opened, as received.
    let shown = json(&run(
        &["dead-letters", "show", &id, "--body", "--json"],
        &db,
        TEST_ENCRYPTION_KEYS,
    ));
    assert_eq!(shown["body"].as_str(), Some(fixtures::SPARK_CONTACT));
    // Without the key it was sealed under: a clear error naming the key id, quoting nothing.
    let new_only = TEST_ENCRYPTION_KEYS.split(',').next().expect("t2");
    let refused = run(&["dead-letters", "show", &id, "--body"], &db, new_only);
    let (out, err) = text(&refused);
    assert_eq!(refused.status.code(), Some(1), "{out}{err}");
    assert!(
        err.contains("\"t1\"") && err.contains("INTAKE_ENCRYPTION_KEYS"),
        "{err}"
    );
    assert!(!out.contains(MBI) && !err.contains(MBI), "{out}{err}");

    // Everything is under t1; rotation (t2 current) re-seals it all, then finds nothing to do.
    let status = json(&run(&["keys", "status", "--json"], &db, TEST_ENCRYPTION_KEYS));
    assert_eq!(status["current_key"], "t2");
    let under_t1 = status["not_under_current_key"].as_i64().expect("count");
    assert!(under_t1 > 20, "{status}");
    let rotated = json(&run(
        &["keys", "rotate", "--batch", "2", "--json"],
        &db,
        TEST_ENCRYPTION_KEYS,
    ));
    assert_eq!(rotated["resealed"].as_i64(), Some(under_t1));
    let again = json(&run(&["keys", "rotate", "--json"], &db, TEST_ENCRYPTION_KEYS));
    assert_eq!(again["resealed"].as_i64(), Some(0));
    let status = json(&run(&["keys", "status", "--json"], &db, TEST_ENCRYPTION_KEYS));
    assert_eq!(status["not_under_current_key"].as_i64(), Some(0), "{status}");
    assert_eq!(status["plaintext_to_seal"].as_i64(), Some(0));
    // The old key can go now.
    let shown = json(&run(
        &["dead-letters", "show", &id, "--body", "--json"],
        &db,
        new_only,
    ));
    assert_eq!(shown["body"].as_str(), Some(fixtures::SPARK_CONTACT));
    db.drop_database().await;
}
