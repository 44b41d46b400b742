//! The monitoring tested for real: a Prometheus (Debian's `prometheus` binary) with the deploy
//! config made local scrapes a receiver, two workers and a sync (each an `intake` process, against
//! a fake HealthSherpa) and RabbitMQ's Prometheus plugin, after traffic that exercises every
//! outcome — applied, duplicate, parked, released, retried (worker and sync), dead-lettered
//! (ingest and sync), synced, a field issue and a refused publish. Then every dashboard panel query
//! is run as Grafana runs it (a range query) and must return data, every alert rule must be
//! loaded and evaluated without error, and every alert expression, evaluated now, must be quiet
//! except the ones this traffic makes fire.

#[allow(dead_code)]
#[path = "../../../tests/tests/sync_support/fake.rs"]
mod fake;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::process::Command;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use intake_broker::Topology;
use intake_broker::lapin::types::FieldTable;
use intake_broker::lapin::{Connection, ConnectionProperties};
use intake_it::compose::workspace_root;
use intake_it::pg::fresh_database;
use intake_it::process::{Process, free_addr};
use intake_it::prometheus::{AlertRule, Prometheus, alert_rules, dashboard_queries, local_config};
use intake_it::{AMQP_URL, QueueProbe, TEST_QUEUE_EXPIRY_SECS, unique_name, wait_until};
use intake_providers::fixtures;
use serde_json::{Value, json};
use wiremock::ResponseTemplate;

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");
const DEADLINE: Duration = Duration::from_secs(40);
const POLL: Duration = Duration::from_millis(250);
/// Short tiers so retries happen within the test (every process of a prefix must agree).
const TIERS: &str = "200ms,500ms,1s,2s,5s";
/// RabbitMQ's Prometheus plugin (`rabbitmq-plugins enable rabbitmq_prometheus`, done by .ci/run).
const RABBITMQ_METRICS: &str = "127.0.0.1:15692";
/// What `$__rate_interval` is with the deploy config's 15 s scrape interval:
/// max(4 × scrape interval, interval + scrape interval).
const RATE_INTERVAL: &str = "1m";

const ENDPOINTS: &str = r#"
[[endpoints]]
name = "spark"
provider = "spark"
auth = [{ kind = "path_token", secret_env = "MON_SPARK_TOKEN" }]

[[endpoints]]
name = "sparkloop"
provider = "sparkloop"
auth = [{ kind = "header_token", header = "SparkLoop-Token", secret_env = "MON_SPARKLOOP_TOKEN" }]

[[endpoints]]
name = "spark360"
provider = "spark360"
auth = [{ kind = "header_token", header = "X-Test-Token", secret_env = "MON_SPARK360_TOKEN" }]

[[endpoints]]
name = "healthsherpa"
provider = "healthsherpa"
auth = [{ kind = "bearer", secret_env = "MON_HS_TOKEN" }]
"#;

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

/// `intake <role>` with only the environment given (nothing inherited).
fn intake(role: &str, env: &[(&str, String)]) -> Command {
    let mut command = Command::new(INTAKE);
    command.arg(role).env_clear().env("RUST_LOG", "warn");
    for (name, value) in env {
        command.env(name, value);
    }
    command
}

/// Waits until `url` answers 200; panics with the process's log when it does not (or exited).
async fn wait_ready(process: &mut Process, url: &str) {
    let http = reqwest::Client::new();
    let ready = wait_until(DEADLINE, || {
        let request = http.get(url).send();
        async move { request.await.is_ok_and(|r| r.status() == 200) }
    })
    .await;
    if !ready {
        let exited = process.exited();
        panic!(
            "{} not ready at {url} (exit {exited:?}); log:\n{}",
            process.name(),
            process.log()
        );
    }
}

/// A Spark contact snapshot from the document's example, changed by `edit`.
fn spark_contact(edit: impl FnOnce(&mut Value)) -> String {
    let mut body: Value = serde_json::from_str(fixtures::SPARK_CONTACT).expect("fixture");
    edit(&mut body);
    body.to_string()
}

struct Receiver {
    http: reqwest::Client,
    addr: SocketAddr,
}

impl Receiver {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: String) -> u16 {
        let mut request = self
            .http
            .post(format!("http://{}/webhooks/{path}", self.addr))
            .header("content-type", "application/json")
            .body(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send().await.expect("post").status().as_u16()
    }
}

