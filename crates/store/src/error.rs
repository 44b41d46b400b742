//! Why a store operation failed, and whether trying again later can help. Messages carry
//! SQLSTATE codes and constraint names, never Postgres's message text (it can quote values).

use deadpool_postgres::PoolError;

/// A failed store operation.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// No connection could be had from the pool (database down, pool exhausted, timeout).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The connection broke or the client failed without a server error.
    #[error("database connection: {0}")]
    Connection(String),
    /// The server reported an error.
    #[error("database error SQLSTATE {code}{}", constraint.as_ref().map(|c| format!(" (constraint {c})")).unwrap_or_default())]
    Db {
        /// SQLSTATE, e.g. `40001`.
        code: String,
        /// The violated constraint, if any.
        constraint: Option<String>,
    },
    /// The operation took longer than allowed.
    #[error("database operation timed out")]
    Timeout,
    /// A stored row could not be read back (e.g. a parked event in an unknown format).
    #[error("stored data unreadable: {0}")]
    Corrupt(String),
    /// A sealed PHI value could not be opened (a key missing from `INTAKE_ENCRYPTION_KEYS`, a
    /// wrong key, or a value moved or tampered with). Names the column, never a value.
    #[error("sealed column {column}: {source}")]
    Sealed {
        /// The column's label, e.g. `contact_phi.mbi`.
        column: String,
        /// Why.
        source: crate::crypto::CryptoError,
    },
    /// The migrations cannot run: an applied one was edited, or one is missing. Needs a person.
    #[error("migrations refused: {0}")]
    Migration(String),
}

/// SQLSTATE of a unique violation: the inbox's "already seen".
pub(crate) const UNIQUE_VIOLATION: &str = "23505";

impl StoreError {
    /// Whether the same operation may succeed later: connection trouble, serialization failure
    /// (40001), deadlock (40P01), server shutting down or overloaded, and a statement the server
    /// cancelled at its `statement_timeout` (57014) or `lock_timeout` (55P03).
    pub fn is_retryable(&self) -> bool {
        match self {
            StoreError::Unavailable(_) | StoreError::Connection(_) | StoreError::Timeout => true,
            StoreError::Db { code, .. } => {
                code.starts_with("08")      // connection exception
                    || code.starts_with("40") // transaction rollback: 40001, 40P01
                    || code.starts_with("53") // insufficient resources
                    || code.starts_with("57") // operator intervention: shutdown, statement timeout
                    || code == "55P03" // lock not available
            }
            StoreError::Corrupt(_) | StoreError::Migration(_) | StoreError::Sealed { .. } => false,
        }
    }

    /// Whether it is a conflict between concurrent transactions — serialization failure
    /// (40001), deadlock (40P01), lock wait over `lock_timeout` (55P03) — which the same work
    /// split smaller can get past.
    pub fn is_conflict(&self) -> bool {
        matches!(self.code(), Some("40001" | "40P01" | "55P03"))
    }

    /// The SQLSTATE, for a server error.
    pub fn code(&self) -> Option<&str> {
        match self {
            StoreError::Db { code, .. } => Some(code),
            _ => None,
        }
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if let Some(db) = e.as_db_error() {
            return StoreError::Db {
                code: db.code().code().to_owned(),
                constraint: db.constraint().map(str::to_owned),
            };
        }
        if let Some(code) = e.code() {
            return StoreError::Db {
                code: code.code().to_owned(),
                constraint: None,
            };
        }
        // Client-side errors (closed connection, I/O, protocol) name no values.
        StoreError::Connection(e.to_string())
    }
}

impl From<PoolError> for StoreError {
    fn from(e: PoolError) -> Self {
        match e {
            PoolError::Backend(e) => StoreError::from(e).into_unavailable(),
            PoolError::Timeout(kind) => StoreError::Unavailable(format!("pool timeout ({kind:?})")),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

impl StoreError {
    pub(crate) fn into_unavailable(self) -> Self {
        match self {
            StoreError::Connection(m) => StoreError::Unavailable(m),
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(code: &str) -> StoreError {
        StoreError::Db {
            code: code.into(),
            constraint: None,
        }
    }

    #[test]
    fn transient_codes_are_retryable() {
        for code in ["40001", "40P01", "08006", "57P01", "57014", "53300", "55P03"] {
            assert!(db(code).is_retryable(), "{code}");
        }
        for code in ["23505", "22007", "42P01", "23502"] {
            assert!(!db(code).is_retryable(), "{code}");
        }
        assert!(StoreError::Timeout.is_retryable());
        assert!(!StoreError::Corrupt("x".into()).is_retryable());
        assert!(!StoreError::Migration("x".into()).is_retryable());
        assert_eq!(
            StoreError::Db {
                code: "23505".into(),
                constraint: Some("inbox_pkey".into())
            }
            .to_string(),
            "database error SQLSTATE 23505 (constraint inbox_pkey)"
        );
    }
}
