//! Field classes, per provider: every declared optional field that is blank reads as absent; one
//! holding an unreadable value reads as absent too, the event still decodes and a field issue
//! (declared pointer, expected type) is noted; values readable in another JSON type are read; each
//! strict key missing or invalid is the right decode error.

use std::collections::BTreeSet;

use bytes::Bytes;
use chrono::{NaiveDate, TimeZone, Utc};
use intake_core::{Envelope, Provider};
use serde_json::{Value, json};

use crate::fixtures::*;
use crate::*;

fn envelope(provider: Provider, body: &Value) -> Envelope {
    let headers = vec![("webhook-id".to_owned(), "msg_1".to_owned())];
    let body = Bytes::from(serde_json::to_vec(body).expect("json"));
    let mut e = Envelope::new("ep", provider, headers, body);
    e.received_at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    e
}

fn decode_value(provider: Provider, body: &Value) -> Result<DecodedEvent, DecodeError> {
    decode(&envelope(provider, body)).map(|mut events| events.remove(0))
}

fn parse(body: &str) -> Value {
    serde_json::from_str(body).expect("fixture")
}

fn issue(pointer: &str, expected: Expected) -> FieldIssue {
    FieldIssue {
        pointer: pointer.into(),
        expected,
    }
}

/// Every concrete pointer in `value` matching `pattern` (`*` = any key or index); with `absent`,
/// instead, where the field would go in every object matching its parent.
fn occurrences(value: &Value, pattern: &str, absent: bool) -> BTreeSet<String> {
    fn walk(v: &Value, segments: &[&str], at: String, out: &mut BTreeSet<String>) {
        let Some((first, rest)) = segments.split_first() else {
            out.insert(at);
            return;
        };
        let children: Vec<(String, &Value)> = match v {
            Value::Object(m) => m.iter().map(|(k, c)| (k.clone(), c)).collect(),
            Value::Array(a) => a.iter().enumerate().map(|(i, c)| (i.to_string(), c)).collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            if *first == "*" || *first == key {
                walk(child, rest, format!("{at}/{key}"), out);
            }
        }
    }
    let segments: Vec<&str> = pattern.split('/').skip(1).collect();
    let mut out = BTreeSet::new();
    if !absent {
        walk(value, &segments, String::new(), &mut out);
    } else if let Some((last, parent)) = segments.split_last()
        && *last != "*"
    {
        let mut parents = BTreeSet::new();
        walk(value, parent, String::new(), &mut parents);
        for p in parents {
            if value.pointer(&p).is_some_and(Value::is_object) {
                out.insert(format!("{p}/{last}"));
            }
        }
    }
    out
}

fn split(pointer: &str) -> (&str, &str) {
    pointer.rsplit_once('/').expect("pointer")
}

fn with(body: &Value, pointer: &str, new: Option<Value>) -> Value {
    let mut body = body.clone();
    let (parent, key) = split(pointer);
    match body.pointer_mut(parent).expect("parent") {
        Value::Object(m) => match new {
            Some(v) => {
                m.insert(key.to_owned(), v);
            }
            None => {
                m.remove(key);
            }
        },
        Value::Array(a) => {
            let i: usize = key.parse().expect("index");
            match new {
                Some(v) => a[i] = v,
                None => {
                    a.remove(i);
                }
            }
        }
        _ => panic!("parent of {pointer} is not a container"),
    }
    body
}

/// Values no declared field of this type can read.
fn unreadable(expected: Expected) -> Vec<Value> {
    match expected {
        Expected::String => vec![json!(true), json!({"a": 1}), json!([1])],
        Expected::Id => vec![json!(7.5), json!(false), json!({"a": 1})],
        Expected::Boolean => vec![json!("maybe"), json!(1), json!([])],
        Expected::Integer => vec![json!("seven"), json!(7.5), json!(true)],
        Expected::Number => vec![json!("412,50"), json!(true), json!({})],
        Expected::Date => vec![json!("22/08/1959"), json!(19590822), json!(true)],
        Expected::UnixTime => vec![json!("yesterday"), json!(1.5), json!({})],
        Expected::Object => vec![json!("x"), json!(7), json!([])],
        Expected::Array => vec![json!("x"), json!(7), json!({})],
    }
}

