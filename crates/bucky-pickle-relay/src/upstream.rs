//! The relay writer: one TCP connection to RELAY, batched writes, reconnects with backoff, and replay.
//!
//! A successful `write` only means our kernel took the bytes. So the writer keeps what it wrote on the
//! connection (`sent`, up to `--replay-bytes`) with each batch's end offset in the connection's byte
//! stream, and samples how much of the stream the relay's TCP has acknowledged ([`sendq`]: after each
//! write, and every [`SAMPLE_EVERY`] while it waits for the socket or for work). When the connection
//! fails, [`Upstream::failed`] sorts what it wrote:
//!
//! * lines the kernel never took whole (the write failed before or inside them) go back to the front of
//!   `pending` as they are: the relay never had them, whatever the policy;
//! * complete lines are resent according to [`ReplayPolicy`]: under `unacked` those past the last
//!   acknowledged byte sampled while the queue was intact (after a write, while waiting, on a clean
//!   close or a timeout; never after a reset, which may purge the queue: an older sample only resends a
//!   little more, never misses anything); under `window` all that is kept; under `none` nothing. A line
//!   resent once is never resent again, so it reaches the relay at most twice.
//!
//! The new connection gets `pending` (replays first) before anything new from the queue. At shutdown the
//! writer half-closes the connection and waits for the relay to close its side, which proves every byte
//! was read; if that fails the same rules apply.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, timeout_at, Instant};
use tracing::{debug, error, info, warn};

use crate::queue::Batch;
use crate::sendq;
use crate::stats::Stats;
use crate::ReplayPolicy;

/// Coalesce queued batches into writes of about this many bytes.
const WRITE_BYTES: usize = 256 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);
/// How often the acknowledged offset is sampled while waiting (one ioctl): the staler the sample when a
/// connection fails, the more already-acknowledged lines are resent.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);

/// Lines to write: new from the queue, or a replay of lines written once already.
#[derive(Debug)]
struct Item {
    batch: Batch,
    /// A second copy: counted as replayed when written, and never resent again.
    replay: bool,
}

/// An item written (or being written) on the current connection.
#[derive(Debug)]
struct Sent {
    item: Item,
    /// Offset just past the item in the connection's byte stream.
    end: u64,
    /// Counted in the stats (sentMetrics or replayedMetrics) and its queue room given back.
    counted: bool,
}

impl Sent {
    fn start(&self) -> u64 {
        self.end - self.item.batch.lines.len() as u64
    }
}

/// The connection to the relay and how far its byte stream got.
struct Link {
    stream: TcpStream,
    /// Bytes the kernel took.
    written: u64,
    /// Bytes the relay's TCP acknowledged, as of the last sample.
    acked: u64,
    /// `--replay-bytes` already forced out lines not yet acknowledged (warned once per connection).
    overflowed: bool,
}

impl Link {
    fn new(stream: TcpStream) -> Self {
        Link { stream, written: 0, acked: 0, overflowed: false }
    }

    fn sample(&mut self) {
        if let Some(queued) = sendq::unacknowledged(&self.stream) {
            self.acked = self.acked.max(self.written.saturating_sub(queued));
        }
    }
}

pub(crate) struct Upstream {
    addr: String,
    send_timeout: Duration,
    policy: ReplayPolicy,
    replay_cap: usize,
    stats: Arc<Stats>,
    link: Option<Link>,
    connected_before: bool,
    /// To write before anything new from the queue, in order: replays, then lines never written whole.
    pending: VecDeque<Item>,
    /// Written on the current connection and possibly resent after a failure, oldest first.
    sent: VecDeque<Sent>,
    sent_bytes: usize,
    backoff: Duration,
    /// Turns true once every producer is done; from then on the writer has `send_timeout` to finish.
    draining: watch::Receiver<bool>,
    deadline: Option<Instant>,
}

impl Upstream {
    pub(crate) fn new(
        addr: String,
        send_timeout: Duration,
        policy: ReplayPolicy,
        replay_cap: usize,
        stats: Arc<Stats>,
        draining: watch::Receiver<bool>,
    ) -> Self {
        Upstream {
            addr,
            send_timeout,
            policy,
            replay_cap,
            stats,
            link: None,
            connected_before: false,
            pending: VecDeque::new(),
            sent: VecDeque::new(),
            sent_bytes: 0,
            backoff: BACKOFF_MIN,
            draining,
            deadline: None,
        }
    }

