//! Decoder tests that need no Python: hostile inputs (hand-written on purpose) and the encoder's output.
//! Pickles produced by CPython itself are checked in `tests/cpython.rs`.

use super::*;

type Item = Result<(Vec<u8>, Number, Number), Skip>;

fn decode(bytes: &[u8]) -> Result<Vec<Item>, DecodeError> {
    let mut d = Decoder::default();
    let p = d.decode(bytes)?;
    Ok(p.metrics().map(|m| m.map(|m| (m.path.to_vec(), m.timestamp, m.value))).collect())
}

fn refused(bytes: &[u8]) -> DecodeError {
    decode(bytes).expect_err("must be refused")
}

#[test]
fn encoder_output_round_trips() {
    let metrics = vec![("a.b", 1_700_000_000i64, 1.5f64), ("c", -1, -0.0), ("d", 1 << 40, f64::MAX)];
    let mut buf = Vec::new();
    crate::encode::pickle(&mut buf, &metrics);
    let got = decode(&buf).unwrap();
    assert_eq!(got.len(), 3);
    for (g, (p, t, v)) in got.into_iter().zip(metrics) {
        let (gp, gt, gv) = g.unwrap();
        assert_eq!(gp, p.as_bytes());
        assert_eq!(gt, Number::Int(t));
        assert_eq!(gv.as_f64().to_bits(), v.to_bits());
    }
}

#[test]
fn code_execution_is_refused() {
    // pickle.dumps of a class whose __reduce__ is (os.system, ("id",)), protocol 0 and 2.
    let p0 = b"cposix\nsystem\np0\n(Vid\np1\ntp2\nRp3\n.";
    assert!(matches!(refused(p0), DecodeError::Refused { name: "GLOBAL", offset: 0, .. }));
    let p2 = b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.";
    assert!(matches!(refused(p2), DecodeError::Refused { name: "GLOBAL", .. }));
    // Protocol 4's STACK_GLOBAL and the object builders.
    let p4 = b"\x80\x04\x8c\x05posix\x94\x8c\x06system\x94\x93\x94.";
    assert!(matches!(refused(p4), DecodeError::Refused { name: "STACK_GLOBAL", .. }));
    for (op, name) in
        [(b'R', "REDUCE"), (b'b', "BUILD"), (b'i', "INST"), (b'o', "OBJ"), (0x81, "NEWOBJ"), (b'}', "EMPTY_DICT")]
    {
        let bytes = [0x80, 2, b'N', op, b'.'];
        assert!(matches!(refused(&bytes), DecodeError::Refused { name: n, offset: 3, .. } if n == name), "{name}");
    }
}

#[test]
fn garbage_and_plaintext_are_refused() {
    assert!(matches!(refused(b"foo.bar 1 1700000000\n"), DecodeError::Unknown { .. } | DecodeError::Refused { .. }));
    assert!(matches!(refused(&[0xff, 0xfe, 0xfd]), DecodeError::Unknown { opcode: 0xff, offset: 0 }));
    assert_eq!(refused(b""), DecodeError::NoStop);
    assert_eq!(refused(b"\x80\x02]"), DecodeError::NoStop);
    assert_eq!(refused(b"\x80\x09]."), DecodeError::Protocol(9));
    assert_eq!(refused(b"]..."), DecodeError::Trailing(2));
    assert_eq!(refused(b"N."), DecodeError::NotAList("None"));
    assert_eq!(refused(b"K\x01."), DecodeError::NotAList("an int"));
    assert_eq!(refused(b"]]."), DecodeError::Leftover { values: 2, marks: 0 });
    assert_eq!(refused(b"](."), DecodeError::Leftover { values: 1, marks: 1 });
}

