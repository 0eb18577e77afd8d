//! The listener: accept loop, one task per sender connection, the self-metrics reporter, and the
//! shutdown sequence (stop reading → final sample → drain the queue → close the relay connection).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio::time::{timeout_at, Instant};
use tracing::{debug, error, info, warn};

use crate::line::write_pickle;
use crate::pickle::Decoder;
use crate::queue::{self, Pushed, QueueTx};
use crate::stats::{self, Stats, Summary};
use crate::upstream::Upstream;
use crate::Config;

/// Read buffer per connection.
const READ_BUFFER: usize = 16 * 1024;
/// At shutdown, a connection whose sender pauses this long is closed (what it sent before is taken).
const DRAIN_IDLE: Duration = Duration::from_millis(250);
/// Buffers grown past this by one large pickle are released afterwards.
const KEEP_BUFFER: usize = 1024 * 1024;

/// Runs the relay on `listener` until `shutdown` resolves, then flushes and returns the final counters.
pub async fn run(listener: TcpListener, config: Config, shutdown: impl Future) -> Summary {
    run_with(listener, config, shutdown, Counters::default()).await
}

/// Live counters of a running relay (for embedding and tests); see [`run_with`].
#[derive(Debug, Clone, Default)]
pub struct Counters(Arc<Stats>);

impl Counters {
    /// The counters now.
    pub fn snapshot(&self) -> Summary {
        self.0.snapshot()
    }
}