    /// The shutdown deadline, once draining started.
    fn deadline(&mut self) -> Option<Instant> {
        if self.deadline.is_none() && *self.draining.borrow() {
            self.deadline = Some(Instant::now() + self.send_timeout);
        }
        self.deadline
    }

    fn expired(&mut self) -> bool {
        self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    /// Whether idle time should be spent sampling acknowledgements (to drop acknowledged lines).
    fn sampling(&self) -> bool {
        self.policy == ReplayPolicy::Unacked && self.link.is_some() && !self.sent.is_empty()
    }

    /// Writes everything queued until every producer is gone, then closes cleanly.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Batch>) {
        let mut open = true;
        let mut out: Vec<u8> = Vec::with_capacity(WRITE_BYTES);
        loop {
            if self.pending.is_empty() && open {
                let sampling = self.sampling();
                let link = self.link.as_mut();
                tokio::select! {
                    b = rx.recv() => match b {
                        Some(b) => self.pending.push_back(Item { batch: b, replay: false }),
                        None => open = false,
                    },
                    // Idle with a dead connection: reconnect and replay now, not at the next batch.
                    e = peer_gone(link) => self.failed(&e),
                    () = tokio::time::sleep(SAMPLE_EVERY), if sampling => self.trim(),
                }
                continue;
            }
            if self.pending.is_empty() {
                // Every producer is done and everything is written.
                if self.finish().await {
                    return;
                }
                continue;
            }
            if self.link.is_none() && !self.connect().await {
                self.give_up(&mut rx).await;
                return;
            }
            self.write_some(&mut rx, &mut open, &mut out).await;
            if out.capacity() > 4 * WRITE_BYTES {
                out = Vec::with_capacity(WRITE_BYTES);
            }
        }
    }

