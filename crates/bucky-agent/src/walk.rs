//! The parallel scan of the store that builds the metric list.
//!
//! Like buckyd's walk it skips hidden directories, non-regular files (symlinks are not followed) and names
//! not ending in `.wsp`; it also skips files and directories whose names cannot be addressed through the API
//! (a dot inside a part, control characters), since a name listed but not fetchable would only mislead
//! clients. Directories are read with `getdents64` into a reused buffer (no allocation per entry) and file
//! types come from the entries' `d_type`, so regular files are never `stat`ed. Each thread sorts what it
//! found and the sorted runs are merged, so the result comes out sorted without a serial sort.
//! Hidden temp files left by a crash in the middle of a create (`.<name>.bucky-tmp.*`) that are older than
//! [`STALE_TEMP_AGE`] are removed on the way.

use std::fs;
use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime};

use bucky_wire::MAX_NAME_LEN;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};

/// Size of the `getdents64` buffer of each thread.
const DIRENT_BUFFER: usize = 64 * 1024;

/// Age after which a leftover temp file is certainly not being written any more.
pub const STALE_TEMP_AGE: Duration = Duration::from_secs(3600);

/// What a scan found.
#[derive(Debug, Default)]
pub struct Scan {
    /// Metric names, sorted.
    pub names: Vec<Box<str>>,
    /// Directories read.
    pub dirs: u64,
    /// Entries skipped because their names cannot be metric names.
    pub unaddressable: u64,
    /// Directories or entries that could not be read.
    pub errors: u64,
    /// Stale temp files removed.
    pub stale_temps_removed: u64,
}

struct Job {
    dir: PathBuf,
    /// Metric name prefix of the directory's files, with the trailing dot (empty at the root).
    prefix: String,
}

struct Queue {
    jobs: Vec<Job>,
    busy: usize,
}

/// Scans `root` with `threads` threads.
pub fn scan(root: &Path, threads: usize) -> Scan {
    let queue = Mutex::new(Queue { jobs: vec![Job { dir: root.to_owned(), prefix: String::new() }], busy: 0 });
    let ready = Condvar::new();
    let parts: Vec<Scan> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(|| worker(&queue, &ready))).collect();
        workers.into_iter().map(|w| w.join().unwrap_or_else(|p| std::panic::resume_unwind(p))).collect()
    });
    let mut total = Scan::default();
    for part in parts {
        total.names = merge(std::mem::take(&mut total.names), part.names);
        total.dirs += part.dirs;
        total.unaddressable += part.unaddressable;
        total.errors += part.errors;
        total.stale_temps_removed += part.stale_temps_removed;
    }
    total
}

/// Merges two sorted lists.
fn merge(a: Vec<Box<str>>, b: Vec<Box<str>>) -> Vec<Box<str>> {
    if a.is_empty() {
        return b;
    }
    if b.is_empty() {
        return a;
    }
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut a, mut b) = (a.into_iter().peekable(), b.into_iter().peekable());
    while let (Some(x), Some(y)) = (a.peek(), b.peek()) {
        out.push(if x <= y { a.next() } else { b.next() }.expect("peeked"));
    }
    out.extend(a);
    out.extend(b);
    out
}

