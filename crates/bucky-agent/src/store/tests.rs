//! Store tests: races with other writers (heals, carbon-cache, replaces).

use std::fs;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bucky_wire::MetricName;
use whisper::{WhisperBuf, WhisperData};

use super::*;
use crate::error::AgentError;
use crate::testutil::{self, now, wsp};

fn buf(points: &[(i64, f64)]) -> WhisperData {
    WhisperBuf::from_bytes(wsp(points)).unwrap().into()
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
    let err = AgentError::from(store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap_err());
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

// ---- heal_many --------------------------------------------------------------------------------------------

fn names(list: &[&str]) -> Vec<MetricName> {
    list.iter().map(|n| MetricName::parse(n).unwrap()).collect()
}

#[test]
fn heal_many_creates_fills_and_fails_each_entry_on_its_own() {
    for flush in [Flush::Syncfs, Flush::Fsync] {
        let dir = tempfile::tempdir().unwrap();
        let store = store(dir.path(), |o| o.flush = flush);
        let [new_a, new_b, existing, full, corrupt, twice] = <[MetricName; 6]>::try_from(names(&[
            "many.a",
            "other.dir.b",
            "many.existing",
            "many.full",
            "many.bad",
            "many.twice",
        ]))
        .unwrap();
        store.heal(&existing, &buf(&[(1, 1.0), (2, 2.0)]), 0, now()).unwrap();
        store.heal(&full, &buf(&[(1, 1.0), (2, 2.0)]), 0, now()).unwrap();
        let full_before = fs::read(store.path(&full)).unwrap();
        fs::write(store.path(&corrupt), b"garbage garbage garbage garbage").unwrap();
        let items = vec![
            (new_a.clone(), buf(&[(1, 1.0)]), 0),
            (existing.clone(), buf(&[(2, 20.0), (3, 3.0)]), 0),
            (corrupt.clone(), buf(&[(1, 1.0)]), 0),
            (new_b.clone(), buf(&[(4, 4.0)]), 0),
            (full.clone(), buf(&[(1, 10.0)]), 0),
            // The same new name twice: the second finds the first's file at publish, and fills it.
            (twice.clone(), buf(&[(1, 1.0)]), 0),
            (twice.clone(), buf(&[(1, 10.0), (5, 5.0)]), 0),
        ];
        let results: Vec<_> = store.heal_many(&items, now()).into_iter().map(|r| r.map_err(AgentError::from)).collect();
        assert_eq!(results.len(), items.len());
        assert!(matches!(results[2], Err(AgentError::Conflict(_))), "{flush:?}: {:?}", results[2]);
        let results: Vec<Result<Healed, String>> = results.into_iter().map(|r| r.map_err(|e| e.to_string())).collect();
        assert_eq!(results[0], Ok(Healed::Created), "{flush:?}");
        assert_eq!(results[1], Ok(Healed::Filled(1)), "{flush:?}");
        assert_eq!(results[3], Ok(Healed::Created), "{flush:?}");
        assert_eq!(results[4], Ok(Healed::Filled(0)), "{flush:?}");
        assert_eq!(results[5], Ok(Healed::Created), "{flush:?}");
        assert_eq!(results[6], Ok(Healed::Filled(1)), "{flush:?}");
        assert_eq!(fs::read(store.path(&new_a)).unwrap(), items[0].1.as_bytes());
        assert_eq!(fs::read(store.path(&new_b)).unwrap(), items[3].1.as_bytes());
        assert_eq!(points(&store.path(&existing)), [(1, 1.0), (2, 2.0), (3, 3.0)], "a point was overwritten");
        assert_eq!(fs::read(store.path(&full)).unwrap(), full_before);
        assert_eq!(fs::read(store.path(&corrupt)).unwrap(), b"garbage garbage garbage garbage");
        assert_eq!(points(&store.path(&twice)), [(1, 1.0), (5, 5.0)]);
        assert_eq!(
            entries(&dir.path().join("many")),
            ["a.wsp", "bad.wsp", "existing.wsp", "full.wsp", "twice.wsp"],
            "{flush:?}"
        );
        assert_eq!(entries(&dir.path().join("other/dir")), ["b.wsp"], "{flush:?}: no temp file left");
    }
}

#[test]
fn heal_many_fills_a_file_that_appeared_between_staging_and_publishing() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |o| o.publish_delay = Duration::from_millis(400));
    let [taken, free] = <[MetricName; 2]>::try_from(names(&["race.taken", "race.free"])).unwrap();
    let path = store.path(&taken);
    let theirs = buf(&[(1, 1.0), (2, 2.0)]);
    // carbon-cache creates the file (whole, by rename) while the batch waits to publish its staged copy.
    let carbon = {
        let (path, bytes) = (path.clone(), theirs.as_bytes().to_vec());
        thread::spawn(move || {
            thread::sleep(Duration::from_millis(150));
            let temp = path.with_file_name("carbon-temp");
            fs::write(&temp, bytes).unwrap();
            fs::rename(&temp, &path).unwrap();
        })
    };
    let items = vec![(taken.clone(), buf(&[(2, 20.0), (3, 3.0)]), 0), (free.clone(), buf(&[(7, 7.0)]), 0)];
    let results: Vec<Healed> = store.heal_many(&items, now()).into_iter().map(Result::unwrap).collect();
    carbon.join().unwrap();
    assert_eq!(results, [Healed::Filled(1), Healed::Created]);
    // Filled, not replaced: carbon's points stay, the upload only filled the empty slot.
    assert_eq!(points(&path), [(1, 1.0), (2, 2.0), (3, 3.0)]);
    assert_eq!(points(&store.path(&free)), [(7, 7.0)]);
    assert_eq!(entries(&dir.path().join("race")), ["free.wsp", "taken.wsp"], "no temp file left");
}

