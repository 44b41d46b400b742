//! The soak's traffic: stories of related webhooks per entity (a Spark contact's snapshots, a
//! SparkLoop subscriber's referral and reward, a Spark360 lead's four events, a HealthSherpa
//! application's status events), each webhook to be sent 1–3 times, the deliveries of a story
//! shuffled — plus a little junk a real sender also produces (unknown event types, a missing
//! strict key, a lead whose prerequisite never comes, a wrong credential, broken JSON). Each
//! story knows the final state it must leave in Postgres; bodies are rendered on demand from the
//! provider documents' examples.

use bytes::Bytes;
use intake_core::{Envelope, Provider};
use intake_providers::fixtures;
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

/// What the pipeline must do with a webhook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expect {
    /// Applied once (or kept as history), whatever the copies.
    Effect,
    /// Dead-lettered with this reason.
    DeadLetter(&'static str),
    /// Refused by the receiver with this status (final: the sender does not retry).
    Rejected(u16),
}

/// Which credential the sender presents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential {
    /// The configured one.
    Good,
    /// A wrong one (the receiver answers 401).
    Wrong,
}

/// One logical webhook (one body), sent `copies` times.
#[derive(Debug, Clone)]
pub struct Webhook {
    /// Provider (and endpoint).
    pub provider: Provider,
    /// How its body is made.
    pub body: Body,
    /// Its inbox dedupe key, when it does not depend on the envelope (every provider but Spark).
    pub dedupe_key: Option<String>,
    /// What must happen to it.
    pub expect: Expect,
    /// The credential the sender presents.
    pub credential: Credential,
}

/// How a webhook's body is rendered (on demand: 100,000 Spark bodies would be 600 MB).
#[derive(Debug, Clone)]
pub enum Body {
    /// Spark contact `id`, snapshot version `v`.
    SparkContact { id: u64, v: u32 },
    /// SparkLoop event of subscriber `s`.
    SparkLoop { s: usize, kind: LoopKind },
    /// Spark360 lead event `n` (1 preview, 2 enriched, 3 rental alert, 4 contact requested) of
    /// lead `lead`.
    Spark360 { lead: String, n: u8 },
    /// HealthSherpa status event: application/policy of story `s`, transaction `n`.
    HealthSherpa {
        s: usize,
        n: u8,
        status: &'static str,
        at: String,
        event_type: &'static str,
    },
    /// Junk: a SparkLoop event of a type nobody declared.
    UnknownLoopType { s: usize },
    /// Junk: a HealthSherpa event without its `transaction_id`.
    HealthSherpaNoTransaction { s: usize },
    /// Junk: a Spark body cut in the middle (not JSON).
    BrokenSpark { s: usize },
}

/// SparkLoop events of one subscriber's story.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopKind {
    /// Partner program referral, pending.
    PartnerPending,
    /// Partner program referral, verified.
    PartnerVerified,
    /// Referral on the newsletter campaign (status tracked), with a referrer.
    NewReferral,
    /// Reward unlocked.
    RewardUnlocked,
    /// Reward redeemed.
    RewardRedeemed,
}

/// The newsletter campaign and reward of the SparkLoop examples.
pub const LOOP_CAMPAIGN: &str = "MF6319db9890";
/// The partner campaign of the SparkLoop examples.
pub const PARTNER_CAMPAIGN: &str = "partner_campaign_de9c1c7c7bbc";
/// The reward of the SparkLoop examples.
pub const REWARD: &str = "reward_cdebf4f013";

impl Body {
    /// The body as sent.
    pub fn render(&self) -> String {
        match self {
            Body::SparkContact { id, v } => spark_contact(*id, *v),
            Body::SparkLoop { s, kind } => sparkloop(*s, *kind),
            Body::Spark360 { lead, n } => spark360(lead, *n),
            Body::HealthSherpa {
                s,
                n,
                status,
                at,
                event_type,
            } => healthsherpa(*s, *n, status, at, event_type),
            Body::UnknownLoopType { s } => sparkloop(*s + 1_000_000, LoopKind::RewardUnlocked)
                .replace("\"reward_unlocked\"", "\"subscriber_teleported\""),
            Body::HealthSherpaNoTransaction { s } => {
                healthsherpa(*s + 1_000_000, 1, "effectuated", "2026-02-01T00:00:00Z", "sync").replacen(
                    "\"transaction_id\"",
                    "\"transaction_ref\"",
                    1,
                )
            }
            Body::BrokenSpark { s } => {
                let body = spark_contact(90_000_000 + *s as u64, 1);
                body[..body.len() / 2].to_owned()
            }
        }
    }
}

