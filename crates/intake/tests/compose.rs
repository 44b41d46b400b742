//! docker-compose.yml tested as executed, without a Docker engine: each of our services (those
//! running the intake image) is started natively as an `intake` process with its `command` and
//! its `environment` exactly as the compose file writes them, interpolated from `.env.example` —
//! only values an operator would put in `.env` are changed (RabbitMQ and Postgres credentials of
//! this machine, a test database and queue prefix, a fake HealthSherpa). As Docker would, the
//! test maps what is container-specific: compose host names (`rabbitmq:5672`, `postgres:5432`)
//! point at the local services — through a TCP proxy per service, which proves the process used
//! that address —, listen addresses `0.0.0.0:PORT` become free local ports, bind-mounted files
//! their workspace paths. `migrate` runs first and must exit 0 (every role waits for it); each
//! role must pass its compose healthcheck (run as written, port mapped); webhooks signed with the
//! secrets of `.env.example` for every endpoint of `deploy/endpoints.toml` must be applied, and
//! the Spark contact synced. Every variable a service sets must be one its command reads (`intake
//! <command> --help`), so a misspelt one fails too. (The only addition: the test queue expiry, so
//! an aborted run leaves no queues behind.)

#[allow(dead_code)]
#[path = "../../../tests/tests/sync_support/fake.rs"]
mod fake;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use intake_broker::Topology;
use intake_it::compose::{Compose, read_env_file, workspace_root};
use intake_it::pg::fresh_database;
use intake_it::process::{Process, free_addr};
use intake_it::{QueueProbe, TEST_QUEUE_EXPIRY_SECS, TcpProxy, unique_name, wait_until};
use intake_providers::fixtures;
use intake_receiver::auth::SignatureEncoding;
use intake_receiver::endpoints::{AuthSpec, EndpointSpec};
use sha2::Sha256;
use yaml_rust2::Yaml;

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");
const DEADLINE: Duration = Duration::from_secs(60);

/// Where the compose file's dependency services are on this machine.
const LOCAL_SERVICES: &[(&str, &str)] = &[
    ("rabbitmq:5672", "127.0.0.1:5672"),
    ("postgres:5432", "127.0.0.1:5432"),
];
/// Variables every process reads besides its command's flags and secrets (logging).
const LOGGING: &[&str] = &["RUST_LOG", "INTAKE_LOG_FORMAT"];

/// One of our services, made runnable here.
struct Native {
    name: String,
    command: Vec<String>,
    env: BTreeMap<String, String>,
    /// Container port → local address.
    ports: BTreeMap<u16, SocketAddr>,
    /// One proxy per dependency the environment names (`rabbitmq:5672`, …).
    proxies: Vec<(String, TcpProxy)>,
    raw: Yaml,
}

/// The variables `intake <command> --help` documents: every `[env: NAME=` and every name listed
/// under "Secrets".
fn variables_read_by(command: &[String]) -> BTreeSet<String> {
    let output = Command::new(INTAKE)
        .args(command)
        .arg("--help")
        .env_clear()
        .output()
        .expect("intake --help");
    assert!(
        output.status.success(),
        "`intake {} --help` fails: the command is wrong",
        command.join(" ")
    );
    let help = String::from_utf8_lossy(&output.stdout);
    let mut names = BTreeSet::new();
    for piece in help.split("[env: ").skip(1) {
        if let Some(name) = piece.split('=').next() {
            names.insert(name.trim().to_owned());
        }
    }
    if let Some((_, secrets)) = help.split_once("Secrets") {
        for line in secrets.lines().skip(1) {
            let word = line.split_whitespace().next().unwrap_or("");
            if !word.is_empty()
                && word
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_')
            {
                names.insert(word.to_owned());
            }
        }
    }
    names
}

/// The secret variables an endpoints file names.
fn endpoint_secrets(specs: &[EndpointSpec]) -> BTreeSet<String> {
    specs
        .iter()
        .flat_map(|s| &s.auth)
        .map(|a| match a {
            AuthSpec::HeaderToken { secret_env, .. }
            | AuthSpec::PathToken { secret_env }
            | AuthSpec::Bearer { secret_env }
            | AuthSpec::HmacSha256 { secret_env, .. }
            | AuthSpec::StandardWebhooks { secret_env } => secret_env.clone(),
            AuthSpec::Basic { password_env, .. } => password_env.clone(),
        })
        .collect()
}

fn read_endpoints(path: &Path) -> Vec<EndpointSpec> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    intake_receiver::endpoints::parse(&text).expect("endpoints file parses")
}

fn hmac_sha256(key: &str, body: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("key");
    mac.update(body);
    mac.finalize().into_bytes().to_vec()
}

