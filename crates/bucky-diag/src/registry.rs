//! The in-flight registry: every request and background job of a daemon, with when it started, the phase
//! it is in (and since when), and the flock it holds or waits for.
//!
//! It is left on always, so it is cheap: registering, changing phase and finishing each take one
//! uncontended mutex for a few field writes; nothing is allocated on a phase change unless the phase names
//! a path. The watchdog and the state dump read it through [`Registry::snapshot`].

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

/// The registry of one daemon (cheap to clone: one `Arc`).
#[derive(Clone, Debug, Default)]
pub struct Registry {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    next_id: AtomicU64,
    ops: Mutex<BTreeMap<u64, OpState>>,
}

/// What the registry keeps of one operation.
#[derive(Debug, Clone)]
struct OpState {
    kind: String,
    detail: String,
    started: Instant,
    started_at: SystemTime,
    phase: &'static str,
    phase_since: Instant,
    lock: Option<LockState>,
    /// The phase start the watchdog already reported as stuck (so each stuck phase is reported once).
    reported: Option<Instant>,
}

/// A flock an operation holds or waits for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockState {
    /// The locked file.
    pub path: PathBuf,
    /// True once taken; false while waiting for it.
    pub held: bool,
}

/// Phases every daemon uses; free text is allowed too (any `&'static str`).
pub mod phase {
    /// Registered, nothing started yet.
    pub const STARTED: &str = "started";
    /// Waiting for a client that may stay quiet for as long as it likes (never reported stuck).
    pub const IDLE: &str = "idle (waiting for the client)";
    /// Between steps, in async code.
    pub const HANDLING: &str = "handling";
    /// Reading the request body.
    pub const READING_BODY: &str = "reading body";
    /// Waiting for a whisper file's flock.
    pub const WAITING_FOR_FLOCK: &str = "waiting for flock";
    /// Waiting for request memory.
    pub const WAITING_FOR_MEMORY: &str = "waiting for memory";
    /// Waiting for a disk slot (`--io-concurrency`).
    pub const WAITING_FOR_DISK_SLOT: &str = "waiting for a disk slot";
    /// Disk work on the blocking pool.
    pub const DISK: &str = "disk work";
    /// Waiting for the group commit's fsync.
    pub const COMMITTING: &str = "committing (fsync)";
    /// Writing the response.
    pub const WRITING_RESPONSE: &str = "writing response";
}

/// One registered operation; it leaves the registry when dropped.
#[derive(Debug)]
pub struct Op {
    registry: Registry,
    id: u64,
}

/// A point-in-time copy of one operation, for reports and the state dump.
#[derive(Debug, Clone, Serialize)]
pub struct OpSnapshot {
    /// Registry id (increasing).
    pub id: u64,
    /// What it is: a route (`POST /metrics/{name}`), a job (`list scan`), a connection.
    pub kind: String,
    /// Which one: the metric name, the peer address…
    pub detail: String,
    /// Unix seconds when it started.
    pub started_unix: u64,
    /// Seconds since it started.
    pub age_secs: f64,
    /// Its current phase.
    pub phase: &'static str,
    /// Seconds in that phase.
    pub phase_secs: f64,
    /// The flock it holds or waits for.
    pub lock: Option<LockState>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Registry {
        Registry::default()
    }

    fn ops(&self) -> MutexGuard<'_, BTreeMap<u64, OpState>> {
        // A panic while holding this lock cannot leave an entry half-written in a way that matters to a
        // report, so a poisoned lock is used as it is.
        self.inner.ops.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers an operation of `kind` (static or built once: a route pattern, a job name) about `detail`.
    pub fn begin(&self, kind: impl Into<String>, detail: impl Into<String>) -> Op {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let now = Instant::now();
        let state = OpState {
            kind: kind.into(),
            detail: detail.into(),
            started: now,
            started_at: SystemTime::now(),
            phase: phase::STARTED,
            phase_since: now,
            lock: None,
            reported: None,
        };
        self.ops().insert(id, state);
        Op { registry: self.clone(), id }
    }

