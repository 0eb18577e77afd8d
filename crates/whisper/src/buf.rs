//! [`WhisperBuf`]: a whole whisper file in memory, and the reference algorithms that run on it.
//!
//! Every write operation (update, update_many, merge, fill) runs on a buffer and records the byte ranges it
//! changed; [`crate::WhisperFile`] then writes back only those ranges. An error part-way therefore changes
//! nothing on disk, unlike whisper.py, which can leave half a batch written.

use std::ops::Range;
use std::path::Path;

use crate::engine::{self, Store};
use crate::error::Result;
use crate::fetch::{archive_fetch, select_archive, Series};
use crate::header::{ArchiveInfo, Header, POINT_SIZE};
use crate::slot::{pack, point_from, slot_offset, Point};

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
        crate::ranges::merge_ranges(self.dirty.clone())
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
        slot_offset(archive, i64::from(base), interval)
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
        self.write_slots(index, t0, candidates, false).map(|(filled, _)| filled)
    }

    /// [`WhisperBuf::fill_empty_slots`], and with `overwrite` also a slot holding a point for the same time
    /// whose value differs bit for bit from its candidate (a conflict, the candidate wins). Returns the
    /// points written into empty slots and the points replaced.
    pub(crate) fn write_slots(
        &mut self,
        index: usize,
        t0: i64,
        candidates: impl Iterator<Item = Option<f64>>,
        overwrite: bool,
    ) -> Result<(u64, u64)> {
        let archive = self.header.archives[index];
        let points = archive.points as usize;
        let begin = archive.offset as usize;
        let step = i64::from(archive.seconds_per_point);
        let base = self.base(&archive);
        // Slot of t0, once the archive has an anchor.
        let mut slot = (base != 0).then(|| (Self::slot_offset(&archive, base, t0) - begin) / POINT_SIZE);
        let (mut written, mut replaced) = (0, 0);
        let mut t = t0;
        for candidate in candidates {
            if let Some(s) = slot {
                let (ts, old) = self.point_at(begin + s * POINT_SIZE);
                if i64::from(ts) != t || ts == 0 {
                    if let Some(v) = candidate {
                        self.write(begin + s * POINT_SIZE, &pack(t, v)?);
                        written += 1;
                    }
                } else if let Some(v) = candidate.filter(|v| overwrite && v.to_bits() != old.to_bits()) {
                    self.write(begin + s * POINT_SIZE, &pack(t, v)?);
                    replaced += 1;
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
        Ok((written, replaced))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{header_for, CreateOptions, Error, Retention};

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
