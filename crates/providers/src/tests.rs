//! Every documented example decodes to the right normalized event; bad payloads fail precisely
//! (field classes in detail: `field_tests.rs`).

use bytes::Bytes;
use chrono::{NaiveDate, TimeZone, Utc};
use intake_core::{Envelope, Provider};

use crate::fixtures::*;
use crate::*;

fn envelope(provider: Provider, body: &str) -> Envelope {
    let mut e = Envelope::new("ep", provider, vec![], Bytes::copy_from_slice(body.as_bytes()));
    e.received_at = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
    e
}

fn one(provider: Provider, body: &str) -> DecodedEvent {
    let mut events = decode(&envelope(provider, body)).expect("decodes");
    assert_eq!(events.len(), 1);
    events.remove(0)
}

fn date(y: i32, m: u32, d: u32) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m, d)
}

#[test]
fn every_example_decodes() {
    for (provider, body) in ALL {
        let events = decode(&envelope(*provider, body)).unwrap_or_else(|e| panic!("{provider}: {e}"));
        assert_eq!(events.len(), 1);
        // Parking needs the event to survive a round trip through JSON.
        let json = serde_json::to_string(&events[0]).expect("serialize");
        assert_eq!(
            serde_json::from_str::<DecodedEvent>(&json).expect("deserialize"),
            events[0]
        );
    }
}

#[test]
fn spark_contact_snapshot() {
    let e = one(Provider::Spark, SPARK_CONTACT);
    assert_eq!(e.event_type, "contact.snapshot");
    assert_eq!(
        e.entity,
        EntityRef {
            kind: EntityKind::Contact,
            id: "1234".into()
        }
    );
    // One key per envelope: the same body in a new envelope is judged against the contact's
    // current state by the ordering rule, not deduplicated by the inbox key.
    let env = envelope(Provider::Spark, SPARK_CONTACT);
    assert_eq!(decode(&env).unwrap()[0].dedupe_key, format!("1234:{}", env.id));
    assert_ne!(one(Provider::Spark, SPARK_CONTACT).dedupe_key, e.dedupe_key);
    assert_eq!(e.ordering, Ordering::NewestWins);
    assert_eq!(e.occurred_at, Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap());
    let Effect::SparkContact(c) = e.effect else {
        panic!("wrong effect")
    };
    assert_eq!(c.spark_id, "1234");
    assert_eq!(c.details.first_name.as_deref(), Some("Anthony"));
    assert_eq!(c.details.external_id.as_deref(), Some("M4D0N"));
    assert_eq!(c.details.soa_is_signed, Some(true));
    assert_eq!(
        c.point_of_contact
            .as_ref()
            .and_then(|p| p.relationship.as_deref()),
        Some("Spouse")
    );
    assert_eq!(
        c.agent.as_ref().and_then(|a| a.email.as_deref()),
        Some("dwight.harris@fbi.gov")
    );
    let phi = c.phi.as_ref().expect("phi");
    assert_eq!(phi.dob, date(1959, 8, 22));
    assert_eq!(phi.mbi.as_deref(), Some("T0NY-S0PR4N0"));
    assert_eq!(phi.has_lis, Some(true));
    assert_eq!(c.policies.len(), 12);
    for category in ["active", "pending", "plan_exit"] {
        assert_eq!(c.policies.iter().filter(|p| p.category == category).count(), 4);
    }
    let p = &c.policies[0];
    assert_eq!((p.category.as_str(), p.slot.as_str()), ("active", "policy_1"));
    assert_eq!(p.bid_id.as_deref(), Some("H8768-022"));
    assert_eq!(p.effective_date, date(1999, 1, 10));
}

