//! The shared state of one engine run ([`Run`]): the client, the options, per-destination request slots,
//! the state and error files, and the summary every finished job ([`Outcome`]) is counted in. The pipeline
//! (`super::pipeline`) and the transport (`super::transport`) work through it; neither is imported here.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use super::decide::Counts;
use super::job::{Job, JobKind};
use super::options::Options;
use super::reason::{self, JobError};
use super::state::{ErrorLog, StateLog};
use super::summary::{Failure, Summary, SUMMARY_FAILURES};
use crate::client::Client;
use crate::config::Addr;
use crate::printer::Printer;

/// How one job ended.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Healed into every destination and verified there.
    Moved {
        /// What the job was.
        kind: JobKind,
        /// Whether its source was deleted.
        deleted: bool,
        /// What it counted, over all its attempts.
        counts: Counts,
    },
    /// The source was gone when read: nothing to copy.
    SourceGone,
    /// Failed; the source is kept.
    Failed {
        /// Why.
        error: JobError,
        /// Bytes that crossed the network for it.
        wire: u64,
    },
    /// Not copied: `node`, a destination, is full (source kept).
    NodeFull {
        /// The full destination.
        node: Addr,
        /// Bytes that crossed the network for it.
        wire: u64,
    },
}

/// What became of a job that was taken from the queue.
#[derive(Debug)]
pub(super) enum Step {
    /// It ended: count it.
    Done(Outcome),
    /// Its source did not fit in the batch read's answer: it leads the worker's next batch.
    Later,
    /// A node it needs is waited for (suppressed by flap damping, or not answering yet): back to the queue,
    /// its source untouched.
    Held,
}

/// Shared state of a run.
pub(super) struct Run {
    pub(super) client: Client,
    pub(super) printer: Printer,
    pub(super) options: Options,
    pub(super) dest_slots: HashMap<Addr, Arc<Semaphore>>,
    pub(super) state: Option<StateLog>,
    pub(super) errors: Option<ErrorLog>,
    pub(super) stop: AtomicBool,
    pub(super) summary: Mutex<Summary>,
    pub(super) started_jobs: AtomicU64,
    /// The (source, destination) pairs that cannot offload (`--offload`).
    pub(super) offload_refusals: Refusals,
}

/// The (source, destination) pairs found unable to offload during a run.
#[derive(Debug, Default)]
pub(super) struct Refusals(Mutex<HashSet<(Addr, Addr)>>);

impl Refusals {
    pub(super) fn refused(&self, source: &Addr, dest: &Addr) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).contains(&(source.clone(), dest.clone()))
    }

    /// Records the pair; whether it is new.
    pub(super) fn refuse(&self, source: &Addr, dest: &Addr) -> bool {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).insert((source.clone(), dest.clone()))
    }
}

/// Paces job starts at `rate` per second.
pub(super) struct Pacer {
    pub(super) interval: Duration,
    pub(super) next: Mutex<Instant>,
}

impl Pacer {
    pub(super) async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

impl Run {
    /// Counts `outcome` in the summary, and records it in the state file or the error file.
    pub(super) fn record(&self, job: &Job, outcome: Outcome) {
        let source = job.source.to_string();
        let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Outcome::Moved { kind, deleted, counts } => {
                if kind == JobKind::ReplicaSync {
                    summary.replicas_synced += 1;
                } else {
                    summary.moved += 1;
                }
                summary.deleted += u64::from(deleted);
                summary.bytes += counts.bytes;
                summary.wire_bytes += counts.wire;
                summary.offloaded += counts.offloaded;
                summary.points_healed += counts.healed;
                summary.points_verified += counts.verified;
                summary.points_replaced += counts.replaced;
                // A move's copies are the move; a replica sync or a repair that created one filled a gap.
                if matches!(kind, JobKind::ReplicaSync | JobKind::Repair) {
                    summary.replicas_created += counts.created;
                }
                summary.per_node.entry(source.clone()).or_default().moved += 1;
                drop(summary);
                if counts.unplaceable > 0 {
                    self.printer.warn(format!(
                        "{} from {source}: {} points do not fit the destinations' schema (other resolution or \
                         shorter retention)",
                        job.source_name, counts.unplaceable
                    ));
                }
                self.printer.verbose(format!(
                    "{} {} -> {}{}",
                    job.source_name,
                    source,
                    job.dests.iter().map(|d| format!("{d}/{}", job.name)).collect::<Vec<_>>().join(", "),
                    if deleted { " (source deleted)" } else { "" }
                ));
                self.finished(job);
            }
            Outcome::SourceGone => {
                summary.gone += 1;
                drop(summary);
                self.printer.verbose(format!("{} on {source}: gone since listed (nothing to copy)", job.source_name));
                self.finished(job);
            }
            Outcome::NodeFull { node, wire } => {
                let first = !summary.full_nodes.contains_key(&node.to_string());
                *summary.full_nodes.entry(node.to_string()).or_default() += 1;
                if first {
                    // Printed under the summary's lock: once, and before any job it refuses is reported.
                    self.printer.info(format!(
                        "bucky: {node} is full: no more copies sent to it{}; free space and rerun",
                        if self.options.delete { "; sources kept" } else { "" }
                    ));
                }
                drop(summary);
                self.record(job, Outcome::Failed { error: reason::JobError::Full { node }, wire });
            }
            Outcome::Failed { error, wire } => {
                let reason = error.to_string();
                summary.errors += 1;
                summary.wire_bytes += wire;
                summary.per_node.entry(source.clone()).or_default().errors += 1;
                if summary.failures.len() < SUMMARY_FAILURES {
                    summary.failures.push(Failure {
                        metric: job.source_name.clone(),
                        source: source.clone(),
                        reason: reason.clone(),
                    });
                }
                drop(summary);
                self.printer.verbose(format!("FAILED {} on {source}: {reason}", job.source_name));
                if let Some(log) = &self.errors {
                    if let Err(e) = log.write(&job.source_name, &source, &reason) {
                        self.printer.error(format!("cannot write the error file: {e}"));
                    }
                }
            }
        }
    }

    fn finished(&self, job: &Job) {
        if let Some(state) = &self.state {
            if let Err(e) = state.record(job) {
                self.printer.error(format!("cannot write the state file: {e}"));
            }
        }
    }

    /// A request slot at destination `addr` (`--workers` at most at once).
    pub(super) async fn slot(&self, addr: &Addr) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = self.dest_slots.get(addr)?;
        Arc::clone(sem).acquire_owned().await.ok()
    }
}
