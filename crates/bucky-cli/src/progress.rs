//! The arithmetic behind the progress bars: rates and ETAs per node and overall, on an explicit clock so it
//! can be tested without waiting.
//!
//! Why not indicatif's own `{per_sec}` and `{eta}`: its estimator smooths over about 15 s and lags behind
//! bursty progress (a batch of 25 metrics done at once every second reads as 11/s after a second), it
//! prints four decimals, and the overall bar's ETA divides the overall remaining work by the overall rate.
//! Source nodes work in parallel, each paced on its own (`--max-rate` is per node): the run ends when the
//! slowest node is done, so a node with 170 metrics left at 1/s is 3 minutes away even when the total moves
//! at 25/s and says 18 s. Here a rate is the progress over the last [`WINDOW`], and the overall ETA is the
//! longest of the nodes' ETAs.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How far back a rate looks.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// Progress of one bar: `(time, position)` samples over the last [`WINDOW`].
#[derive(Debug, Clone)]
struct Track {
    len: u64,
    pos: u64,
    samples: VecDeque<(Duration, u64)>,
}

impl Track {
    fn new(len: u64) -> Track {
        Track { len, pos: 0, samples: VecDeque::from([(Duration::ZERO, 0)]) }
    }

    fn inc(&mut self, now: Duration) {
        self.pos += 1;
        let merge = self.samples.len() > 1;
        match self.samples.back_mut() {
            // Many steps within a few milliseconds: one sample (never the start's).
            Some((t, pos)) if merge && now.saturating_sub(*t) < Duration::from_millis(50) => {
                *t = now;
                *pos = self.pos;
            }
            _ => self.samples.push_back((now, self.pos)),
        }
        // Keep one sample at or before the window's start, so the window is always covered.
        while self.samples.len() > 2 && self.samples[1].0 <= now.saturating_sub(WINDOW) {
            self.samples.pop_front();
        }
    }

    /// The position at time `t`, linear between samples.
    fn pos_at(&self, t: Duration) -> f64 {
        let mut prev = self.samples[0];
        if t <= prev.0 {
            return prev.1 as f64;
        }
        for &(at, pos) in self.samples.iter().skip(1) {
            if t <= at {
                let span = (at - prev.0).as_secs_f64();
                let share = if span > 0.0 { (t - prev.0).as_secs_f64() / span } else { 1.0 };
                return prev.1 as f64 + (pos - prev.1) as f64 * share;
            }
            prev = (at, pos);
        }
        prev.1 as f64
    }

    /// Steps per second over the window up to `now` (a stalled bar's rate falls as time goes by); `None`
    /// until a step was made.
    fn rate(&self, now: Duration) -> Option<f64> {
        let start = now.saturating_sub(WINDOW);
        let seconds = (now - start).as_secs_f64();
        (self.pos > 0 && seconds > 0.0).then(|| (self.pos as f64 - self.pos_at(start)) / seconds)
    }

    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    /// Seconds left at the current rate; `None` when unknown (no progress yet).
    fn eta(&self, now: Duration) -> Option<f64> {
        if self.remaining() == 0 {
            return Some(0.0);
        }
        self.rate(now).filter(|r| *r > 0.0).map(|r| self.remaining() as f64 / r)
    }
}

/// Rates and ETAs of a run's nodes and of the whole run.
#[derive(Debug, Clone)]
pub(crate) struct Meters {
    nodes: BTreeMap<String, Track>,
    total: Track,
}

impl Meters {
    /// Meters for `nodes` (`(label, steps)`).
    pub(crate) fn new(nodes: &[(String, u64)]) -> Meters {
        let total = nodes.iter().map(|(_, n)| n).sum();
        Meters { nodes: nodes.iter().map(|(l, n)| (l.clone(), Track::new(*n))).collect(), total: Track::new(total) }
    }

    /// One step done for `node` at `now` (time since the start).
    pub(crate) fn inc(&mut self, node: &str, now: Duration) {
        if let Some(track) = self.nodes.get_mut(node) {
            track.inc(now);
        }
        self.total.inc(now);
    }

    /// `node`'s rate, steps per second.
    pub(crate) fn node_rate(&self, node: &str, now: Duration) -> Option<f64> {
        self.nodes.get(node)?.rate(now)
    }

    /// `node`'s ETA in seconds: its own remaining steps at its own rate.
    pub(crate) fn node_eta(&self, node: &str, now: Duration) -> Option<f64> {
        self.nodes.get(node)?.eta(now)
    }

    /// The whole run's rate.
    pub(crate) fn total_rate(&self, now: Duration) -> Option<f64> {
        self.total.rate(now)
    }

    /// The whole run's ETA: the slowest node's, since nodes progress in parallel and each at its own pace;
    /// unknown while a node with work left has made no progress.
    pub(crate) fn total_eta(&self, now: Duration) -> Option<f64> {
        if self.nodes.is_empty() {
            return self.total.eta(now);
        }
        self.nodes.values().map(|t| t.eta(now)).try_fold(0.0_f64, |longest, eta| Some(longest.max(eta?)))
    }

    /// `4,602/s ETA 18s` for a node.
    pub(crate) fn node_text(&self, node: &str, now: Duration) -> String {
        rate_eta(self.node_rate(node, now), self.node_eta(node, now))
    }

    /// `25.5/s ETA 3m 10s` for the whole run.
    pub(crate) fn total_text(&self, now: Duration) -> String {
        rate_eta(self.total_rate(now), self.total_eta(now))
    }
}

