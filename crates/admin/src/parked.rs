//! `intake parked`: list events waiting for a prerequisite, release one now without it (explicit
//! and logged), or drop one to the dead letters (`dropped_by_operator`, replayable later).

use std::time::Duration;

use crate::{Admin, AdminError, EXIT_NOT_FOUND, EXIT_OK, parse_duration, print_json, print_table};

/// `intake parked …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ParkedCommand {
    /// List parked events, oldest first.
    List {
        /// Only those parked longer than this (30m, 2h, 1d).
        #[arg(long, value_parser = parse_duration)]
        older_than: Option<Duration>,
        /// At most this many.
        #[arg(long, default_value_t = 100)]
        limit: i64,
        /// One JSON array instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Apply a parked event now, without its prerequisite.
    Release {
        /// Its id (from `list`).
        id: i64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Move a parked event to the dead letters (reason dropped_by_operator).
    Drop {
        /// Its id (from `list`).
        id: i64,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a `parked` command; returns the exit code.
pub async fn run(admin: &Admin, command: ParkedCommand) -> Result<u8, AdminError> {
    match command {
        ParkedCommand::List {
            older_than,
            limit,
            json,
        } => {
            let rows = admin
                .store()
                .list_parked(older_than.unwrap_or_default().as_secs_f64(), limit)
                .await?;
            if json {
                print_json(&rows)?;
            } else {
                let table: Vec<Vec<String>> = rows
                    .iter()
                    .map(|r| {
                        vec![
                            r.id.to_string(),
                            r.parked_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                            r.provider.clone(),
                            r.event_type.clone(),
                            r.entity.clone(),
                            r.waits_for.clone(),
                            r.deadline.format("%Y-%m-%d %H:%M:%S").to_string(),
                            r.envelope_id.to_string(),
                        ]
                    })
                    .collect();
                print_table(
                    &[
                        "ID",
                        "PARKED",
                        "PROVIDER",
                        "EVENT",
                        "ENTITY",
                        "WAITS FOR",
                        "DEADLINE",
                        "ENVELOPE",
                    ],
                    &table,
                );
            }
            Ok(EXIT_OK)
        }
        ParkedCommand::Release { id, json } => match admin.store().release_parked(id).await? {
            None => {
                eprintln!("no parked event {id}");
                Ok(EXIT_NOT_FOUND)
            }
            Some(done) => {
                if json {
                    print_json(&serde_json::json!({
                        "released": id,
                        "envelope_id": done.envelope_id,
                        "event_type": done.event_type,
                        "also_released": done.also_released.len(),
                        "contacts_changed": done.changed_contacts,
                    }))?;
                } else {
                    println!(
                        "parked event {id} ({}, envelope {}) applied without its prerequisite; {} more released",
                        done.event_type,
                        done.envelope_id,
                        done.also_released.len()
                    );
                }
                Ok(EXIT_OK)
            }
        },
        ParkedCommand::Drop { id, json } => match admin.store().drop_parked(id).await? {
            None => {
                eprintln!("no parked event {id}");
                Ok(EXIT_NOT_FOUND)
            }
            Some(done) => {
                if json {
                    print_json(&serde_json::json!({
                        "dropped": id,
                        "envelope_id": done.envelope_id,
                        "event_type": done.event_type,
                        "reason": intake_store::DROPPED_BY_OPERATOR,
                    }))?;
                } else {
                    println!(
                        "parked event {id} ({}, envelope {}) moved to the dead letters ({})",
                        done.event_type,
                        done.envelope_id,
                        intake_store::DROPPED_BY_OPERATOR
                    );
                }
                Ok(EXIT_OK)
            }
        },
    }
}
