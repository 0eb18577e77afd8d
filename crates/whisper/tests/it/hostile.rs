//! Hostile whisper files: truncations at every offset, random bytes, absurd header fields, overlapping or
//! unordered archives, garbage in the data of otherwise valid files, absurd clocks and ranges.
//!
//! Every constructor (`WhisperFile::open`, `open_rw`, `WhisperBuf::from_bytes`), `resize` and
//! `set_aggregation` must refuse invalid files with an error (class "CorruptWhisperFile" where whisper.py refuses too, "bucky" for the structural
//! checks the reference lacks); every operation on what they accept must return, never panic; a refused
//! write leaves the file's bytes unchanged; and nothing allocates from header fields beyond the file's
//! length (checked by running the hostile files in a child process under `ulimit -v`).

use std::path::Path;
use std::time::Duration;

use proptest::prelude::*;
use rand::{Rng, SeedableRng};
use test_support::whisper_oracle::{master_seed, scratch_dir, Gen};
use whisper::{
    AggregationChange, AggregationMethod, CreateOptions, FillMode, FillOptions, Point, ResizeOptions, Retention,
    WhisperBuf, WhisperFile,
};

const NOW: i64 = 1_700_000_000;

/// A small valid file with data in both archives (60:10,300:12, sum), as create + update_many make it.
fn valid_file() -> WhisperBuf {
    let options = CreateOptions { aggregation: AggregationMethod::Sum, x_files_factor: 0.0, sparse: false };
    let header = whisper::header_for(&[Retention::new(60, 10), Retention::new(300, 12)], &options).unwrap();
    let mut buf = WhisperBuf::empty(header);
    let points: Vec<Point> = (0..40).map(|i| Point::new(NOW - 60 * i, i as f64)).collect();
    buf.update_many(&points, NOW).unwrap();
    buf
}

/// A valid file of another layout, to fill/merge with.
fn partner() -> WhisperBuf {
    let options = CreateOptions { aggregation: AggregationMethod::Max, x_files_factor: 0.5, sparse: false };
    let header = whisper::header_for(&[Retention::new(1, 120), Retention::new(60, 20)], &options).unwrap();
    let mut buf = WhisperBuf::empty(header);
    let points: Vec<Point> = (0..50).map(|i| Point::new(NOW - 7 * i, -(i as f64))).collect();
    buf.update_many(&points, NOW).unwrap();
    buf
}

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// Header mutations of [`valid_file`] that make it invalid, with what each breaks.
fn invalid_headers() -> Vec<(&'static str, Vec<u8>)> {
    let base = valid_file().into_bytes();
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = base.clone();
        f(&mut b);
        b
    };
    vec![
        ("aggregation type 0", with(&|b| put_u32(b, 0, 0))),
        ("aggregation type 9", with(&|b| put_u32(b, 0, 9))),
        ("aggregation type u32::MAX", with(&|b| put_u32(b, 0, u32::MAX))),
        ("xff NaN", with(&|b| b[8..12].copy_from_slice(&f32::NAN.to_be_bytes()))),
        ("xff 1.5", with(&|b| b[8..12].copy_from_slice(&1.5f32.to_be_bytes()))),
        ("xff -inf", with(&|b| b[8..12].copy_from_slice(&f32::NEG_INFINITY.to_be_bytes()))),
        ("archive count 0", with(&|b| put_u32(b, 12, 0))),
        ("archive count 3 (one more than the header holds)", with(&|b| put_u32(b, 12, 3))),
        ("archive count 2^20", with(&|b| put_u32(b, 12, 1 << 20))),
        ("archive count u32::MAX", with(&|b| put_u32(b, 12, u32::MAX))),
        ("maxRetention 0", with(&|b| put_u32(b, 4, 0))),
        ("maxRetention u32::MAX", with(&|b| put_u32(b, 4, u32::MAX))),
        ("offset u32::MAX", with(&|b| put_u32(b, 16, u32::MAX))),
        ("offset 0 (the header)", with(&|b| put_u32(b, 16, 0))),
        ("offset beyond the file", with(&|b| put_u32(b, 28, 300))),
        ("overlapping archives", with(&|b| put_u32(b, 28, 40))),
        ("spp 0", with(&|b| put_u32(b, 20, 0))),
        ("spp u32::MAX (retention overflows 32 bits)", with(&|b| put_u32(b, 32, u32::MAX))),
        ("points 0", with(&|b| put_u32(b, 24, 0))),
        ("points u32::MAX", with(&|b| put_u32(b, 36, u32::MAX))),
        ("points 2^28 (3 GiB claimed)", with(&|b| put_u32(b, 36, 1 << 28))),
        ("same spp twice", with(&|b| put_u32(b, 32, 60))),
        (
            "coarse archive first",
            with(&|b| {
                put_u32(b, 20, 300);
                put_u32(b, 32, 60);
            }),
        ),
        ("one byte appended", with(&|b| b.push(0))),
        ("one point appended", with(&|b| b.extend_from_slice(&[0; 12]))),
        ("empty", Vec::new()),
        ("shorter than the metadata", base[..15].to_vec()),
        ("short archive info", base[..30].to_vec()),
    ]
}

