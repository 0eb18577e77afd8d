//! One destination node's throttle, without I/O: what each `/admin/info` reading does to the node's
//! transfers, on a clock passed in (time since the run started), so that it is tested without waiting.
//!
//! - **Pause with hysteresis**: a reading at or above `pause_at` (the cache's fill, `size / limit`) pauses
//!   the node; it stays paused until a reading below `resume_below` (a lower mark), so that a cache hovering
//!   around the threshold does not flap.
//! - **Rate**: while not paused, the node takes at most `rate` new metrics per second (a token bucket
//!   holding one second's worth, which starts with one token and gathers none while paused). The rate
//!   starts at `base_rate`; each `speed_up` interval in which every reading found the cache below the lower
//!   mark adds `base_rate` to it; a reading between the marks higher than the one before (the cache
//!   climbing) halves it (never below `base_rate`); a pause resets it to `base_rate`.
//! - **No reading** (no answer, an error status, not go-carbon's JSON, or a cache without a limit): nothing
//!   to judge the pressure by, so the node is held at `base_rate` and does not speed up; it is reported
//!   once ([`Change::Unjudged`]) and in the summary. A paused node stays paused through such readings for
//!   `hold_pause` after its last good one, then goes on at `base_rate`: a go-carbon too busy to answer
//!   should not be fed at once, and one that is gone must not stall the run forever.

use std::time::Duration;

use super::info::CacheInfo;

/// How a node is throttled (the validated flags).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct GateConfig {
    /// Pause at this fill (`--go-carbon-cache-threshold`).
    pub(crate) pause_at: f64,
    /// Resume below this fill.
    pub(crate) resume_below: f64,
    /// Metrics per second at the start, after a pause, and while there is no reading.
    pub(crate) base_rate: f64,
    /// How long the cache must stay low before the rate grows by `base_rate`; `None`: it never grows.
    pub(crate) speed_up: Option<Duration>,
    /// How long a paused node with no reading stays paused.
    pub(crate) hold_pause: Duration,
}

/// One poll of `/admin/info`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reading {
    /// It answered.
    Cache(CacheInfo),
    /// It did not answer usably: why.
    Failed(String),
}

/// What a reading changed, for the log and the progress line.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Change {
    /// The node's transfers are paused: its cache is at `fill`.
    Paused { fill: f64 },
    /// They go on again, after `after` paused; `fill` is `None` when the pause ended for lack of readings.
    Resumed { fill: Option<f64>, after: Duration },
    /// The rate grew to this.
    Faster { rate: f64 },
    /// The cache is climbing: the rate dropped to this.
    Slower { rate: f64 },
    /// The first reading that says nothing usable (reported once per node): why.
    Unjudged { why: String },
    /// A usable reading again after unusable ones.
    Judged { fill: f64 },
}

/// A node's throttle.
#[derive(Debug, Clone)]
pub(crate) struct Gate {
    config: GateConfig,
    paused_since: Option<Duration>,
    paused_total: Duration,
    pauses: u64,
    rate: f64,
    /// When the rate last changed or was held (growth waits `speed_up` after it).
    steady_since: Duration,
    tokens: f64,
    refilled_at: Duration,
    last_fill: Option<f64>,
    peak_fill: Option<f64>,
    /// When the last usable reading came.
    judged_at: Option<Duration>,
    /// Whether the last reading was usable.
    judged: bool,
    polls: u64,
    failed_polls: u64,
    /// Why the last unusable reading was (kept for the summary).
    problem: Option<String>,
    reported: bool,
}

/// What the summary shows of a node's throttle.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct GateReport {
    pub(crate) paused: Duration,
    pub(crate) pauses: u64,
    pub(crate) polls: u64,
    pub(crate) failed_polls: u64,
    pub(crate) rate: f64,
    pub(crate) paused_now: bool,
    pub(crate) last_fill: Option<f64>,
    pub(crate) peak_fill: Option<f64>,
    pub(crate) problem: Option<String>,
}

impl Gate {
    /// A node not yet polled: open, at the base rate, one token in hand.
    pub(crate) fn new(config: GateConfig) -> Gate {
        Gate {
            config,
            paused_since: None,
            paused_total: Duration::ZERO,
            pauses: 0,
            rate: config.base_rate,
            steady_since: Duration::ZERO,
            tokens: 1.0,
            refilled_at: Duration::ZERO,
            last_fill: None,
            peak_fill: None,
            judged_at: None,
            judged: false,
            polls: 0,
            failed_polls: 0,
            problem: None,
            reported: false,
        }
    }

