//! Time-bounded fuzzing of the whisper crate on arbitrary bytes (issue 7, scenario 5).
//!
//! Each execution builds an input (random bytes, or a valid file of a random schema with random byte
//! mutations, truncation or extension) and runs every entry point on it: header parsing from memory and
//! from disk, fetch, update_many, single update, both fills, merge against a valid partner and a resize
//! to the partner's layout. Nothing may panic. CI runs it for `BUCKY_FUZZ_SECONDS` (default 15); a long run:
//!
//! ```sh
//! BUCKY_FUZZ_SECONDS=3600 cargo test --release -p bucky-whisper --test it fuzz:: -- --nocapture
//! ```
//!
//! A failing input is written to `$TMPDIR/bucky-fuzz-<seed>-<n>.wsp` and the seed is printed
//! (`BUCKY_FUZZ_SEED` replays it).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use whisper::{
    fill_buf, header_for, merge_buf, resize_buf, AggregationMethod, CreateOptions, FillOptions, Point, ResizeOptions,
    Retention, WhisperBuf, WhisperFile,
};

const NOW: i64 = 1_700_000_000;

fn random_schema(rng: &mut SmallRng) -> Vec<Retention> {
    let mut spp = [1u32, 5, 10, 60][rng.gen_range(0..4)];
    let mut points = rng.gen_range(2..40u32);
    let mut out = Vec::new();
    for _ in 0..rng.gen_range(1..4) {
        // Each archive needs at least `factor` points to consolidate into the next one.
        let factor = rng.gen_range(2..6u32);
        points = points.max(factor);
        out.push(Retention::new(spp, points));
        spp *= factor;
        points += rng.gen_range(1..20u32);
    }
    out
}

fn valid_file(rng: &mut SmallRng) -> WhisperBuf {
    let options = CreateOptions {
        aggregation: AggregationMethod::ALL[rng.gen_range(0..8)],
        x_files_factor: [0.0, 0.3, 0.5, 1.0][rng.gen_range(0..4)],
        sparse: false,
    };
    let header = header_for(&random_schema(rng), &options).expect("generated schemas are valid");
    let mut buf = WhisperBuf::empty(header);
    let points = random_points(rng);
    let _ = buf.update_many(&points, NOW);
    buf
}

fn random_points(rng: &mut SmallRng) -> Vec<Point> {
    (0..rng.gen_range(0..60))
        .map(|_| {
            let t = match rng.gen_range(0..10) {
                0 => rng.gen::<i64>(),
                1 => NOW + rng.gen_range(0..10_000),
                _ => NOW - rng.gen_range(0..20_000),
            };
            let v = match rng.gen_range(0..8) {
                0 => f64::NAN,
                1 => f64::INFINITY,
                2 => 0.0,
                _ => rng.gen_range(-1e6..1e6),
            };
            Point::new(t, v)
        })
        .collect()
}

fn random_input(rng: &mut SmallRng) -> Vec<u8> {
    if rng.gen_range(0..5) == 0 {
        let len = rng.gen_range(0..600);
        return (0..len).map(|_| rng.gen()).collect();
    }
    let mut bytes = valid_file(rng).into_bytes();
    // Mostly data-byte mutations, so that many inputs stay valid and reach fill and merge.
    for _ in 0..rng.gen_range(0..5) {
        match rng.gen_range(0..8) {
            0 if !bytes.is_empty() => {
                let at = rng.gen_range(0..bytes.len().min(64));
                bytes[at] = rng.gen();
            }
            1 => bytes.truncate(rng.gen_range(0..=bytes.len())),
            2 => bytes.extend((0..rng.gen_range(1..30)).map(|_| rng.gen::<u8>())),
            _ if !bytes.is_empty() => {
                let at = rng.gen_range(0..bytes.len());
                bytes[at] = rng.gen();
            }
            _ => {}
        }
    }
    bytes
}

/// Runs every entry point on `bytes`; errors are fine, panics are not.
fn execute(bytes: &[u8], partner: &WhisperBuf, rng: &mut SmallRng, dir: &std::path::Path) {
    let path = dir.join("input.wsp");
    std::fs::write(&path, bytes).expect("write input");
    if let Ok(file) = WhisperFile::open_rw(&path) {
        let _ = file.fetch(NOW - rng.gen_range(-100..50_000), None, NOW, None);
        let _ = file.update_many(&random_points(rng), NOW);
        let _ = file.update(1.0, NOW - rng.gen_range(-10..5_000), NOW);
        let _ = file.dump();
    }
    let Ok(mut buf) = WhisperBuf::from_bytes(bytes.to_vec()) else { return };
    let from = NOW - rng.gen_range(-100..50_000);
    let until = if rng.gen() { None } else { Some(from + rng.gen_range(-10..50_000)) };
    let spp = buf.header().archives.first().map(|a| a.seconds_per_point);
    let _ = buf.fetch(from, until, NOW, if rng.gen() { spp } else { None });
    let _ = buf.dump();
    let mut options = FillOptions::new(NOW);
    options.now = NOW as f64 + rng.gen_range(0.0..1.0);
    let mut target = partner.clone();
    let _ = fill_buf(&buf, &mut target, &options);
    let _ = fill_buf(&buf, &mut target, &options.clone().carbonate());
    let mut reverse = buf.clone();
    let _ = fill_buf(partner, &mut reverse, &options);
    let _ = fill_buf(partner, &mut reverse, &options.carbonate());
    let retentions = partner.header().archives.iter().map(|a| a.as_retention()).collect::<Vec<_>>();
    let mut resize = ResizeOptions::new(NOW - rng.gen_range(-100..50_000));
    resize.aggregate = rng.gen();
    let _ = resize_buf(&buf, &retentions, &resize);
    let _ = merge_buf(partner, &mut buf, None, None, NOW);
    let _ = buf.update_many(&random_points(rng), NOW);
    let _ = buf.update(2.0, NOW - rng.gen_range(0..100), NOW);
}

#[test]
fn fuzz_whisper_entry_points_never_panic() {
    let seconds: u64 = std::env::var("BUCKY_FUZZ_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(15);
    let seed: u64 = std::env::var("BUCKY_FUZZ_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    let mut rng = SmallRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut executions = 0u64;
    let mut valid = 0u64;
    while Instant::now() < deadline {
        let input = random_input(&mut rng);
        let partner = valid_file(&mut rng);
        if WhisperBuf::from_bytes(input.clone()).is_ok() {
            valid += 1;
        }
        let outcome = catch_unwind(AssertUnwindSafe(|| execute(&input, &partner, &mut rng, dir.path())));
        if outcome.is_err() {
            let saved = std::env::temp_dir().join(format!("bucky-fuzz-{seed}-{executions}.wsp"));
            std::fs::write(&saved, &input).expect("save failing input");
            panic!("panic on input {} (seed {seed}, execution {executions})", saved.display());
        }
        executions += 1;
    }
    eprintln!("fuzz: {executions} executions ({valid} parsed as valid files) in {seconds} s, seed {seed}, no panic");
    assert!(executions > 100, "only {executions} executions in {seconds} s");
}
