//! The cluster commands' own flags (each flattens the shared groups of [`super::common`]).

use std::path::PathBuf;

use clap::Args;

use super::common::{ClusterArgs, EngineArgs, NamesArgs, ScopeArgs};
use crate::names::MetricRegex;

/// Prefixes of carbon's and carbon-c-relay's own statistics, written locally by every daemon and so
/// "misplaced" by design: what `inconsistent` and `rebalance` skip unless told otherwise.
pub const DEFAULT_EXCLUDES: [&str; 2] = ["carbon.agents.", "carbon.relays."];

/// `bucky servers`.
#[derive(Debug, Args)]
pub struct ServersArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `bucky list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Print `server: metric` for every copy (JSON: {server: [metrics]}).
    #[arg(short = 'l', long)]
    pub long: bool,
}

/// `bucky locate`.
#[derive(Debug, Args)]
pub struct LocateArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Metric names; `-` reads them from stdin (a JSON array, or one per line).
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

/// `bucky inconsistent`.
#[derive(Debug, Args)]
pub struct InconsistentArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Scope: only metrics matching this regex (RE2 syntax).
    #[arg(short = 'r', long, value_name = "REGEX", value_parser = MetricRegex::parse)]
    pub regex: Option<MetricRegex>,
    /// Skip metrics starting with this prefix (repeatable; replaces the defaults; `--exclude ''` checks
    /// everything).
    #[arg(long, alias = "go-carbon-prefix", value_name = "PREFIX", default_values_t = DEFAULT_EXCLUDES.map(String::from))]
    pub exclude: Vec<String>,
}

/// `bucky rebalance`.
#[derive(Debug, Args)]
pub struct RebalanceArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Delete each source once all its replicas hold every one of its points.
    #[arg(long)]
    pub delete: bool,
    /// Scope: only metrics matching this regex (RE2 syntax).
    #[arg(short = 'r', long, value_name = "REGEX", value_parser = MetricRegex::parse)]
    pub regex: Option<MetricRegex>,
    /// Skip metrics starting with this prefix (repeatable; replaces the defaults; `--exclude ''` moves
    /// everything).
    #[arg(long, alias = "go-carbon-prefix", value_name = "PREFIX", default_values_t = DEFAULT_EXCLUDES.map(String::from))]
    pub exclude: Vec<String>,
    /// Only write to these agents (`h:p;h:p`, or repeat the flag): copies bound elsewhere wait for a later
    /// run, and a source is deleted only when every one of its replicas was allowed and verified.
    #[arg(long = "allowed-dsts", value_name = "HOST:PORT;…", value_delimiter = ';')]
    pub allowed_dsts: Vec<String>,
    /// Agents outside the ring to drain too, HOST[:PORT] (to empty a node leaving the cluster and check it
    /// ends empty, see `bucky drain`).
    #[arg(value_name = "EXTRA")]
    pub extra: Vec<String>,
}

/// `bucky drain`.
#[derive(Debug, Args)]
pub struct DrainArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Scope: only metrics matching this regex (RE2 syntax); "empty" then means none of them is left.
    #[arg(short = 'r', long, value_name = "REGEX", value_parser = MetricRegex::parse)]
    pub regex: Option<MetricRegex>,
    /// The node to drain, HOST[:PORT] (port default: the seed's). It must not be in the seed's ring.
    #[arg(value_name = "HOST:PORT")]
    pub node: String,
}

/// `bucky backfill`.
#[derive(Debug, Args)]
pub struct BackfillArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// JSON object mapping source metrics to destination metrics; `-` reads stdin.
    #[arg(value_name = "MAPFILE")]
    pub map: String,
}

/// `bucky backfill2`: the go-graphite buckytools cross-cluster backfill. Every copy of a selected metric on
/// the source cluster is healed into every replica of its (new) name on the destination cluster, verified
/// by content. Never deletes.
#[derive(Debug, Args)]
pub struct Backfill2Args {
    /// Common flags (`-h` is not used: the two seeds name the clusters).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Any agent of the cluster to copy from, HOST[:PORT].
    #[arg(long = "src-cluster-seed", value_name = "HOST[:PORT]")]
    pub src_seed: String,
    /// Any agent of the cluster to copy into, HOST[:PORT].
    #[arg(long = "dst-cluster-seed", value_name = "HOST[:PORT]")]
    pub dst_seed: String,
    /// JSON object mapping source metrics to destination metrics (`-` reads stdin).
    #[arg(long = "metric-map-file", value_name = "FILE", required_unless_present = "regex", conflicts_with = "regex")]
    pub map: Option<String>,
    /// Instead of a map: every metric matching this regex (RE2 syntax), under the same name.
    #[arg(short = 'r', long, value_name = "REGEX", value_parser = MetricRegex::parse)]
    pub regex: Option<MetricRegex>,
}

/// `bucky copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Common flags (`-h` is not used).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The agent to copy from, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub src: String,
    /// The agent to copy into, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub dst: String,
    /// Only metrics matching this regex (RE2 syntax).
    #[arg(short = 'r', long, value_name = "REGEX", value_parser = MetricRegex::parse)]
    pub regex: Option<MetricRegex>,
}

