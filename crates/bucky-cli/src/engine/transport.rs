//! How the pipeline's steps reach the agents: each step is performed for a set of jobs (all from one
//! source node) either as **one batch request** (bucky-agent's `/batch/*` routes: one read of every source,
//! one heal per destination answered with the copies read back, one delete) or as **one request per
//! metric** (buckyd, and any job that went wrong in a batch). Either way a step answers per job, in the
//! jobs' order, so that the pipeline (`super::pipeline`) is written once over both.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures_util::future::join_all;
use whisper::WhisperData;

use super::job::Job;
use super::reason::{describe, AttemptError};
use super::run::Run;
use crate::client::{ClientError, Deleted, Fetched, Upload};
use crate::config::Addr;

/// The way requests are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Transport {
    /// One request per step for all the jobs (per destination for the heal).
    Batch,
    /// One request per job (per job and destination for the heal).
    PerMetric,
}

/// A source copy read, ready to heal.
pub(super) struct SourceCopy {
    /// The file, shared by the upload body and the verification.
    pub(super) file: Arc<WhisperData>,
    /// Its upload.
    pub(super) upload: Upload,
    /// The version read, for `If-Match` (bucky-agent only).
    pub(super) etag: Option<String>,
}

/// A destination's copy after its heal.
pub(super) struct Healed {
    /// Points the heal wrote into an existing file.
    pub(super) points_written: u64,
    /// Of those, points whose value was replaced (overwriting heals).
    pub(super) points_replaced: u64,
    /// The destination had no copy: the heal created it.
    pub(super) created: bool,
    /// Bytes of the upload sent.
    pub(super) sent: u64,
    /// The copy as read back.
    pub(super) copy: ReadBack,
}

/// A healed copy as read back.
pub(super) enum ReadBack {
    /// Byte for byte the upload (a batch heal sends no body then).
    Identical,
    /// The file as read back.
    File(Fetched),
}

/// A job and its source copy.
pub(super) type Copied<'a> = (&'a Job, &'a SourceCopy);

impl Transport {
    /// Reads each job's source on `source`: the file, `None` if it is gone, or why not.
    pub(super) async fn read(
        self,
        run: &Run,
        source: &Addr,
        jobs: &[&Job],
    ) -> Vec<Result<Option<Fetched>, AttemptError>> {
        let client = &run.client;
        match self {
            Transport::PerMetric => {
                join_all(
                    jobs.iter().map(|job| async move {
                        client.get(source, &job.source_name).await.map_err(AttemptError::Read)
                    }),
                )
                .await
            }
            Transport::Batch => {
                let names: Vec<&str> = jobs.iter().map(|j| j.source_name.as_str()).collect();
                let why = match client.get_many(source, &names, run.options.batch_bytes).await {
                    Ok(Some(reads)) => {
                        return reads
                            .into_iter()
                            .map(|read| match read {
                                Err(ClientError::Status { status: 413, .. }) => Err(AttemptError::CutShort),
                                read => read.map_err(AttemptError::Read),
                            })
                            .collect();
                    }
                    Ok(None) => "the source takes no batches".to_owned(),
                    Err(e) => describe(&e),
                };
                run.printer.verbose(format!("batch of {} from {source}: {why}; one by one", jobs.len()));
                jobs.iter().map(|_| Err(AttemptError::BatchRefused)).collect()
            }
        }
    }

    /// The upload of a source copy to `job`'s destinations. One request per metric compresses it when a
    /// destination is worth it; a batch body is compressed as a whole, and its copies carry their ETag so
    /// that a copy read back identical to it is not sent back.
    pub(super) fn upload(
        self,
        run: &Run,
        job: &Job,
        file: &Arc<WhisperData>,
        stat: bucky_wire::MetricStat,
    ) -> Result<Upload, AttemptError> {
        let snappy = self == Transport::PerMetric && job.dests.iter().any(|d| run.client.snappy_for(d));
        let upload =
            shared_upload(file, stat, snappy).map_err(AttemptError::Compress)?.overwriting(run.options.op.overwrites());
        Ok(match self {
            Transport::Batch => upload.with_etag(),
            Transport::PerMetric => upload,
        })
    }

