//! `bucky audit` and `bucky repair` on clusters of real agents: a node stopped while writes go on to the
//! other replicas, then restarted (RF 2 and 3; carbon_ch with DIVERSE_REPLICAS on and off and several
//! instances per host; jump_fnv1a_ch); a ring raised from RF 1 to 2; conflicting values with `--prefer`
//! and the newest file; a corrupt replica. Each time the audit names exactly what the test broke, repair
//! gives every replica every point any replica had, and a second audit is clean. Replay with
//! `BUCKY_AUDIT_SEED`. The files are written behind the agents' backs, so every command forces their
//! metric lists (`-f`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use bucky_e2e::{json_of, text, Rng};
use serde_json::Value;

use crate::cli::placement;
use crate::cluster::{now_minute, TestCluster};

/// The metrics of a finding kind in an audit's JSON (`missing`: those with a replica without a file).
fn findings(report: &Value, kind: &str) -> BTreeSet<String> {
    report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| match kind {
            "missing" => !f["missing"].as_array().unwrap().is_empty(),
            _ => f["divergent"].as_bool().unwrap(),
        })
        .map(|f| f["metric"].as_str().unwrap().to_owned())
        .collect()
}

/// The replicas (node indices, distinct hosts, ring order) of each name.
fn homes(cluster: &TestCluster, names: &[String]) -> BTreeMap<String, Vec<usize>> {
    placement(cluster, names)
        .into_iter()
        .map(|(name, nodes)| {
            let mut distinct = Vec::new();
            for n in nodes {
                if !distinct.contains(&n) {
                    distinct.push(n);
                }
            }
            (name, distinct)
        })
        .collect()
}

/// Every point each replica of each metric must hold after a repair: the union of what was written.
type Written = BTreeMap<String, BTreeMap<i64, f64>>;

#[track_caller]
fn assert_union_everywhere(cluster: &TestCluster, homes: &BTreeMap<String, Vec<usize>>, written: &Written) {
    for (name, points) in written {
        for &node in &homes[name] {
            let held = cluster.points(node, name).unwrap_or_else(|| panic!("{name} has no file on node {node}"));
            for (t, v) in points {
                assert_eq!(held.get(t), Some(v), "{name} on node {node} at {t}");
            }
        }
    }
}

