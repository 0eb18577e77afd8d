//! Cluster discovery: the ring from the seed's `/hashring`, then every distinct ring host asked for its
//! own view (a host carrying several instances is asked once). The cluster is healthy iff every member
//! answers and all agree. Unreachable members are reported by name; nothing here panics on a dead node.

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::Context;
use bucky_wire::RingInfo;
use hashring::{Hash, Node, Ring, RingSpec, Router};
use serde::Serialize;

use crate::client::{Client, ClientError, ListQuery};
use crate::config::{Addr, Config};
use crate::error::one_line;
use crate::names::NameArena;
use crate::placement::Placement;
use crate::printer::Printer;
use crate::ringfile::RingFileCheck;
use crate::UsageError;

/// The seed's ring could not be read. The client error names the seed: the address once, then what to do.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the ring from the seed: {error}; is its agent running? (-h/--host or $BUCKYHOST names another)")]
pub(crate) struct SeedUnreachable {
    /// Why (printed, so not exposed as a source: its text sits in the middle of the message).
    error: ClientError,
}

/// What one member said.
#[derive(Debug, Clone)]
pub(crate) enum MemberState {
    /// Same ring as the seed.
    Agrees,
    /// A different ring: what differs.
    Disagrees(String),
    /// No answer: why (shared: a cluster is cloned, the client error is not).
    Unreachable(Arc<ClientError>),
}

/// One agent of the cluster (one per distinct ring host).
#[derive(Debug, Clone)]
pub(crate) struct Member {
    /// The ring's `Server` string.
    pub server: String,
    /// Where its agent listens.
    pub addr: Addr,
    /// Its view.
    pub state: MemberState,
}

impl Member {
    /// Whether it answered with the seed's ring.
    pub(crate) fn agrees(&self) -> bool {
        matches!(self.state, MemberState::Agrees)
    }
}

/// A discovered cluster.
#[derive(Debug, Clone)]
pub(crate) struct Cluster {
    /// The seed agent.
    pub seed: Addr,
    /// The seed's `/hashring`.
    pub info: RingInfo,
    /// The ring built from it.
    pub ring: Ring,
    /// The rules the ring follows where buckyd says nothing.
    pub placement: Placement,
    /// One member per distinct ring host, in ring order.
    pub members: Vec<Member>,
    /// The config file's ring file held against the ring, when the cluster's table names one.
    pub(crate) ring_file: Option<RingFileCheck>,
}

/// A ring from a `/hashring` document, with the rules of `placement` for what buckyd leaves unsaid (router,
/// diverse replicas).
pub(crate) fn ring_from_info(info: &RingInfo, placement: &Placement) -> anyhow::Result<Ring> {
    let hash: Hash = info.algo.parse().with_context(|| format!("unknown ring algorithm {:?}", info.algo))?;
    let nodes: Vec<Node> = info
        .nodes
        .iter()
        .map(|n| {
            let instance = (!n.instance.is_empty()).then_some(n.instance.as_str());
            Node::new(n.server.clone(), (n.port != 0).then_some(n.port), instance)
        })
        .collect();
    let mut spec = RingSpec::new(nodes, hash).replicas(info.replicas.max(1) as usize).diverse(placement.diverse);
    if let Some(router) = &placement.router {
        let router: Router = router.parse().with_context(|| format!("unknown ring router {router:?}"))?;
        spec = spec.router(router);
    }
    spec.build().context("the seed's ring is invalid")
}

