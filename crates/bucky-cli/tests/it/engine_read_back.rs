//! The copy engine against in-process agents: each replica is verified from the heal's read-back answer
//! when the agent sends one, from a GET when it does not (buckyd), and a read-back that lacks points keeps
//! the source exactly as a GET would. The same holds by the batch (bucky-agent's `/batch/*` routes), and
//! an agent without them (buckyd) gets one request per metric.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};
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
use bucky_cli::engine::{self, DampingConfig, Interrupt, Interrupts, Job, Operation, Options};
use bucky_cli::printer::Printer;
use hashring::{Hash, Node, RingSpec};
use whisper::{CreateOptions, Point, Retention, WhisperBuf};

/// How the test agent treats the read-back header.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// As bucky-agent does.
    Honour,
    /// As buckyd does: the header never reaches the agent, so the answer is the plain report; and the batch
    /// routes are 404.
    Ignore,
    /// The read-back answer (single or batch) is replaced with an empty file of the same layout.
    Empty,
    /// The disk is full: every heal is answered 507 (per entry for a batch), as bucky-agent answers it.
    Full,
}

/// bucky-agent's answer to a write on a full disk.
const NO_SPACE: &str = "no space left on the device holding /data: free space or stop sending heals to this node";

struct Agent {
    mode: Mode,
    /// Single-metric requests.
    gets: AtomicUsize,
    heals: AtomicUsize,
    deletes: AtomicUsize,
    /// Batch requests answered by the agent.
    batches: AtomicUsize,
    /// Files sent by batch reads and not yet asked to be deleted by a batch delete: what the client holds
    /// (the engine drops a batch's files only after deleting their sources), now and at most.
    files_out: AtomicIsize,
    most_files_out: AtomicIsize,
}

async fn intercept(State(agent): State<Arc<Agent>>, mut request: Request, next: Next) -> Response {
    let batch = request.uri().path().starts_with("/batch/");
    if batch && agent.mode == Mode::Ignore {
        return Response::builder().status(404).body(Body::from("404 page not found\n")).unwrap();
    }
    let counter = match *request.method() {
        _ if batch => &agent.batches,
        Method::GET => &agent.gets,
        Method::POST => &agent.heals,
        Method::DELETE => &agent.deletes,
        _ => &agent.batches,
    };
    counter.fetch_add(1, Ordering::SeqCst);
    if agent.mode == Mode::Ignore {
        request.headers_mut().remove(bucky_wire::READ_BACK_HEADER);
    }
    let heal_batch = request.uri().path() == bucky_wire::batch::HEAL_PATH;
    if agent.mode == Mode::Full && heal_batch {
        let body = axum::body::to_bytes(request.into_body(), usize::MAX).await.unwrap();
        let frames = bucky_wire::batch::decode(body, &bucky_wire::batch::Limits::default()).unwrap();
        let answers: Vec<_> =
            frames.into_iter().map(|f| bucky_wire::batch::Frame::error(f.name, 507, NO_SPACE)).collect();
        return Response::builder()
            .header(header::CONTENT_TYPE, bucky_wire::batch::CONTENT_TYPE)
            .body(Body::from(bucky_wire::batch::encode(&answers)))
            .unwrap();
    }
    if agent.mode == Mode::Full && *request.method() == Method::POST && !batch {
        return Response::builder().status(507).body(Body::from(format!("{NO_SPACE}\n"))).unwrap();
    }
    let path = request.uri().path().to_owned();
    let limits = bucky_wire::batch::Limits::default();
    if path == bucky_wire::batch::DELETE_PATH {
        let (parts, body) = request.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let deletes = bucky_wire::batch::decode(body.clone(), &limits).unwrap().len();
        agent.files_out.fetch_sub(deletes as isize, Ordering::SeqCst);
        request = Request::from_parts(parts, Body::from(body));
    }
    let response = next.run(request).await;
    if path == bucky_wire::batch::READ_PATH && response.status().is_success() {
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let files =
            bucky_wire::batch::decode(body.clone(), &limits).unwrap().iter().filter(|f| f.status == 200).count();
        let out = agent.files_out.fetch_add(files as isize, Ordering::SeqCst) + files as isize;
        agent.most_files_out.fetch_max(out, Ordering::SeqCst);
        return Response::from_parts(parts, Body::from(body));
    }
    if agent.mode != Mode::Empty {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    if heal_batch {
        let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
        let mut frames = bucky_wire::batch::decode(body, &bucky_wire::batch::Limits::default()).unwrap();
        for frame in frames.iter_mut().filter(|f| f.meta.stat.is_some()) {
            frame.data = file(&[]).into();
        }
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, Body::from(bucky_wire::batch::encode(&frames)));
    }
    if parts.headers.get(bucky_wire::READ_BACK_HEADER).is_none() {
        return Response::from_parts(parts, body);
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(file(&[])))
}

