//! Crash-safe file publication: write a temp file in the target's directory, fsync it, publish it with a
//! rename that never replaces an existing file (or one that does, when asked), and fsync the directory.
//!
//! Temp files are hidden (`.{name}.bucky-tmp.{owner}.{counter}.{nanos}`), so metric listings skip them, and
//! at most [`TEMP_NAME_MAX`] bytes long whatever the destination's name (its start is kept, up to 100
//! bytes). Their names record the process that made them ([`TempOwner`]), so that whoever finds one left
//! by a crash can tell, at once and for sure, that its maker is gone ([`temp_owner`], [`process_state`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

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
    loop {
        let path = fresh_temp_path(dest, TempOwner::current().as_ref());
        match make(&path) {
            Ok(made) => return Ok((path, made)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io(&path, e)),
        }
    }
}

/// The marker of temp names: a name holding it and starting with a dot is a temp file of this module.
pub const TEMP_MARKER: &str = ".bucky-tmp.";

/// Most bytes of the destination's name kept in a temp name. The rest of the name is at most
/// [`TEMP_NAME_MAX`] − this, so a temp name fits in the 255 bytes a file name may have, whatever the
/// destination's name.
const TEMP_STEM_MAX: usize = 100;

/// Longest temp name: a dot, [`TEMP_STEM_MAX`] bytes of the destination's name, the marker, the owner (pid,
/// start time and pid namespace, 10 + 20 + 16 digits and 2 dashes), a counter (20 digits) and nanoseconds
/// (8 hex digits) after dots.
pub const TEMP_NAME_MAX: usize = 1 + TEMP_STEM_MAX + TEMP_MARKER.len() + (10 + 1 + 20 + 1 + 16) + 1 + 20 + 1 + 8;

/// A fresh hidden name next to `dest`, recording `owner` as its maker:
/// `.{start of dest's name}.bucky-tmp.{pid}-{start}-{pidns:x}.{counter}.{nanos:x}`, or
/// `.{…}.bucky-tmp.{pid}.{counter}.{nanos:x}` without an owner (no `/proc`; the format of bucky before the
/// owner was recorded). It starts with a dot, never ends in `.wsp`, and is at most [`TEMP_NAME_MAX`] bytes.
pub fn fresh_temp_path(dest: &Path, owner: Option<&TempOwner>) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = dest.file_name().map(|n| n.to_string_lossy()).unwrap_or_default();
    let stem = &name[..floor_char_boundary(&name, TEMP_STEM_MAX)];
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    let file_name = match owner {
        Some(o) => format!(".{stem}{TEMP_MARKER}{}-{}-{:x}.{n}.{nanos:x}", o.pid, o.start, o.pid_ns),
        None => format!(".{stem}{TEMP_MARKER}{}.{n}.{nanos:x}", std::process::id()),
    };
    parent_dir(dest).join(file_name)
}

/// The largest index ≤ `max` that is a char boundary of `s`.
fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0)
}

/// The process that made a temp file, as its name records it. A pid alone does not tell a crashed
/// writer's leftover from a live writer's file (pids are reused; an agent in a container is pid 1 again
/// after every restart): the start time does, and the pid namespace says which processes that pid
/// numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TempOwner {
    /// Process id, in the namespace `pid_ns`.
    pub pid: u32,
    /// When the process started, in clock ticks after boot (`/proc/PID/stat` field 22): with `pid`, it
    /// names one process of one boot.
    pub start: u64,
    /// Inode number of the process's pid namespace (`/proc/self/ns/pid`).
    pub pid_ns: u64,
}

impl TempOwner {
    /// This process; `None` where `/proc` cannot tell (its temp names then record only the pid).
    pub fn current() -> Option<TempOwner> {
        static CURRENT: OnceLock<Option<TempOwner>> = OnceLock::new();
        *CURRENT.get_or_init(|| {
            let pid = std::process::id();
            let start = process_state(pid).ok()?.start;
            let pid_ns = fs::metadata("/proc/self/ns/pid").ok()?.ino();
            Some(TempOwner { pid, start, pid_ns })
        })
    }
}

/// The owner recorded in a temp file's name (see [`fresh_temp_path`]); `None` if the name is not a temp
/// name or does not record one (the older format, with a pid alone).
pub fn temp_owner(file_name: &str) -> Option<TempOwner> {
    if !file_name.starts_with('.') {
        return None;
    }
    // The last marker: the destination's name may hold the marker itself, the fields after ours never do.
    let (_, fields) = file_name.rsplit_once(TEMP_MARKER)?;
    let mut fields = fields.split('.');
    let (owner, n, nanos) = (fields.next()?, fields.next()?, fields.next()?);
    if fields.next().is_some() || !is_digits(n, 10) || !is_digits(nanos, 16) {
        return None;
    }
    let mut owner = owner.split('-');
    let (pid, start, pid_ns) = (owner.next()?, owner.next()?, owner.next()?);
    if owner.next().is_some() || !is_digits(pid, 10) || !is_digits(start, 10) || !is_digits(pid_ns, 16) {
        return None;
    }
    Some(TempOwner {
        pid: pid.parse().ok()?,
        start: start.parse().ok()?,
        pid_ns: u64::from_str_radix(pid_ns, 16).ok()?,
    })
}

/// Non-empty and only digits of `radix` (`parse` alone would take a leading `+`).
fn is_digits(s: &str, radix: u32) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_digit(radix))
}

/// What `/proc/PID/stat` says of a process of this pid namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessState {
    /// Its start time, in clock ticks after boot (see [`TempOwner::start`]).
    pub start: u64,
    /// It has exited and waits to be reaped (a zombie): it writes nothing any more.
    pub exited: bool,
}

