//! [`WhisperFile`]: an open whisper file on disk.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::buf::WhisperBuf;
use crate::engine::{self, Store};
use crate::error::{Error, Result};
use crate::fetch::{self, Series};
use crate::header::{Header, METADATA_SIZE, POINT_SIZE};
use crate::lock::{LockMode, WhisperLock};
use crate::locked::{read_up_to, LockedFile, LockedOpen};
use crate::slot::{point_from, Point};

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
    /// The header as read at open, to notice a header rewritten in place since.
    header_bytes: Vec<u8>,
    writable: bool,
    cursor: std::sync::Mutex<()>,
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
        let file = OpenOptions::new().read(true).write(writable).open(path).map_err(|e| Error::io(path, e))?;
        let (header, header_bytes) = read_header(&file, path)?;
        Ok(WhisperFile {
            path: path.to_owned(),
            file,
            header,
            header_bytes,
            writable,
            cursor: std::sync::Mutex::new(()),
        })
    }

    /// Opens the file at `path` under whisper's flock in `mode` (for writing too when exclusive), waiting
    /// at most `timeout` for the lock, and validates its header as it is once locked. The lock is taken on
    /// the inode still at the path (see [`LockedOpen`]), so a file renamed over the path meanwhile is never
    /// written to after it was unlinked. The lock is released when the returned guard drops.
    pub fn open_locked(path: impl AsRef<Path>, mode: LockMode, timeout: Duration) -> Result<LockedWhisperFile> {
        Self::open_locked_with(path, &LockedOpen::new(mode, timeout))
    }

    /// [`WhisperFile::open_locked`] with every option (read-only under an exclusive lock, no symlinks).
    pub fn open_locked_with(path: impl AsRef<Path>, options: &LockedOpen) -> Result<LockedWhisperFile> {
        let path = path.as_ref();
        let lock = options.open(path)?;
        let (header, header_bytes) = read_header(lock.file(), path)?;
        // A second descriptor of the same open file: the lock stays with `lock`, released when it drops.
        let file = lock.file().try_clone().map_err(|e| Error::io(path, e))?;
        let file = WhisperFile {
            path: path.to_owned(),
            file,
            header,
            header_bytes,
            writable: options.writes(),
            cursor: std::sync::Mutex::new(()),
        };
        Ok(LockedWhisperFile { file, lock })
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
        // read_to_end fills spare capacity without zeroing it first. It moves the shared file offset, so
        // such reads are serialised; everything else uses positioned I/O.
        let mut data = Vec::with_capacity(len);
        {
            let _cursor = self.cursor.lock().unwrap_or_else(|e| e.into_inner());
            let mut reader = &self.file;
            std::io::Seek::seek(&mut reader, std::io::SeekFrom::Start(0)).map_err(|e| Error::io(&self.path, e))?;
            std::io::Read::read_to_end(&mut std::io::Read::take(reader, len as u64), &mut data)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        if data.len() != len {
            return Err(Error::corrupt(&self.path, format!("file shrank to {} bytes while being read", data.len())));
        }
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

    /// Like [`WhisperFile::write_back`], but while the caller holds this file's exclusive lock (so the
    /// buffer, read under that lock, equals the disk outside its changes): nearby changed ranges are written
    /// as one, unchanged bytes between them included. A fill of many small gaps then costs a few large
    /// writes instead of thousands of small ones. Only safe when every writer of the file takes the flock
    /// (carbon-cache with `WHISPER_LOCK_WRITES = True`): a writer that ignores it could have its point
    /// overwritten by the stale copy.
    pub fn write_back_locked(&self, buf: &WhisperBuf, lock: &WhisperLock<'_>) -> Result<()> {
        if lock.mode() != LockMode::Exclusive || lock.path() != self.path {
            return self.write_back(buf);
        }
        self.write_coalesced(buf)
    }

    /// [`WhisperFile::write_back_locked`] once the exclusive lock is known to be held.
    fn write_coalesced(&self, buf: &WhisperBuf) -> Result<()> {
        if !self.writable {
            return self.write_back(buf); // refuses, as a read-only file must
        }
        if buf.header() != &self.header {
            return Err(Error::corrupt(&self.path, "the header changed while the file was being updated"));
        }
        for span in crate::ranges::coalesce_ranges(buf.dirty_ranges()) {
            self.file
                .write_all_at(&buf.as_bytes()[span.clone()], span.start as u64)
                .map_err(|e| Error::io(&self.path, e))?;
        }
        Ok(())
    }

    /// The header as it is on disk now, validated: what a lock holder must trust, since the header read
    /// at open may have been rewritten in place meanwhile.
    pub(crate) fn current_header(&self) -> Result<Header> {
        read_header(&self.file, &self.path).map(|(header, _)| header)
    }

    /// Rewrites the 16-byte metadata block (aggregation, maxRetention, xFilesFactor, archive count) in
    /// place, as whisper's `__writeHeaderMetadata`; `header` must be [`WhisperFile::current_header`] with
    /// only those fields changed, under the exclusive lock.
    pub(crate) fn write_metadata(&self, header: &Header) -> Result<()> {
        self.file.write_all_at(&header.to_bytes()[..METADATA_SIZE], 0).map_err(|e| Error::io(&self.path, e))
    }

    /// fsyncs the file's data.
    pub fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| Error::io(&self.path, e))
    }

    /// whisper's `update_many`: see [`WhisperBuf::update_many`]. Reads only the pages it touches. All or
    /// nothing: a refused batch writes nothing.
    pub fn update_many(&self, points: &[Point], now: i64) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        let mut pages = PagedFile::new(self)?;
        engine::update_many(&mut pages, points, now)?;
        pages.write_back()
    }

    /// whisper's single-point `update`: see [`WhisperBuf::update`].
    pub fn update(&self, value: f64, timestamp: i64, now: i64) -> Result<()> {
        let mut pages = PagedFile::new(self)?;
        engine::update(&mut pages, value, timestamp, now)?;
        pages.write_back()
    }

    /// whisper's `fetch`, reading only the slots needed: see [`WhisperBuf::fetch`].
    pub fn fetch(&self, from: i64, until: Option<i64>, now: i64, archive: Option<u32>) -> Result<Option<Series>> {
        let Some((index, from, until)) = fetch::select_archive(&self.header, from, until, now, archive)? else {
            return Ok(None);
        };
        self.archive_fetch(index, from, until).map(Some)
    }

    /// whisper's `__archive_fetch` on archive `index`, reading only the slots needed: see
    /// [`WhisperBuf::archive_fetch`]. `index` must be below the archive count.
    pub fn archive_fetch(&self, index: usize, from: i64, until: i64) -> Result<Series> {
        let info = *self.header.archives.get(index).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "archive {index} does not exist (the file has {})",
                self.header.archives.len()
            ))
        })?;
        let mut base = [0u8; POINT_SIZE];
        self.file.read_exact_at(&mut base, u64::from(info.offset)).map_err(|e| Error::io(&self.path, e))?;
        let base = point_from(&base).0;
        let read = |start: usize, count: usize| -> Result<Vec<(u32, f64)>> {
            let mut bytes = vec![0u8; count * POINT_SIZE];
            let first = (info.end() as usize - start).min(bytes.len());
            self.file.read_exact_at(&mut bytes[..first], start as u64).map_err(|e| Error::io(&self.path, e))?;
            if first < bytes.len() {
                self.file
                    .read_exact_at(&mut bytes[first..], u64::from(info.offset))
                    .map_err(|e| Error::io(&self.path, e))?;
            }
            Ok(bytes.chunks_exact(POINT_SIZE).map(point_from).collect())
        };
        fetch::archive_fetch(&info, from, until, base, read)
    }

    /// Every stored slot per archive, sorted by timestamp: see [`WhisperBuf::dump`].
    pub fn dump(&self) -> Result<Vec<Vec<(u32, f64)>>> {
        Ok(self.read_buf()?.dump())
    }
}

