//! Daemons that explain their own stalls (issue 19): the watchdog names a request stuck on another
//! process's flock (path, phase, age, holder's pid), `SIGQUIT` dumps the state and the daemon goes on,
//! `GET /debug/state` answers the same as JSON, failing requests of every kind leak no descriptor, and the
//! self-metrics reach a line receiver.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bucky_e2e::{bin, free_port, hold_flock};
use bucky_wire::AUTH_HEADER;
use reqwest::StatusCode;

use crate::agent::{client, put_file, upload, wsp, TestAgent};

fn wait_for(what: &str, within: Duration, mut check: impl FnMut() -> Option<String>) -> String {
    let deadline = Instant::now() + within;
    loop {
        if let Some(found) = check() {
            return found;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        thread::sleep(Duration::from_millis(25));
    }
}

fn text_of(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn a_request_stuck_on_another_process_flock_is_named_with_its_holder_and_sigquit_dumps_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    put_file(&root, "held.metric", &wsp(&[(1, 1.0)]));
    put_file(&root, "free.metric", &wsp(&[(1, 2.0)]));
    let diag_file = dir.path().join("diag.log");
    let ip = "127.0.0.91";
    let agent = TestAgent::start(
        ip,
        free_port(ip),
        &root,
        &[ip],
        &["--stuck-after", "2s", "--lock-timeout", "60", "--diag-file", diag_file.to_str().unwrap()],
    );
    let held = root.join("held/metric.wsp");
    let (mut holder, stdin) = hold_flock(&held, None);
    let holder_pid = holder.id();

    let url = agent.url("/metrics/held.metric");
    let started = Instant::now();
    let waiting = thread::spawn(move || client().get(url).send().unwrap().status());
    // Other metrics are served meanwhile.
    thread::sleep(Duration::from_millis(300));
    assert_eq!(client().get(agent.url("/metrics/free.metric")).send().unwrap().status(), StatusCode::OK);

    let report = wait_for("the stuck report", Duration::from_secs(10), || {
        text_of(&diag_file).lines().find(|l| l.contains("stuck operation")).map(str::to_owned)
    });
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(3), "reported after {took:?}, more than --stuck-after 2s + 1 s");
    for part in [
        "GET /metrics/{name} held.metric".to_owned(),
        "\"waiting for flock\"".to_owned(),
        format!("on {}", held.display()),
        format!("held by pid {holder_pid} (python3) WRITE"),
    ] {
        assert!(report.contains(&part), "{part:?} missing from: {report}");
    }

    // The same, as JSON.
    let state: serde_json::Value = client().get(agent.url("/debug/state")).send().unwrap().json().unwrap();
    let op = state["in_flight"].as_array().unwrap().iter().find(|op| op["detail"] == "held.metric").unwrap();
    assert_eq!(op["phase"], "waiting for flock");
    assert_eq!(op["lock_holders"][0]["pid"], holder_pid);
    assert!(op["age_secs"].as_f64().unwrap() >= 2.0);
    assert_eq!(state["locks"]["awaited"][0], held.display().to_string());

    // SIGQUIT: the dump, and the daemon keeps answering.
    signal(agent.child.id(), "-QUIT");
    let dump = wait_for("the SIGQUIT dump", Duration::from_secs(5), || {
        let text = text_of(&diag_file);
        text.contains("end of bucky-agent state dump").then_some(text)
    });
    let dump = &dump[dump.find("bucky-agent state dump").unwrap()..];
    assert!(dump.contains("reason SIGQUIT"), "{dump}");
    assert!(dump.contains("held.metric") && dump.contains(&format!("held by pid {holder_pid}")), "{dump}");
    assert!(dump.contains("fds: ") && dump.contains("memory: rss"), "{dump}");
    assert_eq!(client().get(agent.url("/hashring")).send().unwrap().status(), StatusCode::OK);

    // Once the holder lets go, the request completes.
    drop(stdin);
    holder.wait().unwrap();
    assert_eq!(waiting.join().unwrap(), StatusCode::OK);
    assert_eq!(text_of(&diag_file).matches("bucky watchdog: stuck operation:").count(), 1, "reported once");
}

/// Sends one raw request (`Connection: close`) and reads the answer's status line; with `cut`, sends only
/// the first `cut` bytes of `request` and closes (a client gone mid-upload).
fn raw(addr: &str, request: &[u8], cut: Option<usize>) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    match cut {
        Some(n) => {
            let _ = stream.write_all(&request[..n.min(request.len())]);
            None
        }
        None => {
            stream.write_all(request).ok()?;
            let mut answer = Vec::new();
            let _ = stream.read_to_end(&mut answer);
            let line = String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned();
            line.split(' ').nth(1).and_then(|s| s.parse().ok())
        }
    }
}

fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8], content_length: Option<usize>) -> Vec<u8> {
    let mut text = format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n");
    for (name, value) in headers {
        text.push_str(&format!("{name}: {value}\r\n"));
    }
    text.push_str(&format!("Content-Length: {}\r\n\r\n", content_length.unwrap_or(body.len())));
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}

