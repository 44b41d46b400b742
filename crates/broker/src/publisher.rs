//! Confirmed publishing over one long-lived connection that heals itself.
//!
//! A supervisor task owns the connection: it connects with exponential backoff (backon),
//! declares the topology, opens `channels` confirm-mode channels and installs them as the
//! current session. When the connection reports an error, or a publish fails in a way that
//! suggests it is gone, the session is removed — publishes fail fast with
//! [`BrokerError::Unavailable`] — and the supervisor reconnects. No restart is ever needed.
//!
//! Publishes are not serialised: each picks a channel round-robin and awaits only its own
//! confirm, so many requests are in flight at once on every channel.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use futures_util::StreamExt;
use intake_core::Envelope;
use lapin::Confirmation;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, Event};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{BrokerError, Topology, codec, metrics as m, topology};

/// How a [`Publisher`] connects and publishes.
#[derive(Clone)]
pub struct PublisherConfig {
    /// AMQP URL, e.g. `amqp://guest:guest@127.0.0.1:5672/%2f` (may hold a password: never logged).
    pub amqp_url: SecretString,
    /// Names to declare and publish to.
    pub topology: Topology,
    /// Confirm-mode channels to spread publishes over (at least 1).
    pub channels: usize,
    /// Longest wait for a publisher confirm before the publish counts as failed.
    pub confirm_timeout: Duration,
    /// Connection name shown in the broker and `role` label of the connection metrics.
    pub role: &'static str,
}

impl std::fmt::Debug for PublisherConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublisherConfig")
            .field("amqp_url", &"<redacted>")
            .field("topology", &self.topology)
            .field("channels", &self.channels)
            .field("confirm_timeout", &self.confirm_timeout)
            .field("role", &self.role)
            .finish()
    }
}

/// One established connection and its confirm channels.
struct Session {
    connection: Connection,
    channels: Vec<Channel>,
}

impl Session {
    fn healthy(&self) -> bool {
        self.connection.status().connected() && self.channels.iter().all(|c| c.status().connected())
    }
}

struct Inner {
    config: PublisherConfig,
    /// The current session; `None` while (re)connecting. Read on every publish, written only by
    /// the supervisor, so a std lock held for a clone of the `Arc` is enough.
    session: RwLock<Option<Arc<Session>>>,
    /// Poked by a publish that failed, so the supervisor checks the session at once.
    suspect: Notify,
    /// Round-robin cursor over the channels.
    next_channel: AtomicUsize,
    connected: watch::Sender<bool>,
    stop: CancellationToken,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

/// Handle to the self-healing confirmed publisher. Cheap to clone.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Publisher {
    /// Starts the supervisor (which connects in the background) and returns at once.
    pub fn start(config: PublisherConfig) -> Publisher {
        let (connected, _) = watch::channel(false);
        let inner = Arc::new(Inner {
            config,
            session: RwLock::new(None),
            suspect: Notify::new(),
            next_channel: AtomicUsize::new(0),
            connected,
            stop: CancellationToken::new(),
            supervisor: Mutex::new(None),
        });
        metrics::gauge!(m::CONNECTED, "role" => inner.config.role).set(0.0);
        let handle = tokio::spawn(supervise(inner.clone()));
        *inner.supervisor.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        Publisher { inner }
    }

    /// Whether a session is installed right now.
    pub fn is_connected(&self) -> bool {
        *self.inner.connected.borrow()
    }

    /// Waits until connected, up to `deadline`; returns whether it is.
    pub async fn wait_connected(&self, deadline: Duration) -> bool {
        let mut rx = self.inner.connected.subscribe();
        tokio::time::timeout(deadline, rx.wait_for(|c| *c))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// The topology this publisher declared.
    pub fn topology(&self) -> &Topology {
        &self.inner.config.topology
    }

    /// Publishes an envelope to the ingress exchange, routed by its provider; returns once the
    /// broker confirmed it is in a queue.
    pub async fn publish_envelope(&self, envelope: &Envelope) -> Result<(), BrokerError> {
        let exchange = self.inner.config.topology.ingress_exchange();
        let properties = codec::envelope_properties(envelope);
        self.publish(&exchange, envelope.provider.as_str(), &envelope.body, properties)
            .await
    }

    /// Publishes a persistent, `mandatory` message and waits for its confirm (bounded by the
    /// configured timeout). `Ok` means the broker has it in at least one queue.
    pub async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        body: &[u8],
        properties: BasicProperties,
    ) -> Result<(), BrokerError> {
        let channel = self.pick_channel()?;
        // Mandatory: an unroutable message comes back instead of silently vanishing.
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let publish = async {
            let confirm = channel
                .basic_publish(exchange.into(), routing_key.into(), options, body, properties)
                .await?;
            confirm.await
        };
        // An in-flight confirm can hang for as long as a broker outage lasts: bound it ourselves.
        let timeout = self.inner.config.confirm_timeout;
        let outcome = match tokio::time::timeout(timeout, publish).await {
            Err(_) => Err(BrokerError::ConfirmTimeout(timeout)),
            Ok(Err(e)) => Err(BrokerError::Amqp(e)),
            // Only an ack without a returned message means the message sits in a queue.
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(BrokerError::Unroutable),
            Ok(Ok(Confirmation::Nack(_))) => Err(BrokerError::Nacked),
            Ok(Ok(Confirmation::NotRequested)) => Err(BrokerError::Nacked),
        };
        if matches!(
            outcome,
            Err(BrokerError::ConfirmTimeout(_) | BrokerError::Amqp(_))
        ) {
            self.inner.suspect.notify_one();
        }
        outcome
    }

