//! The reference write algorithms (update_many, update, propagation), generic over where the bytes live:
//! a whole file in memory ([`crate::WhisperBuf`]) or a file read page by page on demand ([`crate::WhisperFile`]).

use crate::aggregation::{AggregationMethod, Mean};
use crate::error::{Error, Result};
use crate::header::{ArchiveInfo, Header, POINT_SIZE};
use crate::slot::{align, check_clock, pack, point_from, Aligner, Point};

/// Random access to a whisper file's bytes. Writes are recorded so that only changed bytes reach the disk.
pub(crate) trait Store {
    /// The validated header.
    fn header(&self) -> &Header;
    /// The point stored at byte `offset` (inside an archive).
    fn point(&mut self, offset: usize) -> Result<(u32, f64)>;
    /// Copies the bytes at `offset` (inside an archive) into `out`.
    fn read_bytes(&mut self, offset: usize, out: &mut [u8]) -> Result<()>;
    /// Overwrites bytes at `offset` (inside an archive).
    fn put(&mut self, offset: usize, bytes: &[u8]) -> Result<()>;
}

/// The timestamp in an archive's slot 0: 0 means "empty archive".
fn base<S: Store>(s: &mut S, archive: &ArchiveInfo) -> Result<u32> {
    Ok(s.point(archive.offset as usize)?.0)
}

fn slot_offset(archive: &ArchiveInfo, base: u32, interval: i64) -> usize {
    crate::slot::slot_offset(archive, i64::from(base), interval)
}

/// whisper's `update_many(path, points, now)`: routes points by age, drops too-old ones, writes each run
/// and propagates. Points need not be sorted. Callers make it all or nothing: a paged file writes back only
/// on success, a [`crate::WhisperBuf`] runs it in a transaction.
pub(crate) fn update_many<S: Store>(s: &mut S, points: &[Point], now: i64) -> Result<()> {
    check_clock(now)?;
    if points.is_empty() {
        return Ok(());
    }
    // whisper sorts newest first (stable, so equal timestamps keep input order) and then reverses each
    // archive's batch. A stable ascending sort of the reversed input gives every batch in that final order
    // directly, as one slice per archive.
    let mut sorted: Vec<(i64, f64)> = points.iter().rev().map(|p| (p.timestamp, p.value)).collect();
    sorted.sort_by_key(|p| p.0);
    let archive_count = s.header().archives.len();
    let mut current = 0usize;
    let mut end = sorted.len();
    // Walk from the newest point; each archive takes the points younger than its retention.
    while end > 0 {
        let retention = i128::from(s.header().archives[current].retention());
        let too_old = |t: i64| i128::from(now) - i128::from(t) > retention;
        let start = sorted[..end].partition_point(|&(t, _)| too_old(t));
        if start < end {
            archive_update_many(s, current, &mut sorted[start..end])?;
        }
        end = start;
        current += 1;
        if current == archive_count {
            break; // the rest is older than every archive: dropped, as whisper does
        }
    }
    Ok(())
}

/// whisper's single-point `update(path, value, timestamp, now)`: stricter than update_many (future and
/// too-old points are `TimestampNotCovered`) and propagates to the following archives by position.
pub(crate) fn update<S: Store>(s: &mut S, value: f64, timestamp: i64, now: i64) -> Result<()> {
    check_clock(now)?;
    let age = i128::from(now) - i128::from(timestamp);
    if !(age >= 0 && age < i128::from(s.header().max_retention)) {
        return Err(Error::TimestampNotCovered { timestamp, now, max_retention: s.header().max_retention });
    }
    let index = s
        .header()
        .archives
        .iter()
        .position(|a| i128::from(a.retention()) >= age)
        .unwrap_or(s.header().archives.len() - 1);
    let archive = s.header().archives[index];
    let interval = align(timestamp, archive.seconds_per_point)?;
    write_point(s, index, interval, value)?;
    for lower in index + 1..s.header().archives.len() {
        if !propagate(s, interval, lower - 1, lower)? {
            break;
        }
    }
    Ok(())
}

/// whisper's `__archive_update_many`: `points` are chronological and all belong to archive `index`.
/// `points` are aligned in place (the caller's scratch copy).
pub(crate) fn archive_update_many<S: Store>(s: &mut S, index: usize, points: &mut [(i64, f64)]) -> Result<()> {
    write_archive_points(s, index, points)?;
    propagate_from(s, index, points)
}

