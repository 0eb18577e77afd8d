//! [`TestCluster`]: real `bucky-agent` processes on their own loopback addresses (127.0.x.1..n, one port
//! for all, as buckyd clusters run), temp data directories, killed on drop; plus a bounded runner for the
//! `bucky` binary.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bucky_e2e::{bin, wait_for_hashring};
use whisper::{CreateOptions, Point, Retention, WhisperFile};

/// Longest any single `bucky` invocation may take in a test.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(120);

/// Seconds since the epoch, aligned to the minute.
pub(crate) fn now_minute() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64 / 60 * 60
}

/// A fresh block of loopback addresses per cluster, so tests run in parallel.
pub(crate) fn next_block() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // Mix in the process id so two test runs at once do not collide either.
    let base = std::process::id() % 100;
    100 + (base + NEXT.fetch_add(1, Ordering::Relaxed) * 7) % 150
}

/// A port free on every address.
pub(crate) fn common_port(ips: &[String]) -> u16 {
    for _ in 0..100 {
        let port = TcpListener::bind((ips[0].as_str(), 0)).unwrap().local_addr().unwrap().port();
        if ips.iter().all(|ip| TcpListener::bind((ip.as_str(), port)).is_ok()) {
            return port;
        }
    }
    panic!("no common free port on {ips:?}");
}

/// N agents on 127.0.B.1..N sharing one port.
pub(crate) struct TestCluster {
    /// Temp root: `nodeI/` data dirs and logs.
    pub(crate) dir: tempfile::TempDir,
    /// The agents' addresses.
    pub(crate) ips: Vec<String>,
    /// The common port.
    pub(crate) port: u16,
    /// Hash name given to the agents.
    pub(crate) hash: String,
    /// Replication factor.
    pub(crate) replicas: usize,
    /// More flags for every agent started from now on (`--diverse-replicas false`, …).
    pub(crate) agent_args: Vec<String>,
    agents: Vec<Option<Child>>,
    generation: u32,
}

impl TestCluster {
    /// A cluster of `n` nodes (not started).
    pub(crate) fn new(n: usize, hash: &str, replicas: usize) -> TestCluster {
        let block = next_block();
        let ips: Vec<String> = (1..=n).map(|i| format!("127.0.{block}.{i}")).collect();
        let port = common_port(&ips);
        let dir = tempfile::Builder::new().prefix("bucky-e2e-cli.").tempdir().unwrap();
        for i in 0..n {
            std::fs::create_dir_all(dir.path().join(format!("node{i}/whisper"))).unwrap();
        }
        TestCluster {
            dir,
            ips,
            port,
            hash: hash.into(),
            replicas,
            agent_args: Vec::new(),
            agents: (0..n).map(|_| None).collect(),
            generation: 0,
        }
    }

