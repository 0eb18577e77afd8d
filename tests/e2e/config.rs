//! The CLI's config file end to end: `bucky servers --cluster NAME` finds a real agent through a TOML
//! config file; `bucky config show` tells where each value came from; a bad cluster name is one line, exit 2.

use std::process::Output;

use serde_json::Value;

use crate::cluster::{run_bucky_with, TestCluster};

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[track_caller]
fn json_ok(out: &Output) -> Value {
    assert!(out.status.success(), "{}\nstderr:\n{}", out.status, text(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", text(&out.stdout)))
}

#[test]
fn servers_through_a_named_cluster_of_the_config_file() {
    let mut cluster = TestCluster::new(2, "carbon_ch", 1);
    cluster.start();
    let home = tempfile::tempdir().unwrap();
    let config = cluster.dir.path().join("bucky.toml");
    std::fs::write(
        &config,
        format!(
            "default = \"other\"\n\n[other]\nhost = \"127.0.0.1:1\"\n\n[x]\nhost = \"{}\"\nworkers = 3\n\
             ring_config = \"carbonate.conf\"\nring_cluster = \"main\"\n\n[wrong]\nhost = \"{}\"\n\
             ring_config = \"carbonate.conf\"\nring_cluster = \"wider\"\n",
            cluster.seed(),
            cluster.seed()
        ),
    )
    .unwrap();
    // The operator's carbonate.conf: `main` is the agents' ring (carbon's ports, which placement ignores);
    // `wider` has replication 2, which the agents do not run.
    let destinations = format!("{}:2004, {}:2004", cluster.ips[0], cluster.ips[1]);
    std::fs::write(
        cluster.dir.path().join("carbonate.conf"),
        format!(
            "[main]\nDESTINATIONS = {destinations}\nREPLICATION_FACTOR = 1\n\n\
             [wider]\nDESTINATIONS = {destinations}\nREPLICATION_FACTOR = 2\n"
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let env = [("BUCKY_CONFIG", config), ("HOME", home.path().to_str().unwrap())];

    let report = json_ok(&run_bucky_with(&["servers", "--cluster", "x", "-j"], &env, b""));
    assert_eq!(report["seed"], cluster.seed(), "{report}");
    assert_eq!(report["healthy"], true, "{report}");
    assert_eq!(report["members"].as_object().unwrap().len(), 2, "{report}");
    assert_eq!(report["ring_file"]["agrees"], true, "{report}");

    // A ring file that places metrics elsewhere makes the cluster unhealthy: servers says how, exit 1, and a
    // rebalance refuses to move anything (exit 2).
    let out = run_bucky_with(&["servers", "--cluster", "wrong"], &env, b"");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("DISAGREES: replication 2 in the file, 1 on the agents"), "{stdout}");
    let out = run_bucky_with(&["rebalance", "--cluster", "wrong"], &env, b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("the ring file (carbonate.conf"), "{}", text(&out.stderr));

    let shown = json_ok(&run_bucky_with(&["config", "show", "--cluster", "x", "--json"], &env, b""));
    let in_x = format!("file {config} [x]");
    assert_eq!(shown["host"]["value"], cluster.seed(), "{shown}");
    assert_eq!(shown["host"]["source"], in_x.as_str(), "{shown}");
    assert_eq!(shown["workers"]["value"], "3", "{shown}");
    assert_eq!(shown["cluster"]["source"], "flag", "{shown}");
    assert_eq!(shown["config"]["source"], "env BUCKY_CONFIG", "{shown}");
    let ring_config = cluster.dir.path().join("carbonate.conf");
    assert_eq!(shown["ring_config"]["value"], ring_config.to_str().unwrap(), "{shown}");
    assert_eq!(shown["timeout"]["source"], "default", "{shown}");
    // A flag beats the file, and the plain listing says so too.
    let out = run_bucky_with(&["config", "show", "--cluster", "x", "-w", "7"], &env, b"");
    assert!(out.status.success(), "{}", text(&out.stderr));
    let line = text(&out.stdout).lines().find(|l| l.starts_with("workers")).unwrap().to_owned();
    assert!(line.contains('7') && line.ends_with("(flag)"), "{line}");

    // Unknown cluster: one line naming the file and the clusters found, exit 2.
    let out = run_bucky_with(&["servers", "--cluster", "nope"], &env, b"");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("unknown cluster \"nope\"") && stderr.contains("(clusters: other, wrong, x)"), "{stderr}");
    assert!(stderr.contains(config), "{stderr}");
}
