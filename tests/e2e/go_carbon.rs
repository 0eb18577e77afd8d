//! go-carbon clusters (issue 17): a real go-carbon 0.17.1 writing the whisper files that bucky lists, heals
//! and moves. The daemon is `bucky_e2e::go_carbon::GoCarbon`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bucky_e2e::go_carbon::{self, GoCarbon, GoCarbonConfig};
use bucky_e2e::ok;

use crate::cluster::{common_port, metric_path, run_bucky, TestCluster};

fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// The harness itself: go-carbon starts, answers `/admin/info` with the configured limit, and writes the
/// points it receives into whisper files that the whisper crate reads back.
#[test]
fn go_carbon_writes_what_it_receives_and_reports_its_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let config = GoCarbonConfig { max_size: 123_456, ..GoCarbonConfig::new("1m:1d") };
    let gc = GoCarbon::start("127.0.0.61", &tmp.path().join("whisper"), &tmp.path().join("gc"), &config);
    let (_, limit) = gc.admin_info().expect("/admin/info answers");
    assert_eq!(limit, 123_456);
    let t = now() / 60 * 60;
    gc.send_lines(&[format!("harness.a 1.5 {t}"), format!("harness.b.c 2.5 {t}")]);
    gc.wait_for_files(&["harness.a", "harness.b.c"], Duration::from_secs(20));
    // go-carbon creates the file first and writes the points after; wait for the point itself.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let file = whisper::WhisperFile::open(gc.path_of("harness.b.c")).unwrap();
        let series = file.fetch(t - 60, Some(t + 60), now(), None).unwrap();
        if series.is_some_and(|s| s.values.contains(&Some(2.5))) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "point never written: {}", gc.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `bucky locate --json` for `names` on `cluster`: metric → the index of its (one) home node.
fn homes(cluster: &TestCluster, names: &[String]) -> BTreeMap<String, usize> {
    let out = cluster.bucky_stdin(&["locate", "--json", "-"], names.join("\n").as_bytes());
    let placement: BTreeMap<String, Vec<String>> = serde_json::from_str(ok(&out).trim()).expect("locate --json");
    placement.into_iter().map(|(name, nodes)| (name, cluster.index_of(&nodes[0]))).collect()
}

/// The rebalance summary printed by `--json` (the last JSON object of stdout).
fn summary_of(stdout: &str) -> serde_json::Value {
    serde_json::Deserializer::from_str(stdout)
        .into_iter::<serde_json::Value>()
        .filter_map(Result::ok)
        .filter(|v| v.get("moved").is_some())
        .last()
        .unwrap_or_else(|| panic!("no summary in {stdout}"))
}

