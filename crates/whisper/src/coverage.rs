//! Point coverage, next to [`crate::fill`]: after a heal, does the healed copy hold every point of the
//! copy it was healed from?
//!
//! A heal can be undone behind the healer's back (carbon-cache's `whisper.create` checks that a file is
//! absent and then opens it with truncation, wiping a file created in between), so a copy is read back and
//! checked point by point before its source may go.
//!
//! A source point is *present* when the replica's archive of the same resolution holds a non-empty slot at
//! that timestamp (any value: carbon may have written a newer one there). Points within `edge_margin`
//! seconds of leaving the source's own window are not checked (they expire from the source soon anyway).
//! Points the replica *cannot* hold (no archive of that resolution, or older than the replica archive's
//! window: a shorter schema) are counted apart as `unplaceable`.

use crate::buf::WhisperBuf;
use crate::header::POINT_SIZE;
use crate::slot::point_from;

/// How much of one copy another holds (see the module docs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Source points checked.
    pub checked: u64,
    /// Source points the replica should hold but does not.
    pub missing: u64,
    /// The first missing point, the oldest of its archive: (seconds per point, timestamp).
    pub first_missing: Option<(u32, i64)>,
    /// Source points the replica's schema cannot hold.
    pub unplaceable: u64,
}

impl Coverage {
    /// Whether the replica holds every point it can hold.
    pub fn complete(&self) -> bool {
        self.missing == 0
    }
}

/// Checks which points of `source` `replica` holds at time `now`, ignoring points within `edge_margin`
/// seconds of leaving either copy's window (see the module docs). Reads the slots in place: one pass over
/// each source archive, and no lookup at all for a replica archive holding the same bytes.
pub fn coverage(source: &WhisperBuf, replica: &WhisperBuf, now: i64, edge_margin: i64) -> Coverage {
    coverage_with(source, replica, now, edge_margin, false)
}

/// [`coverage`] where a point is held only with the source's very value (bit for bit): a replica slot
/// holding another value for the same time counts as missing. What `bucky repair` checks after healing a
/// replica from its reference copy ([`crate::FillMode::SourceWins`]).
pub fn coverage_exact(source: &WhisperBuf, replica: &WhisperBuf, now: i64, edge_margin: i64) -> Coverage {
    coverage_with(source, replica, now, edge_margin, true)
}

fn coverage_with(source: &WhisperBuf, replica: &WhisperBuf, now: i64, edge_margin: i64, exact: bool) -> Coverage {
    let mut coverage = Coverage::default();
    let replica_archives = &replica.header().archives;
    let bytes = source.as_bytes();
    for archive in &source.header().archives {
        let spp = i64::from(archive.seconds_per_point);
        // Oldest timestamp the source still holds for a while: older ones expire soon.
        let source_edge = now - archive.retention() as i64 + spp + edge_margin;
        let target = replica_archives.iter().position(|r| r.seconds_per_point == archive.seconds_per_point);
        let start = archive.offset as usize;
        let Some(slots) = bytes.get(start..start + archive.points as usize * POINT_SIZE) else {
            // Cannot happen for a validated buffer; counted missing so that no source is ever given up on it.
            coverage.missing += 1;
            coverage.first_missing.get_or_insert((archive.seconds_per_point, 0));
            continue;
        };
        // A replica archive laid out like the source's and holding the same bytes (a fresh copy) holds
        // every point where the source does.
        let identical = target.is_some_and(|r| {
            let ra = &replica_archives[r];
            ra.offset == archive.offset
                && ra.points == archive.points
                && replica.as_bytes().get(start..start + slots.len()) == Some(slots)
        });
        // The order of the slots does not matter but for the first missing one, the oldest.
        let mut first_missing: Option<i64> = None;
        for slot in slots.chunks_exact(POINT_SIZE) {
            let (t, value) = point_from(slot);
            let t = i64::from(t);
            // Empty slots, stale slots from an older cycle and points about to expire are not data to keep.
            if t == 0 || t <= source_edge {
                continue;
            }
            let Some(r) = target else {
                coverage.unplaceable += 1;
                continue;
            };
            let replica_edge = now - replica_archives[r].retention() as i64 + spp + edge_margin;
            if t <= replica_edge {
                coverage.unplaceable += 1;
                continue;
            }
            coverage.checked += 1;
            let held = identical
                || match replica.value_at(r, t) {
                    None => false,
                    Some(v) => !exact || v.to_bits() == value.to_bits(),
                };
            if !held {
                coverage.missing += 1;
                first_missing = Some(first_missing.map_or(t, |f| f.min(t)));
            }
        }
        if let Some(t) = first_missing {
            coverage.first_missing.get_or_insert((archive.seconds_per_point, t));
        }
    }
    coverage
}

