//! The whisper store below `--prefix`: every disk operation of the API, blocking (callers run these on the
//! blocking pool).
//!
//! Invariants:
//! - a file appears at its final path only complete and flushed (temp file in the same directory, flush,
//!   no-replace publish, flush of the directory entry), so readers and carbon-cache never see a partial
//!   file, and a crash leaves either nothing or the whole file (plus, at worst, a hidden temp file that the
//!   next scan removes);
//! - a create or heal returns only once its data (and the new name) is on disk; the flushes of concurrent
//!   requests are shared (group commit, see [`commit`]);
//! - an existing file is only changed under its exclusive flock, after the lock was taken on the inode that
//!   is *still* at the path (a file replaced meanwhile is re-opened), so no write lands in an unlinked inode;
//! - a heal never overwrites a point (`whisper::fill_buf`, safe mode) and never replaces a file: if the file
//!   appears while we create it (another heal, or carbon-cache), we heal into it instead;
//! - a go-whisper compressed file (go-carbon's `compressed = true`) is only ever created whole: a heal from
//!   one into an existing file, or into an existing one, is refused before anything changes
//!   ([`StoreError::CompressedUpload`], [`StoreError::Compressed`]); reads and deletes treat it as bytes;
//! - nothing changes when a precondition (`If-Match`) fails;
//! - no symbolic link is followed below the root (the root itself may be one): every directory on the way
//!   to a file is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (or an `lstat` walk on
//!   kernels without it), and files are opened with `O_NOFOLLOW`. A link found there is a 403, so a link
//!   placed in the tree can never make the agent read or write outside it;
//! - with [`Store::reporting_waits`] (as the agent uses it) the store never waits: a held flock, a full
//!   memory budget or a half-written file is reported as [`StoreError::Wait`] before anything changed, and
//!   the caller waits outside its I/O slot (see `crate::wait`).

use std::borrow::Borrow;
use std::fs::{self, File};
use std::io;
use std::ops::Range;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bucky_wire::{go_file_mode, MetricName, MetricStat};
use whisper::durable::{sync_dir, TempFile};
use whisper::{FillMode, FillOptions, Header, LockMode, LockedFile, LockedOpen, WhisperBuf, WhisperData};

use crate::budget::{Budget, Charge};
use crate::etag::{etag_of, IfMatch};
use crate::wait::Wait;

mod commit;
mod error;
mod reap;

pub use commit::Flush;
use commit::{Answer, Committer, Work, MAX_BATCH};
pub use error::StoreError;
use reap::Reaper;

/// How often a heal retries when the file keeps appearing and disappearing under it, or looks half-written.
const ATTEMPTS: u32 = 5;
/// Block size for the in-place rewrite of a replaced file (only differing blocks are written).
const BLOCK: usize = 4096;

/// One upload of [`Store::heal_many`]: the metric, its file, and the upload's `ModTime`.
pub type HealItem = (MetricName, WhisperData, i64);

/// Options of the store (from the agent's flags).
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// Write new files with holes for zero blocks (`--sparse`).
    pub sparse: bool,
    /// Apply `X-Metric-Stat.ModTime` to healed files (`--mtime`).
    pub set_mtime: bool,
    /// Bound on each flock wait.
    pub lock_timeout: Duration,
    /// Remove parent directories a DELETE leaves empty, unless modified within this grace period.
    pub prune_grace: Option<Duration>,
    /// Write the span between nearby filled slots in one write (`--coalesce-writes`). Only safe when every
    /// writer of the store takes whisper's flock: the unchanged slots in between are rewritten with the
    /// values read under the lock. Off, only the filled slots are written, so a carbon-cache that ignores the
    /// lock never loses a point it wrote between our read and our write.
    pub coalesce_writes: bool,
    /// How creates and heals are made durable (see [`Flush`]).
    pub flush: Flush,
    /// Fault injection for tests: pause between writing a new file's temp copy and publishing it.
    pub publish_delay: Duration,
    /// Fault injection for tests: pause under a fill's exclusive lock between reading and writing the file.
    pub fill_delay: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            sparse: false,
            set_mtime: false,
            lock_timeout: whisper::DEFAULT_LOCK_TIMEOUT,
            prune_grace: None,
            coalesce_writes: false,
            flush: Flush::detect(),
            publish_delay: Duration::ZERO,
            fill_delay: Duration::ZERO,
        }
    }
}

/// The whisper files below one root directory.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    options: StoreOptions,
    committer: Arc<Committer>,
    reaper: Arc<Reaper>,
    /// Charged for every file read into memory.
    budget: Budget,
    /// Report [`Wait`]s instead of waiting (see [`Store::reporting_waits`]).
    report_waits: bool,
    /// The root, opened once: the anchor of `openat2(RESOLVE_BENEATH)`.
    root_fd: Arc<OnceLock<Option<OwnedFd>>>,
}