/// The state of process `pid` from `/proc/PID/stat`. An error of kind `NotFound` means no such process
/// is visible (it is gone, or `/proc` hides it: see `hidepid`).
pub fn process_state(pid: u32) -> io::Result<ProcessState> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_proc_stat(&stat)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, format!("/proc/{pid}/stat: unexpected format")))
}

/// State and start time from the text of `/proc/PID/stat`: `pid (comm) state ppid … starttime …`, where
/// `comm` may hold spaces and parentheses, so the fields are counted from the last `)`.
fn parse_proc_stat(stat: &str) -> Option<ProcessState> {
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    // Field 3 is the state; the start time is field 22.
    let start: u64 = fields.nth(22 - 4)?.parse().ok()?;
    Some(ProcessState { start, exited: matches!(state, "Z" | "X" | "x") })
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

    fn names_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> =
            fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
    }

    #[test]
    fn a_destination_name_of_255_bytes_is_created_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        // 251 bytes of name (multi-byte characters across the cut) and `.wsp`: the longest file name.
        let name = format!("{}{}.wsp", "é".repeat(100), "x".repeat(51));
        assert_eq!(name.len(), 255);
        let dest = dir.path().join(&name);
        assert!(write_new_file(&dest, b"first", true).unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        // A replace keeping a backup whose name is as long.
        let backup = dir.path().join(format!("{}.bak", &name[..251]));
        let temp = TempFile::new_for(&dest).unwrap();
        assert!(temp.path().file_name().unwrap().len() <= TEMP_NAME_MAX);
        temp.write_content(b"second", false).unwrap();
        temp.publish_replace_keeping(&dest, Some(&backup)).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"second");
        assert_eq!(fs::read(&backup).unwrap(), b"first");
        let mut expected = vec![name, backup.file_name().unwrap().to_str().unwrap().to_owned()];
        expected.sort();
        assert_eq!(names_in(dir.path()), expected, "no temp file left");
    }

    #[test]
    fn temp_names_are_bounded_hidden_and_record_their_owner() {
        let widest = TempOwner { pid: u32::MAX, start: u64::MAX, pid_ns: u64::MAX };
        for name in ["m.wsp".to_owned(), "x".repeat(255), format!("a{}", "é".repeat(127)), "日本".repeat(42)] {
            for owner in [Some(&widest), TempOwner::current().as_ref(), None] {
                let path = fresh_temp_path(&Path::new("/store/dir").join(&name), owner);
                assert_eq!(path.parent().unwrap(), Path::new("/store/dir"));
                let temp = path.file_name().unwrap().to_str().unwrap();
                assert!(temp.len() <= TEMP_NAME_MAX && TEMP_NAME_MAX <= 255, "{} bytes: {temp}", temp.len());
                assert!(temp.starts_with('.') && temp.contains(TEMP_MARKER) && !temp.ends_with(".wsp"), "{temp}");
                let kept = &temp[1..temp.find(TEMP_MARKER).unwrap()];
                assert!(name.starts_with(kept) && kept.len() >= name.len().min(TEMP_STEM_MAX - 3), "{kept}");
                assert_eq!(temp_owner(temp).as_ref(), owner, "{temp}");
            }
        }
        let me = TempOwner::current().expect("/proc is mounted");
        assert_eq!(me.pid, std::process::id());
        // The destination's name may hold the marker; only the fields after the last one count.
        let tricky = fresh_temp_path(Path::new(".a.bucky-tmp.1-2-3.4.5"), Some(&me));
        assert_eq!(temp_owner(tricky.to_str().unwrap()), Some(me));
        for not_owned in [
            ".m.wsp.bucky-tmp.12.3.af",              // the format before owners were recorded
            "m.wsp.bucky-tmp.12-3-4.5.af",           // not hidden
            ".m.wsp.bucky-tmp.12-3-4.5.af.wsp",      // an extra field
            ".m.wsp.bucky-tmp.12-3-4-5.6.af",        // an extra owner field
            ".m.wsp.bucky-tmp.+12-3-4.5.af",         // a sign
            ".m.wsp.bucky-tmp.12-3-zz.5.af",         // not hex
            ".m.wsp.bucky-tmp.99999999999-3-4.5.af", // a pid beyond u32
            ".m.wsp.bucky-tmp.12-3-4.5.",            // no nanoseconds
            ".m.wsp",
        ] {
            assert_eq!(temp_owner(not_owned), None, "{not_owned}");
        }
        assert_eq!(temp_owner(".m.wsp.bucky-tmp.12-3-1f.5.af"), Some(TempOwner { pid: 12, start: 3, pid_ns: 31 }));
    }

    #[test]
    fn proc_stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (a) b (c) d) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 \
                    18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0\n";
        assert_eq!(parse_proc_stat(line), Some(ProcessState { start: 987654, exited: false }));
        assert_eq!(parse_proc_stat(&line.replace(") S ", ") Z ")), Some(ProcessState { start: 987654, exited: true }));
        assert_eq!(parse_proc_stat("4242 (truncated) S 1 2"), None);
        assert_eq!(parse_proc_stat(""), None);
    }

    #[test]
    fn process_state_tells_running_exited_and_reaped_processes() {
        let me = TempOwner::current().unwrap();
        assert_eq!(process_state(me.pid).unwrap(), ProcessState { start: me.start, exited: false });
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let start = process_state(pid).unwrap().start;
        assert!(start >= me.start);
        // Not reaped yet: a zombie once it has exited.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while process_state(pid).unwrap() != (ProcessState { start, exited: true }) {
            assert!(std::time::Instant::now() < deadline, "`true` never exited");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        child.wait().unwrap();
        assert_eq!(process_state(pid).unwrap_err().kind(), io::ErrorKind::NotFound);
    }
}
