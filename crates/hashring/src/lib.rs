//! Graphite metric placement, bit-exact with **carbon 1.1.10** and **carbon-c-relay 3.7.3**.
//!
//! A [`Ring`] answers "which carbon-cache(s) hold this metric?" the way a given peer would: carbon's
//! `ConsistentHashingRouter` (carbon-relay, `DESTINATIONS`, carbonate) or a carbon-c-relay `cluster`.
//! The same hash name means different placements in the two peers, so every ring names both its [`Hash`]
//! and its [`Router`]:
//!
//! | hash | [`Router::Carbon`] (carbon 1.1.10) | [`Router::Relay`] (carbon-c-relay 3.7.3) |
//! |---|---|---|
//! | [`Hash::CarbonCh`] | MD5 of `str((server, instance))` + `:i` (Python `repr` rules), 100 points per node; a point landing on a taken position moves to the next free one, in configuration order (no wrap) | same keys written with `'%s'` (no escaping, cut at 255 bytes); no probing: points sorted by (position, host, instance with no instance last) and every point of a tie goes to the first node |
//! | [`Hash::Fnv1aCh`] | FNV-1a 32 of `i-instance`, folded to 16 bits, unsigned bytes; no instance hashes as `i-None` (so instance-less rings are degenerate, as in carbon) | `i-instance`, or `i-host:port` (port default 2003) without instance; bytes are signed (x86 `char`); ties sorted by (position, host, port) and voided |
//! | [`Hash::JumpFnv1aCh`] | refused: carbon has no jump hash | jump consistent hash of FNV-1a 64 (signed bytes) over the members ordered by instance (numerically when all instances are numbers), instance-less members last in configuration order; further replicas by xorshift64* and swap-remove |
//!
//! Lookups (`bisect_left` on the positions, wrapping to the first point) and replica walks (skip nodes already
//! chosen) follow each peer, including carbon's DIVERSE_REPLICAS (replicas on distinct servers) and carbon's
//! one-node-ring quirk (visible through [`Ring::walk`]). Metric names are hashed exactly as given, as UTF-8.
//!
//! The default router is carbon for carbon_ch and the relay for fnv1a_ch and jump_fnv1a_ch
//! ([`Hash::default_router`]).
//!
//! # Building a ring
//!
//! `Ring::new(nodes, hash, router, replicas, diverse)` or the equivalent builder [`RingSpec`]. Nodes come from
//! [`Node::parse`] (buckyd / carbon-c-relay syntax `host[:port][=instance]`, `[v6][:port][=instance]`) or
//! [`parse_destinations`] (carbon's `host:port[:instance], ...`). Anything the peer would refuse or place
//! ambiguously is an [`Error`] naming the node: empty host, bad port, duplicate nodes, an empty ring, a
//! replication factor outside 1..=nodes, jump_fnv1a_ch with the carbon router, mixed numeric/non-numeric
//! jump instances.
//!
//! ```
//! use hashring::{Hash, Node, Ring, Router};
//!
//! let nodes = ["10.0.0.1:2004=a", "10.0.0.1:2104=b", "10.0.0.2:2004=a"]
//!     .iter()
//!     .map(|spec| Node::parse(spec))
//!     .collect::<Result<Vec<_>, _>>()?;
//! // carbon 1.1.10 with REPLICATION_FACTOR = 2 and DIVERSE_REPLICAS = True.
//! let ring = Ring::new(nodes, Hash::CarbonCh, Some(Router::Carbon), 2, true)?;
//! let replicas: Vec<&Node> = ring.nodes_for("carbon.agents.a.cpuUsage").collect();
//! assert_eq!(replicas.len(), 2);
//! assert_ne!(replicas[0].server, replicas[1].server); // diverse: two different servers
//! assert_eq!(ring.primary("carbon.agents.a.cpuUsage"), replicas[0]);
//! assert!(ring.describe().contains("carbon_ch") && ring.describe().contains("carbon router"));
//!
//! // carbon-c-relay's jump_fnv1a_ch (its default router is the relay), three replicas.
//! let nodes: Vec<Node> = ["cache-1:2003=1", "cache-2:2003=2", "cache-3:2003=10"]
//!     .iter()
//!     .map(|spec| spec.parse())
//!     .collect::<Result<_, _>>()?;
//! let ring = Ring::new(nodes, "jump_fnv1a".parse()?, None, 3, false)?;
//! assert_eq!(ring.router(), Router::Relay);
//! let all: Vec<String> = ring.nodes_for("foo.bar").map(|n| n.to_string()).collect();
//! assert_eq!(all.len(), 3);
//! # Ok::<(), hashring::Error>(())
//! ```
//!
//! # How it is checked
//!
//! `crates/hashring/tests/it/differential.rs` places 10,000 random names (ASCII and not) on 120 random rings
//! (1-40 nodes; IPv4, IPv6 and host names; no, numeric, text and mixed instances; hosts repeated with other
//! ports and instances; replication 1-3; diverse on and off) with every hash each peer supports, and requires
//! 100 % agreement with carbon 1.1.10's own router (`tests/oracle/ring_oracle.py`, run by the venv python in
//! `BUCKY_ORACLE_PYTHON`) and with `carbon-c-relay -t`. `BUCKY_RING_SEED` replays a run.
//! `tests/known_vectors.rs` pins the known collisions and each divergence between the peers. Throughput:
//! `cargo bench -p bucky-hashring`, and `scripts/bench-hashring.sh` for ours vs carbon's Python router.
//!
//! # What is not reproduced
//!
//! * carbon with `DYNAMIC_ROUTER = True` (insertion order = connection order) and carbon 0.9.x / the Go
//!   buckytools rings (no probing) — use the configuration order of a 1.x carbon.
//! * carbon_ch node keys with characters above U+00FF under the carbon router (Python's `repr` of those
//!   depends on its Unicode tables): refused.
//! * carbon-c-relay's name sanitising: the live relay hashes its sanitised, tag-free name; pass names as
//!   stored on disk.
#![deny(missing_docs)]

mod digest;
mod error;
mod hash;
mod keys;
mod node;
mod ring;

pub use error::Error;
pub use hash::{Hash, Router};
pub use node::{parse_destinations, Node};
pub use ring::{Point, ReplicaIndices, Ring, RingSpec};

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<T: Send + Sync + Clone>() {}

    #[test]
    fn ring_is_shareable() {
        assert_send_sync::<Ring>();
    }
}
