//! Ring construction and lookup for both routers.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use crate::digest::{self, Bytes};
use crate::keys::{PointKeys, POINTS_PER_NODE, RELAY_DEFAULT_PORT};
use crate::{Error, Hash, Node, Router};

/// carbon-c-relay refuses `replication` above this.
const RELAY_MAX_REPLICATION: usize = 255;

/// An immutable placement ring: nodes, hash, router semantics and replication.
///
/// Cloning is cheap (the ring is behind an `Arc`), and a ring is `Send + Sync`: build it once and share it.
#[derive(Clone)]
pub struct Ring {
    inner: Arc<Inner>,
}

struct Inner {
    nodes: Vec<Node>,
    hash: Hash,
    router: Router,
    replicas: usize,
    diverse: bool,
    /// For each node, a small id of its `server` (equal servers share an id): DIVERSE_REPLICAS.
    server_ids: Vec<u32>,
    layout: Layout,
}

enum Layout {
    /// carbon_ch and fnv1a_ch: sorted points. `positions` and `owners` are what lookups read.
    Points { positions: Vec<u32>, owners: Vec<u32>, origins: Vec<(u16, u32)> },
    /// jump_fnv1a_ch: bucket `b` belongs to node `order[b]`.
    Jump { order: Vec<u32> },
}

/// A ring built from its parts; the same as [`Ring::new`], spelled as a builder.
///
/// ```
/// use hashring::{Hash, Node, RingSpec, Router};
/// let nodes = vec![Node::parse("10.0.0.1:2003")?, Node::parse("10.0.0.2:2003")?];
/// let ring = RingSpec::new(nodes, Hash::CarbonCh).router(Router::Relay).replicas(2).build()?;
/// assert_eq!(ring.nodes_for("foo.bar").count(), 2);
/// # Ok::<(), hashring::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingSpec {
    /// Ring members, in configuration order (it matters: carbon's collision probing and jump_fnv1a_ch's
    /// instance-less buckets follow it).
    pub nodes: Vec<Node>,
    /// The placement function.
    pub hash: Hash,
    /// Whose semantics; `None` means [`Hash::default_router`].
    pub router: Option<Router>,
    /// Replication factor, 1..=nodes.
    pub replicas: usize,
    /// carbon's DIVERSE_REPLICAS: replicas go to distinct servers (carbon router only).
    pub diverse: bool,
}

impl RingSpec {
    /// A spec with the default router, replication 1 and no diverse replicas.
    pub fn new(nodes: Vec<Node>, hash: Hash) -> RingSpec {
        RingSpec { nodes, hash, router: None, replicas: 1, diverse: false }
    }

    /// Sets the router.
    pub fn router(mut self, router: Router) -> RingSpec {
        self.router = Some(router);
        self
    }

    /// Sets the replication factor.
    pub fn replicas(mut self, replicas: usize) -> RingSpec {
        self.replicas = replicas;
        self
    }

    /// Sets carbon's DIVERSE_REPLICAS.
    pub fn diverse(mut self, diverse: bool) -> RingSpec {
        self.diverse = diverse;
        self
    }

    /// Builds the ring, see [`Ring::new`].
    pub fn build(self) -> Result<Ring, Error> {
        Ring::new(self.nodes, self.hash, self.router, self.replicas, self.diverse)
    }
}

impl TryFrom<RingSpec> for Ring {
    type Error = Error;

    fn try_from(spec: RingSpec) -> Result<Ring, Error> {
        spec.build()
    }
}

/// One point of a ring, for display and debugging ([`Ring::points`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Where the point sits. carbon: after collision probing (may exceed 65535). jump_fnv1a_ch: the bucket.
    pub position: u32,
    /// The position its key hashed to (differs from `position` when carbon probed past a collision).
    pub hashed: u32,
    /// Index (into [`Ring::nodes`]) of the node a lookup landing here selects.
    pub node: usize,
    /// Index of the node whose key produced the point. Differs from `node` when carbon-c-relay gave a tied
    /// position to the first node in its sort order ("voided" the point).
    pub origin: usize,
}

