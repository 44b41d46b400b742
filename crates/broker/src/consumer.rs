//! Consuming work queues: one connection, one channel per queue with bounded prefetch, and a
//! bounded number of deliveries handled at once. Reconnects with backoff after any connection
//! error; whatever was unacked then is redelivered by the broker (handlers are idempotent).
//!
//! Ack semantics are the handler's verdict (acks are batched per channel, see `acks`): [`Disposition::Ack`] once the delivery's outcome is
//! durable elsewhere (committed, re-queued for retry, dead-lettered), [`Disposition::Requeue`]
//! when nothing durable happened and the broker should deliver it again.
//!
//! Shutdown (the token): stop taking deliveries, cancel the consumers, wait for in-flight
//! handlers to finish and ack, then close — prefetched but unstarted deliveries go back to the
//! queue when the channel closes.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};

use futures_util::stream::select_all;
use futures_util::{FutureExt, StreamExt};
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::acks::AckBatch;
use crate::{BrokerError, Topology, metrics as m, topology};

/// How a [`Consumer`] connects and how much it takes on.
#[derive(Clone)]
pub struct ConsumerConfig {
    /// AMQP URL (may hold a password: never logged).
    pub amqp_url: SecretString,
    /// Declared at every (re)connect, so the queues exist.
    pub topology: Topology,
    /// Queues to consume.
    pub queues: Vec<String>,
    /// Unacked deliveries the broker may push per queue.
    pub prefetch: u16,
    /// Deliveries handled at once, over all queues.
    pub concurrency: usize,
    /// Connection name shown in the broker and `role` label of the connection metrics.
    pub role: &'static str,
}

impl std::fmt::Debug for ConsumerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsumerConfig")
            .field("amqp_url", &"<redacted>")
            .field("queues", &self.queues)
            .field("prefetch", &self.prefetch)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

/// One delivered message, as handed to the handler.
pub struct Delivery {
    /// The queue it came from (also the routing key a retry must use to come back).
    pub queue: String,
    /// Its properties and headers.
    pub properties: BasicProperties,
    /// Its body.
    pub body: Vec<u8>,
    /// Whether the broker delivered it before (to this or another consumer).
    pub redelivered: bool,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("queue", &self.queue)
            .field("redelivered", &self.redelivered)
            .finish_non_exhaustive()
    }
}

/// What to do with a delivery once its handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Remove it from the queue.
    Ack,
    /// Give it back to the broker for redelivery.
    Requeue,
}

/// A consumer of work queues. Cheap to clone; [`Consumer::run`] drives it.
#[derive(Debug, Clone)]
pub struct Consumer {
    config: ConsumerConfig,
    connected: Arc<AtomicBool>,
}

