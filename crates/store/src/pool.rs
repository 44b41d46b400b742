//! The connection pool, with server-side bounds on every session (`statement_timeout`,
//! `lock_timeout`), and the migrations: refinery runs `crates/store/migrations` inside a Postgres
//! advisory lock, so several processes starting at once apply each migration exactly once, and an
//! applied migration whose file was edited since stops the process. Connections use TLS (rustls)
//! when the URL says `sslmode=require` (see [`crate::tls`]).

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use refinery::Target;
use refinery::error::Kind;
use secrecy::{ExposeSecret, SecretString};
use tokio_postgres::NoTls;

use crate::StoreError;
use crate::crypto::Keyring;
use crate::tls::{self, PgTls};

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Arbitrary, fixed advisory-lock key serialising migration runs across processes.
const MIGRATION_LOCK: i64 = 0x696e_7461_6b65; // "intake"

/// Where refinery records applied migrations (version, name, checksum).
const HISTORY_TABLE: &str = "refinery_schema_history";

/// The history table of the hand-written runner refinery replaced: a database migrated by it is
/// adopted (its versions recorded in refinery's table without running them again).
const LEGACY_HISTORY_TABLE: &str = "intake_schema_migrations";

/// Pool settings.
#[derive(Clone)]
pub struct StoreConfig {
    /// `postgres://user:pass@host:port/db` (may hold a password: a secret, never logged).
    /// `sslmode=require` (or libpq's `verify-full`/`verify-ca`) makes every connection TLS with
    /// the server's certificate verified; `sslrootcert=/path.pem` names the CA to trust instead
    /// of the system's.
    pub url: SecretString,
    /// The keys PHI columns are sealed and opened with.
    pub keys: Keyring,
    /// Maximum connections.
    pub max_connections: usize,
    /// Longest wait to connect or to get a pooled connection.
    pub connect_timeout: Duration,
    /// Server-side bound on any one statement (`statement_timeout`), so a statement the client
    /// gave up on stops, and stops holding locks; `None`: the server's default.
    pub statement_timeout: Option<Duration>,
    /// Server-side bound on any one lock wait (`lock_timeout`), advisory locks included;
    /// `None`: the server's default.
    pub lock_timeout: Option<Duration>,
}

impl StoreConfig {
    /// Settings whose server-side bounds sit a little under `client_timeout`, the longest the
    /// client waits for the database: statements 90 % of it, lock waits 80 %.
    pub fn new(
        url: impl Into<SecretString>,
        keys: Keyring,
        max_connections: usize,
        client_timeout: Duration,
    ) -> StoreConfig {
        StoreConfig {
            url: url.into(),
            keys,
            max_connections,
            connect_timeout: client_timeout,
            statement_timeout: Some(client_timeout.mul_f64(0.9)),
            lock_timeout: Some(client_timeout.mul_f64(0.8)),
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &"<redacted>")
            .field("keys", &self.keys)
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .field("statement_timeout", &self.statement_timeout)
            .field("lock_timeout", &self.lock_timeout)
            .finish()
    }
}

/// The server-side bounds a session runs under, as Postgres reports them (`SHOW`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionBounds {
    /// `statement_timeout`, e.g. `9s` or `2500ms` (`0` when unbounded).
    pub statement_timeout: String,
    /// `lock_timeout`.
    pub lock_timeout: String,
}

