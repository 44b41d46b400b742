//! v2 OAuth mode against the fake HealthSherpa: a token that has expired is replaced before it
//! is used, and a 401 leads to exactly one token refresh and one retry of the request.

mod sync_support;

use sync_support::{DEADLINE, Mode, SyncWorld, spark_contact};

/// `(method, bearer)` of every request to a contacts path, in order.
async fn contact_calls(world: &SyncWorld) -> Vec<(String, Option<String>)> {
    world
        .hs
        .requests()
        .await
        .into_iter()
        .filter(|(_, path, _)| path.starts_with("/api/v2/contacts"))
        .map(|(m, _, bearer)| (m, bearer))
        .collect()
}

#[tokio::test]
async fn an_expired_token_is_refreshed_before_use() {
    let world = SyncWorld::new("s-expired", Mode::OAuth).await;
    // The first token is already expired when the next request needs one.
    world.hs.token_lifetimes(&[0]);
    let sync = world.start_sync(world.sync_config()).await;

    world
        .apply_contact(&spark_contact("801", "Mary", Some("Jackson"), "mary@example.com"))
        .await;
    world.wait_synced("801").await;
    world
        .apply_contact(&spark_contact("801", "Mary", Some("Winston"), "mary@example.com"))
        .await;
    let ok = intake_it::wait_until(DEADLINE, || async {
        world.hs.contacts().first().is_some_and(|c| c.writes == 2)
    })
    .await;
    assert!(ok, "the update arrived");
    world.wait_synced("801").await;

    assert_eq!(world.hs.issued_tokens(), ["tok-1", "tok-2"]);
    assert_eq!(
        contact_calls(&world).await,
        [
            ("POST".to_owned(), Some("tok-1".to_owned())),
            ("PATCH".to_owned(), Some("tok-2".to_owned())),
        ],
        "the update carried a fresh token, no request was refused"
    );
    assert_eq!(world.hs.contacts()[0].body["last_name"], "Winston");

    sync.stop().await;
    world.cleanup().await;
}

#[tokio::test]
async fn unauthorized_triggers_one_refresh_and_one_retry() {
    let world = SyncWorld::new("s-401", Mode::OAuth).await;
    // HealthSherpa revoked the first token it will issue.
    world.hs.revoke("tok-1");
    let sync = world.start_sync(world.sync_config()).await;

    world
        .apply_contact(&spark_contact(
            "802",
            "Dorothy",
            Some("Vaughan"),
            "dorothy@example.com",
        ))
        .await;
    let (id, _) = world.wait_synced("802").await;

    assert_eq!(world.hs.issued_tokens(), ["tok-1", "tok-2"], "one refresh");
    assert_eq!(
        contact_calls(&world).await,
        [
            ("POST".to_owned(), Some("tok-1".to_owned())),
            ("POST".to_owned(), Some("tok-2".to_owned())),
        ],
        "refused once, retried once with the new token"
    );
    let held = world.hs.contacts();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].id, id);
    assert_eq!(world.probe.count(&world.topology.dead_letter_queue()).await, 0);

    sync.stop().await;
    world.cleanup().await;
}
