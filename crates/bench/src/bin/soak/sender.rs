//! The sender, behaving as providers do: each delivery is POSTed with the endpoint's credential
//! and retried on 408, 429, 5xx and connection errors with exponential backoff and jitter until
//! it is answered 2xx or a final 4xx (or its retry budget runs out: given up, reported). A
//! story's deliveries go one after another — so a Spark contact's snapshots are received in the
//! order they were sent — while `concurrency` stories run at once and new deliveries are paced to
//! `rate` per second. Every attempt carries `x-request-id: soak-<webhook>-<delivery>-<attempt>`,
//! which the receiver keeps with the envelope: the verifier finds each webhook in Postgres by it.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hmac::{KeyInit, Mac};
use intake_core::Provider;
use rand::Rng;

use crate::generate::{Credential, Traffic};

/// Longest a delivery is retried before the sender gives up on it.
const RETRY_BUDGET: Duration = Duration::from_secs(600);
/// Longest wait for one answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The endpoints' credentials (random per run).
#[derive(Debug, Clone)]
pub struct Secrets {
    /// Spark's path token.
    pub spark_token: String,
    /// Spark's basic-auth password (user `spark`).
    pub spark_password: String,
    /// `SparkLoop-Token`.
    pub sparkloop_token: String,
    /// Spark360's HMAC key.
    pub spark360_key: String,
    /// HealthSherpa's bearer token.
    pub healthsherpa_token: String,
}

