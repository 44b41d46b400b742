//! `intake trace`: one webhook's whole life — received, its events' outcomes, parked and
//! released, dead-lettered and replayed, the contact change it caused, relayed, synced — as one
//! timeline, by envelope id or by endpoint and dedupe key.

use uuid::Uuid;

use crate::{Admin, AdminError, EXIT_NOT_FOUND, EXIT_OK, print_json, print_table};

/// `intake trace …`
#[derive(Debug, Clone, clap::Args)]
pub struct TraceArgs {
    /// The envelope id (the AMQP message id, in logs as `envelope_id`).
    #[arg(required_unless_present_all = ["endpoint", "dedupe_key"])]
    pub envelope_id: Option<Uuid>,
    /// The endpoint name (with --dedupe-key, instead of an envelope id).
    #[arg(long, requires = "dedupe_key", conflicts_with = "envelope_id")]
    pub endpoint: Option<String>,
    /// The event's dedupe key (with --endpoint).
    #[arg(long, requires = "endpoint")]
    pub dedupe_key: Option<String>,
    /// One JSON document instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Runs `trace`; returns the exit code.
pub async fn run(admin: &Admin, args: TraceArgs) -> Result<u8, AdminError> {
    let id = match (args.envelope_id, &args.endpoint, &args.dedupe_key) {
        (Some(id), _, _) => Some(id),
        (None, Some(endpoint), Some(key)) => admin.store().envelope_of(endpoint, key).await?,
        _ => {
            return Err(AdminError::Usage(
                "name an envelope id, or --endpoint and --dedupe-key".into(),
            ));
        }
    };
    let Some(id) = id else {
        eprintln!("no event with that endpoint and dedupe key");
        return Ok(EXIT_NOT_FOUND);
    };
    let steps = admin.store().trace(id).await?;
    if steps.is_empty() {
        eprintln!("nothing known of envelope {id} (never received, or past retention)");
        return Ok(EXIT_NOT_FOUND);
    }
    if args.json {
        print_json(&serde_json::json!({ "envelope_id": id, "steps": steps }))?;
    } else {
        println!("envelope {id}");
        let rows: Vec<Vec<String>> = steps
            .iter()
            .map(|s| {
                vec![
                    s.at.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
                    s.step.clone(),
                    s.detail.clone(),
                ]
            })
            .collect();
        print_table(&["AT", "STEP", "DETAIL"], &rows);
    }
    Ok(EXIT_OK)
}
