//! What `/proc` says about this process: open descriptors (and what they are), the descriptor limit, the
//! resident memory, the thread count, and who holds a flock on a file (`/proc/locks`).
//!
//! Everything here reads small text files or directory listings and returns `None` / empty when `/proc` is
//! not there: a report with a gap is better than a watchdog that fails.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use serde::Serialize;

/// Open descriptors of this process, by kind.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Fds {
    /// How many are open.
    pub open: usize,
    /// The soft limit (`RLIMIT_NOFILE`), when known.
    pub limit: Option<u64>,
    /// Count by kind: `socket`, `pipe`, `anon_inode`, `file`, `dir`, `other`.
    pub by_kind: BTreeMap<String, usize>,
}

/// The targets of this process's open descriptors (`readlink /proc/self/fd/N`).
pub fn fd_targets() -> Vec<String> {
    let Ok(dir) = fs::read_dir("/proc/self/fd") else { return Vec::new() };
    dir.filter_map(|entry| entry.ok())
        .filter_map(|entry| fs::read_link(entry.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .collect()
}

/// The kind of a descriptor from its link target.
pub fn fd_kind(target: &str) -> &'static str {
    if target.starts_with("socket:") {
        "socket"
    } else if target.starts_with("pipe:") {
        "pipe"
    } else if target.starts_with("anon_inode:") {
        "anon_inode"
    } else if target.starts_with('/') {
        if Path::new(target).is_dir() {
            "dir"
        } else {
            "file"
        }
    } else {
        "other"
    }
}

/// Open descriptors now, with the limit.
pub fn fds() -> Fds {
    let targets = fd_targets();
    let mut by_kind = BTreeMap::new();
    for target in &targets {
        *by_kind.entry(fd_kind(target).to_owned()).or_insert(0) += 1;
    }
    Fds { open: targets.len(), limit: fd_limit(), by_kind }
}

/// How many descriptors are open (cheaper than [`fds`]: no `readlink`).
pub fn fd_count() -> Option<usize> {
    fs::read_dir("/proc/self/fd").ok().map(|dir| dir.count())
}

/// The soft `RLIMIT_NOFILE`.
pub fn fd_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

/// A field of `/proc/self/status` in kB (`VmRSS`, `VmHWM`), as bytes.
fn status_kb(field: &str) -> Option<u64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field) && l[field.len()..].starts_with(':'))?;
    let kb: u64 = line[field.len() + 1..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// Resident memory in bytes.
pub fn rss_bytes() -> Option<u64> {
    status_kb("VmRSS")
}

/// Peak resident memory in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    status_kb("VmHWM")
}

/// Threads of this process.
pub fn threads() -> Option<usize> {
    fs::read_dir("/proc/self/task").ok().map(|dir| dir.count())
}

/// A process holding a flock, from `/proc/locks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LockHolder {
    /// Its pid.
    pub pid: u32,
    /// Its command name (`/proc/PID/comm`), when visible.
    pub command: Option<String>,
    /// `READ` (shared) or `WRITE` (exclusive).
    pub access: String,
}

/// Who holds a flock on `path` now (empty when nobody, or when it cannot be seen).
pub fn flock_holders(path: &Path) -> Vec<LockHolder> {
    let Ok(meta) = fs::metadata(path) else { return Vec::new() };
    let Ok(locks) = fs::read_to_string("/proc/locks") else { return Vec::new() };
    let dev = meta.dev();
    let (major, minor) = (rustix::fs::major(dev), rustix::fs::minor(dev));
    holders_in(&locks, major, minor, meta.ino())
        .into_iter()
        .map(|(pid, access)| LockHolder { pid, command: command_of(pid), access })
        .collect()
}

/// The command name of `pid`.
pub fn command_of(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|c| c.trim_end().to_owned())
}

/// The `(pid, access)` of every granted FLOCK on device `major:minor`, inode `ino`, in `/proc/locks` text.
/// Lines look like `1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF`; a waiter's line has `->` after the
/// number and is skipped (it holds nothing). The device numbers are hexadecimal, the inode decimal.
pub(crate) fn holders_in(locks: &str, major: u32, minor: u32, ino: u64) -> Vec<(u32, String)> {
    let mut holders = Vec::new();
    for line in locks.lines() {
        let mut fields = line.split_whitespace();
        let _number = fields.next();
        let Some(kind) = fields.next() else { continue };
        if kind != "FLOCK" {
            continue;
        }
        let (Some(_advisory), Some(access), Some(pid), Some(file)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let mut parts = file.split(':');
        let (Some(maj), Some(min), Some(inode)) = (parts.next(), parts.next(), parts.next()) else { continue };
        let same = u32::from_str_radix(maj, 16).ok() == Some(major)
            && u32::from_str_radix(min, 16).ok() == Some(minor)
            && inode.parse::<u64>().ok() == Some(ino);
        if let (true, Ok(pid)) = (same, pid.parse::<u32>()) {
            holders.push((pid, access.to_owned()));
        }
    }
    holders
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_name_the_holders_of_one_file_only() {
        let text = "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF\n\
                    1: -> FLOCK  ADVISORY  WRITE 99 fd:01:5678 0 EOF\n\
                    2: FLOCK  ADVISORY  READ 77 fd:01:5678 0 EOF\n\
                    3: POSIX  ADVISORY  WRITE 55 fd:01:5678 0 EOF\n\
                    4: FLOCK  ADVISORY  WRITE 66 fd:02:5678 0 EOF\n\
                    5: FLOCK  ADVISORY  WRITE 88 fd:01:5679 0 EOF\n\
                    garbage\n";
        assert_eq!(holders_in(text, 0xfd, 1, 5678), vec![(1234, "WRITE".to_owned()), (77, "READ".to_owned())]);
    }

    #[test]
    fn a_flock_taken_here_is_seen_in_proc_locks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.wsp");
        let file = fs::File::create(&path).unwrap();
        assert!(flock_holders(&path).is_empty());
        rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).unwrap();
        let holders = flock_holders(&path);
        assert_eq!(holders.len(), 1, "{holders:?}");
        assert_eq!(holders[0].pid, std::process::id());
        assert_eq!(holders[0].access, "WRITE");
        assert!(holders[0].command.is_some());
    }

    #[test]
    fn descriptors_are_counted_by_kind() {
        let before = fds();
        let dir = tempfile::tempdir().unwrap();
        let _files: Vec<_> = (0..5).map(|i| fs::File::create(dir.path().join(i.to_string())).unwrap()).collect();
        let after = fds();
        assert!(
            after.by_kind.get("file").copied().unwrap_or(0) >= before.by_kind.get("file").copied().unwrap_or(0) + 5
        );
        assert!(after.limit.is_some());
        assert!(rss_bytes().unwrap() > 0);
    }
}
