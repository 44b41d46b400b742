//! Names and declaration of every exchange and queue intake uses, all under one prefix so
//! environments and test runs never share a queue.
//!
//! ```text
//!  receiver ──rk=<provider>──▶ {p}.ingress (direct) ──▶ {p}.q.<provider>   (quorum, one per provider)
//!  outbox relay ─rk=contacts.changed─┘               └─▶ {p}.q.sync         (quorum, contact changes)
//!  worker retry ──rk=<work queue>, header tier──▶ {p}.retry (headers) ──▶ {p}.delay.<tier> (quorum, TTL)
//!                    {p}.delay.<tier> ──TTL expiry, dead-letter, same rk──▶ {p}.ingress ──▶ <work queue>
//!  worker give-up / delivery limit ──▶ {p}.dead (fanout) ──▶ {p}.dead-letters (quorum)
//! ```
//!
//! Every work queue is also bound to the ingress exchange under its own name, which is how a
//! message coming back from a delay queue finds the queue it was retried from.

use std::time::Duration;

use intake_core::Provider;
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::{Channel, ExchangeKind};

use crate::BrokerError;

/// Header on a retried message naming the delay tier it waits in (matched by `{p}.retry`).
pub const DELAY_TIER_HEADER: &str = "intake-delay-tier";
/// Routing key of contact-change messages (outbox relay → sync worker).
pub const CONTACTS_CHANGED_KEY: &str = "contacts.changed";
/// How often the broker redelivers one message before dead-lettering it. The safety net for a
/// message that crashes workers again and again; normal failures are retried by the worker
/// through the delay tiers and never come near this limit.
pub const DELIVERY_LIMIT: i64 = 20;

/// The default retry schedule: 5 s, 30 s, 2 min, 10 min, 1 h, 6 h.
pub const DEFAULT_RETRY_TIERS: [Duration; 6] = [
    Duration::from_secs(5),
    Duration::from_secs(30),
    Duration::from_secs(120),
    Duration::from_secs(600),
    Duration::from_secs(3600),
    Duration::from_secs(6 * 3600),
];

/// The longest retry tier: RabbitMQ takes a TTL (`x-message-ttl`, `expiration`) as a 32-bit
/// count of milliseconds (about 49.7 days) and refuses a larger one.
pub const MAX_RETRY_TIER: Duration = Duration::from_millis(u32::MAX as u64);

