//! The copy engine against in-process agents: each replica is verified from the heal's read-back answer
//! when the agent sends one, from a GET when it does not (buckyd), and a read-back that lacks points keeps
//! the source exactly as a GET would.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, Method};
use axum::middleware::{self, Next};
use axum::response::Response;
use bucky_agent::{AppState, Config as AgentConfig};
use bucky_cli::client::Client;
use bucky_cli::config::{Addr, Config};
use bucky_cli::engine::{self, Job, Options};
use bucky_cli::printer::Printer;
use hashring::{Hash, Node, RingSpec};
use whisper::{CreateOptions, Point, Retention, WhisperBuf};

/// How the test agent treats the read-back header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As bucky-agent does.
    Honour,
    /// As buckyd does: the header never reaches the agent, so the answer is the plain report.
    Ignore,
    /// The read-back answer is replaced with an empty file of the same layout.
    Empty,
}

struct Agent {
    mode: Mode,
    gets: AtomicUsize,
    heals: AtomicUsize,
}

async fn intercept(State(agent): State<Arc<Agent>>, mut request: Request, next: Next) -> Response {
    match *request.method() {
        Method::GET => drop(agent.gets.fetch_add(1, Ordering::SeqCst)),
        Method::POST => drop(agent.heals.fetch_add(1, Ordering::SeqCst)),
        _ => {}
    }
    if agent.mode == Mode::Ignore {
        request.headers_mut().remove(bucky_wire::READ_BACK_HEADER);
    }
    let response = next.run(request).await;
    if agent.mode != Mode::Empty || response.headers().get(bucky_wire::READ_BACK_HEADER).is_none() {
        return response;
    }
    let (mut parts, _) = response.into_parts();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(file(&[])))
}

/// Starts an agent serving `root` on a free loopback port.
async fn start(root: &Path, mode: Mode) -> (Addr, Arc<Agent>) {
    let ring = RingSpec::new(vec![Node::parse("127.0.0.1").unwrap()], Hash::CarbonCh).build().unwrap();
    let state = AppState::new(AgentConfig::new("127.0.0.1", ring, root)).unwrap();
    let agent = Arc::new(Agent { mode, gets: AtomicUsize::new(0), heals: AtomicUsize::new(0) });
    let app = bucky_agent::app(state).layer(middleware::from_fn_with_state(Arc::clone(&agent), intercept));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (Addr { host: "127.0.0.1".into(), port }, agent)
}

fn now() -> i64 {
    bucky_cli::engine::unix_now() / 60 * 60
}

/// A `1m:1d` file holding `points` (minutes ago, value).
fn file(points: &[(i64, f64)]) -> Vec<u8> {
    let retentions = Retention::parse_list("1m:1d").unwrap();
    let mut buf = WhisperBuf::empty(whisper::header_for(&retentions, &CreateOptions::default()).unwrap());
    let now = now();
    let points: Vec<Point> = points.iter().map(|&(ago, v)| Point::new(now - ago * 60, v)).collect();
    buf.update_many(&points, now).unwrap();
    buf.into_bytes()
}

fn path(root: &Path, name: &str) -> PathBuf {
    root.join(name.replace('.', "/") + ".wsp")
}

struct Outcome {
    summary: engine::Summary,
    source: Arc<Agent>,
    dest: Arc<Agent>,
    source_file: Option<Vec<u8>>,
    dest_file: Option<Vec<u8>>,
}

/// Moves one metric from a source agent to a destination agent treating read-back as `mode`.
async fn rebalance(mode: Mode) -> Outcome {
    let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let name = "svc.host.metric";
    let bytes = file(&[(1, 1.0), (2, 2.0), (30, 30.0)]);
    std::fs::create_dir_all(path(src_dir.path(), name).parent().unwrap()).unwrap();
    std::fs::write(path(src_dir.path(), name), &bytes).unwrap();
    let (source_addr, source) = start(src_dir.path(), Mode::Honour).await;
    let (dest_addr, dest) = start(dst_dir.path(), mode).await;
    let config = Config {
        seed: dest_addr.clone(),
        workers: 2,
        json: false,
        verbose: false,
        force: false,
        timeout: Duration::from_secs(10),
        cache_wait: Duration::from_secs(10),
        snappy: true,
        token: None,
        progress: false,
    };
    let client = Client::new(&config).unwrap();
    let options = Options {
        op: "rebalance",
        delete: true,
        workers: 2,
        batch: 1,
        attempts: 2,
        max_rate: None,
        state_file: None,
        error_file: None,
        error_tolerance: 0,
    };
    let job = Job {
        name: name.into(),
        source_name: name.into(),
        source: source_addr,
        dests: vec![dest_addr],
        keep_source: false,
    };
    let summary = engine::execute(&client, &Printer::new(false, false, false), options, vec![job]).await.unwrap();
    Outcome {
        summary,
        source,
        dest,
        source_file: std::fs::read(path(src_dir.path(), name)).ok(),
        dest_file: std::fs::read(path(dst_dir.path(), name)).ok(),
    }
}

#[tokio::test]
async fn a_replica_read_back_in_the_heal_answer_needs_no_get() {
    let out = rebalance(Mode::Honour).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (1, 1, 0), "{:?}", out.summary);
    assert!(out.summary.points_verified >= 3, "{:?}", out.summary);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 1);
    assert_eq!(out.dest.gets.load(Ordering::SeqCst), 0, "verified from the heal's answer");
    assert_eq!(out.source_file, None, "source deleted after verification");
    assert_eq!(out.dest_file, Some(file(&[(1, 1.0), (2, 2.0), (30, 30.0)])));
}

#[tokio::test]
async fn an_agent_without_read_back_is_verified_with_a_get() {
    let out = rebalance(Mode::Ignore).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (1, 1, 0), "{:?}", out.summary);
    assert!(out.summary.points_verified >= 3, "{:?}", out.summary);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 1);
    assert_eq!(out.dest.gets.load(Ordering::SeqCst), 1, "the fallback GET");
    assert_eq!(out.source_file, None);
    assert_eq!(out.dest_file, Some(file(&[(1, 1.0), (2, 2.0), (30, 30.0)])));
}

#[tokio::test]
async fn a_read_back_missing_points_keeps_the_source() {
    let out = rebalance(Mode::Empty).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (0, 0, 1), "{:?}", out.summary);
    assert!(out.summary.failures[0].reason.contains("points missing"), "{:?}", out.summary.failures);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 2, "healed again on the second attempt");
    assert_eq!(out.source.gets.load(Ordering::SeqCst), 2, "source read once per attempt, never deleted");
    assert_eq!(out.source_file, Some(file(&[(1, 1.0), (2, 2.0), (30, 30.0)])));
}
