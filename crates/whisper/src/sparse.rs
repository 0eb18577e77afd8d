//! Reclaiming the disk space of never-written archive regions, in place.
//!
//! buckytools' `bucky-sparsify` copies the file to `X.wsp.sparse` (default permissions, no fsync) and renames
//! it over the original: carbon-cache may still hold the old inode open and keeps writing points into the
//! unlinked file, where they are lost. Here the file keeps its inode: under its exclusive flock, every
//! filesystem block that reads as all zeros is deallocated with `fallocate(PUNCH_HOLE | KEEP_SIZE)`. A punched
//! block still reads as zeros, so the content is byte-identical before and after, and a crash at any point
//! leaves either the allocated zeros or the hole: no fsync is needed for safety.
//!
//! What the flock cannot cover: a writer that ignores it (carbon-cache without `WHISPER_LOCK_WRITES`) could
//! write into a zero block between our read and the punch, and that point would be lost. The window is one
//! read and one syscall long per run of zero blocks; run sparsify on files no lock-less writer is filling.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{FallocateFlags, SeekFrom};

use crate::error::{Error, Result};
use crate::file::WhisperFile;
use crate::lock::LockMode;

/// How to sparsify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SparsifyOptions {
    /// Only report what would be freed; take only a shared lock and change nothing.
    pub dry_run: bool,
    /// Bound on the wait for the file's flock.
    pub lock_timeout: Duration,
}

impl Default for SparsifyOptions {
    fn default() -> Self {
        SparsifyOptions { dry_run: false, lock_timeout: crate::lock::DEFAULT_LOCK_TIMEOUT }
    }
}

/// What sparsify found and did to one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SparsifyReport {
    /// The file.
    pub path: PathBuf,
    /// Its length in bytes (unchanged).
    pub size: u64,
    /// Bytes allocated on disk before (`st_blocks × 512`).
    pub allocated_before: u64,
    /// Bytes allocated on disk after (equal to before for a dry run).
    pub allocated_after: u64,
    /// Bytes in allocated all-zero blocks: what was punched (or, for a dry run, what would be).
    pub zero_bytes: u64,
}

impl SparsifyReport {
    /// Bytes the filesystem gave back (0 for a dry run).
    pub fn freed(&self) -> u64 {
        self.allocated_before.saturating_sub(self.allocated_after)
    }
}

/// Bytes examined per read: whole blocks, large enough that a big archive takes few reads.
const CHUNK: u64 = 1 << 20;

/// Punches holes over the all-zero blocks of the whisper file at `path`, in place, under its exclusive flock
/// (shared for a dry run). Refuses a file that is not a valid whisper file; never changes the content,
/// the length or the inode.
pub fn sparsify(path: impl AsRef<Path>, options: &SparsifyOptions) -> Result<SparsifyReport> {
    let path = path.as_ref();
    let mode = if options.dry_run { LockMode::Shared } else { LockMode::Exclusive };
    // Validated once locked: a header rewritten (or a file truncated) before the lock is not trusted.
    let file = WhisperFile::open_locked(path, mode, options.lock_timeout)?;
    let io = |e: std::io::Error| Error::io(path, e);
    let meta = file.file().metadata().map_err(io)?;
    let block = meta.blksize().clamp(512, CHUNK);
    let size = meta.len();
    let allocated_before = meta.blocks() * 512;
    let mut zero_bytes = 0;
    for (start, end) in data_extents(file.file(), size).map_err(io)? {
        zero_bytes += punch_zero_blocks(file.file(), start, end, size, block, options.dry_run).map_err(io)?;
    }
    let allocated_after =
        if options.dry_run { allocated_before } else { file.file().metadata().map_err(io)?.blocks() * 512 };
    Ok(SparsifyReport { path: path.to_owned(), size, allocated_before, allocated_after, zero_bytes })
}

/// The allocated byte ranges of the file (`SEEK_DATA`/`SEEK_HOLE`), so holes are neither read nor counted;
/// the whole file where the filesystem cannot tell.
fn data_extents(file: &File, size: u64) -> std::io::Result<Vec<(u64, u64)>> {
    let mut extents = Vec::new();
    let mut at = 0;
    while at < size {
        let start = match rustix::fs::seek(file, SeekFrom::Data(at)) {
            Ok(start) => start,
            Err(rustix::io::Errno::NXIO) => break, // no data after `at`
            Err(rustix::io::Errno::INVAL | rustix::io::Errno::OPNOTSUPP) if at == 0 => return Ok(vec![(0, size)]),
            Err(e) => return Err(e.into()),
        };
        let end = rustix::fs::seek(file, SeekFrom::Hole(start))?.min(size);
        if end <= start {
            break;
        }
        extents.push((start, end));
        at = end;
    }
    Ok(extents)
}

