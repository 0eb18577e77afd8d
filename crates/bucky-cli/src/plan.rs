//! Planning: which agents to ask, where the selected metrics are, which copies are misplaced, and the jobs
//! of the copy engine for `rebalance`, `drain` and `backfill` (replica syncs and `--allowed-dsts`
//! restrictions included). The commands only validate, call these and print; [`crate::engine`] runs the jobs.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use anyhow::Context;
use futures_util::StreamExt;

use crate::client::ListQuery;
use crate::cluster::{list_agents, Cluster, MemberState};
use crate::config::{Addr, DEFAULT_PORT};
use crate::ctx::Ctx;
use crate::engine::Job;
use crate::error::one_line;
use crate::names::{MetricRegex, NameArena};
use crate::settings::Selection;
use crate::UsageError;

/// Where the selected metrics are, per agent.
#[derive(Debug, Default)]
pub(crate) struct Gathered {
    /// Sorted, deduplicated names per agent, in member order.
    pub(crate) lists: Vec<(Addr, NameArena)>,
    /// Agents that could not be listed, with the reason.
    pub(crate) failed: Vec<(Addr, anyhow::Error)>,
    /// Those of `failed` found unreachable by the cluster's discovery, which warned about them already.
    pub(crate) warned: Vec<Addr>,
}

impl Gathered {
    /// Reports failures on stderr (those not warned about already); returns whether there were none.
    pub(crate) fn report(&self, ctx: &Ctx) -> bool {
        for (addr, why) in self.failed.iter().filter(|(a, _)| !self.warned.contains(a)) {
            ctx.printer.error(crate::printer::about(addr, &one_line(why.as_ref())));
        }
        self.failed.is_empty()
    }

    /// Total names over all agents (copies counted).
    pub(crate) fn copies(&self) -> usize {
        self.lists.iter().map(|(_, l)| l.len()).sum()
    }
}

/// The agents a listing command asks: the seed alone, or every member.
pub(crate) fn targets(cluster: &Cluster, single: bool) -> (Vec<Addr>, Vec<(Addr, anyhow::Error)>) {
    if single {
        return (vec![cluster.seed.clone()], Vec::new());
    }
    let mut targets = Vec::new();
    let mut failed = Vec::new();
    for member in &cluster.members {
        match &member.state {
            MemberState::Unreachable(why) => failed.push((member.addr.clone(), anyhow::Error::new(Arc::clone(why)))),
            _ => targets.push(member.addr.clone()),
        }
    }
    (targets, failed)
}

/// Finds the selected metrics on `targets`.
pub(crate) async fn gather(ctx: &Ctx, selection: &Selection, targets: &[Addr]) -> Gathered {
    let mut gathered = Gathered::default();
    match selection {
        Selection::All | Selection::Regex(_) => {
            let regex = selection.regex().map(|r| r.as_str().to_owned());
            let query = ListQuery { regex, force: ctx.config.force };
            for (addr, result) in list_agents(&ctx.client, &query, targets).await {
                match result {
                    Ok(list) => gathered.lists.push((addr, list)),
                    Err(e) => gathered.failed.push((addr, anyhow::Error::new(e))),
                }
            }
        }
        Selection::Names(names) => {
            let answers =
                futures_util::future::join_all(targets.iter().map(|addr| async move {
                    (addr.clone(), ctx.client.existing(addr, names, ctx.config.force).await)
                }))
                .await;
            for (addr, result) in answers {
                match result {
                    Ok(found) => {
                        let mut list = NameArena::new();
                        for n in &found {
                            list.push(n);
                        }
                        list.sort_dedup();
                        gathered.lists.push((addr, list));
                    }
                    Err(e) => gathered.failed.push((addr, anyhow::Error::new(e))),
                }
            }
        }
    }
    gathered
}

/// Misplaced copies found on the cluster.
#[derive(Debug, Default)]
pub(crate) struct Misplaced {
    /// Per agent, the metrics it should not hold (sorted).
    pub(crate) copies: Vec<(Addr, NameArena)>,
    /// Agents that could not be listed.
    pub(crate) failed: Vec<(Addr, anyhow::Error)>,
    /// Names examined.
    pub(crate) scanned: u64,
    /// Misplaced names that were listed but are gone (404 on a stat), when confirmed.
    pub(crate) gone: u64,
}

impl Misplaced {
    /// Number of misplaced copies.
    pub(crate) fn count(&self) -> usize {
        self.copies.iter().map(|(_, c)| c.len()).sum()
    }
}

/// The exclusion prefixes in effect (an empty prefix clears them).
pub(crate) fn excludes(given: &[String]) -> Vec<String> {
    given.iter().filter(|p| !p.is_empty()).cloned().collect()
}

/// Parses extra agents (`HOST[:PORT]`, port default: the seed's).
pub(crate) fn extra_agents(extra: &[String], cluster_port: u16) -> anyhow::Result<Vec<Addr>> {
    extra
        .iter()
        .map(|e| Addr::parse(e, if cluster_port == 0 { DEFAULT_PORT } else { cluster_port }).map_err(Into::into))
        .collect()
}

/// Streams every member's list (and every `extra` agent's, all of whose metrics are misplaced) and
/// keeps the copies that are not on one of their replicas.
pub(crate) async fn find_misplaced(
    ctx: &Ctx,
    cluster: &Cluster,
    regex: Option<&MetricRegex>,
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
    let query = ListQuery { regex: regex.map(|r| r.as_str().to_owned()), force: ctx.config.force };
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
            Err(e) => out.failed.push((addr, anyhow::Error::new(e))),
        }
    }
    out
}

