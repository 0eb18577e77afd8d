//! The replica audit behind `bucky audit` and `bucky repair`: do the replicas of every metric hold the
//! same points?
//!
//! 1. Every member's list (sorted arenas) is merged into one stream of names, each with the agents that
//!    hold it; names are taken a chunk at a time ([`CHUNK`]), so besides the lists the audit holds one
//!    chunk of results.
//! 2. A copy on an agent that is not among the metric's replicas is *misplaced* (as `inconsistent`). A
//!    metric with at least one copy on a replica gets a digest from **every** replica
//!    (`POST /batch/digest`, all with the same window end, `until`): an answer 404 means the replica has
//!    no file (*missing*), whatever the (possibly stale) lists said.
//! 3. Replicas holding a file are compared by their archive digests ([`whisper::digest`]); where they
//!    differ (*divergent*), the range digests of those metrics are asked for, and the ranges that differ
//!    are reported. Only digests cross the network: a few dozen bytes per copy.
//!
//! Nothing is written anywhere.

use std::collections::BTreeMap;
use std::time::Instant;

use anyhow::Context;
use bucky_wire::digest::MetricDigest;
use futures_util::StreamExt;
use serde::Serialize;
use whisper::RANGE_POINTS;

use crate::client::ClientError;
use crate::cluster::Cluster;
use crate::config::Addr;
use crate::ctx::Ctx;
use crate::error::one_line;
use crate::names::NameArena;
use crate::plan::{gather, targets};
use crate::settings::AuditSpec;
use crate::UsageError;

/// Names audited at once (the results of one chunk are held, then folded into the report).
pub(crate) const CHUNK: usize = 4096;

/// Unreadable copies kept in the report with their reason (all are counted).
const KEPT_FAILURES: usize = 1000;

/// One copy of a metric on a replica.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Copy {
    /// The agent.
    #[serde(serialize_with = "ser_addr")]
    pub(crate) agent: Addr,
    /// Its file's modification time.
    pub(crate) mod_time: i64,
}

/// A time range where the replicas of a metric differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct RangeDiff {
    /// The archive's step.
    pub(crate) seconds_per_point: u32,
    /// First timestamp of the range.
    pub(crate) from: i64,
    /// One past its last timestamp.
    pub(crate) until: i64,
}

/// A metric whose replicas do not all hold the same points.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Finding {
    /// The metric.
    pub(crate) metric: String,
    /// Replicas holding a file, in ring order.
    pub(crate) present: Vec<Copy>,
    /// Replicas holding none.
    #[serde(serialize_with = "ser_addrs")]
    pub(crate) missing: Vec<Addr>,
    /// Whether the replicas holding a file differ.
    pub(crate) divergent: bool,
    /// Their archives' layouts differ (no range can be compared; repair makes them hold the same points in
    /// the archives they share, but cannot make the files alike).
    pub(crate) schemas_differ: bool,
    /// Where they differ.
    pub(crate) ranges: Vec<RangeDiff>,
}

/// A copy that could not be digested.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct DigestFailure {
    /// The metric.
    pub(crate) metric: String,
    /// The agent.
    pub(crate) agent: String,
    /// Why.
    pub(crate) reason: String,
}

/// The result of an audit.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Report {
    /// Distinct metrics seen (excluded ones not counted).
    pub(crate) metrics: u64,
    /// Metrics whose every replica holds a file, all with equal digests.
    pub(crate) healthy: u64,
    /// Metrics with a replica that has no file.
    pub(crate) missing: u64,
    /// Metrics whose replicas holding a file differ.
    pub(crate) divergent: u64,
    /// Copies on agents that are not among their metric's replicas.
    pub(crate) misplaced: u64,
    /// Metrics with a copy that could not be digested (corrupt, unreadable).
    pub(crate) errors: u64,
    /// The metrics missing a replica or divergent, in name order.
    pub(crate) findings: Vec<Finding>,
    /// The misplaced copies, per agent.
    pub(crate) misplaced_copies: BTreeMap<String, Vec<String>>,
    /// The copies that could not be digested (the first thousand).
    pub(crate) failures: Vec<DigestFailure>,
    /// The window end every digest was taken at.
    pub(crate) until: i64,
    /// Digests received (copies compared).
    pub(crate) copies: u64,
    /// Bytes of digest requests and answers on the network.
    pub(crate) wire_bytes: u64,
    /// Wall time, seconds.
    pub(crate) seconds: f64,
    /// Metrics audited per second.
    pub(crate) metrics_per_second: f64,
}

