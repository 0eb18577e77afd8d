//! `bucky drain`: a node removed from a 4-node ring (the other three and the leaving one restarted with
//! the 3-node ring, so the leaving agent runs outside it) is emptied into the metrics' new homes, every
//! point accounted for by reading every node's files; `--no-op` changes nothing; the leaving agent refuses
//! heals; the seed and the drained node are checked for their roles.

use std::collections::BTreeMap;

use bucky_e2e::{json_of, text};
use serde_json::Value;

use crate::cli::placement;
use crate::cluster::{now_minute, TestCluster};

/// Copies per metric: node -> points.
type Layout = BTreeMap<String, BTreeMap<usize, BTreeMap<i64, f64>>>;

/// A small deterministic generator, replayable by seed.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 33
    }
}

/// `count` metrics on the leaving node `leaving`, each with overlapping points and sometimes a second
/// copy on another node; plus a few metrics that are only on the other nodes.
fn scatter(cluster: &TestCluster, leaving: usize, count: usize, seed: u64) -> Layout {
    let mut rng = Lcg(seed);
    let now = now_minute();
    let mut layout = Layout::new();
    for m in 0..count + 5 {
        let name = format!("drain{}.host{:02}.m{m}", m % 3, m % 11);
        let mut nodes = Vec::new();
        if m < count {
            nodes.push(leaving);
        }
        if m >= count || rng.next().is_multiple_of(2) {
            let other = (rng.next() % leaving as u64) as usize; // one of the staying nodes
            nodes.push(other);
        }
        for (c, &node) in nodes.iter().enumerate() {
            let points: BTreeMap<i64, f64> = (0..20)
                .filter(|k| nodes.len() == 1 || (k + c as i64) % 3 != 0)
                .map(|k| (now - k * 60, (m * 100) as f64 + k as f64))
                .collect();
            cluster.write_metric(node, &name, &points.iter().map(|(&t, &v)| (t, v)).collect::<Vec<_>>());
            layout.entry(name.clone()).or_default().insert(node, points);
        }
    }
    layout
}

/// Every node's points of every metric.
fn snapshot(cluster: &TestCluster, layout: &Layout) -> BTreeMap<(String, usize), Option<BTreeMap<i64, f64>>> {
    let mut out = BTreeMap::new();
    for name in layout.keys() {
        for node in 0..cluster.ips.len() {
            out.insert((name.clone(), node), cluster.points(node, name));
        }
    }
    out
}

/// After the drain: nothing on the leaving node; each of its metrics on every one of its homes with the
/// union of the leaving copy and the copies the homes held; every other copy untouched.
#[track_caller]
fn assert_drained(cluster: &TestCluster, layout: &Layout, homes: &BTreeMap<String, Vec<usize>>, leaving: usize) {
    for (name, copies) in layout {
        assert!(cluster.points(leaving, name).is_none(), "{name} is still on the drained node");
        let mut want: BTreeMap<i64, f64> = BTreeMap::new();
        for (node, points) in copies {
            if *node == leaving || homes[name].contains(node) {
                want.extend(points.iter().map(|(&t, &v)| (t, v)));
            }
        }
        for node in (0..cluster.ips.len()).filter(|&n| n != leaving) {
            let held = cluster.points(node, name);
            if copies.contains_key(&leaving) && homes[name].contains(&node) {
                assert_eq!(held.as_ref(), Some(&want), "{name} on its home {node}");
            } else {
                assert_eq!(held.as_ref(), copies.get(&node), "{name} on node {node}: untouched");
            }
        }
    }
}

