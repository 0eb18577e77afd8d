//! The command line: clap definitions only. Flags are validated into a [`crate::config::Config`] before any
//! work starts.
//!
//! Cluster commands take `-h/--host` like buckytools, so they disable clap's `-h` help and offer `--help`.

use std::path::PathBuf;

use clap::builder::FalseyValueParser;
use clap::{ArgAction, Args, Parser, Subcommand};

use crate::commands::{
    backfill, config, copy, delete, demo, drain, du, gentestmetrics, inconsistent, json, list, locate, rebalance,
    restore, ring, servers, stat, tar, whisper,
};

/// Seed agent of the cluster commands, when `-h/--host` is not given.
pub const BUCKYHOST: &str = "BUCKYHOST";
/// File holding the JWT sent as `X-Buckyd-Authorization`, when `--token-file` is not given.
pub const BUCKY_TOKEN_FILE: &str = "BUCKY_TOKEN_FILE";
/// Set to anything but `0`/`false` to hide progress bars (tests, CI logs).
pub const BUCKY_NO_PROGRESS: &str = "BUCKY_NO_PROGRESS";

/// bucky — move, heal, back up and audit Whisper files across a Graphite cluster.
///
/// Cluster commands talk to bucky-agent (or buckyd) on every storage node. They discover the ring from
/// the seed given with -h/--host (default $BUCKYHOST, else the config file's cluster, else localhost:4242;
/// see `bucky config show`), write data to stdout and logs
/// and progress to stderr, and exit 0 when all went well, 1 when some work failed, 2 on bad usage or an
/// unhealthy cluster. Quick start: `bucky demo`.
#[derive(Debug, Parser)]
#[command(name = "bucky", version, long_about, propagate_version = true, max_term_width = 110)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Local whisper file tools: create, info, dump, update, fetch, merge, fill, resize, set-aggregation,
    /// modify.
    #[command(subcommand)]
    Whisper(whisper::WhisperCommand),
    /// Metric placement: which node(s) hold a metric (carbon_ch, fnv1a_ch, jump_fnv1a_ch; carbon or relay),
    /// the ring given as NODEs or read from a carbon.conf, carbonate.conf or carbon-c-relay config.
    #[command(subcommand)]
    Ring(ring::RingCommand),
    /// Show the cluster: ring, hash, router, replication, members and whether they agree.
    #[command(disable_help_flag = true)]
    Servers(servers::ServersArgs),
    /// List metrics on the cluster (all, given names, or a regex).
    #[command(disable_help_flag = true)]
    List(list::ListArgs),
    /// Print the node(s) every metric belongs on, all replicas.
    #[command(disable_help_flag = true)]
    Locate(locate::LocateArgs),
    /// List copies of metrics on nodes that are not among their replicas.
    #[command(disable_help_flag = true)]
    Inconsistent(inconsistent::InconsistentArgs),
    /// Move every misplaced copy to all of its replicas, verify by content, optionally delete the source.
    #[command(disable_help_flag = true)]
    Rebalance(rebalance::RebalanceArgs),
    /// Empty a node leaving the cluster: move every metric on it to all its ring homes (verified, then
    /// deleted from it), and check that it ends empty. Its agent runs outside the ring (reads and deletes only).
    #[command(disable_help_flag = true)]
    Drain(drain::DrainArgs),
    /// Fill metrics from other metrics: a JSON map {"old": "new"}; never deletes.
    #[command(disable_help_flag = true)]
    Backfill(backfill::BackfillArgs),
    /// Fill metrics of one cluster from another: a JSON map {"old": "new"} or a regex; never deletes.
    #[command(disable_help_flag = true)]
    Backfill2(backfill::Backfill2Args),
    /// Copy (heal) every metric of one node into another node.
    #[command(disable_help_flag = true)]
    Copy(copy::CopyArgs),
    /// Write metrics as a tar archive to stdout (a/b/c.wsp entries).
    #[command(disable_help_flag = true)]
    Tar(tar::TarArgs),
    /// Restore a tar archive (plain or gzip) into every replica of each metric.
    #[command(disable_help_flag = true)]
    Restore(restore::RestoreArgs),
    /// Delete metrics from the cluster, asking per server.
    #[command(disable_help_flag = true)]
    Delete(delete::DeleteArgs),
    /// Disk usage of metrics.
    #[command(disable_help_flag = true)]
    Du(du::DuArgs),
    /// Size, modification time and name of metrics.
    #[command(disable_help_flag = true)]
    Stat(stat::StatArgs),
    /// Turn a newline-separated list of names into a JSON array.
    #[command(disable_help_flag = true)]
    Json(json::JsonArgs),
    /// Print test metrics in the plaintext protocol, or send them to a line receiver.
    #[command(name = "gentestmetrics", disable_help_flag = true)]
    GenTestMetrics(gentestmetrics::GenArgs),
    /// The CLI's settings: `bucky config show` prints every value in force and where it came from.
    #[command(subcommand)]
    Config(config::ConfigCommand),
    /// Start a 3-agent local cluster, grow its ring and rebalance it, proving nothing is lost.
    Demo(demo::DemoArgs),
    /// buckytools' modify of a local file, the same as `bucky whisper modify`.
    Modify(whisper::ModifyArgs),
}

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

    /// Print results (and the final summary) as JSON.
    #[arg(short = 'j', long)]
    pub json: bool,

    /// Log every action on stderr (hides the progress bars).
    #[arg(short = 'v', long)]
    pub verbose: bool,

    /// Make the agents rebuild their metric list before answering.
    #[arg(short = 'f', long)]
    pub force: bool,

    /// Seconds without progress before a request is abandoned (then retried) [default: 30].
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<u64>,

    /// Longest wait, in seconds, for an agent that answers "Cache update in progress." (202) [default: 600].
    #[arg(long, value_name = "SECONDS")]
    pub cache_wait: Option<u64>,

    /// Transfer whisper files uncompressed (default: snappy).
    #[arg(long)]
    pub no_encoding: bool,

    /// File holding the JWT for the agents' authentication (X-Buckyd-Authorization). Default:
    /// $BUCKY_TOKEN_FILE, else the config file's `token_file`.
    #[arg(long, value_name = "FILE")]
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

    /// Most metrics per second started per source node (default: unlimited).
    #[arg(long, alias = "metrics-per-second", value_name = "M")]
    pub max_rate: Option<f64>,

    /// Metrics moved per request with agents that take batches (bucky-agent: one request reads a batch of
    /// sources, one heals each destination's share, one deletes); 1 = one request per metric, as with buckyd.
    #[arg(long, default_value_t = 32, value_name = "N")]
    pub batch: usize,

    /// Most MiB of files read per batch request: a batch of large files is cut short, the rest goes in
    /// the next batch, so the memory used stays bounded (about this times -w times 3 per source node).
    #[arg(long, default_value_t = crate::engine::DEFAULT_BATCH_MIB, value_name = "MIB")]
    pub batch_mib: u64,

    /// Attempts per metric (heal, verify, delete) before it is reported as failed.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub attempts: u32,
}

