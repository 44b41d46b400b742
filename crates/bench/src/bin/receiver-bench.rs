//! Receiver benchmark. In one run, at the same concurrency and envelope (the ~6 KB Spark contact
//! payload):
//! (a) raw confirmed publishes per second straight through lapin — the broker's limit here;
//! (b) webhooks per second the receiver accepts over HTTP (closed loop, same concurrency), with
//!     p50/p99 latency and the receiver's peak RSS;
//! (c) p50/p99 latency at half of (b)'s rate (open loop).
//! A consumer drains the queue throughout (as workers would), so every phase measures the
//! broker in its steady state. Results are printed and appended to BENCHMARKS.md.
//!
//! Run: `cargo build --release -p intake -p intake-bench && target/release/receiver-bench`
//! Environment: `BENCH_SECONDS` (10), `BENCH_ROUNDS` (3), `BENCH_CONCURRENCY` (64), `BENCH_CHANNELS` (4),
//! `BENCH_AMQP_URL` (local guest), `BENCH_PORT` (18080), `BENCH_OUT` (BENCHMARKS.md).
#![forbid(unsafe_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use intake_bench::{
    CpuUse, SPARK_CONTACT, cpu_sample, latency_histogram, peak_rss_mib, percentile_ms, record,
};
use intake_broker::codec::envelope_properties;
// The raw baseline deliberately goes around our publisher, straight through lapin (via the
// broker crate's re-export), to measure what the broker itself can do.
use intake_broker::lapin::options::{BasicPublishOptions, ConfirmSelectOptions, QueuePurgeOptions};
use intake_broker::lapin::{Confirmation, Connection, ConnectionProperties};
use intake_broker::{Topology, topology};
use intake_core::{Envelope, Provider};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Settings {
    seconds: u64,
    concurrency: usize,
    channels: usize,
    amqp_url: String,
    port: u16,
    out: String,
    rounds: usize,
}

struct Outcome {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s = Settings {
        seconds: env_or("BENCH_SECONDS", 10),
        concurrency: env_or("BENCH_CONCURRENCY", 64),
        channels: env_or("BENCH_CHANNELS", 4),
        amqp_url: env_or(
            "BENCH_AMQP_URL",
            "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned(),
        ),
        port: env_or("BENCH_PORT", 18080),
        out: env_or("BENCH_OUT", "BENCHMARKS.md".to_owned()),
        rounds: env_or("BENCH_ROUNDS", 3),
    };
    let prefix = format!("bench-{}", chrono::Utc::now().format("%Y%m%d%H%M%S"));
    let topology = Topology::with_default_tiers(prefix.clone());
    let body = Bytes::from_static(SPARK_CONTACT.as_bytes());

    let connection = Connection::connect(&s.amqp_url, ConnectionProperties::default()).await?;
    let admin = connection.create_channel().await?;
    topology::declare(&admin, &topology).await?;
    let queue = topology.provider_queue(Provider::Spark);
    // A consumer drains the queue throughout, as workers would: the broker is measured in its
    // steady state, not while a quorum queue grows to hundreds of megabytes.
    let drain = drain_queue(&connection, &queue).await?;

