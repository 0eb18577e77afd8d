//! `bucky whisper find-corrupt`: whisper's `find-corrupt-whisper-files.py`, with the reason. Lists every
//! `.wsp` whose header fails [`whisper::check_file`]'s validation; never changes or deletes anything. A
//! go-whisper compressed file (go-carbon's `compressed = true`) is not corrupt, only another format: it is
//! counted apart (`compressed`), not checked.

use std::io::{self, Write};

use anyhow::Result;
use serde_json::json;

use super::walk::{self, Found};
use crate::cli::FindCorruptArgs;
use crate::error::one_line;
use crate::ExitStatus;

/// Runs `bucky whisper find-corrupt`.
pub(crate) fn run(args: FindCorruptArgs) -> Result<ExitStatus> {
    let roots = if args.paths.is_empty() { vec![args.prefix.clone()] } else { args.paths.clone() };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut scanned = 0usize;
    let mut bad = Vec::new();
    let mut unreadable = Vec::new();
    let mut compressed = 0usize;
    let mut write_error: Option<io::Error> = None;
    walk::whisper_files(&roots, &mut |found| {
        let path = match found {
            Found::File(path) => path,
            Found::Problem(path, e) => {
                eprintln!("bucky: {}: {e}", path.display());
                unreadable.push(json!({"path": path.display().to_string(), "error": e.to_string()}));
                return;
            }
        };
        scanned += 1;
        let Err(e) = whisper::check_file(path) else { return };
        if matches!(e, whisper::Error::Compressed { .. }) {
            compressed += 1;
            return;
        }
        match e.reason() {
            Some(reason) => {
                let kind = if matches!(e, whisper::Error::Malformed { .. }) { "malformed" } else { "corrupt" };
                if !args.json {
                    if let Err(e) = writeln!(out, "{}: {kind}: {reason}", path.display()) {
                        write_error.get_or_insert(e);
                    }
                }
                bad.push(json!({"path": path.display().to_string(), "kind": kind, "reason": reason}));
            }
            None => {
                let error = one_line(&e);
                eprintln!("bucky: {error}");
                unreadable.push(json!({"path": path.display().to_string(), "error": error}));
            }
        }
    });
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let ok = bad.is_empty() && unreadable.is_empty();
    if args.json {
        writeln!(out, "{}", json!({"scanned": scanned, "bad": bad, "errors": unreadable, "compressed": compressed}))?;
    } else if compressed > 0 {
        eprintln!("bucky: {compressed} compressed whisper files (go-carbon `compressed = true`) were not checked");
    }
    out.flush()?;
    Ok(ExitStatus::from_ok(ok))
}
