//! A real Prometheus for tests: [`local_config`] turns `deploy/prometheus/prometheus.yml` into a
//! config for this machine (the same jobs, scrape paths, params and rule files, with each job's
//! targets — compose DNS names — replaced by local addresses, and a short scrape interval);
//! [`Prometheus`] runs Debian's `prometheus` binary with it and asks its HTTP API; and the
//! dashboard's panel queries and the alert rules are read from the deploy files as Grafana and
//! Prometheus read them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use serde_json::Value;
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader, yaml::Hash};

use crate::process::Process;
use crate::{unique_name, wait_until};

fn key(s: &str) -> Yaml {
    Yaml::String(s.to_owned())
}

/// The deploy config with `targets[job]` as each job's static targets. Every job of the deploy
/// file must be given (an empty list leaves it without targets, as `sync` is without its profile);
/// a job the file lacks is an error, so a renamed job fails the test. `rules_dir` is where the
/// rule files named by the config are (they are made absolute).
pub fn local_config(
    deploy_config: &Path,
    rules_dir: &Path,
    targets: &BTreeMap<&str, Vec<String>>,
    scrape_interval: &str,
) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(deploy_config)
        .with_context(|| format!("reading {}", deploy_config.display()))?;
    let mut doc = YamlLoader::load_from_str(&text)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("empty config"))?;
    let Yaml::Hash(root) = &mut doc else {
        bail!("config is not a mapping")
    };

    if let Some(Yaml::Hash(global)) = root.get_mut(&key("global")) {
        global.insert(key("scrape_interval"), key(scrape_interval));
        global.insert(key("evaluation_interval"), key(scrape_interval));
        global.insert(key("scrape_timeout"), key(scrape_interval));
    }
    if let Some(Yaml::Array(files)) = root.get_mut(&key("rule_files")) {
        for f in files.iter_mut() {
            if let Yaml::String(name) = f {
                *name = rules_dir.join(&*name).to_string_lossy().into_owned();
            }
        }
    }
    let Some(Yaml::Array(jobs)) = root.get_mut(&key("scrape_configs")) else {
        bail!("no scrape_configs")
    };
    let mut seen = Vec::new();
    for job in jobs.iter_mut() {
        let Yaml::Hash(job) = job else {
            bail!("scrape config is not a mapping")
        };
        let name = job
            .get(&key("job_name"))
            .and_then(Yaml::as_str)
            .ok_or_else(|| anyhow!("job without job_name"))?
            .to_owned();
        let local = targets
            .get(name.as_str())
            .ok_or_else(|| anyhow!("no local targets given for job {name}"))?;
        job.remove(&key("dns_sd_configs"));
        let mut group = Hash::new();
        group.insert(
            key("targets"),
            Yaml::Array(local.iter().map(|t| key(t)).collect()),
        );
        job.insert(key("static_configs"), Yaml::Array(vec![Yaml::Hash(group)]));
        seen.push(name);
    }
    for job in targets.keys() {
        if !seen.iter().any(|s| s == job) {
            bail!("deploy config has no job {job}");
        }
    }
    let mut out = String::new();
    YamlEmitter::new(&mut out).dump(&doc)?;
    Ok(out)
}

/// One query of one dashboard panel.
#[derive(Debug, Clone)]
pub struct PanelQuery {
    /// The panel's title.
    pub panel: String,
    /// The query's `refId` within the panel.
    pub ref_id: String,
    /// The PromQL, with Grafana's variables as written.
    pub expr: String,
}

/// Every query of every panel (rows' nested panels included) of a Grafana dashboard file.
pub fn dashboard_queries(path: &Path) -> anyhow::Result<Vec<PanelQuery>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let dashboard: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    fn walk(panels: &[Value], out: &mut Vec<PanelQuery>) {
        for panel in panels {
            let title = panel["title"].as_str().unwrap_or("?");
            for target in panel["targets"].as_array().into_iter().flatten() {
                out.push(PanelQuery {
                    panel: title.to_owned(),
                    ref_id: target["refId"].as_str().unwrap_or("?").to_owned(),
                    expr: target["expr"].as_str().unwrap_or("").to_owned(),
                });
            }
            walk(panel["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]), out);
        }
    }
    let mut out = Vec::new();
    walk(
        dashboard["panels"].as_array().map(Vec::as_slice).unwrap_or(&[]),
        &mut out,
    );
    Ok(out)
}

/// One alerting rule of a rule file.
#[derive(Debug, Clone)]
pub struct AlertRule {
    /// `alert:` — several rules (variants) may share it.
    pub name: String,
    /// The PromQL expression.
    pub expr: String,
    /// Its static labels (`severity`, `cause`, …).
    pub labels: BTreeMap<String, String>,
}

impl AlertRule {
    /// `Name{label="value",…}`: how failure messages name the variant.
    pub fn variant(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .filter(|(k, _)| k.as_str() != "severity")
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect();
        format!("{}{{{}}}", self.name, labels.join(","))
    }
}

/// Every alerting rule of a Prometheus rule file, in file order.
pub fn alert_rules(path: &Path) -> anyhow::Result<Vec<AlertRule>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let doc = YamlLoader::load_from_str(&text)?
        .into_iter()
        .next()
        .ok_or_else(|| anyhow!("{}: empty", path.display()))?;
    let mut out = Vec::new();
    for group in doc["groups"].as_vec().ok_or_else(|| anyhow!("no groups"))? {
        for rule in group["rules"]
            .as_vec()
            .ok_or_else(|| anyhow!("group without rules"))?
        {
            let Some(name) = rule["alert"].as_str() else {
                continue;
            };
            let expr = rule["expr"].as_str().ok_or_else(|| anyhow!("{name}: no expr"))?;
            let labels = rule["labels"]
                .as_hash()
                .map(|h| {
                    h.iter()
                        .filter_map(|(k, v)| Some((k.as_str()?.to_owned(), v.as_str()?.to_owned())))
                        .collect()
                })
                .unwrap_or_default();
            out.push(AlertRule {
                name: name.to_owned(),
                expr: expr.to_owned(),
                labels,
            });
        }
    }
    Ok(out)
}

