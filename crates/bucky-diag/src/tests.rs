//! The watchdog against real stalls and real flocks, in-process (the stall is provoked by the test itself:
//! nothing in the shipped binaries can cause one on purpose).

use std::path::Path;
use std::time::{Duration, Instant};

use super::*;

fn diag_in(dir: &Path, stall: Duration, stuck: Duration) -> (Diagnostics, PathBuf) {
    let file = dir.join("diag.log");
    let config = DiagConfig {
        stall_threshold: stall,
        stuck_after: stuck,
        diag_file: Some(file.clone()),
        ..DiagConfig::new("test-daemon")
    };
    (Diagnostics::new(config).unwrap(), file)
}

fn wait_for_text(file: &Path, needle: &str, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(Instant::now() < deadline, "no {needle:?} within {within:?}; the diag file has:\n{text}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_blocked_runtime_is_reported_with_the_stall_length_and_what_was_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let (diag, file) = diag_in(dir.path(), Duration::from_millis(300), Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    diag.start(runtime.handle()).unwrap();
    let _op = diag.registry().begin("GET /metrics/{name}", "during.the.stall");
    std::thread::sleep(Duration::from_millis(250)); // the heartbeat is running
                                                    // The only worker sleeps in a task: the runtime runs nothing else (what a blocking call in async
                                                    // code does to a real daemon).
    runtime.block_on(async { tokio::spawn(async { std::thread::sleep(Duration::from_millis(1200)) }).await.unwrap() });
    let text = wait_for_text(&file, "runtime stall over", Duration::from_secs(5));
    assert!(text.contains("runtime stall: the async runtime has not run for"), "{text}");
    assert!(text.contains("during.the.stall"), "{text}");
    let over = text.lines().find(|l| l.contains("runtime stall over")).unwrap();
    let ms: u64 = over.split("for ").nth(1).unwrap().trim_end_matches(" ms").parse().unwrap();
    assert!((1000..2500).contains(&ms), "stall length {ms} ms for a 1.2 s block");
    assert_eq!(diag.state("test").watchdog.stalls, 1);
}

#[test]
fn an_operation_waiting_for_a_held_flock_is_reported_once_with_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let (diag, file) = diag_in(dir.path(), Duration::from_secs(60), Duration::from_millis(300));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    diag.start(runtime.handle()).unwrap();
    let wsp = dir.path().join("c.wsp");
    let holder = std::fs::File::create(&wsp).unwrap();
    rustix::fs::flock(&holder, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let op = diag.registry().begin("POST /metrics/{name}", "a.b.c");
    op.waiting_for_lock(&wsp);
    let text = wait_for_text(&file, "stuck operation", Duration::from_secs(3));
    let line = text.lines().find(|l| l.contains("stuck operation")).unwrap();
    assert!(line.contains("POST /metrics/{name} a.b.c"), "{line}");
    assert!(line.contains("\"waiting for flock\""), "{line}");
    assert!(line.contains(&format!("on {}", wsp.display())), "{line}");
    assert!(line.contains(&format!("held by pid {}", std::process::id())), "{line}");
    std::thread::sleep(Duration::from_millis(1200));
    let again = std::fs::read_to_string(&file).unwrap();
    assert_eq!(again.matches("stuck operation").count(), 1, "reported more than once:\n{again}");
    let state = diag.state("test");
    assert_eq!(state.locks.awaited, vec![wsp.clone()]);
    assert_eq!(state.in_flight[0].lock_holders[0].pid, std::process::id());
    let json = serde_json::to_value(&state).unwrap();
    assert_eq!(json["in_flight"][0]["phase"], "waiting for flock");
    drop(runtime);
}

#[test]
fn the_text_dump_names_every_part() {
    let dir = tempfile::tempdir().unwrap();
    let (diag, _) = diag_in(dir.path(), Duration::from_secs(60), Duration::from_secs(60));
    let _op = diag.registry().begin("list scan", "");
    diag.metrics().incr("requests.list.200");
    let text = diag.state("SIGQUIT").to_text();
    for part in ["state dump: pid", "reason SIGQUIT", "in flight: 1", "list scan", "fds: ", "memory: rss", "watchdog:"]
    {
        assert!(text.contains(part), "{part:?} missing from:\n{text}");
    }
    assert!(text.contains("requests.list.200 1"), "{text}");
}

#[test]
fn descriptors_rising_at_every_sample_are_reported_with_where_they_point() {
    let dir = tempfile::tempdir().unwrap();
    let (diag, file) = {
        let file = dir.path().join("diag.log");
        let config = DiagConfig {
            fd_sample_every: Duration::from_millis(100),
            diag_file: Some(file.clone()),
            ..DiagConfig::new("test-daemon")
        };
        (Diagnostics::new(config).unwrap(), file)
    };
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    diag.start(runtime.handle()).unwrap();
    let leaking = dir.path().join("leaking");
    std::fs::create_dir(&leaking).unwrap();
    let mut kept = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&file).unwrap_or_default().contains("descriptor leak?") {
        assert!(Instant::now() < deadline, "no leak reported:\n{}", std::fs::read_to_string(&file).unwrap_or_default());
        for _ in 0..12 {
            kept.push(std::fs::File::create(leaking.join(kept.len().to_string())).unwrap());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("{}/*", leaking.display())), "the leaking directory is not named:\n{text}");
    assert_eq!(diag.state("test").watchdog.fd_leaks, 1);
    drop(runtime);
}

#[test]
fn a_runtime_that_shut_down_is_not_reported_as_stalled() {
    let dir = tempfile::tempdir().unwrap();
    let (diag, file) = diag_in(dir.path(), Duration::from_millis(150), Duration::from_secs(60));
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    diag.start(runtime.handle()).unwrap();
    std::thread::sleep(Duration::from_millis(250)); // the heartbeat is running
    drop(runtime); // as a daemon's runtime at its end, with the watchdog thread still running
    std::thread::sleep(Duration::from_millis(800));
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(!text.contains("runtime stall"), "a shut-down runtime reported as stalled:\n{text}");
    assert_eq!(diag.state("test").watchdog.stalls, 0);
}
