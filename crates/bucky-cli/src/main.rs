//! The `bucky` binary: parse flags, hand over to the library, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    bucky_cli::init_tracing();
    let cli = bucky_cli::Cli::parse();
    bucky_cli::exit_code(bucky_cli::run(cli))
}
