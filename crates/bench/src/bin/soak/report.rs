//! The run's figures as Markdown: faults as they happened, the accounting table per provider,
//! the promises, and every finding (first ones in full).

use std::fmt::Write;

use crate::faults::Done;
use crate::verify::{Accounting, Finding, PROVIDERS, PerProvider};

/// What the run was.
#[derive(Debug)]
pub struct RunInfo {
    /// Heading line (date, size).
    pub title: String,
    /// One paragraph: build, machine, settings.
    pub setup: String,
    /// Seconds spent sending.
    pub send_s: f64,
    /// Seconds from the last delivery to a quiet pipeline.
    pub drain_s: f64,
    /// Exit statuses at the final SIGTERM, or problems.
    pub shutdown: String,
}

fn row(out: &mut String, label: &str, v: &PerProvider) {
    let total: u64 = v.iter().sum();
    let _ = writeln!(
        out,
        "| {label} | {} | {} | {} | {} | {total} |",
        v[0], v[1], v[2], v[3]
    );
}

fn findings(out: &mut String, title: &str, list: &[Finding]) {
    let _ = writeln!(out, "| {title} | **{}** |", list.len());
}

/// The Markdown section of one run.
pub fn markdown(info: &RunInfo, faults: &[Done], a: &Accounting) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "## {}\n", info.title);
    let _ = writeln!(out, "{}\n", info.setup);
    let _ = writeln!(
        out,
        "Sending took {:.0} s; the pipeline was quiet {:.0} s after the last delivery. {}\n",
        info.send_s, info.drain_s, info.shutdown
    );
    let _ = writeln!(
        out,
        "| # | fault (during traffic) | at | lasted | deliveries done before → after | detail |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    for (n, f) in faults.iter().enumerate() {
        let _ = writeln!(
            out,
            "| {} | {} | {:.1} s | {:.1} s | {} → {} | {} |",
            n + 1,
            f.fault.describe(),
            f.started_s,
            f.lasted_s,
            f.sent_before,
            f.sent_after,
            f.detail
        );
    }
    let _ = writeln!(out);
    let names: Vec<String> = PROVIDERS.iter().map(|(p, _)| p.to_string()).collect();
    let _ = writeln!(out, "| | {} | total |", names.join(" | "));
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    row(&mut out, "webhooks (distinct bodies)", &a.webhooks);
    row(
        &mut out,
        "deliveries (each webhook sent 1–3 times)",
        &a.deliveries,
    );
    row(&mut out, "HTTP attempts", &a.attempts);
    row(&mut out, "↳ retried after 5xx / 408 / 429", &a.retried_status);
    row(
        &mut out,
        "↳ retried after a connection error",
        &a.retried_connection,
    );
    row(
        &mut out,
        "answered 4xx (final; the junk meant to be refused)",
        &a.rejected,
    );
    row(&mut out, "given up (retry budget spent)", &a.gave_up);
    row(&mut out, "**accepted (2xx)**", &a.accepted);
    for (outcome, v) in &a.first {
        let label = match outcome.as_str() {
            "dead_lettered" => "Postgres: first delivery dead-lettered (counted below)".to_owned(),
            "duplicate" => "Postgres: first delivery of its key, equal to the current snapshot".to_owned(),
            other => format!("Postgres: first delivery of its key, {other}"),
        };
        row(&mut out, &label, v);
    }
    row(
        &mut out,
        "Postgres: later deliveries of a key (duplicates)",
        &a.duplicates,
    );
    for (reason, v) in &a.dead_letters {
        row(&mut out, &format!("Postgres: dead-lettered, `{reason}`"), v);
    }
    let processed = a.processed();
    row(&mut out, "**processed (Postgres)**", &processed);
    let mut extra = [0i64; 4];
    for i in 0..4 {
        extra[i] = processed[i] as i64 - a.accepted[i] as i64;
    }
    let _ = writeln!(
        out,
        "| processed − accepted | {} | {} | {} | {} | {} |",
        extra[0],
        extra[1],
        extra[2],
        extra[3],
        extra.iter().sum::<i64>()
    );
    row(
        &mut out,
        "ambiguous attempts (a 5xx or a broken connection: maybe enqueued)",
        &a.ambiguous,
    );
    row(
        &mut out,
        "stories whose final state was checked",
        &a.stories_checked,
    );
    row(
        &mut out,
        "stories not checkable (a delivery given up)",
        &a.stories_undetermined,
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "| promise (counted from Postgres) | found |");
    let _ = writeln!(out, "|---|---|");
    findings(
        &mut out,
        "lost: accepted webhooks whose effect or expected dead letter is missing",
        &a.lost_webhooks,
    );
    findings(
        &mut out,
        "lost: keys processed fewer times than accepted",
        &a.lost_deliveries,
    );
    findings(&mut out, "applied twice", &a.applied_twice);
    findings(
        &mut out,
        "ordering violations (final state ≠ expected, left parked)",
        &a.ordering,
    );
    findings(&mut out, "unexpected dead letters or answers", &a.unexpected);
    let _ = writeln!(out);
    let all: Vec<&Finding> = a
        .lost_webhooks
        .iter()
        .chain(&a.lost_deliveries)
        .chain(&a.applied_twice)
        .chain(&a.ordering)
        .chain(&a.unexpected)
        .collect();
    if all.is_empty() {
        let _ = writeln!(out, "**Result: every promise held.**\n");
    } else {
        let _ = writeln!(out, "**Result: {} findings.** The first ones:\n", all.len());
        for f in all.iter().take(30) {
            let when = f
                .at_s
                .map(|s| format!(" (settled at {s:.1} s)"))
                .unwrap_or_default();
            let _ = writeln!(out, "- {} — {}: {}{when}", f.provider, f.kind, f.detail);
        }
        let _ = writeln!(out);
    }
    out
}
