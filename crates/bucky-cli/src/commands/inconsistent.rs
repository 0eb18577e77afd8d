//! `bucky inconsistent`: copies of metrics on agents that are not among the metric's replicas
//! (RF- and instance-aware: with replication 2, a metric on both of its nodes is consistent).
//!
//! Lists are streamed; only the misplaced names are kept. Each misplaced copy is then confirmed with a
//! stat on its agent: buckyd's list is a cache up to an hour old (and `force` may still answer the old one),
//! so right after a move it still names the copies that were moved away. Those answer 404 and are counted
//! as "gone since listed", not reported.

use std::collections::BTreeMap;
use std::io::Write;

use crate::cli::InconsistentArgs;
use crate::ctx::Ctx;
use crate::error::one_line;
use crate::plan::{confirm_misplaced, excludes, find_misplaced};
use crate::{settings, ExitStatus};

/// Prints `agent: metric` for every misplaced copy and a summary on stderr; with `--json`, one object on
/// stdout: `{"misplaced": {agent: [metrics]}, "count", "scanned", "agents", "unlisted": {agent: why}}`.
pub(super) async fn run(args: &InconsistentArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(settings::config(&args.cluster)?)?;
    let cluster = ctx.cluster().await?;
    let found = find_misplaced(&ctx, &cluster, args.regex.as_ref(), &excludes(&args.exclude), &[]).await;
    let found = confirm_misplaced(&ctx, found).await;
    if ctx.printer.json() {
        let map: BTreeMap<String, Vec<&str>> = found
            .copies
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(a, c)| (a.to_string(), c.iter().collect()))
            .collect();
        let unlisted: BTreeMap<String, String> =
            found.failed.iter().map(|(a, why)| (a.to_string(), one_line(why.as_ref()))).collect();
        ctx.printer.print_json(&serde_json::json!({
            "misplaced": map,
            "count": found.count(),
            "scanned": found.scanned,
            "gone": found.gone,
            "agents": found.copies.len(),
            "unlisted": unlisted,
        }))?;
        return Ok(ExitStatus::from_ok(found.failed.is_empty()));
    } else {
        let mut out = ctx.printer.stdout();
        for (addr, names) in &found.copies {
            for name in names.iter() {
                writeln!(out, "{addr}: {name}")?;
            }
        }
        out.flush()?;
    }
    ctx.printer.info(format!(
        "{} misplaced copies among {} listed on {} agents ({} more listed but gone since)",
        found.count(),
        found.scanned,
        found.copies.len(),
        found.gone
    ));
    for (addr, why) in &found.failed {
        ctx.printer.error(crate::printer::about(addr, &one_line(why.as_ref())));
    }
    Ok(ExitStatus::from_ok(found.failed.is_empty()))
}