    /// Node `i`'s whisper root.
    pub(crate) fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}/whisper"))
    }

    /// `ip:port` of node `i`.
    pub(crate) fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.ips[i], self.port)
    }

    /// The seed (node 0).
    pub(crate) fn seed(&self) -> String {
        self.addr(0)
    }

    /// Starts every agent (all nodes in the ring) and waits until they answer.
    pub(crate) fn start(&mut self) {
        let ring = self.ips.clone();
        self.start_with_ring(&ring, &(0..self.ips.len()).collect::<Vec<_>>());
    }

    /// Starts agents `which` with `ring` as their ring.
    pub(crate) fn start_with_ring(&mut self, ring: &[String], which: &[usize]) {
        self.generation += 1;
        for &i in which {
            assert!(self.agents[i].is_none(), "node {i} already running");
            let log = self.log_path(i);
            let child = Command::new(bin("bucky-agent"))
                .args(["-b", &self.addr(i), "-n", &self.ips[i]])
                .arg("-p")
                .arg(self.data(i))
                .args(["--hash", &self.hash, "--replicas", &self.replicas.to_string()])
                .args(&self.agent_args)
                .args(ring)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap())
                .spawn()
                .expect("start bucky-agent");
            self.agents[i] = Some(child);
        }
        for &i in which {
            self.wait_ready(i);
        }
    }

    fn wait_ready(&mut self, i: usize) {
        let (addr, log) = (self.addr(i), self.log_path(i));
        wait_for_hashring(self.agents[i].as_mut().unwrap(), &addr, &format!("agent {i}"), &log);
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}/agent.{}.log", self.generation))
    }

    /// The latest log of node `i`.
    pub(crate) fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }

    /// Kills node `i`.
    pub(crate) fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.agents[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Kills every node.
    pub(crate) fn stop(&mut self) {
        for i in 0..self.agents.len() {
            self.kill(i);
        }
    }

    /// Runs `bucky <cmd> -h SEED <rest…>`.
    pub(crate) fn bucky(&self, args: &[&str]) -> Output {
        self.bucky_stdin(args, b"")
    }

    /// Same, with `stdin`.
    pub(crate) fn bucky_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        let seed = self.seed();
        let mut full: Vec<&str> = vec![args[0], "-h", &seed];
        full.extend_from_slice(&args[1..]);
        run_bucky(&full, stdin)
    }

    /// Creates (or updates) metric `name` on node `i` directly on disk with `points`.
    pub(crate) fn write_metric(&self, i: usize, name: &str, points: &[(i64, f64)]) {
        write_metric(&self.data(i), name, points);
    }

    /// Every stored point of `name` on node `i` (finest archive), or `None` if it has no file.
    pub(crate) fn points(&self, i: usize, name: &str) -> Option<BTreeMap<i64, f64>> {
        read_points(&self.data(i), name)
    }

    /// Node index of an `ip` or `ip:port` string.
    pub(crate) fn index_of(&self, node: &str) -> usize {
        let ip = node.split([':', '=']).next().unwrap();
        self.ips.iter().position(|i| i == ip).unwrap_or_else(|| panic!("{node} is not a node of {:?}", self.ips))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The whisper path of `name` below `root`.
pub(crate) fn metric_path(root: &Path, name: &str) -> PathBuf {
    let mut path = root.to_owned();
    let parts: Vec<&str> = name.split('.').collect();
    for part in &parts[..parts.len() - 1] {
        path.push(part);
    }
    path.push(format!("{}.wsp", parts[parts.len() - 1]));
    path
}

/// Creates (schema 1m:1d) or updates `name` below `root`.
pub(crate) fn write_metric(root: &Path, name: &str, points: &[(i64, f64)]) {
    let path = metric_path(root, name);
    if !path.exists() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        whisper::create(&path, &Retention::parse_list("1m:1d").unwrap(), &CreateOptions::default()).unwrap();
    }
    let file = WhisperFile::open_rw(&path).unwrap();
    let points: Vec<Point> = points.iter().map(|&(t, v)| Point::new(t, v)).collect();
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    file.update_many(&points, now).unwrap();
}

/// The finest archive's points of `name` below `root`.
pub(crate) fn read_points(root: &Path, name: &str) -> Option<BTreeMap<i64, f64>> {
    let path = metric_path(root, name);
    if !path.exists() {
        return None;
    }
    let file = WhisperFile::open(&path).unwrap();
    Some(file.dump().unwrap()[0].iter().map(|&(t, v)| (i64::from(t), v)).collect())
}

/// Runs the `bucky` binary with a deadline; kills it and panics if it hangs.
pub(crate) fn run_bucky(args: &[&str], stdin: &[u8]) -> Output {
    run_bucky_with(args, &[], stdin)
}

/// [`run_bucky`] with more environment variables (`env` is set after `BUCKYHOST` is removed).
pub(crate) fn run_bucky_with(args: &[&str], env: &[(&str, &str)], stdin: &[u8]) -> Output {
    let mut child = Command::new(bin("bucky"))
        .args(args)
        .env("BUCKY_NO_PROGRESS", "1")
        .env_remove("BUCKYHOST")
        .env_remove("BUCKY_TOKEN_FILE")
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run bucky");
    wait_output(&mut child, stdin, COMMAND_TIMEOUT, &format!("bucky {}", args.join(" ")))
}

/// Feeds stdin, collects stdout/stderr, and enforces `timeout`.
pub(crate) fn wait_output(child: &mut Child, stdin: &[u8], timeout: Duration, what: &str) -> Output {
    let mut input = child.stdin.take().unwrap();
    let stdin = stdin.to_vec();
    let writer = thread::spawn(move || {
        let _ = input.write_all(&stdin);
    });
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = out.read_to_end(&mut buf);
        buf
    });
    let err_reader = thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = err.read_to_end(&mut buf);
        buf
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = err_reader.join().unwrap();
            panic!("{what} hung for {timeout:?}; stderr:\n{}", String::from_utf8_lossy(&stderr));
        }
        thread::sleep(Duration::from_millis(20));
    };
    let _ = writer.join();
    Output { status, stdout: out_reader.join().unwrap(), stderr: err_reader.join().unwrap() }
}
