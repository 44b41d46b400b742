//! The connection pool and the migrations, run at start under an advisory lock so that several
//! workers starting at once apply each migration exactly once.

use std::str::FromStr;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::NoTls;

use crate::StoreError;

/// Embedded migrations, applied in order; a version once applied is never edited.
const MIGRATIONS: &[(i32, &str, &str)] = &[
    (1, "init", include_str!("../migrations/V1__init.sql")),
    (
        2,
        "healthsherpa_sync",
        include_str!("../migrations/V2__healthsherpa_sync.sql"),
    ),
    (
        3,
        "field_issues",
        include_str!("../migrations/V3__field_issues.sql"),
    ),
    (
        6,
        "dead_letter_store",
        include_str!("../migrations/V6__dead_letter_store.sql"),
    ),
];

/// Arbitrary, fixed advisory-lock key serialising migration runs across processes.
const MIGRATION_LOCK: i64 = 0x696e_7461_6b65; // "intake"

/// Pool settings.
#[derive(Clone)]
pub struct StoreConfig {
    /// `postgres://user:pass@host:port/db` (may hold a password: never logged).
    pub url: String,
    /// Maximum connections.
    pub max_connections: usize,
    /// Longest wait to connect or to get a pooled connection.
    pub connect_timeout: Duration,
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

/// The Postgres store: a pool of connections. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pub(crate) pool: Pool,
}

impl Store {
    /// Builds the pool (connections are made lazily) after validating the URL.
    pub fn new(config: &StoreConfig) -> Result<Store, StoreError> {
        let mut pg = tokio_postgres::Config::from_str(&config.url)
            .map_err(|_| StoreError::Unavailable("invalid database URL".into()))?;
        pg.connect_timeout(config.connect_timeout);
        pg.keepalives_idle(Duration::from_secs(30));
        if pg.get_application_name().is_none() {
            pg.application_name("intake");
        }
        let manager = Manager::from_config(
            pg,
            NoTls,
            // Fast: a closed connection is detected by the client itself; no probe query per use.
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.max_connections.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.connect_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        Ok(Store { pool })
    }

    /// Applies pending migrations. Safe to call from many processes at once: a transaction-scoped
    /// advisory lock makes them take turns, and each sees what the previous one applied.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS intake_schema_migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )
        .await?;
        for (version, name, sql) in MIGRATIONS {
            let applied = tx
                .query_opt(
                    "SELECT 1 FROM intake_schema_migrations WHERE version = $1",
                    &[version],
                )
                .await?
                .is_some();
            if !applied {
                tx.batch_execute(sql).await?;
                tx.execute(
                    "INSERT INTO intake_schema_migrations (version, name) VALUES ($1, $2)",
                    &[version, name],
                )
                .await?;
                tracing::info!(version, name, "migration applied");
            }
        }
        tx.commit().await?;
        Ok(())
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        match self.pool.get().await {
            Ok(client) => client.simple_query("SELECT 1").await.is_ok(),
            Err(_) => false,
        }
    }
}