impl Ring {
    /// Builds a ring.
    ///
    /// * `nodes`: in configuration order (carbon's DESTINATIONS order / the relay's member order).
    /// * `router`: `None` picks [`Hash::default_router`] (carbon for carbon_ch, relay otherwise).
    /// * `replicas`: 1..=`nodes.len()` (and at most 255 for the relay).
    /// * `diverse`: carbon's DIVERSE_REPLICAS (carbon 1.1.10 defaults it to True); relay rings refuse it.
    ///
    /// Refused: an empty ring, a malformed node, nodes the router cannot tell apart, jump_fnv1a_ch with the
    /// carbon router (carbon has no jump hash), jump_fnv1a_ch instance sets whose order in carbon-c-relay
    /// depends on its qsort, and node keys the peer's exact key cannot be reproduced for.
    pub fn new(
        nodes: Vec<Node>,
        hash: Hash,
        router: Option<Router>,
        replicas: usize,
        diverse: bool,
    ) -> Result<Ring, Error> {
        let router = router.unwrap_or(hash.default_router());
        if nodes.is_empty() {
            return Err(Error::EmptyRing);
        }
        for node in &nodes {
            node.validate()?;
        }
        check_combination(hash, router, diverse)?;
        let max = match router {
            Router::Carbon => nodes.len(),
            Router::Relay => nodes.len().min(RELAY_MAX_REPLICATION),
        };
        if replicas == 0 || replicas > max {
            return Err(Error::BadReplication { replicas, nodes: nodes.len(), max });
        }
        check_duplicates(&nodes, hash, router)?;
        let layout = match hash {
            Hash::JumpFnv1aCh => Layout::Jump { order: jump_order(&nodes)? },
            Hash::CarbonCh | Hash::Fnv1aCh => build_points(&nodes, hash, router)?,
        };
        let mut ids = HashMap::new();
        let server_ids = nodes
            .iter()
            .map(|node| {
                let next = ids.len() as u32;
                *ids.entry(node.server.as_str()).or_insert(next)
            })
            .collect();
        Ok(Ring { inner: Arc::new(Inner { nodes, hash, router, replicas, diverse, server_ids, layout }) })
    }

    /// Same as [`RingSpec::build`].
    pub fn from_spec(spec: RingSpec) -> Result<Ring, Error> {
        spec.build()
    }

    /// The nodes, in configuration order.
    pub fn nodes(&self) -> &[Node] {
        &self.inner.nodes
    }

    /// The placement function.
    pub fn hash(&self) -> Hash {
        self.inner.hash
    }

    /// The router whose semantics this ring follows.
    pub fn router(&self) -> Router {
        self.inner.router
    }

    /// The replication factor.
    pub fn replicas(&self) -> usize {
        self.inner.replicas
    }

    /// Whether carbon's DIVERSE_REPLICAS is on.
    pub fn diverse(&self) -> bool {
        self.inner.diverse
    }

    /// A one-line human description naming the hash, the router and its peer, the nodes and the replication.
    pub fn describe(&self) -> String {
        let inner = &*self.inner;
        let how = match (inner.hash, inner.router) {
            (Hash::JumpFnv1aCh, _) => "jump hash over FNV-1a 64, signed bytes",
            (Hash::CarbonCh, Router::Carbon) => "MD5, 100 points per node, collisions probed forward",
            (Hash::Fnv1aCh, Router::Carbon) => {
                "FNV-1a 32 of \"i-instance\", 100 points per node, collisions probed forward"
            }
            (Hash::CarbonCh, Router::Relay) => "MD5, 100 points per node, tied points voided",
            (Hash::Fnv1aCh, Router::Relay) => "FNV-1a 32 signed bytes, 100 points per node, tied points voided",
        };
        format!(
            "{} with the {} router ({}: {how}), {} node{}, replication {}{}",
            inner.hash,
            inner.router,
            inner.router.peer(),
            inner.nodes.len(),
            if inner.nodes.len() == 1 { "" } else { "s" },
            inner.replicas,
            if inner.diverse { ", diverse replicas" } else { "" },
        )
    }