#[test]
fn heal_many_of_more_than_one_commit_batch() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    let count = MAX_BATCH + 3;
    let src = buf(&[(1, 1.0)]);
    let items: Vec<_> =
        (0..count).map(|i| (MetricName::parse(&format!("big.d{}.m{i}", i % 3)).unwrap(), src.clone(), 0)).collect();
    let results = store.heal_many(&items, now());
    assert_eq!(results.len(), count);
    assert!(results.iter().all(|r| matches!(r, Ok(Healed::Created))));
    let files: usize = (0..3).map(|d| entries(&dir.path().join(format!("big/d{d}"))).len()).sum();
    assert_eq!(files, count);
    assert!(store.heal_many::<HealItem>(&[], now()).is_empty());
}

// ---- long names, failed creates ---------------------------------------------------------------------------

#[test]
fn names_whose_last_component_is_up_to_251_bytes_are_created_healed_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    // 224 bytes was the first length whose temp name went past 255 bytes; 251 (255 with `.wsp`) the last
    // one a name allows.
    for len in [224, 240, 251] {
        let last = "x".repeat(len);
        let name = MetricName::parse(&format!("long{len}.{last}")).unwrap();
        let path = store.path(&name);
        assert_eq!(path.file_name().unwrap().len(), len + 4);
        assert_eq!(store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap(), Healed::Created, "{len}");
        assert_eq!(store.heal(&name, &buf(&[(2, 2.0)]), 0, now()).unwrap(), Healed::Filled(1), "{len}");
        assert_eq!(testutil::points(&store.read(&name).unwrap().bytes), [(1, 1.0), (2, 2.0)], "{len}");
        let other_layout = WhisperData::from_bytes(testutil::wsp_with("1m:2d", &[(3, 3.0)])).unwrap();
        assert_eq!(store.replace(&name, &other_layout, None, 0).unwrap(), Replaced::Renamed, "{len}");
        assert_eq!(store.read(&name).unwrap().bytes, other_layout.as_bytes(), "{len}");
        // A PUT and a batch heal of a new long name create it too.
        let put = MetricName::parse(&format!("long{len}.put.{last}")).unwrap();
        assert_eq!(store.replace(&put, &buf(&[(4, 4.0)]), None, 0).unwrap(), Replaced::Created, "{len}");
        let batch = MetricName::parse(&format!("long{len}.batch.{last}")).unwrap();
        let results = store.heal_many(&[(batch.clone(), buf(&[(5, 5.0)]), 0)], now());
        assert!(matches!(results[..], [Ok(Healed::Created)]), "{len}: {results:?}");
        assert_eq!(points(&store.path(&batch)), [(5, 5.0)], "{len}");
        let file = format!("{last}.wsp");
        let top = dir.path().join(format!("long{len}"));
        assert_eq!(entries(&top), ["batch", "put", file.as_str()], "{len}: no temp file left");
        assert_eq!(entries(&top.join("put")), [file.as_str()], "{len}: no temp file left");
        assert_eq!(entries(&top.join("batch")), [file.as_str()], "{len}: no temp file left");
    }
}

