//! `POST /batch/digest`: per-entry answers for known, unknown, hostile and corrupt names, the window
//! headers, and nothing changed on disk.

use axum::http::{header, StatusCode};
use bucky_wire::batch::{self, Frame};
use bucky_wire::digest::{decode, DIGEST_PATH, RANGES_HEADER, UNTIL_HEADER};

use super::{ask, batch_answer, batch_request, body, error_of, statuses, Fixture, HOSTILE};
use crate::testutil::{now, wsp, wsp_with};

fn digest_request(frames: &[Frame], until: &str, ranges: Option<&str>) -> axum::http::Request<axum::body::Body> {
    let mut request = batch_request(DIGEST_PATH, frames);
    request.headers_mut().insert(UNTIL_HEADER, until.parse().unwrap());
    if let Some(ranges) = ranges {
        request.headers_mut().insert(RANGES_HEADER, ranges.parse().unwrap());
    }
    request
}

#[tokio::test]
async fn digests_answer_each_entry_and_change_nothing() {
    let f = Fixture::new();
    let same = wsp(&[(1, 1.0), (2, 2.0), (700, 7.0)]);
    f.put_file("d.a", &same);
    f.put_file("d.deep.b", &same);
    f.put_file("d.other", &wsp(&[(1, 1.0), (2, 2.5), (700, 7.0)]));
    f.put_file("d.schema", &wsp_with("1m:2d", &[(1, 1.0)]));
    let mut corrupt = same.clone();
    corrupt[12..16].copy_from_slice(&[0xff; 4]); // archive count
    f.put_file("d.corrupt", &corrupt);
    f.put_file("d.empty", b"");
    let tree = f.tree();
    let mut asked = vec!["d.a", "d.deep.b", "d.other", "d.schema", "d.missing", "d.corrupt", "d.empty"];
    asked.extend(HOSTILE);
    let frames: Vec<Frame> = asked.iter().map(|n| ask(n)).collect();
    let until = now().to_string();
    for ranges in [None, Some("1")] {
        let answers = batch_answer(&f, digest_request(&frames, &until, ranges), &asked).await;
        let mut expected = vec![200, 200, 200, 200, 404, 409, 409];
        expected.extend([400; HOSTILE.len()]);
        assert_eq!(statuses(&answers), expected, "ranges {ranges:?}");
        let digest = |i: usize| decode(&answers[i].data).unwrap();
        assert_eq!(digest(0).archives, digest(1).archives, "same points, same digests");
        assert_ne!(digest(0).archives, digest(2).archives, "one value differs");
        assert_ne!(digest(0).archives[0].points, digest(3).archives[0].points);
        assert!(digest(0).mod_time > 0);
        let expected_ranges = if ranges.is_some() { 2..=3 } else { 1..=1 };
        assert!(expected_ranges.contains(&digest(0).archives[0].ranges.len()), "{:?}", digest(0));
        assert_eq!(digest(0).archives[0].ranges.iter().map(|r| r.count).sum::<u32>(), 3);
        assert_eq!(error_of(&answers[4]), "Metric not found.");
        assert!(error_of(&answers[5]).contains("not a valid whisper file"), "{}", error_of(&answers[5]));
        for answer in &answers[7..] {
            assert!(error_of(answer).starts_with("invalid metric name"), "{:?}: {}", answer.name, error_of(answer));
            assert!(answer.data.is_empty());
        }
        // An archive digest of a 17,308-byte file is a few dozen bytes.
        if ranges.is_none() {
            assert_eq!(answers[0].data.len(), 32);
        }
    }
    assert_eq!(f.tree(), tree, "nothing created or removed");
    assert_eq!(f.file("d.corrupt").unwrap(), corrupt);
}

#[tokio::test]
async fn a_huge_list_is_answered_in_full() {
    let f = Fixture::new();
    f.put_file("h.x", &wsp(&[(1, 1.0)]));
    let names: Vec<String> =
        (0..20_000).map(|i| if i % 1000 == 0 { "h.x".into() } else { format!("h.n{i}") }).collect();
    let asked: Vec<&str> = names.iter().map(String::as_str).collect();
    let frames: Vec<Frame> = asked.iter().map(|n| ask(n)).collect();
    let answers = batch_answer(&f, digest_request(&frames, &now().to_string(), None), &asked).await;
    assert_eq!(answers.iter().filter(|a| a.status == 200).count(), 20);
    assert_eq!(answers.iter().filter(|a| a.status == 404).count(), 19_980);
}

#[tokio::test]
async fn the_window_headers_are_checked_before_anything_is_read() {
    let f = Fixture::new();
    f.put_file("w.a", &wsp(&[(1, 1.0)]));
    let frames = [ask("w.a")];
    for (until, ranges) in [("-1", None), ("tomorrow", None), ("99999999999", None), ("1700000000", Some("yes"))] {
        let response = f.send(digest_request(&frames, until, ranges)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{until} {ranges:?}");
        let text = String::from_utf8(body(response).await).unwrap();
        assert!(text.contains("X-Bucky-Digest"), "{text}");
    }
    // Without the header at all, and a body that is not a batch.
    let response = f.send(batch_request(DIGEST_PATH, &frames)).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let mut request = digest_request(&frames, "1700000000", None);
    *request.body_mut() = axum::body::Body::from("not a batch");
    assert_eq!(f.send(request).await.status(), StatusCode::BAD_REQUEST);
    let mut request = digest_request(&frames, "1700000000", None);
    request.headers_mut().insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
    assert_eq!(f.send(request).await.status(), StatusCode::BAD_REQUEST);
    let _ = batch::MAGIC;
}

/// `bucky repair`'s heal: with `Overwrite` (batch) or `X-Bucky-Heal-Overwrite: 1` (single POST) the
/// upload's values win where both hold a point; without, the file's stay.
#[tokio::test]
async fn heals_with_overwrite_replace_conflicting_values() {
    use super::{heal_frame, points, read_back, upload};
    let f = Fixture::new();
    let file = wsp(&[(1, 1.0), (2, 2.0)]);
    let reference = wsp(&[(2, 20.0), (3, 3.0)]);
    for name in ["o.plain", "o.batch", "o.single"] {
        f.put_file(name, &file);
    }
    let mut overwriting = heal_frame("o.batch", &reference);
    overwriting.meta.overwrite = true;
    let frames = vec![heal_frame("o.plain", &reference), overwriting];
    let answers = batch_answer(&f, batch_request(batch::HEAL_PATH, &frames), &["o.plain", "o.batch"]).await;
    assert_eq!(statuses(&answers), [200, 200]);
    assert_eq!(points(&f.file("o.plain").unwrap()), [(1, 1.0), (2, 2.0), (3, 3.0)]);
    assert_eq!(points(&f.file("o.batch").unwrap()), [(1, 1.0), (2, 20.0), (3, 3.0)]);
    let report = answers[1].meta.report.clone().unwrap();
    assert_eq!((report.points_written, report.points_replaced), (2, 1));
    assert_eq!(answers[0].meta.report.clone().unwrap().points_replaced, 0);
    let mut request = read_back(upload(axum::http::Method::POST, "o.single", &reference), "1");
    request.headers_mut().insert(bucky_wire::OVERWRITE_HEADER, "1".parse().unwrap());
    assert_eq!(f.send(request).await.status(), StatusCode::OK);
    assert_eq!(f.file("o.single").unwrap(), f.file("o.batch").unwrap());
}
