//! What the relay resends after its downstream restarts (`--replay`), against real TCP receivers on
//! loopback that stop reading and then crash.
//!
//! A receiver that stops reading lets its kernel's receive buffer fill (those bytes are acknowledged),
//! then our send queue (those are not). Both sizes are read from `/proc/net/tcp` once the stream has
//! stalled, the receiver is killed with data unread (the kernel resets the connection), and the next one
//! accepts the relay's new connection. From what each receiver read and those two queue sizes, a model
//! of the policy predicts exactly which lines each later connection carries; every line's delivery
//! count must be the predicted one. With `unacked` that means: a line reaches the receivers at most
//! twice, only the unacknowledged tail is resent, a line already resent once is not resent again, and
//! the only lines lost are those a receiver's kernel had acknowledged and the receiver never read.
//!
//! `--replay-bytes` is set far above any send queue (64 MiB) so that the model need not know this
//! machine's `tcp_wmem`: what the cap forgets is not what these tests are about.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bucky_pickle_relay::{ReplayPolicy, Summary};

use crate::support::{self, config, frames, Relay};
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const WAIT: Duration = Duration::from_secs(30);

/// The downstream port: one listener for the whole test (as a restarted daemon rebinds its port), with
/// a small receive buffer so that a receiver that stops reading stalls the stream quickly.
struct Downstream {
    listener: Arc<TcpListener>,
    addr: SocketAddr,
}

/// One receiver instance: the connection it accepted, the complete lines it read, and how many bytes.
struct Receiver {
    peer: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    read: Arc<AtomicU64>,
    /// Reads up to this many bytes, then waits for it to be raised.
    limit: Arc<AtomicU64>,
    resume: Arc<Notify>,
    task: JoinHandle<()>,
}

impl Downstream {
    fn new() -> Downstream {
        let socket = TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(64 * 1024).unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(16).unwrap();
        let addr = listener.local_addr().unwrap();
        Downstream { listener: Arc::new(listener), addr }
    }

    /// Accepts the relay's next connection and reads it: `stop_after` bytes (then it holds the
    /// connection without reading, until [`Receiver::read_the_rest`]), or everything.
    async fn accept(&self, stop_after: Option<u64>) -> Receiver {
        let (mut conn, peer) = timeout(WAIT, self.listener.accept()).await.expect("the relay reconnects").unwrap();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let read = Arc::new(AtomicU64::new(0));
        let limit = Arc::new(AtomicU64::new(stop_after.unwrap_or(u64::MAX)));
        let resume = Arc::new(Notify::new());
        let (all, total, max, wake) = (lines.clone(), read.clone(), limit.clone(), resume.clone());
        let task = tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            let mut partial = Vec::new();
            loop {
                let room = max.load(Relaxed).saturating_sub(total.load(Relaxed));
                if room == 0 {
                    // Stop reading, keep the connection: the windows fill up.
                    wake.notified().await;
                    continue;
                }
                let want = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
                match conn.read(&mut buf[..want]).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => {
                        partial.extend_from_slice(&buf[..n]);
                        let end = partial.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                        let text = String::from_utf8(partial.drain(..end).collect()).expect("UTF-8");
                        all.lock().unwrap().extend(text.lines().map(str::to_owned));
                        total.fetch_add(n as u64, Relaxed);
                    }
                }
            }
        });
        Receiver { peer, lines, read, limit, resume, task }
    }
}

/// `tx_queue`, `rx_queue` and inode of the IPv4 socket from `local` port to `remote` port
/// (`/proc/net/tcp`; the inode is 0 once the socket is closed and only the kernel still holds it).
fn queues(local: u16, remote: u16) -> Option<(u64, u64, u64)> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |field: &str| field.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok());
    table.lines().skip(1).find_map(|row| {
        let f: Vec<&str> = row.split_whitespace().collect();
        if f.len() < 10 || port(f[1])? != local || port(f[2])? != remote {
            return None;
        }
        let (tx, rx) = f[4].split_once(':')?;
        Some((u64::from_str_radix(tx, 16).ok()?, u64::from_str_radix(rx, 16).ok()?, f[9].parse().ok()?))
    })
}

