//! Starting a receiver in-process on `127.0.0.1:0` with its own queue prefix and endpoints.

use std::collections::HashMap;
use std::net::SocketAddr;

use intake_broker::Topology;
use intake_receiver::{ReceiverConfig, endpoints, run};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running receiver; [`RunningReceiver::stop`] shuts it down gracefully.
#[derive(Debug)]
pub struct RunningReceiver {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its topology (unique prefix).
    pub topology: Topology,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

impl RunningReceiver {
    /// Starts a receiver whose endpoints are `endpoints_toml`, secrets looked up in `secrets`,
    /// publishing to `amqp_url` under a fresh prefix. `tune` may adjust the config.
    pub async fn start(
        amqp_url: &str,
        endpoints_toml: &str,
        secrets: &[(&str, &str)],
        tune: impl FnOnce(&mut ReceiverConfig),
    ) -> RunningReceiver {
        let mut config = ReceiverConfig::local_defaults();
        config.broker.amqp_url = amqp_url.into();
        config.broker.queue_prefix = crate::unique_name("rcv");
        // Short tiers: tests that retry should not wait minutes.
        config.broker.retry_tiers = "1s,2s".into();
        config.broker.queue_expires_secs = Some(crate::TEST_QUEUE_EXPIRY_SECS);
        tune(&mut config);
        let secrets: HashMap<String, String> = secrets
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let specs = endpoints::parse(endpoints_toml).expect("endpoint TOML");
        let endpoints = endpoints::resolve(specs, &|var| secrets.get(var).cloned()).expect("endpoints");
        let topology = config.broker.topology().expect("broker settings");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(run(config, endpoints, listener, async move {
            let _ = stopped.await;
        }));
        RunningReceiver {
            addr,
            topology,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://addr/webhooks/{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}/webhooks/{path}", self.addr)
    }

    /// `http://addr{path}` for the ops endpoints.
    pub fn ops_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits until `/readyz` answers 200 (broker connected), up to 15 s.
    pub async fn wait_ready(&self) {
        let client = reqwest::Client::new();
        let url = self.ops_url("/readyz");
        let ready = crate::wait_until(std::time::Duration::from_secs(15), || {
            let client = client.clone();
            let url = url.clone();
            async move { client.get(&url).send().await.is_ok_and(|r| r.status() == 200) }
        })
        .await;
        assert!(ready, "receiver did not become ready");
    }

    /// Signals shutdown and waits for `run` to return.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.task.take() {
            Some(task) => task.await.expect("receiver task"),
            None => Ok(()),
        }
    }
}
