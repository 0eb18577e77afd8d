//! Server tests on real loopback sockets: the listen backlog, the header and idle timeouts.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use hashring::{Hash, Node, RingSpec};
use tokio::sync::oneshot;

use super::*;
use crate::{AppState, Config};

/// Connects `n` times to `addr` in a row, each connect bounded by `timeout`; the connections are kept.
fn connect_many(addr: SocketAddr, n: usize, timeout: Duration) -> Result<Vec<TcpStream>, String> {
    (0..n).map(|i| TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("connect #{i}: {e}"))).collect()
}

/// The soft limit of open files raised to the hard one (the test holds a thousand sockets).
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let _ = setrlimit(Resource::Nofile, Rlimit { current: limit.maximum, maximum: limit.maximum });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backlog_holds_a_thousand_connections_never_accepted() {
    let somaxconn: u32 = std::fs::read_to_string("/proc/sys/net/core/somaxconn").unwrap().trim().parse().unwrap();
    assert!(somaxconn >= LISTEN_BACKLOG, "this machine caps the backlog at net.core.somaxconn = {somaxconn}");
    raise_open_files_limit();
    let listener = bind_listener("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Nobody accepts: every connect must be completed by the kernel from the backlog alone. With a
    // backlog of 128 the 130th SYN is dropped and its connect waits for retries (1 s, then 3 s...).
    let connected =
        tokio::task::spawn_blocking(move || connect_many(addr, 1000, Duration::from_secs(2))).await.unwrap();
    let streams = connected.unwrap();
    assert_eq!(streams.len(), 1000);
    drop(listener);
}

#[tokio::test]
async fn bind_listener_resolves_names_and_reports_failures() {
    let listener = bind_listener("localhost:0").await.unwrap();
    assert!(listener.local_addr().unwrap().ip().is_loopback());
    let taken = listener.local_addr().unwrap();
    let err = bind_listener(&taken.to_string()).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
    assert!(bind_listener("no-such-host.invalid:80").await.is_err());
}

/// A server on loopback with the given timeouts, stopped when the returned sender is dropped.
async fn start(
    header_timeout: Duration,
    idle_timeout: Duration,
) -> (SocketAddr, oneshot::Sender<()>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let ring = RingSpec::new(vec![Node::parse("localhost:2003").unwrap()], Hash::CarbonCh).build().unwrap();
    let mut config = Config::new("localhost", ring, dir.path());
    config.header_timeout = header_timeout;
    config.idle_timeout = idle_timeout;
    config.shutdown_grace = Duration::from_secs(1);
    let state = AppState::new(config).unwrap();
    let listener = bind_listener("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(crate::serve(listener, state, async move {
        let _ = stopped.await;
    }));
    (addr, stop, dir)
}

/// Sends `GET /hashring` on `stream` and reads the answer whole; its status line.
fn get_hashring(stream: &mut TcpStream) -> String {
    stream.write_all(b"GET /hashring HTTP/1.1\r\nHost: test\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(stream.read(&mut byte).unwrap(), 1, "connection closed mid-answer: {head:?}");
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap();
    let length: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap()))
        .expect("content-length");
    let mut body = vec![0; length];
    stream.read_exact(&mut body).unwrap();
    head.lines().next().unwrap().to_owned()
}

/// Waits until the server closes `stream` (EOF or reset) and returns how long that took.
fn time_to_close(stream: &mut TcpStream, bound: Duration) -> Duration {
    let started = Instant::now();
    stream.set_read_timeout(Some(bound)).unwrap();
    let mut buf = [0u8; 64];
    match stream.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("unexpected bytes: {:?}", String::from_utf8_lossy(&buf[..n])),
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the connection was not closed within {bound:?}: {e}"),
    }
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_finishes_its_headers_is_cut_off_after_the_header_timeout() {
    let (addr, _stop, _dir) = start(Duration::from_secs(1), Duration::from_secs(60)).await;
    tokio::task::spawn_blocking(move || {
        // Silent from the start.
        let mut silent = TcpStream::connect(addr).unwrap();
        let took = time_to_close(&mut silent, Duration::from_secs(15));
        assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the header timeout");
        // Slowloris: a byte of headers now and then, never the end.
        let mut slow = TcpStream::connect(addr).unwrap();
        let started = Instant::now();
        slow.write_all(b"GET /hashring HTTP/1.1\r\n").unwrap();
        let mut closed = false;
        while started.elapsed() < Duration::from_secs(15) {
            std::thread::sleep(Duration::from_millis(200));
            if slow.write_all(b"X").is_err() {
                closed = true;
                break;
            }
        }
        assert!(closed, "a trickle of header bytes kept the connection for 15 s");
        // After a request, the next one's headers are due within the header timeout of their first
        // byte, not the idle timeout (60 s).
        let mut partial = TcpStream::connect(addr).unwrap();
        assert_eq!(get_hashring(&mut partial), "HTTP/1.1 200 OK");
        partial.write_all(b"GET /hashring HTTP/1.1\r\nHost: test\r\n").unwrap();
        let took = time_to_close(&mut partial, Duration::from_secs(15));
        assert!(took >= Duration::from_millis(900), "closed after {took:?}, before the header timeout");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keep_alive_connection_waits_for_the_idle_timeout_not_the_header_timeout() {
    let (addr, _stop, _dir) = start(Duration::from_secs(1), Duration::from_secs(3)).await;
    tokio::task::spawn_blocking(move || {
        let mut stream = TcpStream::connect(addr).unwrap();
        assert_eq!(get_hashring(&mut stream), "HTTP/1.1 200 OK");
        // Quiet for twice the header timeout: still open, the next request on it is answered.
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(get_hashring(&mut stream), "HTTP/1.1 200 OK");
        // Then quiet for good: closed once idle for 3 s (never before).
        let took = time_to_close(&mut stream, Duration::from_secs(20));
        assert!(took >= Duration::from_millis(2900), "closed after {took:?}, before the idle timeout");
    })
    .await
    .unwrap();
}
