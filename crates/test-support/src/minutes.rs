//! Whisper images on a clock of whole minutes, fixed for the test process: files written with points
//! "N minutes ago", read back as the same (minutes ago, value) pairs. Used by the agent's unit tests and
//! by the end-to-end tests of the agent.

use std::time::{SystemTime, UNIX_EPOCH};

use whisper::{CreateOptions, Point, Retention, WhisperBuf};

/// The tests' clock, minute-aligned and fixed for the whole process, so that "minutes ago" means the same
/// when a file is written and when it is checked.
pub fn now() -> i64 {
    static NOW: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *NOW.get_or_init(|| SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 / 60 * 60)
}

/// A whisper file with `retentions` holding `points` (minutes ago → value).
pub fn wsp_with(retentions: &str, points: &[(i64, f64)]) -> Vec<u8> {
    let header = whisper::header_for(&Retention::parse_list(retentions).unwrap(), &CreateOptions::default()).unwrap();
    let mut buf = WhisperBuf::empty(header);
    let now = now();
    let points: Vec<Point> = points.iter().map(|&(ago, v)| Point::new(now - ago * 60, v)).collect();
    buf.update_many(&points, now).unwrap();
    buf.into_bytes()
}

/// A `1m:1d` whisper file (17,308 bytes) holding `points` (minutes ago → value).
pub fn wsp(points: &[(i64, f64)]) -> Vec<u8> {
    wsp_with("1m:1d", points)
}

/// The non-empty points of the first archive, as (minutes ago, value), newest first.
pub fn points(bytes: &[u8]) -> Vec<(i64, f64)> {
    let now = now();
    let mut out: Vec<(i64, f64)> = WhisperBuf::from_bytes(bytes.to_vec()).unwrap().dump()[0]
        .iter()
        .filter(|(t, _)| *t != 0)
        .map(|&(t, v)| ((now - i64::from(t)) / 60, v))
        .collect();
    out.sort_by_key(|p| p.0);
    out
}
