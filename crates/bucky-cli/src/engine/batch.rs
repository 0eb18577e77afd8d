//! Jobs moved by the batch: one request reads every source of a batch, one request per destination heals
//! its share (each copy answered with the replica read back from disk), one request deletes the verified
//! sources with `If-Match`. Per-request costs are then paid once per batch instead of once per metric.
//!
//! A batch never decides that a job failed: whatever goes wrong with a job in a batch step (an error
//! entry, a missing read-back, a verification that finds points missing, a 412 on delete, an agent that
//! takes no batches) hands the job to [`Run::job`], which starts it over alone with its own retries. A
//! 507 entry (the destination's disk is full) is handed over too: the client has marked the node full, so
//! the job alone fails at once, without a retry. The safety rules are the same on both paths, decided in
//! one place each: whether a job may run ([`Run::refusal`]: no node it needs down, no destination full),
//! and whether its source goes ([`Run::after_verify`]: only after every destination verified, and then only
//! with `If-Match` of the version copied).

use std::collections::BTreeMap;
use std::sync::Arc;

use whisper::WhisperBuf;

use super::{check_copy, shared_upload, unix_now, AfterVerify, Job, Outcome, Retry, Run};
use crate::client::{ClientError, Deleted, Fetched, Upload};
use crate::config::Addr;
use crate::error::one_line;

/// A source copy read in the batch, ready to heal.
struct Copy {
    source: Arc<WhisperBuf>,
    upload: Upload,
    etag: Option<String>,
    bytes: u64,
}

/// How a job fares through the batch steps.
#[derive(Default)]
struct Progress {
    /// Decided: no later step, and no job of its own.
    outcome: Option<Outcome>,
    /// Hand the job to [`Run::job`].
    alone: bool,
    /// Its source did not fit in the batch read's answer (`--batch-mib`): move it in a later batch.
    later: bool,
    wire: u64,
    healed: u64,
    verified: u64,
    unplaceable: u64,
}

impl Progress {
    fn in_batch(&self) -> bool {
        self.outcome.is_none() && !self.alone && !self.later
    }
}

impl Run {
    /// Runs `jobs` (all from one source node) and returns their outcomes in order: `None` for a job whose
    /// source did not fit in the batch read's answer, to be moved in a later batch.
    pub(super) async fn batch(&self, jobs: &[Job]) -> Vec<Option<Outcome>> {
        let mut progress: Vec<Progress> = jobs.iter().map(|_| Progress::default()).collect();
        self.batch_steps(jobs, &mut progress).await;
        // The jobs handed back run alone side by side, as many as the batch held (each with its own
        // retries, unless `health` knows a node it needs is down).
        futures_util::future::join_all(jobs.iter().zip(progress).map(|(job, p)| async move {
            match p.outcome {
                _ if p.later => None,
                Some(outcome) if !p.alone => Some(outcome),
                _ => Some(self.job(job).await),
            }
        }))
        .await
    }

