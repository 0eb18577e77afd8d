//! [`StoreError`]: why a store operation failed, in the store's terms. The HTTP answer for each is chosen at
//! the edge (`From<StoreError> for AgentError` in `crate::error`).

use std::io;
use std::path::{Path, PathBuf};

use crate::wait::Wait;

/// A store operation that failed; nothing was changed unless the variant says otherwise.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The metric has no file (or what is at its path is not a regular file).
    #[error("the metric's file does not exist")]
    NotFound,
    /// The metric's path is longer than the filesystem takes (`ENAMETOOLONG`).
    #[error(
        "invalid metric name: its file path is longer than the filesystem allows (ENAMETOOLONG); use a shorter name"
    )]
    NameTooLong,
    /// A symbolic link is on the way to the file (the store follows none below its root).
    #[error(
        "{}: a symbolic link is on the way to this metric, and the agent follows none below --prefix; replace the \
         link with the directory it points to",
        path.display()
    )]
    Symlink {
        /// The metric's path.
        path: PathBuf,
    },
    /// Something other than a whisper file or a directory is where the metric needs one.
    #[error(
        "{}: something other than a whisper file or a directory is in the way of this metric; move it aside",
        path.display()
    )]
    InTheWay {
        /// The path in the way.
        path: PathBuf,
    },
    /// The file on disk is not a valid whisper file (the error names it and why).
    #[error("{0}")]
    Corrupt(whisper::Error),
    /// The file on disk is a go-whisper compressed file, which cannot be filled (the error names it).
    #[error("{0}")]
    Compressed(whisper::Error),
    /// A compressed upload for a metric that already has a file: it could only replace it, and a heal never
    /// replaces a file.
    #[error(
        "{}: the upload is a compressed whisper file (go-carbon `compressed = true`), which bucky copies only \
         whole to a node without a copy, and this node has one; the file was left untouched",
        path.display()
    )]
    CompressedUpload {
        /// The metric's path.
        path: PathBuf,
    },
    /// The file's flock was not had in time (`--lock-timeout`).
    #[error("{0}")]
    Locked(whisper::Error),
    /// `If-Match` was given for a metric that has no file.
    #[error("If-Match given but the metric does not exist")]
    IfMatchButMissing,
    /// `If-Match` does not match the file's current content.
    #[error("the metric changed since it was read (If-Match does not match its ETag)")]
    Changed,
    /// The file kept appearing and disappearing while `operation` ran.
    #[error("{}: the file kept appearing and disappearing during the {operation}; retry", path.display())]
    Unstable {
        /// The metric's path.
        path: PathBuf,
        /// `heal` or `replace`.
        operation: &'static str,
    },
    /// Each time its lock was taken, another file had been renamed over the path.
    #[error("{}: the file keeps being replaced; retry", path.display())]
    KeepsBeingReplaced {
        /// The metric's path.
        path: PathBuf,
    },
    /// The operation could not go on now; the caller waits (outside its I/O slot) and tries again.
    #[error("{0}; retry")]
    Wait(Wait),
    /// The device holding `path` is full (`ENOSPC`).
    #[error("no space left on the device holding {}: free space or stop sending heals to this node", path.display())]
    Full {
        /// The file or directory being written.
        path: PathBuf,
    },
    /// The disk quota is used up (`EDQUOT`) on the device holding `path`.
    #[error(
        "disk quota exceeded on the device holding {}: free space (or raise the quota) or stop sending heals to \
         this node",
        path.display()
    )]
    QuotaExceeded {
        /// The file or directory being written.
        path: PathBuf,
    },
    /// Anything else: what the store was doing, and the error that stopped it.
    #[error("{context}")]
    Failed {
        /// What the store was doing.
        context: String,
        /// What stopped it.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
}

impl StoreError {
    /// An I/O error on `path`: a missing file (or missing parent directory) is [`StoreError::NotFound`], a
    /// name too long for the filesystem [`StoreError::NameTooLong`], a symlink on the way
    /// [`StoreError::Symlink`], a full device [`StoreError::Full`] or [`StoreError::QuotaExceeded`].
    pub(crate) fn io(path: &Path, err: io::Error) -> StoreError {
        match err.kind() {
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory | io::ErrorKind::IsADirectory => {
                StoreError::NotFound
            }
            io::ErrorKind::InvalidFilename => StoreError::NameTooLong,
            _ if err.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) => StoreError::symlink(path),
            _ => StoreError::writing(path.display().to_string(), path, err),
        }
    }

    /// An error of a write to `path` (a write, mkdir, link, flush) while `context`: a full device or quota
    /// is recognised, anything else is [`StoreError::Failed`].
    pub(crate) fn writing(context: impl Into<String>, path: &Path, err: io::Error) -> StoreError {
        match err.kind() {
            io::ErrorKind::StorageFull => StoreError::Full { path: path.to_owned() },
            io::ErrorKind::QuotaExceeded => StoreError::QuotaExceeded { path: path.to_owned() },
            _ => StoreError::failed(context, err),
        }
    }

    /// Anything else, with what the store was doing.
    pub(crate) fn failed(
        context: impl Into<String>,
        err: impl Into<Box<dyn std::error::Error + Send + Sync + 'static>>,
    ) -> StoreError {
        StoreError::Failed { context: context.into(), source: err.into() }
    }

    /// A symbolic link on the way to `path`.
    pub(crate) fn symlink(path: &Path) -> StoreError {
        StoreError::Symlink { path: path.to_owned() }
    }

    /// A whisper error on a file of the store.
    pub(crate) fn whisper(err: whisper::Error) -> StoreError {
        match err {
            whisper::Error::LockTimeout { .. } => StoreError::Locked(err),
            whisper::Error::Corrupt { .. } => StoreError::Corrupt(err),
            whisper::Error::Compressed { .. } => StoreError::Compressed(err),
            whisper::Error::Io { path, cause } => StoreError::io(&path, cause),
            whisper::Error::NotAFile(_) => StoreError::NotFound,
            whisper::Error::KeepsBeingReplaced(path) => StoreError::KeepsBeingReplaced { path },
            other => StoreError::failed("whisper", other),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::AgentError;
    use axum::http::StatusCode;

    #[test]
    fn a_full_device_is_a_507_naming_the_fix() {
        let path = Path::new("/data/whisper/a/b.wsp");
        for (code, start) in [(28, "no space left on the device holding"), (122, "disk quota exceeded on the device")] {
            let err = AgentError::from(StoreError::io(path, io::Error::from_raw_os_error(code)));
            assert_eq!(err.status(), StatusCode::INSUFFICIENT_STORAGE);
            let message = err.to_string();
            assert!(message.starts_with(start) && message.contains("/data/whisper/a/b.wsp"), "{message}");
            assert!(message.contains("stop sending heals to this node"), "{message}");
        }
        let mkdir = StoreError::writing("mkdir /x", Path::new("/x"), io::Error::from_raw_os_error(28));
        assert_eq!(AgentError::from(mkdir).status(), StatusCode::INSUFFICIENT_STORAGE);
        // Other errors stay what they were, their source kept.
        let denied = StoreError::io(path, io::Error::from_raw_os_error(13));
        assert!(std::error::Error::source(&denied).is_some(), "{denied}");
        let denied = AgentError::from(denied);
        assert_eq!(denied.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(std::error::Error::source(&denied).is_some(), "{denied}");
        assert!(matches!(StoreError::io(path, io::Error::from_raw_os_error(2)), StoreError::NotFound));
    }
}
