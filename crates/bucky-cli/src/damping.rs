//! Route-flap damping of a node's health, without I/O: the penalty arithmetic of RFC 2439 (as routers damp a
//! flapping route), on a clock passed in (time since the run started), so that it is tested without waiting.
//!
//! Each **flap** (the node found unreachable after it had answered; the first failure counts as one) adds
//! [`DampingConfig::penalty`] to the node's penalty P. P decays exponentially with the half-life h:
//! `P(t2) = P(t1) · e^(−(t2−t1)·ln 2 / h)`. When P rises above [`DampingConfig::suppress`] the node is
//! **suppressed**: the engine starts none of its jobs (sources kept, nothing deleted) even while it answers,
//! until P has decayed below [`DampingConfig::reuse`]. P never exceeds the ceiling
//! `reuse · 2^(max_suppress / h)`, so a node that stops flapping is reused at most
//! [`DampingConfig::max_suppress`] after its last flap, however long it flapped before.
//!
//! Why damping rather than "any answer clears the mark": a node that is up two seconds and down two keeps
//! answering between its failures, so it kept taking work and failing it; damped, it is set aside after a
//! few flaps and used again once it has stayed up for a while.

use std::time::Duration;

/// The damping parameters (`--flap-*`), validated by `settings`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DampingConfig {
    /// Added to the penalty by each flap.
    pub penalty: f64,
    /// The node is suppressed when its penalty rises above this.
    pub suppress: f64,
    /// A suppressed node is reused when its penalty decays below this (lower than `suppress`).
    pub reuse: f64,
    /// The penalty halves in this time.
    pub half_life: Duration,
    /// A node that stops flapping is suppressed at most this long after its last flap.
    pub max_suppress: Duration,
}

impl Default for DampingConfig {
    /// Cisco's penalty, suppress and reuse limits (1000, 2000, 750: the third flap within about 20 s
    /// suppresses); half-life and ceiling scaled from a router's hour down to a copy run's minutes.
    fn default() -> DampingConfig {
        DampingConfig {
            penalty: 1000.0,
            suppress: 2000.0,
            reuse: 750.0,
            half_life: Duration::from_secs(30),
            max_suppress: Duration::from_secs(300),
        }
    }
}

impl DampingConfig {
    /// The highest penalty: the one that decays to `reuse` in exactly `max_suppress`.
    pub(crate) fn ceiling(&self) -> f64 {
        self.reuse * 2f64.powf(self.max_suppress.as_secs_f64() / self.half_life.as_secs_f64())
    }

    /// `penalty`, set at `then`, decayed to `now` (`now` before `then` decays nothing).
    pub(crate) fn decay(&self, penalty: f64, then: Duration, now: Duration) -> f64 {
        let elapsed = now.saturating_sub(then).as_secs_f64();
        penalty * (-elapsed * std::f64::consts::LN_2 / self.half_life.as_secs_f64()).exp()
    }
}

/// One node's flap record.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Damper {
    /// The penalty as of `at`.
    penalty: f64,
    at: Duration,
    /// Since when it is suppressed.
    suppressed_since: Option<Duration>,
    /// Time suppressed, suppressions that ended.
    suppressed_total: Duration,
    flaps: u64,
    suppressions: u64,
}

/// What a [`Damper`] tells of its node.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct DamperReport {
    /// Flaps seen.
    pub(crate) flaps: u64,
    /// Times it was suppressed.
    pub(crate) suppressions: u64,
    /// Time suppressed, the current suppression included.
    pub(crate) suppressed: Duration,
    /// The penalty now.
    pub(crate) penalty: f64,
    /// Whether it is suppressed now.
    pub(crate) is_suppressed: bool,
}

impl Damper {
    /// The penalty at `now`.
    pub(crate) fn penalty(&self, config: &DampingConfig, now: Duration) -> f64 {
        config.decay(self.penalty, self.at, now)
    }

    /// A flap at `now`: adds the penalty (up to the ceiling); `true` when this flap suppresses the node.
    pub(crate) fn flap(&mut self, config: &DampingConfig, now: Duration) -> bool {
        self.refresh(config, now);
        self.penalty = (self.penalty(config, now) + config.penalty).min(config.ceiling());
        self.at = now.max(self.at);
        self.flaps += 1;
        if self.suppressed_since.is_none() && self.penalty > config.suppress {
            self.suppressed_since = Some(now);
            self.suppressions += 1;
            return true;
        }
        false
    }

    /// Whether the node is suppressed at `now`; a suppressed node whose penalty has decayed below the reuse
    /// limit is reused (and counted so).
    pub(crate) fn suppressed(&mut self, config: &DampingConfig, now: Duration) -> bool {
        self.refresh(config, now);
        self.suppressed_since.is_some()
    }

    /// Ends the suppression if the penalty decayed below `reuse` by `now` (at the moment it crossed it, so
    /// that the time suppressed does not depend on when it is asked).
    fn refresh(&mut self, config: &DampingConfig, now: Duration) {
        let Some(since) = self.suppressed_since else { return };
        if self.penalty(config, now) >= config.reuse {
            return;
        }
        // P(at) · 2^(−x/h) = reuse ⇒ x = h · log2(P(at) / reuse).
        let to_reuse = if self.penalty > config.reuse {
            config.half_life.mul_f64((self.penalty / config.reuse).log2())
        } else {
            Duration::ZERO
        };
        let ended = (self.at + to_reuse).clamp(since, now);
        self.suppressed_total += ended - since;
        self.suppressed_since = None;
    }

    /// Whether the penalty is at or above `reuse` at `now` (a node down since then is waited for).
    pub(crate) fn above_reuse(&self, config: &DampingConfig, now: Duration) -> bool {
        self.flaps > 0 && self.penalty(config, now) >= config.reuse
    }

