//! Turns `deploy/prometheus/prometheus.yml` into a config for a Prometheus a test runs on this
//! machine: the same jobs, scrape paths, params and rule files, with each job's targets (compose
//! DNS names) replaced by local addresses the test gives, and a short scrape interval.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow, bail};
use yaml_rust2::{Yaml, YamlEmitter, YamlLoader, yaml::Hash};

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
