//! `bucky backfill MAPFILE|-`: fill metrics from other metrics, `{"old": "new"}`: every copy of `old` on
//! the cluster is healed into every replica of `new`, then verified by content. Never deletes.
//!
//! `bucky backfill2 --src-cluster-seed A --dst-cluster-seed B (--metric-map-file F | -r REGEX)`: the same
//! from one cluster into another (go-graphite buckytools' `backfill2`).

use std::collections::BTreeMap;
use std::io::Read;

use anyhow::Context;
use bucky_wire::MetricName;

use crate::cli::{Backfill2Args, BackfillArgs};
use crate::cluster::Cluster;
use crate::config::{Addr, DEFAULT_PORT};
use crate::ctx::Ctx;
use crate::engine::{self, Operation};
use crate::plan::{self, Rename};
use crate::settings::engine_options;
use crate::{settings, ExitStatus, UsageError};

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

/// Plans and runs the backfill within one cluster.
pub(super) async fn run(args: &BackfillArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(settings::config(&args.cluster)?)?;
    let options = engine_options(Operation::Backfill, &args.engine, ctx.config.workers, false)?;
    let map = read_map(&args.map)?;
    let cluster = ctx.cluster().await?;
    cluster.require_healthy()?;
    let jobs = plan::backfill(&ctx, &cluster, &cluster, &Rename::Map(map)).await?;
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}

/// Plans and runs the backfill from one cluster into another.
pub(super) async fn run_between_clusters(args: &Backfill2Args) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(settings::config(&args.cluster)?)?;
    let options = engine_options(Operation::Backfill2, &args.engine, ctx.config.workers, false)?;
    let rename = match (&args.map, &args.regex) {
        (Some(map), _) => Rename::Map(read_map(map)?),
        (None, Some(regex)) => Rename::Same(regex.clone()),
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
    let jobs = plan::backfill(&ctx, &clusters[0], &clusters[1], &rename).await?;
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}
