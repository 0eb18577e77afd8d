//! The file header: metadata plus one `ArchiveInfo` per archive, validated before anything trusts it.

use std::path::Path;

use crate::aggregation::AggregationMethod;
use crate::error::{Error, Result};
use crate::retention::Retention;

/// Bytes of the fixed metadata block.
pub(crate) const METADATA_SIZE: usize = 16;
/// Bytes of one `ArchiveInfo` entry.
pub(crate) const ARCHIVE_INFO_SIZE: usize = 12;
/// Bytes of one point (u32 timestamp + f64 value).
pub const POINT_SIZE: usize = 12;

/// Where one archive lives in the file and what it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ArchiveInfo {
    /// Byte offset of the archive's first point.
    pub offset: u32,
    /// Seconds per point (the archive's step).
    pub seconds_per_point: u32,
    /// Number of points.
    pub points: u32,
}

impl ArchiveInfo {
    /// Seconds of history (`spp × points`).
    pub fn retention(&self) -> u64 {
        u64::from(self.seconds_per_point) * u64::from(self.points)
    }

    /// Bytes occupied by the archive's points.
    pub fn size(&self) -> u64 {
        u64::from(self.points) * POINT_SIZE as u64
    }

    /// One past the archive's last byte.
    pub fn end(&self) -> u64 {
        u64::from(self.offset) + self.size()
    }

    /// The archive's resolution and length.
    pub fn as_retention(&self) -> Retention {
        Retention::new(self.seconds_per_point, self.points)
    }
}

/// A whisper file's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// How lower archives aggregate higher ones.
    pub aggregation: AggregationMethod,
    /// Seconds of history of the longest archive, as recorded in the file.
    pub max_retention: u32,
    /// Fraction of known higher points needed to propagate (stored as f32, compared widened to f64).
    pub x_files_factor: f32,
    /// The archives, finest first.
    pub archives: Vec<ArchiveInfo>,
}

impl Header {
    /// The header `create` writes for these (already validated, sorted) retentions.
    pub fn for_retentions(retentions: &[Retention], aggregation: AggregationMethod, x_files_factor: f32) -> Header {
        let mut offset = (METADATA_SIZE + ARCHIVE_INFO_SIZE * retentions.len()) as u64;
        let archives = retentions
            .iter()
            .map(|r| {
                let info =
                    ArchiveInfo { offset: offset as u32, seconds_per_point: r.seconds_per_point, points: r.points };
                offset += info.size();
                info
            })
            .collect();
        let max_retention = retentions.iter().map(Retention::retention).max().unwrap_or(0) as u32;
        Header { aggregation, max_retention, x_files_factor, archives }
    }

    /// Bytes taken by the header itself.
    pub fn header_size(&self) -> u64 {
        (METADATA_SIZE + ARCHIVE_INFO_SIZE * self.archives.len()) as u64
    }

    /// The file size this header implies (end of the last archive).
    pub fn file_size(&self) -> u64 {
        self.archives.iter().map(ArchiveInfo::end).max().unwrap_or(0).max(self.header_size())
    }

    /// The xFilesFactor as Python sees it: the stored f32 widened to f64.
    pub fn xff(&self) -> f64 {
        f64::from(self.x_files_factor)
    }

