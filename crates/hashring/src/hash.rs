//! The placement functions and the routers whose semantics they follow.

use std::fmt;
use std::str::FromStr;

use crate::Error;

/// A placement function, named as carbon's `ROUTER_HASH_TYPE` and carbon-c-relay's cluster types name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hash {
    /// `carbon_ch`: MD5 consistent hashing, 100 points per node (carbon's default).
    CarbonCh,
    /// `fnv1a_ch`: FNV-1a consistent hashing, 100 points per node.
    Fnv1aCh,
    /// `jump_fnv1a_ch`: jump consistent hash over FNV-1a 64 (carbon-c-relay only).
    JumpFnv1aCh,
}

impl Hash {
    /// All hashes, in the order they are usually listed.
    pub const ALL: [Hash; 3] = [Hash::CarbonCh, Hash::Fnv1aCh, Hash::JumpFnv1aCh];

    /// The canonical name: `carbon_ch`, `fnv1a_ch` or `jump_fnv1a_ch`.
    pub fn name(self) -> &'static str {
        match self {
            Hash::CarbonCh => "carbon_ch",
            Hash::Fnv1aCh => "fnv1a_ch",
            Hash::JumpFnv1aCh => "jump_fnv1a_ch",
        }
    }

    /// The router whose semantics apply when none is named: carbon for carbon_ch (what a carbon-relay
    /// cluster runs), carbon-c-relay for fnv1a_ch and jump_fnv1a_ch.
    pub fn default_router(self) -> Router {
        match self {
            Hash::CarbonCh => Router::Carbon,
            Hash::Fnv1aCh | Hash::JumpFnv1aCh => Router::Relay,
        }
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Hash {
    type Err = Error;

    /// Accepts the peers' names (`carbon_ch`, `fnv1a_ch`, `jump_fnv1a_ch`) and buckyd's (`carbon`, `fnv1a`,
    /// `jump_fnv1a`).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "carbon_ch" | "carbon" => Ok(Hash::CarbonCh),
            "fnv1a_ch" | "fnv1a" => Ok(Hash::Fnv1aCh),
            "jump_fnv1a_ch" | "jump_fnv1a" => Ok(Hash::JumpFnv1aCh),
            other => Err(Error::UnknownHash(other.to_owned())),
        }
    }
}

/// Whose placement semantics a ring reproduces. The hashes are the same in name only: collisions, key
/// formats and byte signedness differ between the two peers (see the crate docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Router {
    /// carbon 1.1.10's `ConsistentHashingRouter` (carbon-relay, carbon-cache's `DESTINATIONS`, carbonate).
    Carbon,
    /// carbon-c-relay 3.7.3's `cluster` of type carbon_ch, fnv1a_ch or jump_fnv1a_ch.
    Relay,
}

impl Router {
    /// The short name: `carbon` or `relay`.
    pub fn name(self) -> &'static str {
        match self {
            Router::Carbon => "carbon",
            Router::Relay => "relay",
        }
    }

    /// The peer and version this router is bit-exact with.
    pub fn peer(self) -> &'static str {
        match self {
            Router::Carbon => "carbon 1.1.10",
            Router::Relay => "carbon-c-relay 3.7.3",
        }
    }
}

impl fmt::Display for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Router {
    type Err = Error;

    /// Accepts `carbon` and `relay` (also `carbon-c-relay`).
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "carbon" => Ok(Router::Carbon),
            "relay" | "carbon-c-relay" => Ok(Router::Relay),
            other => Err(Error::UnknownRouter(other.to_owned())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for hash in Hash::ALL {
            assert_eq!(hash.name().parse::<Hash>(), Ok(hash));
        }
        assert_eq!("carbon".parse::<Hash>(), Ok(Hash::CarbonCh));
        assert_eq!("fnv1a".parse::<Hash>(), Ok(Hash::Fnv1aCh));
        assert_eq!("jump_fnv1a".parse::<Hash>(), Ok(Hash::JumpFnv1aCh));
        assert!(matches!("md5".parse::<Hash>(), Err(Error::UnknownHash(_))));
        assert_eq!("relay".parse::<Router>(), Ok(Router::Relay));
        assert_eq!("carbon".parse::<Router>(), Ok(Router::Carbon));
        assert!("python".parse::<Router>().is_err());
    }
}
