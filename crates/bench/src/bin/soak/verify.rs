//! Accounting from Postgres against what the sender knows: every delivery it saw answered 2xx,
//! every webhook's expected fate, every story's expected final state. Nothing here reads our
//! metrics or logs. A webhook is found by its dedupe key (every provider but Spark) or by the
//! `x-request-id` its attempts carried, which the receiver keeps with the envelope (`raw_events`
//! and `dead_letters` headers) — so no column that holds PHI is read.

use std::collections::{BTreeMap, HashMap, HashSet};

use intake_core::Provider;
use tokio_postgres::Client;
use uuid::Uuid;

use crate::generate::{Expect, LOOP_CAMPAIGN, PARTNER_CAMPAIGN, REWARD, StoryKind, Traffic};
use crate::sender::{Delivery, Final};

/// The providers of the soak, in report order, with their endpoint names.
pub const PROVIDERS: [(Provider, &str); 4] = [
    (Provider::Spark, "spark"),
    (Provider::SparkLoop, "sparkloop"),
    (Provider::Spark360, "spark360"),
    (Provider::HealthSherpa, "healthsherpa"),
];

fn column(provider: Provider) -> usize {
    PROVIDERS
        .iter()
        .position(|(p, _)| *p == provider)
        .expect("a soak provider")
}

fn provider_of_endpoint(endpoint: &str) -> Option<usize> {
    PROVIDERS.iter().position(|(_, e)| *e == endpoint)
}

/// Counts per provider (the report's columns).
pub type PerProvider = [u64; 4];

/// One finding, precise enough to chase: provider, what, and when (seconds into the run).
#[derive(Debug, Clone)]
pub struct Finding {
    /// Which check.
    pub kind: &'static str,
    /// Provider.
    pub provider: Provider,
    /// What exactly.
    pub detail: String,
    /// When the delivery concerned was settled (seconds into the run), if known.
    pub at_s: Option<f64>,
}

/// Everything counted.
#[derive(Debug, Default)]
pub struct Accounting {
    /// Logical webhooks generated.
    pub webhooks: PerProvider,
    /// Deliveries planned (copies included).
    pub deliveries: PerProvider,
    /// HTTP attempts.
    pub attempts: PerProvider,
    /// Deliveries answered 2xx.
    pub accepted: PerProvider,
    /// Deliveries answered a final 4xx.
    pub rejected: PerProvider,
    /// Attempts retried after 5xx/408/429.
    pub retried_status: PerProvider,
    /// Attempts retried after a connection error.
    pub retried_connection: PerProvider,
    /// Attempts that may have been enqueued without a 2xx.
    pub ambiguous: PerProvider,
    /// Deliveries given up on.
    pub gave_up: PerProvider,
    /// Inbox rows by outcome (first delivery of each key).
    pub first: BTreeMap<String, PerProvider>,
    /// Later deliveries counted on their inbox row.
    pub duplicates: PerProvider,
    /// Dead-letter rows by reason.
    pub dead_letters: BTreeMap<String, PerProvider>,
    /// Stories whose final state was checked / could not be (a delivery given up).
    pub stories_checked: PerProvider,
    /// Stories not checked.
    pub stories_undetermined: PerProvider,
    /// Webhooks accepted (at least one copy 2xx) whose effect (or expected dead letter) is
    /// missing from Postgres.
    pub lost_webhooks: Vec<Finding>,
    /// Accepted deliveries of a key not all seen by Postgres (processed < accepted).
    pub lost_deliveries: Vec<Finding>,
    /// One request enqueued twice, an effect applied twice (history row, outbox row).
    pub applied_twice: Vec<Finding>,
    /// Final state differs from the expected one, or an event left parked.
    pub ordering: Vec<Finding>,
    /// Dead letters nobody expected, and refused requests that were enqueued anyway, and valid
    /// webhooks refused.
    pub unexpected: Vec<Finding>,
}

impl Accounting {
    /// Deliveries processed per provider as Postgres tells it: first deliveries (inbox rows not
    /// dead-lettered) + duplicates + dead-letter rows.
    pub fn processed(&self) -> PerProvider {
        let mut out = self.duplicates;
        for (outcome, counts) in &self.first {
            if outcome != "dead_lettered" {
                add(&mut out, counts);
            }
        }
        for counts in self.dead_letters.values() {
            add(&mut out, counts);
        }
        out
    }

