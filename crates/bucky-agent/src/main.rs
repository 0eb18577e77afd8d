//! The `bucky-agent` binary: logging, flags (Go-style spellings accepted), then [`bucky_agent::run`].

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = bucky_agent::Cli::parse_from(bucky_agent::cli::go_style_args(std::env::args_os()));
    match bucky_agent::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bucky-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}