/// A node stops while writes go on to the other replicas (written with the whisper library, as carbon
/// would), and comes back. One scenario per ring kind.
fn stopped_node_scenario(hash: &str, replicas: usize, hosts: usize, ring: Vec<String>, agent_args: &[&str]) {
    let seed = Rng::env_seed("BUCKY_AUDIT_SEED");
    eprintln!("BUCKY_AUDIT_SEED={seed}");
    let mut rng = Rng(seed);
    let mut cluster = TestCluster::new(hosts, hash, replicas);
    cluster.agent_args = agent_args.iter().map(|s| s.to_string()).collect();
    let ring: Vec<String> = ring.iter().map(|n| n.replace("HOST", "")).collect();
    let ring: Vec<String> = ring
        .iter()
        .map(|n| {
            let (i, rest) = n.split_once(':').unwrap_or((n, ""));
            let ip = &cluster.ips[i.parse::<usize>().unwrap()];
            if rest.is_empty() {
                ip.clone()
            } else {
                format!("{ip}:{rest}")
            }
        })
        .collect();
    cluster.start_with_ring(&ring, &(0..hosts).collect::<Vec<_>>());
    let names: Vec<String> = (0..40).map(|m| format!("app{}.host{:02}.m{m}", m % 3, m % 7)).collect();
    let late: Vec<String> = (0..6).map(|m| format!("late.host{m}.created")).collect();
    let all: Vec<String> = names.iter().chain(&late).cloned().collect();
    let homes = homes(&cluster, &all);
    let now = now_minute();
    let mut written = Written::new();
    for name in &names {
        let points: Vec<(i64, f64)> = (5..60).map(|k| (now - k * 60, (rng.below(1000)) as f64)).collect();
        for &node in &homes[name] {
            cluster.write_metric(node, name, &points);
        }
        written.entry(name.clone()).or_default().extend(points);
    }
    let audit = cluster.bucky(&["audit", "-f", "--json"]);
    let report = json_of(&audit);
    assert!(audit.status.success(), "{report}\n{}", text(&audit.stderr));
    assert_eq!((report["healthy"].as_u64(), report["metrics"].as_u64()), (Some(40), Some(40)), "{report}");
    // Digests only: far less than 1 % of the 17,308-byte files.
    let per_copy = report["wire_bytes"].as_u64().unwrap() / report["copies"].as_u64().unwrap();
    assert!(per_copy < 173, "{per_copy} bytes per copy");

    // Node `down` stops; the others go on receiving points, and new metrics appear.
    let down = rng.below(hosts);
    cluster.kill(down);
    let mut diverged = BTreeSet::new();
    let mut missing = BTreeSet::new();
    let mut changed_at = BTreeMap::new();
    for name in &all {
        let is_late = late.contains(name);
        if !is_late && !rng.chance(40) {
            continue;
        }
        let k = rng.below(4) as i64; // the last minutes
        let points = vec![(now - k * 60, 0.25 + rng.below(100) as f64)];
        // (Without DIVERSE_REPLICAS both replicas can be instances of the stopped host: nothing received.)
        if homes[name].iter().all(|&n| n == down) {
            continue;
        }
        for &node in homes[name].iter().filter(|&&n| n != down) {
            cluster.write_metric(node, name, &points);
        }
        written.entry(name.clone()).or_default().extend(points.iter().copied());
        if homes[name].contains(&down) {
            if is_late {
                missing.insert(name.clone());
            } else {
                diverged.insert(name.clone());
                changed_at.insert(name.clone(), now - k * 60);
            }
        }
    }
    assert!(!diverged.is_empty() && !missing.is_empty(), "seed {seed}: the scenario must break something");
    cluster.start_with_ring(&ring, &[down]);

    let audit = cluster.bucky(&["audit", "-f", "--json"]);
    let report = json_of(&audit);
    assert_eq!(audit.status.code(), Some(1), "{report}");
    assert_eq!(findings(&report, "missing"), missing, "seed {seed}");
    assert_eq!(findings(&report, "divergent"), diverged, "seed {seed}");
    assert_eq!(report["misplaced"].as_u64(), Some(0));
    for finding in report["findings"].as_array().unwrap().iter().filter(|f| f["divergent"].as_bool().unwrap()) {
        let name = finding["metric"].as_str().unwrap();
        let t = changed_at[name];
        let ranges = finding["ranges"].as_array().unwrap();
        assert!(!ranges.is_empty(), "{finding}");
        // The finest archive's differing range holds the point that node `down` missed.
        assert!(
            ranges.iter().any(|r| r["seconds_per_point"] == 60
                && r["from"].as_i64().unwrap() <= t
                && t < r["until"].as_i64().unwrap()),
            "{name}: {t} not in {finding}"
        );
    }
    // The text form names the same.
    let plain = cluster.bucky(&["audit", "-f"]);
    let stdout = text(&plain.stdout);
    assert_eq!(stdout.lines().filter(|l| l.starts_with("divergent ")).count(), diverged.len(), "{stdout}");
    assert_eq!(stdout.lines().filter(|l| l.starts_with("missing ")).count(), missing.len(), "{stdout}");

    // --no-op changes nothing.
    let before: Vec<_> = all.iter().map(|n| (0..hosts).map(|i| cluster.points(i, n)).collect::<Vec<_>>()).collect();
    let plan = cluster.bucky(&["repair", "-f", "--no-op"]);
    assert!(plan.status.success(), "{}", text(&plan.stderr));
    assert!(text(&plan.stdout).contains("(repair: from the reference replica"), "{}", text(&plan.stdout));
    let after: Vec<_> = all.iter().map(|n| (0..hosts).map(|i| cluster.points(i, n)).collect::<Vec<_>>()).collect();
    assert_eq!(before, after, "--no-op changed files");

    let repair = cluster.bucky(&["repair", "-f", "--json"]);
    let summary = json_of(&repair);
    assert!(repair.status.success(), "{summary}\n{}", text(&repair.stderr));
    assert_eq!(summary["errors"].as_u64(), Some(0), "{summary}");
    assert_eq!(summary["replicas_created"].as_u64(), Some(missing.len() as u64), "{summary}");
    assert_union_everywhere(&cluster, &homes, &written);
    let audit = cluster.bucky(&["audit", "-f", "--json"]);
    let report = json_of(&audit);
    assert!(audit.status.success(), "{report}");
    assert_eq!((report["missing"].as_u64(), report["divergent"].as_u64()), (Some(0), Some(0)));
    // Every metric written anywhere (a late one whose every replica was down was never written).
    assert_eq!(report["healthy"].as_u64(), Some(written.len() as u64), "seed {seed}");
}

