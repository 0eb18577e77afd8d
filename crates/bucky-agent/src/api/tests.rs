//! Router tests: every route, status and header, driven with `oneshot` (no server).

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::Response;
use axum::Router;
use bucky_wire::batch::{self, Frame, Meta};
use bucky_wire::{HealReport, MetricStat, RingInfo};
use bytes::Bytes;
use hashring::{Hash, Node, RingSpec};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::unix_now;
use crate::auth::Auth;
pub(super) use crate::testutil::{points, wsp, wsp_with};
use crate::{app, AppState, Config};

pub(super) struct Fixture {
    // Dropped in this order: the agent, the tmpfs (if any), then the directory.
    pub(super) state: AppState,
    _tmpfs: Option<full::Tmpfs>,
    pub(super) dir: tempfile::TempDir,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        Fixture::with(|_| {})
    }

    pub(super) fn with(tweak: impl FnOnce(&mut Config)) -> Fixture {
        Fixture::in_dir(tempfile::tempdir().unwrap(), None, tweak)
    }

    /// An agent whose prefix is a fresh tmpfs mounted with `options` (`size=1m`, ...).
    fn on_tmpfs(options: &str) -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let tmpfs = full::Tmpfs::mount(dir.path(), options);
        Fixture::in_dir(dir, Some(tmpfs), |_| {})
    }

    fn in_dir(dir: tempfile::TempDir, tmpfs: Option<full::Tmpfs>, tweak: impl FnOnce(&mut Config)) -> Fixture {
        let nodes = vec![Node::parse("localhost:2003=a").unwrap(), Node::parse("127.0.0.1:2003=b").unwrap()];
        let ring = RingSpec::new(nodes, Hash::CarbonCh).build().unwrap();
        let mut config = Config::new("localhost", ring, dir.path());
        config.store.lock_timeout = Duration::from_secs(5);
        tweak(&mut config);
        Fixture { state: AppState::new(config).unwrap(), _tmpfs: tmpfs, dir }
    }

    pub(super) fn root(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn app(&self) -> Router {
        app(self.state.clone())
    }

    pub(super) async fn send(&self, request: Request<Body>) -> Response {
        self.app().oneshot(request).await.unwrap()
    }

    pub(super) async fn get(&self, uri: &str) -> Response {
        self.send(Request::get(uri).body(Body::empty()).unwrap()).await
    }

    pub(super) fn put_file(&self, name: &str, bytes: &[u8]) {
        let path = self.root().join(name.replace('.', "/") + ".wsp");
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    pub(super) fn file(&self, name: &str) -> Option<Vec<u8>> {
        fs::read(self.root().join(name.replace('.', "/") + ".wsp")).ok()
    }

    /// Every path below the root (to check that failed requests changed nothing).
    pub(super) fn tree(&self) -> Vec<String> {
        fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
            for entry in fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                out.push(path.strip_prefix(root).unwrap().display().to_string());
                if path.is_dir() {
                    walk(&path, root, out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.root(), self.root(), &mut out);
        out.sort();
        out
    }

    /// Lists until the cache answers 200.
    async fn list(&self, query: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let response = self.get(&format!("/metrics{query}")).await;
            match response.status() {
                StatusCode::OK => return serde_json::from_slice(&body(response).await).unwrap(),
                StatusCode::ACCEPTED => {
                    assert!(Instant::now() < deadline, "list never became ready");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                status => panic!("list answered {status}: {:?}", text(response).await),
            }
        }
    }
}

pub(super) async fn body(response: Response) -> Vec<u8> {
    response.into_body().collect().await.unwrap().to_bytes().to_vec()
}

pub(super) async fn text(response: Response) -> String {
    String::from_utf8(body(response).await).unwrap()
}

pub(super) fn stat_for(name: &str, bytes: &[u8]) -> String {
    MetricStat {
        name: name.into(),
        size: bytes.len() as i64,
        mode: 420,
        mod_time: 1_600_000_000,
        ..MetricStat::default()
    }
    .to_header_value()
}

pub(super) fn upload(method: Method, name: &str, bytes: &[u8]) -> Request<Body> {
    Request::builder()
        .method(method)
        .uri(format!("/metrics/{name}"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(bucky_wire::METRIC_STAT_HEADER, stat_for(name, bytes))
        .body(Body::from(bytes.to_vec()))
        .unwrap()
}

fn snappy(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = snap::write::FrameEncoder::new(Vec::new());
    encoder.write_all(bytes).unwrap();
    encoder.into_inner().unwrap()
}

pub(super) fn unsnappy(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    snap::read::FrameDecoder::new(bytes).read_to_end(&mut out).unwrap();
    out
}

fn header_stat(response: &Response) -> MetricStat {
    let value = response.headers().get(bucky_wire::METRIC_STAT_HEADER).expect("X-Metric-Stat").to_str().unwrap();
    MetricStat::from_header_value(value).unwrap()
}

// ---- routing ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn hashring_echoes_the_ring() {
    let f = Fixture::new();
    let response = f.get("/hashring").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let info: RingInfo = serde_json::from_slice(&body(response).await).unwrap();
    assert_eq!(info.name, "localhost");
    assert_eq!((info.algo.as_str(), info.replicas, info.router.as_deref()), ("carbon", 1, Some("carbon")));
    assert_eq!(info.nodes.len(), 2);
    assert_eq!(
        (info.nodes[1].server.as_str(), info.nodes[1].port, info.nodes[1].instance.as_str()),
        ("127.0.0.1", 2003, "b")
    );
    let raw = text(f.get("/hashring").await).await;
    assert!(
        raw.starts_with(r#"{"Name":"localhost","Nodes":[{"Server":"localhost","Port":2003,"Instance":"a"}"#),
        "{raw}"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let f = Fixture::new();
    assert_eq!(f.get("/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(f.get("/nope").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(f.get("/debug/pprof/").await.status(), StatusCode::NOT_FOUND);
    for (method, uri) in [
        (Method::POST, "/hashring"),
        (Method::PUT, "/metrics"),
        (Method::DELETE, "/metrics"),
        (Method::PATCH, "/metrics/a.b"),
        (Method::OPTIONS, "/metrics/a.b"),
    ] {
        let response = f.send(Request::builder().method(method.clone()).uri(uri).body(Body::empty()).unwrap()).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{method} {uri}");
        assert_eq!(text(response).await, "Bad request method.\n");
    }
    let response = f.get("/metrics/").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(text(response).await, "Metric name missing.\n");
}

// ---- listing ----------------------------------------------------------------------------------------------

#[tokio::test]
async fn list_answers_202_while_building_then_the_names() {
    let f = Fixture::new();
    for name in ["a.b.c", "a.b.d", "x.y", "carbon.agents.h.cpu"] {
        f.put_file(name, b"");
    }
    f.put_file("a.b.ignored", b"");
    fs::rename(f.root().join("a/b/ignored.wsp"), f.root().join("a/b/ignored.txt")).unwrap();
    let response = f.get("/metrics").await;
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert_eq!(text(response).await, "Cache update in progress.\n");
    assert_eq!(f.list("").await, ["a.b.c", "a.b.d", "carbon.agents.h.cpu", "x.y"]);
    let response = f.get("/metrics").await;
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    // Filters: RE2 regex, list intersection, both.
    assert_eq!(f.list("?regex=%5Ea%5C.b").await, ["a.b.c", "a.b.d"]);
    assert_eq!(f.list("?list=%5B%22x.y%22%2C%22nope%22%2C%22a.b.c%22%5D").await, ["a.b.c", "x.y"]);
    assert_eq!(f.list("?list=%5B%22x.y%22%2C%22a.b.c%22%5D&regex=x").await, ["x.y"]);
    assert!(f.list("?regex=zzz").await.is_empty());
    // POST with a form body, as bucky sends large lists.
    let request = Request::post("/metrics")
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Body::from("list=%5B%22a.b.d%22%5D"))
        .unwrap();
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(text(response).await, r#"["a.b.d"]"#);
    // force rebuilds: 202 first, then the new file is there.
    f.put_file("new.one", b"");
    assert_eq!(f.get("/metrics?force=1").await.status(), StatusCode::ACCEPTED);
    assert!(f.list("").await.contains(&"new.one".to_owned()));
}

#[tokio::test]
async fn list_refuses_bad_parameters() {
    let f = Fixture::new();
    f.list("").await;
    let response = f.get("/metrics?regex=(").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(text(response).await.starts_with("invalid regex"));
    let response = f.get("/metrics?list=notjson").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(text(response).await.starts_with("Error decoding list"));
}

#[tokio::test]
async fn list_streams_many_names_and_follows_the_agents_own_changes() {
    let f = Fixture::new();
    for i in 0..10_000 {
        f.put_file(&format!("many.m{i:05}"), b"");
    }
    let names = f.list("").await;
    assert_eq!(names.len(), 10_000);
    assert!(names.windows(2).all(|w| w[0] < w[1]));
    // A create and a delete through the API show at once, without force.
    assert_eq!(f.send(upload(Method::POST, "fresh.metric", &wsp(&[(1, 1.0)]))).await.status(), StatusCode::OK);
    let delete = Request::delete("/metrics/many.m00000").body(Body::empty()).unwrap();
    assert_eq!(f.send(delete).await.status(), StatusCode::OK);
    let names = f.list("").await;
    assert!(names.contains(&"fresh.metric".to_owned()));
    assert!(!names.contains(&"many.m00000".to_owned()));
}

// ---- HEAD and GET -----------------------------------------------------------------------------------------

#[tokio::test]
async fn head_reports_the_stat() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0)]);
    f.put_file("a.b", &bytes);
    let path = f.root().join("a/b.wsp");
    let response = f.send(Request::head("/metrics/a.b").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    let stat = header_stat(&response);
    let meta = fs::metadata(&path).unwrap();
    assert_eq!(stat.name, "a.b");
    assert_eq!(stat.size, bytes.len() as i64);
    assert_eq!(stat.mode, i64::from(meta.mode() & 0o777));
    assert_eq!(stat.mod_time, meta.mtime());
    assert_eq!(stat.encoding, 0);
    assert!(body(response).await.is_empty());
    let response = f.send(Request::head("/metrics/a.nope").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    // A directory is not a metric.
    fs::create_dir_all(f.root().join("d/e.wsp")).unwrap();
    let response = f.send(Request::head("/metrics/d.e").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn get_serves_the_bytes_with_stat_and_etag() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0), (2, 2.0)]);
    f.put_file("a.b", &bytes);
    let response = f.get("/metrics/a.b").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/octet-stream");
    assert!(response.headers().contains_key(header::LAST_MODIFIED));
    assert!(response.headers().get(header::CONTENT_ENCODING).is_none());
    let etag = response.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.len() == 34, "{etag}");
    let stat = header_stat(&response);
    assert_eq!((stat.name.as_str(), stat.size, stat.encoding), ("a.b", bytes.len() as i64, 0));
    assert_eq!(body(response).await, bytes);

    // snappy framed, Encoding 1, same ETag.
    let request = Request::get("/metrics/a.b").header(header::ACCEPT_ENCODING, "snappy").body(Body::empty()).unwrap();
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "snappy");
    assert_eq!(response.headers()[header::ETAG].to_str().unwrap(), etag);
    let stat = header_stat(&response);
    assert_eq!((stat.size, stat.encoding), (bytes.len() as i64, 1));
    let compressed = body(response).await;
    assert!(compressed.len() < bytes.len());
    assert_eq!(unsnappy(&compressed), bytes);

    // If-None-Match: 304; a changed file has a new ETag even at the same size.
    let request = Request::get("/metrics/a.b").header(header::IF_NONE_MATCH, &etag).body(Body::empty()).unwrap();
    assert_eq!(f.send(request).await.status(), StatusCode::NOT_MODIFIED);
    f.put_file("a.b", &wsp(&[(1, 1.0), (2, 2.5)]));
    let response = f.get("/metrics/a.b").await;
    assert_ne!(response.headers()[header::ETAG].to_str().unwrap(), etag);

    let response = f.get("/metrics/a.nope").await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(text(response).await, "Metric not found.\n");
}

#[tokio::test]
async fn get_waits_for_an_exclusive_lock_and_times_out_with_503() {
    let f = Fixture::with(|c| c.store.lock_timeout = Duration::from_millis(300));
    let bytes = wsp(&[(1, 1.0)]);
    f.put_file("a.b", &bytes);
    let holder = fs::File::open(f.root().join("a/b.wsp")).unwrap();
    holder.lock().unwrap();
    let response = f.get("/metrics/a.b").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    // A shared lock (another reader) does not block.
    holder.unlock().unwrap();
    holder.lock_shared().unwrap();
    assert_eq!(f.get("/metrics/a.b").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn request_timeout_answers_408() {
    let f = Fixture::with(|c| c.request_timeout = Duration::from_millis(200));
    f.put_file("a.b", &wsp(&[(1, 1.0)]));
    let holder = fs::File::open(f.root().join("a/b.wsp")).unwrap();
    holder.lock().unwrap();
    assert_eq!(f.get("/metrics/a.b").await.status(), StatusCode::REQUEST_TIMEOUT);
}

// ---- POST (heal) -------------------------------------------------------------------------------------------

#[tokio::test]
async fn post_creates_a_missing_file_durably() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0), (3, 3.0)]);
    let response = f.send(upload(Method::POST, "new.dir.metric", &bytes)).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
    let report: HealReport = serde_json::from_slice(&body(response).await).unwrap();
    assert!(report.created);
    assert_eq!(f.file("new.dir.metric").unwrap(), bytes);
    // No temp file left, nothing else created.
    assert_eq!(f.tree(), ["new", "new/dir", "new/dir/metric.wsp"]);
}

