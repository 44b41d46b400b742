//! The deployment files hold together (no services needed): the dashboard's panels all query
//! through the datasource variable with `$__rate_interval`; every `intake_*` metric the dashboard
//! and alerts use is one the code exports; every alert has a runbook entry and promtool cases
//! that make it fire and keep it quiet; docker-compose.yml runs every role after `migrate` with a
//! `/readyz` healthcheck on its own port, Prometheus scrapes each role on that port, and the
//! receiver gets every secret deploy/endpoints.toml names from `.env.example`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use intake_it::compose::{Compose, read_env_file, workspace_root};
use yaml_rust2::{Yaml, YamlLoader};

/// Metrics the dashboard or alerts use that another branch is adding; remove a name once its
/// crate exports it.
const PENDING_METRICS: &[&str] = &[];

/// The intake roles: compose service, its command, its ops port, its Prometheus job.
const ROLES: &[(&str, &str, u16, &str)] = &[
    ("receiver", "receiver", 8080, "intake-receiver"),
    ("worker", "worker", 9091, "intake-worker"),
    ("sync", "sync", 9092, "intake-sync"),
];

fn read(rel: &str) -> String {
    let path = workspace_root().join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(rel: &str) -> Yaml {
    YamlLoader::load_from_str(&read(rel))
        .unwrap_or_else(|e| panic!("parsing {rel}: {e}"))
        .remove(0)
}

fn compose() -> Compose {
    let root = workspace_root();
    let vars = read_env_file(&root.join(".env.example")).expect(".env.example");
    Compose::load(&root.join("docker-compose.yml"), &vars)
        .expect("docker-compose.yml interpolates with .env.example")
}

fn dashboard() -> serde_json::Value {
    serde_json::from_str(&read("deploy/grafana/dashboards/intake.json")).expect("dashboard JSON")
}

/// Every (title, expr) of the dashboard's non-row panels.
fn dashboard_queries() -> Vec<(String, String)> {
    let dash = dashboard();
    let mut out = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        let title = panel["title"].as_str().unwrap_or("?").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            out.push((title.clone(), target["expr"].as_str().unwrap_or("").to_owned()));
        }
    }
    out
}

