//! carbon.conf, as carbon 1.1.10's `carbon-relay` (and `carbon-aggregator`) read it.
//!
//! `carbon-relay [--instance NAME]` reads `[relay]`, then, with an instance, `[relay:NAME]` over it
//! (`Settings.readFrom` twice; each read also re-applies `[DEFAULT]`). Every value is `%`-interpolated, booleans
//! are configparser's, `DESTINATIONS` is split on commas. The ring is `ConsistentHashingRouter`'s:
//! `RELAY_METHOD = consistent-hashing` (carbon's default is `rules`), `ROUTER_HASH_TYPE` carbon_ch (default)
//! or fnv1a_ch, `REPLICATION_FACTOR` (default 1), `DIVERSE_REPLICAS` (default True). carbon-aggregator
//! always routes by consistent hashing. A destination listed twice is connected (and placed) once.

use std::collections::HashMap;

use hashring::{Hash, Node, Ring, Router};

use crate::ini::{self, Ini};
use crate::{destination_label, Error, Kind, RingConfig};

/// The programs of carbon.conf whose sections can hold a ring, and whether they honour RELAY_METHOD.
const PROGRAMS: [(&str, bool); 2] = [("relay", true), ("aggregator", false)];

/// Sections of carbon.conf (a file with one of these is a carbon.conf).
pub(crate) fn is_carbon_section(name: &str) -> bool {
    let program = name.split_once(':').map_or(name, |(program, _)| program);
    matches!(program, "cache" | "relay" | "aggregator")
}

/// The settings carbon's router reads, with carbon 1.1.10's defaults.
struct Settings {
    relay_method: String,
    router_hash_type: String,
    replication_factor: String,
    diverse_replicas: bool,
    dynamic_router: bool,
    destinations: Option<String>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            relay_method: "rules".to_owned(),
            router_hash_type: String::new(),
            replication_factor: "1".to_owned(),
            diverse_replicas: true,
            dynamic_router: false,
            destinations: None,
        }
    }
}

impl Settings {
    /// `Settings.readFrom(path, section)`: every key of the section (and of `[DEFAULT]`) interpolated, the
    /// ones the router reads kept.
    fn read_from(&mut self, ini: &Ini, section: &str) -> Result<(), Error> {
        let items = ini.items(section);
        let map: HashMap<String, String> = items.iter().cloned().collect();
        for (key, raw) in &items {
            let value = ini::interpolate(&map, section, key, raw)?;
            let boolean = |value: &str| {
                ini::boolean(value).ok_or_else(|| Error::BadSetting {
                    cluster: format!("[{section}]"),
                    key: key.to_uppercase(),
                    value: value.to_owned(),
                    reason: "not a boolean (want true/false, yes/no, on/off or 1/0)".to_owned(),
                })
            };
            match key.as_str() {
                "relay_method" => self.relay_method = value,
                "router_hash_type" => self.router_hash_type = value,
                "replication_factor" => self.replication_factor = value,
                "diverse_replicas" => self.diverse_replicas = boolean(&value)?,
                "dynamic_router" => self.dynamic_router = boolean(&value)?,
                "destinations" => self.destinations = Some(value),
                _ => {}
            }
        }
        Ok(())
    }
}

/// Reads the ring of `cluster` (default `relay`): `relay`, `relay:NAME` or `NAME` (the instance), and the
/// same for `aggregator`.
pub(crate) fn read(text: &str, cluster: Option<&str>) -> Result<RingConfig, Error> {
    let ini = Ini::parse(text)?;
    let (program, instance) = pick(&ini, cluster)?;
    let mut settings = Settings::default();
    settings.read_from(&ini, program)?;
    let name = match instance {
        Some(instance) => {
            let section = format!("{program}:{instance}");
            settings.read_from(&ini, &section)?;
            section
        }
        None => program.to_owned(),
    };
    let cluster = format!("[{name}]");
    let honours_method = PROGRAMS.iter().any(|&(p, honours)| p == program && honours);
    if honours_method {
        check_relay_method(&cluster, &settings.relay_method)?;
    }
    if settings.dynamic_router {
        return Err(Error::BadSetting {
            cluster,
            key: "DYNAMIC_ROUTER".to_owned(),
            value: "True".to_owned(),
            reason: "carbon adds destinations to its ring in the order they connect, so the ring cannot be known \
                     from the file"
                .to_owned(),
        });
    }
    let hash = router_hash_type(&cluster, "ROUTER_HASH_TYPE", &settings.router_hash_type)?;
    let replicas = replication_factor(&cluster, "REPLICATION_FACTOR", &settings.replication_factor)?;
    let Some(destinations) = settings.destinations.filter(|d| !d.trim().is_empty()) else {
        return Err(Error::MissingSetting { cluster, key: "DESTINATIONS" });
    };
    let mut notes = Vec::new();
    let mut nodes: Vec<Node> = Vec::new();
    for node in hashring::parse_destinations(&destinations).map_err(|source| ring_error(&cluster, source))? {
        if nodes.contains(&node) {
            // CarbonClientManager.startClient returns early for a destination it already has.
            notes.push(format!(
                "{cluster}: destination {} is listed twice; carbon uses it once",
                destination_label(&node)
            ));
            continue;
        }
        nodes.push(node);
    }
    let ring = Ring::new(nodes, hash, Some(Router::Carbon), replicas, settings.diverse_replicas)
        .map_err(|source| ring_error(&cluster, source))?;
    let labels = ring.nodes().iter().map(destination_label).collect();
    Ok(RingConfig { kind: Kind::CarbonConf, cluster: name, ring, labels, notes })
}

