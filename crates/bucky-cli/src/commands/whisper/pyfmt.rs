//! Python's number and JSON formatting, byte for byte, for the tools that reproduce whisper's scripts
//! (`whisper-dump.py`, `whisper-diff.py`): `'%.Ng' % x`, `repr(float)` and `json.dumps(…, sort_keys=True,
//! indent=2, separators=(',', ' : '))`.

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::os::unix::ffi::OsStrExt;

/// `'%.{precision}g' % v`: `precision` significant digits, fixed notation for exponents in
/// `-4..precision`, scientific (`e+XX`) otherwise, trailing zeros removed.
pub(crate) fn percent_g(v: f64, precision: usize) -> String {
    if let Some(special) = non_finite(v) {
        return special.to_owned();
    }
    let precision = precision.max(1);
    let sci = format!("{:.*e}", precision - 1, v);
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    if exponent >= -4 && exponent < precision as i64 {
        let decimals = (precision as i64 - 1 - exponent) as usize;
        strip_fraction_zeros(&format!("{v:.decimals$}")).to_owned()
    } else {
        format!("{}e{}", strip_fraction_zeros(mantissa), exponent_text(exponent))
    }
}

/// `'%{width}.{precision}g' % v`: right-aligned in `width` columns.
pub(crate) fn percent_g_width(v: f64, width: usize, precision: usize) -> String {
    format!("{:>width$}", percent_g(v, precision))
}

/// `repr(v)` (also `str(v)`) of a Python float: the shortest digits that round-trip, fixed notation with at
/// least one decimal for exponents in `-4..16`, scientific otherwise (`1e+16`, `1.5e-05`).
pub(crate) fn repr(v: f64) -> String {
    if let Some(special) = non_finite(v) {
        return special.to_owned();
    }
    let sci = format!("{v:e}"); // shortest round-trip digits: `-1.5e-5`, `1e16`
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exponent: i64 = exponent.parse().unwrap_or(0);
    if (-4..16).contains(&exponent) {
        let (sign, mantissa) = mantissa.strip_prefix('-').map_or(("", mantissa), |m| ("-", m));
        let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
        let point = exponent + 1; // digits before the decimal point
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point as usize >= digits.len() {
            format!("{digits}{}.0", "0".repeat(point as usize - digits.len()))
        } else {
            format!("{}.{}", &digits[..point as usize], &digits[point as usize..])
        };
        format!("{sign}{text}")
    } else {
        format!("{mantissa}e{}", exponent_text(exponent))
    }
}

fn non_finite(v: f64) -> Option<&'static str> {
    if v.is_nan() {
        Some("nan")
    } else if v == f64::INFINITY {
        Some("inf")
    } else if v == f64::NEG_INFINITY {
        Some("-inf")
    } else {
        None
    }
}

/// Python's exponent: a sign and at least two digits.
fn exponent_text(exponent: i64) -> String {
    format!("{}{:02}", if exponent < 0 { '-' } else { '+' }, exponent.abs())
}

fn strip_fraction_zeros(text: &str) -> &str {
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        text
    }
}

/// A JSON value as Python's `json` module writes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum PyJson {
    Null,
    Int(i64),
    Float(f64),
    /// Raw bytes (a path from the command line): Python decodes argv with surrogateescape.
    Str(Vec<u8>),
    List(Vec<PyJson>),
    /// Keys in the order given; callers pass them sorted (`sort_keys=True`).
    Object(Vec<(&'static str, PyJson)>),
}

impl PyJson {
    pub(crate) fn str(text: impl AsRef<OsStr>) -> PyJson {
        PyJson::Str(text.as_ref().as_bytes().to_vec())
    }

    pub(crate) fn opt_float(v: Option<f64>) -> PyJson {
        v.map_or(PyJson::Null, PyJson::Float)
    }

    /// `json.dumps(self, sort_keys=True, indent=2, separators=(',', ' : '))`.
    pub(crate) fn dumps_indented(&self) -> String {
        let mut out = String::new();
        self.write(&mut out, 0);
        out
    }

    fn write(&self, out: &mut String, depth: usize) {
        let indent = |out: &mut String, depth: usize| {
            out.push('\n');
            out.push_str(&"  ".repeat(depth));
        };
        match self {
            PyJson::Null => out.push_str("null"),
            PyJson::Int(i) => {
                let _ = write!(out, "{i}");
            }
            PyJson::Float(v) => out.push_str(&json_float(*v)),
            PyJson::Str(bytes) => write_json_string(out, bytes),
            PyJson::List(items) if items.is_empty() => out.push_str("[]"),
            PyJson::Object(items) if items.is_empty() => out.push_str("{}"),
            PyJson::List(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, depth + 1);
                    item.write(out, depth + 1);
                }
                indent(out, depth);
                out.push(']');
            }
            PyJson::Object(items) => {
                out.push('{');
                for (i, (key, value)) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    indent(out, depth + 1);
                    write_json_string(out, key.as_bytes());
                    out.push_str(" : ");
                    value.write(out, depth + 1);
                }
                indent(out, depth);
                out.push('}');
            }
        }
    }
}

