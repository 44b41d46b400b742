//! Operating on a topology from outside a role: removing every queue and exchange under a prefix
//! (benchmarks and throwaway test prefixes — quorum queues are not free for the broker) and reading
//! queue depths and consumers for `intake status`.

use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
use lapin::{Connection, ConnectionProperties};

use crate::{BrokerError, Topology};

/// Deletes every queue and exchange of `topology` (missing ones are skipped), messages included.
pub async fn delete_topology(amqp_url: &str, topology: &Topology) -> Result<(), BrokerError> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    for queue in topology.all_queues() {
        // A failed delete closes the channel: use a fresh one each time.
        let channel = connection.create_channel().await?;
        let _ = channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await;
    }
    for exchange in topology.all_exchanges() {
        let channel = connection.create_channel().await?;
        let _ = channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await;
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

/// One queue's numbers as the broker reports them to a passive declare.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    /// Queue name.
    pub name: String,
    /// Messages ready for delivery (not counting delivered, unacked ones).
    pub ready: u32,
    /// Consumers attached.
    pub consumers: u32,
    /// Whether the queue exists.
    pub exists: bool,
}

/// Reads ready messages and consumers of each queue by passive declare (which never creates a
/// queue). A missing queue is reported with `exists: false`.
pub async fn queue_stats(amqp_url: &str, queues: &[String]) -> Result<Vec<QueueStats>, BrokerError> {
    let connection = Connection::connect(amqp_url, ConnectionProperties::default()).await?;
    let mut stats = Vec::with_capacity(queues.len());
    for queue in queues {
        // A passive declare of a missing queue closes the channel: use a fresh one each time.
        let channel = connection.create_channel().await?;
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..lapin::options::QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(
                queue.as_str().into(),
                passive,
                lapin::types::FieldTable::default(),
            )
            .await;
        stats.push(match declared {
            Ok(q) => QueueStats {
                name: queue.clone(),
                ready: q.message_count(),
                consumers: q.consumer_count(),
                exists: true,
            },
            Err(_) => QueueStats {
                name: queue.clone(),
                ready: 0,
                consumers: 0,
                exists: false,
            },
        });
    }
    let _ = connection.close(200, "done".into()).await;
    Ok(stats)
}
