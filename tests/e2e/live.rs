//! Live-cluster proof (issue 7): real carbon-cache daemons (carbon 1.1.10, `WHISPER_LOCK_WRITES = True`)
//! writing the same whisper files that `bucky-agent` heals, and a running agent under a storm of hostile
//! requests. Every test starts its own processes on private loopback addresses and stops them on drop.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bucky_e2e::{bin, free_port, oracle_python};
use whisper::{create, CreateOptions, Point, Retention, WhisperBuf};

/// The schema carbon-cache gives every metric in these tests.
const SCHEMA: &str = "1s:1h,1m:1d";

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// A child process killed (and reaped) on drop, with its output in a log file.
struct Daemon {
    name: String,
    child: Child,
    log: PathBuf,
}

impl Daemon {
    fn spawn(name: &str, mut command: Command, log: PathBuf) -> Daemon {
        let out = std::fs::File::create(&log).expect("create log");
        let err = out.try_clone().expect("clone log");
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .unwrap_or_else(|e| panic!("start {name}: {e}"));
        Daemon { name: name.to_owned(), child, log }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits until `addr` accepts TCP connections, or panics with the log.
    fn wait_listening(&mut self, addr: &str, limit: Duration) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if TcpStream::connect(addr).is_ok() {
                return;
            }
            assert!(self.alive(), "{} exited before listening on {addr}:\n{}", self.name, self.log());
            thread::sleep(Duration::from_millis(100));
        }
        panic!("{} not listening on {addr} after {limit:?}:\n{}", self.name, self.log());
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One storage node: a carbon-cache writing `<root>/storage/whisper` and an agent serving it.
struct LiveNode {
    prefix: PathBuf,
    line_addr: String,
    agent_addr: String,
    carbon: Daemon,
    _agent: Daemon,
}

impl LiveNode {
    fn start(ip: &str, root: &Path, ring: &[&str], agent_flags: &[&str]) -> LiveNode {
        let prefix = root.join("storage/whisper");
        for dir in ["conf", "storage/whisper", "storage/lists", "log", "run"] {
            std::fs::create_dir_all(root.join(dir)).expect("node dirs");
        }
        let (line, pickle, query) = (free_port(ip), free_port(ip), free_port(ip));
        let conf = format!(
            "[cache]\nSTORAGE_DIR = {root}/storage/\nLOCAL_DATA_DIR = {root}/storage/whisper/\n\
             WHITELISTS_DIR = {root}/storage/lists/\nCONF_DIR = {root}/conf/\nLOG_DIR = {root}/log/\n\
             PID_DIR = {root}/run/\nENABLE_LOGROTATION = False\nUSER =\nMAX_CACHE_SIZE = inf\n\
             MAX_UPDATES_PER_SECOND = 100000\nMAX_CREATES_PER_MINUTE = inf\n\
             LINE_RECEIVER_INTERFACE = {ip}\nLINE_RECEIVER_PORT = {line}\nENABLE_UDP_LISTENER = False\n\
             PICKLE_RECEIVER_INTERFACE = {ip}\nPICKLE_RECEIVER_PORT = {pickle}\n\
             CACHE_QUERY_INTERFACE = {ip}\nCACHE_QUERY_PORT = {query}\nUSE_FLOW_CONTROL = True\n\
             LOG_UPDATES = False\nLOG_CREATES = False\nLOG_CACHE_HITS = False\nLOG_CACHE_QUEUE_SORTS = False\n\
             CACHE_WRITE_STRATEGY = sorted\nWHISPER_AUTOFLUSH = False\nWHISPER_LOCK_WRITES = True\n\
             WHISPER_FALLOCATE_CREATE = False\nCARBON_METRIC_INTERVAL = 0\nENABLE_TAGS = False\n",
            root = root.display()
        );
        std::fs::write(root.join("conf/carbon.conf"), conf).expect("carbon.conf");
        std::fs::write(
            root.join("conf/storage-schemas.conf"),
            format!("[all]\npattern = .*\nretentions = {SCHEMA}\n"),
        )
        .expect("schemas");
        std::fs::write(
            root.join("conf/storage-aggregation.conf"),
            "[all]\npattern = .*\nxFilesFactor = 0\naggregationMethod = average\n",
        )
        .expect("aggregation");
        let python = oracle_python();
        let carbon_cache = python.parent().expect("venv bin").join("carbon-cache.py");
        let mut command = Command::new(&python);
        command
            .arg(&carbon_cache)
            .args(["--config", &root.join("conf/carbon.conf").to_string_lossy()])
            .args(["--nodaemon", "--pidfile", &root.join("run/carbon.pid").to_string_lossy(), "start"]);
        for (key, _) in std::env::vars() {
            if key.starts_with("GRAPHITE_") {
                command.env_remove(key);
            }
        }
        command.env("GRAPHITE_ROOT", root);
        let mut carbon = Daemon::spawn(&format!("carbon-cache {ip}"), command, root.join("log/carbon.out"));
        let line_addr = format!("{ip}:{line}");
        carbon.wait_listening(&line_addr, Duration::from_secs(60));

        let agent_port = free_port(ip);
        let agent_addr = format!("{ip}:{agent_port}");
        let mut command = Command::new(bin("bucky-agent"));
        command
            .args(["-b", &agent_addr, "-n", ip, "-p", &prefix.to_string_lossy()])
            .args(agent_flags)
            .args(ring)
            .env("RUST_LOG", "warn");
        let mut agent = Daemon::spawn(&format!("bucky-agent {ip}"), command, root.join("log/agent.out"));
        agent.wait_listening(&agent_addr, Duration::from_secs(30));
        LiveNode { prefix, line_addr, agent_addr, carbon, _agent: agent }
    }

