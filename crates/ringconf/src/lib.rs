//! The ring of a Graphite cluster, read from the file its operators already keep: **carbon.conf** (carbon
//! 1.1.10's relay), **carbonate.conf** (carbonate 1.1.10) or a **carbon-c-relay** 3.7.3 config.
//!
//! [`parse`] detects the kind from the content (never the file name, see [`detect`]), picks the cluster and
//! returns a [`RingConfig`]: a [`hashring::Ring`] placing metrics exactly as that peer would, and for each
//! node its label in carbon's `DESTINATIONS` spelling (`host:port[:instance]`). The crate is pure: it reads
//! the text it is given and nothing else (a relay `include` is not followed).
//!
//! | kind | cluster (`--cluster`) | ring |
//! |---|---|---|
//! | carbon.conf | `relay` (default), `relay:NAME` or `NAME` (carbon-relay `--instance NAME`: `[relay]` then `[relay:NAME]` over it), `aggregator[:NAME]` | `DESTINATIONS`, `REPLICATION_FACTOR` (1), `DIVERSE_REPLICAS` (True), `ROUTER_HASH_TYPE` (carbon_ch), only with `RELAY_METHOD = consistent-hashing` |
//! | carbonate.conf | a section, default `main` (carbonate's `-C`) | `destinations`, `replication_factor` (required), `diverse_replicas` (true), `hashing_type` (carbon_ch) |
//! | carbon-c-relay | a `cluster` name; the only hash cluster when omitted | `carbon_ch`/`fnv1a_ch`/`jump_fnv1a_ch`, `replication` (1), members `host[:port][=instance]` |
//!
//! Anything the peer refuses, or places in a way bucky does not reproduce, is an [`Error`] of one line
//! naming what was found: an unknown kind, a missing cluster (with the ones there are), `RELAY_METHOD =
//! rules` and the other non-ring methods, a forward/any_of/failover/file relay cluster, `DYNAMIC_ROUTER`,
//! mmh3_ch, bad nodes and replication factors. Where bucky reads a file differently from the peer on purpose,
//! [`RingConfig::notes`] says so (carbonate's `diverse_replicas = false`, which carbonate reads as true).
//!
//! ```
//! let conf = "[cache]\nLINE_RECEIVER_PORT = 2003\n\n[relay]\nRELAY_METHOD = consistent-hashing\n\
//!             REPLICATION_FACTOR = 2\nDESTINATIONS = 10.0.0.1:2004:a, 10.0.0.1:2104:b, 10.0.0.2:2004:a\n";
//! let config = ringconf::parse(conf, None)?;
//! assert_eq!(config.kind, ringconf::Kind::CarbonConf);
//! assert!(config.ring.diverse(), "carbon 1.1.10 defaults DIVERSE_REPLICAS to True");
//! let homes: Vec<&str> = config.ring.replica_indices("a.b.c").map(|i| config.labels[i].as_str()).collect();
//! assert_eq!(homes.len(), 2);
//! assert_ne!(homes[0][..8], homes[1][..8], "diverse: two different hosts");
//!
//! let relay = "listen type linemode 2003 proto tcp ;\n\
//!              cluster graphite jump_fnv1a_ch replication 2\n    10.0.0.1:2003=1 10.0.0.2=2 ;\n\
//!              match * send to graphite ;\n";
//! let config = ringconf::parse(relay, None)?;
//! assert_eq!((config.cluster.as_str(), config.labels[1].as_str()), ("graphite", "10.0.0.2:2003:2"));
//! # Ok::<(), ringconf::Error>(())
//! ```
//!
//! # How it is checked
//!
//! `tests/e2e/ringconf.rs` writes hundreds of random files of each kind and requires the same placement of
//! random names as carbon 1.1.10's own settings reader and router, carbonate 1.1.10's `Config`/`Cluster`
//! (what `carbon-lookup` runs) and `carbon-c-relay -t` on the very same files (`BUCKY_RINGCONF_SEED` replays
//! a run).
#![deny(missing_docs)]

mod carbon;
mod carbonate;
mod error;
mod ini;
mod relay;

use std::fmt;

use hashring::{Node, Ring};

pub use carbonate::DEFAULT_CLUSTER as CARBONATE_DEFAULT_CLUSTER;
pub use error::Error;

