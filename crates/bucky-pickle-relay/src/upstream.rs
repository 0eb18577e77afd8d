//! The relay writer: one TCP connection to RELAY, batched writes, reconnects with backoff, and replay.
//!
//! A successful `write` only means the kernel took the bytes: if the relay dies, what sat in its socket
//! buffers is gone. So the writer keeps the most recently written lines (up to `--replay-bytes`) and,
//! after any connection failure, writes them again on the new connection before anything new. Graphite
//! points are idempotent (the same timestamp and value overwrite themselves), so a replay can only
//! duplicate, never corrupt. At shutdown the writer half-closes the connection and waits for the relay to
//! close its side, which proves every byte was read; if that fails it reconnects and replays.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio::time::{timeout, Instant};
use tracing::{debug, error, info, warn};

use crate::queue::Batch;
use crate::stats::Stats;

/// Coalesce queued batches into writes of about this many bytes.
const WRITE_BYTES: usize = 256 * 1024;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

pub(crate) struct Upstream {
    addr: String,
    send_timeout: Duration,
    replay_cap: usize,
    stats: Arc<Stats>,
    conn: Option<TcpStream>,
    connected_before: bool,
    /// Batches written most recently (room already given back), oldest first.
    replay: VecDeque<Batch>,
    replay_bytes: usize,
    /// The connection that carried `replay` failed: resend it before anything new.
    stale: bool,
    backoff: Duration,
    /// Turns true once every producer is done; from then on the writer has `send_timeout` to finish.
    draining: watch::Receiver<bool>,
    deadline: Option<Instant>,
}

