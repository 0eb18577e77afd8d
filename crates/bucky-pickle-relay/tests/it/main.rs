//! bucky-pickle-relay's one integration-test binary (links once): each module is one area.
//!
//! - `cpython`: the decoder against pickles CPython produces;
//! - `server`: the relay in-process against a sink: delivery, back-pressure, outages, hostile senders;
//! - `replay`: what the relay resends after its downstream restarts (`--replay`), Linux only.

mod cpython;
#[cfg(target_os = "linux")]
mod replay;
mod server;
mod support;