    /// Takes in a reading made at `now`; what it changed, in order.
    pub(crate) fn observe(&mut self, now: Duration, reading: Reading) -> Vec<Change> {
        self.polls += 1;
        // Tokens gathered so far were earned at the old rate.
        self.refill(now);
        let fill = match reading {
            Reading::Failed(why) => {
                self.failed_polls += 1;
                return self.unjudged(now, why);
            }
            Reading::Cache(info) => match info.fill() {
                Some(fill) => fill,
                None => return self.unjudged(now, "its cache has no limit ([cache] max-size = 0)".to_owned()),
            },
        };
        let mut changes = Vec::new();
        if !self.judged && self.reported {
            changes.push(Change::Judged { fill });
        }
        self.judged = true;
        self.judged_at = Some(now);
        self.peak_fill = Some(self.peak_fill.map_or(fill, |peak| peak.max(fill)));
        let previous = self.last_fill.replace(fill);
        let base = self.config.base_rate;
        if fill >= self.config.pause_at {
            self.hold(now);
            if self.paused_since.is_none() {
                self.paused_since = Some(now);
                self.pauses += 1;
                changes.push(Change::Paused { fill });
            }
        } else if let Some(since) = self.paused_since {
            if fill < self.config.resume_below {
                changes.push(self.resume(now, since, Some(fill)));
            }
        } else if fill >= self.config.resume_below {
            // Between the marks: a rising cache slows the node down; a steady or falling one holds it.
            if previous.is_some_and(|p| fill > p) {
                let rate = (self.rate / 2.0).max(base);
                if rate < self.rate {
                    changes.push(Change::Slower { rate });
                }
                self.rate = rate;
            }
            self.steady_since = now;
        } else if let Some(every) = self.config.speed_up {
            if now.saturating_sub(self.steady_since) >= every {
                self.rate += base;
                self.steady_since = now;
                changes.push(Change::Faster { rate: self.rate });
            }
        }
        changes
    }

    /// A reading with nothing to judge by: the base rate, no growth; a pause ends after `hold_pause`.
    fn unjudged(&mut self, now: Duration, why: String) -> Vec<Change> {
        let mut changes = Vec::new();
        if !self.reported {
            self.reported = true;
            changes.push(Change::Unjudged { why: why.clone() });
        }
        self.problem = Some(why);
        self.judged = false;
        self.hold(now);
        if let Some(since) = self.paused_since {
            let last_good = self.judged_at.unwrap_or(since);
            if now.saturating_sub(last_good) >= self.config.hold_pause {
                changes.push(self.resume(now, since, None));
            }
        }
        changes
    }

    /// Back to the base rate, growth restarting from `now`.
    fn hold(&mut self, now: Duration) {
        self.rate = self.config.base_rate;
        self.steady_since = now;
        self.tokens = self.tokens.min(self.capacity());
    }

    fn resume(&mut self, now: Duration, since: Duration, fill: Option<f64>) -> Change {
        self.paused_since = None;
        let after = now.saturating_sub(since);
        self.paused_total += after;
        self.steady_since = now;
        self.refilled_at = now;
        Change::Resumed { fill, after }
    }

    /// Tokens held at most: one second's worth, and at least one.
    fn capacity(&self) -> f64 {
        self.rate.max(1.0)
    }