/// Every pointer the spec names as strict.
fn strict_pointers(spec: &ProviderSpec) -> BTreeSet<&'static str> {
    let mut out = BTreeSet::new();
    if let TypeSource::Field(p) = spec.event_type {
        out.insert(p);
    }
    out.extend(spec.event_id);
    if let TimeSource::Field { pointer, .. } = spec.occurred_at {
        out.insert(pointer);
    }
    match spec.dedupe {
        DedupeRecipe::HashOf(parts) => out.extend(parts.iter().flat_map(|p| p.iter().copied())),
        DedupeRecipe::Field(p) => {
            out.insert(p);
        }
        _ => {}
    }
    for event in spec.events {
        for (_, source) in event.entity {
            if let IdSource::Field(p) = source {
                out.insert(p);
            }
        }
        out.extend(event.requires.iter().flat_map(|r| r.iter().copied()));
    }
    out
}

/// The event without what legitimately differs between bodies: the dedupe key (it may hash the
/// body) and Spark360's lead object, kept as sent.
fn decoded_as(e: &DecodedEvent) -> (EntityRef, String, Ordering, Value) {
    let mut effect = serde_json::to_value(&e.effect).expect("serialize");
    if let Effect::Lead(_) = e.effect {
        effect.as_object_mut().expect("object").remove("lead");
    }
    (e.entity.clone(), e.event_type.clone(), e.ordering.clone(), effect)
}

/// The property, for every declared optional field of `provider` at every place it occurs (or
/// could occur) in `bodies`: blank ≡ absent; unreadable ≡ absent plus its issue.
fn optional_fields_are_tolerant(provider: Provider, bodies: &[Value]) {
    let spec = spec(provider);
    let strict = strict_pointers(spec);
    assert!(!spec.fields.is_empty());
    for field in spec.fields {
        let mut covered = 0;
        // Where the examples hold the field; if none does, where it could be added.
        let absent = bodies
            .iter()
            .all(|b| occurrences(b, field.pointer, false).is_empty());
        for body in bodies {
            for at in occurrences(body, field.pointer, absent) {
                if strict.contains(at.as_str()) {
                    continue; // e.g. /policies/0/policy_id: the entity, strict
                }
                let Ok(absent) = decode_value(provider, &with(body, &at, None)) else {
                    continue; // a block holding a required key (the reward of a reward event)
                };
                covered += 1;
                for blank in [json!(null), json!(""), json!("  \t")] {
                    let e = decode_value(provider, &with(body, &at, Some(blank.clone())))
                        .unwrap_or_else(|err| panic!("{at} = {blank}: {err}"));
                    assert_eq!(decoded_as(&e), decoded_as(&absent), "{at} = {blank}");
                    assert_eq!(e.field_issues, absent.field_issues, "{at} = {blank}");
                }
                for wrong in unreadable(field.expected) {
                    let e = decode_value(provider, &with(body, &at, Some(wrong.clone())))
                        .unwrap_or_else(|err| panic!("{at} = {wrong}: {err}"));
                    assert_eq!(decoded_as(&e), decoded_as(&absent), "{at} = {wrong}");
                    let expected: BTreeSet<String> = absent
                        .field_issues
                        .iter()
                        .chain([&issue(field.pointer, field.expected)])
                        .map(|i| format!("{} {}", i.pointer, i.expected.as_str()))
                        .collect();
                    let got: BTreeSet<String> = e
                        .field_issues
                        .iter()
                        .map(|i| format!("{} {}", i.pointer, i.expected.as_str()))
                        .collect();
                    assert_eq!(got, expected, "{at} = {wrong}");
                    // Parked events carry their issues through JSON.
                    let json = serde_json::to_string(&e).expect("serialize");
                    assert_eq!(
                        serde_json::from_str::<DecodedEvent>(&json).expect("deserialize"),
                        e
                    );
                }
            }
        }
        assert!(
            covered > 0,
            "{} is never tested: add it to a test body",
            field.pointer
        );
    }
}

