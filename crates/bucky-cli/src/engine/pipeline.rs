//! The per-job pipeline, written once: **read** the source → **heal** it into every destination, each copy
//! read back → **verify** each read-back → **decide** ([`decide`], the one place of the delete-after-verify
//! rule) → **delete** the source with `If-Match` of the version copied. Each step runs for a set of jobs
//! through a [`Transport`]: a batch of jobs from one source node (bucky-agent), or one job alone.
//!
//! A batch never retries: whatever goes wrong with a job in it (an error entry, a missing read-back, a
//! verification that finds points missing, a 412 on delete, an agent that takes no batches) hands the job
//! to [`Run::job`], which runs the same pipeline for it alone, one request per metric, with its own retries.
//! A 507 (the destination's disk is full) is handed over too: the client has marked the node full, so the
//! job alone fails at once. Whether a job may run at all is decided in [`Run::refusal`], before every
//! attempt on either path.

use std::sync::Arc;
use std::time::Duration;

use whisper::{WhisperBuf, WhisperData};

use super::decide::{decide, Counts, Decision, Tally};
use super::job::Job;
use super::reason::{describe, AttemptError, JobError};
use super::run::{Outcome, Run, Step};
use super::transport::{Healed, ReadBack, SourceCopy, Transport};
use crate::client::Fetched;
use crate::config::Addr;
use bucky_wire::verify;

/// What one attempt came to for one job.
#[derive(Debug)]
pub(super) enum Attempted {
    /// Verified everywhere; the source deleted or kept as decided.
    Moved { deleted: bool },
    /// The source was gone when read.
    SourceGone,
    /// The attempt failed.
    Failed(AttemptError),
}

/// How a job of a batch leaves it.
enum BatchEnd {
    /// Decided, held or later.
    Step(Step),
    /// Handed to the one-job path.
    Alone,
}

/// A job on its way through one attempt.
struct InFlight<'a> {
    job: &'a Job,
    copy: Option<SourceCopy>,
    tally: Tally,
    /// Set once the job needs no later step.
    ended: Option<Attempted>,
}

impl Run {
    /// Runs `jobs` (all from one source node, more than one) as a batch and returns what became of each, in
    /// order.
    pub(super) async fn batch(&self, jobs: &[Job]) -> Vec<Step> {
        // Jobs needing a node found down, or writing to a node found full, fail at once; those needing a node
        // waited for go back to the queue (see `crate::health`).
        let refused: Vec<Option<Step>> = jobs.iter().map(|job| self.refusal(job, 0)).collect();
        let runnable: Vec<&Job> = jobs.iter().zip(&refused).filter(|(_, r)| r.is_none()).map(|(j, _)| j).collect();
        let mut attempted =
            if runnable.is_empty() { Vec::new() } else { self.attempt_batch(&runnable).await }.into_iter();
        let ends: Vec<BatchEnd> = refused
            .into_iter()
            .zip(jobs)
            .map(|(refused, job)| match refused {
                Some(step) => BatchEnd::Step(step),
                None => match attempted.next() {
                    Some((Attempted::Moved { deleted }, counts)) => {
                        BatchEnd::Step(Step::Done(Outcome::Moved { kind: job.kind(self.options.op), deleted, counts }))
                    }
                    Some((Attempted::SourceGone, _)) => BatchEnd::Step(Step::Done(Outcome::SourceGone)),
                    Some((Attempted::Failed(e), counts)) if e.is_final() => {
                        BatchEnd::Step(Step::Done(Outcome::Failed { error: JobError::Final(e), wire: counts.wire }))
                    }
                    Some((Attempted::Failed(AttemptError::CutShort), _)) => BatchEnd::Step(Step::Later),
                    Some((Attempted::Failed(e), _)) => {
                        if !matches!(e, AttemptError::BatchRefused) {
                            self.printer.verbose(format!("{}: {}", job.source_name, describe(&e)));
                        }
                        BatchEnd::Alone
                    }
                    None => BatchEnd::Alone,
                },
            })
            .collect();
        // The jobs handed over run alone side by side, as many as the batch held (each with its own
        // retries, unless `health` knows a node it needs is down).
        futures_util::future::join_all(jobs.iter().zip(ends).map(|(job, end)| async move {
            match end {
                BatchEnd::Step(step) => step,
                BatchEnd::Alone => self.job(job).await,
            }
        }))
        .await
    }

