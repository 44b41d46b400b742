//! No duplicate after a crash at the worst moment: HealthSherpa created the contact, the sync
//! instance died before storing its id. The delivery goes back to the queue unacked, a *new*
//! instance gets it, searches by `external_id`, finds the contact and updates it; HealthSherpa
//! holds exactly one.

mod sync_support;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use intake_sync::Hooks;
use sync_support::{DEADLINE, Mode, SyncWorld, spark_contact};

/// What one instance did: creates answered by HealthSherpa, messages handled (contact, outcome).
#[derive(Default)]
struct Seen {
    creates: AtomicUsize,
    handled: Mutex<Vec<(String, &'static str)>>,
}

impl Seen {
    fn handled(&self) -> Vec<(String, &'static str)> {
        self.handled.lock().expect("lock").clone()
    }
}

/// Hooks recording into `seen`; with `freeze`, a create's handler never continues after
/// HealthSherpa answered (the instance is then killed by the test).
fn recording(seen: &Arc<Seen>, freeze: bool) -> Hooks {
    Hooks {
        after_create: Some(Arc::new({
            let seen = seen.clone();
            move |_contact: &str| -> Pin<Box<dyn Future<Output = ()> + Send>> {
                seen.creates.fetch_add(1, Ordering::SeqCst);
                if freeze {
                    Box::pin(std::future::pending())
                } else {
                    Box::pin(std::future::ready(()))
                }
            }
        })),
        after_message: Some(Arc::new({
            let seen = seen.clone();
            move |contact: &str, outcome| {
                seen.handled
                    .lock()
                    .expect("lock")
                    .push((contact.to_owned(), outcome));
            }
        })),
    }
}

#[tokio::test]
async fn crash_after_create_leaves_exactly_one_contact() {
    let world = SyncWorld::new("s-crash", Mode::ApiKey).await;
    let queue = world.topology.sync_queue();
    let (first_seen, second_seen) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    let first = world.start_crashable_sync(world.sync_config(), recording(&first_seen, true));

    world
        .apply_contact(&spark_contact("701", "Hedy", Some("Lamarr"), "hedy@example.com"))
        .await;
    let frozen = intake_it::wait_until(DEADLINE, || async {
        first_seen.creates.load(Ordering::SeqCst) > 0
    })
    .await;
    assert!(frozen, "HealthSherpa answered the create of the first instance");
    assert_eq!(world.hs.contacts().len(), 1, "HealthSherpa created it");
    let (id, _, seq) = world.sync_row("701").await.expect("create marker");
    assert_eq!((id, seq), (None, 0), "its id was not stored");
    assert_eq!(
        world.probe.count(&queue).await,
        0,
        "the delivery is held, unacked"
    );

    // Crash: the instance's tasks and connections vanish; the broker takes the delivery back.
    first.crash();
    world.wait_consumers(&queue, 0).await;
    let back = intake_it::wait_until(DEADLINE, || async { world.probe.count(&queue).await == 1 }).await;
    assert!(back, "the unacked delivery is ready in the queue again");

    let second = world
        .start_sync_with(world.sync_config(), recording(&second_seen, false))
        .await;
    let (id, _) = world.wait_synced("701").await;
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1, "exactly one contact in HealthSherpa");
    assert_eq!(held[0].id, id, "the found contact's id is stored");
    assert_eq!(held[0].writes, 2, "created once, then updated");
    assert_eq!(world.hs.count("POST").await, 1, "no second create");
    assert_eq!(world.hs.count("GET").await, 1, "searched by external_id first");
    // The redelivery was the second instance's: it updated; the first finished nothing.
    assert_eq!(second_seen.handled(), [("701".to_owned(), "updated")]);
    assert_eq!(second_seen.creates.load(Ordering::SeqCst), 0);
    assert!(first_seen.handled().is_empty());
    assert_eq!(first_seen.creates.load(Ordering::SeqCst), 1);

    second.stop().await;
    world.cleanup().await;
}
