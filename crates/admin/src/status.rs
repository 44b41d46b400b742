//! `intake status`: what waits where, right now. Per queue: ready messages and consumers (passive
//! declare over AMQP) and unacked ones (from RabbitMQ's Prometheus endpoint, when it answers);
//! parked events and the oldest's age; open dead letters by reason; the outbox backlog.

use std::collections::HashMap;
use std::time::Duration;

use intake_broker::admin;
use serde::Serialize;

use crate::{Admin, AdminError, EXIT_OK, print_json, print_table};

/// `intake status`
#[derive(Debug, Clone, clap::Args)]
pub struct StatusArgs {
    /// One JSON document instead of tables.
    #[arg(long)]
    pub json: bool,
}

/// One queue's numbers.
#[derive(Debug, Serialize)]
pub struct QueueStatus {
    /// Queue name.
    pub queue: String,
    /// Whether it exists.
    pub exists: bool,
    /// Messages ready for delivery.
    pub ready: u32,
    /// Messages delivered and not yet acked (null when RabbitMQ's metrics endpoint is away).
    pub unacked: Option<u64>,
    /// Consumers attached.
    pub consumers: u32,
}

/// The whole status document (`--json`).
#[derive(Debug, Serialize)]
pub struct Status {
    /// Every queue of the prefix.
    pub queues: Vec<QueueStatus>,
    /// Parked events.
    pub parked: u64,
    /// Age of the oldest parked event, seconds.
    pub oldest_parked_seconds: f64,
    /// Dead letters that still need an operator, by reason.
    pub open_dead_letters: HashMap<String, i64>,
    /// Contact changes not yet relayed to the sync queue.
    pub outbox_backlog: i64,
}

/// Unacked messages per queue from RabbitMQ's Prometheus plugin (`/metrics/detailed`, queue
/// coarse metrics); empty when it does not answer.
async fn unacked_by_queue(base: &str) -> HashMap<String, u64> {
    let url = format!(
        "{}/metrics/detailed?family=queue_coarse_metrics",
        base.trim_end_matches('/')
    );
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build();
    let Ok(client) = client else { return HashMap::new() };
    let Ok(response) = client.get(&url).send().await else {
        return HashMap::new();
    };
    let Ok(text) = response.text().await else {
        return HashMap::new();
    };
    parse_unacked(&text)
}

fn parse_unacked(text: &str) -> HashMap<String, u64> {
    let mut out = HashMap::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("rabbitmq_detailed_queue_messages_unacked{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let queue = labels
            .split(',')
            .find_map(|l| l.strip_prefix("queue=\""))
            .map(|q| q.trim_end_matches('"').to_owned());
        if let (Some(queue), Ok(v)) = (queue, value.trim().parse::<f64>()) {
            out.insert(queue, v as u64);
        }
    }
    out
}

/// Runs `status`; returns the exit code.
pub async fn run(
    admin: &Admin,
    config_amqp_url: &str,
    metrics_url: &str,
    args: StatusArgs,
) -> Result<u8, AdminError> {
    let names = admin.topology().all_queues();
    let stats = admin::queue_stats(config_amqp_url, &names).await?;
    let unacked = unacked_by_queue(metrics_url).await;
    let metrics_answered = !unacked.is_empty();
    let queues: Vec<QueueStatus> = stats
        .into_iter()
        .map(|s| QueueStatus {
            unacked: if metrics_answered {
                Some(unacked.get(&s.name).copied().unwrap_or(0))
            } else {
                None
            },
            queue: s.name,
            exists: s.exists,
            ready: s.ready,
            consumers: s.consumers,
        })
        .collect();
    let parked = admin.store().parked_stats().await?;
    let open = admin.store().unresolved_dead_letters_by_reason().await?;
    let backlog = admin.store().outbox_backlog("contacts.changed").await?;
    let status = Status {
        queues,
        parked: u64::try_from(parked.count).unwrap_or(0),
        oldest_parked_seconds: parked.oldest_age.as_secs_f64(),
        open_dead_letters: open.into_iter().collect(),
        outbox_backlog: backlog,
    };
    if args.json {
        print_json(&status)?;
        return Ok(EXIT_OK);
    }
    let rows: Vec<Vec<String>> = status
        .queues
        .iter()
        .map(|q| {
            vec![
                q.queue.clone(),
                if q.exists {
                    q.ready.to_string()
                } else {
                    "missing".into()
                },
                q.unacked.map_or_else(|| "?".into(), |n| n.to_string()),
                q.consumers.to_string(),
            ]
        })
        .collect();
    print_table(&["QUEUE", "READY", "UNACKED", "CONSUMERS"], &rows);
    println!();
    println!(
        "parked events: {} (oldest {:.0} s)",
        status.parked, status.oldest_parked_seconds
    );
    let mut reasons: Vec<_> = status.open_dead_letters.iter().collect();
    reasons.sort();
    let total: i64 = reasons.iter().map(|(_, n)| **n).sum();
    println!("open dead letters: {total}");
    for (reason, n) in reasons {
        println!("  {reason}: {n}");
    }
    println!("outbox backlog: {}", status.outbox_backlog);
    if !metrics_answered {
        println!("(unacked counts need RabbitMQ's Prometheus plugin at INTAKE_RABBITMQ_METRICS_URL)");
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacked_is_read_per_queue() {
        let text = "# TYPE rabbitmq_detailed_queue_messages_unacked gauge\n\
            rabbitmq_detailed_queue_messages_unacked{vhost=\"/\",queue=\"p.q.spark\"} 3\n\
            rabbitmq_detailed_queue_messages_ready{vhost=\"/\",queue=\"p.q.spark\"} 9\n";
        let got = parse_unacked(text);
        assert_eq!(got.get("p.q.spark"), Some(&3));
        assert_eq!(got.len(), 1);
    }
}
