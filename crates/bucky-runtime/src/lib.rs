//! What bucky's binaries (`bucky`, `bucky-agent`, `bucky-pickle-relay`) share around their work, so each
//! is set up the same way: [`init_logging`], [`shutdown_signal`], [`hostname`], [`parse_size`] and [`parse_duration`]
//! for byte sizes and durations given on a command line.
//!
//! Only binaries depend on this crate; the libraries they are built on (`whisper`, `hashring`,
//! `bucky-wire`, `ringconf`) do not.

mod duration;
mod host;
mod logging;
mod signal;
mod size;

pub use duration::parse_duration;
pub use host::hostname;
pub use logging::{init_logging, LogStyle};
pub use signal::shutdown_signal;
pub use size::parse_size;
