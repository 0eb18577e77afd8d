//! Changing an existing file: [`resize`] (whisper-resize.py 1.1.10) and [`set_aggregation_method`]
//! (whisper's `setAggregationMethod`).
//!
//! Both hold whisper's exclusive flock on the file while they read it. A resize writes the new file to a
//! temp file next to it, fsyncs it and renames it over the original, so the path always holds a complete
//! file (whisper-resize renames the original away first, leaving a window with no file at all).

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::aggregation::AggregationMethod;
use crate::buf::WhisperBuf;
use crate::create::{checked_xff, header_for, CreateOptions};
use crate::durable::{self, TempFile};
use crate::error::{Error, Result};
use crate::fetch::Series;
use crate::file::WhisperFile;
use crate::header::Header;
use crate::lock::{LockMode, DEFAULT_LOCK_TIMEOUT};
use crate::locked::LockedOpen;
use crate::retention::Retention;
use crate::slot::{check_clock, Point};

/// Options of [`resize`]; [`ResizeOptions::new`] gives whisper-resize's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeOptions {
    /// The clock; whisper-resize reads it once and fetches the old data relative to it.
    pub now: i64,
    /// New xFilesFactor (`--xFilesFactor`); `None` keeps the file's.
    pub x_files_factor: Option<f64>,
    /// New aggregation method (`--aggregationMethod`); `None` keeps the file's.
    pub aggregation: Option<AggregationMethod>,
    /// `--aggregate`: fill each new slot by aggregating the old points inside it, instead of writing the
    /// old archives' points (coarsest first) through `update_many`.
    pub aggregate: bool,
    /// Keep the original as `PATH.bak` (whisper-resize does, unless `--nobackup`).
    pub backup: bool,
    /// Bound on the wait for the exclusive lock.
    pub lock_timeout: Duration,
}

impl ResizeOptions {
    /// whisper-resize's defaults at `now`: same xff and method, no aggregation, keep `PATH.bak`.
    pub fn new(now: i64) -> Self {
        ResizeOptions {
            now,
            x_files_factor: None,
            aggregation: None,
            aggregate: false,
            backup: true,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        }
    }
}

/// Where [`resize`] and [`set_aggregation`] keep the original: `PATH.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".bak");
    PathBuf::from(name)
}

/// whisper-resize.py 1.1.10 on `path`: same bytes, same refusals. Returns the new header.
///
/// Everything is computed before the disk is touched, so a refused resize changes nothing. The new file
/// keeps the original's permissions. With [`ResizeOptions::backup`] the original stays reachable as
/// `PATH.bak`, replacing an older one; without it no `PATH.bak` is left, an older one included (whisper-resize
/// renames the original over it, then deletes it).
pub fn resize(path: &Path, retentions: &[Retention], options: &ResizeOptions) -> Result<Header> {
    resize_with(path, options, |_| Ok(retentions.to_vec()))
}

/// buckytools' `modify -index N -retention R`: [`resize`] with archive `index` (finest first) given
/// `retention` and the others kept, read from the header under the lock.
pub fn resize_archive(path: &Path, index: usize, retention: Retention, options: &ResizeOptions) -> Result<Header> {
    resize_with(path, options, |header| {
        let mut retentions: Vec<Retention> = header.archives.iter().map(|a| a.as_retention()).collect();
        let count = retentions.len();
        let slot = retentions.get_mut(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: archive index {index} is out of range: the file has {count} archives, numbered 0 (finest) to {} \
                 (see `bucky whisper info`)",
                path.display(),
                count - 1
            ))
        })?;
        *slot = retention;
        Ok(retentions)
    })
}

/// [`resize`] to the retentions `new` picks from the current header.
fn resize_with(
    path: &Path,
    options: &ResizeOptions,
    new: impl FnOnce(&Header) -> Result<Vec<Retention>>,
) -> Result<Header> {
    // Read only: the resized copy replaces the file, which is never written in place.
    let file =
        WhisperFile::open_locked_with(path, &LockedOpen::new(LockMode::Exclusive, options.lock_timeout).write(false))?;
    let old = file.read_buf()?;
    let resized = resize_buf(&old, &new(old.header())?, options)?;
    let temp = temp_like(path, &file)?;
    temp.write_content(resized.as_bytes(), false)?;
    let backup = backup_path(path);
    temp.publish_replace_keeping(path, options.backup.then_some(backup.as_path()))?;
    if !options.backup {
        durable::remove_file(&backup)?;
    }
    Ok(resized.header().clone())
}

