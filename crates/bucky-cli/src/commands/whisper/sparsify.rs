//! `bucky whisper sparsify`: buckytools' `bucky-sparsify`, made safe: holes are punched in place under the
//! file's exclusive flock instead of renaming a rewritten copy over a file carbon may hold open (see
//! [`whisper::sparsify`]).

use std::io::{self, Write};
use std::time::Duration;

use anyhow::Result;
use serde_json::{json, Value};
use whisper::{SparsifyOptions, SparsifyReport};

use super::walk::{self, Found};
use crate::cli::SparsifyArgs;
use crate::{ExitStatus, UsageError};

fn report_json(r: &SparsifyReport) -> Value {
    json!({
        "path": r.path.display().to_string(),
        "size": r.size,
        "allocatedBefore": r.allocated_before,
        "allocatedAfter": r.allocated_after,
        "zeroBytes": r.zero_bytes,
        "freed": r.freed(),
    })
}

/// Runs `bucky whisper sparsify`.
pub(crate) fn run(args: SparsifyArgs) -> Result<ExitStatus> {
    if args.lock_timeout > 24 * 3600 {
        return Err(UsageError("--lock-timeout is in seconds; give at most a day".into()).into());
    }
    let options = SparsifyOptions { dry_run: args.no_op, lock_timeout: Duration::from_secs(args.lock_timeout) };
    let mut out = io::BufWriter::new(io::stdout().lock());
    let mut reports: Vec<SparsifyReport> = Vec::new();
    let mut failed = 0usize;
    let mut write_error: Option<io::Error> = None;
    walk::whisper_files(&args.paths, &mut |found| match found {
        Found::File(path) => match whisper::sparsify(path, &options) {
            Ok(report) => {
                if !args.json && !args.quiet {
                    if let Err(e) = print_report(&mut out, &report, args.no_op) {
                        write_error.get_or_insert(e);
                    }
                }
                reports.push(report);
            }
            Err(e) => {
                failed += 1;
                eprintln!("bucky: {}", super::common::one_line_error(path, &e));
            }
        },
        Found::Problem(path, e) => {
            failed += 1;
            eprintln!("bucky: {}: {e}", path.display());
        }
    });
    if let Some(e) = write_error {
        return Err(e.into());
    }
    let freed: u64 = reports.iter().map(SparsifyReport::freed).sum();
    let zero: u64 = reports.iter().map(|r| r.zero_bytes).sum();
    if args.json {
        let summary = json!({
            "noOp": args.no_op,
            "files": reports.iter().map(report_json).collect::<Vec<_>>(),
            "zeroBytes": zero,
            "freed": freed,
            "errors": failed,
        });
        writeln!(out, "{summary}")?;
    } else if args.no_op {
        writeln!(out, "{} files, {zero} bytes in zero blocks could be freed (no-op: nothing changed)", reports.len())?;
    } else {
        writeln!(out, "{} files sparsified, {freed} bytes freed", reports.len())?;
    }
    out.flush()?;
    Ok(ExitStatus::from_ok(failed == 0))
}

fn print_report(out: &mut impl Write, r: &SparsifyReport, no_op: bool) -> io::Result<()> {
    if no_op {
        writeln!(
            out,
            "{}: would free {} bytes ({} allocated, size {})",
            r.path.display(),
            r.zero_bytes,
            r.allocated_before,
            r.size
        )
    } else {
        writeln!(
            out,
            "{}: freed {} bytes ({} -> {} allocated, size {})",
            r.path.display(),
            r.freed(),
            r.allocated_before,
            r.allocated_after,
            r.size
        )
    }
}
