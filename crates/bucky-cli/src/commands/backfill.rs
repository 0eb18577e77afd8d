//! `bucky backfill MAPFILE|-`: fill metrics from other metrics, `{"old": "new"}`: every copy of `old` on
//! the cluster is healed into every replica of `new`, then verified by content. Never deletes.

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Context;
use bucky_wire::MetricName;
use clap::Args;

use super::list::{gather, targets};
use super::Ctx;
use crate::cli::{ClusterArgs, EngineArgs};
use crate::engine::{self, Job, Options};
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

/// Plans and runs the backfill.
pub async fn run(args: &BackfillArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.cluster)?;
    let options = Options::from_args("backfill", &args.engine, ctx.config.workers, false)?;
    let map = read_map(&args.map)?;
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    let (agents, _) = targets(&cluster, false);
    let gathered = gather(&ctx, &Selection::Names(map.keys().cloned().collect()), &agents).await;
    if !gathered.report(&ctx) {
        return Err(UsageError("cannot look up the sources on every agent".into()).into());
    }
    let mut jobs = Vec::new();
    let mut found = std::collections::HashSet::new();
    for (source, names) in &gathered.lists {
        for old in names.iter() {
            let Some(new) = map.get(old) else { continue };
            found.insert(old.to_owned());
            jobs.push(Job {
                name: new.clone(),
                source_name: old.to_owned(),
                source: source.clone(),
                dests: cluster.replicas_of(new),
                keep_source: true,
            });
        }
    }
    for old in map.keys().filter(|o| !found.contains(*o)) {
        ctx.printer.warn(format!("{old} is not on any agent: nothing to backfill from"));
    }
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}