    // The receiver idles while the raw phases run; (a) and (b) alternate for several rounds and
    // the medians are reported, so a passing disturbance on this shared machine skews one
    // sample, not the ratio.
    let mut receiver = spawn_receiver(&s, &prefix)?;
    let pid = receiver.id();
    let result = async {
        wait_ready(s.port).await?;
        let (mut raws, mut peaks) = (Vec::new(), Vec::new());
        for round in 1..=s.rounds {
            println!(
                "round {round}/{}: (a) raw confirmed publish, concurrency {}, {} channels",
                s.rounds, s.concurrency, s.channels
            );
            let before = cpu_sample(Some(pid));
            let raw = raw_publish(&connection, &s, &topology, body.clone()).await?;
            print_cpu(cpu_sample(Some(pid)).since(before), s.seconds);
            println!(
                "    {:.0} msg/s, p50 {:.2} ms, p99 {:.2} ms",
                raw.rate, raw.p50_ms, raw.p99_ms
            );
            admin
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await?;
            settle().await;
            println!("round {round}/{}: (b) receiver over HTTP, closed loop", s.rounds);
            let before = cpu_sample(Some(pid));
            let peak = http_closed_loop(&s, body.clone()).await?;
            print_cpu(cpu_sample(Some(pid)).since(before), s.seconds);
            println!(
                "    {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
                peak.rate, peak.p50_ms, peak.p99_ms, peak.errors
            );
            admin
                .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
                .await?;
            settle().await;
            raws.push(raw);
            peaks.push(peak);
        }
        let raw = median(raws);
        let peak = median(peaks);
        let half_rate = peak.rate / 2.0;
        println!("(c) receiver at half the median peak rate ({half_rate:.0} req/s), open loop");
        let before = cpu_sample(Some(pid));
        let half = http_open_loop(&s, body.clone(), half_rate).await?;
        print_cpu(cpu_sample(Some(pid)).since(before), s.seconds);
        admin
            .queue_purge(queue.as_str().into(), QueuePurgeOptions::default())
            .await?;
        println!(
            "    {:.0} req/s, p50 {:.2} ms, p99 {:.2} ms, errors {}",
            half.rate, half.p50_ms, half.p99_ms, half.errors
        );
        anyhow::Ok((raw, peak, half))
    }
    .await;
    let rss = peak_rss_mib(pid);
    let _ = receiver.kill();
    let _ = receiver.wait();
    drain.abort();
    let _ = intake_broker::admin::delete_topology(&s.amqp_url, &topology).await;
    let (raw, peak, half) = result?;
    let rss = rss.unwrap_or(f64::NAN);
    println!(
        "receiver peak RSS {rss:.1} MiB; b/a = {:.2}",
        peak.rate / raw.rate
    );
    write_report(&s, &raw, &peak, &half, rss)?;
    Ok(())
}

/// The outcome with the median rate.
fn median(mut outcomes: Vec<Outcome>) -> Outcome {
    outcomes.sort_by(|a, b| a.rate.total_cmp(&b.rate));
    outcomes.swap_remove(outcomes.len() / 2)
}

fn print_cpu(cpu: CpuUse, seconds: u64) {
    let s = seconds as f64;
    println!(
        "    CPU (cores busy): broker {:.2}, load generator {:.2}, receiver {:.2}",
        cpu.broker / s,
        cpu.generator / s,
        cpu.receiver / s
    );
}

async fn drain_queue(connection: &Connection, queue: &str) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    use futures_util::StreamExt;
    use intake_broker::lapin::options::{BasicConsumeOptions, BasicQosOptions};
    use intake_broker::lapin::types::FieldTable;
    let channel = connection.create_channel().await?;
    channel.basic_qos(1000, BasicQosOptions::default()).await?;
    let options = BasicConsumeOptions {
        no_ack: true,
        ..BasicConsumeOptions::default()
    };
    let mut consumer = channel
        .basic_consume(queue.into(), "bench-drain".into(), options, FieldTable::default())
        .await?;
    Ok(tokio::spawn(async move {
        let _channel = channel;
        while let Some(delivery) = consumer.next().await {
            if delivery.is_err() {
                break;
            }
        }
    }))
}

/// After purging tens of thousands of messages the quorum queue compacts its log in the
/// background; let that finish so it does not land in the next phase's latencies.
async fn settle() {
    tokio::time::sleep(Duration::from_secs(env_or("BENCH_SETTLE_SECONDS", 2))).await;
}

