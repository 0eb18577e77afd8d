//! Batches: many metrics in one request, a bucky extension (buckyd answers `404`, and clients then fall
//! back to one request per metric).
//!
//! A rebalance moves each metric with three requests (read the source, heal the destination, delete the
//! source). On a fast disk the cost of a request (parsing, a trip through the blocking pool, waking the
//! threads involved) is larger than the cost of the file operations it asks for, so bucky-agent also
//! takes them by the batch:
//!
//! | route | request frames | answer frames (same order) |
//! |---|---|---|
//! | `POST /batch/read` | `name` | `200` + `Stat`, `ETag`, the file; or an error |
//! | `POST /batch/heal` | `name`, `Stat` (`ModTime`, `Size`), the file, optional `ETag` | `200` + `Report`, and the replica read back from disk: `Stat`, `ETag`, the file (left out when its `ETag` is the one given: the replica is then byte for byte the upload); or an error |
//! | `POST /batch/delete` | `name`, optional `IfMatch` | `200`; or an error (`404`, `412`, …) |
//! | `POST /batch/digest` | `name` | `200` + the digest as data; or an error (`404`, …): see [`crate::digest`] |
//! | `POST /batch/offload` | `name`, optional `Source`, `Overwrite` | `200` + `Report`, `Stat` and `SourceETag` of the source fetched, `ETag` of the replica, `Verified`; or an error (`404`: no source, `413`: the source read was full, …) |
//!
//! Each entry is one metric with the same meaning, checks and status codes as its single-metric
//! counterpart (`GET`, `POST` with `X-Bucky-Read-Back: 1`, `DELETE` with `If-Match`); one entry failing
//! does not fail the others. A whole-request error (bad token, malformed body, too large) is an ordinary
//! HTTP error with a text body.
//!
//! The body is [`MAGIC`] followed by frames, each `u32 name length | name | u16 status | u32 meta length |
//! meta (JSON object, [`Meta`]) | u64 data length | data`, integers big-endian. Request frames carry status
//! 0. `Content-Type` is [`CONTENT_TYPE`]; the whole body may be snappy framed (`Content-Encoding:
//! snappy`, and `Accept-Encoding: snappy` for the answer).
//!
//! **Offload** (`bucky rebalance --offload`): the destination agent fetches the entries' sources itself from
//! the agent named by [`OFFLOAD_FROM_HEADER`] (a ring member; one `/batch/read` for the whole batch), heals
//! each into `name` as `/batch/heal` does, reads the replica back and checks it against the source it
//! fetched ([`crate::verify`], at the time given by [`VERIFY_AT_HEADER`]). No file crosses the client: the
//! answer carries the verdict, and the ETag of the source version that was copied, which the client then
//! deletes with `If-Match`. A source that is not a ring member (or takes no batches) fails the whole
//! request (400, 502): the client copies those through itself.
//!
//! A read answer holds at most `--max-body` bytes of files, or fewer if the request's
//! [`MAX_ANSWER_HEADER`] asks: the entries beyond are answered `413` (read them in another batch). The
//! first file found is always sent, whatever its size, so every batch read makes progress.
//!
//! ```
//! use bucky_wire::batch::{decode, encode, Frame, Limits, Meta};
//!
//! let frames = vec![Frame::new("a.b", 0, Meta::default(), b"whisper bytes".to_vec().into())];
//! let body = encode(&frames);
//! assert_eq!(decode(body.into(), &Limits::default())?, frames);
//! # Ok::<(), bucky_wire::batch::BatchError>(())
//! ```

use bytes::{BufMut, Bytes};
use serde::{Deserialize, Serialize};

use crate::{HealReport, MetricStat};

/// First bytes of every batch body (version 1).
pub const MAGIC: &[u8; 4] = b"BKB1";

/// `Content-Type` of batch bodies.
pub const CONTENT_TYPE: &str = "application/x-bucky-batch";

/// Path of the batch read.
pub const READ_PATH: &str = "/batch/read";
/// Path of the batch heal.
pub const HEAL_PATH: &str = "/batch/heal";
/// Path of the batch delete.
pub const DELETE_PATH: &str = "/batch/delete";

