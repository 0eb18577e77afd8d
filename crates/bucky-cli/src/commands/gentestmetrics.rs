//! `bucky gentestmetrics`: test metrics in Graphite's plaintext protocol (`name value timestamp`), with
//! buckytools' flags; `--send HOST:PORT` streams them to a carbon or relay line receiver instead of
//! stdout.

use std::io::{BufWriter, Write};
use std::net::TcpStream;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rand::Rng;

use crate::cli::GenArgs;
use crate::config::Addr;
use crate::{ExitStatus, UsageError};

/// Generates (and prints or sends) the lines.
pub(super) fn run(args: &GenArgs) -> anyhow::Result<ExitStatus> {
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