/// The write half of `__archive_update_many`: packs contiguous runs and writes them at the slot rule,
/// without propagation. Aligns `points` in place (propagation needs them aligned).
pub(crate) fn write_archive_points<S: Store>(s: &mut S, index: usize, points: &mut [(i64, f64)]) -> Result<()> {
    let archive = s.header().archives[index];
    let step = i64::from(archive.seconds_per_point);
    let mut aligner = Aligner::new(archive.seconds_per_point);
    for point in points.iter_mut() {
        point.0 = aligner.align(point.0)?;
    }
    let aligned: &[(i64, f64)] = points;
    // Contiguous runs, packed into one buffer; within a run of equal intervals the last one wins.
    let mut packed = vec![0u8; aligned.len() * POINT_SIZE];
    let mut runs: Vec<(i64, std::ops::Range<usize>)> = Vec::new();
    let (mut used, mut run_start) = (0usize, 0usize);
    let mut previous: Option<i64> = None;
    let run_first = |last: Option<i64>, start: usize, end: usize| {
        last.unwrap_or(0) - step * (((end - start) / POINT_SIZE) as i64 - 1)
    };
    for (i, &(interval, value)) in aligned.iter().enumerate() {
        if aligned.get(i + 1).is_some_and(|next| next.0 == interval) {
            continue;
        }
        // Python tests `not previousInterval`, so an interval of 0 also continues the run.
        let continues = match previous {
            None | Some(0) => true,
            Some(p) => interval == p + step,
        };
        if !continues {
            runs.push((run_first(previous, run_start, used), run_start..used));
            run_start = used;
        }
        if let Some(slot) = packed.get_mut(used..used + POINT_SIZE) {
            slot.copy_from_slice(&pack(interval, value)?);
        }
        used += POINT_SIZE;
        previous = Some(interval);
    }
    if used > run_start {
        runs.push((run_first(previous, run_start, used), run_start..used));
    }
    let runs: Vec<(i64, &[u8])> = runs.into_iter().map(|(t, r)| (t, &packed[r])).collect();
    let Some(first_run) = runs.first() else {
        return Ok(());
    };
    let mut base = i64::from(base(s, &archive)?);
    if base == 0 {
        base = first_run.0;
    }
    let size = archive.size() as usize;
    let begin = archive.offset as usize;
    let end = begin + size;
    // Check every run before writing any, so a refused batch leaves the buffer unchanged.
    for &(interval, bytes) in &runs {
        let offset = crate::slot::slot_offset(&archive, base, interval);
        if offset + bytes.len() > end + size {
            return Err(Error::ArchiveOverflow { points: bytes.len() / POINT_SIZE, capacity: archive.points });
        }
    }
    for &(interval, bytes) in &runs {
        let offset = crate::slot::slot_offset(&archive, base, interval);
        let beyond = (offset + bytes.len()).saturating_sub(end);
        if beyond > 0 {
            let split = bytes.len() - beyond;
            s.put(offset, &bytes[..split])?;
            s.put(begin, &bytes[split..])?;
        } else {
            s.put(offset, bytes)?;
        }
    }
    Ok(())
}

