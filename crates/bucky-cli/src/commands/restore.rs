//! `bucky restore [-p PREFIX] tar|-`: put every whisper file of a tar archive (plain or gzip, detected)
//! into every replica of its metric. Each file is healed in (POST): created as is where the metric is
//! missing, or its points filled into the empty slots of an existing file.

use std::io::{BufRead, BufReader, Read};
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use futures_util::StreamExt;

use crate::cli::RestoreArgs;
use crate::client::Upload;
use crate::ctx::Ctx;
use crate::error::one_line;
use crate::{ExitStatus, UsageError};
use bucky_wire::{metric_from_relative, MetricStat};

/// One whisper file read from the archive.
struct Item {
    name: String,
    data: Vec<u8>,
    mode: i64,
    mtime: i64,
}

/// The metric an archive entry restores to.
fn metric_of(entry: &Path, prefix: Option<&Path>) -> Option<String> {
    let mut relative = PathBuf::new();
    if let Some(prefix) = prefix {
        relative.push(prefix);
    }
    for component in entry.components() {
        match component {
            Component::CurDir => {}
            Component::Normal(part) => relative.push(part),
            _ => return None,
        }
    }
    metric_from_relative(&relative).map(|n| n.as_str().to_owned())
}

/// Reads the archive on a blocking thread, sending whisper entries (bounded queue).
fn read_archive(
    archive: String,
    prefix: Option<PathBuf>,
    items: tokio::sync::mpsc::Sender<Result<Item, String>>,
) -> anyhow::Result<()> {
    let input: Box<dyn Read> = if archive == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::fs::File::open(&archive).with_context(|| format!("cannot open {archive}"))?)
    };
    let mut input = BufReader::with_capacity(256 * 1024, input);
    let gzip = input.fill_buf().map(|b| b.starts_with(&[0x1f, 0x8b])).unwrap_or(false);
    let input: Box<dyn Read> = if gzip { Box::new(flate2::read::GzDecoder::new(input)) } else { Box::new(input) };
    let mut tar = tar::Archive::new(input);
    for entry in tar.entries().context("cannot read the archive")? {
        let mut entry = entry.context("cannot read the archive")?;
        let kind = entry.header().entry_type();
        if !(kind.is_file() || kind.is_gnu_sparse()) {
            continue;
        }
        let path = entry.path().context("bad entry path")?.into_owned();
        if path.extension().is_none_or(|e| e != "wsp") {
            continue;
        }
        let item = match metric_of(&path, prefix.as_deref()) {
            None => Err(format!("{}: not a metric path", path.display())),
            Some(name) => {
                let mut data = Vec::with_capacity(entry.size() as usize);
                entry.read_to_end(&mut data).with_context(|| format!("cannot read {}", path.display()))?;
                let mode = entry.header().mode().map_or(0o644, i64::from);
                let mtime = entry.header().mtime().map_or(0, |m| m as i64);
                Ok(Item { name, data, mode, mtime })
            }
        };
        if items.blocking_send(item).is_err() {
            break;
        }
    }
    Ok(())
}

/// Restores the archive.
pub(super) async fn run(args: &RestoreArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(crate::settings::config(&args.cluster)?)?;
    if args.archive != "-" && !Path::new(&args.archive).exists() {
        return Err(UsageError(format!("{} does not exist", args.archive)).into());
    }
    let cluster = ctx.cluster().await?;
    if !args.single {
        cluster.require_healthy()?;
    }
    let (sender, receiver) = tokio::sync::mpsc::channel(64);
    let (archive, prefix) = (args.archive.clone(), args.prefix.clone());
    let reader = tokio::task::spawn_blocking(move || read_archive(archive, prefix, sender));
    let width = ctx.config.workers * cluster.members.len().max(1);
    let snappy = ctx.client.snappy();
    let (ctx_ref, cluster_ref, single) = (&ctx, &cluster, args.single);
    let mut results = std::pin::pin!(tokio_stream_from(receiver)
        .map(|item| async move {
            let item = item?;
            let stat = MetricStat {
                name: item.name.clone(),
                size: item.data.len() as i64,
                mode: item.mode,
                mod_time: item.mtime,
                ..MetricStat::default()
            };
            whisper::WhisperBuf::from_bytes(item.data.clone())
                .map_err(|e| format!("{}: not a whisper file: {}", item.name, one_line(&e)))?;
            let upload = Upload::new(stat, &item.data, snappy).map_err(|e| e.to_string())?;
            let dests = if single { vec![ctx_ref.config.seed.clone()] } else { cluster_ref.replicas_of(&item.name) };
            for dest in &dests {
                ctx_ref
                    .client
                    .heal(dest, &item.name, &upload)
                    .await
                    .map_err(|e| format!("{}: {}", item.name, one_line(&e)))?;
            }
            ctx_ref.printer.verbose(format!(
                "{} -> {}",
                item.name,
                dests.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ));
            Ok::<_, String>(())
        })
        .buffer_unordered(width));
    let mut restored = 0u64;
    let mut errors = 0u64;
    while let Some(result) = results.next().await {
        match result {
            Ok(()) => restored += 1,
            Err(why) => {
                errors += 1;
                ctx.printer.error(why);
            }
        }
    }
    reader.await.context("archive reader failed")??;
    if ctx.printer.json() {
        ctx.printer.print_json(&serde_json::json!({ "restored": restored, "errors": errors }))?;
    } else {
        ctx.printer.info(format!("{restored} metrics restored, {errors} errors"));
    }
    Ok(ExitStatus::from_ok(errors == 0))
}

/// A stream over an mpsc receiver.
fn tokio_stream_from<T>(receiver: tokio::sync::mpsc::Receiver<T>) -> impl futures_util::Stream<Item = T> {
    futures_util::stream::unfold(receiver, |mut r| async move { r.recv().await.map(|item| (item, r)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_paths_become_metrics() {
        assert_eq!(metric_of(Path::new("a/b/c.wsp"), None).as_deref(), Some("a.b.c"));
        assert_eq!(metric_of(Path::new("./a/b.wsp"), None).as_deref(), Some("a.b"));
        assert_eq!(metric_of(Path::new("b.wsp"), Some(Path::new("old/x"))).as_deref(), Some("old.x.b"));
        assert_eq!(metric_of(Path::new("../a.wsp"), None), None);
        assert_eq!(metric_of(Path::new("/a.wsp"), None), None);
    }
}
