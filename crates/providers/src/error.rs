//! Why a payload cannot be decoded. Every variant is permanent (the same bytes will never decode),
//! and no message ever quotes a value from the body: only paths, expected types and known names.

/// A payload that cannot become events.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The body is not JSON at all.
    #[error("body is not valid JSON (line {line}, column {column})")]
    InvalidJson {
        /// 1-based line of the syntax error.
        line: usize,
        /// 1-based column of the syntax error.
        column: usize,
    },
    /// The body is JSON, but its top-level value is not of the kind the provider sends.
    #[error("body is a JSON {found}, not a JSON {expected}")]
    WrongKind {
        /// The kind the provider declares.
        expected: crate::JsonKind,
        /// The kind sent.
        found: crate::JsonKind,
    },
    /// The event type is not one the provider's spec declares.
    #[error("unknown {provider} event type {event_type}")]
    UnknownEventType {
        /// Provider name.
        provider: &'static str,
        /// The type as sent, if it looks like a type name; otherwise a placeholder.
        event_type: String,
    },
    /// A required field is absent or null.
    #[error("missing required field {pointer}")]
    MissingField {
        /// JSON pointer (or `header <name>`) of the field.
        pointer: String,
    },
    /// A field holds a value of the wrong type or format.
    #[error("field {pointer} is not a valid {expected}")]
    InvalidField {
        /// JSON pointer of the field.
        pointer: String,
        /// What was expected there.
        expected: &'static str,
    },
}

impl DecodeError {
    /// A short, stable reason code for dead letters and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::InvalidJson { .. } | DecodeError::WrongKind { .. } => "malformed_payload",
            DecodeError::UnknownEventType { .. } => "unknown_event_type",
            DecodeError::MissingField { .. } => "missing_field",
            DecodeError::InvalidField { .. } => "schema_violation",
        }
    }

    /// An unknown event type, quoting the sent type only when it looks like a type name (so a
    /// body fragment can never end up in a dead-letter reason or a log line).
    pub(crate) fn unknown_type(provider: &'static str, sent: &str) -> DecodeError {
        let looks_like_a_name = !sent.is_empty()
            && sent.len() <= 64
            && sent
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-:".contains(&b));
        DecodeError::UnknownEventType {
            provider,
            event_type: if looks_like_a_name {
                format!("{sent:?}")
            } else {
                "<not a type name>".to_owned()
            },
        }
    }
}