/// A payload the provider sends (the provider documents' examples).
fn payload(provider: &str) -> String {
    match provider {
        "spark" => fixtures::SPARK_CONTACT.to_owned(),
        "sparkloop" => fixtures::SPARKLOOP_NEW_REFERRAL.to_owned(),
        "spark360" => fixtures::SPARK360_ENRICHED.to_owned(),
        "healthsherpa" => fixtures::HEALTHSHERPA_OFF_EXCHANGE.to_owned(),
        "standard" => {
            r#"{"type":"contact.created","timestamp":"2026-01-01T00:00:00Z","data":{"id":"c-1"}}"#.to_owned()
        }
        other => panic!("no example payload for provider {other}"),
    }
}

/// The webhook request an endpoint's sender makes, signed with `secrets` (from `.env.example`).
fn signed_request(
    http: &reqwest::Client,
    base: &str,
    spec: &EndpointSpec,
    secrets: &BTreeMap<String, String>,
) -> reqwest::RequestBuilder {
    let body = payload(spec.provider.as_str());
    let secret = |name: &str| {
        secrets
            .get(name)
            .unwrap_or_else(|| panic!(".env.example has no {name}, which endpoint {} names", spec.name))
            .clone()
    };
    let mut path = format!("{base}/webhooks/{}", spec.name);
    let mut headers: Vec<(String, String)> = vec![("content-type".into(), "application/json".into())];
    for auth in &spec.auth {
        match auth {
            AuthSpec::HeaderToken { header, secret_env } => {
                headers.push((header.clone(), secret(secret_env)))
            }
            AuthSpec::PathToken { secret_env } => path = format!("{path}/{}", secret(secret_env)),
            AuthSpec::Bearer { secret_env } => {
                headers.push(("authorization".into(), format!("Bearer {}", secret(secret_env))));
            }
            AuthSpec::Basic {
                username,
                password_env,
            } => headers.push((
                "authorization".into(),
                format!(
                    "Basic {}",
                    BASE64.encode(format!("{username}:{}", secret(password_env)))
                ),
            )),
            AuthSpec::HmacSha256 {
                header,
                secret_env,
                encoding,
            } => {
                let mac = hmac_sha256(&secret(secret_env), body.as_bytes());
                let signature = match encoding {
                    SignatureEncoding::Hex => mac.iter().map(|b| format!("{b:02x}")).collect(),
                    SignatureEncoding::Base64 => BASE64.encode(&mac),
                };
                headers.push((header.clone(), signature));
            }
            AuthSpec::StandardWebhooks { secret_env } => {
                let all = secret(secret_env);
                let first = all.split_whitespace().next().expect("a whsec_ secret");
                let id = format!("msg_{}", unique_name("compose"));
                let ts = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .expect("clock")
                    .as_secs() as i64;
                let signature = standardwebhooks::Webhook::new(first)
                    .expect("whsec_ secret")
                    .sign(&id, ts, body.as_bytes())
                    .expect("sign");
                headers.push(("webhook-id".into(), id));
                headers.push(("webhook-timestamp".into(), ts.to_string()));
                headers.push(("webhook-signature".into(), signature));
            }
        }
    }
    let mut request = http.post(path).body(body);
    for (name, value) in headers {
        request = request.header(name, value);
    }
    request
}

