//! Randomized agreement tests: random carbon.conf, carbonate.conf and carbon-c-relay files, read by this
//! crate and by the real peers from the very same file, must place random names identically (100 %).
//!
//! * carbon.conf: carbon 1.1.10's own settings reader and router (`tests/oracle/ringconf_oracle.py`, one
//!   process for all files), clusters `[relay]` and `[relay:NAME]` instances;
//! * carbonate.conf: carbonate 1.1.10's `Config` + `Cluster`, what `carbon-lookup` runs (same process);
//! * carbon-c-relay: `carbon-c-relay -t -f FILE` (3.7.3), one run per file.
//!
//! Files vary what operators vary: instances or not, several instances per host, IPv6, replication 1-3,
//! diverse replicas on and off in every spelling, carbon_ch and fnv1a_ch (and jump_fnv1a_ch for the relay),
//! `[DEFAULT]` sections and `%(key)s` interpolation, continuation lines, comments, other sections, clusters
//! and statements around the ring. `BUCKY_RINGCONF_SEED=N` replays a run (printed on failure);
//! `BUCKY_RINGCONFS` (default 200 per kind) and `BUCKY_RINGCONF_NAMES` (default 100 per file) change the
//! sizes. A missing peer fails the tests: they never skip.

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;

use hashring::Node;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use test_support::{carbon_c_relay, env_usize, oracle_python, oracle_script, parse_relay_test, pipe, relay_test};

/// The run's seed, offset per test so that the three kinds get different streams.
fn seed(offset: u64) -> u64 {
    let base = std::env::var("BUCKY_RINGCONF_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    eprintln!("BUCKY_RINGCONF_SEED={base}");
    base.wrapping_add(offset)
}

// ---------------------------------------------------------------------------------------------------------
// Random rings and names

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Instances {
    None,
    Numeric,
    Text,
    /// Some nodes with a (numeric or text) instance, some without.
    Some,
}

/// `n` nodes, valid for every peer: (server, instance) and (server, port) unique, instances unique, hosts
/// repeated (with other ports and instances) only by nodes that have an instance. `hosts` makes a host.
fn random_nodes(rng: &mut StdRng, n: usize, kind: Instances, host: &dyn Fn(&mut StdRng) -> String) -> Vec<Node> {
    let numeric_some = rng.gen_bool(0.5);
    let mut numbers: Vec<u32> = (0..500).collect();
    numbers.shuffle(rng);
    let mut nodes: Vec<Node> = Vec::new();
    for (i, &number) in numbers.iter().enumerate().take(n) {
        let numeric = |rng: &mut StdRng| {
            if rng.gen_bool(0.2) {
                format!("{number:03}")
            } else {
                number.to_string()
            }
        };
        let text = |rng: &mut StdRng| {
            let stems = ["a", "b", "cache", "c", "x", "node", "carbon-cache", "i_"];
            format!("{}{i}", stems.choose(rng).expect("stems"))
        };
        let instance = match kind {
            Instances::None => None,
            Instances::Numeric => Some(numeric(rng)),
            Instances::Text => Some(text(rng)),
            Instances::Some if rng.gen_bool(0.4) => None,
            Instances::Some if numeric_some => Some(numeric(rng)),
            Instances::Some => Some(text(rng)),
        };
        let reusable: Vec<&Node> = nodes.iter().filter(|_| instance.is_some()).collect();
        let server = match reusable.choose(rng) {
            Some(previous)
                if rng.gen_bool(0.4) && nodes.iter().all(|n| n.server != previous.server || n.instance.is_some()) =>
            {
                previous.server.clone()
            }
            _ => loop {
                let candidate = host(rng);
                if nodes.iter().all(|n| n.server != candidate) {
                    break candidate;
                }
            },
        };
        let port = loop {
            let port = if rng.gen_bool(0.6) { 2004 + 100 * rng.gen_range(0..4) } else { rng.gen_range(1024..=65535) };
            if nodes.iter().all(|n| n.server != server || n.port != Some(port)) {
                break port;
            }
        };
        nodes.push(Node { server, port: Some(port), instance });
    }
    nodes
}

/// Ring sizes for carbon and carbonate: carbon builds a ring in O(points^2) Python steps (its collision
/// check scans the whole ring), so larger rings are left to the hashring differential tests.
const CARBON_MAX_NODES: usize = 12;

fn random_kind(rng: &mut StdRng) -> Instances {
    *[Instances::None, Instances::Numeric, Instances::Text, Instances::Some].choose(rng).expect("kinds")
}

fn ipv4(rng: &mut StdRng) -> String {
    format!("10.{}.{}.{}", rng.gen_range(0..3), rng.gen_range(0..3), rng.gen_range(1..40))
}

fn carbon_host(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0..=5 => ipv4(rng),
        6..=7 => format!("graphite{:02}-{}", rng.gen_range(0..100), ["a", "b", "dc1"].choose(rng).expect("dc")),
        _ => format!("2001:db8::{:x}", rng.gen_range(1..0xffff)),
    }
}

