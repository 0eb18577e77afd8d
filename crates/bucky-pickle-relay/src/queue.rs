//! The bounded queue between the senders' connections and the relay writer.
//!
//! Bounded twice, by metrics (`--queue`) and by bytes (`--queue-bytes`): a batch (one pickle's lines)
//! holds permits of both semaphores until the writer has written it. When the queue is full, a connection
//! either waits for room, and so stops reading its socket (TCP pushes back to the sender), or, under
//! `--drop-when-full`, drops the batch and counts it. A batch larger than the whole bound takes the whole
//! bound, so it waits for an empty queue instead of deadlocking. When the shutdown grace is over, a
//! waiting connection enqueues its one decoded batch beyond the bound rather than lose it, and stops.

use std::sync::Arc;

use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::stats::Stats;

/// One pickle's lines (or one self-metrics sample), with the queue room it holds.
#[derive(Debug)]
pub(crate) struct Batch {
    pub(crate) lines: Vec<u8>,
    /// Number of lines.
    pub(crate) count: u32,
    /// Whether the lines are senders' metrics (counted in seen/sent/dropped/queued) or self-metrics.
    pub(crate) counted: bool,
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
}

impl Batch {
    /// Metrics this batch counts for.
    pub(crate) fn metrics(&self) -> u32 {
        if self.counted {
            self.count
        } else {
            0
        }
    }

    /// Gives the batch's room back to the queue (once written).
    pub(crate) fn release(&mut self) {
        self.permits = None;
    }

    /// Splits off the lines not complete within the first `at` bytes (the first of them cut at `at`,
    /// or starting there) into a batch of their own; `None` if every line is complete within `at`.
    /// The queue room stays with `self`.
    pub(crate) fn split_off_at_line(&mut self, at: usize) -> Option<Batch> {
        let at = at.min(self.lines.len());
        let cut = self.lines[..at].iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        if cut == self.lines.len() {
            return None;
        }
        let tail = self.lines.split_off(cut);
        // Lines end with '\n'; a final fragment without one would still be a line to deliver.
        let newlines = tail.iter().filter(|&&b| b == b'\n').count() + usize::from(tail.last() != Some(&b'\n'));
        let count = u32::try_from(newlines).unwrap_or(u32::MAX).min(self.count);
        self.count -= count;
        Some(Batch { lines: tail, count, counted: self.counted, permits: None })
    }
}

/// How a push ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pushed {
    Queued,
    /// Dropped (full, and the operator chose `--drop-when-full`); already counted.
    Dropped,
    /// The writer is gone.
    Closed,
}

/// The producers' side; cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct QueueTx {
    tx: mpsc::UnboundedSender<Batch>,
    metric_room: Arc<Semaphore>,
    byte_room: Arc<Semaphore>,
    metric_cap: u32,
    byte_cap: u32,
    drop_when_full: bool,
    stats: Arc<Stats>,
}

/// A queue holding at most `metric_cap` metrics and `byte_cap` bytes (each at least 1).
pub(crate) fn channel(
    metric_cap: u32,
    byte_cap: u32,
    drop_when_full: bool,
    stats: Arc<Stats>,
) -> (QueueTx, mpsc::UnboundedReceiver<Batch>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let metric_cap = metric_cap.max(1);
    let byte_cap = byte_cap.max(1);
    let q = QueueTx {
        tx,
        metric_room: Arc::new(Semaphore::new(metric_cap as usize)),
        byte_room: Arc::new(Semaphore::new(byte_cap as usize)),
        metric_cap,
        byte_cap,
        drop_when_full,
        stats,
    };
    (q, rx)
}

impl QueueTx {
    fn need(&self, lines: &[u8], count: u32) -> (u32, u32) {
        let bytes = u32::try_from(lines.len()).unwrap_or(u32::MAX);
        (count.clamp(1, self.metric_cap), bytes.clamp(1, self.byte_cap))
    }

    fn send(
        &self,
        lines: Vec<u8>,
        count: u32,
        counted: bool,
        permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    ) -> Pushed {
        let batch = Batch { lines, count, counted, permits };
        let metrics = batch.metrics();
        Stats::add(&self.stats.queued, metrics);
        match self.tx.send(batch) {
            Ok(()) => Pushed::Queued,
            Err(_) => {
                Stats::sub(&self.stats.queued, metrics);
                Pushed::Closed
            }
        }
    }