    /// Whether every promise held.
    pub fn passed(&self) -> bool {
        self.lost_webhooks.is_empty()
            && self.lost_deliveries.is_empty()
            && self.applied_twice.is_empty()
            && self.ordering.is_empty()
            && self.unexpected.is_empty()
            && self.gave_up.iter().all(|&n| n == 0)
    }
}

fn add(into: &mut PerProvider, from: &PerProvider) {
    for (a, b) in into.iter_mut().zip(from) {
        *a += b;
    }
}

/// The webhook index an `x-request-id` of ours names (`soak-<webhook>-<delivery>-<attempt>`).
fn webhook_of(request_id: &str) -> Option<usize> {
    request_id.strip_prefix("soak-")?.split('-').next()?.parse().ok()
}

struct InboxRow {
    endpoint: String,
    entity_id: String,
    outcome: String,
    duplicates: i32,
}

struct DeadLetter {
    endpoint: Option<String>,
    reason: String,
    dedupe_key: Option<String>,
    webhook: Option<usize>,
}

/// Reads Postgres and checks it against the traffic and what the sender saw.
pub async fn account(db: &Client, traffic: &Traffic, sent: &[Vec<Delivery>]) -> anyhow::Result<Accounting> {
    let mut a = Accounting::default();
    let w_count = traffic.webhooks.len();
    // What the sender saw, per webhook.
    let mut accepted = vec![0u64; w_count];
    let mut last_settled = vec![None::<f64>; w_count];
    let mut answers: Vec<Vec<Final>> = vec![Vec::new(); w_count];
    for w in &traffic.webhooks {
        a.webhooks[column(w.provider)] += 1;
    }
    for d in sent.iter().flatten() {
        let c = column(traffic.webhooks[d.webhook].provider);
        a.deliveries[c] += 1;
        a.attempts[c] += u64::from(d.attempts);
        a.retried_status[c] += u64::from(d.retried_status);
        a.retried_connection[c] += u64::from(d.retried_connection);
        a.ambiguous[c] += u64::from(d.ambiguous);
        match d.outcome {
            Final::Accepted => {
                a.accepted[c] += 1;
                accepted[d.webhook] += 1;
            }
            Final::Rejected(_) => a.rejected[c] += 1,
            Final::GaveUp => a.gave_up[c] += 1,
        }
        answers[d.webhook].push(d.outcome);
        last_settled[d.webhook] = Some(d.settled_s);
    }

    // Postgres.
    let mut inbox: HashMap<(String, String), InboxRow> = HashMap::new();
    for row in db
        .query(
            "SELECT endpoint, dedupe_key, entity_id, outcome, duplicates FROM inbox",
            &[],
        )
        .await?
    {
        let r = InboxRow {
            endpoint: row.get(0),
            entity_id: row.get(2),
            outcome: row.get(3),
            duplicates: row.get(4),
        };
        if let Some(c) = provider_of_endpoint(&r.endpoint) {
            a.first.entry(r.outcome.clone()).or_default()[c] += 1;
            a.duplicates[c] += r.duplicates.max(0) as u64;
        }
        inbox.insert((row.get(0), row.get(1)), r);
    }
    // Envelopes by the request that carried them.
    let mut envelope_webhook: HashMap<Uuid, usize> = HashMap::new();
    let mut request_envelopes: HashMap<String, HashSet<Uuid>> = HashMap::new();
    let mut raw_by_webhook = vec![0u32; w_count];
    for row in db
        .query(
            "SELECT r.envelope_id, h->>1 FROM raw_events r, jsonb_array_elements(r.headers) h
             WHERE h->>0 = 'x-request-id'",
            &[],
        )
        .await?
    {
        let (envelope, request): (Uuid, String) = (row.get(0), row.get(1));
        if let Some(w) = webhook_of(&request).filter(|&w| w < w_count) {
            envelope_webhook.insert(envelope, w);
            raw_by_webhook[w] += 1;
        }
        request_envelopes.entry(request).or_default().insert(envelope);
    }
    let mut dead = Vec::new();
    for row in db
        .query(
            "SELECT d.envelope_id, d.endpoint, d.reason, d.dedupe_key,
                    (SELECT h->>1 FROM jsonb_array_elements(d.headers) h WHERE h->>0 = 'x-request-id' LIMIT 1)
             FROM dead_letters d",
            &[],
        )
        .await?
    {
        let request: Option<String> = row.get(4);
        if let Some(request) = &request {
            request_envelopes
                .entry(request.clone())
                .or_default()
                .insert(row.get(0));
        }
        let d = DeadLetter {
            endpoint: row.get(1),
            reason: row.get(2),
            dedupe_key: row.get(3),
            webhook: request.as_deref().and_then(webhook_of).filter(|&w| w < w_count),
        };
        let c = d.endpoint.as_deref().and_then(provider_of_endpoint);
        if let Some(c) = c {
            a.dead_letters.entry(d.reason.clone()).or_default()[c] += 1;
        }
        dead.push(d);
    }

    // One request, one envelope: a second would be the receiver publishing twice.
    for (request, envelopes) in &request_envelopes {
        if envelopes.len() > 1
            && let Some(w) = webhook_of(request).filter(|&w| w < w_count)
        {
            a.applied_twice.push(Finding {
                kind: "one request enqueued twice",
                provider: traffic.webhooks[w].provider,
                detail: format!("request {request}: {} envelopes", envelopes.len()),
                at_s: last_settled[w],
            });
        }
    }

    // Each webhook's fate.
    let mut dead_by_webhook: HashMap<usize, Vec<&DeadLetter>> = HashMap::new();
    for d in &dead {
        if let Some(w) = d.webhook {
            dead_by_webhook.entry(w).or_default().push(d);
        }
    }
    for (i, w) in traffic.webhooks.iter().enumerate() {
        let p = w.provider;
        let finding = |kind, detail: String| Finding {
            kind,
            provider: p,
            detail,
            at_s: last_settled[i],
        };
        let endpoint = PROVIDERS[column(p)].1;
        let refused_wrongly = answers[i].iter().find_map(|f| match f {
            Final::Rejected(s) if w.expect != Expect::Rejected(*s) => Some(*s),
            _ => None,
        });
        if let Some(status) = refused_wrongly {
            a.unexpected.push(finding(
                "answered an unexpected 4xx",
                format!("webhook {i} answered {status}"),
            ));
        }
        match &w.expect {
            Expect::Rejected(_) => {
                if raw_by_webhook[i] > 0 || dead_by_webhook.contains_key(&i) {
                    a.unexpected.push(finding(
                        "refused request enqueued",
                        format!("webhook {i} was answered 4xx but reached the worker"),
                    ));
                }
            }
            Expect::DeadLetter(reason) => {
                if accepted[i] == 0 {
                    continue;
                }
                let rows: Vec<&DeadLetter> = match &w.dedupe_key {
                    // Keyed (an ordering timeout): one row for the key, the inbox row dead-lettered.
                    Some(key) => {
                        let row = inbox.get(&(endpoint.to_owned(), key.clone()));
                        let processed = row.map_or(0, |r| 1 + r.duplicates.max(0) as u64);
                        if processed < accepted[i] {
                            a.lost_deliveries.push(finding(
                                "accepted deliveries not processed",
                                format!(
                                    "webhook {i} key {key}: {processed} processed, {} accepted",
                                    accepted[i]
                                ),
                            ));
                        }
                        if row.is_none_or(|r| r.outcome != "dead_lettered") {
                            a.lost_webhooks.push(finding(
                                "expected dead letter missing",
                                format!(
                                    "webhook {i} key {key}: inbox outcome {:?}, expected dead_lettered ({reason})",
                                    row.map(|r| r.outcome.as_str())
                                ),
                            ));
                        }
                        dead.iter()
                            .filter(|d| d.dedupe_key.as_deref() == Some(key.as_str()))
                            .collect()
                    }
                    None => {
                        let found: Vec<&DeadLetter> = dead_by_webhook.get(&i).cloned().unwrap_or_default();
                        if (found.len() as u64) < accepted[i] {
                            a.lost_deliveries.push(finding(
                                "accepted deliveries not dead-lettered",
                                format!(
                                    "webhook {i}: {} dead letters, {} accepted",
                                    found.len(),
                                    accepted[i]
                                ),
                            ));
                        }
                        found
                    }
                };
                if rows.is_empty() {
                    a.lost_webhooks.push(finding(
                        "expected dead letter missing",
                        format!("webhook {i}: no dead letter ({reason})"),
                    ));
                }
                for d in rows {
                    if d.reason != *reason {
                        a.unexpected.push(finding(
                            "dead letter of another reason",
                            format!("webhook {i}: {} instead of {reason}", d.reason),
                        ));
                    }
                }
            }
            Expect::Effect => {
                if let Some(ds) = dead_by_webhook.get(&i) {
                    for d in ds {
                        a.unexpected.push(finding(
                            "unexpected dead letter",
                            format!("webhook {i}: {}", d.reason),
                        ));
                    }
                }
                if accepted[i] == 0 {
                    continue;
                }
                match &w.dedupe_key {
                    Some(key) => {
                        let row = inbox.get(&(endpoint.to_owned(), key.clone()));
                        let processed = row.map_or(0, |r| 1 + r.duplicates.max(0) as u64);
                        if processed < accepted[i] {
                            a.lost_deliveries.push(finding(
                                "accepted deliveries not processed",
                                format!(
                                    "webhook {i} key {key}: {processed} processed, {} accepted",
                                    accepted[i]
                                ),
                            ));
                        }
                        match row.map(|r| r.outcome.as_str()) {
                            Some("applied" | "released" | "stale" | "duplicate") => {}
                            Some("parked") => a.ordering.push(finding(
                                "left parked",
                                format!("webhook {i} key {key} still parked"),
                            )),
                            other => a.lost_webhooks.push(finding(
                                "effect missing",
                                format!("webhook {i} key {key}: inbox outcome {other:?}"),
                            )),
                        }
                    }
                    // Spark: some copy of it is kept as a raw event (the first one processed is
                    // applied or stale; only later copies can be duplicates of it).
                    None => {
                        if raw_by_webhook[i] == 0 {
                            a.lost_webhooks.push(finding(
                                "snapshot missing",
                                format!("Spark webhook {i}: no envelope of it in raw_events"),
                            ));
                        }
                    }
                }
            }
        }
    }
    // Dead letters of no webhook of ours (a foreign message, or one without our request id).
    for d in &dead {
        if d.webhook.is_none()
            && d.dedupe_key
                .as_ref()
                .is_none_or(|k| !traffic.webhooks.iter().any(|w| w.dedupe_key.as_ref() == Some(k)))
        {
            a.unexpected.push(Finding {
                kind: "dead letter of no known webhook",
                provider: d
                    .endpoint
                    .as_deref()
                    .and_then(provider_of_endpoint)
                    .map_or(Provider::Standard, |c| PROVIDERS[c].0),
                detail: format!("reason {}", d.reason),
                at_s: None,
            });
        }
    }

    check_stories(db, traffic, sent, &inbox, &envelope_webhook, &mut a).await?;

    // Effects applied twice: a history row per policy listed, an outbox row per changed contact.
    for row in db
        .query(
            "SELECT transaction_id, count(*) FROM healthsherpa_status_history GROUP BY 1 HAVING count(*) > 1",
            &[],
        )
        .await?
    {
        let txn: String = row.get(0);
        let n: i64 = row.get(1);
        a.applied_twice.push(Finding {
            kind: "status event recorded twice",
            provider: Provider::HealthSherpa,
            detail: format!("{txn}: {n} history rows"),
            at_s: None,
        });
    }
    for row in db
        .query(
            "SELECT envelope_id, count(*) FROM outbox GROUP BY 1 HAVING count(*) > 1",
            &[],
        )
        .await?
    {
        let envelope: Uuid = row.get(0);
        let n: i64 = row.get(1);
        a.applied_twice.push(Finding {
            kind: "contact change notified twice",
            provider: Provider::Spark,
            detail: format!("envelope {envelope}: {n} outbox rows"),
            at_s: envelope_webhook.get(&envelope).and_then(|&w| last_settled[w]),
        });
    }
    Ok(a)
}

