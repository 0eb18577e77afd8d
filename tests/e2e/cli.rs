//! The `bucky` cluster CLI end to end: real agents on loopback, the real `bucky` binary.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use bucky_e2e::{bin, ok, text};
use serde_json::Value;

use crate::cluster::{now_minute, run_bucky, run_bucky_with, TestCluster};

#[track_caller]
fn json(out: &Output) -> Value {
    let stdout = ok(out);
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// A small deterministic generator (no extra dependency).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// Replicas of each name, as node indices, from `bucky locate -j`.
pub(crate) fn placement(cluster: &TestCluster, names: &[String]) -> BTreeMap<String, Vec<usize>> {
    let input = names.join("\n");
    let located = json(&cluster.bucky_stdin(&["locate", "-j", "-"], input.as_bytes()));
    names
        .iter()
        .map(|n| {
            let nodes = located[n].as_array().unwrap_or_else(|| panic!("{n} not located: {located}"));
            (n.clone(), nodes.iter().map(|v| cluster.index_of(v.as_str().unwrap())).collect())
        })
        .collect()
}

/// Copies per metric: node -> points, written directly on disk before the agents start.
type Layout = BTreeMap<String, BTreeMap<usize, BTreeMap<i64, f64>>>;

/// Scatters `count` metrics over the nodes: one or two copies each, on random nodes, holding overlapping
/// subsets of the metric's points (the same value for the same time, as relays would have written).
fn scatter(cluster: &TestCluster, count: usize, seed: u64) -> Layout {
    let mut rng = Lcg(seed);
    let now = now_minute();
    let nodes = cluster.ips.len();
    let mut layout = Layout::new();
    for m in 0..count {
        let name = format!("svc{}.host{:02}.metric{m}", m % 3, m % 17);
        let copies = 1 + (rng.next() % 2) as usize;
        let first = (rng.next() % nodes as u64) as usize;
        for c in 0..copies {
            let node = (first + c) % nodes;
            let points: BTreeMap<i64, f64> = (0..30)
                .filter(|k| copies == 1 || (k + c as i64) % 3 != 0)
                .map(|k| (now - k * 60, (m * 100) as f64 + k as f64))
                .collect();
            cluster.write_metric(node, &name, &points.iter().map(|(&t, &v)| (t, v)).collect::<Vec<_>>());
            layout.entry(name.clone()).or_default().insert(node, points);
        }
    }
    layout
}

fn union(copies: &BTreeMap<usize, BTreeMap<i64, f64>>) -> BTreeMap<i64, f64> {
    let mut all = BTreeMap::new();
    for points in copies.values() {
        all.extend(points.iter().map(|(&t, &v)| (t, v)));
    }
    all
}

/// After a rebalance with --delete: a metric that had a misplaced copy is on exactly its replicas, each
/// holding the union of what all its copies held before; a metric without one is untouched.
#[track_caller]
fn assert_rebalanced(cluster: &TestCluster, layout: &Layout, homes: &BTreeMap<String, Vec<usize>>) {
    for (name, copies) in layout {
        let moved = copies.keys().any(|node| !homes[name].contains(node));
        let want = union(copies);
        for node in 0..cluster.ips.len() {
            let held = cluster.points(node, name);
            if !moved {
                assert_eq!(held.as_ref(), copies.get(&node), "{name} on node {node} was consistent: untouched");
            } else if homes[name].contains(&node) {
                let held = held.unwrap_or_else(|| panic!("{name} missing on its replica {node}"));
                assert_eq!(held, want, "{name} on node {node}: points differ from the union of its copies");
            } else {
                assert!(held.is_none(), "{name} still on node {node}, not one of its replicas {:?}", homes[name]);
            }
        }
    }
}

fn misplaced(layout: &Layout, homes: &BTreeMap<String, Vec<usize>>, cluster: &TestCluster) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (name, copies) in layout {
        for node in copies.keys() {
            if !homes[name].contains(node) {
                out.insert(format!("{}: {name}", cluster.addr(*node)));
            }
        }
    }
    out
}

