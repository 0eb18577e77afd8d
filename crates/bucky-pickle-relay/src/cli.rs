//! Command line: the original bucky-pickle-relay's flags (same letters and defaults where they exist),
//! validated into a [`Config`], and the binary's entry point.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use tokio::net::TcpListener;

use crate::{Config, ReplayPolicy};

/// bucky-pickle-relay: Graphite pickle protocol in, plaintext lines out.
///
/// Listens for carbon's pickle protocol (what carbon-relay, carbon-aggregator and most collectors send
/// to port 2004), decodes it with a safe decoder (lists, tuples, strings and numbers only; nothing is
/// ever imported or executed), and forwards `path value timestamp` lines to RELAY (HOST:PORT, e.g.
/// carbon-c-relay's line port), batched, reconnecting with backoff.
///
/// When the queue is full the relay stops reading from its senders (TCP back-pressure) unless
/// --drop-when-full is given; every dropped, skipped or refused metric is counted in the self-metrics.
/// On SIGINT/SIGTERM it stops accepting, reads what the senders already sent (--shutdown-grace),
/// flushes the queue and waits for the relay to confirm. Logs go to stderr; RUST_LOG overrides the
/// level (default info, -d debug).
///
/// After the relay connection fails it reconnects with backoff and resends, before anything new, the
/// lines --replay names: by default (unacked) only those the relay's TCP had not acknowledged, each at
/// most once, so a line reaches the relay at most twice however often it restarts.
///
/// Self-metrics, every --interval seconds under --prefix, cumulative since start unless noted:
/// seenPickles, seenMetrics, sentMetrics, droppedMetrics, skippedMetrics, replayedMetrics,
/// decodeErrors, refusedConnections, relayReconnects, and the gauges connections, queueLength, rss
/// (bytes; also as systemMemory, the original's name). At rest, seenMetrics = sentMetrics + droppedMetrics +
/// queueLength.
#[derive(Debug, Parser)]
#[command(name = "bucky-pickle-relay", version, max_term_width = 100)]
pub struct Cli {
    /// Where plaintext lines go: HOST:PORT of a carbon line receiver or relay.
    #[arg(value_name = "RELAY_HOST:PORT")]
    pub relay: String,

    /// Address to listen on for pickle connections, IP:PORT (":PORT" = all interfaces).
    #[arg(short = 'b', long, default_value = ":2004", value_name = "ADDR")]
    pub bind: String,

    /// Prefix of the self-metrics [default: bucky-pickle-relay.<hostname, dots as underscores>].
    #[arg(short = 'p', long, value_name = "PREFIX")]
    pub prefix: Option<String>,

    /// Seconds between self-metrics samples written into the stream (0 disables them).
    #[arg(short = 'i', long, default_value_t = 60, value_name = "SECONDS")]
    pub interval: u64,

    /// Largest pickle frame accepted; a larger length header closes the connection. Accepts K, M, KiB,
    /// MiB suffixes (powers of 1024). carbon's own PICKLE_RECEIVER_MAX_LENGTH is 1 MiB too.
    #[arg(short = 'x', long, default_value = "1MiB", value_name = "BYTES", value_parser = parse_size)]
    pub max_message: u32,

    /// Most metrics queued for the relay; when full, senders are pushed back (or, with
    /// --drop-when-full, metrics dropped). A value below one pickle's size (the original's default 0)
    /// means one pickle at a time.
    #[arg(short = 'q', long, default_value_t = 100_000, value_name = "N")]
    pub queue: u32,

    /// Most bytes of lines queued (bounds memory whatever the line length).
    #[arg(long, default_value = "16MiB", value_name = "BYTES", value_parser = parse_size)]
    pub queue_bytes: u32,

    /// When the queue is full, drop new pickles (counted as droppedMetrics) instead of pushing back.
    #[arg(long)]
    pub drop_when_full: bool,

    /// Seconds a sender connection may take to deliver each frame, and may stay idle between frames.
    #[arg(short = 't', long, default_value_t = 300, value_name = "SECONDS")]
    pub timeout: u64,

    /// Seconds before a connect or write to the relay is abandoned (then: reconnect and replay); also
    /// how long shutdown waits for the relay.
    #[arg(short = 's', long, default_value_t = 30, value_name = "SECONDS")]
    pub send_timeout: u64,

