//! RabbitMQ from a test: a run-unique topology with a publisher that declared it, how many
//! messages and consumers a queue has, and taking its messages.

use intake_broker::lapin::options::{
    BasicAckOptions, BasicGetOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use intake_broker::lapin::types::FieldTable;
use intake_broker::lapin::{BasicProperties, Channel, Connection, ConnectionProperties};

use crate::AMQP_URL;

/// A message taken off a queue.
#[derive(Debug, Clone)]
pub struct Taken {
    /// The message body.
    pub body: Vec<u8>,
    /// Its properties and headers.
    pub properties: BasicProperties,
    /// The routing key it was published with.
    pub routing_key: String,
}

/// A test's own connection to RabbitMQ.
#[derive(Debug)]
pub struct QueueProbe {
    _connection: Connection,
    channel: Channel,
}

impl QueueProbe {
    /// Connects to the local RabbitMQ.
    pub async fn connect() -> QueueProbe {
        let connection = Connection::connect(AMQP_URL, ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
        let channel = connection.create_channel().await.expect("channel");
        QueueProbe {
            _connection: connection,
            channel,
        }
    }

    /// Messages ready in `queue` (passive declare; the queue must exist).
    pub async fn count(&self, queue: &str) -> u32 {
        self.declare_passive(queue).await.message_count()
    }

    /// Consumers subscribed to `queue` right now (passive declare; the queue must exist).
    pub async fn consumers(&self, queue: &str) -> u32 {
        self.declare_passive(queue).await.consumer_count()
    }

    async fn declare_passive(&self, queue: &str) -> intake_broker::lapin::Queue {
        let options = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        self.channel
            .queue_declare(queue.into(), options, FieldTable::default())
            .await
            .expect("queue exists")
    }

    /// Takes (and acks) every ready message of `queue`.
    pub async fn drain(&self, queue: &str) -> Vec<Taken> {
        let mut taken = Vec::new();
        while let Some(message) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .expect("basic.get")
        {
            let delivery = message.delivery;
            delivery.acker.ack(BasicAckOptions::default()).await.expect("ack");
            taken.push(Taken {
                body: delivery.data,
                properties: delivery.properties,
                routing_key: delivery.routing_key.to_string(),
            });
        }
        taken
    }

    /// Deletes a queue (to provoke unroutable publishes).
    pub async fn delete(&self, queue: &str) {
        self.channel
            .queue_delete(queue.into(), QueueDeleteOptions::default())
            .await
            .expect("queue.delete");
    }

    /// Deletes every queue and exchange of a test prefix's topology.
    pub async fn cleanup(&self, topology: &intake_broker::Topology) {
        let _ = intake_broker::admin::delete_topology(AMQP_URL, topology).await;
    }
}

/// A run-unique topology under `tag` with the given retry tiers and the test queue expiry, and a
/// connected publisher that has declared it (so probes can look at its queues at once).
pub async fn test_broker(tag: &str, tiers: &str) -> (intake_broker::Topology, intake_broker::Publisher) {
    use std::time::Duration;
    let tiers = intake_broker::topology::parse_retry_tiers(tiers).expect("tiers");
    let topology = intake_broker::Topology::new(crate::unique_name(tag), tiers)
        .with_queue_expiry(Some(Duration::from_secs(crate::TEST_QUEUE_EXPIRY_SECS)));
    let publisher = intake_broker::Publisher::start(intake_broker::PublisherConfig {
        amqp_url: AMQP_URL.into(),
        topology: topology.clone(),
        channels: 2,
        confirm_timeout: Duration::from_secs(5),
        role: "test-publisher",
    });
    assert!(
        publisher.wait_connected(Duration::from_secs(10)).await,
        "broker reachable"
    );
    (topology, publisher)
}