    /// Writes the pending items, topped up from the queue, as one write of about [`WRITE_BYTES`].
    async fn write_some(&mut self, rx: &mut mpsc::UnboundedReceiver<Batch>, open: &mut bool, out: &mut Vec<u8>) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        out.clear();
        let first = self.sent.len();
        while out.len() < WRITE_BYTES {
            let item = match self.pending.pop_front() {
                Some(item) => item,
                None if *open => match rx.try_recv() {
                    Ok(b) => Item { batch: b, replay: false },
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        *open = false;
                        break;
                    }
                },
                None => break,
            };
            out.extend_from_slice(&item.batch.lines);
            self.sent_bytes += item.batch.lines.len();
            self.sent.push_back(Sent { item, end: link.written + out.len() as u64, counted: false });
        }
        match write_tracked(link, out, self.send_timeout).await {
            Ok(()) => {
                for s in self.sent.range_mut(first..) {
                    count(&self.stats, s);
                }
                self.trim();
            }
            Err(e) => self.failed(&e),
        }
    }

    /// Forgets what can no longer be resent: everything under `none`, replays (at most once),
    /// acknowledged lines under `unacked`, and the oldest beyond `--replay-bytes`.
    fn trim(&mut self) {
        let Some(link) = self.link.as_mut() else {
            return;
        };
        if self.policy == ReplayPolicy::None {
            self.sent.clear();
            self.sent_bytes = 0;
            return;
        }
        if self.policy == ReplayPolicy::Unacked {
            link.sample();
        }
        let acked = if self.policy == ReplayPolicy::Unacked { link.acked } else { 0 };
        let cap = self.replay_cap;
        let mut bytes = self.sent_bytes;
        self.sent.retain(|s| {
            let keep = !s.item.replay && s.end > acked;
            if !keep {
                bytes -= s.item.batch.lines.len();
            }
            keep
        });
        while bytes > cap && (cap == 0 || self.sent.len() > 1) {
            let Some(old) = self.sent.pop_front() else {
                break;
            };
            bytes -= old.item.batch.lines.len();
            if self.policy == ReplayPolicy::Unacked && !link.overflowed {
                link.overflowed = true;
                warn!(relay = %self.addr, replay_bytes = cap, "more unacknowledged data than --replay-bytes: lines beyond it are not resent if the connection fails (raise --replay-bytes above the socket send buffer)");
            }
        }
        self.sent_bytes = bytes;
    }

    /// The connection failed: drop it and queue, in front of anything new, what the policy resends and
    /// what the kernel never took whole.
    fn failed(&mut self, e: &io::Error) {
        let Some(link) = self.link.take() else { return };
        let (written, acked) = (link.written, link.acked);
        // Complete lines at or below this offset are not resent.
        let keep_from = match self.policy {
            ReplayPolicy::Unacked => acked,
            ReplayPolicy::Window => 0,
            ReplayPolicy::None => written,
        };
        let mut again: Vec<Item> = Vec::new();
        let mut unwritten: Vec<Item> = Vec::new();
        // Replays past `keep_from`: not sent a third time (each line reaches the relay at most twice).
        let mut not_again = 0u64;
        for mut s in std::mem::take(&mut self.sent) {
            let start = s.start();
            if start >= written {
                unwritten.push(s.item);
                continue;
            }
            if s.end > written {
                // Cut by the failure: the complete lines were written, the rest never arrived whole.
                if let Some(rest) = s.item.batch.split_off_at_line((written - start) as usize) {
                    unwritten.push(Item { batch: rest, replay: s.item.replay });
                }
                s.end = start + s.item.batch.lines.len() as u64;
            }
            count(&self.stats, &mut s);
            if s.end <= keep_from || s.item.batch.count == 0 {
                continue;
            }
            if s.item.replay {
                not_again += lines_past(&s, keep_from);
                continue;
            }
            let mut batch = s.item.batch;
            if start < keep_from {
                match batch.split_off_at_line((keep_from - start) as usize) {
                    Some(rest) => batch = rest,
                    None => continue,
                }
            }
            again.push(Item { batch, replay: true });
        }
        self.sent_bytes = 0;
        let lines: u64 = again.iter().map(|i| u64::from(i.batch.count)).sum();
        for item in again.into_iter().chain(unwritten).rev() {
            self.pending.push_front(item);
        }
        warn!(relay = %self.addr, cause = %e, written, acknowledged = acked, replay = lines, policy = ?self.policy, "relay connection lost; reconnecting");
        if not_again > 0 {
            warn!(relay = %self.addr, lines = not_again, "lines already resent once were not acknowledged again; not resending them a third time (they may be lost)");
        }
    }

    /// The shutdown deadline passed without a relay: count everything not written yet as dropped.
    async fn give_up(&mut self, rx: &mut mpsc::UnboundedReceiver<Batch>) {
        rx.close();
        let mut lost = 0u64;
        let mut replays = 0u64;
        for item in self.pending.drain(..) {
            if item.replay {
                replays += u64::from(item.batch.count);
            } else {
                lost += u64::from(item.batch.metrics());
            }
        }
        while let Some(b) = rx.recv().await {
            lost += u64::from(b.metrics());
        }
        Stats::add(&self.stats.metrics_dropped, lost);
        Stats::sub(&self.stats.queued, lost);
        error!(relay = %self.addr, lost, not_replayed = replays, "relay unreachable at shutdown; queued metrics dropped, and lines to resend may not have arrived");
    }

    /// Connects, with backoff; false once the shutdown deadline has passed.
    async fn connect(&mut self) -> bool {
        loop {
            if self.expired() {
                return false;
            }
            match timeout(self.send_timeout, TcpStream::connect(&self.addr)).await {
                Ok(Ok(conn)) => {
                    let _ = conn.set_nodelay(true);
                    if self.connected_before {
                        Stats::add(&self.stats.relay_reconnects, 1u64);
                        info!(relay = %self.addr, "reconnected to relay");
                    } else {
                        info!(relay = %self.addr, "connected to relay");
                    }
                    self.connected_before = true;
                    self.link = Some(Link::new(conn));
                    self.backoff = BACKOFF_MIN;
                    return true;
                }
                Ok(Err(e)) => {
                    warn!(relay = %self.addr, cause = %e, retry_in = ?self.backoff, "cannot connect to relay")
                }
                Err(_) => {
                    warn!(relay = %self.addr, retry_in = ?self.backoff, "connecting to relay timed out")
                }
            }
            let mut wake = self.draining.clone();
            let sleep = match self.deadline() {
                Some(d) => self.backoff.min(d.saturating_duration_since(Instant::now())),
                None => self.backoff,
            };
            tokio::select! {
                _ = tokio::time::sleep(sleep) => {}
                // Draining started: recompute the deadline now rather than after a long backoff.
                _ = wake.wait_for(|d| *d), if self.deadline.is_none() => {}
            }
            self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
        }
    }

    /// Half-closes and waits for the relay to close its side (it has then read everything). True when
    /// done; false when the connection failed and left lines to resend.
    async fn finish(&mut self) -> bool {
        let Some(link) = self.link.as_mut() else {
            return true;
        };
        link.sample();
        let stream = &mut link.stream;
        let close = async {
            stream.shutdown().await?;
            let mut sink = [0u8; 4096];
            while stream.read(&mut sink).await? > 0 {}
            io::Result::Ok(())
        };
        match timeout(self.send_timeout, close).await {
            Ok(Ok(())) => {
                debug!(relay = %self.addr, "relay closed its side: everything was read");
                true
            }
            Ok(Err(e)) => {
                self.failed(&e);
                if self.pending.is_empty() {
                    return true;
                }
                if self.expired() {
                    let lines: u64 = self.pending.iter().map(|i| u64::from(i.batch.count)).sum();
                    error!(relay = %self.addr, lines, "relay failed at shutdown; the last lines written may not have arrived");
                    return true;
                }
                false
            }
            Err(_) => {
                warn!(relay = %self.addr, "relay did not close the connection within --send-timeout after ours");
                true
            }
        }
    }
}