/// How a member's ring differs from the seed's, or `None` if it places every metric the same. Only what
/// both buckyd and bucky-agent send is compared here; the rules only bucky-agents state are `placement`'s.
fn difference(seed: &RingInfo, other: &RingInfo, placement: &Placement) -> Option<String> {
    if seed.algo != other.algo {
        return Some(format!("algorithm {} instead of {}", other.algo, seed.algo));
    }
    if seed.replicas.max(1) != other.replicas.max(1) {
        return Some(format!("replication {} instead of {}", other.replicas, seed.replicas));
    }
    if seed.nodes != other.nodes {
        let show = |i: &RingInfo| {
            i.nodes
                .iter()
                .map(|n| {
                    let mut s = n.server.clone();
                    if n.port != 0 {
                        s += &format!(":{}", n.port);
                    }
                    if !n.instance.is_empty() {
                        s += &format!("={}", n.instance);
                    }
                    s
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        return Some(format!("members [{}] instead of [{}]", show(other), show(seed)));
    }
    placement.disagreement(other)
}

impl Cluster {
    /// Discovers the cluster from the seed. Fails only if the seed itself cannot be asked or its ring is
    /// invalid; any other member's problem is recorded in [`Member::state`]. `diverse` is
    /// `--diverse-replicas`, which settles DIVERSE_REPLICAS where it matters (see [`crate::placement`]).
    pub(crate) async fn discover(client: &Client, seed: &Addr, diverse: Option<bool>) -> anyhow::Result<Cluster> {
        // The client error names the seed: the address once, then what to do.
        let info = client.hashring(seed).await.map_err(|error| SeedUnreachable { error })?;
        let mut servers: Vec<String> = Vec::new();
        for node in &info.nodes {
            if !servers.contains(&node.server) {
                servers.push(node.server.clone());
            }
        }
        let answers = futures_util::future::join_all(servers.iter().map(|server| {
            let addr = Addr { host: server.clone(), port: seed.port };
            async move {
                let answer = client.hashring(&addr).await;
                (addr, answer)
            }
        }))
        .await;
        let stated: Vec<(&str, &RingInfo)> = servers
            .iter()
            .zip(&answers)
            .filter_map(|(server, (_, answer))| answer.as_ref().ok().map(|info| (server.as_str(), info)))
            .collect();
        let placement = Placement::decide(&info, &stated, diverse);
        let ring = ring_from_info(&info, &placement).map_err(|e| UsageError(format!("{e:#}")))?;
        let members = servers
            .into_iter()
            .zip(answers)
            .map(|(server, (addr, answer))| {
                let state = match answer {
                    Ok(theirs) => match difference(&info, &theirs, &placement) {
                        None => MemberState::Agrees,
                        Some(diff) => MemberState::Disagrees(diff),
                    },
                    Err(e) => MemberState::Unreachable(Arc::new(e)),
                };
                Member { server, addr, state }
            })
            .collect();
        Ok(Cluster { seed: seed.clone(), info, ring, placement, members, ring_file: None })
    }

    /// Discovery of the configured cluster: [`Cluster::discover`], then the ring checked against the config
    /// file's ring file when the cluster's table names one.
    pub(crate) async fn discover_configured(client: &Client, config: &Config) -> anyhow::Result<Cluster> {
        let mut cluster = Cluster::discover(client, &config.seed, config.diverse_replicas).await?;
        if let Some(path) = &config.ring_config {
            cluster.ring_file = Some(crate::ringfile::check(path, config.ring_cluster.as_deref(), &cluster.ring)?);
        }
        Ok(cluster)
    }

    /// Discovery for a command: prints problems as warnings.
    pub(crate) async fn connect(client: &Client, config: &Config, printer: &Printer) -> anyhow::Result<Cluster> {
        let cluster = Cluster::discover_configured(client, config).await?;
        if let Some(note) = &cluster.placement.note {
            printer.info(format!("placement: {note}"));
        }
        for problem in cluster.problems() {
            printer.warn(problem);
        }
        Ok(cluster)
    }

    /// Whether every member answered with the seed's ring, and the ring file (if any) places as it does.
    pub(crate) fn healthy(&self) -> bool {
        self.members.iter().all(Member::agrees) && self.ring_file.as_ref().is_none_or(|f| f.disagreement.is_none())
    }

    /// One line per unhealthy member, and one for a ring file that disagrees.
    pub(crate) fn problems(&self) -> Vec<String> {
        let members = self.members.iter().filter_map(|m| match &m.state {
            MemberState::Agrees => None,
            MemberState::Disagrees(diff) => Some(format!("{} ({}) disagrees with the seed: {diff}", m.server, m.addr)),
            MemberState::Unreachable(why) => Some(crate::printer::about(&m.addr, &one_line(why))),
        });
        let ring_file = self.ring_file.iter().filter_map(|f| {
            let diff = f.disagreement.as_ref()?;
            Some(format!("the ring file ({}) disagrees with the agents' ring: {diff}", f.source))
        });
        members.chain(ring_file).collect()
    }

    /// Refuses to go on unless healthy (for commands that move or delete data).
    pub(crate) fn require_healthy(&self) -> anyhow::Result<()> {
        if self.healthy() {
            return Ok(());
        }
        Err(UsageError(format!("the cluster is not healthy, refusing to go on: {}", self.problems().join("; "))).into())
    }

    /// The agent address of a ring node.
    pub(crate) fn addr_of(&self, node: &Node) -> Addr {
        Addr { host: node.server.clone(), port: self.seed.port }
    }

    /// The agents that must hold `name` (one per distinct host; RF- and instance-aware).
    pub(crate) fn replicas_of(&self, name: &str) -> Vec<Addr> {
        let mut out: Vec<Addr> = Vec::new();
        for node in self.ring.nodes_for(name) {
            let addr = self.addr_of(node);
            if !out.contains(&addr) {
                out.push(addr);
            }
        }
        out
    }

    /// The ring nodes `name` belongs on, as strings (`server[:port][=instance]`).
    pub(crate) fn nodes_of(&self, name: &str) -> Vec<String> {
        self.ring.nodes_for(name).map(ToString::to_string).collect()
    }

    /// The member at `addr`, if any.
    pub(crate) fn member(&self, addr: &Addr) -> Option<&Member> {
        self.members.iter().find(|m| &m.addr == addr)
    }
}

/// Lists `targets` concurrently into sorted, deduplicated arenas.
pub(crate) async fn list_agents(
    client: &Client,
    query: &ListQuery,
    targets: &[Addr],
) -> Vec<(Addr, Result<NameArena, ClientError>)> {
    futures_util::future::join_all(targets.iter().map(|addr| async move {
        let mut arena = NameArena::new();
        let result = client.list(addr, query, |name| arena.push(&name)).await;
        arena.sort_dedup();
        (addr.clone(), result.map(|_| arena))
    }))
    .await
}

/// A JSON view of the cluster for `servers --json`.
#[derive(Debug, Serialize)]
pub(crate) struct ClusterReport {
    /// The seed.
    pub seed: String,
    /// The seed's node name.
    pub name: String,
    /// Hash algorithm.
    pub algorithm: String,
    /// Router semantics.
    pub router: String,
    /// Replication factor.
    pub replication: usize,
    /// Whether replicas go to distinct servers (carbon's DIVERSE_REPLICAS).
    pub diverse_replicas: bool,
    /// Whether that can change placement on this ring.
    pub diverse_replicas_matter: bool,
    /// Which diverse rule is followed and why, when it matters and not every member states it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub placement_note: Option<String>,
    /// The ring's description.
    pub description: String,
    /// Ring nodes in order.
    pub nodes: Vec<String>,
    /// Members: server → state.
    pub members: BTreeMap<String, MemberReport>,
    /// The config file's ring file, when the cluster's table names one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ring_file: Option<RingFileReport>,
    /// Whether all agree.
    pub healthy: bool,
}

/// The ring file in [`ClusterReport`].
#[derive(Debug, Serialize)]
pub(crate) struct RingFileReport {
    /// What was read.
    pub source: String,
    /// Whether it places every metric as the agents' ring does.
    pub agrees: bool,
    /// How it differs, if it does.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// One member in [`ClusterReport`].
#[derive(Debug, Serialize)]
pub(crate) struct MemberReport {
    /// The agent address.
    pub agent: String,
    /// `ok`, `disagrees` or `unreachable`.
    pub state: &'static str,
    /// What is wrong, if anything.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl Cluster {
    /// The JSON report.
    pub(crate) fn report(&self) -> ClusterReport {
        let members = self
            .members
            .iter()
            .map(|m| {
                let (state, problem) = match &m.state {
                    MemberState::Agrees => ("ok", None),
                    MemberState::Disagrees(d) => ("disagrees", Some(d.clone())),
                    MemberState::Unreachable(w) => ("unreachable", Some(one_line(w))),
                };
                (m.server.clone(), MemberReport { agent: m.addr.to_string(), state, problem })
            })
            .collect();
        ClusterReport {
            seed: self.seed.to_string(),
            name: self.info.name.clone(),
            algorithm: self.ring.hash().name().to_owned(),
            router: self.ring.router().name().to_owned(),
            replication: self.ring.replicas(),
            diverse_replicas: self.ring.diverse(),
            diverse_replicas_matter: self.placement.diverse_matters,
            placement_note: self.placement.note.clone(),
            description: self.ring.describe(),
            nodes: self.ring.nodes().iter().map(ToString::to_string).collect(),
            members,
            ring_file: self.ring_file.as_ref().map(|f| RingFileReport {
                source: f.source.clone(),
                agrees: f.disagreement.is_none(),
                problem: f.disagreement.clone(),
            }),
            healthy: self.healthy(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucky_wire::RingNode;

    fn ring_of(info: &RingInfo) -> anyhow::Result<Ring> {
        ring_from_info(info, &Placement::decide(info, &[], None))
    }

    fn diff(seed: &RingInfo, other: &RingInfo) -> Option<String> {
        difference(seed, other, &Placement::decide(seed, &[("b", other)], None))
    }

    fn info(nodes: &[(&str, u16, &str)], algo: &str, replicas: u32) -> RingInfo {
        RingInfo {
            name: "x".into(),
            nodes: nodes.iter().map(|&(s, p, i)| RingNode { server: s.into(), port: p, instance: i.into() }).collect(),
            algo: algo.into(),
            replicas,
            router: None,
            diverse: false,
        }
    }

    #[test]
    fn rings_from_hashring_documents() {
        let ring = ring_of(&info(&[("a", 2003, ""), ("b", 0, "x")], "carbon", 2)).unwrap();
        assert_eq!(ring.nodes()[0].to_string(), "a:2003");
        assert_eq!(ring.nodes()[1].to_string(), "b=x");
        assert_eq!(ring.replicas(), 2);
        assert_eq!(ring.nodes_for("some.metric").count(), 2);
        assert!(ring_of(&info(&[("a", 0, "")], "md5", 1)).is_err());
        assert!(ring_of(&info(&[("a", 0, "")], "carbon", 3)).is_err());
    }

    #[test]
    fn diverse_rings_put_replicas_on_distinct_servers() {
        // Two instances on host a, one on b: without DIVERSE_REPLICAS some metrics get both replicas on a.
        let nodes = [("a", 0, "1"), ("a", 0, "2"), ("b", 0, "1")];
        let plain = ring_of(&info(&nodes, "carbon", 2)).unwrap();
        // What a bucky-agent with diverse replicas sends (buckyd states neither Router nor Diverse).
        let agent = |diverse| RingInfo { router: Some("carbon".into()), diverse, ..info(&nodes, "carbon", 2) };
        let diverse = ring_of(&agent(true)).unwrap();
        assert!(diverse.diverse());
        let servers = |ring: &Ring, name: &str| ring.nodes_for(name).map(|n| n.server.clone()).collect::<Vec<_>>();
        let names: Vec<String> = (0..200).map(|i| format!("m.{i}")).collect();
        assert!(names.iter().any(|n| servers(&plain, n) == ["a", "a"]), "the test needs a same-host pair");
        for name in &names {
            let s = servers(&diverse, name);
            assert_eq!(s.len(), 2, "{name}");
            assert_ne!(s[0], s[1], "{name}: diverse replicas share a server");
        }
        let differ = diff(&agent(false), &agent(true));
        assert!(differ.unwrap().contains("diverse replicas instead of no diverse replicas"));
        assert_eq!(diff(&info(&nodes, "carbon", 2), &agent(true)), None, "buckyd does not say");
    }

    #[test]
    fn differences_are_named() {
        let a = info(&[("a", 0, ""), ("b", 0, "")], "carbon", 1);
        assert!(diff(&a, &a.clone()).is_none());
        let b = info(&[("a", 0, "")], "carbon", 1);
        assert!(diff(&a, &b).unwrap().contains("members [a] instead of [a b]"));
        let c = info(&[("a", 0, ""), ("b", 0, "")], "jump_fnv1a", 1);
        assert!(diff(&a, &c).unwrap().contains("algorithm"));
    }
}
