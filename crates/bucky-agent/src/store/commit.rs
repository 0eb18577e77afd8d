//! Group commit: new files, and heals of existing ones, are made durable in batches.
//!
//! Making one new file durable on its own costs two device flushes (its content, then its directory
//! entry): a few hundred to a thousand files per second on a real disk, whatever its bandwidth. The
//! committer is one thread that takes every request waiting when it becomes free (no timer: batches grow by
//! themselves under load, and a lone request waits for nobody), then
//!
//! 1. flushes the content of the whole batch at once (staged temp files, filled files, and the directories
//!    created for them),
//! 2. publishes each staged file with a no-replace link (a name already taken is reported back, so the
//!    caller heals into that file instead),
//! 3. flushes the new directory entries at once,
//!
//! and only then answers each request. The guarantees of a lone create are kept: a request is answered
//! only once its data (and for a create, its name) is on disk, and a file appears at its final path only
//! after its content was flushed, so a crash leaves it either absent or complete.
//!
//! How a batch is flushed is [`Flush`]: `syncfs(2)` once per filesystem and step (default), or `fsync(2)`
//! of every file and every directory touched (more flushes, still no waiting between requests).

use std::collections::BTreeMap;
use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

use whisper::durable::{parent_dir, sync_dir, TempFile};

use super::StoreError;

/// Most requests taken into one batch (each holds an open file until it is answered); the works of one
/// [`Committer::submit_many`] are never split, so callers submit at most this many at once.
pub(crate) const MAX_BATCH: usize = 1024;

/// How the committer makes a batch durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flush {
    /// `syncfs(2)` of each filesystem in the batch: one flush for all the content, one for all the names.
    /// It also writes out whatever else is dirty on that filesystem (as `sync` would). Needs Linux ≥ 5.8,
    /// where `syncfs` reports write-back errors.
    Syncfs,
    /// `fsync(2)` of every file of the batch, then of every directory that received a name: one flush per
    /// file and per directory, but nothing else on the filesystem is written out.
    Fsync,
}

impl Flush {
    /// `Syncfs` where it reports write-back errors (Linux ≥ 5.8), `Fsync` otherwise.
    pub fn detect() -> Flush {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        if syncfs_reports_errors(&release) {
            Flush::Syncfs
        } else {
            Flush::Fsync
        }
    }
}

/// Whether a kernel release string (`6.1.0-13-amd64`) is Linux 5.8 or later. Before 5.8, `syncfs` returned
/// success even when writing a file back had failed, which would turn an I/O error into a lost create.
fn syncfs_reports_errors(release: &str) -> bool {
    let mut parts = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = parts.next().and_then(|p| p.parse::<u32>().ok());
    let minor = parts.next().and_then(|p| p.parse::<u32>().ok());
    match (major, minor) {
        (Some(major), Some(minor)) => (major, minor) >= (5, 8),
        _ => false,
    }
}

/// What one request asks the committer to do.
pub(crate) enum Work {
    /// Make a staged file durable, then publish it at `dest` unless a file is there already.
    Publish { temp: TempFile, dest: PathBuf },
    /// Make what was written to `file` (at `path`) durable.
    Sync { file: File, path: PathBuf },
}

impl Work {
    fn file(&self) -> &File {
        match self {
            Work::Publish { temp, .. } => temp.file(),
            Work::Sync { file, .. } => file,
        }
    }

    fn path(&self) -> &Path {
        match self {
            Work::Publish { dest, .. } => dest,
            Work::Sync { path, .. } => path,
        }
    }
}

/// `Ok(true)`: done (published, or synced); `Ok(false)`: not published, a file is at the path.
pub(crate) type Answer = Result<bool, StoreError>;

struct Job {
    work: Work,
    /// The filesystem the file is on (one `syncfs` per filesystem and step).
    device: u64,
    reply: SyncSender<Answer>,
}

/// The handle of the committer thread, shared by every clone of a store. The thread starts on the first
/// request and ends when the last handle is dropped.
pub(crate) struct Committer {
    flush: Flush,
    /// Jobs go by the message: all the jobs of one [`Committer::submit_many`] are taken at once.
    sender: Mutex<Option<Sender<Vec<Job>>>>,
    /// Where each batch registers itself while it flushes (a hung fsync then shows in the watchdog).
    pub(crate) registry: Arc<std::sync::OnceLock<bucky_diag::Registry>>,
}

impl fmt::Debug for Committer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Committer").field("flush", &self.flush).finish_non_exhaustive()
    }
}

