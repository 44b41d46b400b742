//! Failures around the worker: Postgres unreachable (events retried through the delay tiers, then
//! applied once it is back), a worker that dies after committing but before acking (the
//! redelivery is a duplicate), and a graceful stop in the middle of a backlog (nothing lost).

mod worker_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use intake_core::Provider;
use intake_it::{TcpProxy, wait_until};
use intake_providers::fixtures;
use intake_worker::Hooks;
use worker_support::{World, events_with_outcome};

const DEADLINE: Duration = Duration::from_secs(30);

fn contact(id: usize) -> Vec<u8> {
    fixtures::SPARK_CONTACT
        .replacen("\"id\": 1234,", &format!("\"id\": {id},"), 1)
        .into_bytes()
}

#[tokio::test]
async fn events_are_retried_while_postgres_is_cut_and_applied_once_it_is_back() {
    let world = World::new("w-pgcut").await;
    let proxy = TcpProxy::start("127.0.0.1:5432".parse().unwrap())
        .await
        .expect("proxy");
    let mut config = world.worker_config();
    config.database_url = world.db.url_via(proxy.addr()).into();
    config.keys = intake_it::test_key_settings();
    let worker = world.start_worker(config).await;
    world.publish(Provider::Spark, contact(1)).await;
    world
        .wait_count("SELECT count(*) FROM contacts", 1, DEADLINE)
        .await;

    proxy.cut();
    for id in 2..=21 {
        world.publish(Provider::Spark, contact(id)).await;
    }
    assert!(
        wait_until(DEADLINE, || async {
            events_with_outcome(worker.addr, "retried").await >= 20.0
        })
        .await,
        "events were retried while the database was unreachable"
    );
    assert_eq!(
        world.count("SELECT count(*) FROM contacts").await,
        1,
        "nothing applied during the cut"
    );
    proxy.restore();

    world
        .wait_count("SELECT count(*) FROM contacts", 21, DEADLINE)
        .await;
    assert_eq!(world.count("SELECT count(*) FROM inbox").await, 21);
    assert_eq!(
        world
            .count("SELECT COALESCE(sum(duplicates), 0)::bigint FROM inbox")
            .await,
        0
    );
    assert_eq!(world.count("SELECT count(*) FROM outbox").await, 21);
    assert_eq!(world.count("SELECT count(*) FROM dead_letters").await, 0);
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn a_worker_cut_off_after_commit_before_ack_sees_the_redelivery_as_a_duplicate() {
    let world = World::new("w-noack").await;
    let proxy = Arc::new(
        TcpProxy::start("127.0.0.1:5672".parse().unwrap())
            .await
            .expect("proxy"),
    );
    let mut config = world.worker_config();
    config.broker.amqp_url = format!("amqp://guest:guest@{}/%2f", proxy.addr()).into();
    let fired = Arc::new(AtomicBool::new(false));
    let hooks = Hooks {
        after_commit: Some({
            let (proxy, fired) = (proxy.clone(), fired.clone());
            // The first commit loses its broker connection before the ack can be sent.
            Arc::new(move |_: &[&intake_core::Envelope]| {
                if !fired.swap(true, Ordering::SeqCst) {
                    proxy.cut();
                }
            })
        }),
        ..Hooks::default()
    };
    let worker = world.start_worker_with(config, hooks).await;
    world.publish(Provider::Spark, contact(7)).await;
    assert!(wait_until(DEADLINE, || async { fired.load(Ordering::SeqCst) }).await);
    proxy.restore();

    world
        .wait_count(
            "SELECT COALESCE(sum(duplicates), 0)::bigint FROM inbox",
            1,
            DEADLINE,
        )
        .await;
    assert_eq!(world.count("SELECT count(*) FROM contacts").await, 1);
    assert_eq!(world.count("SELECT count(*) FROM outbox").await, 1);
    let queue = world.topology.provider_queue(Provider::Spark);
    assert!(wait_until(DEADLINE, || async { world.probe.count(&queue).await == 0 }).await);
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn a_graceful_stop_mid_backlog_loses_nothing() {
    let world = World::new("w-stop").await;
    for id in 0..300 {
        world.publish(Provider::Spark, contact(10_000 + id)).await;
    }
    let first = world.start_worker(world.worker_config()).await;
    world
        .wait_count("SELECT LEAST(count(*), 20) FROM inbox", 20, DEADLINE)
        .await;
    first.stop().await.expect("graceful stop");
    let done_by_first = world.count("SELECT count(*) FROM inbox").await;
    let second = world.start_worker(world.worker_config()).await;
    world
        .wait_count("SELECT count(*) FROM contacts", 300, DEADLINE)
        .await;
    assert_eq!(world.count("SELECT count(*) FROM inbox").await, 300);
    // Everything the first worker finished was acked: the second sees no duplicates.
    assert_eq!(
        world
            .count("SELECT COALESCE(sum(duplicates), 0)::bigint FROM inbox")
            .await,
        0,
        "first did {done_by_first}"
    );
    second.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn an_event_failing_transiently_every_time_is_dead_lettered_after_the_last_tier() {
    let world = World::new("w-exhaust").await;
    let store = intake_store::Store::new(&intake_store::StoreConfig::new(
        world.db.url.clone(),
        intake_it::test_keys(),
        1,
        Duration::from_secs(5),
    ))
    .expect("store");
    store.migrate().await.expect("migrate");
    // Contact 666 always hits a serialization failure (SQLSTATE 40001): transient, so retried.
    world
        .db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION always_conflict() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.spark_id = '666' THEN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER always_conflict BEFORE INSERT ON contacts
                 FOR EACH ROW EXECUTE FUNCTION always_conflict();",
        )
        .await
        .expect("trigger");
    let worker = world.start_worker(world.worker_config()).await;
    let doomed = world.publish(Provider::Spark, contact(666)).await;
    world.publish(Provider::Spark, contact(667)).await;
    world
        .wait_count(
            "SELECT count(*) FROM contacts WHERE spark_id = '667'",
            1,
            DEADLINE,
        )
        .await;
    world
        .wait_count("SELECT count(*) FROM dead_letters", 1, DEADLINE)
        .await;
    let r = world
        .db
        .client()
        .await
        .query_one(
            "SELECT envelope_id, reason, attempts, first_error, last_error, event_type FROM dead_letters",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(r.get::<_, uuid::Uuid>(0), doomed.id);
    assert_eq!(r.get::<_, String>(1), "retries_exhausted");
    // Five tiers, so six attempts in all.
    assert_eq!(r.get::<_, i32>(2), 6);
    assert_eq!(r.get::<_, String>(3), "database error SQLSTATE 40001");
    assert_eq!(r.get::<_, String>(4), "database error SQLSTATE 40001");
    assert_eq!(r.get::<_, String>(5), "contact.snapshot");
    // The row was written by the recorder from the dead-letter queue, which it left empty.
    assert!(wait_until(DEADLINE, || async { world.dead_letter_queue_count().await == 0 }).await);
    assert_eq!(
        world.count("SELECT count(*) FROM inbox").await,
        1,
        "the failed event left no inbox row"
    );
    worker.stop().await.expect("stop");
    world.cleanup().await;
}

#[tokio::test]
async fn a_panicking_handler_requeues_its_delivery_and_acks_keep_flowing() {
    let world = World::new("w-panic").await;
    let panicked = Arc::new(std::sync::Mutex::new(None));
    let hooks = Hooks {
        after_commit: Some({
            let panicked = panicked.clone();
            // The first committed batch's handler panics before its deliveries are settled.
            Arc::new(move |batch: &[&intake_core::Envelope]| {
                let mut first = panicked.lock().expect("lock");
                if first.is_none() {
                    *first = Some(batch.iter().map(|e| e.id).collect::<Vec<_>>());
                    drop(first);
                    panic!("simulated handler bug");
                }
            })
        }),
        ..Hooks::default()
    };
    let worker = world.start_worker_with(world.worker_config(), hooks).await;
    for i in 0..20 {
        world.publish(Provider::Spark, contact(100 + i)).await;
    }
    assert!(
        wait_until(DEADLINE, || async { panicked.lock().expect("lock").is_some() }).await,
        "a handler panicked"
    );
    let mut panicked = panicked
        .lock()
        .expect("lock")
        .clone()
        .expect("a handler panicked");
    panicked.sort();
    // The panicked batch's deliveries are judged again one by one: each is a duplicate (its
    // events committed before the panic); everything is applied once.
    world
        .wait_count(
            "SELECT COALESCE(sum(duplicates), 0)::bigint FROM inbox",
            panicked.len() as i64,
            DEADLINE,
        )
        .await;
    world
        .wait_count("SELECT count(*) FROM contacts", 20, DEADLINE)
        .await;
    // The duplicates are exactly the panicked batch's deliveries, not some other redelivery.
    let duplicated: Vec<uuid::Uuid> = world
        .db
        .client()
        .await
        .query(
            "SELECT envelope_id FROM inbox WHERE duplicates > 0 ORDER BY envelope_id",
            &[],
        )
        .await
        .expect("inbox")
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(duplicated, panicked);
    // Every delivery was acked (none held back behind the panicked one): after the worker stops,
    // nothing goes back to the queue.
    worker.stop().await.expect("stop");
    let queue = world.topology.provider_queue(Provider::Spark);
    assert_eq!(world.probe.count(&queue).await, 0, "all deliveries acked");
    world.cleanup().await;
}
