//! The `intake` binary run as a process, as a container runs it, against the real RabbitMQ and
//! Postgres: `--help` lists every subcommand, `migrate` creates the tables and queues,
//! `healthcheck` turns an HTTP status into an exit code, and `all` applies a webhook end to end
//! (receiver → worker → outbox → relay → sync → a mock HealthSherpa) and stops cleanly on SIGTERM.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::Duration;

use intake_broker::Topology;
use intake_it::pg::{TestDb, fresh_database};
use intake_it::{
    AMQP_URL, QueueProbe, TEST_ENCRYPTION_KEYS, TEST_HMAC_KEY, TEST_QUEUE_EXPIRY_SECS, unique_name,
    wait_until,
};
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");
const DEADLINE: Duration = Duration::from_secs(30);

/// `intake` with only the given environment (nothing inherited, so no stray `INTAKE_*` setting
/// of the machine changes what is tested).
fn intake(args: &[&str], env: &[(&str, String)]) -> Command {
    let mut command = Command::new(INTAKE);
    command.args(args).env_clear().env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

fn run(args: &[&str], env: &[(&str, String)]) -> Output {
    intake(args, env)
        .stdin(Stdio::null())
        .output()
        .expect("run intake")
}

/// Settings shared by the tests' processes: the local services, a test's own database and prefix.
fn base_env(db: &TestDb, prefix: &str) -> Vec<(&'static str, String)> {
    vec![
        ("INTAKE_AMQP_URL", AMQP_URL.to_owned()),
        ("INTAKE_DATABASE_URL", db.url.clone()),
        ("INTAKE_QUEUE_PREFIX", prefix.to_owned()),
        ("INTAKE_QUEUE_EXPIRES_SECS", TEST_QUEUE_EXPIRY_SECS.to_string()),
        ("INTAKE_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEYS.to_owned()),
        ("INTAKE_HMAC_KEY", TEST_HMAC_KEY.to_owned()),
    ]
}

/// A port nothing listens on right now.
fn free_port() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("addr")
}

#[test]
fn help_lists_every_subcommand_and_each_has_its_own_help() {
    let output = run(&["--help"], &[]);
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    let subcommands = ["receiver", "worker", "sync", "all", "migrate", "healthcheck"];
    for subcommand in subcommands {
        assert!(
            help.lines()
                .any(|l| l.trim_start().starts_with(&format!("{subcommand} "))),
            "{subcommand} listed in:\n{help}"
        );
        let output = run(&[subcommand, "--help"], &[]);
        assert!(output.status.success(), "{subcommand} --help");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage: intake"),
            "{subcommand} --help prints its usage"
        );
    }
    // Secrets are listed as environment variables, never offered as flags.
    let worker = String::from_utf8_lossy(&run(&["worker", "--help"], &[]).stdout).into_owned();
    assert!(worker.contains("INTAKE_DATABASE_URL") && !worker.contains("--database-url"));
    let sync = String::from_utf8_lossy(&run(&["sync", "--help"], &[]).stdout).into_owned();
    assert!(sync.contains("HEALTHSHERPA_API_KEY") && !sync.contains("--healthsherpa-api-key"));
    // Unknown subcommands and a missing one are usage errors.
    assert!(!run(&["frobnicate"], &[]).status.success());
    assert!(!run(&[], &[]).status.success());
}

#[tokio::test]
async fn migrate_creates_the_tables_and_the_queues_and_can_run_again() {
    let db = fresh_database("cli-migrate").await;
    let prefix = unique_name("cli-mig");
    let topology = Topology::with_default_tiers(prefix.clone());
    let probe = QueueProbe::connect().await;
    let env = base_env(&db, &prefix);
    let client = db.client().await;
    let tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'";
    let before: i64 = client.query_one(tables, &[]).await.expect("count").get(0);
    assert_eq!(before, 0, "a fresh database");

    for round in 1..=2 {
        let output = run(&["migrate"], &env);
        assert!(
            output.status.success(),
            "migrate round {round}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    for table in [
        "inbox",
        "raw_events",
        "outbox",
        "dead_letters",
        "contacts",
        "healthsherpa_sync",
    ] {
        let found = client
            .query_opt(
                "SELECT 1 FROM information_schema.tables WHERE table_schema = 'public' AND table_name = $1",
                &[&table],
            )
            .await
            .expect("query");
        assert!(found.is_some(), "table {table} created");
    }
    // A passive declare fails for a missing queue: each count proves the queue exists.
    for queue in topology.all_queues() {
        assert_eq!(probe.count(&queue).await, 0, "{queue} declared and empty");
    }
    probe.cleanup(&topology).await;
    drop(client);
    db.drop_database().await;
}

#[tokio::test]
async fn migrate_fails_when_postgres_stays_unreachable() {
    let closed = free_port();
    let env = [
        (
            "INTAKE_DATABASE_URL",
            format!("postgres://postgres@{closed}/nope"),
        ),
        ("INTAKE_MIGRATE_WAIT_SECS", "1".to_owned()),
        ("INTAKE_ENCRYPTION_KEYS", TEST_ENCRYPTION_KEYS.to_owned()),
        ("INTAKE_HMAC_KEY", TEST_HMAC_KEY.to_owned()),
    ];
    let output = run(&["migrate"], &env);
    assert!(!output.status.success(), "an unreachable database is a failure");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("migrating Postgres"), "{stderr}");
}

