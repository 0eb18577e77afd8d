//! Randomized differential tests: random rings and names through our rings and the real peers, 100 %
//! agreement required. carbon 1.1.10 (carbon router: carbon_ch, fnv1a_ch) and carbon-c-relay 3.7.3 (relay
//! router: carbon_ch, fnv1a_ch, jump_fnv1a_ch).
//!
//! `BUCKY_RING_SEED=N` replays a run (the seed is printed on failure); `BUCKY_RINGS` / `BUCKY_RING_NAMES`
//! change the number of rings (default 120) and names per ring (default 10,000).

use crate::common;

use crate::common::{CarbonJob, Instances};
use hashring::{Error, Hash, Node, Ring, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

struct Case {
    nodes: Vec<Node>,
    kind: Instances,
    replicas: usize,
    diverse: bool,
    names: Vec<String>,
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The run's seed and rings, shared by both tests (they run in one process).
fn shared() -> &'static (u64, Vec<Case>) {
    static CASES: OnceLock<(u64, Vec<Case>)> = OnceLock::new();
    CASES.get_or_init(|| {
        let seed = common::seed();
        eprintln!("BUCKY_RING_SEED={seed}");
        (seed, cases(seed))
    })
}

/// The same rings for both peers, from one seed.
fn cases(seed: u64) -> Vec<Case> {
    let mut rng = StdRng::seed_from_u64(seed);
    let rings = env_usize("BUCKY_RINGS", 120);
    let names = env_usize("BUCKY_RING_NAMES", 10_000);
    (0..rings)
        .map(|_| {
            let (nodes, kind) = common::random_ring(&mut rng);
            let replicas = rng.gen_range(1..=nodes.len().min(3));
            let diverse = rng.gen_bool(0.5);
            let names = common::random_names(&mut rng, names);
            Case { nodes, kind, replicas, diverse, names }
        })
        .collect()
}

fn context(seed: u64, ring: usize, hash: Hash, router: Router, case: &Case) -> String {
    format!(
        "BUCKY_RING_SEED={seed} ring #{ring} ({} nodes, {:?} instances): {hash} / {router}, replication {}{}",
        case.nodes.len(),
        case.kind,
        case.replicas,
        if case.diverse && router == Router::Carbon { ", diverse" } else { "" }
    )
}

#[test]
fn carbon_1_1_10_agrees_on_random_rings() {
    let (seed, cases) = shared();
    let seed = *seed;
    let hashes = [Hash::CarbonCh, Hash::Fnv1aCh];
    let picks: Vec<(usize, Hash)> = (0..cases.len())
        .flat_map(|ring| hashes.iter().map(move |&hash| (ring, hash)))
        .filter(|&(ring, hash)| affordable(hash, &cases[ring].nodes))
        .collect();
    let jobs: Vec<CarbonJob> = picks
        .iter()
        .map(|&(ring, hash)| {
            let case = &cases[ring];
            CarbonJob {
                hash,
                nodes: case.nodes.clone(),
                replicas: case.replicas,
                diverse: case.diverse,
                names: case.names.clone(),
                walk: false,
            }
        })
        .collect();
    let skipped = cases.len() * hashes.len() - jobs.len();
    let answers = common::carbon_batch_parallel(&jobs, 2);
    let mut compared = 0;
    for ((job, answer), &(ring_no, _)) in jobs.iter().zip(answers).zip(&picks) {
        let what = context(seed, ring_no, job.hash, Router::Carbon, &cases[ring_no]);
        let ours = Ring::new(job.nodes.clone(), job.hash, Some(Router::Carbon), job.replicas, job.diverse);
        let (ring, answer) = match (ours, answer) {
            (Ok(ring), Ok(answer)) => (ring, answer),
            (Err(ours), Err(_)) => panic!("{what}: the generator made a ring both refuse: {ours}"),
            (Err(ours), Ok(_)) => panic!("{what}: we refuse ({ours}), carbon accepts"),
            (Ok(_), Err(theirs)) => panic!("{what}: carbon refuses ({theirs}), we accept"),
        };
        let our_ring: Vec<(u32, usize)> = ring.points().map(|p| (p.position, p.node)).collect();
        assert!(our_ring == answer.ring, "{what}: ring points differ from carbon's");
        let ours: Vec<Vec<usize>> = job.names.iter().map(|name| ring.replica_indices(name).collect()).collect();
        common::assert_same(&what, &job.nodes, &job.names, &ours, &answer.placements);
        compared += job.names.len();
    }
    eprintln!(
        "carbon 1.1.10: {} rings, {compared} placements, all equal ({skipped} fnv1a_ch rings with many \
         instance-less nodes left to the unit tests)",
        jobs.len()
    );
}

/// carbon's fnv1a_ch stacks every instance-less node on the same 100 keys (`i-None`), and its probing scans
/// the whole ring per step: building such a ring in carbon costs O(k^2 * ring) Python steps (10 s for 40
/// nodes). Those rings are checked when small; the degenerate stacking itself has its own unit test.
fn affordable(hash: Hash, nodes: &[Node]) -> bool {
    hash != Hash::Fnv1aCh || nodes.len() <= 10 || nodes.iter().filter(|n| n.instance.is_none()).count() <= 3
}

#[test]
fn carbon_c_relay_3_7_3_agrees_on_random_rings() {
    let (seed, cases) = shared();
    let seed = *seed;
    let mut compared = 0;
    let mut rings = 0;
    for (i, case) in cases.iter().enumerate() {
        // One relay run places the names for all three hashes (one cluster each).
        let theirs = common::relay_place_many(&Hash::ALL, &case.nodes, case.replicas, &case.names);
        for (hash, theirs) in Hash::ALL.into_iter().zip(theirs) {
            let what = context(seed, i, hash, Router::Relay, case);
            let ring = match Ring::new(case.nodes.clone(), hash, Some(Router::Relay), case.replicas, false) {
                Ok(ring) => ring,
                // The one refusal the generator provokes on purpose: the relay's order would be qsort's whim.
                Err(Error::InstanceOrder { .. }) if hash == Hash::JumpFnv1aCh && case.kind == Instances::MixedKinds => {
                    continue
                }
                Err(err) => panic!("{what}: we refuse a ring the relay accepts: {err}"),
            };
            let ours: Vec<Vec<usize>> = case.names.iter().map(|name| ring.replica_indices(name).collect()).collect();
            common::assert_same(&what, &case.nodes, &case.names, &ours, &theirs);
            compared += case.names.len();
            rings += 1;
        }
    }
    eprintln!("carbon-c-relay 3.7.3: {rings} rings, {compared} placements, all equal");
}
