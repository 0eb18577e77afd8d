//! Read-only questions about a whole file: which points does it know (buckytools' `bucky-isempty`), and is
//! it a valid whisper file at all (`find-corrupt-whisper-files`).

use std::path::Path;

use crate::error::Result;
use crate::file::WhisperFile;
use crate::header::Header;

/// The points a file knows, as buckytools' `FindValidDataPoints` collects them.
#[derive(Debug, Clone, PartialEq)]
pub struct KnownPoints {
    /// Every slot with a value (NaN counts as no value, as in Go), in the order they were found: the finest
    /// archive's range first (oldest to newest), then each coarser archive's older range.
    pub points: Vec<(i64, f64)>,
    /// How many slots were looked at (the "total" of `bucky-isempty -d`).
    pub slots: usize,
}

impl KnownPoints {
    /// The point with the latest timestamp, if any.
    pub fn newest(&self) -> Option<(i64, f64)> {
        self.points.iter().copied().max_by_key(|&(t, _)| t)
    }

    /// The point buckytools' `bucky-isempty -l` prints as "most recent": the last one found, which is the
    /// newest point of the *oldest* range holding any (a Go defect: with data in several archives it is
    /// not the newest).
    pub fn last_found(&self) -> Option<(i64, f64)> {
        self.points.last().copied()
    }
}

/// buckytools' `FindValidDataPoints` at time `now`: walks the archives finest first, each over the stretch of
/// history the finer ones do not cover (archive *i* from `now − retentionᵢ` to `now − retentionᵢ₋₁`, the
/// first up to `now`), through whisper's `fetch`, so stale slots of an older cycle do not count.
pub fn known_points(file: &WhisperFile, now: i64) -> Result<KnownPoints> {
    let mut known = KnownPoints { points: Vec::new(), slots: 0 };
    let mut until = now;
    for archive in &file.header().archives {
        let from = now.saturating_sub(i64::try_from(archive.retention()).unwrap_or(i64::MAX));
        if let Some(series) = file.fetch(from, Some(until), now, None)? {
            known.slots += series.values.len();
            known.points.extend(series.points().filter(|(_, v)| !v.is_nan()));
        }
        until = from;
    }
    Ok(known)
}

/// Checks that `path` is a valid whisper file: opens it and validates its header against the file (archive
/// count, offsets, sizes, ordering, overlaps, length, maxRetention). An invalid file gives an error for which
/// [`crate::Error::is_invalid_file`] holds and [`crate::Error::reason`] says why; I/O trouble (missing,
/// unreadable) gives [`crate::Error::Io`].
pub fn check_file(path: impl AsRef<Path>) -> Result<Header> {
    WhisperFile::open(path).map(|file| file.header().clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, CreateOptions, Point, Retention};

    const NOW: i64 = 1_700_000_000;

    fn file_with(points: &[(i64, f64)]) -> (tempfile::TempDir, WhisperFile) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        create(&path, &Retention::parse_list("10:6,60:10").unwrap(), &CreateOptions::default()).unwrap();
        let file = WhisperFile::open_rw(&path).unwrap();
        let points: Vec<Point> = points.iter().map(|&p| p.into()).collect();
        file.update_many(&points, NOW).unwrap();
        (dir, file)
    }

    #[test]
    fn an_empty_file_knows_nothing_but_counts_its_slots() {
        let (_dir, file) = file_with(&[]);
        let known = known_points(&file, NOW).unwrap();
        assert!(known.points.is_empty());
        // 60 s of archive 0 (6 slots), then 540 s more of archive 1 (9 slots).
        assert_eq!(known.slots, 15);
        assert_eq!(known.newest(), None);
    }

    #[test]
    fn newest_is_the_latest_and_last_found_is_gos_pick() {
        // 20 s ago lands in archive 0 (and propagates nowhere: xff 0.5 of 6 slots); 300 s ago only in archive 1.
        let (_dir, file) = file_with(&[(NOW - 20, 1.0), (NOW - 300, 2.0)]);
        let known = known_points(&file, NOW).unwrap();
        assert_eq!(known.points.len(), 2, "{known:?}");
        assert_eq!(known.newest(), Some((NOW - 20, 1.0)));
        assert_eq!(known.last_found(), Some((NOW - 300 - (NOW - 300).rem_euclid(60), 2.0)));
    }

    #[test]
    fn nan_is_no_value() {
        let (_dir, file) = file_with(&[(NOW - 20, f64::NAN)]);
        assert!(known_points(&file, NOW).unwrap().points.is_empty());
    }

    #[test]
    fn points_older_than_the_retention_do_not_count() {
        let (_dir, file) = file_with(&[(NOW - 20, 1.0)]);
        assert_eq!(known_points(&file, NOW).unwrap().points.len(), 1);
        assert!(known_points(&file, NOW + 10_000).unwrap().points.is_empty());
    }

    #[test]
    fn check_file_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        create(&path, &Retention::parse_list("10:6").unwrap(), &CreateOptions::default()).unwrap();
        assert_eq!(check_file(&path).unwrap().archives.len(), 1);
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 1]).unwrap();
        let err = check_file(&path).unwrap_err();
        assert!(err.is_invalid_file(), "{err}");
        assert!(err.reason().unwrap().contains("truncated"), "{err}");
        let err = check_file(dir.path().join("missing.wsp")).unwrap_err();
        assert!(!err.is_invalid_file() && err.reason().is_none(), "{err}");
    }
}
