//! End-to-end tests of `bucky whisper …`, the real binary: random cases run through the CLI and through the
//! reference (tests/oracle/whisper_oracle.py) must leave byte-identical files and print the same fetch
//! results; every refusal exits 1 (bad file or value) or 2 (usage) with one line on stderr and changes
//! nothing on disk (no 0-byte file, no temp file left behind).

use std::path::{Path, PathBuf};

use crate::support::bucky;
use rand::Rng;
use serde_json::{json, Value};
use test_support::whisper_oracle::*;

const NOW: i64 = 1_700_000_000;

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A float as `bucky whisper update` reads it (Rust's f64 syntax: NaN, inf, -inf, -0.0).
fn text(v: f64) -> String {
    format!("{v:?}")
}

/// The fetch values of the CLI's JSON, parsed exactly (std's correctly rounded parser, not a JSON float
/// parser), as bit patterns; `None` for null.
fn fetch_bits(stdout: &str) -> Option<Vec<Option<String>>> {
    let start = stdout.find("\"values\":[")? + "\"values\":[".len();
    let body = &stdout[start..start + stdout[start..].find(']')?];
    Some(
        body.split(',')
            .filter(|t| !t.trim().is_empty())
            .map(|t| match t.trim() {
                "null" => None,
                "\"NaN\"" => Some("NaN".to_owned()), // JSON cannot carry a NaN's sign or payload
                "\"Infinity\"" => Some(bits(f64::INFINITY)),
                "\"-Infinity\"" => Some(bits(f64::NEG_INFINITY)),
                n => Some(bits(n.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {n}")))),
            })
            .collect(),
    )
}

/// Performs one oracle op with the CLI in `dir`; answers like the oracle (errors as `{"error": "exit N"}`).
fn run_cli_op(op: &Value, dir: &Path) -> Value {
    let path = |key: &str| dir.join(op[key].as_str().unwrap());
    let num = |v: &Value| v.to_string();
    let (args, stdin): (Vec<String>, String) = match op["op"].as_str().unwrap() {
        "create" => {
            let mut a = vec!["create".into(), s(&path("file")).into()];
            a.extend(op["retentions"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()));
            a.extend([
                "--agg".into(),
                op["agg"].as_str().unwrap().into(),
                "--xff".into(),
                format!("{}", vf(&op["xff"])),
            ]);
            if op["sparse"].as_bool() == Some(true) {
                a.push("--sparse".into());
            }
            (a, String::new())
        }
        "update_many" => {
            let lines: String =
                op["points"].as_array().unwrap().iter().map(|p| format!("{} {}\n", p[0], text(vf(&p[1])))).collect();
            (vec!["update".into(), s(&path("file")).into(), "--now".into(), num(&op["now"])], lines)
        }
        "update" => (
            vec!["update".into(), s(&path("file")).into(), "--now".into(), num(&op["now"]), "--single".into()],
            format!("{} {}\n", op["t"], text(vf(&op["v"]))),
        ),
        "fetch" => {
            let until = if op["until"].is_null() { "now".to_owned() } else { num(&op["until"]) };
            let mut a =
                vec!["fetch".into(), s(&path("file")).into(), num(&op["from"]), until, "--now".into(), num(&op["now"])];
            if let Some(spec) = op["archive"].as_str() {
                a.extend(["--archive".into(), spec.into()]);
            }
            (a, String::new())
        }
        "merge" => {
            let mut a =
                vec!["merge".into(), s(&path("src")).into(), s(&path("dst")).into(), "--now".into(), num(&op["now"])];
            if !op["from"].is_null() {
                a.extend(["--from".into(), num(&op["from"])]);
            }
            if !op["to"].is_null() {
                a.extend(["--until".into(), num(&op["to"])]);
            }
            (a, String::new())
        }
        "fill" => {
            let mut a = vec![
                "fill".into(),
                s(&path("src")).into(),
                s(&path("dst")).into(),
                "--now".into(),
                num(&op["now"]),
                "--carbonate".into(),
            ];
            if op["overwrite"].as_bool() == Some(true) {
                a.push("--overwrite".into());
            }
            if !op["startFrom"].is_null() {
                a.extend(["--start-from".into(), num(&op["startFrom"])]);
            }
            a.extend(["--end-at".into(), num(&op["endAt"])]);
            (a, String::new())
        }
        "info" => (vec!["info".into(), s(&path("file")).into(), "--json".into()], String::new()),
        "resize" => (resize_args(op, s(&path("file"))), String::new()),
        "set_aggregation" => {
            let (file, agg) = (s(&path("file")).to_owned(), op["agg"].as_str().unwrap().to_owned());
            let mut a: Vec<String> = if op["modify"].as_bool() == Some(true) {
                vec!["modify".into(), "-f".into(), file, "-agg".into(), agg]
            } else {
                vec!["set-aggregation".into(), file, agg]
            };
            if !op["xff"].is_null() {
                let xff = vf(&op["xff"]).to_string();
                a.extend(if op["positional"].as_bool() == Some(true) {
                    vec![xff]
                } else {
                    vec![format!("--xff={xff}")]
                });
            }
            (a, String::new())
        }
        other => panic!("no CLI for {other}"),
    };
    let mut full = vec!["whisper".to_owned()];
    full.extend(args);
    let target = written_file(op).map(|f| dir.join(f));
    let before = target.as_deref().map(|p| std::fs::read(p).map_or(Value::Null, |b| json!(hex(&b))));
    let out = bucky(&full.iter().map(String::as_str).collect::<Vec<_>>(), &stdin);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let mut result = if out.status.success() {
        match op["op"].as_str().unwrap() {
            "fetch" => {
                let parsed: Value =
                    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("fetch printed {stdout:?}: {e}"));
                if parsed.is_null() {
                    json!({"result": null})
                } else {
                    let bits = fetch_bits(&stdout).expect("values in the fetch JSON");
                    let mut r = parsed.clone();
                    r["bits"] = json!(bits);
                    json!({"result": r})
                }
            }
            "info" => json!({"info": serde_json::from_str::<Value>(&stdout).expect("info JSON")}),
            "resize" => {
                let backup = std::fs::read(whisper::backup_path(&path("file"))).map_or(Value::Null, |b| json!(hex(&b)));
                json!({"result": {"backup": backup, "files": file_names(dir)}})
            }
            // "Updated aggregation method: PATH (OLD -> NEW)", as whisper-set-aggregation-method prints it.
            "set_aggregation" => {
                let old = stdout.rsplit_once(" (").and_then(|(_, rest)| rest.split_once(" -> ")).map(|(old, _)| old);
                json!({"result": old.unwrap_or_else(|| panic!("set-aggregation printed {stdout:?}"))})
            }
            _ => json!({}),
        }
    } else {
        json!({"error": format!("exit {:?}", out.status.code()), "message": stderr, "args": full})
    };
    if let Some(target) = target {
        result["before"] = before.unwrap();
        result["bytes"] = std::fs::read(&target).map_or(Value::Null, |b| json!(hex(&b)));
    }
    result
}

/// `bucky whisper resize` for a resize op, in whisper-resize's spellings or ours; or, when the op says
/// `"modify_index": N`, `bucky whisper modify` of that archive in buckytools' single-dash flags (the op's
/// retentions are then the file's own with archive N replaced, which is what the oracle resizes to).
fn resize_args(op: &Value, file: &str) -> Vec<String> {
    let now = op["now"].to_string();
    if let Some(index) = op["modify_index"].as_u64() {
        let spec = op["retentions"][index as usize].as_str().unwrap().to_owned();
        return ["modify", "-f", file, "-index", &index.to_string(), "-retention", &spec, "-now", &now]
            .map(str::to_owned)
            .to_vec();
    }
    let whisper_spelling = op["whisper_spelling"].as_bool() == Some(true);
    let mut a = vec!["resize".to_owned(), file.to_owned()];
    a.extend(op["retentions"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().to_owned()));
    a.extend(["--now".to_owned(), now]);
    if !op["xff"].is_null() {
        a.push(format!("--{}={}", if whisper_spelling { "xFilesFactor" } else { "xff" }, vf(&op["xff"])));
    }
    if let Some(agg) = op["agg"].as_str() {
        a.push(format!("--{}={agg}", if whisper_spelling { "aggregationMethod" } else { "agg" }));
    }
    for flag in ["aggregate", "nobackup"] {
        if op[flag].as_bool() == Some(true) {
            a.push(format!("--{flag}"));
        }
    }
    a
}

/// Judges the CLI's answers against the oracle's: identical bytes and fetch results; refusals only where the
/// reference refuses, each with exit code 1, one stderr line and the file unchanged.
fn compare_cli(ops: &[Value], ours: &[Value], theirs: &[Value]) -> Result<(), String> {
    for (i, op) in ops.iter().enumerate() {
        let (o, t) = (&ours[i], &theirs[i]);
        match (o.get("error"), t.get("error")) {
            (None, None) => {
                if written_file(op).is_some() && o["bytes"] != t["bytes"] {
                    return Err(format!("op {i} {op}: bytes differ\n{}", describe_bytes(&o["bytes"], &t["bytes"])));
                }
                if let Some(r) = t.get("result").filter(|_| op["op"] != "info") {
                    let mut r = r.clone();
                    if let Some(bits) = r.get_mut("bits").and_then(Value::as_array_mut) {
                        for b in bits.iter_mut().filter(|b| {
                            b.as_str().is_some_and(|h| f64::from_bits(u64::from_str_radix(h, 16).unwrap()).is_nan())
                        }) {
                            *b = json!("NaN");
                        }
                    }
                    compare_result(i, &o["result"], &r).map_err(|f| format!("op {i} {op}: {}", f.detail))?;
                }
                if let Some(info) = t.get("result").filter(|_| op["op"] == "info") {
                    let ours = &o["info"];
                    let same = ours["maxRetention"] == info["maxRetention"]
                        && ours["aggregationMethod"] == info["aggregationMethod"]
                        && ours["xFilesFactor"].as_f64() == info["xFilesFactor"].as_f64()
                        && ours["archives"].as_array().map(Vec::len) == info["archives"].as_array().map(Vec::len);
                    if !same {
                        return Err(format!("op {i}: info differs: ours {ours}, theirs {info}"));
                    }
                }
            }
            (Some(code), Some(_)) => {
                check_refusal(op, o, code)?;
                if written_file(op).is_some() && t["bytes"] != o["before"] {
                    return Ok(()); // the reference half-wrote: histories differ from here on
                }
            }
            (Some(code), None) if overflow_refused(o) => {
                // A deliberate difference (README): whisper 1.1.10 writes such a run past the archive's end,
                // into the next archive or beyond the file; we refuse and change nothing.
                check_refusal(op, o, code)?;
                return Ok(()); // the reference corrupted its file: histories differ from here on
            }
            (Some(code), None) => {
                return Err(format!(
                    "op {i} {op}: bucky refused ({code}: {}) what the reference accepts",
                    o["message"]
                ));
            }
            (None, Some(class)) => {
                return Err(format!(
                    "op {i} {op}: bucky accepted what the reference refuses ({class}: {})",
                    t["message"]
                ));
            }
        }
    }
    Ok(())
}

/// Whether our refusal is the one of a run of future points longer than its archive can hold
/// (`refusing to write N consecutive points into an archive of M points`, with N > M).
fn overflow_refused(o: &Value) -> bool {
    let message = o["message"].as_str().unwrap_or_default();
    let Some(rest) = message.split("refusing to write ").nth(1) else { return false };
    let numbers: Vec<u64> = rest.split(' ').filter_map(|w| w.parse().ok()).take(2).collect();
    message.contains("two full cycles of future timestamps")
        && matches!(numbers[..], [points, capacity] if points > capacity)
}

fn check_refusal(op: &Value, o: &Value, code: &Value) -> Result<(), String> {
    let message = o["message"].as_str().unwrap_or_default();
    if code != "exit Some(1)" && code != "exit Some(2)" {
        return Err(format!("{op}: refused with {code}, not exit 1 or 2: {message}"));
    }
    if message.trim_end().lines().count() != 1 {
        return Err(format!("{op}: stderr is not one line: {message:?}"));
    }
    if written_file(op).is_some() && o["bytes"] != o["before"] {
        return Err(format!("{op}: the refusal changed the file"));
    }
    Ok(())
}

/// Random cases: create, replica histories, single updates, fetches, merge or carbonate fill, info.
#[test]
fn cli_matches_the_reference() {
    let seed = master_seed();
    let count = case_count(40).min(200);
    let cases: Vec<(usize, Vec<Value>)> = (0..count)
        .map(|i| {
            let mut g = Gen::new(case_rng(seed, "cli", i));
            let schema = g.schema();
            let other = if g.chance(0.7) { schema.clone() } else { g.schema() };
            let truth = Truth { seed: g.rng.gen(), zeros: true };
            let now = g.now(&schema);
            let mut ops = vec![g.create_op("a", &schema), g.create_op("b", &other)];
            let (sa, sb) = (g.sampling(truth, &schema, now, 0.1), g.sampling(truth, &other, now, 0.1));
            ops.extend(g.replica_history("a", &schema, &sa, now));
            ops.extend(g.replica_history("b", &other, &sb, now));
            for _ in 0..2 {
                let t = g.timestamp(&schema, now);
                ops.push(json!({"op": "update", "file": "a", "t": t, "v": fv(g.value()), "now": now}));
            }
            for _ in 0..3 {
                let at = now + g.rng.gen_range(0..=schema.spp(0) * 5);
                ops.push(g.fetch_op("a", &schema, at));
            }
            let later = now + g.rng.gen_range(0..=schema.max_retention() / 4 + 1);
            if g.chance(0.5) {
                let from = if g.chance(0.5) {
                    Value::Null
                } else {
                    json!(later - g.rng.gen_range(0..=schema.max_retention()))
                };
                ops.push(json!({"op": "merge", "src": "a", "dst": "b", "from": from, "to": null, "now": later}));
            } else {
                let window = g.chance(0.3);
                let mut fill = g.fill_op("a", "b", later, window);
                fill["overwrite"] = json!(g.chance(0.1));
                ops.push(fill);
            }
            ops.push(g.fetch_op("b", &other, later));
            ops.push(json!({"op": "info", "file": "b"}));
            (i, ops)
        })
        .collect();
    judge_cli_cases(seed, &cases, |dir, _, _| check_dump(&dir.join("b")));
}

/// Runs `cases` through the oracle and through the binary (each in its own directory), calls
/// `each(dir, ops, our results)` after every case, and fails with the first disagreements.
fn judge_cli_cases(seed: u64, cases: &[(usize, Vec<Value>)], mut each: impl FnMut(&Path, &[Value], &[Value])) {
    let batch: Vec<Value> = cases.iter().map(|(i, ops)| json!({"id": i, "ops": ops})).collect();
    let theirs = run_oracle(&batch);
    let scratch = scratch_dir();
    let mut failures = Vec::new();
    for ((i, ops), answer) in cases.iter().zip(&theirs) {
        let dir = scratch.path().join(format!("case-{i}"));
        std::fs::create_dir(&dir).unwrap();
        let ours: Vec<Value> = ops.iter().map(|op| run_cli_op(op, &dir)).collect();
        if let Err(e) = compare_cli(ops, &ours, answer["results"].as_array().unwrap()) {
            failures.push(format!("case {i}: {e}\nops: {}", Value::Array(ops.clone())));
        }
        each(&dir, ops, &ours);
    }
    assert!(
        failures.is_empty(),
        "{} of {} CLI cases disagree with the reference (BUCKY_ORACLE_SEED={seed}):\n{}",
        failures.len(),
        cases.len(),
        failures.iter().take(3).cloned().collect::<Vec<_>>().join("\n\n")
    );
}

/// resize, set-aggregation and modify through the binary against whisper-resize.py and
/// whisper.setAggregationMethod: random histories, then one change (a resize in either spelling, buckytools'
/// modify of one archive, set-aggregation with a positional or flag xff, or modify --agg), sometimes a
/// second resize or method change, then writes, a fetch and info. Same bytes, same .bak, same refusals.
#[test]
fn cli_resize_and_aggregation_match_the_reference() {
    let seed = master_seed();
    let count = case_count(40).min(200);
    let cases: Vec<(usize, Vec<Value>)> = (0..count)
        .map(|i| {
            let mut g = Gen::new(case_rng(seed, "cli-resize", i));
            let schema = g.schema();
            let now = g.now(&schema);
            let mut ops = vec![g.create_op("a", &schema)];
            let truth = Truth { seed: g.rng.gen(), zeros: true };
            let sampling = g.sampling(truth, &schema, now, 0.2);
            ops.extend(g.replica_history("a", &schema, &sampling, now));
            let at = now + g.rng.gen_range(0..=schema.max_retention() / 3 + 1);
            let mut current = schema.clone();
            let change = match g.rng.gen_range(0..4) {
                0 => {
                    current = g.resized_schema(&schema);
                    let mut op = g.resize_op("a", &current, at);
                    op["whisper_spelling"] = json!(g.chance(0.5));
                    op
                }
                1 => {
                    // modify -index N -retention R: archive N longer, shorter or of another precision.
                    let index = g.rng.gen_range(0..schema.archives.len());
                    let (spp, points) = schema.archives[index];
                    current.archives[index] = match g.rng.gen_range(0..3) {
                        0 => (spp, points + g.rng.gen_range(1..=points)),
                        1 => (spp, g.rng.gen_range(1..=points)),
                        _ => (spp * 2, points),
                    };
                    current.specs = current.archives.iter().map(|&(s, p)| format!("{s}:{p}")).collect();
                    json!({"op": "resize", "file": "a", "retentions": current.specs, "xff": null, "agg": null,
                           "aggregate": false, "nobackup": false, "now": at, "modify_index": index})
                }
                kind => {
                    let xff = if kind == 2 && g.chance(0.6) { fv(g.xff()) } else { Value::Null };
                    let agg = if g.chance(0.05) { "median" } else { g.agg() };
                    json!({"op": "set_aggregation", "file": "a", "agg": agg, "xff": xff, "modify": kind == 3,
                           "positional": g.chance(0.5)})
                }
            };
            ops.push(change);
            if g.chance(0.3) {
                let next = g.resized_schema(&current);
                let mut again = g.resize_op("a", &next, at);
                again["whisper_spelling"] = json!(g.chance(0.5));
                ops.push(again);
            }
            let later = at + g.rng.gen_range(0..=current.spp(0) * 3);
            // Scattered points (g.batch can make a run of future points that bucky deliberately refuses).
            let batch: Vec<(i64, f64)> =
                (0..g.rng.gen_range(1..=10)).map(|_| (g.timestamp(&current, later), g.value())).collect();
            ops.push(g.update_many_op("a", &batch, later));
            ops.push(g.fetch_op("a", &current, later));
            ops.push(json!({"op": "info", "file": "a"}));
            (i, ops)
        })
        .collect();
    let mut changed: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    judge_cli_cases(seed, &cases, |_, ops, ours| {
        for (op, _) in ops.iter().zip(ours).filter(|(_, o)| o.get("error").is_none() && o["before"] != o["bytes"]) {
            let command = match (op["op"].as_str(), op["modify_index"].is_null(), op["modify"].as_bool()) {
                (Some("resize"), true, _) => "resize",
                (Some("resize"), false, _) => "modify --index",
                (Some("set_aggregation"), _, Some(true)) => "modify --agg",
                (Some("set_aggregation"), _, _) => "set-aggregation",
                _ => continue,
            };
            *changed.entry(command).or_default() += 1;
        }
    });
    eprintln!(
        "cli_resize_and_aggregation_match_the_reference: {count} cases; commands that changed the file: {changed:?}"
    );
}

/// `dump --json` lists, per archive, every slot with a non-zero timestamp sorted by time: checked against
/// the file's bytes (which the oracle comparison vouches for) decoded here.
fn check_dump(path: &Path) {
    let Ok(bytes) = std::fs::read(path) else { return };
    let out = bucky(&["whisper", "dump", s(path), "--json"], "");
    assert!(out.status.success(), "dump failed: {}", String::from_utf8_lossy(&out.stderr));
    let dumped: Value = serde_json::from_slice(&out.stdout).expect("dump JSON");
    let word = |at: usize| u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap());
    for a in 0..word(12) as usize {
        let (offset, points) = (word(16 + 12 * a) as usize, word(24 + 12 * a) as usize);
        let mut expected: Vec<(u32, String)> = (0..points)
            .map(|i| offset + 12 * i)
            .filter(|&at| word(at) != 0)
            .map(|at| (word(at), bits(f64::from_be_bytes(bytes[at + 4..at + 12].try_into().unwrap()))))
            .collect();
        expected.sort_by_key(|p| p.0);
        let got: Vec<u32> = dumped["data"][a]
            .as_array()
            .expect("data per archive")
            .iter()
            .map(|p| p[0].as_u64().unwrap() as u32)
            .collect();
        assert_eq!(got, expected.iter().map(|p| p.0).collect::<Vec<_>>(), "dump of archive {a} of {}", path.display());
    }
}

// ---- refusals ------------------------------------------------------------------------------------------

/// Everything in `dir` with its bytes, to prove that a refusal changed nothing (no new 0-byte or temp file).
fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap_or_default();
            (p, b)
        })
        .collect();
    files.sort();
    files
}

