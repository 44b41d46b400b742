//! The providers we accept webhooks from. The lowercase name is used in configuration, as the
//! routing key and queue suffix, and as a metric label (a closed, low-cardinality set).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A webhook sender whose payloads the pipeline understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Spark contact sync (contact snapshots with PHI).
    Spark,
    /// SparkLoop referral program events.
    #[serde(rename = "sparkloop")]
    SparkLoop,
    /// Spark360 lead and widget events.
    Spark360,
    /// HealthSherpa submission confirmation and policy status.
    #[serde(rename = "healthsherpa")]
    HealthSherpa,
    /// Any sender that signs per the Standard Webhooks specification.
    Standard,
}

impl Provider {
    /// Every provider, in a stable order (topology declares one queue for each).
    pub const ALL: [Provider; 5] = [
        Provider::Spark,
        Provider::SparkLoop,
        Provider::Spark360,
        Provider::HealthSherpa,
        Provider::Standard,
    ];

    /// The lowercase name used in config, routing keys, queue names and metric labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Spark => "spark",
            Provider::SparkLoop => "sparkloop",
            Provider::Spark360 => "spark360",
            Provider::HealthSherpa => "healthsherpa",
            Provider::Standard => "standard",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name that is not one of [`Provider::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (expected one of spark, sparkloop, spark360, healthsherpa, standard)")]
pub struct UnknownProvider(pub String);

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Provider::ALL
            .into_iter()
            .find(|p| p.as_str() == s)
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_str_and_serde() {
        for p in Provider::ALL {
            assert_eq!(p.as_str().parse::<Provider>(), Ok(p));
            let json = serde_json::to_string(&p).expect("serialize");
            assert_eq!(json, format!("\"{}\"", p.as_str()));
        }
        assert!("Spark".parse::<Provider>().is_err());
    }
}
