//! `bucky repair`: audits the replicas (as `bucky audit`), then heals every replica of each metric that is
//! missing somewhere or divergent to the union of the replicas' points, through the copy engine (batches,
//! read-back verification, progress, `--state-file`, `--max-rate`), in the phases of [`crate::plan::repair`].
//! Conflicts (two replicas with different values at one timestamp) go to the reference replica's value:
//! `--prefer HOST`, else the newest file. Never deletes a file; misplaced copies are left to `rebalance`.

use crate::audit::audit;
use crate::cli::RepairArgs;
use crate::ctx::Ctx;
use crate::engine::{self, Operation, Summary};
use crate::plan::{self, extra_agents};
use crate::settings::engine_options;
use crate::{settings, ExitStatus, UsageError};

/// Audits, plans and runs the repair.
pub(super) async fn run(args: &RepairArgs) -> anyhow::Result<ExitStatus> {
    let (config, spec) = settings::audit(&args.cluster, &args.names, &args.exclude, args.until, args.digest_batch)?;
    let ctx = Ctx::new(config)?;
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    let prefer = match &args.prefer {
        None => None,
        Some(host) => {
            let addr = extra_agents(std::slice::from_ref(host), cluster.seed.port)?.remove(0);
            if cluster.member(&addr).is_none() {
                return Err(UsageError(format!("--prefer {addr}: not a member of the cluster")).into());
            }
            Some(addr)
        }
    };
    let report = audit(&ctx, &cluster, &spec).await?;
    ctx.printer.info(format!(
        "audit: {} metrics, {} healthy, {} missing a replica, {} divergent, {} misplaced copies (left to rebalance), \
         {} unreadable",
        report.metrics, report.healthy, report.missing, report.divergent, report.misplaced, report.errors
    ));
    for failure in &report.failures {
        ctx.printer.error(format!("{} on {}: {} (not repaired)", failure.metric, failure.agent, failure.reason));
    }
    let targets: Vec<plan::RepairTarget> = report
        .findings
        .iter()
        .map(|f| plan::RepairTarget {
            metric: f.metric.clone(),
            present: f.present.iter().map(|c| (c.agent.clone(), c.mod_time)).collect(),
            missing: f.missing.clone(),
            divergent: f.divergent,
        })
        .collect();
    let phases = plan::repair(&targets, prefer.as_ref());
    if phases.is_empty() {
        ctx.printer.info("repair: nothing to do");
        return Ok(ExitStatus::from_ok(report.errors == 0));
    }
    let count = phases.len();
    if args.engine.no_op {
        for (i, jobs) in phases.iter().enumerate() {
            let op = Operation::Repair { overwrite: i + 1 == count };
            engine::print_plan(&ctx.printer, jobs, op, false)?;
        }
        return Ok(ExitStatus::Success);
    }
    let mut total = Summary { operation: Operation::Repair { overwrite: true }, ..Summary::default() };
    let mut tolerance = 0;
    for (i, jobs) in phases.into_iter().enumerate() {
        let op = Operation::Repair { overwrite: i + 1 == count };
        let options = engine_options(op, &args.engine, ctx.config.workers, false)?;
        tolerance = options.error_tolerance;
        let summary = engine::execute(&ctx.client, &ctx.printer, options, jobs).await?;
        let aborted = summary.aborted;
        total.absorb(summary);
        if aborted {
            return Ok(ExitStatus::Interrupted);
        }
    }
    total.print(&ctx.printer)?;
    Ok(ExitStatus::from_ok(total.ok(tolerance) && report.errors == 0))
}