/// How a crashed connection ended: bytes the receiver read, its unread receive queue (acknowledged),
/// and the relay's send queue (not acknowledged).
#[derive(Debug, Clone, Copy)]
struct Stall {
    read: u64,
    unread: u64,
    unacked: u64,
}

impl Receiver {
    /// Waits until the stream is stuck (both queues full and unchanged for a while), then measures it.
    async fn stalled(&self, downstream: &Downstream) -> Stall {
        let deadline = Instant::now() + WAIT;
        let (relay_port, our_port) = (self.peer.port(), downstream.addr.port());
        let mut last = None;
        let mut same = 0;
        loop {
            assert!(Instant::now() < deadline, "the stream never stalled: {last:?}");
            sleep(Duration::from_millis(50)).await;
            let (Some((unacked, _, relay_inode)), Some((_, unread, _))) =
                (queues(relay_port, our_port), queues(our_port, relay_port))
            else {
                continue;
            };
            // Measured while the relay still holds the connection, so its send queue is what it had
            // written (once closed, the kernel adds the FIN) and the relay's last sample is this state.
            assert_ne!(relay_inode, 0, "the relay gave up on the connection before the stream stalled: {last:?}");
            let now = Stall { read: self.read.load(Relaxed), unread, unacked };
            if unacked > 0
                && last.is_some_and(|l: Stall| (l.read, l.unread, l.unacked) == (now.read, now.unread, now.unacked))
            {
                same += 1;
                // 500 ms unchanged: every acknowledgement is in, and the relay has sampled it.
                if same >= 10 {
                    return now;
                }
            } else {
                same = 0;
            }
            last = Some(now);
        }
    }

    /// Kills the receiver with data unread: the kernel resets the connection.
    fn crash(&self) {
        self.task.abort();
    }

    /// Reads on, to the end of the connection.
    fn read_the_rest(&self) {
        self.limit.store(u64::MAX, Relaxed);
        self.resume.notify_one();
    }

    async fn finished(self) -> Vec<String> {
        self.task.await.unwrap();
        self.lines.lock().unwrap().clone()
    }
}

/// The relay in-process, forwarding to `downstream` with `policy`.
async fn start_relay(
    downstream: SocketAddr,
    policy: ReplayPolicy,
    replay_bytes: usize,
    send_timeout: Duration,
) -> Relay {
    let mut c = config(downstream);
    c.send_timeout = send_timeout;
    c.replay = policy;
    c.replay_bytes = replay_bytes;
    Relay::start(c).await
}

/// One sender connection (so the relay writes the lines in order), closed once everything is sent.
fn send(addr: SocketAddr, bytes: Vec<u8>) -> JoinHandle<()> {
    tokio::spawn(async move {
        support::send(addr, &bytes, WAIT).await;
    })
}

/// The policy's prediction. A connection carries a sequence of lines (index into the expected lines,
/// and whether this copy is a replay); a crash after `stall` splits it into what the receiver got, what
/// is gone, and what the next connection carries.
struct Model<'a> {
    lines: &'a [String],
    policy: ReplayPolicy,
    delivered: Vec<u32>,
    replayed: u64,
    /// Replays that were not resent again (the at-most-once rule applied).
    not_again: u64,
}