    /// The hash of a metric name as this ring uses it: the 16-bit ring position for carbon_ch and fnv1a_ch,
    /// the FNV-1a 64 key for jump_fnv1a_ch.
    ///
    /// Names are hashed exactly as given (carbon hashes the name as received, tags included; carbon-c-relay
    /// hashes its sanitised name, which for names stored on disk is the name itself).
    pub fn position(&self, name: &str) -> u64 {
        let name = name.as_bytes();
        match (self.inner.hash, self.inner.router) {
            (Hash::CarbonCh, _) => u64::from(digest::carbon_position(name)),
            (Hash::Fnv1aCh, Router::Carbon) => u64::from(digest::fnv1a_position(name, Bytes::Unsigned)),
            (Hash::Fnv1aCh, Router::Relay) => u64::from(digest::fnv1a_position(name, Bytes::Signed)),
            (Hash::JumpFnv1aCh, _) => digest::fnv1a_64_signed(name),
        }
    }

    /// The node a metric's first copy goes to.
    pub fn primary(&self, name: &str) -> &Node {
        &self.inner.nodes[self.primary_index(name)]
    }

    /// Index (into [`Ring::nodes`]) of [`Ring::primary`].
    pub fn primary_index(&self, name: &str) -> usize {
        let key = self.position(name);
        match &self.inner.layout {
            Layout::Points { positions, owners, .. } => owners[lower_bound(positions, key)] as usize,
            Layout::Jump { order } => order[digest::jump(key, order.len())] as usize,
        }
    }

    /// The nodes holding a metric, in replica order: what the router sends it to. Yields
    /// [`Ring::replicas`] nodes, except with diverse replicas when there are fewer distinct servers.
    pub fn nodes_for(&self, name: &str) -> impl Iterator<Item = &Node> + '_ {
        let nodes = &self.inner.nodes;
        self.replica_indices(name).map(move |i| &nodes[i])
    }

    /// Same as [`Ring::nodes_for`], as indices into [`Ring::nodes`].
    pub fn replica_indices(&self, name: &str) -> ReplicaIndices<'_> {
        let inner = &*self.inner;
        if inner.replicas == 1 {
            // The first node of every walk is the primary, diverse or not.
            return ReplicaIndices(Replicas::One(Some(self.primary_index(name))));
        }
        ReplicaIndices(Replicas::Walk {
            ring: inner,
            walk: self.walk_indices(name),
            left: inner.replicas,
            servers: inner.diverse.then(|| Seen::new(inner.nodes.len())),
        })
    }

    /// The peer's whole preference order for a metric, before replication and diverse replicas are applied:
    /// carbon's `ConsistentHashRing.get_nodes`, carbon-c-relay's ring walk or jump sequence. Every node
    /// appears once, except for carbon's one-node-ring quirk (since 1.1.2 `get_nodes` yields a lone node
    /// twice).
    pub fn walk(&self, name: &str) -> impl Iterator<Item = &Node> + '_ {
        let nodes = &self.inner.nodes;
        self.walk_indices(name).map(move |i| &nodes[i])
    }

    fn walk_indices(&self, name: &str) -> WalkIndices<'_> {
        let inner = &*self.inner;
        let key = self.position(name);
        let n = inner.nodes.len();
        let state = match &inner.layout {
            Layout::Points { positions, .. } => {
                let cursor = lower_bound(positions, key);
                let len = positions.len();
                match inner.router {
                    Router::Carbon => State::Carbon { cursor, last: (cursor + len - 1) % len, quirk: n == 1 },
                    Router::Relay => State::Relay { cursor, steps: len },
                }
            }
            Layout::Jump { .. } => State::Jump { key, buckets: n, swaps: Swaps::default(), first: true },
        };
        WalkIndices { ring: inner, state, seen: Seen::new(n), unseen: n }
    }

    /// The ring's points in ring order (jump_fnv1a_ch: its buckets in order), for display.
    pub fn points(&self) -> impl Iterator<Item = Point> + '_ {
        let (points, buckets) = match &self.inner.layout {
            Layout::Points { positions, owners, origins } => (Some((positions, owners, origins)), None),
            Layout::Jump { order } => (None, Some(order)),
        };
        let points = points.into_iter().flat_map(|(positions, owners, origins)| {
            positions.iter().zip(owners).zip(origins).map(|((&position, &node), &(hashed, origin))| Point {
                position,
                hashed: u32::from(hashed),
                node: node as usize,
                origin: origin as usize,
            })
        });
        let buckets = buckets.into_iter().flat_map(|order| {
            order.iter().enumerate().map(|(bucket, &node)| Point {
                position: bucket as u32,
                hashed: bucket as u32,
                node: node as usize,
                origin: node as usize,
            })
        });
        points.chain(buckets)
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("description", &self.describe()).field("nodes", &self.inner.nodes).finish()
    }
}