impl Consumer {
    /// A consumer that connects when run.
    pub fn new(config: ConsumerConfig) -> Consumer {
        Consumer {
            config,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Whether it is connected and consuming right now.
    pub fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Consumes until `shutdown` is cancelled, calling `handler` for each delivery with at most
    /// `concurrency` running at once; returns after in-flight handlers finished.
    pub async fn run<H, Fut>(&self, handler: H, shutdown: CancellationToken)
    where
        H: Fn(Delivery) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Disposition> + Send + 'static,
    {
        let handler = Arc::new(handler);
        let permits = Arc::new(Semaphore::new(self.config.concurrency.max(1)));
        let tracker = TaskTracker::new();
        let role = self.config.role;
        while let Some((connection, channels)) = self.connect(&shutdown).await {
            self.connected.store(true, Ordering::Relaxed);
            metrics::gauge!(m::CONNECTED, "role" => role).set(1.0);
            metrics::counter!(m::CONNECTS_TOTAL, "role" => role).increment(1);
            tracing::info!(role, queues = channels.len(), "consuming");
            let flushers = CancellationToken::new();
            let mut streams = Vec::new();
            let mut batches = Vec::new();
            let mut flusher_tasks = Vec::new();
            for (channel, consumer, queue) in &channels {
                let queue = queue.clone();
                let acks = AckBatch::new(channel.clone());
                flusher_tasks.push(tokio::spawn(acks.clone().run_flusher(flushers.clone())));
                batches.push(acks.clone());
                streams.push(
                    consumer
                        .clone()
                        .map(move |d| (queue.clone(), acks.clone(), d))
                        .boxed(),
                );
            }
            let mut merged = select_all(streams);
            let stopping =
                loop {
                    let permit = tokio::select! {
                        _ = shutdown.cancelled() => break true,
                        p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break true },
                    };
                    let item = tokio::select! {
                        _ = shutdown.cancelled() => break true,
                        item = merged.next() => item,
                    };
                    let (queue, acks, delivery) = match item {
                        Some((q, a, Ok(d))) => (q, a, d),
                        Some((_, _, Err(e))) => {
                            tracing::warn!(role, error = %e, "consumer error; reconnecting");
                            break false;
                        }
                        None => break false,
                    };
                    let tag = delivery.delivery_tag;
                    acks.started(tag);
                    let handler = handler.clone();
                    tracker.spawn(async move {
                    let acker = delivery.acker;
                    let handled = AssertUnwindSafe(handler(Delivery {
                        queue,
                        properties: delivery.properties,
                        body: delivery.data,
                        redelivered: delivery.redelivered,
                    }))
                    .catch_unwind()
                    .await;
                    // A panicking handler must still settle its delivery: left unsettled it would
                    // hold back every batched ack behind it. Requeued, a message that panics again
                    // and again reaches the queue's delivery limit and is dead-lettered by the broker.
                    let disposition = handled.unwrap_or_else(|_| {
                        tracing::error!(role, "handler panicked; requeueing the delivery");
                        Disposition::Requeue
                    });
                    // The ack itself is batched (see `acks`). A lost ack (connection gone) means
                    // redelivery: the handler's work is idempotent, so the rerun is a duplicate.
                    match disposition {
                        Disposition::Ack => acks.done(tag),
                        Disposition::Requeue => {
                            let nack = BasicNackOptions { requeue: true, ..BasicNackOptions::default() };
                            if let Err(e) = acker.nack(nack).await {
                                tracing::warn!(error = %e, "nack failed; the message will be redelivered");
                            }
                            acks.abandoned(tag);
                        }
                    }
                    drop(permit);
                });
                };
            flushers.cancel();
            for task in flusher_tasks {
                let _ = task.await;
            }
            self.connected.store(false, Ordering::Relaxed);
            metrics::gauge!(m::CONNECTED, "role" => role).set(0.0);
            if stopping {
                // Stop new deliveries first, then let in-flight handlers finish and ack.
                for (channel, consumer, _) in &channels {
                    let _ = channel
                        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
                        .await;
                }
                tracker.close();
                tracker.wait().await;
                // Ack what finished; the flushers are stopped, so this is the only sender.
                for acks in &batches {
                    if let Err(e) = acks.flush().await {
                        tracing::warn!(error = %e, "final ack failed; those messages will be redelivered");
                    }
                }
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), connection.close(200, "shutdown".into()))
                        .await;
                tracing::info!(role, "consumer stopped");
                return;
            }
            metrics::counter!(m::DISCONNECTS_TOTAL, "role" => role).increment(1);
            let _ = tokio::time::timeout(
                Duration::from_secs(2),
                connection.close(200, "reconnecting".into()),
            )
            .await;
        }
        tracker.close();
        tracker.wait().await;
    }

    /// Connects with backoff until it succeeds or `shutdown` is cancelled.
    async fn connect(
        &self,
        shutdown: &CancellationToken,
    ) -> Option<(Connection, Vec<(Channel, lapin::Consumer, String)>)> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(5))
            .with_jitter()
            .without_max_times();
        let role = self.config.role;
        let attempt = || async {
            match tokio::time::timeout(Duration::from_secs(10), self.connect_once()).await {
                Ok(result) => result,
                Err(_) => Err(BrokerError::Unavailable),
            }
        };
        let connect = attempt.retry(backoff).notify(|err: &BrokerError, wait: Duration| {
            tracing::warn!(role, error = %err, retry_in_ms = wait.as_millis() as u64, "broker connect failed");
        });
        tokio::select! {
            _ = shutdown.cancelled() => None,
            session = connect => session.ok(),
        }
    }

    async fn connect_once(
        &self,
    ) -> Result<(Connection, Vec<(Channel, lapin::Consumer, String)>), BrokerError> {
        let config = &self.config;
        let properties = ConnectionProperties::default().with_connection_name(config.role.into());
        let connection = Connection::connect(config.amqp_url.expose_secret(), properties).await?;
        let mut channels = Vec::with_capacity(config.queues.len());
        for (i, queue) in config.queues.iter().enumerate() {
            let channel = connection.create_channel().await?;
            if i == 0 {
                topology::declare(&channel, &config.topology).await?;
            }
            // Per-consumer prefetch: how far the broker runs ahead of our acks on this queue.
            channel
                .basic_qos(config.prefetch, BasicQosOptions::default())
                .await?;
            let consumer = channel
                .basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            channels.push((channel, consumer, queue.clone()));
        }
        Ok((connection, channels))
    }
}
