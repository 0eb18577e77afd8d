//! Shared harness of the reference-judged whisper tests: runs the same operations through whisper.py /
//! carbonate (`tests/oracle/whisper_oracle.py`, one Python process per batch) and through bucky, and
//! compares what they did. Used by the whisper crate's tests and by `bucky whisper`'s (bucky-cli).
//!
//! A case is a list of ops in the oracle's JSON format (see the oracle's docstring). [`run_ours`] performs
//! them with the `whisper` crate and answers in the same format, [`compare_case`] judges the two answers:
//! - both succeed: written files byte-identical, fetch results identical bit for bit;
//! - both refuse: same exception class (a reference *crash* such as ZeroDivisionError, or a refusal of ours
//!   whose `reference_class()` is `"bucky"`, only requires that both refuse), and our file is unchanged (bucky is transactional; the reference may have half-written —
//!   then the histories differ and the rest of the case is not compared);
//! - the reference accepts and we refuse: only allowed for bucky's deliberate refusals, whose
//!   `reference_class()` is `"bucky"`, and our file must be unchanged;
//! - we accept what the reference refuses: always a failure.
// A harness named after the oracle's JSON ops: its items are documented where the module says what they do.
#![allow(missing_docs)]

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{oracle_python, oracle_script};
use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use whisper::{AggregationMethod, CreateOptions, FillMode, FillOptions, Point, ResizeOptions, Retention, WhisperFile};

// ---- environment ---------------------------------------------------------------------------------------

/// Where test files go: tmpfs when there is one (bucky fsyncs on create and fill; a disk fsync per case
/// would dominate the run time), else the system temp dir.
pub fn scratch_root() -> PathBuf {
    let shm = Path::new("/dev/shm");
    let probe = shm.join(format!(".bucky-probe-{}", std::process::id()));
    if shm.is_dir() && std::fs::write(&probe, b"").is_ok() {
        let _ = std::fs::remove_file(&probe);
        return shm.to_owned();
    }
    std::env::temp_dir()
}

pub fn scratch_dir() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("bucky-test-").tempdir_in(scratch_root()).expect("scratch dir")
}

/// The master seed: `BUCKY_ORACLE_SEED` or a fresh one (always printed on failure).
pub fn master_seed() -> u64 {
    match std::env::var("BUCKY_ORACLE_SEED") {
        Ok(s) => s.trim().parse().expect("BUCKY_ORACLE_SEED must be an unsigned integer"),
        Err(_) => {
            let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
            (t.as_nanos() as u64) ^ (u64::from(std::process::id()) << 32)
        }
    }
}

/// Cases per suite: `BUCKY_ORACLE_CASES` or the default.
pub fn case_count(default: usize) -> usize {
    std::env::var("BUCKY_ORACLE_CASES").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(default)
}

