//! The one error type of the crate.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// Shorthand for `Result<T, whisper::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong reading, writing or validating a whisper file.
///
/// [`Error::reference_class`] names the exception whisper.py raises for the same input, so callers and
/// tests can check that bucky refuses exactly what the reference refuses.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An I/O error on a file. The message names the file and prints the underlying error, which is
    /// therefore not also exposed as [`std::error::Error::source`] (a chain would print it twice).
    #[error("{path}: {cause}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying error (its kind tells a missing file from a full disk).
        cause: io::Error,
    },
    /// The bytes are not a valid whisper file (bad header, truncated, overlapping archives, ...).
    #[error(
        "{path}: corrupt whisper file: {reason}; the file was left untouched (check it with `bucky whisper info`)"
    )]
    Corrupt {
        /// The file involved (`<memory>` for in-memory data).
        path: PathBuf,
        /// What exactly is wrong.
        reason: String,
    },
    /// A go-whisper compressed file (go-carbon's `compressed = true`): a valid file of another format, whose
    /// points bucky cannot read; it is never filled, merged or rewritten, only copied whole.
    #[error(
        "{path}: compressed whisper file (go-carbon `compressed = true`): bucky cannot read its points, so it \
         neither fills, merges nor rewrites it; the file was left untouched (a rebalance or copy moves it whole \
         to a node that has no copy)"
    )]
    Compressed {
        /// The file involved (`<memory>` for in-memory data).
        path: PathBuf,
    },
    /// A file whisper.py would accept but whose structure is impossible (archives overlapping, beyond the
    /// end of the file, out of order, ...): refused rather than read as garbage.
    #[error(
        "{path}: malformed whisper file: {reason}; the file was left untouched (check it with `bucky whisper info`)"
    )]
    Malformed {
        /// The file involved (`<memory>` for in-memory data).
        path: PathBuf,
        /// What exactly is wrong.
        reason: String,
    },
    /// An input whisper.py accepts and then turns into an unusable or corrupt file; bucky refuses it.
    #[error("{0}")]
    Refused(String),
    /// The retention/archive list is not acceptable (whisper's `InvalidConfiguration`).
    #[error("invalid configuration: {0}")]
    InvalidConfiguration(String),
    /// A retention definition such as `1m:30d` could not be parsed (whisper raises `ValueError`).
    #[error("invalid retention definition '{spec}': {reason} (use SECONDS_PER_POINT:POINTS such as 60:1440, or units: 1m:30d)")]
    InvalidRetention {
        /// The text given.
        spec: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Unknown aggregation method name.
    #[error(
        "unrecognized aggregation method '{0}' (use one of average, sum, last, max, min, avg_zero, absmax, absmin)"
    )]
    InvalidAggregationMethod(String),
    /// xFilesFactor outside `[0, 1]`.
    #[error("invalid xFilesFactor {0}, not between 0 and 1")]
    InvalidXFilesFactor(f64),
    /// `create` found a file at the target path.
    #[error("{0}: file already exists; remove it first or heal into it with `bucky whisper fill`")]
    AlreadyExists(PathBuf),
    /// `update` of a timestamp outside the file's retention (whisper's `TimestampNotCovered`).
    #[error(
        "timestamp {timestamp} not covered by any archive in this database (now {now}, max retention {max_retention}s)"
    )]
    TimestampNotCovered {
        /// The rejected timestamp.
        timestamp: i64,
        /// The clock used.
        now: i64,
        /// The file's max retention.
        max_retention: u32,
    },
    /// A timestamp that a whisper file cannot store (negative or beyond 2^32 after alignment).
    #[error("timestamp {0} cannot be stored in a whisper file (must be between 0 and 4294967295)")]
    TimestampOutOfRange(i64),
    /// `fetch` with from > until (whisper's `InvalidTimeInterval`).
    #[error("invalid time interval: from time '{from}' is after until time '{until}'")]
    InvalidTimeInterval {
        /// Start of the range.
        from: i64,
        /// End of the range.
        until: i64,
    },
    /// `fetch` asked for an archive precision the file does not have (whisper raises `ValueError`).
    #[error("invalid granularity: no archive with {0} seconds per point")]
    InvalidGranularity(u32),
    /// `merge` of two files with different archive layouts (whisper raises `NotImplementedError`).
    #[error("archive configurations are unalike ({src} vs {dst}); resize one of them before merging")]
    LayoutMismatch {
        /// The source file.
        src: PathBuf,
        /// The destination file.
        dst: PathBuf,
    },
    /// A batch would write past the end of an archive (whisper 1.1.10 corrupts the next archive here).
    #[error("refusing to write {points} consecutive points into an archive of {capacity} points (more than two full cycles of future timestamps); nothing was written")]
    ArchiveOverflow {
        /// Length of the offending run.
        points: usize,
        /// Points in the archive.
        capacity: u32,
    },
    /// Source and destination are the same file.
    #[error("{0}: source and destination are the same file; nothing to do")]
    SameFile(PathBuf),
    /// Could not get the flock in time.
    #[error("{path}: timed out after {waited:?} waiting for the whisper lock; is carbon-cache or another bucky writing it? Retry, or raise the lock timeout")]
    LockTimeout {
        /// The locked file.
        path: PathBuf,
        /// How long we waited.
        waited: Duration,
    },
    /// The path names something other than a regular file (a directory, a device, ...).
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    /// Each time its lock was taken, the file at the path had been replaced by another (renamed over) while
    /// we waited: given up after a few rounds rather than locking an unlinked inode.
    #[error("{0}: the file keeps being replaced while waiting for its lock; retry")]
    KeepsBeingReplaced(PathBuf),
    /// A function argument outside its domain (whisper raises `ValueError`).
    #[error("{0}")]
    InvalidArgument(String),
}

