//! Content verification: does a replica hold every point of the source copy healed into it? The check
//! itself is [`whisper::coverage`]; this module fixes its margin, so that the client (which verifies the
//! copies it read back) and bucky-agent (which verifies the copies it healed from a source it fetched
//! itself, for `--offload`) apply one rule. [`Verdict`] travels in offload answers.
//!
//! A heal can be undone behind our back (carbon-cache's `whisper.create` checks that a file is absent and
//! then opens it with truncation, wiping a file created in between), so before a source is deleted every
//! replica is read back and checked point by point.
//!
//! A source point is *present* when the replica's archive of the same resolution holds a non-empty slot
//! at that timestamp (any value: carbon may have written a newer one there). Points about to leave the
//! source's own window are not checked (they expire from the source within minutes anyway). Points the
//! replica *cannot* hold — no archive of that resolution, or older than the replica archive's window
//! (the replica has a shorter schema) — are counted apart as `unplaceable`: deleting the source would
//! lose them, so the engine keeps such sources.

use whisper::WhisperBuf;

/// Seconds of slack for points at the edge of an archive's window (time passes between the heal and the
/// verification, and clocks of the nodes differ a little).
pub const EDGE_MARGIN: i64 = 120;

/// The result of checking one replica against one source.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct Verdict {
    /// Source points checked.
    #[serde(rename = "Checked")]
    pub checked: u64,
    /// Source points the replica should hold but does not.
    #[serde(rename = "Missing")]
    pub missing: u64,
    /// The first missing point: (seconds per point, timestamp).
    #[serde(rename = "FirstMissing", skip_serializing_if = "Option::is_none")]
    pub first_missing: Option<(u32, i64)>,
    /// Source points the replica's schema cannot hold.
    #[serde(rename = "Unplaceable")]
    pub unplaceable: u64,
}

impl Verdict {
    /// Whether the replica holds every point it can hold.
    pub fn complete(&self) -> bool {
        self.missing == 0
    }
}

/// Checks that `replica` holds every point of `source` (see the module docs), at time `now`.
pub fn verify(source: &WhisperBuf, replica: &WhisperBuf, now: i64) -> Verdict {
    let whisper::Coverage { checked, missing, first_missing, unplaceable } =
        whisper::coverage(source, replica, now, EDGE_MARGIN);
    Verdict { checked, missing, first_missing, unplaceable }
}

/// [`verify`], where a point is held only with the source's very value (bit for bit): after `repair`
/// healed a replica from its reference copy with the reference's values winning.
pub fn verify_exact(source: &WhisperBuf, replica: &WhisperBuf, now: i64) -> Verdict {
    let whisper::Coverage { checked, missing, first_missing, unplaceable } =
        whisper::coverage_exact(source, replica, now, EDGE_MARGIN);
    Verdict { checked, missing, first_missing, unplaceable }
}

