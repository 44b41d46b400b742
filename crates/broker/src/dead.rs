//! What a dead-lettered message says about itself, whoever dead-lettered it: our consumers (the
//! `x-intake-*` headers set by [`crate::retry::dead_letter_properties`]) or the broker (its
//! `x-death` header, e.g. reason `delivery_limit` once a quorum queue's limit is reached). And the
//! message's properties as JSON, so a dead letter can be stored and republished as it was.

use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldArray, FieldTable, LongString, ShortString};
use serde_json::{Map, Value, json};

use crate::codec::H_ATTEMPT;
use crate::retry::{H_DEAD_REASON, H_FIRST_ERROR, H_LAST_ERROR};
use crate::topology::DELAY_TIER_HEADER;

/// Header naming the work queue a dead letter came from (where a replay sends it back).
pub const H_QUEUE: &str = "x-intake-queue";
/// Header with the event type a consumer was handling, when it got that far.
pub const H_EVENT_TYPE: &str = "x-intake-event-type";
/// Header with the event's dedupe key, when decoding got that far.
pub const H_DEDUPE_KEY: &str = "x-intake-dedupe-key";
/// Header saying the producer already wrote the dead letter's Postgres row itself.
pub const H_RECORDED: &str = "x-intake-recorded";
/// Header counting how often an operator replayed the message.
pub const H_REPLAYS: &str = "x-intake-replays";

/// Headers that describe a past failure or a trip through the broker's dead-lettering: dropped
/// when the message is stored for replay, so a replayed message starts afresh.
const TRANSIENT_HEADERS: &[&str] = &[
    H_ATTEMPT,
    H_FIRST_ERROR,
    H_LAST_ERROR,
    H_DEAD_REASON,
    H_QUEUE,
    H_EVENT_TYPE,
    H_DEDUPE_KEY,
    H_RECORDED,
    DELAY_TIER_HEADER,
    "x-death",
    "x-first-death-exchange",
    "x-first-death-queue",
    "x-first-death-reason",
    "x-last-death-exchange",
    "x-last-death-queue",
    "x-last-death-reason",
    "x-delivery-count",
];

/// Everything a message in the dead-letter queue tells about why it is there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetterInfo {
    /// Reason code: ours (`retries_exhausted`, `unknown_event_type`, …) or the broker's
    /// (`delivery_limit`, `rejected`, `expired`, `maxlen`).
    pub reason: String,
    /// The work queue it came from, if known.
    pub queue: Option<String>,
    /// Processing attempts (ours) or deliveries (the broker's count).
    pub attempts: u32,
    /// First error seen, if recorded.
    pub first_error: Option<String>,
    /// Last error seen, if recorded.
    pub last_error: Option<String>,
    /// Event type, if the consumer got that far.
    pub event_type: Option<String>,
    /// Dedupe key, if the consumer got that far.
    pub dedupe_key: Option<String>,
    /// Whether its Postgres row was already written by whoever dead-lettered it.
    pub recorded: bool,
}

fn text_of(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_owned()),
        _ => None,
    }
}

