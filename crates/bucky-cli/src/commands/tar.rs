//! `bucky tar [-r] [-z] [names|-|regex] > out.tar`: metrics as a tar archive (`a/b/c.wsp` entries with the
//! files' size, mode and mtime), sorted by name. Refuses to write to a terminal.
//!
//! A metric held by several agents (replicas, or a misplaced copy) becomes one entry holding the union
//! of their points: the copy on its first replica is taken as is and the others are healed into it
//! (only its empty slots are filled), so no copy's points are left out.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::Context;
use bucky_wire::MetricName;
use clap::Args;
use futures_util::StreamExt;
use whisper::{FillOptions, WhisperBuf};

use super::list::open_scope;
use super::Ctx;
use crate::cli::ScopeArgs;
use crate::cluster::{short_error, Cluster};
use crate::config::Addr;
use crate::engine::unix_now;
use crate::{ExitStatus, UsageError};

/// `bucky tar`.
#[derive(Debug, Args)]
pub struct TarArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Compress the archive with gzip.
    #[arg(short = 'z', long)]
    pub gzip: bool,
}

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

/// Reads every copy of `name` and merges them (first replica first); `None` if every holder answered 404: the
/// metric was listed but is gone (moved or deleted since, or a stale buckyd list), which is no error.
async fn read_merged(ctx: &Ctx, cluster: &Cluster, name: &str, holders: &[Addr]) -> Result<Option<Entry>, String> {
    let replicas = cluster.replicas_of(name);
    let mut order: Vec<&Addr> = holders.iter().collect();
    order.sort_by_key(|a| replicas.iter().position(|r| r == *a).unwrap_or(usize::MAX));
    let mut merged: Option<(WhisperBuf, u32, i64)> = None;
    for addr in order {
        let fetched = match ctx.client.get(addr, name).await {
            Ok(Some(f)) => f,
            Ok(None) => continue,
            Err(e) => return Err(format!("{addr}: {}", short_error(&e))),
        };
        let buf = WhisperBuf::from_bytes(fetched.data).map_err(|e| format!("{addr}: not a whisper file: {e}"))?;
        let mode = (fetched.stat.mode & 0o7777) as u32;
        merged = Some(match merged {
            None => (buf, mode, fetched.stat.mod_time),
            Some((mut base, mode, mtime)) => {
                let mut options = FillOptions::new(unix_now());
                options.lock = false;
                options.sync = false;
                whisper::fill_buf(&buf, &mut base, &options).map_err(|e| format!("{addr}: merging copies: {e}"))?;
                (base, mode, mtime.max(fetched.stat.mod_time))
            }
        });
    }
    let Some((buf, mode, mtime)) = merged else { return Ok(None) };
    Ok(Some(Entry { data: buf.into_bytes(), mode: if mode == 0 { 0o644 } else { mode }, mtime }))
}

/// Writes the archive.
pub async fn run(args: &TarArgs) -> anyhow::Result<ExitStatus> {
    let (ctx, cluster, gathered) = open_scope(&args.scope, false, |ctx| {
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
    let mut errors = 0u64;
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
            Err(why) => {
                errors += 1;
                ctx.printer.error(format!("{name}: {why}"));
                continue;
            }
        };
        let path = match MetricName::parse(name) {
            Ok(n) => n.relative_path(),
            Err(e) => {
                errors += 1;
                ctx.printer.error(format!("{name}: cannot be stored as a path: {e}"));
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
    ctx.printer.info(format!("{written} metrics archived, {gone} gone since listed, {errors} errors"));
    let ok = gathered.report(&ctx) && errors == 0;
    Ok(ExitStatus::from_ok(ok))
}
