//! Why a job did not finish, as typed values: [`AttemptError`] for one attempt (retried unless final), and
//! [`JobError`] for a job given up on. They are turned into text only at the edge (the summary, the error
//! file, the verbose lines), by [`describe`].

use crate::client::ClientError;
use crate::config::Addr;

/// Why one attempt at a job did not finish it. The job is tried again unless [`AttemptError::is_final`];
/// a job of a batch is handed to the one-job path instead.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AttemptError {
    /// Reading the source failed.
    #[error("{0}")]
    Read(ClientError),
    /// The source is not a whisper file: no retry mends that.
    #[error("the source is not a valid whisper file: {0}")]
    InvalidSource(whisper::Error),
    /// The source could not be compressed for its upload.
    #[error("cannot compress: {0}")]
    Compress(std::io::Error),
    /// The batch read's answer was full before this source came (`--batch-mib`): it goes in a later batch.
    #[error("not read: the batch's answer was full")]
    CutShort,
    /// A batch request failed or is not taken as a whole (said once, for the batch): one request per metric.
    #[error("the batch request did not go through")]
    BatchRefused,
    /// Healing into a destination failed.
    #[error("heal into {dest}")]
    Heal {
        /// The destination.
        dest: Addr,
        /// Why.
        #[source]
        error: ClientError,
    },
    /// A destination's offload (it fetches the source itself, heals and checks it) failed.
    #[error("offload into {dest}")]
    Offload {
        /// The destination.
        dest: Addr,
        /// Why.
        #[source]
        error: ClientError,
    },
    /// Reading a healed copy back failed.
    #[error("verify {dest}")]
    ReadBack {
        /// The destination.
        dest: Addr,
        /// Why.
        #[source]
        error: ClientError,
    },
    /// A batch heal's answer holds no read-back of the copy: the one-job path reads it back with a GET.
    #[error("verify {dest}: the healed copy was not read back")]
    NotReadBack {
        /// The destination.
        dest: Addr,
    },
    /// The healed copy was gone when read back.
    #[error("verify {dest}: the healed copy has disappeared")]
    Disappeared {
        /// The destination.
        dest: Addr,
    },
    /// The copy read back is not a whisper file.
    #[error("verify {dest}: the copy is not a valid whisper file: {error}")]
    InvalidCopy {
        /// The destination.
        dest: Addr,
        /// Why.
        error: whisper::Error,
    },
    /// The copy read back lacks points of the source.
    #[error(
        "verify {dest}: {missing} of {checked} points missing (first: {seconds_per_point}s archive, t={timestamp}); \
         healing again"
    )]
    Missing {
        /// The destination.
        dest: Addr,
        /// Points missing.
        missing: u64,
        /// Points checked.
        checked: u64,
        /// The archive of the first missing point.
        seconds_per_point: u32,
        /// The first missing point.
        timestamp: i64,
    },
    /// The copy of a compressed source read back is not byte for byte the source (written since?).
    #[error("verify {dest}: the copy of the compressed file is not byte for byte the source")]
    NotIdentical {
        /// The destination.
        dest: Addr,
    },
    /// A destination whose copy was never checked.
    #[error("verify {dest}: not checked")]
    Unchecked {
        /// The destination.
        dest: Addr,
    },
    /// The destinations' schema cannot hold some of the source's points: deleting it would lose them.
    #[error(
        "the destinations' schema cannot hold {0} points of the source (other resolution or shorter retention): \
         source kept"
    )]
    Unplaceable(u64),
    /// The source differs from what was copied (buckyd: compared before deleting).
    #[error("the source changed since it was read")]
    SourceChanged,
    /// The delete's `If-Match` failed (412): the source was written since it was read.
    #[error("the source changed since it was read (still receiving writes?); copying again")]
    ChangedSinceRead,
    /// The source has no version to delete it with (a batch needs one).
    #[error("no version of the source to delete it with")]
    NoVersion,
    /// Deleting the source failed.
    #[error("delete")]
    Delete(#[source] ClientError),
}

impl AttemptError {
    /// Whether no retry can mend it: the job fails at once.
    pub(crate) fn is_final(&self) -> bool {
        match self {
            AttemptError::InvalidSource(_) | AttemptError::Compress(_) | AttemptError::Unplaceable(_) => true,
            // The agent's 422: a fill into or from a compressed whisper file, which no retry makes possible.
            AttemptError::Heal { error: ClientError::Status { status: 422, .. }, .. } => true,
            _ => false,
        }
    }
}

/// Why a job failed; its source is kept.
#[derive(Debug, thiserror::Error)]
pub(crate) enum JobError {
    /// Every attempt failed; the reason is the last one's.
    #[error("{} (after {attempts} attempts{})", describe(.last), source_kept(*.kept))]
    GaveUp {
        /// The last attempt's failure.
        last: AttemptError,
        /// Attempts made.
        attempts: u32,
        /// Whether to say the source was kept (only runs that delete sources say so).
        kept: bool,
    },
    /// A failure no retry mends.
    #[error("{}", describe(.0))]
    Final(AttemptError),
    /// A node the job needs is down: not tried.
    #[error("{down}{}; rerun once it is back", source_kept(*.kept))]
    Down {
        /// Which node, since when (see [`crate::health::Health::refuse`]).
        down: String,
        /// Whether to say the source was kept.
        kept: bool,
    },
    /// A destination is full: nothing is sent to it.
    #[error("{node} is full (507 Insufficient Storage)")]
    Full {
        /// The destination.
        node: Addr,
    },
}

/// `; source kept` when the run deletes sources (`rebalance --delete`): the others never delete one, and
/// saying so would only worry the reader.
fn source_kept(kept: bool) -> &'static str {
    if kept {
        "; source kept"
    } else {
        ""
    }
}

/// An error with its causes, on one line: the edge where reasons become text.
pub(crate) fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    crate::error::one_line(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reasons read as they did when they were strings built on the spot.
    #[test]
    fn reasons_read_as_before() {
        let dest = Addr { host: "d".into(), port: 1 };
        let status =
            || ClientError::Status { addr: "d:1".into(), what: "heal x".into(), status: 500, body: "no".into() };
        let heal = AttemptError::Heal { dest: dest.clone(), error: status() };
        assert_eq!(describe(&heal), "heal into d:1: d:1: heal x: HTTP 500: no");
        assert_eq!(describe(&AttemptError::Delete(status())), "delete: d:1: heal x: HTTP 500: no");
        assert_eq!(describe(&AttemptError::Read(status())), "d:1: heal x: HTTP 500: no");
        let gave_up = JobError::GaveUp { last: heal, attempts: 3, kept: true };
        assert_eq!(gave_up.to_string(), "heal into d:1: d:1: heal x: HTTP 500: no (after 3 attempts; source kept)");
        let down = JobError::Down { down: "d:1 is down (unreachable)".into(), kept: false };
        assert_eq!(down.to_string(), "d:1 is down (unreachable); rerun once it is back");
        let missing = AttemptError::Missing { dest, missing: 3, checked: 9, seconds_per_point: 60, timestamp: 120 };
        assert_eq!(
            JobError::Final(missing).to_string(),
            "verify d:1: 3 of 9 points missing (first: 60s archive, t=120); healing again"
        );
    }
}