fn spark_contact(id: u64, v: u32) -> String {
    fixtures::SPARK_CONTACT
        .replacen("\"id\": 1234,", &format!("\"id\": {id},"), 1)
        .replacen(
            "https://example.com/needs-assessment",
            &format!("https://example.com/needs-assessment/{id}/v{v}"),
            1,
        )
        // The PHI changes between snapshots too (a new MBI, Medicaid gained), as real ones do.
        .replacen(
            "T0NY-S0PR4N0",
            &format!("1EG4-TE5-M{:02}", (id + u64::from(v)) % 100),
            1,
        )
        .replacen(
            "\"has_medicaid\": false",
            &format!("\"has_medicaid\": {}", v.is_multiple_of(2)),
            1,
        )
}

fn sparkloop(s: usize, kind: LoopKind) -> String {
    let sub = format!("sub_soak_{s}");
    match kind {
        LoopKind::PartnerPending => fixtures::SPARKLOOP_PARTNER_PENDING.replace("sub_042448acb02a", &sub),
        LoopKind::PartnerVerified => fixtures::SPARKLOOP_PARTNER_VERIFIED.replace("sub_042448acb02a", &sub),
        LoopKind::NewReferral => fixtures::SPARKLOOP_NEW_REFERRAL
            .replace("sub_hjdgc74u", &sub)
            .replace("sub_93ehus8h", &format!("sub_soak_ref_{s}")),
        LoopKind::RewardUnlocked => fixtures::SPARKLOOP_REWARD_UNLOCKED.replace("sub_hjdgc74u", &sub),
        LoopKind::RewardRedeemed => fixtures::SPARKLOOP_REWARD_REDEEMED.replace("sub_hjdgc74u", &sub),
    }
}

fn spark360(lead: &str, n: u8) -> String {
    let template = match n {
        1 => fixtures::SPARK360_ADDRESS_PREVIEW,
        2 => fixtures::SPARK360_ENRICHED,
        3 => fixtures::SPARK360_RENTAL_ALERT,
        _ => fixtures::SPARK360_CONTACT_REQUESTED,
    };
    template
        .replace("lead_7f3a9c", lead)
        .replace("evt_01HX000000000000000000000", &format!("evt_{lead}_"))
}

fn healthsherpa(s: usize, n: u8, status: &str, at: &str, event_type: &str) -> String {
    fixtures::HEALTHSHERPA_OFF_EXCHANGE
        .replace("txn_7c1d2e3f", &format!("txn_soak_{s}_{n}"))
        .replace("app_5512", &format!("app_soak_{s}"))
        .replace("ext_M4D0N", &format!("ext_soak_{s}"))
        .replace("pol_9001", &format!("pol_soak_{s}"))
        .replace("\"effectuated\"", &format!("\"{status}\""))
        .replace("2026-02-03T14:05:06Z", at)
        .replace(
            "\"event_type\": \"sync\"",
            &format!("\"event_type\": \"{event_type}\""),
        )
}

