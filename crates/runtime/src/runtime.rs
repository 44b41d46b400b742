//! The consumer runtime: runs a [`Handler`] over work queues and settles each verdict durably.
//!
//! - `Done` → ack (batched by the broker crate's consumer);
//! - `Retry` → republish, confirmed, to the delay tier of the next attempt (the one retry-delay
//!   function, `next_step_not_before`, with jitter and an optional earliest time), then ack; after
//!   the last tier → dead letter `retries_exhausted`;
//! - `DeadLetter` → publish, confirmed, to the dead-letter exchange with reason, attempts, errors
//!   and context headers, then ack — the dead-letter recorder writes its Postgres row;
//! - `HandBack` → pause, then give the delivery back to the broker.
//!
//! A retry or dead-letter publish that fails is tried again with backoff while the delivery stays
//! unacked (the consumer pauses on it, holding one of its concurrency slots), so a broker that
//! refuses publishes — a memory alarm, a stalled connection — never burns the queue's delivery
//! limit. On shutdown such a delivery is handed back instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use intake_broker::retry::{self, NextStep};
use intake_broker::{Consumer, ConsumerConfig, Delivery, Disposition, Publisher, Topology, codec, dead};
use tokio_util::sync::CancellationToken;

use crate::metrics as m;
use crate::{Failure, Handler, Settled, Verdict};

mod batch;

pub use batch::{BatchHandler, Batching};

/// What the runtime tells a handler once it settled a failed delivery.
type OnSettled<'a> = dyn Fn(&Delivery, Settled<'_>) + Send + Sync + 'a;

/// The reason of a dead letter whose retries ran out.
pub const RETRIES_EXHAUSTED: &str = "retries_exhausted";

/// Longest pause between two tries of a failing retry or dead-letter publish.
const MAX_PUBLISH_BACKOFF: Duration = Duration::from_secs(30);
/// First pause after a failed retry or dead-letter publish.
const MIN_PUBLISH_BACKOFF: Duration = Duration::from_millis(250);

/// A consumer of work queues with the settling logic every consumer shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ConsumerRuntime {
    name: &'static str,
    consumer: Consumer,
    publisher: Publisher,
    topology: Topology,
    progress: Arc<Progress>,
}

/// When the runtime last settled a delivery, and how many are in flight: a consumer with work in
/// flight that settles nothing for too long is stuck, and says so through [`ConsumerRuntime::is_healthy`].
#[derive(Debug)]
struct Progress {
    started: Instant,
    /// Milliseconds since `started` of the last settle (or of the start).
    last_settled_ms: AtomicI64,
    in_flight: AtomicUsize,
}

impl Progress {
    fn touch(&self) {
        let ms = i64::try_from(self.started.elapsed().as_millis()).unwrap_or(i64::MAX);
        self.last_settled_ms.store(ms, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        let now = self.started.elapsed().as_millis();
        let last = u128::try_from(self.last_settled_ms.load(Ordering::Relaxed)).unwrap_or(0);
        Duration::from_millis(u64::try_from(now.saturating_sub(last)).unwrap_or(u64::MAX))
    }
}

impl ConsumerRuntime {
    /// A runtime named `name` (the `consumer` metric label) consuming as `config` says and
    /// publishing retries and dead letters through `publisher`.
    pub fn new(name: &'static str, config: ConsumerConfig, publisher: Publisher) -> ConsumerRuntime {
        let topology = config.topology.clone();
        ConsumerRuntime {
            name,
            consumer: Consumer::new(config),
            publisher,
            topology,
            progress: Arc::new(Progress {
                started: Instant::now(),
                last_settled_ms: AtomicI64::new(0),
                in_flight: AtomicUsize::new(0),
            }),
        }
    }

    /// Whether it is connected and consuming.
    pub fn is_connected(&self) -> bool {
        self.consumer.is_connected()
    }

    /// Connected, and not stuck: with deliveries in flight, one was settled within `stuck_after`.
    pub fn is_healthy(&self, stuck_after: Duration) -> bool {
        let busy = self.progress.in_flight.load(Ordering::Relaxed) > 0;
        self.is_connected() && !(busy && self.progress.idle_for() > stuck_after)
    }

    /// Consumes until `shutdown` is cancelled; returns once in-flight deliveries are settled.
    pub async fn run<H: Handler>(&self, handler: Arc<H>, shutdown: CancellationToken) {
        self.register_gauges();
        let runtime = self.clone();
        let stop = shutdown.clone();
        self.consumer
            .run(
                move |delivery| {
                    let (runtime, handler, stop) = (runtime.clone(), handler.clone(), stop.clone());
                    async move { runtime.handle(&*handler, delivery, &stop).await }
                },
                shutdown,
            )
            .await;
    }

    /// Both gauges exist from the start at 0 (`increment(0.0)` registers without changing a
    /// value), so a healthy consumer shows 0 instead of no series: silence is not health.
    fn register_gauges(&self) {
        metrics::gauge!(m::IN_FLIGHT, "consumer" => self.name).increment(0.0);
        metrics::gauge!(m::WAITING_TO_PUBLISH, "consumer" => self.name).increment(0.0);
    }