/// Runs every operation on `buf` (and with `other` as the other side of fill and merge) at ordinary clocks
/// and ranges, edge values of the u32 timestamp range, and (with `absurd`) the ends of i64 and non-finite
/// fill clocks. Results are ignored: the point is that each call returns. A refused update
/// must leave the buffer's bytes as they were.
fn exercise(buf: &WhisperBuf, other: &WhisperBuf, g: &mut Gen, absurd: bool) -> Vec<String> {
    // BUCKY_HOSTILE_TRACE=1 prints each call before making it (to find one that aborts the process).
    let trace = std::env::var_os("BUCKY_HOSTILE_TRACE").is_some();
    let mut panics = Vec::new();
    let mut guard = |what: String, call: &mut dyn FnMut()| {
        if trace {
            eprintln!("{what}");
        }
        if let Err(e) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
            let message =
                e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            panics.push(format!("{what}: panicked: {}", message.unwrap_or_default()));
        }
    };
    let mut times = vec![NOW, 0, 1, -1, -NOW, i64::from(u32::MAX), i64::from(u32::MAX) + 1, 1 << 40];
    let mut clocks = vec![NOW as f64, NOW as f64 + 0.7, 0.0, -1.0, u32::MAX as f64, 1e12];
    if absurd {
        times.extend([i64::MAX, i64::MIN, i64::MAX / 2, i64::MIN / 2, i64::MAX - 1]);
        clocks.extend([1e30, -1e30, f64::NAN, f64::INFINITY, f64::NEG_INFINITY]);
    }
    let pick = |g: &mut Gen| if g.chance(0.5) { NOW + g.rng.gen_range(-100_000..100_000) } else { g.pick(&times) };
    let specs =
        buf.header().archives.iter().map(|a| a.seconds_per_point).chain([0, 1, 7, u32::MAX]).collect::<Vec<_>>();
    for _ in 0..6 {
        let (from, now) = (pick(g), pick(g));
        let until = if g.chance(0.3) { None } else { Some(pick(g)) };
        let archive = if g.chance(0.3) { Some(g.pick(&specs)) } else { None };
        guard(
            format!("fetch({from}, {until:?}, now {now}, archive {archive:?}) on {:?}", buf.header().archives),
            &mut || {
                if let Ok(Some(series)) = buf.fetch(from, until, now, archive) {
                    let _ = series.points().count();
                }
            },
        );
        for i in 0..buf.header().archives.len() {
            let t = pick(g);
            guard(format!("value_at({i}, {t})"), &mut || {
                let _ = buf.value_at(i, t);
            });
        }
    }
    guard("dump()".into(), &mut || {
        let _ = buf.dump();
    });
    for _ in 0..3 {
        let mut copy = buf.clone();
        let points: Vec<Point> = (0..g.rng.gen_range(0..20)).map(|_| Point::new(pick(g), g.value())).collect();
        let now = pick(g);
        guard(format!("update_many({points:?}, now {now})"), &mut || {
            if copy.update_many(&points, now).is_err() {
                assert_eq!(copy.as_bytes(), buf.as_bytes(), "a refused update_many changed the buffer");
            }
        });
        let mut copy = buf.clone();
        let (v, t, now) = (g.value(), pick(g), pick(g));
        guard(format!("update({v}, {t}, now {now})"), &mut || {
            if copy.update(v, t, now).is_err() {
                assert_eq!(copy.as_bytes(), buf.as_bytes(), "a refused update changed the buffer");
            }
        });
    }
    for mode in [FillMode::Safe, FillMode::Carbonate] {
        for (src, dst) in [(buf, other), (other, buf), (buf, buf)] {
            let mut options = FillOptions::new(NOW);
            options.mode = mode;
            options.now = g.pick(&clocks);
            if g.chance(0.3) {
                options.start_from = Some(g.pick(&clocks));
                options.end_at = g.pick(&clocks);
            }
            options.overwrite = g.chance(0.2);
            let mut copy = dst.clone();
            guard(
                format!("fill_buf {:?} -> {:?}: {options:?}", src.header().archives, dst.header().archives),
                &mut || {
                    if whisper::fill_buf(src, &mut copy, &options).is_err() {
                        assert_eq!(copy.as_bytes(), dst.as_bytes(), "a refused fill changed the buffer");
                    }
                },
            );
        }
    }
    for _ in 0..2 {
        let retentions =
            Retention::parse_list(g.pick(&["60:20,600:10", "1:30", "5:4,10:3,30:5,60:4", "60:10,60:20", "300:1"]))
                .unwrap();
        let mut options = ResizeOptions::new(pick(g));
        options.aggregate = g.chance(0.5);
        options.x_files_factor = g.chance(0.3).then(|| g.pick(&[0.0, 0.3, 1.0, 2.0, f64::NAN]));
        options.aggregation = g.chance(0.3).then(|| g.pick(&AggregationMethod::ALL));
        guard(format!("resize_buf({retentions:?}, {options:?}) of {:?}", buf.header().archives), &mut || {
            let _ = whisper::resize_buf(buf, &retentions, &options);
        });
    }
    for (src, dst) in [(buf, other), (other, buf), (buf, buf)] {
        let mut copy = dst.clone();
        let (from, to) =
            (if g.chance(0.5) { None } else { Some(pick(g)) }, if g.chance(0.5) { None } else { Some(pick(g)) });
        let now = pick(g);
        guard(format!("merge_buf({from:?}, {to:?}, now {now})"), &mut || {
            if whisper::merge_buf(src, &mut copy, from, to, now).is_err() {
                assert_eq!(copy.as_bytes(), dst.as_bytes(), "a refused merge changed the buffer");
            }
        });
    }
    panics
}