fn drain_scenario(hash: &str, replicas: usize, seed: u64) {
    let mut cluster = TestCluster::new(4, hash, replicas);
    let leaving = 3;
    let layout = scatter(&cluster, leaving, 40, seed);
    cluster.start();
    // The node leaves the ring: the three others, and the leaving one too, restart with the 3-node ring.
    cluster.stop();
    let ring: Vec<String> = cluster.ips[..3].to_vec();
    cluster.start_with_ring(&ring, &[0, 1, 2, 3]);
    assert!(cluster.log(leaving).contains("this node is not in the ring"), "{}", cluster.log(leaving));
    let node = cluster.addr(leaving);
    let names: Vec<String> = layout.keys().cloned().collect();
    let homes = placement(&cluster, &names);
    assert!(homes.values().all(|h| h.len() == replicas && !h.contains(&leaving)), "{homes:?}");
    let on_leaving = layout.values().filter(|c| c.contains_key(&leaving)).count();

    // --no-op: the plan (every metric of the node, then deleted from it), nothing changes.
    let before = snapshot(&cluster, &layout);
    let plan = json_of(&cluster.bucky(&["drain", "--no-op", "-j", &node]));
    let moves: Vec<&Value> = plan.as_array().unwrap().iter().filter(|j| j["source"] == node.as_str()).collect();
    assert_eq!(moves.len(), on_leaving, "{plan}");
    assert!(moves.iter().all(|j| j["delete"] == true), "{plan}");
    assert_eq!(snapshot(&cluster, &layout), before, "--no-op changed something");

    // The agent outside the ring refuses heals: no new copy may land on a node being drained.
    let refused = cluster.bucky(&["copy", "--src", &cluster.addr(0), "--dst", &node, "--attempts", "1"]);
    assert_eq!(refused.status.code(), Some(1), "{}", text(&refused.stderr));
    assert!(text(&refused.stderr).contains("not in the ring"), "{}", text(&refused.stderr));
    assert_eq!(snapshot(&cluster, &layout), before, "a refused heal changed something");

    let out = cluster.bucky(&["drain", "-j", "-w", "3", "--batch", "5", &node]);
    let report = json_of(&out);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));
    assert_eq!(report["empty"], true, "{report}");
    assert_eq!(report["left_count"], 0, "{report}");
    assert_eq!(report["summary"]["errors"], 0, "{report}");
    assert_eq!(report["summary"]["moved"].as_u64().unwrap() as usize, on_leaving, "{report}");
    assert_eq!(report["summary"]["deleted"].as_u64().unwrap() as usize, on_leaving, "{report}");
    assert_drained(&cluster, &layout, &homes, leaving);

    // A second drain has nothing to do and finds the node empty.
    let again = cluster.bucky(&["drain", &node]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(text(&again.stdout).contains("is empty"), "{}", text(&again.stdout));
}

#[test]
fn drain_a_node_out_of_a_carbon_ch_ring() {
    drain_scenario("carbon_ch", 1, 11);
}

#[test]
fn drain_a_node_out_of_a_jump_ring_with_two_replicas() {
    drain_scenario("jump_fnv1a_ch", 2, 12);
}

#[test]
fn drain_checks_the_roles_and_reports_what_is_left() {
    let mut cluster = TestCluster::new(3, "carbon_ch", 1);
    let now = now_minute();
    cluster.write_metric(2, "left.behind", &[(now, 1.0)]);
    let ring = cluster.ips[..2].to_vec();
    cluster.start_with_ring(&ring, &[0, 1, 2]);
    let node = cluster.addr(2);
    // The seed must be in its ring; the drained node must not be.
    let out = crate::cluster::run_bucky(&["drain", "-h", &node, &node], b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is not in its own ring"), "{}", text(&out.stderr));
    let out = cluster.bucky(&["drain", &cluster.addr(1)]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("is still in the ring"), "{}", text(&out.stderr));
    // A home that cannot take the copy (its file is corrupt: the heal is refused with 409): the metric stays,
    // reported with the reason, exit 1.
    let home = placement(&cluster, &["left.behind".to_owned()])["left.behind"][0];
    let corrupt = crate::cluster::metric_path(&cluster.data(home), "left.behind");
    std::fs::create_dir_all(corrupt.parent().unwrap()).unwrap();
    std::fs::write(&corrupt, b"not a whisper file").unwrap();
    let out = cluster.bucky(&["drain", "-j", "--attempts", "1", &node]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let report = json_of(&out);
    assert_eq!(report["empty"], false, "{report}");
    assert_eq!(report["left_count"], 1, "{report}");
    assert_eq!(report["left"][0]["metric"], "left.behind", "{report}");
    assert!(report["left"][0]["reason"].as_str().unwrap().starts_with("failed: "), "{report}");
    assert_eq!(cluster.points(2, "left.behind").unwrap().len(), 1, "the source must stay");
}
