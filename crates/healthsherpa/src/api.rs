//! The wire format of the HealthSherpa partner API **as we assumed it**. The provider's document
//! (`healthsherpa-crm-sync.txt`) names the operations and the required fields but no path, field
//! name or status code, so everything below is a guess, kept in this one module so it can be
//! corrected in one place once the real API reference is available. `{v}` is `v1` in API-key mode
//! and `v2` in OAuth mode.
//!
//! | operation | request | success |
//! |---|---|---|
//! | search | `GET {base}/api/{v}/contacts?external_id=…` (+ `&agent_email=…` in v1) | 200 `{"contacts": [{"id", "external_id", "redirect_url"?}]}`, empty list when none |
//! | create | `POST {base}/api/{v}/contacts`, JSON [`ContactBody`] | 200/201 [`ContactResponse`] `{"id", "redirect_url"}` |
//! | update | `PATCH {base}/api/{v}/contacts/{id}`, JSON [`ContactBody`] | 200 [`ContactResponse`] |
//! | token (v2) | `POST {base}/oauth/token`, form `grant_type=client_credentials`, `client_id`, `client_secret`, `scope` | 200 [`TokenResponse`] `{"access_token", "token_type", "expires_in"}` |
//!
//! - v1 authenticates every request with the header [`API_KEY_HEADER`] (a header rather than a
//!   query parameter, so the key never lands in access logs); v2 with `Authorization: Bearer`.
//! - `id` may be a JSON string or number; it is kept as a string.
//! - The contact body is flat; optional fields we do not hold are omitted (never sent as `null`),
//!   so an update never clears a field on HealthSherpa's side.
//! - Errors: 429 with `Retry-After` (seconds or HTTP date); 401 for a missing/expired credential;
//!   4xx validation errors (e.g. 422) with a body of one of the shapes read by
//!   [`error_message`]: `{"errors": [{"field", "message"}]}`, `{"errors": {"field": ["msg"]}}`,
//!   `{"error": "…"}` or `{"message": "…"}`.

use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

/// Header carrying the v1 partner API key.
pub const API_KEY_HEADER: &str = "x-api-key";
/// Path of the OAuth token endpoint (client credentials grant), under the base URL.
pub const TOKEN_PATH: &str = "/oauth/token";
/// Lifetime assumed for a token whose response has no `expires_in`.
pub const DEFAULT_TOKEN_LIFETIME_SECS: u64 = 3600;

/// Path of the contacts collection for an API version (`v1`, `v2`).
pub fn contacts_path(version: &str) -> String {
    format!("/api/{version}/contacts")
}

/// The body of a create or update: the whole current state of the contact.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ContactBody {
    /// Our id for the contact; HealthSherpa's search key.
    pub external_id: String,
    /// Required.
    pub first_name: String,
    /// Required.
    pub last_name: String,
    /// Optional email.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Optional phone number, as we hold it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    /// Optional address; its zip pre-fills the quote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<AddressBody>,
    /// Optional Medicare information.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub medicare: Option<MedicareBody>,
}

/// Address fields.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AddressBody {
    /// Street line 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street_address: Option<String>,
    /// Street line 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub street_address_2: Option<String>,
    /// City.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Two-letter state code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// ZIP code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub zip_code: Option<String>,
}

/// Medicare fields (dates as `YYYY-MM-DD`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MedicareBody {
    /// Medicare Beneficiary Identifier.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mbi: Option<String>,
    /// Part A effective date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_a_effective_date: Option<NaiveDate>,
    /// Part B effective date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub part_b_effective_date: Option<NaiveDate>,
}

/// Answer to a create or update.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ContactResponse {
    /// HealthSherpa's id of the contact.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// Where to send the agent for a quote.
    pub redirect_url: String,
}

/// Answer to a search.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SearchResponse {
    /// Matching contacts (at most one expected).
    #[serde(default)]
    pub contacts: Vec<SearchHit>,
}

/// One contact found by a search.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SearchHit {
    /// HealthSherpa's id.
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    /// The external id it was created with, when the API echoes it.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Quote redirect URL, when the API returns one with search results.
    #[serde(default)]
    pub redirect_url: Option<String>,
}

/// Answer of the token endpoint.
#[derive(Debug, Clone, Deserialize)]
pub struct TokenResponse {
    /// The bearer token (a credential: never logged).
    pub access_token: String,
    /// Seconds until it expires; [`DEFAULT_TOKEN_LIFETIME_SECS`] when absent.
    #[serde(default)]
    pub expires_in: Option<u64>,
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    match serde_json::Value::deserialize(d)? {
        serde_json::Value::String(s) if !s.is_empty() => Ok(s),
        serde_json::Value::Number(n) => Ok(n.to_string()),
        other => Err(serde::de::Error::custom(format!(
            "id must be a string or number, got {}",
            kind(&other)
        ))),
    }
}

fn kind(value: &serde_json::Value) -> &'static str {
    match value {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "bool",
        serde_json::Value::Number(_) => "number",
        serde_json::Value::String(_) => "empty string",
        serde_json::Value::Array(_) => "array",
        serde_json::Value::Object(_) => "object",
    }
}

/// The human-readable part of an error body, in any of the assumed shapes (see the module
/// header); `None` when the body is none of them. Not yet scrubbed of sent values.
pub fn error_message(body: &[u8]) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let text = |v: &serde_json::Value| v.as_str().map(str::to_owned);
    let parts: Vec<String> = match value.get("errors") {
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .filter_map(
                |item| match (item.get("field").and_then(|f| f.as_str()), item.get("message")) {
                    (Some(field), Some(msg)) => text(msg).map(|m| format!("{field}: {m}")),
                    (None, Some(msg)) => text(msg),
                    _ => text(item),
                },
            )
            .collect(),
        Some(serde_json::Value::Object(fields)) => fields
            .iter()
            .map(|(field, msgs)| {
                let msgs: Vec<String> = match msgs {
                    serde_json::Value::Array(a) => a.iter().filter_map(text).collect(),
                    other => text(other).into_iter().collect(),
                };
                format!("{field}: {}", msgs.join(", "))
            })
            .collect(),
        _ => ["error", "message"]
            .iter()
            .filter_map(|k| value.get(*k).and_then(text))
            .take(1)
            .collect(),
    };
    (!parts.is_empty()).then(|| parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_of_every_assumed_shape_are_read() {
        let list = br#"{"errors":[{"field":"last_name","message":"can't be blank"},{"message":"bad"}]}"#;
        assert_eq!(
            error_message(list).as_deref(),
            Some("last_name: can't be blank; bad")
        );
        let rails = br#"{"errors":{"email":["is invalid","is taken"]}}"#;
        assert_eq!(
            error_message(rails).as_deref(),
            Some("email: is invalid, is taken")
        );
        assert_eq!(error_message(br#"{"error":"nope"}"#).as_deref(), Some("nope"));
        assert_eq!(error_message(br#"{"message":"m"}"#).as_deref(), Some("m"));
        assert_eq!(error_message(b"<html>"), None);
    }

    #[test]
    fn ids_may_be_numbers_and_absent_fields_are_not_sent() {
        let r: ContactResponse = serde_json::from_str(r#"{"id":42,"redirect_url":"u"}"#).expect("parse");
        assert_eq!(r.id, "42");
        let body = ContactBody {
            external_id: "e".into(),
            first_name: "f".into(),
            last_name: "l".into(),
            email: None,
            phone: None,
            address: None,
            medicare: None,
        };
        assert_eq!(
            serde_json::to_value(&body).expect("json"),
            serde_json::json!({"external_id": "e", "first_name": "f", "last_name": "l"})
        );
    }
}
