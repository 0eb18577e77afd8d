//! bucky-agent end to end: real `bucky-agent` processes on 127.0.0.x loopback addresses, real HTTP.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use bucky_e2e::{bin, free_port, hold_flock};
use bucky_wire::{batch, MetricStat, RingInfo, AUTH_HEADER, METRIC_STAT_HEADER};
use reqwest::blocking::{Client, Response};
use reqwest::StatusCode;

/// A running `bucky-agent`, killed on drop.
pub(crate) struct TestAgent {
    pub(crate) child: Child,
    base: String,
    root: PathBuf,
    log: PathBuf,
}

impl TestAgent {
    /// Starts an agent on `ip:port` serving `root`, whose ring is `ring` (this node is `ip`), with extra
    /// flags, and waits until it answers.
    pub(crate) fn start(ip: &str, port: u16, root: &Path, ring: &[&str], extra: &[&str]) -> TestAgent {
        let log = root.with_extension(format!("{port}.log"));
        let mut command = Command::new(bin("bucky-agent"));
        command
            .args(["-b", &format!("{ip}:{port}"), "-n", ip])
            .args(["-prefix", root.to_str().unwrap()])
            .args(extra)
            .args(ring)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = command.spawn().expect("start bucky-agent");
        let mut agent = TestAgent { child, base: format!("http://{ip}:{port}"), root: root.to_owned(), log };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = client();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("bucky-agent exited with {status}:\n{}", self.log());
            }
            if client.get(self.url("/hashring")).send().is_ok_and(|r| r.status() == StatusCode::OK) {
                return;
            }
            assert!(Instant::now() < deadline, "bucky-agent did not come up:\n{}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub(crate) fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path_of(&self, name: &str) -> PathBuf {
        self.root.join(name.replace('.', "/") + ".wsp")
    }