    /// How many operations are in flight.
    pub fn len(&self) -> usize {
        self.ops().len()
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every operation in flight, oldest first.
    pub fn snapshot(&self) -> Vec<OpSnapshot> {
        let now = Instant::now();
        self.ops().iter().map(|(id, op)| op.snapshot(*id, now)).collect()
    }

    /// The operations in one phase for longer than `after` that were not reported for that phase yet;
    /// they are marked reported.
    pub(crate) fn newly_stuck(&self, after: Duration) -> Vec<OpSnapshot> {
        let now = Instant::now();
        let mut ops = self.ops();
        let mut stuck = Vec::new();
        for (id, op) in ops.iter_mut() {
            if op.phase != phase::IDLE
                && now.duration_since(op.phase_since) >= after
                && op.reported != Some(op.phase_since)
            {
                op.reported = Some(op.phase_since);
                stuck.push(op.snapshot(*id, now));
            }
        }
        stuck
    }
}

impl OpState {
    fn snapshot(&self, id: u64, now: Instant) -> OpSnapshot {
        OpSnapshot {
            id,
            kind: self.kind.clone(),
            detail: self.detail.clone(),
            started_unix: self.started_at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs()),
            age_secs: now.duration_since(self.started).as_secs_f64(),
            phase: self.phase,
            phase_secs: now.duration_since(self.phase_since).as_secs_f64(),
            lock: self.lock.clone(),
        }
    }
}

impl Op {
    fn update(&self, f: impl FnOnce(&mut OpState)) {
        if let Some(op) = self.registry.ops().get_mut(&self.id) {
            f(op);
        }
    }

    /// Enters `phase` (its clock restarts only when the phase changes).
    pub fn phase(&self, phase: &'static str) {
        self.update(|op| {
            if op.phase != phase {
                op.phase = phase;
                op.phase_since = Instant::now();
            }
        });
    }

    /// Waits for the flock of `path` (phase [`phase::WAITING_FOR_FLOCK`]).
    pub fn waiting_for_lock(&self, path: &Path) {
        self.update(|op| {
            if op.phase != phase::WAITING_FOR_FLOCK || op.lock.as_ref().is_none_or(|l| l.path != path) {
                op.phase = phase::WAITING_FOR_FLOCK;
                op.phase_since = Instant::now();
            }
            op.lock = Some(LockState { path: path.to_owned(), held: false });
        });
    }

    /// Holds the flock of `path`, in `phase`.
    pub fn holding_lock(&self, path: &Path, phase: &'static str) {
        self.update(|op| {
            op.lock = Some(LockState { path: path.to_owned(), held: true });
            if op.phase != phase {
                op.phase = phase;
                op.phase_since = Instant::now();
            }
        });
    }

    /// Holds no flock any more.
    pub fn lock_released(&self) {
        self.update(|op| op.lock = None);
    }

    /// Replaces the detail (e.g. once the metric name is known).
    pub fn set_detail(&self, detail: impl Into<String>) {
        let detail = detail.into();
        self.update(|op| op.detail = detail);
    }

    /// The registry id.
    pub fn id(&self) -> u64 {
        self.id
    }
}

impl Drop for Op {
    fn drop(&mut self) {
        self.registry.ops().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_come_and_go_with_their_phases_and_locks() {
        let registry = Registry::new();
        let a = registry.begin("POST /metrics/{name}", "a.b.c");
        let b = registry.begin("list scan", "");
        a.waiting_for_lock(Path::new("/w/a/b/c.wsp"));
        let snap = registry.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].phase, phase::WAITING_FOR_FLOCK);
        assert_eq!(snap[0].lock, Some(LockState { path: "/w/a/b/c.wsp".into(), held: false }));
        a.holding_lock(Path::new("/w/a/b/c.wsp"), phase::DISK);
        assert!(registry.snapshot()[0].lock.as_ref().unwrap().held);
        drop(a);
        assert_eq!(registry.snapshot().iter().map(|o| o.kind.as_str()).collect::<Vec<_>>(), ["list scan"]);
        drop(b);
        assert!(registry.is_empty());
    }

    #[test]
    fn a_stuck_phase_is_reported_once_and_again_after_a_new_phase() {
        let registry = Registry::new();
        let op = registry.begin("GET /metrics/{name}", "x");
        assert!(registry.newly_stuck(Duration::from_millis(20)).is_empty());
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(registry.newly_stuck(Duration::from_millis(20)).len(), 1);
        assert!(registry.newly_stuck(Duration::from_millis(20)).is_empty(), "reported twice");
        op.phase(phase::DISK);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(registry.newly_stuck(Duration::from_millis(20))[0].phase, phase::DISK);
    }

    #[test]
    fn the_same_phase_again_keeps_its_clock() {
        let registry = Registry::new();
        let op = registry.begin("k", "d");
        op.phase(phase::DISK);
        std::thread::sleep(Duration::from_millis(20));
        op.phase(phase::DISK);
        assert!(registry.snapshot()[0].phase_secs >= 0.02);
    }
}