fn expect_refused(name: &str, bytes: &[u8], dir: &Path) {
    let err = WhisperBuf::from_bytes(bytes.to_vec()).expect_err(name);
    let class = err.reference_class();
    assert!(
        class == "CorruptWhisperFile" || class == "bucky",
        "{name}: refused as {class} ({err}); a bad file is CorruptWhisperFile, or bucky where whisper.py has no check"
    );
    let path = dir.join("hostile.wsp");
    std::fs::write(&path, bytes).unwrap();
    assert!(WhisperFile::open(&path).is_err(), "{name}: WhisperFile::open accepted it");
    assert!(WhisperFile::open_rw(&path).is_err(), "{name}: WhisperFile::open_rw accepted it");
    // File-level writers refuse it too, and change nothing on disk, in either role.
    let good = dir.join("good.wsp");
    std::fs::write(&good, valid_file().as_bytes()).unwrap();
    let mut options = FillOptions::new(NOW);
    options.sync = false;
    for mode in [FillMode::Safe, FillMode::Carbonate] {
        options.mode = mode;
        assert!(whisper::fill(&good, &path, &options).is_err(), "{name}: fill into it succeeded");
        assert!(whisper::fill(&path, &good, &options).is_err(), "{name}: fill from it succeeded");
    }
    assert!(whisper::merge(&good, &path, None, None, NOW).is_err(), "{name}: merge into it succeeded");
    assert!(whisper::merge(&path, &good, None, None, NOW).is_err(), "{name}: merge from it succeeded");
    // Resizing it or changing its method is refused too, with no backup or temp file left behind.
    for aggregate in [false, true] {
        let options = ResizeOptions { aggregate, ..ResizeOptions::new(NOW) };
        let retentions = [Retention::new(60, 20), Retention::new(600, 10)];
        assert!(whisper::resize(&path, &retentions, &options).is_err(), "{name}: resize succeeded");
    }
    assert!(
        whisper::set_aggregation_method(&path, AggregationMethod::Max, None).is_err(),
        "{name}: set_aggregation_method succeeded"
    );
    let change = AggregationChange {
        method: AggregationMethod::Sum,
        x_files_factor: Some(0.1),
        backup: true,
        lock_timeout: Duration::ZERO,
    };
    assert!(whisper::set_aggregation(&path, &change).is_err(), "{name}: set_aggregation with a backup succeeded");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "{name}: a refused operation changed the hostile file");
    assert_eq!(
        std::fs::read(&good).unwrap(),
        valid_file().as_bytes(),
        "{name}: a refused operation changed the good file"
    );
    let names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names.len(), 2, "{name}: files left behind: {names:?}");
}

