//! The go-carbon cache-pressure throttle (`--go-carbon-throttle`; go-graphite's `-go-carbon-health-check`).
//!
//! Every heal is a write burst on the disks a destination's go-carbon flushes its cache to; when that cache
//! fills, go-carbon falls behind and finally drops points. So, per destination node, the run polls the
//! node's carbonserver `GET /admin/info` every `interval` and feeds each reading to the node's [`Gate`]
//! (pause at `threshold` with hysteresis, a metrics/s rate that grows while the cache stays low, the rules in
//! `gate`). The engine asks [`Throttles::admit`] before it starts a job: a job goes only when every one of
//! its destinations admits it, so a paused node's jobs wait in the queue while the others' go on.
//! Sources are not throttled: they are only read (and, with `--delete`, unlinked), which does not fill a
//! cache (go-graphite's bucky takes a token from both).
//!
//! Where go-graphite differs: its overloaded node is slowed to `-metrics-per-second`, never paused; its
//! rate grows by a random 1 to 5 and eases randomly; a node that does not answer is logged at every poll
//! and keeps whatever rate it had for 15 minutes. Here a node is paused until its cache is below the lower
//! mark, the rate grows by the starting rate, and a node without a usable answer is warned about once,
//! held at the starting rate, and named in the summary.

mod gate;
mod info;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use self::gate::{Change, Gate, GateConfig, GateReport, Reading};
use self::info::CacheInfo;
use crate::client::network_cause;
use crate::config::Addr;
use crate::printer::{Printer, Progress};

/// How long a poll of `/admin/info` may take at most.
const POLL_TIMEOUT: Duration = Duration::from_secs(5);

/// A paused node with no usable reading stays paused for this many poll intervals.
const HOLD_PAUSE_POLLS: u32 = 6;

/// The throttle's validated settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ThrottleOptions {
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The carbonserver's port on every node (`--go-carbon-port`).
    pub port: u16,
    /// Carbonservers given per node: the node (`HOST` or `HOST:PORT` as the ring names its agent) and the
    /// carbonserver's address.
    pub servers: Vec<(String, Addr)>,
    /// Pause a node when its cache holds this share of its limit.
    pub threshold: f64,
    /// Resume it when its cache holds less than this share.
    pub resume: f64,
    /// Time between polls.
    pub interval: Duration,
    /// Metrics per second per node at the start (and after a pause).
    pub rate: f64,
    /// How long the cache must stay low before the rate grows; `None`: never.
    pub speed_up: Option<Duration>,
}

impl ThrottleOptions {
    /// The carbonserver of the node whose agent is `node`: given with `--go-carbon-server`, else the
    /// agent's host on `--go-carbon-port`.
    pub(crate) fn carbonserver(&self, node: &Addr) -> Addr {
        let own = node.authority();
        self.servers
            .iter()
            .find(|(key, _)| *key == own || *key == node.host)
            .map(|(_, server)| server.clone())
            .unwrap_or_else(|| Addr { host: node.host.clone(), port: self.port })
    }

    fn gate(&self) -> GateConfig {
        GateConfig {
            pause_at: self.threshold,
            resume_below: self.resume,
            base_rate: self.rate,
            speed_up: self.speed_up,
            hold_pause: self.interval * HOLD_PAUSE_POLLS,
        }
    }
}

/// What the summary shows of one throttled node.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ThrottleSummary {
    /// Its carbonserver's `/admin/info` URL.
    pub url: String,
    /// Seconds its transfers were paused.
    pub paused_seconds: f64,
    /// Times it was paused.
    pub pauses: u64,
    /// Polls of `/admin/info`.
    pub polls: u64,
    /// Polls without a usable answer.
    pub failed_polls: u64,
    /// Its rate at the end, metrics per second.
    pub rate: f64,
    /// Its cache's fill at the last usable poll, percent of the limit.
    pub cache_percent: Option<f64>,
    /// The highest fill seen, percent.
    pub peak_cache_percent: Option<f64>,
    /// Why a poll last said nothing usable (it was held at the starting rate then).
    pub problem: Option<String>,
}

/// One node's poll target and gate.
struct Node {
    url: String,
    gate: Gate,
}

/// Every destination's throttle in a run.
pub(crate) struct Throttles {
    options: ThrottleOptions,
    nodes: Mutex<BTreeMap<Addr, Node>>,
    started: Instant,
    http: reqwest::Client,
    printer: Printer,
}