/// Index of the first point at or after `key`, wrapping to 0 past the end (Python's `bisect_left % len`, the
/// relay's binary search).
#[inline]
fn lower_bound(positions: &[u32], key: u64) -> usize {
    let i = positions.partition_point(|&p| u64::from(p) < key);
    if i == positions.len() {
        0
    } else {
        i
    }
}

fn check_combination(hash: Hash, router: Router, diverse: bool) -> Result<(), Error> {
    let reason = match (hash, router) {
        (Hash::JumpFnv1aCh, Router::Carbon) => {
            "carbon 1.1.10 has no jump hash (an unknown ROUTER_HASH_TYPE silently behaves as carbon_ch)"
        }
        (_, Router::Relay) if diverse => "diverse replicas are a carbon setting (DIVERSE_REPLICAS); the relay has none",
        _ => return Ok(()),
    };
    Err(Error::Unsupported { hash, router, reason })
}

/// Refuses nodes the router cannot tell apart.
fn check_duplicates(nodes: &[Node], hash: Hash, router: Router) -> Result<(), Error> {
    // Each rule: a key per node (None = the rule does not apply to that node) and the message.
    type Rule = (fn(&Node, Hash) -> Option<String>, &'static str);
    let carbon_node: Rule = (
        |n, _| Some(format!("{}\0{:?}", n.server, n.instance)),
        "same (server, instance), which is carbon's node identity",
    );
    let relay_member: Rule = (
        |n, _| Some(format!("{}\0{}", n.server, n.port.unwrap_or(RELAY_DEFAULT_PORT))),
        "same host:port, which carbon-c-relay treats as one member",
    );
    let relay_points: Rule = (
        |n, hash| match (hash, &n.instance) {
            (Hash::CarbonCh, _) => Some(format!("{}\0{:?}", n.server, n.instance)),
            (_, Some(instance)) => Some(instance.clone()),
            (_, None) => None,
        },
        "same hash key, so every point of one would be lost to the other",
    );
    let rules: &[Rule] = match router {
        Router::Carbon => &[carbon_node],
        Router::Relay => &[relay_member, relay_points],
    };
    for (key_of, reason) in rules {
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, node) in nodes.iter().enumerate() {
            let Some(key) = key_of(node, hash) else { continue };
            if let Some(&first) = seen.get(&key) {
                return Err(Error::DuplicateNode { node: node.to_string(), other: nodes[first].to_string(), reason });
            }
            seen.insert(key, i);
        }
    }
    if router == Router::Relay {
        if let Some(node) = nodes.iter().find(|n| n.instance.as_deref() == Some("")) {
            return Err(Error::Unrepresentable {
                node: node.to_string(),
                router,
                reason: "carbon-c-relay refuses an empty instance string",
            });
        }
    }
    Ok(())
}

