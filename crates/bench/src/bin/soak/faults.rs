//! The fault schedule, run while the sender sends: each fault starts once a given share of the
//! deliveries is done, lasts a few seconds, and is undone before the next one starts. What was
//! done, when, and whether traffic was still flowing is recorded for the report.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use intake_it::TcpProxy;
use tokio::sync::Mutex;

use crate::cluster::Cluster;
use crate::sender::Sender;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every AMQP connection (receiver and workers) dropped; new ones refused; then restored.
    BrokerCut,
    /// Every Postgres connection of the workers dropped; new ones refused; then restored.
    DatabaseCut,
    /// `kill -9` of a worker, started again a little later.
    WorkerKill,
    /// SIGTERM to the receiver mid-load (it drains in-flight requests), then started again.
    ReceiverRestart,
    /// The AMQP connections stay open but nothing passes (a black hole), then flow again.
    BrokerStall,
    /// The Postgres connections stay open but nothing passes, then flow again.
    DatabaseStall,
    /// `rabbitmqctl stop_app` then `start_app` (opt-in: it disturbs everything else using this
    /// RabbitMQ).
    BrokerRestart,
}

impl Fault {
    /// What the report calls it.
    pub fn describe(self) -> &'static str {
        match self {
            Fault::BrokerCut => "broker connections cut (TCP proxy), then restored",
            Fault::DatabaseCut => "database connections cut (TCP proxy), then restored",
            Fault::WorkerKill => "worker `kill -9`, restarted",
            Fault::ReceiverRestart => "receiver SIGTERM mid-load, restarted",
            Fault::BrokerStall => "broker link stalled (black hole), then restored",
            Fault::DatabaseStall => "database link stalled (black hole), then restored",
            Fault::BrokerRestart => "RabbitMQ `stop_app` / `start_app`",
        }
    }
}

/// A fault as it happened.
#[derive(Debug, Clone)]
pub struct Done {
    /// Which.
    pub fault: Fault,
    /// Seconds into the run it started.
    pub started_s: f64,
    /// How long it lasted (seconds).
    pub lasted_s: f64,
    /// Deliveries finished when it started and when it ended.
    pub sent_before: usize,
    /// Deliveries finished when it ended.
    pub sent_after: usize,
    /// Details (exit status, errors).
    pub detail: String,
}

/// The schedule: (share of deliveries done, fault).
pub fn schedule(restart_broker: bool) -> Vec<(f64, Fault)> {
    let mut s = vec![
        (0.08, Fault::BrokerCut),
        (0.20, Fault::DatabaseCut),
        (0.32, Fault::WorkerKill),
        (0.44, Fault::ReceiverRestart),
        (0.56, Fault::BrokerStall),
        (0.68, Fault::DatabaseStall),
    ];
    if restart_broker {
        s.push((0.78, Fault::BrokerRestart));
    }
    s
}

/// What the faults act on.
#[derive(Debug)]
pub struct Targets {
    /// The processes.
    pub cluster: Arc<Mutex<Cluster>>,
    /// Proxy in front of RabbitMQ.
    pub broker: TcpProxy,
    /// Proxy in front of Postgres.
    pub database: TcpProxy,
    /// How long a cut or stall lasts.
    pub outage: Duration,
}

/// Runs `schedule` against the sender's progress. A fault starts once its share of deliveries is
/// done and traffic has flowed again since the previous one (3 s and 1 % of the deliveries), so
/// that each one meets a pipeline under load rather than one still recovering.
pub async fn run(
    schedule: Vec<(f64, Fault)>,
    sender: Arc<Sender>,
    total: usize,
    targets: &Targets,
    started: Instant,
) -> Vec<Done> {
    let mut done: Vec<Done> = Vec::new();
    for (n, (share, fault)) in schedule.into_iter().enumerate() {
        let mut threshold = (share * total as f64) as usize;
        let mut not_before = Instant::now();
        if let Some(previous) = done.last() {
            threshold = threshold.max(previous.sent_after + total / 100);
            not_before += Duration::from_secs(3);
        }
        while sender.finished.load(Ordering::Relaxed) < threshold.min(total) || Instant::now() < not_before {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let sent_before = sender.finished.load(Ordering::Relaxed);
        let at = Instant::now();
        eprintln!(
            "[{:>6.1}s] fault {}: {} ({sent_before}/{total} deliveries done)",
            started.elapsed().as_secs_f64(),
            n + 1,
            fault.describe()
        );
        let detail = match inject(fault, n, targets).await {
            Ok(detail) => detail,
            Err(e) => format!("FAILED: {e:#}"),
        };
        done.push(Done {
            fault,
            started_s: (at - started).as_secs_f64(),
            lasted_s: at.elapsed().as_secs_f64(),
            sent_before,
            sent_after: sender.finished.load(Ordering::Relaxed),
            detail,
        });
    }
    done
}

async fn inject(fault: Fault, n: usize, t: &Targets) -> anyhow::Result<String> {
    match fault {
        Fault::BrokerCut | Fault::DatabaseCut => {
            let proxy = if fault == Fault::BrokerCut {
                &t.broker
            } else {
                &t.database
            };
            proxy.cut();
            tokio::time::sleep(t.outage).await;
            proxy.restore();
            Ok(format!("{:.0} s", t.outage.as_secs_f64()))
        }
        Fault::BrokerStall | Fault::DatabaseStall => {
            let proxy = if fault == Fault::BrokerStall {
                &t.broker
            } else {
                &t.database
            };
            proxy.stall();
            tokio::time::sleep(t.outage).await;
            proxy.restore();
            Ok(format!("{:.0} s", t.outage.as_secs_f64()))
        }
        Fault::WorkerKill => {
            let mut cluster = t.cluster.lock().await;
            let i = n % cluster.worker_addrs().len();
            let held = cluster.worker_in_flight(i).await;
            cluster.kill_worker(i)?;
            drop(cluster);
            tokio::time::sleep(Duration::from_secs(2)).await;
            let restarted = Instant::now();
            t.cluster.lock().await.start_worker(i).await?;
            Ok(format!(
                "worker-{} killed while handling {} deliveries; restarted after 2 s, ready {:.1} s later",
                i + 1,
                held.map_or("?".to_owned(), |h| h.to_string()),
                restarted.elapsed().as_secs_f64()
            ))
        }
        Fault::ReceiverRestart => {
            let mut cluster = t.cluster.lock().await;
            let stopping = Instant::now();
            let status = cluster.terminate_receiver().await?;
            let drained = stopping.elapsed().as_secs_f64();
            if !status.success() {
                bail!("receiver exited with {status} after SIGTERM");
            }
            cluster.start_receiver().await?;
            Ok(format!(
                "exited 0 {drained:.1} s after SIGTERM; down {:.1} s in all",
                stopping.elapsed().as_secs_f64()
            ))
        }
        Fault::BrokerRestart => {
            rabbitmqctl("stop_app")?;
            tokio::time::sleep(t.outage).await;
            rabbitmqctl("start_app")?;
            Ok(format!("stopped {:.0} s", t.outage.as_secs_f64()))
        }
    }
}

fn rabbitmqctl(command: &str) -> anyhow::Result<()> {
    let out = std::process::Command::new("rabbitmqctl")
        .arg(command)
        .output()
        .context("running rabbitmqctl")?;
    if !out.status.success() {
        bail!(
            "rabbitmqctl {command}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
