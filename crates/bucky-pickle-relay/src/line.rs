//! Graphite plaintext lines: `path value timestamp\n`, written so the receiver parses back the very same
//! f64 that Python's `float()` gives for the pickled value.
//!
//! Numbers are written in their shortest round-trip form (like Python's `repr`): integers exactly
//! (`42`, which carbon reads as `42.0`), floats with the fewest digits that parse back to the same bits
//! (`0.1`, `1.7976931348623157e308`, `5e-324`, `-0`, `inf`). Paths are passed through byte for byte;
//! a path the plaintext protocol cannot carry (whitespace, control characters, not UTF-8, empty or longer
//! than [`MAX_PATH_LEN`]) is skipped rather than mangled or allowed to inject lines.
//!
//! ```
//! use bucky_pickle_relay::line::write_f64;
//!
//! let mut out = Vec::new();
//! for v in [42.0, 0.1, 1e300, -0.0, 5e-324] {
//!     write_f64(&mut out, v);
//!     out.push(b' ');
//! }
//! assert_eq!(out, b"42 0.1 1e300 -0 5e-324 ");
//! ```

use std::io::Write as _;

use crate::pickle::{Metric, Number, Pickle, Skip};

/// Longest path accepted, in bytes (Linux's PATH_MAX; carbon could not create a longer file anyway).
pub const MAX_PATH_LEN: usize = 4096;

/// Writes a float in its shortest round-trip form (integers without a fraction, exponent form outside
/// 1e-4..1e16 like Python's `repr`).
pub fn write_f64(out: &mut Vec<u8>, v: f64) {
    let a = v.abs();
    if v.fract() == 0.0 && a < 1e15 {
        if v == 0.0 && v.is_sign_negative() {
            out.extend_from_slice(b"-0");
        } else {
            // Exact: |v| < 1e15 < 2^63.
            write_i64(out, v as i64);
        }
    } else if (1e-4..1e16).contains(&a) || !v.is_finite() {
        // Display prints the shortest digits that round-trip.
        let _ = write!(out, "{v}");
    } else {
        let _ = write!(out, "{v:e}");
    }
}

/// Writes an integer in decimal.
pub fn write_i64(out: &mut Vec<u8>, v: i64) {
    let mut buf = [0u8; 20];
    let mut n = v.unsigned_abs();
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

fn write_number(out: &mut Vec<u8>, n: Number) {
    match n {
        Number::Int(i) => write_i64(out, i),
        Number::Float(f) => write_f64(out, f),
    }
}

/// True when the plaintext protocol can carry `path` unchanged.
pub fn valid_path(path: &[u8]) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH_LEN
        && path.iter().all(|&b| b > b' ' && b != 0x7f)
        && std::str::from_utf8(path).is_ok()
}

/// Appends `metric` as one line, or says why it cannot be sent.
pub fn write_line(out: &mut Vec<u8>, m: &Metric<'_>) -> Result<(), Skip> {
    if !valid_path(m.path) {
        return Err(Skip::BadPath);
    }
    if m.value.as_f64().is_nan() {
        return Err(Skip::NaN);
    }
    if !m.timestamp.as_f64().is_finite() {
        return Err(Skip::TimestampNotNumber);
    }
    out.extend_from_slice(m.path);
    out.push(b' ');
    write_number(out, m.value);
    out.push(b' ');
    write_number(out, m.timestamp);
    out.push(b'\n');
    Ok(())
}

/// What [`write_pickle`] did with one pickle.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Converted {
    /// Lines written.
    pub metrics: u32,
    /// Items skipped.
    pub skipped: u32,
    /// Why the first skipped item was skipped.
    pub first_skip: Option<Skip>,
}

/// The plaintext of one pickle would exceed the given limit (memo references can repeat a long path).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the pickle expands to more than {limit} bytes of plaintext")]
pub struct TooLarge {
    /// The limit.
    pub limit: usize,
}