/// The rng of case `index` of suite `name`: every case can be regenerated alone.
pub fn case_rng(seed: u64, name: &str, index: usize) -> SmallRng {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    SmallRng::seed_from_u64(seed ^ h ^ (index as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

// ---- JSON helpers --------------------------------------------------------------------------------------

/// A float as the oracle takes it: numbers, or "NaN"/"Infinity"/"-Infinity".
pub fn fv(v: f64) -> Value {
    if v.is_nan() {
        json!("NaN")
    } else if v.is_infinite() {
        json!(if v > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(v)
    }
}

/// The inverse of [`fv`].
pub fn vf(v: &Value) -> f64 {
    match v {
        Value::String(s) => match s.as_str() {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => panic!("not a float: {other:?}"),
        },
        other => other.as_f64().unwrap_or_else(|| panic!("not a float: {other}")),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn unhex(s: &str) -> Vec<u8> {
    (0..s.len() / 2).map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("hex")).collect()
}

pub fn bits(v: f64) -> String {
    format!("{:016x}", v.to_bits())
}

/// A fetch answer in the oracle's format.
pub fn series_value(series: Option<&whisper::Series>) -> Value {
    match series {
        None => Value::Null,
        Some(s) => json!({
            "fromTime": s.from,
            "untilTime": s.until,
            "step": s.step,
            "values": s.values.iter().map(|v| v.map_or(Value::Null, fv)).collect::<Vec<_>>(),
            "bits": s.values.iter().map(|v| v.map_or(Value::Null, |v| json!(bits(v)))).collect::<Vec<_>>(),
        }),
    }
}

// ---- the oracle ----------------------------------------------------------------------------------------

/// Runs `cases` (each `{"id", "ops"}`) through one oracle process; answers in order.
pub fn run_oracle(cases: &[Value]) -> Vec<Value> {
    let python = oracle_python();
    let work = scratch_dir();
    let mut child = Command::new(&python)
        .arg(oracle_script("whisper_oracle.py"))
        .arg("--workdir")
        .arg(work.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}; run scripts/test.sh", python.display()));
    let mut stdin = child.stdin.take().unwrap();
    let input: Vec<String> = cases.iter().map(|c| c.to_string()).collect();
    let writer = std::thread::spawn(move || {
        for line in input {
            if writeln!(stdin, "{line}").is_err() {
                break; // the oracle died; its stderr tells why
            }
        }
    });
    let mut stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut s);
        s
    });
    let out: Vec<Value> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| serde_json::from_str(&l.expect("oracle output")).expect("oracle output is JSON"))
        .collect();
    writer.join().unwrap();
    let status = child.wait().unwrap();
    let err = err_reader.join().unwrap();
    assert!(status.success() && out.len() == cases.len(), "whisper oracle failed ({status}): {err}");
    for (case, answer) in cases.iter().zip(&out) {
        assert_eq!(case["id"], answer["id"], "oracle answers out of order");
    }
    out
}

// ---- our side ------------------------------------------------------------------------------------------

/// The file an op writes, if any.
pub fn written_file(op: &Value) -> Option<&str> {
    let key = match op["op"].as_str()? {
        "create" | "put" | "update_many" | "update" | "resize" | "set_aggregation" => "file",
        "merge" | "fill" => "dst",
        _ => return None,
    };
    op[key].as_str()
}

/// The names in `dir`, sorted (what a resize leaves behind).
pub fn file_names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

fn read_hex(path: &Path) -> Value {
    std::fs::read(path).map_or(Value::Null, |b| json!(hex(&b)))
}

fn opt_i64(v: &Value) -> Option<i64> {
    if v.is_null() {
        None
    } else {
        Some(v.as_i64().unwrap_or_else(|| panic!("not an integer: {v}")))
    }
}

fn points_of(v: &Value) -> Vec<Point> {
    v.as_array()
        .expect("points")
        .iter()
        .map(|p| Point::new(p[0].as_i64().expect("integer timestamp"), vf(&p[1])))
        .collect()
}

/// Performs one op with the `whisper` crate in `dir`.
pub fn run_op(op: &Value, dir: &Path) -> Result<Value, whisper::Error> {
    let path = |key: &str| dir.join(op[key].as_str().expect("file name"));
    match op["op"].as_str().expect("op") {
        "parse" => {
            let r = Retention::parse(op["spec"].as_str().unwrap())?;
            Ok(json!({"result": [r.seconds_per_point, r.points]}))
        }
        "create" => {
            let mut retentions = Vec::new();
            for spec in op["retentions"].as_array().unwrap() {
                retentions.push(Retention::parse(spec.as_str().unwrap())?);
            }
            // The reference validates the archive list before it looks at the method or the xff.
            whisper::validate_archive_list(&mut retentions.clone())?;
            let aggregation: AggregationMethod = op["agg"].as_str().unwrap().parse()?;
            let options = CreateOptions {
                aggregation,
                x_files_factor: vf(&op["xff"]),
                sparse: op["sparse"].as_bool().unwrap_or(false),
            };
            whisper::create(&path("file"), &retentions, &options)?;
            Ok(json!({}))
        }
        "put" => {
            std::fs::write(path("file"), unhex(op["hex"].as_str().unwrap())).unwrap();
            Ok(json!({}))
        }
        "update_many" => {
            let file = WhisperFile::open_rw(path("file"))?;
            file.update_many(&points_of(&op["points"]), op["now"].as_i64().unwrap())?;
            Ok(json!({}))
        }
        "update" => {
            let file = WhisperFile::open_rw(path("file"))?;
            file.update(vf(&op["v"]), op["t"].as_i64().unwrap(), op["now"].as_i64().unwrap())?;
            Ok(json!({}))
        }
        "fetch" => {
            let file = WhisperFile::open(path("file"))?;
            let archive = op["archive"].as_str().map(Retention::parse_precision).transpose()?;
            let series =
                file.fetch(op["from"].as_i64().unwrap(), opt_i64(&op["until"]), op["now"].as_i64().unwrap(), archive)?;
            Ok(json!({"result": series_value(series.as_ref())}))
        }
        "merge" => {
            whisper::merge(
                &path("src"),
                &path("dst"),
                opt_i64(&op["from"]),
                opt_i64(&op["to"]),
                op["now"].as_i64().unwrap(),
            )?;
            Ok(json!({}))
        }
        "fill" => {
            let options = fill_options(op);
            whisper::fill(&path("src"), &path("dst"), &options)?;
            Ok(json!({}))
        }
        "resize" => {
            // whisper-resize's order: the file (whisper.info), the specs, then create's checks.
            let file = path("file");
            WhisperFile::open(&file)?;
            let mut retentions = Vec::new();
            for spec in op["retentions"].as_array().unwrap() {
                retentions.push(Retention::parse(spec.as_str().unwrap())?);
            }
            whisper::validate_archive_list(&mut retentions.clone())?;
            let mut options = ResizeOptions::new(op["now"].as_i64().unwrap());
            options.aggregation = op["agg"].as_str().map(str::parse).transpose()?;
            options.x_files_factor = (!op["xff"].is_null()).then(|| vf(&op["xff"]));
            options.aggregate = op["aggregate"].as_bool().unwrap_or(false);
            options.backup = !op["nobackup"].as_bool().unwrap_or(false);
            whisper::resize(&file, &retentions, &options)?;
            Ok(json!({"result": {"backup": read_hex(&whisper::backup_path(&file)), "files": file_names(dir)}}))
        }
        "set_aggregation" => {
            // setAggregationMethod reads the header before it looks at the method.
            let file = path("file");
            WhisperFile::open_rw(&file)?;
            let method: AggregationMethod = op["agg"].as_str().unwrap().parse()?;
            let xff = (!op["xff"].is_null()).then(|| vf(&op["xff"]));
            let old = whisper::set_aggregation_method(&file, method, xff)?;
            Ok(json!({"result": old.name()}))
        }
        "info" => {
            let file = WhisperFile::open(path("file"))?;
            let h = file.header();
            Ok(json!({"result": {
                "aggregationMethod": h.aggregation.name(),
                "maxRetention": h.max_retention,
                "xFilesFactor": fv(h.xff()),
                "archives": h.archives.iter().map(|a| json!({
                    "offset": a.offset, "secondsPerPoint": a.seconds_per_point, "points": a.points,
                    "retention": a.retention(), "size": a.size(),
                })).collect::<Vec<_>>(),
            }}))
        }
        other => panic!("unknown op {other}"),
    }
}

/// The [`FillOptions`] of a fill op: carbonate mode unless the op says `"safe": true`.
pub fn fill_options(op: &Value) -> FillOptions {
    let now = vf(&op["now"]);
    let mut options = FillOptions::new(now.floor() as i64);
    options.now = now;
    options.mode = if op["safe"].as_bool() == Some(true) { FillMode::Safe } else { FillMode::Carbonate };
    options.start_from = if op["startFrom"].is_null() { None } else { Some(vf(&op["startFrom"])) };
    options.end_at = if op["endAt"].is_null() { 0.0 } else { vf(&op["endAt"]) };
    options.overwrite = op["overwrite"].as_bool().unwrap_or(false);
    options.lock = op["lock"].as_bool().unwrap_or(false);
    options.sync = false;
    options
}

/// Runs a case's ops in a fresh directory under `scratch`; answers like the oracle, plus `"before"` (the
/// written file's bytes before the op) on every writing op.
pub fn run_ours(ops: &[Value], scratch: &Path, index: usize) -> Vec<Value> {
    let dir = scratch.join(format!("case-{index}"));
    std::fs::create_dir_all(&dir).unwrap();
    let results = ops
        .iter()
        .map(|op| {
            let target = written_file(op).map(|f| dir.join(f));
            let before = target.as_deref().map(read_hex);
            let mut result = match run_op(op, &dir) {
                Ok(r) => r,
                Err(e) => json!({"error": e.reference_class(), "message": e.to_string()}),
            };
            if let Some(target) = target {
                result["before"] = before.unwrap();
                result["bytes"] = read_hex(&target);
            }
            result
        })
        .collect();
    std::fs::remove_dir_all(&dir).unwrap();
    results
}

// ---- judging -------------------------------------------------------------------------------------------

/// Exceptions that are the reference crashing rather than refusing (whisper.py has no check there). For
/// these we only require a refusal with the file unchanged.
pub const REFERENCE_CRASHES: &[&str] = &[
    "ZeroDivisionError",
    "TypeError",
    "UnboundLocalError",
    "StopIteration",
    "AssertionError",
    "IndexError",
    "KeyError",
    "AttributeError",
    "OverflowError",
];

/// One disagreement with the reference.
#[derive(Debug, Clone)]
pub struct Failure {
    pub category: String,
    pub op_index: usize,
    pub detail: String,
}

fn fail(category: &str, op_index: usize, detail: String) -> Result<(), Failure> {
    Err(Failure { category: category.to_owned(), op_index, detail })
}

/// Judges a case (see the module docs). Stops at the first disagreement, or silently where the two sides'
/// files legitimately diverge (a reference refusal that still wrote).
pub fn compare_case(ops: &[Value], ours: &[Value], theirs: &[Value]) -> Result<(), Failure> {
    let mut their_files: HashMap<String, Value> = HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (o, t) = (&ours[i], &theirs[i]);
        let target = written_file(op);
        let their_before = target.map(|f| their_files.get(f).cloned().unwrap_or(Value::Null));
        if let Some(f) = target {
            their_files.insert(f.to_owned(), t["bytes"].clone());
        }
        let ours_unchanged = || o["bytes"] == o["before"];
        match (o.get("error"), t.get("error")) {
            (None, None) => {
                if target.is_some() && o["bytes"] != t["bytes"] {
                    return fail("bytes differ", i, describe_bytes(&o["bytes"], &t["bytes"]));
                }
                if let Some(r) = t.get("result") {
                    compare_result(i, &o["result"], r)?;
                }
            }
            (Some(oc), Some(tc)) => {
                let tc = tc.as_str().unwrap();
                // A "bucky" refusal comes from a check the reference lacks (a malformed header, a NaN xff):
                // the reference then fails later, with whatever that input makes it raise.
                if oc != "bucky" && !REFERENCE_CRASHES.contains(&tc) && !same_class(oc, tc) {
                    return fail(
                        "different refusal",
                        i,
                        format!("we refuse with {oc} ({}), the reference with {tc} ({})", o["message"], t["message"]),
                    );
                }
                if target.is_some() && !ours_unchanged() {
                    return fail("refusal changed the file", i, format!("our error: {}", o["message"]));
                }
                if target.is_some() && Some(&t["bytes"]) != their_before.as_ref() {
                    return Ok(()); // the reference half-wrote: histories differ from here on
                }
            }
            (Some(oc), None) => {
                if oc != "bucky" {
                    return fail("refused what the reference accepts", i, format!("our error: {oc}: {}", o["message"]));
                }
                if target.is_some() && !ours_unchanged() {
                    return fail("refusal changed the file", i, format!("our error: {}", o["message"]));
                }
                return Ok(()); // a deliberate difference: the reference went on with a corrupt file
            }
            (None, Some(tc)) => {
                return fail(
                    "accepted what the reference refuses",
                    i,
                    format!("the reference raised {tc}: {}", t["message"]),
                );
            }
        }
    }
    Ok(())
}

