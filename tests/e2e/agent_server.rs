//! bucky-agent's server, end to end: shutdown within its grace, abandoned requests and accept errors in
//! the log (the real binary, raw sockets on 127.0.0.x, its stderr).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bucky_e2e::{bin, free_port, hold_flock};
use bucky_wire::{MetricStat, METRIC_STAT_HEADER};
use reqwest::blocking::Client;
use reqwest::StatusCode;
use whisper::{CreateOptions, Point, Retention, WhisperBuf};

/// A running `bucky-agent` with its stderr in a file, killed on drop.
struct Agent {
    child: Child,
    addr: String,
    root: PathBuf,
    log: PathBuf,
}

impl Agent {
    /// Starts an agent on `ip` serving `root` (a one-node ring) with `extra` flags, through `sh -c
    /// "ulimit -n N"` when `open_files` is given, and waits until it answers.
    fn start(ip: &str, root: &Path, extra: &[&str], open_files: Option<u32>) -> Agent {
        fs::create_dir_all(root).unwrap();
        let port = free_port(ip);
        let addr = format!("{ip}:{port}");
        let log = root.with_extension(format!("{port}.log"));
        let agent = bin("bucky-agent");
        let mut command = match open_files {
            None => Command::new(&agent),
            Some(n) => {
                let mut sh = Command::new("sh");
                sh.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), agent.to_str().unwrap()]);
                sh
            }
        };
        command
            .args(["-b", &addr, "-n", ip, "-p", root.to_str().unwrap()])
            .args(extra)
            .arg(ip)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = command.spawn().expect("start bucky-agent");
        let mut agent = Agent { child, addr, root: root.to_owned(), log };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !agent.answers() {
            if let Some(status) = agent.child.try_wait().unwrap() {
                panic!("bucky-agent exited with {status}:\n{}", agent.log());
            }
            assert!(Instant::now() < deadline, "bucky-agent did not come up:\n{}", agent.log());
            thread::sleep(Duration::from_millis(20));
        }
        agent
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn answers(&self) -> bool {
        let client = Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
        client.get(self.url("/hashring")).send().is_ok_and(|r| r.status() == StatusCode::OK)
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most 20 s) until a log line contains every one of `parts`.
    fn wait_for_log(&self, parts: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.lines_with(parts) == 0 {
            assert!(Instant::now() < deadline, "no log line with {parts:?}:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many log lines contain every one of `parts`.
    fn lines_with(&self, parts: &[&str]) -> usize {
        self.log().lines().filter(|line| parts.iter().all(|p| line.contains(p))).count()
    }

    fn terminate(&self) {
        let pid = self.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A `1m:1d` whisper file with one point a minute ago.
fn wsp() -> Vec<u8> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let header = whisper::header_for(&Retention::parse_list("1m:1d").unwrap(), &CreateOptions::default()).unwrap();
    let mut buf = WhisperBuf::empty(header);
    buf.update_many(&[Point::new(now - 60, 1.0)], now).unwrap();
    buf.into_bytes()
}

fn stat_header(name: &str, size: usize) -> String {
    MetricStat { name: name.into(), size: size as i64, mode: 420, ..MetricStat::default() }.to_header_value()
}

/// Opens a connection and sends the headers of a 17,308-byte upload of `name` and its first bytes; the
/// rest is up to the caller (trickle it, or go away).
fn start_upload(addr: &str, name: &str) -> TcpStream {
    let body = wsp();
    let mut stream = TcpStream::connect(addr).unwrap();
    let head = format!(
        "POST /metrics/{name} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/octet-stream\r\n\
         Content-Length: {}\r\n{METRIC_STAT_HEADER}: {}\r\n\r\n",
        body.len(),
        stat_header(name, body.len())
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(&body[..100]).unwrap();
    stream
}

/// Files (temp files included) in `dir` and below.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flat_map(|e| {
            let path = e.unwrap().path();
            if path.is_dir() {
                files_under(&path)
            } else {
                vec![path]
            }
        })
        .collect()
}

#[test]
fn agent_sigterm_with_a_trickled_upload_exits_within_the_grace() {
    let dir = tempfile::tempdir().unwrap();
    let grace = Duration::from_secs(5);
    // A create pauses 500 ms between writing its temp file and publishing it: an in-flight request that
    // finishes within the grace (flushed with fsync: a syncfs would also wait for whatever else the
    // machine is writing to the filesystem).
    let flags = ["--shutdown-grace", "5", "--test-publish-delay-ms", "500", "--flush", "fsync"];
    let mut agent = Agent::start("127.0.0.31", &dir.path().join("whisper"), &flags, None);
    let mut trickle = start_upload(&agent.addr, "trickle.metric");
    let trickler = thread::spawn(move || {
        // One byte every 100 ms: the upload would take half an hour.
        for _ in 0..600 {
            thread::sleep(Duration::from_millis(100));
            if trickle.write_all(b"\0").is_err() {
                return;
            }
        }
    });
    let create = {
        let url = agent.url("/metrics/quick.metric");
        thread::spawn(move || {
            let bytes = wsp();
            Client::builder()
                .timeout(Duration::from_secs(60))
                .build()
                .unwrap()
                .post(url)
                .header("Content-Type", "application/octet-stream")
                .header(METRIC_STAT_HEADER, stat_header("quick.metric", bytes.len()))
                .body(bytes)
                .send()
                .map(|r| r.status())
        })
    };
    let quick_dir = agent.root.join("quick");
    let deadline = Instant::now() + Duration::from_secs(10);
    while files_under(&quick_dir).is_empty() {
        assert!(Instant::now() < deadline, "the create never started:\n{}", agent.log());
        thread::sleep(Duration::from_millis(5));
    }

    agent.terminate();
    let signalled = Instant::now();
    // New connections are refused at once, while the requests in flight go on.
    let mut refused = false;
    while !refused && signalled.elapsed() < Duration::from_secs(2) {
        refused = TcpStream::connect(&agent.addr).is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused);
        thread::sleep(Duration::from_millis(20));
    }
    assert!(refused, "new connections still accepted after SIGTERM:\n{}", agent.log());
    assert!(agent.child.try_wait().unwrap().is_none(), "exited before the grace was over");
    // The create finishing within the grace is answered, and its file is complete.
    let answer = create.join().unwrap();
    assert_eq!(answer.as_ref().ok(), Some(&StatusCode::OK), "{answer:?}:\n{}", agent.log());
    assert_eq!(fs::read(agent.root.join("quick/metric.wsp")).unwrap().len(), wsp().len());
    // The trickled upload holds the process no longer than the grace.
    let status = loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < grace + Duration::from_secs(10),
            "still running 15 s after SIGTERM:\n{}",
            agent.log()
        );
        thread::sleep(Duration::from_millis(20));
    };
    let took = signalled.elapsed();
    assert!(status.success(), "exit status {status}:\n{}", agent.log());
    assert!(took >= grace - Duration::from_millis(100), "exited after {took:?}, before the grace was over");
    trickler.join().unwrap();
    assert_eq!(files_under(&agent.root.join("trickle")), Vec::<PathBuf>::new(), "the cancelled upload left files");
    assert_eq!(agent.lines_with(&["shutdown grace of 5 s over: 1 request cancelled"]), 1, "{}", agent.log());
    assert_eq!(
        agent.lines_with(&["request cancelled at shutdown", "uri=/metrics/trickle.metric"]),
        1,
        "{}",
        agent.log()
    );
    assert_eq!(agent.lines_with(&["request", "uri=/metrics/quick.metric", "status=200"]), 1, "{}", agent.log());
    assert!(agent.log().contains("bucky-agent stopped"));
}