/// `bucky tar`.
#[derive(Debug, Args)]
pub struct TarArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Compress the archive with gzip.
    #[arg(short = 'z', long)]
    pub gzip: bool,
}

/// `bucky restore`.
#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Path prefix prepended to every entry (`-p old` restores `a/b.wsp` as `old.a.b`).
    #[arg(short = 'p', long, value_name = "PREFIX")]
    pub prefix: Option<PathBuf>,
    /// Only write to the seed agent, not to the metrics' replicas.
    #[arg(short = 's', long)]
    pub single: bool,
    /// The archive; `-` reads stdin.
    #[arg(value_name = "TAR")]
    pub archive: String,
}

/// `bucky delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Do not ask: delete on every server.
    #[arg(short = 'y', long, alias = "noconfirm")]
    pub yes: bool,
    /// Print what would be deleted (`agent: metric` per copy; JSON: {agent: [metrics]}), delete nothing.
    #[arg(long = "no-op", alias = "noop")]
    pub no_op: bool,
}

/// `bucky du`.
#[derive(Debug, Args)]
pub struct DuArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// `bucky stat`.
#[derive(Debug, Args)]
pub struct StatArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
}

/// Names per digest request of `audit` and `repair` (each answer is a few dozen bytes per name).
const DEFAULT_DIGEST_BATCH: usize = 1000;

/// `bucky audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Which metrics (default: all).
    #[command(flatten)]
    pub names: NamesArgs,
    /// Skip metrics starting with this prefix (repeatable; replaces the defaults; `--exclude ''` audits
    /// everything).
    #[arg(long, value_name = "PREFIX", default_values_t = DEFAULT_EXCLUDES.map(String::from))]
    pub exclude: Vec<String>,
    /// Compare the archives' windows ending at this time (Unix seconds) [default: now]. Points newer than
    /// it are not compared; set it a few minutes back when carbon is writing and its caches may not have
    /// reached every replica yet.
    #[arg(long, value_name = "UNIX_TIME", allow_negative_numbers = true)]
    pub until: Option<i64>,
    /// Metric names per digest request.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DIGEST_BATCH)]
    pub batch: usize,
}

/// `bucky repair`.
#[derive(Debug, Args)]
pub struct RepairArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Which metrics (default: all).
    #[command(flatten)]
    pub names: NamesArgs,
    /// Skip metrics starting with this prefix (repeatable; replaces the defaults; `--exclude ''` repairs
    /// everything).
    #[arg(long, value_name = "PREFIX", default_values_t = DEFAULT_EXCLUDES.map(String::from))]
    pub exclude: Vec<String>,
    /// Where replicas hold different values at one timestamp, the value of the replica on this agent
    /// wins, HOST[:PORT] [default: the replica whose file is newest].
    #[arg(long, value_name = "HOST[:PORT]")]
    pub prefer: Option<String>,
    /// The audit's window end (Unix seconds) [default: now]; see `bucky audit --until`.
    #[arg(long, value_name = "UNIX_TIME", allow_negative_numbers = true)]
    pub until: Option<i64>,
    /// Metric names per digest request of the audit.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DIGEST_BATCH)]
    pub digest_batch: usize,
}
