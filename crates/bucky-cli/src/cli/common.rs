//! The flag groups several commands share: the common flags of the cluster commands, which metrics, the
//! copy engine's knobs.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{ArgAction, Args};

/// Seed agent of the cluster commands, when `-h/--host` is not given.
pub const BUCKYHOST: &str = "BUCKYHOST";
/// File holding the JWT sent as `X-Buckyd-Authorization`, when `--token-file` is not given.
pub const BUCKY_TOKEN_FILE: &str = "BUCKY_TOKEN_FILE";
/// Set to anything but `0`/`false` to hide progress bars (tests, CI logs).
pub const BUCKY_NO_PROGRESS: &str = "BUCKY_NO_PROGRESS";

/// Flags shared by every cluster command. Each of -h, -w and --token-file is taken from its flag, else its
/// environment variable, else the cluster's table of the config file, else the default
/// (`bucky config show` tells which).
#[derive(Debug, Clone, Args)]
pub struct ClusterArgs {
    /// Seed agent, HOST[:PORT] (port default 4242; IPv6 as [ADDR]:PORT). Every other agent is reached at
    /// its ring host on the seed's port. Default: $BUCKYHOST, else the config file's `host`, else
    /// localhost:4242.
    #[arg(short = 'h', long, value_name = "HOST[:PORT]")]
    pub host: Option<String>,

    /// Use this named cluster of the config file (its seed, token file, workers, ring file). Default:
    /// $BUCKY_CLUSTER, else the file's `default`.
    #[arg(long, value_name = "NAME")]
    pub cluster: Option<String>,

    /// The config file (TOML, one table per cluster). Default: $BUCKY_CONFIG, else
    /// ~/.config/bucky/config.toml, else /etc/bucky/config.toml, if they exist.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,

    /// Concurrent requests per node [default: the config file's `workers`, else 5].
    #[arg(short = 'w', long, value_name = "N")]
    pub workers: Option<usize>,

    /// Print results and the final summary as JSON, one object (`tar` prints its summary on stderr: its
    /// stdout is the archive).
    #[arg(short = 'j', long)]
    pub json: bool,

    /// Log every action on stderr (hides the progress bars).
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Make the agents rebuild their metric list before answering.
    #[arg(short = 'f', long)]
    pub force: bool,

    /// Seconds without progress before a request is abandoned (then retried) [default: 30].
    #[arg(short = 't', long, value_name = "SECONDS")]
    pub timeout: Option<u64>,

    /// Longest wait, in seconds, for an agent that answers "Cache update in progress." (202) [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub cache_wait: Option<u64>,

    /// Transfer whisper files uncompressed (default: snappy).
    #[arg(long)]
    pub no_encoding: bool,

    /// File holding the JWT for the agents' authentication (X-Buckyd-Authorization). Default:
    /// $BUCKY_TOKEN_FILE, else the config file's `token_file`.
    #[arg(long, alias = "api-token-file", value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Place replicas on distinct servers (carbon's DIVERSE_REPLICAS) or not, whatever the agents say. Matters
    /// only with the carbon router, replication ≥ 2 and several ring nodes on one server; buckyd does not say,
    /// bucky-agents do. Without it the agents' rule is followed (buckyd alone: off), and said when it matters.
    #[arg(long, value_name = "true|false", action = ArgAction::Set)]
    pub diverse_replicas: Option<bool>,

    /// Never draw progress bars (they are drawn only when stderr is a terminal).
    #[arg(long, env = BUCKY_NO_PROGRESS, value_parser = FalseyValueParser::new())]
    pub no_progress: bool,
}

/// Which metrics a command works on: names, `-` (stdin), or a regex with `-r`.
#[derive(Debug, Clone, Args)]
pub struct NamesArgs {
    /// Treat the first argument as a regular expression (RE2 syntax) matched by the agents.
    #[arg(short = 'r', long)]
    pub regex: bool,

    /// Metric names; `-` reads them from stdin (a JSON array, or one per line).
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// The common flags plus which metrics, on the whole cluster or on the seed alone.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Which metrics.
    #[command(flatten)]
    pub names: NamesArgs,
    /// Only the seed agent, not the whole cluster.
    #[arg(short = 's', long)]
    pub single: bool,
}

/// Progress and failure bookkeeping of the copy engine (`rebalance`, `backfill`, `copy`).
#[derive(Debug, Clone, Args)]
pub struct EngineArgs {
    /// Print the plan (JSON with --json) and change nothing.
    #[arg(long = "no-op", alias = "noop")]
    pub no_op: bool,

    /// Record finished work in this file (one JSON line each); a rerun skips it (resume after a crash).
    #[arg(long, alias = "job-state-file", value_name = "FILE")]
    pub state_file: Option<PathBuf>,