#[test]
fn sparkloop_events() {
    let e = one(Provider::SparkLoop, SPARKLOOP_NEW_REFERRAL);
    assert_eq!(e.event_type, "new_referral");
    assert_eq!(
        e.entity,
        EntityRef {
            kind: EntityKind::Subscriber,
            id: "sub_hjdgc74u".into()
        }
    );
    let Effect::SparkLoop(l) = e.effect else {
        panic!("wrong effect")
    };
    assert_eq!(l.campaign_id, "MF6319db9890");
    assert_eq!(l.referrer.as_ref().map(|r| r.id.as_str()), Some("sub_93ehus8h"));
    assert_eq!(l.subscriber.created_at, Utc.timestamp_opt(1564400550, 0).single());

    let pending = one(Provider::SparkLoop, SPARKLOOP_PARTNER_PENDING);
    let verified = one(Provider::SparkLoop, SPARKLOOP_PARTNER_VERIFIED);
    // Same subscriber and campaign, different status: different events.
    assert_ne!(pending.dedupe_key, verified.dedupe_key);
    let Effect::SparkLoop(v) = verified.effect else {
        panic!("wrong effect")
    };
    assert_eq!(v.campaign_id, "partner_campaign_de9c1c7c7bbc");
    assert_eq!(v.subscriber.referral_status.as_deref(), Some("verified"));
    assert_eq!(v.partner_id.as_deref(), Some("partner_0a8a45c403f8"));

    let unlocked = one(Provider::SparkLoop, SPARKLOOP_REWARD_UNLOCKED);
    let Effect::SparkLoop(u) = unlocked.effect else {
        panic!("wrong effect")
    };
    assert_eq!(
        u.reward.as_ref().map(|r| r.id.as_str()),
        Some("reward_cdebf4f013")
    );
    assert_eq!(u.coupon_code.as_deref(), Some("9wusha0"));

    let redeemed = one(Provider::SparkLoop, SPARKLOOP_REWARD_REDEEMED);
    assert_ne!(redeemed.dedupe_key, unlocked.dedupe_key);
    let Effect::SparkLoop(r) = redeemed.effect else {
        panic!("wrong effect")
    };
    assert_eq!(r.reward_variant_sku.as_deref(), Some("t_shirt_xxl"));
    let s = r.shipping.as_ref().expect("shipping");
    assert_eq!(s.city.as_deref(), Some("Sun City"));
    assert_eq!(s.address_2, None);
}

#[test]
fn spark360_events_and_rules() {
    let e = one(Provider::Spark360, SPARK360_ADDRESS_PREVIEW);
    assert_eq!(
        e.entity,
        EntityRef {
            kind: EntityKind::Lead,
            id: "lead_7f3a9c".into()
        }
    );
    assert_eq!(e.dedupe_key, "evt_01HX0000000000000000000001");
    assert_eq!(e.occurred_at, Utc.with_ymd_and_hms(2026, 3, 2, 15, 4, 5).unwrap());
    assert_eq!(
        e.ordering,
        Ordering::FillOnlyAfter {
            superseded_by: "lead.enriched".into()
        }
    );
    assert_eq!(
        one(Provider::Spark360, SPARK360_ENRICHED).ordering,
        Ordering::Apply
    );
    for body in [SPARK360_RENTAL_ALERT, SPARK360_CONTACT_REQUESTED] {
        assert_eq!(
            one(Provider::Spark360, body).ordering,
            Ordering::ParkUntil {
                prerequisite: "lead.enriched".into(),
                limit_secs: 3600
            }
        );
    }
    let Effect::Lead(l) = one(Provider::Spark360, SPARK360_ENRICHED).effect else {
        panic!()
    };
    assert_eq!(l.owner_occupied, Some(false));
    assert_eq!(
        l.address.as_ref().and_then(|a| a["zip"].as_str()),
        Some("07006-1234")
    );
    assert_eq!(
        l.source_tracking.as_ref().and_then(|s| s.source_label.as_deref()),
        Some("Instagram")
    );
    let w = one(Provider::Spark360, SPARK360_WIDGET_STATUS);
    assert_eq!(
        w.entity,
        EntityRef {
            kind: EntityKind::Widget,
            id: "wgt_02".into()
        }
    );

    // Without an event id the key is a hash of (event, lead id, body).
    let no_id = SPARK360_ENRICHED.replace("\"event_id\": \"evt_01HX0000000000000000000002\",", "");
    let key = one(Provider::Spark360, &no_id).dedupe_key;
    assert_eq!(key.len(), 64);
    assert_eq!(one(Provider::Spark360, &no_id).dedupe_key, key);
}

