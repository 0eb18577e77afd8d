//! Mixed clusters driven by `bucky`: real Go buckyd 0.4.2 (jjneely) and 0.6.0 (go-graphite) beside
//! bucky-agents on one ring, as during a node-by-node upgrade. Whisper files with known points are written
//! on a ring of N−1 nodes, the ring grows to N, and `servers`, `rebalance` (without, then with `--delete`),
//! `inconsistent` (right after the move, with and without `-f`), `tar` + `restore` and `backfill` run on
//! it. After each step every node's files are read from disk: no point lost, every metric at its ring
//! home(s), and after `--delete` nowhere else.
//!
//! Each node has its own loopback address, all on one port (buckytools assumes one port cluster-wide).
//! One 0.6.0 node may run with `-cache_path ""`, its defect of rebuilds that append to the old list, so
//! its list keeps naming every metric that was ever there: bucky must count those as gone, not fail.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Instant;

use bucky_e2e::{bin, go_peer, spawn_logged, wait_for_hashring};
use hashring::{Hash, Node, RingSpec};

use crate::cluster::{common_port, metric_path, next_block, now_minute, read_points, write_metric};

/// Which daemon a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// jjneely buckyd 0.4.2.
    Jj,
    /// go-graphite buckyd 0.6.0.
    Gg,
    /// go-graphite buckyd 0.6.0 with `-cache_path ""` (rebuilds append to the old list: stale names forever).
    GgStale,
    /// bucky-agent.
    Agent,
}

/// Points of one metric: time → value.
type Points = BTreeMap<i64, f64>;

/// Nodes of several kinds on 127.0.B.1..n, one port; killed on drop.
struct Mixed {
    dir: tempfile::TempDir,
    ips: Vec<String>,
    port: u16,
    kinds: Vec<Kind>,
    hash: &'static str,
    replicas: usize,
    procs: Vec<Option<Child>>,
    generation: u32,
    /// The ring of nodes `0..n`, by `n`.
    rings: std::sync::Mutex<BTreeMap<usize, hashring::Ring>>,
}

impl Mixed {
    fn new(kinds: &[Kind], hash: &'static str, replicas: usize) -> Mixed {
        let block = next_block();
        let ips: Vec<String> = (1..=kinds.len()).map(|i| format!("127.0.{block}.{i}")).collect();
        let port = common_port(&ips);
        let dir = tempfile::Builder::new().prefix("bucky-e2e-mixed.").tempdir().unwrap();
        for i in 0..kinds.len() {
            std::fs::create_dir_all(dir.path().join(format!("node{i}/whisper"))).unwrap();
            std::fs::create_dir_all(dir.path().join(format!("node{i}/tmp"))).unwrap();
        }
        Mixed {
            dir,
            ips,
            port,
            kinds: kinds.to_vec(),
            hash,
            replicas,
            procs: kinds.iter().map(|_| None).collect(),
            generation: 0,
            rings: std::sync::Mutex::default(),
        }
    }

