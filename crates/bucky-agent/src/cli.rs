//! Command line: buckyd's flags (also in Go's single-dash spelling), validated into a [`Config`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context};
use clap::{CommandFactory, Parser};
use hashring::{Hash, Node, Ring, RingSpec, Router};

use bucky_runtime::parse_size;

use crate::auth::Auth;
use crate::config::{Config, DEFAULT_PREFIX};
use crate::store::{Flush, StoreOptions};

/// bucky-agent: the per-node daemon of a Graphite cluster, a drop-in for buckyd.
///
/// Serves the whisper files below --prefix over buckyd's HTTP API (list, stat, read, heal, replace,
/// delete, offload). NODE... are the members of the consistent-hash ring in order, as
/// `HOST[:PORT][=INSTANCE]`, exactly as given to buckyd; or --ring-config reads the ring from the cluster's
/// carbon.conf, carbonate.conf or carbon-c-relay config. Every agent of a cluster must be given the same
/// ring. Go-style single-dash long flags (-prefix, -hash, -replicas, -sparse, -tmpdir, -timeout, …) are
/// accepted too, so existing buckyd unit files keep working. Logs go to stderr; set RUST_LOG to change
/// their level (default info).
#[derive(Debug, Parser)]
#[command(name = "bucky-agent", version, max_term_width = 100)]
pub struct Cli {
    /// Ring members in order: `HOST[:PORT][=INSTANCE]`.
    #[arg(value_name = "NODE", required_unless_present = "ring_config")]
    pub nodes: Vec<String>,

    /// Read the ring (members, hash, replication, diverse replicas) from this carbon.conf ([relay]
    /// section), carbonate.conf or carbon-c-relay config, detected from the content, instead of NODE
    /// arguments; --hash, --router, --replicas and --diverse-replicas are then refused (the file says).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["nodes", "hash", "router", "replicas", "diverse_replicas"])]
    pub ring_config: Option<PathBuf>,

    /// With --ring-config: the carbon.conf relay instance (`NAME` or `relay:NAME`), the carbonate.conf
    /// cluster (default main) or the carbon-c-relay cluster (default: the only hash cluster).
    #[arg(long, value_name = "NAME", requires = "ring_config", conflicts_with = "nodes")]
    pub cluster: Option<String>,

    /// Address to listen on, IP:PORT (":PORT" = all interfaces).
    #[arg(short = 'b', long, default_value = "0.0.0.0:4242", value_name = "IP:PORT")]
    pub bind: String,

    /// This node's name in the ring; must equal one member's HOST. Default: the hostname.
    #[arg(short = 'n', long, value_name = "NAME")]
    pub node: Option<String>,

    /// Root of the whisper store.
    #[arg(short = 'p', long, default_value = DEFAULT_PREFIX, value_name = "DIR")]
    pub prefix: PathBuf,

    /// Accepted for buckyd compatibility and ignored: uploads are held in memory, and new files are
    /// staged next to their destination (a rename cannot cross filesystems).
    #[arg(short = 't', long, value_name = "DIR")]
    pub tmpdir: Option<PathBuf>,

    /// Lifetime of the cached metric list, in seconds; an older list is rebuilt on the next listing. With
    /// --file-list-cache, also the age beyond which go-carbon's file is stale (then the agent walks).
    #[arg(long, default_value_t = 3600, value_name = "SECONDS")]
    pub timeout: u64,

    /// Write new files sparse (4 KiB zero blocks become holes).
    #[arg(long)]
    pub sparse: bool,

    /// Placement hash of the ring: carbon, fnv1a or jump_fnv1a (also carbon_ch, fnv1a_ch, jump_fnv1a_ch).
    #[arg(long, default_value = "carbon", value_name = "HASH")]
    pub hash: String,

    /// Whose placement the ring follows: carbon or relay (carbon-c-relay). Default: carbon for carbon,
    /// relay for fnv1a and jump_fnv1a.
    #[arg(long, value_name = "ROUTER")]
    pub router: Option<String>,

    /// Replication factor of the ring (echoed in /hashring).
    #[arg(long, default_value_t = 1, value_name = "N")]
    pub replicas: usize,

