//! `bucky-agent --file-list-cache` (issue 17): a real go-carbon 0.17.1 writes metrics and its file-list-cache
//! (v2 and v1); the agent lists from that file exactly what its own walk lists, and walks instead, saying
//! why, when the file is truncated, corrupt, stale or missing.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bucky_e2e::go_carbon::{GoCarbon, GoCarbonConfig};
use bucky_e2e::{free_port, go_peer};
use reqwest::StatusCode;

use crate::agent::{client, TestAgent};

const IP: &str = "127.0.0.91";

/// What the log says when the file is read, and when it is not.
const READ: &str = "metric list read from go-carbon's file-list-cache";
const NOT_READ: &str = "not listing from go-carbon's file-list-cache";

/// The metrics go-carbon receives: nested at several depths, with the characters carbon allows.
fn metric_names() -> Vec<String> {
    let mut names = Vec::new();
    for host in 0..6 {
        for metric in ["cpu.user", "cpu.system", "disk.sda-1.reads", "net.eth_0.rx", "load"] {
            names.push(format!("flc.host{host}.{metric}"));
        }
    }
    names.push("top".to_owned());
    names
}

/// Files go-carbon lists but that are not metrics (or not addressable), made by hand before it scans.
fn plant_oddities(data: &Path) {
    for path in [".hidden/x.wsp", "odd.dir/c.wsp", "flc/notes.txt", "flc/.dot.wsp"] {
        let path = data.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, b"").unwrap();
    }
}

/// go-carbon's own reading of its file (`go-carbon -print-file-list-cache`): the CSV header and the paths.
fn print_file_list_cache(file: &Path) -> (String, Vec<String>) {
    let out = Command::new(go_peer("go-carbon")).arg("-print-file-list-cache").arg(file).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap_or_default().to_owned();
    (header, lines.map(|l| l.split(',').next().unwrap_or_default().to_owned()).collect())
}

/// Runs go-carbon writing a file-list-cache of `version` over `data` until its file lists every metric,
/// then stops it (so the file no longer changes) and returns the file, checked with go-carbon's own reader.
fn go_carbon_file_list_cache(tmp: &Path, data: &Path, version: u8) -> PathBuf {
    let config = GoCarbonConfig {
        file_list_cache_version: Some(version),
        scan_frequency: "1s".to_owned(),
        ..GoCarbonConfig::new("1m:1h")
    };
    let gc = GoCarbon::start(IP, data, &tmp.join("gc"), &config);
    let names = metric_names();
    let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() / 60 * 60;
    gc.send_lines(&names.iter().map(|n| format!("{n} 1 {t}")).collect::<Vec<_>>());
    gc.wait_for_files(&names, Duration::from_secs(30));
    let file = gc.file_list_cache.clone().unwrap();
    let want: Vec<String> = names.iter().map(|n| format!("/{}.wsp", n.replace('.', "/"))).collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if file.exists() {
            let (header, paths) = print_file_list_cache(&file);
            let expected_header = if version == 2 { "path,logical_size,physical_size" } else { "path" };
            assert!(header.starts_with(expected_header), "v{version} header: {header}");
            let paths: BTreeSet<String> = paths.into_iter().collect();
            if want.iter().all(|p| paths.contains(p)) {
                // Directories are listed too, and the oddities.
                assert!(paths.contains("/flc/host0/cpu") && paths.contains("/.hidden/x.wsp"), "{paths:?}");
                break;
            }
        }
        assert!(Instant::now() < deadline, "go-carbon never listed every metric: {}", gc.log_text());
        thread::sleep(Duration::from_millis(100));
    }
    drop(gc);
    file
}