/// [`run`], updating `counters` as it goes.
pub async fn run_with(listener: TcpListener, config: Config, shutdown: impl Future, counters: Counters) -> Summary {
    let config = Arc::new(config);
    let stats = counters.0;
    let (queue, rx) = queue::channel(config.queue, config.queue_bytes, config.drop_when_full, stats.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let (drain_tx, drain_rx) = watch::channel(false);
    let upstream = Upstream::new(
        config.relay.clone(),
        config.send_timeout,
        config.replay,
        config.replay_bytes,
        stats.clone(),
        drain_rx,
    );
    let upstream = tokio::spawn(upstream.run(rx));
    let reporter = config.interval.map(|every| {
        let diagnostics = config.diagnostics.clone();
        tokio::spawn(report(queue.clone(), stats.clone(), config.prefix.clone(), every, stop_rx.clone(), diagnostics))
    });
    let local = listener.local_addr().ok();
    info!(listen = ?local, relay = %config.relay, "bucky-pickle-relay started");

    let slots = Arc::new(Semaphore::new(config.max_connections.max(1)));
    let limiter = Arc::new(LogLimiter::default());
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => match slots.clone().try_acquire_owned() {
                    Ok(slot) => {
                        let conn = Conn {
                            peer,
                            config: config.clone(),
                            stats: stats.clone(),
                            queue: queue.clone(),
                            stop: stop_rx.clone(),
                            limiter: limiter.clone(),
                            _slot: slot,
                        };
                        conns.spawn(conn.serve(socket));
                    }
                    Err(_) => {
                        Stats::add(&stats.connections_refused, 1u64);
                        if limiter.allow() {
                            warn!(%peer, max = config.max_connections, "too many connections (--max-connections); refused");
                        }
                    }
                },
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    error!(cause = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    info!("shutting down: finishing frames in progress, then flushing the queue");
    let _ = stop_tx.send(true);
    while conns.join_next().await.is_some() {}
    if let Some(r) = reporter {
        let _ = r.await;
    }
    drop(queue);
    let _ = drain_tx.send(true);
    if let Err(e) = upstream.await {
        error!(cause = %e, "relay writer failed");
    }
    let summary = stats.snapshot();
    info!(?summary, "bucky-pickle-relay stopped");
    summary
}

/// At most a few warnings a second from hostile or broken senders.
#[derive(Debug, Default)]
struct LogLimiter {
    second: AtomicU64,
    count: AtomicU64,
}

impl LogLimiter {
    const PER_SECOND: u64 = 20;

    fn allow(&self) -> bool {
        let now = stats::unix_now() as u64;
        if self.second.swap(now, Relaxed) != now {
            let last = self.count.swap(0, Relaxed);
            if last > Self::PER_SECOND {
                warn!(
                    suppressed = last - Self::PER_SECOND,
                    "similar warnings suppressed (see the self-metrics for counts)"
                );
            }
        }
        self.count.fetch_add(1, Relaxed) < Self::PER_SECOND
    }
}

struct Conn {
    peer: SocketAddr,
    config: Arc<Config>,
    stats: Arc<Stats>,
    queue: QueueTx,
    stop: watch::Receiver<bool>,
    limiter: Arc<LogLimiter>,
    _slot: OwnedSemaphorePermit,
}

/// Why a connection ended.
enum End {
    /// The sender closed between frames, or we are shutting down.
    Normal,
    /// Logged at debug: idle timeout, reset between frames.
    Quiet(String),
    /// A refused frame: counted as a decode error and logged as a warning.
    Refused(String),
}

impl Conn {
    async fn serve(mut self, socket: TcpStream) {
        // Registered for the watchdog and the state dump. A connection waiting for its sender is idle (never
        // reported stuck: carbon keeps its connections for days); one waiting for queue room is not.
        let op =
            self.config.diagnostics.as_ref().map(|d| Arc::new(d.registry().begin("connection", self.peer.to_string())));
        if let Some(op) = &op {
            op.phase(bucky_diag::phase::IDLE);
        }
        let serve = async {
            Stats::add(&self.stats.connections, 1u64);
            debug!(peer = %self.peer, "connection opened");
            let end = self.frames(socket).await;
            Stats::sub(&self.stats.connections, 1u64);
            match end {
                End::Normal => debug!(peer = %self.peer, "connection closed"),
                End::Quiet(why) => debug!(peer = %self.peer, %why, "connection closed"),
                End::Refused(why) => {
                    Stats::add(&self.stats.decode_errors, 1u64);
                    if self.limiter.allow() {
                        warn!(peer = %self.peer, %why, "refused a frame; connection closed");
                    }
                }
            }
        };
        match op {
            Some(op) => bucky_diag::scope(op, serve).await,
            None => serve.await,
        }
    }

    async fn frames(&mut self, socket: TcpStream) -> End {
        let mut reader = BufReader::with_capacity(READ_BUFFER, socket);
        let mut frame = Vec::new();
        let mut decoder = Decoder::default();
        let max = self.config.max_message as usize;
        // Set once shutdown is seen: until then, keep reading what the sender already sent.
        let mut drain_until: Option<Instant> = None;
        loop {
            let deadline = Instant::now() + self.config.read_timeout;
            // Wait for the next frame to start. `fill_buf` consumes nothing, so giving up is clean.
            let mut stop = self.stop.clone();
            let next = async { reader.fill_buf().await.map(|b| b.is_empty()) };
            let started = match drain_until {
                Some(until) => {
                    // Shutting down: take what is already on its way, stop when the sender pauses.
                    match timeout_at(until.min(Instant::now() + DRAIN_IDLE), next).await {
                        Ok(r) => r,
                        Err(_) => return End::Normal,
                    }
                }
                None => tokio::select! {
                    _ = stop.wait_for(|s| *s) => {
                        drain_until = Some(Instant::now() + self.config.shutdown_grace);
                        continue;
                    }
                    r = timeout_at(deadline, next) => match r {
                        Ok(r) => r,
                        Err(_) => return End::Quiet("idle for --timeout".into()),
                    },
                },
            };
            match started {
                Err(e) => return End::Quiet(format!("read error: {e}")),
                Ok(true) => return End::Normal,
                Ok(false) => {}
            }
            let mut header = [0u8; 4];
            match timeout_at(deadline, read_header(&mut reader, &mut header)).await {
                Err(_) => return End::Refused("frame header not complete within --timeout".into()),
                Ok(Err(e)) => return End::Quiet(format!("read error: {e}")),
                Ok(Ok(4)) => {}
                Ok(Ok(n)) => return End::Refused(format!("connection closed inside a frame header ({n} of 4 bytes)")),
            }
            let len = u32::from_be_bytes(header) as usize;
            if len > max {
                return End::Refused(format!(
                    "frame of {len} bytes exceeds --max-message {max} (a plaintext sender on the pickle port?)"
                ));
            }
            frame.clear();
            let body = read_body(&mut reader, &mut frame, len);
            let got = tokio::select! {
                r = timeout_at(deadline, body) => r,
                _ = grace_over(&mut stop, drain_until, self.config.shutdown_grace) => {
                    return End::Quiet("shutdown during a frame".into())
                }
            };
            match got {
                Err(_) => {
                    return End::Refused(format!(
                        "frame not complete within --timeout ({} of {len} bytes)",
                        frame.len()
                    ))
                }
                Ok(Err(e)) => return End::Refused(format!("read error inside a frame: {e}")),
                Ok(Ok(())) if frame.len() < len => {
                    return End::Refused(format!(
                        "truncated frame: connection closed after {} of {len} bytes",
                        frame.len()
                    ))
                }
                Ok(Ok(())) => {}
            }
            Stats::add(&self.stats.pickles, 1u64);
            let limit = (len * 32).max(4 << 20);
            let mut lines = Vec::with_capacity(len + len / 4);
            let converted = match decoder.decode(&frame) {
                Ok(p) => write_pickle(&mut lines, &p, limit).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            let converted = match converted {
                Ok(c) => c,
                Err(why) => return End::Refused(why),
            };
            if converted.skipped > 0 {
                Stats::add(&self.stats.metrics_skipped, converted.skipped);
                if self.limiter.allow() {
                    let first = converted.first_skip.map(|s| s.to_string()).unwrap_or_default();
                    warn!(peer = %self.peer, skipped = converted.skipped, %first, "skipped items of a pickle");
                }
            }
            if frame.capacity() > KEEP_BUFFER {
                frame = Vec::new();
                decoder.shrink_to(KEEP_BUFFER);
            }
            if converted.metrics == 0 {
                continue;
            }
            Stats::add(&self.stats.metrics_seen, converted.metrics);
            let give_up = grace_over(&mut stop, drain_until, self.config.shutdown_grace);
            let op = bucky_diag::current();
            if let Some(op) = &op {
                op.phase("waiting for queue room");
            }
            let pushed = self.queue.push(lines, converted.metrics, give_up).await;
            if let Some(op) = &op {
                op.phase(bucky_diag::phase::IDLE);
            }
            if drain_until.is_none() && *self.stop.borrow() {
                drain_until = Some(Instant::now() + self.config.shutdown_grace);
            }
            match pushed {
                Pushed::Queued => {}
                Pushed::Dropped => {
                    if self.limiter.allow() {
                        warn!(peer = %self.peer, dropped = converted.metrics, "queue full (--drop-when-full): metrics dropped");
                    }
                }
                Pushed::Closed => return End::Quiet("relay writer gone".into()),
            }
        }
    }
}

/// Resolves when the shutdown grace is over: `drain_until` if shutdown was already seen, else
/// `grace` after it is.
async fn grace_over(stop: &mut watch::Receiver<bool>, drain_until: Option<Instant>, grace: Duration) {
    let until = match drain_until {
        Some(until) => until,
        None => {
            let _ = stop.wait_for(|s| *s).await;
            Instant::now() + grace
        }
    };
    tokio::time::sleep_until(until).await;
}

/// Reads a 4-byte header; returns how many bytes arrived before EOF (0 = clean close between frames).
async fn read_header<R: AsyncRead + Unpin>(r: &mut R, header: &mut [u8; 4]) -> io::Result<usize> {
    let mut n = 0;
    while n < 4 {
        let k = r.read(&mut header[n..]).await?;
        if k == 0 {
            break;
        }
        n += k;
    }
    Ok(n)
}

/// Reads up to `len` bytes into `frame`, growing it only as data arrives (a header that claims a large
/// frame reserves nothing); stops early at EOF.
async fn read_body<R: AsyncRead + Unpin>(r: &mut R, frame: &mut Vec<u8>, len: usize) -> io::Result<()> {
    while frame.len() < len {
        let want = len - frame.len();
        frame.reserve(want.min(frame.capacity().max(64 * 1024)));
        let k = r.take(want as u64).read_buf(frame).await?;
        if k == 0 {
            break;
        }
    }
    Ok(())
}

/// Writes a self-metrics sample every `every`, and a last one at shutdown.
async fn report(
    queue: QueueTx,
    stats: Arc<Stats>,
    prefix: String,
    every: Duration,
    mut stop: watch::Receiver<bool>,
    diagnostics: Option<bucky_diag::Diagnostics>,
) {
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let last = tokio::select! {
            _ = tick.tick() => false,
            _ = stop.wait_for(|s| *s) => true,
        };
        // One mechanism for every daemon: the relay's counters go into the diagnostics' metrics (with the
        // watchdog's counts, open fds and in-flight gauges) when the binary runs them.
        let lines = match &diagnostics {
            Some(diag) => {
                diag.refresh_gauges();
                stats.snapshot().record(diag.metrics(), stats::rss_bytes());
                diag.metrics().lines(&prefix, u64::try_from(stats::unix_now()).unwrap_or(0)).into_bytes()
            }
            None => stats.snapshot().lines(&prefix, stats::rss_bytes(), stats::unix_now()),
        };
        let count = lines.iter().filter(|&&b| b == b'\n').count() as u32;
        if !queue.push_self(lines, count, last) {
            debug!("queue full: self-metrics sample skipped (the counters are cumulative; the next one catches up)");
        }
        if last {
            return;
        }
    }
}
