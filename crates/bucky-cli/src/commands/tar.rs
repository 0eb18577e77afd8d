//! `bucky tar [-r] [-z] [names|-|regex] > out.tar`: metrics as a tar archive (`a/b/c.wsp` entries with the
//! files' size, mode and mtime), sorted by name. Refuses to write to a terminal.
//!
//! The summary goes to stderr (stdout is the archive), as one JSON object with `--json`. What is missing from
//! the archive is said: the agents that could not be listed (with RF 1 their metrics are simply unknown), and
//! the metrics that could not be read, grouped by the agent that failed, its reason once.
//!
//! A metric held by several agents (replicas, or a misplaced copy) becomes one entry holding the union
//! of their points: the copy on its first replica is taken as is and the others are healed into it
//! (only its empty slots are filled), so no copy's points are left out.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use bucky_wire::MetricName;
use futures_util::StreamExt;
use whisper::{FillOptions, WhisperBuf};

use serde::Serialize;

use crate::cli::TarArgs;
use crate::cluster::Cluster;
use crate::config::Addr;
use crate::ctx::Ctx;
use crate::engine::unix_now;
use crate::error::one_line;
use crate::scope::{open_scope, Unread};
use crate::settings::Scope;
use crate::{ExitStatus, UsageError};

/// stdout, maybe gzipped.
enum Sink<W: Write> {
    Plain(W),
    Gzip(flate2::write::GzEncoder<W>),
}