/// Addresses only: the relay resolves host names (slow, and unresolvable ones are refused).
fn relay_host(rng: &mut StdRng) -> String {
    if rng.gen_bool(0.85) {
        ipv4(rng)
    } else {
        format!("2001:db8::{:x}", rng.gen_range(1..0xffff))
    }
}

fn random_names(rng: &mut StdRng, count: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "carbon", "agents", "cpu", "load", "servers", "web", "db", "count", "mean", "p99", "sum", "requests", "errors",
        "latency", "disk", "rx-bytes", "user", "café", "日本", "host_1",
    ];
    (0..count)
        .map(|_| {
            let parts = rng.gen_range(1..7);
            let words: Vec<String> = (0..parts)
                .map(|_| {
                    let word = WORDS.choose(rng).expect("words");
                    if rng.gen_bool(0.3) {
                        format!("{word}{}", rng.gen_range(0..1000))
                    } else {
                        (*word).to_owned()
                    }
                })
                .collect();
            words.join(".")
        })
        .collect()
}

/// The replication factor and the carbon fnv1a_ch guard: carbon's fnv1a_ch stacks instance-less nodes on
/// the same keys and probes the whole ring per collision, O(k^2) Python steps per ring.
fn carbon_hash(rng: &mut StdRng, nodes: &[Node]) -> Option<&'static str> {
    let cheap = nodes.len() <= 10 || nodes.iter().filter(|n| n.instance.is_none()).count() <= 3;
    match rng.gen_range(0..4) {
        0 => None,
        1 if cheap => Some("fnv1a_ch"),
        _ => Some("carbon_ch"),
    }
}

/// `host:port[:instance]` (carbon's DESTINATIONS syntax).
fn destination(node: &Node) -> String {
    ringconf::destination_label(node)
}

fn pick_case(rng: &mut StdRng, key: &str) -> String {
    match rng.gen_range(0..4) {
        0 => key.to_lowercase(),
        1 => {
            let mut chars = key.to_lowercase().chars().collect::<Vec<_>>();
            chars[0] = chars[0].to_ascii_uppercase();
            chars.into_iter().collect()
        }
        _ => key.to_owned(),
    }
}

fn setting(rng: &mut StdRng, key: &str, value: &str) -> String {
    let delimiter = *[" = ", "=", ": ", " : "].choose(rng).expect("delimiters");
    format!("{}{delimiter}{value}\n", pick_case(rng, key))
}

/// A boolean in one of configparser's spellings.
fn boolean_word(rng: &mut StdRng, value: bool) -> String {
    let words: &[&str] =
        if value { &["True", "true", "yes", "on", "1", "TRUE"] } else { &["False", "false", "no", "off", "0"] };
    (*words.choose(rng).expect("words")).to_owned()
}

/// DESTINATIONS entries joined with commas, spaces, and continuation lines.
fn join_destinations(rng: &mut StdRng, entries: &[String]) -> String {
    let mut out = String::new();
    for (i, entry) in entries.iter().enumerate() {
        if i > 0 {
            out.push_str([",", ", ", " ,", ",\n    ", ",\n\n  "].choose(rng).expect("separators"));
        }
        out.push_str(entry);
    }
    out
}

fn comment(rng: &mut StdRng) -> &'static str {
    ["", "", "# a comment\n", "; another = comment\n", "\n"].choose(rng).expect("comments")
}

// ---------------------------------------------------------------------------------------------------------
// The carbon/carbonate oracle

/// Per name, the (server, port, instance) of each replica, in order.
type Placements = Vec<Vec<(String, u16, Option<String>)>>;

struct Job {
    kind: &'static str,
    path: PathBuf,
    cluster: Option<String>,
    names: Vec<String>,
}

