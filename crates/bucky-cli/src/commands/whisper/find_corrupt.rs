//! `bucky whisper find-corrupt`: whisper's `find-corrupt-whisper-files.py`, with the reason. Lists every
//! `.wsp` whose header fails [`whisper::check_file`]'s validation; never changes or deletes anything.

use std::io::{self, Write};
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use super::walk::{self, Found};
use crate::ExitStatus;

/// `bucky whisper find-corrupt`.
#[derive(Debug, Args)]
#[command(after_help = "\
Checks what whisper checks (header size, aggregation type, xFilesFactor, archive entries) and what it \
forgets: no archives, empty archives, archives inside the header, overlapping, out of order or past the end \
of the file (truncated), a file longer than its archives, a maxRetention that disagrees with them. Prints \
`PATH: corrupt|malformed: REASON` per bad file. Exits 1 if any file is bad or could not be read (those are \
reported on stderr), 0 otherwise.")]
pub struct FindCorruptArgs {
    /// Directories to walk for *.wsp (hidden directories and symlinks skipped), or files to check.
    /// Default: the --prefix tree.
    pub paths: Vec<PathBuf>,
    /// The whisper tree walked when no PATH is given.
    #[arg(short = 'p', long, default_value = "/opt/graphite/storage/whisper")]
    pub prefix: PathBuf,
    /// Print one JSON summary instead: files scanned, and each bad or unreadable file with its reason.
    #[arg(long, short = 'j')]
    pub json: bool,
}

/// Runs `bucky whisper find-corrupt`.
pub fn run(args: FindCorruptArgs) -> Result<ExitStatus> {
    let roots = if args.paths.is_empty() { vec![args.prefix.clone()] } else { args.paths.clone() };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut scanned = 0usize;
    let mut bad = Vec::new();
    let mut unreadable = Vec::new();
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
                eprintln!("bucky: {e}");
                unreadable.push(json!({"path": path.display().to_string(), "error": e.to_string()}));
            }
        }
    });
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let ok = bad.is_empty() && unreadable.is_empty();
    if args.json {
        writeln!(out, "{}", json!({"scanned": scanned, "bad": bad, "errors": unreadable}))?;
    }
    out.flush()?;
    Ok(ExitStatus::from_ok(ok))
}
