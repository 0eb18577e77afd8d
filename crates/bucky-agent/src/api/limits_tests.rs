//! Router tests of the agent's limits and protections: the memory budget, waits that hold no I/O slot,
//! offload's authorization, symbolic links, and the status codes of odd requests (issue 14's attacks).

use std::fs;
use std::os::unix::fs::symlink;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use bucky_wire::batch::{self, Frame, Meta};
use bucky_wire::MetricStat;
use bytes::Bytes;
use tokio::sync::mpsc;

use super::tests::{ask, batch_answer, batch_request, error_of, statuses, text, upload, Fixture};
use crate::auth::Auth;
use crate::testutil::wsp;

/// A POST whose body arrives only as the returned sender sends it (and never ends while it is held).
fn trickled_upload(name: &str, claimed: i64) -> (Request<Body>, mpsc::Sender<Result<Bytes, std::io::Error>>) {
    let (tx, rx) = mpsc::channel(4);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let stat = MetricStat { name: name.into(), size: claimed, mode: 420, mod_time: 1, ..MetricStat::default() };
    let request = Request::post(format!("/metrics/{name}"))
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(bucky_wire::METRIC_STAT_HEADER, stat.to_header_value())
        .body(Body::from_stream(stream))
        .unwrap();
    (request, tx)
}

#[tokio::test]
async fn trickled_uploads_claiming_a_gib_hold_only_what_they_sent() {
    // A budget of 256 KiB: before, each trickled upload reserved its claimed size (clamped to the whole
    // budget) before its first byte, and every other upload waited behind it.
    let f = Fixture::with(|c| {
        c.request_memory = 256 * 1024;
        // Its own flushes only: a syncfs would also wait for whatever the tests beside it wrote.
        c.store.flush = crate::store::Flush::Fsync;
    });
    let mut senders = Vec::new();
    let mut trickles = Vec::new();
    for name in ["slow.a", "slow.b"] {
        let (request, tx) = trickled_upload(name, 1 << 30);
        tx.send(Ok(Bytes::from_static(b"whisper"))).await.unwrap();
        senders.push(tx);
        let app = f.app();
        trickles.push(tokio::spawn(async move { tower::ServiceExt::oneshot(app, request).await }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let bytes = wsp(&[(1, 1.0)]);
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(2), f.send(upload(Method::POST, "normal.m", &bytes)))
        .await
        .expect("a normal POST is answered while two uploads trickle");
    assert_eq!(response.status(), StatusCode::OK, "{}", text(response).await);
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(f.file("normal.m").unwrap(), bytes);
    for trickle in &trickles {
        assert!(!trickle.is_finished(), "the trickled uploads are still being received");
    }
    drop(senders);
    for trickle in trickles {
        let response = trickle.await.unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "a body shorter than its Size is malformed");
    }
    assert!(f.file("slow.a").is_none() && f.file("slow.b").is_none());
}

#[tokio::test]
async fn a_stalled_or_crawling_body_is_cut_with_408() {
    let f = Fixture::with(|c| {
        c.body_timeout = Duration::from_millis(300);
        c.min_body_rate = 1 << 20;
    });
    // Nothing after the first bytes: cut after --body-timeout.
    let (request, tx) = trickled_upload("stalled.m", 17_308);
    tx.send(Ok(Bytes::from_static(b"x"))).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), f.send(request)).await.unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(text(response).await.contains("--body-timeout"));
    // A byte every 100 ms never trips the idle timeout, but falls below --min-body-rate.
    let (request, tx) = trickled_upload("crawling.m", 17_308);
    let app = f.app();
    let sent = tokio::spawn(async move { tower::ServiceExt::oneshot(app, request).await });
    for _ in 0..20 {
        if tx.send(Ok(Bytes::from_static(b"x"))).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let response = tokio::time::timeout(Duration::from_secs(5), sent).await.unwrap().unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(text(response).await.contains("--min-body-rate"));
    assert_eq!(f.tree(), Vec::<String>::new());
}

