//! `soak`: the chaos soak. Runs one `intake receiver` and several `intake worker`s as real
//! processes against a fresh database and queue prefix, each reaching RabbitMQ and Postgres
//! through a TCP proxy; sends a bounded stream of webhooks of all four providers (each sent 1–3
//! times, related events shuffled) as providers do, while a fault schedule cuts and stalls the
//! broker and the database, kills a worker with `kill -9` and restarts the receiver with SIGTERM;
//! waits until the pipeline is quiet; then accounts for every webhook from Postgres against the
//! generator's expected final state. Prints the figures, appends them to RELIABILITY.md (not with
//! `--ci`), and exits 1 when anything was lost, applied twice or out of order.
//!
//! ```text
//! cargo build --release -p intake -p intake-bench && target/release/soak --webhooks 100000
//! ```
//! `soak --help` lists the settings. The broker restart is opt-in (`--restart-broker`): it runs
//! `rabbitmqctl stop_app`/`start_app`, which disturbs everything else using that RabbitMQ.
#![forbid(unsafe_code)]

mod cluster;
mod faults;
mod generate;
mod report;
mod sender;
mod verify;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use intake_broker::Topology;
use intake_it::TcpProxy;
use rand::SeedableRng;
use tokio::sync::Mutex;
use tokio_postgres::{Client, NoTls};

use crate::cluster::Cluster;
use crate::sender::{Secrets, Sender};

const RABBITMQ: &str = "127.0.0.1:5672";
const POSTGRES: &str = "127.0.0.1:5432";
/// Retry tiers of the run: short, so a retried event comes back within the run, long enough in
/// sum (~2 min) that no outage of the schedule exhausts them.
const RETRY_TIERS: &str = "1s,2s,5s,10s,30s,60s";

/// The chaos soak: real processes, faults during traffic, exact accounting from Postgres.
#[derive(Debug, Parser)]
#[command(name = "soak")]
struct Args {
    /// Logical webhooks to generate (each sent 1–3 times).
    #[arg(long, default_value_t = 100_000)]
    webhooks: usize,
    /// Ingest worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// New deliveries per second (retries come on top). Default: 150 with `--ci`, else 600.
    #[arg(long)]
    rate: Option<f64>,
    /// Stories sent at once (a story's deliveries go one after another).
    #[arg(long, default_value_t = 48)]
    concurrency: usize,
    /// Seed of the traffic generator (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// CI run: do not append to the report file, shorter parking limit.
    #[arg(long)]
    ci: bool,
    /// Also restart RabbitMQ (`rabbitmqctl stop_app`/`start_app`) mid-load. Off by default:
    /// every other user of this RabbitMQ (other test runs) is disturbed too.
    #[arg(long)]
    restart_broker: bool,
    /// How long each cut or stall lasts (seconds).
    #[arg(long, default_value_t = 5)]
    outage_secs: u64,
    /// Parking limit of the workers (seconds): orphaned lead events wait this long, then are
    /// dead-lettered `ordering_timeout`. Default: 45 with `--ci`, else 60.
    #[arg(long)]
    park_limit_secs: Option<u64>,
    /// Longest wait for the pipeline to become quiet after the last delivery (seconds).
    #[arg(long, default_value_t = 900)]
    drain_timeout_secs: u64,
    /// The file the run's section is appended to.
    #[arg(long, default_value = "RELIABILITY.md")]
    out: PathBuf,
    /// The `intake` binary (default: next to this one).
    #[arg(long)]
    intake: Option<PathBuf>,
    /// Keep the database, queues and logs afterwards (they are kept anyway when a check fails,
    /// except the queues, which expire).
    #[arg(long)]
    keep: bool,
}

