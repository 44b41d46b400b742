//! Example payloads from the provider documents, as valid JSON, for tests and the benchmark.
//! SparkLoop's examples are reconstructed (the document drops closing braces and a comma);
//! HealthSherpa's placeholders (`"string"`) are replaced by plausible values; Spark360's document
//! shows no payload, so its examples follow the paths declared in [`crate::spark360`].

use intake_core::Provider;

/// Spark contact sync, the document's full payload.
pub const SPARK_CONTACT: &str = include_str!("../fixtures/spark_contact.json");
/// SparkLoop `new_referral`.
pub const SPARKLOOP_NEW_REFERRAL: &str = include_str!("../fixtures/sparkloop_new_referral.json");
/// SparkLoop `new_partner_pending_referral`.
pub const SPARKLOOP_PARTNER_PENDING: &str =
    include_str!("../fixtures/sparkloop_new_partner_pending_referral.json");
/// SparkLoop `new_partner_referral` (verified).
pub const SPARKLOOP_PARTNER_VERIFIED: &str = include_str!("../fixtures/sparkloop_new_partner_referral.json");
/// SparkLoop `reward_unlocked`.
pub const SPARKLOOP_REWARD_UNLOCKED: &str = include_str!("../fixtures/sparkloop_reward_unlocked.json");
/// SparkLoop `reward_redeemed`.
pub const SPARKLOOP_REWARD_REDEEMED: &str = include_str!("../fixtures/sparkloop_reward_redeemed.json");
/// Spark360 `lead.address_preview`.
pub const SPARK360_ADDRESS_PREVIEW: &str = include_str!("../fixtures/spark360_address_preview.json");
/// Spark360 `lead.enriched`.
pub const SPARK360_ENRICHED: &str = include_str!("../fixtures/spark360_enriched.json");
/// Spark360 `lead.rental_alert`.
pub const SPARK360_RENTAL_ALERT: &str = include_str!("../fixtures/spark360_rental_alert.json");
/// Spark360 `lead.contact_requested`.
pub const SPARK360_CONTACT_REQUESTED: &str = include_str!("../fixtures/spark360_contact_requested.json");
/// Spark360 `widget.status_changed`.
pub const SPARK360_WIDGET_STATUS: &str = include_str!("../fixtures/spark360_widget_status_changed.json");
/// HealthSherpa off-exchange example.
pub const HEALTHSHERPA_OFF_EXCHANGE: &str = include_str!("../fixtures/healthsherpa_off_exchange.json");
/// HealthSherpa on-exchange example.
pub const HEALTHSHERPA_ON_EXCHANGE: &str = include_str!("../fixtures/healthsherpa_on_exchange.json");

/// Every example with its provider.
pub const ALL: &[(Provider, &str)] = &[
    (Provider::Spark, SPARK_CONTACT),
    (Provider::SparkLoop, SPARKLOOP_NEW_REFERRAL),
    (Provider::SparkLoop, SPARKLOOP_PARTNER_PENDING),
    (Provider::SparkLoop, SPARKLOOP_PARTNER_VERIFIED),
    (Provider::SparkLoop, SPARKLOOP_REWARD_UNLOCKED),
    (Provider::SparkLoop, SPARKLOOP_REWARD_REDEEMED),
    (Provider::Spark360, SPARK360_ADDRESS_PREVIEW),
    (Provider::Spark360, SPARK360_ENRICHED),
    (Provider::Spark360, SPARK360_RENTAL_ALERT),
    (Provider::Spark360, SPARK360_CONTACT_REQUESTED),
    (Provider::Spark360, SPARK360_WIDGET_STATUS),
    (Provider::HealthSherpa, HEALTHSHERPA_OFF_EXCHANGE),
    (Provider::HealthSherpa, HEALTHSHERPA_ON_EXCHANGE),
];