impl Throttles {
    /// The throttles of `dests`.
    pub(crate) fn new<'a>(
        options: &ThrottleOptions,
        dests: impl IntoIterator<Item = &'a Addr>,
        printer: &Printer,
    ) -> anyhow::Result<Throttles> {
        let http = reqwest::Client::builder()
            .connect_timeout(POLL_TIMEOUT.min(options.interval.max(Duration::from_secs(1))))
            .timeout(POLL_TIMEOUT)
            .build()?;
        let nodes = dests
            .into_iter()
            .map(|dest| {
                let server = options.carbonserver(dest);
                let url = format!("{}://{}/admin/info", options.scheme, server.authority());
                (dest.clone(), Node { url, gate: Gate::new(options.gate()) })
            })
            .collect();
        Ok(Throttles {
            options: options.clone(),
            nodes: Mutex::new(nodes),
            started: Instant::now(),
            http,
            printer: printer.clone(),
        })
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Addr, Node>> {
        self.nodes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a job writing to every one of `dests` may start now; if so, each of them counts it against
    /// its rate. Nodes not throttled admit anything.
    pub(crate) fn admit(&self, dests: &[Addr]) -> bool {
        let now = self.now();
        let mut nodes = self.lock();
        let ready = dests.iter().all(|d| nodes.get_mut(d).is_none_or(|node| node.gate.ready(now)));
        if ready {
            for d in dests {
                if let Some(node) = nodes.get_mut(d) {
                    node.gate.take();
                }
            }
        }
        ready
    }

    /// How long a worker that found nothing to admit should wait before it asks again: until the next
    /// token of a node that is not paused, at most a tenth of a second.
    pub(crate) fn retry_after(&self) -> Duration {
        let cap = Duration::from_millis(100);
        let nodes = self.lock();
        nodes.values().filter_map(|n| n.gate.wait()).min().unwrap_or(cap).clamp(Duration::from_millis(5), cap)
    }

    /// Polls every node once, side by side (before the first job, so that a node already under pressure is
    /// paused from the start).
    pub(crate) async fn poll_all(&self, progress: &Progress) {
        let targets: Vec<(Addr, String)> = self.lock().iter().map(|(a, n)| (a.clone(), n.url.clone())).collect();
        let readings = futures_util::future::join_all(targets.iter().map(|(_, url)| self.read(url))).await;
        for ((addr, _), reading) in targets.iter().zip(readings) {
            self.observe(addr, reading, progress);
        }
    }

    /// Polls `addr`'s node every interval, until the task is dropped.
    pub(crate) async fn poll_forever(self: Arc<Self>, addr: Addr, progress: Arc<Progress>) {
        let Some(url) = self.lock().get(&addr).map(|n| n.url.clone()) else { return };
        let mut next = Instant::now() + self.options.interval;
        loop {
            tokio::time::sleep_until(next.into()).await;
            next += self.options.interval;
            let reading = self.read(&url).await;
            self.observe(&addr, reading, &progress);
        }
    }

    async fn read(&self, url: &str) -> Reading {
        let response = match self.http.get(url).query(&[("scopes", "cache")]).send().await {
            Ok(response) => response,
            Err(e) => return Reading::Failed(format!("{url} does not answer: {}", network_cause(&e))),
        };
        let status = response.status();
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(e) => return Reading::Failed(format!("{url}: {}", network_cause(&e))),
        };
        if !status.is_success() {
            return Reading::Failed(format!("{url} answered {status}"));
        }
        match CacheInfo::parse(&body) {
            Ok(info) => Reading::Cache(info),
            Err(e) => Reading::Failed(format!("{url}: {e}")),
        }
    }

    fn observe(&self, addr: &Addr, reading: Reading, progress: &Progress) {
        let now = self.now();
        let (changes, message) = {
            let mut nodes = self.lock();
            let Some(node) = nodes.get_mut(addr) else { return };
            let changes = node.gate.observe(now, reading);
            (changes, paused_message(&nodes))
        };
        for change in &changes {
            match change {
                Change::Unjudged { why } => self.printer.warn(format!(
                    "go-carbon throttle: {addr}: {why}; cannot judge its cache, so its transfers go on at the starting \
                     rate ({} metrics/s) until it answers",
                    crate::progress::round_rate(self.options.rate)
                )),
                Change::Paused { fill } => {
                    self.printer.verbose(format!("{addr}: go-carbon cache at {}: transfers paused", percent(*fill)))
                }
                Change::Resumed { fill: Some(fill), after } => self.printer.verbose(format!(
                    "{addr}: go-carbon cache at {}: transfers resumed after {:.1} s",
                    percent(*fill),
                    after.as_secs_f64()
                )),
                Change::Resumed { fill: None, after } => self.printer.warn(format!(
                    "go-carbon throttle: {addr}: no usable /admin/info for {:.0} s while paused: transfers go on at \
                     the starting rate",
                    after.as_secs_f64()
                )),
                Change::Faster { rate } | Change::Slower { rate } => self.printer.verbose(format!(
                    "{addr}: go-carbon throttle rate now {}",
                    crate::printer::human_rate(*rate, "metrics")
                )),
                Change::Judged { fill } => self
                    .printer
                    .verbose(format!("{addr}: go-carbon answers /admin/info again (cache at {})", percent(*fill))),
            }
        }
        if !changes.is_empty() {
            progress.set_note("throttle", message);
        }
    }

    /// Every throttled node, and whether it is paused now.
    pub(crate) fn paused(&self) -> Vec<(Addr, bool)> {
        self.lock().iter().map(|(addr, n)| (addr.clone(), n.gate.paused())).collect()
    }

    /// Per node, what the summary shows.
    pub(crate) fn report(&self) -> BTreeMap<String, ThrottleSummary> {
        let now = self.now();
        self.lock()
            .iter()
            .map(|(addr, node)| {
                let GateReport { paused, pauses, polls, failed_polls, rate, last_fill, peak_fill, problem, .. } =
                    node.gate.report(now);
                let summary = ThrottleSummary {
                    url: node.url.clone(),
                    paused_seconds: paused.as_secs_f64(),
                    pauses,
                    polls,
                    failed_polls,
                    rate,
                    cache_percent: last_fill.map(|f| (f * 1000.0).round() / 10.0),
                    peak_cache_percent: peak_fill.map(|f| (f * 1000.0).round() / 10.0),
                    problem,
                };
                (addr.to_string(), summary)
            })
            .collect()
    }
}