impl Secrets {
    /// Fresh random secrets.
    pub fn random() -> Secrets {
        let mut rng = rand::rng();
        let mut secret = |tag: &str| format!("{tag}-{:032x}", rng.random::<u128>());
        Secrets {
            spark_token: secret("path"),
            spark_password: secret("basic"),
            sparkloop_token: secret("loop"),
            spark360_key: secret("hmac"),
            healthsherpa_token: secret("bearer"),
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Final {
    /// Answered 2xx.
    Accepted,
    /// Answered this 4xx (final).
    Rejected(u16),
    /// The retry budget ran out.
    GaveUp,
}

/// One delivery's history.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// The webhook sent.
    pub webhook: usize,
    /// How it ended.
    pub outcome: Final,
    /// HTTP attempts made.
    pub attempts: u32,
    /// Attempts that may have been enqueued though no 2xx was seen: a 5xx (a 503 after a
    /// confirm timeout may follow a publish that did reach the queue) or a connection that broke
    /// after the request was sent.
    pub ambiguous: u32,
    /// Attempts answered 5xx, 408 or 429 (then retried).
    pub retried_status: u32,
    /// Attempts that failed to connect or lost the connection (then retried).
    pub retried_connection: u32,
    /// Seconds into the run when it was settled (to place a finding among the faults).
    pub settled_s: f64,
}

/// Shared by the sending tasks.
#[derive(Debug)]
pub struct Sender {
    client: reqwest::Client,
    base: String,
    secrets: Secrets,
    /// Earliest start of the next new delivery (pacing).
    next_slot: Mutex<Instant>,
    interval: Duration,
    /// Deliveries finished (any outcome): the fault schedule follows it.
    pub finished: AtomicUsize,
    next_story: AtomicUsize,
    started: Instant,
}

impl Sender {
    /// A sender to the receiver at `base` (`http://host:port`), pacing new deliveries to `rate`/s.
    pub fn new(
        base: String,
        secrets: Secrets,
        rate: f64,
        concurrency: usize,
        started: Instant,
    ) -> anyhow::Result<Sender> {
        let client = reqwest::Client::builder()
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(concurrency)
            .build()?;
        Ok(Sender {
            client,
            base,
            secrets,
            next_slot: Mutex::new(Instant::now()),
            interval: Duration::from_secs_f64(1.0 / rate.max(0.001)),
            finished: AtomicUsize::new(0),
            next_story: AtomicUsize::new(0),
            started,
        })
    }

    async fn pace(&self) {
        let slot = {
            let mut next = self.next_slot.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }

    fn request(
        &self,
        provider: Provider,
        credential: Credential,
        body: &str,
        request_id: &str,
    ) -> reqwest::RequestBuilder {
        let s = &self.secrets;
        let wrong = |secret: &str| match credential {
            Credential::Good => secret.to_owned(),
            Credential::Wrong => format!("{secret}-wrong"),
        };
        let post = |path: &str| {
            self.client
                .post(format!("{}{path}", self.base))
                .header("content-type", "application/json")
                .header("user-agent", "intake-soak")
                .header("x-request-id", request_id)
                .body(body.to_owned())
        };
        match provider {
            Provider::Spark => post(&format!("/webhooks/spark/{}", s.spark_token))
                .basic_auth("spark", Some(wrong(&s.spark_password))),
            Provider::SparkLoop => {
                post("/webhooks/sparkloop").header("SparkLoop-Token", wrong(&s.sparkloop_token))
            }
            Provider::Spark360 => {
                let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(wrong(&s.spark360_key).as_bytes())
                    .expect("HMAC takes any key");
                mac.update(body.as_bytes());
                let signature = hex::encode(mac.finalize().into_bytes());
                post("/webhooks/spark360").header("X-Spark360-Signature", format!("sha256={signature}"))
            }
            Provider::HealthSherpa | Provider::Standard => {
                post("/webhooks/healthsherpa").bearer_auth(wrong(&s.healthsherpa_token))
            }
        }
    }

    /// Sends one delivery until it is settled.
    async fn deliver(&self, traffic: &Traffic, webhook: usize, delivery: usize) -> Delivery {
        let w = &traffic.webhooks[webhook];
        let body = w.body.render();
        let mut d = Delivery {
            webhook,
            outcome: Final::GaveUp,
            attempts: 0,
            ambiguous: 0,
            retried_status: 0,
            retried_connection: 0,
            settled_s: 0.0,
        };
        self.pace().await;
        let started = Instant::now();
        loop {
            d.attempts += 1;
            let id = format!("soak-{webhook}-{delivery}-{}", d.attempts);
            match self.request(w.provider, w.credential, &body, &id).send().await {
                Ok(answer) => {
                    let status = answer.status().as_u16();
                    if answer.status().is_success() {
                        d.outcome = Final::Accepted;
                        d.settled_s = self.started.elapsed().as_secs_f64();
                        return d;
                    }
                    if !(status == 408 || status == 429 || status >= 500) {
                        d.outcome = Final::Rejected(status);
                        d.settled_s = self.started.elapsed().as_secs_f64();
                        return d;
                    }
                    d.retried_status += 1;
                    if status >= 500 {
                        d.ambiguous += 1;
                    }
                }
                Err(e) => {
                    d.retried_connection += 1;
                    // Refused before anything was sent: certainly not received.
                    if !e.is_connect() {
                        d.ambiguous += 1;
                    }
                }
            }
            if started.elapsed() > RETRY_BUDGET {
                d.settled_s = self.started.elapsed().as_secs_f64();
                return d;
            }
            tokio::time::sleep(backoff(d.attempts)).await;
        }
    }

    /// Runs `concurrency` tasks until every story is sent; returns each story's deliveries.
    pub async fn run(
        self: std::sync::Arc<Self>,
        traffic: std::sync::Arc<Traffic>,
        concurrency: usize,
    ) -> Vec<Vec<Delivery>> {
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..concurrency {
            let (sender, traffic) = (self.clone(), traffic.clone());
            tasks.spawn(async move {
                let mut done = Vec::new();
                loop {
                    let story = sender.next_story.fetch_add(1, Ordering::Relaxed);
                    let Some(s) = traffic.stories.get(story) else {
                        return done;
                    };
                    let mut deliveries = Vec::with_capacity(s.deliveries.len());
                    for (n, &webhook) in s.deliveries.iter().enumerate() {
                        deliveries.push(sender.deliver(&traffic, webhook, n).await);
                        sender.finished.fetch_add(1, Ordering::Relaxed);
                    }
                    done.push((story, deliveries));
                }
            });
        }
        let mut by_story = vec![Vec::new(); traffic.stories.len()];
        while let Some(done) = tasks.join_next().await {
            for (story, deliveries) in done.expect("sender task") {
                by_story[story] = deliveries;
            }
        }
        by_story
    }
}

/// 250 ms doubling to 5 s, each wait jittered down by up to half.
fn backoff(attempt: u32) -> Duration {
    let full = Duration::from_millis(250)
        .saturating_mul(1 << attempt.saturating_sub(1).min(5))
        .min(Duration::from_secs(5));
    full.mul_f64(rand::rng().random_range(0.5..=1.0))
}
