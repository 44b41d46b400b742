//! SparkLoop referral program events. Entity: the subscriber. A referral's status only moves
//! pending → verified (enforced when applied); `reward_redeemed` is recorded even when
//! `reward_unlocked` never came.

use chrono::{DateTime, Utc};
use intake_core::Provider;
use serde::{Deserialize, Serialize};

use crate::doc::Doc;
use crate::event::redacted_debug;
use crate::spec::{DedupeRecipe, EventSpec, IdSource, ProviderSpec, RuleSpec, TimeSource, TypeSource};
use crate::{DecodeError, Effect, EntityKind};

const SUBSCRIBER: &[(EntityKind, IdSource)] = &[(EntityKind::Subscriber, IdSource::Field("/subscriber/id"))];

const fn event(event_type: &'static str) -> EventSpec {
    EventSpec {
        event_type,
        entity: SUBSCRIBER,
        rule: RuleSpec::Apply,
    }
}

/// SparkLoop, declared.
pub static SPEC: ProviderSpec = ProviderSpec {
    provider: Provider::SparkLoop,
    event_type: TypeSource::Field("/type"),
    event_id: None,
    occurred_at: TimeSource::ReceivedAt,
    // SHA-256 of (type, campaign, subscriber id, referral status, reward id).
    dedupe: DedupeRecipe::HashOf(&[
        &["/type"],
        &["/campaign_id", "/campaign/id"],
        &["/subscriber/id"],
        &["/subscriber/referral_status"],
        &["/reward/id"],
    ]),
    events: &[
        event("new_referral"),
        event("new_partner_pending_referral"),
        event("new_partner_referral"),
        event("reward_unlocked"),
        event("reward_redeemed"),
    ],
};

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

fn subscriber(doc: &Doc<'_>, at: &str) -> Result<Subscriber, DecodeError> {
    let p = |f: &str| format!("{at}/{f}");
    Ok(Subscriber {
        id: doc.req_id(&p("id"))?,
        first_name: doc.text(&p("first_name"))?,
        name: doc.text(&p("name"))?,
        email: doc.text(&p("email"))?,
        referral_code: doc.text(&p("referral_code"))?,
        referral_link: doc.text(&p("referral_link"))?,
        referred: doc.bool(&p("referred"))?,
        tot_referrals: doc.int(&p("tot_referrals"))?,
        next_reward: doc.int(&p("next_reward"))?,
        referral_status: doc.text(&p("referral_status"))?,
        partner_id: doc.id(&p("partner_id"))?,
        created_at: doc.epoch(&p("created_at"))?,
    })
}

pub(crate) fn effect(doc: &Doc<'_>, event: &EventSpec) -> Result<Effect, DecodeError> {
    let campaign_id = match doc.id("/campaign_id")? {
        Some(id) => id,
        None => doc.id("/campaign/id")?.ok_or_else(|| DecodeError::MissingField {
            pointer: "/campaign_id or /campaign/id".to_owned(),
        })?,
    };
    let reward = match doc.object("/reward")? {
        None if event.event_type.starts_with("reward_") => {
            return Err(DecodeError::MissingField {
                pointer: "/reward".to_owned(),
            });
        }
        None => None,
        Some(_) => Some(Reward {
            id: doc.req_id("/reward/id")?,
            name: doc.text("/reward/name")?,
            referrals: doc.int("/reward/referrals")?,
            recurring: doc.bool("/reward/recurring")?,
        }),
    };
    let shipping = match doc.object("/shipping_details")? {
        None => None,
        Some(_) => {
            let s = |f: &str| doc.text(&format!("/shipping_details/shipping_{f}"));
            Some(Shipping {
                name: s("name")?,
                phone: s("phone")?,
                address_1: s("address_1")?,
                address_2: s("address_2")?,
                city: s("city")?,
                state_code: s("state_code")?,
                zipcode: s("zipcode")?,
                country_code: s("country_code")?,
            })
        }
    };
    Ok(Effect::SparkLoop(Box::new(LoopEvent {
        campaign_id,
        subscriber: subscriber(doc, "/subscriber")?,
        referrer: match doc.object("/referrer")? {
            None => None,
            Some(_) => Some(subscriber(doc, "/referrer")?),
        },
        partner_id: doc.id("/partner/id")?,
        partner_name: doc.text("/partner/name")?,
        reward,
        coupon_code: doc.text("/coupon_code")?,
        referrals: doc.int("/referrals")?,
        reward_variant_name: doc.text("/reward_variant_name")?,
        reward_variant_sku: doc.text("/reward_variant_sku")?,
        shipping,
    })))
}