    /// At shutdown, seconds to keep reading what senders already sent before closing their connections
    /// (a sender that pauses for 250 ms is closed sooner).
    #[arg(long, default_value_t = 2, value_name = "SECONDS")]
    pub shutdown_grace: u64,

    /// Most sender connections open at once; further ones are closed at once and counted.
    #[arg(long, default_value_t = 1024, value_name = "N")]
    pub max_connections: usize,

    /// What to resend, before anything new, after the relay connection failed; each line at most once.
    ///
    /// A write only means our kernel took the bytes. Whatever the policy, a line is resent at most
    /// once (so it reaches the relay at most twice; a resent line still unacknowledged when the next
    /// connection fails too is not sent a third time), and a line the failure cut short is written in
    /// full (the relay never had it whole). A TCP acknowledgement means the relay's kernel has the
    /// bytes, not that the relay read them: with `unacked`, a relay that dies with unread data loses
    /// it.
    #[arg(long, value_enum, default_value_t = ReplayPolicy::Unacked, value_name = "POLICY")]
    pub replay: ReplayPolicy,

    /// Most bytes of written lines kept for --replay.
    ///
    /// With `unacked`, keep it above the socket send queue's maximum (Linux net.ipv4.tcp_wmem, 4 MiB
    /// by default); with `window`, it is the window.
    #[arg(long, default_value = "4MiB", value_name = "BYTES", value_parser = parse_size)]
    pub replay_bytes: u32,

    /// Report a runtime stall when the async runtime has not run its 100 ms heartbeat for longer than
    /// this (e.g. 500ms). Reports go straight to stderr and --diag-file, not through the log.
    #[arg(long, default_value = "500ms", value_parser = bucky_runtime::parse_duration, value_name = "DURATION", help_heading = "Diagnostics")]
    pub stall_threshold: Duration,

    /// Report a connection that waits for queue room (or an operation in one phase) longer than this.
    #[arg(long, default_value = "30s", value_parser = bucky_runtime::parse_duration, value_name = "DURATION", help_heading = "Diagnostics")]
    pub stuck_after: Duration,

    /// Also append the watchdog's reports and the state dumps (SIGQUIT, SIGUSR1) to this file.
    #[arg(long, value_name = "FILE", help_heading = "Diagnostics")]
    pub diag_file: Option<std::path::PathBuf>,

    /// Debug logging (each connection, each reconnect).
    #[arg(short = 'd', long)]
    pub debug: bool,
}

/// `1048576`, `64K`, `64KiB`, `1M`, `1MiB`, `1G` (powers of 1024; see [`bucky_runtime::parse_size`]), at most
/// 4 GiB - 1: the relay counts these sizes in `u32`.
fn parse_size(s: &str) -> Result<u32, String> {
    let bytes = bucky_runtime::parse_size(s)?;
    u32::try_from(bytes).map_err(|_| format!("`{}` is larger than 4 GiB - 1", s.trim()))
}

/// The listen address: `:PORT` is every interface (IPv6 and IPv4 when the host has both).
fn bind_candidates(bind: &str) -> anyhow::Result<Vec<SocketAddr>> {
    if let Some(port) = bind.strip_prefix(':') {
        let port: u16 = port.parse().with_context(|| format!("bad port in --bind {bind}"))?;
        return Ok(vec![SocketAddr::from(([0u16; 8], port)), SocketAddr::from(([0u8; 4], port))]);
    }
    use std::net::ToSocketAddrs;
    let addrs: Vec<_> = bind.to_socket_addrs().with_context(|| format!("cannot resolve --bind {bind}"))?.collect();
    if addrs.is_empty() {
        bail!("--bind {bind} resolves to no address");
    }
    Ok(addrs)
}