    fn pick_channel(&self) -> Result<Channel, BrokerError> {
        let guard = self.inner.session.read().unwrap_or_else(|e| e.into_inner());
        let session = guard.as_ref().ok_or(BrokerError::Unavailable)?;
        let i = self.inner.next_channel.fetch_add(1, Ordering::Relaxed) % session.channels.len();
        Ok(session.channels[i].clone())
    }

    /// Stops the supervisor and closes the connection. Call after in-flight publishes finished.
    pub async fn close(&self) {
        self.inner.stop.cancel();
        let handle = self
            .inner
            .supervisor
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = handle.await;
        }
    }
}

async fn connect_once(config: &PublisherConfig) -> Result<Session, BrokerError> {
    let properties = ConnectionProperties::default().with_connection_name(config.role.into());
    let connection = Connection::connect(config.amqp_url.expose_secret(), properties).await?;
    let mut channels = Vec::with_capacity(config.channels.max(1));
    for i in 0..config.channels.max(1) {
        let channel = connection.create_channel().await?;
        if i == 0 {
            topology::declare(&channel, &config.topology).await?;
        }
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    Ok(Session { connection, channels })
}

/// Connects with exponential backoff until it succeeds or the publisher is stopped.
async fn connect_with_backoff(inner: &Inner) -> Option<Session> {
    let backoff = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_jitter()
        .without_max_times();
    let role = inner.config.role;
    let attempt = || async {
        // A connect can stall on a half-open network; give each attempt a bound.
        match tokio::time::timeout(Duration::from_secs(10), connect_once(&inner.config)).await {
            Ok(result) => result,
            Err(_) => Err(BrokerError::Unavailable),
        }
    };
    let connect = attempt.retry(backoff).notify(|err: &BrokerError, wait: Duration| {
        tracing::warn!(role, error = %err, retry_in_ms = wait.as_millis() as u64, "broker connect failed");
    });
    tokio::select! {
        _ = inner.stop.cancelled() => None,
        session = connect => session.ok(),
    }
}

fn install(inner: &Inner, session: Option<Arc<Session>>) {
    let connected = session.is_some();
    *inner.session.write().unwrap_or_else(|e| e.into_inner()) = session;
    inner.connected.send_replace(connected);
    metrics::gauge!(m::CONNECTED, "role" => inner.config.role).set(if connected { 1.0 } else { 0.0 });
}

async fn supervise(inner: Arc<Inner>) {
    let role = inner.config.role;
    while let Some(session) = connect_with_backoff(&inner).await {
        let session = Arc::new(session);
        let mut events = session.connection.events_listener();
        install(&inner, Some(session.clone()));
        metrics::counter!(m::CONNECTS_TOTAL, "role" => role).increment(1);
        tracing::info!(role, "broker connected");

        let stopping = loop {
            tokio::select! {
                _ = inner.stop.cancelled() => break true,
                event = events.next() => match event {
                    Some(Event::Error(err)) => {
                        tracing::warn!(role, error = %err, "broker connection error");
                        break false;
                    }
                    None => break false,
                    Some(_) => {}
                },
                _ = inner.suspect.notified() => if !session.healthy() { break false },
                // Safety net for a failure that produced no event.
                _ = tokio::time::sleep(Duration::from_secs(1)) => if !session.healthy() { break false },
            }
        };
        install(&inner, None);
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            session.connection.close(200, "closing".into()),
        )
        .await;
        if stopping {
            tracing::info!(role, "broker connection closed");
            return;
        }
        metrics::counter!(m::DISCONNECTS_TOTAL, "role" => role).increment(1);
        tracing::warn!(role, "broker connection lost; reconnecting");
    }
}