#[test]
fn every_truncation_is_refused() {
    let dir = scratch_dir();
    let bytes = valid_file().into_bytes();
    for len in 0..bytes.len() {
        expect_refused(&format!("truncated to {len} of {} bytes", bytes.len()), &bytes[..len], dir.path());
    }
}

#[test]
fn invalid_headers_are_refused() {
    let dir = scratch_dir();
    for (name, bytes) in invalid_headers() {
        expect_refused(name, &bytes, dir.path());
    }
}

/// The refusals whisper.py shares keep its exception class (the rest are bucky's own checks).
#[test]
fn reference_refusals_keep_their_class() {
    let base = valid_file().into_bytes();
    for (name, bytes) in invalid_headers() {
        let shared = name.starts_with("aggregation type")
            || name.starts_with("xff")
            || name == "empty"
            || name.starts_with("short");
        if shared {
            let class = WhisperBuf::from_bytes(bytes).unwrap_err().reference_class();
            assert_eq!(class, "CorruptWhisperFile", "{name}");
        }
    }
    assert!(WhisperBuf::from_bytes(base).is_ok(), "the control file is valid");
}

/// Valid headers with garbage in the data: base slots holding u32::MAX or stale cycles, random timestamps,
/// NaN everywhere; every operation at absurd clocks returns.
#[test]
fn garbage_data_in_valid_files() {
    let mut g = Gen::new(rand::rngs::SmallRng::seed_from_u64(master_seed()));
    let other = partner();
    let base = valid_file().into_bytes();
    for round in 0..150 {
        let mut bytes = base.clone();
        for _ in 0..g.rng.gen_range(1..30) {
            let slot = 40 + 12 * g.rng.gen_range(0..22);
            let t: u32 = match g.rng.gen_range(0..5) {
                0 => u32::MAX,
                1 => 0,
                2 => g.rng.gen(),
                3 => (NOW + g.rng.gen_range(-5000..5000)) as u32,
                _ => (NOW - 60 * g.rng.gen_range(0..40)) as u32,
            };
            put_u32(&mut bytes, slot, t);
            bytes[slot + 4..slot + 12].copy_from_slice(&g.value().to_be_bytes());
        }
        let buf =
            WhisperBuf::from_bytes(bytes).unwrap_or_else(|e| panic!("round {round}: data made the file invalid: {e}"));
        let panics = exercise(&buf, &other, &mut g, false);
        assert!(panics.is_empty(), "round {round}:\n{}", panics.join("\n"));
    }
}

