//! Canonical content digests: compare copies of a metric on different nodes without sending them
//! (`bucky audit`), Merkle style — one digest per archive first, then per time range where they differ.
//!
//! **What is digested.** Per archive, the points whisper itself reads in the archive's window at `until`:
//! the `points` aligned timestamps ending at `until` rounded down to the archive's step (the window of a
//! fetch and of the safe fill). A timestamp is held when the slot whisper reads for it (its position
//! from the archive's anchor) holds exactly that timestamp; its value is taken bit for bit (a NaN, -0.0
//! and 0.0 are three different values). So slots of an older cycle, future points, where the archive's
//! anchor lies, the order the points were written in and how `update_many` batched them make no
//! difference: two files holding the same points give the same digests.
//!
//! **Ranges.** With `ranges`, each archive's window is cut into ranges aligned to absolute time: range
//! *k* of an archive of step *s* covers `[k·R, (k+1)·R)` with `R` = [`RANGE_POINTS`]`·s` seconds (1024
//! points: 17 h 4 min at 1 minute, 2 h 50 min at 10 s, 3 d 13 h at 5 minutes), clipped to the window;
//! without, the whole window is one range, the archive's digest. A range's digest is XXH3-64 (seed 0) of
//! its points in time order, each as the 4 big-endian bytes of its timestamp followed by the 8 big-endian
//! bytes of its value's IEEE-754 bits, with the number of points; a range without points has hash 0.
//! XXH3 is not cryptographic: it finds accidental differences (a collision is a 2⁻⁶⁴ event per range), not
//! a node forging data.
//!
//! Memory: one streaming hasher per archive walk, nothing proportional to the file beyond the file itself.

use xxhash_rust::xxh3::Xxh3;

use crate::buf::WhisperBuf;
use crate::error::{Error, Result};
use crate::slot::align;

/// Points per range of [`digest`] with `ranges` (see the module docs).
pub const RANGE_POINTS: u32 = 1024;

/// The digest of one archive of a file (see the module docs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveDigest {
    /// The archive's step.
    pub seconds_per_point: u32,
    /// The archive's length, in points.
    pub points: u32,
    /// Its ranges, oldest first (one covering the whole window when not asked for ranges; none when the
    /// window is empty).
    pub ranges: Vec<RangeDigest>,
}

/// The digest of the points of one time range of an archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeDigest {
    /// The range's first timestamp (aligned to absolute time with ranges; the window's start without).
    pub start: i64,
    /// Points held in the range.
    pub count: u32,
    /// XXH3-64 of the points (0 when there is none).
    pub hash: u64,
}

/// The digests of every archive of `file` at time `until` (see the module docs); per range when
/// `ranges`. `until` must be a real time (0 ..= 2³²−1), else [`Error::TimestampOutOfRange`].
pub fn digest(file: &WhisperBuf, until: i64, ranges: bool) -> Result<Vec<ArchiveDigest>> {
    if !(0..=i64::from(u32::MAX)).contains(&until) {
        return Err(Error::TimestampOutOfRange(until));
    }
    let mut out = Vec::with_capacity(file.header().archives.len());
    for (index, archive) in file.header().archives.iter().enumerate() {
        let spp = i64::from(archive.seconds_per_point);
        let last = align(until, archive.seconds_per_point)?;
        // Timestamp 0 marks an empty slot: the window starts at the first real time.
        let first = (last - (i64::from(archive.points) - 1) * spp).max(spp);
        let width = i64::from(RANGE_POINTS) * spp;
        let mut digests = Vec::new();
        if last >= first {
            let count = usize::try_from((last - first) / spp + 1).unwrap_or(0);
            let mut current: Option<Range> = None;
            let mut t = first;
            for value in file.values_from(index, first, count) {
                let start = if ranges { t - t.rem_euclid(width) } else { first };
                if current.as_ref().is_none_or(|r| r.start != start) {
                    digests.extend(current.take().map(Range::finish));
                    current = Some(Range { start, count: 0, hasher: Xxh3::new() });
                }
                if let (Some(range), Some(v)) = (current.as_mut(), value) {
                    // `t` is a real time here (0 < t ≤ until < 2³²).
                    range.hasher.update(&(t as u32).to_be_bytes());
                    range.hasher.update(&v.to_bits().to_be_bytes());
                    range.count += 1;
                }
                t += spp;
            }
            digests.extend(current.map(Range::finish));
        }
        out.push(ArchiveDigest {
            seconds_per_point: archive.seconds_per_point,
            points: archive.points,
            ranges: digests,
        });
    }
    Ok(out)
}

/// A range being digested.
struct Range {
    start: i64,
    count: u32,
    hasher: Xxh3,
}

impl Range {
    fn finish(self) -> RangeDigest {
        let hash = if self.count == 0 { 0 } else { self.hasher.digest() };
        RangeDigest { start: self.start, count: self.count, hash }
    }
}

