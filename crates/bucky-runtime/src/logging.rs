//! The one `tracing` set-up of every binary: lines to stderr, filtered by `RUST_LOG`, coloured only on a
//! terminal.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

/// Who reads the log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStyle {
    /// A daemon's log (journald, a file): each line starts with its time.
    Daemon,
    /// A command an operator runs: no timestamps, the terminal shows the lines as they come.
    Command,
}

/// Sends `tracing` events to stderr, filtered by `RUST_LOG` when it is set and valid, else by
/// `default_filter` (`"info"`, `"warn"`, … in `EnvFilter` syntax). A second call changes nothing.
pub fn init_logging(default_filter: &str, style: LogStyle) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    // Only fails when a subscriber is already installed: the first set-up stays, as documented.
    let _ = match style {
        LogStyle::Daemon => builder.try_init(),
        LogStyle::Command => builder.without_time().try_init(),
    };
}