#[tokio::test]
async fn every_panel_returns_data_and_every_alert_evaluates_on_a_live_system() {
    let root = workspace_root();
    let started = now_secs();
    let db = fresh_database("mon").await;
    let prefix = unique_name("mon");
    let topology = Topology::new(
        prefix.clone(),
        intake_broker::topology::parse_retry_tiers(TIERS).expect("tiers"),
    );
    let hs = fake::FakeHealthSherpa::start(fake::Mode::ApiKey).await;

    // -- the processes: migrate, then a receiver, two workers and a sync
    let common = vec![
        ("INTAKE_AMQP_URL", AMQP_URL.to_owned()),
        ("INTAKE_QUEUE_PREFIX", prefix.clone()),
        ("INTAKE_QUEUE_EXPIRES_SECS", TEST_QUEUE_EXPIRY_SECS.to_string()),
        ("INTAKE_RETRY_TIERS", TIERS.to_owned()),
    ];
    let with_db = |extra: &[(&'static str, String)]| {
        let mut env = common.clone();
        env.push(("INTAKE_DATABASE_URL", db.url.clone()));
        env.extend_from_slice(extra);
        env
    };
    let mut migrate = Process::spawn("intake-migrate", intake("migrate", &with_db(&[]))).expect("migrate");
    let status = migrate.wait_exit(DEADLINE).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "migrate: {status:?}\n{}",
        migrate.log()
    );

    let receiver_addr = free_addr();
    let mut receiver_env = common.clone();
    receiver_env.extend([
        ("INTAKE_LISTEN_ADDR", receiver_addr.to_string()),
        ("INTAKE_ENDPOINTS", ENDPOINTS.to_owned()),
        ("MON_SPARK_TOKEN", "mon-spark".to_owned()),
        ("MON_SPARKLOOP_TOKEN", "mon-loop".to_owned()),
        ("MON_SPARK360_TOKEN", "mon-360".to_owned()),
        ("MON_HS_TOKEN", "mon-hs".to_owned()),
    ]);
    let mut processes = vec![(
        format!("http://{receiver_addr}/readyz"),
        Process::spawn("intake-receiver", intake("receiver", &receiver_env)).expect("receiver"),
    )];
    let worker_addrs = [free_addr(), free_addr()];
    for (n, addr) in worker_addrs.iter().enumerate() {
        let env = with_db(&[
            ("INTAKE_LISTEN_ADDR", addr.to_string()),
            // Small pools: other tests share this Postgres.
            ("INTAKE_CONCURRENCY", "4".to_owned()),
            ("INTAKE_DB_POOL_SIZE", "6".to_owned()),
            // Quick sweeps, so the sweeper's gauges and timestamp are there within the test.
            ("INTAKE_SWEEP_INTERVAL_MS", "500".to_owned()),
            // A blocked entity lock ends (retryable) quickly: the test's way to cause a retry.
            ("INTAKE_DB_LOCK_TIMEOUT_MS", "300".to_owned()),
        ]);
        processes.push((
            format!("http://{addr}/readyz"),
            Process::spawn(&format!("intake-worker-{n}"), intake("worker", &env)).expect("worker"),
        ));
    }
    let sync_addr = free_addr();
    let sync_env = with_db(&[
        ("INTAKE_LISTEN_ADDR", sync_addr.to_string()),
        ("INTAKE_SYNC_CONCURRENCY", "2".to_owned()),
        ("INTAKE_DB_POOL_SIZE", "4".to_owned()),
        ("INTAKE_RELAY_INTERVAL_MS", "100".to_owned()),
        ("HEALTHSHERPA_BASE_URL", hs.base_url()),
        ("HEALTHSHERPA_API_KEY", fake::API_KEY.to_owned()),
        ("HEALTHSHERPA_AGENT_EMAIL", "agent@example.com".to_owned()),
    ]);
    processes.push((
        format!("http://{sync_addr}/readyz"),
        Process::spawn("intake-sync", intake("sync", &sync_env)).expect("sync"),
    ));
    for (url, process) in &mut processes {
        wait_ready(process, url).await;
    }

    // -- Prometheus with the deploy config, every job pointed at what runs here
    let prometheus_addr = free_addr();
    let targets: BTreeMap<&str, Vec<String>> = [
        ("intake-receiver", vec![receiver_addr.to_string()]),
        (
            "intake-worker",
            worker_addrs.iter().map(ToString::to_string).collect(),
        ),
        ("intake-sync", vec![sync_addr.to_string()]),
        ("rabbitmq", vec![RABBITMQ_METRICS.to_owned()]),
        ("rabbitmq-queues", vec![RABBITMQ_METRICS.to_owned()]),
        // No Postgres exporter runs here: its job has no target (the pg_up alert is only
        // evaluated).
        ("postgres", vec![]),
        ("prometheus", vec![prometheus_addr.to_string()]),
    ]
    .into_iter()
    .collect();
    let config = local_config(
        &root.join("deploy/prometheus/prometheus.yml"),
        &root.join("deploy/prometheus"),
        &targets,
        "1s",
    )
    .expect("local Prometheus config");
    let prometheus = Prometheus::start(&config, prometheus_addr)
        .await
        .expect("Prometheus starts");
    let expected_targets: usize = targets.values().map(Vec::len).sum();
    let until = Instant::now() + DEADLINE;
    let (all_up, last_targets) = loop {
        let data = prometheus.api("targets", &[]).await.unwrap_or_default();
        let active = data["activeTargets"].as_array().cloned().unwrap_or_default();
        let up = active.iter().filter(|t| t["health"] == "up").count();
        let done = up == expected_targets && active.len() == expected_targets;
        if done || Instant::now() > until {
            break (done, data);
        }
        tokio::time::sleep(POLL).await;
    };
    assert!(
        all_up,
        "every target up (is rabbitmq_prometheus enabled? `rabbitmq-plugins enable rabbitmq_prometheus`): {last_targets:#}"
    );

    // -- traffic
    let http = reqwest::Client::new();
    let receiver = Receiver {
        http: http.clone(),
        addr: receiver_addr,
    };
    let client = db.client().await;
    let count = |sql: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(sql, &[])
                .await
                .map(|r| r.get::<_, i64>(0))
                .unwrap_or(-1)
        }
    };
    let wait_count = |sql: &'static str, n: i64| async move {
        let ok = wait_until(DEADLINE, || async { count(sql).await >= n }).await;
        assert!(
            ok,
            "timed out waiting for {sql} >= {n} (last {})",
            count(sql).await
        );
    };

    // HealthSherpa fails the first create once: the sync retries it (through a delay tier).
    hs.fail("POST", 1, ResponseTemplate::new(500)).await;
    let contact = spark_contact(|_| {});
    assert_eq!(receiver.post("spark/mon-spark", &[], contact.clone()).await, 200);
    // A contact without a last name (the sync dead-letters it: missing_field) and with an
    // unreadable optional field (a field issue; the event is still applied).
    let nameless = spark_contact(|c| {
        c["details"]["id"] = json!(5678);
        c["details"]["last_name"] = Value::Null;
        c["details"]["soa_is_signed"] = json!("perhaps");
    });
    assert_eq!(receiver.post("spark/mon-spark", &[], nameless).await, 200);
    // contact_requested before enriched: parked, then released.
    let spark360 = [("X-Test-Token", "mon-360")];
    assert_eq!(
        receiver
            .post(
                "spark360",
                &spark360,
                fixtures::SPARK360_CONTACT_REQUESTED.to_owned()
            )
            .await,
        200
    );
    wait_count("SELECT count(*) FROM inbox WHERE outcome = 'parked'", 1).await;
    assert_eq!(
        receiver
            .post("spark360", &spark360, fixtures::SPARK360_ENRICHED.to_owned())
            .await,
        200
    );
    // An event type SparkLoop's declaration does not list: dead letter unknown_event_type.
    assert_eq!(
        receiver
            .post(
                "sparkloop",
                &[("SparkLoop-Token", "mon-loop")],
                fixtures::SPARKLOOP_REWARD_UNLOCKED.replace("reward_unlocked", "reward_exploded"),
            )
            .await,
        200
    );
    wait_count("SELECT count(*) FROM inbox WHERE outcome = 'released'", 1).await;
    wait_count(
        "SELECT count(*) FROM dead_letters WHERE reason = 'unknown_event_type'",
        1,
    )
    .await;
    wait_count(
        "SELECT count(*) FROM dead_letters WHERE source = 'sync' AND reason = 'missing_field'",
        1,
    )
    .await;
    wait_count(
        "SELECT count(*) FROM healthsherpa_sync WHERE spark_id = '1234' AND healthsherpa_id IS NOT NULL",
        1,
    )
    .await;
    // The same snapshot again: a duplicate of the contact's current state.
    assert_eq!(receiver.post("spark/mon-spark", &[], contact).await, 200);
    wait_count("SELECT count(*) FROM inbox WHERE outcome = 'duplicate'", 1).await;

    // A change of the contact while another session holds every entity row lock: the worker's
    // apply hits the lock timeout and is retried, then applies once the lock is gone (and the
    // sync updates the contact).
    let holder = db.client().await;
    holder
        .batch_execute("BEGIN; SELECT * FROM entities FOR UPDATE")
        .await
        .expect("hold entity locks");
    let renamed = spark_contact(|c| c["details"]["first_name"] = json!("Tony"));
    assert_eq!(receiver.post("spark/mon-spark", &[], renamed).await, 200);
    let retried = wait_until(DEADLINE, || async {
        prometheus
            .query("sum(intake_worker_events_total{outcome=\"retried\"}) > 0")
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;
    assert!(retried, "a worker retried the blocked event");
    holder.batch_execute("ROLLBACK").await.expect("release locks");
    wait_count(
        "SELECT count(*) FROM contacts WHERE spark_id = '1234' AND first_name = 'Tony'",
        1,
    )
    .await;
    let updated = wait_until(DEADLINE, || async { hs.count("PATCH").await >= 1 }).await;
    assert!(updated, "the change was synced (an update)");

    // A refused publish: the healthsherpa queue unbound from the ingress exchange, so the
    // receiver's mandatory publish comes back unroutable and the webhook is answered 503.
    let amqp = Connection::connect(AMQP_URL, ConnectionProperties::default())
        .await
        .expect("amqp");
    let channel = amqp.create_channel().await.expect("channel");
    channel
        .queue_unbind(
            format!("{prefix}.q.healthsherpa").into(),
            topology.ingress_exchange().into(),
            "healthsherpa".into(),
            FieldTable::default(),
        )
        .await
        .expect("unbind");
    assert_eq!(
        receiver
            .post(
                "healthsherpa",
                &[("Authorization", "Bearer mon-hs")],
                fixtures::HEALTHSHERPA_OFF_EXCHANGE.to_owned(),
            )
            .await,
        503
    );
    let _ = amqp.close(200, "done".into()).await;

    // A second round, once every intake target was scraped after the first: a latency panel
    // (histogram_quantile of a rate) shows only what grew between two scrapes, and the first
    // round can fit between two scrapes whole. One new contact goes through the receiver, a
    // worker and the sync (a HealthSherpa create).
    let first_round = now_secs();
    let scraped = wait_until(DEADLINE, || async {
        prometheus
            .query(&format!(
                "min(timestamp(up{{job=~\"intake-.+\"}})) > {first_round}"
            ))
            .await
            .is_ok_and(|r| !r.is_empty())
    })
    .await;
    assert!(scraped, "every intake target scraped after the first round");
    let another = spark_contact(|c| c["details"]["id"] = json!(9012));
    assert_eq!(receiver.post("spark/mon-spark", &[], another).await, 200);
    wait_count(
        "SELECT count(*) FROM healthsherpa_sync WHERE spark_id = '9012' AND healthsherpa_id IS NOT NULL",
        1,
    )
    .await;

    // Every check below adds what fails to `problems`, naming the panel or alert and its query,
    // so one run reports all of them.
    let mut problems: Vec<String> = Vec::new();

    // -- every rule file loaded, every rule evaluated (at least once) without error
    let rules = alert_rules(&root.join("deploy/prometheus/alerts.yml")).expect("alerts.yml");
    let until = Instant::now() + DEADLINE;
    let loaded = loop {
        let data = prometheus
            .api("rules", &[("type", "alert".to_owned())])
            .await
            .unwrap_or_default();
        let loaded: Vec<Value> = data["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
            .collect();
        let done = loaded.len() == rules.len() && loaded.iter().all(|r| r["health"] == "ok");
        if done || Instant::now() > until {
            break loaded;
        }
        tokio::time::sleep(POLL).await;
    };
    if loaded.len() != rules.len() {
        problems.push(format!(
            "Prometheus loaded {} alert rules, alerts.yml has {}",
            loaded.len(),
            rules.len()
        ));
    }
    for rule in loaded.iter().filter(|r| r["health"] != "ok") {
        problems.push(format!(
            "alert {} {}: rule health {}, error {}: {}",
            rule["name"], rule["labels"], rule["health"], rule["lastError"], rule["query"]
        ));
    }

    // -- every dashboard panel query returns data, as Grafana asks for it (a range query)
    let queries = dashboard_queries(&root.join("deploy/grafana/dashboards/intake.json")).expect("dashboard");
    assert!(queries.len() >= 30, "the dashboard's queries: {}", queries.len());
    let expand = |expr: &str| {
        expr.replace("$__rate_interval", RATE_INTERVAL)
            .replace("$prefix", &prefix)
    };
    // (Polled: a rate shows an increase only once two scrapes saw it.)
    let until = Instant::now() + DEADLINE;
    loop {
        let mut failing = Vec::new();
        let end = now_secs();
        for q in &queries {
            let expr = expand(&q.expr);
            if expr.contains('$') {
                failing.push(format!(
                    "panel {:?} ({}): a Grafana variable the test does not know: {}",
                    q.panel, q.ref_id, q.expr
                ));
                continue;
            }
            match prometheus
                .query_range(&expr, started, end, Duration::from_secs(1))
                .await
            {
                Err(e) => failing.push(format!("panel {:?} ({}): error {e}: {expr}", q.panel, q.ref_id)),
                Ok(series) if !series.iter().any(has_a_number) => {
                    failing.push(format!("panel {:?} ({}): no data: {expr}", q.panel, q.ref_id));
                }
                Ok(_) => {}
            }
        }
        if failing.is_empty() || Instant::now() > until {
            problems.extend(failing);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    // The overview stats count what runs: both workers are scraped.
    for (panel, expected) in [
        ("Live workers", 2.0),
        ("Receivers up", 1.0),
        ("Sync processes up", 1.0),
    ] {
        let q = queries.iter().find(|q| q.panel == panel).expect(panel);
        let value = instant_value(&prometheus, &q.expr).await;
        if value != Some(expected) {
            problems.push(format!(
                "panel {panel:?} shows {value:?}, not {expected}: {}",
                q.expr
            ));
        }
    }

    // -- every alert expression evaluates now; this healthy system raises only what the traffic
    // caused. Series of other tests' queues on the shared broker are ignored.
    let ours = |series: &Value| {
        series["metric"]["queue"]
            .as_str()
            .is_none_or(|q| q.starts_with(&format!("{prefix}.")))
    };
    // Allowed to fire here, and why.
    let may_fire = |rule: &AlertRule| match rule.name.as_str() {
        // no Postgres exporter runs in this test
        "IntakeMonitoringBlind" => rule.labels.get("job").map(String::as_str) == Some("postgres"),
        // the test provoked a 503 and a HealthSherpa 500
        "IntakeReceiverErrors" | "IntakeSyncFailing" => true,
        _ => false,
    };
    let mut dead_letter_series = BTreeSet::new();
    for rule in &rules {
        let series = match prometheus.query(&rule.expr).await {
            Ok(series) => series,
            Err(e) => {
                problems.push(format!("alert {}: error {e}: {}", rule.variant(), rule.expr));
                continue;
            }
        };
        let series: Vec<&Value> = series.iter().filter(|s| ours(s)).collect();
        if rule.name == "IntakeDeadLettersIncreasing"
            && rule.labels.get("cause").map(String::as_str) == Some("recorded")
        {
            for s in &series {
                dead_letter_series.insert((
                    s["metric"]["source"].as_str().unwrap_or("?").to_owned(),
                    s["metric"]["reason"].as_str().unwrap_or("?").to_owned(),
                ));
            }
        } else if !series.is_empty() && !may_fire(rule) {
            problems.push(format!(
                "alert {} fires in a healthy system: {}\n  {:?}",
                rule.variant(),
                rule.expr,
                series.iter().map(|s| &s["metric"]).collect::<Vec<_>>()
            ));
        }
    }
    // Each dead letter of the traffic, by source and reason — each the first of its reason in
    // its process, which increase() alone would not see.
    let expected: BTreeSet<(String, String)> = [("ingest", "unknown_event_type"), ("sync", "missing_field")]
        .into_iter()
        .map(|(s, r)| (s.to_owned(), r.to_owned()))
        .collect();
    if dead_letter_series != expected {
        problems.push(format!(
            "alert IntakeDeadLettersIncreasing{{cause=\"recorded\"}} names {dead_letter_series:?}, not {expected:?}"
        ));
    }
    if !problems.is_empty() {
        let log = prometheus.log();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        panic!(
            "{}\n\nPrometheus log (last lines):\n{}",
            problems.join("\n"),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }

    // -- stop everything cleanly
    drop(prometheus);
    for (_, mut process) in processes {
        let status = process.terminate(DEADLINE).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exits 0 on SIGTERM ({status:?}); log:\n{}",
            process.name(),
            process.log()
        );
    }
    drop((client, holder));
    QueueProbe::connect().await.cleanup(&topology).await;
    db.drop_database().await;
}

/// Whether a range-query series holds at least one finite number (NaN is no data to a panel).
fn has_a_number(series: &Value) -> bool {
    series["values"].as_array().into_iter().flatten().any(|point| {
        point[1]
            .as_str()
            .and_then(|v| v.parse::<f64>().ok())
            .is_some_and(f64::is_finite)
    })
}

/// The single value of an instant query, if it has exactly one series.
async fn instant_value(prometheus: &Prometheus, expr: &str) -> Option<f64> {
    let series = prometheus.query(expr).await.ok()?;
    match series.as_slice() {
        [one] => one["value"][1].as_str()?.parse().ok(),
        _ => None,
    }
}