    /// Heals each job's copy into each of its destinations, each copy read back: per job, per destination
    /// in the job's order, the heal or why it failed. At most `--workers` requests at once to a destination.
    pub(super) async fn heal(self, run: &Run, copies: &[Copied<'_>]) -> Vec<Vec<Result<Healed, AttemptError>>> {
        match self {
            Transport::PerMetric => {
                join_all(
                    copies.iter().map(|&(job, copy)| {
                        join_all(job.dests.iter().map(|d| heal_one(run, d, &job.name, &copy.upload)))
                    }),
                )
                .await
            }
            Transport::Batch => heal_batch(run, copies).await,
        }
    }

    /// Deletes each job's source on `source` with `If-Match` of the version copied: per job whether the
    /// file was removed (`false`: it was already gone), or why not.
    pub(super) async fn delete(
        self,
        run: &Run,
        source: &Addr,
        copies: &[Copied<'_>],
    ) -> Vec<Result<bool, AttemptError>> {
        match self {
            Transport::PerMetric => {
                join_all(copies.iter().map(|&(job, copy)| delete_one(run, source, job, copy))).await
            }
            Transport::Batch => delete_batch(run, source, copies).await,
        }
    }
}

/// A source file shared between the upload body and the verification.
struct SharedFile(Arc<WhisperData>);

impl AsRef<[u8]> for SharedFile {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// An upload whose body is the source's own buffer, shared rather than copied.
fn shared_upload(file: &Arc<WhisperData>, stat: bucky_wire::MetricStat, snappy: bool) -> std::io::Result<Upload> {
    let body = bytes::Bytes::from_owner(SharedFile(Arc::clone(file)));
    Upload::from_bytes(stat, body, snappy)
}

/// Heals `name` into `dest` and reads it back: in the heal's answer when the agent supports it
/// (bucky-agent), otherwise (buckyd) with a GET after the heal.
async fn heal_one(run: &Run, dest: &Addr, name: &str, upload: &Upload) -> Result<Healed, AttemptError> {
    let _slot = run.slot(dest).await;
    let client = &run.client;
    let healed = client
        .heal_read_back(dest, name, upload)
        .await
        .map_err(|error| AttemptError::Heal { dest: dest.clone(), error })?;
    let replica = match healed.replica {
        Some(replica) => replica,
        None => client
            .get(dest, name)
            .await
            .map_err(|error| AttemptError::ReadBack { dest: dest.clone(), error })?
            .ok_or_else(|| AttemptError::Disappeared { dest: dest.clone() })?,
    };
    Ok(Healed {
        points_written: healed.report.points_written,
        points_replaced: healed.report.points_replaced,
        created: healed.report.created,
        sent: healed.sent,
        copy: ReadBack::File(replica),
    })
}

/// One heal request per destination, for every job healing into it.
async fn heal_batch(run: &Run, copies: &[Copied<'_>]) -> Vec<Vec<Result<Healed, AttemptError>>> {
    // Per destination, the (job, destination) index pairs it heals.
    let mut by_dest: BTreeMap<&Addr, Vec<(usize, usize)>> = BTreeMap::new();
    for (j, (job, _)) in copies.iter().enumerate() {
        for (k, d) in job.dests.iter().enumerate() {
            by_dest.entry(d).or_default().push((j, k));
        }
    }
    let answers = join_all(by_dest.into_iter().map(|(d, pairs)| async move {
        let _slot = run.slot(d).await;
        let uploads: Vec<(&str, &Upload)> =
            pairs.iter().map(|&(j, _)| (copies[j].0.name.as_str(), &copies[j].1.upload)).collect();
        let answer = run.client.heal_many(d, &uploads).await;
        (d, pairs, answer)
    }))
    .await;
    let mut healed: Vec<Vec<Option<Result<Healed, AttemptError>>>> =
        copies.iter().map(|(job, _)| job.dests.iter().map(|_| None).collect()).collect();
    for (d, pairs, answer) in answers {
        let entries = match answer {
            Ok(Some(entries)) => entries,
            Ok(None) | Err(_) => {
                if let Err(e) = &answer {
                    run.printer.verbose(format!("batch heal into {d}: {}; one by one", describe(e)));
                }
                for (j, k) in pairs {
                    healed[j][k] = Some(Err(AttemptError::BatchRefused));
                }
                continue;
            }
        };
        for ((j, k), entry) in pairs.into_iter().zip(entries) {
            healed[j][k] = Some(match entry {
                Err(error) => Err(AttemptError::Heal { dest: d.clone(), error }),
                Ok(entry) => {
                    let copy = match entry.replica {
                        _ if entry.identical => Ok(ReadBack::Identical),
                        Some(replica) => Ok(ReadBack::File(replica)),
                        // Not read back: the job alone verifies with a GET.
                        None => Err(AttemptError::NotReadBack { dest: d.clone() }),
                    };
                    copy.map(|copy| Healed {
                        points_written: entry.report.points_written,
                        points_replaced: entry.report.points_replaced,
                        created: entry.report.created,
                        sent: entry.sent,
                        copy,
                    })
                }
            });
        }
    }
    healed
        .into_iter()
        .map(|per_dest| per_dest.into_iter().map(|h| h.unwrap_or(Err(AttemptError::BatchRefused))).collect())
        .collect()
}

/// Deletes one source with `If-Match`; without a version (buckyd sends no ETag), after comparing the source
/// with what was copied right before.
async fn delete_one(run: &Run, source: &Addr, job: &Job, copy: &SourceCopy) -> Result<bool, AttemptError> {
    let client = &run.client;
    let condition = match &copy.etag {
        Some(tag) => Some(tag.as_str()),
        None => match client.get(source, &job.source_name).await.map_err(AttemptError::Read)? {
            Some(again) if again.data == copy.file.as_bytes() => None,
            Some(_) => return Err(AttemptError::SourceChanged),
            None => return Ok(false),
        },
    };
    match client.delete(source, &job.source_name, condition).await {
        Ok(deleted) => Ok(deleted == Deleted::Removed),
        Err(ClientError::Changed { .. }) => Err(AttemptError::ChangedSinceRead),
        Err(e) => Err(AttemptError::Delete(e)),
    }
}

/// One delete request for every source with a version to delete it with.
async fn delete_batch(run: &Run, source: &Addr, copies: &[Copied<'_>]) -> Vec<Result<bool, AttemptError>> {
    let mut deleted: Vec<Result<bool, AttemptError>> = copies.iter().map(|_| Err(AttemptError::NoVersion)).collect();
    let (places, versions): (Vec<usize>, Vec<(&Job, &str)>) =
        copies.iter().enumerate().filter_map(|(i, (job, copy))| Some((i, (*job, copy.etag.as_deref()?)))).unzip();
    for (i, answer) in places.into_iter().zip(delete_versions(run, source, &versions).await) {
        deleted[i] = answer;
    }
    deleted
}

/// Deletes each job's source on `source` if it is still the version given (`If-Match`), in one request:
/// per job whether the file was removed (`false`: it was already gone), or why not.
pub(super) async fn delete_versions(
    run: &Run,
    source: &Addr,
    versions: &[(&Job, &str)],
) -> Vec<Result<bool, AttemptError>> {
    if versions.is_empty() {
        return Vec::new();
    }
    let request: Vec<(&str, Option<&str>)> =
        versions.iter().map(|&(job, tag)| (job.source_name.as_str(), Some(tag))).collect();
    let answers = match run.client.delete_many(source, &request).await {
        Ok(Some(answers)) => answers,
        Ok(None) | Err(_) => return versions.iter().map(|_| Err(AttemptError::BatchRefused)).collect(),
    };
    answers
        .into_iter()
        .map(|answer| match answer {
            Ok(d) => Ok(d == Deleted::Removed),
            Err(ClientError::Changed { .. }) => Err(AttemptError::ChangedSinceRead),
            Err(e) => Err(AttemptError::Delete(e)),
        })
        .collect()
}
