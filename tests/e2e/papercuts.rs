//! What operators tripped on (issue 15, item 6), end to end with real agents: what a command says when a
//! node is down (tar, du, copy, inconsistent), `--json` summaries, `--no-op` labels, `locate`'s buckytools
//! format (checked against go-graphite buckytools' own `bucky locate`), `delete --no-op`, and the one-line
//! errors of a misplaced Go flag and of `demo` on addresses it cannot use.

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use bucky_e2e::{bin, go_peer, ok, text};
use serde_json::Value;

use crate::cluster::{now_minute, run_bucky, wait_output, TestCluster, COMMAND_TIMEOUT};

/// Every stderr line is short and names `addr` at most once.
#[track_caller]
fn lines_name_once(stderr: &str, addr: &str) {
    for line in stderr.lines() {
        assert!(line.len() < 250, "a {}-character line: {line}", line.len());
        assert!(line.matches(addr).count() <= 1, "{addr} repeated: {line}");
    }
}

/// Five metrics on each of three nodes (RF 1), some on the wrong node.
fn cluster_of_three() -> TestCluster {
    let mut cluster = TestCluster::new(3, "carbon_ch", 1);
    let now = now_minute();
    for node in 0..3 {
        for m in 0..5 {
            cluster.write_metric(node, &format!("pc.n{node}.m{m}"), &[(now - 60, m as f64), (now, 1.0)]);
        }
    }
    cluster.start();
    cluster
}

