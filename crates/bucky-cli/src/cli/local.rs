//! Flags of the commands that need no cluster: `json`, `gentestmetrics`, `config show`, `demo`.

use std::path::PathBuf;

use clap::{ArgAction, Args, Subcommand};

use super::common::ClusterArgs;

/// `bucky json`.
#[derive(Debug, Args)]
pub struct JsonArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Names; `-` (or none) reads them from stdin, one per line.
    #[arg(value_name = "NAME")]
    pub names: Vec<String>,
}

/// `bucky gentestmetrics`.
#[derive(Debug, Args)]
pub struct GenArgs {
    /// Print help.
    #[arg(long, action = ArgAction::Help)]
    pub help: Option<bool>,
    /// Prefix prepended to each metric name.
    #[arg(short = 'p', long, default_value = "test.")]
    pub prefix: String,
    /// Number of metric names to generate (000000, 000001, …).
    #[arg(short = 'c', long, default_value_t = 1000)]
    pub count: u64,
    /// Timestamp/value pairs per metric.
    #[arg(short = 'x', long, default_value_t = 1)]
    pub iterations: u64,
    /// Seconds between consecutive timestamps of a metric.
    #[arg(short = 'i', long, default_value_t = 60)]
    pub interval: i64,
    /// Upper bound (exclusive) of the random integer values.
    #[arg(short = 'l', long, default_value_t = 100)]
    pub limit: i64,
    /// Use this value instead of random ones.
    #[arg(short = 'v', long)]
    pub value: Option<i64>,
    /// Use the metric names in this file (one per line) instead of -c generated ones.
    #[arg(short = 'f', long, value_name = "FILE")]
    pub file: Option<std::path::PathBuf>,
    /// Newest timestamp (default now); the iterations end at it, stepping back by -i.
    #[arg(short = 's', long)]
    pub start: Option<i64>,
    /// Send the lines to this carbon line receiver (HOST:PORT, port default 2003) instead of stdout.
    #[arg(long, value_name = "HOST:PORT")]
    pub send: Option<String>,
}

/// `bucky config …`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print every setting in force and where it came from: flag, env VAR, file PATH [cluster], default.
    /// Takes the flags of the cluster commands (--cluster, --config, -h, -w, --token-file, …) to show
    /// what they would use.
    #[command(disable_help_flag = true)]
    Show(ShowArgs),
}

/// `bucky config show`.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Common flags.
    #[command(flatten)]
    pub cluster: ClusterArgs,
}

/// `bucky demo`.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Directory for the agents' data and logs (default: a new temporary directory, removed at the end
    /// unless --keep).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Leave the agents running at the end and print how to use them.
    #[arg(long)]
    pub keep: bool,
    /// Number of metrics to generate.
    #[arg(long, default_value_t = 3000, value_name = "N")]
    pub metrics: usize,
    /// Placement hash: carbon_ch, fnv1a_ch or jump_fnv1a_ch.
    #[arg(long, default_value = "carbon_ch")]
    pub hash: String,
    /// Replication factor (1 or 2).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// Agent port on every address (default: 4242 if free on all three, else any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// The three local addresses the agents listen on, comma-separated (on Linux all of 127.0.0.0/8 is
    /// loopback; elsewhere give addresses this machine has).
    #[arg(long, value_delimiter = ',', default_value = "127.0.0.2,127.0.0.3,127.0.0.4", value_name = "A,B,C")]
    pub ips: Vec<String>,
    /// Never draw progress bars.
    #[arg(long)]
    pub no_progress: bool,
}