    /// carbon's DIVERSE_REPLICAS: replicas on distinct servers (matters with several instances per host and
    /// replication > 1). auto = carbon 1.1.10's default, true for the carbon router; the relay has none.
    #[arg(long, default_value = "auto", value_name = "auto|true|false", value_parser = ["auto", "true", "false"])]
    pub diverse_replicas: String,

    /// Set a healed file's mtime from the upload's X-Metric-Stat ModTime (never older than it was).
    #[arg(long)]
    pub mtime: bool,

    /// Require HS256 JWTs in X-Buckyd-Authorization, signed with the secret in this file.
    #[arg(long, value_name = "FILE")]
    pub auth_jwt_secret_file: Option<PathBuf>,

    /// After a DELETE, remove parent directories left empty (never the prefix, never a directory
    /// modified within --prune-grace, where carbon-cache may be about to create a file).
    #[arg(long)]
    pub prune_empty_dirs: bool,

    /// Grace period of --prune-empty-dirs, in seconds.
    #[arg(long, default_value_t = 300, value_name = "SECONDS")]
    pub prune_grace: u64,

    /// Heal with a few large writes instead of one per filled slot (about 3x faster). Only when every
    /// writer takes whisper's flock (carbon-cache WHISPER_LOCK_WRITES = True, go-carbon flock = true):
    /// the untouched slots between filled ones are rewritten with the values read under the lock.
    #[arg(long)]
    pub coalesce_writes: bool,

    /// How creates and heals are made durable. Concurrent requests share their flushes (group commit);
    /// `syncfs`: one syncfs(2) per batch for the data and one for the new names (also writes out whatever
    /// else is dirty on the filesystem); `fsync`: one fsync(2) per file and per directory. Default: syncfs on
    /// Linux 5.8 and later (where syncfs reports write errors), fsync before.
    #[arg(long, value_name = "HOW", value_parser = parse_flush)]
    pub flush: Option<Flush>,

    /// Largest accepted upload (decoded), e.g. 1GiB, 512MiB, 1000000.
    #[arg(long, default_value = "1GiB", value_parser = parse_size, value_name = "BYTES")]
    pub max_body: u64,

    /// Memory that all requests may hold together: uploads and batch bodies as their bytes arrive, files
    /// read for answers, decompressed copies. A request that finds no room waits (--memory-wait), then
    /// gets 503 + Retry-After; requests that hold no data never wait for it.
    #[arg(long, alias = "upload-memory", default_value = "2GiB", value_parser = parse_size, value_name = "BYTES")]
    pub request_memory: u64,

    /// Longest wait of a request for room in --request-memory, in seconds (then 503).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub memory_wait: u64,

    /// Longest wait for the next piece of a request body, in seconds (then 408); a body still arriving after
    /// this long must also average --min-body-rate.
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub body_timeout: u64,

    /// Slowest average rate of a request body once it has taken --body-timeout (then 408), e.g. 1KiB.
    #[arg(long, default_value = "1KiB", value_parser = parse_size, value_name = "BYTES/S")]
    pub min_body_rate: u64,

    /// Longest wait for a whisper file's flock, in seconds (then 503).
    #[arg(long, default_value_t = 30, value_name = "SECONDS")]
    pub lock_timeout: u64,

    /// Longest time to answer one request, in seconds (then 408).
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub request_timeout: u64,

    /// Disk operations run at once. A create or heal keeps its slot until its group commit is done, so
    /// this also bounds how many files one flush can carry (see --flush).
    #[arg(long, default_value_t = 64, value_name = "N")]
    pub io_concurrency: usize,

    /// List the metrics from go-carbon's file-list-cache (its `[carbonserver] file-list-cache`, version 1
    /// or 2) instead of walking --prefix, which must then be go-carbon's data-dir. The file is used if
    /// go-carbon wrote it within --timeout; when it is missing, older, truncated or corrupt the agent walks
    /// instead and logs why. go-carbon rewrites it after each of its scans (`scan-frequency`), so a file that
    /// another program created or removed since is listed as it was until go-carbon's next scan; this
    /// agent's own creates and deletes are looked up on disk. A forced listing re-reads the file.
    /// go-graphite buckyd's `-cache_path` is accepted.
    #[arg(long, visible_alias = "cache-path", alias = "cache_path", value_name = "FILE")]
    pub file_list_cache: Option<PathBuf>,

