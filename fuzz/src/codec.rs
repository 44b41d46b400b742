//! Target `envelope_codec`: `intake_broker::codec::decode_envelope` (and `attempt`) on AMQP
//! properties built from the fuzz input — the message type, message id, every header the codec
//! reads (present or not, of the right AMQP type or any other, valid or garbled text) and
//! unknown extra headers — and an arbitrary body.
//!
//! Oracles: no panic; a refusal is always `BrokerError::Malformed` (a dead letter
//! `malformed_envelope`, never a retry); an accepted envelope keeps the body byte for byte and
//! survives a round trip `envelope_properties` → `decode_envelope` unchanged.

use chrono::{DateTime, SecondsFormat};
use intake_broker::BrokerError;
use intake_broker::codec::{H_ATTEMPT, attempt, decode_envelope, envelope_properties};
use intake_core::{ENVELOPE_TYPE_V1, Envelope, Provider};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, ByteArray, DecimalValue, FieldArray, FieldTable, LongString, ShortString};
use uuid::Uuid;

use crate::{Input, Seed};

const H_ENDPOINT: &str = "x-intake-endpoint";
const H_PROVIDER: &str = "x-intake-provider";
const H_RECEIVED_AT: &str = "x-intake-received-at";
const H_REQUEST_HEADERS: &str = "x-intake-request-headers";

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut input = Input::new(data);
    let properties = properties(&mut input);
    let body = input.rest();
    let _ = attempt(&properties);
    match decode_envelope(&properties, body) {
        Ok(envelope) => {
            assert_eq!(&envelope.body[..], body, "the body is kept byte for byte");
            let again = decode_envelope(&envelope_properties(&envelope), &envelope.body)
                .expect("an envelope that decoded re-encodes and decodes");
            assert_eq!(again, envelope, "round trip through the properties");
        }
        Err(BrokerError::Malformed(_)) => {}
        Err(other) => panic!("decode_envelope refused with {other:?}, not Malformed"),
    }
}

fn properties(input: &mut Input<'_>) -> BasicProperties {
    let mut p = BasicProperties::default();
    match input.byte() % 4 {
        0 | 1 => p = p.with_type(ShortString::from(ENVELOPE_TYPE_V1)),
        2 => p = p.with_type(short_string(input)),
        _ => {}
    }
    match input.byte() % 6 {
        0 => p = p.with_message_id(ShortString::from(uuid(input).hyphenated().to_string())),
        1 => p = p.with_message_id(ShortString::from(uuid(input).simple().to_string())),
        2 => p = p.with_message_id(ShortString::from(uuid(input).braced().to_string())),
        3 => p = p.with_message_id(ShortString::from(uuid(input).urn().to_string())),
        4 => p = p.with_message_id(short_string(input)),
        _ => {}
    }
    if input.byte() % 8 == 7 {
        return p;
    }
    let mut headers = FieldTable::default();
    header(input, &mut headers, H_ENDPOINT, |input| input.text());
    header(input, &mut headers, H_PROVIDER, |input| match input.byte() % 8 {
        n if usize::from(n) < Provider::ALL.len() => Provider::ALL[usize::from(n)].as_str().to_owned(),
        _ => input.text(),
    });
    header(input, &mut headers, H_RECEIVED_AT, received_at);
    match input.byte() % 4 {
        0 | 1 => {
            let mut table = FieldTable::default();
            for _ in 0..input.byte() % 8 {
                let name = input.text();
                let value = value(input, 1);
                table.insert(short_string_of(name), value);
            }
            headers.insert(ShortString::from(H_REQUEST_HEADERS), AMQPValue::FieldTable(table));
        }
        2 => {
            let value = value(input, 1);
            headers.insert(ShortString::from(H_REQUEST_HEADERS), value);
        }
        _ => {}
    }
    if input.byte().is_multiple_of(2) {
        let value = value(input, 0);
        headers.insert(ShortString::from(H_ATTEMPT), value);
    }
    for _ in 0..input.byte() % 4 {
        let name = input.text();
        let value = value(input, 1);
        headers.insert(short_string_of(name), value);
    }
    p.with_headers(headers)
}

