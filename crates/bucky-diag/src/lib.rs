//! `bucky-diag`: how bucky's daemons (`bucky-agent`, `bucky-pickle-relay`) explain their own stalls.
//!
//! - [`Registry`]: every request and background job in flight, with its phase and its flock;
//! - the watchdog ([`Diagnostics::start`]): an OS thread that reports runtime stalls, operations stuck in
//!   one phase (naming who holds the flock they wait for) and descriptor leaks, straight to stderr and
//!   `--diag-file`, never through the tracing subscriber;
//! - the state dump: `SIGQUIT` or `SIGUSR1` writes [`State`] as text and the daemon keeps running;
//!   [`Diagnostics::state`] gives the same for `GET /debug/state`;
//! - [`Metrics`] and [`metrics::spawn_sender`]: self-metrics to Graphite over the line protocol.
//!
//! A daemon builds one [`Diagnostics`] from a [`DiagConfig`], calls [`Diagnostics::start`] with its
//! runtime's handle, registers each operation with [`Registry::begin`] (the returned [`Op`] leaves the
//! registry when dropped) and marks its phases.

mod dump;
pub mod metrics;
pub mod procfs;
mod registry;
mod report;
mod watchdog;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use dump::{InFlight, Locks, Memory, Runtime, State, WatchdogCounts};
pub use metrics::{GraphiteTarget, Metrics};
pub use registry::{phase, LockState, Op, OpSnapshot, Registry};
pub use report::Reporter;

/// The defaults, as the daemons' flags document them.
pub const DEFAULT_STALL_THRESHOLD: Duration = Duration::from_millis(500);
/// An operation in one phase longer than this is reported.
pub const DEFAULT_STUCK_AFTER: Duration = Duration::from_secs(30);
/// How often the heartbeat task ticks.
const HEARTBEAT: Duration = Duration::from_millis(100);

/// What a daemon chooses about its diagnostics.
#[derive(Debug, Clone)]
pub struct DiagConfig {
    /// The daemon's name, in reports.
    pub daemon: &'static str,
    /// A runtime stall longer than this is reported (`--stall-threshold`).
    pub stall_threshold: Duration,
    /// An operation in one phase longer than this is reported (`--stuck-after`).
    pub stuck_after: Duration,
    /// How often the open descriptors are counted.
    pub fd_sample_every: Duration,
    /// Reports and dumps are also appended here (`--diag-file`).
    pub diag_file: Option<PathBuf>,
}

impl DiagConfig {
    /// The defaults for `daemon`.
    pub fn new(daemon: &'static str) -> DiagConfig {
        DiagConfig {
            daemon,
            stall_threshold: DEFAULT_STALL_THRESHOLD,
            stuck_after: DEFAULT_STUCK_AFTER,
            fd_sample_every: Duration::from_secs(10),
            diag_file: None,
        }
    }
}

/// `beat_ms` once the heartbeat task is gone (its runtime shut down).
const HEART_STOPPED: u64 = u64::MAX;

/// Dropped with the heartbeat task, when its runtime shuts down: marks the heart as stopped, not stalled.
struct HeartStops(Diagnostics);

impl Drop for HeartStops {
    fn drop(&mut self) {
        self.0.inner.beat_ms.store(HEART_STOPPED, Ordering::Relaxed);
    }
}

/// A daemon's diagnostics (cheap to clone).
#[derive(Clone, Debug)]
pub struct Diagnostics {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: DiagConfig,
    registry: Registry,
    metrics: Metrics,
    reporter: Reporter,
    started: Instant,
    /// Milliseconds since `started` of the heartbeat's last tick.
    beat_ms: AtomicU64,
    runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    counts: Counts,
}

#[derive(Debug, Default)]
pub(crate) struct Counts {
    pub(crate) stalls: AtomicU64,
    pub(crate) longest_stall_ms: AtomicU64,
    pub(crate) stuck: AtomicU64,
    pub(crate) fd_leaks: AtomicU64,
}

/// Errors of starting the diagnostics.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    /// The diag file cannot be opened for appending.
    #[error("cannot open the diag file {path} (--diag-file)")]
    DiagFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        cause: std::io::Error,
    },
    /// A thread or a signal handler cannot be set up.
    #[error("cannot start the watchdog")]
    Start(#[source] std::io::Error),
}

impl Diagnostics {
    /// Diagnostics for one daemon; nothing runs until [`Diagnostics::start`].
    pub fn new(config: DiagConfig) -> Result<Diagnostics, DiagError> {
        let reporter = Reporter::new(true, config.diag_file.as_deref())
            .map_err(|cause| DiagError::DiagFile { path: config.diag_file.clone().unwrap_or_default(), cause })?;
        Ok(Diagnostics {
            inner: Arc::new(Inner {
                config,
                registry: Registry::new(),
                metrics: Metrics::new(),
                reporter,
                started: Instant::now(),
                beat_ms: AtomicU64::new(0),
                runtime: std::sync::OnceLock::new(),
                counts: Counts::default(),
            }),
        })
    }