/// Our class names the reference's; Python 3 reports IOError as its OSError subclasses.
fn same_class(ours: &Value, theirs: &str) -> bool {
    let os_errors = ["OSError", "IOError", "FileNotFoundError", "PermissionError", "IsADirectoryError"];
    ours == theirs || (ours == "IOError" && os_errors.contains(&theirs))
}

pub fn compare_result(i: usize, ours: &Value, theirs: &Value) -> Result<(), Failure> {
    let same = match (ours, theirs) {
        (Value::Object(o), Value::Object(t)) if t.contains_key("bits") => {
            ["fromTime", "untilTime", "step", "bits"].iter().all(|k| o.get(*k) == t.get(*k))
                && o["values"].as_array().map(|v| v.iter().map(Value::is_null).collect::<Vec<_>>())
                    == t["values"].as_array().map(|v| v.iter().map(Value::is_null).collect::<Vec<_>>())
        }
        (o, t) => json_numbers_equal(o, t),
    };
    if same {
        Ok(())
    } else {
        fail("result differs", i, format!("ours:   {ours}\ntheirs: {theirs}"))
    }
}

/// JSON equality with numbers compared as f64 (Python prints 60.0 where Rust prints 60).
pub fn json_numbers_equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| json_numbers_equal(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| json_numbers_equal(v, w)))
        }
        _ => a == b,
    }
}

