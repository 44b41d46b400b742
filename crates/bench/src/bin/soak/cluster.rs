//! The system under test as real processes: one `intake receiver` and N `intake worker`s, each
//! reaching RabbitMQ and Postgres through a TCP proxy the fault schedule can cut or stall. Each
//! process's stdout and stderr are appended to its own log file (restarts append to the same).

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

/// How long a process may take to become ready or to exit.
const DEADLINE: Duration = Duration::from_secs(60);

/// A port nothing listens on right now.
pub fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// One role's process slot.
#[derive(Debug)]
struct Slot {
    name: String,
    role: &'static str,
    addr: SocketAddr,
    env: Vec<(String, String)>,
    child: Option<Child>,
}

/// The processes of the run.
#[derive(Debug)]
pub struct Cluster {
    bin: PathBuf,
    logs: PathBuf,
    receiver: Slot,
    workers: Vec<Slot>,
    http: reqwest::Client,
}

impl Cluster {
    /// Describes the processes (nothing started): `common` goes to every process, `receiver` and
    /// `worker` to their role.
    pub fn new(
        bin: PathBuf,
        logs: PathBuf,
        common: &[(String, String)],
        receiver: &[(String, String)],
        worker: &[(String, String)],
        workers: usize,
    ) -> anyhow::Result<Cluster> {
        let slot = |name: String, role, extra: &[(String, String)]| -> anyhow::Result<Slot> {
            let mut env = common.to_vec();
            env.extend_from_slice(extra);
            Ok(Slot {
                name,
                role,
                addr: free_port()?,
                env,
                child: None,
            })
        };
        Ok(Cluster {
            receiver: slot("receiver".into(), "receiver", receiver)?,
            workers: (1..=workers)
                .map(|i| slot(format!("worker-{i}"), "worker", worker))
                .collect::<anyhow::Result<_>>()?,
            bin,
            logs,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(2))
                .build()?,
        })
    }

    /// The receiver's base URL.
    pub fn receiver_url(&self) -> String {
        format!("http://{}", self.receiver.addr)
    }

    /// Ops addresses of the workers.
    pub fn worker_addrs(&self) -> Vec<SocketAddr> {
        self.workers.iter().map(|w| w.addr).collect()
    }

    fn spawn(bin: &Path, logs: &Path, slot: &mut Slot) -> anyhow::Result<()> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(logs.join(format!("{}.log", slot.name)))?;
        let child = Command::new(bin)
            .arg(slot.role)
            .env_clear()
            .envs(slot.env.iter().map(|(k, v)| (k, v)))
            .env("INTAKE_LISTEN_ADDR", slot.addr.to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {} {}", bin.display(), slot.role))?;
        slot.child = Some(child);
        Ok(())
    }

    async fn wait_ready(&self, slot: &Slot) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", slot.addr);
        let until = Instant::now() + DEADLINE;
        while Instant::now() < until {
            if self.http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!(
            "{} not ready within {DEADLINE:?} (log in {})",
            slot.name,
            self.logs.display()
        )
    }

    /// Starts the receiver and waits until it is ready.
    pub async fn start_receiver(&mut self) -> anyhow::Result<()> {
        Self::spawn(&self.bin, &self.logs, &mut self.receiver)?;
        self.wait_ready(&self.receiver).await
    }

    /// Starts worker `i` (0-based) and waits until it is ready.
    pub async fn start_worker(&mut self, i: usize) -> anyhow::Result<()> {
        Self::spawn(&self.bin, &self.logs, &mut self.workers[i])?;
        self.wait_ready(&self.workers[i]).await
    }

    /// Starts every process.
    pub async fn start_all(&mut self) -> anyhow::Result<()> {
        for i in 0..self.workers.len() {
            self.start_worker(i).await?;
        }
        self.start_receiver().await
    }

    /// `kill -9` of worker `i`: no drain, no ack of what it held.
    pub fn kill_worker(&mut self, i: usize) -> anyhow::Result<()> {
        let mut child = self.workers[i].child.take().context("worker not running")?;
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// SIGTERM to the receiver, then waits for it to exit (it drains in-flight requests).
    pub async fn terminate_receiver(&mut self) -> anyhow::Result<ExitStatus> {
        let child = self.receiver.child.take().context("receiver not running")?;
        terminate(child).await
    }

    /// SIGTERM to every process; their exit statuses by name.
    pub async fn stop_all(&mut self) -> Vec<(String, anyhow::Result<ExitStatus>)> {
        let mut out = Vec::new();
        for slot in std::iter::once(&mut self.receiver).chain(&mut self.workers) {
            if let Some(child) = slot.child.take() {
                out.push((slot.name.clone(), terminate(child).await));
            }
        }
        out
    }

    /// Deliveries worker `i` is handling right now (`intake_consumer_in_flight`), if it answers.
    pub async fn worker_in_flight(&self, i: usize) -> Option<f64> {
        let text = self
            .http
            .get(format!("http://{}/metrics", self.workers[i].addr))
            .send()
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        Some(
            text.lines()
                .filter(|l| l.starts_with("intake_consumer_in_flight"))
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum(),
        )
    }

    /// Sum over the workers of `intake_consumer_in_flight` and
    /// `intake_consumer_waiting_to_publish`: deliveries a worker holds right now. `None` when a
    /// worker does not answer.
    pub async fn worker_backlog(&self) -> Option<f64> {
        let mut total = 0.0;
        for w in &self.workers {
            let text = self
                .http
                .get(format!("http://{}/metrics", w.addr))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            total += text
                .lines()
                .filter(|l| {
                    l.starts_with("intake_consumer_in_flight")
                        || l.starts_with("intake_consumer_waiting_to_publish")
                })
                .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        Some(total)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for slot in std::iter::once(&mut self.receiver).chain(&mut self.workers) {
            if let Some(mut child) = slot.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// SIGTERM (via `kill`, the crate forbids unsafe code), then wait for the exit with a deadline;
/// a process still running then is killed and reported.
async fn terminate(mut child: Child) -> anyhow::Result<ExitStatus> {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()?;
    if !sent.success() {
        bail!("kill -TERM failed");
    }
    let until = Instant::now() + DEADLINE;
    while Instant::now() < until {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    bail!("did not exit within {DEADLINE:?} of SIGTERM")
}