/// [`resize`] in memory: the new file's image.
pub fn resize_buf(old: &WhisperBuf, retentions: &[Retention], options: &ResizeOptions) -> Result<WhisperBuf> {
    let now = options.now;
    check_clock(now)?;
    let header = old.header();
    // Each old archive's window, coarsest first. whisper.fetch picks the archive for each window by its own
    // rule, which for `now - retention + spp` can be a finer archive than the one the window is for.
    let mut order: Vec<usize> = (0..header.archives.len()).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(header.archives[i].seconds_per_point));
    let windows = order
        .iter()
        .map(|&i| {
            let archive = header.archives[i];
            let from = now - archive.retention() as i64 + i64::from(archive.seconds_per_point);
            old.fetch(from, Some(now), now, None)?
                .ok_or_else(|| Error::InvalidArgument(format!("resize: no data window for archive{i} at {now}")))
        })
        .collect::<Result<Vec<Series>>>()?;
    let x_files_factor = options.x_files_factor.unwrap_or_else(|| header.xff());
    let aggregation = options.aggregation.unwrap_or(header.aggregation);
    let new_header = header_for(retentions, &CreateOptions { aggregation, x_files_factor, sparse: false })?;
    let mut new = WhisperBuf::empty(new_header);
    if options.aggregate {
        aggregate_into(&mut new, &windows, x_files_factor, now)?;
    } else {
        for window in &windows {
            let points: Vec<Point> = window.points().map(Point::from).collect();
            new.update_many(&points, now)?;
        }
    }
    Ok(new)
}

/// whisper-resize's `--aggregate`: the old points as one list (the finest window, then each coarser window
/// from its first point older than everything so far), and for each new archive, every slot `[t, t+step)`
/// over whisper-resize's range aggregates the points inside it when enough of them are known. `xff` is
/// compared unrounded, as the script does, not as the f32 the file stores.
fn aggregate_into(new: &mut WhisperBuf, coarsest_first: &[Series], xff: f64, now: i64) -> Result<()> {
    // Newest first while it is built, as in the script.
    let mut old: Vec<(i64, Option<f64>)> = Vec::new();
    for window in coarsest_first.iter().rev() {
        let step = i64::from(window.step);
        // zip(range(from, until, step), values): the shorter one decides.
        let slots = usize::try_from((window.until - window.from + step - 1).div_euclid(step)).unwrap_or(0);
        let mut points: Vec<(i64, Option<f64>)> =
            window.values.iter().take(slots).enumerate().map(|(i, &v)| (window.from + i as i64 * step, v)).collect();
        points.reverse();
        // The script keeps everything when no point is older than the oldest so far (slice_end stays 0).
        let start = old.last().map_or(0, |&(oldest, _)| points.iter().position(|p| p.0 < oldest).unwrap_or(0));
        old.extend_from_slice(&points[start..]);
    }
    old.reverse();
    let times: Vec<i64> = old.iter().map(|p| p.0).collect();
    let aggregation = new.header().aggregation;
    for archive in new.header().archives.clone() {
        let step = i64::from(archive.seconds_per_point);
        // The script's range: `now - retention + now % step` up to `now + now % step + step`, exclusive.
        let mut left = now - archive.retention() as i64 + now.rem_euclid(step);
        let until = now + now.rem_euclid(step) + step;
        let mut points = Vec::new();
        while left + step < until {
            let lo = bisect_left(&times, left, 0);
            let hi = bisect_left(&times, left + step, lo);
            let slots: Vec<Option<f64>> = old[lo..hi].iter().map(|p| p.1).collect();
            let known = slots.iter().flatten().count();
            if known > 0 && known as f64 / slots.len() as f64 >= xff {
                if let Some(value) = aggregation.aggregate(&slots) {
                    points.push(Point::new(left, value));
                }
            }
            left += step;
        }
        new.update_many(&points, now)?;
    }
    Ok(())
}