/// `81%`.
fn percent(fill: f64) -> String {
    format!("{:.0}%", fill * 100.0)
}

/// The progress line's note: `paused: 10.0.0.3 (cache 81%), …`, or nothing.
fn paused_message(nodes: &BTreeMap<Addr, Node>) -> String {
    let paused: Vec<String> = nodes
        .iter()
        .filter(|(_, n)| n.gate.paused())
        .map(|(addr, n)| match n.gate.last_fill() {
            Some(fill) => format!("{addr} (cache {})", percent(fill)),
            None => addr.to_string(),
        })
        .collect();
    if paused.is_empty() {
        String::new()
    } else {
        format!("paused: {}", paused.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_carbonserver_is_the_agents_host_on_the_port_unless_given() {
        let options = ThrottleOptions {
            scheme: "http",
            port: 8080,
            servers: vec![
                ("10.0.0.2".into(), Addr { host: "10.0.9.2".into(), port: 9090 }),
                ("10.0.0.3:4243".into(), Addr { host: "10.0.9.3".into(), port: 9091 }),
            ],
            threshold: 0.75,
            resume: 0.6,
            interval: Duration::from_secs(10),
            rate: 1.0,
            speed_up: None,
        };
        let node = |host: &str, port| Addr { host: host.into(), port };
        assert_eq!(options.carbonserver(&node("10.0.0.1", 4242)).to_string(), "10.0.0.1:8080");
        assert_eq!(options.carbonserver(&node("10.0.0.2", 4242)).to_string(), "10.0.9.2:9090");
        assert_eq!(options.carbonserver(&node("10.0.0.3", 4243)).to_string(), "10.0.9.3:9091");
        assert_eq!(options.carbonserver(&node("10.0.0.3", 4242)).to_string(), "10.0.0.3:8080");
        assert_eq!(options.carbonserver(&node("::1", 4242)).to_string(), "[::1]:8080");
    }

    /// The progress line names every paused node with its cache's fill, and nothing when none is paused.
    #[test]
    fn the_progress_line_names_the_paused_nodes() {
        let config = GateConfig {
            pause_at: 0.75,
            resume_below: 0.6,
            base_rate: 1.0,
            speed_up: None,
            hold_pause: Duration::from_secs(60),
        };
        let mut nodes = BTreeMap::new();
        for (host, size) in [("10.0.0.1", 10), ("10.0.0.3", 812), ("10.0.0.2", 900)] {
            let mut gate = Gate::new(config);
            gate.observe(Duration::ZERO, Reading::Cache(CacheInfo { size, limit: 1000 }));
            nodes.insert(Addr { host: host.into(), port: 4242 }, Node { url: String::new(), gate });
        }
        assert_eq!(paused_message(&nodes), "paused: 10.0.0.2:4242 (cache 90%), 10.0.0.3:4242 (cache 81%)");
        for node in nodes.values_mut() {
            node.gate.observe(Duration::from_secs(1), Reading::Cache(CacheInfo { size: 0, limit: 1000 }));
        }
        assert_eq!(paused_message(&nodes), "");
    }
}
