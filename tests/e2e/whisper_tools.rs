//! The operators' whisper tools against the tools they replace, on randomized files replayable by seed
//! (`BUCKY_TOOLS_SEED=N`, printed by every test):
//! - `bucky whisper isempty` vs buckytools' `bucky-isempty` (go-graphite 0.6.0 and jjneely 0.4.2), same argv;
//! - `bucky whisper diff` vs whisper 1.1.10's `whisper-diff.py`, byte-exact, at a pinned clock;
//! - `bucky whisper dump --all [--raw]` vs `whisper-dump.py [-r]`, byte-exact, on garbage-filled archives;
//! - `bucky whisper find-corrupt` on every kind of bad header the whisper crate rejects;
//! - `bucky whisper sparsify`: content, inode and whisper-dump unchanged, blocks freed, flock honoured.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bucky_e2e::{bin, go_peer, oracle_python, Rng};
use serde_json::Value;
use whisper::{create, AggregationMethod, ArchiveInfo, CreateOptions, Header, Point, Retention, WhisperFile};

/// The generator of a test (seed from `BUCKY_TOOLS_SEED`, else the clock, printed), and the values that
/// exercise the formatting.
trait ToolsRng {
    fn for_test(test: &str) -> Self;
    fn value(&mut self, specials: bool) -> f64;
}

impl ToolsRng for Rng {
    fn for_test(test: &str) -> Rng {
        let seed = Rng::env_seed("BUCKY_TOOLS_SEED");
        eprintln!("{test}: seed {seed} (replay with BUCKY_TOOLS_SEED={seed})");
        Rng(seed | 1)
    }