    /// Write the metrics that failed to this file: `metric<TAB>source<TAB>reason` per line.
    #[arg(long, alias = "metric-err-file", value_name = "FILE")]
    pub error_file: Option<PathBuf>,

    /// Number of failed metrics tolerated before the exit status becomes 1.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub error_tolerance: u64,

    /// Most metrics per second started per source node (default: unlimited). (go-graphite's
    /// `-metrics-per-second` is the go-carbon throttle's `--throttle-rate`.)
    #[arg(long, value_name = "M")]
    pub max_rate: Option<f64>,

    /// Metrics moved per request with agents that take batches (bucky-agent: one request reads a batch of
    /// sources, one heals each destination's share, one deletes); 1 = one request per metric, as with buckyd.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch: usize,

    /// Most MiB of files read per batch request: a batch of large files is cut short, the rest goes in
    /// the next batch (also cut to the room left in --inflight-mib).
    #[arg(long, default_value_t = crate::engine::DEFAULT_BATCH_MIB, value_name = "MIB")]
    pub batch_mib: u64,

    /// The destinations copy the files themselves: each destination bucky-agent fetches its share of a
    /// batch straight from the source agent, heals it, reads it back and checks it, so no file passes
    /// through this client (only names and verdicts; sources are still deleted only once verified, and only
    /// in the version copied). Copies to or from nodes that cannot (buckyd, a source that is not a ring
    /// member of the destination) go through this client as without the flag.
    #[arg(long)]
    pub offload: bool,

    /// Most MiB of source files held at once by the whole run, all workers of all source nodes together
    /// (with agents that take batches): each batch read reserves room first and holds it until its metrics
    /// are healed and verified. This bounds the client's memory (about 3 times this, plus what listing the
    /// metrics takes); a file larger than the room a read could get is still read, alone.
    #[arg(long, default_value_t = crate::engine::DEFAULT_INFLIGHT_MIB, value_name = "MIB")]
    pub inflight_mib: u64,

    /// Attempts per metric (heal, verify, delete) before it is reported as failed.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub attempts: u32,

    /// The go-carbon throttle.
    #[command(flatten)]
    pub throttle: ThrottleArgs,

    /// Flap damping of the nodes' health.
    #[command(flatten)]
    pub damping: DampingArgs,

    /// The run's progress to Graphite.
    #[command(flatten)]
    pub graphite: GraphiteArgs,
}

/// The help heading of the flap damping's flags.
const DAMPING: &str = "Node health (flap damping)";

/// Flap damping, as routers damp a flapping route: each time a node is found unreachable after it had
/// answered (a flap) adds --flap-penalty to its penalty, which halves every --flap-half-life. Above
/// --flap-suppress the node is suppressed: its metrics wait (sources kept, nothing deleted) while the others'
/// go on, even while it answers, until the penalty has decayed below --flap-reuse. A node that stops
/// answering is waited for while its penalty is at or above --flap-reuse (12.5 s after one failure, by
/// default); if it still does not answer then, the metrics that need it fail at once (sources kept).
#[derive(Debug, Clone, Args)]
pub struct DampingArgs {
    /// Seconds in which a node's penalty halves. Each flap (the node found unreachable after it had
    /// answered) adds --flap-penalty; above --flap-suppress the node is suppressed (its metrics wait, sources
    /// kept, even while it answers) until the penalty decays below --flap-reuse. A node that does not answer
    /// is waited for while its penalty is at or above --flap-reuse (12.5 s after one failure, by default),
    /// then the metrics that need it fail at once (sources kept).
    #[arg(help_heading = DAMPING, long, default_value_t = 30.0, value_name = "SECONDS")]
    pub flap_half_life: f64,

    /// Penalty added by each flap.
    #[arg(help_heading = DAMPING, long, default_value_t = 1000.0, value_name = "P")]
    pub flap_penalty: f64,

    /// A node whose penalty rises above this is suppressed (by default the third flap within about 20 s).
    #[arg(help_heading = DAMPING, long, default_value_t = 2000.0, value_name = "P")]
    pub flap_suppress: f64,

    /// A suppressed node is used again once its penalty has decayed below this (lower than --flap-suppress).
    #[arg(help_heading = DAMPING, long, default_value_t = 750.0, value_name = "P")]
    pub flap_reuse: f64,

    /// Longest a node that stopped flapping stays suppressed after its last flap, in seconds (caps the
    /// penalty at --flap-reuse × 2^(this / --flap-half-life)).
    #[arg(help_heading = DAMPING, long, default_value_t = 300.0, value_name = "SECONDS")]
    pub flap_max_suppress: f64,
}

