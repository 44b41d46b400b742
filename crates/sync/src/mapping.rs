//! The stored contact ([`SyncContact`]) → the client's [`ContactForSync`]: our `spark_id` is the
//! `external_id`; the one-line home address is split into street, city, state and ZIP.

use intake_healthsherpa::{Address, ContactForSync, Medicare};
use intake_store::sync::SyncContact;

/// What HealthSherpa should hold for `contact`.
pub fn to_sync(contact: &SyncContact) -> ContactForSync {
    let medicare = (contact.mbi.is_some() || contact.part_a_date.is_some() || contact.part_b_date.is_some())
        .then(|| Medicare {
            mbi: contact.mbi.clone(),
            part_a_date: contact.part_a_date,
            part_b_date: contact.part_b_date,
        });
    ContactForSync {
        external_id: Some(contact.spark_id.clone()),
        first_name: contact.first_name.clone(),
        last_name: contact.last_name.clone(),
        email: contact.email.clone(),
        phone: contact.phone.clone(),
        address: contact.home_address.as_deref().and_then(parse_address),
        medicare,
        agent_email: contact.agent_email.clone(),
    }
}

/// Splits `street, [street 2,] city, ST 12345[-6789]`. What does not fit that shape is kept as
/// street line 1, with a trailing ZIP still picked out.
pub fn parse_address(line: &str) -> Option<Address> {
    let line = line.trim();
    if line.is_empty() {
        return None;
    }
    let parts: Vec<&str> = line.split(',').map(str::trim).filter(|p| !p.is_empty()).collect();
    let is_zip = |s: &str| {
        let digits = s.split('-').next().unwrap_or("");
        digits.len() == 5 && digits.chars().all(|c| c.is_ascii_digit())
    };
    if let [street @ .., city, state_zip] = parts.as_slice()
        && let Some((state, zip)) = state_zip.split_once(' ')
        && state.len() == 2
        && is_zip(zip.trim())
        && !street.is_empty()
    {
        return Some(Address {
            line1: Some(street[0].to_owned()),
            line2: (street.len() > 1).then(|| street[1..].join(", ")),
            city: Some((*city).to_owned()),
            state: Some(state.to_uppercase()),
            zip: Some(zip.trim().to_owned()),
        });
    }
    let zip = line
        .rsplit([' ', ','])
        .next()
        .filter(|z| is_zip(z))
        .map(str::to_owned);
    Some(Address {
        line1: Some(line.to_owned()),
        zip,
        ..Address::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_us_address_line() {
        let a = parse_address("14 Aspen Drive, North Caldwell, NJ 07006").expect("address");
        assert_eq!(a.line1.as_deref(), Some("14 Aspen Drive"));
        assert_eq!(a.line2, None);
        assert_eq!(a.city.as_deref(), Some("North Caldwell"));
        assert_eq!(a.state.as_deref(), Some("NJ"));
        assert_eq!(a.zip.as_deref(), Some("07006"));
        let two = parse_address("1 Main St, Apt 2, Newark, nj 07114-1234").expect("address");
        assert_eq!(two.line2.as_deref(), Some("Apt 2"));
        assert_eq!(two.zip.as_deref(), Some("07114-1234"));
    }

    #[test]
    fn odd_addresses_keep_the_line_and_any_zip() {
        let a = parse_address("PO Box 7 Springfield 62701").expect("address");
        assert_eq!(a.line1.as_deref(), Some("PO Box 7 Springfield 62701"));
        assert_eq!(a.zip.as_deref(), Some("62701"));
        assert_eq!(parse_address("  "), None);
    }

    #[test]
    fn spark_id_is_the_external_id() {
        let c = SyncContact {
            spark_id: "s-1".into(),
            last_name: Some("L".into()),
            ..SyncContact::default()
        };
        let s = to_sync(&c);
        assert_eq!(s.external_id.as_deref(), Some("s-1"));
        assert!(s.medicare.is_none() && s.address.is_none());
    }
}
