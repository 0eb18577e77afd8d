//! `bucky-dist`: writes the man pages and shell completions of `bucky`, `bucky-agent` and
//! `bucky-pickle-relay`, generated from their clap definitions (the only source of their flags and help).
//! `scripts/package.sh` runs it while staging the Debian package; nothing it writes is kept in git.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

mod completions;
mod man;
mod programs;

/// bucky-dist: generate bucky's man pages and shell completions from the clap definitions.
///
/// Run by scripts/package.sh; the files are generated from the same clap types the binaries parse their
/// flags with, so they cannot drift from `--help`.
#[derive(Debug, Parser)]
#[command(name = "bucky-dist", version, max_term_width = 100)]
struct Cli {
    /// What to generate.
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Man pages, uncompressed: DIR/man1/bucky.1 and one page per subcommand (bucky-rebalance.1,
    /// bucky-whisper-create.1, …), DIR/man8/bucky-agent.8 and DIR/man8/bucky-pickle-relay.8.
    Man {
        /// Output directory (created if missing; existing pages are overwritten).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
        /// Date printed in the pages' footer, YYYY-MM-DD (scripts/package.sh passes the last commit's, so
        /// that a rebuild gives the same pages). Default: today (UTC).
        #[arg(long, value_name = "YYYY-MM-DD", value_parser = man::parse_date)]
        date: Option<String>,
    },
    /// Shell completions for the three programs: DIR/bash/NAME, DIR/zsh/_NAME, DIR/fish/NAME.fish (the
    /// names bash-completion, zsh's vendor-completions and fish's vendor_completions.d look for).
    Completions {
        /// Output directory (created if missing; existing files are overwritten).
        #[arg(value_name = "DIR")]
        dir: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let written = match &cli.command {
        Command::Man { dir, date } => man::write_all(dir, date.clone().unwrap_or_else(man::today))
            .with_context(|| format!("cannot write man pages into {}", dir.display())),
        Command::Completions { dir } => completions::write_all(dir)
            .with_context(|| format!("cannot write shell completions into {}", dir.display())),
    };
    match written {
        Ok(files) => {
            // The list is informative: a closed stdout (`| head`) must not turn success into a panic.
            let mut out = std::io::stdout().lock();
            for file in files {
                if writeln!(out, "{}", file.display()).is_err() {
                    break;
                }
            }
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("bucky-dist: {err:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
