//! Batches for a [`BatchHandler`] (the ingest worker's group commit): deliveries gathered up to a
//! size — lingering for more only while several arrive at once, and, while another batch is being
//! handled, gathering until it ends, so a lone delivery on an idle consumer never waits and a
//! moderate stream forms a few full batches instead of many small ones — handed over together,
//! and each verdict settled exactly as [`ConsumerRuntime::run`] settles one.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::future::join_all;
use intake_broker::{Delivery, Disposition};
use tokio::sync::{Mutex, Notify, mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::{ConsumerRuntime, OnSettled};
use crate::metrics as m;
use crate::{Settled, Verdict};

/// How deliveries are grouped for a [`BatchHandler`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    /// Most deliveries in one batch (1: one by one).
    pub max_size: usize,
    /// How long a batch that is not full waits for more. Only when more than one delivery was
    /// ready at once (the queue is busy): a lone delivery on a quiet queue goes straight away.
    pub linger: Duration,
    /// Batches handled at once (for the ingest worker: transactions at once).
    pub at_once: usize,
    /// How long, at most, a batch that is not full keeps gathering while another batch is being
    /// handled (until that one ends, or it is full). Under a moderate stream this takes the
    /// deliveries that arrive during a transaction into the next one instead of starting a
    /// transaction for each; a backlog fills batches at once and never waits; an idle consumer
    /// has nothing running. Zero: never.
    pub gather_while_busy: Duration,
}

impl Batching {
    /// Deliveries the consumer must be allowed to hold so that every batch can be full: the
    /// consumer's concurrency.
    pub fn deliveries_in_flight(&self) -> usize {
        self.max_size.max(1) * self.at_once.max(1)
    }
}

/// A consumer's logic over batches. The runtime owns everything around it, as for [`crate::Handler`].
pub trait BatchHandler: Send + Sync + 'static {
    /// Decides what happens to each delivery of a batch: one verdict per delivery, in order.
    /// Must be idempotent: a delivery may come again, alone or in another batch.
    fn handle_batch(&self, deliveries: &[Delivery]) -> impl Future<Output = Vec<Verdict>> + Send;

    /// Called once a failed delivery is durably retried or dead-lettered.
    fn settled(&self, _delivery: &Delivery, _settled: Settled<'_>) {}
}

/// A delivery waiting for its batch, and where its disposition goes.
struct Waiting {
    delivery: Delivery,
    reply: oneshot::Sender<Disposition>,
}

impl ConsumerRuntime {
    /// Consumes until `shutdown` is cancelled, handing deliveries to `handler` in batches (up to
    /// `batching.at_once` batches at once); returns once every delivery taken is settled — on
    /// shutdown, running batches finish and deliveries not yet in a batch are handed back. The
    /// consumer's concurrency should be [`Batching::deliveries_in_flight`].
    pub async fn run_batched<H: BatchHandler>(
        &self,
        handler: Arc<H>,
        batching: Batching,
        shutdown: CancellationToken,
    ) {
        self.register_gauges();
        let (sender, receiver) = mpsc::channel::<Waiting>(batching.deliveries_in_flight());
        let receiver = Arc::new(Mutex::new(receiver));
        let running = Arc::new(Running::default());
        let mut batchers = tokio::task::JoinSet::new();
        for _ in 0..batching.at_once.max(1) {
            let (runtime, handler, receiver, stop, running) = (
                self.clone(),
                handler.clone(),
                receiver.clone(),
                shutdown.clone(),
                running.clone(),
            );
            batchers.spawn(async move {
                while let Some(batch) = next_batch(&receiver, batching, &running).await {
                    if stop.is_cancelled() {
                        // Shutting down: deliveries not started yet go back to the broker at once,
                        // so that the batches already running finish and ack within the grace.
                        for waiting in batch {
                            let _ = waiting.reply.send(Disposition::Requeue);
                        }
                        continue;
                    }
                    let _counted = Handling::start(&running);
                    runtime.handle_batch(&*handler, batch, &stop).await;
                }
            });
        }
        self.consumer
            .run(
                move |delivery| {
                    let sender = sender.clone();
                    async move {
                        let (reply, answer) = oneshot::channel();
                        if sender.send(Waiting { delivery, reply }).await.is_err() {
                            return Disposition::Requeue;
                        }
                        // No answer means its batch task is gone: the broker delivers it again.
                        answer.await.unwrap_or(Disposition::Requeue)
                    }
                },
                shutdown,
            )
            .await;
        // The consumer returned, so every sender is dropped: the batch tasks settle what is left
        // and end.
        while batchers.join_next().await.is_some() {}
    }