/// carbon_ch / fnv1a_ch points, probed (carbon) or sorted and voided (relay).
fn build_points(nodes: &[Node], hash: Hash, router: Router) -> Result<Layout, Error> {
    struct Entry {
        position: u32,
        hashed: u16,
        origin: u32,
    }
    let per_node = POINTS_PER_NODE as usize;
    let mut entries = Vec::with_capacity(nodes.len() * per_node);
    // carbon: positions already taken; a collision moves the newcomer to the next free integer, no wrap.
    let mut taken = match router {
        Router::Carbon => vec![false; (1 << 16) + nodes.len() * per_node],
        Router::Relay => Vec::new(),
    };
    for (origin, node) in nodes.iter().enumerate() {
        let keys = PointKeys::new(node, hash, router)?;
        for i in 0..POINTS_PER_NODE {
            let hashed = keys.position(i);
            let mut position = usize::from(hashed);
            if router == Router::Carbon {
                while taken[position] {
                    position += 1;
                }
                taken[position] = true;
            }
            entries.push(Entry { position: position as u32, hashed, origin: origin as u32 });
        }
    }
    match router {
        // Positions are unique after probing.
        Router::Carbon => entries.sort_unstable_by_key(|e| e.position),
        // The relay's qsort comparators. Ties between points of the same node are harmless; ties between
        // different nodes cannot happen after check_duplicates.
        Router::Relay => entries.sort_by(|a, b| {
            a.position.cmp(&b.position).then_with(|| {
                let (l, r) = (&nodes[a.origin as usize], &nodes[b.origin as usize]);
                let by_host = l.server.as_bytes().cmp(r.server.as_bytes());
                by_host.then_with(|| match hash {
                    Hash::CarbonCh => match (&l.instance, &r.instance) {
                        (None, None) => Ordering::Equal,
                        (None, Some(_)) => Ordering::Greater,
                        (Some(_), None) => Ordering::Less,
                        (Some(l), Some(r)) => l.as_bytes().cmp(r.as_bytes()),
                    },
                    _ => l.port.unwrap_or(RELAY_DEFAULT_PORT).cmp(&r.port.unwrap_or(RELAY_DEFAULT_PORT)),
                })
            })
        }),
    }
    let positions: Vec<u32> = entries.iter().map(|e| e.position).collect();
    let mut owners: Vec<u32> = entries.iter().map(|e| e.origin).collect();
    if router == Router::Relay {
        // Every point of a run of equal positions goes to the run's first node.
        for i in 1..owners.len() {
            if positions[i] == positions[i - 1] {
                owners[i] = owners[i - 1];
            }
        }
    }
    let origins = entries.iter().map(|e| (e.hashed, e.origin)).collect();
    Ok(Layout::Points { positions, owners, origins })
}

/// carbon-c-relay's jump_fnv1a_ch bucket order: members with an instance first, ordered by instance
/// (numerically if both parse as base-10 `strtol` numbers, else `strcmp`), then members without an instance
/// in configuration order. Refuses instance sets on which that comparator is not a strict total order, since
/// the relay's result then depends on glibc's qsort internals.
fn jump_order(nodes: &[Node]) -> Result<Vec<u32>, Error> {
    let with: Vec<(usize, &str, Option<i64>)> = nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| n.instance.as_deref().map(|inst| (i, inst, strtol(inst))))
        .collect();
    let numeric = with.iter().filter(|w| w.2.is_some()).count();
    let order_error = |a: usize, b: usize, reason| Error::InstanceOrder {
        node: nodes[a].to_string(),
        other: nodes[b].to_string(),
        reason,
    };
    if numeric > 0 && numeric < with.len() {
        let num = with.iter().find(|w| w.2.is_some()).map_or(0, |w| w.0);
        let text = with.iter().find(|w| w.2.is_none()).map_or(0, |w| w.0);
        return Err(order_error(
            text,
            num,
            "mixed numeric and non-numeric instances (carbon-c-relay compares some pairs as numbers and \
             others as strings, so its order depends on its qsort)",
        ));
    }
    let cmp = |a: &(usize, &str, Option<i64>), b: &(usize, &str, Option<i64>)| match (a.2, b.2) {
        // (int)(val_l - val_r), with C's wrapping.
        (Some(l), Some(r)) => (l.wrapping_sub(r) as i32).cmp(&0),
        _ => a.1.as_bytes().cmp(b.1.as_bytes()),
    };
    // The comparator is a strict total order iff no pair ties and the "beats" counts are exactly 0..k (checked
    // both ways round: C's (int)(a - b) can make both orders compare "less").
    let mut scores = vec![0usize; with.len()];
    for (x, a) in with.iter().enumerate() {
        for (y, b) in with.iter().enumerate() {
            match cmp(a, b) {
                Ordering::Equal if x != y => {
                    return Err(order_error(
                        a.0.max(b.0),
                        a.0.min(b.0),
                        "same instance (equal as carbon-c-relay compares them)",
                    ))
                }
                Ordering::Greater => scores[x] += 1,
                _ => {}
            }
        }
    }
    let mut sorted: Vec<usize> = (0..with.len()).collect();
    sorted.sort_by_key(|&x| scores[x]);
    if sorted.iter().enumerate().any(|(rank, &x)| scores[x] != rank) {
        let (a, b) = (with[sorted[0]].0, with[sorted[sorted.len() - 1]].0);
        return Err(order_error(
            a,
            b,
            "numeric instances too far apart: carbon-c-relay compares them as (int)(a - b), which overflows",
        ));
    }
    let mut order: Vec<u32> = sorted.iter().map(|&x| with[x].0 as u32).collect();
    order.extend(nodes.iter().enumerate().filter(|(_, n)| n.instance.is_none()).map(|(i, _)| i as u32));
    Ok(order)
}