/// Parses a retry schedule such as `5s,30s,2m,10m,1h,6h` (units `ms`, `s`, `m`, `h`; each tier
/// positive and at most [`MAX_RETRY_TIER`]).
pub fn parse_retry_tiers(spec: &str) -> Result<Vec<Duration>, String> {
    let tiers = spec
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(|t| {
            let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
            let (n, unit) = t.split_at(split);
            let n: u64 = n.parse().map_err(|_| format!("invalid retry tier {t:?}"))?;
            let millis_per_unit = match unit {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                _ => return Err(format!("invalid retry tier {t:?}: unit must be ms, s, m or h")),
            };
            n.checked_mul(millis_per_unit)
                .map(Duration::from_millis)
                .filter(|tier| *tier <= MAX_RETRY_TIER)
                .ok_or_else(|| {
                    format!("retry tier {t:?} is longer than RabbitMQ's largest TTL (about 49 days)")
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if tiers.is_empty() || tiers.iter().any(Duration::is_zero) {
        return Err("retry tiers must be a non-empty list of positive delays".into());
    }
    Ok(tiers)
}

/// All names, derived from a prefix, and the retry tiers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    prefix: String,
    retry_tiers: Vec<Duration>,
    /// When set, every queue is deleted by the broker after being unused this long (`x-expires`):
    /// for tests and ephemeral environments, never production.
    queue_expiry: Option<Duration>,
}

impl Topology {
    /// Topology under `prefix` with the given retry tiers (attempt n waits in tier n-1).
    pub fn new(prefix: impl Into<String>, retry_tiers: Vec<Duration>) -> Self {
        Topology {
            prefix: prefix.into(),
            retry_tiers,
            queue_expiry: None,
        }
    }

    /// The same topology whose queues expire after `expiry` unused (`None`: never). Every process
    /// sharing a prefix must agree, since RabbitMQ refuses a redeclare with other arguments.
    pub fn with_queue_expiry(mut self, expiry: Option<Duration>) -> Self {
        self.queue_expiry = expiry;
        self
    }

    /// Topology under `prefix` with [`DEFAULT_RETRY_TIERS`].
    pub fn with_default_tiers(prefix: impl Into<String>) -> Self {
        Topology::new(prefix, DEFAULT_RETRY_TIERS.to_vec())
    }

    /// The name prefix.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The retry delays, first attempt first.
    pub fn retry_tiers(&self) -> &[Duration] {
        &self.retry_tiers
    }

    /// Direct exchange the receiver publishes to (routing key = provider name).
    pub fn ingress_exchange(&self) -> String {
        format!("{}.ingress", self.prefix)
    }

    /// The quorum queue holding one provider's envelopes.
    pub fn provider_queue(&self, provider: Provider) -> String {
        format!("{}.q.{}", self.prefix, provider.as_str())
    }

    /// The quorum queue of contact changes for the sync worker.
    pub fn sync_queue(&self) -> String {
        format!("{}.q.sync", self.prefix)
    }

    /// Headers exchange routing a retried message to its delay tier.
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// Name of the delay tier (as used in [`DELAY_TIER_HEADER`]) for a delay, e.g. `5s`, `2m`.
    pub fn tier_name(delay: Duration) -> String {
        let s = delay.as_secs();
        match s {
            // Sub-second parts get millisecond names, so 1500ms and 1s stay different tiers.
            _ if delay.subsec_millis() != 0 || s == 0 => format!("{}ms", delay.as_millis()),
            s if s % 3600 == 0 => format!("{}h", s / 3600),
            s if s % 60 == 0 => format!("{}m", s / 60),
            s => format!("{s}s"),
        }
    }

    /// The delay queue of one tier.
    pub fn delay_queue(&self, delay: Duration) -> String {
        format!("{}.delay.{}", self.prefix, Topology::tier_name(delay))
    }

    /// Fanout exchange for messages given up on.
    pub fn dead_letter_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// The queue operators inspect and replay dead letters from.
    pub fn dead_letter_queue(&self) -> String {
        format!("{}.dead-letters", self.prefix)
    }

    /// Every queue of the topology: work queues, delay tiers and the dead-letter queue.
    pub fn all_queues(&self) -> Vec<String> {
        let mut queues: Vec<String> = self.work_queues().into_iter().map(|(queue, _)| queue).collect();
        queues.extend(self.retry_tiers.iter().map(|d| self.delay_queue(*d)));
        queues.push(self.dead_letter_queue());
        queues
    }

    /// Every exchange of the topology.
    pub fn all_exchanges(&self) -> [String; 3] {
        [
            self.ingress_exchange(),
            self.retry_exchange(),
            self.dead_letter_exchange(),
        ]
    }

    /// Every work queue with the routing keys bound to it on the ingress exchange.
    fn work_queues(&self) -> Vec<(String, String)> {
        let mut queues: Vec<(String, String)> = Provider::ALL
            .iter()
            .map(|p| (self.provider_queue(*p), p.as_str().to_owned()))
            .collect();
        queues.push((self.sync_queue(), CONTACTS_CHANGED_KEY.to_owned()));
        queues
    }
}

fn text(s: impl Into<String>) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.into()))
}

fn short(s: &str) -> ShortString {
    ShortString::from(s)
}

