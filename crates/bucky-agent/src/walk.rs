//! The parallel scan of the store that builds the metric list.
//!
//! Like buckyd's walk it skips hidden directories, non-regular files (symlinks are not followed) and names
//! not ending in `.wsp`; it also skips files and directories whose names cannot be addressed through the API
//! (a dot inside a part, control characters), since a name listed but not fetchable would only mislead
//! clients. Directories are read with `getdents64` into a reused buffer (no allocation per entry) and file
//! types come from the entries' `d_type`, so regular files are never `stat`ed. Each thread sorts what it
//! found and the sorted runs are merged, so the result comes out sorted without a serial sort.
//!
//! Hidden temp files left by a crash in the middle of a create (`.<name>.bucky-tmp.*`) are removed on the
//! way: at once when the process that made one (recorded in its name, see [`whisper::durable::TempOwner`])
//! is gone, whether it was an earlier agent, including one that had this agent's pid, or a `bucky whisper`
//! command; otherwise (a live maker, a maker in another pid namespace, a name without one) once unchanged
//! for [`STALE_TEMP_AGE`].

use std::fs;
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bucky_wire::MAX_NAME_LEN;
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RawDir};
use rustix::io::Errno;
use rustix::process::Pid;
use whisper::durable::{self, TempOwner};

/// Size of the `getdents64` buffer of each thread.
const DIRENT_BUFFER: usize = 64 * 1024;

/// Time without a change after which a leftover temp file is certainly not being written any more. The
/// change time (ctime) counts, not the modification time: `--mtime` sets a temp file's mtime to the
/// upload's, which may be long past, before it is published.
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

/// How the scan judges temp files.
struct TempRules {
    /// This process (`None` without `/proc`: then only the age counts).
    me: Option<TempOwner>,
    /// See [`STALE_TEMP_AGE`].
    stale_after: Duration,
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
    scan_with(root, threads, STALE_TEMP_AGE)
}

