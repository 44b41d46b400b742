//! `worker-bench`: events applied per second end to end from a pre-filled queue of a realistic
//! provider mix, with 1 and with 2 worker processes, against the raw limit of this Postgres for the
//! same transactions (`Store::apply` in a tight loop, no broker) at the same concurrency.
//! Prints a Markdown section for BENCHMARKS.md. Needs `psql` (creates a database per phase) and
//! the release `intake` binary next to this one (run as `intake worker`):
//!
//! ```text
//! cargo build --release -p intake -p intake-worker && target/release/worker-bench
//! ```
//! Settings: `BENCH_GROUPS` (default 2000; 13 events each), `BENCH_CONCURRENCY` (default 32).
#![forbid(unsafe_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use intake_broker::{Publisher, PublisherConfig, Topology};
use intake_core::{Envelope, Provider};
use intake_providers::{DecodedEvent, fixtures};
use intake_store::{ApplyOptions, Store, StoreConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// The same allocator as the worker, so the raw loop is not handicapped.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const AMQP_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const PG: &str = "postgres://postgres@127.0.0.1:5432";
/// PHI keys of the bench's own throwaway databases (dropped after each phase); never real data.
const BENCH_ENCRYPTION_KEYS: &str = "bench:YmVuY2gtb25seS1lbmNyeXB0aW9uLWtleS0zMmJ5dGU=";
const BENCH_HMAC_KEY: &str = "YmVuY2gtb25seS1obWFjLWtleS1vZi0zMi1ieXRlcyE=";

/// One group of the mix: 4 Spark contact snapshots (plus one provider retry of the first),
/// a SparkLoop referral pending then verified, a Spark360 lead's four events in document order,
/// and two HealthSherpa status events of one policy: 13 deliveries.
fn group(g: usize) -> Vec<(Provider, String)> {
    let mut out = Vec::with_capacity(13);
    for c in 0..4 {
        let id = g * 4 + c + 1;
        out.push((
            Provider::Spark,
            fixtures::SPARK_CONTACT.replacen("\"id\": 1234,", &format!("\"id\": {id},"), 1),
        ));
    }
    out.push(out[0].clone());
    for body in [
        fixtures::SPARKLOOP_PARTNER_PENDING,
        fixtures::SPARKLOOP_PARTNER_VERIFIED,
    ] {
        out.push((
            Provider::SparkLoop,
            body.replace("sub_042448acb02a", &format!("sub_bench_{g}")),
        ));
    }
    for body in [
        fixtures::SPARK360_ADDRESS_PREVIEW,
        fixtures::SPARK360_ENRICHED,
        fixtures::SPARK360_RENTAL_ALERT,
        fixtures::SPARK360_CONTACT_REQUESTED,
    ] {
        let body = body
            .replace("lead_7f3a9c", &format!("lead_b{g}"))
            .replace("evt_01HX", &format!("evt_b{g}_"));
        out.push((Provider::Spark360, body));
    }
    for (n, (status, at)) in [
        ("pending_effectuation", "2026-01-01T00:00:00Z"),
        ("effectuated", "2026-02-01T00:00:00Z"),
    ]
    .iter()
    .enumerate()
    {
        let body = fixtures::HEALTHSHERPA_OFF_EXCHANGE
            .replace("txn_7c1d2e3f", &format!("txn_b{g}_{n}"))
            .replace("pol_9001", &format!("pol_b{g}"))
            .replace("app_5512", &format!("app_b{g}"))
            .replace("\"effectuated\"", &format!("\"{status}\""))
            .replace("2026-02-03T14:05:06Z", at);
        out.push((Provider::HealthSherpa, body));
    }
    out
}

fn envelopes(groups: usize) -> Vec<Envelope> {
    (0..groups)
        .flat_map(group)
        .map(|(p, body)| Envelope::new("bench", p, vec![], Bytes::from(body)))
        .collect()
}

fn psql(sql: &str) -> anyhow::Result<()> {
    let status = Command::new("psql")
        .args([
            "-q",
            "-h",
            "127.0.0.1",
            "-U",
            "postgres",
            "-d",
            "postgres",
            "-c",
            sql,
        ])
        .env("PGOPTIONS", "--client-min-messages=warning")
        .stdout(Stdio::null())
        .status()
        .context("running psql")?;
    if !status.success() {
        bail!("psql failed: {sql}");
    }
    Ok(())
}

fn fresh_database(tag: &str) -> anyhow::Result<String> {
    let name = format!("bench_{tag}_{}", std::process::id());
    psql(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))?;
    psql(&format!("CREATE DATABASE {name}"))?;
    Ok(name)
}