/// Per story: the final state it must leave.
async fn check_stories(
    db: &Client,
    traffic: &Traffic,
    sent: &[Vec<Delivery>],
    inbox: &HashMap<(String, String), InboxRow>,
    envelope_webhook: &HashMap<Uuid, usize>,
    a: &mut Accounting,
) -> anyhow::Result<()> {
    let contacts: HashMap<String, Uuid> = db
        .query("SELECT spark_id, snapshot_envelope_id FROM contacts", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    // Applied snapshots and outbox rows per contact: one notification per applied snapshot.
    let mut applied_per_contact: HashMap<&str, i64> = HashMap::new();
    // Deliveries of each contact Postgres saw: its inbox rows (one per envelope) and the
    // redeliveries counted on them.
    let mut processed_per_contact: HashMap<&str, u64> = HashMap::new();
    for r in inbox.values() {
        if r.endpoint == "spark" {
            *processed_per_contact.entry(r.entity_id.as_str()).or_default() += 1 + r.duplicates.max(0) as u64;
            if r.outcome == "applied" {
                *applied_per_contact.entry(r.entity_id.as_str()).or_default() += 1;
            }
        }
    }
    let outbox: HashMap<String, i64> = db
        .query("SELECT contact_id, count(*) FROM outbox GROUP BY 1", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let referrals: HashMap<(String, String), (String, Option<String>)> = db
        .query(
            "SELECT campaign_id, subscriber_id, status, referrer_id FROM sparkloop_referrals",
            &[],
        )
        .await?
        .iter()
        .map(|r| ((r.get(0), r.get(1)), (r.get(2), r.get(3))))
        .collect();
    let rewards: HashMap<String, (bool, bool)> = db
        .query(
            "SELECT subscriber_id, unlocked_at IS NOT NULL, redeemed_at IS NOT NULL FROM sparkloop_rewards
             WHERE campaign_id = $1 AND reward_id = $2",
            &[&LOOP_CAMPAIGN, &REWARD],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let leads: HashMap<String, (String, Option<String>, bool, bool, bool)> = db
        .query(
            "SELECT id, status, address->>'zip', enrichment IS NOT NULL, rental_alert IS NOT NULL,
                    contact_request IS NOT NULL FROM leads",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))))
        .collect();
    let policies: HashMap<String, (Option<String>, String)> = db
        .query(
            "SELECT policy_id, status, status_transaction_id FROM healthsherpa_policies",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let applications: HashMap<String, (Option<String>, String)> = db
        .query(
            "SELECT application_key, policy_status, status_transaction_id FROM healthsherpa_applications",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), (r.get(1), r.get(2))))
        .collect();
    let parked: HashMap<String, i64> = db
        .query("SELECT entity_id, count(*) FROM parked_events GROUP BY 1", &[])
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();

    for (s, story) in traffic.stories.iter().enumerate() {
        let deliveries = &sent[s];
        let Some(first) = story.deliveries.first() else {
            continue;
        };
        let provider = traffic.webhooks[*first].provider;
        let c = column(provider);
        let at_s = deliveries.iter().map(|d| d.settled_s).reduce(f64::max);
        let wrong = |what: String| Finding {
            kind: "final state differs",
            provider,
            detail: what,
            at_s,
        };
        if matches!(story.kind, StoryKind::Junk) {
            continue;
        }
        // Every webhook of the story accepted, or the expected state is unknown.
        let all_accepted = story.deliveries.iter().all(|w| {
            deliveries
                .iter()
                .any(|d| d.webhook == *w && d.outcome == Final::Accepted)
        });
        let mut found = Vec::new();
        match &story.kind {
            StoryKind::Contact { spark_id } => {
                // Newest received wins: the last accepted delivery (they were sent one by one).
                let last = deliveries.iter().rposition(|d| d.outcome == Final::Accepted);
                let settled_after =
                    last.is_some_and(|l| deliveries[l + 1..].iter().all(|d| d.outcome != Final::GaveUp));
                let Some(last) = last.filter(|_| settled_after) else {
                    a.stories_undetermined[c] += 1;
                    continue;
                };
                let expected = deliveries[last].webhook;
                let accepted = deliveries.iter().filter(|d| d.outcome == Final::Accepted).count() as u64;
                let processed = processed_per_contact.get(spark_id.as_str()).copied().unwrap_or(0);
                if processed < accepted {
                    a.lost_deliveries.push(Finding {
                        kind: "accepted deliveries not processed",
                        provider,
                        detail: format!("contact {spark_id}: {processed} processed, {accepted} accepted"),
                        at_s,
                    });
                }
                match contacts.get(spark_id) {
                    None => found.push(wrong(format!("contact {spark_id} missing"))),
                    Some(envelope) => match envelope_webhook.get(envelope) {
                        Some(&w) if w == expected => {}
                        Some(&w) => found.push(wrong(format!(
                            "contact {spark_id} holds webhook {w}'s snapshot, expected webhook {expected}'s (the last received)"
                        ))),
                        None => found.push(wrong(format!(
                            "contact {spark_id} holds envelope {envelope}, not one of ours"
                        ))),
                    },
                }
                let applied = applied_per_contact.get(spark_id.as_str()).copied().unwrap_or(0);
                let notified = outbox.get(spark_id).copied().unwrap_or(0);
                if applied != notified {
                    a.applied_twice.push(Finding {
                        kind: "outbox rows ≠ applied snapshots",
                        provider,
                        detail: format!("contact {spark_id}: {applied} applied, {notified} outbox rows"),
                        at_s,
                    });
                }
            }
            _ if !all_accepted => {
                a.stories_undetermined[c] += 1;
                continue;
            }
            StoryKind::Loop { subscriber, referrer } => {
                let partner = referrals.get(&(PARTNER_CAMPAIGN.to_owned(), subscriber.clone()));
                if partner.map(|r| r.0.as_str()) != Some("verified") {
                    found.push(wrong(format!(
                        "partner referral of {subscriber}: {:?}, expected verified",
                        partner.map(|r| &r.0)
                    )));
                }
                let tracked = referrals.get(&(LOOP_CAMPAIGN.to_owned(), subscriber.clone()));
                if tracked.map(|r| (r.0.as_str(), r.1.as_deref()))
                    != Some(("tracked", Some(referrer.as_str())))
                {
                    found.push(wrong(format!(
                        "referral of {subscriber}: {tracked:?}, expected tracked by {referrer}"
                    )));
                }
                if rewards.get(subscriber) != Some(&(true, true)) {
                    found.push(wrong(format!(
                        "reward of {subscriber}: (unlocked, redeemed) = {:?}, expected both",
                        rewards.get(subscriber)
                    )));
                }
            }
            StoryKind::Lead { lead } => {
                let expected = (
                    "contact_info_provided".to_owned(),
                    Some("07006-1234".to_owned()),
                    true,
                    true,
                    true,
                );
                match leads.get(lead) {
                    Some(l) if *l == expected => {}
                    other => found.push(wrong(format!(
                        "lead {lead}: (status, zip, enriched, rental alert, contact request) = {other:?}, expected {expected:?}"
                    ))),
                }
                if let Some(n) = parked.get(lead) {
                    found.push(wrong(format!("lead {lead}: {n} events still parked")));
                }
            }
            StoryKind::Application {
                application,
                policy,
                events,
            } => {
                // Newest (event time, transaction id) wins: the generator makes it the last one.
                let (_, txn, status) = events.last().expect("events");
                let want = (Some((*status).to_owned()), txn.clone());
                if policies.get(policy) != Some(&want) {
                    found.push(wrong(format!(
                        "policy {policy}: {:?}, expected {want:?}",
                        policies.get(policy)
                    )));
                }
                if applications.get(application) != Some(&want) {
                    found.push(wrong(format!(
                        "application {application}: {:?}, expected {want:?}",
                        applications.get(application)
                    )));
                }
            }
            StoryKind::Junk => unreachable!("handled above"),
        }
        a.stories_checked[c] += 1;
        a.ordering.extend(found);
    }
    // Parked events of no lead story (an orphan should have timed out).
    for (entity, n) in &parked {
        if entity.starts_with("lead_orphan_") {
            a.ordering.push(Finding {
                kind: "left parked",
                provider: Provider::Spark360,
                detail: format!("{entity}: {n} parked past the limit"),
                at_s: None,
            });
        }
    }
    Ok(())
}
