//! What bucky's binaries (`bucky`, `bucky-agent`, `bucky-pickle-relay`) share around their work, so each
//! is set up the same way: [`init_logging`], [`shutdown_signal`], [`hostname`], and [`parse_size`] for
//! byte sizes given on a command line.
//!
//! Only binaries depend on this crate; the libraries they are built on (`whisper`, `hashring`,
//! `bucky-wire`, `ringconf`) do not.

mod host;
mod logging;
mod signal;
mod size;

pub use host::hostname;
pub use logging::{init_logging, LogStyle};
pub use signal::shutdown_signal;
pub use size::parse_size;