/// Starts an agent serving `root` on a free loopback port.
async fn start(root: &Path, mode: Mode) -> (Addr, Arc<Agent>) {
    let ring = RingSpec::new(vec![Node::parse("127.0.0.1").unwrap()], Hash::CarbonCh).build().unwrap();
    let state = AppState::new(AgentConfig::new("127.0.0.1", ring, root)).unwrap();
    let agent = Arc::new(Agent {
        mode,
        gets: AtomicUsize::new(0),
        heals: AtomicUsize::new(0),
        deletes: AtomicUsize::new(0),
        batches: AtomicUsize::new(0),
        files_out: AtomicIsize::new(0),
        most_files_out: AtomicIsize::new(0),
    });
    let app = bucky_agent::app(state).layer(middleware::from_fn_with_state(Arc::clone(&agent), intercept));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (Addr { host: "127.0.0.1".into(), port }, agent)
}

/// The minute every file of this process is written relative to: taken once, so that `content(i)` built
/// for an assertion equals the file written at set-up even when a minute boundary falls in between.
fn now() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| bucky_cli::engine::unix_now() / 60 * 60)
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
    /// The destination's address.
    dest_addr: Addr,
    source: Arc<Agent>,
    dest: Arc<Agent>,
    /// Per metric, what is left at its path on each side.
    source_files: Vec<Option<Vec<u8>>>,
    dest_files: Vec<Option<Vec<u8>>>,
}

impl Outcome {
    fn source_file(&self) -> Option<Vec<u8>> {
        self.source_files[0].clone()
    }

    fn dest_file(&self) -> Option<Vec<u8>> {
        self.dest_files[0].clone()
    }
}

/// The content of metric `i` of a test.
fn content(i: usize) -> Vec<u8> {
    file(&[(1, 1.0), (2, 2.0), (30, 30.0 + i as f64)])
}

/// Moves one metric from a source agent to a destination agent treating read-back as `mode`.
async fn rebalance(mode: Mode) -> Outcome {
    rebalance_many(mode, 1, 1).await
}

/// Moves `count` metrics, `batch` per request.
async fn rebalance_many(mode: Mode, count: usize, batch: usize) -> Outcome {
    Scenario::new(mode, count, batch).run().await
}

/// A move of `count` metrics from a source agent to a destination agent treating read-back as `mode`.
#[derive(Clone, Copy)]
struct Scenario {
    mode: Mode,
    count: usize,
    /// `--batch`.
    batch: usize,
    /// `--batch-mib`, in bytes.
    batch_bytes: u64,
    /// `--inflight-mib`, in bytes.
    inflight_bytes: u64,
    /// `--workers`.
    workers: usize,
    /// Without it, the jobs have no destination at all.
    to_dest: bool,
    /// Nothing listens at the destination's address.
    dest_down: bool,
    /// Sent before the run starts.
    interrupt: Interrupt,
}

impl Scenario {
    fn new(mode: Mode, count: usize, batch: usize) -> Scenario {
        let (batch_bytes, inflight_bytes) = (engine::DEFAULT_BATCH_MIB << 20, engine::DEFAULT_INFLIGHT_MIB << 20);
        let interrupt = Interrupt::None;
        let (to_dest, dest_down, workers) = (true, false, 2);
        Scenario { mode, count, batch, batch_bytes, inflight_bytes, workers, to_dest, dest_down, interrupt }
    }