    /// Values that exercise the formatting: integers, exact ties, decimals, huge, tiny, negative zero.
    fn value(&mut self, specials: bool) -> f64 {
        match self.below(if specials { 10 } else { 7 }) {
            0 => self.below(100) as f64,
            1 => self.below(1000) as f64 / 8.0 - 50.0, // exact halves and eighths: rounding ties
            2 => (self.next_u64() % 1_000_000) as f64 / 1000.0,
            3 => f64::from_bits(self.next_u64() >> 2) % 1e6,
            4 => -((self.next_u64() % 10_000) as f64) / 7.0,
            // Every decimal exponent around the notation switches (1e-05, 1e+16, %.35g's 1e+35).
            5 => {
                let exponent = [-6, -5, -4, 15, 16, 17, 34, 35][self.below(8)];
                (1 + self.below(9)) as f64 * 10f64.powi(exponent) * [1.0, 1.5][self.below(2)]
            }
            6 => 1e-7 * self.below(1000) as f64,
            7 => -0.0,
            8 => [f64::INFINITY, f64::NEG_INFINITY][self.below(2)],
            _ => f64::NAN,
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn s(p: &Path) -> String {
    p.to_str().expect("utf-8 test path").to_owned()
}

fn bucky(args: &[String]) -> Output {
    Command::new(bin("bucky")).args(args).output().expect("run bucky")
}

fn bucky_in(dir: &Path, args: &[&str]) -> Output {
    Command::new(bin("bucky")).current_dir(dir).args(args).output().expect("run bucky")
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| a.to_string()).collect()
}

/// One line on stderr, no panic: how every refusal must look.
#[track_caller]
fn assert_one_line_error(out: &Output, mentions: &str) {
    let err = text(&out.stderr);
    assert!(!out.status.success(), "expected a failure, got success: {}", text(&out.stdout));
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "expected one line on stderr, got:\n{err}");
    assert!(err.contains(mentions), "stderr does not mention {mentions}: {err}");
}

fn unix_now() -> Duration {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock after 1970")
}

fn create_file(path: &Path, layout: &[(u32, u32)], method: AggregationMethod, xff: f64) {
    let retentions: Vec<Retention> = layout.iter().map(|&(spp, n)| Retention::new(spp, n)).collect();
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    create(path, &retentions, &CreateOptions { aggregation: method, x_files_factor: xff, sparse: false })
        .expect("create");
}

fn write_points(path: &Path, points: &[(i64, f64)], now: i64) {
    let points: Vec<Point> = points.iter().map(|&p| p.into()).collect();
    WhisperFile::open_rw(path).expect("open").update_many(&points, now).expect("update_many");
}

/// Runs one of whisper's scripts in a single Python process for many argument lists, with `time.time()`
/// pinned to `now`; answers `(stdout, exit status)` per argument list.
fn run_python_script(script: &str, now: i64, argvs: &[Vec<String>]) -> Vec<(String, i64)> {
    const HARNESS: &str = r#"
import io, json, sys, time
script, now = sys.argv[1], int(sys.argv[2])
time.time = lambda: float(now)
code = compile(open(script).read(), script, 'exec')
results = []
for line in sys.stdin:
    sys.argv = [script] + json.loads(line)
    buf, saved = io.StringIO(), sys.stdout
    sys.stdout, status = buf, 0
    try:
        exec(code, {'__name__': '__main__'})
    except SystemExit as e:
        status = 0 if e.code is None else (e.code if isinstance(e.code, int) else 1)
    except BaseException:
        status = 1
    finally:
        sys.stdout = saved
    results.append([buf.getvalue(), status])
print(json.dumps(results))
"#;
    let script = oracle_python().parent().expect("venv bin").join(script);
    let mut child = Command::new(oracle_python())
        .args(["-c", HARNESS, &s(&script), &now.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the oracle python");
    let mut stdin = child.stdin.take().expect("stdin");
    for argv in argvs {
        writeln!(stdin, "{}", serde_json::to_string(argv).expect("json")).expect("feed the oracle");
    }
    drop(stdin);
    let out = child.wait_with_output().expect("oracle output");
    assert!(out.status.success(), "oracle failed: {}", text(&out.stderr));
    let results: Vec<(String, i64)> = serde_json::from_slice(&out.stdout).expect("oracle json");
    assert_eq!(results.len(), argvs.len());
    results
}

// ---- isempty ----------------------------------------------------------------------------------------------

/// Layouts whose archive boundaries fall on the coarser archives' steps, so the slots each range covers do
/// not depend on where `now` falls within a step.
const ISEMPTY_LAYOUTS: &[&[(u32, u32)]] =
    &[&[(10, 36), (60, 30), (300, 24)], &[(60, 60)], &[(1, 120), (60, 60)], &[(10, 60), (60, 60)]];

/// A random tree of whisper files: empty, sparse, full, only old points, NaN-only, only stale points.
fn isempty_tree(rng: &mut Rng, root: &Path, now: i64) -> Vec<PathBuf> {
    let dirs = ["", "a", "a/b", "c", "c/d/e"];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let mut files = Vec::new();
    for i in 0..36 {
        let path = root.join(dirs[rng.below(dirs.len())]).join(format!("m{i:02}.wsp"));
        let layout = ISEMPTY_LAYOUTS[rng.below(ISEMPTY_LAYOUTS.len())];
        let methods = [
            AggregationMethod::Average,
            AggregationMethod::Sum,
            AggregationMethod::Last,
            AggregationMethod::Max,
            AggregationMethod::Min,
        ];
        let xff = [0.0, 0.5, 1.0][rng.below(3)];
        create_file(&path, layout, methods[rng.below(methods.len())], xff);
        let max_retention = layout.iter().map(|&(spp, n)| i64::from(spp * n)).max().unwrap_or(60);
        let finest = i64::from(layout[0].0 * layout[0].1);
        let age = |rng: &mut Rng, lo: i64, hi: i64| lo + (rng.next_u64() % (hi - lo).max(1) as u64) as i64;
        let (points, written_at): (Vec<(i64, f64)>, i64) = match rng.below(6) {
            0 => (vec![], now),
            1 => ((0..1 + rng.below(3)).map(|_| (now - age(rng, 1, max_retention), rng.value(false))).collect(), now),
            2 => ((1..finest).step_by(layout[0].0 as usize).map(|a| (now - a, rng.value(false))).collect(), now),
            3 if layout.len() > 1 => (
                (0..1 + rng.below(4)).map(|_| (now - age(rng, finest + 1, max_retention), rng.value(false))).collect(),
                now,
            ),
            4 => (vec![(now - age(rng, 1, finest), f64::NAN)], now),
            _ => {
                // Written long ago: the slots hold data, but of an older cycle.
                let then = now - 3 * max_retention;
                ((0..1 + rng.below(3)).map(|_| (then - age(rng, 1, max_retention), rng.value(false))).collect(), then)
            }
        };
        write_points(&path, &points, written_at);
        files.push(path);
    }
    std::fs::write(root.join("a/notes.txt"), b"not whisper").expect("write");
    std::os::unix::fs::symlink(&files[0], root.join("c/link.wsp")).expect("symlink");
    files
}

/// Runs a Go tool and `bucky whisper isempty` with the same argv inside one wall-clock second (the Go tool
/// reads the clock itself; ours gets it as --now).
fn isempty_both(go: &Path, args: &[String]) -> (i64, Output, Output) {
    for _ in 0..10 {
        let before = unix_now();
        if before.subsec_millis() > 600 {
            std::thread::sleep(Duration::from_millis(1010 - u64::from(before.subsec_millis())));
            continue;
        }
        let theirs = Command::new(go).args(args).output().expect("run the Go tool");
        if unix_now().as_secs() != before.as_secs() {
            continue;
        }
        let now = before.as_secs() as i64;
        let mut ours_args = strings(&["whisper", "isempty"]);
        ours_args.extend(args.iter().cloned());
        ours_args.extend(["--now".to_owned(), now.to_string()]);
        return (now, theirs, bucky(&ours_args));
    }
    panic!("could not run the Go tool within one second");
}

/// Per file: buckytools' "most recent" pick (the last point found) and the newest point, computed with
/// whisper.py's fetch over the same ranges, as `[timestamp, "%.2f", RFC 3339]`.
fn python_newest(now: i64, files: &[PathBuf]) -> BTreeMap<String, (Value, Value)> {
    const SCRIPT: &str = r#"
import json, math, sys, time, whisper
now = int(sys.argv[1])
fmt = lambda p: None if p is None else [p[0], '%.2f' % p[1], time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(p[0]))]
out = {}
for path in sys.argv[2:]:
    until, points = now, []
    for a in whisper.info(path)['archives']:
        start = now - a['retention']
        (first, _, step), values = whisper.fetch(path, start, until, now=now)
        points += [(first + i * step, v) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
        until = start
    out[path] = [fmt(points[-1] if points else None), fmt(max(points, key=lambda p: p[0]) if points else None)]
print(json.dumps(out))
"#;
    let mut cmd = Command::new(oracle_python());
    cmd.args(["-c", SCRIPT, &now.to_string()]).args(files);
    let out = cmd.output().expect("run the oracle");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let map: BTreeMap<String, (Value, Value)> = serde_json::from_slice(&out.stdout).expect("oracle json");
    map
}

fn last_line(path: &str, point: &Value) -> String {
    match point.as_array() {
        Some(p) => format!(
            "{path}: Most recent DP: {} or {}\t{}",
            p[0],
            p[2].as_str().unwrap_or_default(),
            p[1].as_str().unwrap_or_default()
        ),
        None => format!("{path}: No valid data points"),
    }
}

#[test]
fn isempty_matches_go_bucky_isempty() {
    let mut rng = Rng::for_test("isempty_matches_go_bucky_isempty");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("whisper");
    let now = unix_now().as_secs() as i64;
    let files = isempty_tree(&mut rng, &root, now);
    let prefix = ["-prefix".to_owned(), s(&root)];
    let mut some_files: Vec<String> = files.iter().filter(|_| rng.chance(40)).map(|p| s(p)).collect();
    some_files.push(s(&files[0]));
    for go in ["gg/bucky-isempty", "jj/bucky-isempty"] {
        let go = go_peer(go);
        let mut empty_seen = 0;
        for flags in [&[][..], &["-m"], &["-d"], &["-d", "-m"]] {
            let mut args = strings(flags);
            args.extend(prefix.iter().cloned());
            let (_, theirs, ours) = isempty_both(&go, &args);
            assert!(
                theirs.status.success() && ours.status.success(),
                "{}\n{}",
                text(&theirs.stderr),
                text(&ours.stderr)
            );
            assert_eq!(text(&ours.stdout), text(&theirs.stdout), "{} {args:?}", go.display());
            empty_seen += text(&ours.stdout).lines().count();
            // Explicit files: same answers, and -d names the first argument as Go does.
            args.extend(some_files.iter().cloned());
            let (_, theirs, ours) = isempty_both(&go, &args);
            assert_eq!(text(&ours.stdout), text(&theirs.stdout), "{} {args:?}", go.display());
        }
        assert!(empty_seen > 0, "the random tree should hold empty files");

        // -l: Go prints the last point it found, which is not the newest when several archives have data;
        // both are checked against whisper.py's fetch over the same ranges.
        let args: Vec<String> = ["-l".to_owned()].into_iter().chain(prefix.iter().cloned()).collect();
        let (at, theirs, ours) = isempty_both(&go, &args);
        let expected = python_newest(at, &files);
        let (ours_text, theirs_text) = (text(&ours.stdout), text(&theirs.stdout));
        let (ours_lines, theirs_lines): (Vec<&str>, Vec<&str>) =
            (ours_text.lines().collect(), theirs_text.lines().collect());
        assert_eq!(ours_lines.len(), files.len(), "{ours_text}");
        assert_eq!(theirs_lines.len(), files.len(), "{theirs_text}");
        let mut differ = 0;
        for (ours_line, theirs_line) in ours_lines.iter().zip(&theirs_lines) {
            let path = ours_line.split(": ").next().unwrap_or_default();
            let (last, newest) = &expected[path];
            assert_eq!(*theirs_line, last_line(path, last), "Go's -l pick");
            assert_eq!(*ours_line, last_line(path, newest), "our -l pick");
            differ += usize::from(ours_line != theirs_line);
        }
        eprintln!("{}: -l differs (Go's defect) on {differ} of {} files", go.display(), files.len());
    }

    // --json: the same verdicts.
    let out = bucky(&strings(&["whisper", "isempty", "--json", "-prefix", &s(&root)]));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["scanned"], files.len());
    assert_eq!(summary["empty"], summary["files"].as_array().map(Vec::len).unwrap_or(0));
}

#[test]
fn isempty_walks_relative_and_hidden_trees_and_survives_bad_files() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("whisper");
    for name in ["a.wsp", ".snapshot/b.wsp", "z.wsp"] {
        create_file(&root.join(name), &[(60, 60)], AggregationMethod::Average, 0.5);
    }
    std::fs::write(root.join("bad.wsp"), b"definitely not whisper").expect("write");
    // Go skips any directory whose path starts with a dot: a relative prefix finds nothing.
    let go = Command::new(go_peer("gg/bucky-isempty"))
        .current_dir(dir.path())
        .args(["-prefix", "./whisper"])
        .output()
        .expect("run Go");
    assert_eq!(text(&go.stdout), "");
    // Ours walks it, skips the hidden directory by name, reports the bad file and goes on.
    let out = bucky_in(dir.path(), &["whisper", "isempty", "-prefix", "./whisper"]);
    assert_eq!(text(&out.stdout), "./whisper/a.wsp\n./whisper/z.wsp\n");
    assert_one_line_error(&out, "bad.wsp");
    assert_eq!(out.status.code(), Some(1));
    // Bad input: a missing path.
    let out = bucky_in(dir.path(), &["whisper", "isempty", "missing.wsp"]);
    assert_one_line_error(&out, "missing.wsp");
}

// ---- diff ---------------------------------------------------------------------------------------------------

const NOW: i64 = 1_700_000_000;

const DIFF_LAYOUTS: &[&[(u32, u32)]] =
    &[&[(10, 6), (60, 10)], &[(1, 60), (10, 30), (60, 20)], &[(60, 30)], &[(7, 20), (70, 9)]];

fn random_points(rng: &mut Rng, layout: &[(u32, u32)], now: i64, count: usize) -> Vec<(i64, f64)> {
    let max_retention = layout.iter().map(|&(spp, n)| i64::from(spp * n)).max().unwrap_or(60);
    (0..count).map(|_| (now - (rng.next_u64() % max_retention as u64) as i64, rng.value(true))).collect()
}

#[test]
fn diff_matches_whisper_diff_py() {
    let mut rng = Rng::for_test("diff_matches_whisper_diff_py");
    let dir = tempfile::tempdir().expect("tempdir");
    let options: &[&[&str]] = &[
        &[],
        &["--summary"],
        &["--json"],
        &["--summary", "--json"],
        &["--columns"],
        &["--columns", "--no-headers"],
        &["--no-headers"],
        &["--ignore-empty"],
        &["--ignore-empty", "--summary", "--columns"],
        &["--ignore-empty", "--json"],
    ];
    let mut argvs = Vec::new();
    for case in 0..16 {
        let layout = DIFF_LAYOUTS[rng.below(DIFF_LAYOUTS.len())];
        let (a, b) = (dir.path().join(format!("a{case}.wsp")), dir.path().join(format!("b{case}.wsp")));
        create_file(&a, layout, AggregationMethod::Average, 0.0);
        let other_layout = if rng.chance(10) { DIFF_LAYOUTS[rng.below(DIFF_LAYOUTS.len())] } else { layout };
        create_file(&b, other_layout, AggregationMethod::Average, 0.0);
        // An older history first (stale slots, wrapped archives), then the present.
        for now in [NOW - 5000, NOW] {
            let shared = {
                let n = rng.below(40);
                random_points(&mut rng, layout, now, n)
            };
            let mut to_b = shared.clone();
            for p in &mut to_b {
                if rng.chance(20) {
                    p.1 = rng.value(true);
                }
            }
            to_b.retain(|_| !rng.chance(10));
            let extra_b = {
                let n = rng.below(4);
                random_points(&mut rng, layout, now, n)
            };
            write_points(&a, &shared, now);
            if rng.chance(85) {
                write_points(&b, &[to_b, extra_b].concat(), now);
            }
        }
        for opts in options {
            argvs.push(strings(opts).into_iter().chain([s(&a), s(&b)]).collect::<Vec<_>>());
        }
        let until = match rng.below(4) {
            0 => 0,
            1 => NOW - (rng.next_u64() % 4000) as i64,
            2 => NOW + (rng.next_u64() % 20) as i64,
            _ => NOW + 10_000, // longer than the finest archive: whisper-diff crashes, we refuse
        };
        argvs.push(vec!["--until".into(), until.to_string(), s(&a), s(&b)]);
        argvs.push(vec!["--summary".into(), "--until".into(), until.to_string(), s(&a), s(&b)]);
    }
    let theirs = run_python_script("whisper-diff.py", NOW, &argvs);
    let mut compared = 0;
    for (argv, (their_out, their_status)) in argvs.iter().zip(theirs) {
        let mut args = strings(&["whisper", "diff", "--now", &NOW.to_string()]);
        args.extend(argv.iter().cloned());
        let ours = bucky(&args);
        if their_status != 0 {
            assert_one_line_error(&ours, "");
            continue;
        }
        assert!(ours.status.success(), "{argv:?}: {}", text(&ours.stderr));
        assert_eq!(text(&ours.stdout), their_out, "whisper-diff.py {argv:?}");
        compared += 1;
    }
    assert!(compared > argvs.len() / 2, "only {compared} of {} invocations succeeded", argvs.len());
    // Bad input: a non-whisper file, a missing one.
    let junk = dir.path().join("junk.wsp");
    std::fs::write(&junk, b"junk").expect("write");
    assert_one_line_error(&bucky(&strings(&["whisper", "diff", &s(&junk), &s(&junk)])), "junk.wsp");
    assert_one_line_error(&bucky(&strings(&["whisper", "diff", &s(&junk), "/nonexistent.wsp"])), "junk.wsp");
}

// ---- dump --all ------------------------------------------------------------------------------------------

/// A valid header with random archives and a data area of random slots: empty, garbage timestamps, any
/// 64-bit value (every NaN payload, subnormals, infinities).
fn random_whisper_bytes(rng: &mut Rng) -> Vec<u8> {
    let count = 1 + rng.below(3);
    let mut spp = 0;
    let mut archives = Vec::new();
    let mut offset = 16 + 12 * count as u32;
    for _ in 0..count {
        spp += 1 + rng.below(100) as u32;
        let points = 1 + rng.below(40) as u32;
        archives.push(ArchiveInfo { offset, seconds_per_point: spp, points });
        offset += points * 12;
    }
    let max_retention = archives.iter().map(ArchiveInfo::retention).max().unwrap_or(0) as u32;
    let aggregation = AggregationMethod::from_type_code(1 + rng.below(8) as u32).expect("valid code");
    let xff = [0.0, 0.5, 1.0, 0.3, (rng.next_u64() % 1000) as f32 / 999.0][rng.below(5)];
    let header = Header { aggregation, max_retention, x_files_factor: xff, archives };
    let mut bytes = header.to_bytes();
    for _ in 0..(offset as usize - bytes.len()) / 12 {
        let (t, v): (u32, u64) = match rng.below(4) {
            0 => (0, 0),
            1 => (rng.next_u64() as u32, rng.next_u64()),
            2 => (NOW as u32 - rng.below(10_000) as u32, rng.value(true).to_bits()),
            _ => (rng.next_u64() as u32, rng.value(true).to_bits()),
        };
        bytes.extend_from_slice(&t.to_be_bytes());
        bytes.extend_from_slice(&v.to_be_bytes());
    }
    bytes
}

#[test]
fn dump_all_matches_whisper_dump_py() {
    let mut rng = Rng::for_test("dump_all_matches_whisper_dump_py");
    let dir = tempfile::tempdir().expect("tempdir");
    let mut paths = Vec::new();
    for i in 0..30 {
        let path = dir.path().join(format!("d{i}.wsp"));
        if i % 3 == 0 {
            let layout = DIFF_LAYOUTS[rng.below(DIFF_LAYOUTS.len())];
            create_file(&path, layout, AggregationMethod::Max, 0.5);
            let points = {
                let n = rng.below(60);
                random_points(&mut rng, layout, NOW, n)
            };
            write_points(&path, &points, NOW);
        } else {
            std::fs::write(&path, random_whisper_bytes(&mut rng)).expect("write");
        }
        paths.push(path);
    }
    let mut argvs = Vec::new();
    for path in &paths {
        argvs.push(vec![s(path)]);
        argvs.push(vec!["-r".into(), s(path)]);
    }
    let theirs = run_python_script("whisper-dump.py", NOW, &argvs);
    for (argv, (their_out, status)) in argvs.iter().zip(theirs) {
        assert_eq!(status, 0, "whisper-dump.py {argv:?} failed");
        let mut args = strings(&["whisper", "dump", "--all"]);
        if argv.len() == 2 {
            args.push("--raw".into());
        }
        args.push(argv.last().cloned().unwrap_or_default());
        let ours = bucky(&args);
        assert!(ours.status.success(), "{}", text(&ours.stderr));
        assert_eq!(text(&ours.stdout), their_out, "whisper-dump.py {argv:?}");
    }
    // --all --json carries every slot; the default dump is unchanged (no empty slots, sorted).
    let all: Value =
        serde_json::from_slice(&bucky(&strings(&["whisper", "dump", "--all", "--json", &s(&paths[0])])).stdout)
            .expect("json");
    let header = WhisperFile::open(&paths[0]).expect("open").header().clone();
    for (i, a) in header.archives.iter().enumerate() {
        assert_eq!(all["slots"][i].as_array().map(Vec::len), Some(a.points as usize));
    }
    let default = text(&bucky(&strings(&["whisper", "dump", &s(&paths[0])])).stdout);
    assert!(default.contains("Archive 0 data:") && !default.contains("Meta data:"), "{default}");
    // Bad input.
    let junk = dir.path().join("junk.wsp");
    std::fs::write(&junk, [1u8; 20]).expect("write");
    assert_one_line_error(&bucky(&strings(&["whisper", "dump", "--all", &s(&junk)])), "junk.wsp");
    assert_one_line_error(&bucky(&strings(&["whisper", "dump", "--all", "/nonexistent.wsp"])), "nonexistent.wsp");
}

// ---- find-corrupt ----------------------------------------------------------------------------------------

/// Every kind of bad file the header validation catches, by name.
fn corrupt_files() -> Vec<(&'static str, Vec<u8>)> {
    let header =
        Header::for_retentions(&[Retention::new(60, 10), Retention::new(300, 12)], AggregationMethod::Sum, 0.5);
    let good = {
        let mut b = header.to_bytes();
        b.resize(header.file_size() as usize, 0);
        b
    };
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        b
    };
    let put = |b: &mut Vec<u8>, at: usize, v: u32| b[at..at + 4].copy_from_slice(&v.to_be_bytes());
    vec![
        ("empty", vec![]),
        ("short_header", good[..10].to_vec()),
        ("unknown_aggregation", with(&|b| put(b, 0, 99))),
        ("xff_nan", with(&|b| b[8..12].copy_from_slice(&f32::NAN.to_be_bytes()))),
        ("xff_above_one", with(&|b| b[8..12].copy_from_slice(&2.0f32.to_be_bytes()))),
        ("no_archives", with(&|b| put(b, 12, 0))),
        ("archive_count_beyond_file", with(&|b| put(b, 12, 100_000))),
        ("zero_seconds_per_point", with(&|b| put(b, 20, 0))),
        ("zero_points", with(&|b| put(b, 24, 0))),
        ("offset_inside_header", with(&|b| put(b, 16, 20))),
        ("truncated_data", good[..good.len() - 12].to_vec()),
        ("trailing_bytes", with(&|b| b.extend_from_slice(b"extra"))),
        ("overlapping_archives", with(&|b| put(b, 28, 40 + 12))),
        ("archives_out_of_order", with(&|b| put(b, 32, 30))),
        ("max_retention_mismatch", with(&|b| put(b, 4, 1234))),
        ("retention_overflow", with(&|b| put(b, 32, u32::MAX))),
    ]
}