fn bodies(list: &[&str]) -> Vec<Value> {
    list.iter().map(|b| parse(b)).collect()
}

#[test]
fn spark_optional_fields_are_tolerant() {
    optional_fields_are_tolerant(Provider::Spark, &bodies(&[SPARK_CONTACT]));
}

#[test]
fn sparkloop_optional_fields_are_tolerant() {
    optional_fields_are_tolerant(
        Provider::SparkLoop,
        &bodies(&[
            SPARKLOOP_NEW_REFERRAL,
            SPARKLOOP_PARTNER_PENDING,
            SPARKLOOP_PARTNER_VERIFIED,
            SPARKLOOP_REWARD_UNLOCKED,
            SPARKLOOP_REWARD_REDEEMED,
        ]),
    );
}

#[test]
fn spark360_optional_fields_are_tolerant() {
    optional_fields_are_tolerant(
        Provider::Spark360,
        &bodies(&[
            SPARK360_ADDRESS_PREVIEW,
            SPARK360_ENRICHED,
            SPARK360_RENTAL_ALERT,
            SPARK360_CONTACT_REQUESTED,
            SPARK360_WIDGET_STATUS,
        ]),
    );
}

/// The off-exchange example with a second policy (the first one's id is the entity, strict).
fn healthsherpa_two_policies() -> Value {
    let mut body = parse(HEALTHSHERPA_OFF_EXCHANGE);
    let mut second = body["policies"][0].clone();
    second["policy_id"] = json!("pol_9002");
    body["policies"].as_array_mut().unwrap().push(second);
    body
}

#[test]
fn healthsherpa_optional_fields_are_tolerant() {
    let mut list = bodies(&[HEALTHSHERPA_OFF_EXCHANGE, HEALTHSHERPA_ON_EXCHANGE]);
    list.push(healthsherpa_two_policies());
    optional_fields_are_tolerant(Provider::HealthSherpa, &list);
}

fn effect_of<T>(
    provider: Provider,
    body: &Value,
    pick: impl Fn(Effect) -> Option<T>,
) -> (T, Vec<FieldIssue>) {
    let e = decode_value(provider, body).expect("decodes");
    (pick(e.effect).expect("effect kind"), e.field_issues)
}

fn hs(body: &Value) -> (Box<healthsherpa::PolicyEvent>, Vec<FieldIssue>) {
    effect_of(Provider::HealthSherpa, body, |e| match e {
        Effect::HealthSherpa(h) => Some(h),
        _ => None,
    })
}

#[test]
fn healthsherpa_reads_what_it_can() {
    // The case that lost every policy status: a member never removed, sent as "".
    let mut body = parse(HEALTHSHERPA_OFF_EXCHANGE);
    body["policies"][0]["members"][0]["removed_date"] = json!("");
    body["policies"][0]["gross_premium"] = json!("412.50");
    body["policies"][0]["members"][0]["effective_date"] = json!("2026-01-01T00:00:00-05:00");
    body["policy_aor_npn"] = json!(1234567);
    body["members"][0]["member_id"] = json!(1);
    body["policies"][0]["members"][0]["member_id"] = json!(1);
    let (h, issues) = hs(&body);
    assert_eq!(issues, vec![]);
    let p = &h.policies[0];
    assert_eq!(p.gross_premium, Some(412.5));
    assert_eq!(p.members[0].removed_date, None);
    assert_eq!(p.members[0].effective_date, NaiveDate::from_ymd_opt(2026, 1, 1));
    assert_eq!(p.members[0].member_id, "1");
    assert_eq!(h.members[0].member_id, "1");
    assert_eq!(h.policy_aor_npn.as_deref(), Some("1234567"));

    // What cannot be read is left out and noted by its declared pointer, never its value.
    let mut body = healthsherpa_two_policies();
    body["policies"][1]["members"][0]["removed_date"] = json!("soon");
    body["policies"][1]["gross_premium"] = json!("four hundred");
    body["members"]
        .as_array_mut()
        .unwrap()
        .push(json!({"first_name": "No Id"}));
    body["members"]
        .as_array_mut()
        .unwrap()
        .push(json!("not a member"));
    let (h, issues) = hs(&body);
    assert_eq!(
        issues,
        vec![
            issue("/members/*", Expected::Object),
            issue("/members/*/member_id", Expected::Id),
            issue("/policies/*/gross_premium", Expected::Number),
            issue("/policies/*/members/*/removed_date", Expected::Date),
        ]
    );
    assert_eq!(h.members.len(), 1);
    assert_eq!(h.policies.len(), 2);
    assert_eq!(h.policies[1].gross_premium, None);
    assert_eq!(h.policies[1].members[0].removed_date, None);
    assert_eq!(h.policies[0].gross_premium, Some(412.5));
    let json = serde_json::to_string(&issues).unwrap();
    assert!(!json.contains("soon") && !json.contains("four") && !json.contains("No Id"));

    // A policy without its id (other than the first, which is the entity) is left out.
    let mut body = healthsherpa_two_policies();
    body["policies"][1]["policy_id"] = json!("");
    let (h, issues) = hs(&body);
    assert_eq!(h.policies.len(), 1);
    assert_eq!(issues, vec![issue("/policies/*/policy_id", Expected::Id)]);
}