/// A Prometheus server started by a test (Debian's `prometheus` binary), killed and its data
/// directory removed when dropped.
#[derive(Debug)]
pub struct Prometheus {
    process: Process,
    addr: SocketAddr,
    dir: PathBuf,
    http: reqwest::Client,
}

impl Prometheus {
    /// Starts `prometheus` listening on `addr` with `config` (YAML text, e.g. from
    /// [`local_config`]) and waits until it is ready.
    pub async fn start(config: &str, addr: SocketAddr) -> anyhow::Result<Prometheus> {
        let dir = std::env::temp_dir().join(unique_name("prometheus"));
        std::fs::create_dir_all(dir.join("data"))?;
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, config)?;
        let mut command = Command::new("prometheus");
        command.args([
            format!("--config.file={}", config_path.display()),
            format!("--storage.tsdb.path={}", dir.join("data").display()),
            format!("--web.listen-address={addr}"),
            "--log.level=warn".to_owned(),
        ]);
        let mut process = Process::spawn("prometheus", command)
            .context("no `prometheus` binary? Install Debian's prometheus package (.ci/run does)")?;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()?;
        let ready_url = format!("http://{addr}/-/ready");
        let ready = wait_until(Duration::from_secs(30), || {
            let request = http.get(&ready_url).send();
            async move { request.await.is_ok_and(|r| r.status().is_success()) }
        })
        .await;
        if !ready {
            let exited = process.exited();
            let log = process.log();
            let _ = std::fs::remove_dir_all(&dir);
            bail!("Prometheus not ready (exit status {exited:?}); its log:\n{log}");
        }
        Ok(Prometheus {
            process,
            addr,
            dir,
            http,
        })
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// `GET /api/v1/{path}` with `params`; the `data` of a `success` answer, else the error
    /// Prometheus gave.
    pub async fn api(&self, path: &str, params: &[(&str, String)]) -> anyhow::Result<Value> {
        let answer: Value = self
            .http
            .get(format!("http://{}/api/v1/{path}", self.addr))
            .query(params)
            .send()
            .await?
            .json()
            .await?;
        if answer["status"] != "success" {
            bail!(
                "{}: {}",
                answer["errorType"].as_str().unwrap_or("error"),
                answer["error"].as_str().unwrap_or("(no message)")
            );
        }
        Ok(answer["data"].clone())
    }

    /// An instant query now: the result's series.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let data = self.api("query", &[("query", expr.to_owned())]).await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }

    /// A range query (what a Grafana panel runs): the result's series, each with its `values`.
    pub async fn query_range(
        &self,
        expr: &str,
        start: f64,
        end: f64,
        step: Duration,
    ) -> anyhow::Result<Vec<Value>> {
        let data = self
            .api(
                "query_range",
                &[
                    ("query", expr.to_owned()),
                    ("start", format!("{start:.3}")),
                    ("end", format!("{end:.3}")),
                    ("step", format!("{}ms", step.as_millis())),
                ],
            )
            .await?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        // The process is killed by its own drop; the data directory goes with it.
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compose::workspace_root;

    #[test]
    fn every_job_gets_the_local_targets_and_rule_files_become_absolute() {
        let root = workspace_root();
        let targets: BTreeMap<&str, Vec<String>> = [
            ("intake-receiver", vec!["127.0.0.1:1".to_owned()]),
            (
                "intake-worker",
                vec!["127.0.0.1:2".to_owned(), "127.0.0.1:3".to_owned()],
            ),
            ("intake-sync", vec![]),
            ("rabbitmq", vec!["127.0.0.1:15692".to_owned()]),
            ("rabbitmq-queues", vec!["127.0.0.1:15692".to_owned()]),
            ("postgres", vec!["127.0.0.1:9187".to_owned()]),
            ("prometheus", vec!["127.0.0.1:9090".to_owned()]),
        ]
        .into_iter()
        .collect();
        let rules = root.join("deploy/prometheus");
        let out = local_config(
            &root.join("deploy/prometheus/prometheus.yml"),
            &rules,
            &targets,
            "1s",
        )
        .unwrap();
        let doc = &YamlLoader::load_from_str(&out).unwrap()[0];
        assert_eq!(doc["global"]["scrape_interval"].as_str(), Some("1s"));
        assert_eq!(
            doc["rule_files"][0].as_str(),
            Some(rules.join("alerts.yml").to_str().unwrap())
        );
        let jobs = doc["scrape_configs"].as_vec().unwrap();
        let worker = jobs
            .iter()
            .find(|j| j["job_name"].as_str() == Some("intake-worker"))
            .unwrap();
        assert!(worker["dns_sd_configs"].is_badvalue());
        assert_eq!(
            worker["static_configs"][0]["targets"][1].as_str(),
            Some("127.0.0.1:3")
        );
        let queues = jobs
            .iter()
            .find(|j| j["job_name"].as_str() == Some("rabbitmq-queues"))
            .unwrap();
        assert_eq!(
            queues["metrics_path"].as_str(),
            Some("/metrics/detailed"),
            "paths and params are kept"
        );

        let mut missing = targets.clone();
        missing.remove("postgres");
        assert!(
            local_config(
                &root.join("deploy/prometheus/prometheus.yml"),
                &rules,
                &missing,
                "1s"
            )
            .is_err()
        );
    }
}
