//! `--offload`: the destinations copy the sources themselves. For a batch of jobs from one source node,
//! each destination agent is sent one `/batch/offload` request naming its share; it fetches those sources
//! from the source agent with one batch read, heals them, reads each replica back and checks it against the
//! source it fetched ([`bucky_wire::verify`], the rule the client applies to what it reads back, at the
//! run's clock). Only names, verdicts and ETags cross the client.
//!
//! The answers feed the same [`decide`] as the client's own copies, and a source is deleted with
//! `If-Match` of the version the destinations fetched (all of a job's destinations must have fetched the
//! same one), so a source written since stays. Whatever else goes wrong with a job (an error entry, a
//! replica missing points) hands it to the one-job path, which copies through the client with its own
//! retries and verification.
//!
//! A destination that cannot offload (buckyd, an older agent: 404), or cannot fetch from this source (the
//! source is no ring member of the destination, or no bucky-agent: 400, 502), is said once and its copies
//! from that source go through the client for the rest of the run, batched as without `--offload`.

use std::collections::BTreeMap;

use futures_util::future::join_all;

use super::decide::{decide, Counts, Decision, Tally};
use super::job::Job;
use super::pipeline::{unverified, Attempted};
use super::reason::{describe, AttemptError};
use super::run::Run;
use super::transport;
use crate::client::{ClientError, Offloaded};
use crate::config::Addr;

/// What a job's offload answers came to.
enum Judged {
    /// Verified everywhere: delete this version of the source.
    Delete {
        /// The source's ETag the destinations fetched.
        version: String,
    },
    /// The attempt ended otherwise.
    Ended(Attempted),
}

/// Whether a whole offload request's failure means the pair cannot offload at all (rather than a node in
/// trouble): the destination refused the source (400: not a ring member's agent) or could not fetch from it
/// (502: down for it, or no bucky-agent).
fn cannot_offload(error: &ClientError) -> bool {
    matches!(error, ClientError::Status { status: 400 | 502, .. })
}

impl Run {
    /// Offloads `jobs` (all from one source node): per job what came of it and what it counted, or `None`
    /// for a job that goes through the client (a destination cannot offload from this source).
    pub(super) async fn offload(&self, jobs: &[&Job]) -> Vec<Option<(Attempted, Counts)>> {
        let Some(source) = jobs.first().map(|j| &j.source) else { return Vec::new() };
        let can = |d: &Addr| self.client.offloads(d) && !self.offload_refusals.refused(source, d);
        let mut through: Vec<bool> = jobs.iter().map(|job| !job.dests.iter().all(can)).collect();
        // Per destination, the (job, destination) index pairs it offloads.
        let mut by_dest: BTreeMap<&Addr, Vec<(usize, usize)>> = BTreeMap::new();
        for (j, job) in jobs.iter().enumerate().filter(|&(j, _)| !through[j]) {
            for (k, d) in job.dests.iter().enumerate() {
                by_dest.entry(d).or_default().push((j, k));
            }
        }
        let now = (self.options.now)();
        let overwrite = self.options.op.overwrites();
        let answers = join_all(by_dest.into_iter().map(|(d, pairs)| async move {
            let _slot = self.slot(d).await;
            let entries: Vec<(&str, &str)> =
                pairs.iter().map(|&(j, _)| (jobs[j].name.as_str(), jobs[j].source_name.as_str())).collect();
            let answer = self.client.offload_many(d, source, &entries, overwrite, now, self.options.batch_bytes).await;
            (d, pairs, answer)
        }))
        .await;

        let mut results: Vec<Vec<Option<Result<Offloaded, AttemptError>>>> =
            jobs.iter().map(|job| job.dests.iter().map(|_| None).collect()).collect();
        let mut wire = vec![0u64; jobs.len()];
        for (d, pairs, answer) in answers {
            let entries = match answer {
                Ok(Some((entries, bytes))) => {
                    let share = bytes / pairs.len().max(1) as u64;
                    pairs.iter().for_each(|&(j, _)| wire[j] += share);
                    entries
                }
                Ok(None) => {
                    if self.offload_refusals.refuse(source, d) {
                        self.printer.warn(format!(
                            "{d} cannot offload (buckyd, or an older bucky-agent): its copies go through this client"
                        ));
                    }
                    pairs.iter().for_each(|&(j, _)| through[j] = true);
                    continue;
                }
                Err(e) if cannot_offload(&e) => {
                    if self.offload_refusals.refuse(source, d) {
                        self.printer.warn(format!(
                            "{d} cannot offload from {source}: {}; those copies go through this client",
                            describe(&e)
                        ));
                    }
                    pairs.iter().for_each(|&(j, _)| through[j] = true);
                    continue;
                }
                Err(e) => {
                    self.printer.verbose(format!("offload into {d}: {}; one by one", describe(&e)));
                    for &(j, k) in &pairs {
                        results[j][k] = Some(Err(AttemptError::BatchRefused));
                    }
                    continue;
                }
            };
            for ((j, k), entry) in pairs.into_iter().zip(entries) {
                results[j][k] = Some(entry.map_err(|error| match &error {
                    ClientError::Status { status: 413, .. } => AttemptError::CutShort,
                    _ => AttemptError::Offload { dest: d.clone(), error },
                }));
            }
        }

        // Decide each job from its destinations' answers; collect the sources to delete.
        let mut ended: Vec<Option<(Attempted, Counts)>> = jobs.iter().map(|_| None).collect();
        let mut to_delete: Vec<(usize, String, Counts)> = Vec::new();
        for (j, (job, per_dest)) in jobs.iter().zip(results).enumerate() {
            if through[j] {
                continue;
            }
            match self.judge(job, per_dest, wire[j]) {
                (Judged::Delete { version }, counts) => to_delete.push((j, version, counts)),
                (Judged::Ended(attempted), counts) => ended[j] = Some((attempted, counts)),
            }
        }
        if !to_delete.is_empty() {
            let versions: Vec<(&Job, &str)> = to_delete.iter().map(|(j, tag, _)| (jobs[*j], tag.as_str())).collect();
            let deleted = transport::delete_versions(self, source, &versions).await;
            for ((j, _, counts), deleted) in to_delete.into_iter().zip(deleted) {
                let attempted = match deleted {
                    Ok(deleted) => Attempted::Moved { deleted },
                    Err(e) => Attempted::Failed(e),
                };
                ended[j] = Some((attempted, counts));
            }
        }
        ended
            .into_iter()
            .zip(through)
            .map(|(ended, through)| match through {
                true => None,
                false => Some(ended.unwrap_or((Attempted::Failed(AttemptError::BatchRefused), Counts::default()))),
            })
            .collect()
    }