impl<W: Write> Sink<W> {
    fn finish(self) -> std::io::Result<()> {
        match self {
            Sink::Plain(mut w) => w.flush(),
            Sink::Gzip(gz) => gz.finish()?.flush(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Sink::Plain(w) => w.write(buf),
            Sink::Gzip(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Sink::Plain(w) => w.flush(),
            Sink::Gzip(w) => w.flush(),
        }
    }
}

/// One metric's merged file.
struct Entry {
    data: Vec<u8>,
    mode: u32,
    mtime: i64,
}

/// Why a metric is not in the archive.
enum Unreadable {
    /// An agent holding a copy failed (down, refusing): every copy is needed for the union of points.
    Agent(Addr, String),
    /// The metric itself: not a whisper file, copies that cannot be merged, gone.
    Metric(String),
}

/// Reads every copy of `name` and merges them (first replica first); `None` if every holder answered 404: the
/// metric was listed but is gone (moved or deleted since, or a stale buckyd list), which is no error.
async fn read_merged(ctx: &Ctx, cluster: &Cluster, name: &str, holders: &[Addr]) -> Result<Option<Entry>, Unreadable> {
    let replicas = cluster.replicas_of(name);
    let mut order: Vec<&Addr> = holders.iter().collect();
    order.sort_by_key(|a| replicas.iter().position(|r| r == *a).unwrap_or(usize::MAX));
    let mut merged: Option<(WhisperBuf, u32, i64)> = None;
    for addr in order {
        let fetched = match ctx.client.get(addr, name).await {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => return Err(Unreadable::Agent(addr.clone(), one_line(&e))),
        };
        let buf = WhisperBuf::from_bytes(fetched.data)
            .map_err(|e| Unreadable::Metric(format!("not a whisper file on {addr}: {}", one_line(&e))))?;
        let mode = (fetched.stat.mode & 0o7777) as u32;
        merged = Some(match merged {
            None => (buf, mode, fetched.stat.mod_time),
            Some((mut base, mode, mtime)) => {
                let mut options = FillOptions::new(unix_now());
                options.lock = false;
                options.sync = false;
                whisper::fill_buf(&buf, &mut base, &options)
                    .map_err(|e| Unreadable::Metric(format!("cannot merge the copy on {addr}: {}", one_line(&e))))?;
                (base, mode, mtime.max(fetched.stat.mod_time))
            }
        });
    }
    let Some((buf, mode, mtime)) = merged else { return Ok(None) };
    Ok(Some(Entry { data: buf.into_bytes(), mode: if mode == 0 { 0o644 } else { mode }, mtime }))
}

/// Writes the archive.
pub(super) async fn run(args: &TarArgs) -> anyhow::Result<ExitStatus> {
    let (ctx, cluster, gathered) = open_scope(Scope::from_args(&args.scope, false)?, |ctx| {
        if ctx.printer.stdout_is_terminal() {
            return Err(UsageError(
                "refusing to write a tar archive to a terminal: redirect stdout (> out.tar)".into(),
            )
            .into());
        }
        Ok(())
    })
    .await?;
    let mut holders: BTreeMap<String, Vec<Addr>> = BTreeMap::new();
    for (addr, list) in &gathered.lists {
        for name in list.iter() {
            holders.entry(name.to_owned()).or_default().push(addr.clone());
        }
    }
    let stdout = ctx.printer.stdout();
    let sink = if args.gzip {
        Sink::Gzip(flate2::write::GzEncoder::new(stdout, flate2::Compression::fast()))
    } else {
        Sink::Plain(stdout)
    };
    let mut builder = tar::Builder::new(sink);
    builder.mode(tar::HeaderMode::Complete);
    let progress = ctx.printer.progress("tar", &[("metrics".to_owned(), holders.len() as u64)]);
    let cluster = &cluster;
    let ctx_ref = &ctx;
    let mut entries = futures_util::stream::iter(holders.iter())
        .map(|(name, holders)| async move { (name, read_merged(ctx_ref, cluster, name, holders).await) })
        .buffered(ctx.config.workers * gathered.lists.len().max(1));
    let mut written = 0u64;
    let mut unread = Unread::default();
    let mut gone = 0u64;
    while let Some((name, entry)) = entries.next().await {
        progress.inc("metrics");
        let entry = match entry {
            Ok(Some(entry)) => entry,
            Ok(None) => {
                gone += 1;
                ctx.printer.verbose(format!("{name}: gone since listed, not archived"));
                continue;
            }
            Err(Unreadable::Agent(addr, why)) => {
                unread.on_agent(&addr, name, why);
                continue;
            }
            Err(Unreadable::Metric(why)) => {
                unread.metric(name, why);
                continue;
            }
        };
        let path = match MetricName::parse(name) {
            Ok(n) => n.relative_path(),
            Err(e) => {
                unread.metric(name, format!("cannot be stored as a path: {e}"));
                continue;
            }
        };
        let mut header = tar::Header::new_gnu();
        header.set_size(entry.data.len() as u64);
        header.set_mode(entry.mode);
        header.set_mtime(u64::try_from(entry.mtime).unwrap_or(0));
        header.set_entry_type(tar::EntryType::Regular);
        builder
            .append_data(&mut header, &path, entry.data.as_slice())
            .with_context(|| format!("cannot write {} to the archive", path.display()))?;
        written += 1;
    }
    progress.finish();
    builder.into_inner().and_then(Sink::finish).context("cannot finish the archive")?;
    let summary = TarSummary {
        archived: written,
        gone,
        not_read: unread.count() as u64,
        partial: unread.count() > 0 || !gathered.failed.is_empty(),
        unlisted: gathered.failed.iter().map(|(a, why)| (a.to_string(), one_line(why.as_ref()))).collect(),
        unread,
    };
    if ctx.printer.json() {
        ctx.printer.print_json_stderr(&summary)?;
    } else {
        gathered.report(&ctx);
        summary.unread.report(&ctx);
        ctx.printer.info(summary.line());
    }
    Ok(ExitStatus::from_ok(!summary.partial))
}

/// What `tar` did, and what the archive lacks.
#[derive(Debug, Serialize)]
struct TarSummary {
    /// Metrics in the archive.
    archived: u64,
    /// Metrics listed but gone when read (moved or deleted since, or a stale buckyd list): no error.
    gone: u64,
    /// Metrics found but not in the archive.
    not_read: u64,
    /// Whether anything selected may be missing from the archive.
    partial: bool,
    /// Agents that could not be listed (their metrics are not in the archive): why.
    unlisted: BTreeMap<String, String>,
    /// The metrics not read, by agent, and why.
    unread: Unread,
}

impl TarSummary {
    /// `tar: 7 metrics archived, 3 not read; PARTIAL archive: …`.
    fn line(&self) -> String {
        let mut line = format!("tar: {} metrics archived", self.archived);
        if self.gone > 0 {
            line.push_str(&format!(", {} gone since listed", self.gone));
        }
        if self.not_read > 0 {
            line.push_str(&format!(", {} not read", self.not_read));
        }
        if self.partial {
            let mut missing = Vec::new();
            if !self.unlisted.is_empty() {
                let agents = self.unlisted.keys().map(String::as_str).collect::<Vec<_>>().join(", ");
                missing.push(format!("the metrics of {agents} (not listed)"));
            }
            if self.not_read > 0 {
                missing.push(format!("{} metrics not read (above)", self.not_read));
            }
            line.push_str(&format!(
                "; the archive is PARTIAL, it lacks {}; rerun once they are back",
                missing.join(" and ")
            ));
        }
        line
    }
}