impl Committer {
    pub(crate) fn new(flush: Flush) -> Committer {
        Committer { flush, sender: Mutex::new(None), registry: Arc::default() }
    }

    /// Makes `temp` durable and links it at `dest` unless something exists there; `Ok(false)` (and the temp
    /// file removed) if something does. Blocks until the batch is on disk.
    pub(crate) fn publish(&self, temp: TempFile, dest: &Path) -> Result<bool, StoreError> {
        self.submit(Work::Publish { temp, dest: dest.to_owned() })
    }

    /// Makes the writes made through `file` durable. Blocks until the batch is on disk.
    pub(crate) fn sync(&self, file: File, path: &Path) -> Result<(), StoreError> {
        self.submit(Work::Sync { file, path: path.to_owned() }).map(|_| ())
    }

    fn submit(&self, work: Work) -> Answer {
        self.submit_many(vec![work]).pop().unwrap_or_else(|| Err(StoreError::failed("group commit", "no answer")))
    }

    /// Hands every work to the committer at once, then waits for all of them: they are committed together
    /// (in one batch, up to [`MAX_BATCH`]) rather than one flush round each. Returns the answers in order.
    pub(crate) fn submit_many(&self, works: Vec<Work>) -> Vec<Answer> {
        let mut answers: Vec<Result<Receiver<Answer>, StoreError>> = Vec::with_capacity(works.len());
        let mut jobs = Vec::with_capacity(works.len());
        for work in works {
            match work.file().metadata() {
                Ok(meta) => {
                    let (reply, answer) = mpsc::sync_channel(1);
                    jobs.push(Job { work, device: meta.dev(), reply });
                    answers.push(Ok(answer));
                }
                Err(e) => answers.push(Err(StoreError::io(work.path(), e))), // its temp file is removed here
            }
        }
        let failure = if jobs.is_empty() { None } else { self.send(jobs).err().map(|e| e.to_string()) };
        if let Some(op) = bucky_diag::current() {
            op.phase(bucky_diag::phase::COMMITTING);
        }
        answers
            .into_iter()
            .map(|answer| {
                answer?.recv().map_err(|_| {
                    let reason = failure.as_deref().unwrap_or("the committer thread stopped before answering");
                    StoreError::failed("group commit", reason)
                })?
            })
            .collect()
    }

    /// Hands `jobs` to the committer thread as one message (so they are taken into the same batch),
    /// starting the thread if it is not running (or died). On an error the jobs are dropped, and their
    /// requests see the committer gone.
    fn send(&self, jobs: Vec<Job>) -> Result<(), StoreError> {
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        let jobs = match sender.as_ref() {
            Some(running) => match running.send(jobs) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(jobs)) => {
                    tracing::error!("the group-commit thread had stopped; starting a new one");
                    jobs
                }
            },
            None => jobs,
        };
        let (tx, rx) = mpsc::channel();
        let flush = self.flush;
        let registry = Arc::clone(&self.registry);
        thread::Builder::new()
            .name("bucky-commit".into())
            .spawn(move || run(flush, &rx, registry.get()))
            .map_err(|e| StoreError::failed("start the group-commit thread", e))?;
        tx.send(jobs).map_err(|_| StoreError::failed("group commit", "the committer thread did not start"))?;
        *sender = Some(tx);
        Ok(())
    }
}

fn run(flush: Flush, jobs: &Receiver<Vec<Job>>, registry: Option<&bucky_diag::Registry>) {
    let mut pipeline = Pipeline::new(flush);
    loop {
        let mut batch = Vec::new();
        if pipeline.is_idle() {
            match jobs.recv() {
                Ok(first) => batch = first,
                Err(_) => return, // every store handle is gone and nothing is waiting
            }
        }
        // A message is never split: a batch can exceed MAX_BATCH by one message (a batch request's heals,
        // themselves taken MAX_BATCH at a time).
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(more) => batch.extend(more),
                Err(_) => break,
            }
        }
        let (size, started) = (batch.len(), std::time::Instant::now());
        let op = registry.map(|r| r.begin("group commit", format!("{size} requests")));
        if let Some(op) = &op {
            op.phase(bucky_diag::phase::COMMITTING);
        }
        let flushes = pipeline.step(batch);
        drop(op);
        tracing::trace!(size, flushes, ms = started.elapsed().as_secs_f64() * 1e3, "group commit");
    }
}

/// A request whose file was linked at its final path, waiting for the flush of that name.
struct Linked {
    reply: SyncSender<Answer>,
    device: u64,
    dir: PathBuf,
}

