//! `bucky config show`: every setting of the cluster commands in force, and where each came from (flag,
//! env VAR, file PATH [cluster], default), resolved exactly as the other commands resolve them
//! ([`crate::settings::Settings::resolve`]).

use std::io::Write;

use serde::Serialize;

use crate::cli::ConfigCommand;
use crate::printer::Printer;
use crate::settings::{Environment, Settings};
use crate::ExitStatus;

/// One setting in `--json`.
#[derive(Debug, Serialize)]
struct Entry {
    value: Option<String>,
    source: String,
}

/// Runs `bucky config …`.
pub(super) fn run(command: &ConfigCommand) -> anyhow::Result<ExitStatus> {
    let ConfigCommand::Show(args) = command;
    let settings = Settings::resolve(&args.cluster, &Environment::from_process())?;
    let printer = Printer::new(args.cluster.json, false, false);
    if printer.json() {
        let map: serde_json::Map<String, serde_json::Value> = settings
            .shown
            .iter()
            .map(|s| {
                let entry = Entry { value: s.value.clone(), source: s.source.to_string() };
                (s.key.to_owned(), serde_json::to_value(entry).unwrap_or_default())
            })
            .collect();
        printer.print_json(&map)?;
        return Ok(ExitStatus::Success);
    }
    let width = settings.shown.iter().map(|s| s.key.len()).max().unwrap_or(0);
    let value_width = settings.shown.iter().map(|s| s.value.as_deref().unwrap_or("-").len()).max().unwrap_or(0);
    let mut out = printer.stdout();
    for s in &settings.shown {
        writeln!(out, "{:width$}  {:value_width$}  ({})", s.key, s.value.as_deref().unwrap_or("-"), s.source)?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