impl Model<'_> {
    /// The receiver crashed after `stall`: it got what it had read.
    fn crash(&mut self, stream: &[(usize, bool)], stall: Stall) -> Vec<(usize, bool)> {
        self.failed(stream, stall, stall.read)
    }

    /// The relay gave up on a receiver stuck at `stall`, which then read everything the relay had
    /// written on the connection.
    fn gave_up(&mut self, stream: &[(usize, bool)], stall: Stall) -> Vec<(usize, bool)> {
        self.failed(stream, stall, stall.read + stall.unread + stall.unacked)
    }

    /// The connection carrying `stream` failed at `stall`; the receiver got the complete lines within
    /// its first `got` bytes. Returns what the next connection carries.
    fn failed(&mut self, stream: &[(usize, bool)], stall: Stall, got: u64) -> Vec<(usize, bool)> {
        let acked = stall.read + stall.unread;
        let written = acked + stall.unacked;
        let keep_from = match self.policy {
            ReplayPolicy::Unacked => acked,
            ReplayPolicy::Window => 0,
            ReplayPolicy::None => written,
        };
        let mut next = Vec::new();
        let mut unwritten = Vec::new();
        let mut end = 0u64;
        for &(i, replay) in stream {
            end += self.lines[i].len() as u64 + 1;
            if end <= got {
                self.delivered[i] += 1;
            }
            if end > written {
                unwritten.push((i, replay));
            } else if end > keep_from {
                if replay {
                    self.not_again += 1;
                } else {
                    next.push((i, true));
                    self.replayed += 1;
                }
            }
        }
        next.extend(unwritten);
        next
    }

    fn new(lines: &[String], policy: ReplayPolicy) -> Model<'_> {
        Model { lines, policy, delivered: vec![0; lines.len()], replayed: 0, not_again: 0 }
    }

    /// Every line in order: what the first connection carries.
    fn all(&self) -> Vec<(usize, bool)> {
        (0..self.lines.len()).map(|i| (i, false)).collect()
    }

    fn last(&mut self, stream: &[(usize, bool)]) {
        for &(i, _) in stream {
            self.delivered[i] += 1;
        }
    }
}

/// Two receivers crash mid-stream after reading `reads[0]` and `reads[1]` bytes; a third reads the rest.
/// Returns what the model predicted, what happened, and the relay's counters.
async fn two_crashes(
    policy: ReplayPolicy,
    replay_bytes: usize,
    reads: [u64; 2],
) -> (Vec<u32>, Vec<u32>, Model<'static>, Summary) {
    let downstream = Downstream::new();
    let relay = start_relay(downstream.addr, policy, replay_bytes, Duration::from_secs(20)).await;
    let (bytes, lines) = frames("replay", 4_000, 100);
    let lines: &'static [String] = Vec::leak(lines);
    let sender = send(relay.addr, bytes);
    let mut model = Model::new(lines, policy);
    let mut stream = model.all();
    let mut got: Vec<String> = Vec::new();
    for read in reads {
        let receiver = downstream.accept(Some(read)).await;
        let stall = receiver.stalled(&downstream).await;
        eprintln!("{policy:?}: stalled after {stall:?}");
        receiver.crash();
        got.extend(receiver.lines.lock().unwrap().iter().cloned());
        stream = model.crash(&stream, stall);
    }
    let last = downstream.accept(None).await;
    timeout(WAIT, sender).await.expect("the sender finishes").unwrap();
    let summary = relay.stop().await;
    got.extend(last.finished().await);
    model.last(&stream);
    let predicted = std::mem::take(&mut model.delivered);
    (predicted, tally(lines, &got), model, summary)
}

/// How often each of `lines` is among `got`.
fn tally(lines: &[String], got: &[String]) -> Vec<u32> {
    let index: HashMap<&str, usize> = lines.iter().enumerate().map(|(i, l)| (l.as_str(), i)).collect();
    let mut delivered = vec![0u32; lines.len()];
    for l in got {
        delivered[*index.get(l.as_str()).unwrap_or_else(|| panic!("unexpected line {l:?}"))] += 1;
    }
    delivered
}

