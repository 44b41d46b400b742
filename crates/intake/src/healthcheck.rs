//! `intake healthcheck URL`: GET the URL, exit 0 on 200 and 1 otherwise (another status, no
//! answer within the timeout, unreachable). For container healthchecks in an image without curl.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::HealthcheckArgs;

/// Checks the URL once; says why on stderr when unhealthy.
pub async fn run(args: &HealthcheckArgs) -> ExitCode {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_millis(args.timeout_ms))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            eprintln!("healthcheck: {e}");
            return ExitCode::FAILURE;
        }
    };
    match client.get(&args.url).send().await {
        Ok(response) if response.status() == reqwest::StatusCode::OK => ExitCode::SUCCESS,
        Ok(response) => {
            eprintln!("healthcheck: {} answered {}", args.url, response.status());
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("healthcheck: {} unreachable ({e})", args.url);
            ExitCode::FAILURE
        }
    }
}