    async fn run(self) -> Outcome {
        let Scenario { mode, count, batch, batch_bytes, inflight_bytes, workers, to_dest, dest_down, interrupt } = self;
        let (src_dir, dst_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let names: Vec<String> = (0..count).map(|i| format!("svc.host{}.metric{i}", i % 3)).collect();
        for (i, name) in names.iter().enumerate() {
            std::fs::create_dir_all(path(src_dir.path(), name).parent().unwrap()).unwrap();
            std::fs::write(path(src_dir.path(), name), content(i)).unwrap();
        }
        let (source_addr, source) = start(src_dir.path(), Mode::Honour).await;
        let (mut dest_addr, dest) = start(dst_dir.path(), mode).await;
        // Bound but never listening: connections are refused, and (unlike a port bound then released) no
        // agent of a test running beside this one can be given the port while this run uses it.
        let _closed = if dest_down {
            let socket = tokio::net::TcpSocket::new_v4().unwrap();
            socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
            dest_addr.port = socket.local_addr().unwrap().port();
            Some(socket)
        } else {
            None
        };
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
            diverse_replicas: None,
            ring_config: None,
            ring_cluster: None,
        };
        let client = Client::new(&config).unwrap();
        let (interrupter, interrupts) = tokio::sync::watch::channel(interrupt);
        let options = Options {
            op: Operation::Rebalance,
            delete: true,
            workers,
            batch,
            batch_bytes,
            offload: false,
            inflight_bytes,
            attempts: 2,
            max_rate: None,
            state_file: None,
            error_file: None,
            error_tolerance: 0,
            now: engine::unix_now,
            interrupts: Interrupts::Channel(interrupts),
            throttle: None,
            // A node found down is waited for about 80 ms (h · log2(1000 / 750)), then given up on.
            damping: DampingConfig { half_life: Duration::from_millis(200), ..DampingConfig::default() },
            graphite: None,
        };
        let jobs = names
            .iter()
            .map(|name| Job {
                name: name.clone(),
                source_name: name.clone(),
                source: source_addr.clone(),
                dests: if to_dest { vec![dest_addr.clone()] } else { Vec::new() },
                keep_source: false,
            })
            .collect();
        let summary = engine::execute(&client, &Printer::new(false, false, false), options, jobs).await.unwrap();
        drop(interrupter);
        Outcome {
            summary,
            dest_addr,
            source,
            dest,
            source_files: names.iter().map(|name| std::fs::read(path(src_dir.path(), name)).ok()).collect(),
            dest_files: names.iter().map(|name| std::fs::read(path(dst_dir.path(), name)).ok()).collect(),
        }
    }
}

#[tokio::test]
async fn a_replica_read_back_in_the_heal_answer_needs_no_get() {
    let out = rebalance(Mode::Honour).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (1, 1, 0), "{:?}", out.summary);
    assert!(out.summary.points_verified >= 3, "{:?}", out.summary);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 1);
    assert_eq!(out.dest.gets.load(Ordering::SeqCst), 0, "verified from the heal's answer");
    assert_eq!(out.source_file(), None, "source deleted after verification");
    assert_eq!(out.dest_file(), Some(content(0)));
}

#[tokio::test]
async fn an_agent_without_read_back_is_verified_with_a_get() {
    let out = rebalance(Mode::Ignore).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (1, 1, 0), "{:?}", out.summary);
    assert!(out.summary.points_verified >= 3, "{:?}", out.summary);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 1);
    assert_eq!(out.dest.gets.load(Ordering::SeqCst), 1, "the fallback GET");
    assert_eq!(out.source_file(), None);
    assert_eq!(out.dest_file(), Some(content(0)));
}

#[tokio::test]
async fn a_read_back_missing_points_keeps_the_source() {
    let out = rebalance(Mode::Empty).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (0, 0, 1), "{:?}", out.summary);
    assert!(out.summary.failures[0].reason.contains("points missing"), "{:?}", out.summary.failures);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 2, "healed again on the second attempt");
    assert_eq!(out.source.gets.load(Ordering::SeqCst), 2, "source read once per attempt, never deleted");
    assert_eq!(out.source_file(), Some(content(0)));
}

#[tokio::test]
async fn a_batch_moves_every_metric_with_one_request_per_step() {
    let out = rebalance_many(Mode::Honour, 20, 8).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (20, 20, 0), "{:?}", out.summary);
    assert!(out.summary.points_verified >= 60, "{:?}", out.summary);
    // Each copy read back identical to what was sent comes back as its ETag alone: on the wire, each file
    // crossed twice (read, heal), not three times.
    assert_eq!(out.summary.wire_bytes, 2 * out.summary.bytes, "{:?}", out.summary);
    // 20 metrics in batches of 8: 3 reads and 3 deletes on the source, 3 heals on the destination.
    assert_eq!(out.source.batches.load(Ordering::SeqCst), 6);
    assert_eq!(out.dest.batches.load(Ordering::SeqCst), 3);
    for agent in [&out.source, &out.dest] {
        let single = [&agent.gets, &agent.heals, &agent.deletes].map(|c| c.load(Ordering::SeqCst));
        assert_eq!(single, [0, 0, 0], "no request per metric");
    }
    assert!(out.source_files.iter().all(Option::is_none), "every source deleted after verification");
    for (i, dest) in out.dest_files.iter().enumerate() {
        assert_eq!(dest.as_deref(), Some(&content(i)[..]), "metric {i}");
    }
}