/// The points of `file` that [`coverage`] checks against an exact copy of it: its non-empty slots newer
/// than `edge_margin` seconds before they leave their archive's window. One pass over the slots (a file is
/// its own identical copy, so no lookups).
pub fn count_points(file: &WhisperBuf, now: i64, edge_margin: i64) -> u64 {
    coverage(file, file, now, edge_margin).checked
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{header_for, CreateOptions, Point, Retention};

    const NOW: i64 = 1_700_000_000;
    const MARGIN: i64 = 120;

    fn file(retentions: &str, points: &[(i64, f64)]) -> WhisperBuf {
        let header = header_for(&Retention::parse_list(retentions).unwrap(), &CreateOptions::default()).unwrap();
        let mut buf = WhisperBuf::empty(header);
        let points: Vec<Point> = points.iter().map(|&(t, v)| Point::new(t, v)).collect();
        buf.update_many(&points, NOW).unwrap();
        buf
    }

    #[test]
    fn a_copy_covers_its_source_and_a_wiped_one_does_not() {
        let points: Vec<(i64, f64)> = (0..100).map(|i| (NOW - i * 60, i as f64)).collect();
        let source = file("1m:1d,1h:30d", &points);
        let copy = coverage(&source, &source.clone(), NOW + 5, MARGIN);
        assert!(copy.complete() && copy.checked >= 100 && copy.unplaceable == 0, "{copy:?}");
        assert_eq!(count_points(&source, NOW + 5, MARGIN), copy.checked);
        let wiped = coverage(&source, &file("1m:1d,1h:30d", &[]), NOW + 5, MARGIN);
        assert_eq!(wiped.missing, copy.checked);
        assert_eq!(wiped.first_missing.map(|(spp, _)| spp), Some(60));
        // Presence, not equality: other values at the same times cover the source.
        let other = file("1m:1d,1h:30d", &points.iter().map(|&(t, _)| (t, -1.0)).collect::<Vec<_>>());
        assert!(coverage(&source, &other, NOW + 5, MARGIN).complete());
        // Exact: other values are not the source's points; the same ones are.
        assert_eq!(coverage_exact(&source, &other, NOW + 5, MARGIN).missing, copy.checked);
        let mut one_off = source.clone();
        one_off.update(7.5, NOW - 60 * 5, NOW).unwrap();
        assert_eq!(coverage_exact(&source, &one_off, NOW + 5, MARGIN).missing, 1);
        assert!(coverage_exact(&source, &source.clone(), NOW + 5, MARGIN).complete());
    }

    #[test]
    fn points_a_shorter_schema_cannot_hold_are_unplaceable() {
        let source = file("1m:1d", &[(NOW - 60, 1.0), (NOW - 7200, 2.0)]);
        let short = coverage(&source, &file("1m:1h", &[(NOW - 60, 1.0)]), NOW, MARGIN);
        assert_eq!((short.checked, short.missing, short.unplaceable), (1, 0, 1));
        let other_resolution = coverage(&source, &file("5m:1d", &[]), NOW, MARGIN);
        assert_eq!((other_resolution.missing, other_resolution.unplaceable), (0, 2));
        // About to expire from the source: not checked.
        let expiring = file("1m:1h", &[(NOW - 3600 + 120, 1.0)]);
        assert_eq!(count_points(&expiring, NOW, MARGIN), 0);
        assert!(coverage(&expiring, &file("1m:1h", &[]), NOW, MARGIN).complete());
    }
}
