//! The state of a daemon at one moment: what is in flight (with phases, ages and locks, and who holds the
//! flocks being waited for), open descriptors by kind, memory, runtime figures, the watchdog's counts and
//! the self-metrics. Written as text by `SIGQUIT`/`SIGUSR1` and served as JSON (the agent's
//! `GET /debug/state`). Nothing in it is a secret: no tokens, no keys, no request bodies.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;

use serde::Serialize;

use crate::procfs::{Fds, LockHolder};
use crate::registry::OpSnapshot;

/// A daemon's state.
#[derive(Debug, Clone, Serialize)]
pub struct State {
    /// `bucky-agent`, `bucky-pickle-relay`.
    pub daemon: String,
    /// Process id.
    pub pid: u32,
    /// Unix seconds of this snapshot.
    pub at_unix: u64,
    /// Seconds since the diagnostics started.
    pub uptime_secs: f64,
    /// Why it was taken (`SIGQUIT`, `GET /debug/state`, …).
    pub reason: String,
    /// Every operation in flight, oldest first.
    pub in_flight: Vec<InFlight>,
    /// Flocks held and awaited by the operations in flight.
    pub locks: Locks,
    /// Open descriptors.
    pub fds: Fds,
    /// Memory.
    pub memory: Memory,
    /// The async runtime, when the daemon has one.
    pub runtime: Option<Runtime>,
    /// What the watchdog has seen.
    pub watchdog: WatchdogCounts,
    /// The self-metrics now.
    pub metrics: BTreeMap<String, f64>,
}

/// One operation in flight, with the holders of the flock it waits for.
#[derive(Debug, Clone, Serialize)]
pub struct InFlight {
    /// The operation.
    #[serde(flatten)]
    pub op: OpSnapshot,
    /// Who holds the flock it waits for (from `/proc/locks`), when it waits for one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub lock_holders: Vec<LockHolder>,
}

/// Flocks of the operations in flight.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Locks {
    /// Files whose flock an operation holds.
    pub held: Vec<PathBuf>,
    /// Files whose flock an operation waits for.
    pub awaited: Vec<PathBuf>,
}

/// Memory of the process.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Memory {
    /// Resident set (`VmRSS`).
    pub rss_bytes: Option<u64>,
    /// Peak resident set (`VmHWM`).
    pub peak_rss_bytes: Option<u64>,
    /// The allocator in use.
    pub allocator: &'static str,
}

/// Figures of the tokio runtime.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Runtime {
    /// Worker threads.
    pub workers: usize,
    /// Tasks alive.
    pub alive_tasks: usize,
    /// Tasks waiting in the global queue.
    pub global_queue_depth: usize,
    /// Threads of the whole process (workers, blocking pool, the daemon's own).
    pub threads: Option<usize>,
}

/// What the watchdog has counted since the start.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WatchdogCounts {
    /// Runtime stalls longer than the threshold.
    pub stalls: u64,
    /// The longest stall, in milliseconds.
    pub longest_stall_ms: u64,
    /// Operations reported stuck.
    pub stuck: u64,
    /// Descriptor leaks reported.
    pub fd_leaks: u64,
    /// Reports that could not be written to stderr at once (a full pipe).
    pub dropped_reports: u64,
}

impl State {
    /// The state as the text of a dump, one fact per line.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "=== {} state dump: pid {}, reason {}, at unix {}, up {:.0} s",
            self.daemon, self.pid, self.reason, self.at_unix, self.uptime_secs
        );
        let _ = writeln!(out, "in flight: {}", self.in_flight.len());
        for op in &self.in_flight {
            let _ = writeln!(out, "  {}", describe(op));
        }
        let _ = writeln!(out, "locks: {} held, {} awaited", self.locks.held.len(), self.locks.awaited.len());
        for path in &self.locks.held {
            let _ = writeln!(out, "  held: {}", path.display());
        }
        for path in &self.locks.awaited {
            let _ = writeln!(out, "  awaited: {}", path.display());
        }
        let limit = self.fds.limit.map_or_else(|| "?".to_owned(), |l| l.to_string());
        let kinds: Vec<String> = self.fds.by_kind.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "fds: {} open of {limit} ({})", self.fds.open, kinds.join(", "));
        let _ = writeln!(
            out,
            "memory: rss {}, peak {}, allocator {}",
            mib(self.memory.rss_bytes),
            mib(self.memory.peak_rss_bytes),
            self.memory.allocator
        );
        if let Some(rt) = &self.runtime {
            let threads = rt.threads.map_or_else(|| "?".to_owned(), |t| t.to_string());
            let _ = writeln!(
                out,
                "runtime: {} workers, {} tasks alive, global queue {}, {threads} threads in the process",
                rt.workers, rt.alive_tasks, rt.global_queue_depth
            );
        }
        let w = &self.watchdog;
        let _ = writeln!(
            out,
            "watchdog: {} stalls (longest {} ms), {} stuck operations, {} descriptor leaks, {} reports dropped",
            w.stalls, w.longest_stall_ms, w.stuck, w.fd_leaks, w.dropped_reports
        );
        if !self.metrics.is_empty() {
            let _ = writeln!(out, "metrics:");
            for (name, value) in &self.metrics {
                let _ = writeln!(out, "  {name} {value}");
            }
        }
        let _ = writeln!(out, "=== end of {} state dump", self.daemon);
        out
    }
}

/// One line about an operation: `#17 POST /metrics/{name} a.b.c: 45.2 s old, "waiting for flock" for
/// 45.1 s on /w/a/b/c.wsp, held by pid 1234 (carbon-cache) WRITE`.
pub(crate) fn describe(op: &InFlight) -> String {
    let o = &op.op;
    let detail = if o.detail.is_empty() { String::new() } else { format!(" {}", o.detail) };
    let mut line =
        format!("#{} {}{detail}: {:.1} s old, \"{}\" for {:.1} s", o.id, o.kind, o.age_secs, o.phase, o.phase_secs);
    if let Some(lock) = &o.lock {
        let what = if lock.held { "holding the flock of" } else { "on" };
        let _ = write!(line, ", {what} {}", lock.path.display());
    }
    if !op.lock_holders.is_empty() {
        let holders: Vec<String> = op
            .lock_holders
            .iter()
            .map(|h| format!("pid {} ({}) {}", h.pid, h.command.as_deref().unwrap_or("?"), h.access))
            .collect();
        let _ = write!(line, ", held by {}", holders.join(", "));
    }
    line
}

fn mib(bytes: Option<u64>) -> String {
    bytes.map_or_else(|| "?".to_owned(), |b| format!("{:.1} MiB", b as f64 / 1048576.0))
}
