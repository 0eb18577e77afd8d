//! The run's progress to Graphite (`--graphite HOST:PORT`): bucky-diag's [`Metrics`] sent over the
//! plaintext line protocol by its sender thread every `--graphite-interval`, and once more at the end with
//! the summary's own figures (so the last sample and the printed summary agree).
//!
//! Every name is below the prefix (default `bucky.cli.<hostname>.<command>`); node names are their
//! `HOST:PORT` with dots and the colon as underscores (`10_0_0_3_4242`):
//!
//! - `jobs.planned`, `jobs.skipped` (state file), `jobs.moved` (copied, backfilled), `jobs.replicas_synced`,
//!   `jobs.gone`, `jobs.done` (the three before, summed), `jobs.failed`, `jobs.deleted`, `jobs.remaining`;
//! - `bytes.read`, `bytes.wire`, `points.healed`, `points.verified`;
//! - `rate.metrics_per_second`, `rate.bytes_per_second` (since the start), `seconds`;
//! - per source node `nodes.N.done`, `nodes.N.failed`;
//! - with the go-carbon throttle, per destination `nodes.N.paused` (1 or 0), and `paused_nodes`;
//! - per node that flapped, `nodes.N.flaps`, `nodes.N.suppressed` (1 or 0), `nodes.N.suppressed_seconds`,
//!   `nodes.N.penalty`; and `suppressed_nodes`; `full_nodes`.
//!
//! Values are totals of the run so far (gauges), as go-graphite's `*.last` values are: a lost sample loses
//! nothing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bucky_diag::metrics::{spawn_sender, SenderHandle};
use bucky_diag::{GraphiteTarget, Metrics};

use super::run::Run;
use super::summary::{flap_summaries, Summary};
use super::throttle::Throttles;
use crate::printer::Printer;

/// The sender of a run's progress; the last sample goes when [`Reporter::finish`] is called.
pub(super) struct Reporter {
    metrics: Metrics,
    finished: Arc<AtomicBool>,
    sender: SenderHandle,
    throttles: Option<Arc<Throttles>>,
}

impl Reporter {
    /// Starts sending `run`'s progress to `target`; `None` (with a warning) if the sender cannot start.
    pub(super) fn start(
        target: &GraphiteTarget,
        run: &Arc<Run>,
        throttles: Option<Arc<Throttles>>,
        printer: &Printer,
    ) -> Option<Reporter> {
        let metrics = Metrics::new();
        let finished = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let refresh = {
            let (run, throttles, finished) = (Arc::clone(run), throttles.clone(), Arc::clone(&finished));
            move |metrics: &Metrics| {
                // Once finished, the values are the summary's: not overwritten by a live reading.
                if finished.load(Ordering::Acquire) {
                    return;
                }
                let mut summary = run.summary.lock().unwrap_or_else(|e| e.into_inner()).clone();
                summary.flap_damping = flap_summaries(run.client.health());
                summary.seconds = started.elapsed().as_secs_f64();
                if summary.seconds > 0.0 {
                    summary.metrics_per_second = summary.moved as f64 / summary.seconds;
                    summary.bytes_per_second = summary.bytes as f64 / summary.seconds;
                }
                fill(metrics, &summary, throttles.as_deref());
            }
        };
        match spawn_sender(target.clone(), metrics.clone(), refresh) {
            Ok(sender) => Some(Reporter { metrics, finished, sender, throttles }),
            Err(e) => {
                printer.warn(format!("cannot start sending progress to Graphite: {e}"));
                None
            }
        }
    }

    /// Sends the last sample, made of `summary`, and stops.
    pub(super) fn finish(self, summary: &Summary) {
        fill(&self.metrics, summary, self.throttles.as_deref());
        self.finished.store(true, Ordering::Release);
        drop(self.sender);
    }
}

/// A node's name as one path component: `10.0.0.3:4242` → `10_0_0_3_4242`, `[::1]:4242` → `__1_4242`.
pub(super) fn node_component(node: &str) -> String {
    bucky_diag::metrics::path_component(&node.replace(['[', ']'], "")).replace(':', "_")
}