/// A failing request: what it is, its bytes, the status expected (none: the client goes away after `cut`
/// bytes), and the cut.
type FailingKind = (&'static str, Vec<u8>, Option<u16>, Option<usize>);

#[test]
fn ten_thousand_failing_requests_of_every_kind_leave_the_descriptors_where_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    put_file(&root, "locked.metric", &wsp(&[(1, 1.0)]));
    put_file(&root, "corrupt.metric", b"this is not a whisper file at all, not even its header");
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "s3cret").unwrap();
    let token = bucky_agent::auth::Auth::new(b"s3cret".to_vec())
        .unwrap()
        .sign(&serde_json::json!({"namespaces": ["*"], "ops": ["*"]}));
    let ip = "127.0.0.92";
    let port = free_port(ip);
    let agent = TestAgent::start(
        ip,
        port,
        &root,
        &[ip],
        &["--lock-timeout", "0", "--auth-jwt-secret-file", secret.to_str().unwrap()],
    );
    let (_holder, _stdin) = hold_flock(&root.join("locked/metric.wsp"), None);
    let addr = format!("{ip}:{port}");
    let auth = [(AUTH_HEADER, token.as_str())];
    let upload_headers = [(AUTH_HEADER, token.as_str()), ("Content-Type", "application/octet-stream")];
    let kinds: Vec<FailingKind> = vec![
        ("bad body", request("POST", "/metrics/a.b", &upload_headers, b"garbage", None), Some(400), None),
        ("lock timeout", request("GET", "/metrics/locked.metric", &auth, b"", None), Some(503), None),
        ("no token", request("GET", "/metrics/locked.metric", &[], b"", None), Some(401), None),
        ("bad token", request("DELETE", "/metrics/x.y", &[(AUTH_HEADER, "Bearer nope")], b"", None), Some(401), None),
        ("delete missing", request("DELETE", "/metrics/missing.metric", &auth, b"", None), Some(404), None),
        ("bad batch", request("POST", "/batch/heal", &upload_headers, b"\x00\x01garbage", None), Some(400), None),
        (
            "gone mid-upload",
            request("POST", "/metrics/up.load", &upload_headers, &[7u8; 4096], Some(1 << 20)),
            None,
            Some(2048),
        ),
    ];
    // One of each first, so that what a first request sets up (pools, caches) is not counted as a leak.
    for (what, bytes, status, cut) in &kinds {
        assert_eq!(raw(&addr, bytes, *cut), *status, "{what}");
    }
    let pid = agent.child.id();
    thread::sleep(Duration::from_millis(300));
    let before = open_fds(pid);
    // A heal into a corrupt file is looked at a few times before the 409 (it may be half-written by a
    // carbon without locking): half a second each, so 40 of them run beside the 10,000.
    let body = wsp(&[(1, 1.0)]);
    let stat = bucky_wire::MetricStat {
        name: "corrupt.metric".into(),
        size: body.len() as i64,
        mode: 420,
        mod_time: 1,
        ..Default::default()
    }
    .to_header_value();
    let heal_headers = [
        (AUTH_HEADER, token.as_str()),
        ("Content-Type", "application/octet-stream"),
        (bucky_wire::METRIC_STAT_HEADER, stat.as_str()),
    ];
    let corrupt = request("POST", "/metrics/corrupt.metric", &heal_headers, &body, None);
    let corrupt_addr = addr.clone();
    let corrupt = thread::spawn(move || {
        for _ in 0..40 {
            assert_eq!(raw(&corrupt_addr, &corrupt, None), Some(409), "heal into a corrupt file");
        }
    });
    let kinds = Arc::new(kinds);
    let statuses = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (kinds, statuses, addr) = (Arc::clone(&kinds), Arc::clone(&statuses), addr.clone());
            thread::spawn(move || {
                for i in 0..2500 {
                    let (what, bytes, status, cut) = &kinds[(i + t) % kinds.len()];
                    let got = raw(&addr, bytes, *cut);
                    assert_eq!(got, *status, "{what}");
                    *statuses.lock().unwrap().entry((*what).to_owned()).or_default() += 1;
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    corrupt.join().unwrap();
    assert_eq!(statuses.lock().unwrap().values().sum::<usize>(), 10_000);
    // Connections cut by the client are closed by the agent when it notices; give it a moment.
    let after = wait_for("descriptors back to where they were", Duration::from_secs(10), || {
        let now = open_fds(pid);
        (now <= before + 2).then_some(now.to_string())
    });
    let after: usize = after.parse().unwrap();
    assert!(after + 2 >= before, "fewer descriptors than before: {before} -> {after}");
    assert_eq!(client().get(agent.url("/hashring")).send().unwrap().status(), StatusCode::OK);
}

#[test]
fn self_metrics_reach_a_line_receiver_with_their_names_and_values() {
    let receiver = TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver_addr = receiver.local_addr().unwrap().to_string();
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = Arc::clone(&lines);
    thread::spawn(move || {
        for stream in receiver.incoming().flatten() {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    let file = wsp(&[(1, 1.0), (2, 2.0)]);
    put_file(&root, "have.metric", &file);
    let ip = "127.0.0.93";
    let agent = TestAgent::start(
        ip,
        free_port(ip),
        &root,
        &[ip],
        &["--graphite", &receiver_addr, "--graphite-prefix", "test.agent", "--graphite-interval", "1s"],
    );
    let c = client();
    for _ in 0..2 {
        assert_eq!(c.get(agent.url("/metrics/have.metric")).send().unwrap().bytes().unwrap().len(), file.len());
    }
    assert_eq!(c.get(agent.url("/metrics/not.there")).send().unwrap().status(), StatusCode::NOT_FOUND);
    let created = upload(&c, reqwest::Method::POST, &agent.url("/metrics/new.metric"), "new.metric", &file);
    assert_eq!(created.status(), StatusCode::OK);

    // The latest sample's values by name, once it has everything above.
    let values = |lines: &[String]| -> BTreeMap<String, f64> {
        let mut values = BTreeMap::new();
        for line in lines {
            let mut parts = line.split(' ');
            if let (Some(name), Some(value)) = (parts.next(), parts.next()) {
                values.insert(name.to_owned(), value.parse().unwrap_or(f64::NAN));
            }
        }
        values
    };
    wait_for("a sample with the requests above", Duration::from_secs(10), || {
        let v = values(&lines.lock().unwrap());
        (v.get("test.agent.requests.get_metric.200") == Some(&2.0) && v.contains_key("test.agent.heals.created"))
            .then(String::new)
    });
    let v = values(&lines.lock().unwrap());
    assert_eq!(v["test.agent.requests.get_metric.404"], 1.0);
    assert_eq!(v["test.agent.requests.post_metric.200"], 1.0);
    assert_eq!(v["test.agent.heals.created"], 1.0);
    assert!(v["test.agent.bytes_out"] >= 2.0 * file.len() as f64, "{v:?}");
    assert!(v["test.agent.bytes_in"] >= file.len() as f64, "{v:?}");
    assert!(v["test.agent.open_fds"] > 3.0 && v["test.agent.rss_bytes"] > 1e6, "{v:?}");
    // Every line is `name value timestamp` with a current timestamp.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    for line in lines.lock().unwrap().iter() {
        let ts: u64 = line.split(' ').nth(2).unwrap().parse().unwrap();
        assert!(ts + 60 > now && ts <= now + 1, "{line}");
    }
}

/// A running `bucky-pickle-relay` forwarding to a sink that discards, killed on drop.
struct Relay {
    child: Child,
    addr: String,
    diag_file: PathBuf,
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_relay(dir: &Path) -> Relay {
    let sink = TcpListener::bind("127.0.0.1:0").unwrap();
    let sink_addr = sink.local_addr().unwrap().to_string();
    thread::spawn(move || {
        for mut stream in sink.incoming().flatten() {
            thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while stream.read(&mut buf).is_ok_and(|n| n > 0) {}
            });
        }
    });
    let ip = "127.0.0.94";
    let addr = format!("{ip}:{}", free_port(ip));
    let diag_file = dir.join("relay-diag.log");
    let child = Command::new(bin("bucky-pickle-relay"))
        .args(["-b", &addr, "--diag-file", diag_file.to_str().unwrap(), &sink_addr])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for("the relay to listen", Duration::from_secs(20), || TcpStream::connect(&addr).ok().map(|_| String::new()));
    Relay { child, addr, diag_file }
}

#[test]
fn a_thousand_relay_connections_opened_and_dropped_leak_no_descriptor_and_sigquit_dumps_its_state() {
    let dir = tempfile::tempdir().unwrap();
    let relay = start_relay(dir.path());
    let pid = relay.child.id();
    // Warm up, then count.
    drop(TcpStream::connect(&relay.addr).unwrap());
    thread::sleep(Duration::from_millis(300));
    let before = open_fds(pid);
    let mut open = Vec::new();
    for i in 0..1000 {
        let mut stream = TcpStream::connect(&relay.addr).unwrap();
        match i % 3 {
            0 => {}
            1 => stream.write_all(&[0, 0, 0, 50, 0x80, 2]).unwrap(), // a frame cut short
            _ => stream.write_all(b"\xff\xff\xff\xffgarbage").unwrap(), // an oversized length
        }
        if i % 10 == 0 {
            open.push(stream); // a few stay open until the end, the rest close at once
        }
    }
    // While some are open, the dump lists them as connections.
    signal(pid, "-QUIT");
    let dump = wait_for("the relay's SIGQUIT dump", Duration::from_secs(5), || {
        let text = text_of(&relay.diag_file);
        text.contains("end of bucky-pickle-relay state dump").then_some(text)
    });
    assert!(dump.contains("connection 127.0.0."), "{dump}");
    drop(open);
    wait_for("relay descriptors back to where they were", Duration::from_secs(10), || {
        (open_fds(pid) <= before + 2).then(String::new)
    });
    assert!(TcpStream::connect(&relay.addr).is_ok(), "the relay still accepts");
}