/// A file read under its shared lock: a consistent copy.
#[derive(Debug)]
pub struct Snapshot {
    /// The whole file.
    pub bytes: Vec<u8>,
    /// Its stat (Size is `bytes.len()`; Encoding 0).
    pub stat: MetricStat,
    /// Strong ETag of `bytes`.
    pub etag: String,
    /// Its modification time.
    pub modified: SystemTime,
    /// The memory budget `bytes` is charged to.
    pub(crate) charge: Charge,
}

/// What a heal (POST) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Healed {
    /// The file did not exist; it was created as a copy of the upload.
    Created,
    /// The file existed; this many empty slots were filled.
    Filled(u64),
    /// The file existed and was healed with overwrite ([`Store::heal_with`]): `filled` empty slots were
    /// written and `replaced` points took the upload's value.
    Repaired {
        /// Points written into empty slots.
        filled: u64,
        /// Points whose value was replaced by the upload's.
        replaced: u64,
    },
}

impl Healed {
    /// The heal's answer for what a fill wrote.
    fn of(counts: whisper::FillCounts, overwrite: bool) -> Healed {
        match overwrite {
            false => Healed::Filled(counts.filled),
            true => Healed::Repaired { filled: counts.filled, replaced: counts.replaced },
        }
    }
}

/// What a replace (PUT) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replaced {
    /// The file did not exist; it was created.
    Created,
    /// Same archive layout: rewritten in place under the lock (same inode, carbon-cache keeps writing to it).
    InPlace,
    /// Different layout: a new file was renamed over the old one.
    Renamed,
}

impl Store {
    /// A store rooted at `root` (which must exist).
    pub fn new(root: impl Into<PathBuf>, options: StoreOptions) -> Store {
        let committer = Arc::new(Committer::new(options.flush));
        Store {
            root: root.into(),
            options,
            committer,
            reaper: Arc::default(),
            budget: Budget::unlimited(),
            report_waits: false,
            root_fd: Arc::default(),
        }
    }

    /// Registers the group commit's batches and the reaper's closes in `registry` (for the watchdog).
    pub(crate) fn set_registry(&self, registry: &bucky_diag::Registry) {
        let _ = self.committer.registry.set(registry.clone());
        let _ = self.reaper.registry.set(registry.clone());
    }

