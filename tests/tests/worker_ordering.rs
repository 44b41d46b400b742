//! Ordering semantics through `Store::apply` against a real Postgres: HealthSherpa events with
//! several policies (per-row newer-wins, whatever the arrival order, also concurrently), Spark
//! snapshots ("the newest received snapshot wins"; a body equal to the current one is a
//! duplicate), and parked events whose stored form this build cannot read.

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use intake_core::{Envelope, Provider};
use intake_it::pg::{TestDb, fresh_database};
use intake_providers::fixtures;
use intake_store::{ApplyOptions, ApplyReport, Outcome, Store};
use serde_json::{Value, json};
use uuid::Uuid;

async fn store(db: &TestDb) -> Store {
    db.migrated_store(8, Duration::from_secs(5)).await
}

fn envelope(provider: Provider, body: impl Into<String>) -> Envelope {
    Envelope::new("ep", provider, vec![], Bytes::from(body.into()))
}

/// Decodes and applies one envelope (a single event).
async fn apply(store: &Store, envelope: &Envelope) -> ApplyReport {
    let events = intake_providers::decode(envelope).expect("decode");
    assert_eq!(events.len(), 1);
    store
        .apply(envelope, &events[0], ApplyOptions::default())
        .await
        .expect("apply")
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

fn at(month: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, month, 1, 0, 0, 0).unwrap()
}

fn day(month: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, month, d).unwrap()
}

// HealthSherpa ------------------------------------------------------------------------------------

/// One policy of an event: (policy, status, its member, member effective date, removed date).
type PolicySpec<'a> = (&'a str, &'a str, &'a str, NaiveDate, Option<NaiveDate>);

/// A HealthSherpa `sync` event of application `app` at the first of `month`.
fn hs_body(
    app: &str,
    txn: &str,
    month: u32,
    status: &str,
    members: &[(&str, &str)],
    policies: &[PolicySpec],
) -> String {
    let members: Vec<Value> = members
        .iter()
        .map(|(id, last)| json!({"member_id": id, "first_name": "Anthony", "last_name": last}))
        .collect();
    let policies: Vec<Value> = policies
        .iter()
        .map(|(id, status, member, effective, removed)| {
            json!({
                "policy_id": id,
                "status": status,
                "effective_date": "2026-01-01",
                "members": [{
                    "member_id": member,
                    "effective_date": effective.to_string(),
                    "removed_date": removed.map(|d| d.to_string()),
                }],
            })
        })
        .collect();
    json!({
        "transaction_id": txn,
        "application_id": app,
        "event_type": "sync",
        "policy_status": status,
        "event_timestamp": at(month).to_rfc3339(),
        "members": members,
        "policies": policies,
    })
    .to_string()
}

/// Four events of one application with two policies. Policy 2's newest status comes from event
/// `c`, which lists it *second*, after policy 1 whose own newest is the later event `d`: one gate
/// on `/policies/0` would skip policy 2 whenever `d` came first.
fn hs_events(n: &str) -> Vec<String> {
    let (app, p1, p2) = (format!("app_{n}"), format!("p1_{n}"), format!("p2_{n}"));
    let txn = |k: &str| format!("t{k}_{n}");
    vec![
        hs_body(
            &app,
            &txn("a"),
            1,
            "pending_effectuation",
            &[("mem_1", "A")],
            &[(&p1, "pending_effectuation", "mem_1", day(1, 1), None)],
        ),
        hs_body(
            &app,
            &txn("b"),
            2,
            "pending_effectuation",
            &[("mem_1", "B"), ("mem_2", "B")],
            &[(&p2, "pending_effectuation", "mem_2", day(2, 1), None)],
        ),
        hs_body(
            &app,
            &txn("c"),
            3,
            "effectuated",
            &[("mem_1", "C")],
            &[
                (&p1, "effectuated", "mem_1", day(3, 1), None),
                (&p2, "effectuated", "mem_2", day(3, 1), Some(day(3, 31))),
            ],
        ),
        hs_body(
            &app,
            &txn("d"),
            4,
            "terminated",
            &[("mem_1", "D")],
            &[(&p1, "terminated", "mem_1", day(4, 1), None)],
        ),
    ]
}

