//! Drivers for the two reference peers, and the random rings and names the differential tests feed them.
//!
//! * carbon 1.1.10: `tests/oracle/ring_oracle.py --batch` run by the venv python in `BUCKY_ORACLE_PYTHON`
//!   (default `<workspace>/.venv/bin/python`, which `scripts/test.sh` creates).
//! * carbon-c-relay 3.7.3: `carbon-c-relay -t -f CONF` on a generated config.
//!
//! A missing or wrong-version peer panics: these tests fail, they never skip.
#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use hashring::{Hash, Node, Ring, Router};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use serde_json::{json, Value};
use test_support::{parse_relay_test, pipe, relay_test};

// ---------------------------------------------------------------------------------------------------------
// carbon 1.1.10

/// The venv python that has carbon 1.1.10, checked once.
pub fn carbon_python() -> &'static PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        let python = test_support::oracle_python();
        let mut cmd = Command::new(&python);
        cmd.arg(oracle_script()).arg("--version");
        let version = String::from_utf8(pipe(cmd, Vec::new(), "ring_oracle.py --version")).expect("utf-8");
        assert_eq!(version.trim(), "carbon 1.1.10", "the carbon oracle must be carbon 1.1.10");
        python
    })
}

fn oracle_script() -> PathBuf {
    test_support::oracle_script("ring_oracle.py")
}

/// One ring for carbon's router.
#[derive(Debug, Clone)]
pub struct CarbonJob {
    pub hash: Hash,
    pub nodes: Vec<Node>,
    pub replicas: usize,
    pub diverse: bool,
    pub names: Vec<String>,
    /// `ConsistentHashRing.get_nodes` instead of the router's destinations.
    pub walk: bool,
}

/// What carbon answered for one job: node indices per name, and its ring as (position, node index).
#[derive(Debug, Clone, PartialEq)]
pub struct CarbonAnswer {
    pub placements: Vec<Vec<usize>>,
    pub ring: Vec<(u32, usize)>,
}

/// Runs all jobs through one carbon process. `Err` is carbon's refusal of that ring.
pub fn carbon_batch(jobs: &[CarbonJob]) -> Vec<Result<CarbonAnswer, String>> {
    let mut input = Vec::new();
    for job in jobs {
        let nodes: Vec<Value> =
            job.nodes.iter().map(|n| json!([n.server, n.port.unwrap_or(2004), n.instance])).collect();
        let line = json!({
            "hash": job.hash.name(), "nodes": nodes, "replicas": job.replicas, "diverse": job.diverse,
            "names": job.names, "walk": job.walk, "ring": true,
        });
        input.extend(line.to_string().bytes());
        input.push(b'\n');
    }
    let mut cmd = Command::new(carbon_python());
    cmd.arg(oracle_script()).arg("--batch");
    let out = pipe(cmd, input, "carbon oracle (ring_oracle.py --batch)");
    let answers: Vec<_> = BufReader::new(&out[..])
        .lines()
        .map(|line| {
            let value: Value = serde_json::from_str(&line.expect("oracle output")).expect("oracle JSON");
            if let Some(err) = value.get("error") {
                return Err(err.as_str().unwrap_or_default().to_owned());
            }
            let indices = |v: &Value| -> Vec<usize> {
                v.as_array().expect("array").iter().map(|i| i.as_u64().expect("index") as usize).collect()
            };
            let placements = value["placements"].as_array().expect("placements").iter().map(indices).collect();
            let ring = value["ring"]
                .as_array()
                .expect("ring")
                .iter()
                .map(|e| (e[0].as_u64().expect("pos") as u32, e[1].as_u64().expect("node") as usize))
                .collect();
            Ok(CarbonAnswer { placements, ring })
        })
        .collect();
    assert_eq!(answers.len(), jobs.len(), "one oracle answer per job");
    answers
}

/// [`carbon_batch`] split over `processes` carbon processes running at once.
pub fn carbon_batch_parallel(jobs: &[CarbonJob], processes: usize) -> Vec<Result<CarbonAnswer, String>> {
    let chunk = jobs.len().div_ceil(processes.max(1)).max(1);
    std::thread::scope(|scope| {
        let handles: Vec<_> = jobs.chunks(chunk).map(|part| scope.spawn(move || carbon_batch(part))).collect();
        handles.into_iter().flat_map(|h| h.join().expect("carbon oracle thread")).collect()
    })
}

// ---------------------------------------------------------------------------------------------------------
// carbon-c-relay 3.7.3

