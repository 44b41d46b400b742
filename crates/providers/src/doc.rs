//! Reading a payload by JSON pointer, in two classes. Strict reads (`key_*`, `key`) serve what the
//! [`ProviderSpec`](crate::ProviderSpec) names — event type, dedupe source, entity id, event time,
//! required row keys —: a blank value is absent, and a wrong type, or a missing required key, is a
//! [`DecodeError`] naming the pointer (never the value). Tolerant reads (`get`, `block`, `items`,
//! `entries`) serve the declared optional fields ([`crate::field`]): they never fail; a value they
//! cannot read is absent and noted as a [`FieldIssue`].

use std::cell::RefCell;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::DecodeError;
use crate::field::{Array, Expected, Field, FieldIssue, Kind, Object, is_blank, naive_datetime};

/// The field issues of one payload, each noted once.
#[derive(Debug, Default)]
pub(crate) struct Issues(RefCell<Vec<FieldIssue>>);

impl Issues {
    fn note(&self, pointer: &str, expected: Expected) {
        let mut issues = self.0.borrow_mut();
        if !issues
            .iter()
            .any(|i| i.pointer == pointer && i.expected == expected)
        {
            issues.push(FieldIssue {
                pointer: pointer.to_owned(),
                expected,
            });
        }
    }

    /// The issues, sorted by pointer.
    pub(crate) fn into_vec(self) -> Vec<FieldIssue> {
        let mut issues = self.0.into_inner();
        issues.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        issues
    }
}

/// A JSON value of the payload: the body itself, or a block or element of it.
#[derive(Debug, Clone)]
pub(crate) struct Doc<'a> {
    value: &'a Value,
    /// The declared pointer of `value` (`""` for the body, `/policies/*` for a policy): fields are
    /// declared from the body's root, so a field read here must start with it.
    pattern: String,
    issues: &'a Issues,
}

fn invalid(pointer: String, expected: &'static str) -> DecodeError {
    DecodeError::InvalidField { pointer, expected }
}

impl<'a> Doc<'a> {
    /// The body.
    pub(crate) fn root(value: &'a Value, issues: &'a Issues) -> Self {
        Doc {
            value,
            pattern: String::new(),
            issues,
        }
    }

