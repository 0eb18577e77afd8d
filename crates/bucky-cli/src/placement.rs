//! The placement rules of a mixed cluster: what `/hashring` leaves unsaid on buckyd.
//!
//! buckyd (0.4.2 and 0.6.0) answers `/hashring` with `Name`, `Nodes`, `Algo` and `Replicas` only. A bucky-agent
//! adds `Router` (always) and `Diverse` (carbon's DIVERSE_REPLICAS, only when true). So a member that sends no
//! `Router` is buckyd and has no opinion on either; a member that sends one is a bucky-agent and its missing
//! `Diverse` means false. A rule only bucky-agents state is taken from them (the seed first), a bucky-agent
//! stating another value disagrees, and buckyd never disagrees by omission.
//!
//! DIVERSE_REPLICAS changes placement only with the carbon router, replication ≥ 2 and a server holding
//! several ring nodes (see [`diverse_matters`]); otherwise nobody's value is compared. Where it matters,
//! `--diverse-replicas` settles it, and without the flag the rule followed is said in one line.

use bucky_wire::RingInfo;
use hashring::{Hash, Router};

/// The rules the CLI builds the ring with, and how it came to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Placement {
    /// The router (`carbon` or `relay`) as a bucky-agent stated it, if any did.
    pub router: Option<String>,
    /// Whether replicas go to distinct servers.
    pub diverse: bool,
    /// Whether `diverse` can change where any metric goes on this ring.
    pub diverse_matters: bool,
    /// `--diverse-replicas`, when given: then no member's `Diverse` is compared.
    pub diverse_flag: Option<bool>,
    /// One line saying which diverse rule is followed and why, when it matters and not every member stated it.
    pub note: Option<String>,
}

/// Whether a member is a bucky-agent (it states its router; buckyd sends no `Router`).
pub(crate) fn is_agent(info: &RingInfo) -> bool {
    info.router.is_some()
}

/// The router a ring document implies: as stated, else the hash's default (carbon for carbon_ch, the relay's
/// otherwise), which is also what buckyd's own rings follow (Go buckytools has no router of its own).
pub(crate) fn router_of(info: &RingInfo, stated: Option<&str>) -> Option<Router> {
    match stated {
        Some(router) => router.parse().ok(),
        None => info.algo.parse::<Hash>().ok().map(Hash::default_router),
    }
}

/// Whether carbon's DIVERSE_REPLICAS can change where any metric goes: only the carbon router has it,
/// with one replica the primary is the first node of the walk either way, and when no server holds two
/// ring nodes the walk never meets a server twice, so skipping repeated servers skips nothing.
pub(crate) fn diverse_matters(info: &RingInfo, router: Option<Router>) -> bool {
    if router != Some(Router::Carbon) || info.replicas <= 1 {
        return false;
    }
    let mut servers: Vec<&str> = info.nodes.iter().map(|n| n.server.as_str()).collect();
    servers.sort_unstable();
    servers.windows(2).any(|w| w[0] == w[1])
}

impl Placement {
    /// Decides the rules from the seed's document and the other members' (`members`: ring server and its
    /// answer), with `flag` = `--diverse-replicas`.
    pub(crate) fn decide(seed: &RingInfo, members: &[(&str, &RingInfo)], flag: Option<bool>) -> Placement {
        // Statements of bucky-agents, the seed's first.
        let agents: Vec<(&str, &RingInfo)> = std::iter::once(("the seed", seed))
            .chain(members.iter().copied())
            .filter(|(_, info)| is_agent(info))
            .collect();
        let router = agents.first().and_then(|(_, info)| info.router.clone());
        let carbon = router_of(seed, router.as_deref()) == Some(Router::Carbon);
        let diverse_matters = diverse_matters(seed, router_of(seed, router.as_deref()));
        let buckyds: Vec<&str> = members.iter().filter(|(_, info)| !is_agent(info)).map(|(s, _)| *s).collect();
        let stated = agents.first().map(|(_, info)| info.diverse);
        // The relay has no diverse replicas: only the flag can ask for them there (and the ring refuses it).
        let diverse = flag.unwrap_or(carbon && stated.unwrap_or(false));
        let note = match (diverse_matters, flag, stated) {
            (false, ..) => None,
            (true, Some(flag), _) => Some(format!(
                "diverse replicas {}: as --diverse-replicas {flag} says{}",
                if flag { "on" } else { "off" },
                match stated {
                    Some(s) if s != flag => format!(" (the bucky-agents say {s})"),
                    _ => String::new(),
                }
            )),
            (true, None, Some(stated)) if !buckyds.is_empty() => Some(format!(
                "diverse replicas {}: as the bucky-agents say (buckyd at {} states no DIVERSE_REPLICAS); pass \
                 --diverse-replicas {} if your carbon relays say otherwise",
                if stated { "on" } else { "off" },
                buckyds.join(", "),
                !stated
            )),
            (true, None, Some(_)) => None,
            (true, None, None) => Some(
                "diverse replicas off: buckyd states no DIVERSE_REPLICAS and Go buckytools places replicas without \
                 it; pass --diverse-replicas true if your carbon relays set DIVERSE_REPLICAS = True (carbon 1.1.10's \
                 default)"
                    .to_owned(),
            ),
        };
        Placement { router, diverse, diverse_matters, diverse_flag: flag, note }
    }