    fn refill(&mut self, now: Duration) {
        let elapsed = now.saturating_sub(self.refilled_at).as_secs_f64();
        self.refilled_at = self.refilled_at.max(now);
        if self.paused_since.is_none() {
            self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity());
        }
    }

    /// Whether one more metric may go to this node at `now` (not paused, a token in hand). Takes nothing:
    /// see [`Gate::take`].
    pub(crate) fn ready(&mut self, now: Duration) -> bool {
        self.refill(now);
        self.paused_since.is_none() && self.tokens >= 1.0
    }

    /// Takes the token [`Gate::ready`] found.
    pub(crate) fn take(&mut self) {
        self.tokens -= 1.0;
    }

    /// How long until [`Gate::ready`] may say yes; `None` while paused (only a reading ends that).
    pub(crate) fn wait(&self) -> Option<Duration> {
        if self.paused_since.is_some() {
            return None;
        }
        let missing = (1.0 - self.tokens).max(0.0);
        Some(Duration::from_secs_f64(missing / self.rate))
    }

    /// Whether the node is paused.
    pub(crate) fn paused(&self) -> bool {
        self.paused_since.is_some()
    }

    /// The cache's fill at the last usable reading.
    pub(crate) fn last_fill(&self) -> Option<f64> {
        self.last_fill
    }

    /// What the summary shows, as of `now`.
    pub(crate) fn report(&self, now: Duration) -> GateReport {
        let current = self.paused_since.map_or(Duration::ZERO, |since| now.saturating_sub(since));
        GateReport {
            paused: self.paused_total + current,
            pauses: self.pauses,
            polls: self.polls,
            failed_polls: self.failed_polls,
            rate: self.rate,
            paused_now: self.paused_since.is_some(),
            last_fill: self.last_fill,
            peak_fill: self.peak_fill,
            problem: self.problem.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(seconds: f64) -> Duration {
        Duration::from_secs_f64(seconds)
    }

    fn config() -> GateConfig {
        GateConfig { pause_at: 0.75, resume_below: 0.6, base_rate: 2.0, speed_up: Some(s(60.0)), hold_pause: s(30.0) }
    }

    fn cache(size: u64) -> Reading {
        Reading::Cache(CacheInfo { size, limit: 100 })
    }

    /// Metrics admitted between `from` and `to`, asking every 10 ms.
    fn admitted(gate: &mut Gate, from: f64, to: f64) -> u32 {
        let mut n = 0;
        let mut t = from;
        while t < to {
            if gate.ready(s(t)) {
                gate.take();
                n += 1;
            }
            t += 0.01;
        }
        n
    }

    #[test]
    fn pauses_at_the_threshold_and_resumes_below_the_lower_mark() {
        let mut gate = Gate::new(config());
        assert_eq!(gate.observe(s(0.0), cache(74)), vec![]);
        assert!(!gate.paused());
        assert_eq!(gate.observe(s(10.0), cache(75)), vec![Change::Paused { fill: 0.75 }]);
        assert!(gate.paused() && !gate.ready(s(10.5)) && gate.wait().is_none());
        // Between the marks: still paused (no flapping around the threshold).
        assert_eq!(gate.observe(s(20.0), cache(70)), vec![]);
        assert_eq!(gate.observe(s(30.0), cache(60)), vec![]);
        assert!(gate.paused());
        assert_eq!(gate.report(s(35.0)).paused, s(25.0));
        assert_eq!(gate.observe(s(40.0), cache(59)), vec![Change::Resumed { fill: Some(0.59), after: s(30.0) }]);
        assert!(!gate.paused());
        // Another pause adds to the total.
        gate.observe(s(50.0), cache(90));
        gate.observe(s(55.0), cache(10));
        let report = gate.report(s(100.0));
        assert_eq!((report.paused, report.pauses, report.polls), (s(35.0), 2, 7));
        assert_eq!(report.peak_fill, Some(0.9));
        assert_eq!(report.last_fill, Some(0.1));
    }

    #[test]
    fn the_rate_grows_while_the_cache_stays_low_and_drops_when_it_climbs() {
        let mut gate = Gate::new(config());
        let mut rates = Vec::new();
        for k in 0..=13 {
            // A poll every 10 s, the cache low.
            gate.observe(s(10.0 * f64::from(k)), cache(20));
            rates.push(gate.report(s(0.0)).rate);
        }
        // +2 (the base rate) each full minute.
        assert_eq!(rates, [2.0, 2.0, 2.0, 2.0, 2.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0, 4.0, 6.0, 6.0]);
        let mut gate = Gate::new(config());
        for k in 0..=24 {
            gate.observe(s(10.0 * f64::from(k)), cache(20));
        }
        assert_eq!(gate.report(s(0.0)).rate, 10.0);
        // Climbing between the marks halves it; holding steady there keeps it; never below the base.
        assert_eq!(gate.observe(s(310.0), cache(62)), vec![Change::Slower { rate: 5.0 }]);
        assert_eq!(gate.observe(s(320.0), cache(62)), vec![]);
        assert_eq!(gate.observe(s(330.0), cache(70)), vec![Change::Slower { rate: 2.5 }]);
        assert_eq!(gate.observe(s(340.0), cache(74)), vec![Change::Slower { rate: 2.0 }]);
        assert_eq!(gate.report(s(0.0)).rate, 2.0);
        // Growth waits a full quiet interval after the cache was between the marks.
        gate.observe(s(350.0), cache(10));
        gate.observe(s(390.0), cache(10));
        assert_eq!(gate.report(s(0.0)).rate, 2.0);
        assert_eq!(gate.observe(s(400.0), cache(10)), vec![Change::Faster { rate: 4.0 }]);
        // A pause resets it to the base.
        gate.observe(s(460.0), cache(10));
        assert_eq!(gate.report(s(0.0)).rate, 6.0);
        gate.observe(s(470.0), cache(80));
        assert_eq!(gate.report(s(0.0)).rate, 2.0);
        // Without a speed-up interval it never grows.
        let mut gate = Gate::new(GateConfig { speed_up: None, ..config() });
        for k in 0..100 {
            gate.observe(s(10.0 * f64::from(k)), cache(0));
        }
        assert_eq!(gate.report(s(0.0)).rate, 2.0);
    }

    #[test]
    fn metrics_are_admitted_at_the_rate_and_none_while_paused() {
        let mut gate = Gate::new(config());
        gate.observe(s(0.0), cache(0));
        // 2 per second: one in hand, then one each half second.
        let n = admitted(&mut gate, 0.0, 10.0);
        assert!((20..=21).contains(&n), "{n}");
        gate.observe(s(10.0), cache(80));
        assert_eq!(admitted(&mut gate, 10.0, 20.0), 0);
        // No burst saved up while paused: after the resume, the same pace.
        gate.observe(s(20.0), cache(0));
        let n = admitted(&mut gate, 20.0, 25.0);
        assert!((9..=11).contains(&n), "{n}");
        // The wait is the time to the next token.
        let mut gate = Gate::new(config());
        assert!(gate.ready(s(0.0)));
        gate.take();
        assert!(!gate.ready(s(0.1)));
        let wait = gate.wait().unwrap();
        assert!((wait.as_secs_f64() - 0.4).abs() < 1e-6, "{wait:?}");
    }

    #[test]
    fn a_node_that_does_not_answer_is_reported_once_and_held_at_the_base_rate() {
        let mut gate = Gate::new(config());
        for k in 0..=12 {
            gate.observe(s(10.0 * f64::from(k)), cache(0));
        }
        assert_eq!(gate.report(s(0.0)).rate, 6.0);
        let refused = || Reading::Failed("connection refused".into());
        assert_eq!(gate.observe(s(130.0), refused()), vec![Change::Unjudged { why: "connection refused".into() }]);
        assert_eq!(gate.observe(s(140.0), refused()), vec![]);
        let report = gate.report(s(140.0));
        assert_eq!((report.rate, report.failed_polls, report.polls), (2.0, 2, 15));
        assert_eq!(report.problem.as_deref(), Some("connection refused"));
        // No growth without readings, however long.
        for k in 15..40 {
            gate.observe(s(10.0 * f64::from(k)), refused());
        }
        assert_eq!(gate.report(s(0.0)).rate, 2.0);
        // It answers again: said so, and growth starts over from then.
        assert_eq!(gate.observe(s(400.0), cache(10)), vec![Change::Judged { fill: 0.1 }]);
        assert_eq!(gate.observe(s(460.0), cache(10)), vec![Change::Faster { rate: 4.0 }]);
        // A cache with no limit cannot be judged either (reported once per node: already was).
        let mut gate = Gate::new(config());
        let unlimited = Reading::Cache(CacheInfo { size: 10, limit: 0 });
        let changes = gate.observe(s(0.0), unlimited.clone());
        assert!(matches!(&changes[..], [Change::Unjudged { why }] if why.contains("no limit")), "{changes:?}");
        assert_eq!(gate.observe(s(10.0), unlimited), vec![]);
    }

    #[test]
    fn a_paused_node_that_stops_answering_stays_paused_for_a_while_then_goes_on_at_the_base_rate() {
        let mut gate = Gate::new(config());
        gate.observe(s(0.0), cache(90));
        let refused = || Reading::Failed("timed out".into());
        gate.observe(s(10.0), refused());
        gate.observe(s(20.0), refused());
        assert!(gate.paused());
        let changes = gate.observe(s(30.0), refused());
        assert_eq!(changes, vec![Change::Resumed { fill: None, after: s(30.0) }]);
        assert!(!gate.paused());
        assert_eq!(gate.report(s(30.0)).rate, 2.0);
    }
}
