//! The whisper crate's one integration-test binary (links once): each module is one area.
//!
//! - `oracle`: random operations judged against whisper.py and carbonate 1.1.10 (the harness is
//!   `test_support::whisper_oracle`);
//! - `hostile`: invalid and hostile files are refused, never panicked on, never half-written;
//! - `fuzz`: every entry point on random bytes for a time budget (`BUCKY_FUZZ_SECONDS`).

mod fuzz;
mod hostile;
mod oracle;
