//! Reading the times operators type: `2h`, `30m`, `7d` (that long ago), an RFC 3339 timestamp, or
//! a date (`2026-11-25`, midnight UTC).

use chrono::{DateTime, NaiveDate, Utc};
use std::time::Duration;

/// A duration like `90s`, `30m`, `2h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} is not a duration like 30m, 2h or 7d"))?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86_400,
        _ => return Err(format!("{s:?} is not a duration like 30m, 2h or 7d")),
    };
    Ok(Duration::from_secs(secs))
}

/// A point in time: a duration ago, an RFC 3339 timestamp or a date.
pub fn parse_when(s: &str) -> Result<DateTime<Utc>, String> {
    if let Ok(ago) = parse_duration(s) {
        let ago = chrono::Duration::from_std(ago).map_err(|e| e.to_string())?;
        return Ok(Utc::now() - ago);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|d| d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc())
        .map_err(|_| format!("{s:?} is not a time: use 2h, 7d, 2026-11-25 or an RFC 3339 timestamp"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert!(parse_duration("2x").is_err() && parse_duration("h").is_err());
        let t = parse_when("2026-11-25T10:00:00Z").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T10:00:00+00:00");
        assert_eq!(
            parse_when("2026-11-25").unwrap().to_rfc3339(),
            "2026-11-25T00:00:00+00:00"
        );
        let ago = Utc::now() - parse_when("1h").unwrap();
        assert!((3590..=3610).contains(&ago.num_seconds()));
        assert!(parse_when("yesterday").is_err());
    }
}