/// What a story is about, and the state it must leave.
#[derive(Debug, Clone)]
pub enum StoryKind {
    /// A Spark contact (`spark_id`): its snapshots must be sent one at a time (receipt order is
    /// their order); the last one accepted is the state.
    Contact { spark_id: String },
    /// A SparkLoop subscriber's partner referral, newsletter referral and reward.
    Loop { subscriber: String, referrer: String },
    /// A Spark360 lead.
    Lead { lead: String },
    /// A HealthSherpa application with one policy; `statuses[n-1]` is transaction `n`'s status.
    Application {
        application: String,
        policy: String,
        /// (event time, transaction id, status) of each event.
        events: Vec<(String, String, &'static str)>,
    },
    /// One junk webhook (dead letter or rejection).
    Junk,
}

/// Related webhooks and the order their deliveries are sent in.
#[derive(Debug, Clone)]
pub struct Story {
    /// What it is about.
    pub kind: StoryKind,
    /// Webhook indices, one per delivery (a webhook sent three times appears three times), in
    /// send order. Sent one after another: the next leaves once the previous was answered.
    pub deliveries: Vec<usize>,
}

/// Everything the sender sends and the verifier expects.
#[derive(Debug)]
pub struct Traffic {
    /// Every logical webhook.
    pub webhooks: Vec<Webhook>,
    /// Stories, in the order the sender starts them.
    pub stories: Vec<Story>,
}

impl Traffic {
    /// Deliveries in all.
    pub fn deliveries(&self) -> usize {
        self.stories.iter().map(|s| s.deliveries.len()).sum()
    }
}

/// 1 copy (70 %), 2 (20 %) or 3 (10 %): providers retry what they are unsure of.
fn copies(rng: &mut StdRng) -> usize {
    match rng.random_range(0..10) {
        0..7 => 1,
        7..9 => 2,
        _ => 3,
    }
}

/// The dedupe key the worker will compute for a body (every provider but Spark, whose key holds
/// the envelope id), or the dead-letter reason decoding will give.
fn decode(provider: Provider, body: &str) -> Result<String, &'static str> {
    let envelope = Envelope::new("soak", provider, vec![], Bytes::from(body.to_owned()));
    match intake_providers::decode(&envelope) {
        Ok(events) => Ok(events
            .into_iter()
            .next()
            .map(|e| e.dedupe_key)
            .unwrap_or_default()),
        Err(e) => Err(e.reason()),
    }
}

struct Builder<'a> {
    rng: &'a mut StdRng,
    webhooks: Vec<Webhook>,
    stories: Vec<Story>,
}

impl Builder<'_> {
    /// Adds a story of `bodies` (provider, body, credential); each body sent 1–3 times, the
    /// deliveries shuffled.
    fn story(&mut self, kind: StoryKind, bodies: Vec<(Provider, Body, Credential)>) {
        let mut deliveries = Vec::new();
        for (provider, body, credential) in bodies {
            let rendered = body.render();
            let (dedupe_key, expect) = match (credential, &body) {
                (Credential::Wrong, _) => (None, Expect::Rejected(401)),
                (_, Body::BrokenSpark { .. }) => (None, Expect::Rejected(400)),
                // A Spark key holds the envelope id: the verifier finds Spark webhooks by the
                // request id instead.
                _ => match decode(provider, &rendered) {
                    Ok(key) => ((provider != Provider::Spark).then_some(key), Expect::Effect),
                    Err(reason) => (None, Expect::DeadLetter(reason)),
                },
            };
            let index = self.webhooks.len();
            self.webhooks.push(Webhook {
                provider,
                body,
                dedupe_key,
                expect,
                credential,
            });
            for _ in 0..copies(self.rng) {
                deliveries.push(index);
            }
        }
        deliveries.shuffle(self.rng);
        self.stories.push(Story { kind, deliveries });
    }
}