/// Punches (or, for a dry run, counts) the all-zero blocks of `start..end`; returns their bytes. The last
/// block of the file counts as zero when it is zero up to the end of the file: what lies past the end is
/// not content.
fn punch_zero_blocks(file: &File, start: u64, end: u64, size: u64, block: u64, dry_run: bool) -> std::io::Result<u64> {
    let mut total = 0;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut at = start - start % block;
    while at < end {
        let chunk_end = (at + CHUNK).min(end.div_ceil(block) * block);
        let readable = chunk_end.min(size) - at;
        let bytes = &mut buf[..readable as usize];
        file.read_exact_at(bytes, at)?;
        // Runs of consecutive zero blocks within the chunk, punched one syscall each.
        let mut run: Option<u64> = None;
        let mut offset = at;
        while offset < chunk_end {
            let within = (offset - at) as usize;
            let upto = ((offset + block).min(chunk_end.min(size)) - at) as usize;
            let zero = within >= upto || bytes[within..upto].iter().all(|&b| b == 0);
            match (zero, run) {
                (true, None) => run = Some(offset),
                (false, Some(begin)) => {
                    total += punch(file, begin, offset, dry_run)?;
                    run = None;
                }
                _ => {}
            }
            offset += block;
        }
        if let Some(begin) = run {
            total += punch(file, begin, chunk_end, dry_run)?;
        }
        at = chunk_end;
    }
    Ok(total)
}

fn punch(file: &File, begin: u64, end: u64, dry_run: bool) -> std::io::Result<u64> {
    if !dry_run {
        rustix::fs::fallocate(file, FallocateFlags::PUNCH_HOLE | FallocateFlags::KEEP_SIZE, begin, end - begin)?;
    }
    Ok(end - begin)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{create, CreateOptions, Point, Retention};

    const NOW: i64 = 1_700_000_000;

    #[test]
    fn punches_zero_blocks_and_keeps_every_byte_and_the_inode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        create(&path, &Retention::parse_list("10:20000,60:20000").unwrap(), &CreateOptions::default()).unwrap();
        let file = WhisperFile::open_rw(&path).unwrap();
        file.update_many(&[Point::new(NOW - 30, 1.0), Point::new(NOW - 100_000, 2.0)], NOW).unwrap();
        let before = std::fs::read(&path).unwrap();
        let ino = std::fs::metadata(&path).unwrap().ino();

        let dry = sparsify(&path, &SparsifyOptions { dry_run: true, ..Default::default() }).unwrap();
        assert_eq!(dry.freed(), 0);
        assert!(dry.zero_bytes > 400_000, "{dry:?}");
        assert_eq!(std::fs::metadata(&path).unwrap().blocks() * 512, dry.allocated_before);

        let report = sparsify(&path, &SparsifyOptions::default()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), before);
        assert_eq!(std::fs::metadata(&path).unwrap().ino(), ino);
        assert_eq!(report.zero_bytes, dry.zero_bytes);
        assert!(report.freed() > 400_000, "{report:?}");
        // Once sparse, there is nothing left to punch.
        let again = sparsify(&path, &SparsifyOptions::default()).unwrap();
        assert_eq!((again.zero_bytes, again.freed()), (0, 0), "{again:?}");
        assert_eq!(std::fs::read(&path).unwrap(), before);
    }

    #[test]
    fn refuses_a_non_whisper_file_and_leaves_it_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        std::fs::write(&path, vec![0u8; 100_000]).unwrap();
        let err = sparsify(&path, &SparsifyOptions::default()).unwrap_err();
        assert!(err.is_invalid_file(), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), vec![0u8; 100_000]);
    }

    #[test]
    fn waits_for_the_lock_then_gives_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.wsp");
        create(&path, &Retention::parse_list("10:2000").unwrap(), &CreateOptions::default()).unwrap();
        let holder = WhisperFile::open(&path).unwrap();
        let _held = holder.lock(LockMode::Shared, Duration::ZERO).unwrap();
        let options = SparsifyOptions { dry_run: false, lock_timeout: Duration::from_millis(50) };
        assert!(matches!(sparsify(&path, &options), Err(Error::LockTimeout { .. })));
    }
}