    /// Lists until the agent stops answering 202.
    fn list(&self, client: &Client, query: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let response = client.get(self.url(&format!("/metrics{query}"))).send().unwrap();
            match response.status() {
                StatusCode::OK => return response.json().unwrap(),
                StatusCode::ACCEPTED => assert!(Instant::now() < deadline, "list never ready"),
                status => panic!("list answered {status}"),
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for TestAgent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn client() -> Client {
    Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

pub(crate) use test_support::minutes::wsp;
use test_support::minutes::{now, points};

pub(crate) fn put_file(root: &Path, name: &str, bytes: &[u8]) {
    let path = root.join(name.replace('.', "/") + ".wsp");
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, bytes).unwrap();
}

fn stat_header(name: &str, size: usize) -> String {
    MetricStat { name: name.into(), size: size as i64, mode: 420, mod_time: now(), ..MetricStat::default() }
        .to_header_value()
}

pub(crate) fn upload(client: &Client, method: reqwest::Method, url: &str, name: &str, bytes: &[u8]) -> Response {
    client
        .request(method, url)
        .header("Content-Type", "application/octet-stream")
        .header(METRIC_STAT_HEADER, stat_header(name, bytes.len()))
        .body(bytes.to_vec())
        .send()
        .unwrap()
}

fn metric_stat(response: &Response) -> MetricStat {
    MetricStat::from_header_value(response.headers()[METRIC_STAT_HEADER].to_str().unwrap()).unwrap()
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    encoder.write_all(bytes).unwrap();
    encoder.into_inner().unwrap()
}

fn unsnappy(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    snap::read::FrameDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn hidden_temp_files(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with('.') && n.contains(".bucky-tmp."))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn agent_lists_202_then_200_and_tracks_its_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    for name in ["a.b.c", "a.b.d", "carbon.agents.x.cpu"] {
        put_file(&root, name, b"");
    }
    let ip = "127.0.0.2";
    let port = free_port(ip);
    let agent = TestAgent::start(ip, port, &root, &[ip, "127.0.0.3"], &[]);
    let client = client();
    // force always rebuilds: 202 while the scan runs, then the list.
    let response = client.get(agent.url("/metrics?force=true")).send().unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(response.text().unwrap(), "Cache update in progress.\n");
    assert_eq!(agent.list(&client, ""), ["a.b.c", "a.b.d", "carbon.agents.x.cpu"]);
    assert_eq!(agent.list(&client, "?regex=%5Ea%5C."), ["a.b.c", "a.b.d"]);
    let response = client.post(agent.url("/metrics")).form(&[("list", r#"["a.b.d","zz"]"#)]).send().unwrap();
    assert_eq!(response.text().unwrap(), r#"["a.b.d"]"#);
    // The agent's own creates and deletes show at once.
    assert_eq!(
        upload(&client, reqwest::Method::POST, &agent.url("/metrics/new.m"), "new.m", &wsp(&[(1, 1.0)])).status(),
        StatusCode::OK
    );
    assert_eq!(client.delete(agent.url("/metrics/a.b.c")).send().unwrap().status(), StatusCode::OK);
    assert_eq!(agent.list(&client, ""), ["a.b.d", "carbon.agents.x.cpu", "new.m"]);
    // A file carbon-cache creates shows after the next rescan.
    put_file(&root, "carbon.new", b"");
    assert_eq!(client.get(agent.url("/metrics?force=1")).send().unwrap().status(), StatusCode::ACCEPTED);
    assert!(agent.list(&client, "").contains(&"carbon.new".to_owned()));
    let ring: RingInfo = client.get(agent.url("/hashring")).send().unwrap().json().unwrap();
    assert_eq!((ring.name.as_str(), ring.algo.as_str(), ring.nodes.len()), (ip, "carbon", 2));
}

#[test]
fn agent_serves_get_head_post_put_delete_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    fs::create_dir_all(&root).unwrap();
    let ip = "127.0.0.4";
    let port = free_port(ip);
    // Go-style flags, as in a buckyd unit file.
    let agent = TestAgent::start(
        ip,
        port,
        &root,
        &[&format!("{ip}:2003=a")],
        &["-hash", "jump_fnv1a", "-replicas", "1", "-timeout", "60", "-sparse"],
    );
    let client = client();
    let url = agent.url("/metrics/srv.web1.cpu");
    let first = wsp(&[(1, 1.0), (2, 2.0)]);

    // POST (create), HEAD, GET, GET snappy.
    let response = upload(&client, reqwest::Method::POST, &url, "srv.web1.cpu", &first);
    assert_eq!(response.status(), StatusCode::OK);
    let report: serde_json::Value = response.json().unwrap();
    assert_eq!(report["Created"], true);
    assert_eq!(fs::read(agent.path_of("srv.web1.cpu")).unwrap(), first);
    let response = client.head(&url).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let stat = metric_stat(&response);
    assert_eq!((stat.name.as_str(), stat.size, stat.encoding), ("srv.web1.cpu", first.len() as i64, 0));
    assert_eq!(client.head(agent.url("/metrics/srv.nope")).send().unwrap().status(), StatusCode::NOT_FOUND);
    let response = client.get(&url).send().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let etag = response.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(response.bytes().unwrap().as_ref(), first.as_slice());
    let response = client.get(&url).header("Accept-Encoding", "snappy").send().unwrap();
    assert_eq!(response.headers()["content-encoding"], "snappy");
    assert_eq!(metric_stat(&response).encoding, 1);
    assert_eq!(unsnappy(&response.bytes().unwrap()), first);

    // POST (heal) with a snappy body: the union, no point overwritten.
    let second = wsp(&[(2, 20.0), (3, 3.0)]);
    let response = client
        .post(&url)
        .header("Content-Type", "application/octet-stream")
        .header("Content-Encoding", "snappy")
        .header(METRIC_STAT_HEADER, stat_header("srv.web1.cpu", second.len()))
        .body(snappy(&second))
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(points(&fs::read(agent.path_of("srv.web1.cpu")).unwrap()), [(1, 1.0), (2, 2.0), (3, 3.0)]);

    // PUT with the stale ETag: 412; without: replaced.
    let third = wsp(&[(9, 9.0)]);
    let response = client
        .put(&url)
        .header("Content-Type", "application/octet-stream")
        .header(METRIC_STAT_HEADER, stat_header("srv.web1.cpu", third.len()))
        .header("If-Match", &etag)
        .body(third.clone())
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(upload(&client, reqwest::Method::PUT, &url, "srv.web1.cpu", &third).status(), StatusCode::OK);
    assert_eq!(fs::read(agent.path_of("srv.web1.cpu")).unwrap(), third);

    // DELETE with a stale ETag keeps the file; with the current one deletes it; then 404.
    let response = client.delete(&url).header("If-Match", &etag).send().unwrap();
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    let current = client.get(&url).send().unwrap().headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(client.delete(&url).header("If-Match", &current).send().unwrap().status(), StatusCode::OK);
    assert!(!agent.path_of("srv.web1.cpu").exists());
    let response = client.delete(&url).send().unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(response.text().unwrap(), "Metric not found.\n");

    // Hostile input over the wire: 400, nothing written anywhere.
    for path in ["/metrics/a..b", "/metrics/..%2F..%2Fescape", "/metrics/a%00b"] {
        let response = upload(&client, reqwest::Method::POST, &agent.url(path), "x", &first);
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    assert!(!dir.path().join("escape.wsp").exists());
    assert_eq!(client.patch(&url).send().unwrap().status(), StatusCode::BAD_REQUEST);
    assert_eq!(client.get(agent.url("/")).send().unwrap().status(), StatusCode::NOT_FOUND);
}

#[test]
fn agent_offloads_a_fetch_from_a_ring_member() {
    let dir = tempfile::tempdir().unwrap();
    let (ip_a, ip_b) = ("127.0.0.5", "127.0.0.6");
    let (port_a, port_b) = (free_port(ip_a), free_port(ip_b));
    let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(&root_b).unwrap();
    let source = wsp(&[(1, 1.0), (5, 5.0)]);
    put_file(&root_a, "src.metric", &source);
    let ring = [ip_a, ip_b];
    let peers = ["--peer-port", &port_a.to_string(), "--peer-port", &port_b.to_string()].map(str::to_owned);
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    let _a = TestAgent::start(ip_a, port_a, &root_a, &ring, &peers);
    let b = TestAgent::start(ip_b, port_b, &root_b, &ring, &peers);
    let client = client();
    let server = format!("{ip_a}:{port_a}");
    for (dst, no_encoding) in [("dst.snappy", "false"), ("dst.plain", "true")] {
        let response = client
            .post(b.url(&format!("/metrics/{dst}?fetch_offload=true")))
            .form(&[("server", server.as_str()), ("metric", "src.metric"), ("no_encoding", no_encoding)])
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text());
        assert_eq!(fs::read(b.path_of(dst)).unwrap(), source);
    }
    // Heal into an existing destination.
    put_file(&root_b, "dst.partial", &wsp(&[(2, 2.0)]));
    let response = client
        .post(b.url("/metrics/dst.partial?fetch_offload=true"))
        .form(&[("server", server.as_str()), ("metric", "src.metric")])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(points(&fs::read(b.path_of("dst.partial")).unwrap()), [(1, 1.0), (2, 2.0), (5, 5.0)]);
    // Missing source: 404; a server outside the ring or on another port: 400, nothing fetched or written.
    let response = client
        .post(b.url("/metrics/dst.x?fetch_offload=true"))
        .form(&[("server", server.as_str()), ("metric", "src.nope")])
        .send()
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    for bad in [format!("127.0.0.9:{port_a}"), format!("{ip_a}:1"), "example.com:80".to_owned()] {
        let response = client
            .post(b.url("/metrics/dst.y?fetch_offload=true"))
            .form(&[("server", bad.as_str()), ("metric", "src.metric")])
            .send()
            .unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
    assert!(!b.path_of("dst.x").exists() && !b.path_of("dst.y").exists());
}

/// `POST /batch/offload` with the given `from` and entries (destination, source): the status and, on 200,
/// the answer's frames.
fn batch_offload(agent: &TestAgent, from: &str, entries: &[(&str, &str)]) -> (StatusCode, Vec<batch::Frame>) {
    let frames: Vec<batch::Frame> = entries
        .iter()
        .map(|(dst, src)| {
            let meta = batch::Meta { source: Some((*src).to_owned()), ..batch::Meta::default() };
            batch::Frame::new(*dst, 0, meta, Default::default())
        })
        .collect();
    let response = client()
        .post(agent.url(batch::OFFLOAD_PATH))
        .header("Content-Type", batch::CONTENT_TYPE)
        .header(batch::OFFLOAD_FROM_HEADER, from)
        .header(batch::VERIFY_AT_HEADER, now().to_string())
        .body(batch::encode(&frames))
        .send()
        .unwrap();
    let status = response.status();
    let body = response.bytes().unwrap();
    match status {
        StatusCode::OK => (status, batch::decode(body, &batch::Limits::default()).unwrap()),
        _ => (status, Vec::new()),
    }
}

/// The batch offload: B fetches a batch of sources from A (a ring member, at a `--peer-port`) with one
/// read, heals each, and answers with the replica checked against the source and the source's ETag (no
/// file); a missing source is that entry's 404. A `from` outside the ring, or on a port that is not a peer
/// port, is refused before anything is fetched: traps listening there see no connection.
#[test]
fn agent_batch_offload_fetches_only_from_ring_members_and_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let (ip_a, ip_b, ip_outside) = ("127.0.0.101", "127.0.0.102", "127.0.0.103");
    let (port_a, port_b) = (free_port(ip_a), free_port(ip_b));
    let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
    fs::create_dir_all(&root_b).unwrap();
    let source: Vec<(i64, f64)> = (1..=30).map(|m| (m, m as f64)).collect();
    put_file(&root_a, "src.one", &wsp(&source));
    put_file(&root_a, "src.two", &wsp(&source[..10]));
    put_file(&root_b, "dst.two", &wsp(&[(200, 2.0)]));
    let ring = [ip_a, ip_b];
    let peers = ["--peer-port", &port_a.to_string(), "--peer-port", &port_b.to_string()].map(str::to_owned);
    let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
    let a = TestAgent::start(ip_a, port_a, &root_a, &ring, &peers);
    let b = TestAgent::start(ip_b, port_b, &root_b, &ring, &peers);

    // Traps: an address outside the ring on the agents' port, and a ring member's host on another port.
    let outside = std::net::TcpListener::bind((ip_outside, port_a)).unwrap();
    let other_port = std::net::TcpListener::bind((ip_a, 0)).unwrap();
    let other = format!("{ip_a}:{}", other_port.local_addr().unwrap().port());
    for from in [format!("{ip_outside}:{port_a}"), other, "example.com:80".to_owned()] {
        let (status, _) = batch_offload(&b, &from, &[("dst.one", "src.one")]);
        assert_eq!(status, StatusCode::BAD_REQUEST, "{from}");
    }
    for trap in [&outside, &other_port] {
        trap.set_nonblocking(true).unwrap();
        assert!(trap.accept().is_err(), "the agent connected to an address it must not fetch from");
    }
    assert!(!b.path_of("dst.one").exists());

    let from = format!("{ip_a}:{port_a}");
    let (status, answers) =
        batch_offload(&b, &from, &[("dst.one", "src.one"), ("dst.gone", "src.nope"), ("dst.two", "src.two")]);
    assert_eq!(status, StatusCode::OK);
    assert_eq!(answers.iter().map(|f| f.status).collect::<Vec<_>>(), [200, 404, 200]);
    for (answer, src, held) in [(&answers[0], "src.one", 30), (&answers[2], "src.two", 10)] {
        let etag = client().get(a.url(&format!("/metrics/{src}"))).send().unwrap().headers()["etag"].clone();
        assert_eq!(answer.meta.source_etag.as_deref(), Some(etag.to_str().unwrap()), "{src}");
        let verdict = answer.meta.verified.clone().unwrap();
        assert_eq!((verdict.checked, verdict.missing), (held, 0), "{src}");
        assert!(answer.data.is_empty(), "no file in an offload answer");
    }
    assert_eq!(fs::read(b.path_of("dst.one")).unwrap(), fs::read(a.path_of("src.one")).unwrap());
    let mut merged = source[..10].to_vec();
    merged.push((200, 2.0));
    assert_eq!(points(&fs::read(b.path_of("dst.two")).unwrap()), merged);
    assert!(!b.path_of("dst.gone").exists());
    // The sources stay: deleting them is the client's step.
    assert!(a.path_of("src.one").exists() && a.path_of("src.two").exists());
}

#[test]
fn agent_auth_on_and_off() {
    let dir = tempfile::tempdir().unwrap();
    let secret_file = dir.path().join("secret");
    fs::write(&secret_file, "  topsecret\n").unwrap();
    let auth = bucky_agent::auth::Auth::new(b"topsecret".to_vec()).unwrap();
    let (ip_a, ip_b) = ("127.0.0.7", "127.0.0.8");
    let (port_a, port_b) = (free_port(ip_a), free_port(ip_b));
    let (root_a, root_b) = (dir.path().join("a"), dir.path().join("b"));
    put_file(&root_a, "sys.load", &wsp(&[(1, 1.0)]));
    fs::create_dir_all(&root_b).unwrap();
    let ring = [ip_a, ip_b];
    let secured = [
        "--auth-jwt-secret-file".to_owned(),
        secret_file.display().to_string(),
        "--peer-port".to_owned(),
        port_a.to_string(),
    ];
    let secured: Vec<&str> = secured.iter().map(String::as_str).collect();
    let a = TestAgent::start(ip_a, port_a, &root_a, &ring, &secured);
    let b = TestAgent::start(ip_b, port_b, &root_b, &ring, &secured);
    let client = client();
    let url = a.url("/metrics/sys.load");
    assert_eq!(client.get(&url).send().unwrap().status(), StatusCode::UNAUTHORIZED);
    let wrong = bucky_agent::auth::Auth::new(b"other".to_vec()).unwrap();
    let forged = wrong.sign(&serde_json::json!({"namespaces": ["*"], "ops": ["*"]}));
    assert_eq!(client.get(&url).header(AUTH_HEADER, &forged).send().unwrap().status(), StatusCode::UNAUTHORIZED);
    let reader = auth.sign(&serde_json::json!({"namespaces": ["sys.*"], "ops": ["read"]}));
    assert_eq!(client.get(&url).header(AUTH_HEADER, &reader).send().unwrap().status(), StatusCode::OK);
    let response = client.delete(&url).header(AUTH_HEADER, &reader).send().unwrap();
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(a.path_of("sys.load").exists());
    // Offload with auth: B fetches from A with its own read-only token, only for a caller that may read
    // the source (a token for copy.* alone must not copy sys.load into its namespace and read it there).
    let offload = |token: &str| {
        client
            .post(b.url("/metrics/copy.load?fetch_offload=true"))
            .header(AUTH_HEADER, token)
            .form(&[("server", format!("{ip_a}:{port_a}")), ("metric", "sys.load".to_owned())])
            .send()
            .unwrap()
    };
    let writer = auth.sign(&serde_json::json!({"namespaces": ["copy.*"], "ops": ["update", "read"]}));
    let response = offload(&writer);
    assert_eq!(response.status(), StatusCode::FORBIDDEN, "{:?}", response.text());
    assert!(!b.path_of("copy.load").exists());
    let mover = auth.sign(&serde_json::json!({"namespaces": ["copy.*", "sys.*"], "ops": ["update", "read"]}));
    let response = offload(&mover);
    assert_eq!(response.status(), StatusCode::OK, "{:?}", response.text());
    assert_eq!(fs::read(b.path_of("copy.load")).unwrap(), fs::read(a.path_of("sys.load")).unwrap());
    drop((a, b));

    // Without a secret file, no token is needed.
    let c = TestAgent::start(ip_a, free_port(ip_a), &root_a, &ring, &[]);
    assert_eq!(client.get(c.url("/metrics/sys.load")).send().unwrap().status(), StatusCode::OK);
}

#[test]
fn agent_heal_waits_for_another_process_holding_the_flock() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    put_file(&root, "busy.m", &wsp(&[(1, 1.0)]));
    let ip = "127.0.0.9";
    let agent = TestAgent::start(ip, free_port(ip), &root, &[ip], &[]);
    let client = client();
    // Another process (carbon-cache with WHISPER_LOCK_WRITES) holds LOCK_EX for 2 s.
    let (mut holder, _) = hold_flock(&agent.path_of("busy.m"), Some(2));
    let started = Instant::now();
    let response = upload(&client, reqwest::Method::POST, &agent.url("/metrics/busy.m"), "busy.m", &wsp(&[(2, 2.0)]));
    let waited = started.elapsed();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(waited >= Duration::from_millis(1500), "the heal did not wait for the lock ({waited:?})");
    assert!(waited < Duration::from_secs(15), "the heal took {waited:?}");
    assert!(holder.wait().unwrap().success());
    assert_eq!(points(&fs::read(agent.path_of("busy.m")).unwrap()), [(1, 1.0), (2, 2.0)]);
    // Reads are not blocked by a shared lock holder either way, and the agent is still responsive.
    assert_eq!(client.get(agent.url("/metrics/busy.m")).send().unwrap().status(), StatusCode::OK);
}

#[test]
fn agent_concurrent_creates_of_one_name_keep_the_union() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    fs::create_dir_all(&root).unwrap();
    let ip = "127.0.0.10";
    // Each create pauses between writing its temp file and publishing it, so the two overlap.
    let agent = TestAgent::start(ip, free_port(ip), &root, &[ip], &["--test-publish-delay-ms", "500"]);
    let url = agent.url("/metrics/race.metric");
    let sources = [wsp(&[(1, 1.0), (2, 2.0)]), wsp(&[(3, 3.0), (4, 4.0)])];
    let reports: Vec<serde_json::Value> = thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let url = url.clone();
                s.spawn(move || {
                    let response = upload(&client(), reqwest::Method::POST, &url, "race.metric", src);
                    assert_eq!(response.status(), StatusCode::OK);
                    response.json().unwrap()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(reports.iter().filter(|r| r["Created"] == true).count(), 1, "{reports:?}");
    let bytes = client().get(&url).send().unwrap().bytes().unwrap();
    assert_eq!(points(&bytes), [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]);
    assert!(hidden_temp_files(&root.join("race")).is_empty());
}

#[test]
fn agent_killed_in_the_middle_of_a_create_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    fs::create_dir_all(&root).unwrap();
    let ip = "127.0.0.11";
    let mut agent = TestAgent::start(ip, free_port(ip), &root, &[ip], &["--test-publish-delay-ms", "10000"]);
    let bytes = wsp(&[(1, 1.0), (2, 2.0)]);
    let url = agent.url("/metrics/crash.metric");
    let request = {
        let (url, bytes) = (url.clone(), bytes.clone());
        thread::spawn(move || {
            let _ = client()
                .post(&url)
                .header("Content-Type", "application/octet-stream")
                .header(METRIC_STAT_HEADER, stat_header("crash.metric", bytes.len()))
                .body(bytes)
                .send();
        })
    };
    // Wait until the temp file is written (the create is in flight), then kill -9.
    let deadline = Instant::now() + Duration::from_secs(10);
    while hidden_temp_files(&root.join("crash")).is_empty() {
        assert!(Instant::now() < deadline, "the create never started:\n{}", agent.log());
        thread::sleep(Duration::from_millis(10));
    }
    agent.child.kill().unwrap();
    agent.child.wait().unwrap();
    request.join().unwrap();
    let final_path = root.join("crash/metric.wsp");
    assert!(!final_path.exists(), "a partial file was published");
    let left = hidden_temp_files(&root.join("crash"));
    assert_eq!(left.len(), 1, "the killed agent's temp file: {left:?}");
    // After a restart the metric is not listed, the killed agent's temp file is gone once the first scan
    // finished (its maker is dead: no waiting for an hour), and the next upload creates the metric whole.
    let restarted = TestAgent::start(ip, free_port(ip), &root, &[ip], &[]);
    let client = client();
    assert!(!restarted.list(&client, "").contains(&"crash.metric".to_owned()));
    assert_eq!(hidden_temp_files(&root.join("crash")), Vec::<String>::new(), "{}", restarted.log());
    assert!(restarted.log().contains("removed a temp file left by an interrupted create"), "{}", restarted.log());
    let response =
        upload(&client, reqwest::Method::POST, &restarted.url("/metrics/crash.metric"), "crash.metric", &bytes);
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(fs::read(&final_path).unwrap(), bytes);
}

#[test]
fn agent_outside_its_ring_serves_for_draining_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // A node that is not (any more) in its ring starts, says so, and reports itself outside the ring in
    // /hashring (its Name is not among the Nodes), as buckytools clients read it.
    let ip = "127.0.0.13";
    let bytes = wsp(&[(60, 1.0)]);
    let held = dir.path().join("outside/held.wsp");
    fs::create_dir_all(held.parent().unwrap()).unwrap();
    fs::write(&held, &bytes).unwrap();
    let outside = TestAgent::start(ip, free_port(ip), dir.path(), &["g1:2003=a", "g2:2003=b"], &[]);
    let log = outside.log();
    assert!(log.contains("this node is not in the ring: serving reads and deletes only, for draining"), "{log}");
    let client = client();
    let info: RingInfo = client.get(outside.url("/hashring")).send().unwrap().json().unwrap();
    assert_eq!(info.name, ip, "{info:?}");
    let servers: Vec<&str> = info.nodes.iter().map(|n| n.server.as_str()).collect();
    assert_eq!(servers, ["g1", "g2"], "{info:?}");
    // Reads and listings are served, writes refused with 409, deletes done.
    assert_eq!(outside.list(&client, ""), ["outside.held"]);
    let get = client.get(outside.url("/metrics/outside.held")).send().unwrap();
    assert_eq!(get.status(), StatusCode::OK);
    let response = upload(&client, reqwest::Method::POST, &outside.url("/metrics/outside.new"), "outside.new", &bytes);
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert!(response.text().unwrap().contains("not in the ring"));
    assert!(!dir.path().join("outside/new.wsp").exists());
    let deleted = client.delete(outside.url("/metrics/outside.held")).send().unwrap();
    assert_eq!(deleted.status(), StatusCode::OK);
    assert!(!held.exists());
    drop(outside);

    let ip = "127.0.0.12";
    let mut agent = TestAgent::start(ip, free_port(ip), dir.path(), &[ip], &[]);
    let pid = agent.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = agent.child.try_wait().unwrap() {
            assert!(status.success(), "exit status {status}");
            break;
        }
        assert!(Instant::now() < deadline, "did not stop on SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
    assert!(agent.log().contains("shutting down"));
}
