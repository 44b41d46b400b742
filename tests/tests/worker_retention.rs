//! Retention against a real Postgres: every growing table loses its rows past their age, in
//! batches, and keeps the younger ones (and what still matters: parked events' inbox rows,
//! unpublished outbox rows, open dead letters); the dedupe window is where a re-delivery is
//! recognised; the dead-letter gauge counts only what still needs an operator. The last test runs
//! a worker, whose sweeper does all of it with the configured ages (the only test in this binary
//! that starts a worker, so no other sets the process-wide gauge).

mod worker_support;

use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use intake_core::{Envelope, Provider};
use intake_it::pg::TestDb;
use intake_it::wait_until;
use intake_providers::fixtures;
use intake_store::{ApplyOptions, DeadLetter, Outcome, Retained, Store};
use worker_support::World;

const DAY: Duration = Duration::from_secs(86_400);

async fn store(db: &TestDb) -> Store {
    db.migrated_store(4, Duration::from_secs(10)).await
}

/// A Spark contact snapshot of contact `id`, received `age` ago.
fn contact(id: u32, age: Duration) -> Envelope {
    let body = fixtures::SPARK_CONTACT.replacen("\"id\": 1234,", &format!("\"id\": {id},"), 1);
    let mut envelope = Envelope::new("ep", Provider::Spark, vec![], Bytes::from(body));
    envelope.received_at = Utc::now() - age;
    envelope
}

async fn apply(store: &Store, envelope: &Envelope) -> Outcome {
    let events = intake_providers::decode(envelope).expect("decode");
    store
        .apply(envelope, &events[0], ApplyOptions::default())
        .await
        .expect("apply")
        .outcome
}

/// Prunes `what` in batches of `batch` until a batch comes back short; returns each batch's count.
async fn prune_all(store: &Store, what: Retained, age: Duration, batch: i64) -> Vec<u64> {
    let mut batches = Vec::new();
    loop {
        let n = store.prune(what, age, batch).await.expect("prune");
        batches.push(n);
        if (n as i64) < batch {
            return batches;
        }
    }
}

async fn strings(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .expect(sql)
        .iter()
        .map(|r| r.get(0))
        .collect()
}

fn dead_letter<'a>(envelope: &'a Envelope, reason: &'a str) -> DeadLetter<'a> {
    DeadLetter {
        envelope,
        event_type: Some("contact.snapshot"),
        dedupe_key: None,
        reason,
        attempts: 1,
        first_error: None,
        last_error: "test",
    }
}

