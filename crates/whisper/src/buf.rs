//! [`WhisperBuf`]: a whole whisper file in memory, and the reference algorithms that run on it.
//!
//! Every write operation (update, update_many, merge, fill) runs on a buffer and records the byte ranges it
//! changed; [`crate::WhisperFile`] then writes back only those ranges. An error part-way therefore changes
//! nothing on disk, unlike whisper.py, which can leave half a batch written.

use std::ops::Range;
use std::path::Path;

use crate::engine::{self, Store};
use crate::error::{Error, Result};
use crate::header::{ArchiveInfo, Header, POINT_SIZE};

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

/// The answer of a fetch: slots `from + step, from + 2·step, …` (Graphite's `((from, until, step), values)`).
#[derive(Debug, Clone, PartialEq)]
pub struct Series {
    /// Start of the returned range (exclusive of data: the first value is for `from`).
    pub from: i64,
    /// End of the range as the reference reports it.
    pub until: i64,
    /// Seconds between values.
    pub step: u32,
    /// One value per slot; `None` where the archive holds nothing for that time.
    pub values: Vec<Option<f64>>,
}

impl Series {
    /// `(timestamp, value)` for every non-empty slot.
    pub fn points(&self) -> impl Iterator<Item = (i64, f64)> + '_ {
        let step = i64::from(self.step);
        self.values.iter().enumerate().filter_map(move |(i, v)| v.map(|v| (self.from + i as i64 * step, v)))
    }
}

/// A whole whisper file held in memory, validated on construction.
#[derive(Debug, Clone)]
pub struct WhisperBuf {
    header: Header,
    data: Vec<u8>,
    dirty: Vec<Range<usize>>,
    /// While an operation runs: the bytes each write replaced, so a refused operation can be undone.
    journal: Option<Journal>,
}

/// The undo log of one operation on a [`WhisperBuf`].
#[derive(Debug, Clone, Default)]
struct Journal {
    /// (offset, length) of each overwritten range, in write order; its old bytes follow in `old`.
    writes: Vec<(usize, usize)>,
    old: Vec<u8>,
    dirty_len: usize,
    last_dirty: Option<Range<usize>>,
}

impl WhisperBuf {
    /// Validates `data` as a whole whisper file (see [`Header::parse`]).
    pub fn from_bytes(data: Vec<u8>) -> Result<Self> {
        Self::with_path(data, Path::new("<memory>"))
    }

    pub(crate) fn with_path(data: Vec<u8>, path: &Path) -> Result<Self> {
        let header = Header::parse(&data, data.len() as u64, path)?;
        Ok(WhisperBuf { header, data, dirty: Vec::new(), journal: None })
    }

    /// A new, empty file image for a header (all points zero).
    pub fn empty(header: Header) -> Self {
        let mut data = header.to_bytes();
        data.resize(header.file_size() as usize, 0);
        WhisperBuf { header, data, dirty: Vec::new(), journal: None }
    }