/// Checks that application `n` ended at each row's own newest event and that its history holds
/// every (event, policy) pair.
async fn assert_hs_final_state(client: &tokio_postgres::Client, n: &str, context: &str) {
    let (app, p1, p2) = (format!("app_{n}"), format!("p1_{n}"), format!("p2_{n}"));
    let policy = |id: String| async move {
        let r = client
            .query_one(
                "SELECT status, status_event_at FROM healthsherpa_policies WHERE policy_id = $1",
                &[&id],
            )
            .await
            .unwrap_or_else(|e| panic!("{context}: policy {id}: {e}"));
        (r.get::<_, String>(0), r.get::<_, DateTime<Utc>>(1))
    };
    assert_eq!(
        policy(p1.clone()).await,
        ("terminated".into(), at(4)),
        "{context}"
    );
    assert_eq!(
        policy(p2.clone()).await,
        ("effectuated".into(), at(3)),
        "{context}"
    );
    let member = |policy: String, member: &'static str| async move {
        let r = client
            .query_one(
                "SELECT effective_date, removed_date, event_at FROM healthsherpa_policy_members
                 WHERE policy_id = $1 AND member_id = $2",
                &[&policy, &member],
            )
            .await
            .unwrap_or_else(|e| panic!("{context}: policy member: {e}"));
        (
            r.get::<_, NaiveDate>(0),
            r.get::<_, Option<NaiveDate>>(1),
            r.get::<_, DateTime<Utc>>(2),
        )
    };
    assert_eq!(
        member(p1.clone(), "mem_1").await,
        (day(4, 1), None, at(4)),
        "{context}"
    );
    assert_eq!(
        member(p2.clone(), "mem_2").await,
        (day(3, 1), Some(day(3, 31)), at(3)),
        "{context}"
    );
    let members: Vec<(String, String)> = client
        .query(
            "SELECT member_id, last_name FROM healthsherpa_members WHERE application_key = $1 ORDER BY member_id",
            &[&app],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            let member: String = r.get(0);
            let last = intake_it::open_text(r.get(1), "healthsherpa_members.last_name", &[&app, &member]);
            (member, last.unwrap_or_default())
        })
        .collect();
    assert_eq!(
        members,
        [("mem_1".into(), "D".into()), ("mem_2".into(), "B".into())],
        "{context}"
    );
    let row = client
        .query_one(
            "SELECT policy_status, status_event_at, status_transaction_id FROM healthsherpa_applications
             WHERE application_key = $1",
            &[&app],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "terminated", "{context}");
    assert_eq!(row.get::<_, DateTime<Utc>>(1), at(4), "{context}");
    assert_eq!(row.get::<_, String>(2), format!("td_{n}"), "{context}");
    let history: Vec<(String, String, String, bool)> = client
        .query(
            "SELECT transaction_id, policy_id, status, applied FROM healthsherpa_status_history
             WHERE application_key = $1 ORDER BY transaction_id, policy_id",
            &[&app],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    let pairs: Vec<(&str, &str, &str)> = history
        .iter()
        .map(|(t, p, s, _)| (t.as_str(), p.as_str(), s.as_str()))
        .collect();
    let (ta, tb, tc, td) = (
        format!("ta_{n}"),
        format!("tb_{n}"),
        format!("tc_{n}"),
        format!("td_{n}"),
    );
    assert_eq!(
        pairs,
        [
            (ta.as_str(), p1.as_str(), "pending_effectuation"),
            (tb.as_str(), p2.as_str(), "pending_effectuation"),
            (tc.as_str(), p1.as_str(), "effectuated"),
            (tc.as_str(), p2.as_str(), "effectuated"),
            (td.as_str(), p1.as_str(), "terminated"),
        ],
        "{context}: every event in the history"
    );
    // A policy's newest event always moved its row, whenever it arrived.
    assert!(history[3].3, "{context}: c moved policy 2");
    assert!(history[4].3, "{context}: d moved policy 1");
}