/// What the oracle answered: per name, (server, port, instance) in replica order; carbonate's raw
/// DIVERSE_REPLICAS and the placements with it read as a boolean, when they differ.
struct Answer {
    placements: Placements,
    diverse_raw: Option<Value>,
    placements_boolean: Option<Placements>,
}

fn oracle(jobs: &[Job]) -> Vec<Result<Answer, String>> {
    let python = oracle_python();
    let mut input = Vec::new();
    for job in jobs {
        let line = json!({"kind": job.kind, "path": job.path, "cluster": job.cluster, "names": job.names});
        input.extend(line.to_string().bytes());
        input.push(b'\n');
    }
    let mut cmd = Command::new(python);
    cmd.arg(oracle_script("ringconf_oracle.py")).arg("--batch");
    let out = String::from_utf8(pipe(cmd, input, "ringconf_oracle.py --batch")).expect("UTF-8 output");
    let placements = |v: &Value| -> Placements {
        v.as_array()
            .expect("placements")
            .iter()
            .map(|replicas| {
                replicas
                    .as_array()
                    .expect("replicas")
                    .iter()
                    .map(|d| {
                        (
                            d[0].as_str().expect("server").to_owned(),
                            d[1].as_u64().expect("port") as u16,
                            d[2].as_str().map(str::to_owned),
                        )
                    })
                    .collect()
            })
            .collect()
    };
    let answers: Vec<_> = BufReader::new(out.as_bytes())
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(&line.expect("line")).expect("oracle JSON");
            if let Some(err) = value.get("error") {
                return Err(err.as_str().unwrap_or_default().to_owned());
            }
            Ok(Answer {
                placements: placements(&value["placements"]),
                diverse_raw: value.get("diverse_raw").cloned(),
                placements_boolean: value.get("placements_boolean").map(placements),
            })
        })
        .collect();
    assert_eq!(answers.len(), jobs.len(), "one oracle answer per job");
    answers
}

/// Our placement of `names`, in the oracle's shape.
fn ours(config: &ringconf::RingConfig, names: &[String]) -> Placements {
    names
        .iter()
        .map(|name| {
            config
                .ring
                .nodes_for(name)
                .map(|n| (n.server.clone(), n.port.expect("carbon nodes have ports"), n.instance.clone()))
                .collect()
        })
        .collect()
}

fn assert_same<T: std::fmt::Debug + PartialEq>(what: &str, names: &[String], ours: &[T], theirs: &[T]) {
    assert_eq!(ours.len(), theirs.len(), "{what}: answer count");
    let bad: Vec<String> = names
        .iter()
        .zip(ours.iter().zip(theirs))
        .filter(|(_, (a, b))| a != b)
        .take(5)
        .map(|(name, (a, b))| format!("  {name:?}: ours {a:?} / peer {b:?}"))
        .collect();
    let total = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
    assert!(bad.is_empty(), "{what}: {total} of {} names placed differently\n{}", names.len(), bad.join("\n"));
}

/// A generated file's text, and the cluster we read from it.
type Conf = (String, Option<String>);

/// `BUCKY_RINGCONFS` random files of one `kind` (`carbon`, `carbonate`) from `generate`, written to `dir`,
/// each with `BUCKY_RINGCONF_NAMES` random names: their count, the oracle's jobs (the cluster as the peer
/// names it: `peer_cluster` of ours), and each file's text with the cluster we read.
fn conf_jobs(
    seed: u64,
    dir: &Path,
    kind: &'static str,
    generate: fn(&mut StdRng) -> Conf,
    peer_cluster: impl Fn(Option<&str>) -> Option<String>,
) -> (usize, Vec<Job>, Vec<Conf>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let count = env_usize("BUCKY_RINGCONFS", 200);
    let names_per = env_usize("BUCKY_RINGCONF_NAMES", 100);
    let mut jobs = Vec::new();
    let mut texts = Vec::new();
    for i in 0..count {
        let (text, cluster) = generate(&mut rng);
        let path = dir.join(format!("{kind}-{i}.conf"));
        std::fs::write(&path, &text).expect("write");
        let cluster_for_peer = peer_cluster(cluster.as_deref());
        jobs.push(Job { kind, path, cluster: cluster_for_peer, names: random_names(&mut rng, names_per) });
        texts.push((text, cluster));
    }
    (count, jobs, texts)
}

// ---------------------------------------------------------------------------------------------------------
// carbon.conf