    /// Threads of the metric scan. Default: the number of CPUs.
    #[arg(long, value_name = "N")]
    pub scan_threads: Option<usize>,

    /// Port of the other agents, for offload fetches (repeatable). Default: this agent's port.
    #[arg(long = "peer-port", value_name = "PORT")]
    pub peer_ports: Vec<u16>,

    /// Longest time for one offload fetch, in seconds.
    #[arg(long, default_value_t = 600, value_name = "SECONDS")]
    pub fetch_timeout: u64,

    /// After SIGTERM or SIGINT, in seconds: new connections are refused at once, the requests in flight
    /// may finish within this time, then the rest are cancelled (no file is ever left half-written).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub shutdown_grace: u64,

    /// Longest time to receive a request's headers, in seconds, counted from the connection's start or
    /// from the request's first byte (then the connection is closed: slow clients cannot hold it).
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub header_timeout: u64,

    /// Longest time a keep-alive connection may wait for its next request, in seconds (then it is
    /// closed). Longer than clients' pool idle timeout (90 s for bucky), so that they close first.
    #[arg(long, default_value_t = 120, value_name = "SECONDS")]
    pub idle_timeout: u64,

    /// Report a runtime stall when the async runtime has not run its 100 ms heartbeat for longer than
    /// this (e.g. 500ms, 2s). Reports go straight to stderr and --diag-file, not through the log.
    #[arg(long, default_value = "500ms", value_parser = bucky_runtime::parse_duration, value_name = "DURATION", help_heading = "Diagnostics")]
    pub stall_threshold: Duration,

    /// Report an operation (request or background job) that stays in one phase longer than this, once,
    /// with its phase, its age and its flock; for a flock wait, the holder's pid and command.
    #[arg(long, default_value = "30s", value_parser = bucky_runtime::parse_duration, value_name = "DURATION", help_heading = "Diagnostics")]
    pub stuck_after: Duration,

    /// Also append the watchdog's reports and the state dumps (SIGQUIT, SIGUSR1) to this file.
    #[arg(long, value_name = "FILE", help_heading = "Diagnostics")]
    pub diag_file: Option<PathBuf>,

    /// Send self-metrics (requests by route and status, bytes, heals, lock waits, stalls, stuck
    /// operations, open fds, RSS) to this carbon line receiver, HOST:PORT, every --graphite-interval.
    #[arg(long, value_name = "HOST:PORT", help_heading = "Diagnostics")]
    pub graphite: Option<String>,

    /// Path prefix of the self-metrics [default: bucky.agent.<hostname, dots as underscores>].
    #[arg(long, value_name = "PREFIX", help_heading = "Diagnostics")]
    pub graphite_prefix: Option<String>,

    /// Time between two self-metrics samples (e.g. 60s, 10s).
    #[arg(long, default_value = "60s", value_parser = bucky_runtime::parse_duration, value_name = "DURATION", help_heading = "Diagnostics")]
    pub graphite_interval: Duration,

    /// Do not register requests in the in-flight registry (the watchdog and the dump then do not see
    /// them): only to measure what the registry costs, as scripts/bench-agent.sh does.
    #[arg(long, hide = true)]
    pub no_inflight_registry: bool,

    /// Fault injection for tests: pause before publishing a new file.
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_publish_delay_ms: u64,

    /// Fault injection for tests: pause this long under a fill's exclusive lock, between reading the file
    /// and writing the points filled (a slow disk), so that a writer ignoring the lock would be caught.
    #[arg(long, hide = true, default_value_t = 0)]
    pub test_fill_delay_ms: u64,
}

/// Rewrites Go-style single-dash long flags (`-prefix /x`, `-hash=carbon`) into clap's `--prefix`, so unit
/// files written for buckyd keep working (see [`bucky_wire::goflags`]).
pub fn go_style_args(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    bucky_wire::goflags::go_style_args(&Cli::command(), args)
}

/// Parses `syncfs` or `fsync`.
pub fn parse_flush(text: &str) -> Result<Flush, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "syncfs" => Ok(Flush::Syncfs),
        "fsync" => Ok(Flush::Fsync),
        other => Err(format!("unknown flush {other:?} (use syncfs or fsync)")),
    }
}