#[cfg(test)]
mod tests {
    use rand::seq::SliceRandom;
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::{header_for, CreateOptions, Point, Retention};

    const NOW: i64 = 1_700_000_000;

    fn empty(schema: &str) -> WhisperBuf {
        WhisperBuf::empty(header_for(&Retention::parse_list(schema).unwrap(), &CreateOptions::default()).unwrap())
    }

    /// The same points written in random orders and random `update_many` batches (each batch at its own
    /// clock), with a random first write that anchors the archive elsewhere and is then overwritten:
    /// different slot layouts and histories, the same digests. And one slot changed anywhere is found in
    /// exactly the range that holds it. Replay with `BUCKY_DIGEST_SEED`.
    #[test]
    fn same_points_same_digests_and_one_slot_is_found() {
        let seed = std::env::var("BUCKY_DIGEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
        eprintln!("BUCKY_DIGEST_SEED={seed}");
        let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
        for round in 0..40 {
            let schema = ["1m:1d", "10s:6h,1m:1d", "1m:2h,5m:1d,1h:7d"][round % 3];
            // Points of the finest archive only (so propagation gives the same coarser points whatever the
            // batching: each batch fills whole coarse intervals or none).
            let finest = Retention::parse_list(schema).unwrap()[0];
            let step = i64::from(finest.seconds_per_point);
            // Within the finest archive's window: older points would be routed to a coarser archive, where
            // several land in one slot and the last written wins (order matters there, by whisper's design).
            let span = rng.gen_range(10..i64::from(finest.points) - 1);
            let start = NOW - span * step;
            let mut points: Vec<Point> = Vec::new();
            for i in 0..span {
                if rng.gen_bool(0.7) {
                    points.push(Point::new(start + i * step, f64::from(rng.gen_range(-1000..1000)) / 8.0));
                }
            }
            let build = |rng: &mut rand::rngs::SmallRng, points: &mut Vec<Point>| {
                let mut buf = empty(schema);
                points.shuffle(rng);
                let mut at = 0;
                while at < points.len() {
                    let n = rng.gen_range(1..=points.len() - at);
                    buf.update_many(&points[at..at + n], NOW).unwrap();
                    at += n;
                }
                buf
            };
            let a = build(&mut rng, &mut points);
            let b = build(&mut rng, &mut points);
            for ranges in [false, true] {
                assert_eq!(digest(&a, NOW, ranges).unwrap(), digest(&b, NOW, ranges).unwrap(), "round {round}");
            }
            // One slot of the finest archive changed (or added, or emptied) anywhere in the window.
            let Some(&victim) = points.choose(&mut rng) else { continue };
            let mut c = b.clone();
            c.archive_update_many(0, &mut [(victim.timestamp, victim.value + 0.5)]).unwrap();
            let (da, dc) = (digest(&a, NOW, true).unwrap(), digest(&c, NOW, true).unwrap());
            let differing: Vec<(u32, i64)> = da[0]
                .ranges
                .iter()
                .zip(&dc[0].ranges)
                .filter(|(x, y)| x != y)
                .map(|(x, _)| (da[0].seconds_per_point, x.start))
                .collect();
            let width = i64::from(RANGE_POINTS) * step;
            assert_eq!(differing, vec![(step as u32, victim.timestamp - victim.timestamp.rem_euclid(width))]);
            assert_ne!(digest(&a, NOW, false).unwrap()[0], digest(&c, NOW, false).unwrap()[0]);
        }
    }

    #[test]
    fn windows_stale_slots_and_bit_patterns() {
        let mut a = empty("1m:1h");
        a.update_many(&[Point::new(NOW - 120, 0.0)], NOW).unwrap();
        let mut b = empty("1m:1h");
        b.update_many(&[Point::new(NOW - 120, -0.0)], NOW).unwrap();
        assert_ne!(digest(&a, NOW, false).unwrap(), digest(&b, NOW, false).unwrap(), "0.0 and -0.0 differ");
        // A point that left the window no longer counts: a file holding only it digests as an empty one.
        let mut old = empty("1m:1h");
        old.update_many(&[Point::new(NOW - 120, 1.0)], NOW).unwrap();
        let later = NOW + 7200;
        assert_eq!(digest(&old, later, true).unwrap(), digest(&empty("1m:1h"), later, true).unwrap());
        let whole = digest(&a, NOW, false).unwrap();
        assert_eq!((whole.len(), whole[0].ranges.len(), whole[0].ranges[0].count), (1, 1, 1));
        assert_eq!(whole[0].ranges[0].start, NOW - NOW % 60 - 59 * 60);
        assert!(digest(&a, -1, false).is_err() && digest(&a, 1 << 33, true).is_err());
        assert_eq!(digest(&empty("1m:1h"), NOW, false).unwrap()[0].ranges[0].hash, 0);
    }
}
