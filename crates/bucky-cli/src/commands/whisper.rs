//! `bucky whisper …`: local whisper file tools, thin wrappers over the `whisper` crate. The operators' scan
//! and repair tools (isempty, sparsify, diff, find-corrupt, dump --all) live in their own modules below.

mod common;
mod diff;
mod dump_all;
mod find_corrupt;
mod isempty;
mod pyfmt;
mod sparsify;
mod walk;

use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{json, Value};
use whisper::{AggregationMethod, CreateOptions, FillOptions, Point, Retention, Series, WhisperFile};

use crate::cli::{
    CreateArgs, DumpArgs, FetchArgs, FillArgs, InfoArgs, MergeArgs, ModifyArgs, ResizeArgs, SetAggregationArgs,
    UpdateArgs, WhisperCommand,
};
use crate::error::one_line;
use crate::{ExitStatus, UsageError};
use common::{float_json, now_or_clock, system_now};

/// Runs one `bucky whisper` subcommand.
pub(super) fn run(cmd: WhisperCommand) -> Result<ExitStatus> {
    match cmd {
        WhisperCommand::Create(args) => create(args),
        WhisperCommand::Info(args) => info(args),
        WhisperCommand::Dump(args) => dump(args),
        WhisperCommand::Update(args) => update(args),
        WhisperCommand::Fetch(args) => fetch(args),
        WhisperCommand::Merge(args) => merge(args),
        WhisperCommand::Fill(args) => fill(args),
        WhisperCommand::Resize(args) => resize(args),
        WhisperCommand::SetAggregation(args) => set_aggregation(args),
        WhisperCommand::Modify(args) => modify(args),
        WhisperCommand::IsEmpty(args) => isempty::run(args),
        WhisperCommand::Sparsify(args) => sparsify::run(args),
        WhisperCommand::Diff(args) => diff::run(args),
        WhisperCommand::FindCorrupt(args) => find_corrupt::run(args),
    }
}

/// Retention arguments, each a spec or a comma-separated list of them.
fn parse_retentions(specs: &[String]) -> Result<Vec<Retention>, UsageError> {
    let mut retentions = Vec::new();
    for spec in specs {
        retentions.extend(Retention::parse_list(spec).map_err(|e| UsageError(e.to_string()))?);
    }
    Ok(retentions)
}

fn parse_method(name: &str) -> Result<AggregationMethod, UsageError> {
    name.parse().map_err(|e: whisper::Error| UsageError(e.to_string()))
}

fn create(args: CreateArgs) -> Result<ExitStatus> {
    let retentions = parse_retentions(&args.retentions)?;
    let aggregation = parse_method(&args.aggregation)?;
    let options = CreateOptions { aggregation, x_files_factor: args.xff, sparse: args.sparse };
    whisper::create(&args.path, &retentions, &options)?;
    Ok(ExitStatus::Success)
}

fn header_json(file: &WhisperFile) -> Result<Value> {
    let h = file.header();
    let size = file.file().metadata().with_context(|| format!("stat {}", file.path().display()))?.len();
    Ok(json!({
        "aggregationMethod": h.aggregation.name(),
        "maxRetention": h.max_retention,
        "xFilesFactor": f64::from(h.x_files_factor),
        "fileSize": size,
        "archives": h.archives.iter().map(|a| json!({
            "offset": a.offset,
            "secondsPerPoint": a.seconds_per_point,
            "points": a.points,
            "retention": a.retention(),
            "size": a.size(),
        })).collect::<Vec<_>>(),
    }))
}

fn print_header_text(out: &mut impl Write, file: &WhisperFile) -> Result<()> {
    let h = file.header();
    let size = file.file().metadata()?.len();
    writeln!(out, "aggregationMethod: {}", h.aggregation)?;
    writeln!(out, "maxRetention: {}", h.max_retention)?;
    writeln!(out, "xFilesFactor: {}", f64::from(h.x_files_factor))?;
    writeln!(out, "fileSize: {size}")?;
    for (i, a) in h.archives.iter().enumerate() {
        writeln!(out, "\nArchive {i}")?;
        writeln!(out, "offset: {}", a.offset)?;
        writeln!(out, "secondsPerPoint: {}", a.seconds_per_point)?;
        writeln!(out, "points: {}", a.points)?;
        writeln!(out, "retention: {}", a.retention())?;
        writeln!(out, "size: {}", a.size())?;
    }
    Ok(())
}

fn open(path: &PathBuf) -> Result<WhisperFile> {
    WhisperFile::open(path).map_err(anyhow::Error::from)
}