/// Python's `bisect.bisect_left(a, x, lo)`, step for step: the list is not always sorted (see
/// [`aggregate_into`]), and then only the same probes give the same answer.
fn bisect_left(a: &[i64], x: i64, mut lo: usize) -> usize {
    let mut hi = a.len();
    while lo < hi {
        let mid = (lo + hi) / 2;
        if a[mid] < x {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// What [`set_aggregation`] writes.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregationChange {
    /// The new aggregation method.
    pub method: AggregationMethod,
    /// The new xFilesFactor; `None` keeps the file's.
    pub x_files_factor: Option<f64>,
    /// First copy the file to `PATH.bak` (durably, under the lock), as buckytools' `modify` does.
    pub backup: bool,
    /// Bound on the wait for the exclusive lock.
    pub lock_timeout: Duration,
}

/// whisper's `setAggregationMethod(path, method, xff)`: rewrites the header's method (and xFilesFactor,
/// if given) in place under the exclusive flock; returns the old method.
pub fn set_aggregation_method(
    path: &Path,
    method: AggregationMethod,
    x_files_factor: Option<f64>,
) -> Result<AggregationMethod> {
    let change = AggregationChange { method, x_files_factor, backup: false, lock_timeout: DEFAULT_LOCK_TIMEOUT };
    Ok(set_aggregation(path, &change)?.aggregation)
}

/// [`set_aggregation_method`] with every option; returns the header as it was.
pub fn set_aggregation(path: &Path, change: &AggregationChange) -> Result<Header> {
    let file = WhisperFile::open_locked(path, LockMode::Exclusive, change.lock_timeout)?;
    let old = file.current_header()?;
    let x_files_factor = change.x_files_factor.map(checked_xff).transpose()?.unwrap_or(old.x_files_factor);
    if change.backup {
        let backup = backup_path(path);
        let temp = temp_like(&backup, &file)?;
        temp.write_content(file.read_buf()?.as_bytes(), false)?;
        temp.publish_replace(&backup)?;
    }
    file.write_metadata(&Header { aggregation: change.method, x_files_factor, ..old.clone() })?;
    file.sync()?;
    Ok(old)
}

/// A temp file for `dest` with `original`'s permissions.
fn temp_like(dest: &Path, original: &WhisperFile) -> Result<TempFile> {
    let permissions = original.file().metadata().map_err(|e| Error::io(original.path(), e))?.permissions();
    let temp = TempFile::new_for(dest)?;
    temp.file().set_permissions(permissions).map_err(|e| Error::io(temp.path(), e))?;
    Ok(temp)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::create::create;

    const NOW: i64 = 1_700_000_040;

    fn file_with_data(dir: &Path) -> PathBuf {
        let path = dir.join("m.wsp");
        create(&path, &Retention::parse_list("60:10,300:12").unwrap(), &CreateOptions::default()).unwrap();
        let points: Vec<Point> = (0..20).map(|i| Point::new(NOW - 60 * i, i as f64)).collect();
        WhisperFile::open_rw(&path).unwrap().update_many(&points, NOW).unwrap();
        path
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn resize_keeps_the_original_as_bak_and_its_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_data(dir.path());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let original = std::fs::read(&path).unwrap();
        let header = resize(&path, &Retention::parse_list("60:20,600:10").unwrap(), &ResizeOptions::new(NOW)).unwrap();
        assert_eq!(header.archives.len(), 2);
        assert_eq!(std::fs::read(backup_path(&path)).unwrap(), original);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        let resized = WhisperFile::open(&path).unwrap();
        assert_eq!(resized.header(), &header);
        assert_eq!(resized.fetch(NOW - 120, None, NOW, None).unwrap().unwrap().values, vec![Some(1.0), Some(0.0)]);
        assert_eq!(names(dir.path()), ["m.wsp", "m.wsp.bak"]);
        // --nobackup leaves no PATH.bak, not even the older one (whisper-resize renames over it, then deletes).
        let options = ResizeOptions { backup: false, ..ResizeOptions::new(NOW) };
        resize(&path, &Retention::parse_list("60:30").unwrap(), &options).unwrap();
        assert_eq!(names(dir.path()), ["m.wsp"]);
    }

    #[test]
    fn resize_archive_changes_one_archive() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_data(dir.path());
        let header = resize_archive(&path, 1, Retention::new(600, 10), &ResizeOptions::new(NOW)).unwrap();
        let kept: Vec<Retention> = header.archives.iter().map(|a| a.as_retention()).collect();
        assert_eq!(kept, [Retention::new(60, 10), Retention::new(600, 10)]);
        let err = resize_archive(&path, 2, Retention::new(600, 10), &ResizeOptions::new(NOW)).unwrap_err();
        assert!(err.to_string().contains("archive index 2 is out of range"), "{err}");
    }

    #[test]
    fn a_refused_or_locked_out_change_leaves_everything_as_it_was() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_data(dir.path());
        let original = std::fs::read(&path).unwrap();
        let invalid = Retention::parse_list("60:10,90:20").unwrap();
        let err = resize(&path, &invalid, &ResizeOptions::new(NOW)).unwrap_err();
        assert!(matches!(err, Error::InvalidConfiguration(_)), "{err}");
        let nan = ResizeOptions { x_files_factor: Some(f64::NAN), ..ResizeOptions::new(NOW) };
        assert_eq!(
            resize(&path, &Retention::parse_list("60:20").unwrap(), &nan).unwrap_err().reference_class(),
            "bucky"
        );
        let err = set_aggregation_method(&path, AggregationMethod::Sum, Some(1.5)).unwrap_err();
        assert!(matches!(err, Error::InvalidXFilesFactor(_)), "{err}");
        // Someone else (carbon-cache with WHISPER_LOCK_WRITES) holds the lock: both give up in time.
        let holder = WhisperFile::open(&path).unwrap();
        let _held = holder.lock(LockMode::Exclusive, Duration::ZERO).unwrap();
        let options = ResizeOptions { lock_timeout: Duration::ZERO, ..ResizeOptions::new(NOW) };
        let err = resize(&path, &Retention::parse_list("60:20").unwrap(), &options).unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        let change = AggregationChange {
            method: AggregationMethod::Max,
            x_files_factor: None,
            backup: true,
            lock_timeout: Duration::ZERO,
        };
        assert!(matches!(set_aggregation(&path, &change).unwrap_err(), Error::LockTimeout { .. }));
        assert_eq!(std::fs::read(&path).unwrap(), original);
        assert_eq!(names(dir.path()), ["m.wsp"]);
    }

    #[test]
    fn set_aggregation_rewrites_the_header_in_place_after_a_backup() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_with_data(dir.path());
        let original = std::fs::read(&path).unwrap();
        let change = AggregationChange {
            method: AggregationMethod::Sum,
            x_files_factor: Some(0.25),
            backup: true,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
        };
        let old = set_aggregation(&path, &change).unwrap();
        assert_eq!((old.aggregation, old.x_files_factor), (AggregationMethod::Average, 0.5));
        assert_eq!(std::fs::read(backup_path(&path)).unwrap(), original);
        let now = std::fs::read(&path).unwrap();
        assert_eq!(now[16..], original[16..], "only the metadata block changes");
        let header = WhisperFile::open(&path).unwrap().header().clone();
        assert_eq!((header.aggregation, header.x_files_factor), (AggregationMethod::Sum, 0.25));
        assert_eq!(set_aggregation_method(&path, AggregationMethod::Last, None).unwrap(), AggregationMethod::Sum);
        assert_eq!(WhisperFile::open(&path).unwrap().header().x_files_factor, 0.25);
    }

    #[test]
    fn bisect_left_probes_like_python() {
        assert_eq!(bisect_left(&[1, 2, 2, 3], 2, 0), 1);
        assert_eq!(bisect_left(&[1, 2, 2, 3], 4, 0), 4);
        assert_eq!(bisect_left(&[1, 2, 2, 3], 0, 2), 2);
        // Unsorted input: Python's bisect.bisect_left([5, 1, 9, 2, 7], 3) == 2.
        assert_eq!(bisect_left(&[5, 1, 9, 2, 7], 3, 0), 2);
    }
}
