//! `bucky rebalance [--delete] [--no-op] [extra HOST:PORT…]`: heal every misplaced copy into every replica
//! that should hold it, verify each replica by content, and with `--delete` remove the source only then
//! (with `If-Match` of the version copied). See [`crate::engine`]. `--allowed-dsts` limits where it writes
//! (go-graphite buckytools' flag).

use clap::Args;

use super::inconsistent::{excludes, extra_agents, find_misplaced, DEFAULT_EXCLUDES};
use super::Ctx;
use crate::cli::{ClusterArgs, EngineArgs};
use std::collections::{BTreeMap, BTreeSet};

use crate::cluster::{short_error, Cluster};
use crate::config::Addr;
use crate::engine::{self, Job, Operation};
use crate::engine_settings::engine_options;
use crate::{ExitStatus, UsageError};

/// `bucky rebalance`.
#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Delete each source once all its replicas hold every one of its points.
    #[arg(long)]
    pub delete: bool,
    /// Scope: only metrics matching this regex (RE2 syntax).
    #[arg(short = 'r', long, value_name = "REGEX")]
    pub regex: Option<String>,
    /// Skip metrics starting with this prefix (repeatable; replaces the defaults; `--exclude ''` moves
    /// everything).
    #[arg(long, alias = "go-carbon-prefix", value_name = "PREFIX", default_values_t = DEFAULT_EXCLUDES.map(String::from))]
    pub exclude: Vec<String>,
    /// Only write to these agents (`h:p;h:p`, or repeat the flag): copies bound elsewhere wait for a later
    /// run, and a source is deleted only when every one of its replicas was allowed and verified.
    #[arg(long = "allowed-dsts", value_name = "HOST:PORT;…", value_delimiter = ';')]
    pub allowed_dsts: Vec<String>,
    /// Agents outside the ring to drain too, HOST[:PORT] (to empty a node leaving the cluster and check it
    /// ends empty, see `bucky drain`).
    #[arg(value_name = "EXTRA")]
    pub extra: Vec<String>,
}

/// Keeps only allowed destinations; a job that lost one keeps its source, a job that lost all is dropped.
fn restrict(jobs: Vec<Job>, allowed: &[Addr]) -> (Vec<Job>, usize) {
    let mut held_back = 0;
    let jobs = jobs
        .into_iter()
        .filter_map(|mut job| {
            let before = job.dests.len();
            job.dests.retain(|d| allowed.contains(d));
            if job.dests.len() < before {
                held_back += 1;
                job.keep_source = true;
            }
            (!job.dests.is_empty()).then_some(job)
        })
        .collect();
    (jobs, held_back)
}

/// One job per misplaced copy: heal it into every replica of its metric. Refuses a partial view (an
/// agent that cannot be listed).
pub async fn plan(
    ctx: &Ctx,
    cluster: &Cluster,
    regex: Option<String>,
    excludes: &[String],
    extra: &[Addr],
) -> anyhow::Result<Vec<Job>> {
    let found = find_misplaced(ctx, cluster, regex, excludes, extra).await;
    if !found.failed.is_empty() {
        for (addr, why) in &found.failed {
            ctx.printer.error(crate::printer::about(addr, why));
        }
        return Err(UsageError("cannot list every agent: refusing to rebalance a partial view".into()).into());
    }
    let mut jobs = Vec::with_capacity(found.count());
    for (source, names) in &found.copies {
        for name in names.iter() {
            jobs.push(Job {
                name: name.to_owned(),
                source_name: name.to_owned(),
                source: source.clone(),
                dests: cluster.replicas_of(name),
                keep_source: false,
            });
        }
    }
    ctx.printer.info(format!("{} misplaced copies among {} listed", jobs.len(), found.scanned));
    jobs.extend(replica_syncs(ctx, cluster, &jobs).await?);
    Ok(jobs)
}

/// With replication > 1, the copies a moved metric already has on its replicas are healed into its other
/// replicas too (never deleted), so every replica ends with the union of all copies, not only of the
/// misplaced ones.
pub(crate) async fn replica_syncs(ctx: &Ctx, cluster: &Cluster, moves: &[Job]) -> anyhow::Result<Vec<Job>> {
    if cluster.ring.replicas() < 2 || moves.is_empty() {
        return Ok(Vec::new());
    }
    let mut wanted: BTreeMap<Addr, BTreeSet<String>> = BTreeMap::new();
    for job in moves {
        for replica in &job.dests {
            wanted.entry(replica.clone()).or_default().insert(job.name.clone());
        }
    }
    let mut syncs = Vec::new();
    for (replica, names) in wanted {
        let names: Vec<String> = names.into_iter().collect();
        let held = ctx
            .client
            .existing(&replica, &names, false)
            .await
            .map_err(|e| anyhow::anyhow!("cannot look up metrics on {replica}: {}", short_error(&e)))?;
        for name in held {
            let dests: Vec<Addr> = cluster.replicas_of(&name).into_iter().filter(|d| *d != replica).collect();
            if !dests.is_empty() {
                syncs.push(Job {
                    name: name.clone(),
                    source_name: name,
                    source: replica.clone(),
                    dests,
                    keep_source: true,
                });
            }
        }
    }
    ctx.printer.info(format!("{} copies on replicas to heal into the other replicas", syncs.len()));
    Ok(syncs)
}

/// Plans and runs the rebalance.
pub async fn run(args: &RebalanceArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.cluster)?;
    let options = engine_options(Operation::Rebalance, &args.engine, ctx.config.workers, args.delete)?;
    if let Some(r) = &args.regex {
        regex::Regex::new(r).map_err(|e| UsageError(format!("invalid regex: {e}")))?;
    }
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    let extra = extra_agents(&args.extra, cluster.seed.port)?;
    let allowed = extra_agents(&args.allowed_dsts, cluster.seed.port)?;
    let mut jobs = plan(&ctx, &cluster, args.regex.clone(), &excludes(&args.exclude), &extra).await?;
    if !allowed.is_empty() {
        let (kept, held_back) = restrict(jobs, &allowed);
        if held_back > 0 {
            ctx.printer.warn(format!(
                "{held_back} copies have replicas outside --allowed-dsts: healed only into the allowed ones, sources kept"
            ));
        }
        jobs = kept;
    }
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}