    fn try_permits(&self, m: u32, b: u32) -> Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)> {
        let pm = self.metric_room.clone().try_acquire_many_owned(m).ok()?;
        let pb = self.byte_room.clone().try_acquire_many_owned(b).ok()?;
        Some((pm, pb))
    }

    /// Queues a pickle's `count` lines: waits for room (back-pressure), or drops and counts them under
    /// `--drop-when-full`. Once `give_up` resolves (end of the shutdown grace) a waiting push enqueues
    /// beyond the bound instead.
    pub(crate) async fn push(&self, lines: Vec<u8>, count: u32, give_up: impl std::future::Future) -> Pushed {
        let (m, b) = self.need(&lines, count);
        if let Some(p) = self.try_permits(m, b) {
            return self.send(lines, count, true, Some(p));
        }
        if self.drop_when_full {
            Stats::add(&self.stats.metrics_dropped, count);
            return Pushed::Dropped;
        }
        let wait = async {
            // Always in this order (metrics, then bytes), so waiters never deadlock each other.
            let pm = self.metric_room.clone().acquire_many_owned(m).await.ok()?;
            let pb = self.byte_room.clone().acquire_many_owned(b).await.ok()?;
            Some((pm, pb))
        };
        tokio::select! {
            permits = wait => self.send(lines, count, true, permits),
            _ = give_up => self.send(lines, count, true, None),
        }
    }

    /// Queues self-metrics if there is room now (`force`: regardless); returns false when skipped.
    pub(crate) fn push_self(&self, lines: Vec<u8>, count: u32, force: bool) -> bool {
        let (m, b) = self.need(&lines, count);
        let permits = self.try_permits(m, b);
        if permits.is_none() && !force {
            return false;
        }
        self.send(lines, count, false, permits) == Pushed::Queued
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::sync::watch;

    fn never() -> std::future::Pending<()> {
        std::future::pending()
    }

    #[test]
    fn split_off_at_line_keeps_the_complete_lines() {
        let batch = || Batch { lines: b"a 1 1\nbb 2 2\nc 3 3\n".to_vec(), count: 3, counted: true, permits: None };
        let mut b = batch();
        let tail = b.split_off_at_line(8).unwrap();
        assert_eq!((b.lines.as_slice(), b.count), (&b"a 1 1\n"[..], 1));
        assert_eq!((tail.lines.as_slice(), tail.count, tail.counted), (&b"bb 2 2\nc 3 3\n"[..], 2, true));
        // Cut right after a newline: that line is complete.
        let mut b = batch();
        assert_eq!(b.split_off_at_line(13).unwrap().lines, b"c 3 3\n");
        assert_eq!(b.count, 2);
        // Nothing complete: everything goes.
        let mut b = batch();
        assert_eq!(b.split_off_at_line(0).unwrap().count, 3);
        assert_eq!((b.lines.len(), b.count), (0, 0));
        // Everything complete: nothing to split off.
        let mut b = batch();
        assert!(b.split_off_at_line(19).is_none());
        assert!(b.split_off_at_line(100).is_none());
        assert_eq!(b.count, 3);
    }

    #[tokio::test]
    async fn full_queue_waits_then_admits() {
        let stats = Arc::new(Stats::default());
        let (q, mut rx) = channel(10, 1000, false, stats.clone());
        assert_eq!(q.push(vec![b'x'; 10], 10, never()).await, Pushed::Queued);
        let q2 = q.clone();
        let waiting = tokio::spawn(async move { q2.push(vec![b'y'; 5], 5, never()).await });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "a full queue must hold the producer back");
        let mut first = rx.recv().await.unwrap();
        first.release();
        assert_eq!(waiting.await.unwrap(), Pushed::Queued);
        assert_eq!(stats.snapshot().queued, 15);
    }

    #[tokio::test]
    async fn drop_policy_counts() {
        let stats = Arc::new(Stats::default());
        let (q, _rx) = channel(10, 1000, true, stats.clone());
        assert_eq!(q.push(vec![b'x'; 10], 8, never()).await, Pushed::Queued);
        assert_eq!(q.push(vec![b'x'; 10], 3, never()).await, Pushed::Dropped);
        assert_eq!(stats.snapshot().metrics_dropped, 3);
        assert!(!q.push_self(b"s 1 2\n".to_vec(), 5, false), "no room for a sample");
    }

    #[tokio::test]
    async fn oversized_batch_takes_the_whole_bound() {
        let stats = Arc::new(Stats::default());
        let (q, mut rx) = channel(10, 100, false, stats);
        assert_eq!(q.push(vec![b'x'; 500], 50, never()).await, Pushed::Queued);
        assert_eq!(rx.recv().await.unwrap().count, 50);
    }

    #[tokio::test]
    async fn stop_releases_a_waiting_producer_beyond_the_bound() {
        let stats = Arc::new(Stats::default());
        let (q, mut rx) = channel(1, 10, false, stats);
        let (stop_tx, stop) = watch::channel(false);
        assert_eq!(q.push(vec![b'x'; 10], 1, never()).await, Pushed::Queued);
        let q2 = q.clone();
        let mut stop2 = stop.clone();
        let waiting = tokio::spawn(async move { q2.push(vec![b'y'; 3], 1, stop2.wait_for(|s| *s)).await });
        stop_tx.send(true).unwrap();
        assert_eq!(waiting.await.unwrap(), Pushed::Queued);
        assert_eq!(rx.recv().await.unwrap().lines, vec![b'x'; 10]);
        assert_eq!(rx.recv().await.unwrap().lines, vec![b'y'; 3]);
    }
}
