//! bucky-pickle-relay with real peers on loopback: carbon 1.1.10's own pickle client code (Python) →
//! the real `bucky-pickle-relay` binary → a real carbon-c-relay (line protocol in) → a sink written
//! here that records lines. Every point must arrive with exactly the f64 carbon would have parsed.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucky_e2e::{bin, free_port, oracle_python, workspace_root};

const IP: &str = "127.0.0.1";

/// A child process killed (and reaped) when dropped, also when a test fails.
struct Proc {
    child: Child,
    name: &'static str,
    log: PathBuf,
}

impl Proc {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    fn terminate(&mut self, within: Duration) -> ExitStatus {
        let status = Command::new("kill").args(["-TERM", &self.pid()]).status().expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.name);
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().expect("wait") {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {within:?} of SIGTERM:\n{}",
                self.name,
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &'static str, cmd: &mut Command, dir: &Path) -> Proc {
    let log = dir.join(format!("{name}.log"));
    let out = std::fs::File::create(&log).expect("log file");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup log"))
        .stderr(out)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    Proc { child, name, log }
}

fn wait_listening(port: u16, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while TcpStream::connect((IP, port)).is_err() {
        assert!(proc.alive(), "{} exited early:\n{}", proc.name, proc.log());
        assert!(Instant::now() < deadline, "{} not listening on {port}:\n{}", proc.name, proc.log());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a sink received: its lines, and how to wait for them.
trait Received {
    /// Every line received so far, shared with the threads that read the connections.
    fn received(&self) -> &Mutex<Vec<String>>;

    fn count(&self, prefix: &str) -> usize {
        self.received().lock().unwrap().iter().filter(|l| l.starts_with(prefix)).count()
    }

    /// Waits until `n` lines starting with `prefix` arrived, at most `within`.
    fn wait_for(&self, prefix: &str, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.count(prefix) < n {
            assert!(Instant::now() < deadline, "sink has {} of {n} `{prefix}` lines", self.count(prefix));
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Received for LineSink {
    fn received(&self) -> &Mutex<Vec<String>> {
        &self.lines
    }
}

impl Received for RestartableSink {
    fn received(&self) -> &Mutex<Vec<String>> {
        &self.lines
    }
}

/// Records every line received, on any number of connections.
struct LineSink {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
}

impl LineSink {
    fn start() -> LineSink {
        let listener = TcpListener::bind((IP, 0)).expect("bind sink");
        let port = listener.local_addr().unwrap().port();
        let lines: Arc<Mutex<Vec<String>>> = Arc::default();
        let all = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { return };
                let all = all.clone();
                std::thread::spawn(move || {
                    for line in BufReader::new(conn).lines() {
                        let Ok(line) = line else { return };
                        all.lock().unwrap().push(line);
                    }
                });
            }
        });
        LineSink { port, lines }
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A connection of a [`RestartableSink`] and the thread reading it.
type SinkConn = (TcpStream, std::thread::JoinHandle<()>);

/// A line receiver on a fixed port that can be restarted as a daemon restarts: `restart` stops
/// listening, closes its connections (after reading what was sent: a clean exit), and listens again on
/// the same port. Records every line of every connection.
struct RestartableSink {
    port: u16,
    lines: Arc<Mutex<Vec<String>>>,
    /// Open connections, to close at a restart, and the threads reading them.
    conns: Arc<Mutex<Vec<SinkConn>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

impl RestartableSink {
    fn start() -> RestartableSink {
        let mut sink = RestartableSink {
            port: free_port(IP),
            lines: Arc::default(),
            conns: Arc::default(),
            stop: Arc::default(),
            acceptor: None,
        };
        sink.listen();
        sink
    }

    fn listen(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        let listener = TcpListener::bind((IP, self.port)).expect("bind the sink's port again");
        listener.set_nonblocking(true).unwrap();
        self.stop.store(false, Relaxed);
        let (lines, conns, stop) = (self.lines.clone(), self.conns.clone(), self.stop.clone());
        self.acceptor = Some(std::thread::spawn(move || {
            while !stop.load(Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        conn.set_nonblocking(false).unwrap();
                        let reader = conn.try_clone().unwrap();
                        let lines = lines.clone();
                        let thread = std::thread::spawn(move || {
                            for line in BufReader::new(reader).lines() {
                                let Ok(line) = line else { return };
                                lines.lock().unwrap().push(line);
                            }
                        });
                        conns.lock().unwrap().push((conn, thread));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    fn restart(&mut self) {
        use std::sync::atomic::Ordering::Relaxed;
        self.stop.store(true, Relaxed);
        if let Some(a) = self.acceptor.take() {
            a.join().unwrap();
        }
        for (conn, thread) in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(std::net::Shutdown::Both);
            thread.join().unwrap();
        }
        self.listen();
    }
}

/// carbon-c-relay forwarding everything it receives on `port` (line protocol) to `sink`.
fn c_relay(dir: &Path, port: u16, sink: u16) -> Proc {
    let exe = Path::new("/usr/bin/carbon-c-relay");
    assert!(exe.exists(), "carbon-c-relay not installed: run scripts/test.sh once (it installs the Debian package)");
    let conf = dir.join("c-relay.conf");
    std::fs::write(
        &conf,
        format!("cluster sink forward {IP}:{sink} ;\nmatch * send to sink ;\nlisten type linemode {IP}:{port} proto tcp ;\n"),
    )
    .unwrap();
    let mut p = spawn(
        "carbon-c-relay",
        Command::new(exe).arg("-s").args(["-q", "2000000", "-H", "e2e"]).arg("-f").arg(&conf),
        dir,
    );
    wait_listening(port, &mut p);
    p
}

fn pickle_relay(dir: &Path, port: u16, relay_port: u16, extra: &[&str]) -> Proc {
    let mut cmd = Command::new(bin("bucky-pickle-relay"));
    cmd.args(["-b", &format!("{IP}:{port}"), "-s", "5"]).args(extra).arg(format!("{IP}:{relay_port}"));
    let mut p = spawn("bucky-pickle-relay", &mut cmd, dir);
    wait_listening(port, &mut p);
    p
}

fn sender_script() -> PathBuf {
    workspace_root().join("tests/oracle/pickle_sender.py")
}

/// Runs carbon's pickle client code against `port`; returns the expected points file.
fn python_send(dir: &Path, port: u16, prefix: &str, args: &[&str]) -> PathBuf {
    let expect = dir.join(format!("{prefix}.expect"));
    let out = Command::new(oracle_python())
        .arg(sender_script())
        .args(["--port", &port.to_string(), "--prefix", prefix, "--expect"])
        .arg(&expect)
        .args(args)
        .output()
        .expect("run pickle_sender.py");
    assert!(out.status.success(), "pickle_sender.py failed: {}", String::from_utf8_lossy(&out.stderr));
    expect
}

/// Every expected point arrived with exactly its value (bits), and nothing else under `prefix`.
fn assert_exact(expect: &Path, sink: &LineSink, prefix: &str) -> usize {
    let mut want: HashMap<(String, u64), u64> = HashMap::new();
    for line in std::fs::read_to_string(expect).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let bits = |s: &str| u64::from_str_radix(s, 16).unwrap();
        want.insert((f[0].to_owned(), bits(f[1])), bits(f[2]));
    }
    let mut seen = 0;
    for line in sink.lines().iter().filter(|l| l.starts_with(prefix)) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "malformed line {line:?}");
        let value: f64 = f[1].parse().unwrap_or_else(|_| panic!("value of {line:?}"));
        let ts: f64 = f[2].parse().unwrap_or_else(|_| panic!("timestamp of {line:?}"));
        let key = (f[0].to_owned(), ts.to_bits());
        let expected = want.get(&key).unwrap_or_else(|| panic!("unexpected point {line:?}"));
        assert_eq!(
            value.to_bits(),
            *expected,
            "{line:?}: value must be bit-exact (expected {})",
            f64::from_bits(*expected)
        );
        seen += 1;
    }
    assert_eq!(seen, want.len(), "every point arrives once");
    seen
}

/// Every expected point under `prefix` arrived with exactly its value (bits), at least once and at
/// most twice, and nothing else; returns how many arrived twice.
fn assert_at_least_once_at_most_twice(expect: &Path, lines: &[String], prefix: &str) -> usize {
    let mut want: HashMap<(String, u64), (u64, u32)> = HashMap::new();
    for line in std::fs::read_to_string(expect).unwrap().lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let bits = |s: &str| u64::from_str_radix(s, 16).unwrap();
        want.insert((f[0].to_owned(), bits(f[1])), (bits(f[2]), 0));
    }
    for line in lines.iter().filter(|l| l.starts_with(prefix)) {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f.len(), 3, "malformed line {line:?}");
        let value: f64 = f[1].parse().unwrap_or_else(|_| panic!("value of {line:?}"));
        let ts: f64 = f[2].parse().unwrap_or_else(|_| panic!("timestamp of {line:?}"));
        let (bits, seen) =
            want.get_mut(&(f[0].to_owned(), ts.to_bits())).unwrap_or_else(|| panic!("unexpected point {line:?}"));
        assert_eq!(value.to_bits(), *bits, "{line:?}: value must be bit-exact");
        *seen += 1;
    }
    let missing = want.values().filter(|(_, n)| *n == 0).count();
    let thrice = want.values().filter(|(_, n)| *n > 2).count();
    assert_eq!((missing, thrice), (0, 0), "`{prefix}`: points missing, points delivered more than twice");
    want.values().filter(|(_, n)| *n == 2).count()
}

fn rss_of(pid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
        * 1024
}

/// bucky-pickle-relay → carbon-c-relay → sink, all running.
struct Chain {
    dir: tempfile::TempDir,
    sink: LineSink,
    _crelay: Proc,
    relay: Proc,
    port: u16,
}

impl Chain {
    fn start(relay_flags: &[&str]) -> Chain {
        let dir = tempfile::tempdir().unwrap();
        let sink = LineSink::start();
        let crelay_port = free_port(IP);
        let crelay = c_relay(dir.path(), crelay_port, sink.port);
        let port = free_port(IP);
        let relay = pickle_relay(dir.path(), port, crelay_port, relay_flags);
        Chain { dir, sink, _crelay: crelay, relay, port }
    }
}

#[test]
fn carbon_pickles_arrive_bit_exact_through_carbon_c_relay_and_sigterm_flushes() {
    let Chain { dir, sink, _crelay, mut relay, port } = Chain::start(&["-i", "1", "-p", "e2e.self"]);

    // carbon's own client (protocol 2, 4 connections), then other senders' protocols 0, 1 and 4.
    let carbon =
        python_send(dir.path(), port, "e2e.carbon", &["--metrics", "500", "--points", "40", "--connections", "4"]);
    let mut others = Vec::new();
    for p in ["0", "1", "4"] {
        let prefix = format!("e2e.proto{p}");
        others.push((
            python_send(
                dir.path(),
                port,
                &prefix,
                &["--metrics", "100", "--points", "10", "--protocol", p, "--seed", p],
            ),
            prefix,
        ));
    }
    // Stop right away: SIGTERM must flush the queue before exiting.
    let status = relay.terminate(Duration::from_secs(30));
    assert!(status.success(), "exit status {status}:\n{}", relay.log());
    sink.wait_for("e2e.carbon.", 20_000, Duration::from_secs(30));
    for (_, prefix) in &others {
        sink.wait_for(&format!("{prefix}."), 1_000, Duration::from_secs(10));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(assert_exact(&carbon, &sink, "e2e.carbon."), 20_000);
    for (expect, prefix) in &others {
        assert_eq!(assert_exact(expect, &sink, &format!("{prefix}.")), 1_000);
    }
    // The last self-metrics sample (written at shutdown) accounts for every metric.
    let lines = sink.lines();
    let last = |name: &str| -> u64 {
        let p = format!("e2e.self.{name} ");
        let l = lines.iter().rev().find(|l| l.starts_with(&p)).unwrap_or_else(|| panic!("no {name} self-metric"));
        l.split(' ').nth(1).unwrap().parse().unwrap()
    };
    assert_eq!(last("seenMetrics"), 23_000);
    assert_eq!(last("decodeErrors"), 0);
    assert_eq!(last("droppedMetrics"), 0);
    assert!(last("rss") > 0);
}

#[test]
fn hostile_senders_are_refused_and_the_relay_stays_up_and_small() {
    let Chain { dir, sink, _crelay, mut relay, port } = Chain::start(&["-i", "0", "-t", "20"]);

    // A pickle that runs `touch MARKER` if unpickled unsafely (made by CPython, sent by Python).
    let marker = dir.path().join("pwned");
    let out = Command::new(oracle_python())
        .arg(sender_script())
        .args(["--port", &port.to_string(), "--evil"])
        .arg(&marker)
        .output()
        .expect("run evil sender");
    assert!(out.status.success(), "evil sender: {}", String::from_utf8_lossy(&out.stderr));

    let hostile: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec()),
        ("plaintext on the pickle port", b"foo.bar 1 1700000000\n".to_vec()),
        ("4 GiB frame", vec![0xff, 0xff, 0xff, 0xff, 0x80, 0x02, b']']),
        ("deep nesting", {
            let mut p = vec![0x80, 2, b'N'];
            p.extend(std::iter::repeat_n(0x85u8, 10_000));
            p.push(b'.');
            let mut f = (p.len() as u32).to_be_bytes().to_vec();
            f.extend(p);
            f
        }),
        ("memo bomb", {
            let p = b"\x80\x02Nr\xff\xff\xff\x0f.".to_vec();
            let mut f = (p.len() as u32).to_be_bytes().to_vec();
            f.extend(p);
            f
        }),
    ];
    for (what, bytes) in &hostile {
        let mut conn = TcpStream::connect((IP, port)).unwrap();
        let _ = conn.write_all(bytes);
        conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(conn.read(&mut buf), Ok(0) | Err(_)), "{what}: connection must be closed");
    }
    // Slow-loris: 300 connections, each claiming a 1 MiB frame and trickling 1 KiB.
    let mut loris = Vec::new();
    for _ in 0..300 {
        let mut c = TcpStream::connect((IP, port)).unwrap();
        c.write_all(&[0, 0x10, 0, 0]).unwrap();
        c.write_all(&[b'N'; 1024]).unwrap();
        loris.push(c);
    }
    std::thread::sleep(Duration::from_millis(500));
    let rss = rss_of(&relay.pid());
    assert!(rss < 64 << 20, "RSS {} MiB with 300 slow connections", rss >> 20);

    // Meanwhile an honest carbon sender is served in full.
    let expect =
        python_send(dir.path(), port, "e2e.honest", &["--metrics", "200", "--points", "10", "--connections", "2"]);
    sink.wait_for("e2e.honest.", 2_000, Duration::from_secs(30));
    drop(loris);
    assert!(relay.alive(), "relay died:\n{}", relay.log());
    assert!(!marker.exists(), "the os.system pickle was executed!");
    let status = relay.terminate(Duration::from_secs(30));
    assert!(status.success());
    assert_eq!(assert_exact(&expect, &sink, "e2e.honest."), 2_000);
    assert_eq!(sink.count("evil."), 0, "nothing of a refused pickle is forwarded");
    let log = relay.log();
    for reason in ["GLOBAL", "exceeds --max-message", "nesting deeper", "memo index", "truncated frame"] {
        assert!(log.contains(reason), "log names the reason `{reason}`:\n{log}");
    }
}

#[test]
fn relay_down_then_up_loses_nothing_within_the_queue_bound() {
    let dir = tempfile::tempdir().unwrap();
    let sink = LineSink::start();
    let crelay_port = free_port(IP);
    let port = free_port(IP);
    // carbon-c-relay is not running yet; a small queue so the sender is pushed back.
    let mut relay = pickle_relay(dir.path(), port, crelay_port, &["-i", "0", "-q", "2000"]);
    let expect = dir.path().join("late.expect");
    let mut sender = spawn(
        "pickle_sender",
        Command::new(oracle_python())
            .arg(sender_script())
            .args([
                "--port",
                &port.to_string(),
                "--prefix",
                "e2e.late",
                "--metrics",
                "1000",
                "--points",
                "20",
                "--expect",
            ])
            .arg(&expect),
        dir.path(),
    );
    std::thread::sleep(Duration::from_secs(2));
    assert!(sender.alive(), "the sender must be held back while the relay is down");
    let _crelay = c_relay(dir.path(), crelay_port, sink.port);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sender.alive() {
        assert!(Instant::now() < deadline, "sender did not finish after the relay came up");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(sender.child.wait().unwrap().success(), "sender failed:\n{}", sender.log());
    let status = relay.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", relay.log());
    sink.wait_for("e2e.late.", 20_000, Duration::from_secs(30));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(assert_exact(&expect, &sink, "e2e.late."), 20_000);
}

/// The downstream restarts twice (issue 14: the relay used to resend its whole 4 MiB window at every
/// reconnect, 307,200 lines for 102,400 metrics). With the default `--replay unacked`, a receiver that
/// had read and acknowledged everything gets nothing again: every point arrives at least once and at
/// most twice.
#[test]
fn downstream_restarts_deliver_each_point_at_least_once_and_at_most_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut sink = RestartableSink::start();
    let port = free_port(IP);
    let mut relay = pickle_relay(dir.path(), port, sink.port, &["-i", "0"]);
    let mut sent = Vec::new();
    for (round, (metrics, points)) in [(1024, 100), (100, 10), (100, 10)].into_iter().enumerate() {
        if round > 0 {
            // Everything so far was read: restart the receiver; the next points make the relay reconnect.
            sink.restart();
        }
        let prefix = format!("e2e.restart{round}.");
        let expect = python_send(
            dir.path(),
            port,
            &prefix[..prefix.len() - 1],
            &["--metrics", &metrics.to_string(), "--points", &points.to_string(), "--seed", &round.to_string()],
        );
        sink.wait_for(&prefix, metrics * points, Duration::from_secs(60));
        sent.push((expect, prefix));
    }
    let status = relay.terminate(Duration::from_secs(30));
    assert!(status.success(), "{}", relay.log());
    std::thread::sleep(Duration::from_millis(300));
    let lines = sink.lines.lock().unwrap().clone();
    let twice: usize =
        sent.iter().map(|(expect, prefix)| assert_at_least_once_at_most_twice(expect, &lines, prefix)).sum();
    let log = relay.log();
    assert_eq!(log.matches("relay connection lost").count(), 2, "two restarts seen:\n{log}");
    eprintln!("{} lines for 104,400 points ({twice} twice)", lines.len());
    // The receiver had read everything and closed cleanly (its FIN acknowledges all it received): the
    // unacknowledged tail was empty, so nothing at all was resent.
    assert_eq!(twice, 0, "{log}");
}

/// carbon-cache 1.1.10 with its line receiver on `line_port`, writing whisper files under
/// `<root>/storage/whisper` (one archive, 1m:1d, so stored values are the received ones).
fn carbon_cache(root: &Path, line_port: u16) -> Proc {
    for d in ["conf", "storage/whisper", "storage/lists", "log", "run"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    let (pickle, query) = (free_port(IP), free_port(IP));
    let r = root.display();
    std::fs::write(
        root.join("conf/carbon.conf"),
        format!(
            "[cache]\nSTORAGE_DIR = {r}/storage/\nLOCAL_DATA_DIR = {r}/storage/whisper/\nWHITELISTS_DIR = {r}/storage/lists/\n\
             CONF_DIR = {r}/conf/\nLOG_DIR = {r}/log/\nPID_DIR = {r}/run/\nENABLE_LOGROTATION = False\nUSER =\n\
             MAX_CACHE_SIZE = inf\nMAX_UPDATES_PER_SECOND = 100000\nMAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = {IP}\nLINE_RECEIVER_PORT = {line_port}\nENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_INTERFACE = {IP}\nPICKLE_RECEIVER_PORT = {pickle}\nCACHE_QUERY_INTERFACE = {IP}\n\
             CACHE_QUERY_PORT = {query}\nLOG_UPDATES = False\nLOG_CREATES = False\nLOG_CACHE_HITS = False\n\
             WHISPER_LOCK_WRITES = True\nCARBON_METRIC_INTERVAL = 0\nENABLE_TAGS = False\n"
        ),
    )
    .unwrap();
    std::fs::write(root.join("conf/storage-schemas.conf"), "[all]\npattern = .*\nretentions = 1m:1d\n").unwrap();
    std::fs::write(
        root.join("conf/storage-aggregation.conf"),
        "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n",
    )
    .unwrap();
    let python = oracle_python();
    let mut cmd = Command::new(&python);
    cmd.arg(python.parent().unwrap().join("carbon-cache.py"))
        .arg("--config")
        .arg(root.join("conf/carbon.conf"))
        .arg("--nodaemon")
        .arg("--pidfile")
        .arg(root.join("run/carbon.pid"))
        .arg("start");
    for (key, _) in std::env::vars() {
        if key.starts_with("GRAPHITE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("GRAPHITE_ROOT", root);
    let mut p = spawn("carbon-cache", &mut cmd, root);
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect((IP, line_port)).is_err() {
        assert!(p.alive(), "carbon-cache exited early:\n{}", p.log());
        assert!(Instant::now() < deadline, "carbon-cache not listening:\n{}", p.log());
        std::thread::sleep(Duration::from_millis(100));
    }
    p
}

#[test]
fn carbon_cache_stores_exactly_the_pickled_values() {
    let dir = tempfile::tempdir().unwrap();
    let line_port = free_port(IP);
    let _carbon = carbon_cache(dir.path(), line_port);
    let port = free_port(IP);
    let mut relay = pickle_relay(dir.path(), port, line_port, &["-i", "0"]);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let start = (now - 3600) / 60 * 60;
    let expect = python_send(
        dir.path(),
        port,
        "e2e.wsp",
        &["--metrics", "50", "--points", "20", "--connections", "2", "--start", &start.to_string()],
    );
    assert!(relay.terminate(Duration::from_secs(30)).success(), "{}", relay.log());
    // Read back with the reference whisper module (waits for carbon-cache to write).
    let out = Command::new(oracle_python())
        .arg(sender_script())
        .args(["--port", "0", "--wait", "90", "--check-whisper"])
        .arg(dir.path().join("storage/whisper"))
        .arg("--expect")
        .arg(&expect)
        .output()
        .expect("run the whisper check");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "whisper check failed: {report}{}", String::from_utf8_lossy(&out.stderr));
    assert!(report.contains("\"found\": 1000"), "{report}");
}