/// Path of the batch offload.
pub const OFFLOAD_PATH: &str = "/batch/offload";

/// Request header of a batch offload: the agent (`host:port`, a ring member) to fetch the sources from.
pub const OFFLOAD_FROM_HEADER: &str = "X-Bucky-Offload-From";

/// Request header of a batch offload: the time (Unix seconds) at which the replicas are verified, the
/// client's clock, so that the agent checks with the window the client would have checked with.
pub const VERIFY_AT_HEADER: &str = "X-Bucky-Verify-At";

/// Request header of a batch read: the most bytes of files the client wants in the answer (a decimal
/// number), so that its memory stays bounded whatever the size of the files.
pub const MAX_ANSWER_HEADER: &str = "X-Bucky-Batch-Max-Bytes";

/// What an entry says besides its name, status and data. Every field is optional; each route uses the
/// ones named in the module's table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Meta {
    /// The file's stat: of an upload (heal request), or of the file sent back (read and heal answers).
    #[serde(rename = "Stat", skip_serializing_if = "Option::is_none")]
    pub stat: Option<MetricStat>,
    /// The strong ETag of the file sent back, as a `GET` gives it ([`crate::content_etag`]). In a heal
    /// request: the upload's own, so that a replica read back identical to it is not sent back.
    #[serde(rename = "ETag", skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Delete only if the file's ETag is one of these (an `If-Match` header value).
    #[serde(rename = "IfMatch", skip_serializing_if = "Option::is_none")]
    pub if_match: Option<String>,
    /// What a heal did.
    #[serde(rename = "Report", skip_serializing_if = "Option::is_none")]
    pub report: Option<HealReport>,
    /// In a heal request: where the replica holds another value than the upload for the same time, the
    /// upload's value wins ([`whisper::FillMode::SourceWins`], what `bucky repair` heals with); without
    /// it only empty slots are written. The single-metric `POST` says it with [`crate::OVERWRITE_HEADER`].
    #[serde(rename = "Overwrite", skip_serializing_if = "std::ops::Not::not")]
    pub overwrite: bool,
    /// In an offload request: the source metric to fetch (default: the entry's own name).
    #[serde(rename = "Source", skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// In an offload answer: the ETag of the source version fetched and healed (delete it with `If-Match`).
    #[serde(rename = "SourceETag", skip_serializing_if = "Option::is_none")]
    pub source_etag: Option<String>,
    /// In an offload answer: the replica, read back after the heal, checked against the source fetched.
    #[serde(rename = "Verified", skip_serializing_if = "Option::is_none")]
    pub verified: Option<crate::verify::Verdict>,
    /// Why the entry failed (with a non-2xx status).
    #[serde(rename = "Error", skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One metric of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The metric name (dotted), as in `/metrics/<name>`.
    pub name: String,
    /// HTTP status of this entry in an answer; 0 in a request.
    pub status: u16,
    /// Everything else but the file.
    pub meta: Meta,
    /// The whisper file (empty when there is none).
    pub data: Bytes,
}

impl Frame {
    /// A frame.
    pub fn new(name: impl Into<String>, status: u16, meta: Meta, data: Bytes) -> Frame {
        Frame { name: name.into(), status, meta, data }
    }

    /// A failed entry of an answer: `status` with the reason.
    pub fn error(name: impl Into<String>, status: u16, reason: impl Into<String>) -> Frame {
        Frame::new(name, status, Meta { error: Some(reason.into()), ..Meta::default() }, Bytes::new())
    }

    /// Whether the status is a success (2xx).
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// Bounds applied while decoding a body from a peer.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most frames.
    pub max_frames: usize,
    /// Longest name, in bytes.
    pub max_name: usize,
    /// Longest meta JSON, in bytes.
    pub max_meta: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_frames: 100_000, max_name: 4096, max_meta: 64 * 1024 }
    }
}