/// A readable account of how two file images differ: header fields, then differing slots per archive.
pub fn describe_bytes(ours: &Value, theirs: &Value) -> String {
    let (Some(o), Some(t)) = (ours.as_str(), theirs.as_str()) else {
        return format!("ours: {}, theirs: {}", short(ours), short(theirs));
    };
    let (o, t) = (unhex(o), unhex(t));
    let mut out = Vec::new();
    if o.len() != t.len() {
        out.push(format!("length: ours {} bytes, theirs {} bytes", o.len(), t.len()));
    }
    let be = |b: &[u8], at: usize| b.get(at..at + 4).map(|s| u32::from_be_bytes(s.try_into().unwrap()));
    let count = be(&t, 12).unwrap_or(0).min(64) as usize;
    for f in (0..16 + 12 * count).step_by(4) {
        if be(&o, f) != be(&t, f) {
            out.push(format!("header word at byte {f}: ours {:?}, theirs {:?}", be(&o, f), be(&t, f)));
        }
    }
    for a in 0..count {
        let (offset, spp, points) = (be(&t, 16 + 12 * a), be(&t, 20 + 12 * a), be(&t, 24 + 12 * a));
        let (Some(offset), Some(spp), Some(points)) = (offset, spp, points) else { continue };
        let mut shown = 0;
        for s in 0..points as usize {
            let at = offset as usize + 12 * s;
            let slot = |b: &[u8]| {
                b.get(at..at + 12).map(|p| {
                    (u32::from_be_bytes(p[..4].try_into().unwrap()), f64::from_be_bytes(p[4..].try_into().unwrap()))
                })
            };
            let (x, y) = (slot(&o), slot(&t));
            if x.map(|(t, v)| (t, v.to_bits())) != y.map(|(t, v)| (t, v.to_bits())) {
                let show =
                    |p: Option<(u32, f64)>| p.map_or("-".to_owned(), |(t, v)| format!("({t}, {v} = {})", bits(v)));
                if shown < 12 {
                    out.push(format!("archive {a} ({spp}s) slot {s}: ours {}, theirs {}", show(x), show(y)));
                }
                shown += 1;
            }
        }
        if shown > 12 {
            out.push(format!("archive {a}: … {} more differing slots", shown - 12));
        }
    }
    out.join("\n")
}

fn short(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 80 {
        format!("{}… ({} chars)", &s[..80], s.len())
    } else {
        s
    }
}

// ---- suites --------------------------------------------------------------------------------------------

/// Generates `count` cases of suite `name` (each from its own rng, see [`case_rng`]) and judges them with
/// [`run_cases`].
pub fn run_differential(name: &str, default_cases: usize, generate: impl Fn(&mut Gen) -> Vec<Value>) {
    let seed = master_seed();
    let only: Option<usize> = std::env::var("BUCKY_ORACLE_CASE").ok().and_then(|s| s.parse().ok());
    let indices: Vec<usize> = match only {
        Some(i) => vec![i],
        None => (0..case_count(default_cases)).collect(),
    };
    let cases: Vec<(usize, Vec<Value>)> =
        indices.iter().map(|&i| (i, generate(&mut Gen::new(case_rng(seed, name, i))))).collect();
    run_cases(name, Some(seed), cases);
}