#[test]
fn spark_reads_what_it_can() {
    let mut body = parse(SPARK_CONTACT);
    body["details"]["soa_is_signed"] = json!("true");
    body["details"]["mobile_phone"] = json!(2015555678_u64);
    body["details"]["external_id"] = json!(42);
    body["phi"]["has_lis"] = json!("false");
    body["phi"]["dob"] = json!("1959-08-22T00:00:00Z");
    body["phi"]["policies"]["active"]["policy_1"]["effective_date"] = json!("1999-01-10 00:00:00");
    let (c, issues) = effect_of(Provider::Spark, &body, |e| match e {
        Effect::SparkContact(c) => Some(c),
        _ => None,
    });
    assert_eq!(issues, vec![]);
    assert_eq!(c.details.soa_is_signed, Some(true));
    assert_eq!(c.details.mobile_phone.as_deref(), Some("2015555678"));
    assert_eq!(c.details.external_id.as_deref(), Some("42"));
    let phi = c.phi.as_ref().unwrap();
    assert_eq!(phi.has_lis, Some(false));
    assert_eq!(phi.dob, NaiveDate::from_ymd_opt(1959, 8, 22));
    assert_eq!(c.policies[0].effective_date, NaiveDate::from_ymd_opt(1999, 1, 10));

    // A policy slot that is not an object is left out; the others stay.
    body["phi"]["policies"]["active"]["policy_2"] = json!("cancelled");
    let (c, issues) = effect_of(Provider::Spark, &body, |e| match e {
        Effect::SparkContact(c) => Some(c),
        _ => None,
    });
    assert_eq!(issues, vec![issue("/phi/policies/*/*", Expected::Object)]);
    assert_eq!(c.policies.len(), 11);
}

#[test]
fn sparkloop_reads_what_it_can() {
    let mut body = parse(SPARKLOOP_REWARD_REDEEMED);
    body["subscriber"]["tot_referrals"] = json!("4");
    body["subscriber"]["created_at"] = json!("1564403873");
    body["subscriber"]["referred"] = json!("true");
    body["reward"]["recurring"] = json!("false");
    body["referrals"] = json!(4.0);
    body["shipping_details"]["shipping_zipcode"] = json!(85351);
    let (l, issues) = effect_of(Provider::SparkLoop, &body, |e| match e {
        Effect::SparkLoop(l) => Some(l),
        _ => None,
    });
    assert_eq!(issues, vec![]);
    assert_eq!(l.subscriber.tot_referrals, Some(4));
    assert_eq!(l.subscriber.created_at, Utc.timestamp_opt(1564403873, 0).single());
    assert_eq!(l.subscriber.referred, Some(true));
    assert_eq!(l.reward.as_ref().unwrap().recurring, Some(false));
    assert_eq!(l.referrals, Some(4));
    assert_eq!(l.shipping.as_ref().unwrap().zipcode.as_deref(), Some("85351"));

    // A referrer without an id is left out (and noted); the referral is still recorded.
    let mut body = parse(SPARKLOOP_NEW_REFERRAL);
    body["referrer"]["id"] = json!(null);
    let (l, issues) = effect_of(Provider::SparkLoop, &body, |e| match e {
        Effect::SparkLoop(l) => Some(l),
        _ => None,
    });
    assert!(l.referrer.is_none());
    assert_eq!(issues, vec![issue("/referrer/id", Expected::Id)]);
}

