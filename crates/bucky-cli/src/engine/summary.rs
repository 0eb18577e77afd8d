//! The outcome of a run: counts, the first failures and the full nodes, printed at the end in the
//! command's own words (JSON with `--json`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::job::Operation;
use super::throttle::ThrottleSummary;
use crate::health::Health;
use crate::printer::{human_bytes, Printer};

/// The outcome of a run, printed at the end (JSON with `--json`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// The operation.
    pub operation: Operation,
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
    /// Bytes sent and received over the network for the copies and verifications (by this client: an
    /// offloaded copy's file does not pass through it).
    pub wire_bytes: u64,
    /// Of the jobs moved, those whose copies the destinations made themselves (`--offload`).
    pub offloaded: u64,
    /// Points written into existing destination files by heals.
    pub points_healed: u64,
    /// Source points checked in the destinations.
    pub points_verified: u64,
    /// Of `points_healed`, points whose conflicting value was replaced by the source's (`repair`).
    pub points_replaced: u64,
    /// Replicas that had no copy of the metric and were given one by a replica sync (`rebalance`,
    /// `drain`) or a repair: missing replicas created. A move's own copies are counted in `moved`.
    pub replicas_created: u64,
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
    /// Per destination, the go-carbon throttle (`--go-carbon-throttle`): time paused, polls, rate. Absent
    /// without the throttle.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub throttle: BTreeMap<String, ThrottleSummary>,
    /// Per node that was found unreachable at least once: its flaps and the time it was suppressed (flap
    /// damping). Absent when every node answered throughout.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub flap_damping: BTreeMap<String, FlapSummary>,
    /// Whether the run deletes sources (the messages say "source kept" only then).
    #[serde(skip)]
    pub deletes: bool,
    /// Whether the run was aborted (a second Ctrl-C): the jobs in flight were abandoned, sources kept.
    #[serde(skip)]
    pub aborted: bool,
}

/// What the summary shows of a node that flapped (was found unreachable after it had answered).
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct FlapSummary {
    /// Times it was found unreachable after it had answered (the first failure included).
    pub flaps: u64,
    /// Times it was suppressed.
    pub suppressions: u64,
    /// Seconds it was suppressed (its jobs waited).
    pub suppressed_seconds: f64,
    /// Its penalty at the end.
    pub penalty: f64,
    /// Whether it was suppressed at the end.
    pub suppressed: bool,
    /// Whether it did not answer at the end.
    pub down: bool,
}

