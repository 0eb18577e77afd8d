//! The decoder against pickles produced by CPython (the venv's Python, `tests/oracle/pickle_fixtures.py`):
//! protocols 0–5, Python 2 `STRING` opcodes, edge values, odd shapes, and pickles that must be refused.
//! Every line we would send must parse back to exactly the f64 carbon's `float()` computes.

use std::process::Command;

use bucky_pickle_relay::line::write_pickle;
use bucky_pickle_relay::pickle::Decoder;
use serde_json::Value;
use test_support::{oracle_python, oracle_script};

fn fixtures() -> Value {
    let python = oracle_python();
    let out = Command::new(&python).arg(oracle_script("pickle_fixtures.py")).output().expect("run pickle_fixtures.py");
    assert!(out.status.success(), "pickle_fixtures.py failed: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("fixtures are JSON")
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex")).collect()
}

fn bits(s: &str) -> u64 {
    u64::from_str_radix(s, 16).expect("hex bits")
}

#[test]
fn cpython_pickles_decode_exactly_as_carbon_reads_them() {
    let doc = fixtures();
    let cases = doc["cases"].as_array().expect("cases");
    let mut decoder = Decoder::default();
    let (mut accepted, mut refused, mut lines_checked) = (0, 0, 0);
    let mut protocols_seen = [false; 6];
    for case in cases {
        let name = format!("{} (protocol {})", case["name"].as_str().unwrap(), case["protocol"]);
        let frame = unhex(case["pickle"].as_str().unwrap());
        let mut out = Vec::new();
        let result = decoder
            .decode(&frame)
            .map_err(|e| e.to_string())
            .and_then(|p| write_pickle(&mut out, &p, usize::MAX).map_err(|e| e.to_string()));
        if case["refuse"].as_bool().unwrap() {
            let err = result.expect_err(&format!("{name} must be refused"));
            assert!(!err.is_empty());
            refused += 1;
            continue;
        }
        let converted = result.unwrap_or_else(|e| panic!("{name}: {e}"));
        protocols_seen[case["protocol"].as_u64().unwrap() as usize] = true;
        accepted += 1;
        let expect = case["expect"].as_array().unwrap();
        let oks: Vec<&Vec<Value>> =
            expect.iter().map(|e| e.as_array().unwrap()).filter(|e| e[0].as_str() == Some("ok")).collect();
        assert_eq!(converted.skipped as usize, expect.len() - oks.len(), "{name}: skipped count");
        assert_eq!(converted.metrics as usize, oks.len(), "{name}: metric count");
        let text = String::from_utf8(out).unwrap_or_else(|_| panic!("{name}: output is not UTF-8"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), oks.len(), "{name}");
        for (line, ok) in lines.iter().zip(oks) {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "{name}: line {line:?}");
            assert_eq!(fields[0], ok[1].as_str().unwrap(), "{name}: path");
            let value: f64 = fields[1].parse().unwrap_or_else(|_| panic!("{name}: value in {line:?}"));
            let ts: f64 = fields[2].parse().unwrap_or_else(|_| panic!("{name}: timestamp in {line:?}"));
            assert_eq!(value.to_bits(), bits(ok[3].as_str().unwrap()), "{name}: value bits in {line:?}");
            assert_eq!(ts.to_bits(), bits(ok[2].as_str().unwrap()), "{name}: timestamp bits in {line:?}");
            lines_checked += 1;
        }
    }
    assert!(protocols_seen.iter().all(|&s| s), "every protocol 0-5 covered: {protocols_seen:?}");
    assert!(accepted >= 40 && refused >= 30 && lines_checked > 15_000, "{accepted} {refused} {lines_checked}");
}