/// Appends every sendable metric of `pickle` to `out` as lines, at most `limit` bytes in all.
pub fn write_pickle(out: &mut Vec<u8>, pickle: &Pickle<'_>, limit: usize) -> Result<Converted, TooLarge> {
    let start = out.len();
    let mut c = Converted::default();
    for m in pickle.metrics() {
        match m.and_then(|m| write_line(out, &m)) {
            Ok(()) => c.metrics += 1,
            Err(skip) => {
                c.skipped += 1;
                c.first_skip.get_or_insert(skip);
            }
        }
        if out.len() - start > limit {
            out.truncate(start);
            return Err(TooLarge { limit });
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(v: f64) -> String {
        let mut out = Vec::new();
        write_f64(&mut out, v);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn floats_are_shortest_and_round_trip() {
        assert_eq!(f(42.0), "42");
        assert_eq!(f(-42.0), "-42");
        assert_eq!(f(0.0), "0");
        assert_eq!(f(-0.0), "-0");
        assert_eq!(f(0.1), "0.1");
        assert_eq!(f(1e300), "1e300");
        assert_eq!(f(1e16), "1e16");
        assert_eq!(f(1e15), "1000000000000000");
        assert_eq!(f(123456789012345.6), "123456789012345.6");
        assert_eq!(f(0.0001), "0.0001");
        assert_eq!(f(0.00001), "1e-5");
        assert_eq!(f(5e-324), "5e-324");
        assert_eq!(f(f64::MAX), "1.7976931348623157e308");
        assert_eq!(f(f64::INFINITY), "inf");
        assert_eq!(f(f64::NEG_INFINITY), "-inf");
        let mut x = 0x1234_5678_9abc_def0u64;
        for _ in 0..20_000 {
            // xorshift over all bit patterns: every finite value parses back to the same bits.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = f64::from_bits(x);
            if v.is_nan() {
                continue;
            }
            let s = f(v);
            assert_eq!(s.parse::<f64>().unwrap().to_bits(), v.to_bits(), "{s}");
        }
    }

    #[test]
    fn integers() {
        for v in [0, 1, -1, 9, 10, i64::MAX, i64::MIN, 1_700_000_000] {
            let mut out = Vec::new();
            write_i64(&mut out, v);
            assert_eq!(out, v.to_string().as_bytes());
        }
    }

    #[test]
    fn paths_that_cannot_be_carried_are_refused() {
        assert!(valid_path(b"a.b.c"));
        assert!(valid_path("ünï.cödé".as_bytes()));
        for bad in [&b""[..], b"a b", b"a\nb", b"a\tb", b"a\rb", b"a\0b", b"a\x7fb", b"\xff\xfe"] {
            assert!(!valid_path(bad), "{bad:?}");
        }
        assert!(valid_path(&vec![b'a'; MAX_PATH_LEN]));
        assert!(!valid_path(&vec![b'a'; MAX_PATH_LEN + 1]));
    }

    #[test]
    fn memo_amplification_is_capped() {
        // One 4000-byte path stored in the memo, then 10,000 metrics that reference it (16 bytes each):
        // a 164 kB pickle that would expand to 40 MB of lines.
        let point = b"K\x01G\x3f\xf0\0\0\0\0\0\0\x86\x86";
        let mut p = vec![0x80, 2, b']', b'(', b'X'];
        p.extend_from_slice(&4000u32.to_le_bytes());
        p.extend(std::iter::repeat_n(b'a', 4000));
        p.extend_from_slice(b"q\x00");
        p.extend_from_slice(point);
        for _ in 1..10_000 {
            p.extend_from_slice(b"h\x00");
            p.extend_from_slice(point);
        }
        p.extend_from_slice(b"e.");
        let mut d = crate::pickle::Decoder::default();
        let pickle = d.decode(&p).unwrap();
        let mut out = Vec::new();
        let limit = (p.len() * 32).max(4 << 20);
        assert_eq!(write_pickle(&mut out, &pickle, limit), Err(TooLarge { limit }));
        assert!(out.is_empty(), "nothing of a refused pickle is kept");
    }

    #[test]
    fn lines_and_skips() {
        let mut out = Vec::new();
        let m = Metric { path: b"a.b", timestamp: Number::Int(1_700_000_000), value: Number::Float(1.5) };
        write_line(&mut out, &m).unwrap();
        assert_eq!(out, b"a.b 1.5 1700000000\n");
        let nan = Metric { value: Number::Float(f64::NAN), ..m };
        assert_eq!(write_line(&mut out, &nan), Err(Skip::NaN));
        let inf_ts = Metric { timestamp: Number::Float(f64::INFINITY), ..m };
        assert_eq!(write_line(&mut out, &inf_ts), Err(Skip::TimestampNotNumber));
        let frac_ts = Metric { timestamp: Number::Float(1_700_000_000.25), ..m };
        write_line(&mut out, &frac_ts).unwrap();
        assert!(out.ends_with(b"a.b 1.5 1700000000.25\n"));
    }
}
