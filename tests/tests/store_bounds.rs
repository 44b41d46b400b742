//! Server-side bounds and migrations against a real Postgres: every pooled connection carries the
//! configured `statement_timeout` and `lock_timeout`; a statement blocked by another session's
//! lock (row lock, the per-contact sync lock, the migration lock) fails with a retryable error
//! once its bound passes instead of hanging; an applied migration whose file was edited is refused
//! (and a worker refuses to start on it); a database migrated by the former runner is adopted.

use std::time::{Duration, Instant};

use bytes::Bytes;
use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_providers::fixtures;
use intake_store::{ApplyOptions, Outcome, SessionBounds, Store, StoreConfig, StoreError};

/// The migration lock's key (`pool.rs`).
const MIGRATION_LOCK: i64 = 0x696e_7461_6b65;

/// A store on `db` with the given server-side bounds and a generous client-side one, so only
/// the server's bounds can end a wait.
fn store_with(db: &TestDb, statement: Option<Duration>, lock: Option<Duration>) -> Store {
    let mut config = StoreConfig::new(db.url.clone(), intake_it::test_keys(), 4, Duration::from_secs(30));
    config.statement_timeout = statement;
    config.lock_timeout = lock;
    Store::new(&config).expect("store")
}

fn spark(id: u32, first_name: &str) -> Envelope {
    let body = fixtures::SPARK_CONTACT
        .replacen("\"id\": 1234,", &format!("\"id\": {id},"), 1)
        .replacen("\"Anthony\"", &format!("\"{first_name}\""), 1);
    Envelope::new("ep", Provider::Spark, vec![], Bytes::from(body))
}

async fn apply(store: &Store, envelope: &Envelope) -> Result<Outcome, StoreError> {
    let events = intake_providers::decode(envelope).expect("decode");
    // A generous outer bound: if the server-side bound did not work, the test fails, not hangs.
    tokio::time::timeout(
        Duration::from_secs(20),
        store.apply(envelope, &events[0], ApplyOptions::default()),
    )
    .await
    .expect("the server-side bound ended the wait")
    .map(|report| report.outcome)
}

#[tokio::test]
async fn every_pooled_connection_shows_the_configured_bounds() {
    let db = fresh_database("s-bounds").await;
    let store = store_with(
        &db,
        Some(Duration::from_millis(2500)),
        Some(Duration::from_millis(1500)),
    );
    // More concurrent asks than connections: the pool opens all four and reuses them.
    let seen = futures_util::future::join_all((0..12).map(|_| store.session_bounds())).await;
    for bounds in seen {
        assert_eq!(
            bounds.expect("bounds"),
            SessionBounds {
                statement_timeout: "2500ms".into(),
                lock_timeout: "1500ms".into(),
            }
        );
    }
    // The defaults derived from the client-side timeout (10 s): 90 % and 80 %.
    let store = Store::new(&StoreConfig::new(
        db.url.clone(),
        intake_it::test_keys(),
        1,
        Duration::from_secs(10),
    ))
    .expect("store");
    assert_eq!(
        store.session_bounds().await.expect("bounds"),
        SessionBounds {
            statement_timeout: "9s".into(),
            lock_timeout: "8s".into(),
        }
    );
    // Options already in the URL are kept alongside ours.
    let mut config = StoreConfig::new(
        format!("{}?options=-c%20application_name%3Dbounds-test", db.url),
        intake_it::test_keys(),
        1,
        Duration::from_secs(10),
    );
    config.lock_timeout = Some(Duration::from_millis(700));
    let store = Store::new(&config).expect("store");
    assert_eq!(
        store.session_bounds().await.expect("bounds").lock_timeout,
        "700ms"
    );
    db.drop_database().await;
}

/// Another session holds every entity row lock; an apply of the same contact has to wait for it.
async fn hold_entity_locks(db: &TestDb) -> tokio_postgres::Client {
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; SELECT * FROM entities FOR UPDATE")
        .await
        .expect("lock");
    holder
}

#[tokio::test]
async fn a_statement_blocked_by_a_row_lock_fails_retryable_after_lock_timeout() {
    let db = fresh_database("s-lockto").await;
    let store = store_with(
        &db,
        Some(Duration::from_secs(10)),
        Some(Duration::from_millis(500)),
    );
    store.migrate().await.expect("migrate");
    assert_eq!(
        apply(&store, &spark(1, "First")).await.expect("apply"),
        Outcome::Applied
    );

    let holder = hold_entity_locks(&db).await;
    let started = Instant::now();
    let error = apply(&store, &spark(1, "Second")).await.expect_err("blocked");
    let waited = started.elapsed();
    assert_eq!(error.code(), Some("55P03"), "{error}");
    assert!(error.is_retryable());
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(5),
        "{waited:?}"
    );

    // Once the lock is gone the same event applies: the cancelled attempt left nothing behind.
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(
        apply(&store, &spark(1, "Second")).await.expect("apply"),
        Outcome::Applied
    );
    db.drop_database().await;
}

#[tokio::test]
async fn a_statement_running_past_statement_timeout_is_cancelled_retryable_and_releases_its_locks() {
    let db = fresh_database("s-stmtto").await;
    // No lock bound: only statement_timeout can end the wait.
    let store = store_with(&db, Some(Duration::from_millis(500)), None);
    store.migrate().await.expect("migrate");
    assert_eq!(
        apply(&store, &spark(2, "First")).await.expect("apply"),
        Outcome::Applied
    );

    let holder = hold_entity_locks(&db).await;
    let started = Instant::now();
    let error = apply(&store, &spark(2, "Second")).await.expect_err("blocked");
    assert_eq!(error.code(), Some("57014"), "{error}");
    assert!(error.is_retryable());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );

    // The cancelled transaction was rolled back and holds nothing: had it kept its uncommitted
    // inbox row, the same event's insert would wait on it again until cancelled.
    holder.batch_execute("ROLLBACK").await.expect("unlock");
    assert_eq!(
        apply(&store, &spark(2, "Second")).await.expect("apply"),
        Outcome::Applied
    );
    db.drop_database().await;
}

