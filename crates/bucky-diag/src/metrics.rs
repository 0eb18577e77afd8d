//! Self-metrics: named counters and gauges a daemon (or a long CLI run) keeps, and a sender that writes
//! them every interval to Graphite over the plaintext line protocol (`<prefix>.<name> <value> <unix time>`).
//!
//! Counters are cumulative since the start (as carbon's own `pointsCommitted`-style totals are not, but as
//! the relay's always were): a missed or refused sample loses nothing, and `nonNegativeDerivative()` gives
//! rates. Gauges (open fds, RSS, in-flight) are sampled when the lines are made.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Counters and gauges by name (a dotted Graphite path below the prefix). Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Metrics {
    values: Arc<Mutex<BTreeMap<String, f64>>>,
}

impl Metrics {
    /// No values yet.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn values(&self) -> MutexGuard<'_, BTreeMap<String, f64>> {
        self.values.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds `by` to the counter `name`.
    pub fn add(&self, name: &str, by: f64) {
        let mut values = self.values();
        match values.get_mut(name) {
            Some(v) => *v += by,
            None => {
                values.insert(name.to_owned(), by);
            }
        }
    }

    /// Adds one to the counter `name`.
    pub fn incr(&self, name: &str) {
        self.add(name, 1.0);
    }

    /// Sets the gauge `name`.
    pub fn set(&self, name: &str, value: f64) {
        self.values().insert(name.to_owned(), value);
    }

    /// The current value of `name`.
    pub fn get(&self, name: &str) -> Option<f64> {
        self.values().get(name).copied()
    }

    /// Every value, by name.
    pub fn all(&self) -> BTreeMap<String, f64> {
        self.values().clone()
    }

    /// The plaintext lines of every value under `prefix`, stamped `now`.
    pub fn lines(&self, prefix: &str, now: u64) -> String {
        let mut out = String::new();
        for (name, value) in self.values().iter() {
            out.push_str(&format!("{prefix}.{name} {} {now}\n", format_value(*value)));
        }
        out
    }
}

/// A value as carbon parses it (integers without a fraction).
fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// A path component made safe for Graphite: dots, spaces and slashes become underscores.
pub fn path_component(text: &str) -> String {
    text.chars().map(|c| if c == '.' || c.is_whitespace() || c == '/' { '_' } else { c }).collect()
}

/// The default prefix of a daemon: `bucky.<what>.<hostname, dots as underscores>`.
pub fn default_prefix(what: &str) -> String {
    let host = bucky_runtime::hostname().unwrap_or_else(|| "localhost".to_owned());
    format!("bucky.{what}.{}", path_component(&host))
}

/// Where and how often the lines are sent.
#[derive(Debug, Clone)]
pub struct GraphiteTarget {
    /// `HOST:PORT` of a carbon line receiver (or a relay).
    pub address: String,
    /// The path prefix of every line.
    pub prefix: String,
    /// Time between samples.
    pub interval: Duration,
}

/// Sends one sample of `metrics` (after `refresh` updates the gauges) to `target`, with bounded
/// connect and write times.
pub fn send_once(target: &GraphiteTarget, metrics: &Metrics) -> std::io::Result<()> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let lines = metrics.lines(&target.prefix, now);
    let address = target
        .address
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no address"))?;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(5))?;
    stream.set_write_timeout(Some(Duration::from_secs(5)))?;
    stream.write_all(lines.as_bytes())?;
    stream.flush()
}

/// A thread that samples and sends every interval until the returned handle is dropped (then sends a
/// last sample). `refresh` runs before each sample (to set gauges). Failures are logged once per streak.
pub fn spawn_sender(
    target: GraphiteTarget,
    metrics: Metrics,
    refresh: impl Fn(&Metrics) + Send + 'static,
) -> std::io::Result<SenderHandle> {
    let stop = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
    let failing = Arc::new(AtomicBool::new(false));
    let thread_stop = Arc::clone(&stop);
    let thread = std::thread::Builder::new().name("bucky-metrics".into()).spawn(move || {
        let (lock, wake) = &*thread_stop;
        loop {
            let stopped = {
                let guard = lock.lock().unwrap_or_else(|p| p.into_inner());
                // A stop asked before this thread got here must not wait a whole interval.
                let (guard, _) = wake
                    .wait_timeout_while(guard, target.interval, |stopped| !*stopped)
                    .unwrap_or_else(|p| p.into_inner());
                *guard
            };
            refresh(&metrics);
            match send_once(&target, &metrics) {
                Ok(()) if failing.swap(false, Ordering::Relaxed) => {
                    tracing::info!(address = %target.address, "self-metrics are reaching Graphite again");
                }
                Ok(()) => {}
                Err(e) if !failing.swap(true, Ordering::Relaxed) => {
                    tracing::warn!(address = %target.address, "cannot send self-metrics to Graphite: {e} (retrying every interval)");
                }
                Err(_) => {}
            }
            if stopped {
                return;
            }
        }
    })?;
    Ok(SenderHandle { stop, thread: Some(thread) })
}

/// Stops the sender (after one last sample) when dropped.
#[derive(Debug)]
pub struct SenderHandle {
    stop: Arc<(Mutex<bool>, std::sync::Condvar)>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for SenderHandle {
    fn drop(&mut self) {
        let (lock, wake) = &*self.stop;
        *lock.lock().unwrap_or_else(|p| p.into_inner()) = true;
        wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    #[test]
    fn counters_and_gauges_become_plaintext_lines() {
        let metrics = Metrics::new();
        metrics.incr("requests.get_metric.200");
        metrics.incr("requests.get_metric.200");
        metrics.add("bytes_in", 1500.0);
        metrics.set("rss_bytes", 1.5);
        assert_eq!(
            metrics.lines("bucky.agent.h1", 1000),
            "bucky.agent.h1.bytes_in 1500 1000\n\
             bucky.agent.h1.requests.get_metric.200 2 1000\n\
             bucky.agent.h1.rss_bytes 1.5 1000\n"
        );
        assert_eq!(path_component("a.b c/d"), "a_b_c_d");
    }

    #[test]
    fn the_sender_delivers_samples_and_a_last_one_when_stopped() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let metrics = Metrics::new();
        metrics.incr("heals");
        let target = GraphiteTarget { address, prefix: "p".into(), interval: Duration::from_secs(3600) };
        let sender = spawn_sender(target, metrics.clone(), |m| m.set("gauge", 7.0)).unwrap();
        drop(sender); // stops at once, with a last sample
        let (mut stream, _) = listener.accept().unwrap();
        let mut text = String::new();
        stream.read_to_string(&mut text).unwrap();
        let names: Vec<_> = text.lines().map(|l| l.split(' ').take(2).collect::<Vec<_>>().join(" ")).collect();
        assert_eq!(names, ["p.gauge 7", "p.heals 1"]);
    }
}
