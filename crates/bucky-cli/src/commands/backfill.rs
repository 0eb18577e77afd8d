//! `bucky backfill MAPFILE|-`: fill metrics from other metrics, `{"old": "new"}`: every copy of `old` on
//! the cluster is healed into every replica of `new`, then verified by content. Never deletes.
//!
//! `bucky backfill2 --src-cluster-seed A --dst-cluster-seed B (--metric-map-file F | -r REGEX)`: the same
//! from one cluster into another (go-graphite buckytools' `backfill2`).

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Context;
use bucky_wire::MetricName;
use clap::Args;

use super::list::{gather, targets};
use super::Ctx;
use crate::cli::{ClusterArgs, EngineArgs};
use crate::cluster::Cluster;
use crate::config::{Addr, DEFAULT_PORT};
use crate::engine::{self, Job, Operation};
use crate::engine_settings::engine_options;
use crate::names::Selection;
use crate::{ExitStatus, UsageError};

/// `bucky backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// JSON object mapping source metrics to destination metrics; `-` reads stdin.
    #[arg(value_name = "MAPFILE")]
    pub map: String,
}

/// Reads and checks the map.
fn read_map(path: &str) -> anyhow::Result<BTreeMap<String, String>> {
    let text = if path == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).context("cannot read the map from stdin")?;
        text
    } else {
        std::fs::read_to_string(path).with_context(|| format!("cannot read the map file {path}"))?
    };
    let map: BTreeMap<String, String> = serde_json::from_str(&text)
        .map_err(|e| UsageError(format!("the map must be a JSON object {{\"old\": \"new\", …}}: {e}")))?;
    for (old, new) in &map {
        for name in [old, new] {
            MetricName::parse(name).map_err(|e| UsageError(format!("invalid metric name {name:?}: {e}")))?;
        }
        if old == new {
            return Err(UsageError(format!("{old:?} is mapped onto itself")).into());
        }
    }
    Ok(map)
}

/// `bucky backfill2`: the go-graphite buckytools cross-cluster backfill. Every copy of a selected metric on
/// the source cluster is healed into every replica of its (new) name on the destination cluster, verified
/// by content. Never deletes.
#[derive(Debug, Args)]
pub struct Backfill2Args {
    /// Common flags (`-h` is not used: the two seeds name the clusters).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Any agent of the cluster to copy from, HOST[:PORT].
    #[arg(long = "src-cluster-seed", value_name = "HOST[:PORT]")]
    pub src_seed: String,
    /// Any agent of the cluster to copy into, HOST[:PORT].
    #[arg(long = "dst-cluster-seed", value_name = "HOST[:PORT]")]
    pub dst_seed: String,
    /// JSON object mapping source metrics to destination metrics (`-` reads stdin).
    #[arg(long = "metric-map-file", value_name = "FILE", required_unless_present = "regex", conflicts_with = "regex")]
    pub map: Option<String>,
    /// Instead of a map: every metric matching this regex (RE2 syntax), under the same name.
    #[arg(short = 'r', long, value_name = "REGEX")]
    pub regex: Option<String>,
}

/// Plans and runs the backfill within one cluster.
pub async fn run(args: &BackfillArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.cluster)?;
    let options = engine_options(Operation::Backfill, &args.engine, ctx.config.workers, false)?;
    let map = read_map(&args.map)?;
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    let jobs = plan(&ctx, &cluster, &cluster, &Rename::Map(map)).await?;
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}

/// Plans and runs the backfill from one cluster into another.
pub async fn run_between_clusters(args: &Backfill2Args) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.cluster)?;
    let options = engine_options(Operation::Backfill2, &args.engine, ctx.config.workers, false)?;
    let rename = match (&args.map, &args.regex) {
        (Some(map), _) => Rename::Map(read_map(map)?),
        (None, Some(regex)) => {
            regex::Regex::new(regex).map_err(|e| UsageError(format!("invalid regex: {e}")))?;
            Rename::Same(regex.clone())
        }
        (None, None) => return Err(UsageError("give --metric-map-file FILE or -r REGEX".into()).into()),
    };
    let mut clusters = Vec::new();
    for (role, seed) in [("source", &args.src_seed), ("destination", &args.dst_seed)] {
        let seed = Addr::parse(seed, DEFAULT_PORT)?;
        let cluster = Cluster::discover(&ctx.client, &seed, ctx.config.diverse_replicas)
            .await
            .with_context(|| format!("the {role} cluster"))?;
        if let Some(note) = &cluster.placement.note {
            ctx.printer.info(format!("{role} cluster: placement: {note}"));
        }
        for problem in cluster.problems() {
            ctx.printer.warn(format!("{role} cluster: {problem}"));
        }
        cluster.require_healthy().with_context(|| format!("the {role} cluster"))?;
        clusters.push(cluster);
    }
    let jobs = plan(&ctx, &clusters[0], &clusters[1], &rename).await?;
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}

/// Which source metrics, under which destination names.
enum Rename {
    /// `{"old": "new"}`.
    Map(BTreeMap<String, String>),
    /// Every metric matching the regex, same name.
    Same(String),
}

/// One job per copy of a selected metric on `source`: heal it into every replica of its new name on
/// `dest` (the copy's own file excluded).
async fn plan(ctx: &Ctx, source: &Cluster, dest: &Cluster, rename: &Rename) -> anyhow::Result<Vec<Job>> {
    let selection = match rename {
        Rename::Map(map) => Selection::Names(map.keys().cloned().collect()),
        Rename::Same(regex) => Selection::Regex(regex.clone()),
    };
    let (agents, _) = targets(source, false);
    let gathered = gather(ctx, &selection, &agents).await;
    if !gathered.report(ctx) {
        return Err(UsageError("cannot look up the sources on every agent".into()).into());
    }
    let mut jobs = Vec::new();
    let mut found = std::collections::HashSet::new();
    for (agent, names) in &gathered.lists {
        for old in names.iter() {
            let new = match rename {
                Rename::Map(map) => match map.get(old) {
                    Some(new) => new.clone(),
                    None => continue,
                },
                Rename::Same(_) => old.to_owned(),
            };
            found.insert(old.to_owned());
            // Healing a file from itself changes nothing; a renamed metric on the same agent is another file.
            let dests: Vec<Addr> = dest.replicas_of(&new).into_iter().filter(|d| d != agent || new != old).collect();
            if dests.is_empty() {
                continue;
            }
            jobs.push(Job { name: new, source_name: old.to_owned(), source: agent.clone(), dests, keep_source: true });
        }
    }
    if let Rename::Map(map) = rename {
        for old in map.keys().filter(|o| !found.contains(*o)) {
            ctx.printer.warn(format!("{old} is not on any agent: nothing to backfill from"));
        }
    }
    Ok(jobs)
}
