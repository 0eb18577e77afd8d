//! The copy engine behind `rebalance`, `backfill` and `copy`.
//!
//! A [`Job`] heals one source copy of a metric into every destination that must hold it, then **verifies
//! by content** that each destination holds every point of the copy it was given (see [`verify`]), and
//! only then, if asked, deletes the source with `If-Match` of the version that was copied. A verification
//! failure or a 412 (the source changed, e.g. carbon still writes to it) starts the job over: read the
//! source again, heal again, verify again — a bounded number of times; the source is never deleted
//! otherwise.
//!
//! Batches: with agents that take them (bucky-agent), `--batch` jobs of one source node move together,
//! with one request to read their sources, one per destination to heal and read back, and one to delete
//! (see `engine/batch.rs`); anything that goes wrong with a job in a batch hands it to the one-job path, which is
//! also the path for buckyd. A batch read holds at most `--batch-mib` of files: the jobs whose sources did
//! not fit lead the worker's next batch.
//!
//! A destination that answers 507 Insufficient Storage (its disk is full) is sent no more copies for the
//! rest of the run: every job that would write to it fails at once, source kept, listed in `--error-file`,
//! and the summary names the node (see [`crate::health`]). Whether a job may run at all ([`Run::refusal`])
//! and whether its source goes once verified ([`Run::after_verify`]) are decided in one place each, for
//! the batch and the one-job path alike.
//!
//! Concurrency: `--workers` requests (each a batch, or one job) in flight per source node, and at most
//! `--workers` requests at once to each destination node. `--max-rate` paces the jobs started per source node. `--state-file` records finished
//! jobs (one JSON line each) so a rerun skips them; `--error-file` lists failed ones.

mod batch;
pub mod state;
pub mod verify;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::Semaphore;
use whisper::WhisperBuf;

use crate::cli::EngineArgs;
use crate::client::{Client, ClientError, Deleted, Fetched, Upload};
use crate::config::Addr;
use crate::error::one_line;
use crate::printer::{human_bytes, Printer};
use crate::UsageError;

use self::state::{ErrorLog, StateLog};

/// One unit of work: heal `source_name` from `source` into `name` on every destination.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Job {
    /// The metric as stored on the destinations.
    #[serde(rename = "metric")]
    pub name: String,
    /// The metric as stored on the source (differs from `name` only for backfill).
    #[serde(rename = "source_metric")]
    pub source_name: String,
    /// Where the copy is read from.
    #[serde(serialize_with = "ser_addr")]
    pub source: Addr,
    /// Where it must end up.
    #[serde(serialize_with = "ser_addrs")]
    pub dests: Vec<Addr>,
    /// The source is a replica (or a backfill/copy source): never deleted.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub keep_source: bool,
}

impl Job {
    /// Every node the job needs: its source, then its destinations.
    pub fn nodes(&self) -> impl Iterator<Item = &Addr> {
        std::iter::once(&self.source).chain(&self.dests)
    }

    /// Whether the source goes once every destination verified: not for a replica or a kept source, and
    /// never for a job without destinations (nothing would hold the data).
    pub fn deletes_source(&self) -> bool {
        !self.keep_source && !self.dests.is_empty()
    }
}

fn ser_addr<S: serde::Serializer>(addr: &Addr, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&addr.to_string())
}

fn ser_addrs<S: serde::Serializer>(addrs: &[Addr], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(addrs.iter().map(ToString::to_string))
}

/// `--batch-mib`'s default: 64 MiB of files per batch read.
pub const DEFAULT_BATCH_MIB: u64 = 64;

/// What to do with the jobs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Name of the operation, for the state file and the summary (`rebalance`, `backfill`, `copy`).
    pub op: &'static str,
    /// Delete each source after its destinations verified.
    pub delete: bool,
    /// Requests in flight per source node (each moves one batch), and per destination node.
    pub workers: usize,
    /// Metrics moved per request to agents that take batches (bucky-agent); 1 = one request per metric.
    pub batch: usize,
    /// Most bytes of files read per batch request.
    pub batch_bytes: u64,
    /// Attempts per job.
    pub attempts: u32,
    /// Jobs started per second per source node.
    pub max_rate: Option<f64>,
    /// Finished jobs are recorded here and skipped on a rerun.
    pub state_file: Option<PathBuf>,
    /// Failed jobs are listed here.
    pub error_file: Option<PathBuf>,
    /// Failed jobs tolerated before the exit status becomes 1.
    pub error_tolerance: u64,
}