/// The program section and instance `cluster` names.
fn pick<'a>(ini: &Ini, cluster: Option<&'a str>) -> Result<(&'static str, Option<&'a str>), Error> {
    let cluster = cluster.unwrap_or("relay");
    for (program, _) in PROGRAMS {
        if cluster == program {
            return if ini.has_section(program) { Ok((program, None)) } else { Err(no_cluster(ini, cluster)) };
        }
        if let Some(instance) = cluster.strip_prefix(program).and_then(|rest| rest.strip_prefix(':')) {
            let section = format!("{program}:{instance}");
            return if ini.has_section(&section) {
                Ok((program, Some(instance)))
            } else {
                Err(no_cluster(ini, cluster))
            };
        }
    }
    if cluster == "cache" || cluster.starts_with("cache:") {
        return Err(Error::NotARing {
            cluster: format!("[{cluster}]"),
            reason: "carbon-cache writes what it receives and routes nothing; the ring is in [relay]".to_owned(),
        });
    }
    // A bare instance name: carbon-relay --instance NAME.
    let candidates: Vec<&'static str> =
        PROGRAMS.iter().map(|&(p, _)| p).filter(|p| ini.has_section(&format!("{p}:{cluster}"))).collect();
    match candidates.as_slice() {
        [program] => Ok((program, Some(cluster))),
        [] => Err(no_cluster(ini, cluster)),
        _ => Err(Error::AmbiguousCluster {
            kind: Kind::CarbonConf,
            names: candidates.iter().map(|p| format!("{p}:{cluster}")).collect::<Vec<_>>().join(", "),
        }),
    }
}

fn no_cluster(ini: &Ini, name: &str) -> Error {
    let sections: Vec<&str> = ini.section_names().into_iter().filter(|s| !s.starts_with("cache")).collect();
    Error::NoCluster {
        kind: Kind::CarbonConf,
        what: "relay section",
        name: name.to_owned(),
        available: if sections.is_empty() {
            "it has no [relay] or [aggregator] section".to_owned()
        } else {
            format!("sections: {}", sections.join(", "))
        },
    }
}

/// Only `consistent-hashing` is a ring bucky reproduces.
fn check_relay_method(cluster: &str, method: &str) -> Result<(), Error> {
    let reason = match method {
        "consistent-hashing" => return Ok(()),
        "rules" => "routes by relay-rules.conf, not by a hash ring (rules is carbon's default RELAY_METHOD)",
        "aggregated-consistent-hashing" => {
            "routes each metric by the names aggregation-rules.conf makes of it, toward carbon-aggregators; \
             bucky has no such ring"
        }
        "fast-hashing" | "fast-aggregated-hashing" => {
            "carbon's FastHashRing (no points, nodes sorted by hash) is not implemented by bucky's rings"
        }
        _ => {
            "unknown to carbon 1.1.10 (rules, consistent-hashing, aggregated-consistent-hashing, fast-hashing, \
             fast-aggregated-hashing)"
        }
    };
    Err(Error::NotARing { cluster: cluster.to_owned(), reason: format!("RELAY_METHOD = {method} {reason}") })
}

/// carbon's hash names: carbon_ch (also when unset or empty) and fnv1a_ch.
pub(crate) fn router_hash_type(cluster: &str, key: &str, value: &str) -> Result<Hash, Error> {
    let reason = match value {
        "" | "carbon_ch" => return Ok(Hash::CarbonCh),
        "fnv1a_ch" => return Ok(Hash::Fnv1aCh),
        "mmh3_ch" => "MurmurHash3 rings (carbon's mmh3_ch, which needs the mmh3 module) are not implemented by bucky",
        _ => "unknown hash (carbon 1.1.10 knows carbon_ch, fnv1a_ch, mmh3_ch, and silently uses carbon_ch for others)",
    };
    Err(Error::BadSetting {
        cluster: cluster.to_owned(),
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    })
}

/// Python's `int(value)` for a replication factor: digits with an optional `+` (no fractions, no 0).
pub(crate) fn replication_factor(cluster: &str, key: &str, value: &str) -> Result<usize, Error> {
    let digits = value.trim();
    let digits = digits.strip_prefix('+').unwrap_or(digits);
    match digits.parse::<usize>() {
        Ok(n) if n > 0 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
        _ => Err(Error::BadSetting {
            cluster: cluster.to_owned(),
            key: key.to_owned(),
            value: value.to_owned(),
            reason: "want a whole number of copies, 1 or more".to_owned(),
        }),
    }
}

pub(crate) fn ring_error(cluster: &str, reason: hashring::Error) -> Error {
    Error::Ring { cluster: cluster.to_owned(), reason }
}
