//! Benchmarks of the issue-3 workloads, side by side with the reference:
//!
//! - fill one metric, schema `10s:1d,1m:30d,5m:1y`, destination missing every other hour: bucky (safe and
//!   carbonate mode) vs carbonate 1.1.10 `fill_archives` vs `cp` of the file;
//! - `update_many` of 1,000 points into that schema: bucky vs whisper.py 1.1.10.
//!
//! `cargo bench -p bucky-whisper --bench whisper` prints each figure and the ratios. The reference runs
//! in-process in Python (no interpreter start-up in its figures); set `BUCKY_ORACLE_PYTHON` (default
//! `.venv/bin/python`, made by `scripts/test.sh`). Criterion then measures bucky alone in detail.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use whisper::{create, fill, CreateOptions, FillOptions, Point, Retention, WhisperFile};

const NOW: i64 = 1_700_000_000;
const SCHEMA: &str = "10s:1d,1m:30d,5m:1y";

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A value that differs per timestamp, so fills are observable.
fn value(t: i64) -> f64 {
    (t % 9973) as f64 * 0.5
}

/// Writes a full year at every resolution (finest data last, so it wins), skipping `skip(t)` points.
fn populate(path: &Path, skip: impl Fn(i64) -> bool) {
    create(path, &Retention::parse_list(SCHEMA).unwrap(), &CreateOptions::default()).unwrap();
    let file = WhisperFile::open_rw(path).unwrap();
    for (step, span) in [(300, 365 * 86400), (60, 30 * 86400), (10, 86400)] {
        let points: Vec<Point> =
            (0..span / step).map(|i| NOW - i * step).filter(|&t| !skip(t)).map(|t| Point::new(t, value(t))).collect();
        file.update_many(&points, NOW).unwrap();
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    src: PathBuf,
    dst_template: PathBuf,
    update_template: PathBuf,
    points_file: PathBuf,
    points: Vec<Point>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.wsp");
    let dst_template = dir.path().join("dst.wsp");
    populate(&src, |_| false);
    populate(&dst_template, |t| (t / 3600) % 2 == 0);
    let update_template = dir.path().join("update.wsp");
    create(&update_template, &Retention::parse_list(SCHEMA).unwrap(), &CreateOptions::default()).unwrap();
    let points: Vec<Point> = (0..1000).map(|i| Point::new(NOW - i * 10, value(i))).collect();
    let points_file = dir.path().join("points.txt");
    let text: String = points.iter().map(|p| format!("{} {}\n", p.timestamp, p.value)).collect();
    std::fs::write(&points_file, text).unwrap();
    Fixture { _dir: dir, src, dst_template, update_template, points_file, points }
}

/// Median seconds of `op` over `repeat` runs, each on a fresh copy of `template` (copy not timed). The
/// median on both sides (see `bench_reference.py`): a run preempted on a busy machine does not move it.
fn time_on_copies(template: &Path, repeat: u32, mut op: impl FnMut(&Path)) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("work.wsp");
    let mut times: Vec<f64> = (0..repeat)
        .map(|_| {
            std::fs::copy(template, &path).unwrap();
            let start = Instant::now();
            op(&path);
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

fn reference(args: &[&str]) -> Option<f64> {
    let python = std::env::var_os("BUCKY_ORACLE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join(".venv/bin/python"));
    let script = workspace_root().join("tests/oracle/bench_reference.py");
    let out = Command::new(&python).arg(script).args(args).output().ok()?;
    if !out.status.success() {
        eprintln!("reference failed: {}", String::from_utf8_lossy(&out.stderr));
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    v["seconds_per_op"].as_f64()
}

fn side_by_side() {
    let f = fixture();
    let size = std::fs::metadata(&f.src).unwrap().len();
    println!("\n== fill, schema {SCHEMA}, dst missing every other hour ({size} bytes) ==");
    let mut options = FillOptions::new(NOW);
    let safe = time_on_copies(&f.dst_template, 20, |dst| {
        fill(&f.src, dst, &options).unwrap();
    });
    options.sync = false;
    let safe_nosync = time_on_copies(&f.dst_template, 20, |dst| {
        fill(&f.src, dst, &options).unwrap();
    });
    let mut coalesced = options.clone();
    coalesced.coalesce_writes = true;
    let safe_coalesced = time_on_copies(&f.dst_template, 20, |dst| {
        fill(&f.src, dst, &coalesced).unwrap();
    });
    let carbonate_mode = time_on_copies(&f.dst_template, 5, |dst| {
        fill(&f.src, dst, &options.clone().carbonate()).unwrap();
    });
    let cp = time_on_copies(&f.dst_template, 20, |dst| {
        let status = Command::new("cp").arg(&f.src).arg(dst).status().unwrap();
        assert!(status.success());
    });
    let fs_copy = time_on_copies(&f.dst_template, 20, |dst| {
        std::fs::copy(&f.src, dst).unwrap();
    });
    println!("bucky fill (safe, fsync)         {:>10.3} ms", safe * 1e3);
    println!("bucky fill (safe, no fsync)      {:>10.3} ms", safe_nosync * 1e3);
    println!("bucky fill (--coalesce, no fsync){:>10.3} ms  (every writer takes the flock)", safe_coalesced * 1e3);
    println!("bucky fill (carbonate mode)      {:>10.3} ms", carbonate_mode * 1e3);
    println!("cp (process)                     {:>10.3} ms", cp * 1e3);
    println!("std::fs::copy (in-process)       {:>10.3} ms", fs_copy * 1e3);
    let src = f.src.to_string_lossy().into_owned();
    let tpl = f.dst_template.to_string_lossy().into_owned();
    match reference(&["fill", &src, &tpl, &NOW.to_string(), "2"]) {
        Some(carbonate) => {
            println!("carbonate fill_archives          {:>10.3} ms", carbonate * 1e3);
            // carbonate never fsyncs; the like-for-like figure is bucky without fsync.
            println!(
                "ratio carbonate / bucky safe     {:>10.1}x  (target >= 200x; both without fsync)",
                carbonate / safe_nosync
            );
            println!("ratio carbonate / bucky safe     {:>10.1}x  (bucky with its default fsync)", carbonate / safe);
            println!("ratio carbonate / bucky coalesced{:>10.1}x  (both without fsync)", carbonate / safe_coalesced);
            println!("ratio carbonate / bucky carbonate{:>10.1}x  (both without fsync)", carbonate / carbonate_mode);
        }
        None => println!("carbonate: unavailable (run scripts/test.sh to create the venv)"),
    }
    println!(
        "ratio bucky safe / cp            {:>10.2}x  (target <= 3x; cp does not fsync; with fsync: {:.2}x)",
        safe_nosync / cp,
        safe / cp
    );

    println!("\n== update_many of 1,000 points, schema {SCHEMA} ==");
    let ours = time_on_copies(&f.update_template, 200, |path| {
        WhisperFile::open_rw(path).unwrap().update_many(&f.points, NOW).unwrap();
    });
    println!("bucky update_many                {:>10.3} ms", ours * 1e3);
    let tpl = f.update_template.to_string_lossy().into_owned();
    let pts = f.points_file.to_string_lossy().into_owned();
    match reference(&["update_many", &tpl, &pts, &NOW.to_string(), "50"]) {
        Some(py) => {
            println!("whisper.py update_many           {:>10.3} ms", py * 1e3);
            println!("ratio whisper.py / bucky         {:>10.1}x  (target >= 50x)", py / ours);
        }
        None => println!("whisper.py: unavailable (run scripts/test.sh to create the venv)"),
    }
    println!();
}

fn criterion_benches(c: &mut Criterion) {
    let f = fixture();
    let mut options = FillOptions::new(NOW);
    options.sync = false;
    let dir = tempfile::tempdir().unwrap();
    let work = dir.path().join("work.wsp");
    c.bench_function("fill safe 10s:1d,1m:30d,5m:1y (copy included)", |b| {
        b.iter(|| {
            std::fs::copy(&f.dst_template, &work).unwrap();
            fill(&f.src, &work, &options).unwrap()
        })
    });
    c.bench_function("update_many 1000 points (copy included)", |b| {
        b.iter(|| {
            std::fs::copy(&f.update_template, &work).unwrap();
            WhisperFile::open_rw(&work).unwrap().update_many(&f.points, NOW).unwrap()
        })
    });
}

// criterion_group! generates an undocumented `benches` function.
#[allow(missing_docs)]
mod group {
    use super::*;
    criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(Duration::from_secs(3));
    targets = criterion_benches
    }
}
use group::benches;

fn main() {
    side_by_side();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