#[tokio::test]
async fn an_agent_without_batches_gets_one_request_per_metric() {
    let out = rebalance_many(Mode::Ignore, 5, 8).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (5, 5, 0), "{:?}", out.summary);
    // The first batch read was refused (404, not counted); every metric then went alone.
    assert_eq!(out.source.gets.load(Ordering::SeqCst), 5);
    assert_eq!(out.source.deletes.load(Ordering::SeqCst), 5);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 5);
    assert_eq!(out.dest.gets.load(Ordering::SeqCst), 5, "verified with a GET each (no read-back)");
    assert!(out.source_files.iter().all(Option::is_none));
    for (i, dest) in out.dest_files.iter().enumerate() {
        assert_eq!(dest.as_deref(), Some(&content(i)[..]), "metric {i}");
    }
}

#[tokio::test]
async fn a_batch_read_back_missing_points_keeps_every_source() {
    let out = rebalance_many(Mode::Empty, 4, 8).await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (0, 0, 4), "{:?}", out.summary);
    assert!(out.summary.failures.iter().all(|f| f.reason.contains("points missing")), "{:?}", out.summary.failures);
    // The batch heal, then each metric alone twice (--attempts 2).
    assert_eq!(out.dest.batches.load(Ordering::SeqCst), 1);
    assert_eq!(out.dest.heals.load(Ordering::SeqCst), 8);
    assert_eq!(out.source.deletes.load(Ordering::SeqCst), 0, "never deleted");
    for (i, source) in out.source_files.iter().enumerate() {
        assert_eq!(source.as_deref(), Some(&content(i)[..]), "metric {i} kept as it was");
    }
}

#[tokio::test]
async fn a_job_without_destinations_never_deletes_its_source() {
    for batch in [1, 8] {
        let out = Scenario { to_dest: false, ..Scenario::new(Mode::Honour, 3, batch) }.run().await;
        assert_eq!(out.summary.deleted, 0, "batch {batch}: {:?}", out.summary);
        assert_eq!(out.source.deletes.load(Ordering::SeqCst), 0, "batch {batch}");
        for (i, source) in out.source_files.iter().enumerate() {
            assert_eq!(source.as_deref(), Some(&content(i)[..]), "batch {batch}: metric {i} kept");
        }
    }
}

#[tokio::test]
async fn jobs_needing_a_node_found_down_fail_at_once() {
    let out = Scenario { dest_down: true, ..Scenario::new(Mode::Honour, 40, 8) }.run().await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (0, 0, 40), "{:?}", out.summary);
    assert!(out.summary.failures.iter().any(|f| f.reason.contains("is down")), "{:?}", out.summary.failures);
    // The two workers' first batches found the destination unreachable; no job read its source after that,
    // alone or in a batch.
    assert!(out.source.batches.load(Ordering::SeqCst) <= 4, "{}", out.source.batches.load(Ordering::SeqCst));
    assert_eq!(out.source.gets.load(Ordering::SeqCst), 0);
    assert_eq!(out.source.deletes.load(Ordering::SeqCst), 0);
    for (i, source) in out.source_files.iter().enumerate() {
        assert_eq!(source.as_deref(), Some(&content(i)[..]), "metric {i} kept");
    }
}

#[tokio::test]
async fn a_batch_whose_files_outgrow_its_read_continues_in_the_next_batch() {
    // Two files fit in the read's answer (--batch-mib), not three: batches of 8 move 2 metrics each, the
    // rest lead the worker's next batch rather than running alone (which would hold every file at once).
    let size = content(0).len() as u64;
    let out = Scenario { batch_bytes: 2 * size + size / 2, ..Scenario::new(Mode::Honour, 20, 8) }.run().await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (20, 20, 0), "{:?}", out.summary);
    assert_eq!(out.summary.not_started, 0, "{:?}", out.summary);
    // 10 reads and 10 deletes on the source, 10 heals on the destination; nothing alone.
    assert_eq!(out.source.batches.load(Ordering::SeqCst), 20);
    assert_eq!(out.dest.batches.load(Ordering::SeqCst), 10);
    for agent in [&out.source, &out.dest] {
        let single = [&agent.gets, &agent.heals, &agent.deletes].map(|c| c.load(Ordering::SeqCst));
        assert_eq!(single, [0, 0, 0], "no request per metric");
    }
    assert!(out.source_files.iter().all(Option::is_none));
    for (i, dest) in out.dest_files.iter().enumerate() {
        assert_eq!(dest.as_deref(), Some(&content(i)[..]), "metric {i}");
    }
}

