//! Opening a file under whisper's flock, safely: the lock is taken with a bounded wait, and only kept if the
//! locked inode is still the one at the path. A writer that renames a new file over the path (a replace,
//! a resize) while we wait would otherwise leave us holding the lock of an unlinked inode, and whatever we
//! wrote there would be lost.

use std::fs::{self, File, Metadata, OpenOptions};
use std::ops::Range;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::lock::{flock, LockMode};

/// How many times the file may turn out replaced under us before [`Error::KeepsBeingReplaced`].
const DEFAULT_ATTEMPTS: u32 = 5;

/// How to open a file under its flock (see [`LockedOpen::open`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockedOpen {
    mode: LockMode,
    timeout: Duration,
    write: bool,
    follow_symlinks: bool,
    attempts: u32,
}

impl LockedOpen {
    /// `mode` with waits bounded by `timeout` (zero: try once); opened for writing when `mode` is
    /// exclusive; a symbolic link at the path is followed.
    pub fn new(mode: LockMode, timeout: Duration) -> Self {
        LockedOpen {
            mode,
            timeout,
            write: mode == LockMode::Exclusive,
            follow_symlinks: true,
            attempts: DEFAULT_ATTEMPTS,
        }
    }

    /// Opens the file for writing too (or not), whatever the lock mode.
    pub fn write(mut self, write: bool) -> Self {
        self.write = write;
        self
    }

    /// Whether the file is opened for writing.
    pub fn writes(&self) -> bool {
        self.write
    }

    /// Refuses a symbolic link at the path (`O_NOFOLLOW`: an [`Error::Io`] whose cause is `ELOOP`).
    pub fn no_follow(mut self) -> Self {
        self.follow_symlinks = false;
        self
    }

    /// Opens `path`, takes the flock, and checks that the path still names the locked inode; if it was
    /// replaced meanwhile, starts again on the new file (a few times, then [`Error::KeepsBeingReplaced`]).
    /// A directory at the path is an [`Error::Io`] (`EISDIR`), anything else but a regular file
    /// [`Error::NotAFile`]; a lock not had in time is
    /// [`Error::LockTimeout`].
    pub fn open(&self, path: impl AsRef<Path>) -> Result<LockedFile> {
        let path = path.as_ref();
        for _ in 0..self.attempts.max(1) {
            let mut options = OpenOptions::new();
            options.read(true).write(self.write);
            if !self.follow_symlinks {
                options.custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32);
            }
            let file = options.open(path).map_err(|e| Error::io(path, e))?;
            let opened = file.metadata().map_err(|e| Error::io(path, e))?;
            if opened.is_dir() {
                // What reading it would have said (EISDIR), as the unlocked opens report it.
                let cause = std::io::Error::from_raw_os_error(rustix::io::Errno::ISDIR.raw_os_error());
                return Err(Error::io(path, cause));
            }
            if !opened.is_file() {
                return Err(Error::NotAFile(path.to_owned()));
            }
            flock(&file, path, self.mode, self.timeout)?;
            // From here on, dropping `locked` releases the lock.
            let mut locked = LockedFile { file, path: path.to_owned(), mode: self.mode, metadata: opened };
            let at_path = if self.follow_symlinks { fs::metadata(path) } else { fs::symlink_metadata(path) };
            let at_path = at_path.map_err(|e| Error::io(path, e))?;
            if (at_path.dev(), at_path.ino()) != (locked.metadata.dev(), locked.metadata.ino()) {
                continue; // replaced while we waited: drop (unlock) this one and lock the new one
            }
            // As of under the lock: the size and times a holder can trust.
            locked.metadata = at_path;
            return Ok(locked);
        }
        Err(Error::KeepsBeingReplaced(path.to_owned()))
    }
}

/// A file held under whisper's flock, known to be the file at its path when the lock was taken. Dropping it
/// unlocks it.
#[derive(Debug)]
pub struct LockedFile {
    file: File,
    path: PathBuf,
    mode: LockMode,
    metadata: Metadata,
}

impl LockedFile {
    /// The open file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The lock held.
    pub fn mode(&self) -> LockMode {
        self.mode
    }

