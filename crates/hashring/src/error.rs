//! The one error type of the crate.

use crate::{Hash, Router};

/// Why a node spec, a hash/router name or a ring was refused. Every message names the offending node.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node spec has no host (`:2003`, `=a`, ``).
    #[error("invalid node {spec:?}: empty host")]
    EmptyHost {
        /// The node spec as given.
        spec: String,
    },
    /// The port is not a number in 1..=65535, or is missing where it is mandatory.
    #[error("invalid node {spec:?}: bad port {port:?} (want a number from 1 to 65535)")]
    BadPort {
        /// The node spec as given.
        spec: String,
        /// The port text.
        port: String,
    },
    /// Any other malformed node spec (unbracketed IPv6, forbidden characters, ...).
    #[error("invalid node {spec:?}: {reason}")]
    InvalidNode {
        /// The node spec as given.
        spec: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Two nodes the router cannot tell apart.
    #[error("duplicate node {node}: {reason} as {other}")]
    DuplicateNode {
        /// The later of the two nodes.
        node: String,
        /// The earlier node it clashes with.
        other: String,
        /// What they share (for instance "same (server, instance)").
        reason: &'static str,
    },
    /// A ring needs at least one node.
    #[error("empty ring: at least one node is needed")]
    EmptyRing,
    /// The replication factor is 0, larger than the number of nodes, or above carbon-c-relay's 255.
    #[error("replication factor {replicas} is invalid for a ring of {nodes} node(s): it must be between 1 and {max}")]
    BadReplication {
        /// The replication factor asked for.
        replicas: usize,
        /// The number of nodes in the ring.
        nodes: usize,
        /// The largest factor allowed for this ring.
        max: usize,
    },
    /// The hash/router/option combination does not exist in the peer.
    #[error("{hash} with the {router} router is not supported: {reason}")]
    Unsupported {
        /// The hash asked for.
        hash: Hash,
        /// The router asked for.
        router: Router,
        /// Why.
        reason: &'static str,
    },
    /// The node cannot be hashed exactly as the peer would (for instance a carbon_ch node key whose Python
    /// `repr` depends on the Unicode database, or an empty instance the relay cannot express).
    #[error("node {node} cannot be placed exactly as {router} would: {reason}")]
    Unrepresentable {
        /// The node.
        node: String,
        /// The router whose behaviour cannot be reproduced.
        router: Router,
        /// Why.
        reason: &'static str,
    },
    /// jump_fnv1a_ch: carbon-c-relay's order of these instances depends on its qsort implementation.
    #[error("jump_fnv1a_ch cannot order node {node} against {other}: {reason}")]
    InstanceOrder {
        /// One node.
        node: String,
        /// The other node.
        other: String,
        /// Why the relay's order is not well defined.
        reason: &'static str,
    },
    /// An unknown hash name.
    #[error("unknown hash {0:?} (want carbon_ch, fnv1a_ch or jump_fnv1a_ch)")]
    UnknownHash(String),
    /// An unknown router name.
    #[error("unknown router {0:?} (want carbon or relay)")]
    UnknownRouter(String),
}
