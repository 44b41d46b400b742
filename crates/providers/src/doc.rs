//! Typed reads from a JSON document by JSON pointer, failing with the pointer of the offending
//! field (never its value). Null counts as absent.

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde_json::Value;

use crate::DecodeError;

/// A JSON value and the pointer it sits at in the payload (for error messages).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Doc<'a> {
    value: &'a Value,
    base: &'a str,
}

/// Owned pointer prefix for sub-documents found at run time (array elements).
pub(crate) fn join(base: &str, ptr: &str) -> String {
    format!("{base}{ptr}")
}

fn invalid(pointer: String, expected: &'static str) -> DecodeError {
    DecodeError::InvalidField { pointer, expected }
}

impl<'a> Doc<'a> {
    pub(crate) fn new(value: &'a Value, base: &'a str) -> Self {
        Doc { value, base }
    }

    pub(crate) fn get(&self, ptr: &str) -> Option<&'a Value> {
        self.value.pointer(ptr).filter(|v| !v.is_null())
    }

    fn path(&self, ptr: &str) -> String {
        join(self.base, ptr)
    }

    /// A string field.
    pub(crate) fn text(&self, ptr: &str) -> Result<Option<String>, DecodeError> {
        match self.get(ptr) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(self.path(ptr), "string")),
        }
    }

    /// An identifier: a string, or an integer rendered in decimal.
    pub(crate) fn id(&self, ptr: &str) -> Result<Option<String>, DecodeError> {
        match self.get(ptr) {
            None => Ok(None),
            Some(Value::String(s)) if s.is_empty() => Err(invalid(self.path(ptr), "non-empty id")),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
            Some(_) => Err(invalid(self.path(ptr), "id (string or integer)")),
        }
    }

    /// A required identifier.
    pub(crate) fn req_id(&self, ptr: &str) -> Result<String, DecodeError> {
        self.id(ptr)?.ok_or_else(|| DecodeError::MissingField {
            pointer: self.path(ptr),
        })
    }

    /// A required string.
    pub(crate) fn req_text(&self, ptr: &str) -> Result<String, DecodeError> {
        self.text(ptr)?.ok_or_else(|| DecodeError::MissingField {
            pointer: self.path(ptr),
        })
    }

    pub(crate) fn bool(&self, ptr: &str) -> Result<Option<bool>, DecodeError> {
        match self.get(ptr) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(invalid(self.path(ptr), "boolean")),
        }
    }

    pub(crate) fn int(&self, ptr: &str) -> Result<Option<i64>, DecodeError> {
        match self.get(ptr) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(self.path(ptr), "integer")),
            Some(_) => Err(invalid(self.path(ptr), "integer")),
        }
    }

    pub(crate) fn number(&self, ptr: &str) -> Result<Option<f64>, DecodeError> {
        match self.get(ptr) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(_) => Err(invalid(self.path(ptr), "number")),
        }
    }

    /// A calendar date: `YYYY-MM-DD`, or the date part of an RFC 3339 timestamp.
    pub(crate) fn date(&self, ptr: &str) -> Result<Option<NaiveDate>, DecodeError> {
        let Some(s) = self.text(ptr)? else { return Ok(None) };
        let day = s.get(..10).unwrap_or(&s);
        NaiveDate::parse_from_str(day, "%Y-%m-%d")
            .map(Some)
            .map_err(|_| invalid(self.path(ptr), "date (YYYY-MM-DD)"))
    }

    /// A point in time: RFC 3339, or `YYYY-MM-DD[ T]HH:MM:SS` taken as UTC.
    pub(crate) fn timestamp(&self, ptr: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        let Some(s) = self.text(ptr)? else { return Ok(None) };
        if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(&s, f).ok())
            .map(|t| Some(t.and_utc()))
            .ok_or_else(|| invalid(self.path(ptr), "timestamp (RFC 3339)"))
    }

    /// Unix seconds as a point in time.
    pub(crate) fn epoch(&self, ptr: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        match self.int(ptr)? {
            None => Ok(None),
            Some(s) => DateTime::from_timestamp(s, 0)
                .map(Some)
                .ok_or_else(|| invalid(self.path(ptr), "unix timestamp")),
        }
    }

    /// An object field as a sub-document, if present.
    pub(crate) fn object(&self, ptr: &str) -> Result<Option<Value>, DecodeError> {
        match self.get(ptr) {
            None => Ok(None),
            Some(v @ Value::Object(_)) => Ok(Some(v.clone())),
            Some(_) => Err(invalid(self.path(ptr), "object")),
        }
    }

    /// An array field's elements (empty when absent).
    pub(crate) fn array(&self, ptr: &str) -> Result<&'a [Value], DecodeError> {
        match self.get(ptr) {
            None => Ok(&[]),
            Some(Value::Array(items)) => Ok(items),
            Some(_) => Err(invalid(self.path(ptr), "array")),
        }
    }
}

impl Doc<'_> {
    /// The pointer this document sits at.
    pub(crate) fn base_path(&self) -> String {
        self.base.to_owned()
    }
}