/// The relay config: one cluster `oracle_<hash>` per hash over the same members, and a rule sending every
/// metric to all of them. Instances are written quoted (bare ones are re-lexed by the relay).
pub fn relay_config(hashes: &[Hash], nodes: &[Node], replicas: usize) -> String {
    let mut conf = String::new();
    for hash in hashes {
        conf.push_str(&format!("cluster oracle_{hash}\n    {hash} replication {replicas}\n"));
        for node in nodes {
            conf.push_str(&format!("        {}", relay_address(node)));
            if let Some(instance) = &node.instance {
                conf.push_str(&format!("=\"{}\"", instance.replace('\\', "\\\\").replace('"', "\\\"")));
            }
            conf.push('\n');
        }
        conf.push_str("    ;\n");
    }
    let targets: Vec<String> = hashes.iter().map(|h| format!("oracle_{h}")).collect();
    conf.push_str(&format!("match * send to {};\n", targets.join(" ")));
    conf
}

/// How `carbon-c-relay -t` prints a member: `host:port`, `[v6]:port`.
fn relay_address(node: &Node) -> String {
    let port = node.port.unwrap_or(2003);
    if node.server.contains(':') {
        format!("[{}]:{port}", node.server)
    } else {
        format!("{}:{port}", node.server)
    }
}

/// Places `names` with `carbon-c-relay -t`: node indices per name, in replica order.
pub fn relay_place(hash: Hash, nodes: &[Node], replicas: usize, names: &[String]) -> Vec<Vec<usize>> {
    relay_place_many(&[hash], nodes, replicas, names).remove(0)
}

/// Places `names` with one `carbon-c-relay -t` run for several hashes at once (one cluster each): per hash,
/// node indices per name. One run means one round of DNS look-ups for host names; the glibc resolver is told
/// to give up after one 1 s try (`RES_OPTIONS`), since an unanswered query otherwise stalls the relay 5 s
/// and an unresolvable host ends up identified by its name either way.
pub fn relay_place_many(hashes: &[Hash], nodes: &[Node], replicas: usize, names: &[String]) -> Vec<Vec<Vec<usize>>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let conf = dir.path().join("relay.conf");
    let text = relay_config(hashes, nodes, replicas);
    std::fs::write(&conf, &text).expect("write relay config");
    let report = relay_test(&conf, names, &format!("carbon-c-relay -t on\n{text}"));
    let by_address: HashMap<String, usize> = nodes.iter().enumerate().map(|(i, n)| (relay_address(n), i)).collect();
    let records = parse_relay_report(&report, hashes, &by_address);
    assert_eq!(records.len(), names.len(), "one relay answer per name for\n{text}");
    let mut per_hash: Vec<Vec<Vec<usize>>> = vec![Vec::with_capacity(names.len()); hashes.len()];
    for (name, (echoed, clusters)) in names.iter().zip(records) {
        assert_eq!(name, &echoed, "relay answers in input order");
        for (slot, replicas) in per_hash.iter_mut().zip(clusters) {
            slot.push(replicas);
        }
    }
    per_hash
}

/// Reads the `-t` report of a config from [`relay_config`] (one cluster per hash, `oracle_HASH`): per name,
/// the member indices under each hash.
fn parse_relay_report(
    report: &str,
    hashes: &[Hash],
    by_address: &HashMap<String, usize>,
) -> Vec<(String, Vec<Vec<usize>>)> {
    let headers: Vec<String> = hashes.iter().map(|h| format!("    {h}(oracle_{h})")).collect();
    let index = |addr: &String| *by_address.get(addr).unwrap_or_else(|| panic!("relay named unknown member {addr:?}"));
    parse_relay_test(report, &headers)
        .into_iter()
        .map(|(name, clusters)| (name, clusters.iter().map(|members| members.iter().map(index).collect()).collect()))
        .collect()
}

// ---------------------------------------------------------------------------------------------------------
// Ours, in the same shape

/// Our placement of `names` (replica indices per name), or our refusal.
pub fn ours(
    hash: Hash,
    router: Router,
    nodes: &[Node],
    replicas: usize,
    diverse: bool,
    names: &[String],
) -> Result<Vec<Vec<usize>>, hashring::Error> {
    let ring = Ring::new(nodes.to_vec(), hash, Some(router), replicas, diverse)?;
    Ok(names.iter().map(|name| ring.replica_indices(name).collect()).collect())
}

