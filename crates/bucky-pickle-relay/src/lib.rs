//! `bucky-pickle-relay`: receives Graphite's pickle protocol and forwards plaintext lines to a relay
//! (carbon-c-relay and others that do not speak pickle) — fast, bounded, and never silently dropping.
//!
//! # What it does
//!
//! * **Input**: carbon's pickle framing (4-byte big-endian length, then a pickled list of
//!   `(path, (timestamp, value))`), protocols 0–5, decoded by [`pickle`], a decoder of the safe subset
//!   that never imports or constructs anything. A frame larger than `--max-message`, truncated, or not of
//!   that shape closes its connection with a logged reason (other connections are not disturbed);
//!   single items that are not metrics (bad path, non-numeric timestamp or value, NaN) are skipped and
//!   counted.
//! * **Output**: `path value timestamp\n` over one TCP connection to the relay, batched, with reconnect
//!   and exponential backoff. Values are written in their shortest round-trip form ([`line`]), so carbon
//!   parses back the very f64 that was pickled.
//! * **Bounded**: a queue bounded by metrics and bytes. When it is full, connections stop reading (TCP
//!   back-pressure to the senders) — or, only with `--drop-when-full`, drop and count. Frames are read
//!   incrementally (a header claiming 4 GiB reserves nothing), connections are capped, idle and slow
//!   connections time out.
//! * **Never losing a point**: the most recent lines are kept and written again after a relay connection
//!   fails (points are idempotent in Graphite). At shutdown (SIGINT/SIGTERM) it stops accepting, keeps
//!   reading what connected senders already sent (`--shutdown-grace`), flushes the queue, and waits for
//!   the relay to close its side, which proves every byte was read.
//! * **Self-metrics** every `--interval` under `--prefix`: see [`Summary::lines`].
//!
//! # Shape
//!
//! [`run`] serves a bound listener until a shutdown future resolves, then flushes and returns the final
//! [`Summary`]; the binary is [`cli::main`].
//!
//! ```no_run
//! use bucky_pickle_relay::Config;
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:2004").await?;
//! let config = Config::new("127.0.0.1:2003");
//! let summary = bucky_pickle_relay::run(listener, config, bucky_pickle_relay::shutdown_signal()).await;
//! assert_eq!(summary.metrics_seen, summary.metrics_sent + summary.metrics_dropped);
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

pub mod cli;
pub mod encode;
pub mod line;
pub mod pickle;
mod queue;
mod server;
pub mod stats;
mod upstream;

use std::time::Duration;

pub use server::{run, run_with, Counters};
pub use stats::Summary;

/// Everything the relay needs, validated (see [`cli::Cli`] for the meaning of each).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// Where plaintext goes, `HOST:PORT` (resolved at every connect).
    pub relay: String,
    /// Prefix of the self-metrics.
    pub prefix: String,
    /// Self-metrics period; `None` disables them.
    pub interval: Option<Duration>,
    /// Largest frame accepted, in bytes.
    pub max_message: u32,
    /// Most metrics queued.
    pub queue: u32,
    /// Most bytes of lines queued.
    pub queue_bytes: u32,
    /// Drop (and count) instead of pushing back on the senders when the queue is full.
    pub drop_when_full: bool,
    /// A sender connection must deliver each frame within this time (idle connections close after it).
    pub read_timeout: Duration,
    /// Timeout of connects and writes to the relay, and how long shutdown waits for it.
    pub send_timeout: Duration,
    /// Most sender connections open at once; more are refused.
    pub max_connections: usize,
    /// Bytes of recently written lines resent after a relay connection fails.
    pub replay_bytes: usize,
    /// At shutdown, how long connections keep reading what their senders already sent (a connection
    /// whose sender pauses for 250 ms is closed sooner), and how long a full queue may hold them.
    pub shutdown_grace: Duration,
}

impl Config {
    /// The defaults, forwarding to `relay`.
    pub fn new(relay: impl Into<String>) -> Self {
        Config {
            relay: relay.into(),
            prefix: format!("bucky-pickle-relay.{}", stats::hostname()),
            interval: Some(Duration::from_secs(60)),
            max_message: 1 << 20,
            queue: 100_000,
            queue_bytes: 16 << 20,
            drop_when_full: false,
            read_timeout: Duration::from_secs(300),
            send_timeout: Duration::from_secs(30),
            max_connections: 1024,
            replay_bytes: 4 << 20,
            shutdown_grace: Duration::from_secs(2),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