#[tokio::test]
async fn a_full_destination_is_sent_no_more_copies_and_every_source_is_kept() {
    for batch in [1, 8] {
        let out = Scenario::new(Mode::Full, 40, batch).run().await;
        let summary = &out.summary;
        assert_eq!((summary.moved, summary.deleted, summary.errors), (0, 0, 40), "batch {batch}: {summary:?}");
        let full = out.dest_addr.to_string();
        assert_eq!(summary.full_nodes.get(&full), Some(&40), "batch {batch}: {summary:?}");
        let reason = format!("{full} is full (507 Insufficient Storage)");
        assert!(summary.failures.iter().all(|f| f.reason == reason), "batch {batch}: {:?}", summary.failures);
        // The two workers' first requests found the disk full: no retry, and nothing more sent to it.
        let (heals, batches) = (out.dest.heals.load(Ordering::SeqCst), out.dest.batches.load(Ordering::SeqCst));
        if batch == 1 {
            assert!(heals <= 2 && batches == 0, "batch {batch}: {heals} heals, {batches} batches");
        } else {
            assert!(heals == 0 && batches <= 2, "batch {batch}: {heals} heals, {batches} batches");
        }
        assert_eq!(out.source.deletes.load(Ordering::SeqCst), 0, "batch {batch}");
        for (i, source) in out.source_files.iter().enumerate() {
            assert_eq!(source.as_deref(), Some(&content(i)[..]), "batch {batch}: metric {i} kept");
        }
        assert!(out.dest_files.iter().all(Option::is_none), "batch {batch}");
    }
}

#[tokio::test]
async fn a_stopped_run_starts_no_job_and_says_so() {
    let out = Scenario { interrupt: Interrupt::Stop, ..Scenario::new(Mode::Honour, 10, 4) }.run().await;
    assert_eq!((out.summary.moved, out.summary.not_started), (0, 10), "{:?}", out.summary);
    assert!(!out.summary.aborted && !out.summary.ok(0), "{:?}", out.summary);
    assert_eq!(out.source.batches.load(Ordering::SeqCst) + out.source.gets.load(Ordering::SeqCst), 0);
    for (i, source) in out.source_files.iter().enumerate() {
        assert_eq!(source.as_deref(), Some(&content(i)[..]), "metric {i} kept");
    }
}

#[tokio::test]
async fn an_aborted_run_returns_aborted_with_every_source_kept() {
    let out = Scenario { interrupt: Interrupt::Abort, ..Scenario::new(Mode::Honour, 10, 4) }.run().await;
    assert!(out.summary.aborted, "{:?}", out.summary);
    assert_eq!(out.source.deletes.load(Ordering::SeqCst) + out.source.batches.load(Ordering::SeqCst), 0);
    for (i, source) in out.source_files.iter().enumerate() {
        assert_eq!(source.as_deref(), Some(&content(i)[..]), "metric {i} kept");
    }
}

#[tokio::test]
async fn the_files_in_flight_stay_within_the_runs_budget() {
    // Room for 8 files in the run's budget (7 once counted in KiB), 4 workers taking batches of 8, each read
    // allowed 64 MiB: without the budget each worker would hold its 8 files, 32 at once. A read takes at
    // least a quarter of the budget (room for one file or more here, so no read is sent a file beyond its
    // room) and holds the room for what it read until its batch ends.
    let size = content(0).len() as u64;
    let scenario = Scenario { inflight_bytes: 8 * size, workers: 4, ..Scenario::new(Mode::Honour, 64, 8) };
    let out = scenario.run().await;
    assert_eq!((out.summary.moved, out.summary.deleted, out.summary.errors), (64, 64, 0), "{:?}", out.summary);
    let most = out.source.most_files_out.load(Ordering::SeqCst);
    assert!((1..=8).contains(&most), "{most} files held at once");
    assert_eq!(out.source.files_out.load(Ordering::SeqCst), 0, "every file read was deleted");
    // The same run with room for every file: the workers hold their whole batches.
    let unbounded = Scenario { inflight_bytes: 64 << 20, ..scenario }.run().await;
    assert_eq!(unbounded.summary.moved, 64, "{:?}", unbounded.summary);
    assert!(unbounded.source.most_files_out.load(Ordering::SeqCst) > 8, "the test can tell");
}
