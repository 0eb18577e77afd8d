//! Slots and times: how a point is stored (`>Ld`, 12 bytes), where an aligned time lives in an archive
//! (whisper's slot rule relative to the archive's anchor), and the bounds on clocks and times that keep the
//! arithmetic from overflowing. Every other module reads and writes slots through these.

use crate::error::{Error, Result};
use crate::header::{ArchiveInfo, POINT_SIZE};

/// One (timestamp, value) pair as given to `update_many`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Seconds since the epoch (Python `int(t)`: truncated toward zero by the caller).
    pub timestamp: i64,
    /// The value; NaN and ±inf are values, as in whisper.
    pub value: f64,
}

impl Point {
    /// A point.
    pub fn new(timestamp: i64, value: f64) -> Self {
        Point { timestamp, value }
    }
}

impl From<(i64, f64)> for Point {
    fn from((timestamp, value): (i64, f64)) -> Self {
        Point { timestamp, value }
    }
}

/// Byte offset of aligned time `interval` in `archive` whose slot 0 holds `base` (whisper's slot rule).
pub(crate) fn slot_offset(archive: &ArchiveInfo, base: i64, interval: i64) -> usize {
    let slot = match interval.checked_sub(base) {
        Some(distance) => {
            distance.div_euclid(i64::from(archive.seconds_per_point)).rem_euclid(i64::from(archive.points)) as usize
        }
        // Only reachable with absurd caller-supplied times; i128 cannot overflow here.
        None => (i128::from(interval) - i128::from(base))
            .div_euclid(i128::from(archive.seconds_per_point))
            .rem_euclid(i128::from(archive.points)) as usize,
    };
    archive.offset as usize + slot * POINT_SIZE
}

/// `t - t % spp` with Python's floor modulo.
#[allow(clippy::unnecessary_lazy_evaluations)] // an eager Error per call showed up in profiles
pub(crate) fn align(t: i64, spp: u32) -> Result<i64> {
    t.checked_sub(t.rem_euclid(i64::from(spp))).ok_or_else(|| Error::TimestampOutOfRange(t))
}

/// The largest clock bucky accepts (about the year 36,800): far beyond any real timestamp, small enough
/// that no time arithmetic can overflow.
pub(crate) const MAX_CLOCK: i64 = 1 << 40;
/// Time arguments beyond this are equivalent to it for every comparison whisper makes, so they are
/// clamped here before any arithmetic.
const MAX_TIME: i64 = 1 << 62;

/// Refuses a clock no whisper file can be meaningfully read or written at.
pub(crate) fn check_clock(now: i64) -> Result<()> {
    if now.unsigned_abs() > MAX_CLOCK as u64 {
        return Err(Error::Refused(format!(
            "clock {now} is out of range (|now| must be at most {MAX_CLOCK}); pass a real epoch time"
        )));
    }
    Ok(())
}

/// Clamps a time argument into the range where arithmetic cannot overflow.
pub(crate) fn clamp_time(t: i64) -> i64 {
    t.clamp(-MAX_TIME, MAX_TIME)
}

/// `align` for a mostly ascending stream of timestamps: reuses the previous bucket instead of dividing
/// when the next timestamp falls in the same or the following bucket.
pub(crate) struct Aligner {
    spp: i64,
    last: Option<i64>,
}

impl Aligner {
    pub(crate) fn new(spp: u32) -> Self {
        Aligner { spp: i64::from(spp), last: None }
    }

    #[allow(clippy::unnecessary_lazy_evaluations)] // an eager Error per call showed up in profiles
    pub(crate) fn align(&mut self, t: i64) -> Result<i64> {
        let distance = self.last.and_then(|last| t.checked_sub(last).map(|d| (last, d)));
        let aligned = match distance {
            Some((last, d)) if (0..self.spp).contains(&d) => last,
            Some((last, d)) if (self.spp..2 * self.spp).contains(&d) => last + self.spp,
            _ => t.checked_sub(t.rem_euclid(self.spp)).ok_or_else(|| Error::TimestampOutOfRange(t))?,
        };
        self.last = Some(aligned);
        Ok(aligned)
    }
}

/// `struct.pack('>Ld', interval, value)`, which refuses intervals outside u32.
pub(crate) fn pack(interval: i64, value: f64) -> Result<[u8; POINT_SIZE]> {
    let t = u32::try_from(interval).map_err(|_| Error::TimestampOutOfRange(interval))?;
    let mut out = [0u8; POINT_SIZE];
    out[..4].copy_from_slice(&t.to_be_bytes());
    out[4..].copy_from_slice(&value.to_be_bytes());
    Ok(out)
}

/// Decodes one `>Ld` slot. Callers pass whole slots (`chunks_exact(POINT_SIZE)` or a `POINT_SIZE` slice); a
/// shorter slice decodes as an empty slot rather than panicking.
#[inline]
pub(crate) fn point_from(b: &[u8]) -> (u32, f64) {
    // One length check, then fixed-size loads: indexing byte by byte kept twelve bounds checks per slot.
    let Some(&[t0, t1, t2, t3, v0, v1, v2, v3, v4, v5, v6, v7]) = b.first_chunk::<POINT_SIZE>() else {
        return (0, 0.0);
    };
    (u32::from_be_bytes([t0, t1, t2, t3]), f64::from_be_bytes([v0, v1, v2, v3, v4, v5, v6, v7]))
}