/// A node down: tar and du say what they lack (exit 1), copy neither claims a source was kept (it never
/// deletes) nor says "for 0 s", summaries use the command's words, and no line repeats the address.
#[test]
fn a_node_down_is_said_once_with_what_is_missing() {
    let mut cluster = cluster_of_three();
    // Healthy first: --no-op plans labelled by what the step is.
    let plan = ok(&run_bucky(&["copy", "--src", &cluster.addr(0), "--dst", &cluster.addr(1), "--no-op"], b""));
    assert_eq!(plan.lines().count(), 5, "{plan}");
    assert!(plan.lines().all(|l| l.ends_with(" (copy)")), "{plan}");
    let map = cluster.dir.path().join("map.json");
    std::fs::write(&map, r#"{"pc.n0.m0": "pc.renamed"}"#).unwrap();
    let plan = ok(&cluster.bucky(&["backfill", "--no-op", map.to_str().unwrap()]));
    assert!(plan.trim().ends_with("pc.renamed (backfill)"), "{plan}");

    let down = cluster.addr(2);
    cluster.kill(2);

    // tar: exit 1, the archive said to be partial and the node named; the address once per line.
    let out = cluster.bucky(&["tar"]);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("tar: 10 metrics archived; the archive is PARTIAL, it lacks the metrics of {down}")),
        "{stderr}"
    );
    lines_name_once(&stderr, &down);
    // ... and with --json one object on stderr (stdout is the archive).
    let out = cluster.bucky(&["tar", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = text(&out.stderr);
    let summary: Value =
        serde_json::from_str(stderr.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    assert_eq!(summary["archived"], 10, "{summary}");
    assert_eq!(summary["partial"], true, "{summary}");
    assert!(summary["unlisted"][&down].as_str().unwrap().contains("unreachable"), "{summary}");
    assert!(!stderr.contains("metrics archived"), "no text summary with --json: {stderr}");
    assert!(out.stdout.len() > 10 * 17_000, "the archive is on stdout");

    // du: the total says it is partial and which node is missing.
    let out = cluster.bucky(&["du"]);
    assert_eq!(out.status.code(), Some(1));
    let total = text(&out.stdout).lines().last().unwrap().to_owned();
    assert!(total.ends_with(&format!("10 metrics\ttotal (partial: {down} not counted)")), "{total}");
    lines_name_once(&text(&out.stderr), &down);
    let du: Value = serde_json::from_str(&text(&cluster.bucky(&["du", "-j"]).stdout)).unwrap();
    assert_eq!(du["partial"], true, "{du}");
    assert_eq!(du["unlisted"], serde_json::json!([down]), "{du}");

    // inconsistent --json: one object on stdout, its summary inside, no text summary.
    let out = cluster.bucky(&["inconsistent", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let found: Value =
        serde_json::from_str(&text(&out.stdout)).unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    let listed: u64 =
        found["misplaced"].as_object().unwrap().values().map(|v| v.as_array().unwrap().len() as u64).sum();
    assert_eq!(found["count"].as_u64(), Some(listed), "{found}");
    assert_eq!(found["scanned"], 10, "{found}");
    assert!(found["unlisted"][&down].is_string(), "{found}");
    assert!(!text(&out.stderr).contains("misplaced copies among"), "{}", text(&out.stderr));

    // copy into the node that is down: never deletes, so no "source kept"; no "for 0 s"; its own words.
    // A node that does not answer is waited for h · log2(4/3) (12.5 s by default) before its metrics fail:
    // a half-life of 1 s makes that 0.4 s.
    let out = run_bucky(&["copy", "--src", &cluster.addr(0), "--dst", &down, "--flap-half-life", "1"], b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("{down} is down")), "{stderr}");
    assert!(!stderr.contains("source kept") && !stderr.contains("for 0 s"), "{stderr}");
    assert!(stderr.contains("copy: 5 planned, 0 copied, 0 skipped, 5 errors;"), "{stderr}");
    assert!(!stderr.contains("replica"), "{stderr}");
    lines_name_once(&stderr, &down);

    // A dead seed: one line, the address once, what to do.
    let out = run_bucky(&["servers", "-h", &down], b"");
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("is its agent running?"), "{stderr}");
    lines_name_once(&stderr, &down);
}

/// `locate` prints buckytools' `metric => host`, the same lines as go-graphite buckytools' `bucky locate`,
/// on a ring whose nodes carry carbon's port and an instance (which only `--json` shows).
#[test]
fn locate_prints_hosts_like_buckytools() {
    let mut cluster = TestCluster::new(3, "carbon_ch", 1);
    let ring: Vec<String> = cluster.ips.iter().zip(["a", "b", "c"]).map(|(ip, i)| format!("{ip}:2004={i}")).collect();
    cluster.start_with_ring(&ring, &[0, 1, 2]);
    let names: Vec<String> = (0..40).map(|i| format!("svc{}.host{i}.cpu", i % 4)).collect();
    let mut args = vec!["locate", "-h"];
    let seed = cluster.seed();
    args.push(&seed);
    args.extend(names.iter().map(String::as_str));
    let ours: BTreeSet<String> = ok(&run_bucky(&args, b"")).lines().map(str::to_owned).collect();
    let mut go = Command::new(go_peer("gg/bucky"));
    go.args(&args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = wait_output(&mut go.spawn().unwrap(), b"", COMMAND_TIMEOUT, "go bucky locate");
    let theirs: BTreeSet<String> = ok(&out).lines().map(str::to_owned).collect();
    assert_eq!(ours, theirs);
    assert!(ours.iter().all(|l| !l.contains(":2004")), "{ours:?}");
    // The port and the instance are in --json.
    let located: Value =
        serde_json::from_str(&ok(&run_bucky(&[&args[..3], &["-j", &names[0]]].concat(), b""))).unwrap();
    let node = located[&names[0]][0].as_str().unwrap();
    assert!(node.contains(":2004="), "{located}");
}

/// `delete --no-op` prints what would go and deletes nothing, with no terminal and no --yes.
#[test]
fn delete_no_op_deletes_nothing() {
    let mut cluster = TestCluster::new(2, "carbon_ch", 2);
    for node in 0..2 {
        for name in ["del.a", "del.b", "keep.c"] {
            cluster.write_metric(node, name, &[(now_minute(), 1.0)]);
        }
    }
    cluster.start();
    let out = ok(&cluster.bucky(&["delete", "--no-op", "-r", "^del\\."]));
    let want: BTreeSet<String> =
        (0..2).flat_map(|n| ["del.a", "del.b"].map(|m| format!("{}: {m}", cluster.addr(n)))).collect();
    assert_eq!(out.lines().map(str::to_owned).collect::<BTreeSet<_>>(), want);
    let plan: Value = serde_json::from_str(&ok(&cluster.bucky(&["delete", "-noop", "-j", "del.a"]))).unwrap();
    assert_eq!(plan["count"], 2, "{plan}");
    for node in 0..2 {
        for name in ["del.a", "del.b", "keep.c"] {
            assert!(cluster.points(node, name).is_some(), "{name} deleted on {node} by --no-op");
        }
    }
}

/// A Go flag of another command, and `demo` on addresses it cannot listen on: one line each, exit 2.
#[test]
fn misplaced_flags_and_demo_addresses_are_one_line() {
    let out = run_bucky(&["list", "-noconfirm", "-h", "127.0.0.1:1"], b"");
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(
        text(&out.stderr).trim(),
        "bucky: error: `bucky list` has no flag --noconfirm (--noconfirm is a flag of `bucky delete`); see `bucky list --help`"
    );
    bin("bucky-agent");
    // 192.0.2.0/24 is TEST-NET-1: no machine has it.
    let out = run_bucky(&["demo", "--ips", "127.0.0.2,192.0.2.1,192.0.2.2", "--metrics", "1"], b"");
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cannot listen on 192.0.2.1") && stderr.contains("--ips"), "{stderr}");
    assert!(ok(&run_bucky(&["demo", "--help"], b"")).contains("--ips <A,B,C>"));
}
