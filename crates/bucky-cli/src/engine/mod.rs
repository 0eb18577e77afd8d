//! The copy engine behind `rebalance`, `drain`, `backfill` and `copy`.
//!
//! A [`Job`] heals one source copy of a metric into every destination that must hold it, then **verifies
//! by content** that each destination holds every point of the copy it was given (see [`verify`]), and
//! only then, if asked, deletes the source with `If-Match` of the version that was copied. A verification
//! failure or a 412 (the source changed, e.g. carbon still writes to it) starts the job over: read the
//! source again, heal again, verify again — a bounded number of times; the source is never deleted
//! otherwise.
//!
//! Layout: `pipeline` is the one per-job pipeline (read → heal every destination → verify each read-back →
//! decide → delete), over a `transport` that performs each step for a batch of jobs in one request
//! (bucky-agent's batch routes) or with one request per metric (buckyd, and a job that went wrong in a
//! batch). `decide` holds the delete-after-verify rule, once. `reason` types why a job failed; `summary` is
//! what a run reports; [`state`] the state and error files.
//!
//! Batches: with agents that take them (bucky-agent), `--batch` jobs of one source node move together,
//! with one request to read their sources, one per destination to heal and read back, and one to delete;
//! anything that goes wrong with a job in a batch hands it to the one-job path. A batch read holds at most
//! `--batch-mib` of files: the jobs whose sources did not fit lead the worker's next batch.
//!
//! `--offload`: the destination agents fetch a batch's sources from the source agent themselves, heal and
//! check them, and answer with verdicts only; the same rule decides, and the source is deleted in the
//! version they copied (see `offload`). Nodes that cannot offload get their copies through the client.
//!
//! Memory: all the batch reads of a run share one budget of files in flight, `--inflight-mib` (see
//! [`crate::inflight`]): a read asks for no more than the room it reserved there, and holds the room for
//! what it read until its batch ends. The client's memory thus follows the budget, not `--workers` times
//! the source nodes times `--batch-mib`.
//!
//! A destination that answers 507 Insufficient Storage (its disk is full) is sent no more copies for the
//! rest of the run: every job that would write to it fails at once, source kept, listed in `--error-file`,
//! and the summary names the node (see [`crate::health`]).
//!
//! Concurrency: `--workers` requests (each a batch, or one job) in flight per source node, and at most
//! `--workers` requests at once to each destination node (batch reads also within `--inflight-mib`). `--max-rate` paces the jobs started per source
//! node. `--state-file` records finished jobs (one JSON line each) so a rerun skips them; `--error-file`
//! lists failed ones. Interrupts come through [`Options::interrupts`]: the first stops starting jobs, the
//! second abandons those in flight; either way the run returns its summary ([`Summary::aborted`]).
//!
//! go-carbon clusters: with [`Options::throttle`], each destination's go-carbon cache is polled and a node
//! under pressure is paused (its jobs wait, the others' go on) or slowed; see [`throttle`].
//!
//! `--graphite`: the run's progress goes to Graphite every interval and once at the end (see `graphite`).
//!
//! Node health: a node that flaps is suppressed by flap damping ([`Options::damping`]), and one that just
//! stopped answering is waited for a while; the jobs that need either wait in the queue as a paused node's
//! do (the queue skips them, a job in flight goes back to it), and `watch` probes the node every second
//! until it is reused. The rules are in `crate::health` and `crate::damping`.

mod decide;
mod graphite;
mod job;
mod offload;
mod options;
mod pipeline;
mod queue;
mod reason;
mod run;
pub mod state;
mod summary;
mod throttle;
mod transport;
mod watch;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

pub use self::job::{print_plan, Job, JobKind, Operation};
pub use self::options::{unix_now, Interrupt, Interrupts, Options, DEFAULT_BATCH_MIB, DEFAULT_INFLIGHT_MIB};
pub use self::summary::{Failure, FlapSummary, NodeSummary, Summary};
pub use self::throttle::{ThrottleOptions, ThrottleSummary};
pub use crate::damping::DampingConfig;

