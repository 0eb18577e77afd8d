//! Waiting without holding an I/O slot.
//!
//! The agent's disk work runs on the blocking pool, at most `--io-concurrency` operations at once. An
//! operation that finds it cannot go on now (the whisper file's flock is held by carbon-cache or another
//! reader, the memory budget is full, the file looks half-written) must not wait *in* its slot: 64 requests
//! waiting for one locked file would stall every other request of the node. So the store never waits:
//! it reports a [`Wait`] (as [`AgentError::Wait`]) before it has changed anything, the operation's slot is
//! given back, and a [`Waiter`] decides, in async code, whether to try again (after a short pause, or once
//! the budget has room) or to give up with the final answer. A waiting request costs a timer, not a
//! thread; when its client goes away the request's future is dropped and the wait ends with it.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::budget::{out_of_memory, Budget};
use crate::error::AgentError;

/// Why an operation could not go on now. Never answered to a client as it is: a [`Waiter`] turns it into a
/// retry or into the final error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// The file's flock is held by someone else.
    Lock {
        /// The file.
        path: PathBuf,
    },
    /// The memory budget has no room for this many bytes (the operation's whole need).
    Memory {
        /// Bytes the operation needs in all.
        bytes: u64,
    },
    /// The file is not a valid whisper file *yet* (carbon-cache without `WHISPER_LOCK_WRITES` may be writing
    /// it): look again shortly, and call it corrupt if it stays so.
    Unsettled {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
}

impl std::fmt::Display for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Wait::Lock { path } => write!(f, "{}: waiting for its flock", path.display()),
            Wait::Memory { bytes } => write!(f, "waiting for {bytes} bytes of request memory"),
            Wait::Unsettled { path, reason } => write!(f, "{}: {reason}", path.display()),
        }
    }
}

/// Longest pause between two tries for a lock (carbon-cache holds it for one write at a time).
const LOCK_PAUSE_MAX: Duration = Duration::from_millis(50);
/// How many times an unsettled file is looked at again before it is called corrupt.
const UNSETTLED_TRIES: u32 = 4;

/// Decides, for one request (or one batch), whether to try again after a [`Wait`], and waits meanwhile.
/// Lock waits share one deadline (`--lock-timeout`) from the first one, so a batch of many entries on a
/// locked file waits `--lock-timeout` in all, not once per entry.
#[derive(Debug)]
pub(crate) struct Waiter {
    lock_timeout: Duration,
    memory_wait: Duration,
    budget: Budget,
    lock_since: Option<Instant>,
    lock_pause: Duration,
    memory_since: Option<Instant>,
    unsettled_tries: u32,
    /// Where lock waits are counted (`lock_waits`, `lock_wait_ms`).
    metrics: Option<bucky_diag::Metrics>,
}

impl Waiter {
    pub(crate) fn new(lock_timeout: Duration, memory_wait: Duration, budget: Budget) -> Waiter {
        Waiter {
            lock_timeout,
            memory_wait,
            budget,
            lock_since: None,
            lock_pause: Duration::from_millis(1),
            memory_since: None,
            unsettled_tries: 0,
            metrics: None,
        }
    }

    /// Counts lock waits in `metrics`.
    pub(crate) fn counting_in(mut self, metrics: bucky_diag::Metrics) -> Waiter {
        self.metrics = Some(metrics);
        self
    }

    /// The final answer of an operation still waiting for `wait` once this waiter has given up.
    pub(crate) fn give_up(&self, wait: &Wait) -> AgentError {
        match wait {
            Wait::Lock { path } => lock_timeout(path, self.lock_since.map_or(Duration::ZERO, |s| s.elapsed())),
            Wait::Memory { bytes } => out_of_memory(*bytes, self.memory_wait),
            Wait::Unsettled { path, reason } => corrupt(path, reason),
        }
    }

    /// Waits before the next try after `wait`, or gives up with the error that answers the request.
    pub(crate) async fn wait(&mut self, wait: &Wait) -> Result<(), AgentError> {
        match wait {
            Wait::Lock { path } => {
                if self.lock_since.is_none() {
                    if let Some(metrics) = &self.metrics {
                        metrics.incr("lock_waits");
                    }
                }
                let since = *self.lock_since.get_or_insert_with(Instant::now);
                let waited = since.elapsed();
                if waited >= self.lock_timeout {
                    return Err(lock_timeout(path, waited));
                }
                if let Some(op) = bucky_diag::current() {
                    op.waiting_for_lock(path);
                }
                let pause = self.lock_pause.min(self.lock_timeout - waited);
                tokio::time::sleep(pause).await;
                if let Some(metrics) = &self.metrics {
                    metrics.add("lock_wait_ms", pause.as_secs_f64() * 1e3);
                }
                self.lock_pause = (self.lock_pause * 2).min(LOCK_PAUSE_MAX);
                Ok(())
            }
            Wait::Memory { bytes } => {
                if let Some(op) = bucky_diag::current() {
                    op.phase(bucky_diag::phase::WAITING_FOR_MEMORY);
                }
                let since = *self.memory_since.get_or_insert_with(Instant::now);
                let left = self.memory_wait.saturating_sub(since.elapsed());
                if left.is_zero() || !self.budget.room_for(*bytes, left).await {
                    return Err(out_of_memory(*bytes, self.memory_wait));
                }
                Ok(())
            }
            Wait::Unsettled { path, reason } => {
                self.unsettled_tries += 1;
                if self.unsettled_tries > UNSETTLED_TRIES {
                    return Err(corrupt(path, reason));
                }
                tokio::time::sleep(Duration::from_millis(50 * u64::from(self.unsettled_tries))).await;
                Ok(())
            }
        }
    }
}

/// The 503 of a lock wait that ran out of time.
fn lock_timeout(path: &std::path::Path, waited: Duration) -> AgentError {
    AgentError::Unavailable(whisper::Error::LockTimeout { path: path.to_owned(), waited }.to_string())
}

/// The 409 of a file that stayed invalid.
fn corrupt(path: &std::path::Path, reason: &str) -> AgentError {
    AgentError::corrupt_file(whisper::Error::Corrupt { path: path.to_owned(), reason: reason.to_owned() })
}
