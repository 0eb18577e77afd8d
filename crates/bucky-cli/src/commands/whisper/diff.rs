//! `bucky whisper diff`: whisper 1.1.10's `whisper-diff.py`, same options, same output byte for byte.

use std::io::{self, Write};

use anyhow::Result;
use whisper::{ArchiveDiff, DiffOptions, WhisperFile};

use super::pyfmt::{repr, PyJson};
use crate::cli::DiffArgs;
use crate::ExitStatus;

/// Runs `bucky whisper diff`.
pub(crate) fn run(args: DiffArgs) -> Result<ExitStatus> {
    let a = WhisperFile::open(&args.path_a)?;
    let b = WhisperFile::open(&args.path_b)?;
    let options =
        DiffOptions { ignore_empty: args.ignore_empty, until: args.until, now: super::common::now_or_clock(args.now) };
    let diffs = whisper::diff(&a, &b, &options)?;
    let text = if args.json {
        json_text(&diffs, &args)
    } else if args.summary {
        summary_text(&diffs, !args.columns, !args.no_headers)
    } else {
        diffs_text(&diffs, !args.columns, !args.no_headers)
    };
    let mut out = io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// `str()` of a value or of None.
fn value_text(v: Option<f64>) -> String {
    v.map_or_else(|| "None".to_owned(), repr)
}

/// whisper-diff's `print_diffs`.
fn diffs_text(diffs: &[ArchiveDiff], pretty: bool, headers: bool) -> String {
    let mut out = String::new();
    let header = |out: &mut String, first: &str| {
        if pretty {
            out.push_str(&format!("{first:>7} {:>11} {:>13} {:>13}\n", "timestamp", "value_a", "value_b"));
        } else {
            out.push_str(&format!("{first} timestamp value_a value_b\n"));
        }
    };
    if headers {
        header(&mut out, "archive");
    }
    for d in diffs {
        if pretty {
            out.push_str(&format!("Archive {} ({} of {} datapoints differ)\n", d.archive, d.points.len(), d.total));
            header(&mut out, "");
        }
        for p in &d.points {
            let (a, b) = (value_text(p.a), value_text(p.b));
            if pretty {
                out.push_str(&format!("{:>7} {:>11} {a:>13} {b:>13}\n", "", p.timestamp));
            } else {
                out.push_str(&format!("{} {} {a} {b}\n", d.archive, p.timestamp));
            }
        }
    }
    out
}

/// whisper-diff's `print_summary`.
fn summary_text(diffs: &[ArchiveDiff], pretty: bool, headers: bool) -> String {
    let mut out = String::new();
    let mut row = |a: &dyn std::fmt::Display, b: &dyn std::fmt::Display, c: &dyn std::fmt::Display| {
        if pretty {
            out.push_str(&format!("{:>7} {:>9} {:>9}\n", a.to_string(), b.to_string(), c.to_string()));
        } else {
            out.push_str(&format!("{a} {b} {c}\n"));
        }
    };
    if headers {
        row(&"archive", &"total", &"differing");
    }
    for d in diffs {
        row(&d.archive, &d.total, &d.points.len());
    }
    out
}

/// whisper-diff's `print_summary_json` / `print_diffs_json`.
fn json_text(diffs: &[ArchiveDiff], args: &DiffArgs) -> String {
    let archives = diffs
        .iter()
        .map(|d| {
            let mut fields = vec![("archive", PyJson::Int(d.archive as i64))];
            if !args.summary {
                let points = d
                    .points
                    .iter()
                    .map(|p| {
                        PyJson::Object(vec![
                            ("timestamp", PyJson::Int(p.timestamp)),
                            ("value_a", PyJson::opt_float(p.a)),
                            ("value_b", PyJson::opt_float(p.b)),
                        ])
                    })
                    .collect();
                fields.push(("datapoint", PyJson::List(points)));
            }
            fields.push(("points", PyJson::Int(d.points.len() as i64)));
            fields.push(("total", PyJson::Int(d.total as i64)));
            PyJson::Object(fields)
        })
        .collect();
    let document = PyJson::Object(vec![
        ("archives", PyJson::List(archives)),
        ("path_a", PyJson::str(&args.path_a)),
        ("path_b", PyJson::str(&args.path_b)),
    ]);
    document.dumps_indented() + "\n"
}