    /// The value at `ptr` (relative to this document) unless absent or blank.
    fn present(&self, ptr: &str) -> Option<&'a Value> {
        self.value.pointer(ptr).filter(|v| !is_blank(v))
    }

    fn path(&self, ptr: &str) -> String {
        format!("{}{ptr}", self.pattern)
    }

    // Strict reads ------------------------------------------------------------------------------

    /// A strict string (the event type).
    pub(crate) fn key_text(&self, ptr: &str) -> Result<Option<String>, DecodeError> {
        match self.present(ptr) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(invalid(self.path(ptr), "string")),
        }
    }

    /// A strict identifier: a string, or an integer rendered in decimal.
    pub(crate) fn key_id(&self, ptr: &str) -> Result<Option<String>, DecodeError> {
        match self.present(ptr) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Ok(Some(n.to_string())),
            Some(_) => Err(invalid(self.path(ptr), "id (string or integer)")),
        }
    }

    /// A required identifier: the first present of `alternatives`.
    pub(crate) fn key(&self, alternatives: &[&str]) -> Result<String, DecodeError> {
        for ptr in alternatives {
            if let Some(id) = self.key_id(ptr)? {
                return Ok(id);
            }
        }
        let pointer = alternatives
            .iter()
            .map(|p| self.path(p))
            .collect::<Vec<_>>()
            .join(" or ");
        Err(DecodeError::MissingField { pointer })
    }

    /// A strict point in time: RFC 3339, or `YYYY-MM-DD[ T]HH:MM:SS` taken as UTC.
    pub(crate) fn key_time(&self, ptr: &str) -> Result<Option<DateTime<Utc>>, DecodeError> {
        let Some(s) = self.key_text(ptr)? else {
            return Ok(None);
        };
        if let Ok(t) = DateTime::parse_from_rfc3339(&s) {
            return Ok(Some(t.with_timezone(&Utc)));
        }
        naive_datetime(&s)
            .map(|t| Some(t.and_utc()))
            .ok_or_else(|| invalid(self.path(ptr), "timestamp (RFC 3339)"))
    }

    /// The value at `ptr` as sent, for a block kept whole whose key is strict.
    pub(crate) fn raw(&self, ptr: &str) -> Option<&'a Value> {
        self.value.pointer(ptr)
    }

    // Tolerant reads ----------------------------------------------------------------------------

    /// The pointer of a declared field relative to this document.
    fn relative<'p>(&self, declared: &'p str) -> Option<&'p str> {
        let rel = declared
            .strip_prefix(self.pattern.as_str())
            .filter(|rel| rel.is_empty() || rel.starts_with('/'));
        debug_assert!(rel.is_some(), "field {declared} read outside {}", self.pattern);
        rel
    }

    /// A declared field's value, unless absent or blank.
    fn lookup<K>(&self, field: Field<K>) -> Option<&'a Value> {
        self.present(self.relative(field.pointer)?)
    }

    /// A declared optional field; absent if blank, absent and noted if unreadable.
    pub(crate) fn get<K: Kind>(&self, field: Field<K>) -> Option<K::Out> {
        let value = self.lookup(field)?;
        let read = K::read(value);
        if read.is_none() {
            self.issues.note(field.pointer, K::EXPECTED);
        }
        read
    }

    /// The key of a block or element (the id its row is stored under): like [`Doc::get`], but
    /// absent or blank is noted too, because the block is then left out.
    pub(crate) fn block_key<K: Kind>(&self, field: Field<K>) -> Option<K::Out> {
        let key = self.get(field);
        if key.is_none() {
            self.issues.note(field.pointer, K::EXPECTED);
        }
        key
    }

    /// A declared object, as a document to read its own declared fields from.
    pub(crate) fn block(&self, field: Field<Object>) -> Option<Doc<'a>> {
        let value = self.lookup(field)?;
        if value.is_object() {
            Some(Doc {
                value,
                pattern: field.pointer.to_owned(),
                issues: self.issues,
            })
        } else {
            self.issues.note(field.pointer, Expected::Object);
            None
        }
    }

    /// The object elements of a declared array (declared pointer `<field>/*`); an element that is
    /// not an object is skipped and noted.
    pub(crate) fn items(&self, field: Field<Array>) -> Vec<Doc<'a>> {
        let Some(value) = self.lookup(field) else {
            return Vec::new();
        };
        let Some(elements) = value.as_array() else {
            self.issues.note(field.pointer, Expected::Array);
            return Vec::new();
        };
        let pattern = format!("{}/*", field.pointer);
        elements
            .iter()
            .filter_map(|v| self.element(v, &pattern))
            .collect()
    }

    /// The object values of a declared map of blocks by name (declared pointer `<field>/*`),
    /// sorted by name; a value that is not an object is skipped and noted.
    pub(crate) fn entries(&self, field: Field<Object>) -> Vec<(&'a str, Doc<'a>)> {
        let Some(value) = self.lookup(field) else {
            return Vec::new();
        };
        let Some(map) = value.as_object() else {
            self.issues.note(field.pointer, Expected::Object);
            return Vec::new();
        };
        let pattern = format!("{}/*", field.pointer);
        let mut entries: Vec<(&'a str, Doc<'a>)> = map
            .iter()
            .filter_map(|(name, v)| Some((name.as_str(), self.element(v, &pattern)?)))
            .collect();
        entries.sort_by_key(|(name, _)| *name);
        entries
    }

    /// An element of an array or map: skipped if blank, skipped and noted if not an object.
    fn element(&self, value: &'a Value, pattern: &str) -> Option<Doc<'a>> {
        if is_blank(value) {
            return None;
        }
        if !value.is_object() {
            self.issues.note(pattern, Expected::Object);
            return None;
        }
        Some(Doc {
            value,
            pattern: pattern.to_owned(),
            issues: self.issues,
        })
    }
}