    /// One job alone, one request per metric: the pipeline, retried as a whole; [`Step::Held`] when a node
    /// it needs comes to be waited for.
    pub(super) async fn job(&self, job: &Job) -> Step {
        let attempts = self.options.attempts.max(1);
        let mut wire = 0;
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            if let Some(refused) = self.refusal(job, wire) {
                return refused;
            }
            // One answer per job given: the fallback is never used.
            let (attempted, counts) = (self.attempt(Transport::PerMetric, &[job]).await.pop())
                .unwrap_or((Attempted::Failed(AttemptError::BatchRefused), Counts::default()));
            wire += counts.wire;
            let error = match attempted {
                Attempted::Moved { deleted } => {
                    let counts = Counts { wire, ..counts };
                    return Step::Done(Outcome::Moved { kind: job.kind(self.options.op), deleted, counts });
                }
                Attempted::SourceGone => return Step::Done(Outcome::SourceGone),
                Attempted::Failed(e) if e.is_final() => {
                    return Step::Done(Outcome::Failed { error: JobError::Final(e), wire })
                }
                Attempted::Failed(e) => e,
            };
            self.printer.verbose(format!(
                "{} on {}: attempt {attempt}/{attempts}: {}",
                job.source_name,
                job.source,
                describe(&error)
            ));
            if attempt >= attempts {
                // Unless the failure made a node it needs one to wait for (its jobs wait in the queue).
                if let Some(Step::Held) = self.refusal(job, wire) {
                    return Step::Held;
                }
                let error = JobError::GaveUp { last: error, attempts, kept: self.options.delete };
                return Step::Done(Outcome::Failed { error, wire });
            }
            // A destination found full, or a node found down, by the failed attempt (or by another job
            // meanwhile): no retry can help, fail now rather than after the wait; a node waited for holds
            // the job in the queue.
            if let Some(refused) = self.refusal(job, wire) {
                return refused;
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(5));
            attempt += 1;
        }
    }

    /// Whether `job` must not be tried now: it fails at once when a destination is full (no copy is sent to
    /// it) or a node it needs is given up on (down), and goes back to the queue ([`Step::Held`]) when a node
    /// it needs is waited for (suppressed by flap damping, or not answering yet; see `crate::health`). The
    /// one check of the batch and the one-job path, before every attempt.
    fn refusal(&self, job: &Job, wire: u64) -> Option<Step> {
        let health = self.client.health();
        if let Some(node) = health.full_among(&job.dests) {
            return Some(Step::Done(Outcome::NodeFull { node: node.clone(), wire }));
        }
        if health.waiting_among(job.nodes()).is_some() {
            return Some(Step::Held);
        }
        let down = health.refuse(job.nodes())?;
        Some(Step::Done(Outcome::Failed { error: JobError::Down { down, kept: self.options.delete }, wire }))
    }

    /// One attempt at the jobs of a batch: offloaded to the destinations with `--offload` (those that cannot
    /// be go through the client), else through the client as one batch.
    async fn attempt_batch(&self, jobs: &[&Job]) -> Vec<(Attempted, Counts)> {
        if !self.options.offload {
            return self.attempt(Transport::Batch, jobs).await;
        }
        let offloaded = self.offload(jobs).await;
        let through: Vec<&Job> = jobs.iter().zip(&offloaded).filter(|(_, o)| o.is_none()).map(|(&j, _)| j).collect();
        let mut through =
            if through.is_empty() { Vec::new() } else { self.attempt(Transport::Batch, &through).await }.into_iter();
        offloaded
            .into_iter()
            .map(|o| o.or_else(|| through.next()))
            .map(|o| o.unwrap_or((Attempted::Failed(AttemptError::BatchRefused), Counts::default())))
            .collect()
    }

    /// One attempt at `jobs` (all from one source node): every step for all of them through `transport`.
    /// Per job, in order: what came of it, and what it counted.
    async fn attempt(&self, transport: Transport, jobs: &[&Job]) -> Vec<(Attempted, Counts)> {
        let Some(source) = jobs.first().map(|j| &j.source) else { return Vec::new() };
        let mut flight: Vec<InFlight<'_>> =
            jobs.iter().map(|&job| InFlight { job, copy: None, tally: Tally::default(), ended: None }).collect();

        // 1. Read every source.
        let reads = transport.read(self, source, jobs).await;
        for (f, read) in flight.iter_mut().zip(reads) {
            match read {
                Ok(Some(fetched)) => match self.prepare(transport, f, fetched) {
                    Ok(copy) => f.copy = Some(copy),
                    Err(e) => f.ended = Some(Attempted::Failed(e)),
                },
                Ok(None) => f.ended = Some(Attempted::SourceGone),
                Err(e) => f.ended = Some(Attempted::Failed(e)),
            }
        }
        if flight.iter().all(|f| f.copy.is_none()) {
            // Nothing was read (the agent always sends one file): the sources cut short were not cut by a
            // full answer; they go alone rather than wait for a batch that would cut them again.
            for f in &mut flight {
                if matches!(f.ended, Some(Attempted::Failed(AttemptError::CutShort))) {
                    f.ended = Some(Attempted::Failed(AttemptError::BatchRefused));
                }
            }
        }

        // 2. Heal into every destination, each copy read back.
        let copied: Vec<(usize, (&Job, &SourceCopy))> =
            flight.iter().enumerate().filter_map(|(i, f)| Some((i, (f.job, f.copy.as_ref()?)))).collect();
        let pairs: Vec<(&Job, &SourceCopy)> = copied.iter().map(|&(_, pair)| pair).collect();
        let heals = if pairs.is_empty() { Vec::new() } else { transport.heal(self, &pairs).await };
        let indices: Vec<usize> = copied.iter().map(|&(i, _)| i).collect();

        // 3. Verify each read-back against its source.
        let now = (self.options.now)();
        let exact = self.options.op.overwrites();
        for (i, per_dest) in indices.iter().zip(heals) {
            let f = &mut flight[*i];
            let Some(copy) = &f.copy else { continue };
            for (dest, healed) in f.job.dests.iter().zip(per_dest) {
                let check = healed.and_then(|healed| check(dest, &copy.file, healed, now, exact, &mut f.tally.counts));
                f.tally.checks.push(check);
            }
        }

        // 4. Decide.
        let mut to_delete: Vec<usize> = Vec::new();
        for (i, f) in flight.iter_mut().enumerate() {
            if f.copy.is_none() {
                continue;
            }
            match decide(f.job, &f.tally, &self.options) {
                Decision::Unverified { first } => {
                    f.ended = Some(Attempted::Failed(unverified(f.job, &mut f.tally, first)));
                }
                Decision::Keep => f.ended = Some(Attempted::Moved { deleted: false }),
                Decision::Refuse { unplaceable } => {
                    f.ended = Some(Attempted::Failed(AttemptError::Unplaceable(unplaceable)));
                }
                Decision::Delete => to_delete.push(i),
            }
        }

        // 5. Delete the sources decided so.
        if !to_delete.is_empty() {
            let pairs: Vec<(&Job, &SourceCopy)> =
                to_delete.iter().filter_map(|&i| Some((flight[i].job, flight[i].copy.as_ref()?))).collect();
            let deleted = transport.delete(self, source, &pairs).await;
            for (i, deleted) in to_delete.into_iter().zip(deleted) {
                flight[i].ended = Some(match deleted {
                    Ok(deleted) => Attempted::Moved { deleted },
                    Err(e) => Attempted::Failed(e),
                });
            }
        }

        flight
            .into_iter()
            .map(|f| {
                let ended = f.ended.unwrap_or(Attempted::Failed(AttemptError::BatchRefused));
                (ended, f.tally.counts)
            })
            .collect()
    }

    /// A source read, ready to heal; `Err` (final) if it is not a whisper file. A go-whisper compressed file
    /// is one: it goes whole, and only to destinations that have no copy (the agent refuses the others).
    fn prepare(
        &self,
        transport: Transport,
        f: &mut InFlight<'_>,
        fetched: Fetched,
    ) -> Result<SourceCopy, AttemptError> {
        let Fetched { mut stat, data, etag, wire_bytes } = fetched;
        f.tally.counts.wire += wire_bytes;
        f.tally.counts.bytes += data.len() as u64;
        let file = Arc::new(WhisperData::from_bytes(data).map_err(AttemptError::InvalidSource)?);
        stat.name = f.job.name.clone();
        let upload = transport.upload(self, f.job, &file, stat)?;
        Ok(SourceCopy { file, upload, etag })
    }
}