    /// The header's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.header_size() as usize);
        out.extend_from_slice(&self.aggregation.type_code().to_be_bytes());
        out.extend_from_slice(&self.max_retention.to_be_bytes());
        out.extend_from_slice(&self.x_files_factor.to_be_bytes());
        out.extend_from_slice(&(self.archives.len() as u32).to_be_bytes());
        for a in &self.archives {
            out.extend_from_slice(&a.offset.to_be_bytes());
            out.extend_from_slice(&a.seconds_per_point.to_be_bytes());
            out.extend_from_slice(&a.points.to_be_bytes());
        }
        out
    }

    /// How many header bytes to read to parse the header of a file of `file_len` bytes whose first 16 bytes
    /// are `metadata`; never more than the file holds.
    pub fn needed_len(metadata: &[u8], file_len: u64) -> u64 {
        if metadata.len() < METADATA_SIZE {
            return METADATA_SIZE as u64;
        }
        let count = u64::from(be_u32(&metadata[12..16]));
        (METADATA_SIZE as u64 + ARCHIVE_INFO_SIZE as u64 * count).min(file_len.max(METADATA_SIZE as u64))
    }

    /// Parses and validates a header. `bytes` starts at the beginning of the file and must hold the whole
    /// header (see [`Header::needed_len`]); `file_len` is the real length of the file.
    ///
    /// A go-whisper compressed file is [`Error::Compressed`]. Rejects everything whisper.py rejects (`Unable to read header`, `Unable to read archiveN metadata`)
    /// and also what it forgets to check: no archives, zero-sized archives, archives overlapping the header
    /// or each other, archives not ordered finest first, a file length that does not match the archives,
    /// and a maxRetention that disagrees with the archives.
    pub fn parse(bytes: &[u8], file_len: u64, path: &Path) -> Result<Header> {
        crate::compressed::refuse(bytes, path)?;
        let corrupt = |reason: String| Error::corrupt(path, reason);
        if bytes.len() < METADATA_SIZE || file_len < METADATA_SIZE as u64 {
            return Err(corrupt(format!("Unable to read header: {file_len} bytes is shorter than the 16-byte header")));
        }
        let type_code = be_u32(&bytes[0..4]);
        let aggregation = AggregationMethod::from_type_code(type_code)
            .ok_or_else(|| corrupt(format!("Unable to read header: unknown aggregation type {type_code}")))?;
        let max_retention = be_u32(&bytes[4..8]);
        let x_files_factor = f32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
        if !(0.0..=1.0).contains(&x_files_factor) {
            return Err(corrupt(format!(
                "Unable to read header: xFilesFactor {x_files_factor} is not between 0 and 1"
            )));
        }
        let count = u64::from(be_u32(&bytes[12..16]));
        let malformed = |reason: String| Error::malformed(path, reason);
        if count == 0 {
            return Err(malformed("the header lists no archives".into()));
        }
        let header_size = METADATA_SIZE as u64 + ARCHIVE_INFO_SIZE as u64 * count;
        if header_size > file_len || header_size > bytes.len() as u64 {
            let available = (file_len.min(bytes.len() as u64) - METADATA_SIZE as u64) / ARCHIVE_INFO_SIZE as u64;
            return Err(corrupt(format!(
                "Unable to read archive{available} metadata: the header lists {count} archives but the file is \
                 {file_len} bytes"
            )));
        }
        let archives: Vec<ArchiveInfo> = bytes[METADATA_SIZE..header_size as usize]
            .chunks_exact(ARCHIVE_INFO_SIZE)
            .map(|c| ArchiveInfo {
                offset: be_u32(&c[0..4]),
                seconds_per_point: be_u32(&c[4..8]),
                points: be_u32(&c[8..12]),
            })
            .collect();
        let mut previous: Option<&ArchiveInfo> = None;
        for (i, a) in archives.iter().enumerate() {
            if a.seconds_per_point == 0 || a.points == 0 {
                return Err(malformed(format!(
                    "archive{i} has {} seconds per point and {} points; both must be at least 1",
                    a.seconds_per_point, a.points
                )));
            }
            if u64::from(a.offset) < header_size {
                return Err(malformed(format!(
                    "archive{i} starts at byte {}, inside the {header_size}-byte header",
                    a.offset
                )));
            }
            if a.end() > file_len {
                return Err(malformed(format!(
                    "archive{i} ends at byte {} but the file is only {file_len} bytes (truncated?)",
                    a.end()
                )));
            }
            if u32::try_from(a.retention()).is_err() {
                return Err(malformed(format!("archive{i} retention {}s overflows 32 bits", a.retention())));
            }
            if let Some(p) = previous {
                if a.seconds_per_point <= p.seconds_per_point {
                    return Err(malformed(format!(
                        "archive{i} ({}s per point) is not coarser than archive{} ({}s per point)",
                        a.seconds_per_point,
                        i - 1,
                        p.seconds_per_point
                    )));
                }
            }
            previous = Some(a);
        }
        let mut by_offset: Vec<&ArchiveInfo> = archives.iter().collect();
        by_offset.sort_by_key(|a| a.offset);
        for pair in by_offset.windows(2) {
            if pair[0].end() > u64::from(pair[1].offset) {
                return Err(malformed(format!("archives at bytes {} and {} overlap", pair[0].offset, pair[1].offset)));
            }
        }
        let header = Header { aggregation, max_retention, x_files_factor, archives };
        let expected_len = header.file_size();
        if expected_len != file_len {
            return Err(malformed(format!("the archives end at byte {expected_len} but the file is {file_len} bytes")));
        }
        let largest = header.archives.iter().map(ArchiveInfo::retention).max().unwrap_or(0);
        if u64::from(max_retention) != largest {
            return Err(malformed(format!(
                "maxRetention {max_retention} does not match the longest archive ({largest}s)"
            )));
        }
        Ok(header)
    }
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header::for_retentions(&[Retention::new(60, 10), Retention::new(300, 12)], AggregationMethod::Sum, 0.3)
    }

    #[test]
    fn round_trips() {
        let h = sample();
        assert_eq!(h.file_size(), 16 + 24 + 12 * 22);
        let parsed = Header::parse(&h.to_bytes(), h.file_size(), Path::new("x")).unwrap();
        assert_eq!(parsed, h);
        assert_eq!(parsed.xff(), 0.30000001192092896);
    }

    #[test]
    fn rejects_every_truncation() {
        let h = sample();
        let bytes = h.to_bytes();
        for len in 0..h.file_size() {
            let slice = &bytes[..bytes.len().min(len as usize)];
            assert!(Header::parse(slice, len, Path::new("x")).is_err(), "accepted length {len}");
        }
    }

    #[test]
    fn rejects_hostile_fields() {
        let h = sample();
        let size = h.file_size();
        let mutate = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = h.to_bytes();
            f(&mut b);
            Header::parse(&b, size, Path::new("x"))
        };
        assert!(mutate(&|b| b[3] = 9).is_err());
        assert!(mutate(&|b| b[8..12].copy_from_slice(&f32::NAN.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[8..12].copy_from_slice(&1.5f32.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[12..16].copy_from_slice(&u32::MAX.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[12..16].copy_from_slice(&0u32.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[16..20].copy_from_slice(&0u32.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[20..24].copy_from_slice(&0u32.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[24..28].copy_from_slice(&u32::MAX.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[28..32].copy_from_slice(&56u32.to_be_bytes())).is_err());
        assert!(mutate(&|b| b[4..8].copy_from_slice(&1u32.to_be_bytes())).is_err());
    }
}