#[test]
fn agent_logs_each_request_abandoned_by_its_client_once() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    fs::create_dir_all(root.join("busy")).unwrap();
    fs::write(root.join("busy/m.wsp"), wsp()).unwrap();
    let agent = Agent::start("127.0.0.32", &root, &[], None);

    // An upload whose client goes away mid-body.
    let upload = start_upload(&agent.addr, "gone.metric");
    thread::sleep(Duration::from_millis(300));
    drop(upload);
    agent.wait_for_log(&["request abandoned by the client", "uri=/metrics/gone.metric"]);

    // A read waiting for a whisper lock another process holds, whose client gives up.
    let (mut holder, release) = hold_flock(&root.join("busy/m.wsp"), None);
    let mut read = TcpStream::connect(&agent.addr).unwrap();
    write!(read, "GET /metrics/busy.m HTTP/1.1\r\nHost: {}\r\n\r\n", agent.addr).unwrap();
    thread::sleep(Duration::from_millis(500));
    drop(read);
    agent.wait_for_log(&["request abandoned by the client", "uri=/metrics/busy.m"]);
    drop(release);
    assert!(holder.wait().unwrap().success());

    // Still serving; each abandoned request was logged once, without an access line of its own.
    assert!(agent.answers());
    thread::sleep(Duration::from_millis(300));
    for uri in ["uri=/metrics/gone.metric", "uri=/metrics/busy.m"] {
        assert_eq!(agent.lines_with(&[uri]), 1, "{}", agent.log());
    }
    assert_eq!(
        agent.lines_with(&["the connection closed before the body was complete", "uri=/metrics/gone.metric"]),
        1
    );
    assert!(!root.join("gone").exists(), "the abandoned upload left files");
}

#[test]
fn agent_out_of_file_descriptors_logs_the_accept_errors_once_and_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::start("127.0.0.33", &dir.path().join("whisper"), &[], Some(40));
    // More connections than descriptors left: the agent's accepts fail with EMFILE until some close.
    let held: Vec<TcpStream> = (0..60).map(|_| TcpStream::connect(&agent.addr).unwrap()).collect();
    agent.wait_for_log(&["cannot accept connections: too many open files (limit 40): raise LimitNOFILE"]);
    thread::sleep(Duration::from_secs(2));
    drop(held);
    // Once the idle connections are gone the agent serves again, and says so once accepts have gone
    // on without an error for a while.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !(agent.answers() && agent.lines_with(&["accept errors over"]) == 1) {
        assert!(Instant::now() < deadline, "the agent did not recover:\n{}", agent.log());
        thread::sleep(Duration::from_millis(100));
    }
    // A burst of errors (one every few ms to 1 s, during 2 s): one error line, at most a count after it.
    assert_eq!(agent.lines_with(&["cannot accept connections: too many open files"]), 1, "{}", agent.log());
    assert!(agent.lines_with(&["still cannot accept"]) <= 1, "{}", agent.log());
    let mut stream = TcpStream::connect(&agent.addr).unwrap();
    write!(stream, "GET /hashring HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
}
