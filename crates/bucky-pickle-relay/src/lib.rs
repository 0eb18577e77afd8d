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
//!   and exponential backoff. Values are written in their shortest round-trip form ([`line`](mod@line)), so carbon
//!   parses back the very f64 that was pickled.
//! * **Bounded**: a queue bounded by metrics and bytes. When it is full, connections stop reading (TCP
//!   back-pressure to the senders) — or, only with `--drop-when-full`, drop and count. Frames are read
//!   incrementally (a header claiming 4 GiB reserves nothing), connections are capped, idle and slow
//!   connections time out.
//! * **Replay after a relay connection fails** ([`ReplayPolicy`], `--replay`): by default only the
//!   lines the relay's TCP had not acknowledged, each at most once, so a line reaches the relay at most
//!   twice however often it restarts. At shutdown (SIGINT/SIGTERM) it stops accepting, keeps reading
//!   what connected senders already sent (`--shutdown-grace`), flushes the queue, and waits for the
//!   relay to close its side, which proves every byte was read.
//! * **Self-metrics** every `--interval` under `--prefix`: see [`Summary::lines`].
//!
//! # Delivery when the relay connection fails
//!
//! A successful write only means our kernel took the bytes. The writer keeps what it wrote (up to
//! `--replay-bytes`) and, on Linux, asks the kernel after its writes and while it waits how much of it
//! the relay's TCP has acknowledged (`SIOCOUTQ`). When the connection fails it reconnects and, before
//! anything new, writes again what [`ReplayPolicy`] says:
//!
//! | `--replay` | resent after a failure | a line arrives | may be lost when |
//! |---|---|---|---|
//! | `unacked` (default) | the lines not acknowledged by the relay's TCP (as of the last sample, so a few already acknowledged may be among them) | at most twice | the relay *process* dies with acknowledged lines it had not read yet (a TCP ACK means its kernel has them, not that it read them) |
//! | `window` | the last `--replay-bytes` written, acknowledged or not | at most twice | the relay dies with more unread than `--replay-bytes` |
//! | `none` | nothing | at most once | anything was in flight |
//!
//! Whatever the policy, a line is resent at most once: a replayed line that is still unacknowledged
//! when the new connection fails too is not sent a third time, and may be lost (the warning that
//! reports the failure says how many). A line cut short by the failure, or not yet taken by the kernel,
//! is written in full on the new connection; that is not a replay, since the relay never had it whole.
//! Replayed lines are counted in `replayedMetrics`.
//!
//! The acknowledged offset is sampled after every write, every 100 ms while the writer waits, and
//! when the relay closes the connection cleanly (its FIN acknowledges everything it received) or a
//! write times out; after a reset the last sample stands, since the kernel may have purged the queue.
//! `unacked` needs `--replay-bytes` at least as large as the socket's send queue can grow (Linux:
//! `net.ipv4.tcp_wmem`'s maximum, 4 MiB by default; a warning says when it was not); off Linux the
//! kernel cannot tell, and `unacked` resends what `window` would.
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
mod sendq;
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
    /// What is resent after a relay connection fails.
    pub replay: ReplayPolicy,
    /// Most bytes of written lines kept for a replay.
    pub replay_bytes: usize,
    /// At shutdown, how long connections keep reading what their senders already sent (a connection
    /// whose sender pauses for 250 ms is closed sooner), and how long a full queue may hold them.
    pub shutdown_grace: Duration,
    /// The in-flight registry, watchdog and state dump (the binary starts them; `None` in library use
    /// unless the caller sets them).
    pub diagnostics: Option<bucky_diag::Diagnostics>,
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
            replay: ReplayPolicy::Unacked,
            replay_bytes: 4 << 20,
            shutdown_grace: Duration::from_secs(2),
            diagnostics: None,
        }
    }
}

/// What the writer resends on a new relay connection after the last one failed (`--replay`); see
/// [the crate docs](crate#delivery-when-the-relay-connection-fails). Each line is resent at most once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ReplayPolicy {
    /// Only the lines the relay's TCP had not acknowledged: each line arrives at most twice; lost if
    /// the relay process dies with acknowledged lines it had not read yet.
    #[default]
    Unacked,
    /// The last --replay-bytes written, acknowledged or not: also covers a relay that dies with unread
    /// lines, at the price of more duplicates (fine for carbon-cache, not for aggregators).
    Window,
    /// Nothing: each line arrives at most once; whatever was in flight may be lost.
    None,
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (the daemons' shared trigger, re-exported for [`run`]'s callers).
pub use bucky_runtime::shutdown_signal;