    /// Sends plaintext-protocol lines to carbon-cache.
    fn send(&self, lines: &str) {
        let mut stream = TcpStream::connect(&self.line_addr).expect("connect to carbon line receiver");
        stream.write_all(lines.as_bytes()).expect("send lines");
    }
}

/// A value that says which metric and which second it belongs to.
fn encoded(metric: usize, t: i64) -> f64 {
    (metric as f64) * 1e7 + (t % 1_000_000) as f64 + 0.25
}

/// The whisper bytes of a file with `points` in the test schema.
fn whisper_bytes(points: &[(i64, f64)], now: i64) -> Vec<u8> {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("body.wsp");
    create(&path, &Retention::parse_list(SCHEMA).expect("schema"), &CreateOptions { x_files_factor: 0.0, ..Default::default() })
        .expect("create body");
    let pts: Vec<Point> = points.iter().copied().map(Point::from).collect();
    whisper::WhisperFile::open_rw(&path).expect("open body").update_many(&pts, now).expect("fill body");
    std::fs::read(&path).expect("read body")
}

/// A minimal HTTP/1.1 exchange on a raw socket: the path is sent byte for byte (no URL normalisation),
/// which is what a hostile client does. Returns the status code and the body.
fn raw_request(addr: &str, method: &str, path: &[u8], headers: &[(&str, String)], body: &[u8]) -> (u16, Vec<u8>) {
    let mut stream = TcpStream::connect(addr).expect("connect to agent");
    stream.set_read_timeout(Some(Duration::from_secs(30))).expect("timeout");
    let mut request = Vec::new();
    request.extend_from_slice(method.as_bytes());
    request.push(b' ');
    request.extend_from_slice(path);
    request.extend_from_slice(b" HTTP/1.1\r\nHost: bucky\r\nConnection: close\r\n");
    for (name, value) in headers {
        request.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
    }
    request.extend_from_slice(format!("Content-Length: {}\r\n\r\n", body.len()).as_bytes());
    request.extend_from_slice(body);
    // The server may answer (413, 400) before reading the whole body and close: that is fine.
    let _ = stream.write_all(&request);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let status = std::str::from_utf8(&response)
        .ok()
        .and_then(|text| text.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let body = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| response[at + 4..].to_vec())
        .unwrap_or_default();
    (status, body)
}

fn stat_header(name: &str, size: usize) -> String {
    format!(r#"{{"Name":"{name}","Size":{size},"Mode":420,"ModTime":{},"Encoding":0}}"#, now())
}

/// Every file under `root` with its length and content.
fn snapshot(root: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.insert(path.clone(), std::fs::read(&path).unwrap_or_default());
            }
        }
    }
    out
}