    fn data(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}/whisper"))
    }

    fn addr(&self, i: usize) -> String {
        format!("{}:{}", self.ips[i], self.port)
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{i}/daemon.{}.log", self.generation))
    }

    /// Starts nodes `0..n`, each with the ring of nodes `0..n`, and waits until every one answers.
    fn start(&mut self, n: usize) {
        self.stop();
        self.generation += 1;
        let ring: Vec<String> = self.ips[..n].to_vec();
        for i in 0..n {
            let log = std::fs::File::create(self.log_path(i)).unwrap();
            let data = self.data(i);
            let mut command = match self.kinds[i] {
                Kind::Agent => {
                    let mut c = Command::new(bin("bucky-agent"));
                    c.args(["-b", &self.addr(i), "-n", &self.ips[i]])
                        .arg("-p")
                        .arg(&data)
                        .args(["--hash", self.hash, "--replicas", &self.replicas.to_string()])
                        .env("RUST_LOG", "warn");
                    c
                }
                kind => {
                    let mut c = Command::new(go_peer(if kind == Kind::Jj { "jj/buckyd" } else { "gg/buckyd" }));
                    c.args(["-b", &self.addr(i), "-n", &self.ips[i]])
                        .arg("-p")
                        .arg(&data)
                        .arg("-t")
                        .arg(self.dir.path().join(format!("node{i}/tmp")))
                        .args(["-hash", self.hash, "-replicas", &self.replicas.to_string()]);
                    match kind {
                        // No pprof listener (default localhost:6060, shared by every node), and no go-carbon
                        // file-list cache: a missing file makes 0.6.0 walk the tree, as 0.4.2 does.
                        Kind::Gg => {
                            c.arg("-pprof=").arg("-cache_path").arg(self.dir.path().join("no-such-cache.gz"));
                        }
                        Kind::GgStale => {
                            c.arg("-pprof=").arg("-cache_path=");
                        }
                        _ => {}
                    }
                    c
                }
            };
            let child = spawn_logged(command.args(&ring), log)
                .unwrap_or_else(|e| panic!("start node {i} ({:?}): {e}", self.kinds[i]));
            self.procs[i] = Some(child);
        }
        for i in 0..n {
            self.wait_ready(i);
        }
    }

    fn wait_ready(&mut self, i: usize) {
        let (addr, log, what) = (self.addr(i), self.log_path(i), format!("node {i} ({:?})", self.kinds[i]));
        wait_for_hashring(self.procs[i].as_mut().unwrap(), &addr, &what, &log);
    }

    fn stop(&mut self) {
        for proc in self.procs.iter_mut() {
            if let Some(mut child) = proc.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Ring home(s) of `name` on the ring of nodes `0..n`, as node indices (placement as carbon's router with
    /// one node per host: DIVERSE_REPLICAS cannot change it).
    fn homes(&self, n: usize, name: &str) -> BTreeSet<usize> {
        let mut rings = self.rings.lock().unwrap();
        let ring = rings.entry(n).or_insert_with(|| {
            let nodes = self.ips[..n].iter().map(|ip| Node::new(ip.clone(), None, None)).collect();
            let hash: Hash = self.hash.parse().unwrap();
            RingSpec::new(nodes, hash).replicas(self.replicas).build().unwrap()
        });
        ring.replica_indices(name).collect()
    }

    /// `bucky <cmd> -h SEED <rest…>`, seed = node `seed`.
    fn bucky(&self, seed: usize, args: &[&str]) -> Output {
        self.bucky_stdin(seed, args, b"")
    }

    fn bucky_stdin(&self, seed: usize, args: &[&str], stdin: &[u8]) -> Output {
        let seed = self.addr(seed);
        let mut full: Vec<&str> = vec![args[0], "-h", &seed];
        full.extend_from_slice(&args[1..]);
        let started = Instant::now();
        let out = crate::cluster::run_bucky(&full, stdin);
        eprintln!("bucky {} ({:.1} s)", full.join(" "), started.elapsed().as_secs_f64());
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("panicked"),
            "bucky {full:?} panicked: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Every metric file on nodes `0..n`, read from disk: name → node → points.
    fn snapshot(&self, n: usize) -> BTreeMap<String, BTreeMap<usize, Points>> {
        let mut out: BTreeMap<String, BTreeMap<usize, Points>> = BTreeMap::new();
        for i in 0..n {
            let root = self.data(i);
            for name in walk_metrics(&root) {
                let points = read_points(&root, &name).unwrap();
                out.entry(name).or_default().insert(i, points);
            }
        }
        out
    }

    /// Checks every metric of `expected` on nodes `0..n`: each of its homes holds every expected point; with
    /// `exact`, no other node holds it; and no metric exists that is not expected.
    fn check(&self, n: usize, expected: &BTreeMap<String, Points>, exact: bool, step: &str) {
        let started = Instant::now();
        let snapshot = self.snapshot(n);
        for name in snapshot.keys() {
            assert!(expected.contains_key(name), "{step}: unexpected metric {name} on the cluster");
        }
        let mut lost = 0usize;
        let mut problems = Vec::new();
        for (name, points) in expected {
            let homes = self.homes(n, name);
            let held = snapshot.get(name).cloned().unwrap_or_default();
            for &home in &homes {
                match held.get(&home) {
                    None => {
                        lost += points.len();
                        problems.push(format!("{name}: missing on its home node {home} ({})", self.addr(home)));
                    }
                    Some(have) => {
                        let missing = points.iter().filter(|(t, v)| have.get(t) != Some(v)).count();
                        if missing > 0 {
                            lost += missing;
                            problems
                                .push(format!("{name} on node {home}: {missing} of {} points missing", points.len()));
                        }
                    }
                }
            }
            if exact {
                let elsewhere: Vec<usize> = held.keys().filter(|i| !homes.contains(i)).copied().collect();
                if !elsewhere.is_empty() {
                    problems.push(format!("{name}: still on nodes {elsewhere:?}, homes {homes:?}"));
                }
            }
        }
        problems.truncate(10);
        assert!(problems.is_empty(), "{step}: {lost} points lost; {}", problems.join("; "));
        eprintln!("checked {step} ({:.1} s)", started.elapsed().as_secs_f64());
    }

    /// `inconsistent`'s misplaced copies, `{agent: [metrics]}` (exit status 0 asserted).
    fn inconsistent(&self, seed: usize, force: bool) -> BTreeMap<String, Vec<String>> {
        let mut args = vec!["inconsistent", "-j"];
        if force {
            args.push("-f");
        }
        let out = self.bucky(seed, &args);
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "inconsistent: {stderr}");
        let summary: serde_json::Value =
            serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("inconsistent -j not JSON ({e}): {stdout}"));
        let map: BTreeMap<String, Vec<String>> = serde_json::from_value(summary["misplaced"].clone())
            .unwrap_or_else(|e| panic!("inconsistent -j has no misplaced map ({e}): {stdout}"));
        map.into_iter().filter(|(_, names)| !names.is_empty()).collect()
    }
}

impl Drop for Mixed {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The dotted names of every `.wsp` below `root`.
fn walk_metrics(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_owned()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else if let Some(rel) = path.strip_prefix(root).ok().and_then(|r| r.to_str()) {
                if let Some(stem) = rel.strip_suffix(".wsp") {
                    out.push(stem.replace('/', "."));
                }
            }
        }
    }
    out
}

