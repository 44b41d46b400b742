//! Strict keys, tolerant everything else — through RabbitMQ, the worker and Postgres, per
//! provider: a payload whose optional fields are blank, in another JSON type, or unreadable is
//! applied (domain row with the right values), its unreadable fields noted on its inbox row and
//! counted in `intake_worker_field_issues_total` by declared pointer and expected type (never the
//! value); a payload with a bad strict key is dead-lettered with a precise reason.

mod worker_support;

use std::net::SocketAddr;
use std::time::Duration;

use intake_core::Provider;
use intake_providers::fixtures;
use serde_json::{Value, json};
use worker_support::{RunningWorker, World};

const DEADLINE: Duration = Duration::from_secs(20);

fn fixture(body: &str) -> Value {
    serde_json::from_str(body).expect("fixture")
}

/// Sum of the `intake_worker_field_issues_total` samples for this provider and field.
async fn field_issues_counted(addr: SocketAddr, provider: &str, field: &str) -> f64 {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    let (provider, field) = (format!("provider=\"{provider}\""), format!("field=\"{field}\""));
    text.lines()
        .filter(|l| l.starts_with("intake_worker_field_issues_total{"))
        .filter(|l| l.contains(&provider) && l.contains(&field))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Publishes `odd` (must be applied) and `bad` (must be dead-lettered), waits for both, and checks
/// what is common to every provider: the inbox row's outcome and issues, the metric, the dead
/// letter's reason and error, and that no odd value appears in the notes.
struct Case<'a> {
    provider: Provider,
    odd: Value,
    /// Expected `inbox.field_issues`, sorted by pointer.
    issues: Value,
    /// Values in `odd` that must never be copied into a note.
    secrets: &'a [&'a str],
    bad: Value,
    reason: &'a str,
    error: &'a str,
}

async fn run(world: &World, worker: &RunningWorker, case: Case<'_>) {
    let odd = world
        .publish(case.provider, serde_json::to_vec(&case.odd).unwrap())
        .await;
    let bad = world
        .publish(case.provider, serde_json::to_vec(&case.bad).unwrap())
        .await;
    world
        .wait_count(
            &format!(
                "SELECT count(*) FROM inbox WHERE envelope_id = '{}' AND outcome = 'applied'",
                odd.id
            ),
            1,
            DEADLINE,
        )
        .await;
    world
        .wait_count(
            &format!(
                "SELECT count(*) FROM dead_letters WHERE envelope_id = '{}'",
                bad.id
            ),
            1,
            DEADLINE,
        )
        .await;
    let c = world.db.client().await;

    let row = c
        .query_one(
            "SELECT field_issues FROM inbox WHERE envelope_id = $1",
            &[&odd.id],
        )
        .await
        .unwrap();
    let noted: Option<Value> = row.get(0);
    assert_eq!(noted.as_ref(), Some(&case.issues));
    let text = noted.unwrap().to_string();
    for secret in case.secrets {
        assert!(!text.contains(secret), "{secret} copied into {text}");
    }

    let provider = case.provider.as_str();
    for issue in case.issues.as_array().unwrap() {
        let field = issue["pointer"].as_str().unwrap();
        let counted = intake_it::wait_until(DEADLINE, || async {
            field_issues_counted(worker.addr, provider, field).await == 1.0
        })
        .await;
        assert!(counted, "{provider} {field} counted once");
    }

    let row = c
        .query_one(
            "SELECT reason, last_error FROM dead_letters WHERE envelope_id = $1",
            &[&bad.id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), case.reason);
    assert_eq!(row.get::<_, String>(1), case.error);
    // The dead letter has no inbox row: it was never applied.
    assert_eq!(
        world
            .count(&format!(
                "SELECT count(*) FROM inbox WHERE envelope_id = '{}'",
                bad.id
            ))
            .await,
        0
    );
}

