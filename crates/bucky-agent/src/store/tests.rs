//! Store tests: races with other writers (heals, carbon-cache, replaces).

use std::fs;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bucky_wire::MetricName;
use whisper::WhisperBuf;

use super::*;
use crate::testutil::{self, now, wsp};

fn buf(points: &[(i64, f64)]) -> WhisperBuf {
    WhisperBuf::from_bytes(wsp(points)).unwrap()
}

fn points(path: &Path) -> Vec<(i64, f64)> {
    testutil::points(&fs::read(path).unwrap())
}

fn store(dir: &Path, tweak: impl FnOnce(&mut StoreOptions)) -> Store {
    let mut options = StoreOptions { lock_timeout: Duration::from_secs(10), ..StoreOptions::default() };
    tweak(&mut options);
    Store::new(dir, options)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn concurrent_creates_of_one_name_keep_both_sources_points() {
    let dir = tempfile::tempdir().unwrap();
    // Both heals write their temp file, then wait, then publish: one wins, the other heals into it.
    let store = Arc::new(store(dir.path(), |o| o.publish_delay = Duration::from_millis(300)));
    let name = MetricName::parse("race.m").unwrap();
    let sources = [buf(&[(1, 1.0), (2, 2.0)]), buf(&[(3, 3.0), (4, 4.0), (2, 20.0)])];
    let outcomes: Vec<Healed> = thread::scope(|s| {
        let handles: Vec<_> = sources
            .iter()
            .map(|src| {
                let (store, name) = (Arc::clone(&store), name.clone());
                s.spawn(move || store.heal(&name, src, 0, now()).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(outcomes.iter().filter(|o| **o == Healed::Created).count(), 1, "{outcomes:?}");
    let got = points(&store.path(&name));
    let (one, other) = (vec![(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)], vec![(1, 1.0), (2, 20.0), (3, 3.0), (4, 4.0)]);
    assert!(got == one || got == other, "{got:?}");
    assert_eq!(entries(&dir.path().join("race")), ["m.wsp"], "no temp file left");
}

#[test]
fn a_heal_waits_for_the_lock_holder_then_fills() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    let name = MetricName::parse("locked.m").unwrap();
    store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap();
    let holder = fs::File::open(store.path(&name)).unwrap();
    holder.lock().unwrap();
    let started = Instant::now();
    let release = thread::spawn(move || {
        thread::sleep(Duration::from_millis(500));
        drop(holder);
    });
    assert_eq!(store.heal(&name, &buf(&[(2, 2.0)]), 0, now()).unwrap(), Healed::Filled(1));
    assert!(started.elapsed() >= Duration::from_millis(450));
    release.join().unwrap();
    assert_eq!(points(&store.path(&name)), [(1, 1.0), (2, 2.0)]);
}

#[test]
fn a_heal_waiting_on_a_replaced_file_heals_the_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(store(dir.path(), |_| {}));
    let name = MetricName::parse("swap.m").unwrap();
    let path = store.path(&name);
    store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap();
    let holder = fs::File::open(&path).unwrap();
    holder.lock().unwrap();
    let healer = {
        let (store, name) = (Arc::clone(&store), name.clone());
        thread::spawn(move || store.heal(&name, &buf(&[(2, 2.0)]), 0, now()).unwrap())
    };
    thread::sleep(Duration::from_millis(200));
    // A replace renames a new inode over the path while the heal waits on the old one.
    let replacement = dir.path().join("replacement");
    fs::write(&replacement, buf(&[(3, 3.0)]).as_bytes()).unwrap();
    fs::rename(&replacement, &path).unwrap();
    drop(holder);
    assert_eq!(healer.join().unwrap(), Healed::Filled(1));
    assert_eq!(points(&path), [(2, 2.0), (3, 3.0)]);
}

#[test]
fn a_heal_waits_for_carbon_creating_the_file_under_its_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    let name = MetricName::parse("creating.m").unwrap();
    let path = store.path(&name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    // whisper.create: open (empty file), flock, write the header and zeroes, close.
    let creator = fs::OpenOptions::new().write(true).create_new(true).open(&path).unwrap();
    creator.lock().unwrap();
    let carbon = thread::spawn(move || {
        thread::sleep(Duration::from_millis(300));
        use std::io::Write;
        (&creator).write_all(buf(&[(5, 5.0)]).as_bytes()).unwrap();
        drop(creator);
    });
    assert_eq!(store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap(), Healed::Filled(1));
    carbon.join().unwrap();
    assert_eq!(points(&path), [(1, 1.0), (5, 5.0)]);
}

#[test]
fn a_heal_retries_a_file_half_written_without_a_lock() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    let name = MetricName::parse("half.m").unwrap();
    let path = store.path(&name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    let full = buf(&[(5, 5.0)]).as_bytes().to_vec();
    fs::write(&path, &full[..10]).unwrap();
    let writer = {
        let path = path.clone();
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(60));
            fs::write(&path, &full).unwrap();
        })
    };
    assert_eq!(store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap(), Healed::Filled(1));
    writer.join().unwrap();
    assert_eq!(points(&path), [(1, 1.0), (5, 5.0)]);
}

#[test]
fn a_file_that_stays_corrupt_is_a_conflict_and_is_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    let name = MetricName::parse("bad.m").unwrap();
    let path = store.path(&name);
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(&path, b"garbage garbage garbage garbage").unwrap();
    let err = store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap_err();
    assert!(matches!(err, AgentError::Conflict(_)), "{err}");
    assert_eq!(fs::read(&path).unwrap(), b"garbage garbage garbage garbage");
}

#[test]
fn sparse_creates_read_back_identical() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |o| o.sparse = true);
    let name = MetricName::parse("sparse.m").unwrap();
    let src = buf(&[(1, 1.0)]);
    assert_eq!(store.heal(&name, &src, 0, now()).unwrap(), Healed::Created);
    assert_eq!(fs::read(store.path(&name)).unwrap(), src.as_bytes());
    let snapshot = store.read(&name).unwrap();
    assert_eq!(snapshot.bytes, src.as_bytes());
    assert_eq!(snapshot.etag, crate::etag::etag_of(src.as_bytes()));
}

#[test]
fn write_spans_merge_only_when_asked() {
    let ranges = vec![0..12, 24..36, 100_000..100_012];
    assert_eq!(write_spans(ranges.clone(), false), ranges);
    assert_eq!(write_spans(ranges, true), vec![0..36, 100_000..100_012]);
}

#[test]
fn coalesced_heals_give_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let precise = store(&dir.path().join("p"), |_| {});
    let coalesced = store(&dir.path().join("c"), |o| o.coalesce_writes = true);
    let name = MetricName::parse("x.m").unwrap();
    let dst = buf(&(0..100).step_by(2).map(|m| (m, m as f64)).collect::<Vec<_>>());
    let src = buf(&(1..100).step_by(2).map(|m| (m, m as f64)).collect::<Vec<_>>());
    for s in [&precise, &coalesced] {
        fs::create_dir_all(s.root()).unwrap();
        assert_eq!(s.heal(&name, &dst, 0, now()).unwrap(), Healed::Created);
        assert_eq!(s.heal(&name, &src, 0, now()).unwrap(), Healed::Filled(50));
    }
    assert_eq!(fs::read(precise.path(&name)).unwrap(), fs::read(coalesced.path(&name)).unwrap());
    assert_eq!(points(&precise.path(&name)).len(), 100);
}
