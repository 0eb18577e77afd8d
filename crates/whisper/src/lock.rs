//! Whisper's lock: BSD `flock(2)` on the whole file, the same lock carbon-cache takes with
//! `WHISPER_LOCK_WRITES = True`, held by an RAII guard so it is released on every path.

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Default bound on how long to wait for a lock.
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// Shared for readers, exclusive for writers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// `LOCK_SH`: many readers, no writer.
    Shared,
    /// `LOCK_EX`: one writer (carbon-cache takes this one).
    Exclusive,
}

/// A held flock; dropping it unlocks.
#[must_use = "the lock is released as soon as the guard is dropped"]
#[derive(Debug)]
pub struct WhisperLock<'a> {
    file: &'a File,
    path: PathBuf,
    mode: LockMode,
}

impl<'a> WhisperLock<'a> {
    /// Takes `mode` on `file`, retrying with backoff until `timeout` has passed; never blocks forever.
    pub fn acquire(file: &'a File, path: &Path, mode: LockMode, timeout: Duration) -> Result<Self> {
        flock(file, path, mode, timeout)?;
        Ok(WhisperLock { file, path: path.to_owned(), mode })
    }

    /// The mode held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The locked file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Takes `mode` on `file`, retrying with backoff until `timeout` has passed; the caller releases it.
pub(crate) fn flock(file: &File, path: &Path, mode: LockMode, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        let attempt = match mode {
            LockMode::Shared => file.try_lock_shared(),
            LockMode::Exclusive => file.try_lock(),
        };
        match attempt {
            Ok(()) => return Ok(()),
            Err(TryLockError::WouldBlock) => {}
            Err(TryLockError::Error(e)) => return Err(Error::io(path, e)),
        }
        let waited = start.elapsed();
        if waited >= timeout {
            return Err(Error::LockTimeout { path: path.to_owned(), waited });
        }
        thread::sleep(pause.min(timeout - waited));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

impl Drop for WhisperLock<'_> {
    fn drop(&mut self) {
        // Closing the descriptor would release it too; unlocking now matters because the File may live on.
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exclusive_excludes_and_releases_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        std::fs::write(&path, b"x").unwrap();
        let a = File::open(&path).unwrap();
        let b = File::open(&path).unwrap();
        {
            let _held = WhisperLock::acquire(&a, &path, LockMode::Exclusive, Duration::ZERO).unwrap();
            let err = WhisperLock::acquire(&b, &path, LockMode::Shared, Duration::from_millis(30)).unwrap_err();
            assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        }
        let _s1 = WhisperLock::acquire(&a, &path, LockMode::Shared, Duration::ZERO).unwrap();
        let _s2 = WhisperLock::acquire(&b, &path, LockMode::Shared, Duration::ZERO).unwrap();
    }
}
