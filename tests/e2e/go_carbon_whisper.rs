//! The whisper files of a real go-carbon 0.17.1 (issue 17, items 3 and 4):
//!
//! - go-whisper's compressed files (`[whisper] compressed = true`): a rebalance moves one whole to a node that
//!   has none (byte for byte), refuses a heal from one into an existing file or from a standard file into
//!   one (422, one line naming the file, both files unchanged, the rest of the batch moved), and the local
//!   `bucky whisper` tools refuse them with a clear error;
//! - go-carbon's flock (`[whisper] flock = true`): a rebalance heals into files go-carbon is writing under
//!   steady traffic; neither side deadlocks, and every point go-carbon received and every point healed is in
//!   the files at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bucky_e2e::go_carbon::{GoCarbon, GoCarbonConfig};
use bucky_e2e::{bin, text};
use serde_json::Value;

use crate::cli::placement;
use crate::cluster::{metric_path, now_minute, read_points, TestCluster};

/// Has go-carbon write compressed files for `names` (30 points each, at past minutes) into `data`, then
/// stops it once every file is compressed and its cache is empty.
fn go_carbon_writes_compressed(data: &Path, work: &Path, ip: &str, names: &[String]) {
    let config = GoCarbonConfig { compressed: true, file_list_cache_version: None, ..GoCarbonConfig::new("1m:1d") };
    let gc = GoCarbon::start(ip, data, work, &config);
    let now = now_minute();
    let lines: Vec<String> = names
        .iter()
        .enumerate()
        .flat_map(|(m, name)| (1..=30).map(move |k| format!("{name} {} {}", m * 100 + k, now - k as i64 * 60)))
        .collect();
    gc.send_lines(&lines);
    gc.wait_for_files(names, Duration::from_secs(20));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let compressed = names
            .iter()
            .all(|n| std::fs::read(gc.path_of(n)).is_ok_and(|b| b.len() > 100 && whisper::is_compressed(&b)));
        if compressed && gc.admin_info().is_some_and(|(size, _)| size == 0) {
            break;
        }
        assert!(Instant::now() < deadline, "go-carbon did not write compressed files: {}", gc.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    // The cache is emptied before the last write lands: give it a moment before stopping go-carbon.
    std::thread::sleep(Duration::from_millis(500));
}

/// The stdout of a `bucky` run as JSON, whatever its exit status.
#[track_caller]
fn summary_of(out: &Output) -> Value {
    let stdout = text(&out.stdout);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}\nstderr:\n{}", text(&out.stderr)))
}

/// The failure reasons of a summary, by metric.
fn failures(summary: &Value) -> BTreeMap<String, String> {
    let list = summary["failures"].as_array().unwrap_or_else(|| panic!("no failures list: {summary}"));
    list.iter().map(|f| (f["metric"].as_str().unwrap().to_owned(), f["reason"].as_str().unwrap().to_owned())).collect()
}