    async fn batch_steps(&self, jobs: &[Job], progress: &mut [Progress]) {
        let Some(source) = jobs.first().map(|j| &j.source) else { return };
        let client = &self.client;
        let alone = |progress: &mut [Progress], why: &str| {
            self.printer.verbose(format!("batch of {} from {source}: {why}; one by one", progress.len()));
            progress.iter_mut().filter(|p| p.in_batch()).for_each(|p| p.alone = true);
        };

        // Jobs needing a node found down, or writing to a node found full, fail at once (see `crate::health`).
        for (job, p) in jobs.iter().zip(progress.iter_mut()) {
            p.outcome = self.refusal(job, 0);
        }
        if progress.iter().all(|p| !p.in_batch()) {
            return;
        }

        // 1. Read every source.
        let names: Vec<&str> = jobs.iter().map(|j| j.source_name.as_str()).collect();
        let reads = match client.get_many(source, &names, self.options.batch_bytes).await {
            Ok(Some(reads)) => reads,
            Ok(None) => return alone(progress, "the source takes no batches"),
            Err(e) => return alone(progress, &one_line(&e)),
        };
        let mut copies: Vec<Option<Copy>> = Vec::with_capacity(jobs.len());
        for ((job, read), p) in jobs.iter().zip(reads).zip(progress.iter_mut()) {
            if !p.in_batch() {
                copies.push(None);
                continue;
            }
            copies.push(match read {
                Ok(Some(fetched)) => match prepare(job, fetched, p) {
                    Ok(copy) => Some(copy),
                    Err(reason) => {
                        p.outcome = Some(Outcome::Failed { reason, wire: p.wire });
                        None
                    }
                },
                Ok(None) => {
                    p.outcome = Some(Outcome::SourceGone);
                    None
                }
                // The answer was full: the agent sent the first file found, so the batch is not empty.
                Err(ClientError::Status { status: 413, .. }) => {
                    p.later = true;
                    None
                }
                Err(_) => {
                    p.alone = true;
                    None
                }
            });
        }
        if copies.iter().all(Option::is_none) {
            // Nothing was read (the agent always sends one file): 413s here are not a full answer.
            progress.iter_mut().filter(|p| p.later).for_each(|p| (p.later, p.alone) = (false, true));
        }

        // 2. Heal: one request per destination, each copy verified against its source as read back.
        let mut by_dest: BTreeMap<&Addr, Vec<usize>> = BTreeMap::new();
        for (i, job) in jobs.iter().enumerate() {
            if copies[i].is_some() {
                for d in &job.dests {
                    by_dest.entry(d).or_default().push(i);
                }
            }
        }
        let copies = &copies;
        let heals = futures_util::future::join_all(by_dest.into_iter().map(|(d, indices)| async move {
            let _slot = self.slot(d).await;
            let uploads: Vec<(&str, &Upload)> =
                indices.iter().filter_map(|&i| Some((jobs[i].name.as_str(), &copies[i].as_ref()?.upload))).collect();
            (d, indices, client.heal_many(d, &uploads).await)
        }))
        .await;
        let now = unix_now();
        for (d, indices, answer) in heals {
            let entries = match answer {
                Ok(Some(entries)) => entries,
                Ok(None) | Err(_) => {
                    if let Err(e) = &answer {
                        self.printer.verbose(format!("batch heal into {d}: {}; one by one", one_line(e)));
                    }
                    indices.iter().for_each(|&i| progress[i].alone = true);
                    continue;
                }
            };
            for (i, entry) in indices.into_iter().zip(entries) {
                let (p, Some(copy)) = (&mut progress[i], &copies[i]) else { continue };
                let Ok(healed) = entry else {
                    p.alone = true;
                    continue;
                };
                p.wire += healed.sent;
                p.healed += healed.report.points_written;
                if healed.identical {
                    // Read back byte for byte what was sent: it holds every point the source holds.
                    let verdict = super::verify::verify(&copy.source, &copy.source, now);
                    p.verified += verdict.checked;
                    continue;
                }
                let Some(replica) = healed.replica else {
                    p.alone = true; // not read back: the job alone verifies with a GET
                    continue;
                };
                p.wire += replica.wire_bytes;
                match check_copy(d, &copy.source, replica, now) {
                    Ok(verdict) => {
                        p.verified += verdict.checked;
                        p.unplaceable += verdict.unplaceable;
                    }
                    Err(Retry::Again(why) | Retry::Never(why)) => {
                        self.printer.verbose(format!("{}: {why}", jobs[i].source_name));
                        p.alone = true;
                    }
                }
            }
        }

        // 3. Decide, and delete the verified sources that are to go.
        let mut deletes: Vec<(usize, &str, &str)> = Vec::new();
        for (i, job) in jobs.iter().enumerate() {
            let (p, Some(copy)) = (&mut progress[i], &copies[i]) else { continue };
            if !p.in_batch() {
                continue;
            }
            match (self.after_verify(job, p.unplaceable), &copy.etag) {
                (AfterVerify::Keep(note), _) => {
                    p.outcome = Some(self.moved(job, copy.bytes, p.wire, p.healed, p.verified, false, note));
                }
                (AfterVerify::Refuse(reason), _) => p.outcome = Some(Outcome::Failed { reason, wire: p.wire }),
                (AfterVerify::Delete, Some(tag)) => deletes.push((i, job.source_name.as_str(), tag.as_str())),
                // No version to delete with: the job alone compares contents first.
                (AfterVerify::Delete, None) => p.alone = true,
            }
        }
        if deletes.is_empty() {
            return;
        }
        let request: Vec<(&str, Option<&str>)> = deletes.iter().map(|&(_, name, tag)| (name, Some(tag))).collect();
        let answers = match client.delete_many(source, &request).await {
            Ok(Some(answers)) => answers,
            Ok(None) | Err(_) => {
                deletes.iter().for_each(|&(i, ..)| progress[i].alone = true);
                return;
            }
        };
        for ((i, ..), answer) in deletes.into_iter().zip(answers) {
            let (job, p) = (&jobs[i], &mut progress[i]);
            let bytes = copies[i].as_ref().map_or(0, |c| c.bytes);
            match answer {
                Ok(deleted) => {
                    let deleted = deleted == Deleted::Removed;
                    p.outcome = Some(self.moved(job, bytes, p.wire, p.healed, p.verified, deleted, None));
                }
                // Changed since it was read (412), or the delete failed: the job alone copies again.
                Err(_) => p.alone = true,
            }
        }
    }
}

/// The upload of a source read in the batch; `Err` if the source is not a whisper file (a failure no
/// retry can mend).
fn prepare(job: &Job, fetched: Fetched, p: &mut Progress) -> Result<Copy, String> {
    let Fetched { mut stat, data, etag, wire_bytes } = fetched;
    p.wire += wire_bytes;
    let bytes = data.len() as u64;
    let source =
        Arc::new(WhisperBuf::from_bytes(data).map_err(|e| format!("the source is not a valid whisper file: {e}"))?);
    stat.name = job.name.clone();
    // Never compressed per file: a batch body is compressed as a whole when worth it.
    let upload = shared_upload(&source, stat, false)?.with_etag();
    Ok(Copy { source, upload, etag, bytes })
}
