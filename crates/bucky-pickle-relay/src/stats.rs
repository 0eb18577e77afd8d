//! Counters, and the self-metrics written into the stream every `--interval` seconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{SystemTime, UNIX_EPOCH};

/// Live counters, shared by every task (all cumulative since start, except the gauges).
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) pickles: AtomicU64,
    pub(crate) metrics_seen: AtomicU64,
    pub(crate) metrics_sent: AtomicU64,
    pub(crate) metrics_dropped: AtomicU64,
    pub(crate) metrics_skipped: AtomicU64,
    pub(crate) metrics_replayed: AtomicU64,
    pub(crate) decode_errors: AtomicU64,
    pub(crate) connections_refused: AtomicU64,
    pub(crate) connections: AtomicU64,
    pub(crate) queued: AtomicU64,
    pub(crate) relay_reconnects: AtomicU64,
}

/// A snapshot of the counters; also what [`crate::run`] returns when it stops.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Pickles received (framed messages read in full), good or bad: `seenPickles`.
    pub pickles: u64,
    /// Metrics decoded into lines: `seenMetrics`.
    pub metrics_seen: u64,
    /// Metrics written to the relay (first time; replays are not counted again): `sentMetrics`.
    pub metrics_sent: u64,
    /// Metrics dropped: queue full under `--drop-when-full`, or relay unreachable at shutdown: `droppedMetrics`.
    pub metrics_dropped: u64,
    /// Items of good pickles that were not metrics (bad shape, path, timestamp or value, NaN): `skippedMetrics`.
    pub metrics_skipped: u64,
    /// Lines written again after a reconnect, because the old connection may have lost them: `replayedMetrics`.
    pub metrics_replayed: u64,
    /// Pickles refused as a whole (bad opcode, truncated, oversized, …); each closes its connection: `decodeErrors`.
    pub decode_errors: u64,
    /// Connections closed at once because `--max-connections` were open: `refusedConnections`.
    pub connections_refused: u64,
    /// Open sender connections now: `connections`.
    pub connections: u64,
    /// Metrics queued for the relay now: `queueLength`.
    pub queued: u64,
    /// Connections to the relay made after the first: `relayReconnects`.
    pub relay_reconnects: u64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: impl Into<u64>) {
        counter.fetch_add(n.into(), Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64, n: impl Into<u64>) {
        counter.fetch_sub(n.into(), Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Summary {
        Summary {
            pickles: self.pickles.load(Relaxed),
            metrics_seen: self.metrics_seen.load(Relaxed),
            metrics_sent: self.metrics_sent.load(Relaxed),
            metrics_dropped: self.metrics_dropped.load(Relaxed),
            metrics_skipped: self.metrics_skipped.load(Relaxed),
            metrics_replayed: self.metrics_replayed.load(Relaxed),
            decode_errors: self.decode_errors.load(Relaxed),
            connections_refused: self.connections_refused.load(Relaxed),
            connections: self.connections.load(Relaxed),
            queued: self.queued.load(Relaxed),
            relay_reconnects: self.relay_reconnects.load(Relaxed),
        }
    }
}

impl Summary {
    /// The self-metrics as plaintext lines under `prefix`, stamped `now` (unix seconds). Names follow the
    /// original bucky-pickle-relay (`seenPickles`, `seenMetrics`, `sentMetrics`, `queueLength`,
    /// `systemMemory`) plus ours; `rss` and `systemMemory` are both the resident set size in bytes.
    pub fn lines(&self, prefix: &str, rss: Option<u64>, now: i64) -> Vec<u8> {
        let metrics = bucky_diag::Metrics::new();
        self.record(&metrics, rss);
        metrics.lines(prefix, u64::try_from(now).unwrap_or(0)).into_bytes()
    }

    /// Sets these counters (and `rss`) in `metrics`, the self-metrics mechanism every bucky daemon shares.
    pub fn record(&self, metrics: &bucky_diag::Metrics, rss: Option<u64>) {
        let put = |name: &str, v: u64| metrics.set(name, v as f64);
        put("seenPickles", self.pickles);
        put("seenMetrics", self.metrics_seen);
        put("sentMetrics", self.metrics_sent);
        put("droppedMetrics", self.metrics_dropped);
        put("skippedMetrics", self.metrics_skipped);
        put("replayedMetrics", self.metrics_replayed);
        put("decodeErrors", self.decode_errors);
        put("refusedConnections", self.connections_refused);
        put("connections", self.connections);
        put("queueLength", self.queued);
        put("relayReconnects", self.relay_reconnects);
        if let Some(rss) = rss {
            put("rss", rss);
            put("systemMemory", rss);
        }
    }
}

/// Resident set size of this process in bytes (Linux `/proc/self/status`), if known.
pub fn rss_bytes() -> Option<u64> {
    rss_of("self")
}

/// Resident set size of process `pid` (`"self"` for this one) in bytes, if known.
pub fn rss_of(pid: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Seconds since the epoch.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// This host's name with dots replaced by underscores, as carbon names its own `carbon.agents.<host>`.
pub fn hostname() -> String {
    bucky_runtime::hostname().map_or_else(|| "unknown".to_owned(), |name| name.replace('.', "_"))
}