/// Runs `bucky whisper ARGS` and checks the refusal: exit `code`, one stderr line, nothing changed in `dir`.
fn refuse(dir: &Path, code: i32, args: &[&str], stdin: &str) {
    let before = snapshot(dir);
    let mut full = vec!["whisper"];
    full.extend_from_slice(args);
    let out = bucky(&full, stdin);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "bucky {full:?}: expected exit {code}; stderr: {stderr}");
    if code == 1 {
        assert_eq!(stderr.trim_end().lines().count(), 1, "bucky {full:?}: stderr is not one line: {stderr:?}");
    }
    assert!(!stderr.trim().is_empty(), "bucky {full:?}: no message");
    assert_eq!(snapshot(dir), before, "bucky {full:?} changed the directory");
}

/// Runs `bucky whisper ARGS`, which must succeed; returns its stdout.
fn ok(args: &[&str], stdin: &str) -> String {
    let mut full = vec!["whisper"];
    full.extend_from_slice(args);
    let out = bucky(&full, stdin);
    assert!(out.status.success(), "bucky {full:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn refusals_change_nothing() {
    let dir = scratch_dir();
    let d = dir.path();
    let a = d.join("a.wsp");
    let b = d.join("b.wsp");
    let (a_s, b_s) = (s(&a), s(&b));
    let now = NOW.to_string();
    // create: bad method, xff out of range or NaN, bad or invalid retentions, zero-point archive: nothing
    // is created (whisper.py leaves a 0-byte file for the first two).
    let bad_values: &[&[&str]] = &[
        &["create", a_s, "60:10", "--agg", "median"],
        &["create", a_s, "60:10", "--xff", "1.5"],
        &["create", a_s, "60:10", "--xff=-0.1"],
        &["create", a_s, "60:10", "--xff", "NaN"],
        &["create", a_s, "60:10", "60:20"],
        &["create", a_s, "60:10", "90:20"],
        &["create", a_s, "1mo:1d"],
        &["create", a_s, "60:0"],
        &["create", a_s, "1m:30s"],
    ];
    for args in bad_values {
        let out = bucky(&[&["whisper"], *args].concat(), "");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(matches!(out.status.code(), Some(1) | Some(2)), "{args:?}: exit {:?}", out.status.code());
        assert_eq!(stderr.trim_end().lines().count(), 1, "{args:?}: {stderr:?}");
        assert!(snapshot(d).is_empty(), "{args:?} left {:?}", snapshot(d));
    }
    // Usage errors: exit 2.
    refuse(d, 2, &["create", a_s], "");
    refuse(d, 2, &["create", a_s, "60:10", "--bogus"], "");
    refuse(d, 2, &["fetch", a_s], "");
    refuse(d, 2, &["update", a_s, "--now", "soon"], "");
    refuse(d, 2, &["frobnicate"], "");
    // Missing files: exit 1, nothing created.
    refuse(d, 1, &["info", a_s], "");
    refuse(d, 1, &["fetch", a_s, "0", "now", "--now", &now], "");
    refuse(d, 1, &["update", a_s, "--now", &now], &format!("{NOW} 1\n"));
    refuse(d, 1, &["merge", a_s, b_s, "--now", &now], "");
    ok(&["create", a_s, "60:10", "300:12", "--agg", "sum"], "");
    ok(&["update", a_s, "--now", &now], &format!("{NOW} 1\n{} 2\n", NOW - 60));
    // Existing file: create refuses and keeps it.
    refuse(d, 1, &["create", a_s, "60:10"], "");
    // A bad line refuses the whole batch.
    let out = bucky(&["whisper", "update", a_s, "--now", &now], format!("{NOW} 5\nnot a point\n"));
    assert!(matches!(out.status.code(), Some(1) | Some(2)), "bad line: exit {:?}", out.status.code());
    // update --single of a future point: TimestampNotCovered, nothing written.
    refuse(d, 1, &["update", a_s, "--now", &now, "--single"], &format!("{} 1\n", NOW + 60));
    // fetch from > until: InvalidTimeInterval; archive precision not in the file.
    refuse(d, 1, &["fetch", a_s, &(NOW - 10).to_string(), &(NOW - 100).to_string(), "--now", &now], "");
    refuse(d, 1, &["fetch", a_s, &(NOW - 100).to_string(), "now", "--now", &now, "--archive", "7"], "");
    // merge of unlike layouts: nothing changes.
    ok(&["create", b_s, "60:11"], "");
    refuse(d, 1, &["merge", a_s, b_s, "--now", &now], "");
    // 2.5 archive cycles of future points into 60:10: the reference corrupts the next archive; bucky refuses.
    let future: String = (1..=25).map(|i| format!("{} {i}\n", NOW + 60 * i)).collect();
    refuse(d, 1, &["update", a_s, "--now", &now], &future);
    // Corrupt and truncated files: every command refuses with exit 1 and touches nothing.
    let bytes = std::fs::read(&a).unwrap();
    for (name, broken) in
        [("truncated", bytes[..bytes.len() - 12].to_vec()), ("garbage", vec![0xff; 100]), ("empty", vec![])]
    {
        let c = d.join(format!("{name}.wsp"));
        std::fs::write(&c, &broken).unwrap();
        let c_s = s(&c);
        refuse(d, 1, &["info", c_s], "");
        refuse(d, 1, &["dump", c_s], "");
        refuse(d, 1, &["fetch", c_s, "0", "now", "--now", &now], "");
        refuse(d, 1, &["update", c_s, "--now", &now], &format!("{NOW} 1\n"));
        refuse(d, 1, &["merge", a_s, c_s, "--now", &now], "");
        refuse(d, 1, &["fill", a_s, c_s, "--now", &now], "");
        refuse(d, 1, &["fill", c_s, a_s, "--now", &now, "--carbonate"], "");
        refuse(d, 1, &["resize", c_s, "60:20", "--now", &now], "");
        refuse(d, 1, &["resize", c_s, "60:20", "--now", &now, "--aggregate", "--nobackup"], "");
        refuse(d, 1, &["set-aggregation", c_s, "sum"], "");
        refuse(d, 1, &["modify", "-f", c_s, "-index", "0", "-retention", "1m:1h"], "");
        refuse(d, 1, &["modify", "-f", c_s, "-agg", "sum"], "");
        std::fs::remove_file(&c).unwrap();
    }
    // fill into itself is refused.
    refuse(d, 1, &["fill", a_s, a_s, "--now", &now], "");
}

/// The header's retentions and method, as `info --json` prints them.
fn layout(path: &Path) -> (Vec<(u64, u64)>, String, f64) {
    let info: Value = serde_json::from_str(&ok(&["info", s(path), "--json"], "")).unwrap();
    let archives = info["archives"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["secondsPerPoint"].as_u64().unwrap(), a["points"].as_u64().unwrap()))
        .collect();
    (archives, info["aggregationMethod"].as_str().unwrap().to_owned(), info["xFilesFactor"].as_f64().unwrap())
}