    /// The record at `now`.
    pub(crate) fn report(&mut self, config: &DampingConfig, now: Duration) -> DamperReport {
        let is_suppressed = self.suppressed(config, now);
        let current = self.suppressed_since.map_or(Duration::ZERO, |since| now.saturating_sub(since));
        DamperReport {
            flaps: self.flaps,
            suppressions: self.suppressions,
            suppressed: self.suppressed_total + current,
            penalty: self.penalty(config, now),
            is_suppressed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    /// The formula, written out: P(t2) = P(t1) · e^(−(t2−t1)·ln 2 / h).
    fn formula(p: f64, t1: f64, t2: f64, h: f64) -> f64 {
        p * (-(t2 - t1) * 2f64.ln() / h).exp()
    }

    #[test]
    fn the_penalty_decays_by_the_formula() {
        let config = DampingConfig { half_life: secs(10.0), ..DampingConfig::default() };
        for (p, t1, t2) in [(1000.0, 0.0, 10.0), (2500.0, 3.0, 4.5), (1234.5, 1.0, 61.0), (800.0, 5.0, 5.0)] {
            let got = config.decay(p, secs(t1), secs(t2));
            let want = formula(p, t1, t2, 10.0);
            assert!((got - want).abs() < 1e-9 * want.max(1.0), "{p} from {t1} to {t2}: {got} vs {want}");
        }
        // One half-life halves it; two quarter it.
        assert!((config.decay(1000.0, secs(0.0), secs(10.0)) - 500.0).abs() < 1e-9);
        assert!((config.decay(1000.0, secs(0.0), secs(20.0)) - 250.0).abs() < 1e-9);
    }

    #[test]
    fn flaps_add_up_suppress_above_the_limit_and_reuse_below_the_lower_one() {
        let config = DampingConfig {
            penalty: 1000.0,
            suppress: 2000.0,
            reuse: 750.0,
            half_life: secs(8.0),
            max_suppress: secs(600.0),
        };
        let mut d = Damper::default();
        // Flaps every 4 s: 1000, then 1000 + 1000·2^(−0.5), then that decayed 4 s + 1000.
        assert!(!d.flap(&config, secs(0.0)));
        assert!(!d.flap(&config, secs(4.0)), "the second flap stays below 2000");
        let p2 = 1000.0 + formula(1000.0, 0.0, 4.0, 8.0);
        assert!((d.penalty(&config, secs(4.0)) - p2).abs() < 1e-6);
        assert!(!d.suppressed(&config, secs(6.0)));
        assert!(d.flap(&config, secs(8.0)), "the third suppresses");
        let p3 = 1000.0 + formula(p2, 4.0, 8.0, 8.0);
        assert!(p3 > 2000.0, "{p3}");
        assert!((d.penalty(&config, secs(8.0)) - p3).abs() < 1e-6);
        assert!(d.suppressed(&config, secs(9.0)));
        // Suppressed until P decays below 750: at 8 + 8·log2(p3 / 750) s.
        let reuse_at = 8.0 + 8.0 * (p3 / 750.0).log2();
        assert!(d.suppressed(&config, secs(reuse_at - 0.01)), "still above the reuse limit");
        // Below the suppress limit but above the reuse limit: still suppressed (hysteresis).
        let between = 8.0 + 8.0 * (p3 / 1500.0).log2();
        assert!(d.penalty(&config, secs(between)) < 2000.0 && d.suppressed(&config, secs(between)));
        let report = d.report(&config, secs(reuse_at + 5.0));
        assert!(!report.is_suppressed);
        assert_eq!((report.flaps, report.suppressions), (3, 1));
        // The time suppressed ends when P crossed the reuse limit, not when it was asked.
        assert!((report.suppressed.as_secs_f64() - (reuse_at - 8.0)).abs() < 1e-6, "{report:?}");
        assert!((report.penalty - formula(p3, 8.0, reuse_at + 5.0, 8.0)).abs() < 1e-6);
        // A flap after the reuse: no suppression unless it goes above the limit again.
        assert!(!d.flap(&config, secs(reuse_at + 5.0)));
        assert_eq!(d.report(&config, secs(reuse_at + 5.0)).suppressions, 1);
    }

    #[test]
    fn the_ceiling_caps_the_time_suppressed_after_the_last_flap() {
        let config = DampingConfig {
            penalty: 1000.0,
            suppress: 2000.0,
            reuse: 750.0,
            half_life: secs(10.0),
            max_suppress: secs(30.0),
        };
        assert!((config.ceiling() - 750.0 * 8.0).abs() < 1e-9);
        let mut d = Damper::default();
        // A hundred flaps a tenth of a second apart would make P about 100,000 without the ceiling.
        for i in 0..100 {
            d.flap(&config, secs(f64::from(i) * 0.1));
        }
        let last = 9.9;
        assert!((d.penalty(&config, secs(last)) - 6000.0).abs() < 1e-9);
        assert!(d.suppressed(&config, secs(last + 29.9)));
        assert!(!d.suppressed(&config, secs(last + 30.1)), "reused within max_suppress of the last flap");
    }

    #[test]
    fn one_failure_is_waited_for_until_the_penalty_falls_below_reuse() {
        let config = DampingConfig::default();
        let mut d = Damper::default();
        assert!(!d.above_reuse(&config, secs(0.0)), "never failed");
        assert!(!d.flap(&config, secs(0.0)), "one flap does not suppress");
        // 1000 → 750 takes h · log2(4/3) = 12.45 s with h = 30 s.
        assert!(d.above_reuse(&config, secs(12.4)));
        assert!(!d.above_reuse(&config, secs(12.5)));
        assert!(!d.suppressed(&config, secs(1.0)));
    }
}