    async fn handle<H: Handler>(
        &self,
        handler: &H,
        delivery: Delivery,
        stop: &CancellationToken,
    ) -> Disposition {
        let started = Instant::now();
        let name = self.name;
        self.progress.in_flight.fetch_add(1, Ordering::Relaxed);
        metrics::gauge!(m::IN_FLIGHT, "consumer" => name).increment(1.0);
        let verdict = handler.handle(&delivery).await;
        let on_settled = |d: &Delivery, s: Settled<'_>| handler.settled(d, s);
        let (disposition, outcome) = self.settle(&on_settled, &delivery, verdict, stop).await;
        metrics::gauge!(m::IN_FLIGHT, "consumer" => name).decrement(1.0);
        metrics::counter!(m::DELIVERIES_TOTAL, "consumer" => name, "outcome" => outcome).increment(1);
        metrics::histogram!(m::HANDLE_SECONDS, "consumer" => name).record(started.elapsed().as_secs_f64());
        self.progress.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.progress.touch();
        disposition
    }

    async fn settle(
        &self,
        on_settled: &OnSettled<'_>,
        delivery: &Delivery,
        verdict: Verdict,
        stop: &CancellationToken,
    ) -> (Disposition, &'static str) {
        let previous = codec::attempt(&delivery.properties);
        match verdict {
            Verdict::Done => (Disposition::Ack, "done"),
            Verdict::HandBack { pause } => {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.cancelled() => {}
                }
                (Disposition::Requeue, "handed_back")
            }
            Verdict::Retry(failure) => {
                let step = retry::next_step_not_before(
                    self.topology.retry_tiers(),
                    previous,
                    failure.not_before,
                    rand::random::<f64>(),
                );
                match step {
                    NextStep::Retry {
                        tier,
                        expiration,
                        attempt,
                    } => {
                        let properties = retry::retry_properties(
                            &delivery.properties,
                            tier,
                            expiration,
                            attempt,
                            &failure.error,
                        );
                        let exchange = self.topology.retry_exchange();
                        // Routing key = the work queue: when the wait is over it comes back there.
                        if !self
                            .publish_until(&exchange, delivery, properties, "retry", stop)
                            .await
                        {
                            return (Disposition::Requeue, "handed_back");
                        }
                        tracing::warn!(
                            consumer = self.name, queue = %delivery.queue, attempt,
                            retry_in_ms = expiration.as_millis() as u64, reason = %failure.reason,
                            error = %failure.error, "transient failure; retrying later"
                        );
                        on_settled(
                            delivery,
                            Settled::Retried {
                                failure: &failure,
                                attempt,
                            },
                        );
                        (Disposition::Ack, "retried")
                    }
                    NextStep::GiveUp { attempts } => {
                        self.dead_letter(on_settled, delivery, &failure, RETRIES_EXHAUSTED, attempts, stop)
                            .await
                    }
                }
            }
            Verdict::DeadLetter(failure) => {
                let reason = failure.reason.clone();
                self.dead_letter(
                    on_settled,
                    delivery,
                    &failure,
                    &reason,
                    previous.saturating_add(1),
                    stop,
                )
                .await
            }
        }
    }

    async fn dead_letter(
        &self,
        on_settled: &OnSettled<'_>,
        delivery: &Delivery,
        failure: &Failure,
        reason: &str,
        attempts: u32,
        stop: &CancellationToken,
    ) -> (Disposition, &'static str) {
        let properties =
            retry::dead_letter_properties(&delivery.properties, reason, attempts, &failure.error);
        let properties = dead::with_context(
            properties,
            &delivery.queue,
            failure.event_type.as_deref(),
            failure.dedupe_key.as_deref(),
            false,
        );
        let exchange = self.topology.dead_letter_exchange();
        if !self
            .publish_until(&exchange, delivery, properties, "dead_letter", stop)
            .await
        {
            return (Disposition::Requeue, "handed_back");
        }
        tracing::warn!(
            consumer = self.name, queue = %delivery.queue, reason, attempts,
            event_type = failure.event_type.as_deref().unwrap_or("unknown"), error = %failure.error,
            "dead-lettered"
        );
        on_settled(
            delivery,
            Settled::DeadLettered {
                failure,
                reason,
                attempts,
            },
        );
        (Disposition::Ack, "dead_lettered")
    }

    /// Publishes (confirmed) until it succeeds, backing off between tries; `false` if shutdown
    /// came first (the caller hands the delivery back).
    async fn publish_until(
        &self,
        exchange: &str,
        delivery: &Delivery,
        properties: intake_broker::lapin::BasicProperties,
        target: &'static str,
        stop: &CancellationToken,
    ) -> bool {
        let name = self.name;
        let mut backoff = MIN_PUBLISH_BACKOFF;
        let mut waiting = false;
        let published = loop {
            match self
                .publisher
                .publish(exchange, &delivery.queue, &delivery.body, properties.clone())
                .await
            {
                Ok(()) => break true,
                Err(e) => {
                    metrics::counter!(m::PUBLISH_FAILURES_TOTAL, "consumer" => name, "target" => target)
                        .increment(1);
                    if !waiting {
                        waiting = true;
                        metrics::gauge!(m::WAITING_TO_PUBLISH, "consumer" => name).increment(1.0);
                        tracing::warn!(consumer = name, target, error = %e, "publish failed; holding the delivery and trying again");
                    }
                    // Jitter so deliveries held together do not retry in lockstep.
                    let pause = backoff.mul_f64(0.5 + rand::random::<f64>() / 2.0);
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => break false,
                    }
                    backoff = (backoff * 2).min(MAX_PUBLISH_BACKOFF);
                }
            }
        };
        if waiting {
            metrics::gauge!(m::WAITING_TO_PUBLISH, "consumer" => name).decrement(1.0);
        }
        published
    }
}
