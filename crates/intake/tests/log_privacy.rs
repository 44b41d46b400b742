//! No secret or PHI in any log line: the whole pipeline — `intake receiver`, `intake worker` and
//! `intake sync` as processes, against the real RabbitMQ and Postgres and a fake HealthSherpa —
//! runs with `RUST_LOG=trace` on the Spark and HealthSherpa example payloads, including the
//! failure paths (401s, dead letters, a worker retry while Postgres is cut off, a HealthSherpa
//! 500 retried and a 422 that echoes what we sent). Every line the processes write (stdout and
//! stderr) is captured, and none may hold a PHI value, a token, a password, an HMAC key or a
//! signature, whatever the module — ours or a dependency's.

#[allow(dead_code)]
#[path = "../../../tests/tests/sync_support/fake.rs"]
mod fake;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use hmac::{KeyInit, Mac};
use intake_broker::Topology;
use intake_it::pg::fresh_database;
use intake_it::{AMQP_URL, QueueProbe, TEST_QUEUE_EXPIRY_SECS, TcpProxy, unique_name, wait_until};
use wiremock::ResponseTemplate;

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");
const DEADLINE: Duration = Duration::from_secs(60);
const SPARK_CONTACT: &str = include_str!("../../providers/fixtures/spark_contact.json");
const HEALTHSHERPA_OFF: &str = include_str!("../../providers/fixtures/healthsherpa_off_exchange.json");
const HEALTHSHERPA_ON: &str = include_str!("../../providers/fixtures/healthsherpa_on_exchange.json");

/// PHI and personal data of the example payloads (and of the changed snapshot sent later).
const PHI: &[&str] = &[
    "1959-08-22",    // date of birth (Spark `phi.dob`, HealthSherpa member)
    "T0NY-S0PR4N0",  // MBI
    "1EG4-TE5-MK72", // the changed snapshot's MBI
    "2000-01-01",    // LIS certification, Part A/B enrollment dates
    "Anthony",       // names (contact, HealthSherpa member)
    "Soprano",
    "Carmela", // point of contact
    "tony@baronesanitation.com",
    "carmela.soprano@aol.com",
    "201-555-1234", // phones
    "201-555-5678",
    "201-555-2468",
    "14 Aspen Drive", // addresses
    "241 Calcutta Street",
    "AARP Medicare Advantage", // policies
    "NJ-778899",               // agent's state licence number
];

struct Process {
    name: &'static str,
    child: Child,
    log: PathBuf,
}

impl Process {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
}

fn start(name: &'static str, addr: SocketAddr, env: &[(&str, String)]) -> Process {
    let log = std::env::temp_dir().join(format!("{}.log", unique_name(name)));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(INTAKE)
        .arg(name)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (*k, v)))
        .env("INTAKE_LISTEN_ADDR", addr.to_string())
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("clone"))
        .stderr(file)
        .spawn()
        .expect("start intake");
    Process { name, child, log }
}

