//! TLS to Postgres, chosen by the URL as libpq users expect: `sslmode=require` (or `verify-ca`,
//! `verify-full`) makes every connection TLS through rustls, always verifying the server's
//! certificate chain and host name — the strictest of libpq's modes, whatever the name; `disable`
//! and `prefer` (the default) connect in plain text. `sslrootcert=/path/ca.pem` names the CA
//! certificates to trust instead of the system's. tokio-postgres itself knows neither
//! `sslrootcert` nor the `verify-*` modes, so they are taken out of the URL before it parses it.

use std::sync::Arc;

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::StoreError;

/// The URL split into what tokio-postgres reads and what we read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct DatabaseUrl {
    /// The URL for tokio-postgres: `sslrootcert` removed, `verify-*` mapped to `require`.
    pub for_driver: String,
    /// `sslrootcert`, if given.
    pub root_cert: Option<String>,
}

impl DatabaseUrl {
    /// Splits a `postgres://` URL (query parameters) or a `key=value` connection string.
    pub fn parse(url: &str) -> DatabaseUrl {
        let mut root_cert = None;
        let mut keep = |key: &str, value: &str| -> Option<String> {
            match key {
                "sslrootcert" => {
                    root_cert = Some(value.to_owned());
                    None
                }
                "sslmode" if value == "verify-full" || value == "verify-ca" => Some("require".to_owned()),
                _ => Some(value.to_owned()),
            }
        };
        let for_driver = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            match url.split_once('?') {
                None => url.to_owned(),
                Some((base, query)) => {
                    let params: Vec<String> = query
                        .split('&')
                        .filter(|p| !p.is_empty())
                        .filter_map(|p| {
                            let (k, v) = p.split_once('=').unwrap_or((p, ""));
                            keep(k, v).map(|v| format!("{k}={v}"))
                        })
                        .collect();
                    if params.is_empty() {
                        base.to_owned()
                    } else {
                        format!("{base}?{}", params.join("&"))
                    }
                }
            }
        } else {
            url.split_whitespace()
                .filter_map(|p| {
                    let (k, v) = p.split_once('=').unwrap_or((p, ""));
                    keep(k, v).map(|v| format!("{k}={v}"))
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        DatabaseUrl {
            for_driver,
            root_cert,
        }
    }
}

/// How connections are made.
#[derive(Clone)]
pub(crate) enum PgTls {
    /// Plain TCP (`sslmode` disable or prefer).
    Plain,
    /// TLS through rustls, certificate and host name verified.
    Rustls(MakeRustlsConnect),
}

impl PgTls {
    /// The connector `mode` asks for, trusting `root_cert` (a PEM file) or the system's roots.
    pub fn new(mode: SslMode, root_cert: Option<&str>) -> Result<PgTls, StoreError> {
        if mode != SslMode::Require {
            return Ok(PgTls::Plain);
        }
        Ok(PgTls::Rustls(MakeRustlsConnect::new(client_config(root_cert)?)))
    }

    /// A connection of its own (not pooled), its driver task spawned.
    pub async fn connect(&self, pg: &Config) -> Result<Client, StoreError> {
        let unavailable = |e: tokio_postgres::Error| StoreError::from(e).into_unavailable();
        match self {
            PgTls::Plain => {
                let (client, connection) = pg.connect(NoTls).await.map_err(unavailable)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
            PgTls::Rustls(tls) => {
                let (client, connection) = pg.connect(tls.clone()).await.map_err(unavailable)?;
                tokio::spawn(async move {
                    let _ = connection.await;
                });
                Ok(client)
            }
        }
    }
}

/// A rustls client configuration trusting the certificates of `root_cert`, else the system's.
pub(crate) fn client_config(root_cert: Option<&str>) -> Result<rustls::ClientConfig, StoreError> {
    let tls_error = |m: String| StoreError::Unavailable(format!("database TLS: {m}"));
    let mut roots = rustls::RootCertStore::empty();
    match root_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|_| tls_error(format!("sslrootcert {path} cannot be read")))?;
            for cert in certs {
                let cert = cert
                    .map_err(|_| tls_error(format!("sslrootcert {path} holds an unreadable certificate")))?;
                roots
                    .add(cert)
                    .map_err(|_| tls_error(format!("sslrootcert {path} holds an unusable certificate")))?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(native.certs);
            if added == 0 {
                return Err(tls_error(
                    "no system CA certificates found: install them or set sslrootcert in the URL".into(),
                ));
            }
        }
    }
    if roots.is_empty() {
        return Err(tls_error("no CA certificate to trust".into()));
    }
    // The provider lapin's rustls already builds (aws-lc-rs), named explicitly so no process-wide
    // default has to be installed.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_keeps_what_the_driver_reads_and_hands_us_the_rest() {
        let u = DatabaseUrl::parse(
            "postgres://u:p@db:5432/intake?sslmode=verify-full&sslrootcert=/ca.pem&application_name=x",
        );
        assert_eq!(
            u.for_driver,
            "postgres://u:p@db:5432/intake?sslmode=require&application_name=x"
        );
        assert_eq!(u.root_cert.as_deref(), Some("/ca.pem"));
        let u = DatabaseUrl::parse("postgres://db/intake?sslrootcert=/ca.pem");
        assert_eq!(u.for_driver, "postgres://db/intake");
        let u = DatabaseUrl::parse("host=db sslmode=verify-ca sslrootcert=/ca.pem user=u");
        assert_eq!(u.for_driver, "host=db sslmode=require user=u");
        assert_eq!(u.root_cert.as_deref(), Some("/ca.pem"));
        let plain = "postgres://postgres@127.0.0.1:5432/intake";
        assert_eq!(DatabaseUrl::parse(plain).for_driver, plain);
        assert_eq!(DatabaseUrl::parse(plain).root_cert, None);
    }

    #[test]
    fn sslmode_picks_the_connector() {
        assert!(matches!(PgTls::new(SslMode::Prefer, None), Ok(PgTls::Plain)));
        assert!(matches!(PgTls::new(SslMode::Disable, None), Ok(PgTls::Plain)));
        let missing = PgTls::new(SslMode::Require, Some("/nonexistent/ca.pem"));
        assert!(matches!(missing, Err(StoreError::Unavailable(m)) if m.contains("sslrootcert")));
    }
}