/// The agent's full list, once it is built.
fn list(agent: &TestAgent) -> Vec<String> {
    let client = client();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = client.get(agent.url("/metrics")).send().unwrap();
        match response.status() {
            StatusCode::OK => return response.json().unwrap(),
            StatusCode::ACCEPTED => assert!(Instant::now() < deadline, "list never ready:\n{}", agent.log()),
            status => panic!("list answered {status}:\n{}", agent.log()),
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn start_agent(data: &Path, extra: &[&str]) -> TestAgent {
    TestAgent::start(IP, free_port(IP), data, &[IP], extra)
}

/// The walk's list of `data`: every metric go-carbon wrote, and `late.one`, made after go-carbon stopped.
fn walk_list(data: &Path) -> Vec<String> {
    let walked = list(&start_agent(data, &[]));
    let mut want: Vec<String> = metric_names();
    want.push("late.one".to_owned());
    want.sort();
    assert_eq!(walked, want, "the walk lists the metrics and nothing else");
    walked
}

/// Adds a metric by hand after go-carbon's last scan: the walk sees it, go-carbon's file does not.
fn add_late_file(data: &Path) {
    std::fs::create_dir_all(data.join("late")).unwrap();
    std::fs::write(data.join("late/one.wsp"), b"").unwrap();
}

#[test]
fn go_carbons_file_list_cache_v2_and_v1_list_what_the_walk_lists() {
    for version in [2, 1] {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("whisper");
        plant_oddities(&data);
        let file = go_carbon_file_list_cache(tmp.path(), &data, version);
        add_late_file(&data);
        let walked = walk_list(&data);
        let agent = start_agent(&data, &["--file-list-cache", file.to_str().unwrap()]);
        let listed = list(&agent);
        // Exactly the walk's list, but for the file made after go-carbon's last scan (it lags by design).
        let want: Vec<String> = walked.into_iter().filter(|n| n != "late.one").collect();
        assert_eq!(listed, want, "v{version}");
        let log = agent.log();
        assert!(log.contains(READ) && log.contains(&format!("version={version}")), "v{version}:\n{log}");
        assert!(!log.contains(NOT_READ), "v{version}:\n{log}");
    }
}

#[test]
fn a_truncated_corrupt_stale_or_missing_file_list_cache_falls_back_to_the_walk() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("whisper");
    plant_oddities(&data);
    let file = go_carbon_file_list_cache(tmp.path(), &data, 2);
    add_late_file(&data);
    let walked = walk_list(&data);
    let bytes = std::fs::read(&file).unwrap();
    let variant = |name: &str, content: &[u8]| {
        let path = tmp.path().join(name);
        std::fs::write(&path, content).unwrap();
        path
    };
    let intact = variant("intact.bin", &bytes);
    let truncated = variant("truncated.bin", &bytes[..bytes.len() / 2]);
    // A bit flipped in the gzip trailer's CRC-32: the data decodes, the checksum gives it away (every
    // flipped bit of the compressed data is refused too: see the unit tests of `flc`).
    let mut flipped = bytes.clone();
    flipped[bytes.len() - 6] ^= 0x20;
    let corrupt = variant("corrupt.bin", &flipped);
    let stale = variant("stale.bin", &bytes);
    let an_hour_ago = SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().write(true).open(&stale).unwrap().set_modified(an_hour_ago).unwrap();
    let missing = tmp.path().join("missing.bin");

    // The intact copy is read (late.one is not in it): the damage alone makes the difference below.
    let agent = start_agent(&data, &["--file-list-cache", intact.to_str().unwrap(), "--timeout", "600"]);
    assert_eq!(list(&agent).len(), walked.len() - 1);
    assert!(agent.log().contains(READ), "{}", agent.log());

    for (path, reason) in [
        (&truncated, "it is truncated after"),
        (&corrupt, "it is corrupt after"),
        (&stale, "s ago, longer than --timeout (600 s)"),
        (&missing, "it does not exist"),
    ] {
        let agent = start_agent(&data, &["-file-list-cache", path.to_str().unwrap(), "-timeout", "600"]);
        assert_eq!(list(&agent), walked, "{}: the walk's full list", path.display());
        let log = agent.log();
        let line = log.lines().find(|l| l.contains(NOT_READ)).unwrap_or_else(|| panic!("no fallback line:\n{log}"));
        assert!(line.contains(reason) && line.contains("walking the store instead"), "{line}");
        assert!(line.contains(&path.display().to_string()), "{line}");
        assert!(!log.contains(READ) && log.contains("metric scan complete"), "{log}");
    }
}