async fn ready(http: &reqwest::Client, addr: SocketAddr, process: &Process) {
    let url = format!("http://{addr}/readyz");
    let ok = wait_until(DEADLINE, || {
        let request = http.get(&url).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    assert!(ok, "{} ready; log tail:\n{}", process.name, tail(&process.log()));
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// A log line without its ANSI colour codes.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ … final byte in @..~
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) && c != '[' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The log target of a text-format line (`<time> <LEVEL> [spans:] <target>: message`).
fn target_of(plain: &str) -> String {
    plain
        .split_whitespace()
        .skip(2)
        .find(|t| t.ends_with(':') && t.contains("::") || t.ends_with(':') && !t.contains('='))
        .unwrap_or("?")
        .trim_end_matches(':')
        .to_owned()
}

fn hmac_hex(key: &str, body: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Sum of every sample of `metric` whose labels contain `label` on a process's `/metrics`.
async fn metric(http: &reqwest::Client, addr: SocketAddr, metric: &str, label: &str) -> f64 {
    let Ok(answer) = http.get(format!("http://{addr}/metrics")).send().await else {
        return 0.0;
    };
    answer
        .text()
        .await
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(metric) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn no_secret_or_phi_in_any_log_line_at_trace_level() {
    let db = fresh_database("log-privacy").await;
    let prefix = unique_name("logp");
    let topology = Topology::with_default_tiers(prefix.clone());
    let hs = fake::FakeHealthSherpa::start(fake::Mode::ApiKey).await;
    // The worker reaches Postgres through a proxy the test cuts to force a retry.
    let pg_proxy = TcpProxy::start("127.0.0.1:5432".parse().expect("addr"))
        .await
        .expect("proxy");

    // Secrets, random per run. Postgres trusts local connections, so the URL may carry a
    // password nobody checks — but which must never be logged.
    let n = unique_name("s").replace('-', "");
    let pg_password = format!("pgpw{n}");
    let spark_token = format!("pathtok{n}");
    let spark_password = format!("basicpw{n}");
    let hs_bearer = format!("bearertok{n}");
    let hs_hmac_key = format!("hmackey{n}");
    let wrong_password = format!("wrongpw{n}");
    let wrong_key = format!("wrongkey{n}");

    let endpoints = r#"
[[endpoints]]
name = "spark"
provider = "spark"
auth = [
  { kind = "path_token", secret_env = "LOGP_SPARK_TOKEN" },
  { kind = "basic", username = "spark", password_env = "LOGP_SPARK_PASSWORD" },
]

[[endpoints]]
name = "healthsherpa"
provider = "healthsherpa"
auth = [{ kind = "bearer", secret_env = "LOGP_HS_TOKEN" }]

[[endpoints]]
name = "healthsherpa-signed"
provider = "healthsherpa"
auth = [{ kind = "hmac_sha256", header = "X-Signature", secret_env = "LOGP_HS_KEY", encoding = "hex" }]
"#;
    let common = |db_url: String| {
        vec![
            ("INTAKE_AMQP_URL", AMQP_URL.to_owned()),
            ("INTAKE_DATABASE_URL", db_url),
            ("INTAKE_QUEUE_PREFIX", prefix.clone()),
            ("INTAKE_QUEUE_EXPIRES_SECS", TEST_QUEUE_EXPIRY_SECS.to_string()),
            ("INTAKE_RETRY_TIERS", "1s,1s,1s,1s,2s,5s,10s".to_owned()),
            ("INTAKE_DB_POOL_SIZE", "6".to_owned()),
            ("INTAKE_DB_TIMEOUT_MS", "2000".to_owned()),
            (
                "INTAKE_ENCRYPTION_KEYS",
                intake_it::TEST_ENCRYPTION_KEYS.to_owned(),
            ),
            ("INTAKE_HMAC_KEY", intake_it::TEST_HMAC_KEY.to_owned()),
        ]
    };
    let direct = format!("postgres://postgres:{pg_password}@127.0.0.1:5432/{}", db.name);
    let proxied = format!(
        "postgres://postgres:{pg_password}@{}/{}",
        pg_proxy.addr(),
        db.name
    );
    let mut receiver_env = common(direct.clone());
    receiver_env.extend([
        ("INTAKE_ENDPOINTS", endpoints.to_owned()),
        ("LOGP_SPARK_TOKEN", spark_token.clone()),
        ("LOGP_SPARK_PASSWORD", spark_password.clone()),
        ("LOGP_HS_TOKEN", hs_bearer.clone()),
        ("LOGP_HS_KEY", hs_hmac_key.clone()),
    ]);
    let mut worker_env = common(proxied);
    worker_env.extend([
        ("INTAKE_CONCURRENCY", "4".to_owned()),
        ("INTAKE_SWEEP_INTERVAL_MS", "1000".to_owned()),
    ]);
    let mut sync_env = common(direct);
    sync_env.extend([
        ("INTAKE_SYNC_CONCURRENCY", "2".to_owned()),
        ("HEALTHSHERPA_BASE_URL", hs.base_url()),
        ("HEALTHSHERPA_API_KEY", fake::API_KEY.to_owned()),
        ("HEALTHSHERPA_AGENT_EMAIL", "agent@example.com".to_owned()),
    ]);

    // `intake migrate` first, so the three processes do not race to create the tables.
    let migrated = Command::new(INTAKE)
        .arg("migrate")
        .env_clear()
        .envs(receiver_env.iter().map(|(k, v)| (*k, v)))
        .env("RUST_LOG", "trace")
        .output()
        .expect("migrate");
    assert!(migrated.status.success(), "migrate");
    let migrate_log = format!(
        "{}{}",
        String::from_utf8_lossy(&migrated.stdout),
        String::from_utf8_lossy(&migrated.stderr)
    );

    let (receiver_addr, worker_addr, sync_addr) = (free_port(), free_port(), free_port());
    let http = reqwest::Client::new();
    let worker = start("worker", worker_addr, &worker_env);
    ready(&http, worker_addr, &worker).await;
    let sync = start("sync", sync_addr, &sync_env);
    ready(&http, sync_addr, &sync).await;
    let receiver = start("receiver", receiver_addr, &receiver_env);
    ready(&http, receiver_addr, &receiver).await;
    let base = format!("http://{receiver_addr}/webhooks");
    let mut signatures = Vec::new();

    let post_spark = |token: &str, password: &str, body: String| {
        http.post(format!("{base}/spark/{token}"))
            .header("content-type", "application/json")
            .basic_auth("spark", Some(password))
            .body(body)
            .send()
    };
    // HealthSherpa's first create fails with a 500 echoing what we sent: retried, then created.
    hs.fail(
        "POST",
        1,
        ResponseTemplate::new(500).set_body_string("upstream error for Anthony Soprano, born 1959-08-22"),
    )
    .await;
    let status = |r: reqwest::Result<reqwest::Response>| r.expect("answer").status().as_u16();
    assert_eq!(
        status(post_spark(&spark_token, &spark_password, SPARK_CONTACT.to_owned()).await),
        200
    );
    // Failure paths at the door: a wrong password, a wrong path token.
    assert_eq!(
        status(post_spark(&spark_token, &wrong_password, SPARK_CONTACT.to_owned()).await),
        401
    );
    assert_eq!(
        status(post_spark(&wrong_password, &spark_password, SPARK_CONTACT.to_owned()).await),
        401
    );
    // A contact without its id: dead letter `missing_field` (the body holds PHI).
    let no_id = SPARK_CONTACT.replacen("\"id\": 1234,", "", 1);
    assert_eq!(
        status(post_spark(&spark_token, &spark_password, no_id).await),
        200
    );

    // HealthSherpa: bearer, signed, badly signed, and a body without its transaction id.
    let hs_bearer_post = |body: String| {
        http.post(format!("{base}/healthsherpa"))
            .header("content-type", "application/json")
            .bearer_auth(&hs_bearer)
            .body(body)
            .send()
    };
    assert_eq!(status(hs_bearer_post(HEALTHSHERPA_OFF.to_owned()).await), 200);
    let no_txn = HEALTHSHERPA_OFF.replace("txn_7c1d2e3f", "txn_other").replacen(
        "\"transaction_id\"",
        "\"transaction_ref\"",
        1,
    );
    assert_eq!(status(hs_bearer_post(no_txn).await), 200);
    let signed = HEALTHSHERPA_OFF.replace("txn_7c1d2e3f", "txn_signed_1");
    for (key, expected) in [(&hs_hmac_key, 200), (&wrong_key, 401)] {
        let signature = hmac_hex(key, &signed);
        let answer = http
            .post(format!("{base}/healthsherpa-signed"))
            .header("content-type", "application/json")
            .header("X-Signature", format!("sha256={signature}"))
            .body(signed.clone())
            .send()
            .await;
        assert_eq!(status(answer), expected);
        signatures.push(signature);
    }

    // Applied, synced (after the 500 and a retry), and the two bad bodies dead-lettered.
    let client = db.client().await;
    let settled = wait_until(DEADLINE, || {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM healthsherpa_sync WHERE healthsherpa_id IS NOT NULL),
                            (SELECT count(*) FROM dead_letters WHERE reason = 'missing_field'),
                            (SELECT count(*) FROM healthsherpa_policies)",
                    &[],
                )
                .await
                .expect("query");
            row.get::<_, i64>(0) == 1 && row.get::<_, i64>(1) == 2 && row.get::<_, i64>(2) == 1
        }
    })
    .await;
    assert!(
        settled,
        "contact synced, two dead letters; worker log:\n{}",
        tail(&worker.log())
    );
    assert!(
        hs.count("POST").await >= 2,
        "the create was answered 500 once and retried"
    );

    // A worker retry: Postgres cut off while an event arrives.
    pg_proxy.cut();
    assert_eq!(status(hs_bearer_post(HEALTHSHERPA_ON.to_owned()).await), 200);
    let retried = wait_until(DEADLINE, || {
        let http = &http;
        async move {
            metric(
                http,
                worker_addr,
                "intake_worker_events_total",
                "outcome=\"retried\"",
            )
            .await
                >= 1.0
        }
    })
    .await;
    pg_proxy.restore();
    assert!(retried, "the worker retried; log:\n{}", tail(&worker.log()));

    // A changed snapshot: HealthSherpa refuses the update with a 422 echoing the name.
    hs.fail(
        "PATCH",
        1,
        ResponseTemplate::new(422).set_body_json(serde_json::json!({
            "errors": [{"field": "last_name", "message": "Soprano is not allowed for 1EG4-TE5-MK72"}]
        })),
    )
    .await;
    let changed = SPARK_CONTACT.replacen("T0NY-S0PR4N0", "1EG4-TE5-MK72", 1);
    assert_eq!(
        status(post_spark(&spark_token, &spark_password, changed).await),
        200
    );
    let done = wait_until(DEADLINE, || {
        let client = &client;
        async move {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM dead_letters WHERE reason = 'rejected'),
                            (SELECT count(*) FROM healthsherpa_applications)",
                    &[],
                )
                .await
                .expect("query");
            row.get::<_, i64>(0) == 1 && row.get::<_, i64>(1) == 2
        }
    })
    .await;
    assert!(
        done,
        "update rejected and dead-lettered, retried event applied; sync log:\n{}",
        tail(&sync.log())
    );

    // Stop everything (shutdown logs count too), then read every line.
    let mut logs = vec![("migrate", migrate_log)];
    for mut process in [receiver, worker, sync] {
        let pid = process.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        let child = &mut process.child;
        let exited = wait_until(DEADLINE, || {
            std::future::ready(child.try_wait().ok().flatten().is_some())
        })
        .await;
        assert!(exited, "{} stops on SIGTERM", process.name);
        logs.push((process.name, process.log()));
    }

    // The capture works and reaches trace level and the failure paths.
    let all: String = logs
        .iter()
        .map(|(_, l)| l.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for expected in [
        "DEBUG",
        "rejected: authentication failed",
        "transient failure; retrying later",
        "dead letter recorded",
    ] {
        assert!(all.contains(expected), "the logs show {expected:?}");
    }

    let basic = base64::engine::general_purpose::STANDARD.encode(format!("spark:{spark_password}"));
    let wrong_basic = base64::engine::general_purpose::STANDARD.encode(format!("spark:{wrong_password}"));
    let mut needles: Vec<(&str, String)> = PHI.iter().map(|p| ("PHI", (*p).to_owned())).collect();
    // A body or parameter logged as `Debug` bytes (`[49, 57, 53, …]`) holds the PHI too.
    needles.extend(PHI.iter().map(|p| {
        let bytes = format!("{:?}", p.as_bytes());
        ("PHI as bytes", bytes[1..bytes.len() - 1].to_owned())
    }));
    needles.extend([
        ("Postgres password", pg_password.clone()),
        ("AMQP password", ":guest@".to_owned()),
        ("Spark path token", spark_token.clone()),
        ("Spark password", spark_password.clone()),
        ("Spark basic credentials", basic),
        ("wrong password sent", wrong_password.clone()),
        ("wrong basic credentials sent", wrong_basic),
        ("HealthSherpa bearer token", hs_bearer.clone()),
        ("HealthSherpa HMAC key", hs_hmac_key.clone()),
        ("wrong HMAC key", wrong_key.clone()),
        ("HealthSherpa API key", fake::API_KEY.to_owned()),
        (
            "PHI encryption key",
            intake_it::TEST_ENCRYPTION_KEYS
                .split_once(':')
                .map_or_else(String::new, |(_, k)| {
                    k.split(',').next().unwrap_or_default().to_owned()
                }),
        ),
        ("HMAC key", intake_it::TEST_HMAC_KEY.to_owned()),
    ]);
    for signature in &signatures {
        needles.push(("signature", signature.clone()));
    }
    // Leaks grouped by (process, log target, what), with one example line each.
    let mut leaks: std::collections::BTreeMap<(String, String, String), (usize, String)> = Default::default();
    for (process, log) in &logs {
        for line in log.lines() {
            let plain = strip_ansi(line);
            for (what, needle) in &needles {
                if plain.contains(needle.as_str()) {
                    let key = (
                        (*process).to_owned(),
                        target_of(&plain),
                        format!("{what} ({needle})"),
                    );
                    let entry = leaks.entry(key).or_insert((0, plain.chars().take(300).collect()));
                    entry.0 += 1;
                }
            }
        }
    }
    let lines: usize = logs.iter().map(|(_, l)| l.lines().count()).sum();
    assert!(
        leaks.is_empty(),
        "leaks in {lines} log lines:\n{}",
        leaks
            .iter()
            .map(|((process, target, what), (n, example))| format!(
                "{process} {target}: {what} x{n}, e.g. {example}"
            ))
            .collect::<Vec<_>>()
            .join("\n")
    );

    drop(client);
    QueueProbe::connect().await.cleanup(&topology).await;
    db.drop_database().await;
}
