//! `intake keys`: the PHI keys seen from the data. `status` counts, per sealed column, the values
//! each key id seals (and plaintext still waiting to be sealed); `rotate` re-seals in batches every
//! value not under the current key (the first of `INTAKE_ENCRYPTION_KEYS`), which must list the
//! old keys too until it is done. Idempotent: run it again to check that nothing is left.

use serde::Serialize;

use crate::{Admin, AdminError, EXIT_OK, print_json, print_table};

/// `intake keys …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum KeysCommand {
    /// Values per sealed column and key id; plaintext waiting to be sealed.
    Status {
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Re-seal under the current key every value sealed under another.
    Rotate {
        /// Rows per transaction.
        #[arg(long, default_value_t = 500, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        batch: i64,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// Runs one `keys` command.
pub async fn run(admin: &Admin, command: KeysCommand) -> Result<u8, AdminError> {
    let current = admin.store().keys().current_key_id().to_owned();
    match command {
        KeysCommand::Status { json } => {
            let usage = admin.store().key_usage().await?;
            let pending = admin.store().pending_plaintext().await?;
            let not_current: i64 = usage
                .iter()
                .filter(|u| u.key_id != current)
                .map(|u| u.values)
                .sum();
            if json {
                #[derive(Serialize)]
                struct Status<'a> {
                    current_key: &'a str,
                    configured_keys: Vec<&'a str>,
                    columns: &'a [intake_store::KeyUsage],
                    not_under_current_key: i64,
                    plaintext_to_seal: i64,
                }
                print_json(&Status {
                    current_key: &current,
                    configured_keys: admin.store().keys().key_ids(),
                    columns: &usage,
                    not_under_current_key: not_current,
                    plaintext_to_seal: pending,
                })?;
            } else {
                println!(
                    "current key: {current} (configured: {})",
                    admin.store().keys().key_ids().join(", ")
                );
                let rows: Vec<Vec<String>> = usage
                    .iter()
                    .map(|u| vec![u.column.clone(), u.key_id.clone(), u.values.to_string()])
                    .collect();
                print_table(&["COLUMN", "KEY", "VALUES"], &rows);
                println!(
                    "not under the current key: {not_current}; plaintext waiting to be sealed: {pending}"
                );
            }
            Ok(EXIT_OK)
        }
        KeysCommand::Rotate { batch, json } => {
            let report = admin.store().rotate_keys(batch).await?;
            let total: u64 = report.iter().map(|r| r.resealed).sum();
            tracing::info!(current_key = %current, resealed = total, "keys rotated");
            if json {
                #[derive(Serialize)]
                struct Rotated<'a> {
                    current_key: &'a str,
                    resealed: u64,
                    columns: &'a [intake_store::Resealed],
                }
                print_json(&Rotated {
                    current_key: &current,
                    resealed: total,
                    columns: &report,
                })?;
            } else {
                let rows: Vec<Vec<String>> = report
                    .iter()
                    .map(|r| vec![r.column.clone(), r.resealed.to_string()])
                    .collect();
                print_table(&["COLUMN", "RESEALED"], &rows);
                println!("{total} value(s) re-sealed under key {current}");
            }
            Ok(EXIT_OK)
        }
    }
}
