//! `bucky json [names|-]`: turn a newline-separated list of names into a JSON array.

use std::io::{Read, Write};

use anyhow::Context;

use crate::cli::JsonArgs;
use crate::names::parse_name_list;
use crate::ExitStatus;

/// Prints the JSON array.
pub(super) fn run(args: &JsonArgs) -> anyhow::Result<ExitStatus> {
    let mut names = Vec::new();
    if args.names.is_empty() || args.names.iter().any(|n| n == "-") {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read names from stdin")?;
        names.extend(parse_name_list(&text)?);
    }
    names.extend(args.names.iter().filter(|n| *n != "-").cloned());
    let mut out = std::io::stdout().lock();
    serde_json::to_writer(&mut out, &names)?;
    out.write_all(b"\n")?;
    out.flush()?;
    Ok(ExitStatus::Success)
}