#[test]
fn healthsherpa_examples() {
    let e = one(Provider::HealthSherpa, HEALTHSHERPA_OFF_EXCHANGE);
    assert_eq!(e.dedupe_key, "txn_7c1d2e3f");
    assert_eq!(
        e.entity,
        EntityRef {
            kind: EntityKind::Application,
            id: "app_5512".into()
        }
    );
    assert_eq!(e.event_type, "sync");
    assert_eq!(e.ordering, Ordering::Apply);
    assert_eq!(e.occurred_at, Utc.with_ymd_and_hms(2026, 2, 3, 14, 5, 6).unwrap());
    let Effect::HealthSherpa(h) = e.effect else {
        panic!()
    };
    assert_eq!(h.application_key, "app_5512");
    assert_eq!(h.members[0].date_of_birth, date(1959, 8, 22));
    assert_eq!(h.policies[0].gross_premium, Some(412.5));
    assert_eq!(h.policies[0].members[0].removed_date, None);
    assert_eq!(h.policies[0].agent_npn.as_deref(), Some("1234567"));

    let on = one(Provider::HealthSherpa, HEALTHSHERPA_ON_EXCHANGE);
    assert_eq!(
        on.entity,
        EntityRef {
            kind: EntityKind::Application,
            id: "ext_ON_42".into()
        }
    );
    assert_eq!(on.event_type, "submission");
}

fn fails(provider: Provider, body: &str) -> DecodeError {
    decode(&envelope(provider, body)).expect_err("must not decode")
}

#[test]
fn bad_payloads_fail_with_a_precise_reason_and_no_values() {
    assert!(matches!(
        fails(Provider::Spark, "{not json"),
        DecodeError::InvalidJson { line: 1, .. }
    ));
    for provider in Provider::ALL {
        assert_eq!(
            fails(provider, "[1]"),
            DecodeError::WrongKind {
                expected: crate::JsonKind::Object,
                found: crate::JsonKind::Array
            }
        );
        assert_eq!(
            fails(provider, "42").to_string(),
            "body is a JSON number, not a JSON object"
        );
    }
    let e = fails(Provider::Spark, r#"{"details": {"first_name": "Secret"}}"#);
    assert_eq!(e.to_string(), "missing required field /details/id");
    let e = fails(
        Provider::SparkLoop,
        &SPARKLOOP_NEW_REFERRAL.replace("new_referral", "new_thing"),
    );
    assert_eq!(e.to_string(), "unknown sparkloop event type \"new_thing\"");
    assert_eq!(e.reason(), "unknown_event_type");
    let e = fails(
        Provider::Spark360,
        r#"{"event": "lead.enriched: tony@example.com"}"#,
    );
    assert!(!e.to_string().contains("tony"), "{e}");
    let e = fails(Provider::Spark360, r#"{"event": "lead.enriched", "lead": {}}"#);
    assert_eq!(e.to_string(), "missing required field /lead/id");
    let e = fails(
        Provider::HealthSherpa,
        &HEALTHSHERPA_ON_EXCHANGE.replace("2026-01-15T09:30:00Z", "string"),
    );
    assert_eq!(
        e.to_string(),
        "field /event_timestamp is not a valid timestamp (RFC 3339)"
    );
    let e = fails(Provider::Standard, "{}");
    assert_eq!(e.to_string(), "missing required field header webhook-id");
}