impl Upstream {
    pub(crate) fn new(
        addr: String,
        send_timeout: Duration,
        replay_cap: usize,
        stats: Arc<Stats>,
        draining: watch::Receiver<bool>,
    ) -> Self {
        Upstream {
            addr,
            send_timeout,
            replay_cap,
            stats,
            conn: None,
            connected_before: false,
            replay: VecDeque::new(),
            replay_bytes: 0,
            stale: false,
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

    /// Writes everything queued until every producer is gone, then closes cleanly.
    pub(crate) async fn run(mut self, mut rx: mpsc::UnboundedReceiver<Batch>) {
        let mut group: Vec<Batch> = Vec::new();
        let mut out: Vec<u8> = Vec::with_capacity(WRITE_BYTES);
        loop {
            let next = tokio::select! {
                b = rx.recv() => b,
                // Idle with a dead connection: reconnect and replay now, not at the next batch.
                () = peer_gone(self.conn.as_ref()) => {
                    self.lost_connection(&io::Error::new(io::ErrorKind::ConnectionAborted, "relay closed the connection"));
                    if !self.connect().await {
                        self.give_up(&mut rx, &mut group).await;
                        return;
                    }
                    continue;
                }
            };
            let Some(first) = next else { break };
            out.clear();
            out.extend_from_slice(&first.lines);
            group.push(first);
            while out.len() < WRITE_BYTES {
                let Ok(b) = rx.try_recv() else { break };
                out.extend_from_slice(&b.lines);
                group.push(b);
            }
            if !self.deliver(&out).await {
                self.give_up(&mut rx, &mut group).await;
                return;
            }
            for b in group.drain(..) {
                Stats::add(&self.stats.metrics_sent, b.metrics());
                Stats::sub(&self.stats.queued, b.metrics());
                self.remember(b);
            }
            if out.capacity() > 4 * WRITE_BYTES {
                out = Vec::with_capacity(WRITE_BYTES);
            }
        }
        self.finish().await;
    }

    /// The shutdown deadline passed without a relay: count everything still queued as dropped.
    async fn give_up(&mut self, rx: &mut mpsc::UnboundedReceiver<Batch>, group: &mut Vec<Batch>) {
        rx.close();
        let mut lost: u64 = group.drain(..).map(|b| u64::from(b.metrics())).sum();
        while let Some(b) = rx.recv().await {
            lost += u64::from(b.metrics());
        }
        Stats::add(&self.stats.metrics_dropped, lost);
        Stats::sub(&self.stats.queued, lost);
        error!(relay = %self.addr, lost, "relay unreachable at shutdown; queued metrics dropped");
    }

    fn remember(&mut self, mut b: Batch) {
        b.release();
        if self.replay_cap == 0 {
            return;
        }
        self.replay_bytes += b.lines.len();
        self.replay.push_back(b);
        while self.replay_bytes > self.replay_cap && self.replay.len() > 1 {
            if let Some(old) = self.replay.pop_front() {
                self.replay_bytes -= old.lines.len();
            }
        }
    }

    /// Writes `data`, reconnecting (and replaying) as often as needed; false once the shutdown deadline
    /// has passed without a relay.
    async fn deliver(&mut self, data: &[u8]) -> bool {
        loop {
            if self.conn.is_none() && !self.connect().await {
                return false;
            }
            match self.write(data).await {
                Ok(()) => return true,
                Err(e) => self.lost_connection(&e),
            }
        }
    }

    fn lost_connection(&mut self, e: &io::Error) {
        warn!(relay = %self.addr, cause = %e, replay = self.replay.len(), "relay connection lost; reconnecting");
        self.conn = None;
        self.stale = true;
    }

    async fn write(&mut self, data: &[u8]) -> io::Result<()> {
        let conn = self.conn.as_mut().ok_or_else(|| io::Error::from(io::ErrorKind::NotConnected))?;
        if peer_closed(conn) {
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, "relay closed the connection"));
        }
        match timeout(self.send_timeout, conn.write_all(data)).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out (--send-timeout)")),
        }
    }

    /// Connects (with backoff) and replays if the last connection failed; false once the shutdown
    /// deadline has passed.
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
                    self.conn = Some(conn);
                    self.backoff = BACKOFF_MIN;
                    if !self.stale || self.replay_all().await {
                        self.stale = false;
                        return true;
                    }
                    continue;
                }
                Ok(Err(e)) => {
                    warn!(relay = %self.addr, cause = %e, retry_in = ?self.backoff, "cannot connect to relay")
                }
                Err(_) => warn!(relay = %self.addr, retry_in = ?self.backoff, "connecting to relay timed out"),
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

    /// Writes the replay window on the fresh connection; false (connection dropped) on failure.
    async fn replay_all(&mut self) -> bool {
        let mut buf = Vec::with_capacity(self.replay_bytes);
        let mut lines = 0u64;
        for b in &self.replay {
            buf.extend_from_slice(&b.lines);
            lines += u64::from(b.count);
        }
        if buf.is_empty() {
            return true;
        }
        match self.write(&buf).await {
            Ok(()) => {
                Stats::add(&self.stats.metrics_replayed, lines);
                info!(relay = %self.addr, lines, "replayed the lines the lost connection may not have delivered");
                true
            }
            Err(e) => {
                self.lost_connection(&e);
                false
            }
        }
    }

    /// Half-closes and waits for the relay to close its side (it has then read everything); on failure
    /// reconnects and replays, until the shutdown deadline.
    async fn finish(&mut self) {
        loop {
            if self.conn.is_none() {
                if !self.stale || self.replay.is_empty() {
                    return;
                }
                if !self.connect().await {
                    error!(relay = %self.addr, lines = self.replay.len(), "relay unreachable at shutdown; the last lines written may not have arrived");
                    return;
                }
            }
            let Some(conn) = self.conn.as_mut() else { continue };
            let close = async {
                conn.shutdown().await?;
                let mut sink = [0u8; 4096];
                while conn.read(&mut sink).await? > 0 {}
                io::Result::Ok(())
            };
            match timeout(self.send_timeout, close).await {
                Ok(Ok(())) => {
                    debug!(relay = %self.addr, "relay closed its side: everything was read");
                    return;
                }
                Ok(Err(e)) => {
                    self.lost_connection(&e);
                    if self.expired() {
                        error!(relay = %self.addr, "relay failed at shutdown; the last lines written may not have arrived");
                        return;
                    }
                }
                Err(_) => {
                    warn!(relay = %self.addr, "relay did not close the connection within --send-timeout after ours");
                    return;
                }
            }
        }
    }
}

/// Resolves when the relay closes (or resets) `conn`; never without a connection.
async fn peer_gone(conn: Option<&TcpStream>) {
    let Some(conn) = conn else { return std::future::pending().await };
    loop {
        if conn.readable().await.is_err() || peer_closed(conn) {
            return;
        }
    }
}

/// True when the relay has closed (or reset) the connection; a relay never sends us data, so anything
/// readable is discarded.
fn peer_closed(conn: &TcpStream) -> bool {
    let mut buf = [0u8; 1024];
    loop {
        match conn.try_read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return false,
            Err(_) => return true,
        }
    }
}
