//! Randomized differential tests against the reference: whisper 1.1.10 and carbonate 1.1.10's fill, driven
//! in batch by `tests/oracle/whisper_oracle.py` (see `test_support::whisper_oracle` for the judging rules).
//!
//! Every suite prints `name: N cases, M ops, K disagreements, seconds (seed S)`; a failure lists the
//! disagreements by category and the first cases in full. `BUCKY_ORACLE_SEED=S` reproduces a run,
//! `BUCKY_ORACLE_CASE=i` reruns one case, `BUCKY_ORACLE_CASES=n` changes the number of cases.

use rand::Rng;
use serde_json::{json, Value};
use test_support::whisper_oracle::*;
use whisper::{CreateOptions, FillMode, FillOptions, Point, WhisperBuf};

const CASES: usize = 1000;

/// create (valid and invalid schemas, methods and xff) followed by 1–4 update_many batches, each with its
/// own clock: every file byte-identical after every op, the same refusals.
#[test]
fn create_and_update_many() {
    run_differential("create_and_update_many", CASES, |g| {
        if g.chance(0.06) {
            return vec![json!({"op": "create", "file": "a", "retentions": g.invalid_schema(), "xff": 0.5,
                               "agg": "average", "sparse": false})];
        }
        let schema = g.schema();
        let mut create = g.create_op("a", &schema);
        match g.rng.gen_range(0..50) {
            0 => create["agg"] = json!(g.pick(&["avg", "median", "Average", ""])),
            1 => create["xff"] = json!(g.pick(&[1.5, -0.1, 1.0000001, 2.0])),
            _ => {}
        }
        let now = g.now(&schema);
        let mut ops = vec![create];
        ops.extend(g.random_history("a", &schema, now));
        ops
    });
}

/// Single-point update: byte-identical, TimestampNotCovered exactly where the reference raises it (future
/// points, age == maxRetention), propagation by position.
#[test]
fn single_update() {
    run_differential("single_update", CASES, |g| {
        let schema = g.schema();
        let mut now = g.now(&schema);
        let mut ops = vec![g.create_op("a", &schema)];
        if g.chance(0.5) {
            ops.extend(g.random_history("a", &schema, now));
        }
        let max = schema.max_retention();
        for _ in 0..g.rng.gen_range(5..=15) {
            if g.chance(0.3) {
                now += g.rng.gen_range(0..=2 * schema.spp(0));
            }
            let k = g.rng.gen_range(0..schema.archives.len());
            let t = match g.rng.gen_range(0..10) {
                0 => now,
                1 => now - max + g.rng.gen_range(-1..=1),
                2 => now + g.rng.gen_range(1..=100),
                3 => now - schema.retention(k) + g.rng.gen_range(-1..=1),
                _ => g.timestamp(&schema, now),
            };
            ops.push(json!({"op": "update", "file": "a", "t": t, "v": fv(g.value()), "now": now}));
        }
        ops
    });
}

/// fetch over random histories: random ranges (zero-length, from > until, in the future, beyond the
/// retention, at the archive boundaries), archive selection by precision, clocks after the writes.
#[test]
fn fetch() {
    run_differential("fetch", CASES, |g| {
        let schema = g.schema();
        let now = g.now(&schema);
        let mut ops = vec![g.create_op("a", &schema)];
        ops.extend(g.random_history("a", &schema, now));
        let max = schema.max_retention();
        for _ in 0..8 {
            let now = if g.chance(0.5) { now } else { now + g.rng.gen_range(0..=max / 2 + 1) };
            ops.push(g.fetch_op("a", &schema, now));
        }
        ops
    });
}

/// merge: identical layouts (methods and xff may differ) with random windows, layouts that differ
/// (NotImplementedError), time_from > time_to (ValueError).
#[test]
fn merge() {
    run_differential("merge", CASES, |g| {
        let schema = g.schema();
        let other = if g.chance(0.85) { schema.clone() } else { g.schema() };
        let now = g.now(&schema);
        let mut ops = vec![g.create_op("a", &schema), g.create_op("b", &other)];
        let (now_a, now_b) =
            (now - g.rng.gen_range(0..=schema.spp(0) * 3), now - g.rng.gen_range(0..=schema.spp(0) * 3));
        ops.extend(g.random_history("a", &schema, now_a));
        ops.extend(g.random_history("b", &other, now_b));
        let max = schema.max_retention();
        for (src, dst) in [("a", "b"), ("b", "a")] {
            let now = now + g.rng.gen_range(0..=max / 4 + 1);
            let from = if g.chance(0.5) { Value::Null } else { json!(now - g.rng.gen_range(0..=max + max / 5)) };
            let to = match g.rng.gen_range(0..4) {
                0 | 1 => Value::Null,
                2 => json!(now + g.rng.gen_range(0..=1000)),
                _ => json!(now - g.rng.gen_range(0..=max + max / 5)),
            };
            ops.push(json!({"op": "merge", "src": src, "dst": dst, "from": from, "to": to, "now": now}));
            if g.chance(0.5) {
                break;
            }
        }
        ops
    });
}