#[test]
fn truncated_arguments_are_refused() {
    for bytes in [
        &b"\x80"[..],
        b"J\x01\x02",
        b"G\x00\x00",
        b"X\xff\xff\xff\x7fabc.",
        b"T\x10\x00\x00\x00abc.",
        b"\x8c\x10abc.",
        b"\x8a\x09\x01\x02.",
        b"\x95\xff\xff\xff\xff\xff\xff\xff\xff].",
        b"Vno newline",
        b"I12",
    ] {
        assert!(matches!(refused(bytes), DecodeError::Truncated { .. }), "{bytes:?}");
    }
}

#[test]
fn malformed_arguments_are_refused() {
    assert!(matches!(refused(b"Iabc\n."), DecodeError::Malformed { what: "INT", .. }));
    assert!(matches!(refused(b"Fx\n."), DecodeError::Malformed { what: "FLOAT", .. }));
    assert!(matches!(refused(b"Sunquoted\n."), DecodeError::Malformed { .. }));
    assert!(matches!(refused(b"S'bad\\x4'\n."), DecodeError::Malformed { .. }));
    assert!(matches!(refused(b"V\\u12\n."), DecodeError::Malformed { .. }));
    assert!(matches!(refused(b"T\xff\xff\xff\xff."), DecodeError::Malformed { .. }));
}

#[test]
fn stack_misuse_is_refused() {
    assert!(matches!(refused(b"a."), DecodeError::Stack { what: "APPEND", .. }));
    assert!(matches!(refused(b"Na."), DecodeError::Stack { what: "APPEND", .. }));
    assert!(matches!(refused(b"NNa."), DecodeError::Stack { what: "APPEND", .. }), "APPEND to a non-list");
    assert!(matches!(refused(b"e."), DecodeError::Stack { what: "APPENDS", .. }));
    assert!(matches!(refused(b"t."), DecodeError::Stack { what: "TUPLE", .. }));
    assert!(matches!(refused(b"N(\x86."), DecodeError::Stack { .. }), "TUPLE2 may not reach below a mark");
    assert!(matches!(refused(b"(q\x00."), DecodeError::Stack { .. }), "PUT of nothing above a mark");
}

#[test]
fn memo_is_bounded() {
    assert!(matches!(refused(b"h\x00."), DecodeError::Memo { index: 0, .. }));
    assert!(matches!(refused(b"Nq\x05h\x04."), DecodeError::Memo { index: 4, .. }), "unset slot");
    // A LONG_BINPUT index far beyond what the frame could hold would allocate gigabytes.
    assert!(matches!(refused(b"Nr\xff\xff\xff\xff."), DecodeError::Memo { index: 0xffff_ffff, .. }));
    assert!(matches!(refused(b"Np99999999\n."), DecodeError::Memo { .. }));
    assert!(matches!(refused(b"Nj\x00\x00\x00\x01."), DecodeError::Memo { .. }));
}

#[test]
fn nesting_is_bounded() {
    let deep_marks: Vec<u8> = std::iter::repeat_n(b'(', 100).chain(*b"N.").collect();
    assert!(matches!(refused(&deep_marks), DecodeError::TooDeep { limit: 32, .. }));
    let mut deep_tuples = vec![b'N'];
    deep_tuples.extend(std::iter::repeat_n(0x85u8, 100));
    deep_tuples.push(b'.');
    assert!(matches!(refused(&deep_tuples), DecodeError::TooDeep { .. }));
    // MARK … MARK ] LIST … LIST: lists of lists 40 deep (the mark bound or the depth bound refuses it).
    let mut nested = b"]".to_vec();
    for _ in 0..40 {
        nested.splice(0..0, [b'(']);
        nested.push(b'l');
    }
    nested.push(b'.');
    assert!(matches!(refused(&nested), DecodeError::TooDeep { .. }), "40 levels");
    // A list appended to itself (through the memo) is a cycle: harmless (nothing recurses), and each
    // self-append deepens it, so repeating it hits the bound.
    let mut cycle = b"]q\x00".to_vec();
    cycle.extend(std::iter::repeat_n(*b"h\x00a", 40).flatten());
    cycle.push(b'.');
    assert!(matches!(refused(&cycle), DecodeError::TooDeep { .. }));
}