impl Options {
    /// Options from the engine flags.
    pub fn from_args(op: &'static str, args: &EngineArgs, workers: usize, delete: bool) -> anyhow::Result<Options> {
        if let Some(rate) = args.max_rate {
            if !(rate.is_finite() && rate > 0.0) {
                return Err(UsageError(format!(
                    "--max-rate must be a positive number of metrics per second, not {rate}"
                ))
                .into());
            }
        }
        if args.batch == 0 {
            return Err(UsageError("--batch must be at least 1".into()).into());
        }
        if args.batch_mib == 0 {
            return Err(UsageError("--batch-mib must be at least 1".into()).into());
        }
        if args.attempts == 0 {
            return Err(UsageError("--attempts must be at least 1".into()).into());
        }
        Ok(Options {
            op,
            delete,
            workers,
            batch: args.batch,
            batch_bytes: args.batch_mib.saturating_mul(1 << 20),
            attempts: args.attempts,
            max_rate: args.max_rate,
            state_file: args.state_file.clone(),
            error_file: args.error_file.clone(),
            error_tolerance: args.error_tolerance,
        })
    }
}

/// The outcome of a run, printed at the end (JSON with `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The operation.
    pub operation: String,
    /// Jobs planned.
    pub planned: u64,
    /// Jobs whose copy was healed into every destination and verified.
    pub moved: u64,
    /// Sources deleted after verification.
    pub deleted: u64,
    /// Copies on replicas healed into the other replicas of a moved metric (rebalance with RF > 1).
    pub replicas_synced: u64,
    /// Jobs skipped: finished in an earlier run (state file).
    pub skipped: u64,
    /// Jobs whose source was listed but gone when read (404): moved or deleted since the listing, or never
    /// there (buckyd's list cache can be an hour old, and may answer a stale list even when forced). Not an
    /// error: there is nothing left to copy.
    pub gone: u64,
    /// Jobs that failed (source kept).
    pub errors: u64,
    /// Jobs not started because the run was interrupted.
    pub not_started: u64,
    /// Bytes of whisper data read from sources (decoded).
    pub bytes: u64,
    /// Bytes sent and received over the network for the copies and verifications.
    pub wire_bytes: u64,
    /// Points written into existing destination files by heals.
    pub points_healed: u64,
    /// Source points checked in the destinations.
    pub points_verified: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Metrics per second.
    pub metrics_per_second: f64,
    /// Source bytes per second.
    pub bytes_per_second: f64,
    /// Per source node: jobs done / failed.
    pub per_node: BTreeMap<String, NodeSummary>,
    /// The first failures (all of them are in `--error-file`).
    pub failures: Vec<Failure>,
    /// Destinations found full (507 Insufficient Storage), with the jobs that failed because of it (sources
    /// kept): nothing more was sent to them once they answered 507.
    pub full_nodes: BTreeMap<String, u64>,
    /// Whether the run deletes sources (the messages say "source kept" only then).
    #[serde(skip)]
    pub deletes: bool,
}

/// Per-node counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeSummary {
    /// Jobs finished.
    pub moved: u64,
    /// Jobs failed.
    pub errors: u64,
}

/// One failed job.
#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    /// The metric (as on the source).
    pub metric: String,
    /// The source.
    pub source: String,
    /// Why.
    pub reason: String,
}

/// Failures kept in the summary.
const SUMMARY_FAILURES: usize = 20;

impl Summary {
    /// Whether the run is a success given the tolerance.
    pub fn ok(&self, tolerance: u64) -> bool {
        self.errors <= tolerance && self.not_started == 0
    }