/// A random carbon.conf and the cluster to read (None, "relay", "b" or "relay:b").
fn carbon_conf(rng: &mut StdRng) -> (String, Option<String>) {
    let mut text = String::new();
    // [DEFAULT]: a network prefix for interpolation, sometimes a replication factor every read re-applies.
    let net = rng.gen_bool(0.3).then(|| format!("10.{}", rng.gen_range(0..3)));
    let default_replication = rng.gen_bool(0.2);
    if net.is_some() || default_replication {
        text.push_str("[DEFAULT]\n");
        if let Some(net) = &net {
            text.push_str(&format!("net = {net}\n"));
        }
        if default_replication {
            text.push_str(&setting(rng, "REPLICATION_FACTOR", "1"));
        }
    }
    text.push_str(comment(rng));
    text.push_str("[cache]\nLINE_RECEIVER_PORT = 2003\nLOG_DIR = /var/log/carbon/100%%\nMAX_CACHE_SIZE = inf\n\n");
    let section = |rng: &mut StdRng, header: &str, must_set_replication: bool| {
        let n = if rng.gen_bool(0.1) { rng.gen_range(1..=3) } else { rng.gen_range(1..=CARBON_MAX_NODES) };
        let kind = random_kind(rng);
        let nodes = random_nodes(rng, n, kind, &carbon_host);
        let replicas = rng.gen_range(1..=nodes.len().min(3));
        let mut body = format!("[{header}]\n");
        body.push_str(comment(rng));
        if header == "relay" || rng.gen_bool(0.3) {
            body.push_str(&setting(rng, "RELAY_METHOD", "consistent-hashing"));
        }
        if must_set_replication || replicas > 1 || rng.gen_bool(0.5) {
            body.push_str(&setting(rng, "REPLICATION_FACTOR", &replicas.to_string()));
        }
        if rng.gen_bool(0.7) {
            let diverse = rng.gen_bool(0.5);
            let word = boolean_word(rng, diverse);
            body.push_str(&setting(rng, "DIVERSE_REPLICAS", &word));
        }
        if let Some(hash) = carbon_hash(rng, &nodes) {
            body.push_str(&setting(rng, "ROUTER_HASH_TYPE", hash));
        }
        let mut entries: Vec<String> = nodes
            .iter()
            .map(|node| {
                let entry = destination(node);
                match &net {
                    Some(net) if entry.starts_with(&format!("{net}.")) => entry.replacen(net, "%(net)s", 1),
                    _ => entry,
                }
            })
            .collect();
        if rng.gen_bool(0.1) {
            let again = entries.choose(rng).expect("entries").clone();
            entries.push(again); // carbon connects to (and places) a repeated destination once
        }
        body.push_str(comment(rng));
        let joined = join_destinations(rng, &entries);
        body.push_str(&setting(rng, "DESTINATIONS", &joined));
        body.push_str("LINE_RECEIVER_PORT = 2013\n\n");
        body
    };
    let relay = section(rng, "relay", false);
    text.push_str(&relay);
    let instance = rng.gen_bool(0.4);
    if instance {
        // Without a factor of its own the instance gets [DEFAULT]'s (its read re-applies [DEFAULT] over
        // [relay]'s), or else [relay]'s, which may exceed its destinations.
        let body = section(rng, "relay:b", !default_replication);
        text.push_str(&body);
    }
    if rng.gen_bool(0.3) {
        text.push_str("[aggregator]\nDESTINATIONS = 127.0.0.1:2004\n");
    }
    let cluster = match (instance, rng.gen_range(0..2)) {
        (true, 0) => Some("b".to_owned()),
        (true, _) => Some("relay:b".to_owned()),
        (false, 0) => None,
        (false, _) => Some("relay".to_owned()),
    };
    (text, cluster)
}