/// carbonate-mode fill: replicas of one truth with gaps, disagreements and 0.0 values (gaps to carbonate),
/// same schema or not, float clocks, startFrom/endAt windows, overwrite: dst byte-identical with
/// carbonate.fill.fill_archives, quirks included.
#[test]
fn carbonate_fill() {
    run_differential("carbonate_fill", CASES, |g| {
        let dst_schema = g.schema();
        let src_schema = if g.chance(0.6) { dst_schema.clone() } else { g.schema() };
        let truth = Truth { seed: g.rng.gen(), zeros: true };
        let now = g.now(&dst_schema);
        let mut ops = vec![g.create_op("a", &src_schema), g.create_op("b", &dst_schema)];
        let src = g.sampling(truth, &src_schema, now, 0.1);
        let dst = g.sampling(truth, &dst_schema, now, 0.1);
        let src_now = now - g.rng.gen_range(0..=3 * src_schema.spp(0));
        ops.extend(g.replica_history("a", &src_schema, &src, src_now));
        ops.extend(g.replica_history("b", &dst_schema, &dst, now));
        let fill_now = now + g.rng.gen_range(0..=dst_schema.max_retention() / 3 + 1);
        let window = g.chance(0.25);
        let mut fill = g.fill_op("a", "b", fill_now, window);
        fill["overwrite"] = json!(g.chance(0.1));
        ops.push(fill);
        if g.chance(0.3) {
            let later = fill_now + g.rng.gen_range(0..=3 * dst_schema.spp(0));
            ops.push(g.fill_op("b", "a", later, false));
        }
        ops
    });
}

/// Safe fill equals carbonate's where none of carbonate's quirks can trigger, so the reference judges safe
/// mode too. The conditions, and why each is needed:
/// - one archive, the same schema on both sides: carbonate routes writes by age through update_many, so
///   with several archives it propagates into the coarser archives (safe mode never propagates) and its
///   zero-length/boundary fetches cross-fill archive k from archive k+1 (§7 of the spec); with a single
///   archive every point it fetches from src is younger than the retention and lands in that archive;
/// - both replicas sample one truth without noise: carbonate rewrites the slot right after each gap (the
///   fence post) with src's value, which only leaves the bytes unchanged if src agrees with dst there;
/// - no 0.0/-0.0 values: carbonate treats them as gaps and overwrites them, safe mode keeps them as data;
/// - no startFrom/endAt window and no overwrite: safe's window includes an aligned endAt slot that
///   carbonate's exclusive fetch skips, and overwrite has no safe equivalent.
///
/// With these, each dst gap is fetched from the same-resolution src archive over exactly the slots
/// (now-ret, now] and written at dst's slot rule (an empty dst is anchored at the first run in both), so
/// the files must be byte-identical. NaN stays in: both treat it as a value.
#[test]
fn safe_fill_equals_carbonate_without_quirks() {
    run_differential("safe_fill_equals_carbonate_without_quirks", CASES, |g| {
        let mut schema = g.schema();
        schema.archives.truncate(1);
        let (spp, points) = schema.archives[0];
        schema.specs = vec![g.spec(spp, points)];
        let truth = Truth { seed: g.rng.gen(), zeros: false };
        let now = g.now(&schema);
        let mut ops = vec![g.create_op("a", &schema), g.create_op("b", &schema)];
        let src = g.sampling(truth, &schema, now, 0.0);
        let dst = g.sampling(truth, &schema, now, 0.0);
        let src_now = now - g.rng.gen_range(0..=3 * schema.spp(0));
        ops.extend(g.replica_history("a", &schema, &src, src_now));
        ops.extend(g.replica_history("b", &schema, &dst, now));
        let fill_now = now + g.rng.gen_range(0..=schema.max_retention() / 3 + 1);
        let mut fill = g.fill_op("a", "b", fill_now, false);
        fill["safe"] = json!(true); // the oracle ignores it and runs carbonate
        ops.push(fill);
        ops
    });
}

/// whisper-resize (run in-process by the oracle): random histories, then one or two resizes to new schemas
/// (unrelated, longer, shorter, finer, coarser, an archive dropped or added) in both modes, with the file's
/// or a new method and xff, with and without a backup, sometimes with writes in between. The file, its
/// `.bak` and the directory listing must match; refusals must match.
#[test]
fn resize() {
    run_differential("resize", CASES, |g| {
        let schema = g.schema();
        let now = g.now(&schema);
        let mut ops = vec![g.create_op("a", &schema)];
        ops.extend(g.random_history("a", &schema, now));
        if g.chance(0.02) {
            let mut missing = g.resize_op("b", &schema, now);
            missing["retentions"] = json!(schema.specs);
            ops.push(missing);
        }
        let (mut current, mut at) = (schema, now);
        for _ in 0..g.rng.gen_range(1..=2) {
            if g.chance(0.7) {
                at += g.rng.gen_range(0..=current.max_retention() / 3 + 1);
            }
            let new = g.resized_schema(&current);
            ops.push(g.resize_op("a", &new, at));
            if g.chance(0.3) {
                at += g.rng.gen_range(0..=new.spp(0) * 3);
                let batch = g.batch(&new, at);
                ops.push(g.update_many_op("a", &batch, at));
            }
            current = new;
        }
        ops
    });
}

