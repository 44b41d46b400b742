//! The alert runbook (README.md, "Alert runbook") tells operators which `intake` subcommands fix
//! what: every command it quotes must parse as the binary's command line — subcommand, flags and
//! (sample) values — so a renamed flag or subcommand fails here instead of during an incident.

use std::process::Command;

use intake_it::compose::workspace_root;

const INTAKE: &str = env!("CARGO_BIN_EXE_intake");

/// The runbook section of README.md.
fn runbook() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).expect("README.md");
    let (_, rest) = readme
        .split_once("\n## Alert runbook")
        .expect("README has an '## Alert runbook' section");
    rest.split("\n## ").next().unwrap_or(rest).to_owned()
}

/// Every inline code span of `text` that is an `intake …` command, whitespace normalised (a span
/// may wrap onto the next line).
fn intake_commands(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|span| span.starts_with("intake "))
        .collect()
}

/// The command's arguments with its placeholders (`<reason>`, `ID`, …) replaced by sample values
/// of the kind the option or position expects.
fn sample_args(command: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    let mut placeholder: Option<String> = None;
    for word in command.split_whitespace().skip(1) {
        if let Some(open) = placeholder.as_mut() {
            open.push(' ');
            open.push_str(word);
            if !word.ends_with('>') {
                continue;
            }
        } else if word.starts_with('<') && !word.ends_with('>') {
            placeholder = Some(word.to_owned());
            continue;
        }
        let word = placeholder.take().unwrap_or_else(|| word.to_owned());
        let previous = args.last().map(String::as_str).unwrap_or("");
        let value = if word.starts_with('<') || word == "ID" {
            match previous {
                "--since" | "--until" | "--older-than" => "2h",
                "--reason" => "retries_exhausted",
                "--source" => "ingest",
                "--endpoint" => "spark-agency-a",
                "trace" => "0193a6f2-0000-7000-8000-000000000000",
                _ => "42",
            }
            .to_owned()
        } else {
            word
        };
        args.push(value);
    }
    args
}

#[test]
fn every_command_the_runbook_quotes_parses() {
    let commands = intake_commands(&runbook());
    for needed in [
        "intake status",
        "intake dead-letters list",
        "intake dead-letters replay",
        "intake dead-letters purge",
        "intake parked list",
        "intake parked release",
        "intake parked drop",
        "intake trace",
    ] {
        assert!(
            commands.iter().any(|c| c.starts_with(needed)),
            "the runbook never quotes `{needed}`: {commands:?}"
        );
    }
    for command in &commands {
        let args = sample_args(command);
        // `--help` after the arguments: clap checks every argument before it, then prints help
        // and exits 0 without touching a database or broker.
        let output = Command::new(INTAKE)
            .args(&args)
            .arg("--help")
            .env_clear()
            .output()
            .expect("run intake");
        assert!(
            output.status.success(),
            "runbook command `{command}` does not parse (as `intake {} --help`): {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

#[test]
fn a_wrong_flag_or_subcommand_does_not_parse() {
    for args in [
        vec!["dead-letters", "list", "--reasons", "x"],
        vec!["parked", "relase", "42"],
    ] {
        let output = Command::new(INTAKE)
            .args(&args)
            .arg("--help")
            .env_clear()
            .output()
            .expect("run intake");
        assert!(
            !output.status.success(),
            "`intake {}` must not parse",
            args.join(" ")
        );
    }
}
