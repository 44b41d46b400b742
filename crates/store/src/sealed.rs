//! Which columns hold sealed PHI (the one list rotation, the migration step and the tests walk),
//! and the typed conversions between a column's value and its sealed bytes. A sealed column is
//! `bytea`; its plaintext is the value's canonical text (`1959-08-22`, `true`) or, for bodies and
//! parked events, the bytes themselves.

use chrono::NaiveDate;

use crate::StoreError;
use crate::crypto::{CryptoError, Keyring, Place};

/// Label of every envelope body, in `raw_events` and `dead_letters` alike: a body is bound to its
/// envelope (message) id, so the copy a parked event's dead letter takes from `raw_events` (in
/// SQL) still opens, while a body moved to another envelope's row does not.
pub const BODY: &str = "envelope.body";

/// A column holding sealed values.
#[derive(Debug, Clone, Copy)]
pub struct SealedColumn {
    /// Column name.
    pub name: &'static str,
    /// Label bound with each value (usually `table.column`).
    pub label: &'static str,
    /// The row's columns bound with each value (its key, as text).
    pub row: &'static [&'static str],
}

/// A table with sealed columns.
#[derive(Debug, Clone, Copy)]
pub struct SealedTable {
    /// Table name.
    pub table: &'static str,
    /// Its primary key, `(column, SQL type)`: how a batch finds a row again.
    pub key: &'static [(&'static str, &'static str)],
    /// Its sealed columns.
    pub columns: &'static [SealedColumn],
}

const fn col(name: &'static str, label: &'static str, row: &'static [&'static str]) -> SealedColumn {
    SealedColumn { name, label, row }
}

const SPARK_ID: &[&str] = &["spark_id"];
const POLICY_ROW: &[&str] = &["spark_id", "category", "slot"];
const MEMBER_ROW: &[&str] = &["application_key", "member_id"];

/// Every sealed column. README "PHI at rest" lists the same.
pub const SEALED: &[SealedTable] = &[
    SealedTable {
        table: "raw_events",
        key: &[("envelope_id", "uuid")],
        columns: &[col("body", BODY, &["envelope_id"])],
    },
    SealedTable {
        table: "dead_letters",
        key: &[("id", "bigint")],
        columns: &[col("body", BODY, &["envelope_id"])],
    },
    SealedTable {
        table: "parked_events",
        key: &[("id", "bigint")],
        columns: &[col("event", "parked_events.event", &["endpoint", "dedupe_key"])],
    },
    SealedTable {
        table: "contact_phi",
        key: &[("spark_id", "text")],
        columns: &[
            col("dob", "contact_phi.dob", SPARK_ID),
            col("mbi", "contact_phi.mbi", SPARK_ID),
            col("has_medicaid", "contact_phi.has_medicaid", SPARK_ID),
            col("has_lis", "contact_phi.has_lis", SPARK_ID),
            col(
                "lis_certification_date",
                "contact_phi.lis_certification_date",
                SPARK_ID,
            ),
            col("drug_subsidy", "contact_phi.drug_subsidy", SPARK_ID),
            col("has_ssi", "contact_phi.has_ssi", SPARK_ID),
            col(
                "part_a_enrollment_date",
                "contact_phi.part_a_enrollment_date",
                SPARK_ID,
            ),
            col(
                "part_b_enrollment_date",
                "contact_phi.part_b_enrollment_date",
                SPARK_ID,
            ),
        ],
    },
    SealedTable {
        table: "contact_policies",
        key: &[("spark_id", "text"), ("category", "text"), ("slot", "text")],
        columns: &[
            col("name", "contact_policies.name", POLICY_ROW),
            col("bid_id", "contact_policies.bid_id", POLICY_ROW),
            col("carrier", "contact_policies.carrier", POLICY_ROW),
            col("effective_date", "contact_policies.effective_date", POLICY_ROW),
            col("expiration_date", "contact_policies.expiration_date", POLICY_ROW),
            col("submitted_date", "contact_policies.submitted_date", POLICY_ROW),
            col("policy_type", "contact_policies.policy_type", POLICY_ROW),
            col("beq_status", "contact_policies.beq_status", POLICY_ROW),
        ],
    },
    SealedTable {
        table: "healthsherpa_members",
        key: &[("application_key", "text"), ("member_id", "text")],
        columns: &[
            col("first_name", "healthsherpa_members.first_name", MEMBER_ROW),
            col("middle_name", "healthsherpa_members.middle_name", MEMBER_ROW),
            col("last_name", "healthsherpa_members.last_name", MEMBER_ROW),
            col("date_of_birth", "healthsherpa_members.date_of_birth", MEMBER_ROW),
        ],
    },
];

