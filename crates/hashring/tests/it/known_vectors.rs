//! Known vectors and one test per known divergence between the peers (probing vs voiding, signed bytes,
//! numeric jump order, None vs ''), each checked against the real peer(s) as well as against the expected
//! values from `shared/reference/hashing.md` and the Go buckytools test suites.

use crate::common;

use crate::common::CarbonJob;
use hashring::{Error, Hash, Node, Ring, Router};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn nodes(specs: &[&str]) -> Vec<Node> {
    specs.iter().map(|s| Node::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"))).collect()
}

fn ring(nodes: &[Node], hash: Hash, router: Router, replicas: usize, diverse: bool) -> Ring {
    Ring::new(nodes.to_vec(), hash, Some(router), replicas, diverse).unwrap_or_else(|e| panic!("{e}"))
}

fn names(seed: u64, count: usize) -> Vec<String> {
    common::random_names(&mut StdRng::seed_from_u64(seed), count)
}

fn placed(ring: &Ring, names: &[String]) -> Vec<Vec<usize>> {
    names.iter().map(|name| ring.replica_indices(name).collect()).collect()
}

fn spec_of(ring: &Ring, name: &str) -> Vec<String> {
    ring.nodes_for(name).map(Node::to_string).collect()
}

/// Our carbon-router ring against carbon 1.1.10: same points, same placements (or `walk`: get_nodes).
fn agree_with_carbon(nodes: &[Node], hash: Hash, replicas: usize, diverse: bool, names: &[String], walk: bool) {
    let ours = ring(nodes, hash, Router::Carbon, replicas, diverse);
    let job = CarbonJob { hash, nodes: nodes.to_vec(), replicas, diverse, names: names.to_vec(), walk };
    let theirs = common::carbon_batch(&[job]).remove(0).unwrap_or_else(|e| panic!("carbon refused: {e}"));
    let points: Vec<(u32, usize)> = ours.points().map(|p| (p.position, p.node)).collect();
    assert_eq!(points, theirs.ring, "ring points vs carbon ({})", ours.describe());
    let placements: Vec<Vec<usize>> = if walk {
        names.iter().map(|n| ours.walk(n).map(|w| index_of(&ours, w)).collect()).collect()
    } else {
        placed(&ours, names)
    };
    common::assert_same(&ours.describe(), nodes, names, &placements, &theirs.placements);
}

fn index_of(ring: &Ring, node: &Node) -> usize {
    ring.nodes().iter().position(|n| std::ptr::eq(n, node)).expect("node of this ring")
}

/// Our relay-router ring against carbon-c-relay 3.7.3.
fn agree_with_relay(nodes: &[Node], hash: Hash, replicas: usize, names: &[String]) {
    let ours = ring(nodes, hash, Router::Relay, replicas, false);
    let theirs = common::relay_place(hash, nodes, replicas, names);
    common::assert_same(&ours.describe(), nodes, names, &placed(&ours, names), &theirs);
}

/// Positions shared by more than one node's raw point hashes.
fn shared_positions(ring: &Ring) -> Vec<u32> {
    let mut by_hash: std::collections::BTreeMap<u32, std::collections::BTreeSet<usize>> = Default::default();
    for p in ring.points() {
        by_hash.entry(p.hashed).or_default().insert(p.origin);
    }
    by_hash.into_iter().filter(|(_, owners)| owners.len() > 1).map(|(pos, _)| pos).collect()
}

// --- carbon_ch ----------------------------------------------------------------------------------------------

/// The host names of the Go buckytools test suites: graphite010-g5 .. graphite018-g5, then
/// graphite-data019-g5 onwards, `count` in all.
fn go_hosts(count: usize) -> Vec<String> {
    (10..10 + count)
        .map(|i| if i <= 18 { format!("graphite{i:03}-g5") } else { format!("graphite-data{i:03}-g5") })
        .collect()
}

fn go_ring() -> Vec<Node> {
    go_hosts(13).iter().flat_map(|h| ["a", "b", "c"].map(|i| Node::new(h.as_str(), None, Some(i)))).collect()
}

#[test]
fn carbon_ch_39_node_vectors_and_the_8741_collision() {
    let nodes = go_ring();
    let carbon = ring(&nodes, Hash::CarbonCh, Router::Carbon, 1, false);
    // Graphite's answers as quoted by buckytools; count_95 is where carbon >= 1.0 (probing) differs from
    // 0.9.x/Go: carbon 1.1.10 keeps 8741 for the earlier-configured graphite015-g5:c.
    let expected = [
        ("1sec.mysql.db109-shard7-g5.4417.Com_help", "graphite015-g5=a"),
        ("10min.sar.disk_stats.app-test-57164838110fc9dc.sda.wr_sec", "graphite010-g5=a"),
        ("1min.statsd.prod.intercom.corporate.challenge.participation.count_95", "graphite015-g5=c"),
        ("10min.sar.disk_stats.db047-shard35-g4.sda.rd_sec", "graphite010-g5=a"),
    ];
    for (name, node) in expected {
        assert_eq!(carbon.primary(name).to_string(), node, "{name}");
    }
    let at = |ring: &Ring, pos: u32| ring.points().find(|p| p.position == pos).expect("point");
    let (p8741, p8742) = (at(&carbon, 8741), at(&carbon, 8742));
    assert_eq!(nodes[p8741.node].to_string(), "graphite015-g5=c");
    assert_eq!((nodes[p8742.node].to_string(), p8742.hashed), ("graphite-data020-g5=b".to_owned(), 8741));
    assert_eq!(carbon.position("1min.statsd.prod.intercom.corporate.challenge.participation.count_95"), 8731);

    // The relay sorts the tie by host: "graphite-data020-g5" < "graphite015-g5", so it (like Go) answers
    // graphite-data020-g5:b. (The relay itself cannot load this ring: it identifies unresolvable host names by
    // name alone, so one name with several instances is a config error there.)
    let with_ports: Vec<Node> =
        nodes.iter().enumerate().map(|(i, n)| Node { port: Some(2003 + i as u16), ..n.clone() }).collect();
    let relay = ring(&with_ports, Hash::CarbonCh, Router::Relay, 1, false);
    assert_eq!(
        relay.primary("1min.statsd.prod.intercom.corporate.challenge.participation.count_95").to_string(),
        "graphite-data020-g5:2034=b"
    );
    let names: Vec<String> = expected.iter().map(|(n, _)| n.to_string()).chain(names(39, 3000)).collect();
    agree_with_carbon(&nodes, Hash::CarbonCh, 1, false, &names, false);
    agree_with_carbon(&nodes, Hash::CarbonCh, 3, true, &names, false);
}

#[test]
fn probing_vs_voiding_on_a_shared_position() {
    // 10.0.0.1..3 share one raw position, 7798 (10.0.0.1 and 10.0.0.3).
    let nodes = nodes(&["10.0.0.1:2003", "10.0.0.2:2003", "10.0.0.3:2003"]);
    let carbon = ring(&nodes, Hash::CarbonCh, Router::Carbon, 2, false);
    let relay = ring(&nodes, Hash::CarbonCh, Router::Relay, 2, false);
    assert_eq!(shared_positions(&carbon), [7798]);
    // carbon: the earlier node keeps 7798, the later one is probed to 7799.
    let carbon_points: Vec<_> = carbon.points().filter(|p| p.hashed == 7798).collect();
    assert_eq!(carbon_points.iter().map(|p| (p.position, p.node)).collect::<Vec<_>>(), [(7798, 0), (7799, 2)]);
    // relay: both entries stay at 7798, the second is voided to the first in (pos, host) order.
    let relay_points: Vec<_> = relay.points().filter(|p| p.position == 7798).collect();
    assert_eq!(relay_points.iter().map(|p| (p.node, p.origin)).collect::<Vec<_>>(), [(0, 0), (0, 2)]);

    let names = names(7798, 20_000);
    for replicas in 1..=2 {
        agree_with_carbon(&nodes, Hash::CarbonCh, replicas, false, &names, false);
        agree_with_relay(&nodes, Hash::CarbonCh, replicas, &names);
    }
    // The two peers disagree for RF 2 (the loser follows the winner in carbon's walk, not the relay's).
    let differ = names.iter().filter(|n| spec_of(&carbon, n) != spec_of(&relay, n)).count();
    assert!(differ > 0, "RF 2 placements differ between the peers");
}

#[test]
fn tie_winner_differs_between_the_peers() {
    // 10.0.0.16 is configured first, so carbon keeps the shared positions for it; the relay sorts
    // "10.0.0.1" < "10.0.0.16" and gives them to 10.0.0.1.
    let nodes = nodes(&["10.0.0.16:2003", "10.0.0.1:2003"]);
    let carbon = ring(&nodes, Hash::CarbonCh, Router::Carbon, 1, false);
    let relay = ring(&nodes, Hash::CarbonCh, Router::Relay, 1, false);
    assert_eq!(shared_positions(&carbon), [3188, 6103]);
    for pos in [3188, 6103] {
        assert_eq!(carbon.points().find(|p| p.position == pos).map(|p| p.node), Some(0));
        assert_eq!(relay.points().find(|p| p.position == pos).map(|p| p.node), Some(1));
    }
    let names = names(16, 20_000);
    agree_with_carbon(&nodes, Hash::CarbonCh, 1, false, &names, false);
    agree_with_relay(&nodes, Hash::CarbonCh, 1, &names);
    assert!(names.iter().any(|n| carbon.primary(n) != relay.primary(n)));
}

#[test]
fn relay_ties_put_the_node_without_instance_last() {
    // The same host with and without an instance, at a shared position: the relay sorts the instance-less
    // node LAST (carbon 0.9.x and Go put it first), so the node with the instance keeps the point.
    let bare = Node::new("10.0.0.1", Some(2003), None);
    let nodes = (0..200)
        .map(|k| vec![bare.clone(), Node::new("10.0.0.1", Some(2004), Some(&format!("i{k}")))])
        .find(|pair| !shared_positions(&ring(pair, Hash::CarbonCh, Router::Relay, 1, false)).is_empty())
        .expect("a colliding instance among 200");
    let relay = ring(&nodes, Hash::CarbonCh, Router::Relay, 2, false);
    let tied = shared_positions(&relay)[0];
    let owners: Vec<(usize, usize)> =
        relay.points().filter(|p| p.position == tied).map(|p| (p.node, p.origin)).collect();
    assert_eq!(owners[0], (1, 1), "the node with an instance sorts first at {tied}");
    assert!(owners.contains(&(1, 0)), "the bare node's point is voided at {tied}");
    agree_with_relay(&nodes, Hash::CarbonCh, 2, &names(2, 20_000));
    agree_with_carbon(&nodes, Hash::CarbonCh, 2, false, &names(2, 5000), false);
}

#[test]
fn carbon_single_node_ring_quirk() {
    let nodes = nodes(&["10.0.0.1=a"]);
    let carbon = ring(&nodes, Hash::CarbonCh, Router::Carbon, 1, false);
    let walk: Vec<String> = carbon.walk("foo.bar").map(Node::to_string).collect();
    assert_eq!(walk, ["10.0.0.1=a", "10.0.0.1=a"], "carbon >= 1.1.2 yields a lone node twice");
    assert_eq!(spec_of(&carbon, "foo.bar"), ["10.0.0.1=a"]);
    let relay = ring(&nodes, Hash::CarbonCh, Router::Relay, 1, false);
    assert_eq!(relay.walk("foo.bar").count(), 1);
    let names = names(1, 200);
    agree_with_carbon(&nodes, Hash::CarbonCh, 1, false, &names, true);
    agree_with_carbon(&nodes, Hash::CarbonCh, 1, true, &names, false);
}

#[test]
fn none_and_empty_instance_are_different_nodes_to_carbon() {
    // ('h', None) and ('h', '') are two destinations to carbon, with different keys.
    let nodes =
        vec![Node::new("h", Some(2004), None), Node::new("h", Some(2104), Some("")), Node::parse("g=None").unwrap()];
    let names = names(0, 5000);
    agree_with_carbon(&nodes, Hash::CarbonCh, 2, false, &names, false);
    // fnv1a_ch: a missing instance hashes as the text "None", exactly like the instance "None".
    let fnv = ring(&nodes, Hash::Fnv1aCh, Router::Carbon, 1, false);
    let stacked = fnv.points().filter(|p| p.position != p.hashed).count();
    assert!(stacked >= 100, "the None node and the 'None' instance collide on all 100 keys");
    agree_with_carbon(&nodes, Hash::Fnv1aCh, 2, false, &names, false);
    // The relay cannot express an empty instance.
    let err = Ring::new(nodes, Hash::CarbonCh, Some(Router::Relay), 1, false).unwrap_err();
    assert!(matches!(err, Error::Unrepresentable { .. }), "{err}");
    assert!(err.to_string().contains("h:2104="), "{err}");
}

#[test]
fn python_repr_of_node_keys() {
    // carbon hashes str((server, instance)): quotes switch, backslashes double, Latin-1 controls escape.
    let nodes = vec![
        Node::new("10.0.0.1", None, Some("it's")),
        Node::new("10.0.0.1", None, Some("say \"x\"")),
        Node::new("10.0.0.1", None, Some("both ' \"")),
        Node::new("10.0.0.1", None, Some("back\\slash")),
        Node::new("10.0.0.2", None, Some("café")),
        Node::new("10.0.0.2", None, Some("nb\u{a0}sp\u{ad}")),
    ];
    agree_with_carbon(&nodes, Hash::CarbonCh, 2, false, &names(5, 5000), false);
    let err = Ring::new(vec![Node::new("h", None, Some("Ωmega"))], Hash::CarbonCh, Some(Router::Carbon), 1, false)
        .unwrap_err();
    assert!(matches!(err, Error::Unrepresentable { .. }), "{err}");
    // The relay writes '%s' raw: no repr, so anything goes.
    let relay_nodes = self::nodes(&["10.0.0.1=it's", "10.0.0.2=Ωmega", "10.0.0.3=x\"y"]);
    agree_with_relay(&relay_nodes, Hash::CarbonCh, 2, &names(6, 5000));
}

#[test]
fn diverse_replicas_may_return_fewer() {
    let nodes = nodes(&["10.0.0.1:2004=a", "10.0.0.1:2104=b", "10.0.0.1:2204=c", "10.0.0.2:2004=a", "10.0.0.2:2104=b"]);
    let ring = ring(&nodes, Hash::CarbonCh, Router::Carbon, 3, true);
    let names = names(3, 5000);
    assert!(names.iter().all(|n| ring.nodes_for(n).count() == 2), "only two distinct servers");
    agree_with_carbon(&nodes, Hash::CarbonCh, 3, true, &names, false);
    agree_with_carbon(&nodes, Hash::CarbonCh, 3, false, &names, false);
}

// --- fnv1a_ch -----------------------------------------------------------------------------------------------

#[test]
fn fnv1a_signed_bytes_on_the_relay() {
    let one = nodes(&["10.0.0.1:2003=a"]);
    let carbon = ring(&one, Hash::Fnv1aCh, Router::Carbon, 1, false);
    let relay = ring(&one, Hash::Fnv1aCh, Router::Relay, 1, false);
    assert_eq!(carbon.position("café.höst.cpu"), 9330);
    assert_eq!(relay.position("café.höst.cpu"), 34702);
    assert_eq!(carbon.position("cafe.host.cpu"), relay.position("cafe.host.cpu"));
    // With instances on every node and ASCII names the two agree (up to collisions); non-ASCII names differ.
    let nodes = nodes(&["10.0.0.1:2003=cache-a", "10.0.0.1:2004=cache-b", "10.0.0.2:2003=cache-c"]);
    let carbon = ring(&nodes, Hash::Fnv1aCh, Router::Carbon, 1, false);
    let relay = ring(&nodes, Hash::Fnv1aCh, Router::Relay, 1, false);
    let names = names(30, 20_000);
    let (ascii, exotic): (Vec<&String>, Vec<&String>) = names.iter().partition(|n| n.is_ascii());
    assert!(ascii.iter().all(|n| carbon.primary(n) == relay.primary(n)));
    assert!(exotic.iter().any(|n| carbon.primary(n) != relay.primary(n)));
    agree_with_carbon(&nodes, Hash::Fnv1aCh, 2, false, &names, false);
    agree_with_relay(&nodes, Hash::Fnv1aCh, 2, &names);
}

#[test]
fn relay_fnv1a_ties_sort_by_host_then_port() {
    // One host on two ports (no instances: keys "i-host:port"), with a shared position: the lower port wins.
    let nodes = (2004..3000)
        .map(|port| vec![Node::new("10.0.0.1", Some(port), None), Node::new("10.0.0.1", Some(2003), None)])
        .find(|pair| !shared_positions(&ring(pair, Hash::Fnv1aCh, Router::Relay, 1, false)).is_empty())
        .expect("a colliding port");
    let relay = ring(&nodes, Hash::Fnv1aCh, Router::Relay, 2, false);
    let tied = shared_positions(&relay)[0];
    assert_eq!(relay.points().find(|p| p.position == tied).map(|p| p.node), Some(1), "port 2003 first");
    agree_with_relay(&nodes, Hash::Fnv1aCh, 2, &names(3, 20_000));
}

#[test]
fn fnv1a_without_instances_is_degenerate_in_carbon() {
    // carbon keys every instance-less node "i-None": the nodes stack at base, base+1, ... and the first
    // configured node takes nearly everything. The relay keys them "i-host:port" instead.
    let nodes = nodes(&["10.0.0.1:2003", "10.0.0.2:2003", "10.0.0.3:2003"]);
    let carbon = ring(&nodes, Hash::Fnv1aCh, Router::Carbon, 1, false);
    let names = names(31, 20_000);
    let first = names.iter().filter(|n| carbon.primary_index(n) == 0).count();
    assert!(first * 1000 > names.len() * 990, "{first} of {} on the first node", names.len());
    agree_with_carbon(&nodes, Hash::Fnv1aCh, 1, false, &names, false);
    agree_with_carbon(&nodes, Hash::Fnv1aCh, 3, false, &names, false);
    agree_with_relay(&nodes, Hash::Fnv1aCh, 2, &names);
    let eight: Vec<Node> = (1..=8).map(|i| Node::new(format!("10.0.0.{i}"), Some(2003), None)).collect();
    agree_with_carbon(&eight, Hash::Fnv1aCh, 2, false, &names[..5000], false);
}

#[test]
fn fnv1a_go_vectors_match_the_relay() {
    let plain: Vec<Node> = go_hosts(12).iter().map(|h| Node::new(h.as_str(), Some(2003), None)).collect();
    let with: Vec<Node> = [
        ("graphite010-g5", "5"),
        ("graphite011-g5", "1"),
        ("graphite012-g5", "4"),
        ("graphite013-g5", "3"),
        ("graphite-data019-g5", "2"),
        ("graphite-data020-g5", "6"),
        ("graphite-data021-g5", "0"),
    ]
    .iter()
    .map(|(h, i)| Node::new(*h, Some(2003), Some(i)))
    .collect();
    let long = "5min.prod.dc06.graphite-web006-g6.kernel.net.netfilter.nf_conntrack_max";
    let cases = [
        (&plain, ["graphite010-g5:2003", "graphite-data021-g5:2003", "graphite012-g5:2003"]),
        (&with, ["graphite013-g5:2003=3", "graphite-data021-g5:2003=0", "graphite-data019-g5:2003=2"]),
    ];
    for (nodes, want) in cases {
        let ring = ring(nodes, Hash::Fnv1aCh, Router::Relay, 1, false);
        for (name, want) in ["foobar", "suebob.foo.honey.i.shrunk.the.kids", long].iter().zip(want) {
            assert_eq!(ring.primary(name).to_string(), want, "{name}");
        }
        agree_with_relay(nodes, Hash::Fnv1aCh, 1, &names(12, 5000));
    }
}

// --- jump_fnv1a_ch ------------------------------------------------------------------------------------------

#[test]
fn jump_go_vectors_match_the_relay() {
    let hosts = go_hosts(45);
    let nodes: Vec<Node> = hosts.iter().map(|h| Node::new(h.as_str(), None, None)).collect();
    let ring = ring(&nodes, Hash::JumpFnv1aCh, Router::Relay, 1, false);
    for (name, want) in [
        ("foobar", "graphite-data043-g5"),
        ("suebob.foo.honey.i.shrunk.the.kids", "graphite-data048-g5"),
        ("5min.prod.dc06.graphite-web006-g6.kernel.net.netfilter.nf_conntrack_max", "graphite014-g5"),
    ] {
        assert_eq!(ring.primary(name).server, want, "{name}");
    }
    assert_eq!(ring.position("foobar"), 0x85944171f73967e8);
    // Host text never enters jump_fnv1a_ch, so the relay run uses addresses: carbon-c-relay 3.7.3 spends a
    // 5 s DNS timeout on configs with more than 20 unresolvable host names.
    let addresses: Vec<Node> = (0..nodes.len()).map(|i| Node::new(format!("10.0.5.{i}"), None, None)).collect();
    let names = names(45, 10_000);
    for replicas in 1..=3 {
        agree_with_relay(&addresses, Hash::JumpFnv1aCh, replicas, &names);
    }
}

#[test]
fn jump_orders_numeric_instances_numerically() {
    // Shuffled instances 1..10: the relay (>= 3.2) orders them 1, 2, ..., 10, not "1" < "10" < "2".
    let order = [7, 3, 10, 1, 9, 2, 8, 5, 6, 4];
    let nodes: Vec<Node> =
        order.iter().map(|i| Node::new(format!("10.0.1.{i}"), Some(2003), Some(&i.to_string()))).collect();
    let ring = ring(&nodes, Hash::JumpFnv1aCh, Router::Relay, 1, false);
    let buckets: Vec<&str> = ring.points().map(|p| nodes[p.node].instance.as_deref().unwrap_or("")).collect();
    assert_eq!(buckets, ["1", "2", "3", "4", "5", "6", "7", "8", "9", "10"]);
    let names = names(10, 10_000);
    for replicas in 1..=3 {
        agree_with_relay(&nodes, Hash::JumpFnv1aCh, replicas, &names);
    }
    // Leading zeros and signs are numbers too: 007 sits between -1 and 10.
    let odd = nodes_from(&[("10.0.2.1", "10"), ("10.0.2.2", "007"), ("10.0.2.3", "-1"), ("10.0.2.4", "+8")]);
    let ring = self::ring(&odd, Hash::JumpFnv1aCh, Router::Relay, 1, false);
    let buckets: Vec<&str> = ring.points().map(|p| odd[p.node].instance.as_deref().unwrap_or("")).collect();
    assert_eq!(buckets, ["-1", "007", "+8", "10"]);
    agree_with_relay(&odd, Hash::JumpFnv1aCh, 2, &names);
}

fn nodes_from(parts: &[(&str, &str)]) -> Vec<Node> {
    parts.iter().map(|(h, i)| Node::new(*h, Some(2003), Some(i))).collect()
}

#[test]
fn jump_puts_instances_first_then_config_order() {
    let nodes = nodes(&["10.0.3.1:2003", "10.0.3.2:2003=b", "10.0.3.3:2003", "10.0.3.4:2003=a"]);
    let ring = ring(&nodes, Hash::JumpFnv1aCh, Router::Relay, 1, false);
    let buckets: Vec<usize> = ring.points().map(|p| p.node).collect();
    assert_eq!(buckets, [3, 1, 0, 2]);
    let names = names(4, 10_000);
    for replicas in 1..=4 {
        agree_with_relay(&nodes, Hash::JumpFnv1aCh, replicas, &names);
    }
}

#[test]
fn jump_refuses_orders_that_depend_on_qsort() {
    let mixed = nodes(&["10.0.4.1=10", "10.0.4.2=1a", "10.0.4.3=9"]);
    let err = Ring::new(mixed, Hash::JumpFnv1aCh, None, 1, false).unwrap_err();
    assert!(matches!(err, Error::InstanceOrder { .. }), "{err}");
    assert!(err.to_string().contains("10.0.4.2=1a"), "names the node: {err}");
    let equal = nodes(&["10.0.4.1=7", "10.0.4.2=007"]);
    let err = Ring::new(equal, Hash::JumpFnv1aCh, None, 1, false).unwrap_err();
    assert!(matches!(err, Error::InstanceOrder { .. }), "{err}");
    let far = nodes(&["10.0.4.1=-2000000000", "10.0.4.2=0", "10.0.4.3=2000000000"]);
    let err = Ring::new(far, Hash::JumpFnv1aCh, None, 1, false).unwrap_err();
    assert!(err.to_string().contains("too far apart"), "{err}");
    let err = Ring::new(nodes(&["a", "b"]), Hash::JumpFnv1aCh, Some(Router::Carbon), 1, false).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
}

// --- errors -------------------------------------------------------------------------------------------------

#[test]
fn refusals_name_the_node() {
    let dup = nodes(&["10.0.0.1:2004=a", "10.0.0.2:2004", "10.0.0.1:2104=a"]);
    let err = Ring::new(dup.clone(), Hash::CarbonCh, None, 1, false).unwrap_err();
    assert!(matches!(err, Error::DuplicateNode { .. }), "{err}");
    assert!(err.to_string().contains("10.0.0.1:2104=a") && err.to_string().contains("10.0.0.1:2004=a"), "{err}");
    // carbon refuses the same ring.
    let job = CarbonJob { hash: Hash::CarbonCh, nodes: dup, replicas: 1, diverse: false, names: vec![], walk: false };
    let theirs = common::carbon_batch(&[job]).remove(0);
    assert!(theirs.unwrap_err().contains("already configured"));

    // The relay: one host:port is one member; fnv1a_ch instances are the whole key.
    let err = Ring::new(nodes(&["h:2003=a", "h=b"]), Hash::CarbonCh, Some(Router::Relay), 1, false).unwrap_err();
    assert!(err.to_string().contains("same host:port"), "{err}");
    let err = Ring::new(nodes(&["h=x", "g=x"]), Hash::Fnv1aCh, None, 1, false).unwrap_err();
    assert!(err.to_string().contains("same hash key"), "{err}");
    // ... but two ports of one host are two relay members for fnv1a_ch and jump.
    assert!(Ring::new(nodes(&["h:2003", "h:2004"]), Hash::Fnv1aCh, None, 2, false).is_ok());

    assert_eq!(Ring::new(vec![], Hash::CarbonCh, None, 1, false).unwrap_err(), Error::EmptyRing);
    for replicas in [0, 3] {
        let err = Ring::new(nodes(&["a", "b"]), Hash::CarbonCh, None, replicas, false).unwrap_err();
        assert!(matches!(err, Error::BadReplication { .. }), "{err}");
    }
    let err = Ring::new(nodes(&["a", "b"]), Hash::Fnv1aCh, None, 1, true).unwrap_err();
    assert!(matches!(err, Error::Unsupported { .. }), "{err}");
    let err = Ring::new(vec![Node::new("", None, None)], Hash::CarbonCh, None, 1, false).unwrap_err();
    assert!(matches!(err, Error::EmptyHost { .. }), "{err}");
}

#[test]
fn describe_names_hash_and_router() {
    let n = nodes(&["a", "b"]);
    for hash in Hash::ALL {
        let ring = Ring::new(n.clone(), hash, None, 2, false).unwrap();
        let text = ring.describe();
        assert!(text.contains(hash.name()) && text.contains(ring.router().name()), "{text}");
        assert_eq!(ring.router(), hash.default_router());
        assert_eq!((ring.hash(), ring.replicas(), ring.nodes().len()), (hash, 2, 2));
    }
    let ring = Ring::new(n, Hash::CarbonCh, None, 2, true).unwrap();
    assert!(ring.describe().contains("carbon 1.1.10") && ring.describe().contains("diverse"));
}