/// Scenario 3: the agent heals files that carbon-cache is writing at the same time, both taking
/// whisper's flock. Nobody deadlocks, every heal finishes in bounded time, and afterwards each file holds
/// every point carbon received and every point the heals brought.
#[test]
fn live_heal_while_carbon_cache_writes_the_same_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ip = "127.0.0.51";
    let node = LiveNode::start(ip, dir.path(), &[ip], &["--lock-timeout", "20"]);
    let metrics: Vec<String> = (0..12).map(|i| format!("live.flock.m{i}")).collect();

    // carbon creates the files first (a heal that creates a file carbon is about to create would make
    // carbon drop its batch: that race is rebalance's business, verified there by content).
    let start = now();
    let first: String = metrics.iter().enumerate().map(|(i, m)| format!("{m} {} {start}\n", encoded(i, start))).collect();
    node.send(&first);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !metrics.iter().all(|m| node.prefix.join(m.replace('.', "/") + ".wsp").exists()) {
        assert!(Instant::now() < deadline, "carbon-cache did not create the files:\n{}", node.carbon.log());
        thread::sleep(Duration::from_millis(100));
    }

    // Historic points (older than anything carbon writes) for the heals to bring in.
    let historic: Vec<(i64, f64)> = (0..600).map(|k| start - 3000 + k).map(|t| (t, -(t as f64))).collect();
    let body = whisper_bytes(&historic, start);

    let stop = Arc::new(AtomicBool::new(false));
    let heals = Arc::new(AtomicU64::new(0));
    let slowest_heal_ms = Arc::new(AtomicU64::new(0));
    let healer = {
        let (stop, heals, slowest) = (stop.clone(), heals.clone(), slowest_heal_ms.clone());
        let (addr, metrics, body) = (node.agent_addr.clone(), metrics.clone(), body.clone());
        thread::spawn(move || {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let name = &metrics[i % metrics.len()];
                let began = Instant::now();
                let (status, reply) = raw_request(
                    &addr,
                    "POST",
                    format!("/metrics/{name}").as_bytes(),
                    &[
                        ("Content-Type", "application/octet-stream".into()),
                        ("X-Metric-Stat", stat_header(name, body.len())),
                    ],
                    &body,
                );
                assert_eq!(status, 200, "heal of {name} failed: {}", String::from_utf8_lossy(&reply));
                slowest.fetch_max(began.elapsed().as_millis() as u64, Ordering::Relaxed);
                heals.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
        })
    };

    // Carbon traffic for every metric, one point per second, while the heals run.
    let mut sent: Vec<(usize, i64)> = metrics.iter().enumerate().map(|(i, _)| (i, start)).collect();
    let traffic_end = Instant::now() + Duration::from_secs(8);
    let mut t = start;
    while Instant::now() < traffic_end {
        thread::sleep(Duration::from_millis(500));
        let now = now();
        while t < now {
            t += 1;
            let lines: String =
                metrics.iter().enumerate().map(|(i, m)| format!("{m} {} {t}\n", encoded(i, t))).collect();
            node.send(&lines);
            sent.extend((0..metrics.len()).map(|i| (i, t)));
        }
    }
    stop.store(true, Ordering::Relaxed);
    healer.join().expect("healer thread");
    assert!(heals.load(Ordering::Relaxed) >= 10, "only {} heals completed", heals.load(Ordering::Relaxed));

    // Wait until carbon has flushed every point, then check every point through the agent.
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(30)).build().expect("client");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut missing = Vec::new();
        for (i, name) in metrics.iter().enumerate() {
            let bytes = client
                .get(format!("http://{}/metrics/{name}", node.agent_addr))
                .send()
                .and_then(|r| r.error_for_status())
                .and_then(|r| r.bytes())
                .expect("GET through the agent");
            let file = WhisperBuf::from_bytes(bytes.to_vec()).expect("a valid whisper file");
            for &(metric, t) in sent.iter().filter(|(m, _)| *m == i) {
                if file.value_at(0, t) != Some(encoded(metric, t)) {
                    missing.push(format!("{name}@{t} (carbon)"));
                }
            }
            for &(t, v) in &historic {
                if file.value_at(0, t) != Some(v) {
                    missing.push(format!("{name}@{t} (heal)"));
                }
            }
        }
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} points missing after the flush window, e.g. {:?}\ncarbon log:\n{}",
            missing.len(),
            &missing[..missing.len().min(10)],
            node.carbon.log()
        );
        thread::sleep(Duration::from_secs(1));
    }
    eprintln!(
        "live flock: all {} carbon points and {} healed points ({} per file) present in the {} files; {} heals, slowest {} ms",
        sent.len(),
        historic.len() * metrics.len(),
        historic.len(),
        metrics.len(),
        heals.load(Ordering::Relaxed),
        slowest_heal_ms.load(Ordering::Relaxed)
    );
}