#[tokio::test]
async fn a_contact_sync_lock_wait_ends_retryable_after_lock_timeout() {
    let db = fresh_database("s-synclk").await;
    let store = store_with(
        &db,
        Some(Duration::from_secs(10)),
        Some(Duration::from_millis(500)),
    );
    store.migrate().await.expect("migrate");
    let held = store.lock_contact_sync("c-1").await.expect("first lock");

    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(20), store.lock_contact_sync("c-1"))
        .await
        .expect("bounded wait")
        .expect_err("held elsewhere");
    assert_eq!(error.code(), Some("55P03"), "{error}");
    assert!(error.is_retryable());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Another contact is not held up.
    store
        .lock_contact_sync("c-2")
        .await
        .expect("other contact")
        .release()
        .await
        .expect("release");

    held.release().await.expect("release");
    store
        .lock_contact_sync("c-1")
        .await
        .expect("free again")
        .release()
        .await
        .expect("release");
    db.drop_database().await;
}

#[tokio::test]
async fn a_migration_run_waits_for_the_migration_lock_no_longer_than_lock_timeout() {
    let db = fresh_database("s-miglk").await;
    let store = store_with(
        &db,
        Some(Duration::from_secs(10)),
        Some(Duration::from_millis(500)),
    );
    let holder = db.client().await;
    holder
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .expect("lock");
    let started = Instant::now();
    let error = tokio::time::timeout(Duration::from_secs(20), store.migrate())
        .await
        .expect("bounded wait")
        .expect_err("lock held elsewhere");
    assert_eq!(error.code(), Some("55P03"), "{error}");
    assert!(error.is_retryable(), "the caller tries again later");
    assert!(started.elapsed() < Duration::from_secs(5));

    holder
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .expect("unlock");
    store.migrate().await.expect("migrate once the lock is free");
    db.drop_database().await;
}

#[tokio::test]
async fn an_edited_migration_is_refused_and_the_worker_does_not_start() {
    let db = fresh_database("s-edited").await;
    let store = store_with(&db, None, None);
    store.migrate().await.expect("migrate");
    store.migrate().await.expect("nothing to do the second time");

    // What the database looks like when V2 was applied from one text and the build now embeds
    // another: the recorded checksum is that of the text as it was applied.
    let applied = refinery::Migration::unapplied(
        "V2__healthsherpa_sync",
        "CREATE TABLE healthsherpa_sync (spark_id text PRIMARY KEY);",
    )
    .expect("migration");
    let client = db.client().await;
    let updated = client
        .execute(
            "UPDATE refinery_schema_history SET checksum = $1 WHERE version = 2",
            &[&applied.checksum().to_string()],
        )
        .await
        .expect("record the applied text");
    assert_eq!(updated, 1);

    let error = store.migrate().await.expect_err("edited migration");
    assert!(
        matches!(&error, StoreError::Migration(m) if m.contains("V2__healthsherpa_sync") && m.contains("edited")),
        "{error}"
    );
    assert!(!error.is_retryable());

    // A worker on that database stops at start with that error instead of retrying forever.
    let mut config = intake_worker::WorkerConfig::local_defaults();
    config.listen_addr = "127.0.0.1:0".parse().expect("addr");
    config.database_url = db.url.clone().into();
    config.keys = intake_it::test_key_settings();
    let listener = tokio::net::TcpListener::bind(config.listen_addr)
        .await
        .expect("bind");
    let result = tokio::time::timeout(
        Duration::from_secs(20),
        intake_worker::run(config, listener, std::future::pending()),
    )
    .await
    .expect("the worker stops by itself");
    let error = result.expect_err("refused");
    assert!(error.to_string().contains("edited"), "{error}");
    db.drop_database().await;
}

#[tokio::test]
async fn a_database_migrated_by_the_former_runner_is_adopted() {
    let db = fresh_database("s-legacy").await;
    let client = db.client().await;
    // What the hand-written runner left: V1 and V2 applied, recorded in its own table.
    client
        .batch_execute(include_str!("../../crates/store/migrations/V1__init.sql"))
        .await
        .expect("V1");
    client
        .batch_execute(include_str!(
            "../../crates/store/migrations/V2__healthsherpa_sync.sql"
        ))
        .await
        .expect("V2");
    client
        .batch_execute(
            "CREATE TABLE intake_schema_migrations (version integer PRIMARY KEY, name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now());
             INSERT INTO intake_schema_migrations (version, name) VALUES (1, 'init'), (2, 'healthsherpa_sync');",
        )
        .await
        .expect("legacy history");

    let store = store_with(&db, None, None);
    store.migrate().await.expect("adopted, then migrated");
    let versions: Vec<i32> = client
        .query(
            "SELECT version FROM refinery_schema_history ORDER BY version",
            &[],
        )
        .await
        .expect("history")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(&versions[..2], &[1, 2]);
    assert!(versions.contains(&5), "{versions:?}");
    // V5 ran (its columns exist); the old table is gone.
    client
        .query("SELECT resolved_at FROM dead_letters", &[])
        .await
        .expect("V5 applied");
    let legacy: bool = client
        .query_one("SELECT to_regclass('intake_schema_migrations') IS NOT NULL", &[])
        .await
        .expect("regclass")
        .get(0);
    assert!(!legacy);
    store.migrate().await.expect("idempotent");
    db.drop_database().await;
}
