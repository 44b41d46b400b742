//! TLS to Postgres and RabbitMQ, end to end. No TLS-enabled service runs here, so the test puts
//! TLS-terminating proxies (a CA and a certificate for 127.0.0.1 made by rcgen) in front of the
//! local Postgres and RabbitMQ, and runs `intake migrate` through them: `sslmode=require` with
//! `sslrootcert` for Postgres (the Postgres SSLRequest answered as a TLS server does), and an
//! `amqps://` URL with the CA given by `SSL_CERT_FILE` for RabbitMQ. The migration must succeed
//! over TLS alone, and fail against a certificate the client does not trust.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use intake_it::pg::{PG_ADDR, fresh_database};
use intake_it::{QueueProbe, TEST_ENCRYPTION_KEYS, TEST_HMAC_KEY, TEST_QUEUE_EXPIRY_SECS, unique_name};
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");
const RABBITMQ_ADDR: &str = "127.0.0.1:5672";
/// What a Postgres client sends first to ask for TLS: length 8, code 80877103.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A CA (its PEM written to a file) and a server certificate for 127.0.0.1 it issued.
struct TestPki {
    ca_file: PathBuf,
    acceptor: TlsAcceptor,
}

fn pki() -> TestPki {
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .expect("server params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");
    let ca_file = std::env::temp_dir().join(format!("{}-ca.pem", unique_name("tls")));
    std::fs::write(&ca_file, ca.pem()).expect("write ca");
    let config = tokio_rustls::rustls::ServerConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("versions")
    .with_no_client_auth()
    .with_single_cert(
        vec![CertificateDer::from(server.der().to_vec())],
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(server_key.serialize_der())),
    )
    .expect("server config");
    TestPki {
        ca_file,
        acceptor: TlsAcceptor::from(Arc::new(config)),
    }
}

/// A TLS-terminating proxy to `upstream`; counts completed handshakes.
struct TlsProxy {
    addr: String,
    handshakes: Arc<AtomicUsize>,
}

async fn tls_proxy(upstream: &'static str, postgres: bool, acceptor: TlsAcceptor) -> TlsProxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    tokio::spawn(async move {
        while let Ok((mut client, _)) = listener.accept().await {
            let (acceptor, counted) = (acceptor.clone(), counted.clone());
            tokio::spawn(async move {
                if postgres {
                    // Postgres negotiates TLS in its own protocol first: SSLRequest, then 'S'.
                    let mut request = [0u8; 8];
                    if client.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                        return; // not a TLS request: refused, as `hostssl` would
                    }
                    if client.write_all(b"S").await.is_err() {
                        return;
                    }
                }
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut server) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut server).await;
            });
        }
    });
    TlsProxy { addr, handshakes }
}

/// `intake migrate` with only `env`, waited for off the runtime (the proxies run on it).
async fn migrate(env: Vec<(&'static str, String)>) -> Output {
    tokio::task::spawn_blocking(move || migrate_blocking(&env))
        .await
        .expect("migrate")
}

fn migrate_blocking(env: &[(&str, String)]) -> Output {
    let mut command = Command::new(INTAKE);
    command.arg("migrate").env_clear().env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command.stdin(Stdio::null()).output().expect("run intake")
}

#[tokio::test]
async fn migrate_runs_over_tls_to_postgres_and_rabbitmq_and_refuses_an_untrusted_certificate() {
    let pki = pki();
    let pg = tls_proxy(PG_ADDR, true, pki.acceptor.clone()).await;
    let amqp = tls_proxy(RABBITMQ_ADDR, false, pki.acceptor.clone()).await;
    let db = fresh_database("cli-tls").await;
    let prefix = unique_name("cli-tls");
    let ca = pki.ca_file.display().to_string();
    let env = |pg_url: String, ssl_cert_file: Option<&str>| {
        let mut env = vec![
            ("INTAKE_DATABASE_URL", pg_url),
            (
                "INTAKE_AMQP_URL",
                format!("amqps://guest:guest@{}/%2f", amqp.addr),
            ),
            ("INTAKE_QUEUE_PREFIX", prefix.clone()),
            ("INTAKE_QUEUE_EXPIRES_SECS", TEST_QUEUE_EXPIRY_SECS.to_string()),
            ("INTAKE_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEYS.to_owned()),
            ("INTAKE_HMAC_KEY", TEST_HMAC_KEY.to_owned()),
            ("INTAKE_MIGRATE_WAIT_SECS", "2".to_owned()),
        ];
        if let Some(file) = ssl_cert_file {
            env.push(("SSL_CERT_FILE", file.to_owned()));
        }
        env
    };
    let trusted = format!(
        "postgres://postgres@{}/{}?sslmode=require&sslrootcert={ca}",
        pg.addr, db.name
    );

    // Postgres's certificate is not trusted (no sslrootcert, and the system's roots do not hold
    // our CA): refused, nothing migrated.
    let untrusted = format!("postgres://postgres@{}/{}?sslmode=require", pg.addr, db.name);
    let output = migrate(env(untrusted, None)).await;
    assert!(
        !output.status.success(),
        "an untrusted Postgres certificate must fail"
    );
    let tables: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .expect("count")
        .get(0);
    assert_eq!(tables, 0, "nothing migrated over an untrusted connection");

    // Postgres trusted, RabbitMQ's certificate not (SSL_CERT_FILE unset): the database is
    // migrated over TLS, the broker refused.
    let output = migrate(env(trusted.clone(), None)).await;
    assert!(
        !output.status.success(),
        "an untrusted RabbitMQ certificate must fail"
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("declaring the broker topology"), "{stderr}");
    assert!(pg.handshakes.load(Ordering::SeqCst) >= 1, "Postgres spoke TLS");

    // Both trusted: migrated and declared, over TLS only (the proxies speak nothing else).
    let amqp_before = amqp.handshakes.load(Ordering::SeqCst);
    let output = migrate(env(trusted, Some(&ca))).await;
    assert!(
        output.status.success(),
        "migrate over TLS: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        amqp.handshakes.load(Ordering::SeqCst) > amqp_before,
        "RabbitMQ spoke TLS"
    );
    let tables: i64 = db
        .client()
        .await
        .query_one("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", &[])
        .await
        .expect("count")
        .get(0);
    assert!(tables > 15, "tables created ({tables})");
    let topology = intake_broker::Topology::with_default_tiers(prefix.clone());
    let probe = QueueProbe::connect().await;
    for queue in topology.all_queues() {
        assert_eq!(probe.count(&queue).await, 0, "{queue} declared");
    }
    probe.cleanup(&topology).await;
    let _ = std::fs::remove_file(&pki.ca_file);
    db.drop_database().await;
}
