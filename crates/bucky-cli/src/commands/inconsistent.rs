//! `bucky inconsistent`: copies of metrics on agents that are not among the metric's replicas
//! (RF- and instance-aware: with replication 2, a metric on both of its nodes is consistent).
//!
//! Lists are streamed; only the misplaced names are kept. Each misplaced copy is then confirmed with a
//! stat on its agent: buckyd's list is a cache up to an hour old (and `force` may still answer the old one),
//! so right after a move it still names the copies that were moved away. Those answer 404 and are counted
//! as "gone since listed", not reported.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Args;
use futures_util::StreamExt;

use super::list::targets;
use super::Ctx;
use crate::cli::ClusterArgs;
use crate::client::ListQuery;
use crate::cluster::{short_error, Cluster};
use crate::config::{Addr, DEFAULT_PORT};
use crate::names::NameArena;
use crate::{ExitStatus, UsageError};

/// Prefixes of carbon's and carbon-c-relay's own statistics, written locally by every daemon and so
/// "misplaced" by design.
pub const DEFAULT_EXCLUDES: [&str; 2] = ["carbon.agents.", "carbon.relays."];

/// `bucky inconsistent`.
#[derive(Debug, Args)]
pub struct InconsistentArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Scope: only metrics matching this regex (RE2 syntax).
    #[arg(short = 'r', long, value_name = "REGEX")]
    pub regex: Option<String>,
    /// Skip metrics starting with this prefix (repeatable; replaces the defaults; `--exclude ''` checks
    /// everything).
    #[arg(long, alias = "go-carbon-prefix", value_name = "PREFIX", default_values_t = DEFAULT_EXCLUDES.map(String::from))]
    pub exclude: Vec<String>,
}

/// Misplaced copies found on the cluster.
#[derive(Debug, Default)]
pub struct Misplaced {
    /// Per agent, the metrics it should not hold (sorted).
    pub copies: Vec<(Addr, NameArena)>,
    /// Agents that could not be listed.
    pub failed: Vec<(Addr, String)>,
    /// Names examined.
    pub scanned: u64,
    /// Misplaced names that were listed but are gone (404 on a stat), when confirmed.
    pub gone: u64,
}

impl Misplaced {
    /// Number of misplaced copies.
    pub fn count(&self) -> usize {
        self.copies.iter().map(|(_, c)| c.len()).sum()
    }
}

/// The exclusion prefixes in effect (an empty prefix clears them).
pub fn excludes(given: &[String]) -> Vec<String> {
    given.iter().filter(|p| !p.is_empty()).cloned().collect()
}

/// Parses extra agents (`HOST[:PORT]`, port default: the seed's).
pub fn extra_agents(extra: &[String], cluster_port: u16) -> anyhow::Result<Vec<Addr>> {
    extra
        .iter()
        .map(|e| Addr::parse(e, if cluster_port == 0 { DEFAULT_PORT } else { cluster_port }).map_err(Into::into))
        .collect()
}

