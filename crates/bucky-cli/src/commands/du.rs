//! `bucky du [-r] [names|-|regex]`: disk usage of metrics, per agent and in total. A total that lacks agents
//! (not listed) or metrics (not stat'ed) says so: `total (partial: … not counted)`, `"partial": true`.

use std::collections::BTreeMap;
use std::io::Write;

use serde::Serialize;

use crate::cli::DuArgs;
use crate::error::one_line;
use crate::printer::human_bytes;
use crate::scope::{open_scope, stat_each, Unread};
use crate::settings::Scope;
use crate::ExitStatus;

#[derive(Debug, Default, Serialize)]
struct Usage {
    metrics: u64,
    bytes: u64,
}

/// Prints the usage.
pub(super) async fn run(args: &DuArgs) -> anyhow::Result<ExitStatus> {
    let (ctx, _cluster, gathered) = open_scope(Scope::from_args(&args.scope, false)?, |_| Ok(())).await?;
    let mut per_agent: BTreeMap<String, Usage> = BTreeMap::new();
    let mut unread = Unread::default();
    stat_each(&ctx, &gathered, |addr, name, result| {
        match result {
            Ok(Some(stat)) => {
                let usage = per_agent.entry(addr.to_string()).or_default();
                usage.metrics += 1;
                usage.bytes += u64::try_from(stat.size).unwrap_or(0);
            }
            Ok(None) => {}
            Err(e) => unread.on_agent(addr, name, one_line(&e)),
        }
        Ok(())
    })
    .await?;
    let total = Usage {
        metrics: per_agent.values().map(|u| u.metrics).sum(),
        bytes: per_agent.values().map(|u| u.bytes).sum(),
    };
    let unlisted: Vec<String> = gathered.failed.iter().map(|(a, _)| a.to_string()).collect();
    let partial = !unlisted.is_empty() || unread.count() > 0;
    if ctx.printer.json() {
        ctx.printer.print_json(&serde_json::json!({
            "agents": per_agent, "total": total, "partial": partial, "unlisted": unlisted, "unread": unread,
        }))?;
    } else {
        let mut out = ctx.printer.stdout();
        for (agent, usage) in &per_agent {
            writeln!(out, "{}\t{}\t{} metrics\t{agent}", usage.bytes, human_bytes(usage.bytes), usage.metrics)?;
        }
        writeln!(
            out,
            "{}\t{}\t{} metrics\ttotal{}",
            total.bytes,
            human_bytes(total.bytes),
            total.metrics,
            partial_note(&unlisted, unread.count())
        )?;
        out.flush()?;
        drop(out);
        gathered.report(&ctx);
        unread.report(&ctx);
    }
    Ok(ExitStatus::from_ok(!partial))
}

/// ` (partial: 127.0.0.3:4242 not counted, 5 metrics not stat'ed)` after a total that lacks something.
fn partial_note(unlisted: &[String], unread: usize) -> String {
    let mut missing = Vec::new();
    if !unlisted.is_empty() {
        missing.push(format!("{} not counted", unlisted.join(", ")));
    }
    if unread > 0 {
        missing.push(format!("{unread} metrics not stat'ed"));
    }
    if missing.is_empty() {
        String::new()
    } else {
        format!(" (partial: {})", missing.join(", "))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_partial_total_says_what_it_lacks() {
        assert_eq!(super::partial_note(&[], 0), "");
        assert_eq!(super::partial_note(&["a:1".into(), "b:1".into()], 0), " (partial: a:1, b:1 not counted)");
        assert_eq!(super::partial_note(&[], 3), " (partial: 3 metrics not stat'ed)");
    }
}