/// A [`WhisperFile`] held under whisper's flock (see [`WhisperFile::open_locked`]); dropping it unlocks.
#[derive(Debug)]
#[must_use = "the lock is released as soon as the file is dropped"]
pub struct LockedWhisperFile {
    file: WhisperFile,
    /// The descriptor the lock was taken through: dropping it releases the lock.
    lock: LockedFile,
}

impl LockedWhisperFile {
    /// The lock held.
    pub fn mode(&self) -> LockMode {
        self.lock.mode()
    }

    /// Writes `buf`'s changes back as [`WhisperFile::write_back_locked`] does: under the exclusive lock,
    /// nearby changed ranges as one write (see [`crate::coalesce_ranges`] for when that is safe); under a
    /// shared lock, as [`WhisperFile::write_back`].
    pub fn write_back_coalesced(&self, buf: &WhisperBuf) -> Result<()> {
        match self.mode() {
            LockMode::Exclusive => self.file.write_coalesced(buf),
            LockMode::Shared => self.file.write_back(buf),
        }
    }

    /// Releases the lock, keeping the file open.
    pub fn unlock(self) -> WhisperFile {
        let LockedWhisperFile { file, lock } = self;
        drop(lock);
        file
    }
}

impl std::ops::Deref for LockedWhisperFile {
    type Target = WhisperFile;