/// The Postgres store: a pool of connections. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) pool: Pool,
    /// Connection settings, for the migration run's connection of its own.
    pg: Arc<tokio_postgres::Config>,
    /// Plain or TLS, as the URL asks.
    tls: PgTls,
    /// Seals and opens PHI columns.
    pub(crate) keys: Keyring,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("status", &self.pool.status())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Builds the pool (connections are made lazily) after validating the URL.
    pub fn new(config: &StoreConfig) -> Result<Store, StoreError> {
        let url = tls::DatabaseUrl::parse(config.url.expose_secret());
        let mut pg = tokio_postgres::Config::from_str(&url.for_driver)
            .map_err(|_| StoreError::Unavailable("invalid database URL".into()))?;
        let tls = PgTls::new(pg.get_ssl_mode(), url.root_cert.as_deref())?;
        pg.connect_timeout(config.connect_timeout);
        pg.keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("intake");
        }
        // Session settings sent with the startup packet, so every connection has them from its
        // first statement (no extra round trip, no connection that missed a `SET`). Appended to
        // any `options` the URL already carries.
        let mut options: Vec<String> = pg.get_options().map(str::to_owned).into_iter().collect();
        for (name, value) in [
            ("statement_timeout", config.statement_timeout),
            ("lock_timeout", config.lock_timeout),
        ] {
            if let Some(value) = value {
                // At least 1 ms: 0 would mean "no bound".
                options.push(format!("-c {name}={}", value.as_millis().max(1)));
            }
        }
        if !options.is_empty() {
            pg.options(options.join(" "));
        }
        // Fast: a closed connection is detected by the client itself; no probe query per use.
        let manager_config = || ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            PgTls::Plain => Manager::from_config(pg.clone(), NoTls, manager_config()),
            PgTls::Rustls(connector) => Manager::from_config(pg.clone(), connector.clone(), manager_config()),
        };
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Store {
            pool,
            pg: Arc::new(pg),
            tls,
            keys: config.keys.clone(),
        })
    }

    /// Applies pending migrations with refinery. Safe to call from many processes at once: they
    /// take turns on a session advisory lock, and each sees what the previous one applied.
    ///
    /// The wait for that lock is bounded by the session's `lock_timeout`: past it the call fails
    /// with a retryable error (SQLSTATE 55P03) and the caller tries again later. Migrations
    /// themselves run without `statement_timeout` (building an index on a large table may take
    /// long) but keep `lock_timeout`, so DDL never queues behind live traffic for long while
    /// blocking it. An applied migration whose file changed since (refinery's checksum check)
    /// fails with [`StoreError::Migration`], never retried.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        // A connection of its own, not a pooled one: a session lock and a changed session
        // setting must never go back to the pool. Dropping it ends the session, which releases
        // the lock on every path, errors included.
        let mut client = self.tls.connect(&self.pg).await?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        client.batch_execute("SET statement_timeout = 0").await?;

        let runner = || {
            let mut runner = embedded::migrations::runner();
            runner.set_migration_table_name(HISTORY_TABLE);
            runner
        };
        if let Some(version) = legacy_version(&client).await? {
            // Migrated by the former runner: record versions up to its last in refinery's table
            // without running them, then drop the old table.
            runner()
                .set_target(Target::FakeVersion(version))
                .run_async(&mut client)
                .await
                .map_err(migration_error)?;
            client
                .batch_execute(&format!("DROP TABLE {LEGACY_HISTORY_TABLE}"))
                .await?;
            tracing::info!(version, "migration history adopted from the former runner");
        }
        let report = runner().run_async(&mut client).await.map_err(migration_error)?;
        for migration in report.applied_migrations() {
            tracing::info!(
                version = migration.version(),
                name = migration.name(),
                "migration applied"
            );
        }
        // Values a migration left for sealing (V7 moved the plaintext of existing rows aside).
        let sealed = self.seal_pending_plaintext(500).await?;
        if sealed > 0 {
            tracing::info!(sealed, "plaintext PHI of existing rows sealed");
        }
        Ok(())
    }

    /// The keys PHI columns are sealed with.
    pub fn keys(&self) -> &Keyring {
        &self.keys
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }

    /// The server-side bounds of a pooled connection, as the server reports them.
    pub async fn session_bounds(&self) -> Result<SessionBounds, StoreError> {
        let client = self.pool.get().await?;
        let row = client
            .query_one(
                "SELECT current_setting('statement_timeout'), current_setting('lock_timeout')",
                &[],
            )
            .await?;
        Ok(SessionBounds {
            statement_timeout: row.get(0),
            lock_timeout: row.get(1),
        })
    }
}

/// The last version the former hand-written runner applied, if this database was migrated by it
/// and not yet by refinery.
async fn legacy_version(client: &tokio_postgres::Client) -> Result<Option<i32>, StoreError> {
    let row = client
        .query_one(
            "SELECT to_regclass($1) IS NOT NULL, to_regclass($2) IS NOT NULL",
            &[&LEGACY_HISTORY_TABLE, &HISTORY_TABLE],
        )
        .await?;
    if !row.get::<_, bool>(0) || row.get::<_, bool>(1) {
        return Ok(None);
    }
    let version: Option<i32> = client
        .query_one(&format!("SELECT max(version) FROM {LEGACY_HISTORY_TABLE}"), &[])
        .await?
        .get(0);
    Ok(version)
}

/// A database error keeps its SQLSTATE (so a lock timeout stays retryable); a refused migration
/// set says which migration and why, and is never retried.
fn migration_error(e: refinery::Error) -> StoreError {
    match e.kind() {
        Kind::Connection(context, source) => {
            tracing::error!(context = context.as_str(), "migration failed");
            match source.downcast_ref::<tokio_postgres::Error>() {
                Some(pg) => pg_error(pg),
                None => StoreError::Connection(context.clone()),
            }
        }
        Kind::DivergentVersion(applied, embedded) => StoreError::Migration(format!(
            "migration {applied} was edited after it was applied (its checksum differs from the \
             one recorded in {HISTORY_TABLE}; this build has {embedded}): restore the file and put \
             the change in a new migration"
        )),
        Kind::MissingVersion(migration) => StoreError::Migration(format!(
            "migration {migration} is recorded in {HISTORY_TABLE} but missing from this build, or \
             is older than the newest applied one and was never applied"
        )),
        other => StoreError::Migration(other.to_string()),
    }
}

/// [`StoreError::from`] for a borrowed error.
fn pg_error(e: &tokio_postgres::Error) -> StoreError {
    match e.code() {
        Some(code) => StoreError::Db {
            code: code.code().to_owned(),
            constraint: e.as_db_error().and_then(|d| d.constraint()).map(str::to_owned),
        },
        None => StoreError::Connection(e.to_string()),
    }
}
