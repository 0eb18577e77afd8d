//! Crash-safe file publication: write a temp file in the target's directory, fsync it, publish it with a
//! rename that never replaces an existing file (or one that does, when asked), and fsync the directory.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// Block size used to leave holes when writing sparse files.
const SPARSE_BLOCK: usize = 4096;

/// A temporary file next to its destination; removed on drop unless published.
#[derive(Debug)]
#[must_use = "an unpublished temp file is deleted on drop"]
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Creates an empty temp file in `dest`'s directory. Its name starts with a dot and does not end in
    /// `.wsp`, so metric listings never see it.
    pub fn new_for(dest: &Path) -> Result<TempFile> {
        let (path, file) =
            at_unique_name(dest, |path| OpenOptions::new().read(true).write(true).create_new(true).open(path))?;
        Ok(TempFile { path, file: Some(file) })
    }

    /// The open temp file.
    pub fn file(&self) -> &File {
        self.file.as_ref().expect("temp file is open until published")
    }

    /// The temp file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `bytes` as the whole content, leaving 4 KiB zero blocks as holes when `sparse`.
    pub fn write_content(&self, bytes: &[u8], sparse: bool) -> Result<()> {
        let file = self.file();
        let io = |e| Error::io(&self.path, e);
        if sparse {
            for (i, block) in bytes.chunks(SPARSE_BLOCK).enumerate() {
                if block.iter().any(|&b| b != 0) {
                    file.write_all_at(block, (i * SPARSE_BLOCK) as u64).map_err(io)?;
                }
            }
            file.set_len(bytes.len() as u64).map_err(io)?;
        } else {
            file.write_all_at(bytes, 0).map_err(io)?;
        }
        Ok(())
    }

    /// fsyncs the content and publishes it at `dest` only if nothing exists there, then fsyncs the
    /// directory. Returns `Ok(false)` (and keeps nothing) if `dest` appeared meanwhile.
    pub fn publish_new(mut self, dest: &Path) -> Result<bool> {
        let file = self.file.take().expect("temp file is open until published");
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        drop(file);
        // link(2) fails with EEXIST instead of replacing: a no-replace rename in two steps.
        match fs::hard_link(&self.path, dest) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(false),
            Err(e) => return Err(Error::io(dest, e)),
        }
        let _ = fs::remove_file(&self.path);
        self.path = PathBuf::new();
        sync_dir(&parent_dir(dest))?;
        Ok(true)
    }

    /// fsyncs the content and atomically replaces `dest` with it, then fsyncs the directory.
    pub fn publish_replace(self, dest: &Path) -> Result<()> {
        self.publish_replace_keeping(dest, None)
    }

    /// Like [`TempFile::publish_replace`], but first makes the file now at `dest` also reachable as
    /// `backup` (a hard link, atomically replacing whatever was there), as whisper-resize renames the
    /// original to `PATH.bak`. `dest` is never missing, not even for an instant.
    pub fn publish_replace_keeping(mut self, dest: &Path, backup: Option<&Path>) -> Result<()> {
        let file = self.file.take().expect("temp file is open until published");
        file.sync_all().map_err(|e| Error::io(&self.path, e))?;
        drop(file);
        if let Some(backup) = backup {
            // link(2) refuses to replace, so link under a fresh name and rename that over `backup`.
            let (link, ()) = at_unique_name(backup, |link| fs::hard_link(dest, link))?;
            if let Err(e) = fs::rename(&link, backup) {
                let _ = fs::remove_file(&link);
                return Err(Error::io(backup, e));
            }
        }
        fs::rename(&self.path, dest).map_err(|e| Error::io(dest, e))?;
        self.path = PathBuf::new();
        sync_dir(&parent_dir(dest))
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Writes `bytes` to a new file at `dest` durably; `Ok(false)` if `dest` already exists (nothing changed).
pub fn write_new_file(dest: &Path, bytes: &[u8], sparse: bool) -> Result<bool> {
    if dest.exists() {
        return Ok(false);
    }
    let temp = TempFile::new_for(dest)?;
    temp.write_content(bytes, sparse)?;
    temp.publish_new(dest)
}

/// Runs `make` on fresh hidden names next to `dest` until one does not exist yet; returns that name.
fn at_unique_name<T>(dest: &Path, mut make: impl FnMut(&Path) -> io::Result<T>) -> Result<(PathBuf, T)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let dir = parent_dir(dest);
    let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    loop {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        let path = dir.join(format!(".{name}.bucky-tmp.{}.{n}.{nanos:x}", std::process::id()));
        match make(&path) {
            Ok(made) => return Ok((path, made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
}

/// Removes `path` if it exists and fsyncs its directory; `Ok(false)` if there was nothing to remove.
pub fn remove_file(path: &Path) -> Result<bool> {
    match fs::remove_file(path) {
        Ok(()) => sync_dir(&parent_dir(path)).map(|()| true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// fsyncs a directory so that a rename or link inside it survives a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(|e| Error::io(dir, e))
}

/// The directory holding `path` (`.` for a bare file name): where its temp file goes and what to fsync.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_new_never_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("m.wsp");
        assert!(write_new_file(&dest, b"first", false).unwrap());
        assert!(!write_new_file(&dest, b"second", false).unwrap());
        let t = TempFile::new_for(&dest).unwrap();
        t.write_content(b"third", false).unwrap();
        assert!(!t.publish_new(&dest).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        // No temp files left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn sparse_content_reads_back_identical() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("s.wsp");
        let mut bytes = vec![0u8; 3 * SPARSE_BLOCK + 100];
        bytes[5] = 1;
        bytes[2 * SPARSE_BLOCK + 7] = 9;
        assert!(write_new_file(&dest, &bytes, true).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), bytes);
    }
}
