//! Shared helpers of the end-to-end tests. Locating the workspace's binaries, the reference peers and free
//! ports is `test_support`'s (re-exported here); what only these tests need is below: command output
//! checks, waiting for a buckyd-compatible daemon, a daemon started with its log, a replayable generator,
//! and a flock held by another process.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use test_support::{free_port, go_peer, oracle_python, workspace_bin as bin, workspace_root};

#[path = "support/go_carbon.rs"]
pub mod go_carbon;

/// Bytes of a command's output as text.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The stdout of a `bucky … --json` run as JSON (whatever its exit status); panics with its output when it
/// is not JSON or when it panicked.
#[track_caller]
pub fn json_of(out: &Output) -> serde_json::Value {
    let stdout = text(&out.stdout);
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}) from {}: {stdout}\nstderr:\n{}", out.status, text(&out.stderr)))
}

/// The stdout of a `bucky` run that must have succeeded without a panic (else its output, in the failure).
#[track_caller]
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "bucky failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    text(&out.stdout)
}

/// Starts `command` (its arguments given) with stdout and stderr appended to `log`, stdin closed.
pub fn spawn_logged(command: &mut Command, log: File) -> std::io::Result<Child> {
    command.stdin(Stdio::null()).stdout(log.try_clone()?).stderr(log).spawn()
}

/// Waits until the daemon `child` (buckyd or bucky-agent) at `addr` answers `GET /hashring` with 200, for
/// at most 30 s. Panics naming it (`what`) and showing its `log` if it exits first or is not ready in time.
pub fn wait_for_hashring(child: &mut Child, addr: &str, what: &str, log: &Path) {
    let log = || std::fs::read_to_string(log).unwrap_or_default();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{what} exited with {status}: {}", log());
        }
        if let Ok(mut stream) = TcpStream::connect(addr) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
            let request = format!("GET /hashring HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
            let mut answer = String::new();
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_to_string(&mut answer).is_ok()
                && answer.starts_with("HTTP/1.1 200")
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{what} not ready after 30 s: {}", log());
        std::thread::sleep(Duration::from_millis(30));
    }
}

/// A tiny deterministic generator (xorshift64*), so a failure can be replayed from its seed.
pub struct Rng(pub u64);

impl Rng {
    /// The seed in the environment variable `var`, else one from the clock (odd: xorshift never leaves 0).
    pub fn env_seed(var: &str) -> u64 {
        std::env::var(var).ok().and_then(|s| s.trim().parse().ok()).unwrap_or_else(|| {
            SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
        })
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(2_685_821_657_736_338_717)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    /// `n` random bytes.
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}

/// Another process holding `LOCK_EX` on `path`, as carbon-cache does with `WHISPER_LOCK_WRITES`: returned
/// once the lock is taken. It holds it for `seconds`, or with `None` until its stdin closes (the second
/// value: drop it, or write nothing and drop it, to release).
pub fn hold_flock(path: &Path, seconds: Option<u32>) -> (Child, Option<ChildStdin>) {
    let hold = match seconds {
        Some(s) => format!("time.sleep({s})"),
        None => "sys.stdin.read()".to_owned(),
    };
    let script = format!(
        "import fcntl, sys, time\nf = open(sys.argv[1], 'r+b')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\n{hold}\n"
    );
    let mut holder = Command::new("python3")
        .args(["-c", &script, path.to_str().unwrap()])
        .stdin(if seconds.is_some() { Stdio::null() } else { Stdio::piped() })
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    let stdin = holder.stdin.take();
    (holder, stdin)
}
