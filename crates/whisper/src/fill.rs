//! `fill`: heal a destination file from a source copy of the same metric.
//!
//! Two modes:
//! - [`FillMode::Safe`] (default, what rebalance and backfill use): archive by archive, every slot that is
//!   *empty* in the destination takes the source's value for the same timestamp from the source archive of
//!   the same resolution, written into that same destination archive, without propagation (the
//!   destination's coarser archives are healed from the source's own coarser archives). A non-empty slot is
//!   never changed (0.0 and NaN are data), so the fill is idempotent and two copies filled into each other
//!   end with the union of their points. If the source has no archive of a destination archive's
//!   resolution, the slot is computed from the finest source archive whose resolution divides it and whose
//!   window holds the slot's start, aggregated with the destination's method and xFilesFactor, exactly as
//!   whisper's propagation would have done.
//! - [`FillMode::SourceWins`] (what `bucky repair` heals replicas from its reference copy with): the
//!   safe fill, and in addition a destination slot that holds a point for the same timestamp with a
//!   different value (bit for bit) takes the source's value from its archive of the same resolution. Slots
//!   the source has no point for are never touched, so nothing the source does not replace is lost.
//! - [`FillMode::Carbonate`]: carbonate 1.1.10's `fill_archives`, quirks included (0.0 counts as a gap, the
//!   slot after each gap is rewritten with the source's value, writes are routed by age through
//!   `update_many`, so a boundary point can land in a finer archive). Byte-identical with `whisper-fill`.

use std::path::Path;
use std::time::Duration;

use crate::buf::WhisperBuf;
use crate::durable::TempFile;
use crate::error::{Error, Result};
use crate::file::WhisperFile;
use crate::lock::{LockMode, DEFAULT_LOCK_TIMEOUT};
use crate::slot::align;

/// Which fill algorithm to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FillMode {
    /// Only empty destination slots are written, from the same-resolution source archive.
    #[default]
    Safe,
    /// The safe fill, plus: where both hold a point for the same time with different values, the
    /// source's value replaces the destination's (same-resolution archives only).
    SourceWins,
    /// carbonate 1.1.10 `whisper-fill`, bit for bit.
    Carbonate,
}

/// Options of [`fill`].
#[derive(Debug, Clone, PartialEq)]
pub struct FillOptions {
    /// The algorithm.
    pub mode: FillMode,
    /// The clock, in seconds; may be fractional (carbonate reads a float clock; whisper truncates it).
    pub now: f64,
    /// Newest time to fill (carbonate's `startFrom`); `None` = now.
    pub start_from: Option<f64>,
    /// Oldest time to fill (carbonate's `endAt`); 0 = as far back as the archives go.
    pub end_at: f64,
    /// Carbonate mode only: treat every destination slot as a gap (`whisper-fill -o`).
    pub overwrite: bool,
    /// Hold a shared flock on the source while reading it and an exclusive flock on the destination while
    /// filling it (never both at once, so two fills in opposite directions cannot deadlock).
    pub lock: bool,
    /// Bound on each lock wait.
    pub lock_timeout: Duration,
    /// With `lock`: write nearby changed ranges as one block, rewriting the unchanged slots between them
    /// with the values read under the lock. Much faster for many small gaps, but only safe when every
    /// writer of the file takes whisper's flock (carbon-cache: `WHISPER_LOCK_WRITES = True`); otherwise a
    /// point carbon writes meanwhile could be overwritten. Off by default.
    pub coalesce_writes: bool,
    /// fsync the destination when done.
    pub sync: bool,
}

impl FillOptions {
    /// Safe mode at `now`, locking, syncing, no window.
    pub fn new(now: i64) -> Self {
        FillOptions {
            mode: FillMode::Safe,
            now: now as f64,
            start_from: None,
            end_at: 0.0,
            overwrite: false,
            lock: true,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            coalesce_writes: false,
            sync: true,
        }
    }

    /// The same options in carbonate mode.
    pub fn carbonate(mut self) -> Self {
        self.mode = FillMode::Carbonate;
        self
    }
}

/// What a fill did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FillReport {
    /// The destination did not exist and was created as a durable copy of the source.
    pub copied: bool,
    /// Points handed to the destination (safe mode: slots filled; carbonate: points passed to update_many).
    pub points_written: u64,
}

