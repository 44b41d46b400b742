//! Envelope ⇄ AMQP message. The raw webhook body is the message body, byte for byte; the rest of
//! the envelope travels as properties and headers. The AMQP `type` property names the format
//! version ([`ENVELOPE_TYPE_V1`]) so a later format can be told apart while old messages wait.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use intake_core::{ENVELOPE_TYPE_V1, Envelope, Provider};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use uuid::Uuid;

use crate::BrokerError;

const H_ENDPOINT: &str = "x-intake-endpoint";
const H_PROVIDER: &str = "x-intake-provider";
const H_RECEIVED_AT: &str = "x-intake-received-at";
const H_REQUEST_HEADERS: &str = "x-intake-request-headers";
/// Header counting how many times processing this message has been attempted and failed.
pub const H_ATTEMPT: &str = "x-intake-attempt";

/// AMQP delivery mode 2: the broker writes the message to disk.
const PERSISTENT: u8 = 2;

fn text(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s))
}

/// Properties for publishing `envelope` (persistent, typed, with its metadata as headers).
pub fn envelope_properties(envelope: &Envelope) -> BasicProperties {
    let mut request_headers = FieldTable::default();
    for (name, value) in &envelope.headers {
        request_headers.insert(ShortString::from(name.as_str()), text(value));
    }
    let mut headers = FieldTable::default();
    headers.insert(H_ENDPOINT.into(), text(&envelope.endpoint));
    headers.insert(H_PROVIDER.into(), text(envelope.provider.as_str()));
    headers.insert(H_RECEIVED_AT.into(), text(&envelope.received_at.to_rfc3339()));
    headers.insert(H_REQUEST_HEADERS.into(), AMQPValue::FieldTable(request_headers));
    BasicProperties::default()
        .with_delivery_mode(PERSISTENT)
        .with_message_id(ShortString::from(envelope.id.to_string()))
        .with_type(ShortString::from(ENVELOPE_TYPE_V1))
        .with_content_type(ShortString::from("application/json"))
        .with_timestamp(u64::try_from(envelope.received_at.timestamp()).unwrap_or(0))
        .with_headers(headers)
}

fn header_text<'a>(headers: &'a FieldTable, name: &str) -> Result<&'a str, BrokerError> {
    match headers.inner().get(name) {
        Some(AMQPValue::LongString(s)) => std::str::from_utf8(s.as_bytes())
            .map_err(|_| BrokerError::Malformed(format!("header {name} is not UTF-8"))),
        Some(AMQPValue::ShortString(s)) => Ok(s.as_str()),
        _ => Err(BrokerError::Malformed(format!("missing header {name}"))),
    }
}

/// The attempt count carried by a message (0 when it was never retried).
pub fn attempt(properties: &BasicProperties) -> u32 {
    let Some(headers) = properties.headers() else {
        return 0;
    };
    match headers.inner().get(H_ATTEMPT) {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => *n,
        _ => 0,
    }
}

/// Rebuilds the envelope from a delivered message.
pub fn decode_envelope(properties: &BasicProperties, body: &[u8]) -> Result<Envelope, BrokerError> {
    match properties.kind().as_ref().map(ShortString::as_str) {
        Some(ENVELOPE_TYPE_V1) => {}
        other => return Err(BrokerError::Malformed(format!("unknown message type {other:?}"))),
    }
    let id = properties
        .message_id()
        .as_ref()
        .and_then(|id| Uuid::parse_str(id.as_str()).ok())
        .ok_or_else(|| BrokerError::Malformed("missing or invalid message id".into()))?;
    let headers = properties
        .headers()
        .as_ref()
        .ok_or_else(|| BrokerError::Malformed("no headers".into()))?;
    let provider: Provider = header_text(headers, H_PROVIDER)?
        .parse()
        .map_err(|e: intake_core::UnknownProvider| BrokerError::Malformed(e.to_string()))?;
    let received_at: DateTime<Utc> = DateTime::parse_from_rfc3339(header_text(headers, H_RECEIVED_AT)?)
        .map_err(|_| BrokerError::Malformed("invalid received-at".into()))?
        .with_timezone(&Utc);
    let mut request_headers = Vec::new();
    if let Some(AMQPValue::FieldTable(table)) = headers.inner().get(H_REQUEST_HEADERS) {
        for (name, value) in table {
            if let AMQPValue::LongString(v) = value {
                request_headers.push((
                    name.to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                ));
            }
        }
    }
    Ok(Envelope {
        id,
        endpoint: header_text(headers, H_ENDPOINT)?.to_owned(),
        provider,
        received_at,
        headers: request_headers,
        body: Bytes::copy_from_slice(body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_round_trips_through_properties() {
        let envelope = Envelope::new(
            "agency-a",
            Provider::Spark360,
            vec![("content-type".into(), "application/json".into())],
            Bytes::from_static(b" {\"a\": 1}\n"),
        );
        let props = envelope_properties(&envelope);
        assert_eq!(*props.delivery_mode(), Some(PERSISTENT));
        let back = decode_envelope(&props, &envelope.body).expect("decode");
        // RFC 3339 keeps sub-second precision, so the round trip is exact.
        assert_eq!(back, envelope);
        assert_eq!(attempt(&props), 0);
    }

    #[test]
    fn foreign_messages_are_malformed() {
        let props = BasicProperties::default().with_type(ShortString::from("other.v9"));
        assert!(matches!(
            decode_envelope(&props, b"{}"),
            Err(BrokerError::Malformed(_))
        ));
    }
}
