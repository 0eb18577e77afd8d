//! The ring from the operators' own files, end to end: `bucky ring locate --config` against carbonate's own
//! `carbon-lookup`, its error paths, and `bucky-agent --ring-config` serving the ring in `/hashring`.
//! (Agreement on hundreds of random files is `crates/ringconf/tests/agreement.rs`.)

use std::io::Write;
use std::process::{Command, Output, Stdio};

use bucky_e2e::{bin, free_port, oracle_python};
use bucky_wire::RingInfo;

use crate::agent::{client, TestAgent};

fn bucky(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(bin("bucky"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start bucky");
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(output: Output) -> String {
    assert!(output.status.success(), "bucky failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// `name<TAB>replicas` lines → replicas per name.
fn located(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let (name, nodes) = line.split_once('\t').expect("name<TAB>nodes");
            (name.to_owned(), nodes.to_owned())
        })
        .collect()
}

/// Four carbon-caches on two hosts, replication 2: where carbon's default DIVERSE_REPLICAS matters.
const DESTINATIONS: [&str; 4] = ["10.0.0.1:2004:a", "10.0.0.1:2104:b", "10.0.0.2:2004:a", "10.0.0.2:2104:b"];

#[test]
fn ring_locate_follows_carbon_lookup_from_carbonate_conf() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("carbonate.conf");
    std::fs::write(
        &conf,
        format!("[main]\nDESTINATIONS = {}\nREPLICATION_FACTOR = 2\nSSH_USER = carbon\n", DESTINATIONS.join(", ")),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let names: Vec<String> = (0..200).map(|i| format!("servers.web{i}.cpu.user")).collect();
    let input = names.join("\n");
    let from_file = located(&ok(bucky(&["ring", "locate", "--config", conf], &input)));
    let mut args = vec!["ring", "locate", "--hash", "carbon_ch", "--replicas", "2", "--destinations"];
    args.extend(DESTINATIONS);
    let default = located(&ok(bucky(&args, &input)));
    args.extend(["--diverse-replicas", "false"]);
    let plain = located(&ok(bucky(&args, &input)));
    assert_eq!(default, from_file, "NODE arguments default to carbon's diverse replicas, as the file does");

    // carbon-lookup is one Python process per name: ask it about the names where diverse replicas matter
    // and a few where they do not.
    let differs: Vec<usize> = (0..names.len()).filter(|&i| default[i] != plain[i]).collect();
    assert!(differs.len() >= 10, "a 4-instance ring at replication 2 has names diverse replicas move");
    let same: Vec<usize> = (0..names.len()).filter(|i| !differs.contains(i)).take(2).collect();
    let carbon_lookup = oracle_python().with_file_name("carbon-lookup");
    for i in differs.into_iter().take(6).chain(same) {
        let out = Command::new(&carbon_lookup).args(["-c", conf, "-C", "main", &names[i]]).output().unwrap();
        assert!(out.status.success(), "carbon-lookup: {}", String::from_utf8_lossy(&out.stderr));
        let theirs = String::from_utf8(out.stdout).unwrap().lines().collect::<Vec<_>>().join(",");
        assert_eq!(from_file[i].1, theirs, "{}: bucky vs carbon-lookup", names[i]);
    }
}

#[test]
fn ring_locate_and_show_read_relay_and_carbon_files() {
    let dir = tempfile::tempdir().unwrap();
    let relay = dir.path().join("relay.conf");
    std::fs::write(
        &relay,
        "# relay\nlisten type linemode 2003 proto tcp ;\ncluster fwd forward 10.9.0.1:2003 ;\n\
         cluster graphite jump_fnv1a_ch replication 2\n    10.0.0.1=007\n    [2001:db8::1]:2005 = \"2\" proto tcp\n    ;\n\
         match * send to graphite ;\n",
    )
    .unwrap();
    let relay = relay.to_str().unwrap();
    let out = ok(bucky(&["ring", "locate", "--config", relay, "--cluster", "graphite"], "a.b\nc.d\n"));
    for (_, nodes) in located(&out) {
        let mut nodes: Vec<&str> = nodes.split(',').collect();
        nodes.sort();
        assert_eq!(nodes, ["10.0.0.1:2003:7", "[2001:db8::1]:2005:2"], "DESTINATIONS spelling, port 2003 filled in");
    }
    let json = ok(bucky(&["ring", "locate", "--config", relay, "-j"], "a.b\n"));
    let value: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(value["nodes"].as_array().unwrap().len(), 2, "{json}");
    let shown = ok(bucky(&["ring", "show", "--config", relay], ""));
    assert!(shown.starts_with("# from carbon-c-relay config ") && shown.contains("cluster graphite"), "{shown}");
    assert!(shown.contains("jump_fnv1a_ch with the relay router"), "{shown}");

    let carbon = dir.path().join("carbon.conf");
    std::fs::write(
        &carbon,
        format!(
            "[cache]\nLINE_RECEIVER_PORT = 2003\n[relay]\nRELAY_METHOD = consistent-hashing\nREPLICATION_FACTOR = 2\n\
             DESTINATIONS = {}\n[relay:b]\nDIVERSE_REPLICAS = False\n",
            DESTINATIONS.join(", ")
        ),
    )
    .unwrap();
    let carbon = carbon.to_str().unwrap();
    let diverse = located(&ok(bucky(&["ring", "locate", "--config", carbon], "x.y\n")));
    let hosts: Vec<&str> = diverse[0].1.split(',').map(|d| &d[..8]).collect();
    assert_ne!(hosts[0], hosts[1], "carbon's DIVERSE_REPLICAS defaults to True: {diverse:?}");
    let shown = ok(bucky(&["ring", "show", "--config", carbon, "--cluster", "b"], ""));
    assert!(shown.contains("cluster relay:b") && !shown.contains("diverse replicas"), "{shown}");
}

#[test]
fn ring_config_errors_are_one_line_and_name_what_was_found() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path.to_str().unwrap().to_owned()
    };
    let relay = write("relay.conf", "cluster a carbon_ch h1:2003 ;\ncluster b forward h2:2003 ;\n");
    let cases = [
        (write("web.ini", "[server]\nport = 80\n"), None, "an INI file with sections server and no DESTINATIONS"),
        (write("notes.txt", "hello world\n"), None, "it starts with \"hello world\""),
        (relay.clone(), Some("x"), "no cluster \"x\" in this carbon-c-relay config; clusters: a, b"),
        (relay, Some("b"), "cluster b: a forward cluster sends to its members without a hash ring"),
        (write("carbon.conf", "[relay]\nDESTINATIONS = h:2004\n"), None, "RELAY_METHOD = rules"),
        (
            write("carbon2.conf", "[relay]\nRELAY_METHOD = aggregated-consistent-hashing\nDESTINATIONS = h:2004\n"),
            None,
            "RELAY_METHOD = aggregated-consistent-hashing",
        ),
        (
            write("carbonate.conf", "[main]\nDESTINATIONS = h:2004\nREPLICATION_FACTOR = 1\n"),
            Some("dc2"),
            "clusters: main",
        ),
        (dir.path().join("missing.conf").to_str().unwrap().to_owned(), None, "cannot read"),
    ];
    for (path, cluster, want) in cases {
        let mut args = vec!["ring", "locate", "--config", path.as_str()];
        if let Some(cluster) = cluster {
            args.extend(["--cluster", cluster]);
        }
        let out = bucky(&args, "a.b\n");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{path}: {stderr}");
        assert!(out.stdout.is_empty(), "{path}: nothing located");
        assert_eq!(stderr.lines().count(), 1, "{path}: one line: {stderr}");
        assert!(stderr.contains(want) && stderr.contains(&path), "{path}: {stderr}");
    }
    // The file gives the ring: ring flags next to --config are usage errors.
    let out = bucky(&["ring", "locate", "--config", "x.conf", "--replicas", "2"], "");
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn agent_serves_the_ring_of_its_carbon_conf() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("whisper");
    std::fs::create_dir_all(&root).unwrap();
    let ip = "127.0.0.1";
    let conf = dir.path().join("carbon.conf");
    std::fs::write(
        &conf,
        format!(
            "[cache]\nLINE_RECEIVER_PORT = 2003\n[relay]\nRELAY_METHOD = consistent-hashing\nREPLICATION_FACTOR = 2\n\
             DESTINATIONS = {ip}:2004:a, {ip}:2104:b, 127.0.0.2:2004:a\n[relay:fnv]\nROUTER_HASH_TYPE = fnv1a_ch\n\
             DIVERSE_REPLICAS = no\n"
        ),
    )
    .unwrap();
    let conf = conf.to_str().unwrap();
    let agent = TestAgent::start(ip, free_port(ip), &root, &[], &["-ring-config", conf]);
    let ring: RingInfo = client().get(agent.url("/hashring")).send().unwrap().json().unwrap();
    let nodes: Vec<(String, u16, String)> =
        ring.nodes.iter().map(|n| (n.server.clone(), n.port, n.instance.clone())).collect();
    assert_eq!(
        nodes,
        [
            (ip.to_owned(), 2004, "a".to_owned()),
            (ip.to_owned(), 2104, "b".to_owned()),
            ("127.0.0.2".to_owned(), 2004, "a".to_owned())
        ]
    );
    assert_eq!(
        (ring.algo.as_str(), ring.replicas, ring.router.as_deref(), ring.diverse),
        ("carbon", 2, Some("carbon"), true)
    );
    drop(agent);

    let agent = TestAgent::start(ip, free_port(ip), &root, &[], &["--ring-config", conf, "--cluster", "fnv"]);
    let ring: RingInfo = client().get(agent.url("/hashring")).send().unwrap().json().unwrap();
    assert_eq!((ring.algo.as_str(), ring.replicas, ring.diverse), ("fnv1a", 2, false));
}
