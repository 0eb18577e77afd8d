//! A minimal sender side: carbon-framed protocol-2 pickles of `[(path, (timestamp, value)), …]`, as
//! carbon's `CarbonPickleClientProtocol` sends them (without the memo entries, which carry no data).
//! Used by the tests and the benchmark; handy for any Rust client of a pickle receiver.
//!
//! ```
//! use bucky_pickle_relay::{encode, pickle::Decoder};
//!
//! let mut frame = Vec::new();
//! encode::frame(&mut frame, &[("a.b", 1_700_000_000, 1.5)]);
//! let len = u32::from_be_bytes(frame[..4].try_into()?) as usize;
//! assert_eq!(len, frame.len() - 4);
//! let mut decoder = Decoder::default();
//! assert_eq!(decoder.decode(&frame[4..])?.len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// Appends one frame: the 4-byte big-endian length, then the pickle.
pub fn frame(out: &mut Vec<u8>, metrics: &[(&str, i64, f64)]) {
    let at = out.len();
    out.extend_from_slice(&[0; 4]);
    pickle(out, metrics);
    let len = u32::try_from(out.len() - at - 4).expect("pickle larger than 4 GiB");
    out[at..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// Appends the pickle alone (protocol 2, `APPENDS` in runs of 1000 as CPython writes them).
pub fn pickle(out: &mut Vec<u8>, metrics: &[(&str, i64, f64)]) {
    out.extend_from_slice(&[0x80, 2, b']']);
    for chunk in metrics.chunks(1000) {
        out.push(b'(');
        for &(path, ts, value) in chunk {
            let len = u32::try_from(path.len()).expect("path larger than 4 GiB");
            out.push(b'X');
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(path.as_bytes());
            match i32::try_from(ts) {
                Ok(ts) => {
                    out.push(b'J');
                    out.extend_from_slice(&ts.to_le_bytes());
                }
                Err(_) => {
                    out.extend_from_slice(&[0x8a, 8]);
                    out.extend_from_slice(&ts.to_le_bytes());
                }
            }
            out.push(b'G');
            out.extend_from_slice(&value.to_be_bytes());
            out.extend_from_slice(&[0x86, 0x86]);
        }
        out.push(b'e');
    }
    out.push(b'.');
}
