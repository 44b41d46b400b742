//! The body check the receiver runs before it answers 200: the body is JSON the decoder can read
//! (UTF-8, well formed, within serde_json's nesting and number limits) and its top-level value is
//! of the kind the provider declares ([`crate::ProviderSpec::body`]) — without building the
//! document. It accepts exactly what the decoder's parse accepts, so a body that passes it never
//! fails in the worker for its JSON alone.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::DecodeError;

/// The kind of a JSON value (RFC 8259 section 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JsonKind {
    /// `{…}`
    Object,
    /// `[…]`
    Array,
    /// `"…"`
    String,
    /// `1`, `-2.5e3`
    Number,
    /// `true`, `false`
    Boolean,
    /// `null`
    Null,
}

impl JsonKind {
    /// The lowercase name (`object`, `array`, …) used in error messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            JsonKind::Object => "object",
            JsonKind::Array => "array",
            JsonKind::String => "string",
            JsonKind::Number => "number",
            JsonKind::Boolean => "boolean",
            JsonKind::Null => "null",
        }
    }

    /// The kind of a parsed value.
    pub fn of(value: &serde_json::Value) -> JsonKind {
        match value {
            serde_json::Value::Object(_) => JsonKind::Object,
            serde_json::Value::Array(_) => JsonKind::Array,
            serde_json::Value::String(_) => JsonKind::String,
            serde_json::Value::Number(_) => JsonKind::Number,
            serde_json::Value::Bool(_) => JsonKind::Boolean,
            serde_json::Value::Null => JsonKind::Null,
        }
    }
}

impl fmt::Display for JsonKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Checks that `body` is one JSON value of kind `expected` that the decoder can parse.
pub fn check(body: &[u8], expected: JsonKind) -> Result<(), DecodeError> {
    let Walk(found) = serde_json::from_slice(body).map_err(|e| DecodeError::InvalidJson {
        line: e.line(),
        column: e.column(),
    })?;
    if found == expected {
        Ok(())
    } else {
        Err(DecodeError::WrongKind { expected, found })
    }
}

/// Walks a whole JSON value, keeping only its top-level kind. Unlike
/// `serde::de::IgnoredAny`, which skips strings without checking them (invalid UTF-8 and lone
/// surrogate escapes pass), every string and key is read as a `str`, so it is checked as the
/// decoder's parse checks it; no string is copied unless it holds an escape.
struct Walk(JsonKind);

impl<'de> Deserialize<'de> for Walk {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WalkVisitor).map(Walk)
    }
}

struct WalkVisitor;

impl<'de> Visitor<'de> for WalkVisitor {
    type Value = JsonKind;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<JsonKind, E> {
        Ok(JsonKind::Boolean)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<JsonKind, E> {
        Ok(JsonKind::Number)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<JsonKind, E> {
        Ok(JsonKind::Number)
    }

    fn visit_f64<E: de::Error>(self, _: f64) -> Result<JsonKind, E> {
        Ok(JsonKind::Number)
    }

    fn visit_str<E: de::Error>(self, _: &str) -> Result<JsonKind, E> {
        Ok(JsonKind::String)
    }

    fn visit_unit<E: de::Error>(self) -> Result<JsonKind, E> {
        Ok(JsonKind::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonKind, A::Error> {
        while seq.next_element::<Walk>()?.is_some() {}
        Ok(JsonKind::Array)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonKind, A::Error> {
        while map.next_key::<Walk>()?.is_some() {
            map.next_value::<Walk>()?;
        }
        Ok(JsonKind::Object)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(body: &[u8]) -> Result<JsonKind, DecodeError> {
        match check(body, JsonKind::Object) {
            Ok(()) => Ok(JsonKind::Object),
            Err(DecodeError::WrongKind { found, .. }) => Ok(found),
            Err(e) => Err(e),
        }
    }

    #[test]
    fn tells_every_top_level_kind() {
        for (body, expected) in [
            (&br#" {"a":[1,"x",{"b":null}]} "#[..], JsonKind::Object),
            (b"[]", JsonKind::Array),
            (br#""x""#, JsonKind::String),
            (b"-2.5e3", JsonKind::Number),
            (b"42", JsonKind::Number),
            (b"true", JsonKind::Boolean),
            (b"null", JsonKind::Null),
        ] {
            assert_eq!(kind(body), Ok(expected), "{}", String::from_utf8_lossy(body));
        }
        assert_eq!(
            check(b"42", JsonKind::Object),
            Err(DecodeError::WrongKind {
                expected: JsonKind::Object,
                found: JsonKind::Number
            })
        );
    }

    #[test]
    fn refuses_what_the_decoder_cannot_parse() {
        for body in [
            &b""[..],
            b"{",
            b"{} {}",
            b"{\"a\":\"\xff\"}",
            b"{\"\xc3\":1}",
            b"{\"a\":\"\xed\xa0\x80\"}",
            br#"{"a":"\ud800"}"#,
            br#"{"\udc00":1}"#,
            br#"{"a":"\x"}"#,
            b"{\"a\":1e400}",
            &[b'['; 200],
        ] {
            assert!(
                matches!(kind(body), Err(DecodeError::InvalidJson { .. })),
                "{}",
                String::from_utf8_lossy(body)
            );
            assert!(
                serde_json::from_slice::<serde_json::Value>(body).is_err(),
                "the decoder's parse refuses it too"
            );
        }
        // A valid surrogate pair and escapes are fine.
        assert_eq!(kind(br#"{"a":"\ud83d\ude00\n\u00e9"}"#), Ok(JsonKind::Object));
    }
}