#[test]
fn find_corrupt_lists_every_bad_header_and_nothing_else() {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tree");
    let mut expected = BTreeSet::new();
    for (i, (name, bytes)) in corrupt_files().into_iter().enumerate() {
        let path = root.join(["", "x", "x/y"][i % 3]).join(format!("{name}.wsp"));
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, bytes).expect("write");
        expected.insert(s(&path));
    }
    for name in ["good1.wsp", "x/good2.wsp", "x/y/z/good3.wsp"] {
        let path = root.join(name);
        create_file(&path, &[(60, 10), (300, 12)], AggregationMethod::Average, 0.5);
        write_points(&path, &[(NOW - 100, 1.0)], NOW);
    }
    std::fs::create_dir_all(root.join(".trash")).expect("mkdir");
    std::fs::write(root.join(".trash/hidden.wsp"), b"bad").expect("write");
    std::fs::write(root.join("x/notes.txt"), b"bad").expect("write");

    let out = bucky(&strings(&["whisper", "find-corrupt", &s(&root)]));
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "");
    let mut listed = BTreeSet::new();
    for line in text(&out.stdout).lines() {
        let (path, rest) = line.split_once(": ").expect("PATH: KIND: REASON");
        let (kind, reason) = rest.split_once(": ").expect("KIND: REASON");
        assert!(["corrupt", "malformed"].contains(&kind) && reason.len() > 10, "{line}");
        listed.insert(path.to_owned());
    }
    assert_eq!(listed, expected);

    let summary: Value =
        serde_json::from_slice(&bucky(&strings(&["whisper", "find-corrupt", "--json", &s(&root)])).stdout)
            .expect("json");
    assert_eq!(summary["scanned"], expected.len() + 3);
    assert_eq!(summary["bad"].as_array().map(Vec::len), Some(expected.len()));

    // Everything whisper's own find-corrupt-whisper-files.py flags (outside the hidden directory) is listed.
    let script = oracle_python().parent().expect("venv bin").join("find-corrupt-whisper-files.py");
    let py = Command::new(oracle_python()).arg(&script).arg(&root).output().expect("run the script");
    let canonical_root = std::fs::canonicalize(&root).expect("canonical");
    let flagged: BTreeSet<String> = text(&py.stderr)
        .lines()
        .filter_map(|l| l.strip_prefix("Corrupt Whisper file: "))
        .filter(|p| !p.contains("/.trash/"))
        .map(|p| s(&root.join(Path::new(p).strip_prefix(&canonical_root).expect("under the root"))))
        .collect();
    assert!(flagged.len() >= 5, "the reference flags only {flagged:?}");
    assert!(flagged.is_subset(&listed), "missed: {:?}", flagged.difference(&listed).collect::<Vec<_>>());

    // A clean tree: silence and success. A missing path: one line, exit 1.
    for path in &expected {
        std::fs::remove_file(path).expect("remove");
    }
    let out = bucky(&strings(&["whisper", "find-corrupt", &s(&root)]));
    assert!(out.status.success() && out.stdout.is_empty(), "{}", text(&out.stdout));
    assert_one_line_error(&bucky(&strings(&["whisper", "find-corrupt", "/nonexistent/tree"])), "/nonexistent/tree");
}