    /// One job's offload answers (per destination, in its order) judged by the rule, and what it counted.
    fn judge(&self, job: &Job, per_dest: Vec<Option<Result<Offloaded, AttemptError>>>, wire: u64) -> (Judged, Counts) {
        let mut tally = Tally { counts: Counts { wire, offloaded: 1, ..Counts::default() }, checks: Vec::new() };
        let mut version: Option<String> = None;
        let mut gone = 0;
        let mut errors = Vec::new();
        for (dest, answer) in job.dests.iter().zip(per_dest) {
            let offloaded = match answer.unwrap_or(Err(AttemptError::BatchRefused)) {
                Ok(offloaded) => offloaded,
                Err(AttemptError::Offload { error: ClientError::Status { status: 404, .. }, .. }) => {
                    gone += 1;
                    continue;
                }
                Err(e) => {
                    errors.push(e);
                    continue;
                }
            };
            let c = &mut tally.counts;
            c.bytes = c.bytes.max(offloaded.bytes);
            c.healed += offloaded.report.points_written;
            c.replaced += offloaded.report.points_replaced;
            c.created += u64::from(offloaded.report.created);
            let v = &offloaded.verdict;
            tally.checks.push(match v.first_missing {
                Some((seconds_per_point, timestamp)) if v.missing > 0 => Err(AttemptError::Missing {
                    dest: dest.clone(),
                    missing: v.missing,
                    checked: v.checked,
                    seconds_per_point,
                    timestamp,
                }),
                _ if v.missing > 0 => Err(AttemptError::Unchecked { dest: dest.clone() }),
                _ => {
                    c.verified += v.checked;
                    c.unplaceable += v.unplaceable;
                    Ok(())
                }
            });
            // Every destination must have copied the same version of the source.
            match &version {
                None => version = Some(offloaded.source_etag),
                Some(seen) if *seen != offloaded.source_etag => errors.push(AttemptError::SourceChanged),
                Some(_) => {}
            }
        }
        let counts = tally.counts;
        let failed = |e| (Judged::Ended(Attempted::Failed(e)), counts);
        if gone == job.dests.len() {
            return (Judged::Ended(Attempted::SourceGone), counts);
        }
        // A job cut short anywhere comes again whole in a later batch (a second heal is a no-op).
        if let Some(i) = errors.iter().position(|e| matches!(e, AttemptError::CutShort)) {
            return failed(errors.swap_remove(i));
        }
        if let Some(e) = errors.into_iter().next() {
            return failed(e);
        }
        if gone > 0 {
            // Gone for some destinations only: the source was deleted in between; the one-job path sees.
            return failed(AttemptError::SourceChanged);
        }
        match decide(job, &tally, &self.options) {
            Decision::Delete => match version {
                Some(version) => (Judged::Delete { version }, counts),
                None => failed(AttemptError::NoVersion),
            },
            Decision::Keep => (Judged::Ended(Attempted::Moved { deleted: false }), counts),
            Decision::Refuse { unplaceable } => failed(AttemptError::Unplaceable(unplaceable)),
            Decision::Unverified { first } => failed(unverified(job, &mut tally, first)),
        }
    }
}
