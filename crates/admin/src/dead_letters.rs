//! `intake dead-letters`: list what failed, show one (its body only with `--body`: it may hold
//! PHI), replay one or many, purge. A replay republishes the original message, confirmed, to its
//! work queue, where it meets the worker's dedupe and ordering rules again: an event that never
//! took effect (dead-lettered, ordering timeout, dropped while parked) is applied; one that did
//! is a duplicate and is skipped here unless `--force`.

use chrono::{DateTime, Utc};
use intake_broker::{Publisher, codec, dead};
use intake_core::{Envelope, Provider};
use intake_store::{DeadLetterFilter, DeadLetterRow};
use serde::Serialize;

use crate::{Admin, AdminError, EXIT_NOT_FOUND, EXIT_OK, EXIT_REFUSED, parse_when, print_json, print_table};

/// Which dead letters (all filters optional; all must match).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct Filter {
    /// Only this provider (spark, sparkloop, spark360, healthsherpa, standard).
    #[arg(long)]
    pub provider: Option<String>,
    /// Only this endpoint name.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Only this reason (e.g. retries_exhausted, ordering_timeout, delivery_limit).
    #[arg(long)]
    pub reason: Option<String>,
    /// Only from this consumer: ingest or sync.
    #[arg(long)]
    pub source: Option<String>,
    /// Dead-lettered at or after (2h, 7d, 2026-11-25, or RFC 3339).
    #[arg(long, value_parser = parse_when)]
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before (same forms as --since).
    #[arg(long, value_parser = parse_when)]
    pub until: Option<DateTime<Utc>>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.provider.is_none()
            && self.endpoint.is_none()
            && self.reason.is_none()
            && self.source.is_none()
            && self.since.is_none()
            && self.until.is_none()
    }

    fn to_store(&self, limit: i64, include_resolved: bool) -> DeadLetterFilter {
        DeadLetterFilter {
            provider: self.provider.clone(),
            endpoint: self.endpoint.clone(),
            reason: self.reason.clone(),
            source: self.source.clone(),
            since: self.since,
            until: self.until,
            include_resolved,
            limit,
        }
    }
}

/// `intake dead-letters …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum DeadLettersCommand {
    /// List dead letters, newest first (open ones unless --all).
    List {
        #[command(flatten)]
        filter: Filter,
        /// Include replayed and purged ones.
        #[arg(long)]
        all: bool,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one dead letter.
    Show {
        /// Its id (from `list`).
        id: i64,
        /// Print the original body too (it may hold PHI).
        #[arg(long)]
        body: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Replay one dead letter by id, or every open one matching a filter, oldest first.
    Replay {
        /// The dead letter's id; without it, a filter selects.
        id: Option<i64>,
        #[command(flatten)]
        filter: Filter,
        /// At most this many (filter replays).
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// Say what would be replayed, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Replay an event even if it already took effect (its inbox row is forgotten first).
        #[arg(long)]
        force: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Mark every open dead letter matching a filter purged (kept until retention, no longer
    /// counted as needing an operator).
    Purge {
        #[command(flatten)]
        filter: Filter,
        /// At most this many.
        #[arg(long, default_value_t = 1000)]
        limit: i64,
        /// Do it (without: say how many would be purged, exit 4).
        #[arg(long)]
        yes: bool,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// A dead letter in `list` and `show` output (no body).
#[derive(Debug, Serialize)]
struct Listed<'a> {
    #[serde(flatten)]
    row: &'a DeadLetterRow,
}

/// What a replay did with one dead letter.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Replayed {
    /// The dead letter's id.
    pub id: i64,
    /// `replayed`, `would_replay`, `skipped_already_applied`, `skipped_parked`, `failed`.
    pub outcome: String,
    /// Why, for skips and failures.
    pub detail: Option<String>,
}

fn list_rows(rows: &[DeadLetterRow]) {
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.to_string(),
                r.dead_lettered_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                r.source.clone(),
                r.provider.clone().unwrap_or_default(),
                r.endpoint.clone().unwrap_or_default(),
                r.reason.clone(),
                r.attempts.to_string(),
                r.event_type.clone().unwrap_or_default(),
                r.message_id.to_string(),
                r.resolution.clone().unwrap_or_else(|| "open".into()),
            ]
        })
        .collect();
    print_table(
        &[
            "ID",
            "DEAD-LETTERED",
            "SOURCE",
            "PROVIDER",
            "ENDPOINT",
            "REASON",
            "ATTEMPTS",
            "EVENT",
            "MESSAGE",
            "STATE",
        ],
        &rows,
    );
}