    fn deref(&self) -> &WhisperFile {
        &self.file
    }
}

/// Bytes read at a time by [`PagedFile`].
const PAGE: usize = 4096;

/// One loaded page and which of its bytes the update changed (one bit per byte).
struct Page {
    bytes: Box<[u8]>,
    dirty: [u64; PAGE / 64],
}

impl Page {
    fn mark_dirty(&mut self, range: std::ops::Range<usize>) {
        let mut i = range.start;
        while i < range.end {
            let (word, bit) = (i / 64, i % 64);
            let n = (64 - bit).min(range.end - i);
            self.dirty[word] |= (u64::MAX >> (64 - n)) << bit;
            i += n;
        }
    }

    /// The changed byte ranges within the page, in order.
    fn dirty_ranges(&self, mut emit: impl FnMut(std::ops::Range<usize>)) {
        for (word_index, &word) in self.dirty.iter().enumerate() {
            let mut w = word;
            while w != 0 {
                let start = w.trailing_zeros() as usize;
                let len = (!(w >> start)).trailing_zeros() as usize;
                emit(word_index * 64 + start..word_index * 64 + start + len);
                w = if start + len == 64 { 0 } else { w & !((u64::MAX >> (64 - len)) << start) };
            }
        }
    }
}

/// A whisper file read page by page on demand, with writes kept in memory until [`PagedFile::write_back`]:
/// an update touches a few KiB of a multi-MiB file, and a failed update writes nothing. Writes are tracked
/// per byte, so write-back rewrites exactly the bytes the update changed, never a neighbour's.
struct PagedFile<'a> {
    file: &'a WhisperFile,
    len: usize,
    /// Loaded pages, by page number.
    pages: Vec<Option<Box<Page>>>,
}

impl<'a> PagedFile<'a> {
    fn new(file: &'a WhisperFile) -> Result<Self> {
        // The length the header implies, which open checked against the file: a file shrunk since then
        // fails its reads, and its header is compared below.
        let len = usize::try_from(file.header.file_size()).map_err(|_| Error::corrupt(&file.path, "file too large"))?;
        let mut pages = PagedFile { file, len, pages: Vec::new() };
        pages.pages.resize_with(len.div_ceil(PAGE), || None);
        // The header may have changed since open (rewritten in place): check it again from the first
        // page(s), which the update needs anyway for archive 0's anchor.
        let header_len = (file.header.header_size() as usize).min(len);
        pages.load(0, header_len)?;
        let mut unchanged = true;
        let expected = &file.header_bytes;
        pages.for_each_page(0, header_len, |page, range, done| {
            unchanged &= expected.get(done..done + range.len()) == Some(&page.bytes[range]);
        })?;
        if !unchanged || expected.len() != header_len {
            return Err(Error::corrupt(&file.path, "the header changed since the file was opened; reopen it"));
        }
        Ok(pages)
    }

    /// Loads the pages under `offset..offset + len` that are not loaded yet, one read per stretch of
    /// missing pages: a run or a propagation span usually needs several neighbouring pages at once.
    fn load(&mut self, offset: usize, len: usize) -> Result<()> {
        let Some(last_byte) = (offset + len).min(self.len).checked_sub(1) else { return Ok(()) };
        let (mut page, last) = (offset / PAGE, last_byte / PAGE);
        while page <= last {
            if self.pages[page].is_some() {
                page += 1;
                continue;
            }
            let end = (page..=last).find(|&p| self.pages[p].is_some()).unwrap_or(last + 1);
            let start = page * PAGE;
            let mut bytes = vec![0u8; (end * PAGE).min(self.len) - start];
            self.file.file.read_exact_at(&mut bytes, start as u64).map_err(|e| Error::io(&self.file.path, e))?;
            for (number, chunk) in (page..end).zip(bytes.chunks(PAGE)) {
                self.pages[number] = Some(Box::new(Page { bytes: chunk.into(), dirty: [0; PAGE / 64] }));
            }
            page = end;
        }
        Ok(())
    }