fn worker(queue: &Mutex<Queue>, ready: &Condvar) -> Scan {
    let mut found = Scan::default();
    let mut discovered = Vec::new();
    let mut buffer: Vec<u8> = Vec::with_capacity(DIRENT_BUFFER);
    loop {
        let job = {
            let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if let Some(job) = q.jobs.pop() {
                    q.busy += 1;
                    break Some(job);
                }
                if q.busy == 0 {
                    break None;
                }
                q = ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let Some(job) = job else {
            ready.notify_all();
            found.names.sort_unstable();
            return found;
        };
        read_dir(&job, &mut found, &mut discovered, buffer.spare_capacity_mut());
        let mut q = queue.lock().unwrap_or_else(|e| e.into_inner());
        let woke = discovered.len();
        q.jobs.append(&mut discovered);
        q.busy -= 1;
        let done = q.busy == 0 && q.jobs.is_empty();
        drop(q);
        if done || woke > 1 {
            ready.notify_all();
        } else if woke == 1 {
            ready.notify_one();
        }
    }
}

fn read_dir(job: &Job, found: &mut Scan, discovered: &mut Vec<Job>, buffer: &mut [MaybeUninit<u8>]) {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = match rustix::fs::open(&job.dir, flags, Mode::empty()) {
        Ok(dir) => dir,
        Err(e) => {
            tracing::warn!(dir = %job.dir.display(), error = %e, "cannot read directory; its metrics are not listed");
            found.errors += 1;
            return;
        }
    };
    found.dirs += 1;
    let mut entries = RawDir::new(&dir, buffer);
    while let Some(entry) = entries.next() {
        let entry = match entry {
            Ok(entry) => entry,
            Err(e) => {
                tracing::warn!(dir = %job.dir.display(), error = %e, "error reading directory; some metrics are not listed");
                found.errors += 1;
                break;
            }
        };
        let raw_name = entry.file_name();
        let Ok(name) = std::str::from_utf8(raw_name.to_bytes()) else {
            found.unaddressable += 1;
            continue;
        };
        if name.starts_with('.') {
            if name.contains(".bucky-tmp.") {
                remove_if_stale(&job.dir.join(name), found);
            }
            continue;
        }
        let kind = match entry.file_type() {
            // Filesystems without d_type: ask (without following symlinks).
            FileType::Unknown => rustix::fs::statat(&dir, raw_name, AtFlags::SYMLINK_NOFOLLOW)
                .map_or(FileType::Unknown, |st| FileType::from_raw_mode(st.st_mode)),
            kind => kind,
        };
        match kind {
            FileType::Directory if addressable_part(name) => {
                discovered.push(Job { dir: job.dir.join(name), prefix: format!("{}{name}.", job.prefix) });
            }
            FileType::Directory => found.unaddressable += 1,
            FileType::RegularFile => {
                let Some(stem) = name.strip_suffix(".wsp") else { continue };
                if addressable_part(stem) && job.prefix.len() + stem.len() <= MAX_NAME_LEN {
                    let mut metric = String::with_capacity(job.prefix.len() + stem.len());
                    metric.push_str(&job.prefix);
                    metric.push_str(stem);
                    found.names.push(metric.into_boxed_str());
                } else {
                    found.unaddressable += 1;
                }
            }
            _ => {}
        }
    }
}

/// A directory or file-stem name that can be one part of a metric name.
fn addressable_part(part: &str) -> bool {
    !part.is_empty() && !part.contains('.') && !part.chars().any(char::is_control)
}

fn remove_if_stale(path: &Path, found: &mut Scan) {
    let stale = fs::symlink_metadata(path)
        .and_then(|m| m.modified())
        .map(|t| SystemTime::now().duration_since(t).unwrap_or_default() > STALE_TEMP_AGE)
        .unwrap_or(false);
    if stale && fs::remove_file(path).is_ok() {
        tracing::info!(path = %path.display(), "removed a temp file left by an interrupted create");
        found.stale_temps_removed += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_finds_exactly_the_addressable_metrics() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for path in ["a/b/c.wsp", "a/d.wsp", "e.wsp", "a/b/f.wsp"] {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"").unwrap();
        }
        for path in [".hidden/x.wsp", "a/.y.wsp", "a/z.txt", "a.b/c.wsp", "a/b.c.wsp", "a/.m.wsp.bucky-tmp.1.2.3"] {
            let path = root.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"").unwrap();
        }
        std::os::unix::fs::symlink(root.join("e.wsp"), root.join("a/link.wsp")).unwrap();
        std::os::unix::fs::symlink(root.join("a"), root.join("linkdir")).unwrap();
        for threads in [1, 2, 4] {
            let found = scan(root, threads);
            let names: Vec<&str> = found.names.iter().map(|n| &**n).collect();
            assert_eq!(names, ["a.b.c", "a.b.f", "a.d", "e"], "{threads} threads");
            assert_eq!(found.unaddressable, 2);
        }
        // The fresh temp file is left alone.
        assert!(root.join("a/.m.wsp.bucky-tmp.1.2.3").exists());
    }

    #[test]
    fn missing_root_is_an_empty_scan() {
        let found = scan(Path::new("/nonexistent/bucky"), 2);
        assert!(found.names.is_empty());
        assert_eq!(found.errors, 1);
    }
}