/// Fills `dst` from `src` (see the module docs). A missing `dst` becomes a durable copy of `src`.
/// Filling a file into itself is refused with [`Error::SameFile`].
pub fn fill(src: &Path, dst: &Path, options: &FillOptions) -> Result<FillReport> {
    check_options(options)?;
    let (source, source_buf) = if options.lock {
        let source = WhisperFile::open_locked(src, LockMode::Shared, options.lock_timeout)?;
        let buf = source.read_buf()?;
        (source.unlock(), buf)
    } else {
        let source = WhisperFile::open(src)?;
        let buf = source.read_buf()?;
        (source, buf)
    };
    if !dst.exists() {
        let temp = TempFile::new_for(dst)?;
        temp.write_content(source_buf.as_bytes(), false)?;
        if temp.publish_new(dst)? {
            return Ok(FillReport { copied: true, points_written: 0 });
        }
        // Someone created dst meanwhile: heal into it instead.
    }
    let points_written = if options.lock {
        let target = WhisperFile::open_locked(dst, LockMode::Exclusive, options.lock_timeout)?;
        let (points_written, buf) = fill_file(&target, &source, &source_buf, dst, options)?;
        match options.coalesce_writes {
            true => target.write_back_coalesced(&buf)?,
            false => target.write_back(&buf)?,
        }
        if options.sync {
            target.sync()?;
        }
        points_written
    } else {
        let target = WhisperFile::open_rw(dst)?;
        let (points_written, buf) = fill_file(&target, &source, &source_buf, dst, options)?;
        target.write_back(&buf)?;
        if options.sync {
            target.sync()?;
        }
        points_written
    };
    Ok(FillReport { copied: false, points_written })
}

/// The fill of `target` (not yet written back): the points written and the filled copy.
fn fill_file(
    target: &WhisperFile,
    source: &WhisperFile,
    source_buf: &WhisperBuf,
    dst: &Path,
    options: &FillOptions,
) -> Result<(u64, WhisperBuf)> {
    if target.identity()? == source.identity()? {
        return Err(Error::SameFile(dst.to_owned()));
    }
    let mut buf = target.read_buf()?;
    let points_written = fill_buf(source_buf, &mut buf, options)?;
    Ok((points_written, buf))
}

/// [`fill`] on in-memory files: updates `dst` and returns the number of points written (replaced ones
/// included).
pub fn fill_buf(src: &WhisperBuf, dst: &mut WhisperBuf, options: &FillOptions) -> Result<u64> {
    fill_buf_counted(src, dst, options).map(|c| c.filled + c.replaced)
}

/// What [`fill_buf_counted`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FillCounts {
    /// Points written into empty slots (carbonate mode: every point passed to update_many).
    pub filled: u64,
    /// Points whose value was replaced by the source's ([`FillMode::SourceWins`] only).
    pub replaced: u64,
}

/// [`fill_buf`], telling filled and replaced points apart.
pub fn fill_buf_counted(src: &WhisperBuf, dst: &mut WhisperBuf, options: &FillOptions) -> Result<FillCounts> {
    check_options(options)?;
    match options.mode {
        // Every time it writes lies in (now - maxRetention, now], checked up front, so it cannot fail
        // after its first write and needs no undo journal on this hot path.
        FillMode::Safe | FillMode::SourceWins => {
            let now = options.now.floor() as i64;
            let oldest = now - i64::from(dst.header().max_retention);
            if oldest < 0 || now > i64::from(u32::MAX) {
                return Err(Error::TimestampOutOfRange(if oldest < 0 { oldest } else { now }));
            }
            safe_fill(src, dst, options, options.mode == FillMode::SourceWins)
        }
        // All or nothing: a carbonate fill refused part-way leaves `dst` as it was.
        FillMode::Carbonate => dst
            .transaction(|dst| CarbonateFill { src, dst, options, written: 0 }.run())
            .map(|filled| FillCounts { filled, replaced: 0 }),
    }
}

/// Refuses clocks and windows that are not real times (NaN, infinite, or beyond the year 36,800).
fn check_options(options: &FillOptions) -> Result<()> {
    let max = crate::slot::MAX_CLOCK as f64;
    let in_range = |t: f64| t.is_finite() && t.abs() <= max;
    if !in_range(options.now) {
        return Err(Error::Refused(format!("fill: clock {} is not a usable epoch time", options.now)));
    }
    if !options.start_from.is_none_or(in_range) || !in_range(options.end_at) {
        return Err(Error::Refused(format!(
            "fill: window start_from={:?} end_at={} is not made of usable epoch times",
            options.start_from, options.end_at
        )));
    }
    Ok(())
}