/// Runs cases through the oracle (in the background) and through bucky, and fails with a report of every
/// disagreement: counts per category, then the first few cases in full with the environment to rerun
/// them alone. Also prints what the cases exercised (writes that changed a file, refusals by class).
pub fn run_cases(name: &str, seed: Option<u64>, cases: Vec<(usize, Vec<Value>)>) {
    let cases: Vec<Value> = cases.into_iter().map(|(i, ops)| json!({"id": i, "ops": ops})).collect();
    let started = std::time::Instant::now();
    let oracle_cases = cases.clone();
    let oracle = std::thread::spawn(move || run_oracle(&oracle_cases));
    let scratch = scratch_dir();
    let ours: Vec<Vec<Value>> = cases
        .iter()
        .map(|c| run_ours(c["ops"].as_array().unwrap(), scratch.path(), c["id"].as_u64().unwrap() as usize))
        .collect();
    let theirs = oracle.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    let mut failures: Vec<(usize, Failure)> = Vec::new();
    for ((case, ours), theirs) in cases.iter().zip(&ours).zip(&theirs) {
        let ops = case["ops"].as_array().unwrap();
        let theirs = theirs["results"].as_array().unwrap();
        if let Err(f) = compare_case(ops, ours, theirs) {
            failures.push((case["id"].as_u64().unwrap() as usize, f));
        }
    }
    let total_ops: usize = cases.iter().map(|c| c["ops"].as_array().unwrap().len()).sum();
    let mut exercised: BTreeMap<String, usize> = BTreeMap::new();
    for (case, results) in cases.iter().zip(&ours) {
        for (op, result) in case["ops"].as_array().unwrap().iter().zip(results) {
            let op = op["op"].as_str().unwrap();
            let key = match result.get("error") {
                Some(class) => format!("{op} refused:{}", class.as_str().unwrap()),
                None if result.get("before").is_some() && result["before"] != result["bytes"] => {
                    format!("{op} changed a file")
                }
                None if result.get("before").is_some() => format!("{op} wrote nothing"),
                None => format!("{op} read"),
            };
            *exercised.entry(key).or_default() += 1;
        }
    }
    let seed_text = seed.map_or_else(|| "fixed cases".to_owned(), |s| format!("seed {s}"));
    eprintln!(
        "{name}: {} cases, {total_ops} ops, {} disagreements, {:.1}s ({seed_text}); our outcomes: {exercised:?}",
        cases.len(),
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    if failures.is_empty() {
        return;
    }
    let mut by_category: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, f) in &failures {
        *by_category.entry(f.category.as_str()).or_default() += 1;
    }
    let mut report = format!(
        "{name}: {} of {} cases disagree with the reference ({seed_text}): {by_category:?}\n",
        failures.len(),
        cases.len()
    );
    let shown = if seed.is_some() { 4 } else { failures.len() };
    for (index, f) in failures.iter().take(shown) {
        let case = &cases.iter().find(|c| c["id"] == json!(index)).unwrap()["ops"];
        let rerun = seed.map_or_else(String::new, |s| {
            // The crate whose tests run this harness (cargo sets it for its test binaries).
            let package = std::env::var("CARGO_PKG_NAME").unwrap_or_else(|_| "bucky-whisper".to_owned());
            format!("\nrerun: BUCKY_ORACLE_SEED={s} BUCKY_ORACLE_CASE={index} cargo test -p {package} --test it {name}")
        });
        report.push_str(&format!(
            "\n--- case {index} ({}) at op {}: {}\n{}\nops: {}{rerun}\n",
            f.category, f.op_index, case[f.op_index], f.detail, case
        ));
    }
    panic!("{report}");
}

// ---- generators ----------------------------------------------------------------------------------------

/// A retention schema: archives sorted finest first, and the spec strings given to create.
#[derive(Debug, Clone)]
pub struct Schema {
    pub archives: Vec<(u32, u32)>,
    pub specs: Vec<String>,
}

impl Schema {
    pub fn from_pairs(pairs: &[(u32, u32)]) -> Self {
        let mut archives = pairs.to_vec();
        archives.sort();
        Schema { specs: pairs.iter().map(|(s, p)| format!("{s}:{p}")).collect(), archives }
    }

    pub fn max_retention(&self) -> i64 {
        self.archives.iter().map(|&(s, p)| i64::from(s) * i64::from(p)).max().unwrap_or(0)
    }

    pub fn spp(&self, i: usize) -> i64 {
        i64::from(self.archives[i].0)
    }

    pub fn retention(&self, i: usize) -> i64 {
        i64::from(self.archives[i].0) * i64::from(self.archives[i].1)
    }

    pub fn retentions(&self) -> Vec<Retention> {
        self.archives.iter().map(|&(s, p)| Retention::new(s, p)).collect()
    }
}

pub const AGGREGATIONS: [&str; 8] = ["average", "sum", "last", "max", "min", "avg_zero", "absmax", "absmin"];

/// `t - t % spp` with Python's floor modulo.
pub fn align(t: i64, spp: i64) -> i64 {
    t - t.rem_euclid(spp)
}

/// Random inputs in the reference's domain, biased toward the edge cases that matter.
pub struct Gen {
    pub rng: SmallRng,
}

impl Gen {
    pub fn new(rng: SmallRng) -> Self {
        Gen { rng }
    }

    pub fn chance(&mut self, p: f64) -> bool {
        self.rng.gen_bool(p)
    }

    pub fn pick<T: Clone>(&mut self, items: &[T]) -> T {
        items.choose(&mut self.rng).expect("non-empty").clone()
    }

    /// A realistic clock (~1.6e9–1.8e9): aligned to a minute, an hour or the schema's coarsest step, or not.
    pub fn now(&mut self, schema: &Schema) -> i64 {
        let t = 1_600_000_000 + self.rng.gen_range(0..200_000_000i64);
        match self.rng.gen_range(0..10) {
            0..=2 => align(t, 60),
            3 => align(t, 3600),
            4 | 5 => align(t, schema.spp(schema.archives.len() - 1)),
            _ => t,
        }
    }

    /// A value: small integers (ties for max/absmax), fractions (summation order), 0.0, -0.0, NaN, ±inf.
    pub fn value(&mut self) -> f64 {
        match self.rng.gen_range(0..100) {
            0..=29 => f64::from(self.rng.gen_range(-5..=5)),
            30..=59 => self.rng.gen_range(-1000.0..1000.0),
            60..=64 => 0.0,
            65..=69 => -0.0,
            70..=72 => f64::NAN,
            73..=74 => f64::INFINITY,
            75..=76 => f64::NEG_INFINITY,
            77..=86 => 0.1,
            _ => f64::from(self.rng.gen_range(0..100)),
        }
    }