// ---- sparsify --------------------------------------------------------------------------------------------

fn whisper_dump_py(path: &Path) -> String {
    let script = oracle_python().parent().expect("venv bin").join("whisper-dump.py");
    let out = Command::new(oracle_python()).arg(script).arg(path).output().expect("run whisper-dump.py");
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).expect("stat").blocks() * 512
}

#[test]
fn sparsify_punches_holes_in_place_and_changes_no_byte() {
    let mut rng = Rng::for_test("sparsify_punches_holes_in_place_and_changes_no_byte");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("tree");
    let paths = [root.join("a.wsp"), root.join("sub/b.wsp"), root.join(".hidden/c.wsp")];
    for path in &paths {
        create_file(path, &[(10, 30_000), (60, 20_000), (600, 5_000)], AggregationMethod::Average, 0.5);
        let points = random_points(&mut rng, &[(10, 30_000), (60, 20_000), (600, 5_000)], NOW, 8);
        write_points(path, &points, NOW);
    }
    let before: Vec<(Vec<u8>, u64, u64, String)> = paths
        .iter()
        .map(|p| {
            (
                std::fs::read(p).expect("read"),
                std::fs::metadata(p).expect("stat").ino(),
                allocated(p),
                whisper_dump_py(p),
            )
        })
        .collect();
    assert!(before[0].2 >= before[0].0.len() as u64 / 2, "the test file should start out allocated");

    // --no-op: reports, changes nothing.
    let out = bucky(&strings(&["whisper", "sparsify", "--no-op", "--json", &s(&root)]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(summary["files"].as_array().map(Vec::len), Some(2), "the hidden directory is skipped");
    assert!(summary["zeroBytes"].as_u64().unwrap_or(0) > 500_000, "{summary}");
    assert_eq!(summary["freed"], 0);
    for (path, (_, _, blocks, _)) in paths.iter().zip(&before) {
        assert_eq!(allocated(path), *blocks);
    }

    let out = bucky(&strings(&["whisper", "sparsify", "--json", &s(&root)]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let summary: Value = serde_json::from_slice(&out.stdout).expect("json");
    for (i, (path, (bytes, ino, blocks, dump))) in paths.iter().zip(&before).enumerate() {
        assert_eq!(&std::fs::read(path).expect("read"), bytes, "content of {}", path.display());
        assert_eq!(std::fs::metadata(path).expect("stat").ino(), *ino, "inode of {}", path.display());
        assert_eq!(&whisper_dump_py(path), dump, "whisper-dump of {}", path.display());
        if i < 2 {
            let freed = summary["files"][i]["freed"].as_u64().unwrap_or(0);
            assert_eq!(allocated(path), blocks - freed);
            assert!(
                allocated(path) < blocks / 2,
                "{}: {} of {blocks} bytes still allocated",
                path.display(),
                allocated(path)
            );
        } else {
            assert_eq!(allocated(path), *blocks, "the hidden file was not touched");
        }
    }
    // The file still works.
    write_points(&paths[0], &[(NOW - 5, 42.0)], NOW);
    assert!(whisper_dump_py(&paths[0]).contains("42"));

    // Bad input: a non-whisper file is refused and left as it was; a missing path is reported.
    let junk = root.join("junk.wsp");
    std::fs::write(&junk, vec![0u8; 100_000]).expect("write");
    let junk_blocks = allocated(&junk);
    let out = bucky(&strings(&["whisper", "sparsify", &s(&junk)]));
    assert_one_line_error(&out, "junk.wsp");
    assert_eq!((std::fs::read(&junk).expect("read"), allocated(&junk)), (vec![0u8; 100_000], junk_blocks));
    assert_one_line_error(&bucky(&strings(&["whisper", "sparsify", "/nonexistent.wsp"])), "nonexistent.wsp");
}

/// Holds an exclusive flock on `path` (as carbon-cache does with WHISPER_LOCK_WRITES) for `seconds`.
fn hold_flock(path: &Path, seconds: f64) -> std::process::Child {
    let script = "import fcntl, sys, time\nf = open(sys.argv[1], 'rb+')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(float(sys.argv[2]))\n";
    let mut child = Command::new(oracle_python())
        .args(["-c", script, &s(path), &seconds.to_string()])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the lock holder");
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("stdout")).read_line(&mut line).expect("read");
    assert_eq!(line.trim(), "locked");
    child
}

#[test]
fn sparsify_waits_for_the_flock_and_gives_up_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("held.wsp");
    create_file(&path, &[(10, 30_000)], AggregationMethod::Average, 0.5);
    let blocks = allocated(&path);

    // A holder that never lets go within the timeout: a clear error, nothing changed.
    let mut holder = hold_flock(&path, 30.0);
    let started = Instant::now();
    let out = bucky(&strings(&["whisper", "sparsify", "--lock-timeout", "1", &s(&path)]));
    assert_one_line_error(&out, "timed out");
    assert!(started.elapsed() >= Duration::from_millis(900) && started.elapsed() < Duration::from_secs(10));
    assert_eq!(allocated(&path), blocks);
    holder.kill().expect("stop the holder");
    holder.wait().expect("reap the holder");

    // A holder that lets go: sparsify waits for it, then frees the blocks.
    let mut holder = hold_flock(&path, 1.0);
    let started = Instant::now();
    let out = bucky(&strings(&["whisper", "sparsify", "--lock-timeout", "20", &s(&path)]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() >= Duration::from_millis(700), "did not wait for the lock");
    assert!(allocated(&path) < blocks / 2);
    holder.wait().expect("reap the holder");
}