/// whisper.setAggregationMethod: every method (and junk names), with and without a new xff (in range or
/// not), on empty files and files with history, followed by writes that propagate with the new settings.
#[test]
fn set_aggregation() {
    run_differential("set_aggregation", CASES, |g| {
        let schema = g.schema();
        let mut now = g.now(&schema);
        let mut ops = vec![g.create_op("a", &schema)];
        if g.chance(0.6) {
            ops.extend(g.random_history("a", &schema, now));
        }
        if g.chance(0.02) {
            ops.push(json!({"op": "set_aggregation", "file": "b", "agg": "sum", "xff": null}));
        }
        for _ in 0..g.rng.gen_range(1..=3) {
            let agg = if g.chance(0.05) { json!(g.pick(&["avg", "Sum", "median", ""])) } else { json!(g.agg()) };
            let xff = match g.rng.gen_range(0..10) {
                0 => json!(g.pick(&[1.5, -0.1, 1.0000001, 2.0])),
                1..=4 => fv(g.xff()),
                _ => Value::Null,
            };
            ops.push(json!({"op": "set_aggregation", "file": "a", "agg": agg, "xff": xff}));
            if g.chance(0.6) {
                now += g.rng.gen_range(0..=schema.max_retention() / 4 + 1);
                ops.extend(g.random_history("a", &schema, now));
            }
        }
        ops
    });
}

/// parseRetentionDef on valid specs in every unit spelling and on junk.
#[test]
fn retention_parsing() {
    run_differential("retention_parsing", CASES, |g| {
        let units = [
            "", "s", "sec", "seconds", "m", "min", "mi", "minute", "h", "hour", "d", "day", "w", "week", "y", "year",
            "mo", "M", "x", "secondss",
        ];
        (0..5)
            .map(|_| {
                let spec = match g.rng.gen_range(0..6) {
                    0 => {
                        let (spp, points) = (g.rng.gen_range(1..=3600u32), g.rng.gen_range(0..=100_000u32));
                        g.spec(spp, points)
                    }
                    // Durations stay below 2^32 points: bucky's Retention is 32-bit and refuses more (see
                    // reference_edge_cases for that difference).
                    1 => g
                        .pick(&[
                            "1min:1h", "7s:1m", "5m:1y", "60:1440", " 10s:1d ", "1m:30s", "0:10", "0s:1", "60", "60:",
                            ":60", "0:1h", "1.5:10", "-1:10", "60:abc", "60:1x", "1h:", "60 :10", "60: 10", "1:2:3",
                            "1w:1y", "1d:1y", "1y:2y", "1s:0s",
                        ])
                        .to_owned(),
                    _ => format!(
                        "{}{}:{}{}",
                        g.rng.gen_range(0..=120),
                        g.pick(&units),
                        g.rng.gen_range(0..=130),
                        g.pick(&units)
                    ),
                };
                json!({"op": "parse", "spec": spec})
            })
            .collect()
    });
}