/// Issue 17, the throttle against a real go-carbon: three nodes, each a go-carbon and a bucky-agent over the
/// same whisper tree; metrics misplaced on node 0 belong on nodes 1 and 2. Node 1's go-carbon has a tiny
/// cache (`max-size` 100, 20 updates/s) kept full by a burst of traffic: `rebalance --go-carbon-throttle`
/// pauses node 1's transfers while node 2's all go through, and once the burst stops and node 1's cache
/// drains below the lower mark, node 1's go too. The summary shows node 1 paused and node 2 never.
#[test]
fn the_throttle_pauses_a_node_under_cache_pressure_while_the_others_go_on() {
    let mut cluster = TestCluster::new(3, "jump_fnv1a", 1);
    cluster.start();
    let carbonserver_port = common_port(&cluster.ips);
    let go_carbons: Vec<GoCarbon> = (0..3)
        .map(|i| {
            let mut config = GoCarbonConfig {
                file_list_cache_version: None,
                carbonserver_port: Some(carbonserver_port),
                ..GoCarbonConfig::new("1m:1d")
            };
            if i == 1 {
                config.max_size = 100;
                config.max_updates_per_second = 20;
            }
            GoCarbon::start(&cluster.ips[i], &cluster.data(i), &cluster.dir.path().join(format!("gc{i}")), &config)
        })
        .collect();

    // Metrics on node 0 whose home is node 1 or node 2.
    let candidates: Vec<String> = (0..90).map(|i| format!("throttle.m{i:03}")).collect();
    let homes = homes(&cluster, &candidates);
    let moved: Vec<(&String, usize)> = homes.iter().filter(|(_, &home)| home != 0).map(|(n, &h)| (n, h)).collect();
    let to = |node: usize| moved.iter().filter(|(_, h)| *h == node).map(|(n, _)| n.as_str()).collect::<Vec<_>>();
    let (to_1, to_2) = (to(1), to(2));
    assert!(to_1.len() >= 5 && to_2.len() >= 5, "placement too uneven: {homes:?}");
    let t = now() / 60 * 60;
    for (name, _) in &moved {
        cluster.write_metric(0, name, &[(t - 600, 1.0), (t - 300, 2.0)]);
    }

    // The burst: node 1's cache full until node 2 has every one of its metrics.
    let node2_done = Arc::new(AtomicBool::new(false));
    let burst = {
        let (line, done) = (go_carbons[1].line.clone(), Arc::clone(&node2_done));
        thread::spawn(move || {
            let mut k = 0;
            while !done.load(Ordering::Relaxed) {
                let lines: Vec<String> = (0..150).map(|i| format!("burst.b{i:03} {k} {}", now())).collect();
                go_carbon::send_lines(&line, &lines);
                k += 1;
                thread::sleep(Duration::from_millis(100));
            }
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while go_carbons[1].admin_info().is_none_or(|(size, _)| size < 90) {
        assert!(Instant::now() < deadline, "node 1's cache never filled: {:?}", go_carbons[1].admin_info());
        thread::sleep(Duration::from_millis(50));
    }

    let rebalance = {
        let seed = cluster.seed();
        let port = carbonserver_port.to_string();
        thread::spawn(move || {
            run_bucky(
                &[
                    "rebalance",
                    "-h",
                    &seed,
                    "-f",
                    "--delete",
                    "-r",
                    "^throttle\\.",
                    "--json",
                    "-v",
                    "--go-carbon-throttle",
                    "--go-carbon-port",
                    &port,
                    "--go-carbon-poll-interval",
                    "0.25",
                    "--throttle-rate",
                    "200",
                ],
                b"",
            )
        })
    };
    // Watch: node 2 gets all its metrics while node 1 gets none.
    let has = |node: usize, name: &str| metric_path(&cluster.data(node), name).exists();
    let deadline = Instant::now() + Duration::from_secs(60);
    while !to_2.iter().all(|n| has(2, n)) {
        assert!(Instant::now() < deadline && !rebalance.is_finished(), "node 2 never got its metrics");
        thread::sleep(Duration::from_millis(20));
    }
    let on_1_meanwhile = to_1.iter().filter(|n| has(1, n)).count();
    let paused_for = Instant::now();
    // Keep the pressure a little longer, then let node 1's cache drain.
    thread::sleep(Duration::from_millis(500));
    node2_done.store(true, Ordering::Relaxed);
    burst.join().unwrap();
    let out = rebalance.join().unwrap();
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(on_1_meanwhile, 0, "node 1 got metrics while its cache was full:\n{stderr}");
    let summary = summary_of(&stdout);
    assert_eq!(summary["moved"], moved.len(), "{summary}");
    assert_eq!(summary["errors"], 0, "{summary}");
    let throttle = &summary["throttle"];
    let node = |i: usize| &throttle[cluster.addr(i)];
    assert!(node(1)["paused_seconds"].as_f64().unwrap() > 0.4, "{throttle}");
    assert!(node(1)["pauses"].as_u64().unwrap() >= 1, "{throttle}");
    assert!(node(1)["peak_cache_percent"].as_f64().unwrap() >= 75.0, "{throttle}");
    assert_eq!(node(2)["paused_seconds"], 0.0, "{throttle}");
    assert_eq!(node(2)["pauses"], 0, "{throttle}");
    assert!(node(0).is_null(), "node 0 is no destination: {throttle}");
    assert!(stderr.contains(&format!("{}: go-carbon cache at", cluster.addr(1))), "{stderr}");
    assert!(stderr.contains("transfers resumed after"), "{stderr}");
    // Every metric reached its home and left node 0.
    for (name, home) in &moved {
        assert!(has(*home, name) && !has(0, name), "{name}");
    }
    eprintln!(
        "throttle: node 1 paused {:.1} s ({} polls, cache peak {}%) while node 2 took its {} metrics; node 1's {} \
         went {:.1} s after node 2 was done",
        node(1)["paused_seconds"].as_f64().unwrap(),
        node(1)["polls"],
        node(1)["peak_cache_percent"],
        to_2.len(),
        to_1.len(),
        paused_for.elapsed().as_secs_f64(),
    );
}

/// A destination whose carbonserver does not answer: one warning per node (not one per poll), the node
/// named in the summary with why, and its transfers go on at the starting rate rather than at full speed.
#[test]
fn a_node_whose_admin_info_does_not_answer_is_warned_about_once_and_held_at_the_starting_rate() {
    let mut cluster = TestCluster::new(2, "jump_fnv1a", 1);
    cluster.start();
    // Nothing listens there.
    let silent_port = common_port(&cluster.ips);
    let names: Vec<String> = (0..40).map(|i| format!("silent.m{i:03}")).collect();
    let homes = homes(&cluster, &names);
    let moved: Vec<&String> = homes.iter().filter(|(_, &h)| h == 1).map(|(n, _)| n).collect();
    assert!(moved.len() >= 6, "{homes:?}");
    let t = now() / 60 * 60;
    for name in &moved {
        cluster.write_metric(0, name, &[(t - 600, 1.0)]);
    }
    let started = Instant::now();
    let out = cluster.bucky(&[
        "rebalance",
        "-f",
        "--delete",
        "-r",
        "^silent\\.",
        "--json",
        "-go-carbon-health-check",
        "-go-carbon-port",
        &silent_port.to_string(),
        "-go-carbon-health-check-interval",
        "0.2",
        "-metrics-per-second",
        "4",
    ]);
    let took = started.elapsed();
    let stdout = ok(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let warnings: Vec<&str> = stderr.lines().filter(|l| l.starts_with("warning: go-carbon throttle")).collect();
    assert_eq!(warnings.len(), 1, "{stderr}");
    assert!(warnings[0].contains(&cluster.addr(1)) && warnings[0].contains("does not answer"), "{stderr}");
    assert!(warnings[0].contains("starting rate (4.00 metrics/s)"), "{stderr}");
    let summary = summary_of(&stdout);
    assert_eq!(summary["moved"], moved.len(), "{summary}");
    let node = &summary["throttle"][cluster.addr(1)];
    assert!(node["failed_polls"].as_u64().unwrap() >= 2, "{node}");
    assert_eq!(node["failed_polls"], node["polls"], "{node}");
    assert!(node["problem"].as_str().unwrap().contains("does not answer"), "{node}");
    assert_eq!(node["rate"], 4.0, "{node}");
    // 4 metrics/s: one at once, then one every 250 ms.
    let least = Duration::from_millis(250 * (moved.len() as u64 - 2));
    assert!(took >= least, "{} metrics in {took:?}: not held at 4/s", moved.len());
}