/// The ends of the i64 range (reachable from the CLI: `bucky whisper fetch F -9223372036854775808 now`,
/// `merge --until`) and non-finite fill clocks (`--now nan`): every operation returns, on empty and full
/// files. Run in a child process under a 1 GiB address-space limit, because an allocation sized by an
/// absurd range aborts the process instead of panicking.
#[test]
fn absurd_clocks_and_ranges() {
    let (ok, text) = run_child("absurd_clocks_and_ranges_child", &[]);
    assert!(ok, "operations at absurd clocks and ranges panicked or aborted:\n{text}");
}

#[test]
#[ignore = "run by absurd_clocks_and_ranges in a child process under ulimit -v"]
fn absurd_clocks_and_ranges_child() {
    let mut g = Gen::new(rand::rngs::SmallRng::seed_from_u64(master_seed()));
    let empty = WhisperBuf::empty(valid_file().header().clone());
    let mut panics = Vec::new();
    for _ in 0..100 {
        panics.extend(exercise(&valid_file(), &partner(), &mut g, true));
        panics.extend(exercise(&empty, &partner(), &mut g, true));
    }
    // One line per distinct panic site and operation, with the first call that hit it.
    let mut distinct: std::collections::BTreeMap<String, String> = std::collections::BTreeMap::new();
    for p in panics {
        let op = p.split('(').next().unwrap_or_default().split(' ').next().unwrap_or_default().to_owned();
        let key = format!("{op}: {}", p.rsplit("panicked: ").next().unwrap_or_default());
        distinct.entry(key).or_insert(p);
    }
    assert!(
        distinct.is_empty(),
        "{} kinds of panic:\n{}",
        distinct.len(),
        distinct.values().cloned().collect::<Vec<_>>().join("\n")
    );
}

/// Runs the ignored test `name` of this binary in a child process limited to 1 GiB of address space;
/// returns whether it passed, and its output.
fn run_child(name: &str, env: &[(&str, &Path)]) -> (bool, String) {
    let exe = std::env::current_exe().unwrap();
    // Test names are paths below the binary's crate: `hostile::NAME`.
    let module = module_path!().split_once("::").map_or(module_path!(), |(_, module)| module);
    let name = format!("{module}::{name}");
    let mut command = std::process::Command::new("sh");
    command.arg("-c").arg("ulimit -v 1048576 && exec \"$0\" \"$@\"").arg(&exe).args([
        "--ignored",
        "--exact",
        &name,
        "--test-threads=1",
        "--nocapture",
    ]);
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().unwrap();
    let text = String::from_utf8_lossy(&output.stdout).into_owned() + &String::from_utf8_lossy(&output.stderr);
    let ok = output.status.success() && text.contains("1 passed");
    (ok, text)
}

/// The child half of [`no_allocation_from_header_fields`]: opens and reads every file in
/// `BUCKY_HOSTILE_DIR` under the parent's memory limit.
#[test]
#[ignore = "run by no_allocation_from_header_fields in a child process under ulimit -v"]
fn open_hostile_files_under_memory_limit() {
    let Some(dir) = std::env::var_os("BUCKY_HOSTILE_DIR") else { return };
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        assert!(WhisperFile::open(&path).is_err(), "{} opened", path.display());
        assert!(WhisperFile::open_rw(&path).is_err(), "{} opened", path.display());
        let bytes = std::fs::read(&path).unwrap();
        assert!(WhisperBuf::from_bytes(bytes).is_err(), "{} parsed", path.display());
    }
}

/// Headers claiming gigabytes (2^28 and 2^32-1 points, 2^32-1 archives, offsets at 4 GiB) in files of a few
/// hundred bytes are opened in a child process limited to 1 GiB of address space: trusting any of those
/// fields for an allocation would abort the child.
#[test]
fn no_allocation_from_header_fields() {
    let dir = scratch_dir();
    for (i, (name, bytes)) in invalid_headers().into_iter().enumerate() {
        if name.contains("u32::MAX") || name.contains("2^") || name.contains("beyond") {
            std::fs::write(dir.path().join(format!("{i}.wsp")), bytes).unwrap();
        }
    }
    let (ok, text) = run_child("open_hostile_files_under_memory_limit", &[("BUCKY_HOSTILE_DIR", dir.path())]);
    assert!(ok, "the child failed under a 1 GiB limit:\n{text}");
}

