//! `bucky delete [-r] names|-|regex`: delete metrics, asking for confirmation per server on the
//! terminal. Without a terminal it refuses unless `--yes` is given (never a silent "no").

use std::io::{BufRead, BufReader, IsTerminal, Write};

use clap::Args;
use futures_util::StreamExt;

use super::list::open_scope;
use crate::cli::ScopeArgs;
use crate::client::Deleted;
use crate::cluster::short_error;
use crate::config::Addr;
use crate::names::NameArena;
use crate::{ExitStatus, UsageError};

/// `bucky delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Do not ask: delete on every server.
    #[arg(short = 'y', long, alias = "noconfirm")]
    pub yes: bool,
}

/// Asks on the terminal. Errors when there is none.
fn confirm(question: &str) -> anyhow::Result<bool> {
    let refuse = || {
        UsageError("delete needs a terminal to confirm on (or --yes to delete without asking); nothing deleted".into())
    };
    if !std::io::stderr().is_terminal() {
        return Err(refuse().into());
    }
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").map_err(|_| refuse())?;
    let mut writer = tty.try_clone().map_err(|_| refuse())?;
    write!(writer, "{question} [y/N] ")?;
    writer.flush()?;
    let mut answer = String::new();
    BufReader::new(tty).read_line(&mut answer)?;
    Ok(matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes"))
}

/// Deletes the selected metrics.
pub async fn run(args: &DeleteArgs) -> anyhow::Result<ExitStatus> {
    let (ctx, _cluster, gathered) = open_scope(&args.scope, true, |_| {
        if !args.yes && !std::io::stderr().is_terminal() {
            // Refuse before doing any work.
            confirm("")?;
        }
        Ok(())
    })
    .await?;
    let failed = gathered.failed.clone();
    let mut approved: Vec<(Addr, &NameArena)> = Vec::new();
    for (addr, names) in &gathered.lists {
        if names.is_empty() {
            continue;
        }
        if args.yes || confirm(&format!("Delete {} metrics on {addr}?", names.len()))? {
            approved.push((addr.clone(), names));
        } else {
            ctx.printer.info(format!("{addr}: skipped"));
        }
    }
    let total: Vec<(String, u64)> = approved.iter().map(|(a, n)| (a.to_string(), n.len() as u64)).collect();
    let progress = ctx.printer.progress("delete", &total);
    let mut deleted = 0u64;
    let mut absent = 0u64;
    let mut errors = 0u64;
    let ctx = &ctx;
    for (addr, names) in &approved {
        let label = addr.to_string();
        let mut results = futures_util::stream::iter(names.iter())
            .map(|name| async move { (name, ctx.client.delete(addr, name, None).await) })
            .buffer_unordered(ctx.config.workers);
        while let Some((name, result)) = results.next().await {
            progress.inc(&label);
            match result {
                Ok(Deleted::Removed) => {
                    deleted += 1;
                    ctx.printer.verbose(format!("{addr}: deleted {name}"));
                }
                Ok(Deleted::Absent) => absent += 1,
                Err(e) => {
                    errors += 1;
                    ctx.printer.error(format!("{addr}: {name}: {}", short_error(&e)));
                }
            }
        }
    }
    progress.finish();
    for (addr, why) in &failed {
        ctx.printer.error(crate::printer::about(addr, why));
    }
    if ctx.printer.json() {
        ctx.printer.print_json(&serde_json::json!({
            "deleted": deleted, "absent": absent, "errors": errors,
            "failed_agents": failed.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
        }))?;
    } else {
        ctx.printer.info(format!("{deleted} deleted, {absent} already gone, {errors} errors"));
    }
    Ok(ExitStatus::from_ok(errors == 0 && failed.is_empty()))
}