/// Keeps only the misplaced copies that are still there: a stat of each (`workers` at once per agent); a
/// 404 means the list was stale (counted in [`Misplaced::gone`]). A copy whose stat fails is kept (it may
/// well be there) and its agent reported in [`Misplaced::failed`].
pub(crate) async fn confirm_misplaced(ctx: &Ctx, found: Misplaced) -> Misplaced {
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
                    error.get_or_insert_with(|| anyhow::Error::new(e).context(format!("cannot confirm {name}")));
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

/// Keeps only allowed destinations; a job that lost one keeps its source, a job that lost all is dropped.
pub(crate) fn restrict(jobs: Vec<Job>, allowed: &[Addr]) -> (Vec<Job>, usize) {
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

/// `rebalance`: one job per misplaced copy: heal it into every replica of its metric. Refuses a partial view (an
/// agent that cannot be listed).
pub(crate) async fn rebalance(
    ctx: &Ctx,
    cluster: &Cluster,
    regex: Option<&MetricRegex>,
    excludes: &[String],
    extra: &[Addr],
) -> anyhow::Result<Vec<Job>> {
    let found = find_misplaced(ctx, cluster, regex, excludes, extra).await;
    if !found.failed.is_empty() {
        for (addr, why) in &found.failed {
            ctx.printer.error(crate::printer::about(addr, &one_line(why.as_ref())));
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
    let mut missing = 0usize;
    for (replica, names) in wanted {
        let names: Vec<String> = names.into_iter().collect();
        let held = ctx
            .client
            .existing(&replica, &names, false)
            .await
            .with_context(|| format!("cannot look up metrics on {replica}"))?;
        missing += names.len().saturating_sub(held.len());
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
    ctx.printer.info(format!(
        "{} copies on replicas to heal into the other replicas; {missing} replicas of the moved metrics hold no \
         copy yet and will be created",
        syncs.len()
    ));
    Ok(syncs)
}

/// `drain`: one job per metric on the node: heal it into every replica, then delete it from the node.
pub(crate) fn drain(cluster: &Cluster, node: &Addr, names: &NameArena) -> Vec<Job> {
    names
        .iter()
        .map(|name| Job {
            name: name.to_owned(),
            source_name: name.to_owned(),
            source: node.clone(),
            dests: cluster.replicas_of(name),
            keep_source: false,
        })
        .collect()
}

/// Which source metrics, under which destination names.
pub(crate) enum Rename {
    /// `{"old": "new"}`.
    Map(BTreeMap<String, String>),
    /// Every metric matching the regex, same name.
    Same(MetricRegex),
}

/// `backfill`: one job per copy of a selected metric on `source`: heal it into every replica of its new name on
/// `dest` (the copy's own file excluded).
pub(crate) async fn backfill(ctx: &Ctx, source: &Cluster, dest: &Cluster, rename: &Rename) -> anyhow::Result<Vec<Job>> {
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
    let mut found = HashSet::new();
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

/// A metric whose replicas `repair` must bring together (an audit's finding).
#[derive(Debug, Clone)]
pub(crate) struct RepairTarget {
    /// The metric.
    pub(crate) metric: String,
    /// The replicas holding a file and its mtime, in ring order.
    pub(crate) present: Vec<(Addr, i64)>,
    /// The replicas holding none.
    pub(crate) missing: Vec<Addr>,
    /// Whether the replicas holding a file differ.
    pub(crate) divergent: bool,
}

/// `repair`: the phases of jobs that give every replica of each target the union of the replicas' points
/// (the targets come from `crate::audit`). Per metric the replicas holding a file are ranked — the one
/// on `prefer` first, then the newest file (mtime), then ring order — and the first is the *reference*:
///
/// - phases 1 … n−1 (divergent metrics only): the replica of rank k+1 is healed into the reference,
///   empty slots only, so the reference gains every point it lacks, from the best-ranked replica holding
///   it;
/// - the last phase: the reference is healed into every other replica (the missing ones get a copy) with
///   its values winning where they differ; a divergent metric's every other replica, a metric that is only
///   missing somewhere only those replicas.
///
/// So in the end every replica holds, at each timestamp any replica held, the value of the best-ranked
/// replica that held one. Returned in the order they must run; empty phases left out.
pub(crate) fn repair(findings: &[RepairTarget], prefer: Option<&Addr>) -> Vec<Vec<Job>> {
    let mut phases: Vec<Vec<Job>> = Vec::new();
    let mut last: Vec<Job> = Vec::new();
    for finding in findings {
        let mut ranked: Vec<(usize, &Addr, i64)> =
            finding.present.iter().enumerate().map(|(order, (agent, mtime))| (order, agent, *mtime)).collect();
        // Ties keep ring order.
        ranked.sort_by_key(|&(order, agent, mtime)| (prefer != Some(agent), std::cmp::Reverse(mtime), order));
        let Some(&(_, reference, _)) = ranked.first() else { continue };
        let job = |source: &Addr, dests: Vec<Addr>| Job {
            name: finding.metric.clone(),
            source_name: finding.metric.clone(),
            source: source.clone(),
            dests,
            keep_source: true,
        };
        let dests: Vec<Addr> = if finding.divergent {
            for (k, &(_, agent, _)) in ranked.iter().enumerate().skip(1) {
                if phases.len() < k {
                    phases.resize_with(k, Vec::new);
                }
                phases[k - 1].push(job(agent, vec![reference.clone()]));
            }
            ranked.iter().skip(1).map(|&(_, agent, _)| agent.clone()).chain(finding.missing.iter().cloned()).collect()
        } else {
            finding.missing.clone()
        };
        if !dests.is_empty() {
            last.push(job(reference, dests));
        }
    }
    phases.push(last);
    phases.retain(|phase| !phase.is_empty());
    phases
}
