//! The command line: every clap type, and nothing else. [`crate::settings`] turns what is parsed here into
//! validated values before any work starts; nothing below the commands reads these types.
//!
//! Cluster commands take `-h/--host` like buckytools, so they disable clap's `-h` help and offer `--help`.

mod cluster;
mod common;
mod local;
mod ring;
mod whisper;

use clap::{Parser, Subcommand};

pub use cluster::{
    AuditArgs, Backfill2Args, BackfillArgs, CopyArgs, DeleteArgs, DrainArgs, DuArgs, InconsistentArgs, ListArgs,
    LocateArgs, RebalanceArgs, RepairArgs, RestoreArgs, ServersArgs, StatArgs, TarArgs, DEFAULT_EXCLUDES,
};
pub use common::{
    ClusterArgs, DampingArgs, EngineArgs, GraphiteArgs, NamesArgs, ScopeArgs, ThrottleArgs, BUCKYHOST,
    BUCKY_NO_PROGRESS, BUCKY_TOKEN_FILE,
};
pub use local::{ConfigCommand, DemoArgs, GenArgs, JsonArgs, ShowArgs};
pub use ring::{RingArgs, RingCommand, RingLocateArgs};
pub use whisper::{
    CreateArgs, DiffArgs, DumpArgs, FetchArgs, FillArgs, FindCorruptArgs, InfoArgs, IsEmptyArgs, MergeArgs, ModifyArgs,
    ResizeArgs, SetAggregationArgs, SparsifyArgs, UpdateArgs, WhisperCommand,
};

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
    Whisper(WhisperCommand),
    /// Metric placement: which node(s) hold a metric (carbon_ch, fnv1a_ch, jump_fnv1a_ch; carbon or relay),
    /// the ring given as NODEs or read from a carbon.conf, carbonate.conf or carbon-c-relay config.
    #[command(subcommand)]
    Ring(RingCommand),
    /// Show the cluster: ring, hash, router, replication, members and whether they agree.
    #[command(disable_help_flag = true)]
    Servers(ServersArgs),
    /// List metrics on the cluster (all, given names, or a regex).
    #[command(disable_help_flag = true)]
    List(ListArgs),
    /// Print the node(s) every metric belongs on, all replicas.
    #[command(disable_help_flag = true)]
    Locate(LocateArgs),
    /// List copies of metrics on nodes that are not among their replicas.
    #[command(disable_help_flag = true)]
    Inconsistent(InconsistentArgs),
    /// Move every misplaced copy to all of its replicas, verify by content, optionally delete the source.
    #[command(disable_help_flag = true)]
    Rebalance(RebalanceArgs),
    /// Empty a node leaving the cluster: move every metric on it to all its ring homes (verified, then
    /// deleted from it), and check that it ends empty. Its agent runs outside the ring (reads and deletes only).
    #[command(disable_help_flag = true)]
    Drain(DrainArgs),
    /// Compare every replica of every metric by digests: report the metrics missing a replica, the divergent
    /// ones (which archives and time ranges), the misplaced copies and the healthy count. Read-only; exit 1
    /// unless all is healthy.
    #[command(disable_help_flag = true)]
    Audit(AuditArgs),
    /// Heal every replica of each metric missing a replica or divergent to the union of the replicas'
    /// points (conflicts: the preferred, else the newest, replica's value), verified by read-back. Never
    /// deletes a file.
    #[command(disable_help_flag = true)]
    Repair(RepairArgs),
    /// Fill metrics from other metrics: a JSON map {"old": "new"}; never deletes.
    #[command(disable_help_flag = true)]
    Backfill(BackfillArgs),
    /// Fill metrics of one cluster from another: a JSON map {"old": "new"} or a regex; never deletes.
    #[command(disable_help_flag = true)]
    Backfill2(Backfill2Args),
    /// Copy (heal) every metric of one node into another node.
    #[command(disable_help_flag = true)]
    Copy(CopyArgs),
    /// Write metrics as a tar archive to stdout (a/b/c.wsp entries); the summary (JSON with --json) goes
    /// to stderr.
    #[command(disable_help_flag = true)]
    Tar(TarArgs),
    /// Restore a tar archive (plain or gzip) into every replica of each metric.
    #[command(disable_help_flag = true)]
    Restore(RestoreArgs),
    /// Delete metrics from the cluster, asking per server.
    #[command(disable_help_flag = true)]
    Delete(DeleteArgs),
    /// Disk usage of metrics.
    #[command(disable_help_flag = true)]
    Du(DuArgs),
    /// Size, modification time and name of metrics.
    #[command(disable_help_flag = true)]
    Stat(StatArgs),
    /// Turn a newline-separated list of names into a JSON array.
    #[command(disable_help_flag = true)]
    Json(JsonArgs),
    /// Print test metrics in the plaintext protocol, or send them to a line receiver.
    #[command(name = "gentestmetrics", disable_help_flag = true)]
    GenTestMetrics(GenArgs),
    /// The CLI's settings: `bucky config show` prints every value in force and where it came from.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Start a 3-agent local cluster, grow its ring and rebalance it, proving nothing is lost.
    Demo(DemoArgs),
    /// buckytools' modify of a local file, the same as `bucky whisper modify`.
    Modify(ModifyArgs),
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
            "-go-carbon-health-check",
            "-go-carbon-port 8080",
            "-go-carbon-protocol http",
            "-go-carbon-cache-threshold 0.75",
            "-go-carbon-health-check-interval 10",
            "-metrics-per-second 3",
            "-sync-speed-up-interval 600",
            "-sync-speed-up-interval -1",
            "-no-random-easing",
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

    /// A regex flag is checked once, by clap, for every command that has one: a bad one is refused before
    /// any work, and a good one reaches the command as given.
    #[test]
    fn regex_flags_are_checked_when_parsed() {
        for command in ["inconsistent", "rebalance", "copy", "drain", "backfill2"] {
            let extra: &[&str] = match command {
                "copy" => &["--src", "a:1", "--dst", "b:1"],
                "drain" => &["x:1"],
                "backfill2" => &["--src-cluster-seed", "a:1", "--dst-cluster-seed", "b:1"],
                _ => &[],
            };
            let args = |regex: &'static str| {
                ["bucky", command, "-r", regex].iter().chain(extra).copied().collect::<Vec<&str>>()
            };
            let err = Cli::try_parse_from(args("a(")).expect_err(command);
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{command}");
            assert!(err.to_string().contains("invalid regex"), "{command}: {err}");
            Cli::try_parse_from(args("^a\\.b")).unwrap_or_else(|e| panic!("{command}: {e}"));
        }
        let cli = Cli::try_parse_from(["bucky", "inconsistent", "-r", "^a\\.b$"]).unwrap();
        let Command::Inconsistent(args) = cli.command else { panic!("not inconsistent") };
        assert_eq!(args.regex.map(|r| r.as_str().to_owned()).as_deref(), Some("^a\\.b$"));
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