impl Cli {
    /// Validates the flags into a [`Config`].
    pub fn config(&self) -> anyhow::Result<Config> {
        match self.relay.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => {}
            _ => bail!("RELAY must be HOST:PORT, got `{}`", self.relay),
        }
        let mut c = Config::new(self.relay.clone());
        if let Some(p) = &self.prefix {
            let p = p.trim_end_matches('.');
            if !crate::line::valid_path(p.as_bytes()) {
                bail!("--prefix `{p}` cannot be a metric path (empty, or holds whitespace)");
            }
            c.prefix = p.to_owned();
        }
        c.interval = (self.interval > 0).then(|| Duration::from_secs(self.interval));
        c.max_message = self.max_message;
        c.queue = self.queue;
        c.queue_bytes = self.queue_bytes;
        c.drop_when_full = self.drop_when_full;
        if self.timeout == 0 || self.send_timeout == 0 {
            bail!("--timeout and --send-timeout must be at least 1 second");
        }
        c.read_timeout = Duration::from_secs(self.timeout);
        c.send_timeout = Duration::from_secs(self.send_timeout);
        c.max_connections = self.max_connections;
        c.shutdown_grace = Duration::from_secs(self.shutdown_grace);
        c.replay = self.replay;
        c.replay_bytes = self.replay_bytes as usize;
        Ok(c)
    }
}

/// The binary: parse flags, set up logging, serve until SIGINT/SIGTERM.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    bucky_runtime::init_logging(if cli.debug { "debug" } else { "info" }, bucky_runtime::LogStyle::Daemon);
    match run(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bucky-pickle-relay: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: &Cli) -> anyhow::Result<()> {
    let mut config = cli.config()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().context("start the runtime")?;
    let diag = bucky_diag::Diagnostics::new(bucky_diag::DiagConfig {
        stall_threshold: cli.stall_threshold.max(Duration::from_millis(150)),
        stuck_after: cli.stuck_after.max(Duration::from_millis(100)),
        diag_file: cli.diag_file.clone(),
        ..bucky_diag::DiagConfig::new("bucky-pickle-relay")
    })?;
    diag.start(rt.handle()).context("cannot start the diagnostics")?;
    config.diagnostics = Some(diag);
    rt.block_on(async {
        let mut last = None;
        for addr in bind_candidates(&cli.bind)? {
            match TcpListener::bind(addr).await {
                Ok(l) => {
                    crate::run(l, config, crate::shutdown_signal()).await;
                    return Ok(());
                }
                Err(e) => last = Some((addr, e)),
            }
        }
        match last {
            Some((addr, e)) => Err(e).with_context(|| format!("cannot listen on {addr} (--bind {})", cli.bind)),
            None => bail!("--bind {} gives no address", cli.bind),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("1MiB"), Ok(1 << 20));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("2 GiB"), Ok(2 << 30));
        assert!(parse_size("4GiB").is_err());
        assert!(parse_size("1x").is_err());
        assert!(parse_size("").is_err());
    }

    #[test]
    fn flags_of_the_original() {
        let cli = Cli::try_parse_from([
            "bucky-pickle-relay",
            "-b",
            ":2005",
            "-p",
            "relays.me.",
            "-x",
            "2097152",
            "-q",
            "0",
            "-i",
            "10",
            "-t",
            "5",
            "-s",
            "3",
            "-d",
            "relay:2003",
        ])
        .unwrap();
        let c = cli.config().unwrap();
        assert_eq!(c.prefix, "relays.me");
        assert_eq!(c.max_message, 2 << 20);
        assert_eq!(c.queue, 0);
        assert_eq!(c.interval, Some(Duration::from_secs(10)));
        assert_eq!(c.read_timeout, Duration::from_secs(5));
        assert_eq!(c.send_timeout, Duration::from_secs(3));
        assert_eq!(bind_candidates(&cli.bind).unwrap()[1], "0.0.0.0:2005".parse().unwrap());
        assert_eq!((c.replay, c.replay_bytes), (ReplayPolicy::Unacked, 4 << 20), "the documented defaults");
        let c = Cli::try_parse_from(["bucky-pickle-relay", "--replay", "none", "h:1"]).unwrap().config().unwrap();
        assert_eq!(c.replay, ReplayPolicy::None);
        let c = Cli::try_parse_from(["bucky-pickle-relay", "--replay", "window", "--replay-bytes", "1M", "h:1"])
            .unwrap()
            .config()
            .unwrap();
        assert_eq!((c.replay, c.replay_bytes), (ReplayPolicy::Window, 1 << 20));
        assert!(Cli::try_parse_from(["bucky-pickle-relay", "--replay", "all", "h:1"]).is_err());
        assert!(Cli::try_parse_from(["bucky-pickle-relay", "nohostport"]).unwrap().config().is_err());
        assert!(Cli::try_parse_from(["bucky-pickle-relay", "-p", "a b", "h:1"]).unwrap().config().is_err());
    }
}