fn info(args: InfoArgs) -> Result<ExitStatus> {
    let file = open(&args.path)?;
    let mut out = io::stdout().lock();
    if args.json {
        writeln!(out, "{}", header_json(&file)?)?;
    } else {
        print_header_text(&mut out, &file)?;
    }
    Ok(ExitStatus::Success)
}

fn dump(args: DumpArgs) -> Result<ExitStatus> {
    let file = open(&args.path)?;
    let mut out = io::BufWriter::new(io::stdout().lock());
    if args.all && !args.json {
        dump_all::print(&mut out, &file, args.raw)?;
        out.flush()?;
        return Ok(ExitStatus::Success);
    }
    if args.all {
        let mut value = header_json(&file)?;
        value["slots"] = dump_all::slots_json(&file)?;
        writeln!(out, "{value}")?;
        out.flush()?;
        return Ok(ExitStatus::Success);
    }
    let archives = file.dump()?;
    if args.json {
        let mut value = header_json(&file)?;
        value["data"] = archives
            .iter()
            .map(|points| points.iter().map(|&(t, v)| json!([t, float_json(v)])).collect::<Vec<_>>())
            .collect();
        writeln!(out, "{value}")?;
    } else {
        print_header_text(&mut out, &file)?;
        for (i, points) in archives.iter().enumerate() {
            writeln!(out, "\nArchive {i} data:")?;
            for (t, v) in points {
                writeln!(out, "{t}, {v}")?;
            }
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

/// Parses `timestamp value` (also `timestamp:value`); timestamps may be fractional and truncate toward
/// zero like Python's `int()`.
fn parse_point(line: &str) -> Option<Point> {
    let mut parts = line.split(|c: char| c.is_whitespace() || c == ':').filter(|s| !s.is_empty());
    let t: f64 = parts.next()?.parse().ok()?;
    let v: f64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !t.is_finite() {
        return None;
    }
    Some(Point::new(t.trunc() as i64, v))
}

fn update(args: UpdateArgs) -> Result<ExitStatus> {
    let now = now_or_clock(args.now);
    let mut points = Vec::new();
    for (n, line) in io::stdin().lock().lines().enumerate() {
        let line = line.context("reading points from stdin")?;
        if line.trim().is_empty() {
            continue;
        }
        let point = parse_point(&line).ok_or_else(|| {
            UsageError(format!("line {}: expected `timestamp value`, got {line:?}; nothing was written", n + 1))
        })?;
        points.push(point);
    }
    let (locked, unlocked);
    let file: &WhisperFile = if args.lock {
        locked = WhisperFile::open_locked(&args.path, whisper::LockMode::Exclusive, whisper::DEFAULT_LOCK_TIMEOUT)?;
        &locked
    } else {
        unlocked = WhisperFile::open_rw(&args.path)?;
        &unlocked
    };
    if !args.single {
        file.update_many(&points, now)?;
        return Ok(ExitStatus::Success);
    }
    let mut rejected = 0;
    for p in &points {
        if let Err(e) = file.update(p.value, p.timestamp, now) {
            rejected += 1;
            eprintln!("bucky: rejected {} {}: {}", p.timestamp, p.value, one_line(&e));
        }
    }
    Ok(if rejected == 0 { ExitStatus::Success } else { ExitStatus::Failure })
}

/// The fetch result as JSON: `{"fromTime","untilTime","step","values"}` or `null`.
pub(super) fn series_json(series: Option<&Series>) -> Value {
    match series {
        None => Value::Null,
        Some(s) => json!({
            "fromTime": s.from,
            "untilTime": s.until,
            "step": s.step,
            "values": s.values.iter().map(|v| v.map_or(Value::Null, float_json)).collect::<Vec<_>>(),
        }),
    }
}

fn fetch(args: FetchArgs) -> Result<ExitStatus> {
    let now = now_or_clock(args.now);
    let until = match args.until.as_str() {
        "now" => None,
        text => Some(
            text.parse::<i64>()
                .map_err(|_| UsageError(format!("UNTIL must be epoch seconds or `now`, got {text:?}")))?,
        ),
    };
    let archive =
        args.archive.as_deref().map(Retention::parse_precision).transpose().map_err(|e| UsageError(e.to_string()))?;
    let file = open(&args.path)?;
    let series = file.fetch(args.from, until, now, archive)?;
    writeln!(io::stdout().lock(), "{}", series_json(series.as_ref()))?;
    Ok(ExitStatus::Success)
}

fn merge(args: MergeArgs) -> Result<ExitStatus> {
    whisper::merge(&args.src, &args.dst, args.from, args.until, now_or_clock(args.now))?;
    Ok(ExitStatus::Success)
}

fn fill(args: FillArgs) -> Result<ExitStatus> {
    let now = args.now.unwrap_or_else(system_now);
    let mut options = FillOptions::new(now as i64);
    options.now = now;
    options.lock = args.lock;
    options.coalesce_writes = args.coalesce;
    options.lock_timeout = Duration::from_secs(args.lock_timeout);
    options.start_from = args.start_from;
    options.end_at = args.end_at;
    options.overwrite = args.overwrite;
    if args.carbonate {
        options = options.carbonate();
    }
    let report = whisper::fill(&args.src, &args.dst, &options)?;
    tracing::info!(copied = report.copied, points = report.points_written, "fill done");
    Ok(ExitStatus::Success)
}

/// Where the original went, for the one-line reports.
fn kept_note(path: &Path, backup: bool) -> String {
    if backup {
        format!(", original kept as {}", whisper::backup_path(path).display())
    } else {
        String::new()
    }
}

fn retention_list(header: &whisper::Header) -> String {
    header.archives.iter().map(|a| a.as_retention().to_string()).collect::<Vec<_>>().join(",")
}

/// Prints what a resize did (whisper-resize prints its progress; one line is enough).
fn report_resize(path: &Path, old: &whisper::Header, new: &whisper::Header, backup: bool) -> Result<ExitStatus> {
    let kept = kept_note(path, backup);
    writeln!(
        io::stdout().lock(),
        "Resized {}: {} {} xff {} -> {} {} xff {}{kept}",
        path.display(),
        retention_list(old),
        old.aggregation,
        old.x_files_factor,
        retention_list(new),
        new.aggregation,
        new.x_files_factor
    )?;
    Ok(ExitStatus::Success)
}

fn resize(args: ResizeArgs) -> Result<ExitStatus> {
    let retentions = parse_retentions(&args.retentions)?;
    let mut options = whisper::ResizeOptions::new(now_or_clock(args.now));
    options.aggregation = args.aggregation.as_deref().map(parse_method).transpose()?;
    options.x_files_factor = args.xff;
    options.aggregate = args.aggregate;
    options.backup = !args.nobackup;
    options.lock_timeout = Duration::from_secs(args.lock_timeout);
    let old = open(&args.path)?.header().clone();
    let new = whisper::resize(&args.path, &retentions, &options)?;
    report_resize(&args.path, &old, &new, options.backup)
}

fn set_aggregation(args: SetAggregationArgs) -> Result<ExitStatus> {
    let method = parse_method(&args.method)?;
    let change = whisper::AggregationChange {
        method,
        x_files_factor: args.xff.or(args.xff_arg),
        backup: false,
        lock_timeout: Duration::from_secs(args.lock_timeout),
    };
    let old = whisper::set_aggregation(&args.path, &change)?;
    report_aggregation(&args.path, &old, method, false)
}

/// whisper-set-aggregation-method's line, and where the backup is.
fn report_aggregation(
    path: &Path,
    old: &whisper::Header,
    method: AggregationMethod,
    backup: bool,
) -> Result<ExitStatus> {
    let kept = kept_note(path, backup);
    writeln!(
        io::stdout().lock(),
        "Updated aggregation method: {} ({} -> {method}){kept}",
        path.display(),
        old.aggregation
    )?;
    Ok(ExitStatus::Success)
}

fn modify(args: ModifyArgs) -> Result<ExitStatus> {
    let lock_timeout = Duration::from_secs(args.lock_timeout);
    if let Some(name) = &args.agg {
        let method = parse_method(name)?;
        let change = whisper::AggregationChange { method, x_files_factor: None, backup: true, lock_timeout };
        let old = whisper::set_aggregation(&args.file, &change)?;
        return report_aggregation(&args.file, &old, method, true);
    }
    let (Some(index), Some(spec)) = (args.index, &args.retention) else {
        return Err(UsageError("give --index N --retention R, or --agg METHOD".into()).into());
    };
    let retention = Retention::parse(spec).map_err(|e| UsageError(e.to_string()))?;
    let mut options = whisper::ResizeOptions::new(now_or_clock(args.now.flatten()));
    options.lock_timeout = lock_timeout;
    let old = open(&args.file)?.header().clone();
    let new = whisper::resize_archive(&args.file, index, retention, &options)?;
    report_resize(&args.file, &old, &new, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_points_like_whisper_update() {
        assert_eq!(parse_point("1700000000 1.5"), Some(Point::new(1_700_000_000, 1.5)));
        assert_eq!(parse_point("1700000000:nan").map(|p| p.value.is_nan()), Some(true));
        assert_eq!(parse_point("-1.9 2"), Some(Point::new(-1, 2.0)));
        assert_eq!(parse_point("1 2 3"), None);
        assert_eq!(parse_point("x 2"), None);
    }
}