/// The committer's state between flushes. Each flush does two jobs at once: it makes the content of the
/// new batch durable, and the names linked after the previous flush. So a stream of requests costs one
/// flush per batch (with `Syncfs`), while each file still gets its content flushed before it is linked and
/// its name flushed before it is answered.
struct Pipeline {
    flush: Flush,
    linked: Vec<Linked>,
}

impl Pipeline {
    fn new(flush: Flush) -> Pipeline {
        Pipeline { flush, linked: Vec::new() }
    }

    /// Nothing is waiting for a flush.
    fn is_idle(&self) -> bool {
        self.linked.is_empty()
    }

    /// One flush (the content of `batch`, the names linked by the previous step), then: answers the
    /// requests whose names are now durable, answers the syncs of `batch`, and links its staged files (they
    /// are answered after the next step). Returns the flush calls made.
    fn step(&mut self, batch: Vec<Job>) -> usize {
        let linked = std::mem::take(&mut self.linked);
        let (content_failed, names_failed, flushes) = match self.flush {
            Flush::Syncfs => self.syncfs(&batch, &linked),
            Flush::Fsync => fsync(&batch, &linked),
        };
        for (waiting, failure) in linked.into_iter().zip(names_failed) {
            let answer = match failure {
                None => Ok(true),
                // The file is complete at its path, but it must not be reported durable.
                Some(e) => Err(StoreError::writing(format!("flush {}", waiting.dir.display()), &waiting.dir, e)),
            };
            let _ = waiting.reply.send(answer);
        }
        for (job, failure) in batch.into_iter().zip(content_failed) {
            if let Some(e) = failure {
                let path = job.work.path();
                let answer = Err(StoreError::writing(format!("flush {}", path.display()), path, e));
                answer_now(job, answer);
                continue;
            }
            let published = match &job.work {
                Work::Sync { .. } => Some(Ok(true)),
                Work::Publish { temp, dest } => match std::fs::hard_link(temp.path(), dest) {
                    Ok(()) => None,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Some(Ok(false)),
                    Err(e) => Some(Err(StoreError::io(dest, e))),
                },
            };
            match published {
                Some(answer) => answer_now(job, answer),
                None => {
                    let Job { work, device, reply } = job;
                    let dir = parent_dir(work.path());
                    drop(work); // unlinks the temp name; the file stays at its final path
                    self.linked.push(Linked { reply, device, dir });
                }
            }
        }
        flushes
    }

    /// One `syncfs` per filesystem that has content or names to flush.
    fn syncfs(&self, batch: &[Job], linked: &[Linked]) -> (Vec<Option<io::Error>>, Vec<Option<io::Error>>, usize) {
        let mut results: BTreeMap<u64, Option<io::Error>> = BTreeMap::new();
        for job in batch {
            results.entry(job.device).or_insert_with(|| rustix::fs::syncfs(job.work.file()).err().map(io::Error::from));
        }
        for waiting in linked {
            results.entry(waiting.device).or_insert_with(|| {
                File::open(&waiting.dir).and_then(|d| rustix::fs::syncfs(&d).map_err(io::Error::from)).err()
            });
        }
        let failure = |device: &u64| results.get(device).and_then(|e| e.as_ref().map(copy_error));
        let content = batch.iter().map(|job| failure(&job.device)).collect();
        let names = linked.iter().map(|waiting| failure(&waiting.device)).collect();
        (content, names, results.len())
    }
}

/// `fsync` of every file of `batch` and of every directory that received a name.
fn fsync(batch: &[Job], linked: &[Linked]) -> (Vec<Option<io::Error>>, Vec<Option<io::Error>>, usize) {
    let content: Vec<Option<io::Error>> = batch
        .iter()
        .map(|job| {
            let synced = match &job.work {
                Work::Publish { temp, .. } => temp.file().sync_all(),
                Work::Sync { file, .. } => file.sync_data(),
            };
            synced.err()
        })
        .collect();
    let mut dirs: BTreeMap<&Path, Option<io::Error>> = BTreeMap::new();
    for waiting in linked {
        dirs.entry(&waiting.dir).or_insert_with(|| sync_dir(&waiting.dir).err().map(os_error));
    }
    let names = linked.iter().map(|w| dirs.get(w.dir.as_path()).and_then(|e| e.as_ref().map(copy_error))).collect();
    let flushes = content.len() + dirs.len();
    (content, names, flushes)
}