/// A small deterministic generator (xorshift), replayable by the seed printed on failure.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The test seed: `BUCKY_TEST_SEED`, else the clock.
fn test_seed() -> u64 {
    std::env::var("BUCKY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    }) | 1
}

/// Writes `count` metrics onto the ring of nodes `0..n`: each on its home(s) there, some also on a random
/// other node (a stray copy with points of its own, so only a union of the copies keeps them all). Returns every metric's expected points (the union).
fn populate(m: &Mixed, n: usize, count: usize, rng: &mut Rng) -> BTreeMap<String, Points> {
    let base = now_minute() - 3 * 3600;
    let mut expected = BTreeMap::new();
    for i in 0..count {
        let name = format!("mixed.g{}.m{i}", i % 9);
        let mut all = Points::new();
        let mut holders: Vec<usize> = m.homes(n, &name).into_iter().collect();
        let others: Vec<usize> = (0..n).filter(|i| !holders.contains(i)).collect();
        if !others.is_empty() && rng.below(5) == 0 {
            holders.push(others[rng.below(others.len())]);
        }
        let replicas = holders.len();
        for (k, &node) in holders.iter().enumerate() {
            // The replicas of a metric hold the same points (carbon writes each to all); a stray copy, its own.
            let k = if k < m.replicas.min(replicas) { 0 } else { k };
            let points: Vec<(i64, f64)> =
                (0..3).map(|j| (base + 60 * (10 * k as i64 + j), (i * 100 + k * 10) as f64 + j as f64)).collect();
            write_metric(&m.data(node), &name, &points);
            all.extend(points);
        }
        expected.insert(name, all);
    }
    expected
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The JSON summary of an engine command (exit status 0 asserted).
fn summary(out: &Output, what: &str) -> serde_json::Value {
    let (stdout, stderr) = text(out);
    assert_eq!(out.status.code(), Some(0), "{what}: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{what}: summary not JSON ({e}): {stdout}\n{stderr}"))
}

/// The whole scenario on a ring growing from `kinds.len() - 1` to `kinds.len()` nodes.
fn scenario(kinds: &[Kind], hash: &'static str, replicas: usize, metrics: usize) {
    scenario_with(kinds, hash, replicas, metrics, false);
}

/// [`scenario`], the engine commands with `--offload` when `offload`: the copies between bucky-agents are
/// made by the destination agents, the others go through the client.
fn scenario_with(kinds: &[Kind], hash: &'static str, replicas: usize, metrics: usize, offload: bool) {
    let seed = test_seed();
    eprintln!("mixed scenario {kinds:?} {hash} RF {replicas} offload {offload}: BUCKY_TEST_SEED={seed}");
    let engine = |args: &[&'static str]| -> Vec<&'static str> {
        args.iter().copied().chain(offload.then_some("--offload")).collect()
    };
    let mut rng = Rng(seed);
    let mut m = Mixed::new(kinds, hash, replicas);
    let n = kinds.len();
    let started = Instant::now();

    // Files on the ring of n−1 nodes, written before the daemons start (buckyd's list is built on demand).
    let mut expected = populate(&m, n - 1, metrics, &mut rng);
    m.start(n - 1);
    eprintln!("written and started ({:.1} s)", started.elapsed().as_secs_f64());

    // Grow the ring: every node restarts with n nodes.
    m.start(n);
    let seed_node = rng.below(n);
    let out = m.bucky(seed_node, &["servers"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "servers from node {seed_node}: {stdout}{stderr}");
    assert!(stdout.contains("Cluster is healthy."), "{stdout}");
    assert!(!stdout.contains("DISAGREES"), "{stdout}");

    // What is misplaced now (forced listing: waits out buckyd's 202).
    let before = m.inconsistent(seed_node, true);
    let misplaced: usize = before.values().map(Vec::len).sum();
    assert!(misplaced > 0, "growing the ring misplaced nothing: the test proves nothing");

    // rebalance without --delete: every home gets the union, the old copies stay.
    let out = m.bucky(rng.below(n), &engine(&["rebalance", "-j", "-f", "-w", "3"]));
    let s = summary(&out, "rebalance");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["moved"], misplaced as u64, "{s}");
    if offload {
        assert_offloaded(&m, &s, &text(&out).1);
    }
    m.check(n, &expected, false, "after rebalance");
    let left = m.inconsistent(rng.below(n), false);
    assert_eq!(left, before, "without --delete the misplaced copies stay");

    // rebalance --delete: each copy exactly at its homes.
    let out = m.bucky(rng.below(n), &engine(&["rebalance", "-j", "-f", "--delete"]));
    let s = summary(&out, "rebalance --delete");
    assert_eq!(s["errors"], 0, "{s}");
    assert_eq!(s["deleted"], misplaced as u64, "{s}");
    m.check(n, &expected, true, "after rebalance --delete");

    // Right after the move, with buckyd's stale lists: nothing inconsistent, forced or not, from any seed.
    for seed in 0..n {
        assert_eq!(m.inconsistent(seed, false), BTreeMap::new(), "inconsistent from node {seed} right after the move");
    }
    assert_eq!(m.inconsistent(rng.below(n), true), BTreeMap::new(), "inconsistent -f after the move");
    // A second rebalance finds nothing to do; stale names it may list are gone, not errors.
    let out = m.bucky(rng.below(n), &["rebalance", "-j", "--delete"]);
    let s = summary(&out, "second rebalance");
    assert_eq!((s["errors"].as_u64(), s["moved"].as_u64()), (Some(0), Some(0)), "{s}");
    m.check(n, &expected, true, "after the second rebalance");

    // tar of everything, then some metrics removed from every node, then restore: all back at their homes.
    let out = m.bucky(rng.below(n), &["tar", "-r", "^mixed\\."]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "tar: {stderr}");
    let archive = out.stdout;
    let unpacked = tempfile::tempdir().unwrap();
    let mut untar = Command::new("tar").arg("-x").arg("-C").arg(unpacked.path()).stdin(Stdio::piped()).spawn().unwrap();
    untar.stdin.take().unwrap().write_all(&archive).unwrap();
    assert!(untar.wait().unwrap().success(), "the archive does not unpack");
    let in_tar = walk_metrics(unpacked.path());
    assert_eq!(in_tar.len(), expected.len(), "every metric once in the archive: {stderr}");
    for (name, points) in &expected {
        let have = read_points(unpacked.path(), name).unwrap_or_else(|| panic!("{name} not in the archive"));
        assert!(points.iter().all(|(t, v)| have.get(t) == Some(v)), "{name}: points missing in the archive");
    }
    let victims: Vec<String> = expected.keys().filter(|_| rng.below(4) == 0).cloned().collect();
    for name in &victims {
        for i in 0..n {
            let _ = std::fs::remove_file(metric_path(&m.data(i), name));
        }
    }
    let out = m.bucky_stdin(rng.below(n), &["restore", "-"], &archive);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "restore: {stderr}");
    m.check(n, &expected, true, "after tar, removal and restore");

    // backfill old → new names: each new name at its homes with the old one's points; the old ones stay.
    let map: BTreeMap<String, String> = expected
        .keys()
        .filter(|_| rng.below(6) == 0)
        .map(|old| (old.clone(), old.replace("mixed.", "mixed.bf.")))
        .collect();
    let out = m.bucky_stdin(
        rng.below(n),
        &engine(&["backfill", "-j", "-f", "-"]),
        serde_json::to_string(&map).unwrap().as_bytes(),
    );
    let s = summary(&out, "backfill");
    assert_eq!(s["errors"], 0, "{s}");
    for (old, new) in &map {
        expected.insert(new.clone(), expected[old].clone());
    }
    m.check(n, &expected, true, "after backfill");
}

/// What `--offload` must show in a rebalance's summary: copies made by the destination agents; with a
/// buckyd on the ring, the copies from or to it said once and made through the client; with agents only,
/// (almost) no file bytes through the client.
fn assert_offloaded(m: &Mixed, s: &serde_json::Value, stderr: &str) {
    let (offloaded, moved) = (s["offloaded"].as_u64().unwrap(), s["moved"].as_u64().unwrap());
    let (bytes, wire) = (s["bytes"].as_u64().unwrap(), s["wire_bytes"].as_u64().unwrap());
    eprintln!("offload: {offloaded} of {moved} moved offloaded, {wire} bytes through the client for {bytes}");
    assert!(offloaded > 0, "nothing offloaded: {s}");
    if m.kinds.iter().all(|&k| k == Kind::Agent) {
        assert_eq!(offloaded, moved + s["replicas_synced"].as_u64().unwrap(), "every copy offloaded: {s}");
        assert!(wire * 10 < bytes, "{wire} bytes through the client for {bytes} offloaded: {s}");
    } else {
        assert!(offloaded < moved + s["replicas_synced"].as_u64().unwrap(), "buckyd's copies offloaded? {s}");
        assert!(stderr.contains("cannot offload"), "the fallback is not said: {stderr}");
    }
}

/// `--offload` beside a buckyd 0.4.2 (which cannot offload, nor be fetched from in batches), replication 2,
/// the new node an agent: 0 points lost, the agents' copies made by the agents.
#[test]
fn mixed_offload_agents_beside_buckyd_0_4_2_rf2_carbon() {
    scenario_with(&[Kind::Agent, Kind::Jj, Kind::Agent, Kind::Agent], "carbon", 2, 200, true);
}

/// `--offload` on agents only, replication 1: every copy made by the agents.
#[test]
fn mixed_offload_agents_only_rf1_jump() {
    scenario_with(&[Kind::Agent, Kind::Agent, Kind::Agent, Kind::Agent], "jump_fnv1a", 1, 240, true);
}

#[test]
fn mixed_all_buckyd_0_4_2_rf1_jump() {
    scenario(&[Kind::Jj, Kind::Jj, Kind::Jj, Kind::Jj], "jump_fnv1a", 1, 240);
}

#[test]
fn mixed_all_buckyd_0_6_0_rf2_fnv1a() {
    scenario(&[Kind::Gg, Kind::Gg, Kind::GgStale, Kind::Gg], "fnv1a", 2, 200);
}

/// The upgrade of issue 15: two buckyd 0.6.0 and two bucky-agents, carbon_ch, replication 1.
#[test]
fn mixed_two_buckyd_two_agents_rf1_carbon() {
    scenario(&[Kind::Gg, Kind::Agent, Kind::Gg, Kind::Agent], "carbon", 1, 240);
}

/// One buckyd of each version and two bucky-agents, replication 2; the new node is a buckyd.
#[test]
fn mixed_both_versions_and_agents_rf2_carbon() {
    scenario(&[Kind::Agent, Kind::GgStale, Kind::Agent, Kind::Jj], "carbon", 2, 200);
}