    /// The validated header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The file's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.data
    }

    /// The file's bytes, by value.
    pub fn into_bytes(self) -> Vec<u8> {
        self.data
    }

    /// Byte ranges changed since the buffer was loaded (or since [`WhisperBuf::clear_dirty`]), merged and
    /// sorted.
    pub fn dirty_ranges(&self) -> Vec<Range<usize>> {
        crate::file::merge_ranges(self.dirty.clone())
    }

    /// Forgets the changes recorded so far.
    pub fn clear_dirty(&mut self) {
        self.dirty.clear();
    }

    // ---- slot access -------------------------------------------------------------------------------------

    fn point_at(&self, offset: usize) -> (u32, f64) {
        point_from(&self.data[offset..offset + POINT_SIZE])
    }

    fn write(&mut self, offset: usize, bytes: &[u8]) {
        if let Some(journal) = self.journal.as_mut() {
            journal.writes.push((offset, bytes.len()));
            journal.old.extend_from_slice(&self.data[offset..offset + bytes.len()]);
        }
        self.data[offset..offset + bytes.len()].copy_from_slice(bytes);
        let end = offset + bytes.len();
        // Sequential writes extend the previous range instead of piling up tiny ones.
        match self.dirty.last_mut() {
            Some(last) if last.end == offset => last.end = end,
            _ => self.dirty.push(offset..end),
        }
    }

    /// Runs a write operation all or nothing: if it fails, every byte it wrote is restored and the dirty
    /// ranges are as before. Nested calls join the outer operation.
    pub(crate) fn transaction<T>(&mut self, operation: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        if self.journal.is_some() {
            return operation(self);
        }
        self.journal =
            Some(Journal { dirty_len: self.dirty.len(), last_dirty: self.dirty.last().cloned(), ..Journal::default() });
        let result = operation(self);
        let journal = self.journal.take().unwrap_or_default();
        if result.is_err() {
            let mut end = journal.old.len();
            for &(offset, len) in journal.writes.iter().rev() {
                self.data[offset..offset + len].copy_from_slice(&journal.old[end - len..end]);
                end -= len;
            }
            self.dirty.truncate(journal.dirty_len);
            if let (Some(last), Some(saved)) = (self.dirty.last_mut(), journal.last_dirty) {
                *last = saved;
            }
        }
        result
    }

    /// The timestamp stored in an archive's slot 0: 0 means "empty archive".
    fn base(&self, archive: &ArchiveInfo) -> u32 {
        self.point_at(archive.offset as usize).0
    }

    /// Byte offset of aligned time `interval` given the archive's base (whisper's slot rule).
    fn slot_offset(archive: &ArchiveInfo, base: u32, interval: i64) -> usize {
        slot_offset_i64(archive, i64::from(base), interval)
    }

    /// Reads `count` consecutive slots starting at byte `start` of `archive`, wrapping at its end.
    fn read_slots(&self, archive: &ArchiveInfo, start: usize, count: usize) -> impl Iterator<Item = (u32, f64)> + '_ {
        let begin = archive.offset as usize;
        let first = (start - begin) / POINT_SIZE;
        let points = archive.points as usize;
        (0..count).map(move |i| self.point_at(begin + (first + i) % points * POINT_SIZE))
    }

    // ---- fetch -------------------------------------------------------------------------------------------

    /// whisper's `fetch(path, from, until, now, archiveToSelect)`: `Ok(None)` where the reference returns
    /// None. `archive` selects an archive by seconds per point.
    pub fn fetch(&self, from: i64, until: Option<i64>, now: i64, archive: Option<u32>) -> Result<Option<Series>> {
        let Some((index, from, until)) = select_archive(&self.header, from, until, now, archive)? else {
            return Ok(None);
        };
        self.archive_fetch(index, from, until).map(Some)
    }

    /// whisper's `__archive_fetch` on archive `index`, with its exact slot arithmetic (including returning
    /// the slot after `until` for a zero-length range, and the count wrapping for over-long spans).
    pub fn archive_fetch(&self, index: usize, from: i64, until: i64) -> Result<Series> {
        let archive = self.header.archives[index];
        let read = |start, count| -> Result<Vec<(u32, f64)>> { Ok(self.read_slots(&archive, start, count).collect()) };
        archive_fetch(&archive, from, until, self.base(&archive), read)
    }

    /// True if archive `index` has never been written (its anchor slot is empty).
    pub fn archive_is_empty(&self, index: usize) -> bool {
        self.base(&self.header.archives[index]) == 0
    }

    /// Every slot of archive `index` as stored, in file order, empty ones included (whisper-dump's view).
    /// `index` must be below the archive count.
    pub fn archive_slots(&self, index: usize) -> impl Iterator<Item = (u32, f64)> + '_ {
        let archive = self.header.archives[index];
        self.read_slots(&archive, archive.offset as usize, archive.points as usize)
    }

    /// Every slot with a non-zero timestamp in each archive, sorted by timestamp (whisper-dump minus the
    /// empty slots). Stale slots from an older cycle are included, as in a raw dump.
    pub fn dump(&self) -> Vec<Vec<(u32, f64)>> {
        self.header
            .archives
            .iter()
            .map(|a| {
                let mut points: Vec<(u32, f64)> =
                    self.read_slots(a, a.offset as usize, a.points as usize).filter(|&(t, _)| t != 0).collect();
                points.sort_by_key(|&(t, _)| t);
                points
            })
            .collect()
    }

    /// whisper's `update_many(path, points, now)`: routes points by age, drops too-old ones, writes each run
    /// and propagates. Points need not be sorted. All or nothing: a refused batch leaves the buffer as it
    /// was.
    pub fn update_many(&mut self, points: &[Point], now: i64) -> Result<()> {
        self.transaction(|buf| engine::update_many(buf, points, now))
    }

    /// whisper's single-point `update(path, value, timestamp, now)`: stricter than update_many (future and
    /// too-old points are `TimestampNotCovered`) and propagates to the following archives by position.
    pub fn update(&mut self, value: f64, timestamp: i64, now: i64) -> Result<()> {
        self.transaction(|buf| engine::update(buf, value, timestamp, now))
    }

    pub(crate) fn archive_update_many(&mut self, index: usize, points: &mut [(i64, f64)]) -> Result<()> {
        self.transaction(|buf| engine::archive_update_many(buf, index, points))
    }

    /// Values for the aligned times `t0, t0 + spp, …` (`count` of them) of archive `index`: one division to
    /// find the first slot, then a walk with wrap-around.
    pub fn values_from(&self, index: usize, t0: i64, count: usize) -> impl Iterator<Item = Option<f64>> + '_ {
        let archive = self.header.archives[index];
        let base = self.base(&archive);
        let points = archive.points as usize;
        let begin = archive.offset as usize;
        let mut slot = if base == 0 { 0 } else { (Self::slot_offset(&archive, base, t0) - begin) / POINT_SIZE };
        let step = i64::from(archive.seconds_per_point);
        let mut t = t0;
        (0..count).map(move |_| {
            if base == 0 {
                return None;
            }
            let (ts, v) = self.point_at(begin + slot * POINT_SIZE);
            let value = (i64::from(ts) == t && ts != 0).then_some(v);
            slot += 1;
            if slot == points {
                slot = 0;
            }
            t = t.wrapping_add(step);
            value
        })
    }

    /// Writes `candidates[i]` at aligned time `t0 + i·spp` of archive `index` wherever that slot is empty
    /// (holds no point for that time) and the candidate is `Some`; never touches a non-empty slot and never
    /// propagates. An empty archive is anchored at the first point written, as whisper's update_many
    /// anchors a batch. Returns the number of points written.
    pub(crate) fn fill_empty_slots(
        &mut self,
        index: usize,
        t0: i64,
        candidates: impl Iterator<Item = Option<f64>>,
    ) -> Result<u64> {
        let archive = self.header.archives[index];
        let points = archive.points as usize;
        let begin = archive.offset as usize;
        let step = i64::from(archive.seconds_per_point);
        let base = self.base(&archive);
        // Slot of t0, once the archive has an anchor.
        let mut slot = (base != 0).then(|| (Self::slot_offset(&archive, base, t0) - begin) / POINT_SIZE);
        let mut written = 0;
        let mut t = t0;
        for candidate in candidates {
            if let Some(s) = slot {
                let (ts, _) = self.point_at(begin + s * POINT_SIZE);
                if i64::from(ts) != t || ts == 0 {
                    if let Some(v) = candidate {
                        self.write(begin + s * POINT_SIZE, &pack(t, v)?);
                        written += 1;
                    }
                }
            } else if let Some(v) = candidate {
                // First point into an empty archive: it becomes the anchor, slot 0.
                self.write(begin, &pack(t, v)?);
                written += 1;
                slot = Some(0);
            }
            if let Some(s) = slot.as_mut() {
                *s += 1;
                if *s == points {
                    *s = 0;
                }
            }
            t += step;
        }
        Ok(written)
    }

    /// The value stored for aligned time `t` in archive `index`, if that slot holds exactly `t`.
    pub fn value_at(&self, index: usize, t: i64) -> Option<f64> {
        let archive = self.header.archives[index];
        let base = self.base(&archive);
        if base == 0 {
            return None;
        }
        let (ts, v) = self.point_at(Self::slot_offset(&archive, base, t));
        (i64::from(ts) == t && ts != 0).then_some(v)
    }
}

