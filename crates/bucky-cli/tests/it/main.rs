//! bucky-cli's one integration-test binary (links once): each module is one area, run through the real
//! `bucky` binary or the library against in-process agents.
//!
//! - `whisper_cli`: `bucky whisper …` judged against whisper.py and carbonate (`test_support::whisper_oracle`);
//! - `ring`: `bucky ring locate` / `show` end to end;
//! - `engine_read_back`: the copy engine's verification against in-process agents.

mod engine_read_back;
mod ring;
mod support;
mod whisper_cli;