    /// The loaded page holding all of `offset..offset + len`, if there is one (the common case: a slot).
    fn within_page(&mut self, offset: usize, len: usize) -> Option<(&mut Page, std::ops::Range<usize>)> {
        let within = offset % PAGE;
        let page = self.pages.get_mut(offset / PAGE)?.as_deref_mut()?;
        (within + len <= page.bytes.len()).then_some((page, within..within + len))
    }

    /// Calls `each(page, range within it)` for the pages under `offset..offset + len`, loading them first.
    fn for_each_page(
        &mut self,
        offset: usize,
        len: usize,
        mut each: impl FnMut(&mut Page, std::ops::Range<usize>, usize),
    ) -> Result<()> {
        if let Some((page, range)) = self.within_page(offset, len) {
            each(page, range, 0);
            return Ok(());
        }
        self.load(offset, len)?;
        let (mut at, end) = (offset, offset + len);
        while at < end {
            let within = at % PAGE;
            let page =
                self.pages.get_mut(at / PAGE).and_then(|p| p.as_deref_mut()).ok_or_else(|| {
                    Error::corrupt(&self.file.path, format!("offset {at} is beyond the end of the file"))
                })?;
            let n = (page.bytes.len() - within).min(end - at);
            if n == 0 {
                return Err(Error::corrupt(&self.file.path, format!("offset {at} is beyond the end of the file")));
            }
            each(page, within..within + n, at - offset);
            at += n;
        }
        Ok(())
    }

    /// Copies bytes at `offset` into `out`, loading pages as needed.
    fn read(&mut self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.for_each_page(offset, out.len(), |page, range, done| {
            out[done..done + range.len()].copy_from_slice(&page.bytes[range]);
        })
    }

    fn write_back(self) -> Result<()> {
        // Changed ranges in file order, touching ones (also across pages) joined.
        let mut ranges: Vec<std::ops::Range<usize>> = Vec::new();
        for (number, page) in self.pages.iter().enumerate() {
            let Some(page) = page else { continue };
            page.dirty_ranges(|r| {
                let r = number * PAGE + r.start..number * PAGE + r.end;
                match ranges.last_mut() {
                    Some(last) if last.end == r.start => last.end = r.end,
                    _ => ranges.push(r),
                }
            });
        }
        let mut bytes = Vec::new();
        for range in ranges {
            bytes.clear();
            let mut offset = range.start;
            while offset < range.end {
                let within = offset % PAGE;
                let page = self.pages[offset / PAGE].as_deref().map(|p| &p.bytes[..]).unwrap_or_default();
                let n = (page.len() - within).min(range.end - offset);
                bytes.extend_from_slice(&page[within..within + n]);
                offset += n;
            }
            self.file.file.write_all_at(&bytes, range.start as u64).map_err(|e| Error::io(&self.file.path, e))?;
        }
        Ok(())
    }
}

impl Store for PagedFile<'_> {
    fn header(&self) -> &Header {
        &self.file.header
    }

    fn point(&mut self, offset: usize) -> Result<(u32, f64)> {
        let mut bytes = [0u8; POINT_SIZE];
        self.read(offset, &mut bytes)?;
        Ok(point_from(&bytes))
    }

    fn read_bytes(&mut self, offset: usize, out: &mut [u8]) -> Result<()> {
        self.read(offset, out)
    }

    fn put(&mut self, offset: usize, bytes: &[u8]) -> Result<()> {
        self.for_each_page(offset, bytes.len(), |page, range, done| {
            page.bytes[range.clone()].copy_from_slice(&bytes[done..done + range.len()]);
            page.mark_dirty(range);
        })
    }
}

/// The validated header and its bytes.
fn read_header(file: &File, path: &Path) -> Result<(Header, Vec<u8>)> {
    let len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    // One read covers the header of any file with fewer than 340 archives.
    let mut first = [0u8; PAGE];
    let got = read_up_to(file, &mut first, 0).map_err(|e| Error::io(path, e))?;
    // Before its "archive count" (bytes of the magic) sends us reading the whole file.
    crate::compressed::refuse(&first[..got], path)?;
    let needed = Header::needed_len(&first[..got.min(METADATA_SIZE)], len);
    let bytes = if needed <= got as u64 {
        first[..needed as usize].to_vec()
    } else {
        // Bounded by the file's real length, never by the header's claims alone.
        let mut bytes = vec![0u8; needed.min(len) as usize];
        let got = read_up_to(file, &mut bytes, 0).map_err(|e| Error::io(path, e))?;
        bytes.truncate(got);
        bytes
    };
    Ok((Header::parse(&bytes, len, path)?, bytes))
}
