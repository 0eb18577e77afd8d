//! go-carbon clusters (issue 17): a real go-carbon 0.17.1 writing the whisper files that bucky lists, heals
//! and moves. The daemon is `bucky_e2e::go_carbon::GoCarbon`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bucky_e2e::go_carbon::{GoCarbon, GoCarbonConfig};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The harness itself: go-carbon starts, answers `/admin/info` with the configured limit, and writes the
/// points it receives into whisper files that the whisper crate reads back.
#[test]
fn go_carbon_writes_what_it_receives_and_reports_its_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let config = GoCarbonConfig { max_size: 123_456, ..GoCarbonConfig::new("1m:1d") };
    let gc = GoCarbon::start("127.0.0.61", &tmp.path().join("whisper"), &tmp.path().join("gc"), &config);
    let (_, limit) = gc.admin_info().expect("/admin/info answers");
    assert_eq!(limit, 123_456);
    let t = now() / 60 * 60;
    gc.send_lines(&[format!("harness.a 1.5 {t}"), format!("harness.b.c 2.5 {t}")]);
    gc.wait_for_files(&["harness.a", "harness.b.c"], Duration::from_secs(20));
    // go-carbon creates the file first and writes the points after; wait for the point itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let file = whisper::WhisperFile::open(gc.path_of("harness.b.c")).unwrap();
        let series = file.fetch(t - 60, Some(t + 60), now(), None).unwrap();
        if series.is_some_and(|s| s.values.contains(&Some(2.5))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "point never written: {}", gc.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}