async fn raw_publish(
    connection: &Connection,
    s: &Settings,
    topology: &Topology,
    body: Bytes,
) -> anyhow::Result<Outcome> {
    let mut channels = Vec::new();
    for _ in 0..s.channels {
        let channel = connection.create_channel().await?;
        channel.confirm_select(ConfirmSelectOptions::default()).await?;
        channels.push(channel);
    }
    let exchange = topology.ingress_exchange();
    let deadline = Instant::now() + Duration::from_secs(s.seconds);
    let mut tasks = Vec::new();
    for i in 0..s.concurrency {
        let channel = channels[i % channels.len()].clone();
        let (exchange, body) = (exchange.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut h = latency_histogram();
            let (mut n, mut errors) = (0u64, 0u64);
            while Instant::now() < deadline {
                // Same envelope properties the receiver sends, so the message size matches.
                let envelope = Envelope::new("bench", Provider::Spark, Vec::new(), body.clone());
                let started = Instant::now();
                let options = BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                };
                let confirm = channel
                    .basic_publish(
                        exchange.as_str().into(),
                        "spark".into(),
                        options,
                        &body,
                        envelope_properties(&envelope),
                    )
                    .await;
                match confirm {
                    Ok(c) => match c.await {
                        Ok(Confirmation::Ack(None)) => {
                            n += 1;
                            record(&mut h, started.elapsed());
                        }
                        _ => errors += 1,
                    },
                    Err(_) => errors += 1,
                }
            }
            (n, errors, h)
        }));
    }
    collect(tasks, s.seconds as f64).await
}

async fn collect(
    tasks: Vec<tokio::task::JoinHandle<(u64, u64, hdrhistogram::Histogram<u64>)>>,
    seconds: f64,
) -> anyhow::Result<Outcome> {
    let mut h = latency_histogram();
    let (mut n, mut errors) = (0, 0);
    for task in tasks {
        let (tn, te, th) = task.await?;
        n += tn;
        errors += te;
        h.add(th).context("merge histograms")?;
    }
    Ok(Outcome {
        rate: n as f64 / seconds,
        p50_ms: percentile_ms(&h, 0.5),
        p99_ms: percentile_ms(&h, 0.99),
        errors,
    })
}

fn spawn_receiver(s: &Settings, prefix: &str) -> anyhow::Result<Child> {
    let exe = std::env::current_exe()?;
    let bin = exe.with_file_name("intake");
    anyhow::ensure!(
        bin.exists(),
        "build the intake binary first: cargo build --release -p intake"
    );
    let endpoints = r#"[[endpoints]]
name = "spark"
provider = "spark"
auth = [{ kind = "path_token", secret_env = "BENCH_SPARK_TOKEN" }]"#;
    Command::new(bin)
        .arg("receiver")
        .env("INTAKE_LISTEN_ADDR", format!("127.0.0.1:{}", s.port))
        .env("INTAKE_AMQP_URL", &s.amqp_url)
        .env("INTAKE_QUEUE_PREFIX", prefix)
        .env("INTAKE_ENDPOINTS", endpoints)
        .env("INTAKE_PUBLISH_CHANNELS", s.channels.to_string())
        .env("BENCH_SPARK_TOKEN", "bench-token")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .context("starting intake receiver")
}

async fn wait_ready(port: u16) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(20);
    while Instant::now() < until {
        if client
            .get(format!("http://127.0.0.1:{port}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    anyhow::bail!("receiver not ready within 20 s")
}

fn client(s: &Settings) -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .pool_max_idle_per_host(s.concurrency * 2)
        .tcp_nodelay(true)
        .build()?)
}

async fn post(client: &reqwest::Client, url: &str, body: Bytes) -> bool {
    let sent = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await;
    sent.is_ok_and(|r| r.status() == 200)
}

async fn http_closed_loop(s: &Settings, body: Bytes) -> anyhow::Result<Outcome> {
    let client = client(s)?;
    let url = format!("http://127.0.0.1:{}/webhooks/spark/bench-token", s.port);
    let deadline = Instant::now() + Duration::from_secs(s.seconds);
    let tasks = (0..s.concurrency)
        .map(|_| {
            let (client, url, body) = (client.clone(), url.clone(), body.clone());
            tokio::spawn(async move {
                let mut h = latency_histogram();
                let (mut n, mut errors) = (0u64, 0u64);
                while Instant::now() < deadline {
                    let started = Instant::now();
                    if post(&client, &url, body.clone()).await {
                        n += 1;
                        record(&mut h, started.elapsed());
                    } else {
                        errors += 1;
                    }
                }
                (n, errors, h)
            })
        })
        .collect();
    collect(tasks, s.seconds as f64).await
}

