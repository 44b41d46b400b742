//! The envelope: an accepted webhook as it travels from the receiver to the workers.
//!
//! The raw body is kept byte for byte (signatures and dedupe hashes are computed over it), so it
//! is carried as the AMQP message body and the envelope's other fields travel as message
//! properties; the broker crate does that mapping. [`ENVELOPE_TYPE_V1`] names the format so it
//! can evolve while older messages are still queued.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::Provider;

/// AMQP `type` property of an envelope in format version 1.
pub const ENVELOPE_TYPE_V1: &str = "intake.webhook.v1";

/// Request headers worth keeping with an envelope (lowercase). An allow-list on purpose: a
/// credential or PHI in some header we have not thought of must not be copied to the queue.
pub const KEPT_HEADERS: &[&str] = &[
    "content-type",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "x-request-id",
    "traceparent",
];

/// One accepted webhook. Its `Debug` shows the body's length, never its bytes (they may hold PHI).
#[derive(Clone, PartialEq, Eq)]
pub struct Envelope {
    /// UUIDv7 assigned on receipt: unique, and sortable by receipt time.
    pub id: Uuid,
    /// Name of the endpoint (the URL path segment) that received it.
    pub endpoint: String,
    /// The provider the endpoint is configured for; decides the queue and the decoder.
    pub provider: Provider,
    /// When the receiver accepted the request.
    pub received_at: DateTime<Utc>,
    /// Selected request headers (see [`KEPT_HEADERS`]), lowercase names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The request body exactly as received.
    pub body: Bytes,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("id", &self.id)
            .field("endpoint", &self.endpoint)
            .field("provider", &self.provider)
            .field("received_at", &self.received_at)
            .field("headers", &self.headers)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Envelope {
    /// A new envelope with a fresh UUIDv7 id, received now.
    pub fn new(
        endpoint: impl Into<String>,
        provider: Provider,
        headers: Vec<(String, String)>,
        body: Bytes,
    ) -> Self {
        Envelope {
            id: Uuid::now_v7(),
            endpoint: endpoint.into(),
            provider,
            received_at: Utc::now(),
            headers,
            body,
        }
    }

    /// The value of a kept header, by lowercase name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_shows_the_body_length_never_its_bytes() {
        let body = br#"{"details":{"first_name":"Carmela","ssn":"078-05-1120"}}"#;
        let envelope = Envelope::new(
            "spark-a",
            Provider::Spark,
            vec![("content-type".into(), "application/json".into())],
            Bytes::from_static(body),
        );
        let shown = format!("{envelope:?}");
        assert!(shown.contains(&format!("body_len: {}", body.len())), "{shown}");
        for secret in ["Carmela", "078-05-1120", "first_name", "details"] {
            assert!(!shown.contains(secret), "{shown}");
        }
        let pretty = format!("{envelope:#?}");
        assert!(!pretty.contains("Carmela"), "{pretty}");
    }
}