/// glibc `strtol(s, &end, 10)` when `*end == '\0'` afterwards: the value, saturated to `long`; `None` when the
/// text is not entirely a number. Like C, the empty string counts as the number 0.
fn strtol(s: &str) -> Option<i64> {
    let bytes = s.as_bytes();
    let mut i = bytes.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')).count();
    let negative = match bytes.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = &bytes[i..];
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        // No digits: strtol leaves `end` at the start, which is '\0' only for "".
        return s.is_empty().then_some(0);
    }
    let mut value: i128 = 0;
    for &d in digits {
        value = (value * 10 + i128::from(d - b'0')).min(i128::from(i64::MAX) + 1);
    }
    let value = if negative { -value } else { value };
    Some(value.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
}

/// Iterator over the replicas of one metric, as node indices ([`Ring::replica_indices`]).
pub struct ReplicaIndices<'a>(Replicas<'a>);

enum Replicas<'a> {
    /// Replication 1: just the primary.
    One(Option<usize>),
    Walk {
        ring: &'a Inner,
        walk: WalkIndices<'a>,
        left: usize,
        /// Servers already used, with diverse replicas.
        servers: Option<Seen>,
    },
}

impl Iterator for ReplicaIndices<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        match &mut self.0 {
            Replicas::One(node) => node.take(),
            Replicas::Walk { ring, walk, left, servers } => {
                if *left == 0 {
                    return None;
                }
                loop {
                    let node = walk.next()?;
                    if let Some(servers) = servers {
                        if !servers.insert(ring.server_ids[node] as usize) {
                            continue;
                        }
                    }
                    *left -= 1;
                    return Some(node);
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.0 {
            Replicas::One(node) => (usize::from(node.is_some()), Some(usize::from(node.is_some()))),
            Replicas::Walk { left, .. } => (0, Some(*left)),
        }
    }
}

struct WalkIndices<'a> {
    ring: &'a Inner,
    state: State,
    seen: Seen,
    /// Nodes not yielded yet.
    unseen: usize,
}

enum State {
    /// carbon's get_nodes: from `cursor`, stop before `last` (the index before the start is never examined).
    Carbon { cursor: usize, last: usize, quirk: bool },
    /// The relay: at most one turn of the ring.
    Relay { cursor: usize, steps: usize },
    /// The relay's jump_fnv1a_ch: `buckets` left in the swap-removed list.
    Jump { key: u64, buckets: usize, swaps: Swaps, first: bool },
}

