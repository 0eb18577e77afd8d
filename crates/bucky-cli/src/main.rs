//! The `bucky` binary: parse flags, hand over to the library, turn the outcome into an exit code.

use std::io::Write;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};

fn main() -> ExitCode {
    bucky_runtime::init_logging("warn", bucky_runtime::LogStyle::Command);
    let args = bucky_cli::cli::go_style_args(&bucky_cli::Cli::command(), std::env::args_os());
    let cli = match bucky_cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        // A flag the command does not have: one line naming it and the commands that have it.
        Err(e) if e.kind() == clap::error::ErrorKind::UnknownArgument => {
            let flag = e.get(clap::error::ContextKind::InvalidArg).map(ToString::to_string).unwrap_or_default();
            let line = bucky_cli::cli::unknown_flag(&bucky_cli::Cli::command(), &args, &flag);
            let _ = writeln!(std::io::stderr().lock(), "bucky: error: {line}");
            return ExitCode::from(2);
        }
        Err(e) => e.exit(),
    };
    bucky_cli::exit_code(bucky_cli::run(cli))
}