/// The sealed column `table.column`, if it is one.
pub fn sealed_column(table: &str, column: &str) -> Option<(&'static SealedTable, &'static SealedColumn)> {
    SEALED
        .iter()
        .filter(|t| t.table == table)
        .find_map(|t| t.columns.iter().find(|c| c.name == column).map(|c| (t, c)))
}

/// A value a sealed column holds, and its canonical plaintext.
pub(crate) trait Plain: Sized {
    /// Name of the type, for errors.
    const TYPE: &'static str;
    fn to_plain(&self) -> Vec<u8>;
    fn from_plain(bytes: Vec<u8>) -> Option<Self>;
}

impl Plain for String {
    const TYPE: &'static str = "text";
    fn to_plain(&self) -> Vec<u8> {
        self.as_bytes().to_vec()
    }
    fn from_plain(bytes: Vec<u8>) -> Option<Self> {
        String::from_utf8(bytes).ok()
    }
}

impl Plain for NaiveDate {
    const TYPE: &'static str = "date";
    fn to_plain(&self) -> Vec<u8> {
        self.format("%Y-%m-%d").to_string().into_bytes()
    }
    fn from_plain(bytes: Vec<u8>) -> Option<Self> {
        NaiveDate::parse_from_str(std::str::from_utf8(&bytes).ok()?, "%Y-%m-%d").ok()
    }
}

impl Plain for bool {
    const TYPE: &'static str = "boolean";
    fn to_plain(&self) -> Vec<u8> {
        if *self {
            b"true".to_vec()
        } else {
            b"false".to_vec()
        }
    }
    fn from_plain(bytes: Vec<u8>) -> Option<Self> {
        match bytes.as_slice() {
            b"true" => Some(true),
            b"false" => Some(false),
            _ => None,
        }
    }
}

/// Seals `value` (absent stays NULL).
pub(crate) fn seal<T: Plain>(keys: &Keyring, value: Option<&T>, place: &Place<'_>) -> Option<Vec<u8>> {
    value.map(|v| keys.seal(&v.to_plain(), place))
}

/// Opens a sealed column's value (NULL stays absent).
pub(crate) fn open<T: Plain>(
    keys: &Keyring,
    sealed: Option<Vec<u8>>,
    place: &Place<'_>,
) -> Result<Option<T>, StoreError> {
    let Some(sealed) = sealed else { return Ok(None) };
    let plain = keys.open(&sealed, place).map_err(|e| sealed_error(place, e))?;
    T::from_plain(plain)
        .map(Some)
        .ok_or_else(|| sealed_error(place, CryptoError::NotA(T::TYPE)))
}

/// Opens a sealed body or document (NULL stays absent).
pub(crate) fn open_bytes(
    keys: &Keyring,
    sealed: Option<Vec<u8>>,
    place: &Place<'_>,
) -> Result<Option<Vec<u8>>, StoreError> {
    sealed
        .map(|s| keys.open(&s, place).map_err(|e| sealed_error(place, e)))
        .transpose()
}

pub(crate) fn sealed_error(place: &Place<'_>, source: CryptoError) -> StoreError {
    StoreError::Sealed {
        column: place.column.to_owned(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintexts_are_canonical_and_round_trip() {
        let d = NaiveDate::from_ymd_opt(1959, 8, 22).expect("date");
        assert_eq!(d.to_plain(), b"1959-08-22");
        assert_eq!(NaiveDate::from_plain(d.to_plain()), Some(d));
        assert_eq!(bool::from_plain(true.to_plain()), Some(true));
        assert_eq!(bool::from_plain(b"yes".to_vec()), None);
        assert_eq!(String::from_plain(b"x".to_vec()).as_deref(), Some("x"));
    }

    #[test]
    fn every_sealed_column_is_listed_once_with_its_row() {
        let mut seen = std::collections::HashSet::new();
        for t in SEALED {
            assert!(!t.key.is_empty(), "{}", t.table);
            for c in t.columns {
                assert!(seen.insert((t.table, c.name)), "{}.{}", t.table, c.name);
                assert!(!c.row.is_empty());
                assert!(sealed_column(t.table, c.name).is_some());
            }
        }
        assert!(sealed_column("contacts", "spark_id").is_none());
    }
}