/// [`scan`], removing temp files of live (or unknown) makers once unchanged for `stale_after`.
fn scan_with(root: &Path, threads: usize, stale_after: Duration) -> Scan {
    let rules = TempRules { me: TempOwner::current(), stale_after };
    let queue = Mutex::new(Queue { jobs: vec![Job { dir: root.to_owned(), prefix: String::new() }], busy: 0 });
    let ready = Condvar::new();
    let parts: Vec<Scan> = std::thread::scope(|s| {
        let workers: Vec<_> = (0..threads.max(1)).map(|_| s.spawn(|| worker(&queue, &ready, &rules))).collect();
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

fn worker(queue: &Mutex<Queue>, ready: &Condvar, rules: &TempRules) -> Scan {
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
        read_dir(&job, &mut found, &mut discovered, buffer.spare_capacity_mut(), rules);
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

fn read_dir(job: &Job, found: &mut Scan, discovered: &mut Vec<Job>, buffer: &mut [MaybeUninit<u8>], rules: &TempRules) {
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
            if name.contains(durable::TEMP_MARKER) {
                remove_if_dead(&job.dir.join(name), name, found, rules);
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
pub(crate) fn addressable_part(part: &str) -> bool {
    !part.is_empty() && !part.contains('.') && !part.chars().any(char::is_control)
}

/// Removes the temp file at `path` (named `name`) if its maker is gone, or if unchanged for long.
fn remove_if_dead(path: &Path, name: &str, found: &mut Scan, rules: &TempRules) {
    let gone = match (durable::temp_owner(name), &rules.me) {
        (Some(owner), Some(me)) => maker_gone(&owner, me),
        _ => None,
    };
    let reason = match gone {
        Some(reason) => reason,
        None => {
            let Ok(meta) = fs::symlink_metadata(path) else { return };
            let changed = UNIX_EPOCH
                + Duration::new(
                    u64::try_from(meta.ctime()).unwrap_or(0),
                    u32::try_from(meta.ctime_nsec()).unwrap_or(0),
                );
            if SystemTime::now().duration_since(changed).unwrap_or_default() <= rules.stale_after {
                return;
            }
            "unchanged for an hour"
        }
    };
    if fs::remove_file(path).is_ok() {
        tracing::info!(path = %path.display(), reason, "removed a temp file left by an interrupted create");
        found.stale_temps_removed += 1;
    }
}

/// Why the process that made a temp file is certainly gone, if it is: no process has its pid any more,
/// or one that started at another time (the pid was reused), or it has exited and waits to be reaped.
/// `None` when it may still be writing: it runs, or `/proc` hides it, or it belongs to another pid
/// namespace (where its pid means another process than here).
fn maker_gone(owner: &TempOwner, me: &TempOwner) -> Option<&'static str> {
    if owner.pid_ns != me.pid_ns || owner == me {
        return None;
    }
    if owner.pid == me.pid {
        return Some("made by an earlier process with this agent's pid");
    }
    let pid = Pid::from_raw(i32::try_from(owner.pid).ok()?)?;
    // kill(pid, 0) sees every process, even those `hidepid` hides in /proc (EPERM: it exists).
    if rustix::process::test_kill_process(pid) == Err(Errno::SRCH) {
        return Some("its process has exited");
    }
    match durable::process_state(owner.pid) {
        Ok(state) if state.start != owner.start => Some("its process has exited (a later process has its pid)"),
        Ok(state) if state.exited => Some("its process has exited"),
        _ => None,
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

    /// A `sleep 30` killed on drop, so a failing test leaves no process behind.
    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn start() -> Sleeper {
            Sleeper(std::process::Command::new("sleep").arg("30").spawn().expect("run sleep"))
        }

        /// The owner its temp files would record.
        fn owner(&self) -> TempOwner {
            let start = durable::process_state(self.0.id()).unwrap().start;
            TempOwner { pid: self.0.id(), start, ..TempOwner::current().unwrap() }
        }

        /// Kills it, SIGKILL as a crash would; with `reap`, also waits for it (its pid is then free).
        fn kill(&mut self, reap: bool) {
            self.0.kill().unwrap();
            if reap {
                self.0.wait().unwrap();
            } else {
                let deadline = std::time::Instant::now() + Duration::from_secs(20);
                while !durable::process_state(self.0.id()).unwrap().exited {
                    assert!(std::time::Instant::now() < deadline, "sleep did not die");
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    /// A fresh temp file in `dir` as `owner` would have made it.
    fn plant(dir: &Path, owner: Option<&TempOwner>) -> PathBuf {
        let path = durable::fresh_temp_path(&dir.join("m.wsp"), owner);
        fs::write(&path, b"partial").unwrap();
        path
    }

    #[test]
    fn a_temp_file_whose_maker_is_gone_is_removed_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let me = TempOwner::current().unwrap();
        // A writer killed and reaped: nobody has its pid.
        let mut killed = Sleeper::start();
        let killed_owner = killed.owner();
        killed.kill(true);
        // A writer killed but not reaped yet (a zombie).
        let mut zombie = Sleeper::start();
        let zombie_owner = zombie.owner();
        zombie.kill(false);
        // A live process with the pid, started at another time (the pid was reused).
        let live = Sleeper::start();
        let reused = TempOwner { start: live.owner().start + 1, ..live.owner() };
        // An earlier agent with this agent's pid (an agent in a container is pid 1 after every restart).
        let earlier_me = TempOwner { start: me.start - 1, ..me };
        let gone: Vec<PathBuf> =
            [killed_owner, zombie_owner, reused, earlier_me].iter().map(|o| plant(dir.path(), Some(o))).collect();
        // What may still be written: a live writer's, ours, one numbered in another pid namespace, one in the
        // older format without an owner.
        let kept = [
            plant(dir.path(), Some(&live.owner())),
            plant(dir.path(), Some(&me)),
            plant(dir.path(), Some(&TempOwner { pid_ns: me.pid_ns + 1, ..killed_owner })),
            plant(dir.path(), None),
        ];
        let found = scan(dir.path(), 2);
        assert_eq!(found.stale_temps_removed, 4);
        for path in &gone {
            assert!(!path.exists(), "{} kept", path.display());
        }
        for path in &kept {
            assert!(path.exists(), "{} removed", path.display());
        }
        // Once its writer is killed, the live writer's temp file goes too.
        drop(live);
        assert_eq!(scan(dir.path(), 1).stale_temps_removed, 1);
        assert!(!kept[0].exists() && kept[1].exists());
    }

    #[test]
    fn a_temp_file_of_a_live_maker_goes_once_unchanged_for_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let live = Sleeper::start();
        let path = plant(dir.path(), Some(&live.owner()));
        // --mtime dates a staged temp file back; its change time is what counts.
        let two_hours_ago = SystemTime::now() - Duration::from_secs(7200);
        fs::File::options().write(true).open(&path).unwrap().set_modified(two_hours_ago).unwrap();
        let old_format = plant(dir.path(), None);
        assert_eq!(scan(dir.path(), 1).stale_temps_removed, 0);
        assert!(path.exists() && old_format.exists());
        // A limit that both exceed (a file's change time cannot be set back).
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(scan_with(dir.path(), 1, Duration::from_millis(10)).stale_temps_removed, 2);
        assert!(!path.exists() && !old_format.exists());
    }

    #[test]
    fn missing_root_is_an_empty_scan() {
        let found = scan(Path::new("/nonexistent/bucky"), 2);
        assert!(found.names.is_empty());
        assert_eq!(found.errors, 1);
    }
}
