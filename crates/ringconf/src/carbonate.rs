//! carbonate.conf, as carbonate 1.1.10's `Config` and `Cluster` read it (`carbon-lookup -c FILE -C CLUSTER`).
//!
//! Each section is a cluster (default `main`), read without interpolation (`RawConfigParser`), keys from
//! `[DEFAULT]` inherited. `destinations` (required) loses every space before it is split on commas;
//! `replication_factor` is required; `hashing_type` defaults to carbon_ch; `diverse_replicas` defaults to
//! true. carbonate places every `relay_method` but `aggregated-consistent-hashing` by consistent hashing.
//!
//! Two deliberate differences, both reported as notes or errors rather than copied:
//! * carbonate passes `diverse_replicas` on as the raw string, so `false`, `no`, `0` and `off` are truthy
//!   and give diverse replicas anyway (only an empty value turns them off). bucky reads the boolean the
//!   file means, like carbon, and says so in a note.
//! * a `relay_method` other than `consistent-hashing` is refused: carbonate would place its metrics by
//!   consistent hashing while the cluster's relays do not.

use hashring::{Ring, Router};

use crate::carbon::{replication_factor, ring_error, router_hash_type};
use crate::ini::{self, Ini};
use crate::{destination_label, Error, Kind, RingConfig};

/// carbonate's default cluster (`-C`, `CARBONATE_CLUSTER`).
pub const DEFAULT_CLUSTER: &str = "main";

/// Reads the ring of `cluster` (default `main`).
pub(crate) fn read(text: &str, cluster: Option<&str>) -> Result<RingConfig, Error> {
    let ini = Ini::parse(text)?;
    let name = cluster.unwrap_or(DEFAULT_CLUSTER);
    if !ini.has_section(name) {
        let sections = ini.section_names();
        return Err(Error::NoCluster {
            kind: Kind::CarbonateConf,
            what: "cluster",
            name: name.to_owned(),
            available: if sections.is_empty() {
                "it has no cluster sections".to_owned()
            } else {
                format!("clusters: {}", sections.join(", "))
            },
        });
    }
    let cluster = format!("[{name}]");
    let get = |key: &str| ini.get(name, key);
    let bad = |key: &str, value: &str, reason: &str| Error::BadSetting {
        cluster: cluster.clone(),
        key: key.to_owned(),
        value: value.to_owned(),
        reason: reason.to_owned(),
    };

    match get("relay_method").unwrap_or("consistent-hashing") {
        "consistent-hashing" => {}
        "aggregated-consistent-hashing" => {
            return Err(Error::NotARing {
                cluster,
                reason: "relay_method = aggregated-consistent-hashing places each metric by the names \
                         aggregation-rules.conf makes of it; bucky has no such ring"
                    .to_owned(),
            })
        }
        other => {
            return Err(bad(
                "relay_method",
                other,
                "carbonate 1.1.10 would place metrics by consistent hashing, which is not how such relays route; \
                 bucky refuses rather than guess",
            ))
        }
    }
    let hash = router_hash_type(&cluster, "hashing_type", get("hashing_type").unwrap_or("carbon_ch"))?;
    let Some(replication) = get("replication_factor") else {
        return Err(Error::MissingSetting { cluster, key: "replication_factor" });
    };
    let replicas = replication_factor(&cluster, "replication_factor", replication)?;
    let mut notes = Vec::new();
    let diverse = match get("diverse_replicas") {
        None => true,
        // The one value carbonate reads as false: an empty string.
        Some("") => false,
        Some(value) => match ini::boolean(value) {
            Some(true) => true,
            Some(false) => {
                notes.push(format!(
                    "{cluster}: diverse_replicas = {value} is read as false, as carbon reads it; carbonate 1.1.10 \
                     reads any non-empty value as true (its carbon-lookup and carbon-sync use diverse replicas)"
                ));
                false
            }
            None => return Err(bad("diverse_replicas", value, "not a boolean (want true/false, yes/no, on/off, 1/0)")),
        },
    };
    let Some(destinations) = get("destinations") else {
        return Err(Error::MissingSetting { cluster, key: "destinations" });
    };
    // Config.destinations: `destinations.replace(' ', '').split(',')`, each entry then stripped.
    let destinations = destinations.replace(' ', "");
    let nodes = hashring::parse_destinations(&destinations).map_err(|source| ring_error(&cluster, source))?;
    let ring = Ring::new(nodes, hash, Some(Router::Carbon), replicas, diverse)
        .map_err(|source| ring_error(&cluster, source))?;
    let labels = ring.nodes().iter().map(destination_label).collect();
    Ok(RingConfig { kind: Kind::CarbonateConf, cluster: name.to_owned(), ring, labels, notes })
}