impl Report {
    /// Whether everything is healthy.
    pub(crate) fn clean(&self) -> bool {
        self.missing == 0 && self.divergent == 0 && self.misplaced == 0 && self.errors == 0
    }
}

/// Audits the replicas of the selected metrics (see the module docs). Refuses a partial view: every member
/// must be listed.
pub(crate) async fn audit(ctx: &Ctx, cluster: &Cluster, spec: &AuditSpec) -> anyhow::Result<Report> {
    let started = Instant::now();
    let (agents, unreachable) = targets(cluster, false);
    let mut gathered = gather(ctx, &spec.selection, &agents).await;
    gathered.failed.extend(unreachable);
    if !gathered.failed.is_empty() {
        for (addr, why) in &gathered.failed {
            ctx.printer.error(crate::printer::about(addr, &one_line(why.as_ref())));
        }
        return Err(UsageError("cannot list every agent: refusing to audit a partial view".into()).into());
    }
    let agents: Vec<Addr> = gathered.lists.iter().map(|(a, _)| a.clone()).collect();
    let lists: Vec<&NameArena> = gathered.lists.iter().map(|(_, l)| l).collect();
    let mut report = Report { until: spec.until, ..Report::default() };
    let mut merged = Merged::new(&lists);
    loop {
        let mut chunk: Vec<(String, Vec<usize>)> = Vec::with_capacity(CHUNK);
        while chunk.len() < CHUNK {
            let Some((name, holders)) = merged.next() else { break };
            if spec.excludes.iter().any(|p| name.starts_with(p.as_str())) {
                continue;
            }
            chunk.push((name.to_owned(), holders));
        }
        if chunk.is_empty() {
            break;
        }
        audit_chunk(ctx, cluster, spec, &agents, chunk, &mut report).await?;
    }
    report.seconds = started.elapsed().as_secs_f64();
    if report.seconds > 0.0 {
        report.metrics_per_second = report.metrics as f64 / report.seconds;
    }
    Ok(report)
}