/// Why destination `first` of `job` did not verify ([`Decision::Unverified`]): its check's error, taken
/// out of the tally.
pub(super) fn unverified(job: &Job, tally: &mut Tally, first: usize) -> AttemptError {
    let why = match tally.checks.get_mut(first) {
        Some(check @ Err(_)) => std::mem::replace(check, Ok(())).err(),
        _ => None,
    };
    why.unwrap_or_else(|| AttemptError::Unchecked { dest: job.dests[first].clone() })
}

/// Checks that a healed copy holds every point of `source` that it can hold (with `exact`, with the
/// source's very values), counting into `counts`. A compressed source's copy must be byte for byte the
/// source: its points cannot be read.
fn check(
    dest: &Addr,
    source: &WhisperData,
    healed: Healed,
    now: i64,
    exact: bool,
    counts: &mut Counts,
) -> Result<(), AttemptError> {
    counts.healed += healed.points_written;
    counts.replaced += healed.points_replaced;
    counts.created += u64::from(healed.created);
    counts.wire += healed.sent;
    let source = match source {
        WhisperData::Standard(source) => source,
        WhisperData::Compressed(bytes) => return check_whole(dest, bytes, healed.copy, counts),
    };
    let replica = match healed.copy {
        ReadBack::Identical => {
            // Read back byte for byte what was sent: it holds every point the source holds.
            counts.verified += verify::points_held(source, now);
            return Ok(());
        }
        ReadBack::File(replica) => replica,
    };
    counts.wire += replica.wire_bytes;
    let replica = WhisperBuf::from_bytes(replica.data)
        .map_err(|error| AttemptError::InvalidCopy { dest: dest.clone(), error })?;
    let verdict = match exact {
        true => verify::verify_exact(source, &replica, now),
        false => verify::verify(source, &replica, now),
    };
    if let Some((seconds_per_point, timestamp)) = verdict.first_missing {
        return Err(AttemptError::Missing {
            dest: dest.clone(),
            missing: verdict.missing,
            checked: verdict.checked,
            seconds_per_point,
            timestamp,
        });
    }
    counts.verified += verdict.checked;
    counts.unplaceable += verdict.unplaceable;
    Ok(())
}

