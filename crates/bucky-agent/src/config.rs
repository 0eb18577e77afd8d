//! [`Config`]: the validated settings of one agent.

use std::path::PathBuf;
use std::time::Duration;

use hashring::{Hash, Ring};

use crate::auth::Auth;
use crate::store::StoreOptions;

/// Default store root, as buckyd's.
pub const DEFAULT_PREFIX: &str = "/opt/graphite/storage/whisper";

/// Default body limit of uploads: 1 GiB.
pub const DEFAULT_BODY_LIMIT: u64 = 1 << 30;

/// Everything an agent needs, validated (see `cli::Cli::into_config`).
#[derive(Debug, Clone)]
pub struct Config {
    /// This node's name in the ring (`-n`).
    pub node: String,
    /// The ring, as given on the command line.
    pub ring: Ring,
    /// Listening address (`-b`), used by the binary.
    pub bind: String,
    /// Store root (`-p`).
    pub prefix: PathBuf,
    /// Lifetime of the metric list (`--timeout`).
    pub cache_lifetime: Duration,
    /// Disk behaviour of the store.
    pub store: StoreOptions,
    /// Largest accepted upload or offload download, decoded (`--max-body`).
    pub body_limit: u64,
    /// Memory that uploads and offload downloads in flight may take together (`--upload-memory`); a
    /// request waits for its share (its decoded size) before its body is read.
    pub upload_memory: u64,
    /// Bound on a whole request (`--request-timeout`).
    pub request_timeout: Duration,
    /// Disk operations run at once (`--io-concurrency`); a create or heal keeps its slot until its group
    /// commit is done, so this also bounds how many files one flush can carry.
    pub io_concurrency: usize,
    /// Threads of the metric scan (`--scan-threads`).
    pub scan_threads: usize,
    /// Token verifier when authentication is on (`--auth-jwt-secret-file`).
    pub auth: Option<Auth>,
    /// Ports at which ring members' agents may be fetched from for an offload (`--peer-port`).
    pub peer_ports: Vec<u16>,
    /// Bound on one offload fetch (`--fetch-timeout`).
    pub fetch_timeout: Duration,
}

impl Config {
    /// A config with the defaults for `node` in `ring`, serving `prefix`.
    pub fn new(node: impl Into<String>, ring: Ring, prefix: impl Into<PathBuf>) -> Config {
        Config {
            node: node.into(),
            ring,
            bind: format!("0.0.0.0:{}", bucky_wire::DEFAULT_PORT),
            prefix: prefix.into(),
            cache_lifetime: Duration::from_secs(3600),
            store: StoreOptions::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            upload_memory: 2 * DEFAULT_BODY_LIMIT,
            request_timeout: Duration::from_secs(600),
            io_concurrency: 64,
            scan_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            auth: None,
            peer_ports: vec![bucky_wire::DEFAULT_PORT],
            fetch_timeout: Duration::from_secs(600),
        }
    }
}

/// buckyd's name for a hash (`carbon`, `fnv1a`, `jump_fnv1a`), echoed in `/hashring` so that Go clients
/// comparing `Algo` across the cluster agree.
pub fn buckyd_algo(hash: Hash) -> &'static str {
    match hash {
        Hash::CarbonCh => "carbon",
        Hash::Fnv1aCh => "fnv1a",
        Hash::JumpFnv1aCh => "jump_fnv1a",
    }
}
