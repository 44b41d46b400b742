//! Target `decode`: every provider's decoder (`intake_providers::decode`) on an envelope whose
//! body is the fuzz input, and the receiver's body check beside it.
//!
//! Oracles: no panic; the receiver's check (`check_body`) accepts exactly the bodies the
//! decoder's own parse accepts as an object, and refuses the others with the very error the
//! decoder gives (so nothing the receiver answers 200 fails in the worker for its JSON alone);
//! an event always has a dedupe key and an entity id; decoding is deterministic.
//!
//! Input: a provider selector byte, then the body.

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use intake_core::{Envelope, Provider};
use uuid::Uuid;

use crate::{Input, Seed};

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let provider = input.pick(&Provider::ALL);
    let body = input.rest();
    let envelope = envelope(provider, body);

    let decoded = intake_providers::decode(&envelope);
    let checked = intake_providers::check_body(provider, body);
    let parsed_object = serde_json::from_slice::<serde_json::Value>(body).is_ok_and(|v| v.is_object());
    assert_eq!(
        checked.is_ok(),
        parsed_object,
        "the receiver's body check disagrees with the decoder's parse: {checked:?}"
    );
    match (&checked, &decoded) {
        (Err(refused), Err(failed)) => assert_eq!(refused, failed, "same error in receiver and worker"),
        (Err(refused), Ok(_)) => panic!("decoded a body the receiver refuses ({refused})"),
        _ => {}
    }
    if let Ok(events) = &decoded {
        for event in events {
            assert!(!event.dedupe_key.is_empty(), "an event without a dedupe key");
            assert!(
                !event.entity.id.trim().is_empty(),
                "an event without an entity id"
            );
            assert!(!event.event_type.is_empty(), "an event without a type");
        }
        assert_eq!(
            &intake_providers::decode(&envelope),
            &decoded,
            "decoding is deterministic"
        );
    }
}

/// The envelope a receiver would have made: fixed id and time, the headers a Standard Webhooks
/// sender sends.
fn envelope(provider: Provider, body: &[u8]) -> Envelope {
    Envelope {
        id: Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001),
        endpoint: "fuzz".to_owned(),
        provider,
        received_at: Utc
            .with_ymd_and_hms(2026, 3, 1, 12, 0, 0)
            .single()
            .expect("valid time"),
        headers: vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("webhook-id".to_owned(), "msg_fuzz".to_owned()),
            ("webhook-timestamp".to_owned(), "1772366400".to_owned()),
        ],
        body: Bytes::copy_from_slice(body),
    }
}

/// A seed: `body` decoded as `provider`'s.
pub fn seed(provider: Provider, body: &[u8]) -> Vec<u8> {
    let index = Provider::ALL.iter().position(|p| *p == provider).unwrap_or(0);
    Seed::new().byte(index as u8).rest(body)
}
