//! SparkLoop events → `sparkloop_subscribers`, `sparkloop_referrals`, `sparkloop_rewards`.
//! A referral's status only moves up (tracked < pending < verified); a redemption is recorded
//! whether or not its unlock was seen.

use deadpool_postgres::Transaction;
use intake_providers::DecodedEvent;
use intake_providers::sparkloop::{LoopEvent, Subscriber};

use crate::StoreError;

const UPSERT_SUBSCRIBER: &str = "
INSERT INTO sparkloop_subscribers (id, campaign_id, first_name, name, email, referral_code, referral_link,
    referred, tot_referrals, next_reward, partner_id, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
ON CONFLICT (id) DO UPDATE SET
    campaign_id = COALESCE(EXCLUDED.campaign_id, sparkloop_subscribers.campaign_id),
    first_name = COALESCE(EXCLUDED.first_name, sparkloop_subscribers.first_name),
    name = COALESCE(EXCLUDED.name, sparkloop_subscribers.name),
    email = COALESCE(EXCLUDED.email, sparkloop_subscribers.email),
    referral_code = COALESCE(EXCLUDED.referral_code, sparkloop_subscribers.referral_code),
    referral_link = COALESCE(EXCLUDED.referral_link, sparkloop_subscribers.referral_link),
    referred = COALESCE(EXCLUDED.referred, sparkloop_subscribers.referred),
    tot_referrals = COALESCE(EXCLUDED.tot_referrals, sparkloop_subscribers.tot_referrals),
    next_reward = COALESCE(EXCLUDED.next_reward, sparkloop_subscribers.next_reward),
    partner_id = COALESCE(EXCLUDED.partner_id, sparkloop_subscribers.partner_id),
    created_at = COALESCE(EXCLUDED.created_at, sparkloop_subscribers.created_at),
    updated_at = now()";

const UPSERT_REFERRAL: &str = "
INSERT INTO sparkloop_referrals (campaign_id, subscriber_id, referrer_id, partner_id, partner_name, status)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (campaign_id, subscriber_id) DO UPDATE SET
    referrer_id = COALESCE(EXCLUDED.referrer_id, sparkloop_referrals.referrer_id),
    partner_id = COALESCE(EXCLUDED.partner_id, sparkloop_referrals.partner_id),
    partner_name = COALESCE(EXCLUDED.partner_name, sparkloop_referrals.partner_name),
    status = CASE WHEN sparkloop_status_rank(EXCLUDED.status) > sparkloop_status_rank(sparkloop_referrals.status)
                  THEN EXCLUDED.status ELSE sparkloop_referrals.status END,
    updated_at = now()";

const UPSERT_REWARD: &str = "
INSERT INTO sparkloop_rewards (campaign_id, subscriber_id, reward_id, reward_name, reward_referrals, recurring,
    coupon_code, referrals, unlocked_at, redeemed_at, variant_name, variant_sku, shipping_name, shipping_phone,
    shipping_address_1, shipping_address_2, shipping_city, shipping_state_code, shipping_zipcode,
    shipping_country_code)
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20)
ON CONFLICT (campaign_id, subscriber_id, reward_id) DO UPDATE SET
    reward_name = COALESCE(EXCLUDED.reward_name, sparkloop_rewards.reward_name),
    reward_referrals = COALESCE(EXCLUDED.reward_referrals, sparkloop_rewards.reward_referrals),
    recurring = COALESCE(EXCLUDED.recurring, sparkloop_rewards.recurring),
    coupon_code = COALESCE(EXCLUDED.coupon_code, sparkloop_rewards.coupon_code),
    referrals = COALESCE(EXCLUDED.referrals, sparkloop_rewards.referrals),
    unlocked_at = COALESCE(sparkloop_rewards.unlocked_at, EXCLUDED.unlocked_at),
    redeemed_at = COALESCE(sparkloop_rewards.redeemed_at, EXCLUDED.redeemed_at),
    variant_name = COALESCE(EXCLUDED.variant_name, sparkloop_rewards.variant_name),
    variant_sku = COALESCE(EXCLUDED.variant_sku, sparkloop_rewards.variant_sku),
    shipping_name = COALESCE(EXCLUDED.shipping_name, sparkloop_rewards.shipping_name),
    shipping_phone = COALESCE(EXCLUDED.shipping_phone, sparkloop_rewards.shipping_phone),
    shipping_address_1 = COALESCE(EXCLUDED.shipping_address_1, sparkloop_rewards.shipping_address_1),
    shipping_address_2 = COALESCE(EXCLUDED.shipping_address_2, sparkloop_rewards.shipping_address_2),
    shipping_city = COALESCE(EXCLUDED.shipping_city, sparkloop_rewards.shipping_city),
    shipping_state_code = COALESCE(EXCLUDED.shipping_state_code, sparkloop_rewards.shipping_state_code),
    shipping_zipcode = COALESCE(EXCLUDED.shipping_zipcode, sparkloop_rewards.shipping_zipcode),
    shipping_country_code = COALESCE(EXCLUDED.shipping_country_code, sparkloop_rewards.shipping_country_code)";

