//! Nodes that stopped answering, or flap: every request of a [`crate::client::Client`] is noted here.
//!
//! A request to a node that is down fails only after the client's retries (about 1.5 s), and a job retries
//! that a few times more: every job that needs the node would wait that long, and a rebalance of millions
//! of metrics with one node down would take days to fail. So the engine asks [`Health`] before it starts a
//! job, and each node is in one of these states:
//!
//! - **up**: its jobs run;
//! - **waited for**: it is suppressed by flap damping (see [`crate::damping`]: each time it is found
//!   unreachable after it had answered adds a penalty that decays with a half-life; above the suppress limit
//!   it is set aside until the penalty decays below the reuse limit, even while it answers), or it does not
//!   answer and its penalty is still at or above the reuse limit (a restart or a short outage: one failure is
//!   waited for `half-life · log2(penalty / reuse)`, 12.5 s by default). Its jobs stay in the queue (sources
//!   kept, nothing deleted) while the others' go on, and the engine probes it every second;
//! - **given up on**: it still does not answer once its penalty has decayed below the reuse limit. The jobs
//!   that need it fail at once ("down", source kept, listed in `--error-file`; a rerun with `--state-file`
//!   does them once the node is back). The engine probes it every second, and every [`PROBE_AFTER`] the
//!   jobs try it again; any answer from it makes it up.
//!
//! A node whose disk is full answers writes with 507 Insufficient Storage (bucky-agent; as a single answer,
//! or per entry of a batch heal). It is marked full for the rest of the run: the engine sends it no more
//! copies (the jobs that would fail at once, sources kept), while reads and deletes on it go on. Space is
//! seldom freed within a run, and every job retrying the node would make a run into a full node last hours.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::config::Addr;
use crate::damping::{Damper, DamperReport, DampingConfig};

/// How long a node given up on is skipped before jobs try it again.
pub(crate) const PROBE_AFTER: Duration = Duration::from_secs(10);

/// When a node down was first and last found unreachable (time since the run's clock started).
#[derive(Debug, Clone, Copy)]
struct Down {
    since: Duration,
    last: Duration,
}

/// One node's health.
#[derive(Debug, Default)]
struct Node {
    down: Option<Down>,
    damper: Damper,
}

/// Why a node's jobs wait.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Waiting {
    /// Suppressed by flap damping.
    Suppressed {
        /// Flaps seen.
        flaps: u64,
        /// Its penalty now.
        penalty: f64,
    },
    /// It does not answer, since this long; its penalty is still at or above the reuse limit.
    Unanswered {
        /// Time since it was first found unreachable.
        for_: Duration,
    },
}

/// What the summary shows of a node that flapped.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct NodeReport {
    /// Its flap record.
    pub(crate) damping: DamperReport,
    /// Whether it answers (as of its last request).
    pub(crate) down: bool,
}

/// The nodes found down, flapping or full during a run.
#[derive(Debug)]
pub struct Health {
    nodes: Mutex<HashMap<Addr, Node>>,
    full: Mutex<HashSet<Addr>>,
    config: Mutex<DampingConfig>,
    started: Instant,
}

impl Default for Health {
    fn default() -> Health {
        Health {
            nodes: Mutex::default(),
            full: Mutex::default(),
            config: Mutex::new(DampingConfig::default()),
            started: Instant::now(),
        }
    }
}

impl Health {
    /// The time on the health clock.
    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn config(&self) -> DampingConfig {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the flap damping's parameters (the engine's, from the flags).
    pub(crate) fn configure(&self, config: DampingConfig) {
        *self.config.lock().unwrap_or_else(PoisonError::into_inner) = config;
    }

    /// Takes note of the outcome of a request to `addr` (see [`crate::client::reached`]): unreachable marks
    /// it down (a flap, if it had answered since it was last found so), any answer (even an error status)
    /// clears the mark.
    pub fn saw(&self, addr: &Addr, reached: bool) {
        self.saw_at(addr, reached, self.now());
    }

    fn saw_at(&self, addr: &Addr, reached: bool, now: Duration) {
        let config = self.config();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        if reached {
            if let Some(node) = nodes.get_mut(addr) {
                node.down = None;
            }
            return;
        }
        let node = nodes.entry(addr.clone()).or_default();
        match &mut node.down {
            Some(down) => down.last = now,
            None => {
                node.down = Some(Down { since: now, last: now });
                if node.damper.flap(&config, now) {
                    tracing::debug!(%addr, "suppressed: it flaps");
                }
            }
        }
    }