async fn store(db: &str, connections: usize) -> anyhow::Result<Store> {
    let keys = intake_store::KeySettings::new(BENCH_ENCRYPTION_KEYS, BENCH_HMAC_KEY).keyring()?;
    let store = Store::new(&StoreConfig::new(
        format!("{PG}/{db}"),
        keys,
        connections,
        Duration::from_secs(10),
    ))?;
    store.migrate().await?;
    Ok(store)
}

/// The same transactions straight from `concurrency` tight loops: events per second.
async fn raw(envelopes: &[Envelope], concurrency: usize) -> anyhow::Result<f64> {
    let db = fresh_database(&format!("raw{concurrency}"))?;
    let store = store(&db, concurrency).await?;
    let work: Arc<Vec<(Envelope, DecodedEvent)>> = Arc::new(
        envelopes
            .iter()
            .flat_map(|e| {
                intake_providers::decode(e)
                    .expect("mix decodes")
                    .into_iter()
                    .map(|d| (e.clone(), d))
            })
            .collect(),
    );
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let cpu_before = cpu_split(&|_, name| name.starts_with("worker-bench"));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (store, work, next) = (store.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((envelope, event)) = work.get(i) else {
                    return Ok::<_, anyhow::Error>(());
                };
                store.apply(envelope, event, ApplyOptions::default()).await?;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    let rate = work.len() as f64 / started.elapsed().as_secs_f64();
    eprintln!(
        "  CPU per 1000 events: {}",
        share(
            cpu_before,
            cpu_split(&|_, name| name.starts_with("worker-bench")),
            work.len() as f64
        )
    );
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"))?;
    Ok(rate)
}

async fn scrape(port: u16) -> String {
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return String::new();
    };
    if stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: bench\r\n\r\n")
        .await
        .is_err()
    {
        return String::new();
    }
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text).await;
    text
}

/// Deliveries finished (every outcome that ends a delivery; `released` and `retried` do not).
async fn finished(ports: &[u16]) -> f64 {
    let mut total = 0.0;
    for port in ports {
        for line in scrape(*port).await.lines() {
            let done = ["applied", "duplicate", "parked", "stale", "dead_lettered"]
                .iter()
                .any(|o| line.contains(&format!("outcome=\"{o}\"")));
            if line.starts_with("intake_worker_events_total") && done {
                total += line
                    .rsplit(' ')
                    .next()
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0);
            }
        }
    }
    total
}

/// CPU seconds (user + system) used so far by every process whose name starts with `prefix`.
fn cpu_seconds(select: &dyn Fn(u32, &str) -> bool) -> f64 {
    let tick = 100.0; // USER_HZ on Linux
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            Some((pid, std::fs::read_to_string(e.path().join("stat")).ok()?))
        })
        .filter_map(|(pid, stat)| {
            let (open, close) = (stat.find('(')?, stat.rfind(')')?);
            if !select(pid, &stat[open + 1..close]) {
                return None;
            }
            let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
            let ticks = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / tick)
        })
        .sum()
}