#[test]
fn carbon_conf_agrees_with_carbon_1_1_10() {
    let seed = seed(1);
    let dir = tempfile::tempdir().expect("tempdir");
    // carbon's instance option is the bare name; "relay:b" is our spelling of the same section.
    let instance = |cluster: Option<&str>| {
        let instance = cluster.map(|c| c.trim_start_matches("relay:").trim_start_matches("relay"));
        instance.filter(|i| !i.is_empty()).map(str::to_owned)
    };
    let (count, jobs, texts) = conf_jobs(seed, dir.path(), "carbon", carbon_conf, instance);
    let answers = oracle(&jobs);
    let mut placed = 0;
    let mut deduplicated = 0;
    for (i, ((job, answer), (text, cluster))) in jobs.iter().zip(answers).zip(&texts).enumerate() {
        let what = format!("BUCKY_RINGCONF_SEED={} carbon.conf #{i} (--cluster {cluster:?}):\n{text}", seed - 1);
        let theirs = answer.unwrap_or_else(|e| panic!("{what}\ncarbon refuses a generated file: {e}"));
        let config = ringconf::parse(text, cluster.as_deref()).unwrap_or_else(|e| panic!("{what}\nwe refuse: {e}"));
        assert_eq!(config.kind, ringconf::Kind::CarbonConf, "{what}");
        deduplicated += config.notes.len();
        assert_same(&what, &job.names, &ours(&config, &job.names), &theirs.placements);
        placed += job.names.len();
    }
    assert!(deduplicated > 0 || count < 50, "the generator repeats destinations now and then");
    eprintln!("carbon 1.1.10: {count} carbon.conf files, {placed} placements, all equal");
}

// ---------------------------------------------------------------------------------------------------------
// carbonate.conf

fn carbonate_conf(rng: &mut StdRng) -> (String, Option<String>) {
    let mut text = String::new();
    if rng.gen_bool(0.3) {
        text.push_str("[DEFAULT]\nssh_user = carbon\n");
    }
    let clusters = ["main", "dc2", "old-ring"];
    let used = rng.gen_range(1..=3);
    for name in &clusters[..used] {
        let n = if rng.gen_bool(0.1) { rng.gen_range(1..=3) } else { rng.gen_range(1..=CARBON_MAX_NODES) };
        let kind = random_kind(rng);
        let nodes = random_nodes(rng, n, kind, &carbon_host);
        let replicas = rng.gen_range(1..=nodes.len().min(3));
        text.push_str(comment(rng));
        text.push_str(&format!("[{name}]\n"));
        // carbonate removes every space from destinations.
        let entries: Vec<String> = nodes
            .iter()
            .map(|n| if rng.gen_bool(0.2) { destination(n).replace(':', " : ") } else { destination(n) })
            .collect();
        let joined = join_destinations(rng, &entries);
        text.push_str(&setting(rng, "DESTINATIONS", &joined));
        text.push_str(&setting(rng, "REPLICATION_FACTOR", &replicas.to_string()));
        match rng.gen_range(0..6) {
            0 => {}
            1 => text.push_str(&setting(rng, "DIVERSE_REPLICAS", "")),
            _ => {
                let diverse = rng.gen_bool(0.5);
                let word = boolean_word(rng, diverse);
                text.push_str(&setting(rng, "DIVERSE_REPLICAS", &word));
            }
        }
        if let Some(hash) = carbon_hash(rng, &nodes) {
            text.push_str(&setting(rng, "hashing_type", hash));
        }
        if rng.gen_bool(0.3) {
            text.push_str(&setting(rng, "RELAY_METHOD", "consistent-hashing"));
        }
        text.push_str(&setting(rng, "SSH_USER", "graphite"));
    }
    let chosen = clusters[rng.gen_range(0..used)];
    let cluster = if chosen == "main" && rng.gen_bool(0.5) { None } else { Some(chosen.to_owned()) };
    (text, cluster)
}

