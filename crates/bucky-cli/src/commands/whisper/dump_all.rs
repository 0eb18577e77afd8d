//! `bucky whisper dump --all`: every slot of every archive in file order, empty ones included, exactly as
//! whisper 1.1.10's `whisper-dump.py` prints them (`--raw`: as `whisper-dump.py -r`).

use std::io::Write;

use anyhow::Result;
use serde_json::{json, Value};
use whisper::WhisperFile;

use super::pyfmt::{percent_g, percent_g_width};

/// whisper-dump.py's output (or, with `raw`, `whisper-dump.py -r`'s).
pub(crate) fn print(out: &mut impl Write, file: &WhisperFile, raw: bool) -> Result<()> {
    let buf = file.read_buf()?;
    let header = buf.header();
    if !raw {
        writeln!(out, "Meta data:")?;
        writeln!(out, "  aggregation method: {}", header.aggregation)?;
        writeln!(out, "  max retention: {}", header.max_retention)?;
        writeln!(out, "  xFilesFactor: {}", percent_g(header.xff(), 6))?;
        writeln!(out)?;
        for (i, a) in header.archives.iter().enumerate() {
            writeln!(out, "Archive {i} info:")?;
            writeln!(out, "  offset: {}", a.offset)?;
            writeln!(out, "  seconds per point: {}", a.seconds_per_point)?;
            writeln!(out, "  points: {}", a.points)?;
            writeln!(out, "  retention: {}", a.retention())?;
            writeln!(out, "  size: {}", a.size())?;
            writeln!(out)?;
        }
    }
    for i in 0..header.archives.len() {
        if !raw {
            writeln!(out, "Archive {i} data:")?;
        }
        for (slot, (timestamp, value)) in buf.archive_slots(i).enumerate() {
            if raw {
                writeln!(out, "{timestamp}:{}", percent_g(value, 35))?;
            } else {
                writeln!(out, "{slot}: {timestamp}, {}", percent_g_width(value, 10, 35))?;
            }
        }
    }
    Ok(())
}

/// The slots of every archive in file order, as `[[timestamp, value], …]` per archive.
pub(crate) fn slots_json(file: &WhisperFile) -> Result<Value> {
    let buf = file.read_buf()?;
    Ok((0..buf.header().archives.len())
        .map(|i| buf.archive_slots(i).map(|(t, v)| json!([t, super::common::float_json(v)])).collect::<Vec<_>>())
        .collect())
}