fn safe_fill(src: &WhisperBuf, dst: &mut WhisperBuf, options: &FillOptions, overwrite: bool) -> Result<FillCounts> {
    let now = options.now.floor() as i64;
    let newest = options.start_from.map_or(now, |s| s.floor() as i64).min(now);
    let oldest = options.end_at.ceil() as i64;
    let dst_archives = dst.header().archives.clone();
    let src_archives = &src.header().archives;
    let aggregation = dst.header().aggregation;
    let xff = dst.header().xff();
    // Oldest aligned slot held by a source archive.
    let src_window_start = |b: usize| {
        let a = src_archives[b];
        let spp = i64::from(a.seconds_per_point);
        align(now - a.retention() as i64, a.seconds_per_point).map(|t| t + spp)
    };
    let mut counts = FillCounts::default();
    for (index, archive) in dst_archives.iter().enumerate() {
        let spp = i64::from(archive.seconds_per_point);
        let first = align(now - archive.retention() as i64, archive.seconds_per_point)? + spp;
        let first = first.max(oldest + (spp - oldest.rem_euclid(spp)) % spp);
        let last = align(newest, archive.seconds_per_point)?;
        let same = src_archives.iter().position(|b| b.seconds_per_point == archive.seconds_per_point);
        let mut finer: Vec<usize> = (0..src_archives.len())
            .filter(|&b| {
                let s = src_archives[b].seconds_per_point;
                s < archive.seconds_per_point && archive.seconds_per_point % s == 0
            })
            .collect();
        finer.sort_by_key(|&b| src_archives[b].seconds_per_point);
        // No same-resolution source archive: aggregate the finest one that holds the slot's start.
        let aggregate_finer = |t: i64| -> Option<f64> {
            let &b = finer.iter().find(|&&b| src_window_start(b).is_ok_and(|start| t >= start))?;
            let step = i64::from(src_archives[b].seconds_per_point);
            let slots: Vec<Option<f64>> = src.values_from(b, t, (spp / step) as usize).collect();
            let known = slots.iter().flatten().count();
            if known > 0 && known as f64 / slots.len() as f64 >= xff {
                aggregation.aggregate(&slots)
            } else {
                None
            }
        };
        if last < first {
            continue;
        }
        let count = ((last - first) / spp + 1) as usize;
        let (filled, replaced) = match same {
            // Same-resolution source archive: walk both archives slot by slot.
            Some(b) => {
                let start = src_window_start(b)?;
                let candidates = src.values_from(b, first, count).enumerate().map(|(i, v)| {
                    let t = first + i as i64 * spp;
                    if t >= start {
                        v
                    } else {
                        None
                    }
                });
                dst.write_slots(index, first, candidates, overwrite)?
            }
            // Aggregated values are never preferred over stored ones: only empty slots take them.
            None => {
                let candidates = (0..count).map(|i| aggregate_finer(first + i as i64 * spp));
                (dst.fill_empty_slots(index, first, candidates)?, 0)
            }
        };
        counts.filled += filled;
        counts.replaced += replaced;
    }
    Ok(counts)
}

/// carbonate 1.1.10 `fill_archives` / `fill`, with its float clock and int() truncations.
struct CarbonateFill<'a> {
    src: &'a WhisperBuf,
    dst: &'a mut WhisperBuf,
    options: &'a FillOptions,
    written: u64,
}