#[test]
fn spark360_reads_what_it_can() {
    let mut body = parse(SPARK360_ENRICHED);
    body["lead"]["owner_occupied"] = json!("false");
    body["source_tracking"]["source_code"] = json!(3);
    let (l, issues) = effect_of(Provider::Spark360, &body, |e| match e {
        Effect::Lead(l) => Some(l),
        _ => None,
    });
    assert_eq!(issues, vec![]);
    assert_eq!(l.owner_occupied, Some(false));
    assert_eq!(
        l.source_tracking.as_ref().unwrap().source_code.as_deref(),
        Some("3")
    );
}

/// `body` with `pointer` set to `value` (`None`: removed) must fail with `error`.
fn strict(provider: Provider, body: &str, pointer: &str, value: Option<Value>, error: &str) {
    let e = decode_value(provider, &with(&parse(body), pointer, value.clone()))
        .expect_err(&format!("{pointer} = {value:?} must not decode"));
    assert_eq!(e.to_string(), error, "{pointer} = {value:?}");
}

const MISSING: Option<Value> = None;

#[test]
fn spark_strict_keys() {
    let missing = "missing required field /details/id";
    strict(Provider::Spark, SPARK_CONTACT, "/details/id", MISSING, missing);
    strict(
        Provider::Spark,
        SPARK_CONTACT,
        "/details/id",
        Some(json!(" ")),
        missing,
    );
    let invalid = "field /details/id is not a valid id (string or integer)";
    strict(
        Provider::Spark,
        SPARK_CONTACT,
        "/details/id",
        Some(json!(12.5)),
        invalid,
    );
    strict(
        Provider::Spark,
        SPARK_CONTACT,
        "/details/id",
        Some(json!({})),
        invalid,
    );
}

#[test]
fn sparkloop_strict_keys() {
    let p = Provider::SparkLoop;
    strict(
        p,
        SPARKLOOP_NEW_REFERRAL,
        "/type",
        MISSING,
        "missing required field /type",
    );
    strict(
        p,
        SPARKLOOP_NEW_REFERRAL,
        "/type",
        Some(json!(5)),
        "field /type is not a valid string",
    );
    strict(
        p,
        SPARKLOOP_NEW_REFERRAL,
        "/type",
        Some(json!("new_thing")),
        "unknown sparkloop event type \"new_thing\"",
    );
    strict(
        p,
        SPARKLOOP_NEW_REFERRAL,
        "/subscriber/id",
        MISSING,
        "missing required field /subscriber/id",
    );
    strict(
        p,
        SPARKLOOP_NEW_REFERRAL,
        "/subscriber/id",
        Some(json!([])),
        "field /subscriber/id is not a valid id (string or integer)",
    );
    strict(
        p,
        SPARKLOOP_NEW_REFERRAL,
        "/campaign_id",
        MISSING,
        "missing required field /campaign_id or /campaign/id",
    );
    strict(
        p,
        SPARKLOOP_PARTNER_VERIFIED,
        "/campaign/id",
        Some(json!(true)),
        "field /campaign/id is not a valid id (string or integer)",
    );
    strict(
        p,
        SPARKLOOP_PARTNER_VERIFIED,
        "/subscriber/referral_status",
        Some(json!({})),
        "field /subscriber/referral_status is not a valid id (string or integer)",
    );
    for reward_event in [SPARKLOOP_REWARD_UNLOCKED, SPARKLOOP_REWARD_REDEEMED] {
        strict(
            p,
            reward_event,
            "/reward/id",
            MISSING,
            "missing required field /reward/id",
        );
        strict(
            p,
            reward_event,
            "/reward",
            Some(json!("x")),
            "missing required field /reward/id",
        );
        strict(
            p,
            reward_event,
            "/reward/id",
            Some(json!(1.5)),
            "field /reward/id is not a valid id (string or integer)",
        );
    }
}

