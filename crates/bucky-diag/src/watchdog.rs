//! The watchdog: an OS thread outside the async runtime that notices, and reports through the
//! [`Reporter`](crate::Reporter) (never through tracing):
//! - a **runtime stall**: the heartbeat task (ticking every 100 ms on the runtime) has not run for longer
//!   than the stall threshold: reported when seen, with what was in flight, and again when it ends, with
//!   its length;
//! - a **stuck operation**: one in the same phase longer than `stuck_after`, reported once per phase, with
//!   the holder of the flock it waits for;
//! - a **descriptor leak**: the open descriptor count rising at every sample over a window, or close to
//!   the limit, reported with what the descriptors are.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::procfs;
use crate::Diagnostics;

/// How often the watchdog looks.
const TICK: Duration = Duration::from_millis(50);
/// How many descriptor samples make a window.
const FD_WINDOW: usize = 6;
/// Smallest rise over a window that counts as a leak (a busy daemon opens and closes a few all the time).
const FD_LEAK_MIN_RISE: usize = 32;

/// Runs the watchdog until the process ends.
pub(crate) fn run(diag: Diagnostics) {
    let mut stall_reported = false;
    let mut stall_started_ms = 0;
    let mut ticks: u64 = 0;
    let fd_every = (diag.config().fd_sample_every.as_millis() / TICK.as_millis()).max(1) as u64;
    let mut fd_samples: Vec<usize> = Vec::new();
    let mut near_limit = false;
    loop {
        std::thread::sleep(TICK);
        ticks += 1;
        let (now_ms, beat) = diag.clock();
        // A runtime that shut down (its heartbeat task dropped) is not stalled: the process is ending.
        let beat_ms = beat.unwrap_or(now_ms);
        let silent = Duration::from_millis(now_ms.saturating_sub(beat_ms));
        if beat.is_none() {
            stall_reported = false;
        } else if silent > diag.config().stall_threshold && !stall_reported {
            stall_reported = true;
            stall_started_ms = beat_ms;
            diag.counts().stalls.fetch_add(1, Ordering::Relaxed);
            diag.metrics().incr("watchdog.stalls");
            let state = diag.state("runtime stall");
            let ops: Vec<String> =
                state.in_flight.iter().map(|op| format!("  {}", crate::dump::describe(op))).collect();
            diag.reporter().write(&format!(
                "bucky watchdog: runtime stall: the async runtime has not run for {} ms (threshold {} ms); {} in flight:\n{}",
                silent.as_millis(),
                diag.config().stall_threshold.as_millis(),
                ops.len(),
                ops.join("\n")
            ));
        } else if stall_reported && silent <= diag.config().stall_threshold {
            stall_reported = false;
            let length = beat_ms.saturating_sub(stall_started_ms);
            diag.counts().longest_stall_ms.fetch_max(length, Ordering::Relaxed);
            diag.reporter()
                .write(&format!("bucky watchdog: runtime stall over: the runtime did not run for {length} ms"));
        }
        if ticks.is_multiple_of(5) {
            report_stuck(&diag);
        }
        if ticks.is_multiple_of(fd_every) {
            watch_fds(&diag, &mut fd_samples, &mut near_limit);
        }
    }
}

fn report_stuck(diag: &Diagnostics) {
    for op in diag.registry().newly_stuck(diag.config().stuck_after) {
        diag.counts().stuck.fetch_add(1, Ordering::Relaxed);
        diag.metrics().incr("watchdog.stuck");
        let op = diag.with_holders(op);
        diag.reporter().write(&format!("bucky watchdog: stuck operation: {}", crate::dump::describe(&op)));
    }
}

fn watch_fds(diag: &Diagnostics, samples: &mut Vec<usize>, near_limit: &mut bool) {
    let Some(open) = procfs::fd_count() else { return };
    samples.push(open);
    if samples.len() > FD_WINDOW {
        samples.remove(0);
    }
    let limit = procfs::fd_limit().unwrap_or(u64::MAX);
    let rising = samples.len() == FD_WINDOW && samples.windows(2).all(|w| w[1] > w[0]);
    let rise = samples.last().copied().unwrap_or(0).saturating_sub(samples.first().copied().unwrap_or(0));
    if rising && rise >= FD_LEAK_MIN_RISE {
        diag.counts().fd_leaks.fetch_add(1, Ordering::Relaxed);
        diag.metrics().incr("watchdog.fd_leaks");
        diag.reporter().write(&format!(
            "bucky watchdog: descriptor leak? open descriptors rose at each of the last {FD_WINDOW} samples, {} -> {open} (limit {limit}); most common: {}",
            samples[0],
            top_targets(5)
        ));
        samples.clear();
    }
    let high = open as u64 * 10 >= limit.saturating_mul(8);
    if high && !*near_limit {
        diag.reporter().write(&format!(
            "bucky watchdog: {open} descriptors open, 80 % of the limit {limit}; most common: {}",
            top_targets(5)
        ));
    }
    *near_limit = high || (*near_limit && open as u64 * 10 >= limit.saturating_mul(7));
}

/// The `n` most common descriptor targets, grouped (sockets and pipes by kind, files by directory).
fn top_targets(n: usize) -> String {
    let mut groups: BTreeMap<String, usize> = BTreeMap::new();
    for target in procfs::fd_targets() {
        let group = match procfs::fd_kind(&target) {
            "file" | "dir" => {
                std::path::Path::new(&target).parent().map_or_else(|| target.clone(), |p| format!("{}/*", p.display()))
            }
            kind => kind.to_owned(),
        };
        *groups.entry(group).or_insert(0) += 1;
    }
    let mut groups: Vec<(String, usize)> = groups.into_iter().collect();
    groups.sort_by_key(|g| std::cmp::Reverse(g.1));
    groups.iter().take(n).map(|(g, c)| format!("{c} {g}")).collect::<Vec<_>>().join(", ")
}