impl CarbonateFill<'_> {
    fn now_i(&self) -> i64 {
        self.options.now.trunc() as i64
    }

    fn run(mut self) -> Result<u64> {
        let now_f = self.options.now;
        let mut start_from = self.options.start_from.unwrap_or(now_f);
        let end_at = self.options.end_at;
        let mut archives = self.dst.header().archives.clone();
        archives.sort_by_key(|a| a.retention());
        for archive in archives {
            let candidate = now_f - archive.retention() as f64;
            let from_time = if candidate > end_at { candidate } else { end_at };
            if from_time >= start_from {
                continue;
            }
            let Some(series) =
                self.dst.fetch(from_time.trunc() as i64, Some(start_from.trunc() as i64), self.now_i(), None)?
            else {
                return Err(Error::InvalidArgument(format!(
                    "carbonate fill: fetch({from_time}, {start_from}) of the destination returned None"
                )));
            };
            let step = i64::from(series.step);
            let mut start = series.from;
            let mut gap_start: i64 = 0; // Python: None, and `not gapstart` is also true for 0
            for value in &series.values {
                let has_value = matches!(value, Some(v) if *v != 0.0 || v.is_nan()) && !self.options.overwrite;
                if !has_value && gap_start == 0 {
                    gap_start = start;
                } else if has_value && gap_start != 0 {
                    if start - gap_start >= i64::from(archive.seconds_per_point) {
                        self.fill_range((gap_start - step) as f64, start as f64)?;
                    }
                    gap_start = 0;
                }
                start += step;
            }
            if gap_start != 0 {
                self.fill_range((gap_start - step) as f64, (series.until - step) as f64)?;
            }
            start_from = from_time;
        }
        Ok(self.written)
    }

    /// carbonate's `fill(src, dst, tstart, tstop)`.
    fn fill_range(&mut self, tstart: f64, mut tstop: f64) -> Result<()> {
        let now_f = self.options.now;
        let now_i = self.now_i();
        let src_time = (now_i - i64::from(self.src.header().max_retention)) as f64;
        if tstart < src_time && tstop < src_time {
            return Ok(());
        }
        let mut order: Vec<usize> = (0..self.src.header().archives.len()).collect();
        order.sort_by_key(|&i| self.src.header().archives[i].retention());
        for index in order {
            let rtime = now_f - self.src.header().archives[index].retention() as f64;
            if tstop <= rtime {
                continue;
            }
            let from_time = if rtime > tstart { rtime } else { tstart };
            if let Some(series) = self.src.fetch(from_time.trunc() as i64, Some(tstop.trunc() as i64), now_i, None)? {
                let points: Vec<crate::Point> = series.points().map(crate::Point::from).collect();
                self.written += points.len() as u64;
                self.dst.update_many(&points, now_i)?;
            }
            tstop = from_time;
            if tstart == tstop {
                return Ok(());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, header_for, AggregationMethod, CreateOptions, Point, Retention};

    const NOW: i64 = 1_700_000_040; // a whole minute

    fn buf(schema: &str, aggregation: AggregationMethod, points: &[(i64, f64)]) -> WhisperBuf {
        let options = CreateOptions { aggregation, x_files_factor: 0.0, sparse: false };
        let header = header_for(&Retention::parse_list(schema).unwrap(), &options).unwrap();
        let mut b = WhisperBuf::empty(header);
        let points: Vec<Point> = points.iter().copied().map(Point::from).collect();
        b.update_many(&points, NOW).unwrap();
        b
    }

    /// Every (archive, timestamp, value) that reads back as present.
    fn present(b: &WhisperBuf) -> Vec<(usize, i64, u64)> {
        let mut out = Vec::new();
        for (i, a) in b.header().archives.iter().enumerate() {
            let spp = i64::from(a.seconds_per_point);
            let first = NOW - NOW.rem_euclid(spp) - a.retention() as i64 + spp;
            for (j, v) in b.values_from(i, first, a.points as usize).enumerate() {
                if let Some(v) = v {
                    out.push((i, first + j as i64 * spp, v.to_bits()));
                }
            }
        }
        out
    }

    #[test]
    fn safe_fill_writes_only_empty_slots_and_is_idempotent() {
        let src = buf("60:30,300:20", AggregationMethod::Sum, &[(NOW - 60, 1.0), (NOW - 120, 2.0), (NOW - 600, 3.0)]);
        let mut dst = buf("60:30,300:20", AggregationMethod::Sum, &[(NOW - 60, 0.0), (NOW - 180, f64::NAN)]);
        let before = present(&dst);
        let options = FillOptions::new(NOW);
        let written = fill_buf(&src, &mut dst, &options).unwrap();
        assert!(written > 0);
        let after = present(&dst);
        // No slot that held data changed (0.0 and NaN are data).
        for slot in &before {
            assert!(after.contains(slot), "changed {slot:?}");
        }
        // Empty slots took src's values from the same archive.
        assert_eq!(dst.value_at(0, NOW - 120), Some(2.0));
        assert_eq!(dst.value_at(0, NOW - 600), Some(3.0));
        assert_eq!(dst.value_at(0, NOW - 60), Some(0.0));
        assert!(dst.value_at(0, NOW - 180).unwrap().is_nan());
        // A second fill changes nothing.
        let snapshot = dst.as_bytes().to_vec();
        fill_buf(&src, &mut dst, &options).unwrap();
        assert_eq!(dst.as_bytes(), &snapshot[..]);
    }

    #[test]
    fn two_copies_healed_into_each_other_hold_the_union() {
        let a_points = [(NOW - 60, 1.0), (NOW - 240, 4.0)];
        let b_points = [(NOW - 120, 2.0), (NOW - 300, 5.0)];
        let mut a = buf("60:30", AggregationMethod::Average, &a_points);
        let mut b = buf("60:30", AggregationMethod::Average, &b_points);
        let options = FillOptions::new(NOW);
        fill_buf(&a.clone(), &mut b, &options).unwrap();
        fill_buf(&b.clone(), &mut a, &options).unwrap();
        for (t, v) in a_points.iter().chain(&b_points) {
            assert_eq!(a.value_at(0, *t), Some(*v));
            assert_eq!(b.value_at(0, *t), Some(*v));
        }
    }

    #[test]
    fn source_wins_replaces_conflicts_and_keeps_what_the_source_lacks() {
        let src = buf("60:30", AggregationMethod::Average, &[(NOW - 60, 1.0), (NOW - 120, 2.0)]);
        let mut dst = buf("60:30", AggregationMethod::Average, &[(NOW - 120, 9.0), (NOW - 180, 3.0)]);
        let options = FillOptions { mode: FillMode::SourceWins, ..FillOptions::new(NOW) };
        let counts = fill_buf_counted(&src, &mut dst, &options).unwrap();
        assert_eq!(counts, FillCounts { filled: 1, replaced: 1 });
        assert_eq!(dst.value_at(0, NOW - 60), Some(1.0));
        assert_eq!(dst.value_at(0, NOW - 120), Some(2.0), "the conflict goes to the source");
        assert_eq!(dst.value_at(0, NOW - 180), Some(3.0), "a point the source lacks stays");
        // Idempotent, and the safe mode never replaces.
        assert_eq!(fill_buf_counted(&src, &mut dst, &options).unwrap(), FillCounts::default());
        let mut safe = buf("60:30", AggregationMethod::Average, &[(NOW - 120, 9.0)]);
        fill_buf(&src, &mut safe, &FillOptions::new(NOW)).unwrap();
        assert_eq!(safe.value_at(0, NOW - 120), Some(9.0));
    }

    #[test]
    fn a_missing_resolution_is_aggregated_from_a_finer_source_archive() {
        // src has 60 s and 600 s archives; dst wants 300 s, which src lacks.
        let points: Vec<(i64, f64)> = (1..=10).map(|i| (NOW - 60 * i, i as f64)).collect();
        let src = buf("60:60,600:10", AggregationMethod::Sum, &points);
        let mut dst = buf("60:5,300:24", AggregationMethod::Sum, &[]);
        fill_buf(&src, &mut dst, &FillOptions::new(NOW)).unwrap();
        let bucket = NOW - NOW.rem_euclid(300) - 300;
        let expected: f64 = points.iter().filter(|(t, _)| *t >= bucket && *t < bucket + 300).map(|(_, v)| v).sum();
        assert_eq!(dst.value_at(1, bucket), Some(expected));
    }

    #[test]
    fn fill_into_itself_is_refused_and_a_missing_destination_is_copied() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src.wsp");
        create(&src, &Retention::parse_list("60:10").unwrap(), &CreateOptions::default()).unwrap();
        crate::WhisperFile::open_rw(&src).unwrap().update_many(&[Point::new(NOW - 60, 7.0)], NOW).unwrap();
        let err = fill(&src, &src, &FillOptions::new(NOW)).unwrap_err();
        assert!(matches!(err, Error::SameFile(_)), "{err}");
        let dst = dir.path().join("dst.wsp");
        let report = fill(&src, &dst, &FillOptions::new(NOW)).unwrap();
        assert!(report.copied);
        assert_eq!(std::fs::read(&src).unwrap(), std::fs::read(&dst).unwrap());
    }
}
