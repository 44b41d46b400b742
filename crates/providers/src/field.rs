//! Optional fields: declared once per provider (pointer and type), read tolerantly. A blank value
//! (`null`, `""`, whitespace) is absent; a value readable without loss from another JSON type is
//! read (`"412.50"` as a number, `"true"` as a boolean, `7` as a string); anything else is absent
//! and noted as a [`FieldIssue`] — the declared pointer and the expected type, never the value —
//! while the event is still applied. Strict keys are not declared here but in the
//! [`ProviderSpec`](crate::ProviderSpec); see `doc.rs` for how both are read.

use std::marker::PhantomData;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The type an optional field is declared with (the `expected` of a [`FieldIssue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Expected {
    /// A string; a number is read as its decimal text.
    String,
    /// An identifier: a string, or an integer read as its decimal text.
    Id,
    /// A boolean; `"true"` and `"false"` are read too.
    Boolean,
    /// An integer; an integral number or a string holding one is read too.
    Integer,
    /// A number; a string holding a finite number is read too.
    Number,
    /// A date `YYYY-MM-DD`; the date written in an RFC 3339 timestamp is read too.
    Date,
    /// Unix seconds; a string holding them is read too.
    UnixTime,
    /// An object (a block, or a map of blocks by name).
    Object,
    /// An array of objects.
    Array,
}

impl Expected {
    /// Lowercase name, as stored and documented.
    pub const fn as_str(self) -> &'static str {
        match self {
            Expected::String => "string",
            Expected::Id => "id",
            Expected::Boolean => "boolean",
            Expected::Integer => "integer",
            Expected::Number => "number",
            Expected::Date => "date",
            Expected::UnixTime => "unix_time",
            Expected::Object => "object",
            Expected::Array => "array",
        }
    }
}

/// An optional field whose value could not be read: stored as absent, the event still applied.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FieldIssue {
    /// The declared pointer (`*` for any array index or map key), so it stays a bounded label.
    pub pointer: String,
    /// The declared type.
    pub expected: Expected,
}

/// One declared optional field, untyped (for listing: [`ProviderSpec::fields`](crate::ProviderSpec)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldDecl {
    /// JSON pointer from the body's root; `*` stands for any array index or map key.
    pub pointer: &'static str,
    /// Its type.
    pub expected: Expected,
}

/// How one declared type is read from a non-blank JSON value: `None` if it cannot be without loss.
pub trait Kind {
    /// What the field reads as.
    type Out;
    /// The declared type.
    const EXPECTED: Expected;
    /// Reads a value that is present and not blank.
    fn read(value: &Value) -> Option<Self::Out>;
}

/// A declared optional field of kind `K`; read with `Doc::get` (or `block`, `items`, `entries`).
#[derive(Debug)]
pub struct Field<K> {
    /// JSON pointer from the body's root; `*` stands for any array index or map key.
    pub pointer: &'static str,
    kind: PhantomData<fn() -> K>,
}

impl<K> Clone for Field<K> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<K> Copy for Field<K> {}

impl<K: Kind> Field<K> {
    /// Declares a field.
    pub const fn new(pointer: &'static str) -> Self {
        Field {
            pointer,
            kind: PhantomData,
        }
    }

    /// The untyped declaration.
    pub const fn decl(self) -> FieldDecl {
        FieldDecl {
            pointer: self.pointer,
            expected: K::EXPECTED,
        }
    }
}

/// Declares a provider's optional fields: a typed constant per field, and `ALL` listing them.
macro_rules! optional_fields {
    ($($name:ident: $kind:ident = $pointer:literal;)+) => {
        $(
            #[doc = concat!("`", $pointer, "`")]
            pub(crate) const $name: $crate::field::Field<$crate::field::$kind> =
                $crate::field::Field::new($pointer);
        )+
        /// Every optional field above, in declaration order.
        pub(crate) const ALL: &[$crate::field::FieldDecl] = &[$($name.decl()),+];
    };
}
pub(crate) use optional_fields;

/// Whether a value counts as absent: `null`, or a string that is empty or only whitespace.
pub(crate) fn is_blank(value: &Value) -> bool {
    match value {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

/// [`Expected::String`].
#[derive(Debug)]
pub struct Text;
impl Kind for Text {
    type Out = String;
    const EXPECTED: Expected = Expected::String;
    fn read(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }
}

/// [`Expected::Id`].
#[derive(Debug)]
pub struct Id;
impl Kind for Id {
    type Out = String;
    const EXPECTED: Expected = Expected::Id;
    fn read(value: &Value) -> Option<String> {
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
            _ => None,
        }
    }
}

/// [`Expected::Boolean`].
#[derive(Debug)]
pub struct Bool;
impl Kind for Bool {
    type Out = bool;
    const EXPECTED: Expected = Expected::Boolean;
    fn read(value: &Value) -> Option<bool> {
        match value {
            Value::Bool(b) => Some(*b),
            Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
            _ => None,
        }
    }
}

/// [`Expected::Integer`].
#[derive(Debug)]
pub struct Int;
impl Kind for Int {
    type Out = i64;
    const EXPECTED: Expected = Expected::Integer;
    fn read(value: &Value) -> Option<i64> {
        match value {
            Value::Number(n) => n.as_i64().or_else(|| integral(n.as_f64()?)),
            Value::String(s) => s.trim().parse().ok(),
            _ => None,
        }
    }
}

/// `7.0` is the integer 7; `7.5` or a float beyond `i64` is not an integer.
fn integral(f: f64) -> Option<i64> {
    // i64::MAX as f64 rounds up to 2^63, so the upper bound is exclusive.
    (f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

/// [`Expected::Number`].
#[derive(Debug)]
pub struct Number;
impl Kind for Number {
    type Out = f64;
    const EXPECTED: Expected = Expected::Number;
    fn read(value: &Value) -> Option<f64> {
        match value {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim().parse::<f64>().ok().filter(|f| f.is_finite()),
            _ => None,
        }
    }
}

/// [`Expected::Date`].
#[derive(Debug)]
pub struct Date;
impl Kind for Date {
    type Out = NaiveDate;
    const EXPECTED: Expected = Expected::Date;
    fn read(value: &Value) -> Option<NaiveDate> {
        let s = value.as_str()?.trim();
        if let Ok(day) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
            return Some(day);
        }
        // The calendar date as written in the timestamp (not converted to UTC).
        if let Ok(t) = DateTime::parse_from_rfc3339(s) {
            return Some(t.date_naive());
        }
        naive_datetime(s).map(|t| t.date())
    }
}

/// `YYYY-MM-DD HH:MM:SS[.f]` or with a `T`, without an offset.
pub(crate) fn naive_datetime(s: &str) -> Option<NaiveDateTime> {
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
}

/// [`Expected::UnixTime`].
#[derive(Debug)]
pub struct UnixTime;
impl Kind for UnixTime {
    type Out = DateTime<Utc>;
    const EXPECTED: Expected = Expected::UnixTime;
    fn read(value: &Value) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp(Int::read(value)?, 0)
    }
}

/// [`Expected::Object`]: read as the object as sent, or as a block of further fields.
#[derive(Debug)]
pub struct Object;
impl Kind for Object {
    type Out = Value;
    const EXPECTED: Expected = Expected::Object;
    fn read(value: &Value) -> Option<Value> {
        value.is_object().then(|| value.clone())
    }
}

/// [`Expected::Array`]: an array of objects, read element by element (`Doc::items`).
#[derive(Debug)]
pub struct Array;
impl Kind for Array {
    type Out = ();
    const EXPECTED: Expected = Expected::Array;
    fn read(value: &Value) -> Option<()> {
        value.is_array().then_some(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_readable_without_loss_are_read() {
        assert_eq!(Text::read(&json!(412.5)).as_deref(), Some("412.5"));
        assert_eq!(Id::read(&json!(1234)).as_deref(), Some("1234"));
        assert_eq!(Id::read(&json!(7.5)), None);
        assert_eq!(Bool::read(&json!("true")), Some(true));
        assert_eq!(Bool::read(&json!(" False ")), Some(false));
        assert_eq!(Bool::read(&json!("yes")), None);
        assert_eq!(Bool::read(&json!(1)), None);
        assert_eq!(Int::read(&json!("7")), Some(7));
        assert_eq!(Int::read(&json!(7.0)), Some(7));
        assert_eq!(Int::read(&json!(7.5)), None);
        assert_eq!(Int::read(&json!(1e300)), None);
        assert_eq!(Number::read(&json!("412.50")), Some(412.5));
        assert_eq!(Number::read(&json!("NaN")), None);
        assert_eq!(Number::read(&json!("inf")), None);
        assert_eq!(Number::read(&json!(true)), None);
        let day = NaiveDate::from_ymd_opt(2026, 1, 31);
        assert_eq!(Date::read(&json!("2026-01-31")), day);
        assert_eq!(Date::read(&json!("2026-01-31T23:30:00-05:00")), day);
        assert_eq!(Date::read(&json!("2026-01-31 08:00:00")), day);
        assert_eq!(Date::read(&json!("2026-01-31garbage")), None);
        assert_eq!(Date::read(&json!("31/01/2026")), None);
        assert_eq!(
            UnixTime::read(&json!("1564400550")),
            DateTime::from_timestamp(1_564_400_550, 0)
        );
        assert_eq!(Object::read(&json!([])), None);
        assert_eq!(Array::read(&json!({})), None);
    }

    #[test]
    fn blank_is_null_empty_or_whitespace() {
        assert!(is_blank(&json!(null)) && is_blank(&json!("")) && is_blank(&json!(" \t\n")));
        assert!(!is_blank(&json!(0)) && !is_blank(&json!(false)) && !is_blank(&json!({})));
    }

    #[test]
    fn issues_serialize_as_pointer_and_expected_type() {
        let issue = FieldIssue {
            pointer: "/members/*/date_of_birth".into(),
            expected: Expected::Date,
        };
        assert_eq!(
            serde_json::to_value(&issue).unwrap(),
            json!({"pointer": "/members/*/date_of_birth", "expected": "date"})
        );
        assert_eq!(Expected::UnixTime.as_str(), "unix_time");
    }
}
