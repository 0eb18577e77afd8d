//! `bucky ring …`: a ring given as NODE arguments or read from a carbon, carbonate or relay config.

use std::path::PathBuf;

use clap::{Args, Subcommand};

/// Metric placement on a consistent-hashing ring, bit-exact with carbon 1.1.10 and carbon-c-relay 3.7.3.
///
/// The ring comes from NODE arguments with --hash, or from the operators' own file with --config: a
/// carbon.conf (its [relay] section, or --cluster NAME for carbon-relay --instance NAME), a carbonate.conf
/// (--cluster, default main, as carbonate's -C) or a carbon-c-relay config (--cluster names the cluster; the
/// only hash cluster by default). The kind is detected from the content.
#[derive(Debug, Subcommand)]
pub enum RingCommand {
    /// Print where each metric name read from stdin (one per line) goes: `name<TAB>NODE[,NODE...]`, replicas
    /// in order, each NODE as given on the command line, or with --config in carbon's DESTINATIONS spelling
    /// `host:port[:instance]`.
    Locate(RingLocateArgs),
    /// Print the ring for debugging: every point's position and owner (jump_fnv1a_ch: the bucket order),
    /// with carbon's probed collisions and the relay's voided points marked.
    Show(RingArgs),
}

/// The ring: NODE arguments and flags, or a configuration file.
#[derive(Debug, Args)]
pub struct RingArgs {
    /// Read the ring from this carbon.conf, carbonate.conf or carbon-c-relay config (kind detected from the
    /// content) instead of NODE arguments and --hash/--router/--replicas/--diverse-replicas.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["hash", "router", "replicas", "diverse_replicas", "diverse", "destinations", "nodes"])]
    pub config: Option<PathBuf>,
    /// With --config: the carbon.conf relay instance (`NAME` or `relay:NAME`, also `aggregator`), the
    /// carbonate.conf cluster (default main) or the carbon-c-relay cluster (default: the only hash cluster).
    #[arg(long, short = 'C', value_name = "NAME", requires = "config", conflicts_with_all = ["nodes", "hash"])]
    pub cluster: Option<String>,
    /// Placement function: carbon_ch, fnv1a_ch or jump_fnv1a_ch (buckyd's carbon, fnv1a, jump_fnv1a too).
    #[arg(long, required_unless_present = "config")]
    pub hash: Option<String>,
    /// Whose semantics: carbon (carbon 1.1.10's router) or relay (carbon-c-relay 3.7.3). Default: carbon for
    /// carbon_ch, relay for fnv1a_ch and jump_fnv1a_ch.
    #[arg(long)]
    pub router: Option<String>,
    /// Replication factor (carbon's REPLICATION_FACTOR, the relay's `replication`).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// carbon's DIVERSE_REPLICAS: replicas on distinct servers (matters with several instances per host and
    /// replication > 1). auto = carbon 1.1.10's default: true for the carbon router; the relay has none.
    #[arg(long, default_value = "auto", value_name = "auto|true|false", value_parser = ["auto", "true", "false"])]
    pub diverse_replicas: String,
    /// Same as --diverse-replicas true.
    #[arg(long, conflicts_with = "diverse_replicas")]
    pub diverse: bool,
    /// Read NODE arguments in carbon's DESTINATIONS syntax, `host:port[:instance]`, commas allowed.
    #[arg(long)]
    pub destinations: bool,
    /// Ring members in configuration order: `host[:port][=instance]`, IPv6 as `[addr][:port][=instance]`.
    #[arg(value_name = "NODE", required_unless_present = "config")]
    pub nodes: Vec<String>,
}

/// `bucky ring locate`.
#[derive(Debug, Args)]
pub struct RingLocateArgs {
    /// The ring.
    #[command(flatten)]
    pub ring: RingArgs,
    /// Print one JSON object per name: `{"name": ..., "nodes": [...]}`.
    #[arg(long, short = 'j')]
    pub json: bool,
}