#[tokio::test]
async fn healthsherpa_two_policies_each_end_at_their_own_newest_status_in_all_24_orders() {
    let db = fresh_database("w-hs-orders").await;
    let store = store(&db).await;
    let client = db.client().await;
    let orders = permutations(&[0, 1, 2, 3]);
    assert_eq!(orders.len(), 24);
    for (n, order) in orders.iter().enumerate() {
        let n = n.to_string();
        let bodies = hs_events(&n);
        for &i in order {
            let report = apply(&store, &envelope(Provider::HealthSherpa, bodies[i].clone())).await;
            // The newest event is newer than everything on every row it touches.
            if i == 3 {
                assert_eq!(report.outcome, Outcome::Applied, "order {order:?}");
            }
            // Every row `a` touches is also touched by `c` and by `d`: once either came first,
            // `a` is only history; before them it moves the rows.
            let pos = |x| order.iter().position(|&y| y == x).unwrap();
            if i == 0 {
                let superseded = pos(2) < pos(0) || pos(3) < pos(0);
                let expected = if superseded {
                    Outcome::Stale
                } else {
                    Outcome::Applied
                };
                assert_eq!(report.outcome, expected, "order {order:?}");
            }
        }
        assert_hs_final_state(&client, &n, &format!("order {order:?}")).await;
    }
    db.drop_database().await;
}

#[tokio::test]
async fn healthsherpa_concurrent_events_of_one_application_end_at_the_newest_per_row() {
    let db = fresh_database("w-hs-conc").await;
    let store = store(&db).await;
    // Ten applications, their four events each all in flight at once.
    let mut tasks = Vec::new();
    for n in 0..10 {
        for body in hs_events(&format!("c{n}")) {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                apply(&store, &envelope(Provider::HealthSherpa, body)).await
            }));
        }
    }
    for task in tasks {
        task.await.expect("apply task");
    }
    let client = db.client().await;
    for n in 0..10 {
        assert_hs_final_state(&client, &format!("c{n}"), "concurrent").await;
    }
    db.drop_database().await;
}

#[tokio::test]
async fn healthsherpa_events_of_the_same_instant_end_the_same_in_either_order() {
    let db = fresh_database("w-hs-tie").await;
    let store = store(&db).await;
    for (app, order) in [("tie_1", [0, 1]), ("tie_2", [1, 0])] {
        let policy = format!("pol_{app}");
        let bodies = [
            hs_body(
                app,
                &format!("{app}_txn_a"),
                5,
                "cancelled",
                &[("mem_1", "First")],
                &[(&policy, "cancelled", "mem_1", day(5, 1), None)],
            ),
            hs_body(
                app,
                &format!("{app}_txn_b"),
                5,
                "effectuated",
                &[("mem_1", "Second")],
                &[(&policy, "effectuated", "mem_1", day(5, 2), None)],
            ),
        ];
        for i in order {
            apply(&store, &envelope(Provider::HealthSherpa, bodies[i].clone())).await;
        }
    }
    let client = db.client().await;
    let rows = client
        .query(
            "SELECT p.status, m.last_name, pm.effective_date, m.application_key, m.member_id
             FROM healthsherpa_policies p
             JOIN healthsherpa_members m USING (application_key)
             JOIN healthsherpa_policy_members pm USING (policy_id)
             ORDER BY p.policy_id",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        // The higher transaction id wins a tie, whichever arrived first.
        assert_eq!(r.get::<_, String>(0), "effectuated");
        let (app, member): (String, String) = (r.get(3), r.get(4));
        let last = intake_it::open_text(r.get(1), "healthsherpa_members.last_name", &[&app, &member]);
        assert_eq!(last.as_deref(), Some("Second"));
        assert_eq!(r.get::<_, NaiveDate>(2), day(5, 2));
    }
    db.drop_database().await;
}

// Spark --------------------------------------------------------------------------------------------

/// A Spark snapshot of contact `id` whose preferred name is `name`, received at `received_at`.
fn snapshot(id: u32, name: &str, received_at: DateTime<Utc>) -> Envelope {
    let body = fixtures::SPARK_CONTACT
        .replace("\"id\": 1234", &format!("\"id\": {id}"))
        .replace(
            "\"preferred_name\": \"Tony\"",
            &format!("\"preferred_name\": \"{name}\""),
        );
    let mut e = envelope(Provider::Spark, body);
    e.received_at = received_at;
    e
}

async fn preferred_name(client: &tokio_postgres::Client, id: u32) -> String {
    client
        .query_one(
            "SELECT preferred_name FROM contacts WHERE spark_id = $1",
            &[&id.to_string()],
        )
        .await
        .unwrap()
        .get(0)
}

async fn count(client: &tokio_postgres::Client, sql: &str, id: u32) -> i64 {
    client
        .query_one(sql, &[&id.to_string()])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .get(0)
}