/// Panics with a readable report of the first disagreements.
pub fn assert_same(context: &str, nodes: &[Node], names: &[String], ours: &[Vec<usize>], theirs: &[Vec<usize>]) {
    assert_eq!(ours.len(), theirs.len(), "{context}: answer count");
    let show = |v: &[usize]| v.iter().map(|&i| nodes[i].to_string()).collect::<Vec<_>>().join(",");
    let bad: Vec<String> = names
        .iter()
        .zip(ours.iter().zip(theirs))
        .filter(|(_, (a, b))| a != b)
        .take(5)
        .map(|(name, (a, b))| format!("  {name:?}: ours {} / peer {}", show(a), show(b)))
        .collect();
    if !bad.is_empty() {
        let total = ours.iter().zip(theirs).filter(|(a, b)| a != b).count();
        let ring: Vec<String> = nodes.iter().map(Node::to_string).collect();
        panic!(
            "{context}: {total} of {} names placed differently\n  ring: {}\n{}",
            names.len(),
            ring.join(" "),
            bad.join("\n")
        );
    }
}

// ---------------------------------------------------------------------------------------------------------
// Random rings and names

/// The seed for this run: `BUCKY_RING_SEED` if set, else the clock. Printed in every failure message.
pub fn seed() -> u64 {
    std::env::var("BUCKY_RING_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    })
}

/// Which kind of instances a random ring gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instances {
    None,
    Numeric,
    Text,
    /// Some nodes with a (text or numeric, not both) instance, some without.
    Some,
    /// Numeric and text instances together (jump_fnv1a_ch refuses these).
    MixedKinds,
}

/// A random ring of 1..=40 nodes: IPv4, host names (at most 12, in some rings) and IPv6 hosts, hosts repeated with distinct
/// ports and instances, every kind of instance. Valid for both peers: (server, instance), (server, port) and instances
/// are unique, repeated hosts are addresses (the relay identifies a host name by name alone).
pub fn random_ring(rng: &mut StdRng) -> (Vec<Node>, Instances) {
    let n = if rng.gen_bool(0.1) { rng.gen_range(1..=3) } else { rng.gen_range(1..=40) };
    let kinds = [Instances::None, Instances::Numeric, Instances::Text, Instances::Some, Instances::MixedKinds];
    let weights = [3, 3, 3, 3, 1];
    let kind = kinds[weighted(rng, &weights)];
    let text_numeric = rng.gen_bool(0.5); // Instances::Some: numeric or text
    let mut numbers: Vec<i64> = (0..200).collect();
    numbers.shuffle(rng);
    let mut nodes: Vec<Node> = Vec::with_capacity(n);
    let mut used_ports: HashMap<String, Vec<u16>> = HashMap::new();
    let mut used_hostnames = std::collections::HashSet::new();
    let max_host_names = if rng.gen_bool(0.3) { MAX_HOST_NAMES } else { 0 };
    for (i, &number) in numbers.iter().enumerate().take(n) {
        let instance = match kind {
            Instances::None => None,
            Instances::Numeric => Some(numeric_instance(rng, number)),
            Instances::Text => Some(text_instance(rng, i)),
            Instances::Some if rng.gen_bool(0.5) => None,
            Instances::Some if text_numeric => Some(numeric_instance(rng, number)),
            Instances::Some => Some(text_instance(rng, i)),
            Instances::MixedKinds if rng.gen_bool(0.5) => Some(numeric_instance(rng, number)),
            Instances::MixedKinds => Some(text_instance(rng, i)),
        };
        // Repeat an address host only for nodes with an instance (carbon keys nodes by (server, instance)).
        let repeat = instance.is_some() && !nodes.is_empty() && rng.gen_bool(0.3);
        let previous: Vec<&Node> = nodes.iter().filter(|n| !used_hostnames.contains(&n.server)).collect();
        let server = match previous.choose(rng) {
            Some(prev) if repeat && nodes.iter().all(|n| n.server != prev.server || n.instance.is_some()) => {
                prev.server.clone()
            }
            _ => loop {
                let candidate = random_host(rng, used_hostnames.len() < max_host_names);
                if nodes.iter().all(|n| n.server != candidate) {
                    if candidate.parse::<std::net::IpAddr>().is_err() {
                        used_hostnames.insert(candidate.clone());
                    }
                    break candidate;
                }
            },
        };
        let ports = used_ports.entry(server.clone()).or_default();
        let port = loop {
            let port = if rng.gen_bool(0.6) { 2003 + 100 * rng.gen_range(0..4) } else { rng.gen_range(1024..=65535) };
            if !ports.contains(&port) {
                break port;
            }
        };
        ports.push(port);
        let port = if port == 2003 && rng.gen_bool(0.5) { None } else { Some(port) };
        nodes.push(Node { server, port, instance });
    }
    (nodes, kind)
}