#[tokio::test]
async fn healthsherpa_status_is_applied_despite_odd_member_fields() {
    let world = World::new("w-fields-hs").await;
    let worker = world.start_worker(world.worker_config()).await;
    let mut odd = fixture(fixtures::HEALTHSHERPA_OFF_EXCHANGE);
    // A member who was never removed, as real senders write it.
    odd["policies"][0]["members"][0]["removed_date"] = json!("");
    odd["policies"][0]["gross_premium"] = json!("412.50");
    odd["policies"][0]["members"][0]["effective_date"] = json!("first of January");
    odd["members"][0]["date_of_birth"] = json!("22/08/1959");
    odd["members"][0]["middle_name"] = json!(null);
    let mut bad = fixture(fixtures::HEALTHSHERPA_OFF_EXCHANGE);
    bad["transaction_id"] = json!("txn_bad");
    bad["event_timestamp"] = json!("yesterday");
    run(
        &world,
        &worker,
        Case {
            provider: Provider::HealthSherpa,
            odd,
            issues: json!([
                {"pointer": "/members/*/date_of_birth", "expected": "date"},
                {"pointer": "/policies/*/members/*/effective_date", "expected": "date"},
            ]),
            secrets: &["first of January", "22/08/1959"],
            bad,
            reason: "schema_violation",
            error: "field /event_timestamp is not a valid timestamp (RFC 3339)",
        },
    )
    .await;

    let c = world.db.client().await;
    let p = c
        .query_one(
            "SELECT status, gross_premium, application_key FROM healthsherpa_policies WHERE policy_id = 'pol_9001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(p.get::<_, String>(0), "effectuated");
    assert_eq!(p.get::<_, f64>(1), 412.5);
    assert_eq!(p.get::<_, String>(2), "app_5512");
    let m = c
        .query_one(
            "SELECT effective_date, removed_date FROM healthsherpa_policy_members
             WHERE policy_id = 'pol_9001' AND member_id = 'mem_1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(m.get::<_, Option<chrono::NaiveDate>>(0), None);
    assert_eq!(m.get::<_, Option<chrono::NaiveDate>>(1), None);
    let m = c
        .query_one(
            "SELECT first_name, middle_name, date_of_birth FROM healthsherpa_members
             WHERE application_key = 'app_5512' AND member_id = 'mem_1'",
            &[],
        )
        .await
        .unwrap();
    let row = ["app_5512", "mem_1"];
    assert_eq!(
        intake_it::open_text(m.get(0), "healthsherpa_members.first_name", &row).as_deref(),
        Some("Anthony")
    );
    assert_eq!(m.get::<_, Option<Vec<u8>>>(1), None);
    assert_eq!(m.get::<_, Option<Vec<u8>>>(2), None);
    assert_eq!(
        world
            .count("SELECT count(*) FROM healthsherpa_status_history WHERE transaction_id = 'txn_7c1d2e3f'")
            .await,
        1
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn spark_contact_is_applied_despite_odd_fields() {
    let world = World::new("w-fields-spark").await;
    let worker = world.start_worker(world.worker_config()).await;
    let mut odd = fixture(fixtures::SPARK_CONTACT);
    odd["details"]["soa_is_signed"] = json!("true");
    odd["details"]["mobile_phone"] = json!(2015555678_u64);
    odd["details"]["email"] = json!("   ");
    odd["details"]["agent"] = json!("Dwight");
    odd["phi"]["dob"] = json!("");
    odd["phi"]["has_lis"] = json!("sometimes");
    let mut bad = fixture(fixtures::SPARK_CONTACT);
    bad["details"]["id"] = json!(12.5);
    run(
        &world,
        &worker,
        Case {
            provider: Provider::Spark,
            odd,
            issues: json!([
                {"pointer": "/details/agent", "expected": "object"},
                {"pointer": "/phi/has_lis", "expected": "boolean"},
            ]),
            secrets: &["Dwight", "sometimes"],
            bad,
            reason: "schema_violation",
            error: "field /details/id is not a valid id (string or integer)",
        },
    )
    .await;

    let c = world.db.client().await;
    let r = c
        .query_one(
            "SELECT first_name, soa_is_signed, mobile_phone, email, agent_full_name FROM contacts WHERE spark_id = '1234'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "Anthony");
    assert_eq!(r.get::<_, Option<bool>>(1), Some(true));
    assert_eq!(r.get::<_, String>(2), "2015555678");
    assert_eq!(r.get::<_, Option<String>>(3), None);
    assert_eq!(r.get::<_, Option<String>>(4), None);
    let r = c
        .query_one(
            "SELECT mbi, dob, has_lis FROM contact_phi WHERE spark_id = '1234'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        intake_it::open_text(r.get(0), "contact_phi.mbi", &["1234"]).as_deref(),
        Some("T0NY-S0PR4N0")
    );
    assert_eq!(r.get::<_, Option<Vec<u8>>>(1), None);
    assert_eq!(r.get::<_, Option<Vec<u8>>>(2), None);
    assert_eq!(
        world
            .count("SELECT count(*) FROM contact_policies WHERE spark_id = '1234'")
            .await,
        12
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn sparkloop_referral_is_applied_despite_odd_fields() {
    let world = World::new("w-fields-loop").await;
    let worker = world.start_worker(world.worker_config()).await;
    let mut odd = fixture(fixtures::SPARKLOOP_NEW_REFERRAL);
    odd["subscriber"]["tot_referrals"] = json!("3");
    odd["subscriber"]["created_at"] = json!("1564400550");
    odd["subscriber"]["name"] = json!("");
    odd["subscriber"]["referred"] = json!("perhaps");
    odd["referrer"]["email"] = json!({"address": "john.smith@email.com"});
    let mut bad = fixture(fixtures::SPARKLOOP_NEW_REFERRAL);
    bad.as_object_mut().unwrap().remove("campaign_id");
    run(
        &world,
        &worker,
        Case {
            provider: Provider::SparkLoop,
            odd,
            issues: json!([
                {"pointer": "/referrer/email", "expected": "string"},
                {"pointer": "/subscriber/referred", "expected": "boolean"},
            ]),
            secrets: &["perhaps", "john.smith"],
            bad,
            reason: "missing_field",
            error: "missing required field /campaign_id or /campaign/id",
        },
    )
    .await;

    let c = world.db.client().await;
    let r = c
        .query_one(
            "SELECT first_name, name, referred, tot_referrals, extract(epoch FROM created_at)::bigint, campaign_id
             FROM sparkloop_subscribers WHERE id = 'sub_hjdgc74u'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "John");
    assert_eq!(r.get::<_, Option<String>>(1), None);
    assert_eq!(r.get::<_, Option<bool>>(2), None);
    assert_eq!(r.get::<_, i32>(3), 3);
    assert_eq!(r.get::<_, i64>(4), 1564400550);
    assert_eq!(r.get::<_, String>(5), "MF6319db9890");
    let r = c
        .query_one(
            "SELECT name, email FROM sparkloop_subscribers WHERE id = 'sub_93ehus8h'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "John Smith");
    assert_eq!(r.get::<_, Option<String>>(1), None);
    let r = c
        .query_one(
            "SELECT referrer_id, status FROM sparkloop_referrals WHERE subscriber_id = 'sub_hjdgc74u'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "sub_93ehus8h");
    assert_eq!(r.get::<_, String>(1), "tracked");
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn spark360_lead_is_applied_despite_odd_fields() {
    let world = World::new("w-fields-360").await;
    let worker = world.start_worker(world.worker_config()).await;
    let mut odd = fixture(fixtures::SPARK360_ENRICHED);
    odd["lead"]["owner_occupied"] = json!("false");
    odd["lead"]["address"] = json!("14 Aspen Drive");
    odd["source_tracking"]["source_code"] = json!(3);
    odd["source_tracking"]["source_label"] = json!(null);
    let mut bad = fixture(fixtures::SPARK360_ENRICHED);
    bad["event_id"] = json!("evt_bad");
    bad["lead"].as_object_mut().unwrap().remove("id");
    run(
        &world,
        &worker,
        Case {
            provider: Provider::Spark360,
            odd,
            issues: json!([{"pointer": "/lead/address", "expected": "object"}]),
            // The lead object is kept as sent (enrichment); the note holds no value.
            secrets: &["Aspen"],
            bad,
            reason: "missing_field",
            error: "missing required field /lead/id",
        },
    )
    .await;

    let c = world.db.client().await;
    let r = c
        .query_one(
            "SELECT status, owner_occupied, address, source_tracking->>'source_code', source_tracking->>'source_label'
             FROM leads WHERE id = 'lead_7f3a9c'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "personal_info_and_estimate_provided");
    assert_eq!(r.get::<_, Option<bool>>(1), Some(false));
    assert_eq!(r.get::<_, Option<Value>>(2), None);
    assert_eq!(r.get::<_, String>(3), "3");
    assert_eq!(r.get::<_, Option<String>>(4), None);
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn readable_fields_leave_no_note() {
    let world = World::new("w-fields-none").await;
    let worker = world.start_worker(world.worker_config()).await;
    let e = world
        .publish(
            Provider::HealthSherpa,
            fixtures::HEALTHSHERPA_OFF_EXCHANGE.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count(
            &format!(
                "SELECT count(*) FROM inbox WHERE envelope_id = '{}' AND field_issues IS NULL",
                e.id
            ),
            1,
            DEADLINE,
        )
        .await;
    worker.stop().await.expect("stop");
    world.cleanup().await;
}
