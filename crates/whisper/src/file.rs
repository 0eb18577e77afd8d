//! [`WhisperFile`]: an open whisper file on disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::buf::{self, Point, Series, WhisperBuf};
use crate::error::{Error, Result};
use crate::header::{Header, METADATA_SIZE, POINT_SIZE};
use crate::lock::{LockMode, WhisperLock};

/// An open, validated whisper file.
///
/// Reads use positioned I/O (one read per archive range); writes load the file into a [`WhisperBuf`], run the
/// reference algorithm there, and write back only the slots that changed. Locking is explicit: take a
/// [`WhisperLock`] with [`WhisperFile::lock`] around the operations that must not interleave with
/// carbon-cache.
#[derive(Debug)]
pub struct WhisperFile {
    path: PathBuf,
    file: File,
    header: Header,
    writable: bool,
}

impl WhisperFile {
    /// Opens a file for reading and validates its header.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), false)
    }

    /// Opens a file for reading and writing and validates its header.
    pub fn open_rw(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), true)
    }

    fn open_with(path: &Path, writable: bool) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(path)
            .map_err(|e| Error::io(path, e))?;
        let header = read_header(&file, path)?;
        Ok(WhisperFile { path: path.to_owned(), file, header, writable })
    }

    /// The header as read at open.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The underlying file.
    pub fn file(&self) -> &File {
        &self.file
    }

    /// `(device, inode)`, to recognise the same file under two names.
    pub fn identity(&self) -> Result<(u64, u64)> {
        let meta = self.file.metadata().map_err(|e| Error::io(&self.path, e))?;
        Ok((meta.dev(), meta.ino()))
    }

    /// Takes whisper's flock with a bounded wait; released when the guard drops.
    pub fn lock(&self, mode: LockMode, timeout: Duration) -> Result<WhisperLock<'_>> {
        WhisperLock::acquire(&self.file, &self.path, mode, timeout)
    }

    /// Reads and re-validates the whole file into memory (one positioned read).
    pub fn read_buf(&self) -> Result<WhisperBuf> {
        let len = self.file.metadata().map_err(|e| Error::io(&self.path, e))?.len();
        let len = usize::try_from(len).map_err(|_| Error::corrupt(&self.path, "file too large"))?;
        let mut data = vec![0u8; len];
        self.file.read_exact_at(&mut data, 0).map_err(|e| Error::io(&self.path, e))?;
        WhisperBuf::with_path(data, &self.path)
    }

    /// Writes the ranges `buf` changed back to this file (the buffer must come from this file).
    pub fn write_back(&self, buf: &WhisperBuf) -> Result<()> {
        if !self.writable {
            return Err(Error::io(
                &self.path,
                std::io::Error::new(std::io::ErrorKind::PermissionDenied, "opened read-only"),
            ));
        }
        if buf.header() != &self.header {
            return Err(Error::corrupt(&self.path, "the header changed while the file was being updated"));
        }
        for range in buf.dirty_ranges() {
            self.file
                .write_all_at(&buf.as_bytes()[range.clone()], range.start as u64)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    /// fsyncs the file's data.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// whisper's `update_many`: see [`WhisperBuf::update_many`]. All or nothing: a refused batch writes
    /// nothing.
    pub fn update_many(&self, points: &[Point], now: i64) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut buf = self.read_buf()?;
        buf.update_many(points, now)?;
        self.write_back(&buf)
    }

    /// whisper's single-point `update`: see [`WhisperBuf::update`].
    pub fn update(&self, value: f64, timestamp: i64, now: i64) -> Result<()> {
        let mut buf = self.read_buf()?;
        buf.update(value, timestamp, now)?;
        self.write_back(&buf)
    }

    /// whisper's `fetch`, reading only the slots needed: see [`WhisperBuf::fetch`].
    pub fn fetch(&self, from: i64, until: Option<i64>, now: i64, archive: Option<u32>) -> Result<Option<Series>> {
        let Some((index, from, until)) = buf::select_archive(&self.header, from, until, now, archive)? else {
            return Ok(None);
        };
        let info = self.header.archives[index];
        let mut base = [0u8; POINT_SIZE];
        self.file.read_exact_at(&mut base, u64::from(info.offset)).map_err(|e| Error::io(&self.path, e))?;
        let base = buf::point_from(&base).0;
        let read = |start: usize, count: usize| -> Result<Vec<(u32, f64)>> {
            let mut bytes = vec![0u8; count * POINT_SIZE];
            let first = (info.end() as usize - start).min(bytes.len());
            self.file.read_exact_at(&mut bytes[..first], start as u64).map_err(|e| Error::io(&self.path, e))?;
            if first < bytes.len() {
                self.file
                    .read_exact_at(&mut bytes[first..], u64::from(info.offset))
                    .map_err(|e| Error::io(&self.path, e))?;
            }
            Ok(bytes.chunks_exact(POINT_SIZE).map(buf::point_from).collect())
        };
        buf::archive_fetch(&info, from, until, base, read).map(Some)
    }

    /// Every stored slot per archive, sorted by timestamp: see [`WhisperBuf::dump`].
    pub fn dump(&self) -> Result<Vec<Vec<(u32, f64)>>> {
        Ok(self.read_buf()?.dump())
    }
}

fn read_header(file: &File, path: &Path) -> Result<Header> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut metadata = [0u8; METADATA_SIZE];
    let got = read_up_to(file, &mut metadata, 0).map_err(|e| Error::io(path, e))?;
    let needed = Header::needed_len(&metadata[..got], len);
    // Bounded by the file's real length, never by the header's claims alone.
    let mut bytes = vec![0u8; needed.min(len) as usize];
    let got = read_up_to(file, &mut bytes, 0).map_err(|e| Error::io(path, e))?;
    bytes.truncate(got);
    Header::parse(&bytes, len, path)
}

fn read_up_to(file: &File, buf: &mut [u8], offset: u64) -> std::io::Result<usize> {
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
