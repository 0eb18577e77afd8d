//! `bucky ring …`: where metrics live on a carbon_ch / fnv1a_ch / jump_fnv1a_ch ring, via the `hashring` crate.

use std::io::{self, BufRead, BufWriter, Write};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hashring::{Hash, Node, Ring, Router};
use serde_json::json;

use crate::ExitStatus;

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
    Locate(LocateArgs),
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
pub struct LocateArgs {
    /// The ring.
    #[command(flatten)]
    pub ring: RingArgs,
    /// Print one JSON object per name: `{"name": ..., "nodes": [...]}`.
    #[arg(long, short = 'j')]
    pub json: bool,
}

/// Runs a `bucky ring` subcommand.
pub fn run(cmd: RingCommand) -> Result<ExitStatus> {
    match cmd {
        RingCommand::Locate(args) => locate(&args),
        RingCommand::Show(args) => show(&args),
    }
}

/// A ring, the label of each of its nodes, and where it came from (for `show`).
struct Built {
    ring: Ring,
    labels: Vec<String>,
    source: Option<String>,
}

/// The ring from --config, or from the NODE arguments (each labelled with its text as given).
fn build(args: &RingArgs) -> Result<Built> {
    if let Some(path) = &args.config {
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let config = ringconf::parse(&text, args.cluster.as_deref()).with_context(|| path.display().to_string())?;
        for note in &config.notes {
            eprintln!("bucky: note: {}: {note}", path.display());
        }
        let source = format!("{} {}, cluster {}", config.kind, path.display(), config.cluster);
        return Ok(Built { ring: config.ring, labels: config.labels, source: Some(source) });
    }
    let hash: Hash = args.hash.as_deref().context("--hash is required without --config")?.parse()?;
    let router: Router = match args.router.as_deref() {
        Some(router) => router.parse()?,
        None => hash.default_router(),
    };
    let diverse = args.diverse
        || match args.diverse_replicas.as_str() {
            "auto" => router == Router::Carbon,
            other => other == "true",
        };
    let mut nodes = Vec::new();
    let mut labels = Vec::new();
    for arg in &args.nodes {
        if args.destinations {
            for entry in arg.split(',') {
                nodes.extend(hashring::parse_destinations(entry)?);
                labels.push(entry.trim().to_owned());
            }
        } else {
            nodes.push(Node::parse(arg)?);
            labels.push(arg.clone());
        }
    }
    let ring = Ring::new(nodes, hash, Some(router), args.replicas, diverse)?;
    Ok(Built { ring, labels, source: None })
}

fn locate(args: &LocateArgs) -> Result<ExitStatus> {
    let Built { ring, labels, .. } = build(&args.ring)?;
    let mut out = BufWriter::new(io::stdout().lock());
    let mut input = io::stdin().lock();
    let mut line = Vec::new();
    let mut number = 0usize;
    let mut replicas: Vec<&str> = Vec::with_capacity(ring.replicas());
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line).context("reading metric names from stdin")? == 0 {
            break;
        }
        number += 1;
        let name = std::str::from_utf8(&line)
            .with_context(|| format!("stdin line {number} is not UTF-8"))?
            .trim_end_matches(['\n', '\r']);
        if name.is_empty() {
            continue;
        }
        replicas.clear();
        replicas.extend(ring.replica_indices(name).map(|i| labels[i].as_str()));
        if args.json {
            writeln!(out, "{}", json!({ "name": name, "nodes": replicas }))?;
        } else {
            writeln!(out, "{name}\t{}", replicas.join(","))?;
        }
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}

fn show(args: &RingArgs) -> Result<ExitStatus> {
    let Built { ring, labels, source } = build(args)?;
    let mut out = BufWriter::new(io::stdout().lock());
    if let Some(source) = source {
        writeln!(out, "# from {source}")?;
    }
    writeln!(out, "# {}", ring.describe())?;
    let unit = if ring.hash() == Hash::JumpFnv1aCh { "bucket" } else { "position" };
    writeln!(out, "# {unit}\tnode\tnote")?;
    for point in ring.points() {
        write!(out, "{}\t{}", point.position, labels[point.node])?;
        if point.node != point.origin {
            write!(out, "\tvoided: point of {} (tie sorted after it)", labels[point.origin])?;
        } else if point.position != point.hashed {
            write!(out, "\tprobed from {} (collision)", point.hashed)?;
        }
        writeln!(out)?;
    }
    out.flush()?;
    Ok(ExitStatus::Success)
}