/// The help heading of the Graphite flags.
const GRAPHITE: &str = "Progress to Graphite";

/// The run's progress sent to Graphite over the plaintext line protocol (go-graphite buckytools'
/// `-graphite-endpoint`, `-graphite-metrics-prefix` and `-graphite-stat-interval` are aliases).
#[derive(Debug, Clone, Args)]
pub struct GraphiteArgs {
    /// Send the run's progress to this carbon line receiver (or relay), HOST[:PORT] (port default 2003),
    /// every --graphite-interval and once at the end: metrics done, failed and remaining, bytes, rates,
    /// paused and suppressed nodes (see the README for every name).
    #[arg(help_heading = GRAPHITE, long, alias = "graphite-endpoint", value_name = "HOST:PORT")]
    pub graphite: Option<String>,

    /// The path every metric sent goes under [default: bucky.cli.<hostname>.<command>, the hostname's dots
    /// as underscores].
    #[arg(help_heading = GRAPHITE, long, alias = "graphite-metrics-prefix", value_name = "PREFIX")]
    pub graphite_prefix: Option<String>,

    /// Seconds between two samples [default: 60].
    #[arg(help_heading = GRAPHITE, long, alias = "graphite-stat-interval", value_name = "SECONDS")]
    pub graphite_interval: Option<f64>,
}

/// The help heading of the throttle's flags.
const THROTTLE: &str = "go-carbon throttle";

/// The copy engine's go-carbon cache-pressure throttle (go-graphite buckytools' `-go-carbon-health-check`
/// flags are aliases). Every flag but the first needs the first.
#[derive(Debug, Clone, Args)]
pub struct ThrottleArgs {
    /// Poll every destination's go-carbon (carbonserver `GET /admin/info`) and pause the node's transfers
    /// while its cache holds --go-carbon-cache-threshold of its limit or more, until it holds less than
    /// --go-carbon-resume-threshold; the other nodes go on meanwhile. Each node takes at most
    /// --throttle-rate metrics/s at first, more every --throttle-speed-up while its cache stays low, less
    /// when it climbs. A node whose /admin/info does not answer is warned about and kept at --throttle-rate.
    #[arg(help_heading = THROTTLE, long, alias = "go-carbon-health-check")]
    pub go_carbon_throttle: bool,

    /// The carbonserver's port: a node's /admin/info is asked at its agent's host on this port [default:
    /// 8080].
    #[arg(help_heading = THROTTLE, long, value_name = "PORT")]
    pub go_carbon_port: Option<u16>,

    /// `http` or `https` for /admin/info [default: http].
    #[arg(help_heading = THROTTLE, long, value_name = "http|https", value_parser = ["http", "https"])]
    pub go_carbon_protocol: Option<String>,

    /// A node whose carbonserver is not at its host on --go-carbon-port: NODE=HOST:PORT, NODE its agent's
    /// host (or HOST:PORT) as the ring names it. Repeatable.
    #[arg(help_heading = THROTTLE, long, value_name = "NODE=HOST:PORT")]
    pub go_carbon_server: Vec<String>,

    /// Pause a node when its cache holds this share of its limit (`[cache] max-size`) or more [default:
    /// 0.75].
    #[arg(help_heading = THROTTLE, long, value_name = "SHARE")]
    pub go_carbon_cache_threshold: Option<f64>,

    /// Resume a paused node when its cache holds less than this share [default: 0.8 × the threshold].
    #[arg(help_heading = THROTTLE, long, value_name = "SHARE")]
    pub go_carbon_resume_threshold: Option<f64>,

    /// Seconds between two polls of a node's /admin/info [default: 10].
    #[arg(help_heading = THROTTLE, long, alias = "go-carbon-health-check-interval", value_name = "SECONDS")]
    pub go_carbon_poll_interval: Option<f64>,

    /// Metrics per second each destination node takes at first, after a pause, and while its /admin/info
    /// says nothing usable [default: 1, as go-graphite's].
    #[arg(help_heading = THROTTLE, long, alias = "metrics-per-second", value_name = "M")]
    pub throttle_rate: Option<f64>,

    /// Seconds a node's cache must stay below the resume mark before its rate grows by --throttle-rate;
    /// 0 or less: it never grows [default: 600].
    #[arg(help_heading = THROTTLE, long, alias = "sync-speed-up-interval", value_name = "SECONDS", allow_negative_numbers = true)]
    pub throttle_speed_up: Option<f64>,

    /// Accepted for go-graphite's scripts: bucky's throttle never slows down at random.
    #[arg(help_heading = THROTTLE, long, hide = true)]
    pub no_random_easing: bool,
}
