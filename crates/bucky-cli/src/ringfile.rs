//! The operator's own ring file (the config file's `ring_config`) held against the ring the agents run.
//!
//! carbon writes where its carbon.conf (or carbonate.conf, or the relay's config) says; bucky moves metrics
//! where the agents' ring says. When the two differ, a rebalance moves data to where carbon will never read or
//! write it. So a cluster whose config-file table names a ring file is healthy only while that file places
//! every metric as the agents do: the same hash, router, replication and members, and the same replicas for a
//! sample of names (which also catches what the fields cannot show, such as member order or a port that a
//! relay hashes).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context;
use hashring::Ring;

use crate::UsageError;

/// How many synthetic names are placed on both rings.
const SAMPLE: usize = 4096;

/// The verdict on a ring file.
#[derive(Debug, Clone)]
pub(crate) struct RingFileCheck {
    /// What was read: `carbonate.conf /etc/carbon/carbonate.conf, cluster main`.
    pub(crate) source: String,
    /// How the file's ring differs from the agents', or `None` when it places every metric the same.
    pub(crate) disagreement: Option<String>,
}

/// Reads `path` (cluster `cluster` of it, the kind's default when `None`) and compares its ring with
/// `agents`. A file that cannot be read or parsed is a usage error: the config file points at it.
pub(crate) fn check(path: &Path, cluster: Option<&str>, agents: &Ring) -> anyhow::Result<RingFileCheck> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the ring file {} (the config file's ring_config)", path.display()))?;
    let config = ringconf::parse(&text, cluster)
        .map_err(|e| UsageError(format!("the ring file {} (the config file's ring_config): {e}", path.display())))?;
    let source = format!("{} {}, cluster {}", config.kind, path.display(), config.cluster);
    Ok(RingFileCheck { source, disagreement: difference(&config.ring, agents) })
}

/// How `file` places metrics differently from `agents`, the plainest difference first.
fn difference(file: &Ring, agents: &Ring) -> Option<String> {
    if file.hash() != agents.hash() {
        return Some(format!("hash {} in the file, {} on the agents", file.hash(), agents.hash()));
    }
    if file.router() != agents.router() {
        return Some(format!("router {} in the file, {} on the agents", file.router(), agents.router()));
    }
    if file.replicas() != agents.replicas() {
        return Some(format!("replication {} in the file, {} on the agents", file.replicas(), agents.replicas()));
    }
    let key = |ring: &Ring| -> Vec<String> { ring.nodes().iter().map(member).collect() };
    let (in_file, on_agents) = (key(file), key(agents));
    let only_file: Vec<&str> = in_file.iter().filter(|m| !on_agents.contains(m)).map(String::as_str).collect();
    let only_agents: Vec<&str> = on_agents.iter().filter(|m| !in_file.contains(m)).map(String::as_str).collect();
    if !only_file.is_empty() || !only_agents.is_empty() {
        let mut diff = String::from("members differ:");
        if !only_file.is_empty() {
            let _ = write!(diff, " only in the file {}", only_file.join(" "));
        }
        if !only_agents.is_empty() {
            let _ = write!(
                diff,
                "{} only on the agents {}",
                if only_file.is_empty() { "" } else { ";" },
                only_agents.join(" ")
            );
        }
        return Some(diff);
    }
    if file.diverse() != agents.diverse() {
        let rule = |d: bool| if d { "on" } else { "off" };
        let differs = sample().any(|name| replicas(file, &name) != replicas(agents, &name));
        if differs {
            return Some(format!(
                "diverse replicas {} in the file, {} on the agents (--diverse-replicas settles it)",
                rule(file.diverse()),
                rule(agents.diverse())
            ));
        }
    }
    let mut moved = sample().filter(|name| replicas(file, name) != replicas(agents, name));
    let first = moved.next()?;
    let count = 1 + moved.count();
    Some(format!(
        "{count} of {SAMPLE} sample names placed elsewhere (the order or ports of the members?), e.g. {first}: \
         {} in the file, {} on the agents",
        replicas(file, &first).join(","),
        replicas(agents, &first).join(",")
    ))
}

/// A member as placement sees it: its server and instance (carbon ignores the port; where the relay hashes
/// it, the sample shows the difference).
fn member(node: &hashring::Node) -> String {
    match &node.instance {
        Some(instance) => format!("{}={instance}", node.server),
        None => node.server.clone(),
    }
}

/// Where `name`'s replicas go, in order.
fn replicas(ring: &Ring, name: &str) -> Vec<String> {
    ring.nodes_for(name).map(member).collect()
}

/// Deterministic names shaped like metrics.
fn sample() -> impl Iterator<Item = String> {
    (0..SAMPLE).map(|i| format!("bucky.ringfile.g{}.m{i}", i % 61))
}

#[cfg(test)]
mod tests {
    use super::*;
    use hashring::{Hash, Node, RingSpec};

    fn ring(nodes: &[&str], hash: Hash, replicas: usize, diverse: bool) -> Ring {
        let nodes = nodes.iter().map(|n| Node::parse(n).unwrap()).collect();
        RingSpec::new(nodes, hash).replicas(replicas).diverse(diverse).build().unwrap()
    }

    #[test]
    fn the_same_ring_agrees_whatever_the_carbon_ports() {
        let file = ring(&["a:2004=x", "a:2104=y", "b:2004=x"], Hash::CarbonCh, 2, true);
        let agents = ring(&["a=x", "a=y", "b=x"], Hash::CarbonCh, 2, true);
        assert_eq!(difference(&file, &agents), None);
    }

    #[test]
    fn each_difference_is_named() {
        let agents = ring(&["a", "b", "c"], Hash::CarbonCh, 1, true);
        let d = |file: Ring| difference(&file, &agents).unwrap();
        assert!(d(ring(&["a", "b", "c"], Hash::Fnv1aCh, 1, false)).starts_with("hash fnv1a_ch in the file"));
        assert!(d(ring(&["a", "b", "c"], Hash::CarbonCh, 2, true)).starts_with("replication 2 in the file, 1"));
        let members = d(ring(&["a", "b", "d"], Hash::CarbonCh, 1, true));
        assert_eq!(members, "members differ: only in the file d; only on the agents c");
        // Replication 1: diverse replicas change nothing, so they are not a difference.
        assert_eq!(difference(&ring(&["a", "b", "c"], Hash::CarbonCh, 1, false), &agents), None);
        // Where they matter they are.
        let agents = ring(&["a=1", "a=2", "b=1", "b=2"], Hash::CarbonCh, 2, true);
        let file = ring(&["a=1", "a=2", "b=1", "b=2"], Hash::CarbonCh, 2, false);
        assert!(difference(&file, &agents).unwrap().starts_with("diverse replicas off in the file, on on the agents"));
    }

    #[test]
    fn member_order_shows_in_the_sample() {
        let agents = ring(&["a", "b", "c"], Hash::JumpFnv1aCh, 1, false);
        let file = ring(&["c", "b", "a"], Hash::JumpFnv1aCh, 1, false);
        let diff = difference(&file, &agents).unwrap();
        assert!(diff.contains("sample names placed elsewhere"), "{diff}");
    }
}