    /// Starts the heartbeat on `runtime`, the watchdog thread, and the thread that dumps the state on
    /// `SIGQUIT` and `SIGUSR1`.
    pub fn start(&self, runtime: &tokio::runtime::Handle) -> Result<(), DiagError> {
        let _ = self.inner.runtime.set(runtime.clone());
        self.beat();
        let heart = self.clone();
        runtime.spawn(async move {
            let _stops = HeartStops(heart.clone());
            let mut ticks = tokio::time::interval(HEARTBEAT);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                heart.beat();
            }
        });
        let watchdog = self.clone();
        std::thread::Builder::new()
            .name("bucky-watchdog".into())
            .spawn(move || watchdog::run(watchdog))
            .map_err(DiagError::Start)?;
        let mut signals =
            signal_hook::iterator::Signals::new([signal_hook::consts::SIGQUIT, signal_hook::consts::SIGUSR1])
                .map_err(DiagError::Start)?;
        let dumper = self.clone();
        std::thread::Builder::new()
            .name("bucky-dump".into())
            .spawn(move || {
                for signal in signals.forever() {
                    let reason = if signal == signal_hook::consts::SIGQUIT { "SIGQUIT" } else { "SIGUSR1" };
                    dumper.dump(reason);
                }
            })
            .map_err(DiagError::Start)?;
        Ok(())
    }

    fn beat(&self) {
        let ms = self.inner.started.elapsed().as_millis() as u64;
        self.inner.beat_ms.store(ms, Ordering::Relaxed);
    }

    /// `(now, last heartbeat)` in milliseconds since the start; no heartbeat once the runtime shut down.
    pub(crate) fn clock(&self) -> (u64, Option<u64>) {
        let beat = self.inner.beat_ms.load(Ordering::Relaxed);
        (self.inner.started.elapsed().as_millis() as u64, (beat != HEART_STOPPED).then_some(beat))
    }

    pub(crate) fn config(&self) -> &DiagConfig {
        &self.inner.config
    }

    pub(crate) fn counts(&self) -> &Counts {
        &self.inner.counts
    }

    /// The in-flight registry.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The self-metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// Where reports go.
    pub fn reporter(&self) -> &Reporter {
        &self.inner.reporter
    }

    /// Sets the gauges of the self-metrics (in flight, open fds, RSS, stalls…) to their values now.
    pub fn refresh_gauges(&self) {
        let m = &self.inner.metrics;
        m.set("in_flight", self.inner.registry.len() as f64);
        if let Some(open) = procfs::fd_count() {
            m.set("open_fds", open as f64);
        }
        if let Some(rss) = procfs::rss_bytes() {
            m.set("rss_bytes", rss as f64);
        }
    }

    /// Writes the state as text to stderr and the diag file.
    pub fn dump(&self, reason: &str) {
        self.inner.reporter.write(&self.state(reason).to_text());
    }

    pub(crate) fn with_holders(&self, op: OpSnapshot) -> InFlight {
        let lock_holders = match &op.lock {
            Some(lock) if !lock.held => procfs::flock_holders(&lock.path),
            _ => Vec::new(),
        };
        InFlight { op, lock_holders }
    }

    /// The state now.
    pub fn state(&self, reason: &str) -> State {
        let in_flight: Vec<InFlight> =
            self.inner.registry.snapshot().into_iter().map(|op| self.with_holders(op)).collect();
        let mut locks = Locks::default();
        for op in &in_flight {
            if let Some(lock) = &op.op.lock {
                let list = if lock.held { &mut locks.held } else { &mut locks.awaited };
                if !list.contains(&lock.path) {
                    list.push(lock.path.clone());
                }
            }
        }
        let runtime = self.inner.runtime.get().map(|handle| {
            let m = handle.metrics();
            Runtime {
                workers: m.num_workers(),
                alive_tasks: m.num_alive_tasks(),
                global_queue_depth: m.global_queue_depth(),
                threads: procfs::threads(),
            }
        });
        self.refresh_gauges();
        let c = &self.inner.counts;
        State {
            daemon: self.inner.config.daemon.to_owned(),
            pid: std::process::id(),
            at_unix: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            uptime_secs: self.inner.started.elapsed().as_secs_f64(),
            reason: reason.to_owned(),
            in_flight,
            locks,
            fds: procfs::fds(),
            memory: Memory {
                rss_bytes: procfs::rss_bytes(),
                peak_rss_bytes: procfs::peak_rss_bytes(),
                allocator: "system (glibc malloc)",
            },
            runtime,
            watchdog: WatchdogCounts {
                stalls: c.stalls.load(Ordering::Relaxed),
                longest_stall_ms: c.longest_stall_ms.load(Ordering::Relaxed),
                stuck: c.stuck.load(Ordering::Relaxed),
                fd_leaks: c.fd_leaks.load(Ordering::Relaxed),
                dropped_reports: self.inner.reporter.dropped(),
            },
            metrics: self.inner.metrics.all(),
        }
    }
}

tokio::task_local! {
    static CURRENT: Arc<Op>;
}

/// Runs `future` with `op` as the current operation of its task (see [`current`]).
pub async fn scope<F: std::future::Future>(op: Arc<Op>, future: F) -> F::Output {
    CURRENT.scope(op, future).await
}

std::thread_local! {
    static BLOCKING: std::cell::RefCell<Option<Arc<Op>>> = const { std::cell::RefCell::new(None) };
}

/// The operation of the running task (inside [`scope`]), or of the blocking work running on this thread
/// (inside [`on_this_thread`]).
pub fn current() -> Option<Arc<Op>> {
    CURRENT.try_with(Arc::clone).ok().or_else(|| BLOCKING.with(|b| b.borrow().clone()))
}

/// Makes `op` the current operation of this (blocking-pool) thread until the guard is dropped, so code
/// that runs there without the task's context (the store, the group commit) can mark its phases.
pub fn on_this_thread(op: Option<Arc<Op>>) -> ThreadScope {
    let previous = BLOCKING.with(|b| b.replace(op));
    ThreadScope { previous }
}

/// Restores the thread's previous operation when dropped.
#[derive(Debug)]
pub struct ThreadScope {
    previous: Option<Arc<Op>>,
}

impl Drop for ThreadScope {
    fn drop(&mut self) {
        let previous = self.previous.take();
        BLOCKING.with(|b| *b.borrow_mut() = previous);
    }
}

#[cfg(test)]
mod tests;