/// A valid file with one of a few layouts and some data.
fn valid_variant(which: u8) -> Vec<u8> {
    match which % 3 {
        0 => valid_file().into_bytes(),
        1 => partner().into_bytes(),
        _ => {
            let options = CreateOptions { aggregation: AggregationMethod::AvgZero, x_files_factor: 1.0, sparse: false };
            let header = whisper::header_for(&Retention::parse_list("5:4,10:3,30:5,60:4").unwrap(), &options).unwrap();
            let mut buf = WhisperBuf::empty(header);
            buf.update_many(&(0..30).map(|i| Point::new(NOW - 5 * i, 1.0)).collect::<Vec<_>>(), NOW).unwrap();
            buf.into_bytes()
        }
    }
}

#[derive(Debug, Clone)]
enum Mutation {
    Byte(usize, u8),
    Word(usize, u32),
    Truncate(usize),
    Extend(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let interesting = prop_oneof![
        Just(0u32),
        Just(1),
        Just(12),
        Just(40),
        Just(60),
        Just(u32::MAX),
        Just(1 << 31),
        Just(0x7fc0_0000), // f32 NaN
        any::<u32>()
    ];
    prop_oneof![
        (0usize..400, any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        // Mostly header words.
        (0usize..16, interesting).prop_map(|(w, v)| Mutation::Word(4 * w, v)),
        (0usize..400).prop_map(Mutation::Truncate),
        proptest::collection::vec(any::<u8>(), 1..24).prop_map(Mutation::Extend),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Byte(i, b) if *i < bytes.len() => bytes[*i] = *b,
        Mutation::Word(at, v) if at + 4 <= bytes.len() => put_u32(bytes, *at, *v),
        Mutation::Truncate(len) => bytes.truncate(*len),
        Mutation::Extend(more) => bytes.extend_from_slice(more),
        _ => {}
    }
}

fn check_bytes(bytes: Vec<u8>, seed: u64) -> Result<(), TestCaseError> {
    match WhisperBuf::from_bytes(bytes.clone()) {
        Ok(buf) => {
            // Whatever it accepts is internally consistent: every archive inside the file, finest first.
            let h = buf.header();
            prop_assert_eq!(h.file_size(), bytes.len() as u64);
            for pair in h.archives.windows(2) {
                prop_assert!(pair[0].seconds_per_point < pair[1].seconds_per_point);
            }
            let mut g = Gen::new(rand::rngs::SmallRng::seed_from_u64(seed));
            let panics = exercise(&buf, &partner(), &mut g, false);
            prop_assert!(panics.is_empty(), "{}", panics.join("\n"));
        }
        Err(e) => {
            let class = e.reference_class();
            prop_assert!(class == "CorruptWhisperFile" || class == "bucky", "refused as {}: {}", class, e);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    /// Arbitrary bytes: refused or handled, never a panic.
    #[test]
    fn arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..400), seed in any::<u64>()) {
        check_bytes(bytes, seed)?;
    }

    /// Valid files with up to 6 mutations (bytes, header words set to edge values, truncation, extension).
    #[test]
    fn mutated_valid_files(which in any::<u8>(), mutations in proptest::collection::vec(mutation(), 1..6), seed in any::<u64>()) {
        let mut bytes = valid_variant(which);
        for m in &mutations {
            apply(&mut bytes, m);
        }
        check_bytes(bytes, seed)?;
    }

    /// Mutations of the data area only keep the file valid; all operations on it return.
    #[test]
    fn mutated_data(which in any::<u8>(), pokes in proptest::collection::vec((0usize..400, any::<u8>()), 1..40), seed in any::<u64>()) {
        let mut bytes = valid_variant(which);
        let header_end = 16 + 12 * u32::from_be_bytes(bytes[12..16].try_into().unwrap()) as usize;
        for (i, b) in pokes {
            let i = header_end + i % (bytes.len() - header_end);
            bytes[i] = b;
        }
        prop_assert!(WhisperBuf::from_bytes(bytes.clone()).is_ok());
        check_bytes(bytes, seed)?;
    }
}
