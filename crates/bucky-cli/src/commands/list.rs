//! `bucky list [-r] [-l] [names|-|regex]`: which metrics the cluster holds.
//!
//! Lists are streamed from the agents and parsed as they arrive. One agent's list goes straight to
//! stdout; several are kept as compact sorted arenas and merged without duplicates.

use std::collections::BTreeMap;
use std::io::Write;

use crate::cli::ListArgs;
use crate::client::ListQuery;
use crate::config::Addr;
use crate::ctx::Ctx;
use crate::names::{merge_sorted, NameArena};
use crate::plan::{gather, targets, Gathered};
use crate::settings::{Scope, Selection};
use crate::ExitStatus;

/// Lists metrics.
pub(super) async fn run(args: &ListArgs) -> anyhow::Result<ExitStatus> {
    let Scope { config, selection, single } = Scope::from_args(&args.scope, false)?;
    let ctx = Ctx::new(config)?;
    let cluster = ctx.cluster().await?;
    let (targets, mut failed) = targets(&cluster, single);
    if targets.len() == 1 && !args.long && !matches!(selection, Selection::Names(_)) {
        // One agent: stream its list straight through, whatever its size.
        let ok = stream_one(&ctx, &targets[0], &selection).await;
        if let Err(why) = ok {
            failed.push((targets[0].clone(), why));
        }
        let warned = failed.iter().map(|(a, _)| a.clone()).collect();
        let gathered = Gathered { lists: Vec::new(), failed, warned };
        return Ok(ExitStatus::from_ok(gathered.report(&ctx)));
    }
    let mut gathered = gather(&ctx, &selection, &targets).await;
    gathered.warned.extend(failed.iter().map(|(a, _)| a.clone()));
    gathered.failed.extend(failed);
    let mut out = ctx.printer.stdout();
    if args.long {
        if ctx.printer.json() {
            let map: BTreeMap<String, Vec<&str>> =
                gathered.lists.iter().map(|(a, l)| (a.to_string(), l.iter().collect())).collect();
            serde_json::to_writer_pretty(&mut out, &map)?;
            writeln!(out)?;
        } else {
            for (addr, list) in &gathered.lists {
                for name in list.iter() {
                    writeln!(out, "{addr}: {name}")?;
                }
            }
        }
    } else {
        let lists: Vec<&NameArena> = gathered.lists.iter().map(|(_, l)| l).collect();
        let json = ctx.printer.json();
        let mut first = true;
        if json {
            out.write_all(b"[")?;
        }
        merge_sorted(&lists, |name| {
            if json {
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                serde_json::to_writer(&mut out, name).map_err(std::io::Error::other)
            } else {
                writeln!(out, "{name}")
            }
        })?;
        if json {
            out.write_all(b"]\n")?;
        }
    }
    out.flush()?;
    drop(out);
    ctx.printer.verbose(format!("{} copies on {} agents", gathered.copies(), gathered.lists.len()));
    Ok(ExitStatus::from_ok(gathered.report(&ctx)))
}

/// Streams one agent's list to stdout.
async fn stream_one(ctx: &Ctx, addr: &Addr, selection: &Selection) -> anyhow::Result<()> {
    let regex = selection.regex().map(|r| r.as_str().to_owned());
    let query = ListQuery { regex, force: ctx.config.force };
    let json = ctx.printer.json();
    let mut out = ctx.printer.stdout();
    let mut io_error = None;
    let mut first = true;
    if json {
        let _ = out.write_all(b"[");
    }
    let result = ctx
        .client
        .list(addr, &query, |name| {
            if io_error.is_some() {
                return;
            }
            let written = if json {
                let sep = if first { "" } else { "," };
                first = false;
                serde_json::to_string(&name).map_err(std::io::Error::other).and_then(|n| write!(out, "{sep}{n}"))
            } else {
                writeln!(out, "{name}")
            };
            if let Err(e) = written {
                io_error = Some(e);
            }
        })
        .await;
    if let Some(e) = io_error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(anyhow::Error::new(e).context("cannot write the list"));
    }
    if json {
        let _ = out.write_all(b"]\n");
    }
    let _ = out.flush();
    result?;
    Ok(())
}
