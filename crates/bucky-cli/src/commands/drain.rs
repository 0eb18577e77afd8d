//! `bucky drain HOST:PORT`: move every metric off a node that is leaving the cluster, to all of its ring
//! homes, then check that the node is empty.
//!
//! The node is found by address: it is not (any more) a member of the ring the seed reports, and its agent
//! runs outside the ring (it serves reads and deletes, refuses writes, so nothing new lands on it). Each
//! metric on it becomes a job of the copy engine with the node as its source and every replica of the
//! metric as destinations, exactly like a misplaced copy in `rebalance --delete`: healed, verified by
//! content, and only then deleted from the node (the engine's rule, [`crate::engine`]). With replication
//! above 1 the copies the replicas already hold are synced into each other too (as `rebalance` does).
//! Afterwards the node is listed again: empty is success; anything left is reported with why, exit 1.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;

use anyhow::Context;
use serde::Serialize;

use crate::cli::DrainArgs;
use crate::client::ListQuery;
use crate::cluster::{list_agents, Cluster};
use crate::config::Addr;
use crate::ctx::Ctx;
use crate::engine::{self, Operation, Summary};
use crate::names::{MetricRegex, NameArena};
use crate::plan::{self, replica_syncs};
use crate::settings::engine_options;
use crate::{settings, ExitStatus, UsageError};

/// Names of what is left printed (all of them are in `--json`'s `left_count`).
const SHOWN_LEFT: usize = 20;

/// A metric still on the node after the drain, and why.
#[derive(Debug, Serialize)]
struct Left {
    metric: String,
    reason: String,
}

/// The `--json` report.
#[derive(Debug, Serialize)]
struct Report<'a> {
    node: String,
    empty: bool,
    left_count: usize,
    left: Vec<Left>,
    summary: &'a Summary,
}

/// Checks that the seed is a ring member and that `node` is not one.
fn check_roles(cluster: &Cluster, node: &Addr) -> anyhow::Result<()> {
    if !cluster.ring.nodes().iter().any(|n| n.server == cluster.info.name) {
        return Err(UsageError(format!(
            "the seed {} (node {:?}) is not in its own ring (is it the node being drained?): give a ring member \
             with -h/--host",
            cluster.seed, cluster.info.name
        ))
        .into());
    }
    if cluster.member(node).is_some() || *node == cluster.seed {
        return Err(UsageError(format!(
            "{node} is still in the ring the seed reports: restart the other agents with a ring without it (and \
             this one too, so that it refuses new writes), then drain it"
        ))
        .into());
    }
    Ok(())
}

/// Lists the node (a fresh scan when `force`).
async fn list_node(ctx: &Ctx, node: &Addr, regex: Option<&MetricRegex>, force: bool) -> anyhow::Result<NameArena> {
    let query = ListQuery { regex: regex.map(|r| r.as_str().to_owned()), force };
    let (_, listed) = list_agents(&ctx.client, &query, std::slice::from_ref(node))
        .await
        .pop()
        .ok_or_else(|| anyhow::anyhow!("no answer from {node}"))?;
    listed.with_context(|| format!("cannot list {node}"))
}

/// Why `metric` is still on the node.
fn why_left(metric: &str, planned: &BTreeSet<&str>, failures: &BTreeMap<&str, &str>) -> String {
    if let Some(reason) = failures.get(metric) {
        format!("failed: {reason}")
    } else if !planned.contains(metric) {
        "not there when the drain started: is carbon or a relay still writing to this node?".into()
    } else {
        "still there after its move (failed, or written again during the drain; see --error-file, rerun)".into()
    }
}

/// Drains the node; exit 1 unless it ends empty.
pub(super) async fn run(args: &DrainArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(settings::config(&args.cluster)?)?;
    let options = engine_options(Operation::Drain, &args.engine, ctx.config.workers, true)?;
    let node = Addr::parse(&args.node, ctx.config.seed.port)?;
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    check_roles(&cluster, &node)?;
    match ctx.client.hashring(&node).await {
        Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot reach {node}"))),
        Ok(theirs) if theirs.nodes.iter().any(|n| n.server == theirs.name) => ctx.printer.warn(format!(
            "{node} still has itself in its ring (node {:?}): it accepts new writes; restart it with the new ring \
             so that nothing lands on it during the drain",
            theirs.name
        )),
        Ok(_) => {}
    }
    let names = list_node(&ctx, &node, args.regex.as_ref(), ctx.config.force).await?;
    let mut jobs = plan::drain(&cluster, &node, &names);
    ctx.printer.info(format!("{} metrics on {node} to move to their ring homes", jobs.len()));
    jobs.extend(replica_syncs(&ctx, &cluster, &jobs).await?);
    if args.engine.no_op {
        engine::print_plan(&ctx.printer, &jobs, Operation::Drain, true)?;
        return Ok(ExitStatus::Success);
    }
    let tolerance = options.error_tolerance;
    let summary = engine::execute(&ctx.client, &ctx.printer, options, jobs).await?;
    if summary.aborted {
        return Ok(ExitStatus::Interrupted);
    }

    // Whatever a fresh scan of the node still finds is reported with why.
    let left = list_node(&ctx, &node, args.regex.as_ref(), true).await?;
    let planned: BTreeSet<&str> = names.iter().collect();
    let failures: BTreeMap<&str, &str> =
        summary.failures.iter().map(|f| (f.metric.as_str(), f.reason.as_str())).collect();
    let shown: Vec<Left> = left
        .iter()
        .take(SHOWN_LEFT)
        .map(|metric| Left { metric: metric.to_owned(), reason: why_left(metric, &planned, &failures) })
        .collect();
    let empty = left.is_empty();
    let scope = match &args.regex {
        Some(r) => format!(" matching {:?}", r.as_str()),
        None => String::new(),
    };
    if ctx.printer.json() {
        let report = Report { node: node.to_string(), empty, left_count: left.len(), left: shown, summary: &summary };
        ctx.printer.print_json(&report)?;
    } else {
        summary.print(&ctx.printer)?;
        if empty {
            let mut out = ctx.printer.stdout();
            writeln!(out, "{node} is empty: no metric{scope} left on it")?;
            out.flush()?;
        } else {
            for l in &shown {
                ctx.printer.error(format!("left on {node}: {}: {}", l.metric, l.reason));
            }
            if left.len() > shown.len() {
                ctx.printer.error(format!("… and {} more", left.len() - shown.len()));
            }
            ctx.printer.error(format!("{node} is NOT empty: {} metrics{scope} left on it", left.len()));
        }
    }
    Ok(ExitStatus::from_ok(empty && summary.ok(tolerance)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_for_what_is_left() {
        let planned: BTreeSet<&str> = ["a", "b"].into();
        let failures: BTreeMap<&str, &str> = [("a", "heal into x: refused")].into();
        assert_eq!(why_left("a", &planned, &failures), "failed: heal into x: refused");
        assert!(why_left("b", &planned, &failures).starts_with("still there after its move"));
        assert!(why_left("c", &planned, &failures).contains("still writing to this node"));
    }
}
