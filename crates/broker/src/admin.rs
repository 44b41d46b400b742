//! Removing a whole topology (every queue and exchange under a prefix): for benchmarks and test
//! runs that create throwaway prefixes. Quorum queues are not free for the broker; do not leave
//! them behind.

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