/// Rewrites buckytools' single-dash long flags for clap; see [`bucky_wire::goflags::go_style_args`].
pub use bucky_wire::goflags::go_style_args;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;
    use std::ffi::OsString;

    fn rewrite(args: &[&str]) -> Vec<String> {
        let args = std::iter::once("bucky").chain(args.iter().copied()).map(OsString::from);
        go_style_args(&Cli::command(), args).into_iter().skip(1).map(|a| a.into_string().unwrap()).collect()
    }

    #[test]
    fn go_flags_become_long_flags() {
        assert_eq!(
            rewrite(&["rebalance", "-host", "a:4242", "-delete", "-workers=10", "-no-op", "x:1"]),
            ["rebalance", "--host", "a:4242", "--delete", "--workers=10", "--no-op", "x:1"]
        );
        assert_eq!(rewrite(&["delete", "-noconfirm", "-r", "^a"]), ["delete", "--noconfirm", "-r", "^a"]);
        assert_eq!(rewrite(&["whisper", "create", "f.wsp", "1m:1d", "-xFilesFactor", "0"])[4], "--xFilesFactor");
    }

    #[test]
    fn short_flags_values_and_separator_are_left_alone() {
        assert_eq!(rewrite(&["list", "-rf", "-h", "x", "-j"]), ["list", "-rf", "-h", "x", "-j"]);
        assert_eq!(rewrite(&["list", "--", "-host"]), ["list", "--", "-host"]);
        // Not a flag of `locate`: left for clap to reject.
        assert_eq!(rewrite(&["locate", "-delete"]), ["locate", "-delete"]);
    }

    #[test]
    fn rewritten_go_command_line_parses() {
        let args = ["bucky", "list", "-host", "node1:4242", "-workers", "3", "-regex", "^carbon"];
        let cli = Cli::try_parse_from(go_style_args(&Cli::command(), args.map(OsString::from))).unwrap();
        let Command::List(list) = cli.command else { panic!("not list") };
        assert_eq!(list.scope.cluster.host.as_deref(), Some("node1:4242"));
        assert_eq!(list.scope.cluster.workers, Some(3));
        assert!(list.scope.names.regex);
    }
}