    /// The file's metadata as of just after the lock was taken.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The whole file, of the length it had when locked, in one positioned read in the usual case. A file
    /// found shorter is returned as it is (parsing it reports the truncation); nothing is validated.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        let len = usize::try_from(self.metadata.len()).map_err(|_| Error::corrupt(&self.path, "file too large"))?;
        let mut bytes = vec![0; len];
        let filled = read_up_to(&self.file, &mut bytes, 0).map_err(|e| Error::io(&self.path, e))?;
        bytes.truncate(filled);
        Ok(bytes)
    }

    /// Writes `bytes[range]` at offset `range.start` for each range (ranges must lie within `bytes`).
    pub fn write_ranges(&self, bytes: &[u8], ranges: impl IntoIterator<Item = Range<usize>>) -> Result<()> {
        for range in ranges {
            let chunk = bytes.get(range.clone()).ok_or_else(|| {
                Error::InvalidArgument(format!("range {range:?} is outside the {} bytes given", bytes.len()))
            })?;
            self.file.write_all_at(chunk, range.start as u64).map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    /// Releases the lock and returns the file (still open).
    pub fn unlock(self) -> Result<File> {
        let file = self.file.try_clone().map_err(|e| Error::io(&self.path, e))?;
        drop(self);
        Ok(file)
    }
}

impl Drop for LockedFile {
    fn drop(&mut self) {
        // Closing the descriptor would release it too, but not while a duplicate of it lives on.
        let _ = self.file.unlock();
    }
}

/// Reads into `buf` from `offset` until it is full or the file ends; returns the bytes read.
pub(crate) fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, CreateOptions, Retention, WhisperFile};

    fn new_file(path: &Path) {
        create(path, &Retention::parse_list("1m:1h").unwrap(), &CreateOptions::default()).unwrap();
    }

    /// A file renamed over the path while we wait for the lock is the one we end up holding, never the
    /// unlinked one.
    #[test]
    fn the_lock_is_taken_on_the_file_still_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let (path, other) = (dir.path().join("a.wsp"), dir.path().join("b.wsp"));
        new_file(&path);
        new_file(&other);
        let held = WhisperFile::open_locked(&path, LockMode::Exclusive, Duration::ZERO).unwrap();
        let old_identity = held.identity().unwrap();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                WhisperFile::open_locked(&path, LockMode::Exclusive, Duration::from_secs(10)).map(|f| f.identity())
            })
        };
        std::thread::sleep(Duration::from_millis(100));
        fs::rename(&other, &path).unwrap();
        drop(held);
        let identity = waiter.join().unwrap().unwrap().unwrap();
        assert_ne!(identity, old_identity, "locked the unlinked file");
        assert_eq!(identity, WhisperFile::open(&path).unwrap().identity().unwrap());
    }

    #[test]
    fn waits_are_bounded_and_only_regular_files_are_locked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        new_file(&path);
        let held = LockedOpen::new(LockMode::Exclusive, Duration::ZERO).open(&path).unwrap();
        let err = WhisperFile::open_locked(&path, LockMode::Shared, Duration::from_millis(20)).unwrap_err();
        assert!(matches!(err, Error::LockTimeout { .. }), "{err}");
        drop(held);
        let shared = WhisperFile::open_locked(&path, LockMode::Shared, Duration::ZERO).unwrap();
        assert!(WhisperFile::open_locked(&path, LockMode::Shared, Duration::ZERO).is_ok(), "shared with shared");
        drop(shared);
        let err = LockedOpen::new(LockMode::Shared, Duration::ZERO).open(dir.path()).unwrap_err();
        assert!(matches!(&err, Error::Io { cause, .. } if cause.kind() == std::io::ErrorKind::IsADirectory), "{err}");
        let err = LockedOpen::new(LockMode::Shared, Duration::ZERO).open("/dev/null").unwrap_err();
        assert!(matches!(err, Error::NotAFile(_)), "{err}");
        let link = dir.path().join("link.wsp");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(LockedOpen::new(LockMode::Shared, Duration::ZERO).open(&link).is_ok());
        let err = LockedOpen::new(LockMode::Shared, Duration::ZERO).no_follow().open(&link).unwrap_err();
        assert!(matches!(&err, Error::Io { cause, .. } if cause.raw_os_error() == Some(40)), "{err}");
    }

    #[test]
    fn a_locked_file_reads_whole_and_writes_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        fs::write(&path, b"0123456789").unwrap();
        let locked = LockedOpen::new(LockMode::Exclusive, Duration::ZERO).open(&path).unwrap();
        assert_eq!(locked.read_all().unwrap(), b"0123456789");
        locked.write_ranges(b"abcdefghij", [1..3, 8..10]).unwrap();
        assert!(locked.write_ranges(b"ab", std::iter::once(1..3)).is_err());
        drop(locked);
        assert_eq!(fs::read(&path).unwrap(), b"0bc34567ij");
    }
}