/// Runs a compose healthcheck (`["CMD", "intake", "healthcheck", URL]`) with the service's ports
/// mapped: `Ok` when it exits 0, else what it said.
fn healthcheck(service: &Native) -> Result<(), String> {
    let test: Vec<String> = service.raw["healthcheck"]["test"]
        .as_vec()
        .unwrap_or_else(|| panic!("{}: healthcheck.test must be a list", service.name))
        .iter()
        .map(|v| v.as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        test.len() > 2 && test[0] == "CMD" && test[1] == "intake",
        "{}: healthcheck must run the intake binary: {test:?}",
        service.name
    );
    let args: Vec<String> = test[2..]
        .iter()
        .map(|arg| {
            let mut arg = arg.clone();
            for (port, local) in &service.ports {
                arg = arg.replace(&format!("127.0.0.1:{port}/"), &format!("{local}/"));
            }
            arg
        })
        .collect();
    let output = Command::new(INTAKE)
        .args(&args)
        .env_clear()
        .output()
        .map_err(|e| e.to_string())?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`intake {}` exited {}: {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_services_run_natively_as_written_and_apply_webhooks() {
    let root = workspace_root();
    let db = fresh_database("compose").await;
    let prefix = unique_name("compose");
    let hs = fake::FakeHealthSherpa::start(fake::Mode::ApiKey).await;

    // .env as an operator of this machine would write it: .env.example with local values.
    let mut vars = read_env_file(&root.join(".env.example")).expect(".env.example");
    for (name, value) in [
        ("RABBITMQ_USER", "guest".to_owned()),
        ("RABBITMQ_PASSWORD", "guest".to_owned()),
        ("POSTGRES_USER", "postgres".to_owned()),
        ("POSTGRES_PASSWORD", "unused-with-trust-auth".to_owned()),
        ("POSTGRES_DB", db.name.clone()),
        ("INTAKE_QUEUE_PREFIX", prefix.clone()),
        ("HEALTHSHERPA_BASE_URL", hs.base_url()),
        ("HEALTHSHERPA_AUTH_MODE", "api_key".to_owned()),
        ("HEALTHSHERPA_API_KEY", fake::API_KEY.to_owned()),
        ("HEALTHSHERPA_AGENT_EMAIL", "agent@example.com".to_owned()),
    ] {
        assert!(vars.contains_key(name), ".env.example has no {name}");
        vars.insert(name.to_owned(), value);
    }
    let compose = Compose::load(&root.join("docker-compose.yml"), &vars).expect("compose file interpolates");
    let image = vars.get("INTAKE_IMAGE").expect("INTAKE_IMAGE").clone();
    let compose_names = compose.service_names();

    // Our services, made runnable here.
    let mut services = Vec::new();
    for name in &compose_names {
        let raw = compose.raw(name).clone();
        if raw["image"].as_str() != Some(image.as_str()) {
            continue;
        }
        let service = compose.service(name).expect("service");
        assert!(!service.command.is_empty(), "{name}: no command");
        let mut env = service.environment.clone();
        let mut ports = BTreeMap::new();
        let mut proxies = Vec::new();
        for (host, local) in LOCAL_SERVICES {
            if env.values().any(|v| v.contains(&format!("@{host}"))) {
                let proxy = TcpProxy::start(local.parse().expect("addr"))
                    .await
                    .expect("proxy");
                for value in env.values_mut() {
                    *value = value.replace(&format!("@{host}"), &format!("@{}", proxy.addr()));
                }
                proxies.push(((*host).to_owned(), proxy));
            }
        }
        for value in env.values_mut() {
            if let Some(port) = value.strip_prefix("0.0.0.0:").and_then(|p| p.parse::<u16>().ok()) {
                let local = *ports.entry(port).or_insert_with(free_addr);
                *value = local.to_string();
            }
        }
        for volume in raw["volumes"].as_vec().into_iter().flatten() {
            let Some((source, target)) = volume.as_str().and_then(|v| v.split_once(':')) else {
                continue;
            };
            let target = target.split(':').next().unwrap_or(target);
            if let Some(relative) = source.strip_prefix("./") {
                let local = root.join(relative).to_string_lossy().into_owned();
                for value in env.values_mut() {
                    if value == target {
                        value.clone_from(&local);
                    }
                }
            }
        }
        for (key, value) in &env {
            let host = reqwest::Url::parse(value)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned));
            assert!(
                !host.is_some_and(|h| compose_names.contains(&h)),
                "{name}: {key} names a compose host this test does not map"
            );
        }
        env.insert(
            "INTAKE_QUEUE_EXPIRES_SECS".into(),
            TEST_QUEUE_EXPIRY_SECS.to_string(),
        );
        services.push(Native {
            name: name.clone(),
            command: service.command,
            env,
            ports,
            proxies,
            raw,
        });
    }
    let names: Vec<&str> = services.iter().map(|s| s.name.as_str()).collect();
    assert!(
        ["migrate", "receiver", "worker", "sync"]
            .iter()
            .all(|n| names.contains(n)),
        "our services in docker-compose.yml: {names:?}"
    );

    // Every variable a service sets is one its command reads.
    let receiver_endpoints = services
        .iter()
        .find_map(|s| s.env.get("INTAKE_ENDPOINTS_FILE"))
        .map(|f| read_endpoints(Path::new(f)))
        .expect("a service with INTAKE_ENDPOINTS_FILE (the receiver)");
    for service in &services {
        let mut known = variables_read_by(&service.command);
        known.extend(LOGGING.iter().map(|s| (*s).to_owned()));
        known.insert("INTAKE_QUEUE_EXPIRES_SECS".into());
        if service.env.contains_key("INTAKE_ENDPOINTS_FILE") {
            known.extend(endpoint_secrets(&receiver_endpoints));
        }
        let unread: Vec<&String> = service.env.keys().filter(|k| !known.contains(*k)).collect();
        assert!(
            unread.is_empty(),
            "{}: docker-compose.yml sets {unread:?}, which `intake {}` does not read (see its --help)",
            service.name,
            service.command.join(" ")
        );
    }

    let spawn = |service: &Native| {
        let mut command = Command::new(INTAKE);
        command.args(&service.command).env_clear().envs(&service.env);
        Process::spawn(&format!("compose-{}", service.name), command).expect("spawn")
    };

    // One-shot services others wait for (`service_completed_successfully`) run first.
    let one_shot: BTreeSet<String> = services
        .iter()
        .flat_map(|s| {
            s.raw["depends_on"]
                .as_hash()
                .into_iter()
                .flatten()
                .filter(|(_, dep)| dep["condition"].as_str() == Some("service_completed_successfully"))
                .filter_map(|(dep, _)| dep.as_str().map(str::to_owned))
                .collect::<Vec<_>>()
        })
        .collect();
    assert!(
        one_shot.contains("migrate"),
        "roles wait for migrate: {one_shot:?}"
    );
    for service in services.iter().filter(|s| one_shot.contains(&s.name)) {
        let mut process = spawn(service);
        let status = process.wait_exit(DEADLINE).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} ({:?}) must exit 0, got {status:?}; log:\n{}",
            service.name,
            service.command,
            process.log()
        );
    }
    let mut running = Vec::new();
    for service in services.iter().filter(|s| !one_shot.contains(&s.name)) {
        running.push((service, spawn(service)));
    }
    for (service, process) in &mut running {
        // The healthcheck blocks while it runs; the proxies must keep forwarding meanwhile.
        let until = std::time::Instant::now() + DEADLINE;
        let last = loop {
            let check = tokio::task::block_in_place(|| healthcheck(service));
            if check.is_ok() || process.exited().is_some() || std::time::Instant::now() > until {
                break check;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        };
        assert!(
            last.is_ok() && process.exited().is_none(),
            "{} ({:?}) never passed its compose healthcheck ({last:?}, exit {:?}); log:\n{}",
            service.name,
            service.command,
            process.exited(),
            process.log()
        );
    }

    // Webhooks to every endpoint, signed with .env.example's secrets; each applied.
    let receiver = services
        .iter()
        .find(|s| s.env.contains_key("INTAKE_ENDPOINTS_FILE"))
        .expect("receiver");
    let published: Vec<u16> = receiver.raw["ports"]
        .as_vec()
        .into_iter()
        .flatten()
        .filter_map(|p| p.as_str()?.rsplit(':').next()?.parse().ok())
        .collect();
    let container_port = *published.first().expect("the receiver publishes a port");
    let base = format!(
        "http://{}",
        receiver
            .ports
            .get(&container_port)
            .expect("the receiver listens on its published port")
    );
    let http = reqwest::Client::new();
    for spec in &receiver_endpoints {
        let answer = signed_request(&http, &base, spec, &vars)
            .send()
            .await
            .expect("post");
        assert_eq!(answer.status(), 200, "endpoint {}", spec.name);
    }
    let client = db.client().await;
    for spec in &receiver_endpoints {
        let applied = wait_until(DEADLINE, || {
            let client = &client;
            let endpoint = spec.name.clone();
            async move {
                client
                    .query_one(
                        "SELECT count(*) FROM inbox WHERE endpoint = $1 AND outcome = 'applied'",
                        &[&endpoint],
                    )
                    .await
                    .is_ok_and(|r| r.get::<_, i64>(0) >= 1)
            }
        })
        .await;
        assert!(applied, "the webhook to endpoint {} was not applied", spec.name);
    }
    let synced = wait_until(DEADLINE, || async {
        client
            .query_one(
                "SELECT count(*) FROM healthsherpa_sync WHERE spark_id = '1234' AND healthsherpa_id IS NOT NULL",
                &[],
            )
            .await
            .is_ok_and(|r| r.get::<_, i64>(0) == 1)
    })
    .await;
    assert!(synced, "the Spark contact was synced to HealthSherpa");

    // Each service reached RabbitMQ and Postgres through the addresses its compose environment
    // gives (a variable the process does not read would leave its proxy unused).
    for service in &services {
        for (host, proxy) in &service.proxies {
            assert!(
                proxy.forwarded() > 0,
                "{} never connected to {host} through the address its environment gives",
                service.name
            );
        }
    }

    for (service, mut process) in running {
        let status = process.terminate(DEADLINE).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "{} exits 0 on SIGTERM ({status:?}); log:\n{}",
            service.name,
            process.log()
        );
    }
    drop(client);
    let tiers = intake_broker::topology::parse_retry_tiers(vars.get("INTAKE_RETRY_TIERS").expect("tiers"))
        .expect("tiers parse");
    QueueProbe::connect()
        .await
        .cleanup(&Topology::new(prefix, tiers))
        .await;
    db.drop_database().await;
}