fn small(n: Option<i64>) -> Option<i32> {
    n.and_then(|n| i32::try_from(n).ok())
}

async fn upsert_subscriber(
    tx: &Transaction<'_>,
    s: &Subscriber,
    campaign_id: Option<&str>,
) -> Result<(), StoreError> {
    let stmt = tx.prepare_cached(UPSERT_SUBSCRIBER).await?;
    tx.execute(
        &stmt,
        &[
            &s.id,
            &campaign_id,
            &s.first_name,
            &s.name,
            &s.email,
            &s.referral_code,
            &s.referral_link,
            &s.referred,
            &small(s.tot_referrals),
            &small(s.next_reward),
            &s.partner_id,
            &s.created_at,
        ],
    )
    .await?;
    Ok(())
}

pub(super) async fn apply(
    tx: &Transaction<'_>,
    l: &LoopEvent,
    event: &DecodedEvent,
) -> Result<(), StoreError> {
    upsert_subscriber(tx, &l.subscriber, Some(&l.campaign_id)).await?;
    let referral_status = match event.event_type.as_str() {
        "new_referral" => Some("tracked"),
        "new_partner_pending_referral" => Some("pending"),
        "new_partner_referral" => Some("verified"),
        _ => None,
    };
    if let Some(default_status) = referral_status {
        if let Some(referrer) = &l.referrer {
            upsert_subscriber(tx, referrer, Some(&l.campaign_id)).await?;
        }
        let status = l.subscriber.referral_status.as_deref().unwrap_or(default_status);
        let stmt = tx.prepare_cached(UPSERT_REFERRAL).await?;
        tx.execute(
            &stmt,
            &[
                &l.campaign_id,
                &l.subscriber.id,
                &l.referrer.as_ref().map(|r| r.id.as_str()),
                &l.partner_id,
                &l.partner_name,
                &status,
            ],
        )
        .await?;
        return Ok(());
    }
    let Some(reward) = &l.reward else { return Ok(()) };
    let redeemed = event.event_type == "reward_redeemed";
    let (unlocked_at, redeemed_at) = if redeemed {
        (None, Some(event.occurred_at))
    } else {
        (Some(event.occurred_at), None)
    };
    let s = l.shipping.as_ref();
    let ship =
        |f: fn(&intake_providers::sparkloop::Shipping) -> &Option<String>| s.and_then(|s| f(s).clone());
    let stmt = tx.prepare_cached(UPSERT_REWARD).await?;
    tx.execute(
        &stmt,
        &[
            &l.campaign_id,
            &l.subscriber.id,
            &reward.id,
            &reward.name,
            &small(reward.referrals),
            &reward.recurring,
            &l.coupon_code,
            &small(l.referrals),
            &unlocked_at,
            &redeemed_at,
            &l.reward_variant_name,
            &l.reward_variant_sku,
            &ship(|s| &s.name),
            &ship(|s| &s.phone),
            &ship(|s| &s.address_1),
            &ship(|s| &s.address_2),
            &ship(|s| &s.city),
            &ship(|s| &s.state_code),
            &ship(|s| &s.zipcode),
            &ship(|s| &s.country_code),
        ],
    )
    .await?;
    Ok(())
}
