//! Our contact → HealthSherpa's fields. [`ContactForSync`] is the plain input the sync worker
//! fills from the store; [`ContactForSync::to_body`] refuses it, before any request, when a
//! required field (`external_id`, `first_name`, `last_name`) is missing or blank.

use std::fmt;

use chrono::NaiveDate;

use crate::HealthSherpaError;
use crate::api::{AddressBody, ContactBody, MedicareBody};

/// A contact as it should look in HealthSherpa. Holds PHI: its `Debug` shows only the
/// external id and which optional parts are present.
#[derive(Clone, Default, PartialEq)]
pub struct ContactForSync {
    /// Our stable id for the contact (required).
    pub external_id: Option<String>,
    /// Required.
    pub first_name: Option<String>,
    /// Required.
    pub last_name: Option<String>,
    /// Optional.
    pub email: Option<String>,
    /// Optional.
    pub phone: Option<String>,
    /// Optional.
    pub address: Option<Address>,
    /// Optional.
    pub medicare: Option<Medicare>,
    /// The agent the contact belongs to; v1 searches need an agent email (this one, else the
    /// configured default).
    pub agent_email: Option<String>,
}

/// A postal address; any part may be unknown.
#[derive(Clone, Default, PartialEq)]
pub struct Address {
    /// Street line 1.
    pub line1: Option<String>,
    /// Street line 2.
    pub line2: Option<String>,
    /// City.
    pub city: Option<String>,
    /// State code.
    pub state: Option<String>,
    /// ZIP code (pre-fills the quote).
    pub zip: Option<String>,
}

/// Medicare information.
#[derive(Clone, Default, PartialEq)]
pub struct Medicare {
    /// Medicare Beneficiary Identifier.
    pub mbi: Option<String>,
    /// Part A effective date.
    pub part_a_date: Option<NaiveDate>,
    /// Part B effective date.
    pub part_b_date: Option<NaiveDate>,
}

impl fmt::Debug for ContactForSync {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContactForSync")
            .field("external_id", &self.external_id)
            .field("has_address", &self.address.is_some())
            .field("has_medicare", &self.medicare.is_some())
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Address(<redacted>)")
    }
}

impl fmt::Debug for Medicare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Medicare(<redacted>)")
    }
}

/// Trimmed, `None` when blank.
fn clean(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

fn required(value: &Option<String>, field: &'static str) -> Result<String, HealthSherpaError> {
    clean(value).ok_or(HealthSherpaError::MissingField { field })
}

impl ContactForSync {
    /// The external id, trimmed, or the missing-field error.
    pub fn external_id(&self) -> Result<String, HealthSherpaError> {
        required(&self.external_id, "external_id")
    }

    /// The request body for a create or update, or [`HealthSherpaError::MissingField`].
    pub fn to_body(&self) -> Result<ContactBody, HealthSherpaError> {
        let address = self.address.as_ref().map(|a| AddressBody {
            street_address: clean(&a.line1),
            street_address_2: clean(&a.line2),
            city: clean(&a.city),
            state: clean(&a.state),
            zip_code: clean(&a.zip),
        });
        let address = address.filter(|a| *a != AddressBody::empty());
        let medicare = self.medicare.as_ref().map(|m| MedicareBody {
            mbi: clean(&m.mbi),
            part_a_effective_date: m.part_a_date,
            part_b_effective_date: m.part_b_date,
        });
        let medicare = medicare.filter(|m| {
            m.mbi.is_some() || m.part_a_effective_date.is_some() || m.part_b_effective_date.is_some()
        });
        Ok(ContactBody {
            external_id: self.external_id()?,
            first_name: required(&self.first_name, "first_name")?,
            last_name: required(&self.last_name, "last_name")?,
            email: clean(&self.email),
            phone: clean(&self.phone),
            address,
            medicare,
        })
    }
}

impl ContactBody {
    /// Every value we send that could come back echoed in an error message: scrubbed from the
    /// messages we keep (see [`crate::error::scrub`]).
    pub(crate) fn sent_values(&self) -> Vec<String> {
        let mut values = vec![
            self.external_id.clone(),
            self.first_name.clone(),
            self.last_name.clone(),
        ];
        values.extend(self.email.clone());
        values.extend(self.phone.clone());
        if let Some(a) = &self.address {
            values.extend(
                [&a.street_address, &a.street_address_2, &a.city, &a.zip_code]
                    .into_iter()
                    .flatten()
                    .cloned(),
            );
        }
        if let Some(m) = &self.medicare {
            values.extend(m.mbi.clone());
            values.extend(
                [m.part_a_effective_date, m.part_b_effective_date]
                    .into_iter()
                    .flatten()
                    .map(|d| d.to_string()),
            );
        }
        values
    }
}

impl AddressBody {
    fn empty() -> AddressBody {
        AddressBody {
            street_address: None,
            street_address_2: None,
            city: None,
            state: None,
            zip_code: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contact() -> ContactForSync {
        ContactForSync {
            external_id: Some("c-1".into()),
            first_name: Some(" Ada ".into()),
            last_name: Some("Lovelace".into()),
            email: Some("".into()),
            address: Some(Address {
                zip: Some("30301".into()),
                ..Address::default()
            }),
            medicare: Some(Medicare {
                mbi: Some("1EG4-TE5-MK73".into()),
                ..Medicare::default()
            }),
            ..ContactForSync::default()
        }
    }

    #[test]
    fn maps_required_and_present_optional_fields() {
        let body = contact().to_body().expect("valid");
        assert_eq!(body.first_name, "Ada");
        assert_eq!(body.email, None, "blank is absent");
        assert_eq!(body.address.and_then(|a| a.zip_code).as_deref(), Some("30301"));
        assert_eq!(
            body.medicare.and_then(|m| m.mbi).as_deref(),
            Some("1EG4-TE5-MK73")
        );
    }

    #[test]
    fn missing_or_blank_required_fields_are_refused() {
        for (c, field) in [
            (
                ContactForSync {
                    last_name: None,
                    ..contact()
                },
                "last_name",
            ),
            (
                ContactForSync {
                    first_name: Some("  ".into()),
                    ..contact()
                },
                "first_name",
            ),
            (
                ContactForSync {
                    external_id: None,
                    ..contact()
                },
                "external_id",
            ),
        ] {
            assert!(matches!(c.to_body(), Err(HealthSherpaError::MissingField { field: f }) if f == field));
        }
    }

    #[test]
    fn empty_parts_are_dropped_and_debug_shows_no_phi() {
        let c = ContactForSync {
            address: Some(Address::default()),
            medicare: Some(Medicare::default()),
            ..contact()
        };
        let body = c.to_body().expect("valid");
        assert!(body.address.is_none() && body.medicare.is_none());
        let shown = format!("{:?}", contact());
        assert!(!shown.contains("Lovelace") && !shown.contains("1EG4"), "{shown}");
    }
}
