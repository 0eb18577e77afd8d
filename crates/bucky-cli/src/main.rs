//! The `bucky` binary: parse flags, hand over to the library, turn the outcome into an exit code.

use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    bucky_cli::init_tracing();
    let args = bucky_cli::cli::go_style_args(&bucky_cli::Cli::command(), std::env::args_os());
    let cli = bucky_cli::Cli::parse_from(args);
    bucky_cli::exit_code(bucky_cli::run(cli))
}
