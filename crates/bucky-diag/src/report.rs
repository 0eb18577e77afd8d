//! Where the watchdog's reports and the state dumps go: straight to stderr with one `write(2)` per
//! report, and to `--diag-file` when given, never through the tracing subscriber (which takes locks and may
//! itself be what is stuck) and never blocking: when stderr is a full pipe the report to stderr is dropped
//! (and counted), the diag file still gets it.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rustix::event::{poll, PollFd, PollFlags};

/// Writes reports; cheap to clone.
#[derive(Clone, Debug)]
pub struct Reporter {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    stderr: bool,
    file: Option<Mutex<File>>,
    path: Option<PathBuf>,
    dropped: AtomicU64,
}

impl Reporter {
    /// Reports to stderr (when `stderr`) and appended to `diag_file` (created when missing).
    pub fn new(stderr: bool, diag_file: Option<&Path>) -> std::io::Result<Reporter> {
        let file = match diag_file {
            Some(path) => Some(Mutex::new(OpenOptions::new().create(true).append(true).open(path)?)),
            None => None,
        };
        let path = diag_file.map(Path::to_owned);
        Ok(Reporter { inner: Arc::new(Inner { stderr, file, path, dropped: AtomicU64::new(0) }) })
    }

    /// The diag file, when there is one.
    pub fn diag_file(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// Reports to stderr that could not be written at once (stderr full).
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Writes `text` (a newline is added when missing) to each destination.
    pub fn write(&self, text: &str) {
        let mut bytes = text.as_bytes().to_vec();
        if !bytes.ends_with(b"\n") {
            bytes.push(b'\n');
        }
        if self.inner.stderr && !write_now(&bytes) {
            self.inner.dropped.fetch_add(1, Ordering::Relaxed);
        }
        if let Some(file) = &self.inner.file {
            // Only the watchdog and the dump thread write here; a poisoned lock still holds a usable file.
            let mut file = file.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            let _ = file.write_all(&bytes);
        }
    }
}

/// Writes `bytes` to stderr with `write(2)` directly (no lock of Rust's `Stderr`), only as far as stderr
/// takes it without waiting; false when it took nothing.
fn write_now(bytes: &[u8]) -> bool {
    let stderr = std::io::stderr();
    let fd = stderr.as_fd();
    let mut rest = bytes;
    while !rest.is_empty() {
        let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
        match poll(&mut fds, Some(&rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 })) {
            Ok(1) if fds[0].revents().contains(PollFlags::OUT) => {}
            _ => return rest.len() < bytes.len(),
        }
        match rustix::io::write(fd, rest) {
            Ok(0) | Err(_) => return rest.len() < bytes.len(),
            Ok(n) => rest = &rest[n..],
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_are_appended_to_the_diag_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("diag.log");
        let reporter = Reporter::new(false, Some(&path)).unwrap();
        reporter.write("one");
        reporter.write("two\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo\n");
    }
}