/// This node's default name: the kernel's host name, else `$HOSTNAME`, else `UNKNOWN`.
fn hostname() -> String {
    bucky_runtime::hostname().or_else(|| std::env::var("HOSTNAME").ok()).unwrap_or_else(|| "UNKNOWN".to_owned())
}

impl Cli {
    /// The ring: from --ring-config, or from the NODE arguments and the ring flags.
    fn ring(&self) -> anyhow::Result<Ring> {
        if let Some(path) = &self.ring_config {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the ring config {}", path.display()))?;
            let config = ringconf::parse(&text, self.cluster.as_deref())
                .with_context(|| format!("invalid ring config {}", path.display()))?;
            for note in &config.notes {
                tracing::warn!(config = %path.display(), "{note}");
            }
            return Ok(config.ring);
        }
        let nodes = self
            .nodes
            .iter()
            .map(|spec| Node::parse(spec).with_context(|| format!("invalid ring member {spec:?}")))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let hash: Hash = self.hash.parse().with_context(|| format!("invalid --hash {:?}", self.hash))?;
        let router = match &self.router {
            Some(router) => router.parse().with_context(|| format!("invalid --router {router:?}"))?,
            None => hash.default_router(),
        };
        let diverse = match self.diverse_replicas.as_str() {
            "auto" => router == Router::Carbon,
            other => other == "true",
        };
        RingSpec::new(nodes, hash)
            .router(router)
            .replicas(self.replicas)
            .diverse(diverse)
            .build()
            .context("invalid ring")
    }

    /// Validates the flags into a [`Config`]: parses the ring, checks that the prefix is a directory, reads
    /// the JWT secret. This node need not be a member of the ring (then it is being drained).
    pub fn into_config(self) -> anyhow::Result<Config> {
        let ring = self.ring()?;
        let node = self.node.clone().unwrap_or_else(hostname);
        // A node outside the ring is one being drained: it starts, but serves reads and deletes only (see
        // `Config::in_ring`); `run` says so at startup.
        let meta = std::fs::metadata(&self.prefix)
            .with_context(|| format!("prefix {} is not usable", self.prefix.display()))?;
        if !meta.is_dir() {
            bail!("prefix {} is not a directory", self.prefix.display());
        }
        let auth = match &self.auth_jwt_secret_file {
            None => None,
            Some(file) => {
                let secret = std::fs::read(file)
                    .with_context(|| format!("cannot read the JWT secret file {}", file.display()))?;
                let secret = secret.trim_ascii().to_vec();
                Some(Auth::new(secret).map_err(anyhow::Error::msg).with_context(|| file.display().to_string())?)
            }
        };
        if let Some(file) = self.file_list_cache.as_ref().filter(|f| f.is_dir()) {
            bail!("--file-list-cache {} is a directory, not go-carbon's file-list-cache", file.display());
        }
        let bind = if self.bind.starts_with(':') { format!("0.0.0.0{}", self.bind) } else { self.bind.clone() };
        let port = bind
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .with_context(|| format!("--bind {bind:?} must be IP:PORT"))?;
        let mut config = Config::new(node, ring, self.prefix.clone());
        config.bind = bind;
        config.cache_lifetime = Duration::from_secs(self.timeout);
        config.file_list_cache = self.file_list_cache.clone();
        config.store = StoreOptions {
            sparse: self.sparse,
            set_mtime: self.mtime,
            lock_timeout: Duration::from_secs(self.lock_timeout),
            prune_grace: self.prune_empty_dirs.then(|| Duration::from_secs(self.prune_grace)),
            coalesce_writes: self.coalesce_writes,
            flush: self.flush.unwrap_or_else(Flush::detect),
            publish_delay: Duration::from_millis(self.test_publish_delay_ms),
            fill_delay: Duration::from_millis(self.test_fill_delay_ms),
        };
        config.body_limit = self.max_body;
        config.request_memory = self.request_memory;
        config.memory_wait = Duration::from_secs(self.memory_wait);
        config.body_timeout = Duration::from_secs(self.body_timeout.max(1));
        config.min_body_rate = self.min_body_rate;
        config.request_timeout = Duration::from_secs(self.request_timeout.max(1));
        config.io_concurrency = self.io_concurrency.max(1);
        if let Some(threads) = self.scan_threads {
            config.scan_threads = threads.max(1);
        }
        config.auth = auth;
        config.peer_ports = if self.peer_ports.is_empty() { vec![port] } else { self.peer_ports.clone() };
        config.fetch_timeout = Duration::from_secs(self.fetch_timeout.max(1));
        config.shutdown_grace = Duration::from_secs(self.shutdown_grace);
        config.header_timeout = Duration::from_secs(self.header_timeout.max(1));
        config.idle_timeout = Duration::from_secs(self.idle_timeout.max(1));
        config.diag.stall_threshold = self.stall_threshold.max(Duration::from_millis(150));
        config.diag.stuck_after = self.stuck_after.max(Duration::from_millis(100));
        config.diag.diag_file = self.diag_file.clone();
        config.inflight_registry = !self.no_inflight_registry;
        if let Some(address) = &self.graphite {
            anyhow::ensure!(
                address.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok()),
                "--graphite {address:?}: expected HOST:PORT of a carbon line receiver (e.g. 127.0.0.1:2003)"
            );
            config.graphite = Some(bucky_diag::GraphiteTarget {
                address: address.clone(),
                prefix: self.graphite_prefix.clone().unwrap_or_else(|| bucky_diag::metrics::default_prefix("agent")),
                interval: self.graphite_interval.max(Duration::from_secs(1)),
            });
        }
        Ok(config)
    }
}