/// Lines of `s` that end past byte `from` of the connection.
fn lines_past(s: &Sent, from: u64) -> u64 {
    let skip = usize::try_from(from.saturating_sub(s.start())).unwrap_or(usize::MAX);
    let lines = &s.item.batch.lines;
    let done = lines[..skip.min(lines.len())].iter().filter(|&&b| b == b'\n').count();
    u64::from(s.item.batch.count).saturating_sub(done as u64)
}

/// Counts a written item once: new lines as sent (giving their queue room back), replays as replayed.
fn count(stats: &Stats, s: &mut Sent) {
    if s.counted {
        return;
    }
    s.counted = true;
    if s.item.replay {
        Stats::add(&stats.metrics_replayed, s.item.batch.count);
    } else {
        Stats::add(&stats.metrics_sent, s.item.batch.metrics());
        Stats::sub(&stats.queued, s.item.batch.metrics());
    }
    s.item.batch.release();
}

/// Writes all of `data` within `send_timeout`, advancing `link.written` as the kernel takes it and
/// sampling the acknowledged offset after each write and every [`SAMPLE_EVERY`] while blocked.
async fn write_tracked(link: &mut Link, data: &[u8], send_timeout: Duration) -> io::Result<()> {
    if let Some(e) = peer_closed(link) {
        return Err(e);
    }
    let deadline = Instant::now() + send_timeout;
    let mut off = 0;
    while off < data.len() {
        match timeout_at(deadline.min(Instant::now() + SAMPLE_EVERY), link.stream.writable()).await {
            Ok(ready) => ready?,
            Err(_) if Instant::now() >= deadline => {
                // The connection is alive, only stuck: what it acknowledged so far is exact.
                link.sample();
                return Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out (--send-timeout)"));
            }
            Err(_) => {
                link.sample();
                continue;
            }
        }
        match link.stream.try_write(&data[off..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                off += n;
                link.written += n as u64;
                link.sample();
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Resolves when the relay closes (or resets) the connection; never without one.
async fn peer_gone(link: Option<&mut Link>) -> io::Error {
    let Some(link) = link else {
        return std::future::pending().await;
    };
    loop {
        if let Err(e) = link.stream.readable().await {
            return e;
        }
        if let Some(e) = peer_closed(link) {
            return e;
        }
    }
}

/// Whether the relay has closed (or reset) the connection; a relay never sends us data, so anything
/// readable is discarded. A clean close (FIN) acknowledges everything the relay received, and the queue
/// is intact: the acknowledged offset is sampled then. After a reset it is not (the kernel may have
/// purged the queue): the last sample stands.
fn peer_closed(link: &mut Link) -> Option<io::Error> {
    let mut buf = [0u8; 1024];
    loop {
        match link.stream.try_read(&mut buf) {
            Ok(0) => {
                link.sample();
                return Some(io::Error::new(io::ErrorKind::ConnectionAborted, "relay closed the connection"));
            }
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => return Some(e),
        }
    }
}