/// Arguments shared by every quorum queue that dead-letters somewhere.
fn quorum_args(dead_letter_exchange: &str) -> FieldTable {
    let mut args = FieldTable::default();
    // Quorum queues replicate and fsync before confirming: a confirmed message survives a broker
    // crash, which is what lets the receiver answer 200.
    args.insert(short("x-queue-type"), text("quorum"));
    // Where a message goes when it is given up on (delivery limit) or, for delay queues, when its
    // wait is over.
    args.insert(short("x-dead-letter-exchange"), text(dead_letter_exchange));
    // The broker keeps a dead-lettered message until the target queue confirmed it, instead of
    // dropping it if the target is unavailable (the default, at-most-once).
    args.insert(short("x-dead-letter-strategy"), text("at-least-once"));
    // Required by at-least-once dead-lettering; should a length limit ever be set, publishers are
    // refused (the receiver answers 503) instead of the oldest message being dropped.
    args.insert(short("x-overflow"), text("reject-publish"));
    args
}

/// Connects to `amqp_url`, [`declare`]s the whole topology and disconnects: what `intake
/// migrate` runs, so the topology exists before any role starts (each role declares it again
/// at every connect anyway).
pub async fn declare_at(amqp_url: &str, topology: &Topology) -> Result<(), BrokerError> {
    let properties = lapin::ConnectionProperties::default().with_connection_name("migrate".into());
    let connection = lapin::Connection::connect(amqp_url, properties).await?;
    let declared = async {
        let channel = connection.create_channel().await?;
        declare(&channel, topology).await
    }
    .await;
    let _ = connection.close(200, "done".into()).await;
    declared
}

