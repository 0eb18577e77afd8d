//! Placement throughput on one core: `placement_rate --hash H [--router R] [--replicas N] NODE... < names`.
//!
//! Reads metric names (one per line) into memory, then places all of them several times and prints the best
//! pass as `names=N seconds=S rate=R` (the same line `tests/oracle/ring_oracle.py --bench` prints for carbon's
//! Python router). Used by `scripts/bench-hashring.sh`.

use std::hint::black_box;
use std::io::BufRead;
use std::time::Instant;

use hashring::{Hash, Node, Ring, Router};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut hash = Hash::CarbonCh;
    let mut router = None;
    let mut replicas = 1;
    let mut nodes = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--hash" => hash = args.next().ok_or("--hash needs a value")?.parse()?,
            "--router" => router = Some(args.next().ok_or("--router needs a value")?.parse::<Router>()?),
            "--replicas" => replicas = args.next().ok_or("--replicas needs a value")?.parse()?,
            spec => nodes.push(Node::parse(spec)?),
        }
    }
    let ring = Ring::new(nodes, hash, router, replicas, false)?;
    let names: Vec<String> = std::io::stdin().lock().lines().collect::<Result<_, _>>()?;
    let names: Vec<&str> = names.iter().map(String::as_str).filter(|n| !n.is_empty()).collect();
    let mut best = f64::INFINITY;
    for _ in 0..5 {
        let start = Instant::now();
        for name in &names {
            for node in ring.nodes_for(black_box(name)) {
                black_box(node);
            }
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    println!("names={} seconds={best:.6} rate={:.1}", names.len(), names.len() as f64 / best);
    Ok(())
}