    async fn handle_batch<H: BatchHandler>(
        &self,
        handler: &H,
        batch: Vec<Waiting>,
        stop: &CancellationToken,
    ) {
        let started = Instant::now();
        let name = self.name;
        let size = batch.len();
        self.progress.in_flight.fetch_add(size, Ordering::Relaxed);
        metrics::gauge!(m::IN_FLIGHT, "consumer" => name).increment(size as f64);
        metrics::histogram!(m::BATCH_SIZE, "consumer" => name).record(size as f64);
        let (deliveries, replies): (Vec<Delivery>, Vec<oneshot::Sender<Disposition>>) =
            batch.into_iter().map(|w| (w.delivery, w.reply)).unzip();
        let verdicts = self.judge(handler, &deliveries).await;
        let on_settled = |d: &Delivery, s: Settled<'_>| handler.settled(d, s);
        let on_settled: &OnSettled<'_> = &on_settled;
        // Retries and dead letters of one batch are published side by side, not one after another.
        let settled = join_all(
            deliveries
                .iter()
                .zip(verdicts)
                .map(|(delivery, verdict)| self.settle(on_settled, delivery, verdict, stop)),
        )
        .await;
        let seconds = started.elapsed().as_secs_f64();
        for ((disposition, outcome), reply) in settled.into_iter().zip(replies) {
            metrics::counter!(m::DELIVERIES_TOTAL, "consumer" => name, "outcome" => outcome).increment(1);
            metrics::histogram!(m::HANDLE_SECONDS, "consumer" => name).record(seconds);
            // The consumer's task may be gone (connection lost): the broker redelivers then.
            let _ = reply.send(disposition);
        }
        metrics::gauge!(m::IN_FLIGHT, "consumer" => name).decrement(size as f64);
        self.progress.in_flight.fetch_sub(size, Ordering::Relaxed);
        self.progress.touch();
    }

    /// The handler's verdict for each delivery. When a batch of several panics, each of its
    /// deliveries is handed to the handler alone, so only one that panics again is given back
    /// (and, panicking every time, reaches the queue's delivery limit) — not its batch-mates.
    async fn judge<H: BatchHandler>(&self, handler: &H, deliveries: &[Delivery]) -> Vec<Verdict> {
        if let Some(verdicts) = judge_once(handler, deliveries).await {
            return verdicts;
        }
        let name = self.name;
        if deliveries.len() > 1 {
            tracing::error!(
                consumer = name,
                deliveries = deliveries.len(),
                "handler panicked on a batch; handling its deliveries one by one"
            );
        }
        let mut verdicts = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            let alone = std::slice::from_ref(delivery);
            let verdict = match judge_once(handler, alone).await {
                Some(mut v) => v.remove(0),
                None => {
                    tracing::error!(consumer = name, queue = %delivery.queue, "handler panicked; handing the delivery back");
                    Verdict::HandBack {
                        pause: Duration::ZERO,
                    }
                }
            };
            verdicts.push(verdict);
        }
        verdicts
    }
}

/// The handler's verdicts, or `None` if it panicked or did not give one per delivery (a bug,
/// treated like a panic).
async fn judge_once<H: BatchHandler>(handler: &H, deliveries: &[Delivery]) -> Option<Vec<Verdict>> {
    match AssertUnwindSafe(handler.handle_batch(deliveries))
        .catch_unwind()
        .await
    {
        Ok(verdicts) if verdicts.len() == deliveries.len() => Some(verdicts),
        Ok(verdicts) => {
            tracing::error!(
                deliveries = deliveries.len(),
                verdicts = verdicts.len(),
                "batch handler returned the wrong number of verdicts"
            );
            None
        }
        Err(_) => None,
    }
}

/// Batches being handled right now, and a signal each time one ends.
#[derive(Default)]
struct Running {
    batches: AtomicUsize,
    ended: Notify,
}

/// One batch counted as being handled until dropped, even if its task is cancelled midway.
struct Handling<'a>(&'a Running);

impl<'a> Handling<'a> {
    fn start(running: &'a Running) -> Handling<'a> {
        running.batches.fetch_add(1, Ordering::AcqRel);
        Handling(running)
    }
}

impl Drop for Handling<'_> {
    fn drop(&mut self) {
        self.0.batches.fetch_sub(1, Ordering::AcqRel);
        self.0.ended.notify_waiters();
    }
}

/// The next batch: what is ready now, up to the size; if several were ready but the batch is not
/// full, more arriving within the linger; then, while another batch is being handled, more
/// arriving until it ends (at most `gather_while_busy`). `None` once the consumer is gone and
/// nothing is left.
async fn next_batch(
    receiver: &Mutex<mpsc::Receiver<Waiting>>,
    batching: Batching,
    running: &Running,
) -> Option<Vec<Waiting>> {
    let max = batching.max_size.max(1);
    // One task gathers at a time, so batches fill instead of splitting what is ready between them.
    let mut receiver = receiver.lock().await;
    let first = receiver.recv().await?;
    let mut batch = Vec::with_capacity(max);
    batch.push(first);
    while batch.len() < max {
        match receiver.try_recv() {
            Ok(waiting) => batch.push(waiting),
            Err(_) => break,
        }
    }
    if batch.len() > 1 && batch.len() < max && !batching.linger.is_zero() {
        let deadline = tokio::time::Instant::now() + batching.linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, receiver.recv()).await {
                Ok(Some(waiting)) => batch.push(waiting),
                _ => break,
            }
        }
    }
    if !batching.gather_while_busy.is_zero() {
        let deadline = tokio::time::Instant::now() + batching.gather_while_busy;
        while batch.len() < max {
            // Registered before the count is read, so an end in between is not missed.
            let ended = running.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if running.batches.load(Ordering::Acquire) == 0 {
                break;
            }
            tokio::select! {
                more = tokio::time::timeout_at(deadline, receiver.recv()) => match more {
                    Ok(Some(waiting)) => batch.push(waiting),
                    _ => break,
                },
                () = &mut ended => break,
            }
        }
    }
    Some(batch)
}