/// The propagation half of `__archive_update_many`.
fn propagate_from<S: Store>(s: &mut S, index: usize, aligned: &[(i64, f64)]) -> Result<()> {
    let archive = s.header().archives[index];
    // Propagate to every coarser archive (by spp, as update_many does), stopping at the first level
    // where nothing propagated.
    let mut higher = index;
    let lowers: Vec<usize> = (0..s.header().archives.len())
        .filter(|&i| s.header().archives[i].seconds_per_point > archive.seconds_per_point)
        .collect();
    for lower in lowers {
        let lower_spp = s.header().archives[lower].seconds_per_point;
        // The lower intervals with consecutive duplicates removed: re-inserting an element leaves a Python
        // set unchanged, so this has the same set order as whisper's `lowerIntervals`.
        let mut aligner = Aligner::new(lower_spp);
        let mut unique: Vec<i64> = Vec::with_capacity(aligned.len() / 2 + 1);
        for &(t, _) in aligned {
            let fit = aligner.align(t)?;
            if unique.last() != Some(&fit) {
                unique.push(fit);
            }
        }
        // whisper iterates `set(lowerIntervals)`. The order only matters when the lower archive is empty
        // (the first interval written anchors it) or when two intervals share a lower slot (they span a
        // whole retention); otherwise every order writes the same bytes, and a sorted dedup is cheaper.
        let lower_info = s.header().archives[lower];
        let is_sorted = unique.is_sorted();
        let order_free = is_sorted
            && base(s, &lower_info)? != 0
            && unique.last().zip(unique.first()).is_some_and(|(l, f)| ((l - f) as u64) < lower_info.retention());
        let set_order = (!order_free).then(|| crate::pyset::set_order(&unique));
        let sorted = is_sorted.then_some(&unique);
        let mut any = false;
        // Fast path: this level only reads the higher archive, which it never writes, so all aggregates
        // can be computed from one read of the higher slots; the writes then follow whisper's order.
        let batch = match sorted {
            Some(sorted) => aggregate_level(s, higher, lower, sorted)?.map(|values| (sorted, values)),
            None => None,
        };
        let intervals: &[i64] = set_order.as_deref().unwrap_or(&unique);
        match batch {
            Some((sorted, values)) => {
                let mut anchor = base(s, &lower_info)?;
                for &interval in intervals {
                    let Ok(at) = sorted.binary_search(&interval) else { continue };
                    if let Some(value) = values[at] {
                        write_point_at(s, &lower_info, &mut anchor, interval, value)?;
                        any = true;
                    }
                }
            }
            None => {
                for &interval in intervals {
                    if propagate(s, interval, higher, lower)? {
                        any = true;
                    }
                }
            }
        }
        if !any {
            break;
        }
        higher = lower;
    }
    Ok(())
}

/// The aggregate `__propagate` would write for each of the sorted lower `intervals` (None where it would
/// write nothing), from a single read of the higher archive. `Ok(None)` when the shortcut does not
/// reproduce the reference exactly (empty higher archive, a ratio that is not whole, or intervals spread
/// over more than the higher archive holds); the caller then propagates interval by interval.
fn aggregate_level<S: Store>(
    s: &mut S,
    higher: usize,
    lower: usize,
    intervals: &[i64],
) -> Result<Option<Vec<Option<f64>>>> {
    let (h, l) = (s.header().archives[higher], s.header().archives[lower]);
    let (Some(&first), Some(&last)) = (intervals.first(), intervals.last()) else { return Ok(Some(Vec::new())) };
    let higher_base = base(s, &h)?;
    let step = i64::from(h.seconds_per_point);
    let k = (l.seconds_per_point / h.seconds_per_point) as usize;
    if higher_base == 0 || l.seconds_per_point % h.seconds_per_point != 0 || (last - first) % step != 0 {
        return Ok(None);
    }
    let span = ((last - first) / step) as usize + k;
    if span > h.points as usize {
        return Ok(None);
    }
    let start = slot_offset(&h, higher_base, first);
    let mut raw = vec![0u8; span * POINT_SIZE];
    let head = (h.end() as usize - start).min(raw.len());
    s.read_bytes(start, &mut raw[..head])?;
    if head < raw.len() {
        s.read_bytes(h.offset as usize, &mut raw[head..])?;
    }
    let (aggregation, xff) = (s.header().aggregation, s.header().xff());
    let mut neighbours: Vec<Option<f64>> = vec![None; k];
    let values = intervals
        .iter()
        .map(|&interval| {
            // The intervals are sorted and a lower step apart, so each decodes its own k slots.
            let first_slot = ((interval - first) / step) as usize;
            let higher_slots = raw.get(first_slot * POINT_SIZE..(first_slot + k) * POINT_SIZE).unwrap_or_default();
            // `not (ratio < xff)` as whisper writes it, so a NaN xff (hostile header) lets everything through.
            let enough = |known: usize| {
                known > 0 && (known as f64 / k as f64).partial_cmp(&xff) != Some(std::cmp::Ordering::Less)
            };
            if aggregation == AggregationMethod::Average {
                // The default method, without the neighbour list: sum the known slots as they decode.
                let mut mean = Mean::default();
                let mut expected = interval;
                for chunk in higher_slots.chunks_exact(POINT_SIZE) {
                    let (ts, v) = point_from(chunk);
                    if i64::from(ts) == expected {
                        mean = mean.push(v);
                    }
                    expected += step;
                }
                return enough(mean.count()).then(|| mean.value());
            }
            let mut known = 0;
            let mut expected = interval;
            for (slot, chunk) in neighbours.iter_mut().zip(higher_slots.chunks_exact(POINT_SIZE)) {
                let (ts, v) = point_from(chunk);
                *slot = (i64::from(ts) == expected).then_some(v);
                known += usize::from(slot.is_some());
                expected += step;
            }
            if enough(known) {
                aggregation.aggregate(&neighbours)
            } else {
                None
            }
        })
        .collect();
    Ok(Some(values))
}