/// The entries below `root`, recursively, as paths relative to it.
fn tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            out.push(path.strip_prefix(root).unwrap().to_string_lossy().into_owned());
            if path.is_dir() {
                dirs.push(path);
            }
        }
    }
    out.sort();
    out
}

/// A metric name whose file's directory is `dir_len` bytes long below `root` (components of at most 200
/// bytes), its last component `last`.
fn name_with_dir_of(root: &Path, dir_len: usize, last: &str) -> MetricName {
    let mut parts = Vec::new();
    let mut len = root.as_os_str().len();
    while len < dir_len {
        let part = (dir_len - len - 1).min(200);
        assert!(part > 0, "cannot reach {dir_len} bytes");
        parts.push("d".repeat(part));
        len += 1 + part;
    }
    parts.push(last.to_owned());
    let name = MetricName::parse(&parts.join(".")).unwrap();
    assert_eq!(root.join(name.relative_path()).parent().unwrap().as_os_str().len(), dir_len);
    name
}

#[test]
fn a_create_that_fails_leaves_no_directory_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |_| {});
    store.heal(&MetricName::parse("kept.m").unwrap(), &buf(&[(1, 1.0)]), 0, now()).unwrap();
    let before = tree(dir.path());
    // The directories fit in PATH_MAX (4096 bytes with the NUL), the metric's file too, but its temp file
    // does not: the create fails once every directory is made.
    let name = &name_with_dir_of(dir.path(), 4060, "m");
    assert!(store.path(name).as_os_str().len() < 4096);
    {
        let err = AgentError::from(store.heal(name, &buf(&[(1, 1.0)]), 0, now()).unwrap_err());
        // ENAMETOOLONG: a 400 naming the cause (the name is valid, its temp file's path is not).
        assert!(matches!(err, AgentError::BadRequest(_)), "{err}");
        assert_eq!(tree(dir.path()), before, "a failed POST left something");
        store.replace(name, &buf(&[(1, 1.0)]), None, 0).unwrap_err();
        assert_eq!(tree(dir.path()), before, "a failed PUT left something");
        let results: Vec<_> = store
            .heal_many(&[(name.clone(), buf(&[(1, 1.0)]), 0)], now())
            .into_iter()
            .map(|r| r.map_err(AgentError::from))
            .collect();
        assert!(matches!(results[..], [Err(AgentError::BadRequest(_))]), "{results:?}");
        assert_eq!(tree(dir.path()), before, "a failed batch heal left something");
    }
}

/// Removes the first temp file staged in `dir` (waiting for one), as an operator's clean-up might: the
/// create staging it then fails at its publish.
fn remove_staged_temp(dir: PathBuf) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let temps = fs::read_dir(&dir).into_iter().flatten().map(|e| e.unwrap().path());
            if let Some(temp) = temps.into_iter().find(|p| p.file_name().unwrap().to_string_lossy().starts_with('.')) {
                fs::remove_file(temp).unwrap();
                return;
            }
            assert!(Instant::now() < deadline, "the create never staged its file");
            thread::sleep(Duration::from_millis(5));
        }
    })
}

#[test]
fn a_create_failing_at_its_publish_leaves_no_directory_it_made() {
    let dir = tempfile::tempdir().unwrap();
    let store = store(dir.path(), |o| o.publish_delay = Duration::from_millis(500));
    fs::create_dir(dir.path().join("shared")).unwrap();
    let name = MetricName::parse("new.dirs.m").unwrap();
    for batch in [false, true] {
        let remover = remove_staged_temp(dir.path().join("new/dirs"));
        let result = if batch {
            store.heal_many(&[(name.clone(), buf(&[(1, 1.0)]), 0)], now()).pop().unwrap().map(|_| ())
        } else {
            store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).map(|_| ())
        };
        remover.join().unwrap();
        let result = result.map_err(AgentError::from);
        assert!(matches!(result, Err(AgentError::NotFound)), "batch {batch}: {result:?}");
        assert_eq!(tree(dir.path()), ["shared"], "batch {batch}: the new directories were left");
    }
    // A directory that holds a file by then (a sibling created meanwhile) stays.
    store.heal(&MetricName::parse("new.dirs.sibling").unwrap(), &buf(&[(1, 1.0)]), 0, now()).unwrap();
    let remover = remove_staged_temp(dir.path().join("new/dirs"));
    store.heal(&name, &buf(&[(1, 1.0)]), 0, now()).unwrap_err();
    remover.join().unwrap();
    assert_eq!(tree(dir.path()), ["new", "new/dirs", "new/dirs/sibling.wsp", "shared"]);
}

