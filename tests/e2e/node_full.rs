//! A rebalance into a node whose disk fills up: the node answers 507, `bucky` stops sending it copies at
//! once, keeps every source it did not move, says so, and the run ends in seconds (it used to retry every
//! remaining metric for minutes).
//!
//! The destination agent's prefix is a 20 MB tmpfs (the tests run as root, as in CI).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use whisper::{CreateOptions, Point, Retention, WhisperFile};

use crate::cluster::{metric_path, now_minute, read_points, TestCluster};

/// The bound the issue sets: the whole run, against more than 600 s before.
const BOUND: Duration = Duration::from_secs(30);

/// A tmpfs mounted on a directory, unmounted (lazily: an agent may still hold it) on drop, also when the
/// test fails.
struct Tmpfs {
    at: PathBuf,
}

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        let status =
            Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(at).status();
        assert!(
            status.as_ref().is_ok_and(|s| s.success()),
            "mount -t tmpfs on {}: {status:?}; this test needs root (CAP_SYS_ADMIN), as in CI",
            at.display()
        );
        Tmpfs { at: at.to_owned() }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
    }
}

/// Every file below `dir` (relative paths).
fn files(dir: &Path) -> Vec<String> {
    fn walk(dir: &Path, root: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, root, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out
}

/// Rebalances 300 metrics of 121 KB (36 MB) from node 0 into node 1, whose disk holds 20 MB.
fn rebalance_into_a_full_node(batch: &str, delete: bool) {
    let mut cluster = TestCluster::new(2, "carbon_ch", 1);
    let _tmpfs = Tmpfs::mount(&cluster.data(1), "20m");
    cluster.start();
    // The metrics whose replica is node 1, written on node 0. The ring's addresses differ from run to run,
    // so node 1's share of any fixed set of names does too: 2,000 candidates hold 300 of its names with room
    // to spare (700 once held only 296).
    let candidates: Vec<String> = (0..2000).map(|i| format!("fill.host{:03}.metric{i}", i % 97)).collect();
    let located = crate::cli::placement(&cluster, &candidates);
    let names: Vec<String> = candidates.into_iter().filter(|n| located[n] == [1]).take(300).collect();
    assert_eq!(names.len(), 300, "not enough names bound to node 1");
    let now = now_minute();
    let retention = Retention::parse_list("1m:7d").unwrap();
    let mut sources: BTreeMap<String, (Vec<u8>, BTreeMap<i64, f64>)> = BTreeMap::new();
    for (m, name) in names.iter().enumerate() {
        let path = metric_path(&cluster.data(0), name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        whisper::create(&path, &retention, &CreateOptions::default()).unwrap();
        let points: Vec<Point> = (0..20).map(|k| Point::new(now - k * 600, (m * 100 + k as usize) as f64)).collect();
        WhisperFile::open_rw(&path).unwrap().update_many(&points, now).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        sources.insert(name.clone(), (bytes, read_points(&cluster.data(0), name).unwrap()));
    }

    let error_file = cluster.dir.path().join("errors.tsv");
    let error_arg = error_file.display().to_string();
    let mut args = vec!["rebalance", "-j", "-f", "-w", "4", "--batch", batch, "--error-file", &error_arg];
    if delete {
        args.push("--delete");
    }
    let started = Instant::now();
    let out = cluster.bucky(&args);
    let took = started.elapsed();
    eprintln!("rebalance --batch {batch}{}: {took:?}", if delete { " --delete" } else { "" });
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(took < BOUND, "the run took {took:?} (bound {BOUND:?}); stderr:\n{stderr}");
    assert_eq!(out.status.code(), Some(1), "metrics were left behind: exit 1; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let summary: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"));

    // The summary names the full node and the jobs it could not take.
    let full = cluster.addr(1);
    let skipped =
        summary["full_nodes"][&full].as_u64().unwrap_or_else(|| panic!("{full} not in full_nodes: {summary}"));
    assert_eq!(summary["full_nodes"].as_object().unwrap().len(), 1, "{summary}");
    let (moved, errors) = (summary["moved"].as_u64().unwrap(), summary["errors"].as_u64().unwrap());
    assert_eq!(summary["planned"], 300, "{summary}");
    assert!(moved > 0 && skipped > 0, "{summary}");
    assert_eq!(moved + errors, 300, "{summary}");
    assert_eq!(errors, skipped, "every failure is the full node's: {summary}");
    // One line on stderr, the first time.
    // "sources kept" only when the run deletes sources: without --delete none would have gone anyway.
    let kept = if delete { "; sources kept" } else { "" };
    let line = format!("bucky: {full} is full: no more copies sent to it{kept}; free space and rerun");
    assert_eq!(stderr.lines().filter(|l| *l == line).count(), 1, "{stderr}");
    // Every job not moved is in the error file, for that reason.
    let listed = std::fs::read_to_string(&error_file).unwrap();
    assert_eq!(listed.lines().count() as u64, errors, "{listed}");
    let reason = format!("{full} is full (507 Insufficient Storage)");
    for entry in listed.lines() {
        let fields: Vec<&str> = entry.split('\t').collect();
        assert_eq!(fields.len(), 3, "{entry}");
        assert!(sources.contains_key(fields[0]), "{entry}");
        assert_eq!((fields[1], fields[2]), (cluster.addr(0).as_str(), reason.as_str()), "{entry}");
    }

    // Every source is on node 0 as it was, unless its copy was verified on node 1 and the run deleted it;
    // nothing of a refused copy is on node 1.
    let mut kept = 0;
    for (name, (bytes, points)) in &sources {
        let copy = read_points(&cluster.data(1), name);
        match std::fs::read(metric_path(&cluster.data(0), name)) {
            Ok(on_disk) => {
                kept += 1;
                assert!(on_disk == *bytes, "{name}: the source changed");
                if let Some(copy) = copy {
                    assert!(!delete, "{name}: copied and verified but not deleted");
                    assert_eq!(copy, *points, "{name}: the copy on node 1");
                }
            }
            Err(_) => {
                assert!(delete, "{name}: deleted without --delete");
                assert_eq!(copy.as_ref(), Some(points), "{name}: deleted, so its copy on node 1 holds every point");
            }
        }
    }
    let copies = files(&cluster.data(1));
    assert_eq!(copies.len() as u64, moved, "one file on node 1 per metric moved, no temp file: {copies:?}");
    assert!(copies.iter().all(|f| f.ends_with(".wsp") && !f.contains("/.")), "{copies:?}");
    if delete {
        assert_eq!(summary["deleted"].as_u64().unwrap(), moved, "{summary}");
        assert_eq!(kept, errors, "{summary}");
    } else {
        assert_eq!(kept, 300);
    }
    cluster.stop();
}

#[test]
fn a_rebalance_into_a_full_node_ends_in_seconds_and_keeps_every_source() {
    rebalance_into_a_full_node("32", true);
}

#[test]
fn a_rebalance_into_a_full_node_one_metric_per_request() {
    rebalance_into_a_full_node("1", true);
}

#[test]
fn a_copy_into_a_full_node_keeps_every_source() {
    rebalance_into_a_full_node("32", false);
}
