//! `bucky gentestmetrics`: test metrics in Graphite's plaintext protocol (`name value timestamp`), with
//! buckytools' flags; `--send HOST:PORT` streams them to a carbon or relay line receiver instead of
//! stdout.

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{ArgAction, Args};
use rand::Rng;

use crate::config::Addr;
use crate::{ExitStatus, UsageError};

/// `bucky gentestmetrics`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Prefix prepended to each metric name.
    #[arg(short = 'p', long, default_value = "test.")]
    pub prefix: String,
    /// Number of metric names to generate (000000, 000001, …).
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub count: u64,
    /// Timestamp/value pairs per metric.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub iterations: u64,
    /// Seconds between consecutive timestamps of a metric.
    #[arg(short = 'i', long, default_value_t = 60)]
    pub interval: i64,
    /// Upper bound (exclusive) of the random integer values.
    #[arg(short = 'l', long, default_value_t = 100)]
    pub limit: i64,
    /// Use this value instead of random ones.
    #[arg(short = 'v', long)]
    pub value: Option<i64>,
    /// Use the metric names in this file (one per line) instead of -c generated ones.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Newest timestamp (default now); the iterations end at it, stepping back by -i.
    #[arg(short = 's', long)]
    pub start: Option<i64>,
    /// Send the lines to this carbon line receiver (HOST:PORT, port default 2003) instead of stdout.
    #[arg(long, value_name = "HOST:PORT")]
    pub send: Option<String>,
}

/// Generates (and prints or sends) the lines.
pub fn run(args: &GenArgs) -> anyhow::Result<ExitStatus> {
    if args.interval <= 0 {
        return Err(UsageError("-i/--interval must be positive".into()).into());
    }
    if args.limit <= 0 && args.value.is_none() {
        return Err(UsageError("-l/--limit must be positive".into()).into());
    }
    let names: Vec<String> = match &args.file {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        None => (0..args.count).map(|c| format!("{c:06}")).collect(),
    };
    let start =
        args.start.unwrap_or_else(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
    let iterations = args.iterations.max(1) as i64;
    let mut timestamp = start - start.rem_euclid(args.interval) - args.interval * (iterations - 1);
    let sink: Box<dyn Write> = match &args.send {
        Some(target) => {
            let addr = Addr::parse(target, 2003)?;
            let stream = TcpStream::connect((addr.host.as_str(), addr.port))
                .with_context(|| format!("cannot connect to the line receiver {addr}"))?;
            stream.set_write_timeout(Some(Duration::from_secs(30)))?;
            Box::new(stream)
        }
        None => Box::new(std::io::stdout().lock()),
    };
    let mut out = BufWriter::with_capacity(64 * 1024, sink);
    let mut rng = rand::thread_rng();
    let mut lines = 0u64;
    for _ in 0..iterations {
        for name in &names {
            let value = args.value.unwrap_or_else(|| rng.gen_range(0..args.limit));
            writeln!(out, "{}{name} {value} {timestamp}", args.prefix)?;
            lines += 1;
        }
        timestamp += args.interval;
    }
    out.flush()?;
    if let Some(target) = &args.send {
        eprintln!("sent {lines} lines to {target}");
    }
    Ok(ExitStatus::Success)
}