async fn http_open_loop(s: &Settings, body: Bytes, rate: f64) -> anyhow::Result<Outcome> {
    let client = client(s)?;
    let url = format!("http://127.0.0.1:{}/webhooks/spark/bench-token", s.port);
    let interval = Duration::from_secs_f64(1.0 / rate.max(1.0));
    let total = (rate * s.seconds as f64) as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started_all = Instant::now();
    let overloaded = Arc::new(AtomicBool::new(false));
    for i in 0..total {
        // Requests leave on schedule whether or not earlier ones finished (open loop), so slow
        // answers show up as latency instead of silently lowering the rate.
        let due = started_all + interval.mul_f64(i as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, body, tx) = (client.clone(), url.clone(), body.clone(), tx.clone());
        let overloaded = overloaded.clone();
        tokio::spawn(async move {
            let ok = post(&client, &url, body).await;
            let latency = due.elapsed();
            if latency > Duration::from_secs(1) {
                overloaded.store(true, Ordering::Relaxed);
            }
            let _ = tx.send((ok, latency));
        });
    }
    drop(tx);
    let mut h = latency_histogram();
    let (mut n, mut errors) = (0u64, 0u64);
    while let Some((ok, latency)) = rx.recv().await {
        if ok {
            n += 1;
            record(&mut h, latency);
        } else {
            errors += 1;
        }
    }
    let elapsed = started_all.elapsed().as_secs_f64();
    if overloaded.load(Ordering::Relaxed) {
        println!("    warning: some requests took over 1 s");
    }
    Ok(Outcome {
        rate: n as f64 / elapsed,
        p50_ms: percentile_ms(&h, 0.5),
        p99_ms: percentile_ms(&h, 0.99),
        errors,
    })
}

fn write_report(s: &Settings, raw: &Outcome, peak: &Outcome, half: &Outcome, rss: f64) -> anyhow::Result<()> {
    use std::io::Write;
    let ratio = peak.rate / raw.rate;
    let verdict = |ok: bool| if ok { "met" } else { "NOT met" };
    let text = format!(
        "\n## Receiver — {date}\n\n\
         Envelope: Spark contact payload ({size} B body), persistent, mandatory, confirmed, quorum queue. \
         {secs} s per phase, (a) and (b) alternated {rounds} times and the medians reported, concurrency {conc}, {chans} confirm channels, receiver built with `--release`, \
         load generator in the same 2-core machine.\n\n\
         | measure | value | target |\n|---|---|---|\n\
         | (a) raw confirmed publishes (lapin) | {a:.0} msg/s (p50 {ap50:.2} ms, p99 {ap99:.2} ms) | — |\n\
         | (b) receiver, HTTP closed loop | {b:.0} req/s (p50 {bp50:.2} ms, p99 {bp99:.2} ms, errors {be}) | — |\n\
         | b/a | {ratio:.2} | ≥ 0.8: {v1} |\n\
         | (c) at half the peak rate ({c:.0} req/s) | p50 {cp50:.2} ms, p99 {cp99:.2} ms (errors {ce}) | p99 ≤ 20 ms: {v2} |\n\
         | receiver peak RSS (VmHWM) | {rss:.1} MiB | ≤ 50 MB: {v3} |\n",
        date = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC"),
        size = SPARK_CONTACT.len(),
        secs = s.seconds,
        rounds = s.rounds,
        conc = s.concurrency,
        chans = s.channels,
        a = raw.rate,
        ap50 = raw.p50_ms,
        ap99 = raw.p99_ms,
        b = peak.rate,
        bp50 = peak.p50_ms,
        bp99 = peak.p99_ms,
        be = peak.errors,
        v1 = verdict(ratio >= 0.8),
        c = half.rate,
        cp50 = half.p50_ms,
        cp99 = half.p99_ms,
        ce = half.errors,
        v2 = verdict(half.p99_ms <= 20.0),
        v3 = verdict(rss <= 50.0 * 1_000_000.0 / 1_048_576.0),
    );
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&s.out)?;
    file.write_all(text.as_bytes())?;
    println!("appended to {}", s.out);
    Ok(())
}