impl Store for WhisperBuf {
    fn header(&self) -> &Header {
        &self.header
    }

    fn point(&mut self, offset: usize) -> Result<(u32, f64)> {
        Ok(self.point_at(offset))
    }

    fn read_bytes(&mut self, offset: usize, out: &mut [u8]) -> Result<()> {
        out.copy_from_slice(&self.data[offset..offset + out.len()]);
        Ok(())
    }

    fn put(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.write(offset, bytes);
        Ok(())
    }
}

pub(crate) fn slot_offset_i64(archive: &ArchiveInfo, base: i64, interval: i64) -> usize {
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

/// The most values one fetch returns (1 GiB of `Option<f64>`); whisper would try to allocate any amount.
const MAX_FETCH_VALUES: usize = 1 << 26;

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

/// The part of `file_fetch` before the archive read: validation, clamping and archive choice.
/// Returns `(archive index, from, until)` or `None` where the reference returns None.
pub(crate) fn select_archive(
    header: &Header,
    from: i64,
    until: Option<i64>,
    now: i64,
    archive: Option<u32>,
) -> Result<Option<(usize, i64, i64)>> {
    check_clock(now)?;
    let until = until.unwrap_or(now);
    if from > until {
        return Err(Error::InvalidTimeInterval { from, until });
    }
    let (mut from, mut until) = (clamp_time(from), clamp_time(until));
    let oldest = now - i64::from(header.max_retention);
    if from > now || until < oldest {
        return Ok(None);
    }
    from = from.max(oldest);
    until = until.min(now);
    let diff = now - from;
    let index = match archive {
        // archiveToSelect = 0 is falsy in Python and means "no selection".
        Some(spp) if spp != 0 => {
            header.archives.iter().position(|a| a.seconds_per_point == spp).ok_or(Error::InvalidGranularity(spp))?
        }
        _ => header
            .archives
            .iter()
            .position(|a| i128::from(a.retention()) >= i128::from(diff))
            .unwrap_or(header.archives.len() - 1),
    };
    Ok(Some((index, from, until)))
}

/// `__archive_fetch` over any slot reader: `read(start_byte, count)` returns `count` slots from
/// `start_byte`, wrapping at the archive end.
pub(crate) fn archive_fetch(
    archive: &ArchiveInfo,
    from: i64,
    until: i64,
    base: u32,
    read: impl FnOnce(usize, usize) -> Result<Vec<(u32, f64)>>,
) -> Result<Series> {
    let step = i64::from(archive.seconds_per_point);
    let (from, until) = (clamp_time(from), clamp_time(until));
    let from_interval = from - from.rem_euclid(step) + step;
    let mut until_interval = until - until.rem_euclid(step) + step;
    if from_interval == until_interval {
        until_interval += step; // zero-length range: the reference returns the next slot
    }
    if base == 0 {
        let count = ((until_interval - from_interval) / step).max(0) as u64;
        if count > MAX_FETCH_VALUES as u64 {
            return Err(Error::Refused(format!(
                "a fetch of {count} values of {step}s is too large; ask for a shorter range"
            )));
        }
        let count = count as usize;
        return Ok(Series {
            from: from_interval,
            until: until_interval,
            step: archive.seconds_per_point,
            values: vec![None; count],
        });
    }
    let from_offset = slot_offset_i64(archive, i64::from(base), from_interval);
    let until_offset = slot_offset_i64(archive, i64::from(base), until_interval);
    let count = if from_offset < until_offset {
        (until_offset - from_offset) / POINT_SIZE
    } else {
        // Wrapping read (or equal offsets: the whole archive).
        (archive.end() as usize - from_offset + until_offset - archive.offset as usize) / POINT_SIZE
    };
    let slots = read(from_offset, count)?;
    let mut expected = from_interval;
    let values = slots
        .into_iter()
        .map(|(ts, v)| {
            let value = (i64::from(ts) == expected).then_some(v);
            expected += step;
            value
        })
        .collect();
    Ok(Series { from: from_interval, until: until_interval, step: archive.seconds_per_point, values })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{header_for, CreateOptions, Retention};

    #[test]
    fn a_refused_update_leaves_the_buffer_as_it_was() {
        let header = header_for(&Retention::parse_list("10:10,60:100").unwrap(), &CreateOptions::default()).unwrap();
        let mut buf = WhisperBuf::empty(header);
        buf.update_many(&[Point::new(40, 1.0)], 100).unwrap();
        buf.clear_dirty();
        let before = buf.as_bytes().to_vec();
        // t=95 is written into archive 0 first; t=-50 then goes to archive 1, where it aligns to -60,
        // which no whisper file can store: the whole batch is refused.
        let err = buf.update_many(&[Point::new(95, 2.0), Point::new(-50, 3.0)], 100).unwrap_err();
        assert!(matches!(err, Error::TimestampOutOfRange(_)), "{err}");
        assert_eq!(buf.as_bytes(), &before[..], "the refused batch left bytes behind");
        assert!(buf.dirty_ranges().is_empty(), "the refused batch left dirty ranges");
        // The buffer still works after the rollback.
        buf.update_many(&[Point::new(95, 2.0)], 100).unwrap();
        assert_eq!(buf.value_at(0, 90), Some(2.0));
    }
}