/// A body that is not a well-formed batch.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body does not start with [`MAGIC`].
    #[error("not a bucky batch (the body does not start with {magic:?}); send Content-Type {CONTENT_TYPE}", magic = std::str::from_utf8(MAGIC).unwrap_or("?"))]
    Magic,
    /// The body ends inside a frame.
    #[error("truncated batch: frame {frame} ends after the body ({needed} bytes needed, {left} left)")]
    Truncated {
        /// Index of the frame.
        frame: usize,
        /// Bytes the frame needs next.
        needed: u64,
        /// Bytes left in the body.
        left: usize,
    },
    /// A frame's field is larger than allowed.
    #[error("frame {frame}: {what} is {len} bytes, more than the {max} allowed")]
    TooLong {
        /// Index of the frame.
        frame: usize,
        /// Which field.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The bound.
        max: usize,
    },
    /// More frames than allowed.
    #[error("more than {0} frames in one batch; split it")]
    TooManyFrames(usize),
    /// A name is not UTF-8.
    #[error("frame {0}: the metric name is not UTF-8")]
    Name(usize),
    /// The meta of a frame is not a JSON object of the expected shape.
    #[error("frame {frame}: malformed meta: {reason}")]
    Meta {
        /// Index of the frame.
        frame: usize,
        /// The JSON error.
        reason: String,
    },
}

/// Encodes frames into a body.
pub fn encode(frames: &[Frame]) -> Vec<u8> {
    let size = MAGIC.len() + frames.iter().map(|f| 4 + f.name.len() + 2 + 4 + 256 + 8 + f.data.len()).sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(MAGIC);
    for frame in frames {
        encode_frame(frame, &mut out);
    }
    out
}

/// Appends one frame to a body being written (which starts with [`MAGIC`]): a server streams its answer
/// frame by frame instead of holding all of it.
pub fn encode_frame(frame: &Frame, out: &mut Vec<u8>) {
    let meta = serde_json::to_vec(&frame.meta).expect("Meta always serializes");
    out.reserve(4 + frame.name.len() + 2 + 4 + meta.len() + 8 + frame.data.len());
    out.put_u32(u32::try_from(frame.name.len()).unwrap_or(u32::MAX));
    out.put_slice(frame.name.as_bytes());
    out.put_u16(frame.status);
    out.put_u32(u32::try_from(meta.len()).unwrap_or(u32::MAX));
    out.put_slice(&meta);
    out.put_u64(frame.data.len() as u64);
    out.put_slice(&frame.data);
}

/// Decodes a body; the frames' data are slices of `body` (no copy).
pub fn decode(body: Bytes, limits: &Limits) -> Result<Vec<Frame>, BatchError> {
    if body.len() < MAGIC.len() || &body[..MAGIC.len()] != MAGIC {
        return Err(BatchError::Magic);
    }
    let mut reader = Reader { body, at: MAGIC.len(), frame: 0 };
    let mut frames = Vec::new();
    while reader.at < reader.body.len() {
        if frames.len() == limits.max_frames {
            return Err(BatchError::TooManyFrames(limits.max_frames));
        }
        let name_len = u64::from(reader.u32()?);
        let name = reader.field("the metric name", name_len, limits.max_name)?;
        let name = String::from_utf8(name.to_vec()).map_err(|_| BatchError::Name(reader.frame))?;
        let status = reader.u16()?;
        let meta_len = u64::from(reader.u32()?);
        let meta = reader.field("the meta", meta_len, limits.max_meta)?;
        let meta: Meta = serde_json::from_slice(&meta)
            .map_err(|e| BatchError::Meta { frame: reader.frame, reason: e.to_string() })?;
        let data_len = reader.u64()?;
        let data = reader.field("the data", data_len, usize::MAX)?;
        frames.push(Frame { name, status, meta, data });
        reader.frame += 1;
    }
    Ok(frames)
}

struct Reader {
    body: Bytes,
    at: usize,
    frame: usize,
}

impl Reader {
    fn take(&mut self, len: u64) -> Result<Bytes, BatchError> {
        let left = self.body.len() - self.at;
        match usize::try_from(len) {
            Ok(n) if n <= left => {
                let out = self.body.slice(self.at..self.at + n);
                self.at += n;
                Ok(out)
            }
            _ => Err(BatchError::Truncated { frame: self.frame, needed: len, left }),
        }
    }