#[test]
fn carbonate_conf_agrees_with_carbonate_1_1_10() {
    let seed = seed(2);
    let dir = tempfile::tempdir().expect("tempdir");
    let (count, jobs, texts) =
        conf_jobs(seed, dir.path(), "carbonate", carbonate_conf, |cluster| cluster.map(str::to_owned));
    let answers = oracle(&jobs);
    let (mut placed, mut as_carbonate, mut carbonate_defect) = (0, 0, 0);
    for (i, ((job, answer), (text, cluster))) in jobs.iter().zip(answers).zip(&texts).enumerate() {
        let what = format!("BUCKY_RINGCONF_SEED={} carbonate.conf #{i} (--cluster {cluster:?}):\n{text}", seed - 2);
        let theirs = answer.unwrap_or_else(|e| panic!("{what}\ncarbonate refuses a generated file: {e}"));
        let config = ringconf::parse(text, cluster.as_deref()).unwrap_or_else(|e| panic!("{what}\nwe refuse: {e}"));
        assert_eq!(config.kind, ringconf::Kind::CarbonateConf, "{what}");
        let ours = ours(&config, &job.names);
        match &theirs.placements_boolean {
            // diverse_replicas = false/no/0/off: carbonate's router gets the truthy string; we read the
            // boolean, as carbon does, and say so.
            Some(boolean) => {
                assert!(!config.ring.diverse(), "{what}");
                assert_eq!(config.notes.len(), 1, "{what}: the difference is reported");
                assert_same(&what, &job.names, &ours, boolean);
                carbonate_defect += 1;
            }
            None => {
                assert!(
                    config.notes.is_empty(),
                    "{what}: {:?} (carbonate read {:?})",
                    config.notes,
                    theirs.diverse_raw
                );
                assert_same(&what, &job.names, &ours, &theirs.placements);
                as_carbonate += 1;
            }
        }
        placed += job.names.len();
    }
    eprintln!(
        "carbonate 1.1.10: {count} carbonate.conf files, {placed} placements, all equal ({as_carbonate} exactly as \
         carbon-lookup, {carbonate_defect} with diverse_replicas = false, which carbonate reads as true)"
    );
}

// ---------------------------------------------------------------------------------------------------------
// carbon-c-relay

/// A relay member as the file spells it: address, then `=instance` bare, quoted or spaced.
fn relay_member(rng: &mut StdRng, node: &Node, with_port: bool) -> String {
    let host = if node.server.contains(':') { format!("[{}]", node.server) } else { node.server.clone() };
    let mut member = match node.port {
        Some(port) if with_port => format!("{host}:{port}"),
        _ => host,
    };
    if let Some(instance) = &node.instance {
        let eq = *["=", " = ", "= "].choose(rng).expect("eq");
        if rng.gen_bool(0.5) {
            member.push_str(&format!("{eq}\"{instance}\""));
        } else {
            member.push_str(&format!("{eq}{instance}"));
        }
    }
    let option =
        *["", "", "", " proto tcp", " type linemode", " transport plain", " proto udp"].choose(rng).expect("opts");
    member + option
}

/// A random relay config, the cluster to name (None when it is the only hash cluster), the chosen cluster's
/// hash, and its members as the relay prints them (`host:port`).
fn relay_conf(rng: &mut StdRng) -> (String, Option<String>, &'static str, Vec<String>) {
    let hashes = ["carbon_ch", "fnv1a_ch", "jump_fnv1a_ch"];
    let hash = *hashes.choose(rng).expect("hashes");
    let n = if rng.gen_bool(0.1) { rng.gen_range(1..=3) } else { rng.gen_range(1..=20) };
    let kind = random_kind(rng);
    let mut nodes = random_nodes(rng, n, kind, &relay_host);
    // Members written without a port are on 2003.
    let portless: Vec<bool> = nodes.iter().map(|_| rng.gen_bool(0.2)).collect();
    for (node, &portless) in nodes.iter_mut().zip(&portless) {
        if portless {
            node.port = Some(2003);
        }
    }
    // The relay keys members by host:port: make them unique again after the port change.
    let mut seen = std::collections::HashSet::new();
    let keep: Vec<bool> = nodes.iter().map(|n| seen.insert((n.server.clone(), n.port))).collect();
    let mut kept = keep.iter();
    nodes.retain(|_| *kept.next().expect("keep"));
    let mut kept = keep.iter();
    let portless: Vec<bool> = portless.into_iter().filter(|_| *kept.next().expect("keep")).collect();
    let replicas = rng.gen_range(1..=nodes.len().min(3));
    let name = *["graphite", "cache", "\"ring-1\"", "dc1_storage"].choose(rng).expect("names");
    let bare_name = name.trim_matches('"').to_owned();

    let mut text = String::from("# carbon-c-relay config\n");
    if rng.gen_bool(0.5) {
        text.push_str("listen\n    type linemode\n        2003 proto tcp\n        2003 proto udp\n    ;\n");
    }
    if rng.gen_bool(0.4) {
        text.push_str("cluster fwd forward 192.168.77.1:2003 192.168.77.2:2003 ;\n");
    }
    let other_hash = rng.gen_bool(0.3);
    if other_hash {
        text.push_str("cluster other carbon_ch replication 1 172.16.0.1:2003=a 172.16.0.2:2003=b ;\n");
    }
    text.push_str(&format!("cluster {name}\n    {hash}"));
    if replicas > 1 || rng.gen_bool(0.3) {
        text.push_str(&format!(" replication {replicas}"));
    }
    if rng.gen_bool(0.2) {
        text.push_str(" dynamic");
    }
    text.push('\n');
    for (node, &portless) in nodes.iter().zip(&portless) {
        let member = relay_member(rng, node, !portless);
        let sep = *["\n        ", " ", "  # member\n        "].choose(rng).expect("sep");
        text.push_str(&format!("        {member}{sep}"));
    }
    text.push_str("\n    ;\n");
    if rng.gen_bool(0.5) {
        text.push_str("rewrite ^zzznever\\.(.*) into zzz.\\1 ;\n");
    }
    if rng.gen_bool(0.3) {
        text.push_str(
            "aggregate ^zzznever\\.cpu\\.[^.]+\n    every 60 seconds\n    expire after 75 seconds\n    compute sum \
             write to zzz.cpu.sum\n    ;\n",
        );
    }
    if rng.gen_bool(0.4) {
        text.push_str("match ^zzznever\\. send to fwd stop ;\n".replace("fwd", "blackhole").as_str());
    }
    text.push_str(&format!("match * send to {bare_name} ;\n"));
    let addresses = nodes
        .iter()
        .map(|n| {
            let port = n.port.unwrap_or(2003);
            if n.server.contains(':') {
                format!("[{}]:{port}", n.server)
            } else {
                format!("{}:{port}", n.server)
            }
        })
        .collect();
    let cluster = (other_hash || rng.gen_bool(0.5)).then_some(bare_name);
    (text, cluster, hash, addresses)
}