async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .with_context(|| format!("connecting to Postgres at {POSTGRES}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn endpoints_toml() -> String {
    r#"
[[endpoints]]
name = "spark"
provider = "spark"
auth = [
  { kind = "path_token", secret_env = "SOAK_SPARK_TOKEN" },
  { kind = "basic", username = "spark", password_env = "SOAK_SPARK_PASSWORD" },
]

[[endpoints]]
name = "sparkloop"
provider = "sparkloop"
auth = [{ kind = "header_token", header = "SparkLoop-Token", secret_env = "SOAK_SPARKLOOP_TOKEN" }]

[[endpoints]]
name = "spark360"
provider = "spark360"
auth = [{ kind = "hmac_sha256", header = "X-Spark360-Signature", secret_env = "SOAK_SPARK360_KEY", encoding = "hex" }]

[[endpoints]]
name = "healthsherpa"
provider = "healthsherpa"
auth = [{ kind = "bearer", secret_env = "SOAK_HEALTHSHERPA_TOKEN" }]
"#
    .to_owned()
}

fn pairs(list: &[(&str, String)]) -> Vec<(String, String)> {
    list.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect()
}

/// Waits until nothing moves: every queue of the prefix empty, no worker holding a delivery, no
/// parked event, and Postgres unchanged for `quiet` — or the deadline passes (returns false).
async fn drain(
    db: &Client,
    cluster: &Mutex<Cluster>,
    topology: &Topology,
    quiet: Duration,
    deadline: Duration,
) -> anyhow::Result<bool> {
    let until = Instant::now() + deadline;
    let mut last = None;
    let mut still_since = Instant::now();
    let mut reported = Instant::now();
    while Instant::now() < until {
        // Every probe bounded: a probe that hangs counts as "still moving", never as quiet.
        let probe = Duration::from_secs(5);
        let queues = topology.all_queues();
        let ready: u32 = tokio::time::timeout(
            probe,
            intake_broker::admin::queue_stats(intake_it::AMQP_URL, &queues),
        )
        .await
        .ok()
        .and_then(Result::ok)
        .map_or(u32::MAX, |s| s.iter().map(|q| q.ready).sum());
        let held = tokio::time::timeout(probe, async { cluster.lock().await.worker_backlog().await })
            .await
            .ok()
            .flatten()
            .unwrap_or(f64::MAX);
        let counts = db.query_one(
            "SELECT (SELECT count(*) FROM inbox), (SELECT coalesce(sum(duplicates), 0) FROM inbox),
                    (SELECT count(*) FROM dead_letters), (SELECT count(*) FROM parked_events),
                    (SELECT count(*) FROM raw_events)",
            &[],
        );
        let Ok(row) = tokio::time::timeout(probe, counts).await else {
            eprintln!("  draining: the Postgres probe timed out");
            continue;
        };
        let row = row?;
        let state: (i64, i64, i64, i64, i64) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        if last != Some(state) || ready > 0 || held > 0.0 || state.3 > 0 {
            last = Some(state);
            still_since = Instant::now();
        }
        if still_since.elapsed() >= quiet {
            return Ok(true);
        }
        if reported.elapsed() > Duration::from_secs(10) {
            reported = Instant::now();
            let ready = if ready == u32::MAX {
                "? (probe failed)".to_owned()
            } else {
                ready.to_string()
            };
            let held = if held == f64::MAX {
                "? (probe failed)".to_owned()
            } else {
                held.to_string()
            };
            eprintln!(
                "  draining: {ready} ready in queues, {held} held by workers, inbox {} (+{} duplicates), {} dead letters, {} parked",
                state.0, state.1, state.2, state.3
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok(false)
}

#[tokio::main]
async fn main() -> anyhow::Result<std::process::ExitCode> {
    let args = Args::parse();
    let rate = args.rate.unwrap_or(if args.ci { 150.0 } else { 600.0 });
    let park_limit = args.park_limit_secs.unwrap_or(if args.ci { 45 } else { 60 });
    let intake = match &args.intake {
        Some(p) => p.clone(),
        None => std::env::current_exe()?.with_file_name("intake"),
    };
    if !intake.exists() {
        bail!(
            "{} not found: build it first (cargo build [--release] -p intake -p intake-bench)",
            intake.display()
        );
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1)
    });
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let traffic = Arc::new(generate::traffic(args.webhooks, &mut rng));
    let total = traffic.deliveries();
    eprintln!(
        "soak: {} webhooks, {total} deliveries in {} stories, seed {seed}, {} workers, {rate}/s",
        traffic.webhooks.len(),
        traffic.stories.len(),
        args.workers
    );

    // A database and a queue prefix of its own.
    let tag = format!(
        "{}-{}",
        std::process::id(),
        chrono::Utc::now().format("%Y%m%d%H%M%S")
    );
    let db_name = format!("soak_{}", tag.replace('-', "_"));
    let admin = connect(&format!("postgres://postgres@{POSTGRES}/postgres")).await?;
    admin
        .batch_execute(&format!("CREATE DATABASE \"{db_name}\""))
        .await?;
    let prefix = format!("soak-{tag}");
    let tiers = intake_broker::topology::parse_retry_tiers(RETRY_TIERS).map_err(anyhow::Error::msg)?;
    let topology = Topology::new(prefix.clone(), tiers);
    let logs = std::env::temp_dir().join(format!("soak-{tag}"));
    std::fs::create_dir_all(&logs)?;

    let plan = Plan {
        rate,
        park_limit,
        seed,
        intake,
    };
    let outcome = run(&args, &plan, traffic, &db_name, &prefix, &topology, &logs).await;

    let passed = matches!(&outcome, Ok(true));
    if args.keep || !passed {
        eprintln!(
            "kept: database {db_name}, logs in {} (queues under {prefix} expire after an hour unused)",
            logs.display()
        );
    } else {
        let _ = admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS \"{db_name}\" WITH (FORCE)"))
            .await;
        let _ = std::fs::remove_dir_all(&logs);
    }
    if !args.keep {
        let _ = intake_broker::admin::delete_topology(intake_it::AMQP_URL, &topology).await;
    }
    match outcome {
        Ok(true) => Ok(std::process::ExitCode::SUCCESS),
        Ok(false) => Ok(std::process::ExitCode::FAILURE),
        Err(e) => Err(e),
    }
}

