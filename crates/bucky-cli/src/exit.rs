//! How a command ends: its [`ExitStatus`], and the process exit code with the error printed once.

use std::io::Write;
use std::process::ExitCode;

use crate::error::{one_line, UsageError};

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
            let _ = writeln!(std::io::stderr().lock(), "bucky: error: {}", one_line(err.as_ref()));
            if err.chain().any(|cause| cause.downcast_ref::<UsageError>().is_some()) {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}