#[test]
fn carbon_ch_rf2_several_instances_per_host_diverse_off() {
    let ring = ["0:2003=a", "0:2103=b", "1:2003=a", "1:2103=b", "2:2003=a"].map(String::from).to_vec();
    stopped_node_scenario("carbon_ch", 2, 3, ring, &["--diverse-replicas", "false"]);
}

#[test]
fn carbon_ch_rf3_diverse_on() {
    let ring = ["0:2003=a", "0:2103=b", "1:2003=a", "2:2003=a", "3:2003=a"].map(String::from).to_vec();
    stopped_node_scenario("carbon_ch", 3, 4, ring, &["--diverse-replicas", "true"]);
}

#[test]
fn jump_fnv1a_ch_rf2() {
    let ring = ["0", "1", "2"].map(String::from).to_vec();
    stopped_node_scenario("jump_fnv1a_ch", 2, 3, ring, &[]);
}

/// A ring raised from replication 1 to 2: the audit counts exactly the metrics with one copy (each is on
/// its first replica, carbon_ch's RF 1 home), repair creates the second, every point checked.
#[test]
fn raising_replication_from_1_to_2() {
    let mut cluster = TestCluster::new(3, "carbon_ch", 1);
    cluster.start();
    let names: Vec<String> = (0..50).map(|m| format!("raise{}.m{m}", m % 4)).collect();
    let single = homes(&cluster, &names);
    let now = now_minute();
    let mut written = Written::new();
    for (m, name) in names.iter().enumerate() {
        let points: Vec<(i64, f64)> = (0..30).map(|k| (now - k * 60, (m * 10 + k as usize) as f64)).collect();
        cluster.write_metric(single[name][0], name, &points);
        written.insert(name.clone(), points.into_iter().collect());
    }
    cluster.stop();
    cluster.replicas = 2;
    cluster.start();
    let homes = homes(&cluster, &names);
    let one_copy: BTreeSet<String> = names.iter().filter(|n| homes[*n].contains(&single[*n][0])).cloned().collect();
    let audit = cluster.bucky(&["audit", "-f", "--json"]);
    let report = json_of(&audit);
    assert_eq!(audit.status.code(), Some(1));
    assert_eq!(report["missing"].as_u64(), Some(one_copy.len() as u64), "{report}");
    assert_eq!(findings(&report, "missing"), one_copy);
    assert_eq!(report["misplaced"].as_u64(), Some((names.len() - one_copy.len()) as u64));
    let repair = cluster.bucky(&["repair", "-f", "--json"]);
    let summary = json_of(&repair);
    assert!(repair.status.success(), "{summary}");
    assert_eq!(summary["replicas_created"].as_u64(), Some(one_copy.len() as u64), "{summary}");
    let repaired: Written = written.into_iter().filter(|(n, _)| one_copy.contains(n)).collect();
    assert_union_everywhere(&cluster, &homes, &repaired);
    let report = json_of(&cluster.bucky(&["audit", "-f", "--json"]));
    assert_eq!((report["missing"].as_u64(), report["divergent"].as_u64()), (Some(0), Some(0)), "{report}");
}