/// Runs a `dead-letters` command; returns the exit code.
pub async fn run(admin: &Admin, command: DeadLettersCommand) -> Result<u8, AdminError> {
    match command {
        DeadLettersCommand::List {
            filter,
            all,
            limit,
            json,
        } => {
            let rows = admin
                .store()
                .list_dead_letters(&filter.to_store(limit, all))
                .await?;
            if json {
                print_json(&rows.iter().map(|row| Listed { row }).collect::<Vec<_>>())?;
            } else {
                list_rows(&rows);
            }
            Ok(EXIT_OK)
        }
        DeadLettersCommand::Show { id, body, json } => {
            let Some(row) = admin.store().dead_letter(id).await? else {
                eprintln!("no dead letter {id}");
                return Ok(EXIT_NOT_FOUND);
            };
            let text_body =
                body.then(|| String::from_utf8_lossy(row.body.as_deref().unwrap_or_default()).into_owned());
            if json {
                #[derive(Serialize)]
                struct Shown<'a> {
                    #[serde(flatten)]
                    row: &'a DeadLetterRow,
                    first_error: Option<&'a str>,
                    last_error: Option<&'a str>,
                    body: Option<String>,
                }
                print_json(&Shown {
                    row: &row,
                    first_error: row.first_error.as_deref(),
                    last_error: row.last_error.as_deref(),
                    body: text_body,
                })?;
            } else {
                list_rows(std::slice::from_ref(&row));
                println!();
                println!("dedupe key:  {}", row.dedupe_key.as_deref().unwrap_or("-"));
                println!("received at: {}", row.received_at.to_rfc3339());
                println!(
                    "queue:       {}",
                    row.queue.as_deref().unwrap_or("(the provider's)")
                );
                println!("first error: {}", row.first_error.as_deref().unwrap_or("-"));
                println!("last error:  {}", row.last_error.as_deref().unwrap_or("-"));
                println!(
                    "replays:     {}{}",
                    row.replay_count,
                    row.replayed_at
                        .map(|t| format!(" (last {})", t.to_rfc3339()))
                        .unwrap_or_default()
                );
                match text_body {
                    Some(b) => println!("body:\n{b}"),
                    None => println!(
                        "body:        {} bytes (--body to print it; it may hold PHI)",
                        row.body.as_ref().map_or(0, Vec::len)
                    ),
                }
            }
            Ok(EXIT_OK)
        }
        DeadLettersCommand::Replay {
            id,
            filter,
            limit,
            dry_run,
            force,
            json,
        } => {
            let rows = match id {
                Some(id) => match admin.store().dead_letter(id).await? {
                    Some(row) => vec![row],
                    None => {
                        eprintln!("no dead letter {id}");
                        return Ok(EXIT_NOT_FOUND);
                    }
                },
                None if filter.is_empty() => {
                    return Err(AdminError::Usage(
                        "name a dead letter id or at least one filter (--reason, --since, …)".into(),
                    ));
                }
                None => {
                    let mut rows = Vec::new();
                    for listed in admin
                        .store()
                        .dead_letters_to_replay(&filter.to_store(limit, false))
                        .await?
                    {
                        rows.extend(admin.store().dead_letter(listed.id).await?);
                    }
                    rows
                }
            };
            let publisher = if dry_run {
                None
            } else {
                Some(admin.publisher().await?)
            };
            let mut results = Vec::with_capacity(rows.len());
            for row in &rows {
                results.push(replay_one(admin, publisher.as_ref(), row, force).await?);
            }
            if let Some(publisher) = publisher {
                publisher.close().await;
            }
            if json {
                print_json(&results)?;
            } else {
                let table: Vec<Vec<String>> = results
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.outcome.clone(),
                            r.detail.clone().unwrap_or_default(),
                        ]
                    })
                    .collect();
                print_table(&["ID", "OUTCOME", "DETAIL"], &table);
            }
            let refused = id.is_some() && results.iter().any(|r| r.outcome.starts_with("skipped"));
            Ok(if refused { EXIT_REFUSED } else { EXIT_OK })
        }
        DeadLettersCommand::Purge {
            filter,
            limit,
            yes,
            json,
        } => {
            if filter.is_empty() {
                return Err(AdminError::Usage(
                    "name at least one filter (--reason, --since, …) of what to purge".into(),
                ));
            }
            let store_filter = filter.to_store(limit, false);
            if !yes {
                let n = admin.store().list_dead_letters(&store_filter).await?.len();
                if json {
                    print_json(&serde_json::json!({ "purged": 0, "would_purge": n }))?;
                } else {
                    println!("{n} dead letter(s) would be purged; add --yes to purge them");
                }
                return Ok(EXIT_REFUSED);
            }
            let n = admin.store().purge_dead_letters(&store_filter).await?;
            if json {
                print_json(&serde_json::json!({ "purged": n }))?;
            } else {
                println!("{n} dead letter(s) purged");
            }
            Ok(EXIT_OK)
        }
    }
}

