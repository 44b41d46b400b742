//! SparkLoop referral program events. Entity: the subscriber. A referral's status only moves
//! pending → verified (enforced when applied); `reward_redeemed` is recorded even when
//! `reward_unlocked` never came.

use chrono::{DateTime, Utc};
use intake_core::Provider;
use serde::{Deserialize, Serialize};

use crate::doc::Doc;
use crate::event::redacted_debug;
use crate::spec::{DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource};
use crate::{DecodeError, Effect, EntityKind, JsonKind};

const SUBSCRIBER_ID: &str = "/subscriber/id";
/// The campaign: `campaign_id`, or `campaign.id` in partner events.
const CAMPAIGN_ID: &[&str] = &["/campaign_id", "/campaign/id"];
const REWARD_ID: &str = "/reward/id";
const REFERRAL_STATUS: &str = "/subscriber/referral_status";

const SUBSCRIBER: &[(EntityKind, IdSource)] = &[(EntityKind::Subscriber, IdSource::Field(SUBSCRIBER_ID))];

/// A referral event: keyed by campaign and subscriber.
const fn referral(event_type: &'static str) -> EventSpec {
    EventSpec {
        event_type,
        entity: SUBSCRIBER,
        rule: RuleSpec::Apply,
        requires: &[CAMPAIGN_ID],
    }
}

/// A reward event: keyed by campaign, subscriber and reward.
const fn reward(event_type: &'static str) -> EventSpec {
    EventSpec {
        event_type,
        entity: SUBSCRIBER,
        rule: RuleSpec::Apply,
        requires: &[CAMPAIGN_ID, &[REWARD_ID]],
    }
}

/// SparkLoop, declared.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::SparkLoop,
    body: JsonKind::Object,
    event_type: TypeSource::Field("/type"),
    event_id: None,
    occurred_at: TimeSource::ReceivedAt,
    // SHA-256 of (type, campaign, subscriber id, referral status, reward id).
    dedupe: DedupeRecipe::HashOf(&[
        &["/type"],
        CAMPAIGN_ID,
        &[SUBSCRIBER_ID],
        &[REFERRAL_STATUS],
        &[REWARD_ID],
    ]),
    events: &[
        referral("new_referral"),
        referral("new_partner_pending_referral"),
        referral("new_partner_referral"),
        reward("reward_unlocked"),
        reward("reward_redeemed"),
    ],
    fields: fields::ALL,
};

/// Optional fields: read tolerantly ([`crate::field`]). Strict keys are in [`SPEC`]: the type,
/// the subscriber id, the campaign id, the reward id (required on reward events) and the
/// subscriber's referral status — dedupe sources, strict in type even where they may be absent.
mod fields {
    crate::field::optional_fields! {
        SUBSCRIBER_FIRST_NAME: Text = "/subscriber/first_name";
        SUBSCRIBER_NAME: Text = "/subscriber/name";
        SUBSCRIBER_EMAIL: Text = "/subscriber/email";
        SUBSCRIBER_REFERRAL_CODE: Text = "/subscriber/referral_code";
        SUBSCRIBER_REFERRAL_LINK: Text = "/subscriber/referral_link";
        SUBSCRIBER_REFERRED: Bool = "/subscriber/referred";
        SUBSCRIBER_TOT_REFERRALS: Int = "/subscriber/tot_referrals";
        SUBSCRIBER_NEXT_REWARD: Int = "/subscriber/next_reward";
        SUBSCRIBER_PARTNER_ID: Id = "/subscriber/partner_id";
        SUBSCRIBER_CREATED_AT: UnixTime = "/subscriber/created_at";
        // The referrer is stored as a subscriber too; without an id it is left out.
        REFERRER: Object = "/referrer";
        REFERRER_ID: Id = "/referrer/id";
        REFERRER_FIRST_NAME: Text = "/referrer/first_name";
        REFERRER_NAME: Text = "/referrer/name";
        REFERRER_EMAIL: Text = "/referrer/email";
        REFERRER_REFERRAL_CODE: Text = "/referrer/referral_code";
        REFERRER_REFERRAL_LINK: Text = "/referrer/referral_link";
        REFERRER_REFERRED: Bool = "/referrer/referred";
        REFERRER_TOT_REFERRALS: Int = "/referrer/tot_referrals";
        REFERRER_NEXT_REWARD: Int = "/referrer/next_reward";
        REFERRER_REFERRAL_STATUS: Text = "/referrer/referral_status";
        REFERRER_PARTNER_ID: Id = "/referrer/partner_id";
        REFERRER_CREATED_AT: UnixTime = "/referrer/created_at";
        PARTNER: Object = "/partner";
        PARTNER_ID: Id = "/partner/id";
        PARTNER_NAME: Text = "/partner/name";
        REWARD_NAME: Text = "/reward/name";
        REWARD_REFERRALS: Int = "/reward/referrals";
        REWARD_RECURRING: Bool = "/reward/recurring";
        COUPON_CODE: Text = "/coupon_code";
        REFERRALS: Int = "/referrals";
        REWARD_VARIANT_NAME: Text = "/reward_variant_name";
        REWARD_VARIANT_SKU: Text = "/reward_variant_sku";
        SHIPPING: Object = "/shipping_details";
        SHIPPING_NAME: Text = "/shipping_details/shipping_name";
        SHIPPING_PHONE: Text = "/shipping_details/shipping_phone";
        SHIPPING_ADDRESS_1: Text = "/shipping_details/shipping_address_1";
        SHIPPING_ADDRESS_2: Text = "/shipping_details/shipping_address_2";
        SHIPPING_CITY: Text = "/shipping_details/shipping_city";
        SHIPPING_STATE_CODE: Text = "/shipping_details/shipping_state_code";
        SHIPPING_ZIPCODE: Text = "/shipping_details/shipping_zipcode";
        SHIPPING_COUNTRY_CODE: Text = "/shipping_details/shipping_country_code";
    }
}