/// Conflicts (two replicas with other values at one time): the newest file's value wins, or the
/// `--prefer`red replica's; the counts say how many values were replaced. A corrupt replica is reported
/// by the audit (exit 1) and left as it is.
#[test]
fn conflicts_go_to_the_newest_or_preferred_replica_and_corrupt_files_are_reported() {
    let mut cluster = TestCluster::new(2, "carbon_ch", 2);
    cluster.start();
    let now = now_minute();
    let names = ["conflict.newest".to_owned(), "conflict.preferred".to_owned(), "conflict.corrupt".to_owned()];
    for name in &names {
        cluster.write_metric(0, name, &[(now - 60, 1.0), (now - 120, 2.0)]);
        cluster.write_metric(1, name, &[(now - 60, 10.0), (now - 180, 3.0)]);
    }
    // Node 0's copy of `newest` is the newer file.
    let old = SystemTime::now() - Duration::from_secs(3600);
    for name in &names {
        let path = crate::cluster::metric_path(&cluster.data(1), name);
        std::fs::File::options().write(true).open(path).unwrap().set_modified(old).unwrap();
    }
    let corrupt = crate::cluster::metric_path(&cluster.data(1), "conflict.corrupt");
    std::fs::write(&corrupt, b"not a whisper file at all, and far too short").unwrap();
    let audit = cluster.bucky(&["audit", "-f", "--json"]);
    let report = json_of(&audit);
    assert_eq!(audit.status.code(), Some(1));
    assert_eq!(report["divergent"].as_u64(), Some(2), "{report}");
    assert_eq!(report["errors"].as_u64(), Some(1), "{report}");
    let reason = report["failures"][0]["reason"].as_str().unwrap();
    assert!(reason.contains("not a valid whisper file"), "{reason}");
    let repair = cluster.bucky(&["repair", "-f", "--json", "conflict.newest"]);
    let summary = json_of(&repair);
    assert!(repair.status.success(), "{summary}\n{}", text(&repair.stderr));
    assert_eq!(summary["points_replaced"].as_u64(), Some(1), "{summary}");
    let want: BTreeMap<i64, f64> = [(now - 180, 3.0), (now - 120, 2.0), (now - 60, 1.0)].into_iter().collect();
    for node in 0..2 {
        let held: BTreeMap<i64, f64> =
            cluster.points(node, "conflict.newest").unwrap().into_iter().filter(|(t, _)| *t != 0).collect();
        assert_eq!(held, want, "node {node}");
    }
    let prefer = cluster.addr(1);
    let repair = cluster.bucky(&["repair", "-f", "--json", "--prefer", &prefer, "conflict.preferred"]);
    assert!(repair.status.success(), "{}", text(&repair.stderr));
    for node in 0..2 {
        assert_eq!(cluster.points(node, "conflict.preferred").unwrap().get(&(now - 60)), Some(&10.0), "node {node}");
    }
    let bad = cluster.bucky(&["repair", "--prefer", "nowhere:1", "conflict.preferred"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad.stderr));
    assert!(text(&bad.stderr).contains("not a member"), "{}", text(&bad.stderr));
    let report = json_of(&cluster.bucky(&["audit", "-f", "--json"]));
    assert_eq!((report["divergent"].as_u64(), report["errors"].as_u64()), (Some(0), Some(1)), "{report}");
    assert_eq!(std::fs::read(&corrupt).unwrap(), b"not a whisper file at all, and far too short");
}