impl Iterator for WalkIndices<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        match (&mut self.state, &self.ring.layout) {
            (State::Carbon { cursor, last, quirk }, Layout::Points { owners, .. }) => {
                if *quirk {
                    // carbon >= 1.1.2 yields the only node first, then walks as usual (and yields it again).
                    *quirk = false;
                    return Some(0);
                }
                while self.unseen > 0 && *cursor != *last {
                    let node = owners[*cursor] as usize;
                    *cursor = (*cursor + 1) % owners.len();
                    if self.seen.insert(node) {
                        self.unseen -= 1;
                        return Some(node);
                    }
                }
                None
            }
            (State::Relay { cursor, steps }, Layout::Points { owners, .. }) => {
                while self.unseen > 0 && *steps > 0 {
                    let node = owners[*cursor] as usize;
                    *cursor = (*cursor + 1) % owners.len();
                    *steps -= 1;
                    if self.seen.insert(node) {
                        self.unseen -= 1;
                        return Some(node);
                    }
                }
                None
            }
            (State::Jump { key, buckets, swaps, first }, Layout::Jump { order }) => {
                if *buckets == 0 {
                    return None;
                }
                if !*first {
                    *key = digest::xorshift(*key);
                }
                *first = false;
                let j = digest::jump(*key, *buckets);
                let node = order[swaps.get(j) as usize] as usize;
                *buckets -= 1;
                let moved = swaps.get(*buckets);
                swaps.set(j, moved);
                Some(node)
            }
            _ => None,
        }
    }
}

/// A set of node indices below a known bound; no allocation up to 128 nodes.
enum Seen {
    Small(u128),
    Large(Vec<u64>),
}

impl Seen {
    fn new(bound: usize) -> Seen {
        if bound <= 128 {
            Seen::Small(0)
        } else {
            Seen::Large(vec![0; bound.div_ceil(64)])
        }
    }

    /// Adds `i`; true if it was not there yet.
    #[inline]
    fn insert(&mut self, i: usize) -> bool {
        match self {
            Seen::Small(bits) => {
                let bit = 1u128 << (i & 127);
                let new = *bits & bit == 0;
                *bits |= bit;
                new
            }
            Seen::Large(words) => match words.get_mut(i / 64) {
                Some(word) => {
                    let bit = 1u64 << (i % 64);
                    let new = *word & bit == 0;
                    *word |= bit;
                    new
                }
                None => false,
            },
        }
    }
}

/// The relay's swap-removed bucket list, as the few entries that differ from the identity.
#[derive(Default)]
struct Swaps {
    inline: [(u32, u32); 4],
    len: usize,
    spill: Vec<(u32, u32)>,
}

impl Swaps {
    fn get(&self, index: usize) -> u32 {
        let index = index as u32;
        self.inline[..self.len].iter().chain(&self.spill).find(|(k, _)| *k == index).map_or(index, |&(_, v)| v)
    }

    fn set(&mut self, index: usize, value: u32) {
        let index = index as u32;
        if let Some(slot) = self.inline[..self.len].iter_mut().chain(&mut self.spill).find(|(k, _)| *k == index) {
            slot.1 = value;
        } else if self.len < self.inline.len() {
            self.inline[self.len] = (index, value);
            self.len += 1;
        } else {
            self.spill.push((index, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strtol_like_glibc() {
        assert_eq!(strtol("10"), Some(10));
        assert_eq!(strtol("007"), Some(7));
        assert_eq!(strtol(" -3"), Some(-3));
        assert_eq!(strtol("+4"), Some(4));
        assert_eq!(strtol(""), Some(0));
        assert_eq!(strtol("4 "), None);
        assert_eq!(strtol("1a"), None);
        assert_eq!(strtol("-"), None);
        assert_eq!(strtol("  "), None);
        assert_eq!(strtol("99999999999999999999"), Some(i64::MAX));
        assert_eq!(strtol("-99999999999999999999"), Some(i64::MIN));
    }

    #[test]
    fn swaps_behave_like_a_list() {
        let mut swaps = Swaps::default();
        let mut list: Vec<u32> = (0..20).collect();
        let mut len = 20;
        for j in [3usize, 17, 0, 3, 9, 1, 2, 5, 4, 0, 6] {
            let j = j % len;
            assert_eq!(swaps.get(j), list[j]);
            len -= 1;
            list[j] = list[len];
            let moved = swaps.get(len);
            swaps.set(j, moved);
        }
        for (i, &v) in list.iter().enumerate().take(len) {
            assert_eq!(swaps.get(i), v);
        }
    }
}
