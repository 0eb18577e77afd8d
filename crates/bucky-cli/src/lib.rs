//! `bucky`: the operator CLI for consistent-hashing Graphite clusters.
//!
//! `main.rs` only parses flags; every subcommand lives in its own module under `commands` and returns an
//! [`ExitStatus`]. Errors are printed once, by [`exit_code`], with their whole context chain on one line.
//!
//! The layers, top down (a module uses only those below it):
//! - [`cli`]: every clap type, nothing else; `commands` dispatches each subcommand to its module.
//! - `settings` turns the clap types into validated values ([`config::Config`], `Selection`); a regex is
//!   checked by clap itself (`names::MetricRegex`).
//! - `plan` decides the work: which agents to list, the misplaced copies, the jobs of `rebalance`, `drain`
//!   and `backfill`; `scope` finds and stats the metrics of `list`, `du`, `stat`, `tar`, `delete`.
//! - `audit` compares every replica of the metrics by digests (`audit`, and the findings `repair` plans from).
//! - [`engine`]: the copy/verify/delete engine behind `rebalance`, `drain`, `backfill`, `copy` and `repair`.
//! - `ctx` (the config, the client and the printer a command works with), `cluster` (discovers the ring and
//!   checks its health; `placement`: the rules buckyd leaves unsaid), [`client`] (buckyd's HTTP API:
//!   timeouts, retries, the 202 list-cache protocol; `health` remembers the nodes found unreachable),
//!   [`printer`] (every byte written to stdout and stderr, progress bars included), `names` (reading and
//!   streaming metric names), [`config`] (the validated values), `error` (the one error-chain formatter).

pub mod audit;
pub mod cli;
pub mod client;
mod cluster;
mod commands;
pub mod config;
mod config_file;
mod ctx;
mod damping;
pub mod engine;
mod error;
mod exit;
mod health;
mod inflight;
mod names;
mod placement;
mod plan;
pub mod printer;
mod progress;
mod ringfile;
mod scope;
mod settings;

pub use cli::{Cli, Command};
pub use error::UsageError;
pub use exit::{exit_code, ExitStatus};

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    commands::run(cli.command)
}

/// Sets up `tracing` to stderr, filtered by `RUST_LOG` (default: warnings only).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .without_time()
        .try_init();
}