/// resize, modify and set-aggregation on disk: what ends up in PATH and PATH.bak, what they print, and
/// refusals (bad input, a broken file, a lock held by another writer) that leave the directory as it was.
#[test]
fn resize_modify_and_set_aggregation_keep_backups_and_refuse_cleanly() {
    let dir = scratch_dir();
    let d = dir.path();
    let a = d.join("a.wsp");
    let (a_s, bak) = (s(&a), whisper::backup_path(&a));
    let now = NOW.to_string();
    let read = |p: &Path| std::fs::read(p).unwrap();
    let names = || {
        snapshot(d).into_iter().map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned()).collect::<Vec<_>>()
    };
    ok(&["create", a_s, "60:10", "300:12", "--agg", "sum", "--xff", "0"], "");
    ok(&["update", a_s, "--now", &now], &(0..20).map(|i| format!("{} {i}\n", NOW - 60 * i)).collect::<String>());

    // resize: the original becomes a.wsp.bak, the data moves over.
    let original = read(&a);
    let printed = ok(&["resize", a_s, "60:20", "600:10", "--now", &now], "");
    assert_eq!(
        printed,
        format!(
            "Resized {a_s}: 60:10,300:12 sum xff 0 -> 60:20,600:10 sum xff 0, original kept as {}\n",
            bak.display()
        )
    );
    assert_eq!(read(&bak), original);
    assert_eq!(names(), ["a.wsp", "a.wsp.bak"]);
    assert_eq!(layout(&a).0, [(60, 20), (600, 10)]);
    let fetched = ok(&["fetch", a_s, &(NOW - 120).to_string(), "--now", &now], "");
    assert!(fetched.contains("\"values\":[1.0,0.0]"), "{fetched}");

    // modify -index 1 (buckytools' flags): archive 1 only; the previous file is the new backup.
    let before = read(&a);
    ok(&["modify", "-f", a_s, "-index", "1", "-retention", "10m:2d", "-now", &now], "");
    assert_eq!(layout(&a).0, [(60, 20), (600, 288)]);
    assert_eq!(read(&bak), before);

    // modify -agg: the method changes in place, stored values stay; the previous file is the backup.
    let before = read(&a);
    let printed = ok(&["modify", "-f", a_s, "-agg", "max"], "");
    assert_eq!(
        printed,
        format!("Updated aggregation method: {a_s} (sum -> max), original kept as {}\n", bak.display())
    );
    assert_eq!(read(&bak), before);
    assert_eq!(read(&a)[16..], before[16..]);
    assert_eq!(layout(&a).1, "max");

    // set-aggregation: whisper-set-aggregation-method's line and positional xff; no backup.
    let backup_before = read(&bak);
    let printed = ok(&["set-aggregation", a_s, "last", "0.25"], "");
    assert_eq!(printed, format!("Updated aggregation method: {a_s} (max -> last)\n"));
    assert_eq!(layout(&a), (vec![(60, 20), (600, 288)], "last".to_owned(), 0.25));
    assert_eq!(read(&bak), backup_before);

    // Refusals: the exit code, one line on stderr, and nothing in the directory changes.
    let missing = d.join("missing.wsp");
    for (code, args) in [
        (1, vec!["resize", a_s, "60:10", "90:20"]),
        (1, vec!["resize", a_s, "60:20", "--xff", "1.5"]),
        (1, vec!["resize", a_s, "60:20", "--xFilesFactor", "nan"]),
        (1, vec!["resize", s(&missing), "60:10"]),
        (2, vec!["resize", a_s, "1mo:1d"]),
        (2, vec!["resize", a_s, "60:20", "--aggregationMethod", "median"]),
        (2, vec!["resize", a_s]),
        (1, vec!["modify", "-f", a_s, "-index", "2", "-retention", "1m:1h"]),
        (1, vec!["modify", "-f", a_s, "-index", "0", "-retention", "7s:1h"]),
        (2, vec!["modify", "-f", a_s]),
        (2, vec!["modify", "-f", a_s, "-index", "0"]),
        (2, vec!["modify", "-f", a_s, "-index", "0", "-retention", "1m:1h", "-agg", "sum"]),
        (2, vec!["modify", "-f", a_s, "-agg", "median"]),
        (2, vec!["set-aggregation", a_s, "median"]),
        (1, vec!["set-aggregation", a_s, "sum", "--xff", "2"]),
        (1, vec!["set-aggregation", a_s, "sum", "nan"]),
        (1, vec!["set-aggregation", s(&missing), "sum"]),
    ] {
        refuse(d, code, &args, "");
    }
    // Another writer (carbon-cache with WHISPER_LOCK_WRITES) holds the lock: give up, change nothing.
    let holder = whisper::WhisperFile::open(&a).unwrap();
    let held = holder.lock(whisper::LockMode::Exclusive, std::time::Duration::ZERO).unwrap();
    refuse(d, 1, &["resize", a_s, "60:40", "--now", &now, "--lock-timeout", "0"], "");
    refuse(d, 1, &["set-aggregation", a_s, "sum", "--lock-timeout", "0"], "");
    refuse(d, 1, &["modify", "-f", a_s, "-agg", "sum", "--lock-timeout", "0"], "");
    drop(held);

    // buckytools scripts call it `bucky modify`.
    let before = read(&a);
    let out = bucky(&["modify", "-f", a_s, "-index", "0", "-retention", "1m:1h", "-now", &now], "");
    assert!(out.status.success(), "bucky modify: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!((layout(&a).0, read(&bak)), (vec![(60, 60), (600, 288)], before));

    // --nobackup: no a.wsp.bak is left, not even the older one (as whisper-resize does).
    ok(&["resize", a_s, "60:30", "--nobackup", "--now", &now], "");
    assert_eq!(names(), ["a.wsp"]);
    assert_eq!(layout(&a).0, [(60, 30)]);
}

/// fill into a missing destination copies the source durably (carbonate-sync's behaviour), and leaves no
/// temp file.
#[test]
fn fill_into_missing_destination_copies() {
    let dir = scratch_dir();
    let (a, b) = (dir.path().join("a.wsp"), dir.path().join("b.wsp"));
    for args in [
        vec!["whisper", "create", s(&a), "60:10", "300:12"],
        vec!["whisper", "fill", s(&a), s(&b), "--now", "1700000000"],
    ] {
        let out = bucky(&args, "");
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
    assert_eq!(snapshot(dir.path()).len(), 2);
}