/// Declares the whole topology. Idempotent: declaring an existing exchange or queue with the same
/// arguments is a no-op, so every process calls this at start (and after each reconnect).
pub async fn declare(channel: &Channel, topology: &Topology) -> Result<(), BrokerError> {
    // Durable exchanges survive broker restarts; none auto-deletes.
    // Only set for tests and ephemeral environments: queues nobody uses for this long are
    // deleted by the broker, so an aborted run leaves no quorum queues behind.
    let expires = |args: &mut FieldTable| {
        if let Some(expiry) = topology.queue_expiry {
            let ms = i64::try_from(expiry.as_millis()).unwrap_or(i64::MAX);
            args.insert(short("x-expires"), AMQPValue::LongLongInt(ms));
        }
    };
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let durable_queue = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };

    let ingress = topology.ingress_exchange();
    let dead = topology.dead_letter_exchange();
    let retry = topology.retry_exchange();
    channel
        .exchange_declare(
            short(&ingress),
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    // Fanout: everything given up on lands in the one dead-letter queue, whatever its routing key.
    channel
        .exchange_declare(
            short(&dead),
            ExchangeKind::Fanout,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    // Headers exchange: a retry keeps its routing key (the work queue it came from) for the trip
    // back, so the tier is chosen by a header instead.
    channel
        .exchange_declare(
            short(&retry),
            ExchangeKind::Headers,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;

    // The dead-letter queue itself dead-letters nowhere: it is the end of the line.
    let mut dlq_args = FieldTable::default();
    dlq_args.insert(short("x-queue-type"), text("quorum"));
    expires(&mut dlq_args);
    let dlq = topology.dead_letter_queue();
    channel
        .queue_declare(short(&dlq), durable_queue, dlq_args)
        .await?;
    channel
        .queue_bind(
            short(&dlq),
            short(&dead),
            short(""),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;

    for (queue, key) in topology.work_queues() {
        let mut args = quorum_args(&dead);
        // Redeliveries (worker crashes, nacks) before the broker gives up on a message.
        args.insert(short("x-delivery-limit"), AMQPValue::LongLongInt(DELIVERY_LIMIT));
        expires(&mut args);
        channel.queue_declare(short(&queue), durable_queue, args).await?;
        // Fresh messages arrive under the provider / event key ...
        channel
            .queue_bind(
                short(&queue),
                short(&ingress),
                short(&key),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // ... and retried ones come back from a delay queue under the queue's own name.
        channel
            .queue_bind(
                short(&queue),
                short(&ingress),
                short(&queue),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
    }

    for delay in topology.retry_tiers() {
        let queue = topology.delay_queue(*delay);
        // When the wait is over the message is dead-lettered back to ingress with its original
        // routing key, i.e. to the work queue it was retried from.
        let mut args = quorum_args(&ingress);
        // The tier's delay. A retried message may carry a shorter per-message expiration (jitter);
        // this is the upper bound.
        let ttl = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        args.insert(short("x-message-ttl"), AMQPValue::LongLongInt(ttl));
        expires(&mut args);
        channel.queue_declare(short(&queue), durable_queue, args).await?;
        let mut binding = FieldTable::default();
        binding.insert(short("x-match"), text("all"));
        binding.insert(short(DELAY_TIER_HEADER), text(Topology::tier_name(*delay)));
        channel
            .queue_bind(
                short(&queue),
                short(&retry),
                short(""),
                QueueBindOptions::default(),
                binding,
            )
            .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_carry_the_prefix() {
        let t = Topology::with_default_tiers("t1");
        assert_eq!(t.ingress_exchange(), "t1.ingress");
        assert_eq!(t.provider_queue(Provider::SparkLoop), "t1.q.sparkloop");
        assert_eq!(t.delay_queue(Duration::from_secs(120)), "t1.delay.2m");
        assert_eq!(t.delay_queue(Duration::from_secs(6 * 3600)), "t1.delay.6h");
        assert_eq!(t.delay_queue(Duration::from_millis(250)), "t1.delay.250ms");
        assert_eq!(Topology::tier_name(Duration::from_millis(1500)), "1500ms");
        assert_eq!(Topology::tier_name(Duration::from_secs(1)), "1s");
        assert_eq!(t.dead_letter_queue(), "t1.dead-letters");
    }

    #[test]
    fn retry_tiers_parse_with_units() {
        assert_eq!(
            parse_retry_tiers("5s,30s,2m,10m,1h,6h"),
            Ok(DEFAULT_RETRY_TIERS.to_vec())
        );
        assert_eq!(parse_retry_tiers(" 250ms "), Ok(vec![Duration::from_millis(250)]));
        assert!(parse_retry_tiers("5x").is_err());
        assert!(parse_retry_tiers("").is_err());
        assert!(parse_retry_tiers("0s").is_err());
        assert_eq!(parse_retry_tiers("4294967295ms"), Ok(vec![MAX_RETRY_TIER]));
        assert!(parse_retry_tiers("4294968s").is_err());
        assert!(
            parse_retry_tiers("307445734561825861m").is_err(),
            "overflows u64 ms"
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::super::*;

        proptest! {
            /// Any text parses or is refused with a message, never a panic.
            #[test]
            fn any_retry_schedule_text_parses_or_is_refused(spec in "\\PC{0,40}|[0-9 ,]{0,30}(ms|s|m|h)?") {
                let _ = parse_retry_tiers(&spec);
            }

            /// `<n><unit>` is exactly n units when that is positive and within RabbitMQ's TTL
            /// range, else refused (never wrapped around).
            #[test]
            fn a_tier_is_exact_or_refused(n in prop_oneof![0u64..100_000, any::<u64>()], unit in 0usize..4) {
                let (suffix, millis) = [("ms", 1u128), ("s", 1_000), ("m", 60_000), ("h", 3_600_000)][unit];
                let exact = u128::from(n) * millis;
                let parsed = parse_retry_tiers(&format!("{n}{suffix}"));
                if exact == 0 || exact > MAX_RETRY_TIER.as_millis() {
                    prop_assert!(parsed.is_err(), "{}{} parsed as {:?}", n, suffix, parsed);
                } else {
                    prop_assert_eq!(parsed, Ok(vec![Duration::from_millis(exact as u64)]));
                }
            }
        }
    }
}