#[tokio::test]
async fn post_heals_an_existing_file_without_overwriting_points() {
    let f = Fixture::new();
    f.put_file("a.b", &wsp(&[(1, 1.0), (2, 2.0)]));
    let src = wsp(&[(2, 20.0), (3, 3.0), (4, 4.0)]);
    let response = f.send(upload(Method::POST, "a.b", &src)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: HealReport = serde_json::from_slice(&body(response).await).unwrap();
    assert!(!report.created);
    assert_eq!(report.points_written, 2);
    assert_eq!(points(&f.file("a.b").unwrap()), [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]);
    // Idempotent.
    let response = f.send(upload(Method::POST, "a.b", &src)).await;
    let report: HealReport = serde_json::from_slice(&body(response).await).unwrap();
    assert_eq!(report.points_written, 0);
}

#[tokio::test]
async fn post_accepts_snappy() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0)]);
    let mut request = upload(Method::POST, "s.n", &bytes);
    *request.body_mut() = Body::from(snappy(&bytes));
    request.headers_mut().insert(header::CONTENT_ENCODING, "snappy".parse().unwrap());
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::OK, "{:?}", text(response).await);
    assert_eq!(f.file("s.n").unwrap(), bytes);
}

pub(super) fn read_back(mut request: Request<Body>, value: &str) -> Request<Body> {
    request.headers_mut().insert(bucky_wire::READ_BACK_HEADER, value.parse().unwrap());
    request
}

#[tokio::test]
async fn post_with_read_back_answers_with_the_replica_as_read_from_disk() {
    let f = Fixture::new();
    // A create: the answer is the new file, with the report in a header.
    let bytes = wsp(&[(1, 1.0), (3, 3.0)]);
    let response = f.send(read_back(upload(Method::POST, "rb.new", &bytes), "1")).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[bucky_wire::READ_BACK_HEADER], "1");
    assert_eq!(response.headers()[header::CONTENT_TYPE], "application/octet-stream");
    let report: HealReport =
        serde_json::from_str(response.headers()[bucky_wire::HEAL_REPORT_HEADER].to_str().unwrap()).unwrap();
    assert!(report.created);
    let stat = header_stat(&response);
    assert_eq!((stat.name.as_str(), stat.size, stat.encoding), ("rb.new", bytes.len() as i64, 0));
    let etag = response.headers()[header::ETAG].to_str().unwrap().to_owned();
    assert_eq!(etag, crate::etag::etag_of(&bytes));
    assert_eq!(body(response).await, bytes);
    // A heal of an existing file: the answer is the union on disk, not the upload; snappy when asked.
    let src = wsp(&[(2, 2.0), (3, 30.0)]);
    let mut request = read_back(upload(Method::POST, "rb.new", &src), "true");
    request.headers_mut().insert(header::ACCEPT_ENCODING, "snappy".parse().unwrap());
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "snappy");
    assert_eq!(header_stat(&response).encoding, 1);
    let report: HealReport =
        serde_json::from_str(response.headers()[bucky_wire::HEAL_REPORT_HEADER].to_str().unwrap()).unwrap();
    assert_eq!((report.created, report.points_written), (false, 1));
    let on_disk = f.file("rb.new").unwrap();
    assert_eq!(unsnappy(&body(response).await), on_disk);
    assert_eq!(points(&on_disk), [(1, 1.0), (2, 2.0), (3, 3.0)]);
}