#[test]
fn spark360_strict_keys() {
    let p = Provider::Spark360;
    strict(
        p,
        SPARK360_ENRICHED,
        "/event",
        MISSING,
        "missing required field /event",
    );
    strict(
        p,
        SPARK360_ENRICHED,
        "/lead/id",
        MISSING,
        "missing required field /lead/id",
    );
    strict(
        p,
        SPARK360_WIDGET_STATUS,
        "/widget/id",
        Some(json!("")),
        "missing required field /widget/id",
    );
    strict(
        p,
        SPARK360_ENRICHED,
        "/event_id",
        Some(json!({})),
        "field /event_id is not a valid id (string or integer)",
    );
    strict(
        p,
        SPARK360_ENRICHED,
        "/occurred_at",
        Some(json!("yesterday")),
        "field /occurred_at is not a valid timestamp (RFC 3339)",
    );
    // Both may be absent: the key is then a hash, the time the receipt time.
    let mut body = parse(SPARK360_ENRICHED);
    body.as_object_mut().unwrap().remove("event_id");
    body["occurred_at"] = json!(null);
    let e = decode_value(p, &body).expect("decodes");
    assert_eq!(e.dedupe_key.len(), 64);
    assert_eq!(e.occurred_at, Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap());
}

#[test]
fn healthsherpa_strict_keys() {
    let p = Provider::HealthSherpa;
    let off = HEALTHSHERPA_OFF_EXCHANGE;
    strict(
        p,
        off,
        "/event_type",
        MISSING,
        "missing required field /event_type",
    );
    strict(
        p,
        off,
        "/transaction_id",
        Some(json!("")),
        "missing required field /transaction_id",
    );
    strict(
        p,
        off,
        "/event_timestamp",
        MISSING,
        "missing required field /event_timestamp",
    );
    strict(
        p,
        off,
        "/event_timestamp",
        Some(json!("string")),
        "field /event_timestamp is not a valid timestamp (RFC 3339)",
    );
    strict(
        p,
        off,
        "/application_id",
        Some(json!([])),
        "field /application_id is not a valid id (string or integer)",
    );
    strict(
        p,
        HEALTHSHERPA_ON_EXCHANGE,
        "/external_id",
        MISSING,
        "missing required field /application_id or /external_id",
    );
    // A policy id is no longer a key (the application is the entity; each policy row orders
    // itself): an unreadable one leaves that policy out and notes it, the event still applies.
    let mut body = parse(off);
    body["policies"][0]["policy_id"] = json!(7.5);
    let event = decode_value(p, &body).expect("still decodes");
    assert!(
        event
            .field_issues
            .iter()
            .any(|i| i.pointer == "/policies/*/policy_id")
    );
}

#[test]
fn standard_strict_keys() {
    let e = decode(&Envelope::new(
        "ep",
        Provider::Standard,
        vec![],
        Bytes::from_static(b"{}"),
    ))
    .expect_err("no webhook-id");
    assert_eq!(e.to_string(), "missing required field header webhook-id");
    let e = decode_value(Provider::Standard, &json!({"timestamp": "soon"})).unwrap_err();
    assert_eq!(
        e.to_string(),
        "field /timestamp is not a valid timestamp (RFC 3339)"
    );
    assert!(spec(Provider::Standard).fields.is_empty());
}

#[test]
fn events_parked_before_field_issues_existed_still_read() {
    let e = decode_value(Provider::Spark360, &parse(SPARK360_RENTAL_ALERT)).unwrap();
    let mut json = serde_json::to_value(&e).unwrap();
    assert!(json.get("field_issues").is_none(), "none: not written");
    json.as_object_mut().unwrap().remove("field_issues");
    assert_eq!(serde_json::from_value::<DecodedEvent>(json).unwrap(), e);
}