/// Replays one dead letter (or, without a publisher, says whether it would).
async fn replay_one(
    admin: &Admin,
    publisher: Option<&Publisher>,
    row: &DeadLetterRow,
    force: bool,
) -> Result<Replayed, AdminError> {
    let result = |outcome: &str, detail: Option<String>| Replayed {
        id: row.id,
        outcome: outcome.to_owned(),
        detail,
    };
    // Did the event take effect? The inbox knows (ingest events whose decoding got that far).
    let inbox = match (&row.endpoint, &row.dedupe_key) {
        (Some(endpoint), Some(key)) => admin
            .store()
            .inbox_outcome(endpoint, key)
            .await?
            .map(|outcome| (endpoint.clone(), key.clone(), outcome)),
        _ => None,
    };
    let mut forget = None;
    if let Some((endpoint, key, outcome)) = inbox {
        match outcome.as_str() {
            // Never took effect: its inbox row only says so, and must not make the replay a
            // duplicate.
            "dead_lettered" => forget = Some((endpoint, key)),
            "parked" => {
                return Ok(result(
                    "skipped_parked",
                    Some("the event is parked again; see `intake parked list`".into()),
                ));
            }
            took_effect if !force => {
                return Ok(result(
                    "skipped_already_applied",
                    Some(format!(
                        "the event took effect ({took_effect}); --force replays it anyway"
                    )),
                ));
            }
            _ => forget = Some((endpoint, key)),
        }
    }
    let Some(publisher) = publisher else {
        return Ok(result("would_replay", None));
    };
    let (routing_key, body, properties) = message_of(admin, row)?;
    if let Some((endpoint, key)) = forget {
        admin.store().forget_inbox(&endpoint, &key).await?;
    }
    let replays = u32::try_from(row.replay_count).unwrap_or(0).saturating_add(1);
    let properties = {
        let mut headers = properties.headers().clone().unwrap_or_default();
        headers.insert(
            dead::H_REPLAYS.into(),
            intake_broker::lapin::types::AMQPValue::LongLongInt(i64::from(replays)),
        );
        properties.with_headers(headers)
    };
    match publisher
        .publish(
            &admin.topology().ingress_exchange(),
            &routing_key,
            &body,
            properties,
        )
        .await
    {
        Ok(()) => {
            admin.store().mark_dead_letter_replayed(row.id).await?;
            tracing::info!(id = row.id, message_id = %row.message_id, "dead letter replayed");
            Ok(result("replayed", Some(format!("to {routing_key}"))))
        }
        Err(e) => Ok(result("failed", Some(e.to_string()))),
    }
}

/// The message to republish: an ingest event is rebuilt as its envelope (the row holds every
/// part of it); anything else is republished with the properties it was stored with. The routing
/// key is its work queue (every work queue is bound to the ingress exchange under its own name).
fn message_of(
    admin: &Admin,
    row: &DeadLetterRow,
) -> Result<(String, Vec<u8>, intake_broker::lapin::BasicProperties), AdminError> {
    let body = row.body.clone().unwrap_or_default();
    let provider = row.provider.as_deref().and_then(|p| p.parse::<Provider>().ok());
    let queue = row
        .queue
        .clone()
        .or_else(|| provider.map(|p| admin.topology().provider_queue(p)))
        .ok_or_else(|| AdminError::Usage(format!("dead letter {} names no queue to replay to", row.id)))?;
    if let (Some(provider), Some(endpoint), "ingest") = (provider, &row.endpoint, row.source.as_str()) {
        let headers: Vec<(String, String)> = serde_json::from_value(row.headers.clone()).unwrap_or_default();
        let envelope = Envelope {
            id: row.message_id,
            endpoint: endpoint.clone(),
            provider,
            received_at: row.received_at,
            headers,
            body: bytes::Bytes::from(body.clone()),
        };
        return Ok((queue, body, codec::envelope_properties(&envelope)));
    }
    let stored = row.properties.clone().unwrap_or_default();
    Ok((queue, body, dead::replay_properties(&stored, 0)))
}
