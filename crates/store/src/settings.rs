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