    /// Prints the summary on stderr (or JSON on stdout).
    pub fn print(&self, printer: &Printer) -> std::io::Result<()> {
        if printer.json() {
            return printer.print_json(self);
        }
        for f in &self.failures {
            printer.error(format!("{} on {}: {}", f.metric, f.source, f.reason));
        }
        if self.errors > self.failures.len() as u64 {
            printer.error(format!("… and {} more failures", self.errors - self.failures.len() as u64));
        }
        for (node, jobs) in &self.full_nodes {
            printer.error(format!(
                "{node} is full (507 Insufficient Storage): {jobs} metrics not copied to it{}; free space on it and \
                 rerun",
                if self.deletes { ", sources kept" } else { "" }
            ));
        }
        printer.info(self.line());
        Ok(())
    }

    /// The summary line, in the command's own words: `copy` copies, `backfill` backfills, only `rebalance`
    /// moves and syncs replicas, and deletions are counted only when the run deletes.
    fn line(&self) -> String {
        let mut counts = vec![format!("{} planned", self.planned)];
        match self.operation.as_str() {
            "rebalance" | "drain" => {
                counts.push(format!("{} moved", self.moved));
                counts.push(format!("{} replica copies synced", self.replicas_synced));
            }
            "copy" => counts.push(format!("{} copied", self.moved)),
            _ => counts.push(format!("{} backfilled", self.moved)),
        }
        if self.deletes {
            counts.push(format!("{} deleted", self.deleted));
        }
        counts.push(format!("{} skipped", self.skipped));
        if self.gone > 0 {
            counts.push(format!("{} gone since listed", self.gone));
        }
        counts.push(format!("{} errors", self.errors));
        if self.not_started > 0 {
            counts.push(format!("{} not started (interrupted)", self.not_started));
        }
        format!(
            "{}: {}; {} read ({} on the wire), {} points healed, {} points verified; {:.1} s, {}, {}/s",
            self.operation,
            counts.join(", "),
            human_bytes(self.bytes),
            human_bytes(self.wire_bytes),
            self.points_healed,
            self.points_verified,
            self.seconds,
            crate::printer::human_rate(self.metrics_per_second, "metrics"),
            human_bytes(self.bytes_per_second as u64),
        )
    }
}

/// How one job ended.
#[derive(Debug)]
enum Outcome {
    Moved {
        deleted: bool,
        bytes: u64,
        wire: u64,
        healed: u64,
        verified: u64,
        note: Option<String>,
        sync: bool,
    },
    SourceGone,
    Failed {
        reason: String,
        wire: u64,
    },
    /// Not copied: `node`, a destination, is full (source kept).
    NodeFull {
        node: Addr,
        wire: u64,
    },
}

/// What becomes of a source once every destination verified its copy.
enum AfterVerify {
    /// Kept (no `--delete`, a replica, a kept source); the note tells of points the destinations cannot hold.
    Keep(Option<String>),
    /// Kept, and the job fails: the destinations cannot hold some of its points.
    Refuse(String),
    /// Deleted, with `If-Match` of the version copied.
    Delete,
}

/// Shared state of a run.
struct Run {
    client: Client,
    printer: Printer,
    options: Options,
    dest_slots: HashMap<Addr, Arc<Semaphore>>,
    state: Option<StateLog>,
    errors: Option<ErrorLog>,
    stop: AtomicBool,
    summary: Mutex<Summary>,
    started_jobs: AtomicU64,
}

/// Paces job starts at `rate` per second.
struct Pacer {
    interval: Duration,
    next: Mutex<Instant>,
}

