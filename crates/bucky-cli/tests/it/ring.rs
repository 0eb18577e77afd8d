//! `bucky ring locate` / `bucky ring show` end to end: output format, node strings as given, errors.
//! Placement itself is checked against carbon and carbon-c-relay in `crates/hashring/tests`.

use std::process::Output;

use crate::support::bucky;

use hashring::{Hash, Node, Ring, Router};

fn stdout(out: &Output) -> String {
    assert!(out.status.success(), "bucky failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout.clone()).expect("UTF-8")
}

const NAMES: &str = "carbon.agents.a.cpuUsage\nservers.web01.load\n\ncafé.höst.cpu\r\nx\n";

#[test]
fn locate_prints_nodes_as_given_in_replica_order() {
    // Non-canonical spellings (leading zero port) must come back exactly as typed.
    let specs = ["10.0.0.1:02004=a", "10.0.0.1:2104=b", "[::1]:2004=c", "graphite-b"];
    let mut args = vec!["ring", "locate", "--hash", "carbon_ch", "--replicas", "2", "--diverse"];
    args.extend(specs);
    let text = stdout(&bucky(&args, NAMES));
    let nodes: Vec<Node> = specs.iter().map(|s| Node::parse(s).unwrap()).collect();
    let ring = Ring::new(nodes, Hash::CarbonCh, Some(Router::Carbon), 2, true).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let names = ["carbon.agents.a.cpuUsage", "servers.web01.load", "café.höst.cpu", "x"];
    assert_eq!(lines.len(), names.len(), "blank lines skipped, CRLF trimmed: {text}");
    for (line, name) in lines.iter().zip(names) {
        let want: Vec<&str> = ring.replica_indices(name).map(|i| specs[i]).collect();
        assert_eq!(*line, format!("{name}\t{}", want.join(",")));
    }
}

#[test]
fn locate_json_and_each_hash() {
    for (hash, router) in [("carbon", "relay"), ("fnv1a_ch", "carbon"), ("jump_fnv1a", "relay")] {
        let args =
            ["ring", "locate", "--json", "--hash", hash, "--router", router, "--replicas", "3", "h1=1", "h2=2", "h3=3"];
        let text = stdout(&bucky(&args, NAMES));
        let ring = Ring::new(
            ["h1=1", "h2=2", "h3=3"].iter().map(|s| Node::parse(s).unwrap()).collect(),
            hash.parse().unwrap(),
            Some(router.parse().unwrap()),
            3,
            false,
        )
        .unwrap();
        for line in text.lines() {
            let value: serde_json::Value = serde_json::from_str(line).expect("one JSON object per line");
            let name = value["name"].as_str().expect("name");
            let nodes: Vec<String> = ring.nodes_for(name).map(Node::to_string).collect();
            assert_eq!(value["nodes"], serde_json::json!(nodes), "{hash}/{router} {name}");
        }
        assert_eq!(text.lines().count(), 4);
    }
}

#[test]
fn locate_with_carbon_destinations_syntax() {
    let args = [
        "ring",
        "locate",
        "--hash",
        "carbon_ch",
        "--destinations",
        "10.0.0.1:2004:a, 10.0.0.2:2004:b",
        "10.0.0.3:2004",
    ];
    let text = stdout(&bucky(&args, "foo.bar\n"));
    let (_, node) = text.trim_end().split_once('\t').expect("tab");
    assert!(["10.0.0.1:2004:a", "10.0.0.2:2004:b", "10.0.0.3:2004"].contains(&node), "{text}");
}

#[test]
fn errors_exit_1_and_name_the_node() {
    let cases: [(&[&str], &str); 6] = [
        (&["--hash", "carbon_ch", "10.0.0.1", "bad:port"], "bad:port"),
        (&["--hash", "carbon_ch", "a=x", "a=x"], "duplicate node a=x"),
        (&["--hash", "md5", "a"], "unknown hash"),
        (&["--hash", "carbon_ch", "--router", "go", "a"], "unknown router"),
        (&["--hash", "carbon_ch", "--replicas", "3", "a", "b"], "replication factor 3"),
        (&["--hash", "jump_fnv1a_ch", "--router", "carbon", "a"], "no jump hash"),
    ];
    for (args, want) in cases {
        let mut all = vec!["ring", "locate"];
        all.extend(args);
        let out = bucky(&all, "foo\n");
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert!(out.stdout.is_empty());
    }
    let out = bucky(&["ring", "locate", "--hash", "carbon_ch", "a"], b"ok\n\xff\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("line 2 is not UTF-8"));
}

#[test]
fn show_marks_probed_and_voided_points() {
    // 10.0.0.1 and 10.0.0.3 share position 7798.
    let nodes = ["10.0.0.1:2003", "10.0.0.2:2003", "10.0.0.3:2003"];
    let mut args = vec!["ring", "show", "--hash", "carbon_ch"];
    args.extend(nodes);
    let carbon = stdout(&bucky(&args, ""));
    assert!(carbon.starts_with("# carbon_ch with the carbon router"), "{carbon}");
    assert_eq!(carbon.lines().filter(|l| !l.starts_with('#')).count(), 300);
    assert!(carbon.contains("7799\t10.0.0.3:2003\tprobed from 7798"), "{carbon}");
    args.extend(["--router", "relay"]);
    let relay = stdout(&bucky(&args, ""));
    assert!(relay.contains("7798\t10.0.0.1:2003\tvoided: point of 10.0.0.3:2003"), "{relay}");
    let jump = stdout(&bucky(&["ring", "show", "--hash", "jump_fnv1a_ch", "a", "b=2", "c=1"], ""));
    let order: Vec<&str> =
        jump.lines().filter(|l| !l.starts_with('#')).map(|l| l.split('\t').nth(1).unwrap()).collect();
    assert_eq!(order, ["c=1", "b=2", "a"]);
}

/// buckytools' Go flags are single-dash long names: `-host x` must reach the host flag, not `-h ost`.
#[test]
fn go_style_single_dash_flags_reach_the_right_flag() {
    let out = bucky(&["servers", "-host", "127.0.0.1:1", "-timeout", "1", "-json"], "");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("127.0.0.1:1"), "the seed should be the -host value: {stderr}");
    assert!(!stderr.contains("ost:4242"), "-host was read as -h ost: {stderr}");
}
