//! The relay in-process on loopback, against a sink written here: delivery, back-pressure, the drop
//! policy, relay outages, hostile senders, connection limits, shutdown. (The real binary with carbon's
//! Python sender and carbon-c-relay is tested in the workspace's `tests/e2e/pickle_relay.rs`.)

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bucky_pickle_relay::{ReplayPolicy, Summary};

use crate::support::{self, config, frames, Relay};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::{sleep, timeout, Instant};

const WAIT: Duration = Duration::from_secs(20);

/// A line receiver that records every complete line (a partial line cut by a crash is lost, as it would
/// be in a real relay); `kill` drops it abruptly (unread data is lost too), and it can be started again
/// on the same port.
struct Sink {
    addr: SocketAddr,
    lines: Arc<Mutex<Vec<String>>>,
    task: Option<JoinHandle<()>>,
}

impl Sink {
    async fn start(addr: SocketAddr, lines: Arc<Mutex<Vec<String>>>, crash_after: Option<usize>) -> Sink {
        let listener = TcpListener::bind(addr).await.expect("bind sink");
        let addr = listener.local_addr().unwrap();
        let all = lines.clone();
        let task = tokio::spawn(async move {
            let mut received = 0;
            loop {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut buf = vec![0u8; 64 * 1024];
                let mut partial = Vec::new();
                // One connection at a time, as a relay sees us.
                loop {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            received += n;
                            partial.extend_from_slice(&buf[..n]);
                            let end = partial.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
                            let text = String::from_utf8(partial.drain(..end).collect()).expect("UTF-8");
                            all.lock().unwrap().extend(text.lines().map(str::to_owned));
                            if crash_after.is_some_and(|c| received >= c) {
                                // Crash: drop the listener, then the connection with data unread. In the other
                                // order the relay, reset, could reconnect into the closing listener's backlog
                                // and have its resent lines reset again: a second failure, after which they
                                // are not sent a third time (the relay's documented bound), and the test
                                // would measure that race instead of the replay (seen once in 15 loaded runs).
                                drop(listener);
                                drop(conn);
                                return;
                            }
                        }
                    }
                }
            }
        });
        Sink { addr, lines, task: Some(task) }
    }

    async fn new() -> Sink {
        Sink::start("127.0.0.1:0".parse().unwrap(), Arc::default(), None).await
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    /// Lines of the senders' metrics (self-metrics excluded).
    fn metric_lines(&self) -> BTreeSet<String> {
        self.lines().into_iter().filter(|l| !l.starts_with("self.")).collect()
    }

    async fn wait_for(&self, n: usize) {
        let deadline = Instant::now() + WAIT;
        while self.metric_lines().len() < n {
            assert!(Instant::now() < deadline, "sink has {} of {n} lines", self.metric_lines().len());
            sleep(Duration::from_millis(20)).await;
        }
    }

    /// Exactly the expected lines arrived (duplicates allowed), with a short report otherwise.
    fn assert_got(&self, expected: impl IntoIterator<Item = String>) {
        let expected: BTreeSet<String> = expected.into_iter().collect();
        let got = self.metric_lines();
        let missing: Vec<_> = expected.difference(&got).take(5).collect();
        let extra: Vec<_> = got.difference(&expected).take(5).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{} expected, {} received; missing e.g. {missing:?}; unexpected e.g. {extra:?}",
            expected.len(),
            got.len()
        );
    }

    fn kill(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.kill();
    }
}