impl Pacer {
    async fn wait(&self) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|e| e.into_inner());
            let slot = (*next).max(Instant::now());
            *next = slot + self.interval;
            slot
        };
        tokio::time::sleep_until(slot.into()).await;
    }
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// Runs `jobs` and returns the summary. Ctrl-C stops starting new jobs; the ones in flight finish.
pub async fn execute(client: &Client, printer: &Printer, options: Options, jobs: Vec<Job>) -> anyhow::Result<Summary> {
    let started = Instant::now();
    let state = match &options.state_file {
        Some(path) => Some(StateLog::open(path, options.op)?),
        None => None,
    };
    let errors = match &options.error_file {
        Some(path) => Some(ErrorLog::create(path)?),
        None => None,
    };
    let mut dest_slots = HashMap::new();
    for job in &jobs {
        for d in &job.dests {
            dest_slots.entry(d.clone()).or_insert_with(|| Arc::new(Semaphore::new(options.workers)));
        }
    }
    // Group by source node: each gets its own workers.
    let mut queues: BTreeMap<Addr, VecDeque<Job>> = BTreeMap::new();
    let planned = jobs.len() as u64;
    let mut skipped = 0;
    for job in jobs {
        if state.as_ref().is_some_and(|s| s.is_done(&job)) {
            skipped += 1;
            continue;
        }
        queues.entry(job.source.clone()).or_default().push_back(job);
    }
    if skipped > 0 {
        printer.info(format!("{skipped} jobs already finished in an earlier run (state file): skipped"));
    }
    let bars: Vec<(String, u64)> = queues.iter().map(|(a, q)| (a.to_string(), q.len() as u64)).collect();
    let progress = printer.progress(options.op, &bars);
    let run = Arc::new(Run {
        client: client.clone(),
        printer: printer.clone(),
        dest_slots,
        state,
        errors,
        stop: AtomicBool::new(false),
        summary: Mutex::new(Summary {
            operation: options.op.to_owned(),
            planned,
            skipped,
            deletes: options.delete,
            ..Summary::default()
        }),
        started_jobs: AtomicU64::new(0),
        options,
    });
    let progress = Arc::new(progress);
    // Paced runs start a batch at least every second.
    let batch = match run.options.max_rate {
        Some(rate) => run.options.batch.min((rate as usize).max(1)),
        None => run.options.batch,
    };
    let mut tasks = tokio::task::JoinSet::new();
    for (source, queue) in queues {
        let queue = Arc::new(Mutex::new(queue));
        let pacer = run.options.max_rate.map(|rate| {
            Arc::new(Pacer { interval: Duration::from_secs_f64(1.0 / rate), next: Mutex::new(Instant::now()) })
        });
        for _ in 0..run.options.workers {
            let (run, queue, pacer, progress, source) =
                (Arc::clone(&run), Arc::clone(&queue), pacer.clone(), Arc::clone(&progress), source.to_string());
            tasks.spawn(async move {
                // Jobs of this worker's last batch that did not fit in its read (--batch-mib) lead its next.
                let mut carried: Vec<Job> = Vec::new();
                loop {
                    if run.stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let fresh: Vec<Job> = {
                        let mut queue = queue.lock().unwrap_or_else(|e| e.into_inner());
                        let n = queue.len().min(batch.saturating_sub(carried.len()));
                        queue.drain(..n).collect()
                    };
                    if let Some(p) = &pacer {
                        for _ in &fresh {
                            p.wait().await;
                        }
                    }
                    run.started_jobs.fetch_add(fresh.len() as u64, Ordering::Relaxed);
                    let mut jobs = std::mem::take(&mut carried);
                    jobs.extend(fresh);
                    if jobs.is_empty() {
                        break;
                    }
                    let outcomes =
                        if jobs.len() > 1 { run.batch(&jobs).await } else { vec![Some(run.job(&jobs[0]).await)] };
                    for (job, outcome) in jobs.into_iter().zip(outcomes) {
                        match outcome {
                            Some(outcome) => {
                                run.record(&job, outcome);
                                progress.inc(&source);
                            }
                            None => carried.push(job),
                        }
                    }
                }
            });
        }
    }
    let interrupted = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    tokio::pin!(interrupted);
    loop {
        tokio::select! {
            next = tasks.join_next() => {
                match next {
                    None => break,
                    Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Some(_) => {}
                }
            }
            () = &mut interrupted, if !run.stop.load(Ordering::Relaxed) => {
                run.stop.store(true, Ordering::Relaxed);
                printer.warn("interrupted: finishing the metrics in flight, starting no new ones (Ctrl-C again to abort)");
                let printer = printer.clone();
                #[allow(clippy::exit, reason = "a second Ctrl-C must abort at once, like any CLI")]
                tokio::spawn(async move {
                    let _ = tokio::signal::ctrl_c().await;
                    printer.error("aborted");
                    std::process::exit(130);
                });
            }
        }
    }
    progress.finish();
    let mut summary = run.summary.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let started_jobs = run.started_jobs.load(Ordering::Relaxed);
    summary.not_started = planned.saturating_sub(skipped + started_jobs);
    summary.seconds = started.elapsed().as_secs_f64();
    if summary.seconds > 0.0 {
        summary.metrics_per_second = summary.moved as f64 / summary.seconds;
        summary.bytes_per_second = summary.bytes as f64 / summary.seconds;
    }
    Ok(summary)
}