#[tokio::test]
async fn a_get_that_finds_no_room_in_the_budget_gets_503_in_bounded_time() {
    let f = Fixture::with(|c| {
        c.request_memory = 64 * 1024;
        c.memory_wait = Duration::from_millis(300);
    });
    f.put_file("a.b", &wsp(&[(1, 1.0)]));
    // An upload that has received 64 KiB holds the whole budget.
    let (request, tx) = trickled_upload("big.m", 1 << 20);
    tx.send(Ok(Bytes::from(vec![0u8; 64 * 1024]))).await.unwrap();
    let app = f.app();
    let upload = tokio::spawn(async move { tower::ServiceExt::oneshot(app, request).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    let response = f.get("/metrics/a.b").await;
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()[header::RETRY_AFTER], "1");
    assert!(text(response).await.contains("--request-memory"));
    assert!(started.elapsed() < Duration::from_secs(3));
    // A HEAD needs no memory and is never held up by the budget.
    let head = Request::head("/metrics/a.b").body(Body::empty()).unwrap();
    assert_eq!(f.send(head).await.status(), StatusCode::OK);
    drop(tx);
    upload.await.unwrap().unwrap();
    assert_eq!(f.get("/metrics/a.b").await.status(), StatusCode::OK, "the budget came back");
}

#[tokio::test]
async fn lock_waiters_hold_no_io_slot() {
    let f = Fixture::with(|c| {
        c.io_concurrency = 4;
        c.store.lock_timeout = Duration::from_secs(5);
    });
    let bytes = wsp(&[(1, 1.0)]);
    f.put_file("locked.m", &bytes);
    f.put_file("free.m", &bytes);
    let holder = fs::File::open(f.root().join("locked/m.wsp")).unwrap();
    holder.lock().unwrap();
    // 64 GETs of the locked file, sixteen times the I/O slots.
    let waiters: Vec<_> = (0..64)
        .map(|_| {
            let app = f.app();
            let request = Request::get("/metrics/locked.m").body(Body::empty()).unwrap();
            tokio::spawn(async move { tower::ServiceExt::oneshot(app, request).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let response = tokio::time::timeout(Duration::from_secs(1), f.get("/metrics/free.m"))
        .await
        .expect("a GET of another metric is answered while 64 requests wait for a lock");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(started.elapsed() < Duration::from_secs(1));
    // A heal into a corrupt file looks at it again for a while: without holding a slot meanwhile.
    f.put_file("corrupt.m", b"not a whisper file at all, and never going to be one");
    let app = f.app();
    let corrupt = tokio::spawn(tower::ServiceExt::oneshot(app, upload(Method::POST, "corrupt.m", &bytes)));
    tokio::time::sleep(Duration::from_millis(50)).await;
    let response = tokio::time::timeout(Duration::from_millis(400), f.get("/metrics/free.m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(corrupt.await.unwrap().unwrap().status(), StatusCode::CONFLICT);
    holder.unlock().unwrap();
    for waiter in waiters {
        assert_eq!(waiter.await.unwrap().unwrap().status(), StatusCode::OK, "the waiters are served once it is free");
    }
}

#[tokio::test]
async fn a_batch_on_a_locked_file_waits_one_lock_timeout_in_all() {
    let f = Fixture::with(|c| {
        c.io_concurrency = 1;
        c.store.lock_timeout = Duration::from_millis(500);
    });
    let bytes = wsp(&[(1, 1.0)]);
    f.put_file("locked.m", &bytes);
    f.put_file("free.m", &bytes);
    let holder = fs::File::open(f.root().join("locked/m.wsp")).unwrap();
    holder.lock().unwrap();
    let names = ["locked.m", "free.m", "locked.m", "locked.m", "locked.m", "locked.m"];
    let frames: Vec<Frame> = names.iter().map(|n| ask(n)).collect();
    let app = f.app();
    let request = batch_request(batch::READ_PATH, &frames);
    let started = Instant::now();
    let batch = tokio::spawn(async move { tower::ServiceExt::oneshot(app, request).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The only I/O slot is not held by the waiting batch.
    let response = tokio::time::timeout(Duration::from_millis(300), f.get("/metrics/free.m")).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = batch.await.unwrap().unwrap();
    let raw = super::tests::body(response).await;
    let answers = batch::decode(raw.into(), &batch::Limits::default()).unwrap();
    assert_eq!(statuses(&answers), [503, 200, 503, 503, 503, 503]);
    assert!(error_of(&answers[0]).contains("lock"), "{}", error_of(&answers[0]));
    let took = started.elapsed();
    assert!(took < Duration::from_millis(2500), "one --lock-timeout for the batch, not one per entry: {took:?}");
}

#[tokio::test]
async fn offload_needs_read_on_the_source() {
    let secret = b"s3cret".to_vec();
    let f = Fixture::with(|c| c.auth = Some(Auth::new(secret.clone()).unwrap()));
    let token = Auth::new(secret).unwrap().sign(&serde_json::json!({"namespaces": ["a.*"], "ops": ["*"]}));
    let tree = f.tree();
    let request = Request::post("/metrics/a.stolen?fetch_offload=true&server=localhost:4242&metric=b.c")
        .header(bucky_wire::AUTH_HEADER, &token)
        .body(Body::empty())
        .unwrap();
    let response = f.send(request).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(text(response).await.contains("may not read the source metric b.c"));
    assert_eq!(f.tree(), tree);
}

#[tokio::test]
async fn symbolic_links_below_the_prefix_are_never_followed() {
    let f = Fixture::new();
    let outside = tempfile::tempdir().unwrap();
    let bytes = wsp(&[(1, 1.0)]);
    fs::write(outside.path().join("x.wsp"), &bytes).unwrap();
    symlink(outside.path(), f.root().join("evil")).unwrap();
    // A write through the link: refused, nothing written outside.
    let response = f.send(upload(Method::POST, "evil.new", &bytes)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert!(text(response).await.contains("symbolic link"));
    let response = f.send(upload(Method::PUT, "evil.x", &wsp(&[(2, 2.0)]))).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    // Reads and deletes through it: refused too.
    assert_eq!(f.get("/metrics/evil.x").await.status(), StatusCode::FORBIDDEN);
    let delete = Request::delete("/metrics/evil.x").body(Body::empty()).unwrap();
    assert_eq!(f.send(delete).await.status(), StatusCode::FORBIDDEN);
    let answers = batch_answer(&f, batch_request(batch::READ_PATH, &[ask("evil.x")]), &["evil.x"]).await;
    assert_eq!(statuses(&answers), [403]);
    let mut outside_now: Vec<_> = fs::read_dir(outside.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    outside_now.sort();
    assert_eq!(outside_now, ["x.wsp"]);
    assert_eq!(fs::read(outside.path().join("x.wsp")).unwrap(), bytes);
    // A link in the place of the file itself is not followed either.
    f.put_file("real.m", &bytes);
    symlink(f.root().join("real/m.wsp"), f.root().join("real/link.wsp")).unwrap();
    assert_eq!(f.get("/metrics/real.link").await.status(), StatusCode::FORBIDDEN);
    let response = f.send(upload(Method::POST, "real.link", &bytes)).await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(fs::read(f.root().join("real/m.wsp")).unwrap(), bytes);
}

#[tokio::test]
async fn odd_requests_get_the_status_the_contract_says() {
    let f = Fixture::new();
    let bytes = wsp(&[(1, 1.0)]);
    // A valid name whose path is longer than the filesystem takes: 400, not 500.
    let long: Vec<String> = (0..17).map(|i| format!("{i:0>240}")).collect();
    let long = long.join(".");
    assert_eq!(long.len(), 4096, "the longest valid name");
    let response = f.send(upload(Method::POST, &long, &bytes)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(text(response).await.contains("longer than the filesystem allows"));
    assert_eq!(f.get(&format!("/metrics/{long}")).await.status(), StatusCode::BAD_REQUEST);
    // A regular file where a directory goes: 409 for a write, 404 for a read.
    fs::write(f.root().join("plain"), b"x").unwrap();
    assert_eq!(f.send(upload(Method::POST, "plain.m", &bytes)).await.status(), StatusCode::CONFLICT);
    assert_eq!(f.get("/metrics/plain.m").await.status(), StatusCode::NOT_FOUND);
    // A negative Size is a malformed header, not a too-large body.
    let stat = MetricStat { name: "neg.m".into(), size: -1, ..MetricStat::default() };
    let request = Request::post("/metrics/neg.m")
        .header(header::CONTENT_TYPE, "application/octet-stream")
        .header(bucky_wire::METRIC_STAT_HEADER, stat.to_header_value())
        .body(Body::from(bytes.clone()))
        .unwrap();
    assert_eq!(f.send(request).await.status(), StatusCode::BAD_REQUEST);
    // An empty batch, and an entry whose meta is empty rather than a JSON object.
    let response = f.send(batch_request(batch::READ_PATH, &[])).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(text(response).await.contains("empty batch"));
    let mut raw = batch::encode(&[Frame::new("a.b", 0, Meta::default(), Bytes::new())]);
    let at = batch::MAGIC.len() + 4 + 3 + 2;
    raw.splice(at..at + 4 + 2, 0u32.to_be_bytes()); // meta length 0, the two bytes "{}" gone
    let request = Request::post(batch::READ_PATH)
        .header(header::CONTENT_TYPE, batch::CONTENT_TYPE)
        .body(Body::from(raw))
        .unwrap();
    assert_eq!(f.send(request).await.status(), StatusCode::BAD_REQUEST);
    assert_eq!(f.tree(), ["plain"]);
}
