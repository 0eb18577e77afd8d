//! What a run is given: the validated [`Options`] (built from the engine flags by `crate::engine_settings`),
//! the clock it verifies against, and where its interrupts come from.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::sync::watch;

use super::job::Operation;

/// `--batch-mib`'s default: 64 MiB of files per batch read.
pub const DEFAULT_BATCH_MIB: u64 = 64;

/// `--inflight-mib`'s default: MiB of source files held at once by a whole run. scripts/bench-cluster.sh
/// (3 source nodes, 5 workers each, 1gbit links, ext4 or tmpfs stores) moves as fast with 1, 2 or 4 as with
/// 8, 32 or without a budget; with 4 the client peaks at 42 MB rather than 55 (8), 123 (32) or 700 (none),
/// and the new node's agent, which receives the heals, at 27 MB rather than 39 (8). Below 4 both gain
/// little (the client 36 MB, the agent 23–27 MB at 1 or 2).
pub const DEFAULT_INFLIGHT_MIB: u64 = 4;

/// What to do with the jobs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The command: names the state file's entries and the summary, and tells what the jobs are.
    pub op: Operation,
    /// Delete each source after its destinations verified.
    pub delete: bool,
    /// Requests in flight per source node (each moves one batch), and per destination node.
    pub workers: usize,
    /// Metrics moved per request to agents that take batches (bucky-agent); 1 = one request per metric.
    pub batch: usize,
    /// Most bytes of files read per batch request.
    pub batch_bytes: u64,
    /// The destinations copy the sources from the source agents themselves (bucky-agents; the others'
    /// copies go through the client).
    pub offload: bool,
    /// Most bytes of source files held at once by all the batch reads of the run (see `crate::inflight`).
    pub inflight_bytes: u64,
    /// Attempts per job (at least one is made).
    pub attempts: u32,
    /// Jobs started per second per source node.
    pub max_rate: Option<f64>,
    /// Finished jobs are recorded here and skipped on a rerun.
    pub state_file: Option<PathBuf>,
    /// Failed jobs are listed here.
    pub error_file: Option<PathBuf>,
    /// Failed jobs tolerated before the exit status becomes 1.
    pub error_tolerance: u64,
    /// The clock, in seconds since the epoch: which points are about to expire is judged against it when
    /// a copy is verified. Injected so that tests can hold it still across a minute boundary.
    pub now: fn() -> i64,
    /// What interrupts the run.
    pub interrupts: Interrupts,
    /// The go-carbon cache-pressure throttle of the destinations, when on.
    pub throttle: Option<super::ThrottleOptions>,
    /// Flap damping of the nodes' health (`--flap-*`).
    pub damping: crate::damping::DampingConfig,
    /// Where the run's progress goes over Graphite's line protocol (`--graphite`), if anywhere.
    pub graphite: Option<bucky_diag::GraphiteTarget>,
}

/// Seconds since the epoch.
pub fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64)
}

/// How far a run has been asked to stop; each level includes the ones before it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum Interrupt {
    /// Not asked.
    #[default]
    None,
    /// Start no new jobs; the ones in flight finish.
    Stop,
    /// Abandon the jobs in flight too (their sources are kept: a source is deleted only as a job's last
    /// step), record what finished, and return at once.
    Abort,
}

/// Where a run's interrupts come from.
#[derive(Debug, Clone)]
pub enum Interrupts {
    /// Ctrl-C while the run lasts: the first stops it, a second aborts it.
    CtrlC,
    /// The caller's channel (tests; a caller with signals of its own). A dropped sender interrupts nothing.
    Channel(watch::Receiver<Interrupt>),
}

impl Interrupts {
    /// Interrupts that never come.
    pub fn never() -> Interrupts {
        Interrupts::Channel(watch::channel(Interrupt::None).1)
    }

    /// The receiver the run watches, and the Ctrl-C listener feeding it (stopped when the guard drops).
    pub(super) fn listen(self) -> (watch::Receiver<Interrupt>, Option<AbortOnDrop>) {
        match self {
            Interrupts::Channel(receiver) => (receiver, None),
            Interrupts::CtrlC => {
                let (sender, receiver) = watch::channel(Interrupt::None);
                let listener = tokio::spawn(async move {
                    for level in [Interrupt::Stop, Interrupt::Abort] {
                        if tokio::signal::ctrl_c().await.is_err() || sender.send(level).is_err() {
                            return;
                        }
                    }
                });
                (receiver, Some(AbortOnDrop(listener)))
            }
        }
    }
}

/// A task aborted when this is dropped: the Ctrl-C listener and the throttle's pollers live as long as the
/// run.
pub(super) struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl AbortOnDrop {
    pub(super) fn new(task: tokio::task::JoinHandle<()>) -> AbortOnDrop {
        AbortOnDrop(task)
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
