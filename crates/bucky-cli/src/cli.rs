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
    /// Write metrics as a tar archive to stdout (a/b/c.wsp entries); the summary (JSON with --json) goes
    /// to stderr.
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

/// The one-line error for a flag the invoked subcommand does not have (`flag` as clap reports it,
/// `--noconfirm`): which command lacks it, which ones have it, and where to look.
pub fn unknown_flag(root: &clap::Command, args: &[std::ffi::OsString], flag: &str) -> String {
    let mut path = vec![root.get_name().to_owned()];
    let mut current = root;
    for arg in args.iter().skip(1).filter_map(|a| a.to_str()) {
        if let Some(sub) = current.find_subcommand(arg) {
            path.push(sub.get_name().to_owned());
            current = sub;
        }
    }
    // clap names `-n` of an unknown single-dash word `-nosuch`: name the word.
    let word = args
        .iter()
        .filter_map(|a| a.to_str())
        .find(|a| flag.len() == 2 && a.starts_with(flag) && a.len() > 2 && !a.starts_with("--") && !a.contains('='));
    let flag = word.unwrap_or(flag);
    let name = flag.trim_start_matches('-').split('=').next().unwrap_or_default().to_owned();
    let mut owners = Vec::new();
    flag_owners(root, &name, &mut Vec::new(), &mut owners);
    let command = path.join(" ");
    let elsewhere =
        if owners.is_empty() { String::new() } else { format!(" ({flag} is a flag of {})", owners.join(", ")) };
    format!("`{command}` has no flag {flag}{elsewhere}; see `{command} --help`")
}

/// The (sub)commands, as `bucky delete`, with a long flag or alias `name`.
fn flag_owners(command: &clap::Command, name: &str, path: &mut Vec<String>, owners: &mut Vec<String>) {
    path.push(command.get_name().to_owned());
    let has = command
        .get_arguments()
        .any(|a| a.get_long() == Some(name) || a.get_all_aliases().is_some_and(|aliases| aliases.contains(&name)));
    if has && name.len() > 1 {
        owners.push(format!("`{}`", path.join(" ")));
    }
    for sub in command.get_subcommands() {
        flag_owners(sub, name, path, owners);
    }
    path.pop();
}

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
        // Not a flag of `locate` but of another command: made long, for clap to reject by its name.
        assert_eq!(rewrite(&["locate", "-delete"]), ["locate", "--delete"]);
        assert_eq!(rewrite(&["list", "-noconfirm", "x"]), ["list", "--noconfirm", "x"]);
        // Not a flag anywhere: left alone.
        assert_eq!(rewrite(&["list", "-nosuchflag"]), ["list", "-nosuchflag"]);
    }

    /// Every flag of go-graphite buckytools 0.6.0 and jjneely 0.4.2 `bucky` that bucky implements, spelled
    /// the Go way (one dash), on every command that has it, parses. (From `flag.*Var` in their cmd/bucky.)
    #[test]
    fn every_go_flag_spelling_parses() {
        let common = ["-host x:1", "-h x:1", "-json", "-j", "-verbose", "-v", "-no-encoding", "-timeout 5", "-t 5"];
        let common = common.iter().copied().chain(["-api-token-file /t", "-workers 3", "-w 3"]);
        let scope = ["-f", "-single", "-s"];
        let sync = [
            "-delete",
            "-no-op",
            "-metric-err-file /e",
            "-job-state-file /s",
            "-error-tolerance 2",
            "-metrics-per-second 3",
        ];
        let commands: Vec<(&str, Vec<&str>, &str)> = vec![
            ("servers", vec![], ""),
            ("list", [&scope[..], &["-r", "-l"]].concat(), "a.b"),
            ("locate", vec![], "a.b"),
            ("inconsistent", vec!["-f", "-r ^a", "-go-carbon-prefix carbon.agents."], ""),
            ("rebalance", [&sync[..], &["-f", "-allowed-dsts a:1;b:1", "-r ^a", "-go-carbon-prefix x."]].concat(), ""),
            ("backfill", vec!["-f"], "map.json"),
            ("backfill2", sync[1..].to_vec(), "-src-cluster-seed a:1 -dst-cluster-seed b:1 -r ^a"),
            ("backfill2", vec![], "-src-cluster-seed a:1 -dst-cluster-seed b:1 -metric-map-file m.json"),
            ("copy", [&sync[1..], &["-f", "-r ^a"]].concat(), "-src a:1 -dst b:1"),
            ("tar", [&scope[..], &["-r"]].concat(), "a.b"),
            ("restore", vec!["-p prefix", "-s"], "x.tar"),
            ("delete", [&scope[..], &["-r", "-noconfirm", "-no-op"]].concat(), "a.b"),
            ("du", [&scope[..], &["-r"]].concat(), "a.b"),
            ("stat", [&scope[..], &["-r"]].concat(), "a.b"),
        ];
        for (command, flags, positional) in commands {
            for flag in common.clone().chain(flags.iter().copied()) {
                let mut args = vec!["bucky", command];
                args.extend(flag.split(' '));
                // What the command needs besides: names, a file, required flags.
                args.extend(positional.split(' ').filter(|a| !a.is_empty()));
                let rewritten = go_style_args(&Cli::command(), args.iter().map(OsString::from));
                if let Err(e) = Cli::try_parse_from(&rewritten) {
                    panic!("`{}` does not parse: {e}", args.join(" "));
                }
            }
        }
    }

    /// `bucky list -noconfirm` used to fail with "unexpected argument '-n'" and a usage block.
    #[test]
    fn a_flag_of_another_command_is_named() {
        let args: Vec<OsString> = ["bucky", "list", "-noconfirm", "-r", "^a"].map(OsString::from).to_vec();
        let rewritten = go_style_args(&Cli::command(), args.clone());
        let err = Cli::try_parse_from(&rewritten).expect_err("list has no --noconfirm");
        assert_eq!(err.kind(), clap::error::ErrorKind::UnknownArgument);
        let flag = err.get(clap::error::ContextKind::InvalidArg).map(ToString::to_string).unwrap();
        assert_eq!(
            unknown_flag(&Cli::command(), &rewritten, &flag),
            "`bucky list` has no flag --noconfirm (--noconfirm is a flag of `bucky delete`); see `bucky list --help`"
        );
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
