//! Fresh Postgres databases for tests: each test gets its own, so tests never see each other's
//! rows and can run in parallel.

use std::net::SocketAddr;

use tokio_postgres::{Client, NoTls};

use crate::unique_name;

/// Postgres on this machine (trust auth).
pub const PG_ADDR: &str = "127.0.0.1:5432";

/// A database created for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// URL to it, direct.
    pub url: String,
}

impl TestDb {
    /// URL to it through a proxy listening at `addr`.
    pub fn url_via(&self, addr: SocketAddr) -> String {
        format!("postgres://postgres@{addr}/{}", self.name)
    }

    /// Drops the database, closing any connection still open to it.
    pub async fn drop_database(self) {
        let admin = connect(&format!("postgres://postgres@{PG_ADDR}/postgres")).await;
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name))
            .await;
    }

    /// A store on it with the test keys, migrated.
    pub async fn migrated_store(
        &self,
        connections: usize,
        timeout: std::time::Duration,
    ) -> intake_store::Store {
        let store = intake_store::Store::new(&intake_store::StoreConfig::new(
            self.url.clone(),
            crate::test_keys(),
            connections,
            timeout,
        ))
        .expect("store");
        store.migrate().await.expect("migrate");
        store
    }

    /// A client connected directly (its connection task is spawned).
    pub async fn client(&self) -> Client {
        connect(&self.url).await
    }
}

/// Connects to `url`, spawning the connection task; panics if it cannot.
pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to test postgres: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

/// Creates an empty, uniquely named database.
pub async fn fresh_database(tag: &str) -> TestDb {
    let name = unique_name(tag).replace('-', "_").to_lowercase();
    let admin = connect(&format!("postgres://postgres@{PG_ADDR}/postgres")).await;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{name}\""))
        .await
        .unwrap_or_else(|e| panic!("create database: {e}"));
    TestDb {
        url: format!("postgres://postgres@{PG_ADDR}/{name}"),
        name,
    }
}
