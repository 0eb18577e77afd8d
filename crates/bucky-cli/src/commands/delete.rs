//! `bucky delete [-r] names|-|regex`: delete metrics, asking for confirmation per server on the
//! terminal (the question shows the first names). Without a terminal it refuses unless `--yes` is given
//! (never a silent "no"). `--no-op` prints what would be deleted (`agent: metric`, or JSON) and deletes
//! nothing.

use std::io::{BufRead, BufReader, IsTerminal, Write};

use futures_util::StreamExt;

use crate::cli::DeleteArgs;
use crate::client::Deleted;
use crate::config::Addr;
use crate::ctx::Ctx;
use crate::error::one_line;
use crate::names::NameArena;
use crate::plan::Gathered;
use crate::scope::open_scope;
use crate::settings::Scope;
use crate::{ExitStatus, UsageError};

/// Names shown in the confirmation question.
const PROMPT_NAMES: usize = 10;

/// The confirmation question for `names` on `addr`: the count, then the first names.
fn question(addr: &Addr, names: &NameArena) -> String {
    format!(
        "Delete {} metrics on {addr}: {}?",
        names.len(),
        crate::printer::first_names(names.iter(), names.len(), PROMPT_NAMES)
    )
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
pub(super) async fn run(args: &DeleteArgs) -> anyhow::Result<ExitStatus> {
    let (ctx, _cluster, mut gathered) = open_scope(Scope::from_args(&args.scope, true)?, |_| {
        if !args.yes && !args.no_op && !std::io::stderr().is_terminal() {
            // Refuse before doing any work.
            confirm("")?;
        }
        Ok(())
    })
    .await?;
    if args.no_op {
        return print_plan(&ctx, &gathered);
    }
    let failed = std::mem::take(&mut gathered.failed);
    let mut approved: Vec<(Addr, &NameArena)> = Vec::new();
    for (addr, names) in &gathered.lists {
        if names.is_empty() {
            continue;
        }
        if args.yes || confirm(&question(addr, names))? {
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
                    ctx.printer.error(one_line(&e));
                }
            }
        }
    }
    progress.finish();
    for (addr, why) in &failed {
        ctx.printer.error(crate::printer::about(addr, &one_line(why.as_ref())));
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

/// `--no-op`: what would be deleted, on stdout; the agents that could not be listed, on stderr.
fn print_plan(ctx: &Ctx, gathered: &Gathered) -> anyhow::Result<ExitStatus> {
    let lists = gathered.lists.iter().filter(|(_, names)| !names.is_empty());
    let count: usize = gathered.copies();
    if ctx.printer.json() {
        let plan: std::collections::BTreeMap<String, Vec<&str>> =
            lists.map(|(addr, names)| (addr.to_string(), names.iter().collect())).collect();
        ctx.printer.print_json(&serde_json::json!({
            "would_delete": plan, "count": count,
            "failed_agents": gathered.failed.iter().map(|(a, _)| a.to_string()).collect::<Vec<_>>(),
        }))?;
    } else {
        let mut out = ctx.printer.stdout();
        for (addr, names) in lists {
            for name in names.iter() {
                writeln!(out, "{addr}: {name}")?;
            }
        }
        out.flush()?;
        drop(out);
        ctx.printer.info(format!("--no-op: {count} copies would be deleted; nothing deleted"));
    }
    Ok(ExitStatus::from_ok(gathered.report(ctx)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_question_shows_the_first_names() {
        let addr = Addr { host: "10.0.0.1".into(), port: 4242 };
        let mut names = NameArena::new();
        for i in 0..13 {
            names.push(&format!("a.m{i:02}"));
        }
        names.sort_dedup();
        assert_eq!(
            question(&addr, &names),
            "Delete 13 metrics on 10.0.0.1:4242: a.m00, a.m01, a.m02, a.m03, a.m04, a.m05, a.m06, a.m07, a.m08, \
             a.m09 … and 3 more?"
        );
        let mut one = NameArena::new();
        one.push("x.y");
        assert_eq!(question(&addr, &one), "Delete 1 metrics on 10.0.0.1:4242: x.y?");
    }
}