/// Settings resolved from the arguments.
#[derive(Debug)]
struct Plan {
    rate: f64,
    park_limit: u64,
    seed: u64,
    intake: PathBuf,
}

/// The run itself; `Ok(passed)`.
async fn run(
    args: &Args,
    plan: &Plan,
    traffic: Arc<generate::Traffic>,
    db_name: &str,
    prefix: &str,
    topology: &Topology,
    logs: &std::path::Path,
) -> anyhow::Result<bool> {
    let (rate, park_limit, seed, intake) = (plan.rate, plan.park_limit, plan.seed, plan.intake.as_path());
    let total = traffic.deliveries();
    let broker = TcpProxy::start(RABBITMQ.parse::<SocketAddr>()?).await?;
    let database = TcpProxy::start(POSTGRES.parse::<SocketAddr>()?).await?;
    let secrets = Secrets::random();
    let direct_db = format!("postgres://postgres@{POSTGRES}/{db_name}");
    let mut common = pairs(&[
        ("INTAKE_QUEUE_PREFIX", prefix.to_owned()),
        ("INTAKE_RETRY_TIERS", RETRY_TIERS.to_owned()),
        // Queues unused for an hour go (an aborted run leaves nothing for long); not shorter: a
        // delay queue has no consumer, and one that expired mid-run would make retries unroutable.
        ("INTAKE_QUEUE_EXPIRES_SECS", "3600".to_owned()),
        ("RUST_LOG", "info".to_owned()),
        (
            "INTAKE_ENCRYPTION_KEYS",
            intake_it::TEST_ENCRYPTION_KEYS.to_owned(),
        ),
        ("INTAKE_HMAC_KEY", intake_it::TEST_HMAC_KEY.to_owned()),
    ]);
    // Migrate once, directly, before any process starts (they would all race to do it).
    let migrate = std::process::Command::new(intake)
        .arg("migrate")
        .env_clear()
        .envs(common.iter().map(|(k, v)| (k, v)))
        .env("INTAKE_AMQP_URL", intake_it::AMQP_URL)
        .env("INTAKE_DATABASE_URL", &direct_db)
        .output()?;
    if !migrate.status.success() {
        bail!(
            "intake migrate failed: {}",
            String::from_utf8_lossy(&migrate.stderr)
        );
    }
    common.extend(pairs(&[
        (
            "INTAKE_AMQP_URL",
            format!("amqp://guest:guest@{}/%2f", broker.addr()),
        ),
        (
            "INTAKE_DATABASE_URL",
            format!("postgres://postgres@{}/{db_name}", database.addr()),
        ),
    ]));
    let receiver_env = pairs(&[
        ("INTAKE_ENDPOINTS", endpoints_toml()),
        ("SOAK_SPARK_TOKEN", secrets.spark_token.clone()),
        ("SOAK_SPARK_PASSWORD", secrets.spark_password.clone()),
        ("SOAK_SPARKLOOP_TOKEN", secrets.sparkloop_token.clone()),
        ("SOAK_SPARK360_KEY", secrets.spark360_key.clone()),
        ("SOAK_HEALTHSHERPA_TOKEN", secrets.healthsherpa_token.clone()),
        ("INTAKE_CONFIRM_TIMEOUT_MS", "3000".to_owned()),
        ("INTAKE_SHUTDOWN_GRACE_SECS", "15".to_owned()),
    ]);
    // Small pools: Postgres here allows 100 connections, shared with other test runs. Two batch
    // transactions of up to 32 deliveries: 64 deliveries in flight per worker, so that a database
    // stall fails (and sends to a retry tier) about as many deliveries as the one-by-one worker's
    // 12 did per second of stall, not 384.
    let worker_env = pairs(&[
        ("INTAKE_CONCURRENCY", "2".to_owned()),
        ("INTAKE_PREFETCH", "100".to_owned()),
        ("INTAKE_DB_POOL_SIZE", "14".to_owned()),
        ("INTAKE_DB_TIMEOUT_MS", "5000".to_owned()),
        ("INTAKE_PARK_LIMIT_SECS", park_limit.to_string()),
        ("INTAKE_SWEEP_INTERVAL_MS", "1000".to_owned()),
        ("INTAKE_SHUTDOWN_GRACE_SECS", "15".to_owned()),
    ]);
    let mut cluster = Cluster::new(
        intake.to_owned(),
        logs.to_owned(),
        &common,
        &receiver_env,
        &worker_env,
        args.workers,
    )?;
    cluster.start_all().await?;
    let receiver_url = cluster.receiver_url();
    let cluster = Arc::new(Mutex::new(cluster));
    let targets = faults::Targets {
        cluster: cluster.clone(),
        broker,
        database,
        outage: Duration::from_secs(args.outage_secs),
    };

    let started = Instant::now();
    let sender = Arc::new(Sender::new(
        receiver_url,
        secrets,
        rate,
        args.concurrency,
        started,
    )?);
    let sending = tokio::spawn(sender.clone().run(traffic.clone(), args.concurrency));
    let done_faults = faults::run(
        faults::schedule(args.restart_broker),
        sender.clone(),
        total,
        &targets,
        started,
    )
    .await;
    let sent = sending.await?;
    let send_s = started.elapsed().as_secs_f64();
    eprintln!("[{send_s:>6.1}s] all {total} deliveries settled; draining");

    let db = connect(&format!("postgres://postgres@{POSTGRES}/{db_name}")).await?;
    let drained_at = Instant::now();
    let quiet = drain(
        &db,
        &cluster,
        topology,
        Duration::from_secs(5),
        Duration::from_secs(args.drain_timeout_secs),
    )
    .await?;
    let drain_s = drained_at.elapsed().as_secs_f64();
    let stopped = cluster.lock().await.stop_all().await;
    let mut shutdown = String::from("At the end every process was stopped with SIGTERM: ");
    let statuses: Vec<String> = stopped
        .iter()
        .map(|(name, s)| match s {
            Ok(status) if status.success() => format!("{name} exit 0"),
            Ok(status) => format!("{name} **{status}**"),
            Err(e) => format!("{name} **{e:#}**"),
        })
        .collect();
    shutdown.push_str(&statuses.join(", "));
    shutdown.push('.');
    if !quiet {
        shutdown.push_str(&format!(
            " **The pipeline was still moving after {} s.**",
            args.drain_timeout_secs
        ));
    }

    let accounting = verify::account(&db, &traffic, &sent).await?;
    let build = if intake.components().any(|c| c.as_os_str() == "release") {
        "release"
    } else {
        "debug"
    };
    let info = report::RunInfo {
        title: format!(
            "Soak — {}, {} webhooks{}",
            chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
            traffic.webhooks.len(),
            if args.ci { " (CI)" } else { "" }
        ),
        setup: format!(
            "`soak --webhooks {} --workers {} --rate {rate} --park-limit-secs {park_limit} --outage-secs {} \
             --concurrency {} --seed {seed}{}{}` ({} webhooks generated; the seed repeats the traffic, \
             not the timing): 1 receiver and {} workers (`intake`, {build} build) as processes, RabbitMQ \
             and Postgres through TCP proxies, {total} deliveries, retry tiers {RETRY_TIERS}; everything \
             on one {}-core machine.",
            args.webhooks,
            args.workers,
            args.outage_secs,
            args.concurrency,
            if args.ci { " --ci" } else { "" },
            if args.restart_broker {
                " --restart-broker"
            } else {
                ""
            },
            traffic.webhooks.len(),
            args.workers,
            std::thread::available_parallelism().map_or(0, |n| n.get()),
        ),
        send_s,
        drain_s,
        shutdown,
    };
    let section = report::markdown(&info, &done_faults, &accounting);
    println!("{section}");
    if !args.ci {
        use std::io::Write;
        let mut file = std::fs::File::options()
            .create(true)
            .append(true)
            .open(&args.out)
            .with_context(|| format!("opening {}", args.out.display()))?;
        writeln!(file, "\n{section}")?;
        eprintln!("appended to {}", args.out.display());
    }
    let faults_ok = done_faults.len() == faults::schedule(args.restart_broker).len()
        && done_faults
            .iter()
            .all(|f| !f.detail.starts_with("FAILED") && f.sent_before < total);
    if !faults_ok {
        eprintln!("a fault failed or did not happen during traffic");
    }
    let clean_exit = stopped.iter().all(|(_, s)| s.as_ref().is_ok_and(|s| s.success()));
    Ok(accounting.passed() && faults_ok && quiet && clean_exit)
}
