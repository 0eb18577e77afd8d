//! `merge`: whisper-merge, which copies every known source point over the destination.

use std::path::Path;

use crate::buf::WhisperBuf;
use crate::error::{Error, Result};
use crate::file::WhisperFile;

/// whisper's `merge(from, to, time_from, time_to, now)` on files: requires identical archive layouts and
/// overwrites the destination with every non-empty source slot in the window, then propagates.
pub fn merge(src: &Path, dst: &Path, time_from: Option<i64>, time_to: Option<i64>, now: i64) -> Result<()> {
    let source = WhisperFile::open(src)?.read_buf()?;
    let target = WhisperFile::open_rw(dst)?;
    if source.header().archives != target.header().archives {
        return Err(Error::LayoutMismatch { src: src.to_owned(), dst: dst.to_owned() });
    }
    let mut buf = target.read_buf()?;
    merge_buf(&source, &mut buf, time_from, time_to, now)?;
    target.write_back(&buf)?;
    target.sync()
}

/// [`merge`] on in-memory files.
pub fn merge_buf(
    src: &WhisperBuf,
    dst: &mut WhisperBuf,
    time_from: Option<i64>,
    time_to: Option<i64>,
    now: i64,
) -> Result<()> {
    if src.header().archives != dst.header().archives {
        return Err(Error::LayoutMismatch { src: "<source>".into(), dst: "<destination>".into() });
    }
    crate::slot::check_clock(now)?;
    let until = crate::slot::clamp_time(time_to.unwrap_or(now));
    let from = crate::slot::clamp_time(time_from.unwrap_or(0));
    if until < from {
        return Err(Error::InvalidArgument("time_to must be >= time_from".into()));
    }
    // All or nothing: a merge refused part-way leaves `dst` as it was.
    dst.transaction(|dst| merge_archives(src, dst, from, until, now))
}

fn merge_archives(src: &WhisperBuf, dst: &mut WhisperBuf, from: i64, until: i64, now: i64) -> Result<()> {
    let mut order: Vec<usize> = (0..src.header().archives.len()).collect();
    order.sort_by_key(|&i| src.header().archives[i].retention());
    for index in order {
        let retention = src.header().archives[index].retention() as i64;
        let oldest = now - retention;
        // An empty source archive yields only Nones: nothing to write (and no huge list to build).
        if until < oldest || src.archive_is_empty(index) {
            continue;
        }
        let series = src.archive_fetch(index, from.max(oldest), until)?;
        let mut points: Vec<(i64, f64)> = series.points().collect();
        if !points.is_empty() {
            dst.archive_update_many(index, &mut points)?;
        }
    }
    Ok(())
}
