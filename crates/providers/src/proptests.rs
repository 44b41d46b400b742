//! Properties of the decoder over generated JSON (proptest): every provider's decoder returns
//! events or a `DecodeError` for any JSON — objects shaped like its payloads, with every key it
//! reads holding any kind of value, and every document example with one value replaced — and
//! the receiver's body check agrees with it on what is a readable object.

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use intake_core::{Envelope, Provider};
use proptest::prelude::*;
use serde_json::{Map, Value};

use crate::{check_body, decode, fixtures};

/// Every object key of the document examples, so generated objects hit the paths the specs read.
fn keys() -> Vec<String> {
    fn walk(value: &Value, keys: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    keys.push(k.clone());
                    walk(v, keys);
                }
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, keys)),
            _ => {}
        }
    }
    let mut keys = vec!["event".to_owned(), "type".to_owned(), "event_type".to_owned()];
    for (_, body) in fixtures::ALL {
        walk(&serde_json::from_str(body).expect("fixture"), &mut keys);
    }
    keys.sort();
    keys.dedup();
    keys
}

/// Leaf values, biased to what the tolerant readers convert (numbers as text, dates, blanks).
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        prop::sample::select(vec![
            "",
            " ",
            "true",
            "false",
            "7",
            "7.0",
            "412.50",
            "-1",
            "1564400550",
            "2026-03-02",
            "2026-03-02T15:04:05Z",
            "2026-03-02 15:04:05",
            "9999-12-31T23:59:60Z",
            "null",
            "lead.enriched",
            "lead.contact_requested",
            "new_referral",
            "reward_unlocked",
            "submission",
            "sync",
            "verified",
            "pending",
        ])
        .prop_map(Value::from),
        "\\PC{0,12}".prop_map(Value::from),
    ]
}

fn json(keys: Vec<String>) -> impl Strategy<Value = Value> {
    leaf().prop_recursive(4, 48, 6, move |inner| {
        let key = prop_oneof![4 => prop::sample::select(keys.clone()), 1 => "[a-z_]{1,8}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..6)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn envelope(provider: Provider, body: &[u8]) -> Envelope {
    let mut e = Envelope::new(
        "ep",
        provider,
        vec![("webhook-id".into(), "msg_1".into())],
        Bytes::copy_from_slice(body),
    );
    e.received_at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    e
}

/// Decodes `body` as every provider's; checks the body check agrees and events are complete.
fn decode_everywhere(body: &[u8]) -> Result<(), TestCaseError> {
    for provider in Provider::ALL {
        let decoded = decode(&envelope(provider, body));
        let object = serde_json::from_slice::<Value>(body).is_ok_and(|v| v.is_object());
        prop_assert_eq!(check_body(provider, body).is_ok(), object);
        if let Ok(events) = decoded {
            for event in events {
                prop_assert!(!event.dedupe_key.is_empty());
                prop_assert!(!event.entity.id.trim().is_empty());
            }
        }
    }
    Ok(())
}

/// Replaces the value at the `pick`-th node (depth first) of `value` with `with`.
fn replace_nth(value: &mut Value, pick: &mut usize, with: &Value) -> bool {
    if *pick == 0 {
        *value = with.clone();
        return true;
    }
    *pick -= 1;
    match value {
        Value::Object(map) => map.values_mut().any(|v| replace_nth(v, pick, with)),
        Value::Array(items) => items.iter_mut().any(|v| replace_nth(v, pick, with)),
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn any_generated_json_decodes_or_fails_cleanly(value in json(keys())) {
        decode_everywhere(value.to_string().as_bytes())?;
    }

    #[test]
    fn an_example_with_any_one_value_replaced_decodes_or_fails_cleanly(
        example in 0..fixtures::ALL.len(),
        pick in 1usize..200,
        with in json(keys()),
    ) {
        let mut value: Value = serde_json::from_str(fixtures::ALL[example].1).expect("fixture");
        let mut n = pick;
        replace_nth(&mut value, &mut n, &with);
        decode_everywhere(value.to_string().as_bytes())?;
    }
}
