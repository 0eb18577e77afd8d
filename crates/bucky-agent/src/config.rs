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
    /// go-carbon's file-list-cache, listed from instead of walking when usable (`--file-list-cache`).
    pub file_list_cache: Option<PathBuf>,
    /// Disk behaviour of the store.
    pub store: StoreOptions,
    /// Largest accepted upload or offload download, decoded (`--max-body`).
    pub body_limit: u64,
    /// Memory that all requests may hold together (`--request-memory`): uploads and batch bodies as they
    /// arrive, files read for answers, decompressed copies (see `budget`).
    pub request_memory: u64,
    /// Longest wait of a request for room in the memory budget before it is answered 503 (`--memory-wait`).
    pub memory_wait: Duration,
    /// Longest wait for the next piece of a request body (`--body-timeout`); also the time after which a
    /// body must have kept up `min_body_rate`.
    pub body_timeout: Duration,
    /// Slowest average rate at which a request body may arrive, in bytes per second (`--min-body-rate`).
    pub min_body_rate: u64,
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
    /// After SIGTERM, how long the requests in flight may take before they are cancelled
    /// (`--shutdown-grace`).
    pub shutdown_grace: Duration,
    /// Bound on receiving a request's headers, from the connection's start or the request's first byte
    /// (`--header-timeout`).
    pub header_timeout: Duration,
    /// How long a keep-alive connection may wait for its next request (`--idle-timeout`).
    pub idle_timeout: Duration,
    /// The watchdog and state dump (`--stall-threshold`, `--stuck-after`, `--diag-file`).
    pub diag: bucky_diag::DiagConfig,
    /// Whether requests are registered in the in-flight registry (off only to measure its cost).
    pub inflight_registry: bool,
    /// Where self-metrics go (`--graphite`), if anywhere.
    pub graphite: Option<bucky_diag::GraphiteTarget>,
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
            file_list_cache: None,
            store: StoreOptions::default(),
            body_limit: DEFAULT_BODY_LIMIT,
            request_memory: 2 * DEFAULT_BODY_LIMIT,
            memory_wait: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            min_body_rate: 1024,
            request_timeout: Duration::from_secs(600),
            io_concurrency: 64,
            scan_threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            auth: None,
            peer_ports: vec![bucky_wire::DEFAULT_PORT],
            fetch_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
            header_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
            diag: bucky_diag::DiagConfig::new("bucky-agent"),
            inflight_registry: true,
            graphite: None,
        }
    }
}

impl Config {
    /// Whether this node is a member of its ring. An agent outside the ring is a node being drained: it
    /// serves reads, listings and deletes, and refuses every write (409), so that it receives no new copies.
    pub fn in_ring(&self) -> bool {
        self.ring.nodes().iter().any(|n| n.server == self.node)
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