    pub fn agg(&mut self) -> &'static str {
        self.pick(&AGGREGATIONS)
    }

    /// xFilesFactor: the interesting fixed values and random ones.
    pub fn xff(&mut self) -> f64 {
        match self.rng.gen_range(0..10) {
            0 => 0.0,
            1 => 0.3,
            2 => 1.0,
            3 => 0.5,
            4 => 0.1,
            5 => 0.7,
            _ => self.rng.gen_range(0.0..=1.0),
        }
    }

    /// A schema the reference accepts: 1–4 archives, each spp a multiple of the previous, retentions that
    /// need not be multiples of each other (60:100,300:30), specs sometimes with units or shuffled.
    pub fn schema(&mut self) -> Schema {
        let n = self.pick(&[1, 2, 2, 2, 3, 3, 4]);
        let mut spp: u32 = self.pick(&[1, 2, 5, 7, 10, 15, 30, 60, 60, 60]);
        let mut points: u32 = self.rng.gen_range(2..=40);
        let mut archives = vec![(spp, points)];
        while archives.len() < n {
            let factors: Vec<u32> = [2, 3, 4, 5, 6, 10, 12].into_iter().filter(|&f| f <= points).collect();
            if factors.is_empty() {
                break;
            }
            let factor = self.pick(&factors);
            let retention = spp * points;
            spp *= factor;
            points = retention / spp + 1 + self.rng.gen_range(0..=15);
            archives.push((spp, points));
        }
        let mut specs: Vec<String> = archives.iter().map(|&(s, p)| self.spec(s, p)).collect();
        if self.chance(0.2) {
            specs.shuffle(&mut self.rng);
        }
        Schema { archives, specs }
    }

    /// A spec string that whisper parses to exactly (spp, points).
    pub fn spec(&mut self, spp: u32, points: u32) -> String {
        let precision = match self.rng.gen_range(0..10) {
            0 if spp.is_multiple_of(3600) => format!("{}h", spp / 3600),
            1 | 2 if spp.is_multiple_of(60) => format!("{}{}", spp / 60, self.pick(&["m", "min", "minutes"])),
            3 => format!("{spp}s"),
            _ => spp.to_string(),
        };
        let duration = u64::from(spp) * u64::from(points);
        let count = match self.rng.gen_range(0..10) {
            0 => format!("{duration}s"),
            1 if duration % 60 == 0 => format!("{}m", duration / 60),
            2 if duration % 86400 == 0 => format!("{}d", duration / 86400),
            _ => points.to_string(),
        };
        format!("{precision}:{count}")
    }

    /// A schema the reference refuses, with the class it raises.
    pub fn invalid_schema(&mut self) -> Vec<String> {
        let bad: &[&[&str]] = &[
            &["60:10", "60:20"],
            &["60:10", "90:20"],
            &["60:100", "300:20"],
            &["60:4", "300:100"],
            &["10:6", "60:10", "60:20"],
            &["60:0", "300:10"],
            &["0:10", "60:10"],
            &["1mo:1d"],
            &["1M:1d"],
            &["60"],
            &["x:1"],
            &["0:1h"],
            &[],
        ];
        self.pick(bad).iter().map(|s| s.to_string()).collect()
    }

    /// A new schema for a file of `old`: unrelated, or `old` longer, shorter, finer, coarser, with an
    /// archive dropped or a coarser one added (some of these break create's rules: a refusal to compare).
    pub fn resized_schema(&mut self, old: &Schema) -> Schema {
        let mut archives = old.archives.clone();
        match self.rng.gen_range(0..8) {
            0 | 1 => return self.schema(),
            2 => {
                for a in &mut archives {
                    if self.rng.gen_bool(0.7) {
                        a.1 += self.rng.gen_range(1..=2 * a.1);
                    }
                }
            }
            3 => {
                for a in &mut archives {
                    if self.rng.gen_bool(0.7) {
                        a.1 = self.rng.gen_range(1..=a.1);
                    }
                }
            }
            4 => {
                let divisors: Vec<u32> =
                    [2, 3, 5, 10, 60].into_iter().filter(|&d| archives[0].0.is_multiple_of(d)).collect();
                let d = if divisors.is_empty() { 1 } else { self.pick(&divisors) };
                for a in &mut archives {
                    a.0 /= d;
                    a.1 = a.1 * d + self.rng.gen_range(0..=2);
                }
            }
            5 => {
                let f = self.pick(&[2, 3, 5, 10]);
                for a in &mut archives {
                    a.0 *= f;
                    a.1 = (a.1 / f).max(1) + self.rng.gen_range(0..=2);
                }
            }
            6 if archives.len() > 1 => {
                archives.remove(self.rng.gen_range(0..archives.len()));
            }
            _ => {
                let (spp, points) = *archives.last().unwrap();
                let coarser = spp * self.pick(&[2, 3, 4, 5, 6, 10]);
                archives.push((coarser, spp * points / coarser + 1 + self.rng.gen_range(0..=10)));
            }
        }
        let mut specs: Vec<String> = archives.iter().map(|&(s, p)| self.spec(s, p)).collect();
        if self.chance(0.2) {
            specs.shuffle(&mut self.rng);
        }
        archives.sort();
        Schema { archives, specs }
    }

    /// A whisper-resize op to `schema` at `now`: the file's xff and method or new ones, both migration
    /// modes, with or without a backup; rarely a spec list, method or xff whisper-resize refuses.
    pub fn resize_op(&mut self, file: &str, schema: &Schema, now: i64) -> Value {
        let retentions = match self.rng.gen_range(0..40) {
            // `[]` is a usage error of the script, not a refusal of the library: not generated.
            0 => self
                .pick(&[
                    vec!["60:10", "60:20"],
                    vec!["60:10", "90:20"],
                    vec!["60:100", "300:20"],
                    vec!["60:4", "300:100"],
                    vec!["1mo:1d"],
                    vec!["60"],
                    vec!["x:1"],
                    vec!["0:1h"],
                ])
                .into_iter()
                .map(str::to_owned)
                .collect(),
            _ => schema.specs.clone(),
        };
        let xff = match self.rng.gen_range(0..20) {
            0 => json!(self.pick(&[1.5, -0.1, 1.0000001])),
            1..=8 => fv(self.xff()),
            _ => Value::Null,
        };
        let agg = match self.rng.gen_range(0..30) {
            0 => json!(self.pick(&["avg", "Average", ""])),
            1..=12 => json!(self.agg()),
            _ => Value::Null,
        };
        json!({"op": "resize", "file": file, "retentions": retentions, "xff": xff, "agg": agg,
               "aggregate": self.chance(0.5), "nobackup": self.chance(0.25), "now": now})
    }

    /// A create op for `file`, valid or (rarely) not.
    pub fn create_op(&mut self, file: &str, schema: &Schema) -> Value {
        json!({
            "op": "create", "file": file, "retentions": schema.specs, "xff": fv(self.xff()),
            "agg": self.agg(), "sparse": self.chance(0.3),
        })
    }

    /// A timestamp around `now` for a file of this schema: in retention, at the archive boundaries
    /// (age == retention ± 1), aligned, recent, future, too old.
    pub fn timestamp(&mut self, schema: &Schema, now: i64) -> i64 {
        let max = schema.max_retention();
        let spp0 = schema.spp(0);
        let k = self.rng.gen_range(0..schema.archives.len());
        match self.rng.gen_range(0..100) {
            0..=44 => now - self.rng.gen_range(0..=max),
            45..=56 => now - schema.retention(k) + self.rng.gen_range(-1..=1),
            57..=66 => align(now - self.rng.gen_range(0..=max), schema.spp(k)),
            67..=78 => now - self.rng.gen_range(0..=3 * spp0),
            79..=86 => now + self.rng.gen_range(1..=3 * spp0),
            87..=93 => now - max - self.rng.gen_range(1..=max / 2 + 1),
            _ => now - max + self.rng.gen_range(-spp0..=spp0),
        }
    }

    /// An update_many batch: random points with duplicates (same raw time, same bucket), sometimes empty,
    /// sometimes a carbon-like contiguous tail, rarely a run of future points longer than archive 0 can
    /// hold (bucky refuses it; the reference corrupts the next archive) or a time beyond 2^32.
    pub fn batch(&mut self, schema: &Schema, now: i64) -> Vec<(i64, f64)> {
        let spp0 = schema.spp(0);
        let mut points: Vec<(i64, f64)> = Vec::new();
        match self.rng.gen_range(0..100) {
            0..=3 => return points,
            4 => {
                let n = 2 * i64::from(schema.archives[0].1) + self.rng.gen_range(1..=4);
                let start = align(now, spp0) + spp0;
                return (0..n).map(|i| (start + i * spp0, self.value())).collect();
            }
            5 => points.push((4_294_967_296 + self.rng.gen_range(0..1000), self.value())),
            6..=30 => {
                let n = self.rng.gen_range(1..=3 * i64::from(schema.archives[0].1).min(20));
                let newest = now - self.rng.gen_range(0..=2 * spp0);
                points.extend((0..n).map(|i| (newest - i * spp0 - self.rng.gen_range(0..spp0), self.value())));
            }
            _ => {}
        }
        let n = self.rng.gen_range(1..=25);
        for _ in 0..n {
            let t = if !points.is_empty() && self.chance(0.15) {
                self.pick(&points).0
            } else if !points.is_empty() && self.chance(0.1) {
                let t = self.pick(&points).0;
                align(t, spp0) + self.rng.gen_range(0..spp0)
            } else {
                self.timestamp(schema, now)
            };
            points.push((t, self.value()));
        }
        points.shuffle(&mut self.rng);
        points
    }

    /// A fetch op at `now`: random ranges (zero-length, from > until, in the future, beyond the retention,
    /// at the archive boundaries) and archive selection by precision (as digits or with a unit, present
    /// in the schema or not).
    pub fn fetch_op(&mut self, file: &str, schema: &Schema, now: i64) -> Value {
        let g = self;
        let max = schema.max_retention();
        let k = g.rng.gen_range(0..schema.archives.len());
        let from = match g.rng.gen_range(0..10) {
            0 => now - schema.retention(k) + g.rng.gen_range(-1..=1),
            1 => now + g.rng.gen_range(1..=100),
            2 => now - max - g.rng.gen_range(1..=1000),
            3 => align(now - g.rng.gen_range(0..=max), schema.spp(k)),
            _ => now - g.rng.gen_range(0..=max + max / 5),
        };
        let until = match g.rng.gen_range(0..10) {
            0..=2 => Value::Null,
            3 => json!(from),
            4 => json!(from - g.rng.gen_range(1..=100)),
            5 => json!(now + g.rng.gen_range(0..=100)),
            _ => json!(from + g.rng.gen_range(0..=max)),
        };
        let archive = match g.rng.gen_range(0..20) {
            0..=4 => json!(schema.spp(k).to_string()),
            5 if schema.spp(k) % 60 == 0 => json!(format!("{}m", schema.spp(k) / 60)),
            6 => json!(g.pick(&["7", "3600", "1", "0"])),
            _ => Value::Null,
        };
        json!({"op": "fetch", "file": file, "from": from, "until": until, "now": now, "archive": archive})
    }

    pub fn update_many_op(&mut self, file: &str, points: &[(i64, f64)], now: i64) -> Value {
        let points: Vec<Value> = points.iter().map(|&(t, v)| json!([t, fv(v)])).collect();
        json!({"op": "update_many", "file": file, "points": points, "now": now})
    }

    /// 1–4 random update_many batches, each with its own clock, ending at `end_now`.
    pub fn random_history(&mut self, file: &str, schema: &Schema, end_now: i64) -> Vec<Value> {
        let n = self.rng.gen_range(1..=4);
        let max = schema.max_retention();
        let mut nows: Vec<i64> = vec![end_now];
        for _ in 1..n {
            let last = *nows.last().unwrap();
            let step = if self.chance(0.1) {
                -self.rng.gen_range(0..=3 * schema.spp(0))
            } else {
                self.rng.gen_range(0..=max / 3 + 1)
            };
            nows.push(last - step);
        }
        nows.reverse();
        nows.into_iter()
            .map(|now| {
                let batch = self.batch(schema, now);
                self.update_many_op(file, &batch, now)
            })
            .collect()
    }
}