/// A float in Python's JSON: `repr`, with `NaN`, `Infinity`, `-Infinity` for the non-finite ones.
fn json_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v == f64::INFINITY {
        "Infinity".into()
    } else if v == f64::NEG_INFINITY {
        "-Infinity".into()
    } else {
        repr(v)
    }
}

/// A string as `json.dumps` writes it with `ensure_ascii=True`; bytes that are not UTF-8 become the lone
/// surrogates (`\udcXX`) Python's surrogateescape decoding of argv gives them.
fn write_json_string(out: &mut String, bytes: &[u8]) {
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                ' '..='~' => out.push(c),
                _ => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        let _ = write!(out, "\\u{unit:04x}");
                    }
                }
            }
        }
        for &b in chunk.invalid() {
            let _ = write!(out, "\\u{:04x}", 0xdc00 + u16::from(b));
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_g_matches_python() {
        // Expected values printed by CPython 3.11.
        assert_eq!(percent_g(0.5, 6), "0.5");
        assert_eq!(percent_g(f64::from(0.3f32), 6), "0.3");
        assert_eq!(percent_g(0.0, 6), "0");
        assert_eq!(percent_g(-0.0, 35), "-0");
        assert_eq!(percent_g(0.1, 35), "0.1000000000000000055511151231257827");
        assert_eq!(percent_g(1e300, 35), "1.0000000000000000525047602552044202e+300");
        assert_eq!(percent_g(5e-324, 35), "4.9406564584124654417656879286822137e-324");
        assert_eq!(percent_g(123456789.0, 6), "1.23457e+08");
        assert_eq!(percent_g(0.0001, 6), "0.0001");
        assert_eq!(percent_g(0.00001, 6), "1e-05");
        assert_eq!(percent_g(999999.5, 6), "1e+06");
        assert_eq!(percent_g_width(f64::NAN, 10, 35), "       nan");
        // Exact ties round half to even, as CPython's dtoa does.
        for (v, p, python) in [
            (0.125, 2, "0.12"),
            (2.5, 1, "2"),
            (1.5, 1, "2"),
            (0.375, 2, "0.38"),
            (1.25, 2, "1.2"),
            (3.5, 1, "4"),
            (12.5, 2, "12"),
            (1099511627776.5, 13, "1099511627776"),
        ] {
            assert_eq!(percent_g(v, p), python, "%.{p}g of {v}");
        }
        assert_eq!(percent_g_width(-f64::INFINITY, 10, 35), "      -inf");
    }

    #[test]
    fn repr_matches_python() {
        assert_eq!(repr(1.0), "1.0");
        assert_eq!(repr(-0.0), "-0.0");
        assert_eq!(repr(1e16), "1e+16");
        assert_eq!(repr(1e15), "1000000000000000.0");
        assert_eq!(repr(1e-5), "1e-05");
        assert_eq!(repr(0.0001), "0.0001");
        assert_eq!(repr(1.5e300), "1.5e+300");
        assert_eq!(repr(123.456), "123.456");
        assert_eq!(repr(-0.00012), "-0.00012");
        assert_eq!(repr(f64::NAN), "nan");
    }

    #[test]
    fn json_matches_python() {
        let value = PyJson::Object(vec![
            ("a", PyJson::List(vec![PyJson::Float(f64::NAN), PyJson::Float(1e16), PyJson::Null])),
            ("b", PyJson::List(vec![])),
            ("c", PyJson::Str(b"\xc3\xa9\x01/\"\xff".to_vec())),
        ]);
        assert_eq!(
            value.dumps_indented(),
            "{\n  \"a\" : [\n    NaN,\n    1e+16,\n    null\n  ],\n  \"b\" : [],\n  \"c\" : \"\\u00e9\\u0001/\\\"\\udcff\"\n}"
        );
    }
}
