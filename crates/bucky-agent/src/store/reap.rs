//! Closing deleted files off the request path.
//!
//! A DELETE is done once the name is unlinked: nobody can open the file any more, and the next scan no
//! longer lists it. The file itself is freed when its last descriptor closes, and that can be slow: the
//! filesystem truncates it, and on a disk mounted with `discard` (ext4 without a journal, for one) the
//! close waits for the discard of every freed extent — about a millisecond a file on a virtual disk,
//! most of the time a rebalance spent deleting. So the store unlinks while holding the file open, answers,
//! and hands the descriptor to a few reaper threads that close it. At most [`PENDING`] descriptors wait;
//! beyond that the request closes its own (so the open-file limit is never at risk), and every pending
//! one is closed when the agent exits.

use std::fs::File;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;

/// Most descriptors waiting to be closed.
const PENDING: usize = 1024;
/// Threads closing them: discards of several files overlap on the device.
const THREADS: usize = 4;

/// The reaper threads (started on first use).
#[derive(Debug, Default)]
pub(crate) struct Reaper {
    sender: Mutex<Option<SyncSender<File>>>,
    /// Where each close registers itself (a close stuck in a discard then shows in the watchdog).
    pub(crate) registry: Arc<std::sync::OnceLock<bucky_diag::Registry>>,
}

impl Reaper {
    /// Closes `file` in the background (or right here when the reaper is busy or cannot start).
    pub(crate) fn close(&self, file: File) {
        let mut sender = self.sender.lock().unwrap_or_else(PoisonError::into_inner);
        if sender.is_none() {
            *sender = start(&self.registry);
        }
        let Some(running) = sender.as_ref() else { return drop(file) };
        match running.try_send(file) {
            Ok(()) => {}
            Err(TrySendError::Full(file)) => {
                drop(sender);
                drop(file);
            }
            Err(TrySendError::Disconnected(file)) => {
                *sender = None; // the threads are gone: start new ones next time
                drop(sender);
                drop(file);
            }
        }
    }
}

fn start(registry: &Arc<std::sync::OnceLock<bucky_diag::Registry>>) -> Option<SyncSender<File>> {
    let (sender, receiver) = mpsc::sync_channel::<File>(PENDING);
    let receiver = Arc::new(Mutex::new(receiver));
    let mut started = 0;
    for _ in 0..THREADS {
        let (receiver, registry) = (Arc::clone(&receiver), Arc::clone(registry));
        match thread::Builder::new().name("bucky-reap".into()).spawn(move || reap(&receiver, registry.get())) {
            Ok(_) => started += 1,
            Err(e) => tracing::warn!(error = %e, "cannot start a reaper thread; deleted files are closed inline"),
        }
    }
    (started > 0).then_some(sender)
}

fn reap(receiver: &Mutex<Receiver<File>>, registry: Option<&bucky_diag::Registry>) {
    loop {
        let next = receiver.lock().unwrap_or_else(PoisonError::into_inner).recv();
        match next {
            Ok(file) => {
                let op = registry.map(|r| r.begin("reaper", "closing a deleted file"));
                if let Some(op) = &op {
                    op.phase("closing (the filesystem frees the file)");
                }
                drop(file);
            }
            Err(_) => return, // the store is gone
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd;
    use std::time::{Duration, Instant};

    use super::*;

    /// Whether descriptor `fd` of this process still refers to `path` (deleted or not).
    fn open_on(fd: i32, path: &std::path::Path) -> bool {
        std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .is_ok_and(|target| target.to_string_lossy().starts_with(&*path.to_string_lossy()))
    }

    #[test]
    fn deleted_files_are_closed_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let reaper = Reaper::default();
        let mut held = Vec::new();
        for i in 0..20 {
            let path = dir.path().join(format!("gone{i}.wsp"));
            std::fs::write(&path, [7u8; 4096]).unwrap();
            let file = File::open(&path).unwrap();
            std::fs::remove_file(&path).unwrap();
            held.push((file.as_raw_fd(), path));
            reaper.close(file);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while held.iter().any(|(fd, path)| open_on(*fd, path)) {
            assert!(Instant::now() < deadline, "the reaper never closed the files");
            thread::sleep(Duration::from_millis(10));
        }
    }
}