/// Audits one chunk of names (with the agents listing each), folding the results into `report`.
async fn audit_chunk(
    ctx: &Ctx,
    cluster: &Cluster,
    spec: &AuditSpec,
    agents: &[Addr],
    chunk: Vec<(String, Vec<usize>)>,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Per metric, its replicas (agent indices); the names each agent is asked about.
    let mut replicas_of: Vec<Vec<usize>> = Vec::with_capacity(chunk.len());
    let mut asked: Vec<Vec<usize>> = vec![Vec::new(); agents.len()];
    for (i, (name, holders)) in chunk.iter().enumerate() {
        report.metrics += 1;
        let replicas: Vec<usize> = cluster
            .replicas_of(name)
            .iter()
            .map(|r| agents.iter().position(|a| a == r))
            .collect::<Option<Vec<usize>>>()
            .with_context(|| format!("a replica of {name} is not among the listed agents"))?;
        for &h in holders.iter().filter(|h| !replicas.contains(h)) {
            report.misplaced += 1;
            report.misplaced_copies.entry(agents[h].to_string()).or_default().push(name.clone());
        }
        // Only misplaced copies: `rebalance` moves them; there is no replica to compare.
        if holders.iter().any(|h| replicas.contains(h)) {
            for &r in &replicas {
                asked[r].push(i);
            }
        }
        replicas_of.push(replicas);
    }
    let names: Vec<&str> = chunk.iter().map(|(n, _)| n.as_str()).collect();
    let answers = digests(ctx, spec, agents, &names, &asked, false, report).await?;
    // Per metric: the copies' digests (agent index, digest) and who lacks it.
    let mut divergent: Vec<usize> = Vec::new();
    let mut findings: BTreeMap<usize, Finding> = BTreeMap::new();
    for (i, replicas) in replicas_of.iter().enumerate() {
        let mut present: Vec<(usize, &MetricDigest)> = Vec::new();
        let mut missing = Vec::new();
        let mut failed = false;
        for &r in replicas {
            match answers.get(&(r, i)) {
                None => {}
                Some(Ok(Some(d))) => present.push((r, d)),
                Some(Ok(None)) => missing.push(agents[r].clone()),
                Some(Err(e)) => {
                    failed = true;
                    if report.failures.len() >= KEPT_FAILURES {
                        continue;
                    }
                    report.failures.push(DigestFailure {
                        metric: names[i].to_owned(),
                        agent: agents[r].to_string(),
                        reason: one_line(e),
                    });
                }
            }
        }
        if !answers.contains_key(&(replicas[0], i)) {
            continue; // misplaced copies only
        }
        if failed {
            report.errors += 1;
            continue;
        }
        let differ = present.windows(2).any(|w| w[0].1.archives != w[1].1.archives);
        let schemas_differ = present.windows(2).any(|w| layout(w[0].1) != layout(w[1].1));
        if missing.is_empty() && !differ {
            report.healthy += 1;
            continue;
        }
        report.missing += u64::from(!missing.is_empty());
        report.divergent += u64::from(differ);
        if differ && !schemas_differ {
            divergent.push(i);
        }
        let present = present.iter().map(|&(r, d)| Copy { agent: agents[r].clone(), mod_time: d.mod_time }).collect();
        findings.insert(
            i,
            Finding {
                metric: names[i].to_owned(),
                present,
                missing,
                divergent: differ,
                schemas_differ,
                ranges: Vec::new(),
            },
        );
    }
    // The divergent ones again, per range, from the replicas holding them.
    if !divergent.is_empty() {
        let mut asked: Vec<Vec<usize>> = vec![Vec::new(); agents.len()];
        for &i in &divergent {
            for copy in &findings[&i].present {
                if let Some(r) = agents.iter().position(|a| *a == copy.agent) {
                    asked[r].push(i);
                }
            }
        }
        let answers = digests(ctx, spec, agents, &names, &asked, true, report).await?;
        for &i in &divergent {
            let finding = findings.get_mut(&i).context("a divergent metric has no finding")?;
            let copies: Vec<&MetricDigest> = finding
                .present
                .iter()
                .filter_map(|c| agents.iter().position(|a| *a == c.agent))
                .filter_map(|r| answers.get(&(r, i))?.as_ref().ok()?.as_ref())
                .collect();
            finding.ranges = differing_ranges(&copies);
        }
    }
    report.findings.extend(findings.into_values());
    Ok(())
}

/// The archives' layouts of a copy.
fn layout(digest: &MetricDigest) -> Vec<(u32, u32)> {
    digest.archives.iter().map(|a| (a.seconds_per_point, a.points)).collect()
}

/// The ranges where `copies` (same layout) do not all agree, per archive, oldest first.
fn differing_ranges(copies: &[&MetricDigest]) -> Vec<RangeDiff> {
    let mut out = Vec::new();
    let Some(first) = copies.first() else { return out };
    for (index, archive) in first.archives.iter().enumerate() {
        let width = i64::from(RANGE_POINTS) * i64::from(archive.seconds_per_point);
        for (k, range) in archive.ranges.iter().enumerate() {
            let agree = copies.iter().all(|c| c.archives.get(index).and_then(|a| a.ranges.get(k)) == Some(range));
            if !agree {
                let until = range.start - range.start.rem_euclid(width) + width;
                out.push(RangeDiff { seconds_per_point: archive.seconds_per_point, from: range.start, until });
            }
        }
    }
    out
}

/// Answers of the digest requests: per (agent index, name index) the digest, `None` for no file, or why
/// not.
type Answers = BTreeMap<(usize, usize), Result<Option<MetricDigest>, ClientError>>;