/// Inputs the reference accepts and silently turns into unusable or corrupt files; bucky refuses them with
/// `reference_class() == "bucky"` and leaves nothing on disk. Each case also checks that the reference
/// really does accept it (so the test notices if the reference is not what we think).
#[test]
fn deliberate_refusals_are_marked_bucky() {
    let cases: Vec<(&str, Vec<Value>)> = vec![
        (
            "xff NaN",
            vec![json!({"op": "create", "file": "a", "retentions": ["60:10"], "xff": "NaN", "agg": "average"})],
        ),
        (
            "zero-point archive 60:0",
            vec![json!({"op": "create", "file": "a", "retentions": ["60:0"], "xff": 0.5, "agg": "sum"})],
        ),
        (
            "zero-point archive 1m:30s",
            vec![json!({"op": "create", "file": "a", "retentions": ["1m:30s"], "xff": 0.5, "agg": "sum"})],
        ),
        ("precision 0", vec![json!({"op": "create", "file": "a", "retentions": ["0:10"], "xff": 0.5, "agg": "sum"})]),
        (
            "set_aggregation with xff NaN",
            vec![
                json!({"op": "create", "file": "a", "retentions": ["60:10"], "xff": 0.5, "agg": "average"}),
                json!({"op": "set_aggregation", "file": "a", "agg": "sum", "xff": "NaN"}),
            ],
        ),
        (
            "25 future points into 60:10",
            vec![
                json!({"op": "create", "file": "a", "retentions": ["60:10", "300:12"], "xff": 0.0, "agg": "sum"}),
                json!({"op": "update_many", "file": "a", "now": 1_700_000_000i64,
                   "points": (1..=25).map(|i| json!([1_700_000_000i64 + 60 * i, i])).collect::<Vec<_>>()}),
            ],
        ),
    ];
    let batch: Vec<Value> = cases.iter().enumerate().map(|(i, (_, ops))| json!({"id": i, "ops": ops})).collect();
    let theirs = run_oracle(&batch);
    let scratch = scratch_dir();
    let mut problems = Vec::new();
    for (i, (name, ops)) in cases.iter().enumerate() {
        let ours = run_ours(ops, scratch.path(), i);
        let (o, t) = (ours.last().unwrap(), theirs[i]["results"].as_array().unwrap().last().unwrap());
        assert!(t.get("error").is_none(), "{name}: the reference refuses it ({t}); the premise is wrong");
        if o["error"] != json!("bucky") {
            problems.push(format!("{name}: expected a refusal with reference_class \"bucky\", got {o}"));
        }
        if o["bytes"] != o["before"] {
            problems.push(format!("{name}: the refusal changed the file"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

// ---- safe fill: properties (bucky only) ----------------------------------------------------------------

/// A file image of `schema` after `ops` (create options from the op, then update_many batches), in memory.
fn build(schema: &Schema, create: &Value, ops: &[Value], file: &str) -> WhisperBuf {
    let options = CreateOptions {
        aggregation: create["agg"].as_str().unwrap().parse().unwrap(),
        x_files_factor: vf(&create["xff"]),
        sparse: false,
    };
    let mut buf = WhisperBuf::empty(whisper::header_for(&schema.retentions(), &options).unwrap());
    for op in ops.iter().filter(|op| op["file"] == json!(file)) {
        let points: Vec<Point> =
            op["points"].as_array().unwrap().iter().map(|p| Point::new(p[0].as_i64().unwrap(), vf(&p[1]))).collect();
        buf.update_many(&points, op["now"].as_i64().unwrap()).unwrap();
    }
    buf
}

/// The slots fill may touch in archive `i` of `dst`: aligned times in (now - retention, now] that are also
/// inside [end_at, start_from] (inclusive: the widest reading of the window).
fn window(dst: &WhisperBuf, i: usize, options: &FillOptions) -> impl Iterator<Item = i64> {
    let a = dst.header().archives[i];
    let spp = i64::from(a.seconds_per_point);
    let now = options.now.floor() as i64;
    let newest = options.start_from.map_or(now, |s| (s.floor() as i64).min(now));
    let oldest = (now - a.retention() as i64 + 1).max(options.end_at.ceil() as i64);
    let first = align(oldest + spp - 1, spp);
    (0..).map(move |j| first + j * spp).take_while(move |&t| t <= newest)
}

fn same_bits(a: Option<f64>, b: Option<f64>) -> bool {
    a.map(f64::to_bits) == b.map(f64::to_bits)
}

/// Checks one safe fill of `src` into `before` (giving `after`); returns the first violated property.
fn check_safe_fill(
    src: &WhisperBuf,
    before: &WhisperBuf,
    after: &WhisperBuf,
    options: &FillOptions,
    written: u64,
) -> Result<(), String> {
    let (b, a) = (before.as_bytes(), after.as_bytes());
    if b.len() != a.len() || before.header() != after.header() {
        return Err("the header or the length changed".into());
    }
    let mut changed = 0u64;
    for (i, archive) in before.header().archives.iter().enumerate() {
        let in_window: std::collections::HashSet<i64> = window(before, i, options).collect();
        for s in 0..archive.points as usize {
            let at = archive.offset as usize + 12 * s;
            if b[at..at + 12] == a[at..at + 12] {
                continue;
            }
            changed += 1;
            let t = i64::from(u32::from_be_bytes(a[at..at + 4].try_into().unwrap()));
            let v = f64::from_be_bytes(a[at + 4..at + 12].try_into().unwrap());
            if !in_window.contains(&t) {
                return Err(format!("archive {i} slot {s} written with t={t}, outside the fill window"));
            }
            if let Some(old) = before.value_at(i, t) {
                return Err(format!("archive {i}: non-empty slot t={t} ({old}) overwritten with {v}"));
            }
            if !same_bits(after.value_at(i, t), Some(v)) {
                return Err(format!("archive {i}: t={t} written at the wrong slot"));
            }
            let same = src.header().archives.iter().position(|x| x.seconds_per_point == archive.seconds_per_point);
            if let Some(j) = same {
                if !same_bits(src.value_at(j, t), Some(v)) {
                    return Err(format!("archive {i}: t={t} filled with {v}, src holds {:?}", src.value_at(j, t)));
                }
                // A stale slot of src (older than its retention) is not data: fetch would not return it.
                if t <= options.now.floor() as i64 - src.header().archives[j].retention() as i64 {
                    return Err(format!("archive {i}: t={t} filled from src data older than src's retention"));
                }
            }
        }
        // Every valid dst point survives; every empty slot src holds at the same resolution is filled.
        let same = src.header().archives.iter().position(|x| x.seconds_per_point == archive.seconds_per_point);
        for &t in &in_window {
            let (old, new) = (before.value_at(i, t), after.value_at(i, t));
            if old.is_some() && !same_bits(old, new) {
                return Err(format!("archive {i}: t={t} was {old:?}, now {new:?}"));
            }
            let Some(j) = same else { continue };
            let src_ret = src.header().archives[j].retention() as i64;
            let strictly_inside = t > options.end_at as i64 && t > options.now.floor() as i64 - src_ret;
            if old.is_none() && strictly_inside && src.value_at(j, t).is_some() && !same_bits(new, src.value_at(j, t)) {
                return Err(format!(
                    "archive {i}: empty t={t} not filled with src's {:?} (now {new:?})",
                    src.value_at(j, t)
                ));
            }
        }
    }
    if changed != written {
        return Err(format!("fill reports {written} points written, {changed} slots changed"));
    }
    Ok(())
}

/// Valid (timestamp → value bits) per archive inside the window: the data a reader sees.
fn valid_points(buf: &WhisperBuf, options: &FillOptions) -> Vec<std::collections::BTreeMap<i64, u64>> {
    (0..buf.header().archives.len())
        .map(|i| window(buf, i, options).filter_map(|t| buf.value_at(i, t).map(|v| (t, v.to_bits()))).collect())
        .collect()
}

/// Safe fill, over random replicas (several archives, same schema or not, so also the aggregated path):
/// - no valid dst point changes; only empty slots inside the window are written, each with src's value at
///   the same resolution; every empty slot src holds at the same resolution is filled;
/// - idempotent: a second fill changes no byte;
/// - two replicas of one schema filled into each other end with the same points (the union) in every
///   archive where they did not disagree.
#[test]
fn safe_fill_properties() {
    let seed = master_seed();
    let count = case_count(CASES);
    let started = std::time::Instant::now();
    let mut failures = Vec::new();
    for index in 0..count {
        let mut g = Gen::new(case_rng(seed, "safe_fill_properties", index));
        let dst_schema = g.schema();
        let same = g.chance(0.6);
        let src_schema = if same { dst_schema.clone() } else { g.schema() };
        let truth = Truth { seed: g.rng.gen(), zeros: true };
        let now = g.now(&dst_schema);
        let (create_a, mut create_b) = (g.create_op("a", &src_schema), g.create_op("b", &dst_schema));
        if same {
            create_b["agg"] = create_a["agg"].clone();
            create_b["xff"] = create_a["xff"].clone();
        }
        let noise = if g.chance(0.5) { 0.0 } else { 0.1 };
        let (sa, sb) = (g.sampling(truth, &src_schema, now, noise), g.sampling(truth, &dst_schema, now, noise));
        let src_now = now - g.rng.gen_range(0..=3 * src_schema.spp(0));
        let mut ops = g.replica_history("a", &src_schema, &sa, src_now);
        ops.extend(g.replica_history("b", &dst_schema, &sb, now));
        let (fill_now, window) = (now + g.rng.gen_range(0..=dst_schema.max_retention() / 3 + 1), g.chance(0.2));
        let fill = g.fill_op("a", "b", fill_now, window);
        let mut options = fill_options(&fill);
        options.mode = FillMode::Safe;
        let src = build(&src_schema, &create_a, &ops, "a");
        let before = build(&dst_schema, &create_b, &ops, "b");
        let result = (|| -> Result<(), String> {
            let mut after = before.clone();
            let written = whisper::fill_buf(&src, &mut after, &options).map_err(|e| format!("fill failed: {e}"))?;
            check_safe_fill(&src, &before, &after, &options, written)?;
            let mut again = after.clone();
            whisper::fill_buf(&src, &mut again, &options).map_err(|e| format!("second fill failed: {e}"))?;
            if again.as_bytes() != after.as_bytes() {
                return Err("not idempotent: a second fill changed the file".into());
            }
            if same {
                // Fill each replica from the other's original, then compare what a reader sees.
                let mut back = src.clone();
                whisper::fill_buf(&before, &mut back, &options).map_err(|e| format!("reverse fill failed: {e}"))?;
                let (x, y) = (valid_points(&after, &options), valid_points(&back, &options));
                let (p, q) = (valid_points(&before, &options), valid_points(&src, &options));
                for i in 0..x.len() {
                    let agree = p[i].iter().all(|(t, v)| q[i].get(t).is_none_or(|w| w == v));
                    let keys = |m: &std::collections::BTreeMap<i64, u64>| m.keys().copied().collect::<Vec<_>>();
                    if keys(&x[i]) != keys(&y[i]) {
                        return Err(format!(
                            "archive {i}: the two replicas hold different times after filling each other"
                        ));
                    }
                    if agree && x[i] != y[i] {
                        return Err(format!("archive {i}: replicas that agreed differ after filling each other"));
                    }
                }
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!(
                "case {index}: {e}\nrerun: BUCKY_ORACLE_SEED={seed} BUCKY_ORACLE_CASES={} (case {index})\nsrc {:?} {create_a}\ndst {:?} {create_b}\nfill {fill}\nops {}",
                index + 1, src_schema.archives, dst_schema.archives, Value::Array(ops)
            ));
        }
    }
    eprintln!(
        "safe_fill_properties: {count} cases, {} failures, {:.1}s (seed {seed})",
        failures.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        failures.is_empty(),
        "{} of {count} safe fills violate a property (seed {seed}):\n{}",
        failures.len(),
        failures.iter().take(3).cloned().collect::<Vec<_>>().join("\n\n")
    );
}

/// whisper-resize with xff NaN: the script writes the new file with it, then cannot read that file back
/// (CorruptWhisperFile) and leaves the original alone; bucky refuses before writing anything.
#[test]
fn resize_with_nan_xff_is_refused() {
    let ops = vec![
        create("a", &["60:10"], "sum", 0.5),
        update_many("a", 1_700_000_000, &[(1_699_999_940, 1.0)]),
        resize_op(&["60:20"], 1_700_000_000, false, Some(f64::NAN)),
    ];
    let theirs = run_oracle(&[json!({"id": 0, "ops": ops})]);
    let scratch = scratch_dir();
    let ours = run_ours(&ops, scratch.path(), 0);
    let (o, t) = (&ours[2], &theirs[0]["results"][2]);
    assert_eq!(t["error"], "CorruptWhisperFile", "the premise is wrong: {t}");
    assert_eq!(t["bytes"], theirs[0]["results"][1]["bytes"], "the reference changed the original");
    assert_eq!(o["error"], "bucky", "{o}");
    assert_eq!(o["bytes"], o["before"], "the refusal changed the file");
}

// ---- fixed edge cases (spec §9 and hand-made headers) --------------------------------------------------

fn create(file: &str, retentions: &[&str], agg: &str, xff: f64) -> Value {
    json!({"op": "create", "file": file, "retentions": retentions, "xff": fv(xff), "agg": agg, "sparse": false})
}

fn update_many(file: &str, now: i64, points: &[(i64, f64)]) -> Value {
    json!({"op": "update_many", "file": file, "now": now,
           "points": points.iter().map(|&(t, v)| json!([t, fv(v)])).collect::<Vec<_>>()})
}

fn fetch_op(file: &str, from: i64, until: Option<i64>, now: i64, archive: Option<&str>) -> Value {
    json!({"op": "fetch", "file": file, "from": from, "until": until, "now": now, "archive": archive})
}

fn resize_op(retentions: &[&str], now: i64, aggregate: bool, xff: Option<f64>) -> Value {
    json!({"op": "resize", "file": "a", "retentions": retentions, "xff": xff.map(fv), "agg": null,
           "aggregate": aggregate, "nobackup": false, "now": now})
}

/// A hand-made file: header fields as given (not necessarily consistent), `len` bytes, points poked in.
fn raw_file(
    agg: u32,
    max_retention: u32,
    xff: f32,
    infos: &[(u32, u32, u32)],
    len: usize,
    points: &[(usize, u32, f64)],
) -> Value {
    let mut b = Vec::new();
    b.extend_from_slice(&agg.to_be_bytes());
    b.extend_from_slice(&max_retention.to_be_bytes());
    b.extend_from_slice(&xff.to_be_bytes());
    b.extend_from_slice(&(infos.len() as u32).to_be_bytes());
    for &(offset, spp, n) in infos {
        for x in [offset, spp, n] {
            b.extend_from_slice(&x.to_be_bytes());
        }
    }
    b.resize(len.max(b.len()), 0);
    for &(at, t, v) in points {
        b[at..at + 4].copy_from_slice(&t.to_be_bytes());
        b[at + 4..at + 12].copy_from_slice(&v.to_be_bytes());
    }
    b.truncate(len);
    json!({"op": "put", "file": "a", "hex": hex(&b)})
}

/// Hand-picked cases for every reference behaviour of spec §9 that random inputs hit rarely, and hand-made
/// headers; each judged against the oracle like the random ones.
#[test]
fn reference_edge_cases() {
    const NOW: i64 = 1_700_000_000; // aligned to 60, 300 and 3600 (1_700_000_000 % 3600 == 800: not an hour)
    let t0 = NOW - 36; // aligned to 4
    let mut cases: Vec<Vec<Value>> = vec![
        // xff compared in f64 against the widened f32: 3/10 < 0.30000001192 → no propagation; 4/10 → yes.
        vec![
            create("a", &["1:20", "10:3"], "average", 0.3),
            update_many("a", NOW, &[(NOW - 19, 1.0), (NOW - 18, 2.0), (NOW - 17, 3.0)]),
            update_many("a", NOW, &[(NOW - 16, 4.0)]),
        ],
        // xff 1 needs all 10; xff 0 still needs one known point.
        vec![
            create("a", &["1:20", "10:3"], "sum", 1.0),
            update_many("a", NOW, &(1..=9).map(|i| (NOW - 20 + i, 1.0)).collect::<Vec<_>>()),
            update_many("a", NOW, &[(NOW - 20, 5.0)]),
        ],
        // CPython 3.11 plain summation: sum([0.1] * 10) = 0.9999999999999999.
        vec![
            create("a", &["1:10", "10:2"], "sum", 0.0),
            update_many("a", NOW - 1, &(0..10).map(|i| (NOW - 10 + i, 0.1)).collect::<Vec<_>>()),
        ],
        // NaN: max/min poisoned only by a first NaN; absmax keeps the first of equal magnitudes.
        vec![
            create("a", &["1:8", "4:4"], "max", 0.0),
            update_many(
                "a",
                NOW,
                &[(NOW - 8, f64::NAN), (NOW - 7, 1.0), (NOW - 4, 1.0), (NOW - 3, f64::NAN), (NOW - 2, 7.0)],
            ),
        ],
        vec![
            create("a", &["1:8", "4:4"], "absmax", 0.0),
            update_many("a", NOW, &[(NOW - 8, -3.0), (NOW - 7, 3.0), (NOW - 4, 2.0), (NOW - 3, -2.0)]),
        ],
        vec![
            create("a", &["1:8", "4:4"], "absmin", 0.0),
            update_many("a", NOW, &[(NOW - 8, 2.0), (NOW - 7, -1.0), (NOW - 6, 1.0)]),
        ],
        vec![
            create("a", &["1:8", "4:4"], "avg_zero", 0.0),
            update_many("a", NOW, &[(NOW - 8, 4.0), (NOW - 6, 0.0), (NOW - 5, -0.0)]),
        ],
        // The sign of a NaN that meets another NaN in an aggregate: inf + -inf gives -NaN (x86 default NaN);
        // CPython's a + b with two NaNs returns b. Sum, average and avg_zero of [-NaN, +NaN].
        vec![
            create("a", &["1:8", "2:8", "4:8"], "sum", 0.0),
            update_many("a", t0 + 3, &[(t0, f64::INFINITY), (t0 + 1, f64::NEG_INFINITY), (t0 + 2, f64::NAN)]),
        ],
        vec![
            create("a", &["1:8", "2:8", "4:8"], "average", 0.0),
            update_many("a", t0 + 3, &[(t0, f64::INFINITY), (t0 + 1, f64::NEG_INFINITY), (t0 + 2, f64::NAN)]),
        ],
        vec![
            create("a", &["1:8", "2:8", "4:8"], "avg_zero", 0.0),
            update_many("a", t0 + 3, &[(t0, f64::INFINITY), (t0 + 1, f64::NEG_INFINITY), (t0 + 2, f64::NAN)]),
        ],
        // Duplicates: identical raw times → first in input wins; same bucket → newest raw time wins.
        vec![
            create("a", &["60:10", "300:4"], "sum", 0.0),
            update_many("a", NOW, &[(NOW - 60, 1.0), (NOW - 60, 2.0), (NOW - 119, 3.0), (NOW - 100, 4.0)]),
        ],
        // age == retention goes to that archive and shares the now slot; future points go to archive 0.
        vec![
            create("a", &["60:10", "300:12"], "last", 0.0),
            update_many(
                "a",
                NOW,
                &[(NOW, 1.0), (NOW - 600, 2.0), (NOW + 60, 3.0), (NOW - 3600, 4.0), (NOW - 3601, 5.0)],
            ),
        ],
        // single update: future and age == maxRetention raise TimestampNotCovered; age == retention(0) is fine.
        vec![
            create("a", &["60:10", "300:12"], "last", 0.0),
            json!({"op": "update", "file": "a", "t": NOW + 1, "v": 1.0, "now": NOW}),
            json!({"op": "update", "file": "a", "t": NOW - 3600, "v": 1.0, "now": NOW}),
            json!({"op": "update", "file": "a", "t": NOW - 600, "v": 2.0, "now": NOW}),
            json!({"op": "update", "file": "a", "t": NOW - 3599, "v": 3.0, "now": NOW}),
        ],
        // A time beyond 2^32 after alignment: struct.error.
        vec![create("a", &["60:10"], "sum", 0.5), update_many("a", NOW, &[(4_294_967_340, 1.0)])],
        // Zero-length fetch returns the next slot; archiveToSelect over a span longer than the archive
        // returns (count mod N) values; from > until; from in the future; until before the retention.
        vec![
            create("a", &["60:10", "300:12"], "sum", 0.0),
            update_many("a", NOW, &(0..10).map(|i| (NOW - 60 * i, i as f64)).collect::<Vec<_>>()),
            fetch_op("a", NOW - 120, Some(NOW - 120), NOW, None),
            fetch_op("a", NOW - 3000, None, NOW, Some("60")),
            fetch_op("a", NOW - 3000, None, NOW, Some("1m")),
            fetch_op("a", NOW - 3000, None, NOW, Some("120")),
            fetch_op("a", NOW - 100, Some(NOW - 200), NOW, None),
            fetch_op("a", NOW + 10, None, NOW, None),
            fetch_op("a", NOW - 5000, Some(NOW - 4000), NOW, None),
        ],
        // merge of unalike layouts.
        vec![
            create("a", &["60:10"], "sum", 0.0),
            create("b", &["60:11"], "sum", 0.0),
            json!({"op": "merge", "src": "a", "dst": "b", "from": null, "to": null, "now": NOW}),
        ],
        // carbonate cross-fill (spec §7 a): dst missing old data, now % 60 != 0, 60:26,300:30 summed.
        {
            let now = 1_700_000_130;
            let src: Vec<(i64, f64)> = (0..26).map(|i| (align(now, 60) - 60 * i, (i % 7) as f64 + 1.0)).collect();
            let dst: Vec<(i64, f64)> = (0..6).map(|i| (align(now, 60) - 60 * i, 10.0)).collect();
            vec![
                create("a", &["60:26", "300:30"], "sum", 0.0),
                create("b", &["60:26", "300:30"], "sum", 0.0),
                update_many("a", now, &src),
                update_many("b", now, &dst),
                json!({"op": "fill", "src": "a", "dst": "b", "now": now as f64 + 0.7, "startFrom": null, "endAt": 0, "overwrite": false}),
            ]
        },
        // carbonate boundary point (spec §7 b): now - ret(0) aligned to 300, dst archive 1 missing.
        {
            let now = 1_700_000_100;
            let src: Vec<(i64, f64)> = (0..60).map(|i| (now - 60 * i, 1.0 + i as f64)).collect();
            let dst: Vec<(i64, f64)> = (0..25).map(|i| (now - 60 * i, 1000.0)).collect();
            vec![
                create("a", &["60:25", "300:30"], "sum", 0.0),
                create("b", &["60:25", "300:30"], "sum", 1.0),
                update_many("a", now, &src),
                update_many("b", now, &dst),
                json!({"op": "fill", "src": "a", "dst": "b", "now": now, "startFrom": null, "endAt": 0, "overwrite": false}),
            ]
        },
        // resize fetches each old archive's window `now - retention + spp` with fetch's archive choice:
        // for 300:3 behind 60:10 that window (600 s) is served by the 60 s archive.
        vec![
            create("a", &["60:10", "300:3"], "sum", 0.0),
            update_many("a", NOW, &(0..15).map(|i| (NOW - 60 * i, i as f64)).collect::<Vec<_>>()),
            resize_op(&["60:5", "300:4"], NOW + 30, false, None),
        ],
        // A one-point archive: its window is zero-length, and fetch returns the slot after `now` (here a
        // stored future point, which the resize writes again).
        vec![
            create("a", &["60:1"], "last", 0.0),
            update_many("a", NOW, &[(NOW + 60, 5.0)]),
            resize_op(&["60:4", "120:3"], NOW, false, None),
        ],
        // --aggregate compares the given xff unrounded: 3 of 10 known passes 0.3 there, while the new file's
        // propagation (0.3 stored as f32) would not.
        vec![
            create("a", &["1:30"], "sum", 0.0),
            update_many("a", NOW, &[(NOW - 19, 1.0), (NOW - 18, 2.0), (NOW - 17, 3.0)]),
            resize_op(&["10:3"], NOW, true, Some(0.3)),
        ],
        // --aggregate where the coarse window (10:10,60:2: now-60.., served by the 10 s archive) has no
        // point older than the fine one's: the script appends it whole, so the old points are duplicated
        // and unsorted, and bisect runs on an unsorted list.
        vec![
            create("a", &["10:10", "60:2"], "average", 0.0),
            update_many("a", NOW, &(0..12).map(|i| (NOW - 10 * i, i as f64)).collect::<Vec<_>>()),
            resize_op(&["5:30", "30:10"], NOW + 7, true, Some(0.0)),
        ],
        // bucky's Retention is 32-bit: the reference parses more points than a header can hold.
        vec![json!({"op": "parse", "spec": "1s:200y"})],
    ];
    // Hand-made headers. 60:10,300:12 laid out by create: offsets 40 and 160, 304 bytes, maxRetention 3600.
    let layout = [(40, 60, 10), (160, 300, 12)];
    let data = [(40, (NOW - 60) as u32, 1.0), (52, NOW as u32, 2.0), (160, (NOW - 300) as u32, 3.0)];
    let reads = || {
        vec![
            json!({"op": "info", "file": "a"}),
            fetch_op("a", NOW - 3000, None, NOW, None),
            update_many("a", NOW, &[(NOW - 120, 9.0)]),
        ]
    };
    let hand_made = [
        raw_file(2, 3600, 0.5, &layout, 304, &data), // valid (control)
        raw_file(2, 7200, 0.5, &layout, 304, &data), // maxRetention > retentions
        raw_file(2, 3600, 0.5, &layout, 292, &data), // truncated by one point
        raw_file(2, 3600, 0.5, &layout, 300, &data), // truncated mid-point
        raw_file(2, 3600, 0.5, &[(40, 60, 10), (40, 300, 12)], 304, &data), // overlapping archives
        raw_file(2, 3600, 0.5, &[(40, 300, 12), (184, 60, 10)], 304, &data), // coarse archive first
        raw_file(2, 3600, 0.5, &[(28, 60, 10), (148, 300, 12)], 304, &data), // archive inside the header
        raw_file(2, 3600, 0.5, &[(40, 60, 10), (160, 60, 12)], 304, &data), // two archives of 60 s
        raw_file(2, 3600, 0.5, &[(40, 60, 10), (160, 0, 12)], 304, &data), // spp 0
        raw_file(2, 3600, 0.5, &[], 16, &[]),        // no archives
        raw_file(9, 3600, 0.5, &layout, 304, &data), // unknown method
        raw_file(2, 3600, f32::NAN, &layout, 304, &data), // NaN xff
        raw_file(2, 3600, 1.5, &layout, 304, &data), // xff > 1
        raw_file(2, 3600, 0.5, &layout, 12, &[]),    // shorter than the metadata
        raw_file(2, 3600, 0.5, &layout, 30, &[]),    // short archive info
    ];
    // The header count says 3 archives but holds 2 (the third ArchiveInfo is read from data bytes).
    let mut extra = raw_file(2, 3600, 0.5, &layout, 304, &data);
    let mut bytes = unhex(extra["hex"].as_str().unwrap());
    bytes[15] = 3;
    extra["hex"] = json!(hex(&bytes));
    // Each hand-made file is read, resized and given a new method, in separate cases.
    let changes = [
        resize_op(&["60:20", "600:10"], NOW, false, None),
        json!({"op": "set_aggregation", "file": "a", "agg": "max", "xff": 0.2}),
    ];
    for put in hand_made.into_iter().chain([extra]) {
        cases.push(std::iter::once(put.clone()).chain(reads()).collect());
        cases.extend(changes.iter().map(|change| vec![put.clone(), change.clone()]));
    }
    // Premise: every create above is one the reference accepts (else the case tests nothing).
    let batch: Vec<Value> = cases.iter().enumerate().map(|(i, ops)| json!({"id": i, "ops": ops})).collect();
    for (case, answer) in batch.iter().zip(run_oracle(&batch)) {
        for (op, result) in case["ops"].as_array().unwrap().iter().zip(answer["results"].as_array().unwrap()) {
            assert!(op["op"] != "create" || result.get("error").is_none(), "the reference refuses {op}: {result}");
        }
    }
    run_cases("reference_edge_cases", None, cases.into_iter().enumerate().collect());
}