fn int_of(value: &AMQPValue) -> Option<i64> {
    match value {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

/// Reads why a message was dead-lettered. A message without our reason header was dead-lettered
/// by the broker: its first `x-death` entry says why and from which queue.
pub fn dead_letter_info(properties: &BasicProperties) -> DeadLetterInfo {
    let empty = FieldTable::default();
    let headers = properties.headers().as_ref().unwrap_or(&empty).inner();
    let text = |name: &str| headers.get(name).and_then(text_of);
    let ours_attempts = headers.get(H_ATTEMPT).and_then(int_of).unwrap_or(0);
    let death = match headers.get("x-death") {
        Some(AMQPValue::FieldArray(entries)) => entries.as_slice().first().and_then(|e| match e {
            AMQPValue::FieldTable(t) => Some(t.inner().clone()),
            _ => None,
        }),
        _ => None,
    };
    let death_text = |name: &str| death.as_ref().and_then(|d| d.get(name)).and_then(text_of);
    let delivery_count = headers.get("x-delivery-count").and_then(int_of).unwrap_or(0);
    let death_count = death
        .as_ref()
        .and_then(|d| d.get("count"))
        .and_then(int_of)
        .unwrap_or(0);
    let (reason, queue) = match text(H_DEAD_REASON) {
        Some(reason) => (reason, text(H_QUEUE)),
        None => (
            death_text("reason").unwrap_or_else(|| "unknown".to_owned()),
            death_text("queue").or_else(|| text(H_QUEUE)),
        ),
    };
    let mut attempts = ours_attempts.max(delivery_count).max(death_count);
    if reason == "delivery_limit" {
        // The broker gave up after more deliveries than the queue's limit; the dead-lettered
        // copy does not carry its delivery count.
        attempts = attempts.max(crate::topology::DELIVERY_LIMIT + 1);
    }
    DeadLetterInfo {
        reason,
        queue,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        first_error: text(H_FIRST_ERROR),
        last_error: text(H_LAST_ERROR),
        event_type: text(H_EVENT_TYPE),
        dedupe_key: text(H_DEDUPE_KEY),
        recorded: matches!(headers.get(H_RECORDED), Some(AMQPValue::Boolean(true))),
    }
}

/// Adds our dead-letter context headers to properties about to go to the dead-letter exchange.
pub fn with_context(
    properties: BasicProperties,
    queue: &str,
    event_type: Option<&str>,
    dedupe_key: Option<&str>,
    recorded: bool,
) -> BasicProperties {
    let mut headers = properties.headers().clone().unwrap_or_default();
    let long = |s: &str| AMQPValue::LongString(LongString::from(s));
    headers.insert(ShortString::from(H_QUEUE), long(queue));
    if let Some(t) = event_type {
        headers.insert(ShortString::from(H_EVENT_TYPE), long(t));
    }
    if let Some(k) = dedupe_key {
        headers.insert(ShortString::from(H_DEDUPE_KEY), long(k));
    }
    if recorded {
        headers.insert(ShortString::from(H_RECORDED), AMQPValue::Boolean(true));
    }
    properties.with_headers(headers)
}

fn value_to_json(value: &AMQPValue) -> Value {
    match value {
        AMQPValue::Boolean(b) => json!({ "bool": b }),
        AMQPValue::LongString(s) => json!({ "str": String::from_utf8_lossy(s.as_bytes()) }),
        AMQPValue::ShortString(s) => json!({ "str": s.as_str() }),
        AMQPValue::FieldTable(t) => json!({ "table": table_to_json(t) }),
        AMQPValue::FieldArray(a) => {
            json!({ "array": a.as_slice().iter().map(value_to_json).collect::<Vec<_>>() })
        }
        AMQPValue::Float(f) => json!({ "float": f }),
        AMQPValue::Double(f) => json!({ "float": f }),
        other => match int_of(other) {
            Some(n) => json!({ "int": n }),
            None => Value::Null,
        },
    }
}

fn value_from_json(value: &Value) -> Option<AMQPValue> {
    let (kind, inner) = value.as_object()?.iter().next()?;
    Some(match kind.as_str() {
        "bool" => AMQPValue::Boolean(inner.as_bool()?),
        "str" => AMQPValue::LongString(LongString::from(inner.as_str()?)),
        "table" => AMQPValue::FieldTable(table_from_json(inner.as_object()?)),
        "array" => {
            let items: Vec<AMQPValue> = inner.as_array()?.iter().filter_map(value_from_json).collect();
            AMQPValue::FieldArray(FieldArray::from(items))
        }
        "float" => AMQPValue::Double(inner.as_f64()?),
        "int" => AMQPValue::LongLongInt(inner.as_i64()?),
        _ => return None,
    })
}

fn table_to_json(table: &FieldTable) -> Map<String, Value> {
    table
        .inner()
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), value_to_json(v)))
        .collect()
}

fn table_from_json(map: &Map<String, Value>) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in map {
        if let Some(value) = value_from_json(v) {
            table.insert(ShortString::from(k.as_str()), value);
        }
    }
    table
}

/// The properties worth keeping to republish a message as it first was: type, id, content type,
/// timestamp and headers — without the headers of its failures and dead-lettering.
pub fn stored_properties(properties: &BasicProperties) -> Value {
    let mut headers = FieldTable::default();
    if let Some(all) = properties.headers() {
        for (name, value) in all.inner() {
            if !TRANSIENT_HEADERS.contains(&name.as_str()) {
                headers.insert(name.clone(), value.clone());
            }
        }
    }
    json!({
        "type": properties.kind().as_ref().map(ShortString::as_str),
        "message_id": properties.message_id().as_ref().map(ShortString::as_str),
        "content_type": properties.content_type().as_ref().map(ShortString::as_str),
        "timestamp": properties.timestamp(),
        "headers": table_to_json(&headers),
    })
}