/// Sets every value of `summary` (and the throttle's paused nodes) in `metrics`.
fn fill(metrics: &Metrics, summary: &Summary, throttles: Option<&Throttles>) {
    let count = |name: &str, value: u64| metrics.set(name, value as f64);
    let done = summary.moved + summary.replicas_synced + summary.gone;
    count("jobs.planned", summary.planned);
    count("jobs.skipped", summary.skipped);
    count("jobs.moved", summary.moved);
    count("jobs.replicas_synced", summary.replicas_synced);
    count("jobs.gone", summary.gone);
    count("jobs.done", done);
    count("jobs.failed", summary.errors);
    count("jobs.deleted", summary.deleted);
    count("jobs.remaining", summary.planned.saturating_sub(summary.skipped + done + summary.errors));
    count("bytes.read", summary.bytes);
    count("bytes.wire", summary.wire_bytes);
    count("points.healed", summary.points_healed);
    count("points.verified", summary.points_verified);
    metrics.set("rate.metrics_per_second", summary.metrics_per_second);
    metrics.set("rate.bytes_per_second", summary.bytes_per_second);
    metrics.set("seconds", summary.seconds);
    count("full_nodes", summary.full_nodes.len() as u64);
    for (node, counts) in &summary.per_node {
        let node = node_component(node);
        count(&format!("nodes.{node}.done"), counts.moved);
        count(&format!("nodes.{node}.failed"), counts.errors);
    }
    if let Some(throttles) = throttles {
        let nodes = throttles.paused();
        count("paused_nodes", nodes.iter().filter(|(_, paused)| *paused).count() as u64);
        for (node, paused) in nodes {
            count(&format!("nodes.{}.paused", node_component(&node.to_string())), u64::from(paused));
        }
    }
    count("suppressed_nodes", summary.flap_damping.values().filter(|f| f.suppressed).count() as u64);
    for (node, flaps) in &summary.flap_damping {
        let node = node_component(node);
        count(&format!("nodes.{node}.flaps"), flaps.flaps);
        count(&format!("nodes.{node}.suppressed"), u64::from(flaps.suppressed));
        metrics.set(&format!("nodes.{node}.suppressed_seconds"), flaps.suppressed_seconds);
        metrics.set(&format!("nodes.{node}.penalty"), flaps.penalty);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{FlapSummary, NodeSummary, Operation};

    #[test]
    fn node_names_are_one_path_component() {
        assert_eq!(node_component("10.0.0.3:4242"), "10_0_0_3_4242");
        assert_eq!(node_component("[::1]:4242"), "__1_4242");
        assert_eq!(node_component("graphite-1.dc2:4242"), "graphite-1_dc2_4242");
    }

    #[test]
    fn a_summary_becomes_its_metrics() {
        let summary = Summary {
            operation: Operation::Rebalance,
            planned: 10,
            skipped: 1,
            moved: 5,
            replicas_synced: 1,
            gone: 1,
            errors: 1,
            deleted: 5,
            bytes: 2048,
            seconds: 2.0,
            metrics_per_second: 2.5,
            per_node: [("10.0.0.1:4242".to_owned(), NodeSummary { moved: 7, errors: 1 })].into(),
            flap_damping: [(
                "10.0.0.2:4242".to_owned(),
                FlapSummary {
                    flaps: 3,
                    suppressions: 1,
                    suppressed_seconds: 4.5,
                    penalty: 310.0,
                    ..Default::default()
                },
            )]
            .into(),
            ..Summary::default()
        };
        let metrics = Metrics::new();
        fill(&metrics, &summary, None);
        let all = metrics.all();
        let get = |name: &str| all.get(name).copied().unwrap_or_else(|| panic!("{name} missing: {all:?}"));
        assert_eq!((get("jobs.done"), get("jobs.failed"), get("jobs.remaining")), (7.0, 1.0, 1.0));
        assert_eq!((get("jobs.deleted"), get("bytes.read"), get("rate.metrics_per_second")), (5.0, 2048.0, 2.5));
        assert_eq!((get("nodes.10_0_0_1_4242.done"), get("nodes.10_0_0_1_4242.failed")), (7.0, 1.0));
        assert_eq!((get("nodes.10_0_0_2_4242.flaps"), get("nodes.10_0_0_2_4242.suppressed")), (3.0, 0.0));
        assert_eq!((get("nodes.10_0_0_2_4242.suppressed_seconds"), get("suppressed_nodes")), (4.5, 0.0));
        assert!(!all.contains_key("paused_nodes"), "no throttle, no paused nodes");
    }
}