    /// The store as the agent uses it: files read into memory are charged to `budget`, and instead of
    /// waiting for a flock (`lock_timeout`), for room in the budget, or for a half-written file to settle,
    /// every operation reports [`StoreError::Wait`] before it has changed anything, so that its caller can
    /// wait without holding an I/O slot and try again.
    pub(crate) fn reporting_waits(mut self, budget: Budget) -> Store {
        self.budget = budget;
        self.report_waits = true;
        self
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The path of a metric's file.
    pub fn path(&self, name: &MetricName) -> PathBuf {
        self.root.join(name.relative_path())
    }

    /// The file's stat without reading or locking it; [`StoreError::NotFound`] unless it is a regular file.
    pub fn stat(&self, name: &MetricName) -> Result<MetricStat, StoreError> {
        let path = self.located(name, Access::Read)?;
        let meta = fs::symlink_metadata(&path).map_err(|e| StoreError::io(&path, e))?;
        if !meta.is_file() {
            return Err(StoreError::NotFound);
        }
        Ok(stat_of(name, &meta, meta.len()))
    }

    /// Reads the whole file under a shared flock.
    pub fn read(&self, name: &MetricName) -> Result<Snapshot, StoreError> {
        let path = self.located(name, Access::Read)?;
        self.locked(&path, LockMode::Shared, false, |locked| {
            let meta = locked.metadata();
            let (bytes, charge) = self.read_all(locked)?;
            let modified = meta.modified().unwrap_or(UNIX_EPOCH);
            Ok(Snapshot {
                stat: stat_of(name, meta, bytes.len() as u64),
                etag: etag_of(&bytes),
                bytes,
                modified,
                charge,
            })
        })
    }

    /// Heals `src` into the metric's file (POST): creates it durably if missing, otherwise fills its empty
    /// slots under the exclusive flock. `remote_mtime` is the upload's `ModTime` (used with `--mtime`).
    /// A compressed `src` only creates a missing file; a compressed file on either side of a fill is refused.
    pub fn heal(
        &self,
        name: &MetricName,
        src: &WhisperData,
        remote_mtime: i64,
        now: i64,
    ) -> Result<Healed, StoreError> {
        self.heal_with(name, src, remote_mtime, now, false)
    }

    /// [`Store::heal`]; with `overwrite`, where the existing file holds another value than `src` for the
    /// same time, `src`'s value wins ([`whisper::FillMode::SourceWins`]; `bucky repair`).
    pub fn heal_with(
        &self,
        name: &MetricName,
        src: &WhisperData,
        remote_mtime: i64,
        now: i64,
        overwrite: bool,
    ) -> Result<Healed, StoreError> {
        let path = self.located(name, Access::Write)?;
        for _ in 0..ATTEMPTS {
            // If it appeared meanwhile (another heal, or carbon-cache), heal into it instead.
            if !exists(&path)? && self.create_new(&path, src.as_bytes(), remote_mtime)? {
                return Ok(Healed::Created);
            }
            match self.fill_existing(&path, src, remote_mtime, now, overwrite) {
                Err(StoreError::NotFound) => continue, // deleted meanwhile: create it again
                other => return other.map(|counts| Healed::of(counts, overwrite)),
            }
        }
        Err(StoreError::Unstable { path, operation: "heal" })
    }

    /// Heals many uploads (`(name, file, remote_mtime)`), each as [`Store::heal`] would, with one group
    /// commit for all of them (per 1024 items, the committer's largest batch) instead of one each: the
    /// missing files are staged and the existing ones filled under their exclusive flocks, then every
    /// publish and every flush is handed to the committer at once, and only then awaited. A name taken
    /// between its staging and its publish (another heal, carbon-cache) is healed into by [`Store::heal`],
    /// as is a file deleted between the check and its fill. Returns one result per item, in order; one
    /// failing does not stop the others.
    pub fn heal_many<T: Borrow<HealItem>>(&self, items: &[T], now: i64) -> Vec<Result<Healed, StoreError>> {
        self.heal_many_with(items, now, false)
    }

    /// [`Store::heal_many`], each item healed as [`Store::heal_with`] with `overwrite`.
    pub fn heal_many_with<T: Borrow<HealItem>>(
        &self,
        items: &[T],
        now: i64,
        overwrite: bool,
    ) -> Vec<Result<Healed, StoreError>> {
        let mut results = Vec::with_capacity(items.len());
        for chunk in items.chunks(MAX_BATCH) {
            self.heal_chunk(chunk, now, overwrite, &mut results);
        }
        results
    }

    /// [`Store::heal_many`] of at most [`MAX_BATCH`] items, appending their results to `results`.
    fn heal_chunk<T: Borrow<HealItem>>(
        &self,
        items: &[T],
        now: i64,
        overwrite: bool,
        results: &mut Vec<Result<Healed, StoreError>>,
    ) {
        /// Where an item stands once staged or filled: the index of its work for the committer, if any.
        enum Step {
            Done(Result<Healed, StoreError>),
            /// The directories made for it go if it fails.
            Create(usize, Vec<PathBuf>),
            Fill(whisper::FillCounts, usize),
            /// Deleted between the check and the fill: heal it on its own (it creates the file again).
            Alone,
        }
        let mut works = Vec::new();
        let mut steps = Vec::with_capacity(items.len());
        for (name, src, remote_mtime) in items.iter().map(Borrow::borrow) {
            let step = match self.located(name, Access::Write).and_then(|path| Ok((exists(&path)?, path))) {
                Err(e) => Step::Done(Err(e)),
                Ok((false, path)) => match self.stage_with_parents(&path, src.as_bytes(), *remote_mtime) {
                    Ok((temp, made)) => {
                        works.push(Work::Publish { temp, dest: path });
                        Step::Create(works.len() - 1, made)
                    }
                    Err(e) => Step::Done(Err(e)),
                },
                Ok((true, path)) => match self.fill_locked(&path, src, *remote_mtime, now, overwrite) {
                    Ok((written, Some(file))) => {
                        works.push(Work::Sync { file, path });
                        Step::Fill(written, works.len() - 1)
                    }
                    Ok((written, None)) => Step::Done(Ok(Healed::of(written, overwrite))),
                    Err(StoreError::NotFound) => Step::Alone,
                    Err(e) => Step::Done(Err(e)),
                },
            };
            steps.push(step);
        }
        if steps.iter().any(|step| matches!(step, Step::Create(..))) {
            self.pause_before_publish();
        }
        let mut answers: Vec<Option<Answer>> = self.committer.submit_many(works).into_iter().map(Some).collect();
        let mut answer = |i: usize| {
            answers
                .get_mut(i)
                .and_then(Option::take)
                .unwrap_or_else(|| Err(StoreError::failed("group commit", "no answer")))
        };
        for ((name, src, remote_mtime), step) in items.iter().map(Borrow::borrow).zip(steps) {
            results.push(match step {
                Step::Done(result) => result,
                Step::Create(i, made) => match answer(i) {
                    Ok(true) => Ok(Healed::Created),
                    // It appeared meanwhile (another heal, or carbon-cache): heal into it instead.
                    Ok(false) => self.heal_with(name, src, *remote_mtime, now, overwrite),
                    Err(e) => {
                        remove_new_dirs(&made);
                        Err(e)
                    }
                },
                Step::Fill(written, i) => answer(i).map(|_| Healed::of(written, overwrite)),
                Step::Alone => self.heal_with(name, src, *remote_mtime, now, overwrite),
            });
        }
    }

    /// Replaces the metric's file with `src` (PUT), never deleting it first. Honours `If-Match`.
    pub fn replace(
        &self,
        name: &MetricName,
        src: &WhisperData,
        if_match: Option<&IfMatch>,
        remote_mtime: i64,
    ) -> Result<Replaced, StoreError> {
        let path = self.located(name, Access::Write)?;
        for _ in 0..ATTEMPTS {
            if !exists(&path)? {
                if if_match.is_some() {
                    return Err(StoreError::IfMatchButMissing);
                }
                if self.create_new(&path, src.as_bytes(), remote_mtime)? {
                    return Ok(Replaced::Created);
                }
            }
            let result = self.locked(&path, LockMode::Exclusive, true, |locked| {
                let (current, _charge) = self.read_all(locked)?;
                check_precondition(if_match, &current)?;
                if same_layout(&current, src, &path) {
                    rewrite_in_place(locked, &current, src.as_bytes())?;
                    if self.options.set_mtime {
                        set_mtime(locked.file(), remote_mtime, &path)?;
                    }
                    locked.file().sync_data().map_err(|e| StoreError::io(&path, e))?;
                    Ok(Replaced::InPlace)
                } else {
                    let temp = self.temp_with(&path, src.as_bytes(), remote_mtime)?;
                    temp.publish_replace(&path).map_err(StoreError::whisper)?;
                    Ok(Replaced::Renamed)
                }
            });
            match result {
                Err(StoreError::NotFound) => continue,
                other => return other,
            }
        }
        Err(StoreError::Unstable { path, operation: "replace" })
    }

    /// Deletes the metric's file. With `If-Match`, only if its content is unchanged (checked and unlinked
    /// under the exclusive flock). With pruning on, removes parents left empty (see [`StoreOptions`]).
    pub fn delete(&self, name: &MetricName, if_match: Option<&IfMatch>) -> Result<(), StoreError> {
        let path = self.located(name, Access::Read)?;
        let parents = self.parents_with_mtimes(&path);
        // Unlinked while held open, then closed by the reaper: freeing the file waits for nobody.
        let held = match if_match {
            None => {
                let meta = fs::symlink_metadata(&path).map_err(|e| StoreError::io(&path, e))?;
                if meta.is_dir() || meta.is_symlink() {
                    return Err(StoreError::NotFound);
                }
                let held = if meta.is_file() { File::open(&path).ok() } else { None };
                fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))?;
                held
            }
            Some(_) => {
                let ((), file) = self.locked_keep(&path, LockMode::Exclusive, false, |locked| {
                    let (current, _charge) = self.read_all(locked)?;
                    check_precondition(if_match, &current)?;
                    fs::remove_file(&path).map_err(|e| StoreError::io(&path, e))
                })?;
                Some(file)
            }
        };
        if let Some(file) = held {
            self.reaper.close(file);
        }
        if let Some(grace) = self.options.prune_grace {
            prune(&parents, grace);
        }
        Ok(())
    }

    /// The path of a metric's file once every directory on the way to it is known to be a real directory
    /// below the root, not a symbolic link (403). A regular file where a directory should be is a 409 for
    /// a write and a 404 for a read; a missing directory is fine (a write creates it, a read finds nothing).
    fn located(&self, name: &MetricName, access: Access) -> Result<PathBuf, StoreError> {
        let path = self.path(name);
        let relative = name.relative_path();
        let Some(dirs) = relative.parent().filter(|d| !d.as_os_str().is_empty()) else {
            return Ok(path);
        };
        let result = match self.root_fd() {
            Some(root) => beneath(root, dirs),
            None => lstat_walk(&self.root, dirs),
        };
        match result {
            Ok(()) => Ok(path),
            Err(e) => match e.kind() {
                io::ErrorKind::NotFound => Ok(path),
                io::ErrorKind::NotADirectory if access == Access::Write => Err(in_the_way(&path)),
                io::ErrorKind::NotADirectory => Err(StoreError::NotFound),
                io::ErrorKind::InvalidFilename => Err(StoreError::NameTooLong),
                _ if is_symlink_error(&e) => Err(StoreError::symlink(&path)),
                _ => Err(StoreError::failed(path.display().to_string(), e)),
            },
        }
    }

    /// The root directory, opened once (`None` if it cannot be: then the `lstat` walk is used).
    fn root_fd(&self) -> Option<&OwnedFd> {
        self.root_fd
            .get_or_init(|| {
                use rustix::fs::{open, Mode, OFlags};
                open(&self.root, OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty()).ok()
            })
            .as_ref()
    }

    /// Opens and flocks the file at `path` (never through a symbolic link), on the inode still at the path
    /// once locked (see [`LockedOpen`]): waiting up to `--lock-timeout` in place, or, when waits are
    /// reported, trying once and reporting [`Wait::Lock`] if it is held.
    fn open_locked(&self, path: &Path, mode: LockMode, write: bool) -> Result<LockedFile, StoreError> {
        let timeout = if self.report_waits { Duration::ZERO } else { self.options.lock_timeout };
        let op = bucky_diag::current();
        if let (Some(op), false) = (&op, self.report_waits) {
            op.waiting_for_lock(path);
        }
        let opened = LockedOpen::new(mode, timeout).write(write).no_follow().open(path);
        if let (Some(op), Ok(_)) = (&op, &opened) {
            op.holding_lock(path, bucky_diag::phase::DISK);
        }
        opened.map_err(|e| match e {
            whisper::Error::LockTimeout { .. } if self.report_waits => {
                StoreError::Wait(Wait::Lock { path: path.to_owned() })
            }
            other => StoreError::whisper(other),
        })
    }

    /// The whole locked file, charged to the memory budget first ([`Wait::Memory`] when it has no room).
    fn read_all(&self, locked: &LockedFile) -> Result<(Vec<u8>, Charge), StoreError> {
        let charge = self.budget.try_charge(locked.metadata().len()).map_err(StoreError::Wait)?;
        Ok((locked.read_all().map_err(StoreError::whisper)?, charge))
    }

    /// Runs `f` on the file at `path` opened and locked in `mode` (see [`Store::open_locked`]).
    fn locked<T>(
        &self,
        path: &Path,
        mode: LockMode,
        write: bool,
        f: impl FnOnce(&LockedFile) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        f(&self.open_locked(path, mode, write)?)
    }

    /// [`Store::locked`], also returning the file (unlocked) when `f` succeeded.
    fn locked_keep<T>(
        &self,
        path: &Path,
        mode: LockMode,
        write: bool,
        f: impl FnOnce(&LockedFile) -> Result<T, StoreError>,
    ) -> Result<(T, File), StoreError> {
        let locked = self.open_locked(path, mode, write)?;
        let result = f(&locked)?;
        Ok((result, locked.unlock().map_err(StoreError::whisper)?))
    }

    /// Fills the existing file at `path` from `src` under the exclusive flock and makes it durable; returns
    /// the points written.
    fn fill_existing(
        &self,
        path: &Path,
        src: &WhisperData,
        remote_mtime: i64,
        now: i64,
        overwrite: bool,
    ) -> Result<whisper::FillCounts, StoreError> {
        let (written, written_through) = self.fill_locked(path, src, remote_mtime, now, overwrite)?;
        if let Some(file) = written_through {
            self.committer.sync(file, path)?;
        }
        Ok(written)
    }

    /// Fills the existing file at `path` from `src` under the exclusive flock; returns the points written and,
    /// if any, the file to make durable (not yet durable: the caller hands it to the committer). A compressed
    /// file on either side is refused, the file unchanged: its points cannot be read.
    fn fill_locked(
        &self,
        path: &Path,
        src: &WhisperData,
        remote_mtime: i64,
        now: i64,
        overwrite: bool,
    ) -> Result<(whisper::FillCounts, Option<File>), StoreError> {
        let Some(src) = src.standard() else {
            return Err(StoreError::CompressedUpload { path: path.to_owned() });
        };
        let mut attempt = 0;
        loop {
            let outcome = self.locked(path, LockMode::Exclusive, true, |locked| {
                let (file, meta) = (locked.file(), locked.metadata());
                let before = meta.mtime();
                let (bytes, _charge) = self.read_all(locked)?;
                if whisper::is_compressed(&bytes) {
                    return Err(StoreError::Compressed(whisper::Error::Compressed { path: path.to_owned() }));
                }
                let mut dst = match WhisperBuf::from_bytes(bytes) {
                    Ok(dst) => dst,
                    Err(e) => return Ok(Err(e)),
                };
                let mode = if overwrite { FillMode::SourceWins } else { FillMode::Safe };
                let counts = whisper::fill_buf_counted(src, &mut dst, &FillOptions { mode, ..FillOptions::new(now) })
                    .map_err(|e| StoreError::failed(format!("fill {}", path.display()), e))?;
                let written = counts.filled + counts.replaced;
                if written > 0 {
                    if !self.options.fill_delay.is_zero() {
                        thread::sleep(self.options.fill_delay);
                    }
                    let spans = match self.options.coalesce_writes {
                        true => whisper::coalesce_ranges(dst.dirty_ranges()),
                        false => dst.dirty_ranges(),
                    };
                    reserve(file, meta, &spans, path)?;
                    locked.write_ranges(dst.as_bytes(), spans).map_err(StoreError::whisper)?;
                }
                if self.options.set_mtime {
                    // Never make a file look older than it was before the heal, nor fresher than its data.
                    set_mtime(file, before.max(remote_mtime), path)?;
                }
                // Made durable after the lock is released: the flush is shared with other requests, and
                // holding carbon-cache off the file meanwhile would gain nothing.
                let written_through = match written {
                    0 => None,
                    _ => Some(file.try_clone().map_err(|e| StoreError::io(path, e))?),
                };
                Ok(Ok((counts, written_through)))
            })?;
            match outcome {
                Ok(filled) => return Ok(filled),
                // carbon-cache without WHISPER_LOCK_WRITES may be creating it right now: give it a moment
                // (outside the I/O slot when waits are reported).
                Err(e) if self.report_waits => {
                    let reason = match corrupt_at(e, path) {
                        whisper::Error::Corrupt { reason, .. } => reason,
                        other => other.to_string(),
                    };
                    return Err(StoreError::Wait(Wait::Unsettled { path: path.to_owned(), reason }));
                }
                Err(_) if attempt + 1 < ATTEMPTS => {
                    attempt += 1;
                    thread::sleep(Duration::from_millis(50 * u64::from(attempt)));
                }
                Err(e) => return Err(StoreError::whisper(corrupt_at(e, path))),
            }
        }
    }

    /// Writes `bytes` to a new file at `path` durably (group commit), making its missing parent directories;
    /// `Ok(false)` if a file appeared there meanwhile (nothing changed). On an error, the directories it made
    /// are removed again: a failed request changes nothing.
    fn create_new(&self, path: &Path, bytes: &[u8], remote_mtime: i64) -> Result<bool, StoreError> {
        let (temp, made) = self.stage_with_parents(path, bytes, remote_mtime)?;
        self.pause_before_publish();
        let published = self.committer.publish(temp, path);
        if published.is_err() {
            remove_new_dirs(&made);
        }
        published
    }

    /// [`Store::temp_with`] after [`Store::ensure_parent`]: the staged file and the directories made for it,
    /// for [`remove_new_dirs`] if the request fails later; removed already if staging fails. A parent that
    /// vanished before the temp file was made in it (another request made it, failed, and removed it) is
    /// made again.
    fn stage_with_parents(
        &self,
        path: &Path,
        bytes: &[u8],
        remote_mtime: i64,
    ) -> Result<(TempFile, Vec<PathBuf>), StoreError> {
        let mut attempt = 1;
        loop {
            let made = self.ensure_parent(path)?;
            match self.temp_with(path, bytes, remote_mtime) {
                Ok(temp) => return Ok((temp, made)),
                Err(e) => {
                    let vanished = made.is_empty() && !path.parent().is_some_and(Path::is_dir);
                    remove_new_dirs(&made);
                    if !vanished || attempt == ATTEMPTS {
                        return Err(e);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// The fault injection of tests ([`StoreOptions::publish_delay`]), between staging and publishing.
    fn pause_before_publish(&self) {
        if !self.options.publish_delay.is_zero() {
            thread::sleep(self.options.publish_delay);
        }
    }

    /// A temp file next to `path` holding `bytes` (mtime applied with `--mtime`), not yet published.
    fn temp_with(&self, path: &Path, bytes: &[u8], remote_mtime: i64) -> Result<TempFile, StoreError> {
        let temp = TempFile::new_for(path).map_err(StoreError::whisper)?;
        temp.write_content(bytes, self.options.sparse).map_err(StoreError::whisper)?;
        if self.options.set_mtime {
            set_mtime(temp.file(), remote_mtime, temp.path())?;
        }
        Ok(temp)
    }

    /// Creates the directories between the root and `path`'s parent; returns those it made, shallowest first
    /// (on an error, it removes them itself). With `--flush fsync`, each new entry's parent is fsynced here;
    /// with syncfs, the group commit of the file created in them flushes them. A directory that vanishes
    /// meanwhile (another request made it, failed, and removed it) is made again.
    fn ensure_parent(&self, path: &Path) -> Result<Vec<PathBuf>, StoreError> {
        let parent = path.parent().unwrap_or(&self.root);
        let relative = parent.strip_prefix(&self.root).map_err(|e| StoreError::failed("mkdir", e))?;
        let mut attempt = 1;
        'attempt: loop {
            if parent.is_dir() {
                return Ok(Vec::new());
            }
            let mut made = Vec::new();
            let mut dir = self.root.clone();
            for part in relative.components() {
                let next = dir.join(part);
                let result = match fs::create_dir(&next) {
                    Ok(()) => {
                        made.push(next.clone());
                        match self.options.flush {
                            Flush::Fsync => sync_dir(&dir).map_err(StoreError::whisper),
                            Flush::Syncfs => Ok(()),
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists && next.is_dir() => Ok(()),
                    Err(e) if matches!(e.kind(), io::ErrorKind::AlreadyExists | io::ErrorKind::NotADirectory) => {
                        Err(in_the_way(&next))
                    }
                    Err(e) if e.kind() == io::ErrorKind::InvalidFilename => Err(StoreError::NameTooLong),
                    Err(e) if e.kind() == io::ErrorKind::NotFound && attempt < ATTEMPTS => {
                        remove_new_dirs(&made);
                        attempt += 1;
                        continue 'attempt;
                    }
                    Err(e) => Err(StoreError::writing(format!("mkdir {}", next.display()), &next, e)),
                };
                if let Err(e) = result {
                    remove_new_dirs(&made);
                    return Err(e);
                }
                dir = next;
            }
            return Ok(made);
        }
    }

    /// The directories between `path` and the root (deepest first, root excluded) with their mtimes, taken
    /// before a delete changes them.
    fn parents_with_mtimes(&self, path: &Path) -> Vec<(PathBuf, SystemTime)> {
        if self.options.prune_grace.is_none() {
            return Vec::new();
        }
        path.ancestors()
            .skip(1)
            .take_while(|dir| dir.starts_with(&self.root) && *dir != self.root)
            .filter_map(|dir| Some((dir.to_owned(), fs::symlink_metadata(dir).ok()?.modified().ok()?)))
            .collect()
    }
}

/// Removes the directories a failed create made (`made`, shallowest first), deepest first and each only if
/// still empty: another request may have put a file in one meanwhile.
fn remove_new_dirs(made: &[PathBuf]) {
    for dir in made.iter().rev() {
        if fs::remove_dir(dir).is_err() {
            break;
        }
        tracing::debug!(dir = %dir.display(), "removed a directory made by a failed create");
    }
}

/// Removes the now-empty directories of `parents` (deepest first), stopping at the first one that is not
/// empty or was modified (before the delete) within `grace`: carbon-cache may be about to create a file in a
/// directory it just made.
fn prune(parents: &[(PathBuf, SystemTime)], grace: Duration) {
    let now = SystemTime::now();
    for (dir, modified) in parents {
        if now.duration_since(*modified).unwrap_or_default() < grace {
            break;
        }
        match fs::remove_dir(dir) {
            Ok(()) => tracing::debug!(dir = %dir.display(), "removed empty directory"),
            Err(_) => break,
        }
    }
}

/// Whether a regular file is at `path`; a directory or other special file there is a 409.
fn exists(path: &Path) -> Result<bool, StoreError> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_file() => Ok(true),
        Ok(meta) if meta.is_symlink() => Err(StoreError::symlink(path)),
        Ok(_) => Err(in_the_way(path)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => Err(in_the_way(path)),
        Err(e) if e.kind() == io::ErrorKind::InvalidFilename => Err(StoreError::NameTooLong),
        Err(e) => Err(StoreError::failed(path.display().to_string(), e)),
    }
}

/// A path taken by something that is not what the metric needs (a directory or device where its file goes,
/// a file where a directory goes).
fn in_the_way(path: &Path) -> StoreError {
    StoreError::InTheWay { path: path.to_owned() }
}

/// What a request does with a metric's path (a file in the way of a directory means different things).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    Write,
}

/// Resolves `dirs` below `root` with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`: `ELOOP`/`EXDEV` if a
/// symbolic link (or `..`) is on the way. Falls back to an `lstat` walk on kernels without `openat2`.
fn beneath(root: &OwnedFd, dirs: &Path) -> io::Result<()> {
    use rustix::fs::{openat2, Mode, OFlags, ResolveFlags};
    let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
    loop {
        match openat2(root, dirs, flags, Mode::empty(), resolve) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(rustix::io::Errno::NOSYS) => {
                let root = fs::read_link(format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(root)))?;
                return lstat_walk(&root, dirs);
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// [`beneath`] by hand: `lstat` of each directory on the way, a symbolic link being `ELOOP`.
fn lstat_walk(root: &Path, dirs: &Path) -> io::Result<()> {
    let mut dir = root.to_owned();
    for part in dirs.components() {
        dir.push(part);
        let meta = fs::symlink_metadata(&dir)?;
        if meta.is_symlink() {
            return Err(io::Error::from_raw_os_error(rustix::io::Errno::LOOP.raw_os_error()));
        }
        if !meta.is_dir() {
            return Err(io::Error::from_raw_os_error(rustix::io::Errno::NOTDIR.raw_os_error()));
        }
    }
    Ok(())
}

/// Whether an error of `openat2`/`open(O_NOFOLLOW)` means a symbolic link was met.
fn is_symlink_error(e: &io::Error) -> bool {
    let code = e.raw_os_error();
    code == Some(rustix::io::Errno::LOOP.raw_os_error()) || code == Some(rustix::io::Errno::XDEV.raw_os_error())
}

fn stat_of(name: &MetricName, meta: &fs::Metadata, size: u64) -> MetricStat {
    MetricStat {
        name: name.as_str().to_owned(),
        size: size as i64,
        mode: go_file_mode(meta.mode()),
        mod_time: meta.mtime(),
        encoding: bucky_wire::ENCODING_IDENTITY,
        storage_version: None,
    }
}

fn check_precondition(if_match: Option<&IfMatch>, current: &[u8]) -> Result<(), StoreError> {
    match if_match {
        Some(m) if !m.matches(&etag_of(current)) => Err(StoreError::Changed),
        _ => Ok(()),
    }
}

/// Same length and same archives: the new content can be written over the old in place.
/// A compressed file on either side is never rewritten in place: its layout is not known.
fn same_layout(current: &[u8], src: &WhisperData, path: &Path) -> bool {
    let Some(src) = src.standard() else { return false };
    current.len() == src.as_bytes().len()
        && Header::parse(current, current.len() as u64, path)
            .map(|h| h.archives == src.header().archives)
            .unwrap_or(false)
}

/// Writes `new` over the locked file's `current` content (same length), only the blocks that differ.
fn rewrite_in_place(locked: &LockedFile, current: &[u8], new: &[u8]) -> Result<(), StoreError> {
    let changed: Vec<Range<usize>> = current
        .chunks(BLOCK)
        .zip(new.chunks(BLOCK))
        .enumerate()
        .filter(|(_, (old, new))| old != new)
        .map(|(i, (_, new))| i * BLOCK..i * BLOCK + new.len())
        .collect();
    reserve(locked.file(), locked.metadata(), &changed, locked.path())?;
    locked.write_ranges(new, changed).map_err(StoreError::whisper)
}

/// Before writing `ranges` into a file with holes (`--sparse`, or a sparse file of carbon's), allocates
/// their blocks, so that a full device refuses the whole write (507) before any byte of it lands: a write
/// into a hole can otherwise fail half-way, leaving some points written and, at a block boundary, half a
/// point. A file without holes needs no block to be rewritten in place, and is not checked. A filesystem
/// that cannot preallocate is written to as before.
fn reserve(file: &File, meta: &fs::Metadata, ranges: &[Range<usize>], path: &Path) -> Result<(), StoreError> {
    if meta.blocks().saturating_mul(512) >= meta.len() {
        return Ok(());
    }
    for range in ranges {
        let flags = rustix::fs::FallocateFlags::KEEP_SIZE;
        match rustix::fs::fallocate(file, flags, range.start as u64, range.len() as u64) {
            Ok(()) => {}
            Err(e) => {
                let err = io::Error::from(e);
                if matches!(err.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded) {
                    return Err(StoreError::io(path, err));
                }
                return Ok(()); // not supported here: the writes report their own errors
            }
        }
    }
    Ok(())
}

fn set_mtime(file: &File, unix_seconds: i64, path: &Path) -> Result<(), StoreError> {
    let Ok(seconds) = u64::try_from(unix_seconds) else {
        return Ok(());
    };
    let time = UNIX_EPOCH + Duration::from_secs(seconds);
    file.set_times(fs::FileTimes::new().set_modified(time).set_accessed(time))
        .map_err(|e| StoreError::writing(format!("set mtime of {}", path.display()), path, e))
}

/// A corrupt-buffer error re-labelled with the file it came from.
fn corrupt_at(err: whisper::Error, path: &Path) -> whisper::Error {
    match err {
        whisper::Error::Corrupt { reason, .. } => whisper::Error::Corrupt { path: path.to_owned(), reason },
        other => other,
    }
}

#[cfg(test)]
mod tests;
