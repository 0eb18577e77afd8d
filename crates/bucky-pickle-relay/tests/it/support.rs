//! What the relay's tests share: the relay in-process, the frames senders send, one sender connection.

use std::net::SocketAddr;
use std::time::Duration;

use bucky_pickle_relay::{encode, run_with, Config, Counters, Summary};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::timeout;

/// The relay in-process on a loopback port, stopped like the binary stops on SIGTERM.
pub(crate) struct Relay {
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Counters,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Summary>,
}

impl Relay {
    pub(crate) async fn start(config: Config) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Counters::default();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run_with(listener, config, rx, counters.clone()));
        Relay { addr, counters, stop: Some(tx), task }
    }

    /// Shuts the relay down and returns its final summary.
    pub(crate) async fn stop(mut self) -> Summary {
        let _ = self.stop.take().unwrap().send(());
        timeout(Duration::from_secs(60), &mut self.task).await.expect("relay stops in time").expect("relay task")
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The tests' relay settings, forwarding to `downstream`: self-metrics off (no interval), 5 s send timeout.
pub(crate) fn config(downstream: SocketAddr) -> Config {
    let mut c = Config::new(downstream.to_string());
    c.prefix = "self.relay".into();
    c.interval = None;
    c.send_timeout = Duration::from_secs(5);
    c
}

/// `count` frames of `per` metrics each; returns the bytes and the lines they must become, in order.
pub(crate) fn frames(tag: &str, count: usize, per: usize) -> (Vec<u8>, Vec<String>) {
    let mut bytes = Vec::new();
    let mut lines = Vec::new();
    for f in 0..count {
        let names: Vec<String> = (0..per).map(|i| format!("{tag}.f{f}.m{i}")).collect();
        let metrics: Vec<(&str, i64, f64)> = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.as_str(), 1_700_000_000 + f as i64, i as f64 / 7.0 + f as f64))
            .collect();
        for (n, t, v) in &metrics {
            lines.push(format!("{n} {v} {t}"));
        }
        encode::frame(&mut bytes, &metrics);
    }
    (bytes, lines)
}

/// One sender connection (so the relay writes its lines in order): sends `bytes`, closes its side, then
/// waits up to `patience` for the relay to close the connection (it has read every frame). Returns
/// whether the relay closed it in time.
pub(crate) async fn send(addr: SocketAddr, bytes: &[u8], patience: Duration) -> bool {
    let mut conn = TcpStream::connect(addr).await.expect("connect to relay");
    conn.write_all(bytes).await.expect("send");
    conn.shutdown().await.unwrap();
    let mut rest = Vec::new();
    timeout(patience, conn.read_to_end(&mut rest)).await.is_ok()
}