/// A deterministic "true" series that several replicas hold parts of.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    pub seed: u64,
    /// Allow 0.0 / -0.0 (gaps for carbonate).
    pub zeros: bool,
}

impl Truth {
    pub fn value(&self, t: i64) -> f64 {
        let mut x = self.seed ^ (t as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        x ^= x >> 31;
        match x % 100 {
            0..=3 if self.zeros => 0.0,
            4..=5 if self.zeros => -0.0,
            6 => f64::NAN,
            7 => f64::INFINITY,
            _ => ((x >> 8) % 2000) as f64 / 4.0 - 250.0 + if (x >> 40).is_multiple_of(2) { 0.1 } else { 0.0 },
        }
    }
}

/// How a replica's history samples the truth.
#[derive(Debug, Clone)]
pub struct Sampling {
    pub truth: Truth,
    /// Probability that a slot is written at all.
    pub density: f64,
    /// Probability that a written value disagrees with the truth.
    pub noise: f64,
    /// Time ranges (inclusive) never written.
    pub gaps: Vec<(i64, i64)>,
}

impl Gen {
    /// Random gaps inside the last `max_retention` before `now`.
    pub fn gaps(&mut self, schema: &Schema, now: i64) -> Vec<(i64, i64)> {
        let max = schema.max_retention();
        (0..self.rng.gen_range(0..=3))
            .map(|_| {
                let end = now - self.rng.gen_range(0..=max);
                (end - self.rng.gen_range(0..=max / 3), end)
            })
            .collect()
    }