/// Where prediction and delivery differ (first few), for the failure message.
fn differences(predicted: &[u32], delivered: &[u32]) -> Vec<(usize, u32, u32)> {
    predicted
        .iter()
        .zip(delivered)
        .enumerate()
        .filter(|(_, (p, d))| p != d)
        .map(|(i, (p, d))| (i, *p, *d))
        .take(8)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarts_deliver_each_line_at_most_twice_and_resend_only_the_unacknowledged_tail() {
    let (predicted, delivered, model, summary) =
        two_crashes(ReplayPolicy::Unacked, 64 << 20, [512 << 10, 64 << 10]).await;
    let counts = |n: u32| delivered.iter().filter(|&&d| d == n).count();
    eprintln!(
        "delivered 0x {}, 1x {}, 2x {}; replayed {} (model {}), not resent again {}",
        counts(0),
        counts(1),
        counts(2),
        summary.metrics_replayed,
        model.replayed,
        model.not_again
    );
    assert!(delivered.iter().all(|&d| d <= 2), "a line arrived more than twice");
    assert_eq!(differences(&predicted, &delivered), vec![], "(line, predicted, delivered)");
    assert_eq!(summary.metrics_replayed, model.replayed, "{summary:?}");
    assert!(model.replayed > 0, "the crashes left unacknowledged lines to resend");
    assert!(
        model.not_again > 0,
        "the second crash caught lines already resent once (the at-most-once rule was exercised)"
    );
    assert_eq!(summary.metrics_sent, 400_000, "{summary:?}");
    assert_eq!(summary.relay_reconnects, 2, "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_none_never_resends_a_line() {
    let (predicted, delivered, model, summary) = two_crashes(ReplayPolicy::None, 64 << 20, [512 << 10, 64 << 10]).await;
    assert!(delivered.iter().all(|&d| d <= 1), "a line arrived twice with --replay none");
    assert_eq!(differences(&predicted, &delivered), vec![], "(line, predicted, delivered)");
    assert_eq!((summary.metrics_replayed, model.replayed), (0, 0), "{summary:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_window_resends_read_and_unread_lines_but_each_at_most_once() {
    // A window larger than everything written, so that the cap forgets nothing.
    let (predicted, delivered, model, summary) =
        two_crashes(ReplayPolicy::Window, 64 << 20, [512 << 10, 64 << 10]).await;
    assert!(delivered.iter().all(|&d| d <= 2), "a line arrived more than twice");
    assert_eq!(differences(&predicted, &delivered), vec![], "(line, predicted, delivered)");
    assert_eq!(summary.metrics_replayed, model.replayed, "{summary:?}");
    assert!(delivered.contains(&2), "lines the first receiver had read were resent");
}

/// A receiver that stops reading for longer than --send-timeout and then reads on (rather than
/// crashing): its kernel lost nothing, so every line arrives, and the only duplicates are the tail the
/// relay had not seen acknowledged when it gave up on the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_receiver_that_reads_on_gets_every_line_and_only_the_unacknowledged_tail_twice() {
    let downstream = Downstream::new();
    // Long enough for the stall to be measured first (it needs 500 ms unchanged), even on a slow machine.
    let relay = start_relay(downstream.addr, ReplayPolicy::Unacked, 64 << 20, Duration::from_secs(6)).await;
    let (bytes, lines) = frames("stuck", 4_000, 100);
    let sender = send(relay.addr, bytes);
    let stuck = downstream.accept(Some(512 << 10)).await;
    let stall = stuck.stalled(&downstream).await;
    eprintln!("stalled after {stall:?}");
    // The relay gives up on the write after --send-timeout and connects again.
    let fresh = downstream.accept(None).await;
    // The old connection still delivers everything the relay had written on it.
    stuck.read_the_rest();
    timeout(WAIT, sender).await.expect("the sender finishes").unwrap();
    let summary = relay.stop().await;
    let mut got = stuck.finished().await;
    got.extend(fresh.finished().await);
    let mut model = Model::new(&lines, ReplayPolicy::Unacked);
    let next = model.gave_up(&model.all(), stall);
    model.last(&next);
    let delivered = tally(&lines, &got);
    let twice = delivered.iter().filter(|&&d| d == 2).count() as u64;
    eprintln!("{twice} lines twice; replayed {} (model {})", summary.metrics_replayed, model.replayed);
    assert!(delivered.iter().all(|&d| (1..=2).contains(&d)), "every line at least once, at most twice");
    assert_eq!(differences(&model.delivered, &delivered), vec![], "(line, predicted, delivered)");
    assert_eq!((summary.metrics_replayed, twice), (model.replayed, model.replayed), "{summary:?}");
    assert!(model.replayed > 0, "the relay had unacknowledged lines when it gave up");
    assert_eq!(summary.relay_reconnects, 1, "{summary:?}");
}