#[test]
fn huge_claims_allocate_nothing() {
    // Lengths beyond the frame are refused before anything is reserved.
    assert!(matches!(refused(b"\x8d\xff\xff\xff\xff\xff\xff\xff\x7f."), DecodeError::Truncated { .. }));
    assert!(matches!(refused(b"\x8b\xff\xff\xff\x7f."), DecodeError::Truncated { .. }));
}

#[test]
fn shape_errors_skip_single_items() {
    // [("a", (1, 2)), None, ("b", 3), (4, (1, 2)), ("c", (None, 2)), ("d", (1, "x")), ["e", [5, 6]]]
    let bytes = b"\x80\x02](X\x01\x00\x00\x00aK\x01K\x02\x86\x86NX\x01\x00\x00\x00bK\x03\x86K\x04K\x01K\x02\x86\x86X\x01\x00\x00\x00cNK\x02\x86\x86X\x01\x00\x00\x00dK\x01X\x01\x00\x00\x00x\x86\x86(X\x01\x00\x00\x00e(K\x05K\x06lle.";
    let got = decode(bytes).unwrap();
    assert_eq!(
        got,
        vec![
            Ok((b"a".to_vec(), Number::Int(1), Number::Int(2))),
            Err(Skip::Shape),
            Err(Skip::Shape),
            Err(Skip::PathNotString),
            Err(Skip::TimestampNotNumber),
            Err(Skip::ValueNotNumber),
            Ok((b"e".to_vec(), Number::Int(5), Number::Int(6))),
        ]
    );
}

#[test]
fn big_integers_round_like_python() {
    // 2**64 + 1 (LONG1, 9 bytes) rounds to 2**64; -(2**70) exactly; 2**1024 overflows (skipped).
    assert!(matches!(int_from_le(&[1, 0, 0, 0, 0, 0, 0, 0, 1]), Val::BigInt(f) if f == 18446744073709551616.0));
    let mut neg = vec![0u8; 8];
    neg.push(0xc0); // -(2**70) in 9 bytes two's complement
    assert!(matches!(int_from_le(&neg), Val::BigInt(f) if f == -(2f64.powi(70))));
    let mut huge = vec![0u8; 128];
    huge.push(1);
    assert!(matches!(int_from_le(&huge), Val::BigInt(f) if f.is_infinite()));
    // Ties to even: 2**53 + 1 is halfway between 2**53 and 2**53 + 2, and rounds to 2**53.
    let mut m = vec![0u8; 16];
    m[..8].copy_from_slice(&((1u64 << 53) + 1).to_le_bytes());
    assert_eq!(magnitude_to_f64(&m), 9007199254740992.0);
    // Sticky bits decide a would-be tie: 2**80 + 2**27 + 1 rounds up.
    let v: u128 = (1 << 80) + (1 << 27) + 1;
    assert_eq!(magnitude_to_f64(&v.to_le_bytes()), v as f64);
}

#[test]
fn python_float_strings() {
    assert_eq!(python_float(b" 12.5 \n"), Some(12.5));
    assert_eq!(python_float(b"1_000.5"), Some(1000.5));
    assert_eq!(python_float(b"-inf"), Some(f64::NEG_INFINITY));
    assert!(python_float(b"nan").unwrap().is_nan());
    assert_eq!(python_float(b"1e3"), Some(1000.0));
    for bad in [&b""[..], b"_1", b"1_", b"1__0", b"0x10", b"1e", b"abc", b"\xff"] {
        assert_eq!(python_float(bad), None, "{bad:?}");
    }
}

#[test]
fn text_escapes() {
    let mut out = Vec::new();
    raw_unicode_escape(b"a\\u00e9\\U0001F600\\\\u0041\xe9", &mut out).unwrap();
    assert_eq!(String::from_utf8(out).unwrap(), "aé😀\\\\u0041é");
    let mut out = Vec::new();
    escape_decode(b"a\\x41\\101\\n\\'\\q", &mut out).unwrap();
    assert_eq!(out, b"aAA\n'\\q");
}