/// Writes `(interval, value)` into archive `index` at whisper's slot rule: slot 0 when the archive is
/// still empty (the point becomes its anchor), else the slot of `interval` relative to the anchor. This is
/// how single updates and propagations write.
fn write_point<S: Store>(s: &mut S, index: usize, interval: i64, value: f64) -> Result<()> {
    let archive = s.header().archives[index];
    let mut anchor = base(s, &archive)?;
    write_point_at(s, &archive, &mut anchor, interval, value)
}

/// [`write_point`] with the archive's anchor (slot 0's timestamp) known to the caller, which writes many
/// points into one archive; keeps `anchor` equal to what slot 0 holds afterwards.
fn write_point_at<S: Store>(
    s: &mut S,
    archive: &ArchiveInfo,
    anchor: &mut u32,
    interval: i64,
    value: f64,
) -> Result<()> {
    let packed = pack(interval, value)?;
    let offset = if *anchor == 0 { archive.offset as usize } else { slot_offset(archive, *anchor, interval) };
    s.put(offset, &packed)?;
    if offset == archive.offset as usize {
        *anchor = point_from(&packed).0;
    }
    Ok(())
}

/// whisper's `__propagate`: aggregates the higher slots under `timestamp`'s lower slot and writes the
/// result if enough of them are known (xff compared in f64 against the widened f32).
fn propagate<S: Store>(s: &mut S, timestamp: i64, higher: usize, lower_index: usize) -> Result<bool> {
    let higher = s.header().archives[higher];
    let lower = s.header().archives[lower_index];
    let lower_start = align(timestamp, lower.seconds_per_point)?;
    let higher_base = base(s, &higher)?;
    let first = if higher_base == 0 { higher.offset as usize } else { slot_offset(&higher, higher_base, lower_start) };
    // k higher slots, read with the reference's single wrap: for k > points it gets fewer.
    let k = (lower.seconds_per_point / higher.seconds_per_point) as u64;
    let relative_first = (first - higher.offset as usize) as u64;
    let relative_last = (relative_first + k * POINT_SIZE as u64) % higher.size();
    let count = if relative_first < relative_last {
        (relative_last - relative_first) as usize / POINT_SIZE
    } else {
        (higher.size() - relative_first + relative_last) as usize / POINT_SIZE
    };
    // One read (two when wrapping) of the raw slots, on the stack for the usual small ratios.
    const INLINE: usize = 64;
    let mut raw_inline = [0u8; INLINE * POINT_SIZE];
    let mut raw_heap = Vec::new();
    let raw: &mut [u8] = if count <= INLINE {
        &mut raw_inline[..count * POINT_SIZE]
    } else {
        raw_heap.resize(count * POINT_SIZE, 0);
        &mut raw_heap
    };
    let head = (higher.end() as usize - first).min(raw.len());
    s.read_bytes(first, &mut raw[..head])?;
    if head < raw.len() {
        s.read_bytes(higher.offset as usize, &mut raw[head..])?;
    }
    let step = i64::from(higher.seconds_per_point);
    let mut neighbours_inline = [None; INLINE];
    let mut neighbours_heap = Vec::new();
    let neighbours: &mut [Option<f64>] = if count <= INLINE {
        &mut neighbours_inline[..count]
    } else {
        neighbours_heap.resize(count, None);
        &mut neighbours_heap
    };
    let mut expected = lower_start;
    for (slot, chunk) in neighbours.iter_mut().zip(raw.chunks_exact(POINT_SIZE)) {
        let (ts, v) = point_from(chunk);
        *slot = (i64::from(ts) == expected).then_some(v);
        expected += step;
    }
    let neighbours: &[Option<f64>] = neighbours;
    let known = neighbours.iter().filter(|v| v.is_some()).count();
    if known == 0 {
        return Ok(false);
    }
    if (known as f64) / (neighbours.len() as f64) < s.header().xff() {
        return Ok(false);
    }
    let Some(value) = s.header().aggregation.aggregate(neighbours) else {
        return Ok(false);
    };
    write_point(s, lower_index, lower_start, value)?;
    Ok(true)
}