/// Answers a request that is finished: its temp file (if any) is removed first, so that nothing of the
/// request is left on disk once it is answered.
fn answer_now(job: Job, answer: Answer) {
    let Job { work, reply, .. } = job;
    drop(work);
    let _ = reply.send(answer);
}

/// The I/O error of a whisper error (keeping its OS code: a full device must stay recognisable).
fn os_error(e: whisper::Error) -> io::Error {
    match e {
        whisper::Error::Io { cause, .. } => cause,
        other => io::Error::other(other.to_string()),
    }
}

/// The same error again, for each request of a batch that shares one failed flush.
fn copy_error(e: &io::Error) -> io::Error {
    match e.raw_os_error() {
        Some(code) => io::Error::from_raw_os_error(code),
        None => io::Error::new(e.kind(), e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_releases() {
        assert!(syncfs_reports_errors("6.1.0-13-amd64\n"));
        assert!(syncfs_reports_errors("5.8.0"));
        assert!(syncfs_reports_errors("5.10.102.1-microsoft-standard-WSL2"));
        assert!(!syncfs_reports_errors("5.7.19"));
        assert!(!syncfs_reports_errors("4.19.0-21-amd64"));
        assert!(!syncfs_reports_errors(""));
        assert!(!syncfs_reports_errors("garbage"));
    }

    fn staged(dir: &Path, name: &str, bytes: &[u8]) -> (Work, u64) {
        let dest = dir.join(name);
        let temp = TempFile::new_for(&dest).unwrap();
        temp.write_content(bytes, false).unwrap();
        let device = temp.file().metadata().unwrap().dev();
        (Work::Publish { temp, dest }, device)
    }

    /// Commits `works` as one batch and flushes until everything is answered; returns the answers in
    /// order and the flush calls made.
    fn batch(flush: Flush, works: Vec<(Work, u64)>) -> (Vec<Answer>, usize) {
        let (jobs, answers) = jobs(works);
        let mut pipeline = Pipeline::new(flush);
        let mut flushes = pipeline.step(jobs);
        while !pipeline.is_idle() {
            flushes += pipeline.step(Vec::new());
        }
        (answers.into_iter().map(|a| a.recv().unwrap()).collect(), flushes)
    }

    fn jobs(works: Vec<(Work, u64)>) -> (Vec<Job>, Vec<Receiver<Answer>>) {
        works
            .into_iter()
            .map(|(work, device)| {
                let (reply, answer) = mpsc::sync_channel(1);
                (Job { work, device, reply }, answer)
            })
            .unzip()
    }

    #[test]
    fn a_batch_is_published_with_one_flush_per_step_per_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let dirs = [dir.path().join("a"), dir.path().join("b")];
        for d in &dirs {
            std::fs::create_dir(d).unwrap();
        }
        let works: Vec<_> = (0..20).map(|i| staged(&dirs[i % 2], &format!("m{i}.wsp"), &[i as u8; 100])).collect();
        let (answers, flushes) = batch(Flush::Syncfs, works);
        assert!(answers.iter().all(|a| matches!(a, Ok(true))), "{answers:?}");
        assert_eq!(flushes, 2, "one syncfs for the content, one for the names");
        for i in 0..20 {
            assert_eq!(std::fs::read(dirs[i % 2].join(format!("m{i}.wsp"))).unwrap(), [i as u8; 100]);
        }
        for d in &dirs {
            assert_eq!(std::fs::read_dir(d).unwrap().count(), 10, "no temp file left in {}", d.display());
        }
    }

    #[test]
    fn fsync_mode_flushes_each_file_and_each_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("a")).unwrap();
        let mut works: Vec<_> = (0..3).map(|i| staged(&dir.path().join("a"), &format!("m{i}.wsp"), b"x")).collect();
        works.push(staged(dir.path(), "top.wsp", b"y"));
        let (answers, flushes) = batch(Flush::Fsync, works);
        assert!(answers.iter().all(|a| matches!(a, Ok(true))), "{answers:?}");
        assert_eq!(flushes, 4 + 2, "one fsync per file and per directory");
        assert_eq!(std::fs::read(dir.path().join("top.wsp")).unwrap(), b"y");
    }

    #[test]
    fn a_flush_carries_the_names_of_one_batch_and_the_content_of_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let (first, first_answers) = jobs((0..5).map(|i| staged(dir.path(), &format!("a{i}.wsp"), b"a")).collect());
        let (second, second_answers) = jobs((0..5).map(|i| staged(dir.path(), &format!("b{i}.wsp"), b"b")).collect());
        let mut pipeline = Pipeline::new(Flush::Syncfs);
        assert_eq!(pipeline.step(first), 1);
        // Linked (complete at their paths) but not answered: their names are not flushed yet.
        assert!(dir.path().join("a0.wsp").exists());
        assert!(first_answers.iter().all(|a| a.try_recv().is_err()));
        assert_eq!(pipeline.step(second), 1);
        assert!(first_answers.iter().all(|a| matches!(a.try_recv(), Ok(Ok(true)))));
        assert!(second_answers.iter().all(|a| a.try_recv().is_err()));
        assert_eq!(pipeline.step(Vec::new()), 1);
        assert!(second_answers.iter().all(|a| matches!(a.try_recv(), Ok(Ok(true)))));
        assert!(pipeline.is_idle());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 10, "no temp file left");
    }

    #[test]
    fn a_taken_name_is_reported_and_left_alone_while_the_rest_of_the_batch_publishes() {
        for flush in [Flush::Syncfs, Flush::Fsync] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("taken.wsp"), b"theirs").unwrap();
            let existing = File::open(dir.path().join("taken.wsp")).unwrap();
            let device = existing.metadata().unwrap().dev();
            let works = vec![
                staged(dir.path(), "taken.wsp", b"ours"),
                staged(dir.path(), "free.wsp", b"ours"),
                (Work::Sync { file: existing, path: dir.path().join("taken.wsp") }, device),
            ];
            let (answers, _) = batch(flush, works);
            assert!(matches!(answers[0], Ok(false)), "{flush:?}: {:?}", answers[0]);
            assert!(matches!(answers[1], Ok(true)), "{flush:?}: {:?}", answers[1]);
            assert!(matches!(answers[2], Ok(true)), "{flush:?}: {:?}", answers[2]);
            assert_eq!(std::fs::read(dir.path().join("taken.wsp")).unwrap(), b"theirs");
            assert_eq!(std::fs::read(dir.path().join("free.wsp")).unwrap(), b"ours");
            let mut names: Vec<_> =
                std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            names.sort();
            assert_eq!(names, ["free.wsp", "taken.wsp"], "{flush:?}: no temp file left");
        }
    }

    #[test]
    fn submit_many_answers_every_work_in_order() {
        for flush in [Flush::Syncfs, Flush::Fsync] {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("taken.wsp"), b"theirs").unwrap();
            let existing = std::fs::OpenOptions::new().write(true).open(dir.path().join("taken.wsp")).unwrap();
            let committer = Committer::new(flush);
            let works = vec![
                staged(dir.path(), "a.wsp", b"a").0,
                staged(dir.path(), "taken.wsp", b"ours").0,
                staged(dir.path(), "b.wsp", b"b").0,
                Work::Sync { file: existing, path: dir.path().join("taken.wsp") },
            ];
            let answers = committer.submit_many(works);
            assert!(matches!(answers[..], [Ok(true), Ok(false), Ok(true), Ok(true)]), "{flush:?}: {answers:?}");
            assert_eq!(std::fs::read(dir.path().join("a.wsp")).unwrap(), b"a");
            assert_eq!(std::fs::read(dir.path().join("b.wsp")).unwrap(), b"b");
            assert_eq!(std::fs::read(dir.path().join("taken.wsp")).unwrap(), b"theirs");
            assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3, "{flush:?}: no temp file left");
            assert!(committer.submit_many(Vec::new()).is_empty());
            // The single-work path goes through the same thread.
            let Work::Publish { temp, dest } = staged(dir.path(), "c.wsp", b"c").0 else { unreachable!() };
            assert!(committer.publish(temp, &dest).unwrap());
            assert_eq!(std::fs::read(&dest).unwrap(), b"c");
        }
    }

    #[test]
    fn a_missing_directory_fails_only_its_own_request() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("gone")).unwrap();
        let (temp_work, device) = staged(&dir.path().join("gone"), "m.wsp", b"x");
        // The destination's directory differs from the temp file's and does not exist.
        let Work::Publish { temp, .. } = temp_work else { unreachable!() };
        let works = vec![
            (Work::Publish { temp, dest: dir.path().join("nowhere/m.wsp") }, device),
            staged(dir.path(), "ok.wsp", b"y"),
        ];
        let (answers, _) = batch(Flush::Syncfs, works);
        assert!(matches!(answers[0], Err(StoreError::NotFound)), "{:?}", answers[0]);
        assert!(matches!(answers[1], Ok(true)), "{:?}", answers[1]);
        assert_eq!(std::fs::read_dir(dir.path().join("gone")).unwrap().count(), 0, "temp file removed");
    }
}