/// A rebalance moves compressed files go-carbon wrote whole to the node without a copy, byte for byte, and
/// deletes the sources; a heal from a compressed file into an existing file, or from a standard file into a
/// compressed one, fails on its own with a one-line error naming the file, both files unchanged, while the
/// other jobs of the batch move. So on the per-metric path too.
#[test]
fn rebalance_moves_compressed_files_whole_and_never_fills_them() {
    let mut cluster = TestCluster::new(2, "carbon_ch", 1);
    let compressed: Vec<String> = (0..24).map(|i| format!("gc.comp.m{i}")).collect();
    let work = cluster.dir.path().join("gc");
    go_carbon_writes_compressed(&cluster.data(0), &work, &cluster.ips[0], &compressed);
    let now = now_minute();
    let standard: Vec<String> = (0..16).map(|i| format!("gc.std.m{i}")).collect();
    for (m, name) in standard.iter().enumerate() {
        let points: Vec<(i64, f64)> = (0..20).map(|k| (now - k * 60, (m * 10) as f64 + k as f64)).collect();
        cluster.write_metric(0, name, &points);
    }
    cluster.start();
    let homes = placement(&cluster, &[compressed.clone(), standard.clone()].concat());
    let on = |names: &[String], node: usize| -> Vec<String> {
        names.iter().filter(|n| homes[*n] == [node]).cloned().collect()
    };
    let (comp_away, comp_home, std_away) = (on(&compressed, 1), on(&compressed, 0), on(&standard, 1));
    assert!(comp_away.len() >= 3 && !comp_home.is_empty() && std_away.len() >= 2, "{homes:?}");
    // Node 1 already has a standard copy of one compressed metric, and a compressed copy (another file
    // go-carbon wrote) of one standard metric.
    let (comp_into_standard, std_into_comp) = (comp_away[0].clone(), std_away[0].clone());
    cluster.write_metric(1, &comp_into_standard, &[(now, 7.0)]);
    let donor = std::fs::read(metric_path(&cluster.data(0), &comp_home[0])).unwrap();
    let std_dest = metric_path(&cluster.data(1), &std_into_comp);
    std::fs::create_dir_all(std_dest.parent().unwrap()).unwrap();
    std::fs::write(&std_dest, &donor).unwrap();
    let snapshot = |node: usize, name: &str| std::fs::read(metric_path(&cluster.data(node), name)).ok();
    let before: BTreeMap<(usize, String), Option<Vec<u8>>> = [0, 1]
        .iter()
        .flat_map(|&node| {
            [&compressed, &standard].into_iter().flatten().map(move |n| ((node, n.clone()), snapshot(node, n)))
        })
        .collect();

    for batch in ["32", "1"] {
        let out = cluster.bucky(&["rebalance", "--delete", "-j", "-f", "-w", "4", "--batch", batch]);
        assert!(!text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
        let summary = summary_of(&out);
        let failed = failures(&summary);
        assert_eq!(
            failed.keys().cloned().collect::<BTreeSet<_>>(),
            BTreeSet::from([comp_into_standard.clone(), std_into_comp.clone()]),
            "batch {batch}: {summary}"
        );
        for (name, reason) in &failed {
            let path = metric_path(&cluster.data(1), name);
            assert!(reason.contains(&path.display().to_string()), "the file is named: {reason}");
            assert!(reason.contains("HTTP 422") && reason.contains("compressed whisper file"), "{reason}");
            assert!(!reason.contains('\n') && !reason.contains("attempts"), "one line, not retried: {reason}");
        }
        assert_eq!(summary["errors"], 2, "{summary}");
        if batch == "32" {
            let moved = (comp_away.len() - 1 + std_away.len() - 1) as u64;
            assert_eq!(summary["moved"].as_u64(), Some(moved), "{summary}");
            assert_eq!(summary["deleted"].as_u64(), Some(moved), "{summary}");
        } else {
            assert_eq!(summary["moved"], 0, "nothing left to move: {summary}");
        }
        assert!(!out.status.success(), "failed jobs make the run fail");
    }

    for name in &comp_away[1..] {
        let copy = snapshot(1, name).unwrap_or_else(|| panic!("{name} was not moved"));
        assert_eq!(Some(copy), before[&(0, name.clone())], "{name}: not byte for byte the source");
        assert!(whisper::is_compressed(&snapshot(1, name).unwrap()));
        assert_eq!(snapshot(0, name), None, "{name}: the source was not deleted");
    }
    for name in &std_away[1..] {
        assert_eq!(read_points(&cluster.data(1), name).map(|p| p.len()), Some(20), "{name}");
        assert_eq!(snapshot(0, name), None, "{name}: the source was not deleted");
    }
    for name in [&comp_into_standard, &std_into_comp] {
        for node in [0, 1] {
            assert_eq!(snapshot(node, name), before[&(node, name.clone())], "{name} changed on node {node}");
        }
    }
    for name in &comp_home {
        assert_eq!(snapshot(0, name), before[&(0, name.clone())], "{name} is at home and stays as it is");
    }
}

fn bucky(args: &[&str]) -> Output {
    Command::new(bin("bucky")).args(args).output().expect("run bucky")
}

/// The local tools on files go-carbon compressed: `info`, `fetch`, `dump`, `fill` (either way) and
/// `merge` fail with one line naming the file and saying what it is, and change nothing; `find-corrupt`
/// does not call them corrupt.
#[test]
fn whisper_tools_refuse_go_carbon_compressed_files() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("whisper");
    go_carbon_writes_compressed(&data, &dir.path().join("gc"), "127.0.0.62", &["tools.c".to_owned()]);
    let packed = metric_path(&data, "tools.c");
    let standard = dir.path().join("standard.wsp");
    crate::cluster::write_metric(dir.path(), "standard", &[(now_minute(), 1.0)]);
    let (packed_before, standard_before) = (std::fs::read(&packed).unwrap(), std::fs::read(&standard).unwrap());
    let (p, s) = (packed.to_str().unwrap(), standard.to_str().unwrap());
    for args in [
        vec!["whisper", "info", p],
        vec!["whisper", "fetch", p, "0"],
        vec!["whisper", "dump", p],
        vec!["whisper", "fill", p, s],
        vec!["whisper", "fill", s, p],
        vec!["whisper", "fill", "--lock", s, p],
        vec!["whisper", "merge", s, p],
    ] {
        let out = bucky(&args);
        let stderr = text(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(&format!("{p}: compressed whisper file")), "{args:?}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: one line: {stderr}");
    }
    assert_eq!(std::fs::read(&packed).unwrap(), packed_before, "the compressed file changed");
    assert_eq!(std::fs::read(&standard).unwrap(), standard_before, "the standard file changed");
    let out = bucky(&["whisper", "find-corrupt", "--json", data.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let found: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((found["bad"].as_array().map(Vec::len), found["compressed"].as_u64()), (Some(0), Some(1)), "{found}");
}

/// Steady traffic into go-carbon (`flock = true`) while a rebalance heals 650 points into every file it is
/// writing, into the slots between those go-carbon fills (even minutes healed, odd minutes sent), with the
/// agents' `--coalesce-writes`, whose large writes rewrite the slots in between with the values read under
/// the lock: only go-carbon's flock keeps them from overwriting a point it wrote meanwhile. The rebalance
/// finishes (no deadlock; each wait for go-carbon's lock is bounded by the agent's `--lock-timeout`, and
/// go-carbon waits only while one file is filled), go-carbon keeps writing throughout, and at the end every
/// point go-carbon received and every point healed is in the files, each with its value.
#[test]
fn heals_into_files_go_carbon_writes_under_flock_lose_nothing() {
    let mut cluster = TestCluster::new(2, "carbon_ch", 1);
    // Each fill also holds the lock 100 ms between its read and its write (a slow disk): without go-carbon's
    // flock, its writes in that window would be overwritten.
    cluster.agent_args = ["--coalesce-writes", "--test-fill-delay-ms", "100"].map(String::from).to_vec();
    cluster.start();
    let pool: Vec<String> = (0..60).map(|i| format!("gc.live.m{i}")).collect();
    let homes = placement(&cluster, &pool);
    let names: Vec<String> = pool.iter().filter(|n| homes[*n] == [1]).take(16).cloned().collect();
    assert_eq!(names.len(), 16, "{homes:?}");
    let gc = GoCarbon::start(
        &cluster.ips[1],
        &cluster.data(1),
        &cluster.dir.path().join("gc"),
        &GoCarbonConfig::new("1m:1d"),
    );
    let now = now_minute();
    // The copies to heal, misplaced on node 0: the even minutes from now-1400 to now-102.
    let mut expected: BTreeMap<String, BTreeMap<i64, f64>> = BTreeMap::new();
    for (m, name) in names.iter().enumerate() {
        let points: Vec<(i64, f64)> =
            (51..701).map(|k| (now - 2 * k * 60, (m * 1000 + k as usize) as f64 + 0.5)).collect();
        cluster.write_metric(0, name, &points);
        expected.entry(name.clone()).or_default().extend(points);
    }
    // The traffic: every 20 ms a point per metric, at the next odd minute from now-1399 on, so that no two
    // points share a slot and each can be checked.
    let sent: Arc<Mutex<Vec<(usize, i64, f64)>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (sent, stop, names, line) = (Arc::clone(&sent), Arc::clone(&stop), names.clone(), gc.line.clone());
        std::thread::spawn(move || {
            let mut stream = std::net::TcpStream::connect(&line).expect("connect to go-carbon");
            let mut k = 0i64;
            while !stop.load(Ordering::Relaxed) && k < 650 {
                let t = now - (1399 - 2 * k) * 60;
                let mut batch = String::new();
                for (m, name) in names.iter().enumerate() {
                    let value = (m * 10_000) as f64 + k as f64 + 0.25;
                    batch.push_str(&format!("{name} {value} {t}\n"));
                    sent.lock().unwrap().push((m, t, value));
                }
                std::io::Write::write_all(&mut stream, batch.as_bytes()).expect("send to go-carbon");
                k += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    gc.wait_for_files(&names, Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500)); // go-carbon has written some odd minutes
    let sent_before = sent.lock().unwrap().len();
    let started = Instant::now();
    let out = cluster.bucky(&["rebalance", "--delete", "-j", "-f", "-w", "4", "--batch", "4"]);
    let took = started.elapsed();
    let sent_during = sent.lock().unwrap().len() - sent_before;
    stop.store(true, Ordering::Relaxed);
    sender.join().unwrap();
    let summary = summary_of(&out);
    assert!(out.status.success(), "{summary}\n{}", text(&out.stderr));
    assert_eq!((summary["moved"].as_u64(), summary["errors"].as_u64()), (Some(16), Some(0)), "{summary}");
    assert_eq!(summary["points_healed"].as_u64(), Some(16 * 650), "{summary}");
    assert!(sent_during > 0, "go-carbon received nothing while the rebalance ran");
    eprintln!("rebalance of 16 files being written: {took:?}, {sent_during} points sent to go-carbon meanwhile");
    for &(m, t, value) in sent.lock().unwrap().iter() {
        expected.get_mut(&names[m]).unwrap().insert(t, value);
    }
    // Everything sent is written once go-carbon's cache is empty; wait for it, then compare every point.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all = names.iter().all(|n| read_points(&cluster.data(1), n).as_ref() == expected.get(n));
        if all {
            break;
        }
        if Instant::now() > deadline {
            for name in &names {
                let got = read_points(&cluster.data(1), name).unwrap_or_default();
                let want = &expected[name];
                let missing: Vec<_> = want.iter().filter(|(t, v)| got.get(t) != Some(v)).take(5).collect();
                let extra: Vec<_> = got.iter().filter(|(t, _)| !want.contains_key(t)).take(5).collect();
                assert!(missing.is_empty() && extra.is_empty(), "{name}: missing {missing:?}, extra {extra:?}");
            }
            panic!("the files never matched: {}", gc.log_text());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    for name in &names {
        assert!(read_points(&cluster.data(0), name).is_none(), "{name}: the source was not deleted");
    }
}