#[tokio::test]
async fn each_table_deletes_rows_past_their_age_in_batches_and_keeps_younger_ones() {
    let db = intake_it::pg::fresh_database("r-tables").await;
    let store = store(&db).await;
    let client = db.client().await;

    // Contacts 1-5 received two days ago, 6-7 just now: inbox, raw event and outbox row each.
    for id in 1..=7 {
        let age = if id <= 5 { 2 * DAY } else { Duration::ZERO };
        assert_eq!(apply(&store, &contact(id, age)).await, Outcome::Applied);
    }
    // An event still parked, received two days ago: its inbox row and raw event must stay.
    let mut parked = Envelope::new(
        "ep",
        Provider::Spark360,
        vec![],
        Bytes::from_static(fixtures::SPARK360_CONTACT_REQUESTED.as_bytes()),
    );
    parked.received_at = Utc::now() - 2 * DAY;
    assert_eq!(apply(&store, &parked).await, Outcome::Parked);
    // Outbox: contacts 1-5 published two days ago, 6 just now, 7 never (created long ago).
    client
        .batch_execute(
            "UPDATE outbox SET published_at = now() - interval '2 days' WHERE contact_id IN ('1','2','3','4','5');
             UPDATE outbox SET published_at = now() WHERE contact_id = '6';
             UPDATE outbox SET created_at = now() - interval '20 days' WHERE contact_id = '7';",
        )
        .await
        .expect("outbox ages");
    // Dead letters: a and b open for twenty days; c replayed and d purged two days ago; e
    // replayed just now.
    let envelopes: Vec<Envelope> = (0..5).map(|i| contact(100 + i, 20 * DAY)).collect();
    for (envelope, reason) in envelopes.iter().zip(["a", "b", "c", "d", "e"]) {
        store
            .insert_dead_letter(&dead_letter(envelope, reason))
            .await
            .expect("dead letter");
    }
    let id = |reason: &str| {
        let client = &client;
        let reason = reason.to_owned();
        async move {
            client
                .query_one("SELECT id FROM dead_letters WHERE reason = $1", &[&reason])
                .await
                .expect("id")
                .get::<_, i64>(0)
        }
    };
    assert!(
        store
            .mark_dead_letter_replayed(id("c").await)
            .await
            .expect("replay")
    );
    assert!(store.mark_dead_letter_purged(id("d").await).await.expect("purge"));
    assert!(
        store
            .mark_dead_letter_replayed(id("e").await)
            .await
            .expect("replay")
    );
    client
        .batch_execute(
            "UPDATE dead_letters SET dead_lettered_at = now() - interval '20 days';
             UPDATE dead_letters SET resolved_at = now() - interval '2 days' WHERE reason IN ('c', 'd');",
        )
        .await
        .expect("dead letter ages");

    // Age one day, two rows per statement: five old rows go in batches of 2, 2, 1.
    assert_eq!(prune_all(&store, Retained::RawEvents, DAY, 2).await, [2, 2, 1]);
    assert_eq!(prune_all(&store, Retained::Inbox, DAY, 2).await, [2, 2, 1]);
    assert_eq!(
        prune_all(&store, Retained::PublishedOutbox, DAY, 2).await,
        [2, 2, 1]
    );
    assert_eq!(
        prune_all(&store, Retained::ResolvedDeadLetters, DAY, 2).await,
        [2, 0]
    );

    // Contacts 6 and 7, and the parked event (its body is what a timeout dead-letters).
    assert_eq!(
        strings(&client, "SELECT provider FROM raw_events ORDER BY provider").await,
        ["spark", "spark", "spark360"]
    );
    assert_eq!(
        strings(&client, "SELECT entity_id FROM inbox ORDER BY entity_id").await,
        ["6", "7", "lead_7f3a9c"]
    );
    assert_eq!(
        strings(&client, "SELECT contact_id FROM outbox ORDER BY contact_id").await,
        ["6", "7"]
    );
    assert_eq!(
        strings(&client, "SELECT reason FROM dead_letters ORDER BY reason").await,
        ["a", "b", "e"]
    );
    // Nothing else is past its age.
    for what in Retained::ALL {
        assert_eq!(store.prune(what, DAY, 100).await.expect("prune"), 0, "{what:?}");
    }
    db.drop_database().await;
}

#[tokio::test]
async fn a_redelivery_is_recognised_within_the_dedupe_window_and_applied_anew_after_it() {
    let db = intake_it::pg::fresh_database("r-window").await;
    let store = store(&db).await;
    let mut referral = Envelope::new(
        "ep",
        Provider::SparkLoop,
        vec![],
        Bytes::from_static(fixtures::SPARKLOOP_NEW_REFERRAL.as_bytes()),
    );
    referral.received_at = Utc::now() - 2 * DAY;
    assert_eq!(apply(&store, &referral).await, Outcome::Applied);

    // A three-day window still holds it: the re-delivery is a duplicate.
    assert_eq!(
        store.prune(Retained::Inbox, 3 * DAY, 100).await.expect("prune"),
        0
    );
    assert_eq!(apply(&store, &referral).await, Outcome::Duplicate);

    // A one-day window does not: its inbox row goes, and a re-delivery is no longer recognised.
    assert_eq!(store.prune(Retained::Inbox, DAY, 100).await.expect("prune"), 1);
    assert_ne!(apply(&store, &referral).await, Outcome::Duplicate);
    db.drop_database().await;
}

#[tokio::test]
async fn unresolved_dead_letters_count_what_still_needs_an_operator() {
    let db = intake_it::pg::fresh_database("r-open").await;
    let store = store(&db).await;
    let envelopes: Vec<Envelope> = (0..4).map(|i| contact(200 + i, Duration::ZERO)).collect();
    for envelope in &envelopes {
        store
            .insert_dead_letter(&dead_letter(envelope, "retries_exhausted"))
            .await
            .expect("dead letter");
    }
    let client = db.client().await;
    let id_of = |envelope: &Envelope| {
        let client = &client;
        let envelope_id = envelope.id;
        async move {
            client
                .query_one(
                    "SELECT id FROM dead_letters WHERE envelope_id = $1",
                    &[&envelope_id],
                )
                .await
                .expect("id")
                .get::<_, i64>(0)
        }
    };
    assert_eq!(store.unresolved_dead_letters().await.expect("count"), 4);
    assert!(
        store
            .mark_dead_letter_replayed(id_of(&envelopes[0]).await)
            .await
            .expect("replay")
    );
    assert!(
        store
            .mark_dead_letter_purged(id_of(&envelopes[1]).await)
            .await
            .expect("purge")
    );
    assert!(!store.mark_dead_letter_purged(-1).await.expect("no such row"));
    assert_eq!(store.unresolved_dead_letters().await.expect("count"), 2);

    // The replayed event failing the same way again reopens its row; a redelivery of an open
    // one (its ack was lost) changes nothing.
    store
        .insert_dead_letter(&dead_letter(&envelopes[0], "retries_exhausted"))
        .await
        .expect("again");
    store
        .insert_dead_letter(&dead_letter(&envelopes[2], "retries_exhausted"))
        .await
        .expect("redelivered");
    assert_eq!(store.unresolved_dead_letters().await.expect("count"), 3);
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE replay_count = 1 AND replayed_at IS NOT NULL)
             FROM dead_letters",
            &[],
        )
        .await
        .expect("rows");
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (4, 1));
    db.drop_database().await;
}

