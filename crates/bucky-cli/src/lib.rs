//! `bucky`: the operator CLI for consistent-hashing Graphite clusters.
//!
//! `main.rs` only parses flags; every subcommand lives in its own module under [`commands`] and returns an
//! [`ExitStatus`]. Errors are printed once, here, with their whole context chain.

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

pub mod commands;

/// How a command ended, decided in one place so exit codes stay consistent across subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success,
    /// The command ran but some of the work failed (reported on stderr).
    Failure,
    /// The command was refused: bad usage, or an unhealthy cluster.
    Usage,
}

/// A failure caused by the user's input rather than by bucky or the system: exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

/// bucky — move, heal, back up and audit Whisper files across a Graphite cluster.
#[derive(Debug, Parser)]
#[command(name = "bucky", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Local whisper file tools: create, info, dump, update, fetch, merge, fill.
    #[command(subcommand)]
    Whisper(commands::whisper::WhisperCommand),
}

/// Runs one parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<ExitStatus> {
    match cli.command {
        Command::Whisper(cmd) => commands::whisper::run(cmd),
    }
}

/// Sets up `tracing` to stderr, filtered by `RUST_LOG` (default: warnings only).
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .try_init();
}

/// Prints an error chain once and maps the outcome to the process exit code.
/// A closed stdout (`bucky … | head`) is not an error.
pub fn exit_code(result: anyhow::Result<ExitStatus>) -> ExitCode {
    match result {
        Ok(ExitStatus::Success) => ExitCode::SUCCESS,
        Ok(ExitStatus::Failure) => ExitCode::from(1),
        Ok(ExitStatus::Usage) => ExitCode::from(2),
        Err(err) => {
            let broken_pipe = err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr().lock(), "bucky: error: {err:#}");
            if err.downcast_ref::<UsageError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