fn assert_conserved(s: &Summary) {
    assert_eq!(s.metrics_seen, s.metrics_sent + s.metrics_dropped, "{s:?}");
    assert_eq!(s.queued, 0, "{s:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_senders_every_metric_arrives_exactly() {
    let sink = Sink::new().await;
    let relay = Relay::start(config(sink.addr)).await;
    let mut expected = BTreeSet::new();
    let mut senders = Vec::new();
    for s in 0..4 {
        let (bytes, lines) = frames(&format!("s{s}"), 50, 100);
        expected.extend(lines);
        let addr = relay.addr;
        senders.push(tokio::spawn(async move { send(addr, &bytes).await }));
    }
    for s in senders {
        s.await.unwrap();
    }
    let summary = relay.stop().await;
    sink.assert_got(expected);
    assert_eq!(summary.metrics_seen, 20_000);
    assert_eq!(summary.metrics_sent, 20_000);
    assert_eq!(summary.pickles, 200);
    assert_eq!((summary.decode_errors, summary.metrics_dropped, summary.metrics_skipped), (0, 0, 0));
    assert_conserved(&summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_takes_what_senders_already_sent() {
    let sink = Sink::new().await;
    let relay = Relay::start(config(sink.addr)).await;
    let (bytes, expected) = frames("inflight", 1000, 100);
    let mut conn = TcpStream::connect(relay.addr).await.unwrap();
    // Written into the kernel's buffers, most of it not yet read by the relay when it is told to stop.
    let writer = tokio::spawn(async move {
        conn.write_all(&bytes).await.unwrap();
        conn
    });
    sleep(Duration::from_millis(5)).await;
    let summary = relay.stop().await;
    drop(writer.await.unwrap());
    sink.assert_got(expected);
    assert_eq!(summary.metrics_sent, 100_000);
    assert_conserved(&summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_down_then_up_loses_nothing_and_pushes_back_meanwhile() {
    let port = dead_port();
    let mut c = config(port);
    c.queue = 1_000;
    let relay = Relay::start(c).await;
    let (bytes, expected) = frames("down", 200, 100);
    let addr = relay.addr;
    let sender = tokio::spawn(async move { send(addr, &bytes).await });
    sleep(Duration::from_millis(1500)).await;
    let s = relay.counters.snapshot();
    assert!(s.queued <= 1_000, "queue bound exceeded: {s:?}");
    assert!(s.metrics_seen <= 1_100, "the relay must stop reading when the queue is full: {s:?}");
    assert!(!sender.is_finished(), "the sender must be held back");
    assert_eq!(s.metrics_dropped, 0);
    let sink = Sink::start(port, Arc::default(), None).await;
    timeout(WAIT, sender).await.expect("sender finishes once the relay is up").unwrap();
    sink.wait_for(expected.len()).await;
    let summary = relay.stop().await;
    sink.assert_got(expected);
    assert_eq!(summary.metrics_sent, 20_000);
    assert_conserved(&summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_policy_drops_and_counts() {
    let port = dead_port();
    let mut c = config(port);
    c.queue = 1_000;
    c.drop_when_full = true;
    let relay = Relay::start(c).await;
    let (bytes, _) = frames("drop", 50, 100);
    send(relay.addr, &bytes).await;
    let s = relay.counters.snapshot();
    assert_eq!(s.metrics_seen, 5_000);
    assert_eq!(s.metrics_dropped, 4_000, "10 frames fit, 40 are dropped and counted: {s:?}");
    let sink = Sink::start(port, Arc::default(), None).await;
    sink.wait_for(1_000).await;
    let summary = relay.stop().await;
    assert_eq!(sink.metric_lines().len(), 1_000);
    assert_eq!((summary.metrics_sent, summary.metrics_dropped), (1_000, 4_000));
    assert_conserved(&summary);
}

/// `--replay window`: a relay that dies with lines it had not read (its kernel had acknowledged them)
/// gets them again. (The default, `unacked`, resends only what was not acknowledged: tests/replay.rs.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_crash_mid_stream_is_covered_by_the_replay_window() {
    let data = Arc::new(Mutex::new(Vec::new()));
    // The first relay "crashes" after 100 kB, with whatever it had not read lost.
    let mut sink = Sink::start("127.0.0.1:0".parse().unwrap(), data.clone(), Some(100_000)).await;
    let mut c = config(sink.addr);
    c.replay = ReplayPolicy::Window;
    let relay = Relay::start(c).await;
    let (bytes, expected) = frames("crash", 100, 100);
    send(relay.addr, &bytes).await;
    sleep(Duration::from_millis(300)).await;
    sink.kill();
    let sink = Sink::start(sink.addr, data, None).await;
    sink.wait_for(expected.len()).await;
    let summary = relay.stop().await;
    sink.assert_got(expected);
    assert!(summary.metrics_replayed > 0, "{summary:?}");
    assert!(summary.relay_reconnects >= 1, "{summary:?}");
    assert_conserved(&summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_relay_at_shutdown_counts_the_loss() {
    let port = dead_port();
    let mut c = config(port);
    c.send_timeout = Duration::from_secs(1);
    let relay = Relay::start(c).await;
    let (bytes, _) = frames("lost", 10, 100);
    send(relay.addr, &bytes).await;
    let started = Instant::now();
    let summary = relay.stop().await;
    assert!(started.elapsed() < Duration::from_secs(10), "shutdown is bounded");
    assert_eq!(summary.metrics_seen, 1_000);
    assert_eq!(summary.metrics_dropped, 1_000, "never silent: {summary:?}");
    assert_conserved(&summary);
}

/// Sends `bytes` on a fresh connection and reports whether the relay closed it (within a few seconds).
/// A loopback address with nobody listening (yet).
fn dead_port() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// One sender connection that waits for the relay to read every frame.
async fn send(addr: SocketAddr, bytes: &[u8]) {
    assert!(support::send(addr, bytes, WAIT).await, "relay closes the connection");
}

async fn closed_by_relay(addr: SocketAddr, bytes: &[u8]) -> bool {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let _ = conn.write_all(bytes).await;
    let mut buf = [0u8; 16];
    matches!(timeout(Duration::from_secs(5), conn.read(&mut buf)).await, Ok(Ok(0) | Err(_)))
}

fn framed(pickle: &[u8]) -> Vec<u8> {
    let mut f = (pickle.len() as u32).to_be_bytes().to_vec();
    f.extend_from_slice(pickle);
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_senders_are_refused_without_disturbing_others() {
    let sink = Sink::new().await;
    let relay = Relay::start(config(sink.addr)).await;
    // A good sender keeps a connection open across the attack.
    let mut good = TcpStream::connect(relay.addr).await.unwrap();
    let (first, mut expected) = frames("good1", 5, 100);
    good.write_all(&first).await.unwrap();

    let evil: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\xde\xad\xbe\xef garbage that is not a frame at all".to_vec()),
        ("plaintext", b"foo.bar 1 1700000000\n".to_vec()),
        ("4 GiB claim", vec![0xff, 0xff, 0xff, 0xff, 0x80, 0x02]),
        ("os.system", framed(b"\x80\x02cposix\nsystem\nq\x00X\x02\x00\x00\x00idq\x01\x85q\x02Rq\x03.")),
        ("deep", framed(&[&vec![0x85u8; 0][..], b"N", &[0x85; 200], b"."].concat())),
        ("bad opcode", framed(b"\x80\x02]q\x00(X\x01\x00\x00\x00a}e.")),
    ];
    for (what, bytes) in &evil {
        assert!(closed_by_relay(relay.addr, bytes).await, "{what}: connection must be closed");
    }
    // A truncated frame is only known as such when its sender closes.
    let mut t = TcpStream::connect(relay.addr).await.unwrap();
    t.write_all(&[0, 0, 1, 0, 0x80, 0x02]).await.unwrap();
    drop(t);

    let (second, more) = frames("good2", 5, 100);
    good.write_all(&second).await.unwrap();
    good.shutdown().await.unwrap();
    expected.extend(more);
    sink.wait_for(expected.len()).await;
    sleep(Duration::from_millis(200)).await;
    let summary = relay.stop().await;
    sink.assert_got(expected);
    assert_eq!(summary.decode_errors, evil.len() as u64 + 1, "{summary:?}");
    assert_eq!(summary.metrics_seen, 1_000);
    assert_conserved(&summary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_surplus_connections_are_bounded() {
    let sink = Sink::new().await;
    let mut c = config(sink.addr);
    c.max_connections = 3;
    c.read_timeout = Duration::from_secs(1);
    let relay = Relay::start(c).await;
    // Slow-loris: a header claiming 1 MiB, then a byte every 200 ms.
    let mut loris = Vec::new();
    for _ in 0..3 {
        let mut conn = TcpStream::connect(relay.addr).await.unwrap();
        conn.write_all(&[0, 0x10, 0, 0, 0x80]).await.unwrap();
        loris.push(conn);
    }
    sleep(Duration::from_millis(200)).await;
    // A fourth connection is refused while three are open.
    assert!(closed_by_relay(relay.addr, b"").await, "surplus connection closed");
    let started = Instant::now();
    for conn in &mut loris {
        let mut buf = [0u8; 1];
        loop {
            if conn.write_all(b"N").await.is_err() {
                break;
            }
            match timeout(Duration::from_millis(200), conn.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                _ => assert!(started.elapsed() < Duration::from_secs(5), "slow-loris must be cut at --timeout"),
            }
        }
    }
    // Slots are free again: a normal sender gets through.
    let (bytes, expected) = frames("after", 2, 10);
    send(relay.addr, &bytes).await;
    sink.wait_for(expected.len()).await;
    let summary = relay.stop().await;
    assert!(summary.connections_refused >= 1, "{summary:?}");
    assert_eq!(summary.decode_errors, 3, "three frames cut by the timeout: {summary:?}");
    assert_eq!(summary.connections, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_metrics_are_written_into_the_stream() {
    let sink = Sink::new().await;
    let mut c = config(sink.addr);
    c.interval = Some(Duration::from_millis(200));
    let relay = Relay::start(c).await;
    let (bytes, _) = frames("m", 3, 10);
    send(relay.addr, &bytes).await;
    sleep(Duration::from_millis(500)).await;
    let summary = relay.stop().await;
    let lines = sink.lines();
    for name in [
        "seenPickles",
        "seenMetrics",
        "sentMetrics",
        "queueLength",
        "droppedMetrics",
        "decodeErrors",
        "skippedMetrics",
        "rss",
    ] {
        assert!(lines.iter().any(|l| l.starts_with(&format!("self.relay.{name} "))), "{name} missing: {lines:?}");
    }
    // The last sample (at shutdown) has the final pickle count.
    let last_seen = lines.iter().rev().find(|l| l.starts_with("self.relay.seenMetrics ")).unwrap();
    assert_eq!(last_seen.split(' ').nth(1), Some("30"));
    let rss: u64 =
        lines.iter().find(|l| l.starts_with("self.relay.rss ")).unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    assert!(rss > 1 << 20, "rss in bytes: {rss}");
    assert_eq!(summary.metrics_sent, 30, "self-metrics are not counted as sent metrics");
}
