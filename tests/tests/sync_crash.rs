//! No duplicate after a crash at the worst moment: HealthSherpa created the contact, the worker
//! died before storing its id. After a restart the redelivered change searches by `external_id`,
//! finds the contact and updates it; HealthSherpa holds exactly one.

mod sync_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use intake_sync::Hooks;
use sync_support::{DEADLINE, Mode, SyncWorld, spark_contact};

#[tokio::test]
async fn crash_after_create_leaves_exactly_one_contact() {
    let world = SyncWorld::new("s-crash", Mode::ApiKey).await;
    let crashes = Arc::new(AtomicUsize::new(0));
    let hooks = Hooks {
        after_create: Some(Arc::new({
            let crashes = crashes.clone();
            move |_contact: &str| {
                crashes.fetch_add(1, Ordering::SeqCst);
                // Unwinds out of the handler: nothing stored, nothing acked, lock connection closed.
                panic!("simulated crash after create");
            }
        })),
    };
    let first = world.start_sync_with(world.sync_config(), hooks).await;

    world
        .apply_contact(&spark_contact("701", "Hedy", Some("Lamarr"), "hedy@example.com"))
        .await;
    let crashed = intake_it::wait_until(DEADLINE, || async { crashes.load(Ordering::SeqCst) > 0 }).await;
    assert!(crashed, "the create was answered and the worker crashed");
    assert_eq!(world.hs.contacts().len(), 1, "HealthSherpa created it");
    let (id, _, seq) = world.sync_row("701").await.expect("create marker");
    assert_eq!((id, seq), (None, 0), "its id was not stored");
    // The crashed delivery is unacked: stopping the process hands it back to the broker.
    first.stop().await;

    let second = world.start_sync(world.sync_config()).await;
    let (id, _) = world.wait_synced("701").await;
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1, "exactly one contact in HealthSherpa");
    assert_eq!(held[0].id, id, "the found contact's id is stored");
    assert_eq!(held[0].writes, 2, "created once, then updated");
    assert_eq!(world.hs.count("POST").await, 1, "no second create");
    assert_eq!(world.hs.count("GET").await, 1, "searched by external_id first");
    assert_eq!(crashes.load(Ordering::SeqCst), 1);

    second.stop().await;
    world.cleanup().await;
}