/// Checks that the copy of a compressed source is byte for byte the source (go-carbon writing into it since
/// makes it differ: the job is then tried again, and the agent refuses to heal into the file it now has).
fn check_whole(dest: &Addr, source: &[u8], copy: ReadBack, counts: &mut Counts) -> Result<(), AttemptError> {
    let replica = match copy {
        ReadBack::Identical => return Ok(()),
        ReadBack::File(replica) => replica,
    };
    counts.wire += replica.wire_bytes;
    if replica.data != source {
        return Err(AttemptError::NotIdentical { dest: dest.clone() });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_back(data: &[u8]) -> Healed {
        let fetched = Fetched { stat: Default::default(), data: data.to_vec(), etag: None, wire_bytes: 7 };
        Healed { points_written: 0, points_replaced: 0, created: false, sent: 10, copy: ReadBack::File(fetched) }
    }

    /// A compressed source's copy verifies only when it is byte for byte the source.
    #[test]
    fn a_compressed_copy_must_be_identical() {
        let dest = Addr { host: "d".into(), port: 1 };
        let mut bytes = whisper::COMPRESSED_MAGIC.to_vec();
        bytes.extend_from_slice(&[1, 2, 3]);
        let source = WhisperData::from_bytes(bytes.clone()).unwrap();
        let mut counts = Counts::default();
        let identical =
            Healed { points_written: 0, points_replaced: 0, created: false, sent: 10, copy: ReadBack::Identical };
        assert!(check(&dest, &source, identical, 0, false, &mut counts).is_ok());
        assert!(check(&dest, &source, read_back(&bytes), 0, false, &mut counts).is_ok());
        let mut written = bytes.clone();
        written[19] = 9;
        let err = check(&dest, &source, read_back(&written), 0, false, &mut counts).unwrap_err();
        assert!(matches!(err, AttemptError::NotIdentical { .. }), "{err}");
        assert!(!err.is_final(), "tried again (and then refused by the agent)");
        assert_eq!((counts.wire, counts.verified), (3 * 10 + 2 * 7, 0));
    }
}