fn rate_eta(rate: Option<f64>, eta: Option<f64>) -> String {
    let rate = rate.map_or_else(|| "-".to_owned(), round_rate);
    let eta = eta.map_or_else(|| "?".to_owned(), human_seconds);
    format!("{rate}/s ETA {eta}")
}

/// `18s`, `3m 5s`, `2h 10m`.
pub(crate) fn human_seconds(seconds: f64) -> String {
    let s = seconds.ceil().max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, s % 3600 / 60),
    }
}

/// A rate (or any positive quantity) to about three significant digits, whole numbers from 100 up with
/// thousands separators: `4,602`, `25.5`, `3.14`, `0.96`, `0.012`.
pub(crate) fn round_rate(value: f64) -> String {
    if !value.is_finite() || value <= 0.0 {
        return "0".into();
    }
    if value >= 99.95 {
        let whole = value.round() as u64;
        let digits = whole.to_string();
        let mut out = String::with_capacity(digits.len() + digits.len() / 3);
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i).is_multiple_of(3) {
                out.push(',');
            }
            out.push(c);
        }
        return out;
    }
    let decimals = if value >= 9.995 {
        1
    } else if value >= 0.995 {
        2
    } else {
        // At least two digits after the leading zeros: 0.96, 0.012.
        (2.0 - value.log10().floor()).max(2.0) as usize - 1
    };
    format!("{value:.decimals$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// The operator's run: `--max-rate 1` per node, one node with much more to do than the others. The
    /// node's rate is its own (about 1/s), its ETA its own remaining work at that rate, and the run's ETA
    /// is that node's, not the total remaining at the total rate.
    #[test]
    fn the_run_ends_with_its_slowest_node() {
        let mut nodes: Vec<(String, u64)> = (0..25).map(|i| (format!("n{i}"), 20)).collect();
        nodes.push(("slow".into(), 200));
        let mut meters = Meters::new(&nodes);
        // 20 s at 1 metric per second per node.
        for second in 1..=20 {
            for (label, _) in &nodes {
                meters.inc(label, secs(f64::from(second)));
            }
        }
        let now = secs(20.0);
        let slow_rate = meters.node_rate("slow", now).unwrap();
        assert!((slow_rate - 1.0).abs() < 0.01, "{slow_rate}");
        let total_rate = meters.total_rate(now).unwrap();
        assert!((total_rate - 26.0).abs() < 0.1, "{total_rate}");
        // 180 left on the slow node at 1/s: 3 minutes, for the node and for the run.
        assert!((meters.node_eta("slow", now).unwrap() - 180.0).abs() < 2.0);
        assert_eq!(meters.node_eta("n0", now), Some(0.0));
        assert!((meters.total_eta(now).unwrap() - 180.0).abs() < 2.0, "{:?}", meters.total_eta(now));
        assert_eq!(meters.node_text("slow", now), "1.00/s ETA 3m 0s");
        assert_eq!(meters.total_text(now), "26.0/s ETA 3m 0s");
    }

    /// Bursts (a batch of 25 done at once every second) read as 25/s at once, not as a rate climbing for 15 s.
    #[test]
    fn a_bursty_node_reads_its_true_rate() {
        let mut meters = Meters::new(&[("a".into(), 1000), ("b".into(), 1000)]);
        for second in 1..=3 {
            for k in 0..25 {
                meters.inc("a", secs(f64::from(second) + f64::from(k) * 0.001));
            }
        }
        let rate = meters.node_rate("a", secs(3.1)).unwrap();
        assert!((rate - 25.0 * 3.0 / 3.1).abs() < 0.5, "{rate}");
        // "b" has not started: its ETA, and so the run's, is unknown rather than 0.
        assert_eq!(meters.node_rate("b", secs(3.1)), None);
        assert_eq!(meters.total_eta(secs(3.1)), None);
        assert!(meters.total_text(secs(3.1)).ends_with("ETA ?"), "{}", meters.total_text(secs(3.1)));
    }

    /// The rate looks back over the window only: a node that slowed down shows its new rate, and one that
    /// stalled shows a falling one.
    #[test]
    fn the_rate_follows_the_last_window() {
        let mut meters = Meters::new(&[("a".into(), 100_000), ("b".into(), 1)]);
        let mut t = 0.0;
        // 100/s for 30 s, then 5/s for 20 s.
        for _ in 0..3000 {
            t += 0.01;
            meters.inc("a", secs(t));
        }
        for _ in 0..100 {
            t += 0.2;
            meters.inc("a", secs(t));
        }
        let rate = meters.node_rate("a", secs(t)).unwrap();
        assert!((rate - 5.0).abs() < 0.2, "{rate}");
        let later = meters.node_rate("a", secs(t + 5.0)).unwrap();
        assert!(later < rate * 0.7, "{later} after a 5 s stall");
    }

    #[test]
    fn rates_are_rounded_to_three_digits() {
        assert_eq!(round_rate(4601.5404), "4,602");
        assert_eq!(round_rate(25.5404), "25.5");
        assert_eq!(round_rate(0.9571), "0.96");
        assert_eq!(round_rate(3.14659), "3.15");
        assert_eq!(round_rate(0.01234), "0.012");
        assert_eq!(round_rate(1_234_567.8), "1,234,568");
        assert_eq!(round_rate(99.96), "100");
        assert_eq!(round_rate(0.0), "0");
        assert_eq!(human_seconds(17.2), "18s");
        assert_eq!(human_seconds(185.0), "3m 5s");
        assert_eq!(human_seconds(7800.0), "2h 10m");
    }
}