/// A subscriber block (`subscriber` or `referrer`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Subscriber {
    pub id: String,
    pub first_name: Option<String>,
    pub name: Option<String>,
    pub email: Option<String>,
    pub referral_code: Option<String>,
    pub referral_link: Option<String>,
    pub referred: Option<bool>,
    pub tot_referrals: Option<i64>,
    pub next_reward: Option<i64>,
    pub referral_status: Option<String>,
    pub partner_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

/// The `reward` block.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Reward {
    pub id: String,
    pub name: Option<String>,
    pub referrals: Option<i64>,
    pub recurring: Option<bool>,
}

/// The `shipping_details` block of `reward_redeemed`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct Shipping {
    pub name: Option<String>,
    pub phone: Option<String>,
    pub address_1: Option<String>,
    pub address_2: Option<String>,
    pub city: Option<String>,
    pub state_code: Option<String>,
    pub zipcode: Option<String>,
    pub country_code: Option<String>,
}

/// Any SparkLoop event; which parts are set depends on the type.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[allow(missing_docs)]
pub struct LoopEvent {
    /// `campaign_id`, or `campaign.id` for partner events.
    pub campaign_id: String,
    pub subscriber: Subscriber,
    /// Who referred the subscriber (`new_referral`).
    pub referrer: Option<Subscriber>,
    /// `partner.id` and `partner.name` (partner referrals).
    pub partner_id: Option<String>,
    pub partner_name: Option<String>,
    pub reward: Option<Reward>,
    pub coupon_code: Option<String>,
    pub referrals: Option<i64>,
    pub reward_variant_name: Option<String>,
    pub reward_variant_sku: Option<String>,
    pub shipping: Option<Shipping>,
}

redacted_debug!(Subscriber, Reward, Shipping, LoopEvent);

pub(crate) fn effect(doc: &Doc<'_>, _event: &EventSpec) -> Result<Effect, DecodeError> {
    use fields::*;
    let subscriber = Subscriber {
        id: doc.key(&[SUBSCRIBER_ID])?,
        first_name: doc.get(SUBSCRIBER_FIRST_NAME),
        name: doc.get(SUBSCRIBER_NAME),
        email: doc.get(SUBSCRIBER_EMAIL),
        referral_code: doc.get(SUBSCRIBER_REFERRAL_CODE),
        referral_link: doc.get(SUBSCRIBER_REFERRAL_LINK),
        referred: doc.get(SUBSCRIBER_REFERRED),
        tot_referrals: doc.get(SUBSCRIBER_TOT_REFERRALS),
        next_reward: doc.get(SUBSCRIBER_NEXT_REWARD),
        referral_status: doc.key_id(REFERRAL_STATUS)?,
        partner_id: doc.get(SUBSCRIBER_PARTNER_ID),
        created_at: doc.get(SUBSCRIBER_CREATED_AT),
    };
    let referrer = doc.block(REFERRER).and_then(|r| {
        Some(Subscriber {
            id: r.block_key(REFERRER_ID)?,
            first_name: r.get(REFERRER_FIRST_NAME),
            name: r.get(REFERRER_NAME),
            email: r.get(REFERRER_EMAIL),
            referral_code: r.get(REFERRER_REFERRAL_CODE),
            referral_link: r.get(REFERRER_REFERRAL_LINK),
            referred: r.get(REFERRER_REFERRED),
            tot_referrals: r.get(REFERRER_TOT_REFERRALS),
            next_reward: r.get(REFERRER_NEXT_REWARD),
            referral_status: r.get(REFERRER_REFERRAL_STATUS),
            partner_id: r.get(REFERRER_PARTNER_ID),
            created_at: r.get(REFERRER_CREATED_AT),
        })
    });
    // The reward id is strict (a dedupe source), and required on reward events (see SPEC).
    let reward = doc.key_id(REWARD_ID)?.map(|id| Reward {
        id,
        name: doc.get(REWARD_NAME),
        referrals: doc.get(REWARD_REFERRALS),
        recurring: doc.get(REWARD_RECURRING),
    });
    let shipping = doc.block(SHIPPING).map(|s| Shipping {
        name: s.get(SHIPPING_NAME),
        phone: s.get(SHIPPING_PHONE),
        address_1: s.get(SHIPPING_ADDRESS_1),
        address_2: s.get(SHIPPING_ADDRESS_2),
        city: s.get(SHIPPING_CITY),
        state_code: s.get(SHIPPING_STATE_CODE),
        zipcode: s.get(SHIPPING_ZIPCODE),
        country_code: s.get(SHIPPING_COUNTRY_CODE),
    });
    let partner = doc.block(PARTNER);
    Ok(Effect::SparkLoop(Box::new(LoopEvent {
        campaign_id: doc.key(CAMPAIGN_ID)?,
        subscriber,
        referrer,
        partner_id: partner.as_ref().and_then(|p| p.get(PARTNER_ID)),
        partner_name: partner.as_ref().and_then(|p| p.get(PARTNER_NAME)),
        reward,
        coupon_code: doc.get(COUPON_CODE),
        referrals: doc.get(REFERRALS),
        reward_variant_name: doc.get(REWARD_VARIANT_NAME),
        reward_variant_sku: doc.get(REWARD_VARIANT_SKU),
        shipping,
    })))
}
