//! The safety rule, held here and nowhere else: **a source is deleted only after every destination
//! verified its copy** (read back and found holding every point of the source it can hold), and then only
//! with `--delete`, for a job that deletes its source at all, when the destinations can hold all of its
//! points. The pipeline asks [`decide`] after every attempt, whatever went wrong with the attempt's steps,
//! on the batch and the one-job path alike.

use super::job::Job;
use super::options::Options;
use super::reason::AttemptError;

/// What an attempt counted for one job.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Bytes of whisper data read from the source (decoded).
    pub(crate) bytes: u64,
    /// Bytes sent and received over the network.
    pub(crate) wire: u64,
    /// Points written into existing destination files by the heals.
    pub(crate) healed: u64,
    /// Source points checked in the destinations.
    pub(crate) verified: u64,
    /// Source points the destinations' schema cannot hold.
    pub(crate) unplaceable: u64,
    /// Of `healed`, points whose value the source's replaced (`repair`'s overwriting heals).
    pub(crate) replaced: u64,
    /// Destinations that had no copy: the heal created it (a missing replica).
    pub(crate) created: u64,
    /// 1 when the destinations copied the source themselves (`--offload`).
    pub(crate) offloaded: u64,
}

/// What an attempt found for one job: its counts, and per destination (in the job's order) whether its
/// copy was verified, or why not.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    /// The counts.
    pub(crate) counts: Counts,
    /// One entry per destination checked, in the order of [`Job::dests`].
    pub(crate) checks: Vec<Result<(), AttemptError>>,
}

/// What becomes of a job's source after an attempt healed and checked every destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// A destination (the first, by its index in [`Job::dests`]) did not verify: the attempt failed and the
    /// source stays.
    Unverified {
        /// Index of the first destination not verified.
        first: usize,
    },
    /// Every destination verified; the source stays (no `--delete`, a replica, a kept source). Points the
    /// destinations cannot hold are only noted.
    Keep,
    /// Every destination verified, but the destinations cannot hold `unplaceable` points of the source: the
    /// source stays and the job fails, as no retry can change that.
    Refuse {
        /// Points the destinations' schema cannot hold.
        unplaceable: u64,
    },
    /// Every destination verified and holds all the source's points: delete the source, with `If-Match` of
    /// the version copied.
    Delete,
}

/// The rule (see the module docs).
pub(crate) fn decide(job: &Job, tally: &Tally, options: &Options) -> Decision {
    if let Some(first) = (0..job.dests.len()).find(|&i| !matches!(tally.checks.get(i), Some(Ok(())))) {
        return Decision::Unverified { first };
    }
    if !(options.delete && job.deletes_source()) {
        Decision::Keep
    } else if tally.counts.unplaceable > 0 {
        Decision::Refuse { unplaceable: tally.counts.unplaceable }
    } else {
        Decision::Delete
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Addr;
    use crate::engine::{Interrupts, Operation};

    fn addr(host: &str) -> Addr {
        Addr { host: host.into(), port: 4242 }
    }

    fn job(dests: usize, keep_source: bool) -> Job {
        Job {
            name: "a.b".into(),
            source_name: "a.b".into(),
            source: addr("src"),
            dests: (0..dests).map(|i| addr(&format!("d{i}"))).collect(),
            keep_source,
        }
    }

    fn options(delete: bool) -> Options {
        Options {
            op: Operation::Rebalance,
            delete,
            workers: 1,
            batch: 1,
            batch_bytes: 1 << 20,
            offload: false,
            inflight_bytes: 1 << 20,
            attempts: 1,
            max_rate: None,
            state_file: None,
            error_file: None,
            error_tolerance: 0,
            now: || 0,
            interrupts: Interrupts::never(),
            throttle: None,
            damping: crate::damping::DampingConfig::default(),
            graphite: None,
        }
    }

    fn missing(i: usize) -> AttemptError {
        AttemptError::Missing {
            dest: addr(&format!("d{i}")),
            missing: 1,
            checked: 5,
            seconds_per_point: 60,
            timestamp: 60,
        }
    }

    fn tally(checks: Vec<Result<(), AttemptError>>) -> Tally {
        Tally { counts: Counts::default(), checks }
    }

    #[test]
    fn a_source_goes_once_every_destination_verified() {
        assert_eq!(decide(&job(2, false), &tally(vec![Ok(()), Ok(())]), &options(true)), Decision::Delete);
    }

    #[test]
    fn a_destination_not_verified_keeps_the_source() {
        let j = job(3, false);
        assert_eq!(
            decide(&j, &tally(vec![Ok(()), Err(missing(1)), Ok(())]), &options(true)),
            Decision::Unverified { first: 1 }
        );
        assert_eq!(
            decide(&j, &tally(vec![Err(missing(0)), Err(missing(1)), Ok(())]), &options(true)),
            Decision::Unverified { first: 0 }
        );
        // Destinations never checked (a step failed before them) are not verified either.
        assert_eq!(decide(&j, &tally(vec![Ok(())]), &options(true)), Decision::Unverified { first: 1 });
        assert_eq!(decide(&j, &tally(Vec::new()), &options(true)), Decision::Unverified { first: 0 });
        // Without --delete too: a job not verified everywhere did not move.
        assert_eq!(
            decide(&j, &tally(vec![Ok(()), Ok(()), Err(missing(2))]), &options(false)),
            Decision::Unverified { first: 2 }
        );
    }

    #[test]
    fn kept_sources_stay() {
        let verified = || tally(vec![Ok(())]);
        assert_eq!(decide(&job(1, false), &verified(), &options(false)), Decision::Keep, "no --delete");
        assert_eq!(decide(&job(1, true), &verified(), &options(true)), Decision::Keep, "a replica");
        assert_eq!(decide(&job(0, false), &tally(Vec::new()), &options(true)), Decision::Keep, "no destination");
    }

    #[test]
    fn points_the_destinations_cannot_hold_keep_the_source() {
        let mut t = tally(vec![Ok(())]);
        t.counts.unplaceable = 4;
        assert_eq!(decide(&job(1, false), &t, &options(true)), Decision::Refuse { unplaceable: 4 });
        assert_eq!(decide(&job(1, false), &t, &options(false)), Decision::Keep);
    }
}