/// Asks each agent for the digests of the names `asked[agent]` (indices into `names`), `spec.batch` per
/// request and `--workers` requests at once per agent. An agent that takes no digest requests (buckyd) is
/// an error: its copies cannot be compared without reading them.
async fn digests(
    ctx: &Ctx,
    spec: &AuditSpec,
    agents: &[Addr],
    names: &[&str],
    asked: &[Vec<usize>],
    ranges: bool,
    report: &mut Report,
) -> anyhow::Result<Answers> {
    let per_agent = futures_util::future::join_all(asked.iter().enumerate().map(|(a, indices)| async move {
        let addr = &agents[a];
        let results = futures_util::stream::iter(indices.chunks(spec.batch.max(1)))
            .map(|part| async move {
                let batch: Vec<&str> = part.iter().map(|&i| names[i]).collect();
                let answer = ctx.client.digest_many(addr, &batch, spec.until, ranges).await;
                (part, answer)
            })
            .buffer_unordered(ctx.config.workers.max(1))
            .collect::<Vec<_>>()
            .await;
        (a, results)
    }))
    .await;
    let mut answers = Answers::new();
    for (a, results) in per_agent {
        for (part, answer) in results {
            let addr = &agents[a];
            let (digests, wire) = match answer {
                Ok(Some(found)) => found,
                Ok(None) => {
                    return Err(UsageError(format!(
                        "{addr} takes no digest requests (buckyd?): audit and repair need bucky-agent on every node"
                    ))
                    .into())
                }
                Err(e) => return Err(anyhow::Error::new(e).context(format!("cannot get digests from {addr}"))),
            };
            report.wire_bytes += wire;
            report.copies += digests.iter().filter(|d| matches!(d, Ok(Some(_)))).count() as u64;
            for (&i, digest) in part.iter().zip(digests) {
                answers.insert((a, i), digest);
            }
        }
    }
    Ok(answers)
}

/// Sorted, deduplicated lists merged into one sorted stream of names, each with the lists holding it.
struct Merged<'a> {
    lists: &'a [&'a NameArena],
    heap: std::collections::BinaryHeap<std::cmp::Reverse<(&'a str, usize, usize)>>,
}

impl<'a> Merged<'a> {
    fn new(lists: &'a [&'a NameArena]) -> Merged<'a> {
        let mut heap = std::collections::BinaryHeap::new();
        for (l, list) in lists.iter().enumerate() {
            if !list.is_empty() {
                heap.push(std::cmp::Reverse((list.get(0), l, 0)));
            }
        }
        Merged { lists, heap }
    }

    /// The next name and the indices of the lists holding it.
    fn next(&mut self) -> Option<(&'a str, Vec<usize>)> {
        let std::cmp::Reverse((name, _, _)) = *self.heap.peek()?;
        let mut holders = Vec::new();
        while let Some(&std::cmp::Reverse((next, l, i))) = self.heap.peek() {
            if next != name {
                break;
            }
            self.heap.pop();
            holders.push(l);
            if i + 1 < self.lists[l].len() {
                self.heap.push(std::cmp::Reverse((self.lists[l].get(i + 1), l, i + 1)));
            }
        }
        holders.sort_unstable();
        Some((name, holders))
    }
}

fn ser_addr<S: serde::Serializer>(addr: &Addr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&addr.to_string())
}

fn ser_addrs<S: serde::Serializer>(addrs: &[Addr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(addrs.iter().map(ToString::to_string))
}

#[cfg(test)]
mod tests {
    use super::*;
    use whisper::{ArchiveDigest, RangeDigest};

    #[test]
    fn lists_merge_into_names_with_their_holders() {
        let arena = |names: &[&str]| {
            let mut a = NameArena::new();
            names.iter().for_each(|n| a.push(n));
            a
        };
        let (a, b, c) = (arena(&["a", "c", "d"]), arena(&["b", "c"]), arena(&[]));
        let lists = [&a, &b, &c];
        let mut merged = Merged::new(&lists);
        let mut out = Vec::new();
        while let Some((name, holders)) = merged.next() {
            out.push((name.to_owned(), holders));
        }
        let want = [("a", vec![0]), ("b", vec![1]), ("c", vec![0, 1]), ("d", vec![0])];
        assert_eq!(out, want.map(|(n, h)| (n.to_owned(), h)));
    }

    #[test]
    fn differing_ranges_name_the_archive_and_the_aligned_span() {
        let range = |start, hash| RangeDigest { start, count: 1, hash };
        let copy = |hashes: [u64; 2]| MetricDigest {
            mod_time: 0,
            archives: vec![ArchiveDigest {
                seconds_per_point: 60,
                points: 1440,
                ranges: vec![range(1_699_999_000, hashes[0]), range(1_700_008_320, hashes[1])],
            }],
        };
        let (a, b) = (copy([1, 2]), copy([1, 3]));
        let width = 1024 * 60;
        let from = 1_700_008_320;
        assert_eq!(
            differing_ranges(&[&a, &b]),
            [RangeDiff { seconds_per_point: 60, from, until: from - from % width + width }]
        );
        assert!(differing_ranges(&[&a, &a.clone()]).is_empty());
    }
}