/// Per node that flapped, its [`FlapSummary`] from `health`.
pub(super) fn flap_summaries(health: &Health) -> BTreeMap<String, FlapSummary> {
    health
        .report()
        .into_iter()
        .map(|(addr, report)| {
            let d = report.damping;
            let summary = FlapSummary {
                flaps: d.flaps,
                suppressions: d.suppressions,
                suppressed_seconds: (d.suppressed.as_secs_f64() * 10.0).round() / 10.0,
                penalty: d.penalty.round(),
                suppressed: d.is_suppressed,
                down: report.down,
            };
            (addr.to_string(), summary)
        })
        .collect()
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
pub(super) const SUMMARY_FAILURES: usize = 20;

impl Summary {
    /// Adds the counts of `other`, a later run of the same command (`repair` runs one per phase).
    pub fn absorb(&mut self, other: Summary) {
        self.planned += other.planned;
        self.moved += other.moved;
        self.deleted += other.deleted;
        self.replicas_synced += other.replicas_synced;
        self.skipped += other.skipped;
        self.gone += other.gone;
        self.errors += other.errors;
        self.not_started += other.not_started;
        self.bytes += other.bytes;
        self.wire_bytes += other.wire_bytes;
        self.offloaded += other.offloaded;
        self.points_healed += other.points_healed;
        self.points_verified += other.points_verified;
        self.points_replaced += other.points_replaced;
        self.replicas_created += other.replicas_created;
        self.seconds += other.seconds;
        for (node, counts) in other.per_node {
            let mine = self.per_node.entry(node).or_default();
            mine.moved += counts.moved;
            mine.errors += counts.errors;
        }
        let room = SUMMARY_FAILURES.saturating_sub(self.failures.len());
        self.failures.extend(other.failures.into_iter().take(room));
        for (node, jobs) in other.full_nodes {
            *self.full_nodes.entry(node).or_default() += jobs;
        }
        self.aborted |= other.aborted;
        if self.seconds > 0.0 {
            self.metrics_per_second = self.moved as f64 / self.seconds;
            self.bytes_per_second = self.bytes as f64 / self.seconds;
        }
    }

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
        for (node, throttle) in &self.throttle {
            if let Some(problem) = &throttle.problem {
                printer.warn(format!(
                    "go-carbon throttle: {node}: {} of {} polls said nothing usable (last: {problem}); held at the \
                     starting rate then",
                    throttle.failed_polls, throttle.polls
                ));
            }
            printer.info(throttle_line(node, throttle));
        }
        for (node, flaps) in &self.flap_damping {
            printer.info(flap_line(node, flaps));
        }
        printer.info(self.line());
        Ok(())
    }

    /// The summary line, in the command's own words: `copy` copies, `backfill` backfills, only `rebalance`
    /// moves and syncs replicas, and deletions are counted only when the run deletes.
    pub(super) fn line(&self) -> String {
        let mut counts = vec![format!("{} planned", self.planned)];
        match self.operation {
            Operation::Rebalance | Operation::Drain => {
                counts.push(format!("{} moved", self.moved));
                counts.push(format!("{} replica copies synced", self.replicas_synced));
                counts.push(format!("{} missing replicas created", self.replicas_created));
            }
            Operation::Copy => counts.push(format!("{} copied", self.moved)),
            Operation::Backfill | Operation::Backfill2 => counts.push(format!("{} backfilled", self.moved)),
            Operation::Repair { .. } => {
                counts.push(format!("{} repaired", self.moved));
                counts.push(format!("{} missing replicas created", self.replicas_created));
                counts.push(format!("{} conflicting points replaced", self.points_replaced));
            }
        }
        if self.deletes {
            counts.push(format!("{} deleted", self.deleted));
        }
        if self.offloaded > 0 {
            counts.push(format!("{} copied by the destinations (offload)", self.offloaded));
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

/// `go-carbon throttle 10.0.0.3:4242: paused 12.5 s (2 pauses); cache 3% at the end, peak 81%; 40 polls;
/// rate 7 metrics/s`.
fn throttle_line(node: &str, t: &ThrottleSummary) -> String {
    let cache = match (t.cache_percent, t.peak_cache_percent) {
        (Some(last), Some(peak)) => format!("cache {last:.0}% at the end, peak {peak:.0}%"),
        _ => "cache never read".to_owned(),
    };
    format!(
        "go-carbon throttle {node}: paused {:.1} s ({} pause{}); {cache}; {} polls; rate {}",
        t.paused_seconds,
        t.pauses,
        if t.pauses == 1 { "" } else { "s" },
        t.polls,
        crate::printer::human_rate(t.rate, "metrics"),
    )
}

/// `flap damping 10.0.0.3:4242: 5 flaps, suppressed 14.2 s (1 time), penalty 310 at the end`.
fn flap_line(node: &str, f: &FlapSummary) -> String {
    let times = |n: u64| if n == 1 { "1 time".to_owned() } else { format!("{n} times") };
    let state = match (f.suppressed, f.down) {
        (true, _) => "; still suppressed",
        (false, true) => "; down at the end",
        (false, false) => "",
    };
    format!(
        "flap damping {node}: {} flap{}, suppressed {:.1} s ({}), penalty {:.0} at the end{state}",
        f.flaps,
        if f.flaps == 1 { "" } else { "s" },
        f.suppressed_seconds,
        times(f.suppressions),
        f.penalty,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_throttle_line_says_how_long_a_node_was_paused() {
        let t = ThrottleSummary {
            url: "http://10.0.0.3:8080/admin/info".into(),
            paused_seconds: 12.46,
            pauses: 2,
            polls: 40,
            failed_polls: 0,
            rate: 7.0,
            cache_percent: Some(3.2),
            peak_cache_percent: Some(81.0),
            problem: None,
        };
        assert_eq!(
            throttle_line("10.0.0.3:4242", &t),
            "go-carbon throttle 10.0.0.3:4242: paused 12.5 s (2 pauses); cache 3% at the end, peak 81%; 40 polls; \
             rate 7.00 metrics/s"
        );
        let never = ThrottleSummary { pauses: 1, cache_percent: None, peak_cache_percent: None, ..t };
        assert!(throttle_line("n", &never).contains("(1 pause); cache never read;"));
    }

    #[test]
    fn the_flap_line_says_how_often_and_how_long() {
        let f = FlapSummary {
            flaps: 5,
            suppressions: 1,
            suppressed_seconds: 14.24,
            penalty: 310.0,
            suppressed: false,
            down: false,
        };
        assert_eq!(
            flap_line("10.0.0.3:4242", &f),
            "flap damping 10.0.0.3:4242: 5 flaps, suppressed 14.2 s (1 time), penalty 310 at the end"
        );
        let once = FlapSummary { flaps: 1, suppressions: 0, suppressed_seconds: 0.0, down: true, ..f };
        assert_eq!(
            flap_line("n", &once),
            "flap damping n: 1 flap, suppressed 0.0 s (0 times), penalty 310 at the end; down at the end"
        );
    }

    /// The summary says what the command did in its own words; "replica copies synced" and "deleted" only
    /// where the command does such things.
    #[test]
    fn summaries_speak_the_commands_words() {
        let summary = |operation: Operation, deletes: bool| Summary {
            operation,
            planned: 7,
            moved: 5,
            errors: 2,
            deletes,
            metrics_per_second: 4601.5404,
            ..Summary::default()
        };
        let copy = summary(Operation::Copy, false).line();
        assert!(copy.starts_with("copy: 7 planned, 5 copied, 0 skipped, 2 errors;"), "{copy}");
        assert!(!copy.contains("replica") && !copy.contains("deleted"), "{copy}");
        assert!(copy.contains("4,602 metrics/s"), "{copy}");
        let backfill = summary(Operation::Backfill2, false).line();
        assert!(backfill.starts_with("backfill2: 7 planned, 5 backfilled, 0 skipped"), "{backfill}");
        let rebalance = summary(Operation::Rebalance, true).line();
        assert!(
            rebalance.starts_with(
                "rebalance: 7 planned, 5 moved, 0 replica copies synced, 0 missing replicas created, 0 deleted,"
            ),
            "{rebalance}"
        );
        assert!(!summary(Operation::Rebalance, false).line().contains("deleted"));
    }
}