/// The binary: validates the flags, binds, serves until SIGINT/SIGTERM, then shuts down within
/// `--shutdown-grace` (see [`crate::serve`]).
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(tmpdir) = &cli.tmpdir {
        tracing::debug!(tmpdir = %tmpdir.display(), "-tmpdir is accepted for buckyd compatibility and not used");
    }
    let config = cli.into_config()?;
    raise_open_files_limit();
    crate::server::warn_if_backlog_capped();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("bucky-agent")
        .build()
        .context("cannot start the async runtime")?;
    let served = runtime.block_on(async move {
        let listener = crate::server::bind_listener(&config.bind)
            .await
            .with_context(|| format!("cannot listen on {}", config.bind))?;
        tracing::info!(
            addr = %listener.local_addr()?,
            node = %config.node,
            prefix = %config.prefix.display(),
            ring = %config.ring.describe(),
            auth = config.auth.is_some(),
            "bucky-agent listening"
        );
        if !config.in_ring() {
            let members: Vec<String> = config.ring.nodes().iter().map(|n| n.to_string()).collect();
            tracing::warn!(
                node = %config.node,
                members = %members.join(" "),
                "this node is not in the ring: serving reads and deletes only, for draining (writes and heals \
                 are refused with 409; if it should be a member, set -n/--node to this host's name as it appears \
                 in the ring)"
            );
        }
        let state = crate::AppState::new(config)?;
        state.diagnostics().start(&tokio::runtime::Handle::current()).context("cannot start the diagnostics")?;
        // Sends until dropped at the end of the block (one last sample at shutdown).
        let _sender = match state.config().graphite.clone() {
            Some(target) => {
                let diag = state.diagnostics().clone();
                Some(
                    bucky_diag::metrics::spawn_sender(target, diag.metrics().clone(), move |_| diag.refresh_gauges())
                        .context("cannot start the self-metrics sender")?,
                )
            }
            None => None,
        };
        crate::serve(listener, state, crate::shutdown_signal()).await.context("server failed")
    });
    // `serve` has already waited for the disk operations; a task stuck in a system call (a hung mount)
    // must not hold the process: the runtime gets a moment, then the process exits anyway.
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    served?;
    tracing::info!("bucky-agent stopped");
    Ok(())
}

/// How long the runtime's threads get to stop once the server is done.
const RUNTIME_SHUTDOWN: Duration = Duration::from_secs(1);