/// The three kinds of file a ring is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// carbon 1.1.10's carbon.conf (its `[relay]` section, or an instance's).
    CarbonConf,
    /// carbonate 1.1.10's carbonate.conf.
    CarbonateConf,
    /// A carbon-c-relay 3.7.3 configuration.
    RelayConf,
}

impl Kind {
    /// `carbon.conf`, `carbonate.conf` or `carbon-c-relay config`.
    pub fn name(self) -> &'static str {
        match self {
            Kind::CarbonConf => "carbon.conf",
            Kind::CarbonateConf => "carbonate.conf",
            Kind::RelayConf => "carbon-c-relay config",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A ring read from a configuration file.
#[derive(Debug, Clone)]
pub struct RingConfig {
    /// What the file is.
    pub kind: Kind,
    /// The cluster read: the carbon.conf section (`relay`, `relay:b`), the carbonate.conf section, the relay
    /// cluster's name.
    pub cluster: String,
    /// The ring, placing metrics as the peer does.
    pub ring: Ring,
    /// For each node of [`RingConfig::ring`] (same order), its label in carbon's DESTINATIONS spelling:
    /// `host:port[:instance]`, `[v6]:port[:instance]`; the relay's default port 2003 filled in.
    pub labels: Vec<String>,
    /// Where bucky reads the file differently from the peer on purpose, one line each.
    pub notes: Vec<String>,
}

/// Detects the kind of `text` from its content:
///
/// * an INI file (first line that is not blank or a comment is a `[section]` header) with a carbon section
///   (`[cache]`, `[relay]`, `[aggregator]`, or one of their `:INSTANCE` sections) is a carbon.conf;
/// * any other INI file with a `DESTINATIONS` key is a carbonate.conf;
/// * a file whose first statement starts with a relay keyword (`cluster`, `match`, `listen`, `rewrite`,
///   `aggregate`, `statistics`, `send`, `include`) is a carbon-c-relay config.
pub fn detect(text: &str) -> Result<Kind, Error> {
    let first =
        text.lines().map(str::trim).find(|line| !line.is_empty() && !line.starts_with('#') && !line.starts_with(';'));
    let Some(first) = first else {
        return Err(Error::UnknownKind { found: "the file is empty (or only comments)".to_owned() });
    };
    if first.starts_with('[') {
        let ini = ini::Ini::parse(text)?;
        let sections = ini.section_names();
        if sections.iter().any(|s| carbon::is_carbon_section(s)) {
            return Ok(Kind::CarbonConf);
        }
        if ini.any_section_has("destinations") {
            return Ok(Kind::CarbonateConf);
        }
        return Err(Error::UnknownKind {
            found: format!("an INI file with sections {} and no DESTINATIONS", sections.join(", ")),
        });
    }
    if relay::looks_like_relay(text) {
        return Ok(Kind::RelayConf);
    }
    let mut shown: String = first.chars().take(60).collect();
    if shown.len() < first.len() {
        shown.push('…');
    }
    Err(Error::UnknownKind { found: format!("it starts with {shown:?}") })
}

/// Reads the ring of `cluster` (see the crate docs for the default of each kind) from `text`, whose kind is
/// detected by [`detect`].
pub fn parse(text: &str, cluster: Option<&str>) -> Result<RingConfig, Error> {
    parse_as(detect(text)?, text, cluster)
}

/// [`parse`] for a known kind.
pub fn parse_as(kind: Kind, text: &str, cluster: Option<&str>) -> Result<RingConfig, Error> {
    match kind {
        Kind::CarbonConf => carbon::read(text, cluster),
        Kind::CarbonateConf => carbonate::read(text, cluster),
        Kind::RelayConf => relay::read(text, cluster),
    }
}

/// A node in carbon's DESTINATIONS spelling: `host:port[:instance]`, IPv6 hosts bracketed, the relay's
/// default port (2003) filled in when the node has none.
pub fn destination_label(node: &Node) -> String {
    let host = if node.server.contains(':') { format!("[{}]", node.server) } else { node.server.clone() };
    let port = node.port.unwrap_or(RELAY_DEFAULT_PORT);
    match &node.instance {
        Some(instance) => format!("{host}:{port}:{instance}"),
        None => format!("{host}:{port}"),
    }
}

/// carbon-c-relay's port for members written without one.
const RELAY_DEFAULT_PORT: u16 = 2003;

#[cfg(test)]
mod tests;