/// `intake_worker_dead_letters` on a worker's `/metrics`, if present.
async fn dead_letter_gauge(addr: std::net::SocketAddr) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("intake_worker_dead_letters "))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test]
async fn a_worker_sweeps_by_its_configured_ages_and_its_gauge_counts_only_open_dead_letters() {
    let world = World::new("r-worker").await;
    let store = store(&world.db).await;
    let client = world.db.client().await;
    // Inbox rows and raw events: contact 1 received 31 days ago (past the 30-day dedupe window
    // and raw retention), contact 2 received 29 days ago.
    assert_eq!(apply(&store, &contact(1, 31 * DAY)).await, Outcome::Applied);
    assert_eq!(apply(&store, &contact(2, 29 * DAY)).await, Outcome::Applied);
    // Outbox: contact 1's row published 8 days ago (past 7), contact 2's 6 days ago.
    client
        .batch_execute(
            "UPDATE outbox SET published_at = now() - interval '8 days' WHERE contact_id = '1';
             UPDATE outbox SET published_at = now() - interval '6 days' WHERE contact_id = '2';",
        )
        .await
        .expect("outbox ages");
    // Dead letters: two open; one purged 31 days ago (past 30), one replayed 29 days ago.
    let envelopes: Vec<Envelope> = (0..4).map(|i| contact(300 + i, 40 * DAY)).collect();
    for (envelope, reason) in envelopes.iter().zip(["open1", "open2", "purged", "replayed"]) {
        store
            .insert_dead_letter(&dead_letter(envelope, reason))
            .await
            .expect("dead letter");
    }
    client
        .batch_execute(
            "UPDATE dead_letters SET purged_at = now() - interval '31 days', resolved_at = now() - interval '31 days',
                 resolution = 'purged' WHERE reason = 'purged';
             UPDATE dead_letters SET replayed_at = now() - interval '29 days', replay_count = 1,
                 resolved_at = now() - interval '29 days', resolution = 'replayed' WHERE reason = 'replayed';",
        )
        .await
        .expect("resolutions");

    // Default ages (30-day dedupe window and raw retention, 7-day outbox, 30-day dead letters).
    let worker = world.start_worker(world.worker_config()).await;
    let deadline = Duration::from_secs(30);
    let swept = wait_until(deadline, || async {
        let row = client
            .query_one(
                "SELECT (SELECT count(*) FROM inbox), (SELECT count(*) FROM raw_events),
                        (SELECT count(*) FROM outbox), (SELECT count(*) FROM dead_letters)",
                &[],
            )
            .await
            .expect("counts");
        (0..4).map(|i| row.get::<_, i64>(i)).collect::<Vec<_>>() == [1, 1, 1, 3]
    })
    .await;
    assert!(swept, "every table swept to its younger rows");
    assert_eq!(strings(&client, "SELECT entity_id FROM inbox").await, ["2"]);
    assert_eq!(strings(&client, "SELECT contact_id FROM outbox").await, ["2"]);
    assert_eq!(
        strings(&client, "SELECT reason FROM dead_letters ORDER BY reason").await,
        ["open1", "open2", "replayed"]
    );

    // Four rows were ever written, three are left, two need an operator: the gauge says 2.
    let until = std::time::Instant::now() + deadline;
    let mut gauge = dead_letter_gauge(worker.addr).await;
    while gauge != Some(2.0) && std::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        gauge = dead_letter_gauge(worker.addr).await;
    }
    assert_eq!(gauge, Some(2.0));
    worker.stop().await.expect("stop");
    world.cleanup().await;
}