/// Inserts `name`: absent, the text `valid` makes as a long or short string, garbled bytes, or
/// a value of another AMQP type.
fn header(
    input: &mut Input<'_>,
    headers: &mut FieldTable,
    name: &str,
    valid: impl FnOnce(&mut Input<'_>) -> String,
) {
    let value = match input.byte() % 8 {
        0 => return,
        1 => AMQPValue::ShortString(short_string_of(valid(input))),
        2 => AMQPValue::LongString(LongString::from(input.short().to_vec())),
        3 => value(input, 1),
        _ => AMQPValue::LongString(LongString::from(valid(input).into_bytes())),
    };
    headers.insert(ShortString::from(name), value);
}

/// An AMQP short string (at most 255 bytes: lapin panics on longer ones) from the input.
fn short_string(input: &mut Input<'_>) -> ShortString {
    short_string_of(input.text())
}

fn short_string_of(mut text: String) -> ShortString {
    let mut end = text.len().min(255);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.truncate(end);
    ShortString::from(text)
}

fn uuid(input: &mut Input<'_>) -> Uuid {
    let hi = input.u64();
    let lo = input.u64();
    Uuid::from_u64_pair(hi, lo)
}

/// An RFC 3339 time in one of its spellings, or text.
fn received_at(input: &mut Input<'_>) -> String {
    let secs = (input.u64() % 400_000_000_000) as i64 - 62_000_000_000;
    let nanos = (input.u64() % 2_000_000_000) as u32;
    let Some(time) = DateTime::from_timestamp(secs, nanos) else {
        return input.text();
    };
    match input.byte() % 5 {
        0 => time.to_rfc3339(),
        1 => time.to_rfc3339_opts(SecondsFormat::Millis, true),
        2 => time
            .with_timezone(&chrono::FixedOffset::east_opt(5 * 3600 + 1800).expect("offset"))
            .to_rfc3339(),
        3 => time.to_rfc3339_opts(SecondsFormat::Secs, false),
        _ => input.text(),
    }
}

/// Any AMQP value; tables and arrays nest up to `depth` more levels.
fn value(input: &mut Input<'_>, depth: u8) -> AMQPValue {
    let kinds = if depth == 0 { 16 } else { 18 };
    match input.byte() % kinds {
        0 => AMQPValue::Boolean(input.byte() % 2 == 1),
        1 => AMQPValue::ShortShortInt(input.byte() as i8),
        2 => AMQPValue::ShortShortUInt(input.byte()),
        3 => AMQPValue::ShortInt(input.u64() as i16),
        4 => AMQPValue::ShortUInt(input.u64() as u16),
        5 => AMQPValue::LongInt(input.u64() as i32),
        6 => AMQPValue::LongUInt(input.u64() as u32),
        7 => AMQPValue::LongLongInt(input.u64() as i64),
        8 => AMQPValue::Float(f32::from_bits(input.u64() as u32)),
        9 => AMQPValue::Double(f64::from_bits(input.u64())),
        10 => AMQPValue::DecimalValue(DecimalValue {
            scale: input.byte(),
            value: input.u64() as u32,
        }),
        11 => AMQPValue::ShortString(short_string(input)),
        12 | 13 => AMQPValue::LongString(LongString::from(input.short().to_vec())),
        14 => AMQPValue::Timestamp(input.u64()),
        15 => match input.byte() % 2 {
            0 => AMQPValue::ByteArray(ByteArray::from(input.short())),
            _ => AMQPValue::Void,
        },
        16 => {
            let mut table = FieldTable::default();
            for _ in 0..input.byte() % 4 {
                let name = input.text();
                let value = value(input, depth - 1);
                table.insert(short_string_of(name), value);
            }
            AMQPValue::FieldTable(table)
        }
        _ => {
            let mut array = FieldArray::default();
            for _ in 0..input.byte() % 4 {
                array.push(value(input, depth - 1));
            }
            AMQPValue::FieldArray(array)
        }
    }
}

/// A seed whose properties are those the receiver writes for `envelope`.
pub fn seed(envelope: &Envelope) -> Vec<u8> {
    let (hi, lo) = envelope.id.as_u64_pair();
    let provider = Provider::ALL
        .iter()
        .position(|p| *p == envelope.provider)
        .unwrap_or(0);
    let secs = (envelope.received_at.timestamp() + 62_000_000_000) as u64;
    let nanos = u64::from(envelope.received_at.timestamp_subsec_nanos());
    let mut seed = Seed::new()
        .byte(0) // type v1
        .byte(0) // hyphenated message id
        .u64(hi)
        .u64(lo)
        .byte(0) // headers present
        .byte(4) // endpoint as long string
        .short(envelope.endpoint.as_bytes())
        .byte(4) // provider as long string
        .byte(provider as u8)
        .byte(4) // received-at as long string
        .u64(secs)
        .u64(nanos)
        .byte(0) // to_rfc3339
        .byte(0) // request headers: a table
        .byte(envelope.headers.len().min(7) as u8);
    for (name, value) in envelope.headers.iter().take(7) {
        seed = seed.short(name.as_bytes()).byte(12).short(value.as_bytes());
    }
    seed.byte(1) // no attempt header
        .byte(0) // no extra headers
        .rest(&envelope.body)
}