    /// How `other` disagrees with these rules on what only bucky-agents state, if it does.
    pub(crate) fn disagreement(&self, other: &RingInfo) -> Option<String> {
        let theirs = other.router.as_deref()?; // buckyd: nothing stated, nothing to disagree with
        if let Some(ours) = &self.router {
            if theirs != ours {
                return Some(format!("router {theirs} instead of {ours}"));
            }
        }
        if self.diverse_matters && self.diverse_flag.is_none() && other.diverse != self.diverse {
            let says = |diverse: bool| if diverse { "diverse replicas" } else { "no diverse replicas" };
            return Some(format!(
                "{} instead of {} (pass --diverse-replicas true|false to settle it)",
                says(other.diverse),
                says(self.diverse)
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucky_wire::RingNode;
    use hashring::{Node, RingSpec};
    use rand::{Rng, SeedableRng};

    fn info(servers: &[&str], replicas: u32, router: Option<&str>, diverse: bool) -> RingInfo {
        RingInfo {
            name: "x".into(),
            nodes: servers
                .iter()
                .enumerate()
                .map(|(i, s)| RingNode { server: (*s).into(), port: 0, instance: format!("i{i}") })
                .collect(),
            algo: "carbon".into(),
            replicas,
            router: router.map(str::to_owned),
            diverse,
        }
    }

    #[test]
    fn buckyd_never_disagrees_by_omission() {
        let buckyd = info(&["a", "b"], 1, None, false);
        let agent = info(&["a", "b"], 1, Some("carbon"), true);
        for seed in [&buckyd, &agent] {
            let placement = Placement::decide(seed, &[("a", &buckyd), ("b", &agent)], None);
            assert!(!placement.diverse_matters);
            assert_eq!(placement.note, None);
            assert_eq!(placement.disagreement(&buckyd), None);
            assert_eq!(placement.disagreement(&agent), None);
            assert_eq!(placement.router.as_deref(), Some("carbon"), "taken from the agent");
        }
        let relay = info(&["a", "b"], 1, Some("relay"), false);
        let placement = Placement::decide(&buckyd, &[("a", &agent), ("b", &relay)], None);
        assert_eq!(placement.disagreement(&relay).unwrap(), "router relay instead of carbon");
    }

    #[test]
    fn where_diverse_matters_the_rule_is_said_and_the_flag_settles_it() {
        // Host a carries two nodes, replication 2: diverse replicas move some replicas.
        let servers = ["a", "a", "b"];
        let buckyd = info(&servers, 2, None, false);
        let agent = info(&servers, 2, Some("carbon"), true);
        let plain_agent = info(&servers, 2, Some("carbon"), false);

        let all_buckyd = Placement::decide(&buckyd, &[("a", &buckyd), ("b", &buckyd)], None);
        assert!(all_buckyd.diverse_matters && !all_buckyd.diverse);
        assert!(all_buckyd.note.as_deref().unwrap().contains("--diverse-replicas true"));

        let mixed = Placement::decide(&buckyd, &[("a", &buckyd), ("b", &agent)], None);
        assert!(mixed.diverse, "the agents state it, buckyd does not");
        assert!(mixed.note.as_deref().unwrap().contains("buckyd at a"), "{:?}", mixed.note);
        assert_eq!(mixed.disagreement(&buckyd), None);
        assert!(mixed.disagreement(&plain_agent).unwrap().contains("no diverse replicas instead of diverse replicas"));

        let settled = Placement::decide(&buckyd, &[("a", &plain_agent), ("b", &agent)], Some(false));
        assert!(!settled.diverse);
        assert!(settled.note.as_deref().unwrap().contains("--diverse-replicas false"));
        assert_eq!(settled.disagreement(&agent), None, "the flag settles it");

        let agreeing = Placement::decide(&agent, &[("a", &agent), ("b", &agent)], None);
        assert!(agreeing.diverse && agreeing.note.is_none());
    }

    /// Replayable by seed: on random carbon rings, wherever [`diverse_matters`] says no, the rings with and
    /// without diverse replicas place every one of many names identically; and it says yes on rings where
    /// some name does move.
    #[test]
    fn diverse_matters_exactly_when_placement_can_change() {
        let seed: u64 = std::env::var("BUCKY_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(0x5eed_d1e5);
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut said_yes_and_moved = 0;
        for case in 0..60 {
            let n = rng.gen_range(1..=5);
            let hosts = rng.gen_range(1..=n);
            let servers: Vec<String> =
                (0..n).map(|i| format!("h{}", if i < hosts { i } else { rng.gen_range(0..hosts) })).collect();
            let refs: Vec<&str> = servers.iter().map(String::as_str).collect();
            let replicas = rng.gen_range(1..=n) as u32;
            let doc = info(&refs, replicas, None, false);
            let build = |diverse: bool| {
                let nodes =
                    doc.nodes.iter().map(|n| Node::new(n.server.clone(), None, Some(n.instance.as_str()))).collect();
                RingSpec::new(nodes, Hash::CarbonCh).replicas(replicas as usize).diverse(diverse).build().unwrap()
            };
            let (plain, diverse) = (build(false), build(true));
            let moved = (0..3000).any(|i| {
                let name = format!("m.{case}.{i}");
                !plain.replica_indices(&name).eq(diverse.replica_indices(&name))
            });
            let matters = diverse_matters(&doc, Some(Router::Carbon));
            assert!(matters || !moved, "seed {seed} case {case}: {servers:?} RF {replicas}: placement moved");
            if matters && moved {
                said_yes_and_moved += 1;
            }
            assert!(!diverse_matters(&doc, Some(Router::Relay)));
        }
        assert!(said_yes_and_moved > 0, "seed {seed}: no case exercised a ring where it matters");
    }
}