/// Stories until `webhooks` logical webhooks exist. Mix (by webhooks): Spark contacts ~35 %,
/// SparkLoop ~20 %, Spark360 ~25 %, HealthSherpa ~20 %, junk ~1 %.
pub fn traffic(webhooks: usize, rng: &mut StdRng) -> Traffic {
    let mut b = Builder {
        rng,
        webhooks: Vec::with_capacity(webhooks + 8),
        stories: Vec::new(),
    };
    let mut s = 0usize;
    while b.webhooks.len() < webhooks {
        s += 1;
        let roll = b.rng.random_range(0..1000);
        let good = Credential::Good;
        match roll {
            // Spark: 3 snapshots → ~35 % of webhooks.
            0..390 => {
                let id = 50_000_000 + s as u64;
                let versions = b.rng.random_range(2..=4);
                let bodies = (1..=versions)
                    .map(|v| (Provider::Spark, Body::SparkContact { id, v }, good))
                    .collect();
                b.story(
                    StoryKind::Contact {
                        spark_id: id.to_string(),
                    },
                    bodies,
                );
            }
            // SparkLoop: 5 events → ~20 %.
            390..530 => {
                let bodies = [
                    LoopKind::PartnerPending,
                    LoopKind::PartnerVerified,
                    LoopKind::NewReferral,
                    LoopKind::RewardUnlocked,
                    LoopKind::RewardRedeemed,
                ]
                .into_iter()
                .map(|kind| (Provider::SparkLoop, Body::SparkLoop { s, kind }, good))
                .collect();
                b.story(
                    StoryKind::Loop {
                        subscriber: format!("sub_soak_{s}"),
                        referrer: format!("sub_soak_ref_{s}"),
                    },
                    bodies,
                );
            }
            // Spark360: 4 events → ~25 %.
            530..760 => {
                let lead = format!("lead_soak_{s}");
                let bodies = (1..=4)
                    .map(|n| {
                        (
                            Provider::Spark360,
                            Body::Spark360 {
                                lead: lead.clone(),
                                n,
                            },
                            good,
                        )
                    })
                    .collect();
                b.story(StoryKind::Lead { lead }, bodies);
            }
            // HealthSherpa: 3 status events → ~20 %; one in five has two events of the same
            // instant (the higher transaction id wins).
            760..990 => {
                let day = b.rng.random_range(1..28);
                let tie = b.rng.random_bool(0.2);
                let times = [
                    format!("2026-01-{day:02}T09:00:00Z"),
                    format!("2026-02-{day:02}T09:00:00Z"),
                    if tie {
                        format!("2026-02-{day:02}T09:00:00Z")
                    } else {
                        format!("2026-03-{day:02} 09:00:00")
                    },
                ];
                let statuses = ["pending_effectuation", "effectuated", "cancelled"];
                let events: Vec<(String, String, &'static str)> = (0..3)
                    .map(|i| (times[i].clone(), format!("txn_soak_{s}_{}", i + 1), statuses[i]))
                    .collect();
                let bodies = (0..3)
                    .map(|i| {
                        (
                            Provider::HealthSherpa,
                            Body::HealthSherpa {
                                s,
                                n: i as u8 + 1,
                                status: statuses[i],
                                at: times[i].clone(),
                                event_type: if i == 0 { "submission" } else { "sync" },
                            },
                            good,
                        )
                    })
                    .collect();
                b.story(
                    StoryKind::Application {
                        application: format!("app_soak_{s}"),
                        policy: format!("pol_soak_{s}"),
                        events,
                    },
                    bodies,
                );
            }
            // Junk, ~1 %.
            _ => {
                let (provider, body, credential) = match roll % 5 {
                    0 => (Provider::SparkLoop, Body::UnknownLoopType { s }, good),
                    1 => (
                        Provider::HealthSherpa,
                        Body::HealthSherpaNoTransaction { s },
                        good,
                    ),
                    // A lead event whose prerequisite (lead.enriched) never comes.
                    2 => (
                        Provider::Spark360,
                        Body::Spark360 {
                            lead: format!("lead_orphan_{s}"),
                            n: 3,
                        },
                        good,
                    ),
                    3 => (
                        Provider::SparkLoop,
                        Body::SparkLoop {
                            s: s + 2_000_000,
                            kind: LoopKind::PartnerPending,
                        },
                        Credential::Wrong,
                    ),
                    _ => (Provider::Spark, Body::BrokenSpark { s }, good),
                };
                b.story(StoryKind::Junk, vec![(provider, body, credential)]);
                if let Some(w) = b.webhooks.last_mut()
                    && matches!(&w.body, Body::Spark360 { lead, .. } if lead.starts_with("lead_orphan_"))
                {
                    w.expect = Expect::DeadLetter("ordering_timeout");
                }
            }
        }
    }
    Traffic {
        webhooks: b.webhooks,
        stories: b.stories,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn every_body_decodes_as_expected_and_keys_are_unique() {
        let mut rng = StdRng::seed_from_u64(7);
        let t = traffic(20_000, &mut rng);
        let mut keys = std::collections::HashSet::new();
        for w in &t.webhooks {
            if let Some(k) = &w.dedupe_key {
                assert!(keys.insert((w.provider, k.clone())), "unique key {k}");
            }
        }
        assert!(
            t.webhooks
                .iter()
                .any(|w| w.expect == Expect::DeadLetter("unknown_event_type"))
        );
        assert!(
            t.webhooks
                .iter()
                .any(|w| w.expect == Expect::DeadLetter("missing_field"))
        );
        assert!(
            t.webhooks
                .iter()
                .any(|w| w.expect == Expect::DeadLetter("ordering_timeout"))
        );
        assert!(t.webhooks.iter().any(|w| w.expect == Expect::Rejected(400)));
        assert!(t.webhooks.iter().any(|w| w.expect == Expect::Rejected(401)));
        let broken = t
            .webhooks
            .iter()
            .find(|w| w.expect == Expect::Rejected(400))
            .expect("one");
        assert!(serde_json::from_str::<serde_json::Value>(&broken.body.render()).is_err());
    }
}