impl Error {
    /// The name of the exception class whisper.py 1.1.10 raises for the same input, or `"bucky"` for
    /// refusals that the reference does not have (where it silently corrupts or misbehaves instead).
    pub fn reference_class(&self) -> &'static str {
        match self {
            Error::Io { .. } | Error::NotAFile(_) => "IOError",
            // whisper.py reads the magic as a header listing 1.9 billion archives, and fails reading them.
            Error::Corrupt { .. } | Error::Compressed { .. } => "CorruptWhisperFile",
            Error::InvalidConfiguration(_) | Error::AlreadyExists(_) => "InvalidConfiguration",
            Error::InvalidRetention { .. } | Error::InvalidGranularity(_) | Error::InvalidArgument(_) => "ValueError",
            Error::InvalidAggregationMethod(_) => "InvalidAggregationMethod",
            Error::InvalidXFilesFactor(_) => "InvalidXFilesFactor",
            Error::TimestampNotCovered { .. } => "TimestampNotCovered",
            Error::TimestampOutOfRange(_) => "error",
            Error::InvalidTimeInterval { .. } => "InvalidTimeInterval",
            Error::LayoutMismatch { .. } => "NotImplementedError",
            Error::Malformed { .. }
            | Error::Refused(_)
            | Error::ArchiveOverflow { .. }
            | Error::SameFile(_)
            | Error::LockTimeout { .. }
            | Error::KeepsBeingReplaced(_) => "bucky",
        }
    }

    /// What exactly is wrong with a corrupt or malformed file (the text after the path), `None` for the
    /// other errors: for one-line reports such as `bucky whisper find-corrupt`.
    pub fn reason(&self) -> Option<&str> {
        match self {
            Error::Corrupt { reason, .. } | Error::Malformed { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// True for the errors that mean "this is not a valid whisper file" ([`Error::Corrupt`],
    /// [`Error::Malformed`]), as opposed to I/O trouble or a refused operation.
    pub fn is_invalid_file(&self) -> bool {
        matches!(self, Error::Corrupt { .. } | Error::Malformed { .. })
    }

    pub(crate) fn io(path: impl Into<PathBuf>, cause: io::Error) -> Self {
        Error::Io { path: path.into(), cause }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Corrupt { path: path.into(), reason: reason.into() }
    }

    pub(crate) fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Malformed { path: path.into(), reason: reason.into() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A cause is printed or exposed, never both: a chain formatter would print it twice.
    #[test]
    fn an_io_error_prints_its_cause_once_and_does_not_expose_it() {
        let err = Error::io("/x.wsp", io::Error::new(io::ErrorKind::NotFound, "No such file or directory"));
        assert_eq!(err.to_string(), "/x.wsp: No such file or directory");
        assert!(std::error::Error::source(&err).is_none());
    }
}