/// Streams every member's list (and every `extra` agent's, all of whose metrics are misplaced) and
/// keeps the copies that are not on one of their replicas.
pub async fn find_misplaced(
    ctx: &Ctx,
    cluster: &Cluster,
    regex: Option<String>,
    excludes: &[String],
    extra: &[Addr],
) -> Misplaced {
    let (mut agents, failed) = targets(cluster, false);
    for e in extra {
        if !agents.contains(e) {
            agents.push(e.clone());
        }
    }
    // Ring node index -> member index, so the check per name allocates nothing.
    let member_of_node: Vec<Option<usize>> = cluster
        .ring
        .nodes()
        .iter()
        .map(|n| {
            let addr = cluster.addr_of(n);
            agents.iter().position(|a| *a == addr)
        })
        .collect();
    let query = ListQuery { regex, force: ctx.config.force };
    let results = futures_util::future::join_all(agents.iter().enumerate().map(|(index, addr)| {
        let query = &query;
        let member_of_node = &member_of_node;
        async move {
            let mut misplaced = NameArena::new();
            let mut scanned = 0u64;
            let result = ctx
                .client
                .list(addr, query, |name| {
                    scanned += 1;
                    if excludes.iter().any(|p| name.starts_with(p.as_str())) {
                        return;
                    }
                    let home = cluster.ring.replica_indices(&name).any(|i| member_of_node[i] == Some(index));
                    if !home {
                        misplaced.push(&name);
                    }
                })
                .await;
            misplaced.sort_dedup();
            (addr.clone(), result.map(|_| (misplaced, scanned)))
        }
    }))
    .await;
    let mut out = Misplaced { failed, ..Misplaced::default() };
    for (addr, result) in results {
        match result {
            Ok((names, scanned)) => {
                out.scanned += scanned;
                out.copies.push((addr, names));
            }
            Err(e) => out.failed.push((addr, short_error(&e))),
        }
    }
    out
}

/// Keeps only the misplaced copies that are still there: a stat of each (`workers` at once per agent); a
/// 404 means the list was stale (counted in [`Misplaced::gone`]). A copy whose stat fails is kept (it may
/// well be there) and its agent reported in [`Misplaced::failed`].
pub async fn confirm_misplaced(ctx: &Ctx, found: Misplaced) -> Misplaced {
    let workers = ctx.config.workers;
    let Misplaced { copies, mut failed, scanned, mut gone } = found;
    let checked = futures_util::future::join_all(copies.into_iter().map(|(addr, names)| async move {
        let stats = futures_util::stream::iter(names.iter().map(str::to_owned))
            .map(|name| {
                let addr = &addr;
                async move {
                    let stat = ctx.client.stat(addr, &name).await;
                    (name, stat)
                }
            })
            .buffered(workers)
            .collect::<Vec<_>>()
            .await;
        let mut kept = NameArena::new();
        let (mut gone, mut error) = (0u64, None);
        for (name, stat) in stats {
            match stat {
                Ok(Some(_)) => kept.push(&name),
                Ok(None) => gone += 1,
                Err(e) => {
                    kept.push(&name);
                    error.get_or_insert_with(|| format!("cannot confirm {name}: {}", short_error(&e)));
                }
            }
        }
        (addr, kept, gone, error)
    }))
    .await;
    let mut copies = Vec::with_capacity(checked.len());
    for (addr, kept, stale, error) in checked {
        gone += stale;
        if let Some(error) = error {
            failed.push((addr.clone(), error));
        }
        copies.push((addr, kept));
    }
    Misplaced { copies, failed, scanned, gone }
}

/// Prints `agent: metric` for every misplaced copy and a summary on stderr; with `--json`, one object on
/// stdout: `{"misplaced": {agent: [metrics]}, "count", "scanned", "agents", "unlisted": {agent: why}}`.
pub async fn run(args: &InconsistentArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.cluster)?;
    if let Some(r) = &args.regex {
        regex::Regex::new(r).map_err(|e| UsageError(format!("invalid regex: {e}")))?;
    }
    let cluster = ctx.cluster().await?;
    let found = find_misplaced(&ctx, &cluster, args.regex.clone(), &excludes(&args.exclude), &[]).await;
    let found = confirm_misplaced(&ctx, found).await;
    if ctx.printer.json() {
        let map: BTreeMap<String, Vec<&str>> = found
            .copies
            .iter()
            .filter(|(_, c)| !c.is_empty())
            .map(|(a, c)| (a.to_string(), c.iter().collect()))
            .collect();
        let unlisted: BTreeMap<String, &str> =
            found.failed.iter().map(|(a, why)| (a.to_string(), why.as_str())).collect();
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
        ctx.printer.error(crate::printer::about(addr, why));
    }
    Ok(ExitStatus::from_ok(found.failed.is_empty()))
}
