//! What the whisper tools share: the clock, JSON floats, and the one line about a file a scan could not
//! handle.

use std::path::Path;

use serde_json::{json, Value};

use crate::error::one_line;

/// The system clock, in (fractional) epoch seconds.
pub(super) fn system_now() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// `--now` if given, else the system clock.
pub(super) fn now_or_clock(now: Option<i64>) -> i64 {
    now.unwrap_or_else(|| system_now() as i64)
}

/// One line about a file that could not be handled during a scan: invalid files by their reason, the
/// rest (I/O, lock timeouts) by their own message, which names the file, and its causes.
pub(super) fn one_line_error(path: &Path, err: &whisper::Error) -> String {
    match err.reason() {
        Some(reason) => format!("{}: not a valid whisper file: {reason}", path.display()),
        None => one_line(err),
    }
}

/// A float for JSON: non-finite values as the strings whisper's tooling uses.
pub(super) fn float_json(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v == f64::INFINITY {
        json!("Infinity")
    } else if v == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(v)
    }
}