#[test]
fn every_role_that_touches_phi_refuses_to_start_without_keys_and_never_prints_them() {
    let closed = free_port();
    let url = (
        "INTAKE_DATABASE_URL",
        format!("postgres://postgres@{closed}/nope"),
    );
    let hs = [
        ("HEALTHSHERPA_API_KEY", "hs-key".to_owned()),
        ("HEALTHSHERPA_BASE_URL", "http://127.0.0.1:9".to_owned()),
    ];
    let bad_key = "k1:c2hvcnQta2V5LW9mLTE2Yg==";
    for args in [
        &["migrate"][..],
        &["worker"],
        &["sync"],
        &["dead-letters", "list"],
        &["keys", "status"],
    ] {
        // No key at all: refused at start, naming the variable.
        let mut env = vec![url.clone()];
        env.extend(hs.iter().cloned());
        let output = run(args, &env);
        assert!(!output.status.success(), "{args:?} without keys must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("INTAKE_ENCRYPTION_KEYS"), "{args:?}: {stderr}");
        // A key of the wrong size: refused, naming the variable and never its value.
        env.push(("INTAKE_ENCRYPTION_KEYS", bad_key.to_owned()));
        env.push(("INTAKE_HMAC_KEY", TEST_HMAC_KEY.to_owned()));
        let output = run(args, &env);
        assert!(!output.status.success(), "{args:?} with a bad key must fail");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains("INTAKE_ENCRYPTION_KEYS") && stderr.contains("16 bytes"),
            "{args:?}: {stderr}"
        );
        assert!(
            !stderr.contains("c2hvcnQta2V5") && !stderr.contains(TEST_HMAC_KEY),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn healthcheck_exits_0_on_200_and_1_otherwise() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ready"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/slow"))
        .respond_with(ResponseTemplate::new(200).set_delay(Duration::from_secs(10)))
        .mount(&server)
        .await;
    let check = |url: String| async move {
        tokio::task::spawn_blocking(move || run(&["healthcheck", "--timeout-ms", "500", &url], &[]).status)
            .await
            .expect("healthcheck")
    };
    let code = |status: ExitStatus| status.code().expect("exited");
    assert_eq!(code(check(format!("{}/ready", server.uri())).await), 0);
    assert_eq!(code(check(format!("{}/down", server.uri())).await), 1);
    assert_eq!(
        code(check(format!("{}/slow", server.uri())).await),
        1,
        "no answer in time"
    );
    assert_eq!(
        code(check(format!("http://{}/readyz", free_port())).await),
        1,
        "unreachable"
    );
}

