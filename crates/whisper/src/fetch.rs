//! Fetch: whisper's `fetch` (archive choice, clamping) and `__archive_fetch` (slot arithmetic), over any
//! reader of slots, shared by the in-memory [`crate::WhisperBuf`] and the on-disk [`crate::WhisperFile`].

use crate::error::{Error, Result};
use crate::header::{ArchiveInfo, Header, POINT_SIZE};
use crate::slot::{check_clock, clamp_time, slot_offset};

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

/// The most values one fetch returns (1 GiB of `Option<f64>`); whisper would try to allocate any amount.
const MAX_FETCH_VALUES: usize = 1 << 26;

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
    let from_offset = slot_offset(archive, i64::from(base), from_interval);
    let until_offset = slot_offset(archive, i64::from(base), until_interval);
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