/// `carbon-c-relay -t -f FILE`: per name, the members (`host:port`) the cluster sends it to.
fn relay_place(path: &Path, cluster: &str, hash: &str, names: &[String]) -> Vec<Vec<String>> {
    let report = relay_test(path, names, &format!("carbon-c-relay -t -f {}", path.display()));
    let answers = parse_relay_test(&report, &[format!("    {hash}({cluster})")]);
    assert_eq!(answers.len(), names.len(), "one relay answer per name:\n{report}");
    answers
        .into_iter()
        .zip(names)
        .map(|((name, mut clusters), asked)| {
            assert_eq!(&name, asked, "relay answers in input order");
            clusters.remove(0)
        })
        .collect()
}

#[test]
fn relay_conf_agrees_with_carbon_c_relay_3_7_3() {
    carbon_c_relay(); // the version check, once before the workers start
    let seed = seed(3);
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().expect("tempdir");
    let count = env_usize("BUCKY_RINGCONFS", 200);
    let names_per = env_usize("BUCKY_RINGCONF_NAMES", 100);
    let cases: Vec<_> = (0..count)
        .map(|i| {
            let (text, cluster, hash, addresses) = relay_conf(&mut rng);
            let path = dir.path().join(format!("relay-{i}.conf"));
            std::fs::write(&path, &text).expect("write");
            (i, text, cluster, hash, addresses, path, random_names(&mut rng, names_per))
        })
        .collect();
    let placed: usize = std::thread::scope(|scope| {
        let workers: Vec<_> = cases
            .chunks(count.div_ceil(2).max(1))
            .map(|part| {
                scope.spawn(move || {
                    let mut placed = 0;
                    for (i, text, cluster, hash, addresses, path, names) in part {
                        let what = format!(
                            "BUCKY_RINGCONF_SEED={} relay config #{i} (--cluster {cluster:?}):\n{text}",
                            seed - 3
                        );
                        let config = ringconf::parse(text, cluster.as_deref())
                            .unwrap_or_else(|e| panic!("{what}\nwe refuse: {e}"));
                        assert_eq!(config.kind, ringconf::Kind::RelayConf, "{what}");
                        let by_index: HashMap<usize, &String> = addresses.iter().enumerate().collect();
                        let ours: Vec<Vec<String>> = names
                            .iter()
                            .map(|name| config.ring.replica_indices(name).map(|i| by_index[&i].clone()).collect())
                            .collect();
                        let theirs = relay_place(path, &config.cluster, hash, names);
                        assert_same(&what, names, &ours, &theirs);
                        placed += names.len();
                    }
                    placed
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().expect("relay worker")).sum()
    });
    eprintln!("carbon-c-relay 3.7.3: {count} relay configs, {placed} placements, all equal");
}