    pub fn sampling(&mut self, truth: Truth, schema: &Schema, now: i64, noise: f64) -> Sampling {
        Sampling { truth, density: self.rng.gen_range(0.4..=1.0), noise, gaps: self.gaps(schema, now) }
    }

    /// A replica's history of `file`: 1–4 update_many batches at increasing clocks ending at `end_now`, each
    /// either a backfill of every archive's range at that archive's resolution or a recent tail, with the
    /// values of `sampling.truth` except in its gaps.
    pub fn replica_history(&mut self, file: &str, schema: &Schema, sampling: &Sampling, end_now: i64) -> Vec<Value> {
        let n = self.rng.gen_range(1..=4);
        let max = schema.max_retention();
        let mut nows = vec![end_now];
        for _ in 1..n {
            let last = *nows.last().unwrap();
            nows.push(last - self.rng.gen_range(0..=max / 4 + 1));
        }
        nows.reverse();
        let mut ops = Vec::new();
        for (j, now) in nows.into_iter().enumerate() {
            let mut points = Vec::new();
            if j == 0 || self.chance(0.3) {
                let mut newer = now - self.rng.gen_range(0..=schema.spp(0));
                for k in 0..schema.archives.len() {
                    let spp = schema.spp(k);
                    let mut t = align(newer, spp);
                    while t > now - schema.retention(k) {
                        points.push(t);
                        t -= spp;
                    }
                    newer = t;
                }
            } else {
                let n = self.rng.gen_range(1..=12);
                let newest = align(now, schema.spp(0));
                points.extend((0..n).map(|i| newest - i * schema.spp(0)));
            }
            let mut batch: Vec<(i64, f64)> = Vec::new();
            for t in points {
                if self.chance(sampling.density) && !sampling.gaps.iter().any(|&(a, b)| a <= t && t <= b) {
                    let v = if self.chance(sampling.noise) { self.value() } else { sampling.truth.value(t) };
                    batch.push((t, v));
                }
            }
            if !batch.is_empty() {
                ops.push(self.update_many_op(file, &batch, now));
            }
        }
        ops
    }

    /// A fill op at a float clock (fractional half the time, as carbonate's time.time()).
    pub fn fill_op(&mut self, src: &str, dst: &str, now: i64, window: bool) -> Value {
        let now_f =
            if self.chance(0.5) { now as f64 + f64::from(self.rng.gen_range(1..10u32)) / 10.0 } else { now as f64 };
        let mut op = json!({"op": "fill", "src": src, "dst": dst, "now": now_f, "startFrom": null, "endAt": 0,
                            "overwrite": false, "lock": self.chance(0.3)});
        if window {
            op["startFrom"] = json!(now_f - f64::from(self.rng.gen_range(0..2000u32)));
            op["endAt"] = json!(now_f - f64::from(self.rng.gen_range(0..200_000u32)));
        }
        op
    }
}