fn inconsistent_set(cluster: &TestCluster) -> BTreeSet<String> {
    let found = json(&cluster.bucky(&["inconsistent", "-j", "-f"]));
    let mut out = BTreeSet::new();
    for (agent, names) in found["misplaced"].as_object().unwrap() {
        for n in names.as_array().unwrap() {
            out.insert(format!("{agent}: {}", n.as_str().unwrap()));
        }
    }
    out
}

/// A rebalance of a scattered layout; `batch` is `--batch` (1: one request per metric, as with buckyd).
fn rebalance_scenario(nodes: usize, hash: &str, replicas: usize, seed: u64, batch: &str) {
    let mut cluster = TestCluster::new(nodes, hash, replicas);
    let layout = scatter(&cluster, 80, seed);
    // carbon's own statistics are local by design: never reported, never moved.
    cluster.write_metric(0, "carbon.agents.node0.cpuUsage", &[(now_minute(), 1.0)]);
    cluster.write_metric(1, "carbon.relays.r1.metricsReceived", &[(now_minute(), 1.0)]);
    cluster.start();
    let names: Vec<String> = layout.keys().cloned().collect();
    let homes = placement(&cluster, &names);
    for (name, nodes) in &homes {
        assert_eq!(nodes.len(), replicas, "{name} should have {replicas} replicas: {nodes:?}");
    }
    let expected = misplaced(&layout, &homes, &cluster);
    assert!(!expected.is_empty(), "the scenario must misplace something");
    assert_eq!(inconsistent_set(&cluster), expected, "inconsistent must list exactly the misplaced copies");

    // --no-op: the plan, exit 0, nothing changes.
    let plan = json(&cluster.bucky(&["rebalance", "--no-op", "-j", "--delete"]));
    let moves = plan.as_array().unwrap().iter().filter(|j| j.get("keep_source").is_none()).count();
    assert_eq!(moves, expected.len(), "{plan}");
    assert_eq!(inconsistent_set(&cluster), expected);

    let out = cluster.bucky(&["rebalance", "--delete", "-j", "-w", "4", "--batch", batch]);
    let summary = json(&out);
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["moved"].as_u64().unwrap() as usize, expected.len(), "{summary}");
    assert_eq!(summary["deleted"].as_u64().unwrap() as usize, expected.len(), "{summary}");
    assert!(inconsistent_set(&cluster).is_empty());
    assert_rebalanced(&cluster, &layout, &homes);
    assert!(cluster.points(0, "carbon.agents.node0.cpuUsage").is_some());
    assert!(cluster.points(1, "carbon.relays.r1.metricsReceived").is_some());

    // The whole cluster lists every metric once.
    let listed: BTreeSet<String> = ok(&cluster.bucky(&["list", "-f"])).lines().map(str::to_owned).collect();
    let mut want: BTreeSet<String> = layout.keys().cloned().collect();
    want.insert("carbon.agents.node0.cpuUsage".into());
    want.insert("carbon.relays.r1.metricsReceived".into());
    assert_eq!(listed, want);
    // A second rebalance has nothing to do.
    let again = json(&cluster.bucky(&["rebalance", "--delete", "-j"]));
    assert_eq!(again["planned"], 0, "{again}");
}

#[test]
fn rebalance_carbon_ch_rf1() {
    rebalance_scenario(3, "carbon_ch", 1, 1, "32");
}

#[test]
fn rebalance_carbon_ch_rf2_four_nodes() {
    rebalance_scenario(4, "carbon_ch", 2, 2, "7");
}

#[test]
fn rebalance_jump_fnv1a_ch_rf1() {
    rebalance_scenario(3, "jump_fnv1a_ch", 1, 3, "1");
}

#[test]
fn rebalance_jump_fnv1a_ch_rf2() {
    rebalance_scenario(3, "jump_fnv1a_ch", 2, 4, "32");
}

