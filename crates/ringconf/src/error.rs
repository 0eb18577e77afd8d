//! The one error type of the crate: every message is one line naming what was found.

use crate::Kind;

/// Why no ring could be read from a configuration text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The text is none of the three kinds.
    #[error(
        "not a carbon.conf ([relay] section), a carbonate.conf (a section with DESTINATIONS) nor a \
         carbon-c-relay config (cluster statements): {found}"
    )]
    UnknownKind {
        /// What the text looks like instead.
        found: String,
    },
    /// An INI line configparser refuses.
    #[error("line {line}: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// carbon's `%` interpolation failed.
    #[error("[{section}] {key}: {reason}")]
    Interpolation {
        /// The section.
        section: String,
        /// The key whose value could not be expanded.
        key: String,
        /// Why.
        reason: String,
    },
    /// The cluster (section, relay instance, relay cluster) asked for is not in the file.
    #[error("no {what} {name:?} in this {kind}; {available}")]
    NoCluster {
        /// The kind of file.
        kind: Kind,
        /// "cluster", "relay instance", ...
        what: &'static str,
        /// The name asked for.
        name: String,
        /// What there is, e.g. "clusters: a, b".
        available: String,
    },
    /// The file has several rings and no `--cluster` picks one.
    #[error("this {kind} has several hash clusters ({names}): name one with --cluster")]
    AmbiguousCluster {
        /// The kind of file.
        kind: Kind,
        /// The candidates, comma-separated.
        names: String,
    },
    /// The cluster exists but is not a consistent-hash ring.
    #[error("{cluster}: {reason}")]
    NotARing {
        /// The cluster (section or relay cluster) named.
        cluster: String,
        /// What it is instead, e.g. `RELAY_METHOD = rules routes by relay-rules.conf, not by a hash ring`.
        reason: String,
    },
    /// A setting has a value the peer refuses or that bucky cannot reproduce.
    #[error("{cluster}: {key} = {value:?}: {reason}")]
    BadSetting {
        /// The cluster (section or relay cluster).
        cluster: String,
        /// The setting.
        key: String,
        /// Its value.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// A required setting is missing.
    #[error("{cluster}: no {key} (required)")]
    MissingSetting {
        /// The cluster (section or relay cluster).
        cluster: String,
        /// The setting.
        key: &'static str,
    },
    /// A carbon-c-relay statement that cannot be read.
    #[error("line {line}: {message}")]
    RelaySyntax {
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// The members and settings make no valid ring (bad node, duplicate, replication out of range, ...).
    #[error("{cluster}: {reason}")]
    Ring {
        /// The cluster.
        cluster: String,
        /// The ring's refusal (printed in the message, so not also exposed as the error's source).
        reason: hashring::Error,
    },
}
