//! Where the database is: `INTAKE_DATABASE_URL`, read from the environment only (it may hold a
//! password; a command-line flag would show it in `ps`) and kept as a [`SecretString`].

use secrecy::SecretString;

/// `INTAKE_DATABASE_URL` when unset: a local Postgres with trust authentication.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/intake";

/// `INTAKE_DATABASE_URL` (unset or empty: [`DEFAULT_DATABASE_URL`]).
pub fn database_url_from_env() -> SecretString {
    std::env::var("INTAKE_DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .map_or_else(|| DEFAULT_DATABASE_URL.into(), SecretString::from)
}

/// A role's database variables, as every role reads them (`INTAKE_DATABASE_URL`,
/// `INTAKE_DB_POOL_SIZE`, `INTAKE_DB_TIMEOUT_MS`, `INTAKE_DB_STATEMENT_TIMEOUT_MS`,
/// `INTAKE_DB_LOCK_TIMEOUT_MS`): checked and turned into the store's settings in one place.
#[derive(Debug, Clone, Copy)]
pub struct DatabaseVariables<'a> {
    /// `INTAKE_DATABASE_URL`.
    pub url: &'a SecretString,
    /// `INTAKE_DB_POOL_SIZE`.
    pub pool_size: usize,
    /// `INTAKE_DB_TIMEOUT_MS`: the client's bound on a transaction and on getting a connection.
    pub timeout_ms: u64,
    /// `INTAKE_DB_STATEMENT_TIMEOUT_MS` (unset: 90 % of the client's bound).
    pub statement_timeout_ms: Option<u64>,
    /// `INTAKE_DB_LOCK_TIMEOUT_MS` (unset: 80 % of the client's bound).
    pub lock_timeout_ms: Option<u64>,
}

impl DatabaseVariables<'_> {
    /// The first variable that cannot work and why (never its value).
    pub fn check(&self) -> Result<(), (&'static str, &'static str)> {
        use secrecy::ExposeSecret;
        let url = self.url.expose_secret();
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(("INTAKE_DATABASE_URL", "must start with postgres://"));
        }
        if self.timeout_ms == 0 {
            return Err(("INTAKE_DB_TIMEOUT_MS", "must be positive"));
        }
        for (variable, value) in [
            ("INTAKE_DB_STATEMENT_TIMEOUT_MS", self.statement_timeout_ms),
            ("INTAKE_DB_LOCK_TIMEOUT_MS", self.lock_timeout_ms),
        ] {
            match value {
                Some(0) => return Err((variable, "must be positive")),
                // Above the client's bound, a role would give up on a statement the server still
                // runs, holding its locks.
                Some(ms) if ms > self.timeout_ms => {
                    return Err((variable, "must not exceed INTAKE_DB_TIMEOUT_MS"));
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The store's settings: pool, client-side and server-side bounds.
    pub fn store_config(&self) -> crate::StoreConfig {
        use std::time::Duration;
        let mut store = crate::StoreConfig::new(
            self.url.clone(),
            self.pool_size,
            Duration::from_millis(self.timeout_ms),
        );
        if let Some(ms) = self.statement_timeout_ms {
            store.statement_timeout = Some(Duration::from_millis(ms));
        }
        if let Some(ms) = self.lock_timeout_ms {
            store.lock_timeout = Some(Duration::from_millis(ms));
        }
        store
    }
}