/// The points [`verify`] checks in a replica that is byte for byte `source` (a batch heal's read-back
/// identical to its upload), all of them present: the source's points not about to expire. Counted without
/// a second file to compare.
pub fn points_held(source: &WhisperBuf, now: i64) -> u64 {
    let archives = source.header().archives.iter().enumerate();
    archives
        .map(|(index, archive)| {
            let edge = now - archive.retention() as i64 + i64::from(archive.seconds_per_point) + EDGE_MARGIN;
            source.archive_slots(index).filter(|&(t, _)| t != 0 && i64::from(t) > edge).count() as u64
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use whisper::{CreateOptions, Header, Point, Retention};

    const NOW: i64 = 1_700_000_000;

    fn file(retentions: &str, points: &[(i64, f64)]) -> WhisperBuf {
        let retentions = Retention::parse_list(retentions).unwrap();
        let header: Header = whisper::header_for(&retentions, &CreateOptions::default()).unwrap();
        let mut buf = WhisperBuf::empty(header);
        let points: Vec<Point> = points.iter().map(|&(t, v)| Point::new(t, v)).collect();
        buf.update_many(&points, NOW).unwrap();
        buf
    }

    #[test]
    fn identical_copies_verify() {
        let pts: Vec<(i64, f64)> = (0..100).map(|i| (NOW - i * 60, i as f64)).collect();
        let a = file("1m:1d,1h:30d", &pts);
        let v = verify(&a, &a.clone(), NOW + 5);
        assert!(v.complete());
        assert!(v.checked >= 100);
        assert_eq!(v.unplaceable, 0);
    }

    #[test]
    fn a_wiped_replica_is_caught() {
        let pts: Vec<(i64, f64)> = (0..10).map(|i| (NOW - i * 60, 1.0)).collect();
        let source = file("1m:1d", &pts);
        let empty = file("1m:1d", &[]);
        let v = verify(&source, &empty, NOW);
        assert_eq!(v.missing, 10);
        assert!(v.first_missing.is_some());
        // A replica with other values at the same times is complete (presence, not equality).
        let other = file("1m:1d", &pts.iter().map(|&(t, _)| (t, 2.0)).collect::<Vec<_>>());
        assert!(verify(&source, &other, NOW).complete());
        // A superset replica is complete.
        let mut more = pts.clone();
        more.push((NOW - 3600, 9.0));
        assert!(verify(&source, &file("1m:1d", &more), NOW).complete());
    }

    #[test]
    fn shorter_schemas_are_unplaceable_not_missing() {
        let pts: Vec<(i64, f64)> = vec![(NOW - 60, 1.0), (NOW - 7200, 2.0)];
        let source = file("1m:1d", &pts);
        let short = file("1m:1h", &[(NOW - 60, 1.0)]);
        let v = verify(&source, &short, NOW);
        assert_eq!((v.missing, v.unplaceable), (0, 1));
        let other_resolution = file("5m:1d", &[]);
        let v = verify(&source, &other_resolution, NOW);
        assert_eq!((v.missing, v.unplaceable), (0, 2));
    }

    /// The check as first written (time-ordered dump, point by point): the fast one must agree exactly.
    fn reference(source: &WhisperBuf, replica: &WhisperBuf, now: i64) -> Verdict {
        let mut verdict = Verdict::default();
        let replica_archives = &replica.header().archives;
        for (index, archive) in source.header().archives.iter().enumerate() {
            let spp = i64::from(archive.seconds_per_point);
            let source_edge = now - archive.retention() as i64 + spp + EDGE_MARGIN;
            let target = replica_archives.iter().position(|r| r.seconds_per_point == archive.seconds_per_point);
            for &(t, _) in &source.dump()[index] {
                let t = i64::from(t);
                if t <= source_edge {
                    continue;
                }
                let Some(r) = target else {
                    verdict.unplaceable += 1;
                    continue;
                };
                if t <= now - replica_archives[r].retention() as i64 + spp + EDGE_MARGIN {
                    verdict.unplaceable += 1;
                    continue;
                }
                verdict.checked += 1;
                if replica.value_at(r, t).is_none() {
                    verdict.missing += 1;
                    verdict.first_missing.get_or_insert((archive.seconds_per_point, t));
                }
            }
        }
        verdict
    }

    #[test]
    fn agrees_with_the_point_by_point_check_on_random_copies() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(0x5eed);
        let schemas = ["1m:1d", "1m:2h", "1m:1d,5m:7d", "5m:7d", "10s:1h,1m:1d,1h:30d", "1m:6h,1h:7d"];
        let mut seen = (false, false, false);
        for round in 0..300 {
            let pick = |rng: &mut rand::rngs::SmallRng| schemas[rng.gen_range(0..schemas.len())];
            let (src_schema, dst_schema) = (pick(&mut rng), pick(&mut rng));
            let span = rng.gen_range(1..3000);
            let points: Vec<(i64, f64)> = (0..rng.gen_range(0..400))
                .map(|_| (NOW - rng.gen_range(0..span) * 60 - rng.gen_range(0..60), rng.gen_range(-5.0..5.0)))
                .collect();
            let kept: Vec<(i64, f64)> = points.iter().copied().filter(|_| rng.gen_bool(0.8)).collect();
            let source = file(src_schema, &points);
            // One round in four, the replica is a fresh copy of the source (the byte-compare fast path).
            let replica = if round % 4 == 0 { source.clone() } else { file(dst_schema, &kept) };
            let dst_schema = if round % 4 == 0 { src_schema } else { dst_schema };
            for now in [NOW, NOW + 90, NOW + 7200] {
                let verdict = verify(&source, &replica, now);
                let want = reference(&source, &replica, now);
                assert_eq!(verdict, want, "round {round}: {src_schema} -> {dst_schema} at {now}");
                seen.0 |= verdict.missing > 1;
                seen.1 |= verdict.unplaceable > 0;
                seen.2 |= verdict.complete() && verdict.checked > 0;
            }
        }
        assert_eq!(seen, (true, true, true), "the rounds cover missing, unplaceable and complete copies");
    }

    #[test]
    fn points_about_to_expire_are_ignored() {
        let source = file("1m:1h", &[(NOW - 3600 + 120, 1.0)]);
        let empty = file("1m:1h", &[]);
        assert!(verify(&source, &empty, NOW).complete());
    }

    #[test]
    fn points_held_counts_what_a_self_check_checks() {
        let pts: Vec<(i64, f64)> = (0..3000).map(|i| (NOW - i * 37, i as f64)).collect();
        for schema in ["1m:1d", "1m:2h", "10s:1h,1m:1d,1h:30d", "1m:6h,1h:7d"] {
            let source = file(schema, &pts);
            for now in [NOW, NOW + 90, NOW + 7200] {
                let verdict = verify(&source, &source, now);
                assert_eq!(points_held(&source, now), verdict.checked, "{schema} at {now}");
                assert!(verdict.complete() && verdict.unplaceable == 0);
            }
        }
    }
}