/// A tiny deterministic generator (xorshift64*), so a failure can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(2_685_821_657_736_338_717)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Scenario 4: thousands of hostile requests against running agents (one with JWT auth): random and
/// malicious names, truncated and random whisper bodies, wrong `X-Metric-Stat`, oversized bodies, snappy
/// garbage, bad tokens. The agents stay up, answer every request with a 4xx, and nothing on disk changes,
/// inside or outside their prefixes.
#[test]
fn live_hostile_requests_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let seed = std::env::var("BUCKY_HOSTILE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1) | 1
    });
    let mut rng = Rng(seed);
    let requests: usize = std::env::var("BUCKY_HOSTILE_REQUESTS").ok().and_then(|s| s.parse().ok()).unwrap_or(3000);

    // Two agents over one tree: a secret next to the prefix, existing metrics inside it.
    let prefix = root.join("prefix");
    std::fs::create_dir_all(prefix.join("ok")).expect("prefix");
    std::fs::write(root.join("secret.wsp"), b"SECRET-OUTSIDE-THE-PREFIX").expect("secret");
    std::fs::write(root.join("secret"), b"SECRET-OUTSIDE-THE-PREFIX").expect("secret");
    let t0 = now();
    let valid = whisper_bytes(&[(t0 - 60, 1.0), (t0 - 120, 2.0)], t0);
    for i in 0..5 {
        std::fs::write(prefix.join(format!("ok/m{i}.wsp")), &valid).expect("seed metric");
    }
    let logs = tempfile::tempdir().expect("log dir");
    std::fs::write(root.join("jwt.secret"), b"hostile-test-secret").expect("jwt secret");
    let before = snapshot(root);

    let mut agents = Vec::new();
    for (ip, flags) in [("127.0.0.61", vec![]), ("127.0.0.62", vec!["--auth-jwt-secret-file".to_owned(), root.join("jwt.secret").to_string_lossy().into_owned()])] {
        let addr = format!("{ip}:{}", free_port(ip));
        let mut command = Command::new(bin("bucky-agent"));
        command
            .args(["-b", &addr, "-n", ip, "-p", &prefix.to_string_lossy(), "--max-body", "65536"])
            .args(&flags)
            .arg(ip)
            .env("RUST_LOG", "warn");
        let mut agent = Daemon::spawn(&format!("bucky-agent {ip}"), command, logs.path().join(format!("{ip}.log")));
        agent.wait_listening(&addr, Duration::from_secs(30));
        agents.push((agent, addr));
    }

    let hostile_names: Vec<Vec<u8>> = [
        "..", "../secret", "..%2fsecret", "%2e%2e/secret", "%2e%2e%2fsecret", "a..b", ".", "a/../../secret",
        "/etc/passwd", "%2Fetc%2Fpasswd", "a%00b", "ok.m0%00", "a%01b", "a%0ab", "a%0d%0aX-Injected:%201", ".hidden",
        "a.", ".a", "a.b..", "ok/../../secret", "%2e", "ok.%2e%2e.secret", "a\\..\\secret", "%5c..%5csecret",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .chain([
        "x".repeat(300).into_bytes(),
        format!("a.{}", "b".repeat(256)).into_bytes(),
        vec![b'a'; 5000],
        "a.".repeat(2100).into_bytes(),
    ])
    .collect();
    let ok_names: Vec<String> = (0..5).map(|i| format!("ok.m{i}")).chain(["new.metric".to_owned()]).collect();
    let methods = ["GET", "HEAD", "POST", "PUT", "DELETE"];
    let tokens = [
        String::new(),
        "garbage".to_owned(),
        "a.b.c".to_owned(),
        // header {"alg":"none"} with ops "*": must not be accepted.
        "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJuYW1lc3BhY2VzIjpbIioiXSwib3BzIjpbIioiXX0.".to_owned(),
        // HS256 signed with another secret.
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJuYW1lc3BhY2VzIjpbIioiXSwib3BzIjpbIioiXX0.2bmUV0kxU3cEJbYXqMkAfkr2jH-dTHsL3g7s5NzQp4Q".to_owned(),
    ];

    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    for n in 0..requests {
        let (agent_index, authed) = if rng.below(4) == 0 { (1, true) } else { (0, false) };
        let addr = agents[agent_index].1.clone();
        let method = methods[rng.below(methods.len())];
        // Hostile names get valid bodies; valid names get hostile bodies: nothing may be accepted.
        let hostile_name = rng.below(2) == 0 || method == "GET" || method == "HEAD" || method == "DELETE";
        let (path, body, name_for_stat): (Vec<u8>, Vec<u8>, String) = if hostile_name {
            let name = hostile_names[rng.below(hostile_names.len())].clone();
            let mut path = b"/metrics/".to_vec();
            path.extend_from_slice(&name);
            (path, valid.clone(), String::from_utf8_lossy(&name).into_owned())
        } else {
            let name = ok_names[rng.below(ok_names.len())].clone();
            let body = match rng.below(6) {
                0 => valid[..rng.below(valid.len())].to_vec(),
                1 => {
                    let len = rng.below(3000);
                    rng.bytes(len)
                }
                2 => {
                    // A flipped byte of the aggregation type, maxRetention or archive count always makes
                    // the header invalid (an xff byte might not).
                    let mut b = valid.clone();
                    let at = [0, 1, 2, 3, 4, 5, 6, 7, 12, 13, 14, 15][rng.below(12)];
                    b[at] ^= 0xff;
                    b
                }
                3 => vec![0u8; 70_000],
                4 => {
                    let mut b = vec![0xff, 0x06, 0x00, 0x00];
                    let len = rng.below(200);
                    b.extend(rng.bytes(len));
                    b
                }
                _ => valid.clone(), // paired with a wrong X-Metric-Stat below
            };
            (format!("/metrics/{name}").into_bytes(), body, name)
        };
        let mut headers = vec![("Content-Type", "application/octet-stream".to_owned())];
        // Hostile names carry a correct stat, so the name check is what refuses them; a valid body under a
        // valid name is paired with a wrong size.
        let size = if !hostile_name && body == valid { valid.len() + 1 + rng.below(100) } else { body.len() };
        match rng.below(5) {
            0 => headers.push(("X-Metric-Stat", "{not json".to_owned())),
            1 => headers.push(("X-Metric-Stat", r#"{"Name":"x","Size":-1}"#.to_owned())),
            _ => headers.push(("X-Metric-Stat", stat_header(&name_for_stat.replace('"', ""), size))),
        }
        if rng.below(4) == 0 {
            headers.push(("Content-Encoding", "snappy".to_owned()));
        }
        if rng.below(6) == 0 {
            headers.push(("If-Match", "\"nope\"".to_owned()));
        }
        if authed {
            headers.push(("X-Buckyd-Authorization", tokens[rng.below(tokens.len())].clone()));
        }
        let (status, reply) = raw_request(&addr, method, &path, &headers, &body);
        *statuses.entry(status).or_default() += 1;
        assert!(
            (400..500).contains(&status) || (status == 200 && (method == "GET" || method == "HEAD") && !hostile_name),
            "request {n} (seed {seed}): {method} {} answered {status}: {}",
            String::from_utf8_lossy(&path),
            String::from_utf8_lossy(&reply)
        );
        assert!(
            !reply.windows(6).any(|w| w == b"SECRET"),
            "request {n} (seed {seed}) leaked a file outside the prefix"
        );
        if n % 500 == 0 {
            for (agent, _) in agents.iter_mut() {
                assert!(agent.alive(), "{} died (seed {seed}):\n{}", agent.name, agent.log());
            }
        }
    }
    for (agent, addr) in agents.iter_mut() {
        assert!(agent.alive(), "{} died (seed {seed}):\n{}", agent.name, agent.log());
        let (status, _) = raw_request(addr, "GET", b"/hashring", &[], b"");
        assert!(status == 200 || status == 401, "{} no longer serves /hashring: {status}", agent.name);
    }
    let after = snapshot(root);
    let changed: Vec<_> = before
        .iter()
        .filter(|(path, content)| after.get(*path) != Some(*content))
        .map(|(path, _)| path.clone())
        .chain(after.keys().filter(|p| !before.contains_key(*p)).cloned())
        .collect();
    assert!(changed.is_empty(), "hostile requests changed files (seed {seed}): {changed:?}");
    eprintln!("live hostile: {requests} requests (seed {seed}), statuses {statuses:?}, nothing changed on disk");
}