#[tokio::test]
async fn post_without_read_back_keeps_buckyds_answer() {
    let f = Fixture::new();
    let requests = [
        upload(Method::POST, "plain.m", &wsp(&[(1, 1.0)])),
        read_back(upload(Method::POST, "plain.m", &wsp(&[(2, 2.0)])), "0"),
    ];
    for request in requests {
        let response = f.send(request).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert!(response.headers().get(bucky_wire::READ_BACK_HEADER).is_none());
        assert!(response.headers().get(bucky_wire::HEAL_REPORT_HEADER).is_none());
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        let _: HealReport = serde_json::from_slice(&body(response).await).unwrap();
    }
    assert_eq!(points(&f.file("plain.m").unwrap()), [(1, 1.0), (2, 2.0)]);
}

#[tokio::test]
async fn a_bad_read_back_value_is_refused_before_the_disk_changes() {
    let f = Fixture::new();
    let tree = f.tree();
    let response = f.send(read_back(upload(Method::POST, "bad.rb", &wsp(&[(1, 1.0)])), "please")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(text(response).await, "X-Bucky-Read-Back must be 1 or 0\n");
    assert_eq!(f.tree(), tree);
}

#[tokio::test]
async fn concurrent_creates_are_group_committed_and_each_is_complete_when_answered() {
    for flush in [crate::store::Flush::Syncfs, crate::store::Flush::Fsync] {
        let f = Fixture::with(|c| {
            c.store.flush = flush;
            c.io_concurrency = 64;
        });
        let requests = (0..200).map(|i| {
            let f = &f;
            async move {
                let name = format!("group.d{}.m{i}", i % 7);
                let bytes = wsp(&[(i, i as f64)]);
                let response = f.send(upload(Method::POST, &name, &bytes)).await;
                assert_eq!(response.status(), StatusCode::OK, "{flush:?} {name}");
                // Answered: the file is at its final path, whole.
                assert_eq!(f.file(&name).as_deref(), Some(&bytes[..]), "{flush:?} {name}");
                let report: HealReport = serde_json::from_slice(&body(response).await).unwrap();
                assert!(report.created, "{flush:?} {name}");
            }
        });
        futures_util::future::join_all(requests).await;
        let tree = f.tree();
        assert_eq!(tree.iter().filter(|p| p.ends_with(".wsp")).count(), 200, "{flush:?}");
        assert!(tree.iter().all(|p| !p.contains("bucky-tmp")), "{flush:?}: temp files left: {tree:?}");
    }
}

#[tokio::test]
async fn post_with_mtime_sets_the_uploads_mtime() {
    let f = Fixture::with(|c| c.store.set_mtime = true);
    assert_eq!(f.send(upload(Method::POST, "m.t", &wsp(&[(1, 1.0)]))).await.status(), StatusCode::OK);
    assert_eq!(fs::metadata(f.root().join("m/t.wsp")).unwrap().mtime(), 1_600_000_000);
    // A heal never makes a file look older than it was.
    let before = fs::metadata(f.root().join("m/t.wsp")).unwrap().mtime();
    assert_eq!(f.send(upload(Method::POST, "m.t", &wsp(&[(2, 2.0)]))).await.status(), StatusCode::OK);
    assert_eq!(fs::metadata(f.root().join("m/t.wsp")).unwrap().mtime(), before.max(1_600_000_000));
}

#[tokio::test]
async fn hostile_bodies_are_refused_before_the_disk_changes() {
    let f = Fixture::with(|c| c.body_limit = 100_000);
    let existing = wsp(&[(1, 1.0)]);
    f.put_file("exists.m", &existing);
    let good = wsp(&[(2, 2.0)]);
    let tree = f.tree();
    let mut garbage = good.clone();
    garbage[12..16].copy_from_slice(&[0xff; 4]); // archive count
    let big = wsp_with("1s:3h", &[]);
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        (
            "no content type",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().remove(header::CONTENT_TYPE);
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            "wrong content type",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            "no stat",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().remove(bucky_wire::METRIC_STAT_HEADER);
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            "stat not json",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().insert(bucky_wire::METRIC_STAT_HEADER, "{nope".parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            "stat size lies",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().insert(bucky_wire::METRIC_STAT_HEADER, stat_for("x", &good[1..]).parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        ("tiny", upload(Method::POST, "new.m", &good[..28]), StatusCode::BAD_REQUEST),
        ("truncated file", upload(Method::POST, "new.m", &good[..good.len() - 12]), StatusCode::BAD_REQUEST),
        ("garbage header", upload(Method::POST, "new.m", &garbage), StatusCode::BAD_REQUEST),
        ("garbage into existing", upload(Method::POST, "exists.m", &garbage), StatusCode::BAD_REQUEST),
        ("garbage replace", upload(Method::PUT, "exists.m", &garbage), StatusCode::BAD_REQUEST),
        (
            "bad snappy",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().insert(header::CONTENT_ENCODING, "snappy".parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            "snappy bomb",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                *r.body_mut() = Body::from(snappy(&vec![0u8; 10 * good.len()]));
                r.headers_mut().insert(header::CONTENT_ENCODING, "snappy".parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            "unknown encoding",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
                r
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ),
        (
            "body longer than its stat",
            {
                let mut r = upload(Method::POST, "new.m", &big);
                r.headers_mut().insert(bucky_wire::METRIC_STAT_HEADER, stat_for("x", &good).parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
        ),
        (
            "body over the limit",
            {
                // Incompressible bytes: the snappy body is longer than the 100,000-byte limit.
                let mut x = 0x9E37_79B9_7F4A_7C15_u64;
                let noise: Vec<u8> = (0..120_000)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 32) as u8
                    })
                    .collect();
                let mut r = upload(Method::POST, "new.m", &snappy(&noise));
                r.headers_mut().insert(header::CONTENT_ENCODING, "snappy".parse().unwrap());
                r.headers_mut()
                    .insert(bucky_wire::METRIC_STAT_HEADER, stat_for("x", &noise[..99_000]).parse().unwrap());
                r
            },
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
        (
            "stat size over the limit",
            {
                let mut r = upload(Method::POST, "new.m", &good);
                r.headers_mut().insert(bucky_wire::METRIC_STAT_HEADER, stat_for("x", &big).parse().unwrap());
                r
            },
            StatusCode::PAYLOAD_TOO_LARGE,
        ),
    ];
    for (what, request, status) in cases {
        let response = f.send(request).await;
        assert_eq!(response.status(), status, "{what}: {:?}", text(response).await);
        assert_eq!(f.tree(), tree, "{what} changed the disk");
        assert_eq!(f.file("exists.m").unwrap(), existing, "{what}");
    }
}

#[tokio::test]
async fn a_corrupt_destination_is_left_alone_by_a_heal() {
    let f = Fixture::new();
    f.put_file("bad.m", b"this is not a whisper file at all, but long enough");
    let response = f.send(upload(Method::POST, "bad.m", &wsp(&[(1, 1.0)]))).await;
    assert_eq!(response.status(), StatusCode::CONFLICT);
    assert_eq!(f.file("bad.m").unwrap(), b"this is not a whisper file at all, but long enough");
    // PUT replaces it.
    let bytes = wsp(&[(1, 1.0)]);
    assert_eq!(f.send(upload(Method::PUT, "bad.m", &bytes)).await.status(), StatusCode::OK);
    assert_eq!(f.file("bad.m").unwrap(), bytes);
}

// ---- hostile names ----------------------------------------------------------------------------------------

#[tokio::test]
async fn hostile_names_are_refused_for_every_method() {
    let f = Fixture::new();
    f.put_file("a.b", &wsp(&[(1, 1.0)]));
    let outside = f.root().parent().unwrap().join("outside.wsp");
    let long_part = "x".repeat(256);
    let long_name = vec!["x"; 2100].join(".");
    let names: Vec<String> = vec![
        "a..b".into(),
        ".a".into(),
        "a.".into(),
        "..".into(),
        "%2E%2E".into(),
        "a%2Fb".into(),
        "a/b".into(),
        "..%2Foutside".into(),
        "%2Fetc%2Fpasswd".into(),
        "/etc/passwd".into(),
        "a%00b".into(),
        "a%0Ab".into(),
        "a%7Fb".into(),
        long_part.clone(),
        format!("a.{long_part}"),
        long_name,
    ];
    let tree = f.tree();
    let bytes = wsp(&[(1, 1.0)]);
    for name in &names {
        for method in [Method::HEAD, Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            let mut request = upload(method.clone(), "placeholder", &bytes);
            *request.uri_mut() = format!("/metrics/{name}").parse().unwrap();
            let response = f.send(request).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{method} {name}");
            if method != Method::HEAD {
                assert!(text(response).await.starts_with("invalid metric name"), "{method} {name}");
            }
        }
        assert_eq!(f.tree(), tree, "{name} changed the disk");
    }
    assert!(!outside.exists());
    // Invalid UTF-8 after percent-decoding is refused by the router.
    let response = f.get("/metrics/a%FFb").await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    // The offload source name goes through the same checker.
    let request =
        Request::post("/metrics/a.c?fetch_offload=true&server=127.0.0.1:4242&metric=a..b").body(Body::empty()).unwrap();
    assert_eq!(f.send(request).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(f.tree(), tree);
}

// ---- PUT (replace) ----------------------------------------------------------------------------------------

#[tokio::test]
async fn put_replaces_in_place_or_by_rename_and_honours_if_match() {
    let f = Fixture::new();
    let path = f.root().join("p/q.wsp");
    // Missing: created.
    let first = wsp(&[(1, 1.0)]);
    let response = f.send(upload(Method::PUT, "p.q", &first)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let report: HealReport = serde_json::from_slice(&body(response).await).unwrap();
    assert!(report.created);
    let inode = fs::metadata(&path).unwrap().ino();
    // Same layout: rewritten in place (same inode), points replaced, not merged.
    let second = wsp(&[(2, 2.0)]);
    assert_eq!(f.send(upload(Method::PUT, "p.q", &second)).await.status(), StatusCode::OK);
    assert_eq!(fs::read(&path).unwrap(), second);
    assert_eq!(fs::metadata(&path).unwrap().ino(), inode);
    // If-Match: a stale ETag is refused and nothing changes; the current one works.
    let etag = f.get("/metrics/p.q").await.headers()[header::ETAG].to_str().unwrap().to_owned();
    let stale = crate::etag::etag_of(&first);
    let mut request = upload(Method::PUT, "p.q", &first);
    request.headers_mut().insert(header::IF_MATCH, stale.parse().unwrap());
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert_eq!(fs::read(&path).unwrap(), second);
    // Different layout: a new file renamed over the old one.
    let other = wsp_with("1m:2d", &[(3, 3.0)]);
    let mut request = upload(Method::PUT, "p.q", &other);
    request.headers_mut().insert(header::IF_MATCH, etag.parse().unwrap());
    assert_eq!(f.send(request).await.status(), StatusCode::OK);
    assert_eq!(fs::read(&path).unwrap(), other);
    assert_ne!(fs::metadata(&path).unwrap().ino(), inode);
    assert_eq!(f.tree(), ["p", "p/q.wsp"]);
    // If-Match on a missing metric: 412, nothing created; malformed If-Match: 400.
    let mut request = upload(Method::PUT, "p.missing", &first);
    request.headers_mut().insert(header::IF_MATCH, "*".parse().unwrap());
    assert_eq!(f.send(request).await.status(), StatusCode::PRECONDITION_FAILED);
    let mut request = upload(Method::PUT, "p.q", &first);
    request.headers_mut().insert(header::IF_MATCH, "no-quotes".parse().unwrap());
    assert_eq!(f.send(request).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(f.tree(), ["p", "p/q.wsp"]);
}

// ---- DELETE -----------------------------------------------------------------------------------------------

#[tokio::test]
async fn delete_honours_if_match_and_answers_404() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0)]);
    f.put_file("d.e", &bytes);
    let etag = f.get("/metrics/d.e").await.headers()[header::ETAG].to_str().unwrap().to_owned();
    // carbon writes a point after our read: the ETag no longer matches, the source is kept.
    f.put_file("d.e", &wsp(&[(1, 1.0), (0, 5.0)]));
    let request = Request::delete("/metrics/d.e").header(header::IF_MATCH, &etag).body(Body::empty()).unwrap();
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::PRECONDITION_FAILED);
    assert!(f.file("d.e").is_some());
    let etag = f.get("/metrics/d.e").await.headers()[header::ETAG].to_str().unwrap().to_owned();
    let request = Request::delete("/metrics/d.e").header(header::IF_MATCH, &etag).body(Body::empty()).unwrap();
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(body(response).await.is_empty());
    assert!(f.file("d.e").is_none());
    // Parents are kept (no pruning by default).
    assert_eq!(f.tree(), ["d"]);
    let response = f.send(Request::delete("/metrics/d.e").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(text(response).await, "Metric not found.\n");
    let request = Request::delete("/metrics/d.e").header(header::IF_MATCH, &etag).body(Body::empty()).unwrap();
    assert_eq!(f.send(request).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn delete_prunes_empty_parents_only_when_asked_and_old_enough() {
    let f = Fixture::with(|c| c.store.prune_grace = Some(Duration::ZERO));
    f.put_file("p1.p2.p3.m", b"x");
    f.put_file("p1.keep", b"x");
    let response = f.send(Request::delete("/metrics/p1.p2.p3.m").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(f.tree(), ["p1", "p1/keep.wsp"]);
    let response = f.send(Request::delete("/metrics/p1.keep").body(Body::empty()).unwrap()).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(f.tree().is_empty());
    assert!(f.root().is_dir(), "the prefix itself is never removed");

    let f = Fixture::with(|c| c.store.prune_grace = Some(Duration::from_secs(3600)));
    f.put_file("q1.q2.m", b"x");
    assert_eq!(f.send(Request::delete("/metrics/q1.q2.m").body(Body::empty()).unwrap()).await.status(), StatusCode::OK);
    assert_eq!(f.tree(), ["q1", "q1/q2"], "fresh directories are kept: carbon may be creating a file there");
}

// ---- auth -------------------------------------------------------------------------------------------------

#[tokio::test]
async fn auth_checks_tokens_operations_and_namespaces() {
    let secret = b"s3cret".to_vec();
    let f = Fixture::with(|c| c.auth = Some(Auth::new(secret.clone()).unwrap()));
    let auth = Auth::new(secret).unwrap();
    f.put_file("sys.cpu", &wsp(&[(1, 1.0)]));
    f.put_file("app.req", &wsp(&[(1, 1.0)]));
    let reader = auth.sign(&serde_json::json!({"namespaces": ["sys.*"], "ops": ["read"]}));
    let root = auth.sign(&serde_json::json!({"namespaces": ["*"], "ops": ["*"]}));
    let expired = auth.sign(&serde_json::json!({"namespaces": ["*"], "ops": ["*"], "exp": unix_now() - 1}));
    let with = |method: Method, uri: &str, token: Option<&str>| {
        let mut builder = Request::builder().method(method).uri(uri);
        if let Some(token) = token {
            builder = builder.header(bucky_wire::AUTH_HEADER, token);
        }
        builder.body(Body::empty()).unwrap()
    };
    // No token, a bad token, an expired token: 401.
    for token in [None, Some("garbage"), Some(expired.as_str())] {
        let response = f.send(with(Method::GET, "/metrics/sys.cpu", token)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token:?}");
        assert!(text(response).await.starts_with("unauthorized:"));
        assert_eq!(f.send(with(Method::GET, "/metrics", token)).await.status(), StatusCode::UNAUTHORIZED);
    }
    // /hashring stays open (clients discover the cluster before they have a token).
    assert_eq!(f.send(with(Method::GET, "/hashring", None)).await.status(), StatusCode::OK);
    // The state dump needs a token that may read, and never shows one.
    for token in [None, Some("garbage")] {
        assert_eq!(f.send(with(Method::GET, "/debug/state", token)).await.status(), StatusCode::UNAUTHORIZED);
    }
    let writer = auth.sign(&serde_json::json!({"namespaces": ["*"], "ops": ["update"]}));
    assert_eq!(f.send(with(Method::GET, "/debug/state", Some(&writer))).await.status(), StatusCode::FORBIDDEN);
    let response = f.send(with(Method::GET, "/debug/state", Some(&reader))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let state = text(response).await;
    assert!(state.contains("\"in_flight\"") && state.contains("GET /debug/state"), "{state}");
    assert!(!state.contains(&reader) && !state.contains("s3cret"), "the dump shows a secret: {state}");
    // A reader of sys.*: reads sys, nothing else; cannot delete.
    assert_eq!(f.send(with(Method::GET, "/metrics/sys.cpu", Some(&reader))).await.status(), StatusCode::OK);
    assert_eq!(f.send(with(Method::HEAD, "/metrics/sys.cpu", Some(&reader))).await.status(), StatusCode::OK);
    let response = f.send(with(Method::GET, "/metrics/app.req", Some(&reader))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(text(response).await.contains("no access"));
    let response = f.send(with(Method::DELETE, "/metrics/sys.cpu", Some(&reader))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(text(response).await.contains("delete permission"));
    let mut post = upload(Method::POST, "sys.cpu", &wsp(&[(2, 2.0)]));
    post.headers_mut().insert(bucky_wire::AUTH_HEADER, reader.parse().unwrap());
    assert_eq!(f.send(post).await.status(), StatusCode::FORBIDDEN);
    // Listing with a namespaced token shows only its namespace.
    let list = |token: String| {
        let f = &f;
        async move {
            loop {
                let response = f.send(with(Method::GET, "/metrics", Some(&token))).await;
                if response.status() == StatusCode::OK {
                    return serde_json::from_slice::<Vec<String>>(&body(response).await).unwrap();
                }
                assert_eq!(response.status(), StatusCode::ACCEPTED);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    };
    assert_eq!(list(reader.clone()).await, ["sys.cpu"]);
    assert_eq!(list(root.clone()).await, ["app.req", "sys.cpu"]);
    assert_eq!(f.send(with(Method::DELETE, "/metrics/app.req", Some(&root))).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn uploads_larger_than_the_memory_budget_still_go_through_one_at_a_time() {
    let f = Fixture::with(|c| c.request_memory = 1024);
    let (a, b) = (wsp(&[(1, 1.0)]), wsp(&[(2, 2.0)]));
    assert!(a.len() > 1024 && b.len() > 1024, "each upload alone needs more than the whole budget");
    let (ra, rb) =
        tokio::join!(f.send(upload(Method::POST, "budget.a", &a)), f.send(upload(Method::POST, "budget.b", &b)));
    assert_eq!((ra.status(), rb.status()), (StatusCode::OK, StatusCode::OK));
    assert_eq!((f.file("budget.a").unwrap(), f.file("budget.b").unwrap()), (a, b));
    // Both went through, and never held memory together: the second waited for the first's charge.
    assert_eq!(f.state.budget().most_holders_at_once(), 1, "the uploads held request memory at the same time");
}

#[tokio::test]
async fn offload_refuses_incomplete_forms_and_servers_outside_the_ring() {
    // A port nothing listens on, as the only agent port: bound (so no test beside this one is given it)
    // but never listening.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let closed = socket.local_addr().unwrap().port();
    let f = Fixture::with(|c| c.peer_ports = vec![closed]);
    let tree = f.tree();
    let offload = |form: &str| {
        Request::post("/metrics/dst.m?fetch_offload=true")
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .body(Body::from(form.to_owned()))
            .unwrap()
    };
    for (form, reason) in [
        ("metric=src.m", "server missing"),
        ("server=localhost:{closed}", "metric missing"),
        ("server=localhost:{closed}&metric=src..m", "invalid source metric name"),
        ("server=localhost&metric=src.m", "must be HOST:PORT"),
        ("server=localhost:http&metric=src.m", "bad port"),
        ("server=evil.example.com:4242&metric=src.m", "not a ring member"),
        ("server=169.254.169.254:80&metric=src.m", "not a ring member"),
        ("server=localhost:22&metric=src.m", "not an agent port"),
    ] {
        let form = form.replace("{closed}", &closed.to_string());
        let response = f.send(offload(&form)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{form}");
        let text = text(response).await;
        assert!(text.contains(reason), "{form}: {text}");
    }
    // The fields may come in the query string too (Go's FormValue); an unreachable member is a 400.
    let request = Request::post(format!("/metrics/dst.m?fetch_offload=true&server=127.0.0.1:{closed}&metric=src.m"))
        .body(Body::empty())
        .unwrap();
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(text(response).await.starts_with("Error fetching metric"));
    assert_eq!(f.tree(), tree);
}

#[tokio::test]
async fn a_directory_in_the_way_is_a_conflict() {
    let f = Fixture::new();
    fs::create_dir_all(f.root().join("dir/in.wsp")).unwrap();
    for method in [Method::POST, Method::PUT] {
        let response = f.send(upload(method.clone(), "dir.in", &wsp(&[(1, 1.0)]))).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{method}");
    }
    assert_eq!(f.tree(), ["dir", "dir/in.wsp"]);
}

// ---- batches ----------------------------------------------------------------------------------------------

pub(super) fn ask(name: &str) -> Frame {
    Frame::new(name, 0, Meta::default(), Bytes::new())
}

pub(super) fn heal_frame(name: &str, bytes: &[u8]) -> Frame {
    let stat = MetricStat {
        name: name.into(),
        size: bytes.len() as i64,
        mode: 420,
        mod_time: 1_600_000_000,
        ..MetricStat::default()
    };
    Frame::new(name, 0, Meta { stat: Some(stat), ..Meta::default() }, Bytes::copy_from_slice(bytes))
}

pub(super) fn batch_request(path: &str, frames: &[Frame]) -> Request<Body> {
    Request::post(path)
        .header(header::CONTENT_TYPE, batch::CONTENT_TYPE)
        .body(Body::from(batch::encode(frames)))
        .unwrap()
}

/// Sends a batch request that must succeed as a whole; returns its frames, checked to answer the request's
/// frames one by one, in order.
pub(super) async fn batch_answer(f: &Fixture, request: Request<Body>, asked: &[&str]) -> Vec<Frame> {
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], batch::CONTENT_TYPE);
    let snappy = response.headers().get(header::CONTENT_ENCODING).is_some_and(|v| v == "snappy");
    let raw = body(response).await;
    let raw = if snappy { unsnappy(&raw) } else { raw };
    let frames = batch::decode(raw.into(), &batch::Limits::default()).unwrap();
    let names: Vec<&str> = frames.iter().map(|frame| frame.name.as_str()).collect();
    assert_eq!(names, asked, "one answer per entry, in order");
    frames
}

pub(super) fn statuses(frames: &[Frame]) -> Vec<u16> {
    frames.iter().map(|frame| frame.status).collect()
}

pub(super) fn error_of(frame: &Frame) -> &str {
    frame.meta.error.as_deref().unwrap_or("")
}

pub(super) const HOSTILE: [&str; 7] = ["..", "/etc/passwd", "a\0b", "a..b", "../outside", "a/b", "x.\n"];

#[tokio::test]
async fn batch_read_answers_each_entry_as_a_get() {
    let f = Fixture::new();
    let (one, two) = (wsp(&[(1, 1.0)]), wsp_with("1m:2d", &[(2, 2.0), (3, 3.0)]));
    f.put_file("r.one", &one);
    f.put_file("r.deep.two", &two);
    let tree = f.tree();
    let mut asked = vec!["r.one", "r.missing", "r.deep.two"];
    asked.extend(HOSTILE);
    asked.push("r.one"); // twice is fine
    let frames: Vec<Frame> = asked.iter().map(|n| ask(n)).collect();
    let answers = batch_answer(&f, batch_request(batch::READ_PATH, &frames), &asked).await;
    let mut expected = vec![200, 404, 200];
    expected.extend([400; HOSTILE.len()]);
    expected.push(200);
    assert_eq!(statuses(&answers), expected);
    for (answer, bytes) in [(&answers[0], &one), (&answers[2], &two), (&answers[answers.len() - 1], &one)] {
        assert_eq!(answer.data, bytes[..], "{}", answer.name);
        let stat = answer.meta.stat.as_ref().unwrap();
        assert_eq!((stat.name.as_str(), stat.size, stat.encoding), (answer.name.as_str(), bytes.len() as i64, 0));
        let get = f.get(&format!("/metrics/{}", answer.name)).await;
        assert_eq!(answer.meta.etag.as_deref(), Some(get.headers()[header::ETAG].to_str().unwrap()), "{}", answer.name);
        assert_eq!(header_stat(&get), *stat);
        assert!(answer.meta.error.is_none());
    }
    assert_eq!(error_of(&answers[1]), "Metric not found.");
    assert!(answers[1].data.is_empty() && answers[1].meta.stat.is_none() && answers[1].meta.etag.is_none());
    for answer in &answers[3..3 + HOSTILE.len()] {
        assert!(error_of(answer).starts_with("invalid metric name"), "{:?}: {}", answer.name, error_of(answer));
        assert!(answer.data.is_empty());
    }
    assert_eq!(f.tree(), tree);
    // Accept-Encoding: snappy compresses the whole answer; the entries are the same.
    let mut request = batch_request(batch::READ_PATH, &frames);
    request.headers_mut().insert(header::ACCEPT_ENCODING, "snappy".parse().unwrap());
    let response = f.send(request).await;
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "snappy");
    let compressed = body(response).await;
    assert_eq!(batch::decode(unsnappy(&compressed).into(), &batch::Limits::default()).unwrap(), answers);
}

#[tokio::test]
async fn batch_read_answers_stay_within_max_body() {
    let f = Fixture::with(|c| c.body_limit = 40_000);
    let bytes = wsp(&[(1, 1.0)]); // 17,308 bytes: two fit, not three
    for name in ["l.a", "l.b", "l.c"] {
        f.put_file(name, &bytes);
    }
    let asked = ["l.a", "l.missing", "l.b", "l.c"];
    let frames: Vec<Frame> = asked.iter().map(|n| ask(n)).collect();
    let answers = batch_answer(&f, batch_request(batch::READ_PATH, &frames), &asked).await;
    assert_eq!(statuses(&answers), [200, 404, 200, 413]);
    assert!(error_of(&answers[3]).contains("--max-body"), "{}", error_of(&answers[3]));
    // A batch of one reads what a GET reads, whatever its size.
    let f = Fixture::with(|c| c.body_limit = 10_000);
    f.put_file("l.a", &bytes);
    let answers = batch_answer(&f, batch_request(batch::READ_PATH, &[ask("l.a")]), &["l.a"]).await;
    assert_eq!((answers[0].status, &answers[0].data[..]), (200, &bytes[..]));
}

#[tokio::test]
async fn batch_read_answers_stay_within_the_clients_cap() {
    let f = Fixture::with(|c| c.body_limit = 40_000);
    let bytes = wsp(&[(1, 1.0)]); // 17,308 bytes
    for name in ["c.a", "c.b", "c.c"] {
        f.put_file(name, &bytes);
    }
    let asked = ["c.a", "c.b", "c.c"];
    let frames: Vec<Frame> = asked.iter().map(|n| ask(n)).collect();
    let capped = |cap: &str| {
        let mut request = batch_request(batch::READ_PATH, &frames);
        request.headers_mut().insert(batch::MAX_ANSWER_HEADER, cap.parse().unwrap());
        request
    };
    // Under --max-body, the client's cap decides: one file fits in 20,000 bytes.
    let answers = batch_answer(&f, capped("20000"), &asked).await;
    assert_eq!(statuses(&answers), [200, 413, 413]);
    assert!(error_of(&answers[1]).contains(batch::MAX_ANSWER_HEADER), "{}", error_of(&answers[1]));
    // The first file is sent whatever the cap: every batch makes progress.
    assert_eq!(statuses(&batch_answer(&f, capped("0"), &asked).await), [200, 413, 413]);
    // A cap above --max-body does not raise it.
    assert_eq!(statuses(&batch_answer(&f, capped("1000000"), &asked).await), [200, 200, 413]);
    // A cap that is not a number is refused as a whole.
    for bad in ["-1", "lots", ""] {
        let response = f.send(capped(bad)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "cap {bad:?}");
        let text = String::from_utf8(body(response).await).unwrap();
        assert!(text.contains(batch::MAX_ANSWER_HEADER), "{text}");
    }
}

#[tokio::test]
async fn batch_heal_creates_fills_and_fails_each_entry_on_its_own() {
    let f = Fixture::new();
    let existing = wsp(&[(1, 1.0), (2, 2.0)]);
    f.put_file("h.fill", &existing);
    f.put_file("h.single", &existing); // the same heal through the single-metric route
    f.list("").await;
    let new = wsp(&[(1, 1.0), (3, 3.0)]);
    let src = wsp(&[(2, 20.0), (3, 3.0), (4, 4.0)]);
    let mut garbage = src.clone();
    garbage[12..16].copy_from_slice(&[0xff; 4]); // archive count
    let mut wrong_size = heal_frame("h.size", &new);
    wrong_size.meta.stat.as_mut().unwrap().size -= 1;
    let mut compressed = heal_frame("h.enc", &snappy(&new));
    compressed.meta.stat.as_mut().unwrap().encoding = 1;
    let no_stat = Frame::new("h.nostat", 0, Meta::default(), Bytes::from(new.clone()));
    let frames = vec![
        heal_frame("h.new.one", &new),
        heal_frame("h.fill", &src),
        heal_frame("h.bad", &garbage),
        heal_frame("h..x", &new),
        heal_frame("../h", &new),
        wrong_size,
        compressed,
        no_stat,
        heal_frame("h.tiny", b"tiny"),
        heal_frame("h.new.two", &src),
    ];
    let asked: Vec<&str> = frames.iter().map(|frame| frame.name.as_str()).collect();
    let answers = batch_answer(&f, batch_request(batch::HEAL_PATH, &frames), &asked).await;
    assert_eq!(statuses(&answers), [200, 200, 400, 400, 400, 400, 400, 400, 400, 200]);
    assert!(error_of(&answers[2]).starts_with("Malformed whisper data"), "{}", error_of(&answers[2]));
    assert!(error_of(&answers[3]).starts_with("invalid metric name"), "{}", error_of(&answers[3]));
    assert!(error_of(&answers[5]).contains("decodes to 17308 bytes"), "{}", error_of(&answers[5]));
    assert!(error_of(&answers[6]).contains("Encoding"), "{}", error_of(&answers[6]));
    assert!(error_of(&answers[7]).starts_with("Stat missing"), "{}", error_of(&answers[7]));
    assert!(error_of(&answers[8]).contains("too small"), "{}", error_of(&answers[8]));
    // Creates: the exact bytes; the answer is the replica read back, with the report.
    assert_eq!(f.file("h.new.one").unwrap(), new);
    assert_eq!(f.file("h.new.two").unwrap(), src);
    // The fill: merged, no point overwritten, exactly what the single POST makes of the same copy.
    let single = f.send(read_back(upload(Method::POST, "h.single", &src), "1")).await;
    assert_eq!(single.status(), StatusCode::OK);
    let single_report: HealReport =
        serde_json::from_str(single.headers()[bucky_wire::HEAL_REPORT_HEADER].to_str().unwrap()).unwrap();
    let filled = f.file("h.fill").unwrap();
    assert_eq!(points(&filled), [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]);
    assert_eq!(filled, f.file("h.single").unwrap());
    for (answer, name) in [(&answers[0], "h.new.one"), (&answers[1], "h.fill"), (&answers[9], "h.new.two")] {
        let on_disk = f.file(name).unwrap();
        assert_eq!(answer.data, on_disk, "{name}");
        assert_eq!(answer.meta.etag.as_deref(), Some(crate::etag::etag_of(&on_disk).as_str()), "{name}");
        let stat = answer.meta.stat.as_ref().unwrap();
        assert_eq!((stat.name.as_str(), stat.size, stat.encoding), (name, on_disk.len() as i64, 0));
    }
    let report = |i: usize| answers[i].meta.report.clone().unwrap();
    assert!(report(0).created && report(9).created);
    assert_eq!((report(0).points_written, report(0).fill), (0, 0));
    assert!(!report(1).created);
    assert_eq!(report(1).points_written, single_report.points_written);
    assert_eq!(report(1).points_written, 2);
    assert!(answers[2..9].iter().all(|a| a.meta.report.is_none() && a.data.is_empty()));
    // Nothing else was created (no temp file, nothing for the refused entries), and the list knows the new ones.
    assert_eq!(f.tree(), ["h", "h/fill.wsp", "h/new", "h/new/one.wsp", "h/new/two.wsp", "h/single.wsp"]);
    let listed = f.list("").await;
    assert!(listed.contains(&"h.new.one".to_owned()) && listed.contains(&"h.new.two".to_owned()), "{listed:?}");
}

#[tokio::test]
async fn batch_heal_round_trips_snappy_and_commits_many_entries() {
    let f = Fixture::new();
    let files: Vec<(String, Vec<u8>)> =
        (0..100).map(|i| (format!("s.d{}.m{i}", i % 5), wsp(&[(i % 50, i as f64)]))).collect();
    let frames: Vec<Frame> = files.iter().map(|(name, bytes)| heal_frame(name, bytes)).collect();
    let asked: Vec<&str> = files.iter().map(|(name, _)| name.as_str()).collect();
    let plain = batch::encode(&frames);
    let packed = snappy(&plain);
    assert!(packed.len() < plain.len() / 4);
    let request = Request::post(batch::HEAL_PATH)
        .header(header::CONTENT_TYPE, batch::CONTENT_TYPE)
        .header(header::CONTENT_ENCODING, "snappy")
        .header(header::ACCEPT_ENCODING, "snappy")
        .body(Body::from(packed))
        .unwrap();
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_ENCODING], "snappy");
    let answers = batch::decode(unsnappy(&body(response).await).into(), &batch::Limits::default()).unwrap();
    let names: Vec<&str> = answers.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, asked);
    for ((name, bytes), answer) in files.iter().zip(&answers) {
        assert_eq!(answer.status, 200, "{name}: {}", error_of(answer));
        assert!(answer.meta.report.as_ref().unwrap().created, "{name}");
        assert_eq!(f.file(name).as_deref(), Some(&bytes[..]), "{name}");
        assert_eq!(answer.data, bytes[..], "{name}");
    }
    assert!(f.tree().iter().all(|p| !p.contains("bucky-tmp")));
    // Healing the same batch again fills nothing and changes nothing.
    let answers = batch_answer(&f, batch_request(batch::HEAL_PATH, &frames), &asked).await;
    assert!(answers
        .iter()
        .all(|a| a.status == 200 && a.meta.report.as_ref().is_some_and(|r| !r.created && r.points_written == 0)));
    assert!(files.iter().all(|(name, bytes)| f.file(name).as_deref() == Some(&bytes[..])));
}

#[tokio::test]
async fn batch_heal_leaves_out_a_replica_identical_to_the_upload() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0), (2, 2.0)]);
    f.put_file("e.filled", &wsp(&[(3, 3.0)]));
    let with_etag = |name: &str, tag: String| {
        let mut frame = heal_frame(name, &bytes);
        frame.meta.etag = Some(tag);
        frame
    };
    let frames = vec![
        with_etag("e.created", bucky_wire::content_etag(&bytes)),
        with_etag("e.stale_tag", crate::etag::etag_of(b"another content")),
        // A fill makes the replica differ from the upload: it is sent back whatever the tag.
        with_etag("e.filled", bucky_wire::content_etag(&bytes)),
    ];
    let answers =
        batch_answer(&f, batch_request(batch::HEAL_PATH, &frames), &["e.created", "e.stale_tag", "e.filled"]).await;
    assert!(answers.iter().all(|a| a.status == 200), "{answers:?}");
    // Identical to the upload: ETag and stat, no bytes.
    assert!(answers[0].data.is_empty());
    assert_eq!(answers[0].meta.etag.as_deref(), Some(bucky_wire::content_etag(&bytes).as_str()));
    assert_eq!(answers[0].meta.stat.as_ref().map(|s| s.size), Some(bytes.len() as i64));
    assert_eq!(f.file("e.created").as_deref(), Some(&bytes[..]));
    // Another tag given: the replica is sent.
    assert_eq!(answers[1].data, bytes[..]);
    // Filled: the replica read back (holding both its own point and the upload's) is sent.
    let filled = f.file("e.filled").unwrap();
    assert_ne!(filled, bytes);
    assert_eq!(answers[2].data, filled[..]);
    assert_eq!(answers[2].meta.etag.as_deref(), Some(crate::etag::etag_of(&filled).as_str()));
}

#[tokio::test]
async fn batch_delete_answers_each_entry_as_a_delete() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0)]);
    for name in ["d.match", "d.stale", "d.plain", "d.badtag"] {
        f.put_file(name, &bytes);
    }
    f.list("").await;
    let current = f.get("/metrics/d.match").await.headers()[header::ETAG].to_str().unwrap().to_owned();
    let stale = crate::etag::etag_of(b"an older content");
    let with_tag = |name: &str, tag: &str| {
        Frame::new(name, 0, Meta { if_match: Some(tag.into()), ..Meta::default() }, Bytes::new())
    };
    let frames = vec![
        with_tag("d.match", &current),
        with_tag("d.stale", &stale),
        ask("d.missing"),
        with_tag("d.gone", &current),
        ask("d.plain"),
        with_tag("d.badtag", "no-quotes"),
        ask("d..x"),
    ];
    let asked: Vec<&str> = frames.iter().map(|frame| frame.name.as_str()).collect();
    let answers = batch_answer(&f, batch_request(batch::DELETE_PATH, &frames), &asked).await;
    assert_eq!(statuses(&answers), [200, 412, 404, 404, 200, 400, 400]);
    assert_eq!(error_of(&answers[2]), "Metric not found.");
    assert!(error_of(&answers[1]).contains("If-Match"), "{}", error_of(&answers[1]));
    assert!(error_of(&answers[5]).contains("malformed entity tag"), "{}", error_of(&answers[5]));
    assert!(answers[0].meta == Meta::default() && answers[0].data.is_empty());
    assert!(f.file("d.match").is_none() && f.file("d.plain").is_none());
    assert_eq!(f.file("d.stale").unwrap(), bytes, "a mismatching If-Match keeps the file unchanged");
    assert_eq!(f.file("d.badtag").unwrap(), bytes);
    let listed = f.list("").await;
    assert_eq!(listed, ["d.badtag", "d.stale"]);
}

#[tokio::test]
async fn batch_request_errors_change_nothing() {
    let secret = b"s3cret".to_vec();
    let f = Fixture::with(|c| {
        c.body_limit = 100_000;
        c.auth = Some(Auth::new(secret.clone()).unwrap());
    });
    let root = Auth::new(secret).unwrap().sign(&serde_json::json!({"namespaces": ["*"], "ops": ["*"]}));
    let existing = wsp(&[(1, 1.0)]);
    f.put_file("e.exists", &existing);
    let tree = f.tree();
    let frames = vec![heal_frame("e.new", &wsp(&[(2, 2.0)])), heal_frame("e.exists", &wsp(&[(3, 3.0)]))];
    let good = batch::encode(&frames);
    let request = |path: &str, content_type: &str, body: Vec<u8>| {
        Request::post(path)
            .header(header::CONTENT_TYPE, content_type)
            .header(bucky_wire::AUTH_HEADER, &root)
            .body(Body::from(body))
            .unwrap()
    };
    let big: Vec<Frame> = (0..6).map(|i| heal_frame(&format!("e.big{i}"), &wsp(&[(1, 1.0)]))).collect();
    let bomb = snappy(&batch::encode(&[Frame::new("e.bomb", 0, Meta::default(), Bytes::from(vec![0; 200_000]))]));
    let cases: Vec<(&str, Request<Body>, StatusCode, &str)> = vec![
        (
            "wrong content type",
            request(batch::HEAL_PATH, "application/octet-stream", good.clone()),
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/x-bucky-batch",
        ),
        (
            "no content type",
            {
                let mut r = request(batch::HEAL_PATH, "x", good.clone());
                r.headers_mut().remove(header::CONTENT_TYPE);
                r
            },
            StatusCode::BAD_REQUEST,
            "Content-Type must be application/x-bucky-batch",
        ),
        (
            "bad magic",
            request(batch::HEAL_PATH, batch::CONTENT_TYPE, [b"BKB2", &good[4..]].concat()),
            StatusCode::BAD_REQUEST,
            "not a bucky batch",
        ),
        (
            "truncated",
            request(batch::HEAL_PATH, batch::CONTENT_TYPE, good[..good.len() - 1].to_vec()),
            StatusCode::BAD_REQUEST,
            "truncated batch",
        ),
        (
            "truncated read",
            request(batch::READ_PATH, batch::CONTENT_TYPE, good[..10].to_vec()),
            StatusCode::BAD_REQUEST,
            "truncated batch",
        ),
        (
            "over --max-body",
            request(batch::HEAL_PATH, batch::CONTENT_TYPE, batch::encode(&big)),
            StatusCode::PAYLOAD_TOO_LARGE,
            "--max-body",
        ),
        (
            "over --max-body once decoded",
            {
                let mut r = request(batch::HEAL_PATH, batch::CONTENT_TYPE, bomb.clone());
                r.headers_mut().insert(header::CONTENT_ENCODING, "snappy".parse().unwrap());
                r
            },
            StatusCode::PAYLOAD_TOO_LARGE,
            "--max-body",
        ),
        (
            "not snappy",
            {
                let mut r = request(batch::HEAL_PATH, batch::CONTENT_TYPE, good.clone());
                r.headers_mut().insert(header::CONTENT_ENCODING, "snappy".parse().unwrap());
                r
            },
            StatusCode::BAD_REQUEST,
            "invalid snappy stream",
        ),
        (
            "unknown encoding",
            {
                let mut r = request(batch::HEAL_PATH, batch::CONTENT_TYPE, good.clone());
                r.headers_mut().insert(header::CONTENT_ENCODING, "gzip".parse().unwrap());
                r
            },
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported Content-Encoding",
        ),
        (
            "no token",
            {
                let mut r = request(batch::HEAL_PATH, batch::CONTENT_TYPE, good.clone());
                r.headers_mut().remove(bucky_wire::AUTH_HEADER);
                r
            },
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "bad token",
            {
                let mut r = request(batch::DELETE_PATH, batch::CONTENT_TYPE, batch::encode(&[ask("e.exists")]));
                r.headers_mut().insert(bucky_wire::AUTH_HEADER, "garbage".parse().unwrap());
                r
            },
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        ),
        (
            "GET",
            {
                let mut r = request(batch::DELETE_PATH, batch::CONTENT_TYPE, batch::encode(&[ask("e.exists")]));
                *r.method_mut() = Method::GET;
                r
            },
            StatusCode::BAD_REQUEST,
            "Bad request method.",
        ),
        (
            "PUT",
            {
                let mut r = request(batch::HEAL_PATH, batch::CONTENT_TYPE, good.clone());
                *r.method_mut() = Method::PUT;
                r
            },
            StatusCode::BAD_REQUEST,
            "Bad request method.",
        ),
    ];
    for (what, request, status, reason) in cases {
        let response = f.send(request).await;
        assert_eq!(response.status(), status, "{what}");
        let text = text(response).await;
        assert!(text.contains(reason), "{what}: {text}");
        assert_eq!(f.tree(), tree, "{what} changed the disk");
        assert_eq!(f.file("e.exists").unwrap(), existing, "{what}");
    }
    // The same body, well sent, goes through.
    let answers = batch_answer(&f, request(batch::HEAL_PATH, batch::CONTENT_TYPE, good), &["e.new", "e.exists"]).await;
    assert_eq!(statuses(&answers), [200, 200]);
}

#[tokio::test]
async fn batch_entries_are_authorized_one_by_one() {
    let secret = b"s3cret".to_vec();
    let f = Fixture::with(|c| c.auth = Some(Auth::new(secret.clone()).unwrap()));
    let auth = Auth::new(secret).unwrap();
    let bytes = wsp(&[(1, 1.0)]);
    f.put_file("sys.cpu", &bytes);
    f.put_file("app.req", &bytes);
    let tree = f.tree();
    let token = auth.sign(&serde_json::json!({"namespaces": ["sys.*"], "ops": ["read", "update"]}));
    let with_token = |path: &str, frames: &[Frame]| {
        let mut r = batch_request(path, frames);
        r.headers_mut().insert(bucky_wire::AUTH_HEADER, token.parse().unwrap());
        r
    };
    let answers =
        batch_answer(&f, with_token(batch::READ_PATH, &[ask("sys.cpu"), ask("app.req")]), &["sys.cpu", "app.req"])
            .await;
    assert_eq!(statuses(&answers), [200, 403]);
    assert!(error_of(&answers[1]).contains("no access"));
    assert!(answers[1].data.is_empty());
    // A token without the route's right at all is refused before its body is read.
    let response = f.send(with_token(batch::DELETE_PATH, &[ask("sys.cpu"), ask("app.req")])).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(text(response).await.contains("delete permission"));
    assert_eq!(f.tree(), tree);
    let heals = [heal_frame("sys.new", &bytes), heal_frame("app.new", &bytes)];
    let answers = batch_answer(&f, with_token(batch::HEAL_PATH, &heals), &["sys.new", "app.new"]).await;
    assert_eq!(statuses(&answers), [200, 403]);
    assert!(f.file("sys.new").is_some() && f.file("app.new").is_none());
}

mod digest;
mod full;

// ---- a node outside the ring (being drained) ------------------------------------------------------------

#[tokio::test]
async fn a_node_outside_the_ring_serves_reads_and_deletes_and_refuses_writes() {
    let f = Fixture::with(|config| config.node = "leaving".into());
    assert!(!f.state.config().in_ring());
    // /hashring: its Name is not among its Nodes, which is how buckytools clients tell.
    let info: RingInfo = serde_json::from_slice(&body(f.get("/hashring").await).await).unwrap();
    assert_eq!(info.name, "leaving");
    assert!(info.nodes.iter().all(|n| n.server != "leaving"), "{info:?}");
    let held = wsp(&[(1, 1.0), (2, 2.0)]);
    f.put_file("d.held", &held);
    f.put_file("d.gone", &held);
    // Reads, listings, stats.
    assert_eq!(f.list("").await, ["d.gone", "d.held"]);
    let get = f.get("/metrics/d.held").await;
    assert_eq!(get.status(), StatusCode::OK);
    assert_eq!(body(get).await, held);
    let head = f.send(Request::head("/metrics/d.held").body(Body::empty()).unwrap()).await;
    assert_eq!(head.status(), StatusCode::OK);
    let answers = batch_answer(&f, batch_request(batch::READ_PATH, &[ask("d.held")]), &["d.held"]).await;
    assert_eq!(statuses(&answers), [200]);
    // Writes of every kind: 409 naming the reason, and nothing changes on disk.
    let tree = f.tree();
    let new = wsp(&[(3, 3.0)]);
    for request in [
        upload(Method::POST, "d.held", &new),
        upload(Method::POST, "d.new", &new),
        upload(Method::PUT, "d.held", &new),
        Request::post("/metrics/d.off?fetch_offload=true").body(Body::empty()).unwrap(),
        batch_request(batch::HEAL_PATH, &[heal_frame("d.new", &new), heal_frame("d.held", &new)]),
    ] {
        let what = format!("{} {}", request.method(), request.uri());
        let response = f.send(request).await;
        assert_eq!(response.status(), StatusCode::CONFLICT, "{what}");
        let reason = text(response).await;
        assert!(reason.contains("not in the ring") && reason.contains("draining"), "{what}: {reason}");
    }
    assert_eq!(f.tree(), tree);
    assert_eq!(f.file("d.held").unwrap(), held);
    // Deletes, single and batched.
    assert_eq!(f.send(Request::delete("/metrics/d.held").body(Body::empty()).unwrap()).await.status(), StatusCode::OK);
    let answers = batch_answer(&f, batch_request(batch::DELETE_PATH, &[ask("d.gone")]), &["d.gone"]).await;
    assert_eq!(statuses(&answers), [200]);
    assert!(f.list("").await.is_empty());
}