// ---- go-whisper compressed files --------------------------------------------------------------------------

/// A stand-in for a go-whisper compressed file: its magic, then bytes bucky never parses.
fn compressed(seed: u8) -> WhisperData {
    let mut bytes = whisper::COMPRESSED_MAGIC.to_vec();
    bytes.extend((0..5000u32).map(|i| (i as u8).wrapping_mul(seed)));
    WhisperData::from_bytes(bytes).unwrap()
}

/// A compressed upload creates a missing file whole (read back byte for byte), and is refused into an
/// existing file; a standard upload is refused into a compressed file. Refused heals change nothing, in
/// the agent's mode (waits reported) too, and each entry of a batch fails or succeeds on its own.
#[test]
fn compressed_files_are_created_whole_and_never_filled() {
    let dir = tempfile::tempdir().unwrap();
    let plain = store(dir.path(), |_| {});
    let agent = store(dir.path(), |_| {}).reporting_waits(crate::budget::Budget::unlimited());
    let [new, standard, packed] = <[MetricName; 3]>::try_from(names(&["c.new", "c.standard", "c.packed"])).unwrap();
    let src = compressed(3);
    assert_eq!(plain.heal(&new, &src, 0, now()).unwrap(), Healed::Created);
    assert_eq!(fs::read(plain.path(&new)).unwrap(), src.as_bytes());
    assert_eq!(plain.read(&new).unwrap().bytes, src.as_bytes(), "served as it is");
    plain.heal(&standard, &buf(&[(1, 1.0)]), 0, now()).unwrap();
    plain.heal(&packed, &compressed(5), 0, now()).unwrap();
    let (standard_before, packed_before) =
        (fs::read(plain.path(&standard)).unwrap(), fs::read(plain.path(&packed)).unwrap());
    for (store, other) in [(&plain, "c.other1"), (&agent, "c.other2")] {
        let other = MetricName::parse(other).unwrap();
        let err = store.heal(&standard, &src, 0, now()).unwrap_err();
        assert!(matches!(err, StoreError::CompressedUpload { .. }), "{err}");
        let err = AgentError::from(err);
        assert_eq!(err.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        assert!(err.to_string().contains("c/standard.wsp: the upload is a compressed whisper file"), "{err}");
        for upload in [buf(&[(2, 2.0)]), src.clone()] {
            let err = store.heal(&packed, &upload, 0, now()).unwrap_err();
            assert!(matches!(err, StoreError::Compressed(_) | StoreError::CompressedUpload { .. }), "{err}");
            assert_eq!(AgentError::from(err).status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
        }
        let err = store.heal(&packed, &buf(&[(2, 2.0)]), 0, now()).unwrap_err().to_string();
        assert!(err.contains("c/packed.wsp: compressed whisper file") && !err.contains('\n'), "{err}");
        let items = vec![
            (packed.clone(), buf(&[(3, 3.0)]), 0),
            (standard.clone(), src.clone(), 0),
            (other.clone(), src.clone(), 0),
        ];
        let results = store.heal_many(&items, now());
        assert!(matches!(results[0], Err(StoreError::Compressed(_))), "{:?}", results[0]);
        assert!(matches!(results[1], Err(StoreError::CompressedUpload { .. })), "{:?}", results[1]);
        assert!(matches!(results[2], Ok(Healed::Created)), "{:?}", results[2]);
        assert_eq!(fs::read(plain.path(&other)).unwrap(), src.as_bytes());
        assert_eq!(fs::read(plain.path(&standard)).unwrap(), standard_before, "a refused heal changed the file");
        assert_eq!(fs::read(plain.path(&packed)).unwrap(), packed_before, "a refused heal changed the file");
    }
    // A PUT replaces a file whole, whichever kind either one is.
    assert_eq!(plain.replace(&standard, &src, None, 0).unwrap(), Replaced::Renamed);
    assert_eq!(fs::read(plain.path(&standard)).unwrap(), src.as_bytes());
    let back = buf(&[(9, 9.0)]);
    assert_eq!(plain.replace(&standard, &back, None, 0).unwrap(), Replaced::Renamed);
    assert_eq!(fs::read(plain.path(&standard)).unwrap(), back.as_bytes());
}