fn weighted(rng: &mut StdRng, weights: &[u32]) -> usize {
    let mut pick = rng.gen_range(0..weights.iter().sum::<u32>());
    for (i, &w) in weights.iter().enumerate() {
        if pick < w {
            return i;
        }
        pick -= w;
    }
    weights.len() - 1
}

/// Host names per ring, in 30 % of the rings: each costs the relay DNS look-ups, and the sandbox's resolver
/// drops a query now and then (a 1 s stall with the tests' RES_OPTIONS).
const MAX_HOST_NAMES: usize = 12;

fn random_host(rng: &mut StdRng, names_allowed: bool) -> String {
    match rng.gen_range(0..10) {
        5..=7 if !names_allowed => format!("10.9.{}.{}", rng.gen_range(0..4), rng.gen_range(1..250)),
        0..=4 => format!("10.{}.{}.{}", rng.gen_range(0..3), rng.gen_range(0..4), rng.gen_range(1..40)),
        5..=7 => {
            let stems = ["graphite", "carbon", "cache", "graphite-data", "gr"];
            let stem = stems.choose(rng).expect("stems");
            format!("{stem}{:03}-g{}", rng.gen_range(0..1000), rng.gen_range(1..9))
        }
        8 => format!("2001:db8::{:x}", rng.gen_range(1..0xffff)),
        _ => format!("fd00:{:x}::{:x}", rng.gen_range(1..0xff), rng.gen_range(1..0xff)),
    }
}

fn numeric_instance(rng: &mut StdRng, value: i64) -> String {
    match rng.gen_range(0..10) {
        0 => format!("{value:03}"),
        1 if value > 0 => format!("-{value}"),
        _ => value.to_string(),
    }
}

fn text_instance(rng: &mut StdRng, i: usize) -> String {
    let letters = "abcdefghijklmnopqrstuvwxyz";
    let pick = |rng: &mut StdRng| letters.as_bytes()[rng.gen_range(0..26)] as char;
    match rng.gen_range(0..12) {
        0 => format!("{}", pick(rng)).repeat(rng.gen_range(1..3)) + &i.to_string() + "x",
        1 => format!("it's-{i}"),
        2 => format!("café{i}"),
        3 => format!("cache-{}{i}", pick(rng)),
        4 => format!("{i}{}", pick(rng)),
        _ => {
            let len = rng.gen_range(1..8);
            (0..len).map(|_| pick(rng)).collect::<String>() + &format!("{i}")
        }
    }
}

/// `count` random metric names: dotted ASCII paths, ~10 % with non-ASCII (Latin, CJK, emoji), some with the
/// punctuation Graphite allows. No whitespace (the relay cuts a line at the first space).
pub fn random_names(rng: &mut StdRng, count: usize) -> Vec<String> {
    const WORDS: &[&str] = &[
        "carbon", "agents", "cpu", "load", "servers", "web", "db", "count", "mean", "p99", "sum", "requests", "errors",
        "latency", "disk", "sda", "rd_sec", "statsd", "prod", "dc1", "eth0", "rx-bytes", "user",
    ];
    const EXOTIC: &[&str] = &["café", "höst", "日本", "数据", "😀", "ñ", "Ωmega", "naïve", "ß", "€", "\u{ad}", "é"];
    const PUNCT: &[&str] = &["#", ";tag=v", ":", "=", "/", "'", "\"", "\\", "%", "@", "+", "*", "(", ")"];
    (0..count)
        .map(|i| {
            let parts = rng.gen_range(1..8);
            let mut name = String::new();
            for p in 0..parts {
                if p > 0 {
                    name.push('.');
                }
                match rng.gen_range(0..100) {
                    0..=59 => name.push_str(WORDS.choose(rng).expect("words")),
                    60..=79 => name.push_str(&format!("{}{}", WORDS.choose(rng).expect("w"), rng.gen_range(0..1000))),
                    80..=89 => name.push_str(&format!("host-{:x}", rng.gen::<u32>())),
                    90..=95 => name.push_str(EXOTIC.choose(rng).expect("exotic")),
                    _ => name.push_str(PUNCT.choose(rng).expect("punct")),
                }
            }
            if i % 1000 == 0 {
                name.push_str(&format!(".{}", "x".repeat(rng.gen_range(50..300))));
            }
            name
        })
        .collect()
}