/// Raises the soft limit on open files to the hard one, as Go's runtime does for buckyd: a batch heal keeps
/// a file open per entry until its group commit, so `--io-concurrency` batches can hold thousands at once,
/// beyond the usual soft limit of 1024.
fn raise_open_files_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    // An infinite hard limit is not a valid soft limit for open files (it is capped by fs.nr_open).
    if limit.current.is_some() && limit.maximum.is_some() && limit.current < limit.maximum {
        let raised = Rlimit { current: limit.maximum, maximum: limit.maximum };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => {
                tracing::debug!(from = ?limit.current, to = ?limit.maximum, "raised the open files limit")
            }
            Err(e) => {
                tracing::warn!(error = %e, current = ?limit.current, "cannot raise the open files limit")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    #[test]
    fn go_style_flags_are_rewritten() {
        let got = go_style_args(os(&[
            "bucky-agent",
            "-prefix",
            "/data",
            "-hash=jump_fnv1a",
            "-replicas",
            "2",
            "-sparse",
            "-tmpdir",
            "/tmp",
            "-timeout",
            "60",
            "-p",
            "/x",
            "-b",
            ":4242",
            "-node",
            "a",
            "-mtime",
            "--bind",
            "1.2.3.4:1",
            "-q",
            "--",
            "-prefix",
        ]));
        let want = os(&[
            "bucky-agent",
            "--prefix",
            "/data",
            "--hash=jump_fnv1a",
            "--replicas",
            "2",
            "--sparse",
            "--tmpdir",
            "/tmp",
            "--timeout",
            "60",
            "-p",
            "/x",
            "-b",
            ":4242",
            "--node",
            "a",
            "--mtime",
            "--bind",
            "1.2.3.4:1",
            "-q",
            "--",
            "-prefix",
        ]);
        assert_eq!(got, want);
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("512 MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1000"), Ok(1000));
        assert!(parse_size("1TiB").is_err());
        assert!(parse_size("x").is_err());
    }

    #[test]
    fn flush_modes() {
        assert_eq!(parse_flush("syncfs"), Ok(Flush::Syncfs));
        assert_eq!(parse_flush("FSYNC"), Ok(Flush::Fsync));
        assert!(parse_flush("sync").unwrap_err().contains("syncfs or fsync"));
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_str().unwrap();
        let parse = |args: &[&str]| Cli::try_parse_from(go_style_args(os(args))).map(|c| c.into_config());
        let config = parse(&["a", "-p", prefix, "-n", "h1", "-flush", "fsync", "h1"]).unwrap().unwrap();
        assert_eq!(config.store.flush, Flush::Fsync);
        assert!(parse(&["a", "-p", prefix, "-n", "h1", "--flush", "never", "h1"]).is_err());
    }

    #[test]
    fn diverse_replicas_follow_carbon_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_str().unwrap();
        let diverse = |extra: &[&str]| {
            let mut args = vec!["a", "-p", prefix, "-n", "h1", "--replicas", "2"];
            args.extend_from_slice(extra);
            args.extend_from_slice(&["h1:2003=a", "h1:2004=b", "h2:2003=c"]);
            Cli::try_parse_from(go_style_args(os(&args))).unwrap().into_config().map(|c| c.ring.diverse())
        };
        assert!(diverse(&[]).unwrap(), "carbon 1.1.10 defaults DIVERSE_REPLICAS to True");
        assert!(!diverse(&["--diverse-replicas", "false"]).unwrap());
        assert!(!diverse(&["--hash", "jump_fnv1a"]).unwrap(), "the relay has no diverse replicas");
        assert!(diverse(&["--hash", "jump_fnv1a", "--diverse-replicas", "true"]).is_err());
        assert!(Cli::try_parse_from(["a", "--diverse-replicas", "maybe", "h1"]).is_err());
    }

    #[test]
    fn ring_from_a_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_str().unwrap();
        let conf = dir.path().join("carbon.conf");
        std::fs::write(
            &conf,
            "[relay]\nRELAY_METHOD = consistent-hashing\nREPLICATION_FACTOR = 2\n\
             DESTINATIONS = h1:2004:a, h1:2104:b, h2:2004:a\n[relay:b]\nDESTINATIONS = h1:2004, h3:2004\n",
        )
        .unwrap();
        let conf = conf.to_str().unwrap();
        let parse = |extra: &[&str]| {
            let mut args = vec!["a", "-p", prefix, "-n", "h1", "-ring-config", conf];
            args.extend_from_slice(extra);
            Cli::try_parse_from(go_style_args(os(&args))).map(|cli| cli.into_config())
        };
        let ring = parse(&[]).unwrap().unwrap().ring;
        let members: Vec<String> = ring.nodes().iter().map(|n| n.to_string()).collect();
        assert_eq!(members, ["h1:2004=a", "h1:2104=b", "h2:2004=a"]);
        assert_eq!((ring.hash(), ring.replicas(), ring.diverse()), (Hash::CarbonCh, 2, true));
        let ring = parse(&["--cluster", "b"]).unwrap().unwrap().ring;
        // [relay:b] is read over [relay]: its own DESTINATIONS, [relay]'s REPLICATION_FACTOR.
        assert_eq!((ring.nodes().len(), ring.replicas()), (2, 2));
        for conflicting in [&["--hash", "fnv1a"][..], &["--replicas", "2"], &["--diverse-replicas", "false"], &["h1"]] {
            assert!(parse(conflicting).is_err(), "{conflicting:?} contradicts the file");
        }
        let err = parse(&["--cluster", "x"]).unwrap().unwrap_err();
        assert!(format!("{err:#}").contains("no relay section \"x\""), "{err:#}");
        assert!(Cli::try_parse_from(["a", "--cluster", "x", "h1"]).is_err(), "--cluster needs --ring-config");
        let missing = Cli::try_parse_from(["a", "-p", prefix, "-n", "h1", "--ring-config", "/nonexistent/c.conf"]);
        assert!(format!("{:#}", missing.unwrap().into_config().unwrap_err()).contains("cannot read the ring config"));
    }

    #[test]
    fn file_list_cache_flag_and_its_go_spellings() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_str().unwrap();
        let parse = |flag: &str, value: &str| {
            Cli::try_parse_from(go_style_args(os(&["a", "-p", prefix, "-n", "h1", flag, value, "h1"])))
                .unwrap()
                .into_config()
        };
        for flag in ["--file-list-cache", "-file-list-cache", "--cache-path", "-cache_path"] {
            let config = parse(flag, "/var/lib/carbon/flc.bin").unwrap();
            assert_eq!(
                config.file_list_cache.as_deref(),
                Some(std::path::Path::new("/var/lib/carbon/flc.bin")),
                "{flag}"
            );
        }
        // Not written yet is fine (the walk serves until go-carbon writes it); a directory is a mistake.
        let err = parse("--file-list-cache", prefix).unwrap_err();
        assert!(format!("{err:#}").contains("is a directory"), "{err:#}");
        let none = Cli::try_parse_from(["a", "-p", prefix, "-n", "h1", "h1"]).unwrap().into_config().unwrap();
        assert_eq!(none.file_list_cache, None);
    }

    #[test]
    fn config_validation() {
        let dir = tempfile::tempdir().unwrap();
        let prefix = dir.path().to_str().unwrap();
        let parse = |args: &[&str]| Cli::try_parse_from(go_style_args(os(args))).unwrap().into_config();
        let config =
            parse(&["a", "-prefix", prefix, "-n", "h1", "-hash", "fnv1a_ch", "h1:2003=a", "h2:2003=b"]).unwrap();
        assert_eq!(config.ring.nodes().len(), 2);
        assert_eq!(config.peer_ports, vec![4242]);
        assert!(config.in_ring());
        // A node outside the ring starts (to be drained), and knows it.
        let outside = parse(&["a", "-p", prefix, "-n", "h3", "h1", "h2"]).unwrap();
        assert!(!outside.in_ring());
        assert_eq!(outside.ring.nodes().len(), 2);
        assert!(parse(&["a", "-p", "/nonexistent/x", "-n", "h1", "h1"]).is_err());
        assert!(parse(&["a", "-p", prefix, "-n", "h1", "-hash", "md5", "h1"]).is_err());
        let config = parse(&["a", "-p", prefix, "-n", "h1", "-b", ":5000", "h1"]).unwrap();
        assert_eq!((config.bind.as_str(), config.peer_ports.as_slice()), ("0.0.0.0:5000", &[5000][..]));
    }
}