/// CPU seconds of the parts: (postgres, rabbitmq, the client `client` picks by pid and name).
fn cpu_split(client: &dyn Fn(u32, &str) -> bool) -> [f64; 3] {
    [
        cpu_seconds(&|_, name| name.starts_with("postgres")),
        cpu_seconds(&|_, name| name.starts_with("beam.smp")),
        cpu_seconds(client),
    ]
}

fn share(before: [f64; 3], after: [f64; 3], events: f64) -> String {
    let per_k = |i: usize| (after[i] - before[i]) / events * 1000.0;
    format!(
        "Postgres {:.2} s, RabbitMQ {:.2} s, client {:.2} s",
        per_k(0),
        per_k(1),
        per_k(2)
    )
}

fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: f64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kb / 1024.0)
}

/// Pre-fills the queues, starts `workers` processes, and times them draining it.
async fn through_workers(
    envelopes: &[Envelope],
    workers: usize,
    concurrency: usize,
) -> anyhow::Result<(f64, Vec<f64>)> {
    let db = fresh_database(&format!("w{workers}"))?;
    drop(store(&db, 1).await?); // migrate before timing
    let prefix = format!("bench-{}-{workers}", std::process::id());
    let publisher = Publisher::start(PublisherConfig {
        amqp_url: AMQP_URL.into(),
        topology: Topology::with_default_tiers(prefix.clone()),
        channels: 4,
        confirm_timeout: Duration::from_secs(10),
        role: "bench",
    });
    if !publisher.wait_connected(Duration::from_secs(10)).await {
        bail!("RabbitMQ unreachable");
    }
    let shared = Arc::new(envelopes.to_vec());
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let (publisher, shared, next) = (publisher.clone(), shared.clone(), next.clone());
        tasks.spawn(async move {
            while let Some(e) = shared.get(next.fetch_add(1, Ordering::Relaxed)) {
                publisher.publish_envelope(e).await?;
            }
            Ok::<_, intake_broker::BrokerError>(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    publisher.close().await;

    let exe = std::env::current_exe()?.with_file_name("intake");
    anyhow::ensure!(
        exe.exists(),
        "build the intake binary first: cargo build --release -p intake"
    );
    let ports: Vec<u16> = (0..workers).map(|i| 19_500 + i as u16).collect();
    let mut children: Vec<Child> = Vec::new();
    for port in &ports {
        children.push(
            Command::new(&exe)
                .arg("worker")
                .env("INTAKE_LISTEN_ADDR", format!("127.0.0.1:{port}"))
                .env("INTAKE_DATABASE_URL", format!("{PG}/{db}"))
                .env("INTAKE_ENCRYPTION_KEYS", BENCH_ENCRYPTION_KEYS)
                .env("INTAKE_HMAC_KEY", BENCH_HMAC_KEY)
                .env("INTAKE_QUEUE_PREFIX", &prefix)
                .env("INTAKE_CONCURRENCY", concurrency.to_string())
                .env("INTAKE_DB_POOL_SIZE", (concurrency + 4).to_string())
                .env("RUST_LOG", "error")
                .stdout(Stdio::null())
                .spawn()
                .with_context(|| format!("starting {}", exe.display()))?,
        );
    }
    // Only these processes count as the client: other `intake` processes may run on the machine.
    let pids: Vec<u32> = children.iter().map(Child::id).collect();
    let workers_only = |pid: u32, _: &str| pids.contains(&pid);
    let total = envelopes.len() as f64;
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut first: Option<Instant> = None;
    let mut cpu_before = cpu_split(&workers_only);
    loop {
        let done = finished(&ports).await;
        if done > 0.0 && first.is_none() {
            first = Some(Instant::now());
            cpu_before = cpu_split(&workers_only);
        }
        if done >= total {
            break;
        }
        if Instant::now() > deadline {
            bail!("workers did not finish: {done} of {total}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = first
        .map(|t| t.elapsed())
        .unwrap_or_default()
        .as_secs_f64()
        .max(0.001);
    eprintln!(
        "  CPU per 1000 events: {}",
        share(cpu_before, cpu_split(&workers_only), total)
    );
    let rss: Vec<f64> = children.iter().filter_map(|c| peak_rss_mib(c.id())).collect();
    for child in &mut children {
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let _ = child.wait();
    }
    psql(&format!("DROP DATABASE {db} WITH (FORCE)"))?;
    intake_broker::admin::delete_topology(AMQP_URL, &Topology::with_default_tiers(prefix)).await?;
    Ok((total / elapsed, rss))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let groups: usize = std::env::var("BENCH_GROUPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let envelopes = envelopes(groups);
    eprintln!(
        "{} deliveries per phase, concurrency {concurrency}",
        envelopes.len()
    );
    // `BENCH_PHASES` (default `raw,1,2`) runs a subset, e.g. `1` while profiling one worker.
    // Phases alternate over `BENCH_ROUNDS` rounds and medians are reported, so a burst of other
    // load on the machine skews one sample, not the result.
    let phases = std::env::var("BENCH_PHASES").unwrap_or_else(|_| "raw,1,2".into());
    let rounds: usize = std::env::var("BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3);
    let run = |p: &str| phases.split(',').any(|x| x.trim() == p);
    let (mut raws, mut raws2, mut ones, mut twos) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut rss_one, mut rss_two) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        if run("raw") {
            raws.push(raw(&envelopes, concurrency).await?);
            raws2.push(raw(&envelopes, 2 * concurrency).await?);
            eprintln!(
                "round {round}: raw x{concurrency} {:.0}/s, raw x{} {:.0}/s",
                raws[raws.len() - 1],
                2 * concurrency,
                raws2[raws2.len() - 1]
            );
        }
        if run("1") {
            let (rate, rss) = through_workers(&envelopes, 1, concurrency).await?;
            ones.push(rate);
            rss_one = rss;
            eprintln!("round {round}: 1 worker {rate:.0}/s");
        }
        if run("2") {
            let (rate, rss) = through_workers(&envelopes, 2, concurrency).await?;
            twos.push(rate);
            rss_two = rss;
            eprintln!("round {round}: 2 workers {rate:.0}/s");
        }
    }
    let median = |v: &mut Vec<f64>| {
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (raw_c, raw_2c, one, two) = (
        median(&mut raws),
        median(&mut raws2),
        median(&mut ones),
        median(&mut twos),
    );
    let mib = |v: &[f64]| {
        v.iter()
            .map(|m| format!("{m:.1} MiB"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "## Ingest worker — {}",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!();
    println!(
        "{} deliveries per phase, median of {rounds} alternating rounds ({groups} groups of: 4 Spark contact snapshots + 1 provider retry of one, SparkLoop \
         pending + verified, a Spark360 lead's 4 events, 2 HealthSherpa status events), pre-filled queues, \
         release build, concurrency {concurrency} per worker, Postgres and RabbitMQ on the same 2-core machine.",
        envelopes.len()
    );
    println!();
    println!("| measure | events/s | ratio to raw |");
    println!("|---|---|---|");
    println!("| raw: `Store::apply` in {concurrency} tight loops, no broker | {raw_c:.0} | 1.00 |");
    println!("| raw: {} tight loops | {raw_2c:.0} | — |", 2 * concurrency);
    println!(
        "| 1 worker process, end to end from the queue | {one:.0} | {:.2} |",
        one / raw_c
    );
    println!(
        "| 2 worker processes | {two:.0} | {:.2} (vs raw x{}: {:.2}) |",
        two / raw_c,
        2 * concurrency,
        two / raw_2c
    );
    println!(
        "| peak RSS per worker (VmHWM) | 1 worker: {}; 2 workers: {} | — |",
        mib(&rss_one),
        mib(&rss_two)
    );
    println!();
    println!("Target: ≥ 0.7 of the raw limit.");
    Ok(())
}