use self::options::AbortOnDrop;
use self::queue::SourceQueue;
use self::run::{Pacer, Run, Step};
use self::state::{ErrorLog, StateLog};
use self::throttle::Throttles;
use crate::client::Client;
use crate::config::Addr;
use crate::inflight::{self, FileBudget};
use crate::printer::Printer;

/// How long a worker whose jobs all wait for a node sleeps before it looks again.
const RETRY_HELD: Duration = Duration::from_millis(100);

/// Runs `jobs` and returns the summary. A stop (the first Ctrl-C) starts no new jobs and lets the ones in
/// flight finish; an abort (the second) abandons them and returns at once, with [`Summary::aborted`] set.
pub async fn execute(client: &Client, printer: &Printer, options: Options, jobs: Vec<Job>) -> anyhow::Result<Summary> {
    let started = Instant::now();
    client.health().configure(options.damping);
    let state = match &options.state_file {
        Some(path) => Some(StateLog::open(path, options.op.name())?),
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
    let throttles = match &options.throttle {
        Some(throttle) => Some(Arc::new(Throttles::new(throttle, dest_slots.keys(), printer)?)),
        None => None,
    };
    // Group by source node: each gets its own workers.
    let mut queues: BTreeMap<Addr, SourceQueue> = BTreeMap::new();
    let planned = jobs.len() as u64;
    let mut skipped = 0;
    for job in jobs {
        if state.as_ref().is_some_and(|s| s.is_done(&job)) {
            skipped += 1;
            continue;
        }
        queues.entry(job.source.clone()).or_default().push(job);
    }
    if skipped > 0 {
        printer.info(format!("{skipped} jobs already finished in an earlier run (state file): skipped"));
    }
    let bars: Vec<(String, u64)> = queues.iter().map(|(a, q)| (a.to_string(), q.len() as u64)).collect();
    let progress = printer.progress(options.op.name(), &bars);
    let (mut interrupts, _listener) = options.interrupts.clone().listen();
    let run = Arc::new(Run {
        // Its batch reads share one budget of files in flight, whatever the workers and source nodes.
        client: client.with_file_budget(FileBudget::new(options.inflight_bytes)),
        printer: printer.clone(),
        dest_slots,
        state,
        errors,
        stop: AtomicBool::new(false),
        summary: Mutex::new(Summary {
            operation: options.op,
            planned,
            skipped,
            deletes: options.delete,
            ..Summary::default()
        }),
        started_jobs: AtomicU64::new(0),
        offload_refusals: Default::default(),
        options,
    });
    let progress = Arc::new(progress);
    // The throttle's pollers live as long as the run; a first poll of every node comes before any job.
    let mut pollers = Vec::new();
    if let Some(throttles) = &throttles {
        throttles.poll_all(&progress).await;
        for addr in run.dest_slots.keys() {
            let task = tokio::spawn(Arc::clone(throttles).poll_forever(addr.clone(), Arc::clone(&progress)));
            pollers.push(AbortOnDrop::new(task));
        }
    }
    let reporter = run
        .options
        .graphite
        .as_ref()
        .and_then(|target| graphite::Reporter::start(target, &run, throttles.clone(), printer));
    // The nodes waited for (flap damping, no answer yet) are probed and reported as long as the run lasts.
    let _watch = AbortOnDrop::new(tokio::spawn(watch::nodes(
        client.clone(),
        printer.clone(),
        Arc::clone(&progress),
        run.options.damping.reuse,
        run.options.delete,
    )));
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
            let (run, queue, pacer, progress, label) =
                (Arc::clone(&run), Arc::clone(&queue), pacer.clone(), Arc::clone(&progress), source.to_string());
            let source = source.clone();
            let throttles = throttles.clone();
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
                        let health = run.client.health();
                        // A source node waited for holds every job of its queue; a destination, its own.
                        if health.waiting(&source).is_some() {
                            Vec::new()
                        } else {
                            queue.take(n, |dests| {
                                health.waiting_among(dests).is_none()
                                    && throttles.as_ref().is_none_or(|throttles| throttles.admit(dests))
                            })
                        }
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
                        if queue.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
                            break;
                        }
                        // Every job left waits for a node waited for, or a paused or rate-limited destination.
                        let retry = throttles.as_ref().map_or(RETRY_HELD, |t| t.retry_after().min(RETRY_HELD));
                        tokio::time::sleep(retry).await;
                        continue;
                    }
                    // The room its read reserved in the run's budget of files is held until the batch ends. A
                    // lone job goes one request per metric, unless the destinations copy it (--offload).
                    let steps = inflight::hold(async {
                        match jobs.len() > 1 || run.options.offload {
                            true => run.batch(&jobs).await,
                            false => vec![run.job(&jobs[0]).await],
                        }
                    })
                    .await;
                    for (job, step) in jobs.into_iter().zip(steps) {
                        match step {
                            Step::Done(outcome) => {
                                run.record(&job, outcome);
                                progress.inc(&label);
                            }
                            Step::Later => carried.push(job),
                            Step::Held => {
                                // Started again when it is taken again (or counted as not started).
                                run.started_jobs.fetch_sub(1, Ordering::Relaxed);
                                queue.lock().unwrap_or_else(|e| e.into_inner()).push(job);
                            }
                        }
                    }
                }
            });
        }
    }
    let mut seen = Interrupt::None;
    let mut listening = true;
    loop {
        tokio::select! {
            next = tasks.join_next() => {
                match next {
                    None => break,
                    Some(Err(e)) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Some(_) => {}
                }
            }
            level = interrupts.wait_for(|level| *level > seen), if listening => {
                // A dropped sender interrupts nothing more.
                let Ok(level) = level.map(|level| *level) else {
                    listening = false;
                    continue;
                };
                if seen < Interrupt::Stop {
                    run.stop.store(true, Ordering::Relaxed);
                    printer.warn(
                        "interrupted: finishing the metrics in flight, starting no new ones (Ctrl-C again to abort)",
                    );
                }
                seen = level;
                if level == Interrupt::Abort {
                    // Abandoned between two requests: a job's source is deleted only as its last step, so
                    // none is lost; what finished is in the state file already.
                    printer.error("aborted");
                    tasks.abort_all();
                    while tasks.join_next().await.is_some() {}
                    break;
                }
            }
        }
    }
    drop(pollers);
    progress.finish();
    if let Some(state) = &run.state {
        if let Err(e) = state.sync() {
            printer.error(format!("cannot write the state file: {e}"));
        }
    }
    let mut summary = run.summary.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let started_jobs = run.started_jobs.load(Ordering::Relaxed);
    summary.aborted = seen == Interrupt::Abort;
    if let Some(throttles) = &throttles {
        summary.throttle = throttles.report();
    }
    summary.flap_damping = self::summary::flap_summaries(client.health());
    summary.not_started = planned.saturating_sub(skipped + started_jobs);
    summary.seconds = started.elapsed().as_secs_f64();
    if summary.seconds > 0.0 {
        summary.metrics_per_second = summary.moved as f64 / summary.seconds;
        summary.bytes_per_second = summary.bytes as f64 / summary.seconds;
    }
    if let Some(reporter) = reporter {
        // The last sample is a blocking send (bounded connect and write times): off the runtime.
        let last = summary.clone();
        if let Err(e) = tokio::task::spawn_blocking(move || reporter.finish(&last)).await {
            printer.warn(format!("the last progress sample to Graphite was not sent: {e}"));
        }
    }
    Ok(summary)
}

/// The end of `rebalance`, `backfill` and `copy`: print the plan with `--no-op` (exit 0), otherwise run
/// the jobs and print the summary; exit 1 when failures exceed the tolerance, 130 when aborted.
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
    if summary.aborted {
        return Ok(crate::ExitStatus::Interrupted);
    }
    summary.print(printer)?;
    Ok(crate::ExitStatus::from_ok(summary.ok(tolerance)))
}
