//! Helpers of the unit tests: whisper images at a fixed clock (shared with the end-to-end tests).

pub(crate) use test_support::minutes::{now, points, wsp, wsp_with};