/// Rebuilds persistent properties from [`stored_properties`], counting this replay in a header.
pub fn replay_properties(stored: &Value, replays: u32) -> BasicProperties {
    let str_of = |name: &str| stored.get(name).and_then(Value::as_str).map(ShortString::from);
    let mut headers = stored
        .get("headers")
        .and_then(Value::as_object)
        .map(table_from_json)
        .unwrap_or_default();
    headers.insert(
        ShortString::from(H_REPLAYS),
        AMQPValue::LongLongInt(i64::from(replays)),
    );
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    if let Some(kind) = str_of("type") {
        properties = properties.with_type(kind);
    }
    if let Some(id) = str_of("message_id") {
        properties = properties.with_message_id(id);
    }
    if let Some(ct) = str_of("content_type") {
        properties = properties.with_content_type(ct);
    }
    if let Some(ts) = stored.get("timestamp").and_then(Value::as_u64) {
        properties = properties.with_timestamp(ts);
    }
    properties
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;
    use crate::retry::{dead_letter_properties, retry_properties};
    use bytes::Bytes;
    use intake_core::{Envelope, Provider};
    use std::time::Duration;

    fn envelope() -> Envelope {
        Envelope::new(
            "agency-a",
            Provider::Spark360,
            vec![("content-type".into(), "application/json".into())],
            Bytes::from_static(b"{\"a\":1}"),
        )
    }

    #[test]
    fn our_dead_letters_carry_reason_queue_and_context() {
        let original = codec::envelope_properties(&envelope());
        let retried = retry_properties(
            &original,
            Duration::from_secs(5),
            Duration::from_secs(4),
            1,
            "db down",
        );
        let dead = dead_letter_properties(&retried, "retries_exhausted", 7, "timeout");
        let dead = with_context(dead, "p.q.spark360", Some("lead.enriched"), Some("k1"), false);
        let info = dead_letter_info(&dead);
        assert_eq!(info.reason, "retries_exhausted");
        assert_eq!(info.queue.as_deref(), Some("p.q.spark360"));
        assert_eq!(info.attempts, 7);
        assert_eq!(info.first_error.as_deref(), Some("db down"));
        assert_eq!(info.last_error.as_deref(), Some("timeout"));
        assert_eq!(info.event_type.as_deref(), Some("lead.enriched"));
        assert_eq!(info.dedupe_key.as_deref(), Some("k1"));
        assert!(!info.recorded);
    }

    #[test]
    fn broker_dead_letters_are_read_from_x_death() {
        let mut death = FieldTable::default();
        death.insert("reason".into(), AMQPValue::LongString("delivery_limit".into()));
        death.insert("queue".into(), AMQPValue::LongString("p.q.spark".into()));
        death.insert("count".into(), AMQPValue::LongLongInt(1));
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        headers.insert("x-delivery-count".into(), AMQPValue::LongLongInt(21));
        let info = dead_letter_info(&BasicProperties::default().with_headers(headers));
        assert_eq!(info.reason, "delivery_limit");
        assert_eq!(info.queue.as_deref(), Some("p.q.spark"));
        assert_eq!(info.attempts, 21);
        // Without a delivery count the limit itself says how often it was delivered.
        let mut death = FieldTable::default();
        death.insert("reason".into(), AMQPValue::LongString("delivery_limit".into()));
        let mut headers = FieldTable::default();
        headers.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::FieldTable(death)])),
        );
        let info = dead_letter_info(&BasicProperties::default().with_headers(headers));
        assert_eq!(info.attempts, 21);
    }

    #[test]
    fn stored_properties_replay_as_the_original_envelope() {
        let envelope = envelope();
        let original = codec::envelope_properties(&envelope);
        let dead = dead_letter_properties(&original, "unknown_event_type", 1, "unknown type");
        let stored = stored_properties(&with_context(dead, "q", None, None, true));
        let text = stored.to_string();
        assert!(!text.contains("unknown_event_type") && !text.contains(H_QUEUE));
        let replayed = replay_properties(&stored, 2);
        let back = codec::decode_envelope(&replayed, &envelope.body).expect("an envelope again");
        assert_eq!(back, envelope);
        assert_eq!(codec::attempt(&replayed), 0);
        let replays = replayed
            .headers()
            .as_ref()
            .and_then(|h| h.inner().get(H_REPLAYS).cloned());
        assert_eq!(replays, Some(AMQPValue::LongLongInt(2)));
    }
}