    /// Takes note that `addr` answered 507 Insufficient Storage (to a request, or to an entry of a batch):
    /// full for the rest of the run.
    pub fn saw_full(&self, addr: &Addr) {
        self.full.lock().unwrap_or_else(PoisonError::into_inner).insert(addr.clone());
    }

    /// The first of `dests` found full during the run: no copy may be sent to it.
    pub fn full_among<'a>(&self, dests: impl IntoIterator<Item = &'a Addr>) -> Option<&'a Addr> {
        let full = self.full.lock().unwrap_or_else(PoisonError::into_inner);
        dests.into_iter().find(|d| full.contains(*d))
    }

    /// Why `addr`'s jobs must wait now, if they must.
    pub(crate) fn waiting(&self, addr: &Addr) -> Option<Waiting> {
        self.waiting_at(addr, self.now())
    }

    fn waiting_at(&self, addr: &Addr, now: Duration) -> Option<Waiting> {
        let config = self.config();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        let node = nodes.get_mut(addr)?;
        if node.damper.suppressed(&config, now) {
            let report = node.damper.report(&config, now);
            return Some(Waiting::Suppressed { flaps: report.flaps, penalty: report.penalty });
        }
        let down = node.down?;
        node.damper.above_reuse(&config, now).then(|| Waiting::Unanswered { for_: now.saturating_sub(down.since) })
    }

    /// The first of `nodes` whose jobs must wait now (see [`Health::waiting`]).
    pub(crate) fn waiting_among<'a>(&self, nodes: impl IntoIterator<Item = &'a Addr>) -> Option<&'a Addr> {
        nodes.into_iter().find(|node| self.waiting(node).is_some())
    }

    /// The nodes whose jobs wait: the engine probes them.
    pub(crate) fn waited_for(&self) -> Vec<(Addr, Waiting)> {
        let now = self.now();
        let addrs: Vec<Addr> = self.nodes.lock().unwrap_or_else(PoisonError::into_inner).keys().cloned().collect();
        addrs.into_iter().filter_map(|addr| Some((addr.clone(), self.waiting_at(&addr, now)?))).collect()
    }

    /// The nodes that did not answer their last request: the engine probes them.
    pub(crate) fn down_nodes(&self) -> Vec<Addr> {
        let nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.iter().filter(|(_, node)| node.down.is_some()).map(|(addr, _)| addr.clone()).collect()
    }

    /// Why a job needing `nodes` must fail now: the first of them given up on (not answering, no longer
    /// waited for) and found unreachable less than [`PROBE_AFTER`] ago.
    pub fn refuse<'a>(&self, nodes: impl IntoIterator<Item = &'a Addr>) -> Option<String> {
        self.refuse_at(nodes, self.now())
    }

    fn refuse_at<'a>(&self, nodes: impl IntoIterator<Item = &'a Addr>, now: Duration) -> Option<String> {
        let nodes: Vec<&Addr> = nodes.into_iter().collect();
        if nodes.iter().any(|n| self.waiting_at(n, now).is_some()) {
            return None;
        }
        let known = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes.into_iter().find_map(|node| {
            let d = known.get(node)?.down?;
            // Whether a source is kept is the caller's to say: copy and backfill never delete one.
            (now.saturating_sub(d.last) < PROBE_AFTER).then(|| match now.saturating_sub(d.since).as_secs() {
                0 => format!("{node} is down (unreachable)"),
                secs => format!("{node} is down (unreachable for {secs} s)"),
            })
        })
    }

    /// Every node that flapped at least once: its flap record, and whether it is down.
    pub(crate) fn report(&self) -> BTreeMap<Addr, NodeReport> {
        self.report_at(self.now())
    }

    fn report_at(&self, now: Duration) -> BTreeMap<Addr, NodeReport> {
        let config = self.config();
        let mut nodes = self.nodes.lock().unwrap_or_else(PoisonError::into_inner);
        nodes
            .iter_mut()
            .map(|(addr, node)| {
                (addr.clone(), NodeReport { damping: node.damper.report(&config, now), down: node.down.is_some() })
            })
            .filter(|(_, report)| report.damping.flaps > 0)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{reached, ClientError};

    fn unreachable(addr: &Addr) -> Result<(), ClientError> {
        // A real connection error: nothing listens on port 9 of this loopback address.
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let source = runtime
            .block_on(reqwest::Client::new().get(format!("http://{}/", addr.authority())).send())
            .expect_err("nothing listens there");
        Err(ClientError::Unreachable { addr: addr.to_string(), what: "test".into(), network: source })
    }

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn an_unreachable_node_is_waited_for_then_refused_until_it_answers_again() {
        let health = Health::default();
        health.configure(DampingConfig { half_life: secs(10.0), ..DampingConfig::default() });
        let (a, b) = (Addr { host: "127.0.0.1".into(), port: 9 }, Addr { host: "127.0.0.2".into(), port: 9 });
        assert_eq!(health.refuse_at([&a, &b], secs(0.0)), None);
        assert!(!reached(&unreachable(&a)));
        health.saw_at(&a, false, secs(0.0));
        // One failure: waited for while the penalty (1000) is above the reuse limit (750), h·log2(4/3) = 4.15 s.
        assert_eq!(health.waiting_at(&a, secs(4.0)), Some(Waiting::Unanswered { for_: secs(4.0) }));
        assert_eq!(health.waiting_at(&b, secs(4.0)), None, "only the node that failed");
        assert_eq!(health.refuse_at([&a], secs(4.0)), None, "waited for, not refused");
        // Then given up on: refused at once while it was found unreachable less than PROBE_AFTER ago.
        assert_eq!(health.waiting_at(&a, secs(4.2)), None);
        let why = health.refuse_at([&b, &a], secs(4.2)).expect("a is down");
        assert_eq!(why, "127.0.0.1:9 is down (unreachable for 4 s)");
        assert_eq!(health.refuse_at([&a], secs(10.1)), None, "jobs try it again after PROBE_AFTER");
        health.saw_at(&a, false, secs(10.1));
        assert!(health.refuse_at([&a], secs(10.2)).is_some(), "still down: no new flap, refused again");
        // An answer, even an error status, means the node is up.
        assert!(reached::<()>(&Err(ClientError::Status {
            addr: a.to_string(),
            what: "x".into(),
            status: 503,
            body: String::new(),
        })));
        health.saw_at(&a, true, secs(11.0));
        assert_eq!(health.refuse_at([&a], secs(11.0)), None);
        assert_eq!(health.waiting_at(&a, secs(11.0)), None);
        assert_eq!(health.report()[&a].damping.flaps, 1);
    }

    #[test]
    fn a_flapping_node_is_suppressed_even_while_it_answers() {
        let health = Health::default();
        health.configure(DampingConfig { half_life: secs(8.0), ..DampingConfig::default() });
        let a = Addr { host: "127.0.0.1".into(), port: 9 };
        // Down 2 s, up 2 s: a flap every 4 s; the failures while down are one flap each.
        for flap in 0..3 {
            let t = 4.0 * f64::from(flap);
            health.saw_at(&a, false, secs(t));
            health.saw_at(&a, false, secs(t + 1.0));
            health.saw_at(&a, true, secs(t + 2.0));
        }
        match health.waiting_at(&a, secs(10.5)) {
            Some(Waiting::Suppressed { flaps: 3, penalty }) => assert!(penalty > 1500.0, "{penalty}"),
            other => panic!("not suppressed: {other:?}"),
        }
        assert_eq!(health.refuse_at([&a], secs(10.5)), None, "its jobs wait, they do not fail");
        // It stays up: reused once the penalty is below 750.
        let report = health.report_at(secs(10.5))[&a];
        assert!(report.damping.is_suppressed && !report.down);
        let reuse = 10.5 + 8.0 * (report.damping.penalty / 750.0).log2();
        assert!(health.waiting_at(&a, secs(reuse - 0.05)).is_some());
        assert_eq!(health.waiting_at(&a, secs(reuse + 0.05)), None);
    }

    #[test]
    fn a_full_node_stays_full_for_the_rest_of_the_run() {
        let health = Health::default();
        let (a, b) = (Addr { host: "127.0.0.1".into(), port: 9 }, Addr { host: "127.0.0.2".into(), port: 9 });
        assert_eq!(health.full_among([&b, &a]), None);
        health.saw_full(&a);
        assert_eq!(health.full_among([&b, &a]), Some(&a));
        assert_eq!(health.full_among([&b]), None, "only the node that answered 507");
        assert_eq!(health.refuse([&a]), None, "full is not down: reads and deletes on it go on");
        // Any later answer, even a success, leaves it full: space is seldom freed within a run.
        health.saw(&a, reached(&Ok(())));
        assert_eq!(health.full_among([&a]), Some(&a));
    }
}
