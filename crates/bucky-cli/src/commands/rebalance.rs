//! `bucky rebalance [--delete] [--no-op] [extra HOST:PORT…]`: heal every misplaced copy into every replica
//! that should hold it, verify each replica by content, and with `--delete` remove the source only then
//! (with `If-Match` of the version copied). See [`crate::engine`]. `--allowed-dsts` limits where it writes
//! (go-graphite buckytools' flag).

use crate::cli::RebalanceArgs;
use crate::ctx::Ctx;
use crate::engine::{self, Operation};
use crate::plan::{self, excludes, extra_agents};
use crate::settings::engine_options;
use crate::{settings, ExitStatus};

/// Plans and runs the rebalance.
pub(super) async fn run(args: &RebalanceArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(settings::config(&args.cluster)?)?;
    let options = engine_options(Operation::Rebalance, &args.engine, ctx.config.workers, args.delete)?;
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    let extra = extra_agents(&args.extra, cluster.seed.port)?;
    let allowed = extra_agents(&args.allowed_dsts, cluster.seed.port)?;
    let mut jobs = plan::rebalance(&ctx, &cluster, args.regex.as_ref(), &excludes(&args.exclude), &extra).await?;
    if !allowed.is_empty() {
        let (kept, held_back) = plan::restrict(jobs, &allowed);
        if held_back > 0 {
            ctx.printer.warn(format!(
                "{held_back} copies have replicas outside --allowed-dsts: healed only into the allowed ones, sources kept"
            ));
        }
        jobs = kept;
    }
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}
