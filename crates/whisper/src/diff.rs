//! whisper's `diff`: compares two files with the same archives slot by slot, as `whisper-diff.py` does.

use crate::error::{Error, Result};
use crate::file::WhisperFile;

/// How to compare (the arguments of whisper's `diff`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiffOptions {
    /// Compare only slots where both files have a value (`--ignore-empty`); by default slots where either
    /// has one.
    pub ignore_empty: bool,
    /// End of the compared interval; `None` (or 0, which whisper treats as unset) means `now`.
    pub until: Option<i64>,
    /// The clock.
    pub now: i64,
}

/// One slot where the files differ.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct DiffPoint {
    /// The slot's time.
    pub timestamp: i64,
    /// The first file's value (`None`: no value).
    pub a: Option<f64>,
    /// The second file's value.
    pub b: Option<f64>,
}

/// The comparison of one archive.
#[derive(Debug, Clone, PartialEq)]
pub struct ArchiveDiff {
    /// The archive's number in order of increasing retention (whisper's numbering here).
    pub archive: usize,
    /// The slots compared (those with a value in either file, or in both with `ignore_empty`).
    pub total: usize,
    /// The compared slots whose values differ (NaN differs from everything, as in Python).
    pub points: Vec<DiffPoint>,
}

/// whisper's `diff(path_from, path_to, ignore_empty, until_time, now)`: the archives, sorted by retention,
/// each compared from `now − retention` up to `until` (then `until` moves back to that start, so each
/// archive covers the stretch the finer ones do not). Files with different archives are refused
/// ([`Error::LayoutMismatch`]). Where whisper crashes (an `until` past `now` longer than an archive: an
/// IndexError), this refuses with [`Error::Refused`].
pub fn diff(a: &WhisperFile, b: &WhisperFile, options: &DiffOptions) -> Result<Vec<ArchiveDiff>> {
    if a.header().archives != b.header().archives {
        return Err(Error::LayoutMismatch { src: a.path().to_owned(), dst: b.path().to_owned() });
    }
    let mut order: Vec<usize> = (0..a.header().archives.len()).collect();
    order.sort_by_key(|&i| a.header().archives[i].retention()); // stable, like Python's sort
    let mut until = options.until.filter(|&t| t != 0).unwrap_or(options.now);
    let mut diffs = Vec::with_capacity(order.len());
    for (number, &index) in order.iter().enumerate() {
        let retention = i64::try_from(a.header().archives[index].retention()).unwrap_or(i64::MAX);
        let start = options.now.saturating_sub(retention);
        let from_series = a.archive_fetch(index, start, until)?;
        let to_series = b.archive_fetch(index, start, until)?;
        let first = from_series.from.min(to_series.from);
        let end = from_series.until.max(to_series.until);
        let step = i64::from(from_series.step.min(to_series.step));
        let count = (end - first).div_euclid(step).max(0) as usize;
        let mut total = 0;
        let mut points = Vec::new();
        for s in 0..count {
            let (Some(&va), Some(&vb)) = (from_series.values.get(s), to_series.values.get(s)) else {
                return Err(Error::Refused(format!(
                    "archive {number}: the interval up to {until} is longer than the archive holds \
                     (whisper-diff fails here with an IndexError); give an --until no later than now"
                )));
            };
            let compared =
                if options.ignore_empty { va.is_some() && vb.is_some() } else { va.is_some() || vb.is_some() };
            if !compared {
                continue;
            }
            total += 1;
            let same = matches!((va, vb), (Some(x), Some(y)) if x == y);
            if !same {
                points.push(DiffPoint { timestamp: first + s as i64 * step, a: va, b: vb });
            }
        }
        diffs.push(ArchiveDiff { archive: number, total, points });
        until = until.min(start);
    }
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, CreateOptions, Point, Retention};

    const NOW: i64 = 1_700_000_000;

    fn file(dir: &std::path::Path, name: &str, points: &[(i64, f64)]) -> WhisperFile {
        let path = dir.join(name);
        create(&path, &Retention::parse_list("10:6,60:10").unwrap(), &CreateOptions::default()).unwrap();
        let file = WhisperFile::open_rw(&path).unwrap();
        let points: Vec<Point> = points.iter().map(|&p| p.into()).collect();
        file.update_many(&points, NOW).unwrap();
        file
    }

    fn options() -> DiffOptions {
        DiffOptions { ignore_empty: false, until: None, now: NOW }
    }

    #[test]
    fn identical_files_differ_nowhere() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a.wsp", &[(NOW - 20, 1.0)]);
        let b = file(dir.path(), "b.wsp", &[(NOW - 20, 1.0)]);
        let diffs = diff(&a, &b, &options()).unwrap();
        assert_eq!(diffs.len(), 2);
        assert_eq!((diffs[0].total, diffs[0].points.len()), (1, 0));
    }

    #[test]
    fn a_missing_and_a_changed_value_differ_and_nan_differs_from_itself() {
        let dir = tempfile::tempdir().unwrap();
        let t = NOW - 20 - (NOW - 20).rem_euclid(10);
        let a = file(dir.path(), "a.wsp", &[(t, 1.0), (t - 10, f64::NAN), (t - 20, 5.0)]);
        let b = file(dir.path(), "b.wsp", &[(t, 2.0), (t - 10, f64::NAN)]);
        let diffs = diff(&a, &b, &options()).unwrap();
        let stamps: Vec<i64> = diffs[0].points.iter().map(|p| p.timestamp).collect();
        assert_eq!(stamps, vec![t - 20, t - 10, t]);
        assert_eq!(diffs[0].points[0].b, None);
        let ignoring = diff(&a, &b, &DiffOptions { ignore_empty: true, ..options() }).unwrap();
        assert_eq!(ignoring[0].total, 2);
    }

    #[test]
    fn unlike_archives_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a.wsp", &[]);
        let path = dir.path().join("c.wsp");
        create(&path, &Retention::parse_list("10:7").unwrap(), &CreateOptions::default()).unwrap();
        let c = WhisperFile::open(&path).unwrap();
        assert!(matches!(diff(&a, &c, &options()), Err(Error::LayoutMismatch { .. })));
    }

    #[test]
    fn an_until_far_in_the_future_is_refused_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let a = file(dir.path(), "a.wsp", &[(NOW - 20, 1.0)]);
        let b = file(dir.path(), "b.wsp", &[(NOW - 20, 1.0)]);
        let until = Some(NOW + 10_000);
        assert!(matches!(diff(&a, &b, &DiffOptions { until, ..options() }), Err(Error::Refused(_))));
    }
}