    fn field(&mut self, what: &'static str, len: u64, max: usize) -> Result<Bytes, BatchError> {
        if usize::try_from(len).map_or(true, |n| n > max) {
            return Err(BatchError::TooLong { frame: self.frame, what, len, max });
        }
        self.take(len)
    }

    fn u16(&mut self) -> Result<u16, BatchError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, BatchError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, BatchError> {
        let b = self.take(8)?;
        let mut out = [0; 8];
        out.copy_from_slice(&b);
        Ok(u64::from_be_bytes(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<Frame> {
        vec![
            Frame::new("a.b.c", 0, Meta { if_match: Some("\"00ff\"".into()), ..Meta::default() }, Bytes::new()),
            Frame::new(
                "x.y",
                200,
                Meta {
                    stat: Some(MetricStat {
                        name: "x.y".into(),
                        size: 5,
                        mode: 420,
                        mod_time: 1_700_000_000,
                        ..MetricStat::default()
                    }),
                    etag: Some("\"abc\"".into()),
                    report: Some(HealReport { created: true, ..HealReport::default() }),
                    ..Meta::default()
                },
                Bytes::from_static(b"12345"),
            ),
            Frame::error("gone.metric", 404, "Metric not found."),
        ]
    }

    #[test]
    fn round_trip() {
        let frames = sample();
        assert_eq!(decode(encode(&frames).into(), &Limits::default()).unwrap(), frames);
        assert_eq!(decode(Bytes::from_static(MAGIC), &Limits::default()).unwrap(), []);
    }

    #[test]
    fn every_truncation_is_refused() {
        let body = encode(&sample());
        for len in 0..body.len() {
            let cut = Bytes::copy_from_slice(&body[..len]);
            // A cut at a frame boundary is a valid, shorter batch; anything else is an error, never a panic.
            if let Ok(frames) = decode(cut, &Limits::default()) {
                assert!(frames.len() < 3 && encode(&frames).len() == len, "cut at {len}");
            }
        }
    }

    #[test]
    fn hostile_bodies() {
        let limits = Limits { max_frames: 2, max_name: 8, max_meta: 64 };
        assert_eq!(decode(Bytes::from_static(b"BKB2"), &limits), Err(BatchError::Magic));
        assert_eq!(decode(Bytes::new(), &limits), Err(BatchError::Magic));
        let long_name = encode(&[Frame::new("a.very.long.name", 0, Meta::default(), Bytes::new())]);
        assert!(matches!(decode(long_name.into(), &limits), Err(BatchError::TooLong { what: "the metric name", .. })));
        let three = encode(&[
            Frame::new("a", 0, Meta::default(), Bytes::new()),
            Frame::new("b", 0, Meta::default(), Bytes::new()),
            Frame::new("c", 0, Meta::default(), Bytes::new()),
        ]);
        assert_eq!(decode(three.into(), &limits), Err(BatchError::TooManyFrames(2)));
        // A data length far beyond the body.
        let mut huge = encode(&[Frame::new("a", 0, Meta::default(), Bytes::new())]);
        let at = huge.len() - 8;
        huge[at..].copy_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(decode(huge.into(), &limits), Err(BatchError::Truncated { .. })));
        // Meta that is not a JSON object, and a name that is not UTF-8.
        let mut bad_meta = encode(&[Frame::new("a", 0, Meta::default(), Bytes::new())]);
        let at = MAGIC.len() + 4 + 1 + 2 + 4;
        bad_meta[at] = b'[';
        assert!(matches!(decode(bad_meta.into(), &limits), Err(BatchError::Meta { frame: 0, .. })));
        let mut bad_name = encode(&[Frame::new("a", 0, Meta::default(), Bytes::new())]);
        bad_name[MAGIC.len() + 4] = 0xff;
        assert_eq!(decode(bad_name.into(), &limits), Err(BatchError::Name(0)));
    }
}