/// Every alert rule: (name, expr, labels).
fn alert_rules() -> Vec<(String, String, BTreeMap<String, String>)> {
    let doc = yaml("deploy/prometheus/alerts.yml");
    let mut out = Vec::new();
    for group in doc["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("alert rules only").to_owned();
            let expr = rule["expr"].as_str().expect("expr").to_owned();
            let labels = rule["labels"]
                .as_hash()
                .map(|h| {
                    h.iter()
                        .map(|(k, v)| {
                            (
                                k.as_str().unwrap().to_owned(),
                                v.as_str().unwrap_or("").to_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            out.push((name, expr, labels));
        }
    }
    out
}

/// `intake_*` names the code declares as string literals (metric name constants).
fn exported_metrics() -> BTreeSet<String> {
    fn walk(dir: &Path, names: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, names);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for piece in text.split('"').skip(1).step_by(2) {
                    if piece.starts_with("intake_")
                        && piece
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
                    {
                        names.insert(piece.to_owned());
                    }
                }
            }
        }
    }
    let mut names = BTreeSet::new();
    walk(&workspace_root().join("crates"), &mut names);
    names
}

/// `intake_*` identifiers in a PromQL expression.
fn intake_metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("intake_") {
        let preceded_by_ident = rest[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !preceded_by_ident {
            out.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    out
}

#[test]
fn dashboard_panels_all_query_through_the_datasource_variable_with_rate_interval() {
    let dash = dashboard();
    let vars = dash["templating"]["list"].as_array().expect("templating");
    assert!(
        vars.iter()
            .any(|v| v["name"] == "datasource" && v["type"] == "datasource" && v["query"] == "prometheus"),
        "the dashboard needs a Prometheus datasource variable named `datasource`"
    );
    let mut panels = 0;
    for panel in dash["panels"].as_array().expect("panels") {
        if panel["type"] == "row" {
            continue;
        }
        panels += 1;
        let title = panel["title"].as_str().unwrap_or("?");
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "panel {title:?}: datasource must be the variable"
        );
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        let targets = targets.unwrap_or_else(|| panic!("panel {title:?} has no query"));
        for target in targets {
            let expr = target["expr"].as_str().unwrap_or("");
            assert!(!expr.trim().is_empty(), "panel {title:?}: empty query");
            assert_eq!(
                target["datasource"]["uid"], "${datasource}",
                "panel {title:?}: target datasource must be the variable"
            );
            for func in ["rate(", "increase(", "irate("] {
                let mut rest = expr;
                while let Some(i) = rest.find(func) {
                    let after = &rest[i + func.len()..];
                    let window = after.find('[').map(|open| &after[open..]).unwrap_or("");
                    assert!(
                        window.starts_with("[$__rate_interval]"),
                        "panel {title:?}: {func} must use [$__rate_interval]: {expr}"
                    );
                    rest = after;
                }
            }
        }
    }
    assert!(
        panels >= 20,
        "expected every panel the issue lists, found {panels}"
    );
}

#[test]
fn dashboard_has_every_panel_the_operators_need() {
    let queries = dashboard_queries();
    let all = queries
        .iter()
        .map(|(_, e)| e.as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for needed in [
        "intake_receiver_requests_total",         // ingress by provider and status
        "intake_receiver_enqueue_seconds_bucket", // enqueue latency
        "intake_worker_events_total",             // events by outcome
        "intake_worker_end_to_end_seconds_bucket",
        "rabbitmq_detailed_queue_messages",  // queue depth
        "rabbitmq_detailed_queue_consumers", // consumers per queue
        "intake_worker_parked_events",
        "intake_worker_oldest_parked_age_seconds",
        "intake_dead_letters_recorded_total", // dead letters by reason
        "intake_worker_dead_letters",
        "intake_worker_parked_overdue_events", // parked past limit
        "intake_worker_sweep_last_success_timestamp_seconds", // sweeper health
        "intake_consumer_deliveries_total",    // consumer runtime outcomes
        "intake_consumer_waiting_to_publish",
        "intake_outbox_backlog",
        "intake_sync_messages_total",         // sync outcomes
        "intake_sync_request_seconds_bucket", // sync latency
        "up{job=\"intake-worker\"}",          // live workers
    ] {
        assert!(all.contains(needed), "no dashboard panel queries {needed}");
    }
    for q in ["histogram_quantile(0.5,", "histogram_quantile(0.99,"] {
        assert!(all.contains(q), "latency panels need p50 and p99 ({q})");
    }
}

#[test]
fn every_intake_metric_the_dashboard_and_alerts_use_is_exported_by_the_code() {
    let exported = exported_metrics();
    assert!(
        exported.contains("intake_receiver_requests_total"),
        "metric scan found nothing: {exported:?}"
    );
    let mut uses: Vec<(String, String)> = dashboard_queries()
        .into_iter()
        .map(|(title, expr)| (format!("panel {title:?}"), expr))
        .collect();
    uses.extend(
        alert_rules()
            .into_iter()
            .map(|(name, expr, _)| (format!("alert {name}"), expr)),
    );
    let mut missing = Vec::new();
    for (user, expr) in &uses {
        for metric in intake_metrics_in(expr) {
            let base = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| metric.strip_suffix(s).filter(|b| exported.contains(*b)))
                .unwrap_or(&metric);
            if !exported.contains(base) && !PENDING_METRICS.contains(&base) {
                missing.push(format!("{user}: {metric}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "metrics no crate exports:\n{}",
        missing.join("\n")
    );
}

#[test]
fn every_alert_has_a_runbook_entry_and_promtool_cases_that_fire_and_stay_quiet() {
    let readme = read("README.md");
    let runbook = readme
        .split_once("## Alert runbook")
        .map(|(_, r)| r)
        .expect("README has an '## Alert runbook' section");
    let tests = yaml("deploy/prometheus/alerts_test.yml");
    // alertname -> (label sets expected to fire, whether some case expects it quiet)
    let mut cases: BTreeMap<String, (Vec<BTreeMap<String, String>>, bool)> = BTreeMap::new();
    for test in tests["tests"].as_vec().expect("tests") {
        for case in test["alert_rule_test"].as_vec().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let entry = cases.entry(name).or_default();
            match case["exp_alerts"].as_vec() {
                Some(alerts) if !alerts.is_empty() => {
                    for alert in alerts {
                        let labels = alert["exp_labels"]
                            .as_hash()
                            .expect("exp_labels")
                            .iter()
                            .map(|(k, v)| {
                                (
                                    k.as_str().unwrap().to_owned(),
                                    v.as_str().unwrap_or("").to_owned(),
                                )
                            })
                            .collect();
                        entry.0.push(labels);
                    }
                }
                _ => entry.1 = true,
            }
        }
    }
    let rules = alert_rules();
    assert!(
        rules.len() >= 15,
        "expected the alerts the issue lists, found {}",
        rules.len()
    );
    for (name, _, labels) in &rules {
        assert!(
            runbook.contains(&format!("#### {name}")),
            "README's alert runbook has no '#### {name}' entry"
        );
        let (fired, quiet) = cases
            .get(name)
            .unwrap_or_else(|| panic!("alerts_test.yml never evaluates {name}"));
        assert!(*quiet, "alerts_test.yml has no case where {name} must stay quiet");
        // each variant of an alert (told apart by its static labels) fires in some case
        assert!(
            fired
                .iter()
                .any(|got| labels.iter().all(|(k, v)| got.get(k) == Some(v))),
            "alerts_test.yml has no case where {name} {labels:?} fires"
        );
    }
}

#[test]
fn compose_runs_every_role_after_migrate_with_a_readyz_healthcheck_on_its_port() {
    let compose = compose();
    let migrate = compose.service("migrate").unwrap();
    assert_eq!(migrate.command, ["migrate"]);
    assert_eq!(
        compose.raw("migrate")["restart"].as_str(),
        Some("no"),
        "migrate is one-shot"
    );
    for (service, command, port, _) in ROLES {
        let s = compose.service(service).unwrap();
        let raw = compose.raw(service);
        assert_eq!(s.command, [*command], "{service}: command");
        assert_eq!(
            s.environment.get("INTAKE_LISTEN_ADDR").map(String::as_str),
            Some(format!("0.0.0.0:{port}").as_str()),
            "{service}: INTAKE_LISTEN_ADDR"
        );
        assert_eq!(
            raw["depends_on"]["migrate"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{service} must wait for migrate"
        );
        let test: Vec<&str> = raw["healthcheck"]["test"]
            .as_vec()
            .unwrap_or_else(|| panic!("{service}: healthcheck.test must be a list"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(
            test,
            [
                "CMD",
                "intake",
                "healthcheck",
                &format!("http://127.0.0.1:{port}/readyz")
            ],
            "{service}: healthcheck on its own /readyz"
        );
        for key in ["INTAKE_AMQP_URL", "INTAKE_QUEUE_PREFIX"] {
            assert!(s.environment.contains_key(key), "{service}: {key} not set");
        }
        // Only the roles that use Postgres get its credentials (the receiver faces the internet).
        assert_eq!(
            s.environment.contains_key("INTAKE_DATABASE_URL"),
            *service != "receiver",
            "{service}: INTAKE_DATABASE_URL"
        );
    }
    let worker = compose.raw("worker");
    assert!(
        worker["container_name"].is_badvalue(),
        "a scaled worker cannot have a container_name"
    );
    assert!(
        worker["ports"].is_badvalue(),
        "a scaled worker cannot publish a host port"
    );
    assert!(
        compose.raw("sync")["profiles"]
            .as_vec()
            .is_some_and(|p| !p.is_empty()),
        "sync stays off until configured (a compose profile)"
    );
    let names = compose.service_names();
    for needed in [
        "rabbitmq",
        "postgres",
        "migrate",
        "receiver",
        "worker",
        "sync",
        "prometheus",
        "grafana",
        "postgres-exporter",
    ] {
        assert!(
            names.iter().any(|n| n == needed),
            "compose has no {needed} service"
        );
    }
    for stateful in ["rabbitmq", "postgres"] {
        assert!(
            !compose.raw(stateful)["healthcheck"]["test"].is_badvalue(),
            "{stateful}: healthcheck"
        );
        assert!(
            compose.raw(stateful)["volumes"].as_vec().is_some(),
            "{stateful}: volume"
        );
    }
}

#[test]
fn prometheus_scrapes_each_role_by_its_compose_name_and_port() {
    let prom = yaml("deploy/prometheus/prometheus.yml");
    let jobs = prom["scrape_configs"].as_vec().expect("scrape_configs");
    for (service, _, port, job) in ROLES {
        let config = jobs
            .iter()
            .find(|j| j["job_name"].as_str() == Some(job))
            .unwrap_or_else(|| panic!("no scrape job {job}"));
        let sd = &config["dns_sd_configs"][0];
        assert_eq!(
            sd["names"][0].as_str(),
            Some(*service),
            "{job}: DNS name must be the compose service"
        );
        assert_eq!(sd["port"].as_i64(), Some(i64::from(*port)), "{job}: port");
    }
    // every job an alert names is scraped
    let job_names: BTreeSet<&str> = jobs.iter().filter_map(|j| j["job_name"].as_str()).collect();
    for (name, expr, labels) in alert_rules() {
        let mut named: Vec<String> = labels.get("job").cloned().into_iter().collect();
        let mut rest = expr.as_str();
        while let Some(i) = rest.find("job=\"") {
            let tail = &rest[i + 5..];
            let end = tail.find('"').unwrap();
            named.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        for job in named {
            assert!(
                job_names.contains(job.as_str()),
                "alert {name} names job {job:?}, which no scrape config has"
            );
        }
    }
}

#[test]
fn the_receiver_gets_every_secret_its_endpoints_file_names() {
    let compose = compose();
    let receiver = compose.service("receiver").unwrap();
    let file = receiver
        .environment
        .get("INTAKE_ENDPOINTS_FILE")
        .expect("INTAKE_ENDPOINTS_FILE");
    let mounts: Vec<&str> = compose.raw("receiver")["volumes"]
        .as_vec()
        .expect("receiver volumes")
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        mounts
            .iter()
            .any(|m| m.starts_with("./deploy/endpoints.toml:") && m.split(':').nth(1) == Some(file)),
        "INTAKE_ENDPOINTS_FILE {file} is not deploy/endpoints.toml mounted: {mounts:?}"
    );
    let specs = intake_receiver::endpoints::parse(&read("deploy/endpoints.toml"))
        .expect("deploy/endpoints.toml parses");
    let endpoints =
        intake_receiver::endpoints::resolve(specs, &|name| receiver.environment.get(name).cloned())
            .unwrap_or_else(|e| {
                panic!("endpoints do not resolve with the receiver's compose environment: {e}")
            });
    let mut providers: Vec<&str> = endpoints.values().map(|e| e.provider.as_str()).collect();
    providers.sort_unstable();
    providers.dedup();
    assert_eq!(
        providers,
        ["healthsherpa", "spark", "spark360", "sparkloop", "standard"],
        "one endpoint per provider"
    );
}

#[test]
fn env_example_defines_every_variable_the_compose_file_reads() {
    let vars = read_env_file(&workspace_root().join(".env.example")).unwrap();
    let text = read("docker-compose.yml");
    let mut missing = BTreeSet::new();
    let mut rest = text.as_str();
    while let Some(i) = rest.find("${") {
        let tail = &rest[i + 2..];
        let len = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        if !vars.contains_key(&tail[..len]) {
            missing.insert(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    assert!(missing.is_empty(), ".env.example lacks {missing:?}");
}

/// Every document of every file under deploy/k8s.
fn k8s_docs() -> Vec<(String, Yaml)> {
    let dir = workspace_root().join("deploy/k8s");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    files.sort();
    for path in files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in YamlLoader::load_from_str(&text).unwrap_or_else(|e| panic!("{name}: {e}")) {
            out.push((name.clone(), doc));
        }
    }
    out
}

#[test]
fn k8s_roles_probe_their_port_use_only_declared_secrets_and_keda_scales_on_every_work_queue() {
    let docs = k8s_docs();
    let find = |kind: &str, name: &str| {
        docs.iter()
            .map(|(_, d)| d)
            .find(|d| d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name))
            .unwrap_or_else(|| panic!("no {kind} {name} in deploy/k8s"))
    };
    let secret_keys: BTreeSet<&str> = find("Secret", "intake-secrets")["stringData"]
        .as_hash()
        .expect("stringData")
        .keys()
        .filter_map(|k| k.as_str())
        .collect();
    let config = find("ConfigMap", "intake-config");
    for (_, command, port, _) in ROLES {
        let deployment = find("Deployment", &format!("intake-{command}"));
        let container = &deployment["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(container["args"][0].as_str(), Some(*command));
        let env = container["env"].as_vec().expect("env");
        let listen = env
            .iter()
            .find(|e| e["name"].as_str() == Some("INTAKE_LISTEN_ADDR"))
            .expect("INTAKE_LISTEN_ADDR");
        assert_eq!(listen["value"].as_str(), Some(format!("0.0.0.0:{port}").as_str()));
        let port_name = container["ports"][0]["name"].as_str().unwrap();
        assert_eq!(
            container["ports"][0]["containerPort"].as_i64(),
            Some(i64::from(*port))
        );
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{command}: {probe}");
            assert_eq!(get["port"].as_str(), Some(port_name), "{command}: {probe} port");
        }
        for e in env {
            if let Some(key) = e["valueFrom"]["secretKeyRef"]["key"].as_str() {
                assert!(
                    secret_keys.contains(key),
                    "{command}: secret key {key} is not in secret.example.yaml"
                );
            }
        }
        assert!(!config["data"]["INTAKE_QUEUE_PREFIX"].is_badvalue());
    }
    // the receiver gets every secret the endpoints ConfigMap names, and it is the compose file's
    let endpoints_toml = find("ConfigMap", "intake-endpoints")["data"]["endpoints.toml"]
        .as_str()
        .unwrap();
    assert_eq!(
        intake_receiver::endpoints::parse(endpoints_toml)
            .map(|s| format!("{s:?}"))
            .unwrap(),
        intake_receiver::endpoints::parse(&read("deploy/endpoints.toml"))
            .map(|s| format!("{s:?}"))
            .unwrap(),
        "the k8s endpoints ConfigMap and deploy/endpoints.toml differ"
    );
    let receiver = &find("Deployment", "intake-receiver")["spec"]["template"]["spec"]["containers"][0];
    let receiver_env: BTreeMap<String, String> = receiver["env"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".to_owned(),
            )
        })
        .collect();
    intake_receiver::endpoints::resolve(intake_receiver::endpoints::parse(endpoints_toml).unwrap(), &|n| {
        receiver_env.get(n).cloned()
    })
    .unwrap_or_else(|e| panic!("the receiver Deployment lacks a secret its endpoints name: {e}"));

    let prefix = config["data"]["INTAKE_QUEUE_PREFIX"].as_str().unwrap();
    let scaled = find("ScaledObject", "intake-worker");
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"].as_str(),
        Some("intake-worker")
    );
    assert!(
        scaled["spec"]["minReplicaCount"].as_i64() >= Some(1),
        "the sweeper needs a worker"
    );
    let queues: BTreeSet<String> = scaled["spec"]["triggers"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["type"].as_str(), Some("rabbitmq"));
            assert_eq!(t["metadata"]["mode"].as_str(), Some("QueueLength"));
            let auth = t["authenticationRef"]["name"].as_str().unwrap();
            let trigger_auth = find("TriggerAuthentication", auth);
            let key = trigger_auth["spec"]["secretTargetRef"][0]["key"]
                .as_str()
                .unwrap();
            assert!(
                secret_keys.contains(key),
                "KEDA reads secret key {key}, not in secret.example.yaml"
            );
            t["metadata"]["queueName"].as_str().unwrap().to_owned()
        })
        .collect();
    let expected: BTreeSet<String> = intake_core::Provider::ALL
        .iter()
        .map(|p| format!("{prefix}.q.{}", p.as_str()))
        .collect();
    assert_eq!(queues, expected, "KEDA must scale on every provider work queue");
}
