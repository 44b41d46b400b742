//! Broker → worker → Postgres with real RabbitMQ and Postgres: every documented example lands in
//! the domain tables with the right values; duplicates across two workers, and fifty leads'
//! events shared by two workers ending as if applied one by one; parking and release; dead
//! letters for bad payloads and parking timeouts, with the queue flowing on behind them.

mod worker_support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use intake_core::{Envelope, Provider};
use intake_it::pg::fresh_database;
use intake_providers::fixtures;
use intake_store::{ApplyOptions, Store, StoreConfig};
use worker_support::World;

const DEADLINE: Duration = Duration::from_secs(20);

#[tokio::test]
async fn every_documented_example_reaches_the_domain_tables() {
    let world = World::new("w-examples").await;
    let worker = world.start_worker(world.worker_config()).await;
    // Published in document order; with concurrent processing a preview may land after
    // enriched (then it is `stale` and only fills gaps) and alerts may park first.
    for (provider, body) in fixtures::ALL {
        world.publish(*provider, body.as_bytes().to_vec()).await;
    }
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE outcome IN ('applied', 'released', 'stale')",
            13,
            DEADLINE,
        )
        .await;
    let c = world.db.client().await;

    // Spark contact, with point of contact, agent, PHI and all 12 policies.
    let r = c
        .query_one(
            "SELECT first_name, last_name, preferred_name, email, external_id, soa_is_signed, veteran_status,
                    poc_full_name, poc_relationship, agent_full_name, agent_office_phone
             FROM contacts WHERE spark_id = '1234'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "Anthony");
    assert_eq!(r.get::<_, String>(1), "Soprano");
    assert_eq!(r.get::<_, String>(2), "Tony");
    assert_eq!(r.get::<_, String>(3), "tony@baronesanitation.com");
    assert_eq!(r.get::<_, String>(4), "M4D0N");
    assert!(r.get::<_, bool>(5));
    assert_eq!(r.get::<_, String>(6), "Not a veteran");
    assert_eq!(r.get::<_, String>(7), "Carmela Soprano");
    assert_eq!(r.get::<_, String>(8), "Spouse");
    assert_eq!(r.get::<_, String>(9), "Dwight Harris");
    assert_eq!(r.get::<_, String>(10), "201-555-5555");
    let r = c
        .query_one(
            "SELECT mbi, has_lis, drug_subsidy, dob::text FROM contact_phi WHERE spark_id = '1234'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "T0NY-S0PR4N0");
    assert!(r.get::<_, bool>(1));
    assert_eq!(r.get::<_, String>(2), "ZERO");
    assert_eq!(r.get::<_, String>(3), "1959-08-22");
    let r = c
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE category = 'plan_exit'), min(carrier), min(effective_date)::text
             FROM contact_policies WHERE spark_id = '1234'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, i64>(0), 12);
    assert_eq!(r.get::<_, i64>(1), 4);
    assert_eq!(r.get::<_, String>(2), "UnitedHealthcare");
    assert_eq!(r.get::<_, String>(3), "1999-01-10");
    assert_eq!(
        world
            .count("SELECT count(*) FROM outbox WHERE contact_id = '1234'")
            .await,
        1
    );

    // SparkLoop: subscribers, referrer, referrals, reward unlocked and redeemed with shipping.
    let r = c
        .query_one(
            "SELECT email, referral_code, tot_referrals FROM sparkloop_subscribers WHERE id = 'sub_93ehus8h'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "john.smith@email.com");
    assert_eq!(r.get::<_, String>(1), "f9464199");
    assert_eq!(r.get::<_, i32>(2), 4);
    let r = c
        .query_one(
            "SELECT referrer_id, status FROM sparkloop_referrals WHERE subscriber_id = 'sub_hjdgc74u'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "sub_93ehus8h");
    assert_eq!(r.get::<_, String>(1), "tracked");
    let r = c
        .query_one(
            "SELECT status, partner_id, partner_name FROM sparkloop_referrals WHERE subscriber_id = 'sub_042448acb02a'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "verified");
    assert_eq!(r.get::<_, String>(1), "partner_0a8a45c403f8");
    assert_eq!(r.get::<_, String>(2), "Jason Resnickss");
    let r = c
        .query_one(
            "SELECT reward_name, coupon_code, unlocked_at IS NOT NULL, redeemed_at IS NOT NULL, variant_sku,
                    shipping_address_1, shipping_zipcode, shipping_address_2 IS NULL
             FROM sparkloop_rewards WHERE subscriber_id = 'sub_hjdgc74u' AND reward_id = 'reward_cdebf4f013'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        r.get::<_, String>(0),
        "2018 Private Report: State of the Ecommerce"
    );
    assert_eq!(r.get::<_, String>(1), "9wusha0");
    assert!(r.get::<_, bool>(2) && r.get::<_, bool>(3));
    assert_eq!(r.get::<_, String>(4), "t_shirt_xxl");
    assert_eq!(r.get::<_, String>(5), "7838 Pearl Drive");
    assert_eq!(r.get::<_, String>(6), "85351");
    assert!(r.get::<_, bool>(7));

    // Spark360: the lead with everything, the widget.
    let r = c
        .query_one(
            "SELECT status, address->>'zip', owner_occupied, enrichment->'roof_estimate'->>'squares',
                    rental_alert IS NOT NULL, contact_request->'contact'->>'preferred_method',
                    source_tracking->>'source_label'
             FROM leads WHERE id = 'lead_7f3a9c'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "contact_info_provided");
    assert_eq!(r.get::<_, String>(1), "07006-1234");
    assert!(!r.get::<_, bool>(2));
    assert_eq!(r.get::<_, String>(3), "32");
    assert!(r.get::<_, bool>(4));
    assert_eq!(r.get::<_, String>(5), "phone");
    assert_eq!(r.get::<_, String>(6), "Instagram");
    let status: String = c
        .query_one("SELECT status FROM widgets WHERE id = 'wgt_02'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "active");

    // HealthSherpa off- and on-exchange.
    let r = c
        .query_one(
            "SELECT status, plan_hios_id, gross_premium, agent_npn, effective_date::text, application_key
             FROM healthsherpa_policies WHERE policy_id = 'pol_9001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "effectuated");
    assert_eq!(r.get::<_, String>(1), "12345NJ0010001");
    assert_eq!(r.get::<_, f64>(2), 412.5);
    assert_eq!(r.get::<_, String>(3), "1234567");
    assert_eq!(r.get::<_, String>(4), "2026-01-01");
    assert_eq!(r.get::<_, String>(5), "app_5512");
    let dob: String = c
        .query_one(
            "SELECT date_of_birth::text FROM healthsherpa_members WHERE member_id = 'mem_1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dob, "1959-08-22");
    let r = c
        .query_one(
            "SELECT last_event_type, policy_status, external_id FROM healthsherpa_applications
             WHERE application_key = 'ext_ON_42'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, String>(0), "submission");
    assert_eq!(r.get::<_, String>(1), "pending_effectuation");
    assert_eq!(r.get::<_, String>(2), "ext_ON_42");
    assert_eq!(
        world
            .count("SELECT count(*) FROM healthsherpa_status_history")
            .await,
        2
    );
    assert_eq!(world.count("SELECT count(*) FROM raw_events").await, 13);
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);

    worker.stop().await.expect("clean stop");
    world.cleanup().await;
}

#[tokio::test]
async fn the_same_webhook_fifty_times_on_two_workers_has_one_effect() {
    let world = World::new("w-dupes").await;
    let (one, by_one) = world.start_counting_worker().await;
    let (two, by_two) = world.start_counting_worker().await;
    // Both consume before anything is published, so the broker shares the copies between them.
    world.wait_consumers(Provider::Spark, 2, DEADLINE).await;
    let publishes =
        (0..50).map(|_| world.publish(Provider::Spark, fixtures::SPARK_CONTACT.as_bytes().to_vec()));
    futures_util::future::join_all(publishes).await;
    // Fifty envelopes of one body (a provider retrying): the first applied, every other one a
    // duplicate of the contact's current snapshot (each its own inbox row).
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE outcome = 'duplicate'",
            49,
            DEADLINE,
        )
        .await;
    assert_eq!(world.count("SELECT count(*) FROM inbox").await, 50);
    assert_eq!(world.count("SELECT count(*) FROM contacts").await, 1);
    assert_eq!(world.count("SELECT count(*) FROM contact_policies").await, 12);
    assert_eq!(world.count("SELECT count(*) FROM outbox").await, 1);
    one.stop().await.expect("stop");
    two.stop().await.expect("stop");
    let (by_one, by_two) = (by_one.load(Ordering::SeqCst), by_two.load(Ordering::SeqCst));
    eprintln!("copies handled: {by_one} + {by_two}");
    assert_eq!(by_one + by_two, 50, "each copy handled once");
    assert!(
        by_one > 0 && by_two > 0,
        "both workers took copies ({by_one} and {by_two})"
    );
    assert_eq!(
        world
            .probe
            .count(&world.topology.provider_queue(Provider::Spark))
            .await,
        0
    );
    world.cleanup().await;
}

/// The four Spark360 events of a lead, as the 24-orders store test uses them, for lead `n`.
fn spark360_lead_events(n: usize) -> [String; 4] {
    [
        fixtures::SPARK360_ADDRESS_PREVIEW,
        fixtures::SPARK360_ENRICHED,
        fixtures::SPARK360_RENTAL_ALERT,
        fixtures::SPARK360_CONTACT_REQUESTED,
    ]
    .map(|body| {
        body.replace("lead_7f3a9c", &format!("lead_c{n:02}"))
            .replace("evt_01HX", &format!("evt_c{n:02}_"))
    })
}

/// Every lead row but its `updated_at` (the time of the last write, which no two runs share).
async fn leads(client: &tokio_postgres::Client) -> Vec<(String, String)> {
    client
        .query(
            "SELECT id, (to_jsonb(l) - 'updated_at')::text FROM leads l ORDER BY id",
            &[],
        )
        .await
        .expect("leads")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn fifty_leads_published_at_once_to_two_workers_end_as_if_applied_one_by_one() {
    const LEADS: usize = 50;
    // The sequential result: the same bodies applied one by one with `Store::apply`, in the
    // providers' order, in a database of their own.
    let reference = fresh_database("w-s360-seq").await;
    let store = Store::new(&StoreConfig::new(
        reference.url.clone(),
        2,
        Duration::from_secs(5),
    ))
    .expect("store");
    store.migrate().await.expect("migrate");
    for n in 0..LEADS {
        for body in spark360_lead_events(n) {
            let envelope = Envelope::new("ep-test", Provider::Spark360, vec![], body.into());
            for event in intake_providers::decode(&envelope).expect("decodes") {
                store
                    .apply(&envelope, &event, ApplyOptions::default())
                    .await
                    .expect("applies");
            }
        }
    }
    let expected = leads(&reference.client().await).await;
    assert_eq!(expected.len(), LEADS);
    let complete = reference
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM leads WHERE status = 'contact_info_provided' AND enrichment IS NOT NULL
               AND rental_alert IS NOT NULL AND contact_request IS NOT NULL AND address->>'zip' = '07006-1234'",
            &[],
        )
        .await
        .expect("count")
        .get::<_, i64>(0);
    assert_eq!(
        complete, LEADS as i64,
        "the sequential result is the complete lead"
    );

    // Concurrently: two workers consuming before anything is published, then all 200 events
    // published at once, each lead's four in a different order.
    let world = World::new("w-s360-conc").await;
    let (one, by_one) = world.start_counting_worker().await;
    let (two, by_two) = world.start_counting_worker().await;
    world.wait_consumers(Provider::Spark360, 2, DEADLINE).await;
    let orders = [
        [0, 1, 2, 3],
        [3, 2, 1, 0],
        [2, 3, 0, 1],
        [1, 0, 3, 2],
        [3, 0, 2, 1],
        [2, 1, 3, 0],
    ];
    let bodies: Vec<String> = (0..LEADS)
        .flat_map(|n| {
            let events = spark360_lead_events(n);
            orders[n % orders.len()].map(|i| events[i].clone())
        })
        .collect();
    futures_util::future::join_all(bodies.into_iter().map(|b| world.publish(Provider::Spark360, b))).await;
    let events = (4 * LEADS) as i64;
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE outcome <> 'parked'",
            events,
            DEADLINE,
        )
        .await;
    one.stop().await.expect("stop");
    two.stop().await.expect("stop");

    let client = world.db.client().await;
    assert_eq!(
        leads(&client).await,
        expected,
        "every lead as the sequential result"
    );
    assert_eq!(world.count("SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);
    let (by_one, by_two) = (by_one.load(Ordering::SeqCst), by_two.load(Ordering::SeqCst));
    assert_eq!(by_one + by_two, 4 * LEADS, "each event handled once");
    assert!(
        by_one > 0 && by_two > 0,
        "both workers took events ({by_one} and {by_two})"
    );
    let released = world
        .count("SELECT count(*) FROM inbox WHERE outcome = 'released'")
        .await;
    // 33 of the 50 leads had an event published before the `lead.enriched` it waits for.
    assert!(
        released > 0,
        "some events arrived before their prerequisite and were parked"
    );
    eprintln!("{by_one} + {by_two} events; {released} parked then released");
    world.cleanup().await;
    reference.drop_database().await;
}

#[tokio::test]
async fn contact_requested_before_enriched_is_parked_then_released() {
    let world = World::new("w-park").await;
    let worker = world.start_worker(world.worker_config()).await;
    world
        .publish(
            Provider::Spark360,
            fixtures::SPARK360_CONTACT_REQUESTED.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count("SELECT count(*) FROM inbox WHERE outcome = 'parked'", 1, DEADLINE)
        .await;
    assert_eq!(world.count("SELECT count(*) FROM parked_events").await, 1);
    assert_eq!(world.count("SELECT count(*) FROM leads").await, 0);
    world
        .publish(
            Provider::Spark360,
            fixtures::SPARK360_ENRICHED.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE outcome = 'released'",
            1,
            DEADLINE,
        )
        .await;
    assert_eq!(world.count("SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(
        world.count("SELECT count(*) FROM leads WHERE status = 'contact_info_provided' AND contact_request IS NOT NULL").await,
        1
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn bad_payloads_are_dead_lettered_and_the_queue_flows_on() {
    let world = World::new("w-dead").await;
    let worker = world.start_worker(world.worker_config()).await;
    let malformed = world
        .publish(Provider::SparkLoop, b"{\"type\": \"new_referral\", ".to_vec())
        .await;
    let unknown = world
        .publish(
            Provider::SparkLoop,
            fixtures::SPARKLOOP_REWARD_UNLOCKED.replace("reward_unlocked", "reward_exploded"),
        )
        .await;
    let good = world
        .publish(
            Provider::SparkLoop,
            fixtures::SPARKLOOP_REWARD_UNLOCKED.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count("SELECT count(*) FROM dead_letters", 2, DEADLINE)
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM inbox WHERE outcome = 'applied'",
            1,
            DEADLINE,
        )
        .await;
    let c = world.db.client().await;
    let rows = c
        .query(
            "SELECT envelope_id, reason, last_error, attempts, body FROM dead_letters ORDER BY id",
            &[],
        )
        .await
        .unwrap();
    let by_id = |id: uuid::Uuid| {
        rows.iter()
            .find(|r| r.get::<_, uuid::Uuid>(0) == id)
            .expect("dead letter row")
    };
    let m = by_id(malformed.id);
    assert_eq!(m.get::<_, String>(1), "malformed_payload");
    assert!(m.get::<_, String>(2).starts_with("body is not valid JSON"));
    assert_eq!(m.get::<_, i32>(3), 1);
    assert_eq!(m.get::<_, Vec<u8>>(4), malformed.body.to_vec());
    let u = by_id(unknown.id);
    assert_eq!(u.get::<_, String>(1), "unknown_event_type");
    assert_eq!(
        u.get::<_, String>(2),
        "unknown sparkloop event type \"reward_exploded\""
    );
    assert!(!rows.iter().any(|r| r.get::<_, uuid::Uuid>(0) == good.id));
    // They went through the dead-letter queue (the recorder wrote the rows from there, with the
    // queue to replay to) and nothing is left behind in it.
    let queues: Vec<Option<String>> = c
        .query("SELECT queue FROM dead_letters ORDER BY id", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    let sparkloop_queue = world.topology.provider_queue(Provider::SparkLoop);
    assert_eq!(queues, vec![Some(sparkloop_queue.clone()), Some(sparkloop_queue)]);
    assert!(intake_it::wait_until(DEADLINE, || async { world.dead_letter_queue_count().await == 0 }).await);
    assert_eq!(
        world
            .probe
            .count(&world.topology.provider_queue(Provider::SparkLoop))
            .await,
        0
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn a_parked_event_past_its_limit_is_dead_lettered_as_ordering_timeout() {
    let world = World::new("w-timeout").await;
    let mut config = world.worker_config();
    config.park_limit_secs = Some(1);
    let worker = world.start_worker(config).await;
    let parked = world
        .publish(
            Provider::Spark360,
            fixtures::SPARK360_RENTAL_ALERT.as_bytes().to_vec(),
        )
        .await;
    world
        .wait_count(
            "SELECT count(*) FROM dead_letters WHERE reason = 'ordering_timeout'",
            1,
            DEADLINE,
        )
        .await;
    assert_eq!(world.count("SELECT count(*) FROM parked_events").await, 0);
    assert_eq!(
        world
            .count("SELECT count(*) FROM inbox WHERE outcome = 'dead_lettered'")
            .await,
        1
    );
    let c = world.db.client().await;
    let r = c
        .query_one("SELECT envelope_id, event_type, body FROM dead_letters", &[])
        .await
        .unwrap();
    assert_eq!(r.get::<_, uuid::Uuid>(0), parked.id);
    assert_eq!(r.get::<_, String>(1), "lead.rental_alert");
    assert_eq!(r.get::<_, Vec<u8>>(2), parked.body.to_vec());
    // Published to the dead-letter queue as recorded: the recorder consumed it without a second row.
    assert!(intake_it::wait_until(DEADLINE, || async { world.dead_letter_queue_count().await == 0 }).await);
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 1);
    worker.stop().await.expect("stop");
    world.cleanup().await;
}