#[test]
fn servers_health_and_a_node_down() {
    let mut cluster = TestCluster::new(3, "carbon_ch", 2);
    cluster.write_metric(1, "a.b.c", &[(now_minute(), 1.0)]);
    cluster.start();
    let out = ok(&cluster.bucky(&["servers"]));
    assert!(out.contains("Cluster is healthy"), "{out}");
    assert!(out.contains("carbon_ch") && out.contains("Replication factor: 2"), "{out}");
    let report = json(&cluster.bucky(&["servers", "-j"]));
    assert_eq!(report["healthy"], true);
    assert_eq!(report["replication"], 2);
    assert_eq!(report["members"].as_object().unwrap().len(), 3);
    // $BUCKYHOST is the default seed.
    let out = run_bucky_with(&["servers", "-j"], &[("BUCKYHOST", &cluster.seed())], b"");
    assert_eq!(json(&out)["healthy"], true);

    // One node down: named, exit 1, never a crash.
    cluster.kill(2);
    let down = cluster.ips[2].clone();
    let out = cluster.bucky(&["servers"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&format!("NOT healthy: {down}")), "{}", text(&out.stdout));
    assert!(text(&out.stderr).contains(&down) && text(&out.stderr).contains("unreachable"), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
    // list still answers from the others, names the missing node, exits 1.
    let out = cluster.bucky(&["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout).trim(), "a.b.c");
    assert!(text(&out.stderr).contains(&down), "{}", text(&out.stderr));
    // Commands that move data refuse an unhealthy cluster (exit 2), naming the node.
    let out = cluster.bucky(&["rebalance", "--delete"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains(&down), "{}", text(&out.stderr));
    // A dead seed: a clear error, exit 1.
    cluster.kill(0);
    let out = cluster.bucky(&["servers"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&cluster.seed()), "{}", text(&out.stderr));
    assert!(!text(&out.stderr).contains("panicked"));
}

#[test]
fn rebalance_resumes_after_an_interrupted_run() {
    let mut cluster = TestCluster::new(3, "jump_fnv1a_ch", 1);
    let now = now_minute();
    let mut layout = Layout::new();
    for m in 0..150 {
        let name = format!("resume.m{m}");
        let points: BTreeMap<i64, f64> = (0..10).map(|k| (now - k * 60, m as f64 + k as f64 / 10.0)).collect();
        cluster.write_metric(0, &name, &points.iter().map(|(&t, &v)| (t, v)).collect::<Vec<_>>());
        layout.entry(name).or_default().insert(0, points);
    }
    cluster.start();
    let names: Vec<String> = layout.keys().cloned().collect();
    let homes = placement(&cluster, &names);
    let state = cluster.dir.path().join("state.jsonl");
    let state_arg = state.to_str().unwrap().to_owned();
    // Slow run (10 metrics/s), killed after a while.
    let mut child = Command::new(bin("bucky"))
        .args(["rebalance", "-h", &cluster.seed(), "--delete", "-w", "1", "--max-rate", "10"])
        .args(["--state-file", &state_arg])
        .env("BUCKY_NO_PROGRESS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let done = std::fs::read_to_string(&state).map(|s| s.lines().count()).unwrap_or(0);
        if done >= 5 {
            break;
        }
        assert!(Instant::now() < deadline, "the slow rebalance made no progress");
        std::thread::sleep(Duration::from_millis(50));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let done_before = std::fs::read_to_string(&state).unwrap().lines().count();
    let out = cluster.bucky(&["rebalance", "--delete", "-j", "--state-file", &state_arg, "-f"]);
    let summary = json(&out);
    assert_eq!(summary["errors"], 0, "{summary}");
    assert!(inconsistent_set(&cluster).is_empty());
    assert_rebalanced(&cluster, &layout, &homes);
    // The finished jobs were recorded once each.
    let lines = std::fs::read_to_string(&state).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    assert!(lines >= done_before, "{lines} < {done_before}");
}

#[test]
fn tar_restore_round_trips_every_point() {
    let mut source = TestCluster::new(3, "carbon_ch", 1);
    let layout = scatter(&source, 40, 9);
    source.start();
    let tar_path = source.dir.path().join("all.tar");
    let tgz_path = source.dir.path().join("all.tar.gz");
    let out = source.bucky(&["tar", "-f"]);
    ok(&out);
    std::fs::write(&tar_path, &out.stdout).unwrap();
    let out = source.bucky(&["tar", "-z", "-r", "^svc"]);
    ok(&out);
    assert_eq!(&out.stdout[..2], &[0x1f, 0x8b], "-z writes gzip");
    std::fs::write(&tgz_path, &out.stdout).unwrap();

    for archive in [&tar_path, &tgz_path] {
        let mut target = TestCluster::new(3, "jump_fnv1a_ch", 2);
        target.start();
        ok(&target.bucky(&["restore", archive.to_str().unwrap()]));
        let names: Vec<String> = layout.keys().cloned().collect();
        let homes = placement(&target, &names);
        for (name, copies) in &layout {
            let want = union(copies);
            for &node in &homes[name] {
                assert_eq!(
                    target.points(node, name),
                    Some(want.clone()),
                    "{name} on {node} from {}",
                    archive.display()
                );
            }
        }
        assert!(inconsistent_set(&target).is_empty());
    }
    // restore from stdin
    let mut target = TestCluster::new(2, "carbon_ch", 1);
    target.start();
    ok(&target.bucky_stdin(&["restore", "-p", "restored", "-"], &std::fs::read(&tar_path).unwrap()));
    let listed = ok(&target.bucky(&["list", "-f"]));
    assert_eq!(listed.lines().count(), layout.len());
    assert!(listed.lines().all(|l| l.starts_with("restored.svc")), "{listed}");
}

#[test]
fn delete_refuses_without_a_terminal() {
    let mut cluster = TestCluster::new(2, "carbon_ch", 2);
    for node in 0..2 {
        cluster.write_metric(node, "del.me", &[(now_minute(), 1.0)]);
        cluster.write_metric(node, "del.other.x", &[(now_minute(), 1.0)]);
        cluster.write_metric(node, "keep.me", &[(now_minute(), 1.0)]);
    }
    cluster.start();
    let out = cluster.bucky(&["delete", "del.me"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--yes"), "{}", text(&out.stderr));
    assert!(cluster.points(0, "del.me").is_some() && cluster.points(1, "del.me").is_some());
    ok(&cluster.bucky(&["delete", "--yes", "del.me"]));
    assert!(cluster.points(0, "del.me").is_none() && cluster.points(1, "del.me").is_none());
    ok(&cluster.bucky(&["delete", "--yes", "-r", "^del\\."]));
    assert!(cluster.points(0, "del.other.x").is_none() && cluster.points(1, "del.other.x").is_none());
    assert!(cluster.points(0, "keep.me").is_some() && cluster.points(1, "keep.me").is_some());
}

#[test]
fn backfill_copy_du_stat_list_locate() {
    let mut cluster = TestCluster::new(3, "carbon_ch", 1);
    let now = now_minute();
    let old: Vec<(i64, f64)> = (0..20).map(|k| (now - k * 60, k as f64)).collect();
    cluster.write_metric(0, "old.name", &old);
    cluster.write_metric(0, "node0.only.a", &[(now, 1.0)]);
    cluster.write_metric(0, "node0.only.b", &[(now, 2.0)]);
    cluster.start();

    // backfill: the new name gets every point on its replica; the old stays.
    let map = cluster.dir.path().join("map.json");
    std::fs::write(&map, r#"{"old.name": "new.name"}"#).unwrap();
    let plan = json(&cluster.bucky(&["backfill", "--no-op", "-j", map.to_str().unwrap()]));
    assert_eq!(plan.as_array().unwrap().len(), 1);
    let summary = json(&cluster.bucky(&["backfill", "-j", map.to_str().unwrap()]));
    assert_eq!(summary["moved"], 1, "{summary}");
    let homes = placement(&cluster, &["new.name".to_owned()]);
    let want: BTreeMap<i64, f64> = old.iter().copied().collect();
    assert_eq!(cluster.points(homes["new.name"][0], "new.name"), Some(want));
    assert!(cluster.points(0, "old.name").is_some());
    // backfill from stdin
    let summary = json(&cluster.bucky_stdin(&["backfill", "-j", "-"], br#"{"node0.only.a": "renamed.a"}"#));
    assert_eq!(summary["moved"], 1, "{summary}");

    // copy a whole node into another.
    let out = run_bucky(&["copy", "--src", &cluster.addr(0), "--dst", &cluster.addr(2), "-j", "-f"], b"");
    let summary = json(&out);
    assert_eq!(summary["errors"], 0, "{summary}");
    for name in ["old.name", "node0.only.a", "node0.only.b"] {
        assert_eq!(cluster.points(2, name), cluster.points(0, name), "{name}");
    }

    // du and stat see every copy.
    let du = json(&cluster.bucky(&["du", "-j", "-f"]));
    let files: u64 = du["agents"].as_object().unwrap().values().map(|u| u["metrics"].as_u64().unwrap()).sum();
    assert_eq!(files, du["total"]["metrics"].as_u64().unwrap());
    assert!(du["total"]["bytes"].as_u64().unwrap() >= files * 17_000);
    let stat = ok(&cluster.bucky(&["stat", "old.name"]));
    assert_eq!(stat.lines().count(), 2, "{stat}"); // node0 and the copy on node2
    assert!(stat.lines().all(|l| l.contains("KiB\t") && l.ends_with("\told.name")), "{stat}");

    // list: names, regex, -l, -j, stdin.
    let listed = ok(&cluster.bucky_stdin(&["list", "-", "nope.x"], b"[\"old.name\", \"node0.only.a\"]"));
    assert_eq!(listed.lines().collect::<Vec<_>>(), vec!["node0.only.a", "old.name"]);
    let long = json(&cluster.bucky(&["list", "-l", "-j", "-r", "^node0"]));
    assert_eq!(long[&cluster.addr(0)].as_array().unwrap().len(), 2, "{long}");
    let single = ok(&cluster.bucky(&["list", "-s", "-j"]));
    assert!(serde_json::from_str::<Vec<String>>(&single).unwrap().contains(&"node0.only.b".to_owned()));

    // locate prints every replica.
    let located = ok(&cluster.bucky(&["locate", "a.b", "c.d"]));
    assert_eq!(located.lines().count(), 2);
    assert!(located.lines().all(|l| l.contains(" => 127.0.")), "{located}");
}

#[test]
fn local_commands_json_and_gentestmetrics() {
    let out = run_bucky(&["json"], b"a.b\n\nc.d\n");
    assert_eq!(ok(&out).trim(), r#"["a.b","c.d"]"#);
    let out =
        run_bucky(&["gentestmetrics", "-c", "2", "-x", "2", "-i", "60", "-s", "1000030", "-v", "7", "-p", "t."], b"");
    assert_eq!(ok(&out), "t.000000 7 999960\nt.000001 7 999960\nt.000000 7 1000020\nt.000001 7 1000020\n");
    let names = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(names.path(), "x.y\n\nz\n").unwrap();
    let out = run_bucky(&["gentestmetrics", "-f", names.path().to_str().unwrap(), "-l", "5", "-s", "120"], b"");
    let lines = ok(&out);
    assert_eq!(lines.lines().count(), 2);
    for line in lines.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        assert_eq!(parts[2], "120");
        assert!(parts[1].parse::<i64>().unwrap() < 5);
    }
    // --send streams to a line receiver.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let receiver = std::thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        BufReader::new(stream).lines().map(Result::unwrap).collect::<Vec<_>>()
    });
    ok(&run_bucky(&["gentestmetrics", "-c", "5", "--send", &addr], b""));
    assert_eq!(receiver.join().unwrap().len(), 5);
    // Usage errors exit 2.
    assert_eq!(run_bucky(&["list", "-h", "host:0"], b"").status.code(), Some(2));
    assert_eq!(run_bucky(&["list", "-r"], b"").status.code(), Some(2));
    let help = ok(&run_bucky(&["list", "--help"], b""));
    assert!(help.contains("--host") && help.contains("BUCKYHOST"), "{help}");
    // Logs (RUST_LOG) to a stderr that is not a terminal carry no colour codes.
    let out = run_bucky_with(&["servers", "-h", "127.0.0.1:1", "--timeout", "1"], &[("RUST_LOG", "debug")], b"");
    let logs = text(&out.stderr);
    assert!(logs.contains("DEBUG") && !logs.contains('\x1b'), "{logs}");
}

#[test]
fn demo_moves_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = TestCluster::new(3, "carbon_ch", 1); // only reserves three free addresses and a port
    let ips = cluster.ips.join(",");
    let port = cluster.port.to_string();
    let out = run_bucky(
        &["demo", "--metrics", "300", "--ips", &ips, "--port", &port, "--dir", dir.path().to_str().unwrap()],
        b"",
    );
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("nothing lost"), "{stderr}");
    assert!(stderr.contains("inconsistent again: 0 misplaced"), "{stderr}");
    // The agents were stopped: the port is free again.
    assert!(TcpListener::bind((cluster.ips[0].as_str(), cluster.port)).is_ok());
}

/// go-graphite's `backfill2`: from one cluster into another, by regex (same names) and by map (renamed),
/// every point lands on the destination cluster's replicas; the source cluster is left as it was.
#[test]
fn backfill2_copies_between_clusters() {
    let mut source = TestCluster::new(2, "carbon_ch", 1);
    let mut dest = TestCluster::new(3, "jump_fnv1a_ch", 2);
    let now = now_minute();
    let names: Vec<String> = (0..12).map(|i| format!("app.server{i}.cpu")).collect();
    let mut written = BTreeMap::new();
    for (i, name) in names.iter().enumerate() {
        let points: Vec<(i64, f64)> = (0..30).map(|k| (now - k * 60, (i * 100 + k as usize) as f64)).collect();
        source.write_metric(i % 2, name, &points);
        written.insert(name.clone(), points.into_iter().collect::<BTreeMap<i64, f64>>());
    }
    source.write_metric(0, "other.metric", &[(now, 1.0)]);
    source.start();
    dest.start();

    let seeds = ["--src-cluster-seed", &source.seed(), "--dst-cluster-seed", &dest.seed()];
    let args = |more: &[&'static str]| -> Vec<String> {
        ["backfill2"].iter().chain(seeds.iter()).chain(more).map(|s| s.to_string()).collect()
    };
    let run = |args: Vec<String>, stdin: &[u8]| run_bucky(&args.iter().map(String::as_str).collect::<Vec<_>>(), stdin);

    let plan = json(&run(args(&["-r", "^app\\.", "--no-op", "-j"]), b""));
    assert_eq!(plan.as_array().unwrap().len(), names.len(), "{plan}");
    assert!(plan.as_array().unwrap().iter().all(|step| step["action"] == "backfill"), "{plan}");
    let plan = ok(&run(args(&["-r", "^app\\.", "--no-op"]), b""));
    assert!(plan.lines().all(|l| l.ends_with(" (backfill)")), "not labelled by what it does: {plan}");
    let summary = json(&run(args(&["-r", "^app\\.", "-j"]), b""));
    assert_eq!(summary["moved"], names.len(), "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    let homes = placement(&dest, &names);
    for name in &names {
        assert_eq!(homes[name].len(), 2, "RF 2 on the destination");
        for &node in &homes[name] {
            assert_eq!(dest.points(node, name).as_ref(), Some(&written[name]), "{name} on dest node {node}");
        }
    }
    assert!((0..3).all(|n| dest.points(n, "other.metric").is_none()), "the regex selects");
    for (i, name) in names.iter().enumerate() {
        assert_eq!(source.points(i % 2, name).as_ref(), Some(&written[name]), "the source keeps {name}");
    }

    // By map, renaming; the map comes from stdin.
    let summary = json(&run(args(&["--metric-map-file", "-", "-j"]), br#"{"app.server3.cpu": "moved.server3.cpu"}"#));
    assert_eq!(summary["moved"], 1, "{summary}");
    let renamed = placement(&dest, &["moved.server3.cpu".to_owned()]);
    for &node in &renamed["moved.server3.cpu"] {
        assert_eq!(dest.points(node, "moved.server3.cpu").as_ref(), Some(&written["app.server3.cpu"]));
    }

    // Neither a map nor a regex: a usage error, nothing done.
    let out = run(args(&[]), b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
}

/// `rebalance --allowed-dsts`: only the allowed agent receives copies; copies bound elsewhere stay where
/// they are (and are still reported by `inconsistent`), and no source is deleted unless all its replicas
/// were allowed.
#[test]
fn rebalance_writes_only_to_allowed_destinations() {
    let mut cluster = TestCluster::new(3, "carbon_ch", 1);
    let now = now_minute();
    let names: Vec<String> = (0..30).map(|i| format!("svc.host{i}.load")).collect();
    for name in &names {
        cluster.write_metric(0, name, &[(now, 1.0), (now - 60, 2.0)]);
    }
    cluster.start();
    let homes = placement(&cluster, &names);
    let (to_node1, elsewhere): (Vec<&String>, Vec<&String>) =
        names.iter().filter(|n| homes[*n][0] != 0).partition(|n| homes[*n][0] == 1);
    assert!(!to_node1.is_empty() && !elsewhere.is_empty(), "the test needs metrics bound to both other nodes");

    let summary = json(&cluster.bucky(&["rebalance", "--delete", "-j", "-f", "--allowed-dsts", &cluster.addr(1)]));
    assert_eq!(summary["errors"], 0, "{summary}");
    assert_eq!(summary["moved"], to_node1.len(), "{summary}");
    for name in &to_node1 {
        assert!(cluster.points(1, name).is_some(), "{name} moved to the allowed node");
        assert!(cluster.points(0, name).is_none(), "{name}'s source deleted after verification");
    }
    for name in &elsewhere {
        assert!(cluster.points(0, name).is_some(), "{name} stays: its replica is not allowed");
        assert!(cluster.points(2, name).is_none(), "{name} was not written to a disallowed node");
    }
    assert_eq!(inconsistent_set(&cluster).len(), elsewhere.len());
}

/// Two carbon-cache instances on host 1 and one on host 2, replication 2: with carbon's default
/// DIVERSE_REPLICAS every metric belongs on both hosts, so copies on host 2 are never misplaced and a
/// rebalance leaves them alone, although a non-diverse ring would put some metrics on host 1's two
/// instances only (and a rebalance by that ring would move them off host 2 and delete them there).
#[test]
fn diverse_replicas_spread_over_hosts() {
    let mut cluster = TestCluster::new(2, "carbon_ch", 2);
    let ring = [format!("{}=a", cluster.ips[0]), format!("{}=b", cluster.ips[0]), format!("{}=c", cluster.ips[1])];
    let now = now_minute();
    let names: Vec<String> = (0..40).map(|i| format!("db.shard{i}.qps")).collect();
    for name in &names {
        cluster.write_metric(1, name, &[(now, 1.0), (now - 60, 2.0)]);
    }
    cluster.start_with_ring(&ring, &[0, 1]);

    let servers = ok(&cluster.bucky(&["servers"]));
    assert!(servers.contains("diverse replicas"), "{servers}");
    // What a non-diverse ring would say: some metrics on host 1 only.
    let mut args =
        vec!["ring", "locate", "--hash", "carbon_ch", "--replicas", "2", "--diverse-replicas", "false", "-j"];
    args.extend(ring.iter().map(String::as_str));
    let plain = ok(&run_bucky(&args, names.join("\n").as_bytes()));
    let host1_only = plain
        .lines()
        .filter(|line| {
            let located: Value = serde_json::from_str(line).unwrap();
            located["nodes"].as_array().unwrap().iter().all(|n| n.as_str().unwrap().starts_with(&cluster.ips[0]))
        })
        .count();
    assert!(host1_only > 0, "the test needs metrics a non-diverse ring keeps on one host:\n{plain}");
    // The agents' diverse ring puts every metric on both hosts.
    let homes = placement(&cluster, &names);
    assert!(homes.values().all(|nodes| nodes.contains(&0) && nodes.contains(&1)), "{homes:?}");

    assert!(inconsistent_set(&cluster).is_empty());
    let summary = json(&cluster.bucky(&["rebalance", "--delete", "-j", "-f"]));
    assert_eq!(summary["planned"], 0, "{summary}");
    assert!(names.iter().all(|name| cluster.points(1, name).is_some()), "nothing deleted from host 2");
}

/// A renamed metric whose new home is the agent holding the old one is another file on that agent: the
/// backfill must still happen (only a copy's own file is skipped).
#[test]
fn backfill_onto_the_same_agent_under_a_new_name() {
    let mut cluster = TestCluster::new(1, "carbon_ch", 1);
    let now = now_minute();
    let old: Vec<(i64, f64)> = (0..10).map(|k| (now - k * 60, k as f64 + 0.5)).collect();
    cluster.write_metric(0, "old.name", &old);
    cluster.start();
    let summary = json(&cluster.bucky_stdin(&["backfill", "-j", "-"], br#"{"old.name": "new.name"}"#));
    assert_eq!(summary["moved"], 1, "{summary}");
    assert_eq!(cluster.points(0, "new.name"), Some(old.iter().copied().collect()));
    assert!(cluster.points(0, "old.name").is_some());
}
