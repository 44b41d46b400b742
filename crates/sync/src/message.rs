//! The message on `{prefix}.q.sync`: a versioned, tagged type, so its format can change while old
//! messages still wait in a queue. It names the contact and how far its changes go (`seq`, the
//! outbox id); the worker always sends the contact's *current* state, never one carried here.

use intake_broker::lapin::BasicProperties;
use intake_broker::lapin::types::ShortString;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

/// A contact-change notification.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum SyncMessage {
    /// Version 1.
    #[serde(rename = "contact_changed.v1")]
    ContactChangedV1 {
        /// `contacts.spark_id`.
        contact_id: String,
        /// The outbox id of the change: changes of one contact have increasing ids.
        seq: i64,
        /// The envelope that changed it (for tracing a sync back to a webhook).
        envelope_id: Uuid,
    },
}

impl SyncMessage {
    /// The contact it is about.
    pub fn contact_id(&self) -> &str {
        match self {
            SyncMessage::ContactChangedV1 { contact_id, .. } => contact_id,
        }
    }

    /// How far the change goes.
    pub fn seq(&self) -> i64 {
        match self {
            SyncMessage::ContactChangedV1 { seq, .. } => *seq,
        }
    }

    /// Body and properties for publishing it (persistent, JSON, message id = seq).
    pub fn to_amqp(&self) -> (Vec<u8>, BasicProperties) {
        let body = serde_json::to_vec(self).unwrap_or_default();
        let properties = BasicProperties::default()
            .with_delivery_mode(PERSISTENT)
            .with_content_type(ShortString::from("application/json"))
            .with_message_id(ShortString::from(self.seq().to_string()));
        (body, properties)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_with_its_version_tag() {
        let m = SyncMessage::ContactChangedV1 {
            contact_id: "c1".into(),
            seq: 7,
            envelope_id: Uuid::nil(),
        };
        let (body, props) = m.to_amqp();
        let json: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(json["type"], "contact_changed.v1");
        assert_eq!(serde_json::from_slice::<SyncMessage>(&body).expect("decode"), m);
        assert_eq!(props.message_id().as_ref().map(|s| s.as_str()), Some("7"));
        assert!(serde_json::from_slice::<SyncMessage>(br#"{"type":"contact_changed.v9"}"#).is_err());
    }
}