impl Run {
    fn record(&self, job: &Job, outcome: Outcome) {
        let source = job.source.to_string();
        let mut summary = self.summary.lock().unwrap_or_else(|e| e.into_inner());
        match outcome {
            Outcome::Moved { deleted, bytes, wire, healed, verified, note, sync } => {
                if sync {
                    summary.replicas_synced += 1;
                } else {
                    summary.moved += 1;
                }
                summary.deleted += u64::from(deleted);
                summary.bytes += bytes;
                summary.wire_bytes += wire;
                summary.points_healed += healed;
                summary.points_verified += verified;
                summary.per_node.entry(source.clone()).or_default().moved += 1;
                drop(summary);
                if let Some(note) = note {
                    self.printer.warn(format!("{} from {source}: {note}", job.source_name));
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
                let node = node.to_string();
                let first = !summary.full_nodes.contains_key(&node);
                *summary.full_nodes.entry(node.clone()).or_default() += 1;
                if first {
                    // Printed under the summary's lock: once, and before any job it refuses is reported.
                    self.printer.info(format!(
                        "bucky: {node} is full: no more copies sent to it{}; free space and rerun",
                        if self.options.delete { "; sources kept" } else { "" }
                    ));
                }
                drop(summary);
                let reason = format!("{node} is full (507 Insufficient Storage)");
                self.record(job, Outcome::Failed { reason, wire });
            }
            Outcome::Failed { reason, wire } => {
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

    /// `: source kept` when the run deletes sources (`rebalance --delete`): the others never delete one, and
    /// saying so would only worry the reader.
    fn kept(&self) -> &'static str {
        if self.options.delete {
            "; source kept"
        } else {
            ""
        }
    }

    fn finished(&self, job: &Job) {
        if let Some(state) = &self.state {
            if let Err(e) = state.record(job) {
                self.printer.error(format!("cannot write the state file: {e}"));
            }
        }
    }

    async fn slot(&self, addr: &Addr) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let sem = self.dest_slots.get(addr)?;
        Arc::clone(sem).acquire_owned().await.ok()
    }

    /// Whether `job` must fail now instead of being tried: a destination is full (no copy is sent to it),
    /// or a node it needs is down. The one check of the batch and the one-job path, before every attempt.
    fn refusal(&self, job: &Job, wire: u64) -> Option<Outcome> {
        let health = self.client.health();
        if let Some(node) = health.full_among(&job.dests) {
            return Some(Outcome::NodeFull { node: node.clone(), wire });
        }
        health
            .refuse(job.nodes())
            .map(|down| Outcome::Failed { reason: format!("{down}{}; rerun once it is back", self.kept()), wire })
    }

    /// The delete-after-verify rule, once every destination verified its copy (`unplaceable`: the source's
    /// points the destinations' schema cannot hold): the source goes only with `--delete`, when the job
    /// deletes its source at all, and only if the destinations hold every one of its points.
    fn after_verify(&self, job: &Job, unplaceable: u64) -> AfterVerify {
        if !(self.options.delete && job.deletes_source()) {
            AfterVerify::Keep((unplaceable > 0).then(|| unplaceable_note(unplaceable)))
        } else if unplaceable > 0 {
            AfterVerify::Refuse(unplaceable_kept(unplaceable))
        } else {
            AfterVerify::Delete
        }
    }

    /// One job: read, heal everywhere, verify everywhere, maybe delete; retried as a whole.
    async fn job(&self, job: &Job) -> Outcome {
        let mut wire = 0;
        let mut reason = String::from("no attempt made");
        let mut delay = Duration::from_millis(250);
        for attempt in 1..=self.options.attempts {
            if attempt > 1 {
                // A destination found full, or a node found down, by the failed attempt (or by another
                // job meanwhile): no retry can help, fail now rather than after the wait.
                if let Some(refused) = self.refusal(job, wire) {
                    return refused;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
            if let Some(refused) = self.refusal(job, wire) {
                return refused;
            }
            match self.attempt(job, &mut wire).await {
                Ok(Some(outcome)) => return outcome,
                Ok(None) => return Outcome::SourceGone,
                Err(Retry::Again(why)) => {
                    self.printer.verbose(format!(
                        "{} on {}: attempt {attempt}/{}: {why}",
                        job.source_name, job.source, self.options.attempts
                    ));
                    reason = why;
                }
                Err(Retry::Never(why)) => return Outcome::Failed { reason: why, wire },
            }
        }
        Outcome::Failed { reason: format!("{reason} (after {} attempts{})", self.options.attempts, self.kept()), wire }
    }

    async fn attempt(&self, job: &Job, wire: &mut u64) -> Result<Option<Outcome>, Retry> {
        let client = &self.client;
        let Some(fetched) = client.get(&job.source, &job.source_name).await.map_err(Retry::from)? else {
            return Ok(None);
        };
        *wire += fetched.wire_bytes;
        let Fetched { mut stat, data, etag, .. } = fetched;
        let bytes = data.len() as u64;
        let source = Arc::new(
            WhisperBuf::from_bytes(data)
                .map_err(|e| Retry::Never(format!("the source is not a valid whisper file: {e}")))?,
        );
        stat.name = job.name.clone();
        let snappy = job.dests.iter().any(|d| client.snappy_for(d));
        let upload = shared_upload(&source, stat, snappy).map_err(Retry::Never)?;
        // Heal into every destination and read each copy back: in the heal's answer when the agent supports
        // it (bucky-agent), otherwise (buckyd) with a GET after the heal.
        let upload = &upload;
        let copies = futures_util::future::join_all(job.dests.iter().map(|d| async move {
            let _slot = self.slot(d).await;
            let healed = client
                .heal_read_back(d, &job.name, upload)
                .await
                .map_err(|e| Retry::Again(format!("heal into {d}: {}", one_line(&e))))?;
            let replica = match healed.replica {
                Some(replica) => Some(replica),
                None => {
                    client.get(d, &job.name).await.map_err(|e| Retry::Again(format!("verify {d}: {}", one_line(&e))))?
                }
            };
            Ok::<_, Retry>((healed.report.points_written, healed.sent, replica))
        }))
        .await;
        // Check that every destination holds every point of what we copied.
        let now = unix_now();
        let mut healed = 0;
        let mut verified = 0;
        let mut unplaceable = 0;
        for (d, copy) in job.dests.iter().zip(copies) {
            let (points_written, sent, replica) = copy?;
            healed += points_written;
            *wire += sent;
            let Some(replica) = replica else {
                return Err(Retry::Again(format!("verify {d}: the healed copy has disappeared")));
            };
            *wire += replica.wire_bytes;
            let verdict = check_copy(d, &source, replica, now)?;
            verified += verdict.checked;
            unplaceable += verdict.unplaceable;
        }
        match self.after_verify(job, unplaceable) {
            AfterVerify::Keep(note) => return Ok(Some(self.moved(job, bytes, *wire, healed, verified, false, note))),
            AfterVerify::Refuse(why) => return Err(Retry::Never(why)),
            AfterVerify::Delete => {}
        }
        let deleted = {
            let condition = match &etag {
                Some(tag) => Some(tag.as_str()),
                None => {
                    // buckyd sends no ETag: compare the source with what we copied right before deleting.
                    match client.get(&job.source, &job.source_name).await.map_err(Retry::from)? {
                        Some(again) if again.data == source.as_bytes() => None,
                        Some(_) => return Err(Retry::Again("the source changed since it was read".into())),
                        None => return Ok(Some(self.moved(job, bytes, *wire, healed, verified, false, None))),
                    }
                }
            };
            match client.delete(&job.source, &job.source_name, condition).await {
                Ok(Deleted::Removed) => true,
                Ok(Deleted::Absent) => false,
                Err(ClientError::Changed { .. }) => {
                    return Err(Retry::Again(
                        "the source changed since it was read (still receiving writes?); copying again".into(),
                    ))
                }
                Err(e) => return Err(Retry::Again(format!("delete: {}", one_line(&e)))),
            }
        };
        Ok(Some(self.moved(job, bytes, *wire, healed, verified, deleted, None)))
    }

    #[allow(clippy::too_many_arguments)]
    fn moved(
        &self,
        job: &Job,
        bytes: u64,
        wire: u64,
        healed: u64,
        verified: u64,
        deleted: bool,
        note: Option<String>,
    ) -> Outcome {
        let sync = job.keep_source && matches!(self.options.op, "rebalance" | "drain");
        Outcome::Moved { deleted, bytes, wire, healed, verified, note, sync }
    }
}

/// A source file shared between the upload body and the verification.
struct SharedFile(Arc<WhisperBuf>);

impl AsRef<[u8]> for SharedFile {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// An upload whose body is the source's own buffer, shared rather than copied.
fn shared_upload(source: &Arc<WhisperBuf>, stat: bucky_wire::MetricStat, snappy: bool) -> Result<Upload, String> {
    let body = bytes::Bytes::from_owner(SharedFile(Arc::clone(source)));
    Upload::from_bytes(stat, body, snappy).map_err(|e| format!("cannot compress: {e}"))
}

/// Checks that `replica` (a destination's copy, read back after the heal) holds every point of `source`.
fn check_copy(d: &Addr, source: &WhisperBuf, replica: Fetched, now: i64) -> Result<verify::Verdict, Retry> {
    let replica = WhisperBuf::from_bytes(replica.data)
        .map_err(|e| Retry::Again(format!("verify {d}: the copy is not a valid whisper file: {e}")))?;
    let verdict = verify::verify(source, &replica, now);
    if let Some((spp, t)) = verdict.first_missing {
        return Err(Retry::Again(format!(
            "verify {d}: {} of {} points missing (first: {spp}s archive, t={t}); healing again",
            verdict.missing, verdict.checked
        )));
    }
    Ok(verdict)
}

/// Why a source is not deleted when its destinations cannot hold some of its points.
fn unplaceable_kept(unplaceable: u64) -> String {
    format!(
        "the destinations' schema cannot hold {unplaceable} points of the source (other resolution or shorter \
         retention): source kept"
    )
}

/// The warning for points that do not fit the destinations when the source is kept anyway.
fn unplaceable_note(unplaceable: u64) -> String {
    format!("{unplaceable} points do not fit the destinations' schema (other resolution or shorter retention)")
}

/// Whether a failed attempt is worth repeating.
enum Retry {
    Again(String),
    Never(String),
}

impl From<ClientError> for Retry {
    fn from(e: ClientError) -> Retry {
        Retry::Again(one_line(&e))
    }
}

/// The end of `rebalance`, `backfill` and `copy`: print the plan with `--no-op` (exit 0), otherwise run
/// the jobs and print the summary; exit 1 when failures exceed the tolerance.
pub async fn run_jobs(
    client: &Client,
    printer: &Printer,
    options: Options,
    jobs: Vec<Job>,
    no_op: bool,
) -> anyhow::Result<crate::ExitStatus> {
    if no_op {
        print_plan(printer, &jobs, options.op, options.delete)?;
        return Ok(crate::ExitStatus::Success);
    }
    let tolerance = options.error_tolerance;
    let summary = execute(client, printer, options, jobs).await?;
    summary.print(printer)?;
    Ok(crate::ExitStatus::from_ok(summary.ok(tolerance)))
}

/// What a planned step does, in the words of `op` (the command): `rebalance` moves copies (and deletes them with
/// `--delete`) or syncs replicas, `copy` copies, `backfill`/`backfill2` backfill.
fn plan_label(op: &str, job: &Job, delete: bool) -> &'static str {
    match op {
        "rebalance" | "drain" if job.keep_source => "replica sync",
        "rebalance" | "drain" if delete && job.deletes_source() => "move, then delete",
        "rebalance" | "drain" => "move",
        "copy" => "copy",
        _ => "backfill",
    }
}

/// Prints a plan (for `--no-op`): one line per job, `SOURCE NAME => DESTS [NEW NAME] (what)`, or a JSON array.
pub fn print_plan(printer: &Printer, jobs: &[Job], op: &str, delete: bool) -> std::io::Result<()> {
    use std::io::Write;
    if printer.json() {
        #[derive(Serialize)]
        struct Planned<'a> {
            #[serde(flatten)]
            job: &'a Job,
            delete: bool,
            action: &'static str,
        }
        let plan: Vec<Planned<'_>> = jobs
            .iter()
            .map(|job| Planned { job, delete: delete && job.deletes_source(), action: plan_label(op, job, delete) })
            .collect();
        return printer.print_json(&plan);
    }
    let mut out = printer.stdout();
    for job in jobs {
        let dests = job.dests.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let label = plan_label(op, job, delete);
        if job.name == job.source_name {
            writeln!(out, "{} {} => {} ({label})", job.source, job.name, dests)?;
        } else {
            writeln!(out, "{} {} => {} {} ({label})", job.source, job.source_name, dests, job.name)?;
        }
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(keep_source: bool) -> Job {
        let addr = |host: &str| Addr { host: host.into(), port: 4242 };
        Job { name: "a.b".into(), source_name: "a.b".into(), source: addr("x"), dests: vec![addr("y")], keep_source }
    }

    /// `copy --no-op` and `backfill2 --no-op` used to label every step "(replica sync)".
    #[test]
    fn plan_steps_are_labelled_by_what_they_do() {
        assert_eq!(plan_label("copy", &job(true), false), "copy");
        assert_eq!(plan_label("backfill", &job(true), false), "backfill");
        assert_eq!(plan_label("backfill2", &job(true), false), "backfill");
        assert_eq!(plan_label("rebalance", &job(true), true), "replica sync");
        assert_eq!(plan_label("rebalance", &job(false), true), "move, then delete");
        assert_eq!(plan_label("rebalance", &job(false), false), "move");
    }

    /// The summary says what the command did in its own words; "replica copies synced" and "deleted" only
    /// where the command does such things.
    #[test]
    fn summaries_speak_the_commands_words() {
        let summary = |op: &str, deletes: bool| Summary {
            operation: op.into(),
            planned: 7,
            moved: 5,
            errors: 2,
            deletes,
            metrics_per_second: 4601.5404,
            ..Summary::default()
        };
        let copy = summary("copy", false).line();
        assert!(copy.starts_with("copy: 7 planned, 5 copied, 0 skipped, 2 errors;"), "{copy}");
        assert!(!copy.contains("replica") && !copy.contains("deleted"), "{copy}");
        assert!(copy.contains("4,602 metrics/s"), "{copy}");
        let backfill = summary("backfill2", false).line();
        assert!(backfill.starts_with("backfill2: 7 planned, 5 backfilled, 0 skipped"), "{backfill}");
        let rebalance = summary("rebalance", true).line();
        assert!(
            rebalance.starts_with("rebalance: 7 planned, 5 moved, 0 replica copies synced, 0 deleted,"),
            "{rebalance}"
        );
        assert!(!summary("rebalance", false).line().contains("deleted"));
    }
}