/// A running `intake` process, killed if the test fails before it stopped it.
struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Sends SIGTERM and waits (with a deadline) for the exit status.
    async fn terminate(&mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().expect("kill");
        assert!(sent.success(), "SIGTERM sent");
        let child = &mut self.child;
        let mut status = None;
        let exited = wait_until(DEADLINE, || {
            status = child.try_wait().expect("try_wait");
            std::future::ready(status.is_some())
        })
        .await;
        assert!(exited, "intake exits after SIGTERM; log:\n{}", self.log());
        status.expect("status")
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

const SPARK_CONTACT: &str = include_str!("../../../tests/fixtures/spark_contact.json");

#[tokio::test]
async fn all_applies_a_webhook_end_to_end_and_stops_on_sigterm() {
    let db = fresh_database("cli-all").await;
    let prefix = unique_name("cli-all");
    let topology = Topology::with_default_tiers(prefix.clone());
    let healthsherpa = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/v1/contacts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"contacts": []})))
        .mount(&healthsherpa)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/v1/contacts"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "hs-77", "redirect_url": "https://hs.test/quotes/hs-77"})),
        )
        .mount(&healthsherpa)
        .await;

    let (receiver, worker, sync) = (free_port(), free_port(), free_port());
    let mut env = base_env(&db, &prefix);
    env.extend([
        ("INTAKE_LISTEN_ADDR", receiver.to_string()),
        ("INTAKE_WORKER_LISTEN_ADDR", worker.to_string()),
        ("INTAKE_SYNC_LISTEN_ADDR", sync.to_string()),
        (
            "INTAKE_ENDPOINTS",
            r#"[[endpoints]]
name = "spark"
provider = "spark"
auth = [{ kind = "path_token", secret_env = "CLI_SPARK_TOKEN" }]"#
                .to_owned(),
        ),
        ("CLI_SPARK_TOKEN", "cli-path-secret".to_owned()),
        // Small pools: other tests share this Postgres.
        ("INTAKE_CONCURRENCY", "4".to_owned()),
        ("INTAKE_SYNC_CONCURRENCY", "4".to_owned()),
        ("INTAKE_DB_POOL_SIZE", "8".to_owned()),
        ("HEALTHSHERPA_BASE_URL", healthsherpa.uri()),
        ("HEALTHSHERPA_API_KEY", "cli-api-key".to_owned()),
        ("HEALTHSHERPA_AGENT_EMAIL", "agent@example.com".to_owned()),
    ]);
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("intake-all")));
    let child = intake(&["all"], &env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start intake all");
    let mut running = Running { child, log };

    // Each role answers on its own address once its dependencies are up.
    let http = reqwest::Client::new();
    for addr in [receiver, worker, sync] {
        let url = format!("http://{addr}/readyz");
        let ready = wait_until(DEADLINE, || {
            let request = http.get(&url).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(ready, "{url} ready; log:\n{}", running.log());
    }

    let answer = http
        .post(format!("http://{receiver}/webhooks/spark/cli-path-secret"))
        .header("content-type", "application/json")
        .body(SPARK_CONTACT)
        .send()
        .await
        .expect("post");
    assert_eq!(answer.status(), 200);

    // Applied by the worker, then relayed and synced: the HealthSherpa id is stored.
    let client = db.client().await;
    let synced = wait_until(DEADLINE, || {
        let client = &client;
        async move {
            client
                .query_opt(
                    "SELECT c.last_name, s.healthsherpa_id FROM contacts c
                     JOIN healthsherpa_sync s USING (spark_id) WHERE spark_id = '1234'",
                    &[],
                )
                .await
                .ok()
                .flatten()
                .is_some_and(|row| {
                    row.get::<_, Option<String>>(0).as_deref() == Some("Soprano")
                        && row.get::<_, Option<String>>(1).as_deref() == Some("hs-77")
                })
        }
    })
    .await;
    assert!(synced, "contact applied and synced; log:\n{}", running.log());
    let creates = healthsherpa
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .count();
    assert_eq!(creates, 1, "one contact created in HealthSherpa");

    let status = running.terminate().await;
    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status}; log:\n{}",
        running.log()
    );

    drop(client);
    QueueProbe::connect().await.cleanup(&topology).await;
    db.drop_database().await;
}

#[tokio::test]
async fn all_without_healthsherpa_credentials_runs_no_sync() {
    let db = fresh_database("cli-all-nosync").await;
    let prefix = unique_name("cli-ns");
    let topology = Topology::with_default_tiers(prefix.clone());
    let (receiver, worker, sync) = (free_port(), free_port(), free_port());
    let mut env = base_env(&db, &prefix);
    env.extend([
        ("INTAKE_LISTEN_ADDR", receiver.to_string()),
        ("INTAKE_WORKER_LISTEN_ADDR", worker.to_string()),
        ("INTAKE_SYNC_LISTEN_ADDR", sync.to_string()),
        (
            "INTAKE_ENDPOINTS",
            "[[endpoints]]\nname = \"hs\"\nprovider = \"healthsherpa\"\n\
             auth = [{ kind = \"bearer\", secret_env = \"CLI_HS_TOKEN\" }]"
                .to_owned(),
        ),
        ("CLI_HS_TOKEN", "cli-bearer".to_owned()),
        ("INTAKE_CONCURRENCY", "4".to_owned()),
        ("INTAKE_DB_POOL_SIZE", "8".to_owned()),
    ]);
    let log = std::env::temp_dir().join(format!("{}.log", unique_name("intake-all")));
    let child = intake(&["all"], &env)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("start intake all");
    let mut running = Running { child, log };
    let http = reqwest::Client::new();
    for addr in [receiver, worker] {
        let url = format!("http://{addr}/readyz");
        let ready = wait_until(DEADLINE, || {
            let request = http.get(&url).send();
            async move { request.await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(ready, "{url} ready; log:\n{}", running.log());
    }
    assert!(
        http.get(format!("http://{sync}/healthz")).send().await.is_err(),
        "no sync role listening"
    );
    let status = running.terminate().await;
    assert!(
        status.success(),
        "exit 0 after SIGTERM, got {status}; log:\n{}",
        running.log()
    );
    QueueProbe::connect().await.cleanup(&topology).await;
    db.drop_database().await;
}
