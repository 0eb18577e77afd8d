//! `POST /batch/digest`, a bucky extension: what each copy of many metrics holds, as digests, so that
//! replicas can be compared without sending their files (`bucky audit`).
//!
//! The request is a batch ([`crate::batch`]) of names (frames with no meta and no data), thousands per
//! request, with two headers: [`UNTIL_HEADER`], the time the archives' windows end at (the client sends
//! the same to every replica, so that their windows agree), and [`RANGES_HEADER`] `1` for one digest per
//! time range rather than one per archive. Each answer frame is, in order:
//!
//! - `200` with the [`MetricDigest`] as its data ([`encode`]): the file's mtime, and per archive its
//!   step, length and range digests ([`whisper::digest`] says exactly what is digested);
//! - `404` `Metric not found.`: there is no file (the digest of an absent file);
//! - another error, as a `GET` of the name would answer it: `400` for a name that is not a metric name,
//!   `403` for a token without the read right, `409` for a file that is not a valid whisper file, `503`
//!   when its flock stayed held.
//!
//! The data is binary, integers big-endian: `u8` version (1) | `u32` mtime | `u8` archives | per archive:
//! `u32` seconds per point | `u32` points | `u16` ranges | per range: `u32` start | `u32` points held |
//! `u64` XXH3-64. An archive digest of a 1-minute-for-a-day file is 32 bytes, against its 17,308.

use whisper::{ArchiveDigest, RangeDigest};

/// Path of the digest batch.
pub const DIGEST_PATH: &str = "/batch/digest";

/// Request header: the end of the archives' windows, Unix seconds (required).
pub const UNTIL_HEADER: &str = "X-Bucky-Digest-Until";

/// Request header: `1` for a digest per time range of each archive, else one per archive.
pub const RANGES_HEADER: &str = "X-Bucky-Digest-Ranges";

/// Version byte of [`encode`]d digests.
pub const VERSION: u8 = 1;

/// What one copy of a metric holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricDigest {
    /// The file's modification time, Unix seconds.
    pub mod_time: i64,
    /// Per archive, finest first.
    pub archives: Vec<ArchiveDigest>,
}

/// Digest data that cannot be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed digest: {0}")]
pub struct DigestError(&'static str);

/// The bytes of a digest (see the module docs). Counts beyond the format's fields are clamped, which a
/// valid whisper file never needs.
pub fn encode(digest: &MetricDigest) -> Vec<u8> {
    let ranges: usize = digest.archives.iter().map(|a| a.ranges.len()).sum();
    let mut out = Vec::with_capacity(6 + digest.archives.len() * 10 + ranges * 16);
    out.push(VERSION);
    out.extend_from_slice(&clamp_u32(digest.mod_time).to_be_bytes());
    out.push(u8::try_from(digest.archives.len()).unwrap_or(u8::MAX));
    for archive in digest.archives.iter().take(usize::from(u8::MAX)) {
        out.extend_from_slice(&archive.seconds_per_point.to_be_bytes());
        out.extend_from_slice(&archive.points.to_be_bytes());
        out.extend_from_slice(&u16::try_from(archive.ranges.len()).unwrap_or(u16::MAX).to_be_bytes());
        for range in archive.ranges.iter().take(usize::from(u16::MAX)) {
            out.extend_from_slice(&clamp_u32(range.start).to_be_bytes());
            out.extend_from_slice(&range.count.to_be_bytes());
            out.extend_from_slice(&range.hash.to_be_bytes());
        }
    }
    out
}

fn clamp_u32(t: i64) -> u32 {
    u32::try_from(t.max(0)).unwrap_or(u32::MAX)
}

/// Decodes [`encode`]d digest data.
pub fn decode(mut data: &[u8]) -> Result<MetricDigest, DigestError> {
    let version = take::<1>(&mut data)?[0];
    if version != VERSION {
        return Err(DigestError("unknown version"));
    }
    let mod_time = i64::from(u32::from_be_bytes(take(&mut data)?));
    let count = take::<1>(&mut data)?[0];
    let mut archives = Vec::with_capacity(usize::from(count));
    for _ in 0..count {
        let seconds_per_point = u32::from_be_bytes(take(&mut data)?);
        let points = u32::from_be_bytes(take(&mut data)?);
        let n = u16::from_be_bytes(take(&mut data)?);
        if data.len() < usize::from(n) * 16 {
            return Err(DigestError("truncated"));
        }
        let mut ranges = Vec::with_capacity(usize::from(n));
        for _ in 0..n {
            let start = i64::from(u32::from_be_bytes(take(&mut data)?));
            let count = u32::from_be_bytes(take(&mut data)?);
            let hash = u64::from_be_bytes(take(&mut data)?);
            ranges.push(RangeDigest { start, count, hash });
        }
        archives.push(ArchiveDigest { seconds_per_point, points, ranges });
    }
    if !data.is_empty() {
        return Err(DigestError("trailing bytes"));
    }
    Ok(MetricDigest { mod_time, archives })
}

fn take<const N: usize>(data: &mut &[u8]) -> Result<[u8; N], DigestError> {
    let (head, rest) = data.split_first_chunk::<N>().ok_or(DigestError("truncated"))?;
    *data = rest;
    Ok(*head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_truncation_refused() {
        let digest = MetricDigest {
            mod_time: 1_700_000_000,
            archives: vec![
                ArchiveDigest {
                    seconds_per_point: 60,
                    points: 1440,
                    ranges: vec![RangeDigest { start: 1_699_913_700, count: 1440, hash: 0xdead_beef_0bad_cafe }],
                },
                ArchiveDigest { seconds_per_point: 300, points: 10, ranges: Vec::new() },
            ],
        };
        let bytes = encode(&digest);
        assert_eq!(bytes.len(), 6 + 10 + 16 + 10);
        assert_eq!(decode(&bytes), Ok(digest));
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "cut at {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        let mut other = bytes;
        other[0] = 2;
        assert_eq!(decode(&other), Err(DigestError("unknown version")));
    }
}
