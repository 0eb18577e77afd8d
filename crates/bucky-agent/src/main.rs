//! The `bucky-agent` binary: logging, flags (Go-style spellings accepted), then [`bucky_agent::run`].

use std::process::ExitCode;

use bucky_runtime::{init_logging, LogStyle};
use clap::Parser;

fn main() -> ExitCode {
    init_logging("info", LogStyle::Daemon);
    let cli = bucky_agent::Cli::parse_from(bucky_agent::cli::go_style_args(std::env::args_os()));
    match bucky_agent::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("bucky-agent: {err:#}");
            ExitCode::FAILURE
        }
    }
}