const OUTBOX: &str = "SELECT count(*) FROM outbox WHERE contact_id = $1";

#[tokio::test]
async fn spark_a_then_b_then_a_again_ends_at_a_with_three_applied() {
    let db = fresh_database("w-spark-aba").await;
    let store = store(&db).await;
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    for (k, name) in ["A", "B", "A"].into_iter().enumerate() {
        let e = snapshot(7, name, t0 + chrono::Duration::seconds(k as i64));
        assert_eq!(apply(&store, &e).await.outcome, Outcome::Applied, "{k}: {name}");
    }
    let client = db.client().await;
    assert_eq!(preferred_name(&client, 7).await, "A");
    assert_eq!(
        count(
            &client,
            "SELECT count(*) FROM inbox WHERE entity_id = $1 AND outcome = 'applied'",
            7
        )
        .await,
        3
    );
    assert_eq!(count(&client, OUTBOX, 7).await, 3, "every change notifies");
    db.drop_database().await;
}

#[tokio::test]
async fn spark_a_retry_of_the_current_body_is_a_duplicate_without_an_outbox_row() {
    let db = fresh_database("w-spark-retry").await;
    let store = store(&db).await;
    let t = |s: i64| Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap() + chrono::Duration::seconds(s);
    let first = snapshot(8, "A", t(10));
    assert_eq!(apply(&store, &first).await.outcome, Outcome::Applied);
    // The provider sends the same body again: a new envelope, received later.
    let retry = snapshot(8, "A", t(30));
    assert_eq!(apply(&store, &retry).await.outcome, Outcome::Duplicate);
    // The broker redelivers either envelope: the inbox key recognises it.
    assert_eq!(apply(&store, &retry).await.outcome, Outcome::Duplicate);
    assert_eq!(apply(&store, &first).await.outcome, Outcome::Duplicate);
    // A different snapshot received between the two copies is older than the newest receipt.
    let between = snapshot(8, "B", t(20));
    assert_eq!(apply(&store, &between).await.outcome, Outcome::Stale);

    let client = db.client().await;
    assert_eq!(preferred_name(&client, 8).await, "A");
    assert_eq!(count(&client, OUTBOX, 8).await, 1, "only the first copy notifies");
    let outcomes: Vec<(String, i32)> = client
        .query(
            "SELECT outcome, duplicates FROM inbox WHERE entity_id = '8' ORDER BY received_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        outcomes,
        [
            ("applied".into(), 1),
            ("stale".into(), 0),
            ("duplicate".into(), 1)
        ]
    );
    let raw: i64 = client
        .query_one(
            "SELECT count(*) FROM raw_events WHERE envelope_id = $1",
            &[&retry.id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(raw, 0, "a duplicate's body is not kept a second time");
    db.drop_database().await;
}

#[tokio::test]
async fn spark_snapshots_of_the_same_instant_are_ordered_by_envelope_id_in_either_order() {
    let db = fresh_database("w-spark-tie").await;
    let store = store(&db).await;
    let instant = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
    let (low, high) = (a.min(b), a.max(b));
    for (contact, high_first) in [(21, false), (22, true)] {
        let mut older = snapshot(contact, "Low", instant);
        older.id = low;
        let mut newer = snapshot(contact, "High", instant);
        newer.id = high;
        if high_first {
            assert_eq!(apply(&store, &newer).await.outcome, Outcome::Applied);
            assert_eq!(apply(&store, &older).await.outcome, Outcome::Stale);
        } else {
            assert_eq!(apply(&store, &older).await.outcome, Outcome::Applied);
            assert_eq!(apply(&store, &newer).await.outcome, Outcome::Applied);
        }
    }
    let client = db.client().await;
    assert_eq!(preferred_name(&client, 21).await, "High");
    assert_eq!(preferred_name(&client, 22).await, "High");
    db.drop_database().await;
}

#[tokio::test]
async fn spark_an_older_snapshot_arriving_late_is_stale() {
    let db = fresh_database("w-spark-late").await;
    let store = store(&db).await;
    let newer = snapshot(9, "New", Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap());
    let older = snapshot(9, "Old", Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap());
    assert_eq!(apply(&store, &newer).await.outcome, Outcome::Applied);
    assert_eq!(apply(&store, &older).await.outcome, Outcome::Stale);
    let client = db.client().await;
    assert_eq!(preferred_name(&client, 9).await, "New");
    assert_eq!(count(&client, OUTBOX, 9).await, 1);
    db.drop_database().await;
}

// Parked events ----------------------------------------------------------------------------------

#[tokio::test]
async fn an_unreadable_parked_event_is_dead_lettered_alone_and_its_prerequisite_applies() {
    let db = fresh_database("w-park-format").await;
    let store = store(&db).await;
    // Three events of one lead parked until `lead.enriched`: one good, one written in a format
    // version this build does not know, one of the right version whose JSON no longer decodes.
    let good = envelope(Provider::Spark360, fixtures::SPARK360_RENTAL_ALERT);
    let future = envelope(
        Provider::Spark360,
        fixtures::SPARK360_CONTACT_REQUESTED.replace("evt_01HX0000000000000000000004", "evt_future"),
    );
    let garbled = envelope(
        Provider::Spark360,
        fixtures::SPARK360_CONTACT_REQUESTED.replace("evt_01HX0000000000000000000004", "evt_garbled"),
    );
    for e in [&good, &future, &garbled] {
        assert_eq!(apply(&store, e).await.outcome, Outcome::Parked);
    }
    let client = db.client().await;
    client
        .execute(
            "UPDATE parked_events SET format = 99 WHERE envelope_id = $1",
            &[&future.id],
        )
        .await
        .unwrap();
    // Sealed properly for its row (it opens), but what it holds does not decode.
    let key = client
        .query_one(
            "SELECT endpoint, dedupe_key FROM parked_events WHERE envelope_id = $1",
            &[&garbled.id],
        )
        .await
        .unwrap();
    let (endpoint, dedupe_key): (String, String) = (key.get(0), key.get(1));
    let garbled_event = intake_it::test_keys().seal(
        br#"{"kind": "from_elsewhere"}"#,
        &intake_store::crypto::Place::new("parked_events.event", &[&endpoint, &dedupe_key]),
    );
    client
        .execute(
            "UPDATE parked_events SET event = $1 WHERE envelope_id = $2",
            &[&garbled_event, &garbled.id],
        )
        .await
        .unwrap();

    let enriched = envelope(Provider::Spark360, fixtures::SPARK360_ENRICHED);
    let report = apply(&store, &enriched).await;
    assert_eq!(report.outcome, Outcome::Applied);
    assert_eq!(
        report
            .released
            .iter()
            .map(|r| r.event_type.as_str())
            .collect::<Vec<_>>(),
        ["lead.rental_alert"]
    );
    let mut dead: Vec<Uuid> = report.parked_dead_letters.iter().map(|d| d.envelope_id).collect();
    dead.sort();
    let mut expected = vec![future.id, garbled.id];
    expected.sort();
    assert_eq!(dead, expected);

    let lead = client
        .query_one(
            "SELECT enrichment IS NOT NULL, rental_alert IS NOT NULL, contact_request IS NULL FROM leads",
            &[],
        )
        .await
        .unwrap();
    assert!(lead.get::<_, bool>(0), "the prerequisite applied");
    assert!(lead.get::<_, bool>(1), "the readable parked event was released");
    assert!(lead.get::<_, bool>(2), "no unreadable event applied");
    let letters: Vec<(Uuid, String, Vec<u8>)> = client
        .query(
            "SELECT envelope_id, reason, body FROM dead_letters ORDER BY envelope_id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(letters.len(), 2);
    for (id, reason, body) in &letters {
        assert!(expected.contains(id));
        assert_eq!(reason, intake_store::PARKED_FORMAT);
        let original = if *id == future.id { &future } else { &garbled };
        assert_eq!(
            intake_it::open_body(&id.to_string(), body),
            original.body.as_ref(),
            "the body is kept for replay"
        );
    }
    let outcomes: Vec<(Uuid, String)> = client
        .query("SELECT envelope_id, outcome FROM inbox", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for (id, outcome) in outcomes {
        let expected_outcome = if id == good.id {
            "released"
        } else if id == enriched.id {
            "applied"
        } else {
            "dead_lettered"
        };
        assert_eq!(outcome, expected_outcome, "{id}");
    }
    let parked: i64 = client
        .query_one("SELECT count(*) FROM parked_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(parked, 0);
    db.drop_database().await;
}
