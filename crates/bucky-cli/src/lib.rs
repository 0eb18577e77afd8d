//! `bucky`: the operator CLI for consistent-hashing Graphite clusters.
//!
//! `main.rs` only parses flags; every subcommand lives in its own module under [`commands`] and returns an
//! [`ExitStatus`]. Errors are printed once, here, with their whole context chain.
//!
//! Layout of the cluster commands: [`cli`] holds the clap definitions, [`config`] turns the common flags
//! into a validated [`config::Config`], [`printer`] owns every byte written to stdout and stderr
//! (including the progress bars), [`client`] speaks buckyd's HTTP API (timeouts, retries, the 202
//! list-cache protocol; [`health`] remembers the nodes it found unreachable), [`cluster`] discovers the ring and checks its health ([`placement`]: the rules buckyd leaves unsaid), [`names`] reads and streams
//! metric names, and [`engine`] is the copy/verify/delete engine behind `rebalance`, `backfill` and `copy`.

use std::io::Write;
use std::process::ExitCode;

pub mod cli;
pub mod client;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod config_file;
pub mod engine;
mod engine_settings;
pub mod health;
pub mod names;
pub mod placement;
pub mod printer;
mod progress;
mod ringfile;

pub use cli::{Cli, Command};

/// How a command ended, decided in one place so exit codes stay consistent across subcommands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitStatus {
    /// Everything asked for was done.
    Success,
    /// The command ran but some of the work failed (reported on stderr).
    Failure,
    /// The command was refused: bad usage, or an unhealthy cluster.
    Usage,
    /// The command was aborted (a second Ctrl-C): 130, as a shell reports a process killed by SIGINT.
    Interrupted,
}

impl ExitStatus {
    /// `Success` when `ok`, `Failure` otherwise.
    pub fn from_ok(ok: bool) -> ExitStatus {
        if ok {
            ExitStatus::Success
        } else {
            ExitStatus::Failure
        }
    }
}

/// A failure caused by the user's input rather than by bucky or the system: exits with 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String);

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

/// The error chain on one line, `outer: inner: …`, leaving out a cause whose text the line already ends
/// with (library errors that print their source themselves would otherwise repeat it).
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.ends_with(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
        if cause.is::<client::ClientError>() {
            // Whole already (its network cause included); the rest of the chain repeats the URL.
            break;
        }
    }
    line
}

/// Prints an error chain once and maps the outcome to the process exit code.
/// A closed stdout (`bucky … | head`) is not an error.
pub fn exit_code(result: anyhow::Result<ExitStatus>) -> ExitCode {
    match result {
        Ok(ExitStatus::Success) => ExitCode::SUCCESS,
        Ok(ExitStatus::Failure) => ExitCode::from(1),
        Ok(ExitStatus::Usage) => ExitCode::from(2),
        Ok(ExitStatus::Interrupted) => ExitCode::from(130),
        Err(err) => {
            let broken_pipe = err.chain().any(|cause| {
                cause.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
            });
            if broken_pipe {
                return ExitCode::SUCCESS;
            }
            let _ = writeln!(std::io::stderr().lock(), "bucky: error: {}", one_line(&err));
            if err.chain().any(|cause| cause.downcast_ref::<UsageError>().is_some()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_do_not_repeat_a_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let err = anyhow::Error::new(whisper::Error::Io { path: "/x.wsp".into(), cause: io }).context("cannot open");
        assert_eq!(one_line(&err), "cannot open: /x.wsp: No such file or directory");
        let err = anyhow::anyhow!("inner").context("outer");
        assert_eq!(one_line(&err), "outer: inner");
    }

    /// An unreachable agent used to make a 250-character line naming its address three times (the client
    /// error, reqwest's "error sending request for url (…)", its causes): now once, with the root cause.
    #[test]
    fn an_unreachable_agent_is_named_once() {
        let addr = config::Addr { host: "127.0.0.1".into(), port: 9 };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let source = runtime
            .block_on(reqwest::Client::new().get(format!("http://{}/hashring", addr.authority())).send())
            .expect_err("nothing listens on port 9");
        let error = client::ClientError::Unreachable { addr: addr.to_string(), what: "GET /hashring".into(), source };
        let line = one_line(&anyhow::Error::new(error).context("cannot list"));
        assert_eq!(line.matches("127.0.0.1:9").count(), 1, "{line}");
        assert!(line.starts_with("cannot list: 127.0.0.1:9 is unreachable (GET /hashring): "), "{line}");
        assert!(line.to_lowercase().contains("refused"), "{line}");
        assert!(line.len() < 120, "{line}");
        let error = client::ClientError::Unreachable {
            addr: addr.to_string(),
            what: "GET /hashring".into(),
            source: runtime
                .block_on(reqwest::Client::new().get(format!("http://{}/hashring", addr.authority())).send())
                .expect_err("nothing listens on port 9"),
        };
        assert_eq!(cluster::short_error(&error).matches("127.0.0.1:9").count(), 1, "{}", cluster::short_error(&error));
    }
}
