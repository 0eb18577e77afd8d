//! `bucky ring …`: where metrics live on a carbon_ch / fnv1a_ch / jump_fnv1a_ch ring, via the `hashring` crate.

use std::io::{self, BufRead, BufWriter, Write};

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use hashring::{Hash, Node, Ring, Router};
use serde_json::json;

use crate::ExitStatus;

/// Metric placement on a consistent-hashing ring, bit-exact with carbon 1.1.10 and carbon-c-relay 3.7.3.
#[derive(Debug, Subcommand)]
pub enum RingCommand {
    /// Print where each metric name read from stdin (one per line) goes: `name<TAB>NODE[,NODE...]`, replicas
    /// in order, each NODE exactly as given on the command line.
    Locate(LocateArgs),
    /// Print the ring for debugging: every point's position and owner (jump_fnv1a_ch: the bucket order),
    /// with carbon's probed collisions and the relay's voided points marked.
    Show(RingArgs),
}

/// The ring, as on the command line.
#[derive(Debug, Args)]
pub struct RingArgs {
    /// Placement function: carbon_ch, fnv1a_ch or jump_fnv1a_ch (buckyd's carbon, fnv1a, jump_fnv1a too).
    #[arg(long)]
    pub hash: String,
    /// Whose semantics: carbon (carbon 1.1.10's router) or relay (carbon-c-relay 3.7.3). Default: carbon for
    /// carbon_ch, relay for fnv1a_ch and jump_fnv1a_ch.
    #[arg(long)]
    pub router: Option<String>,
    /// Replication factor (carbon's REPLICATION_FACTOR, the relay's `replication`).
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// carbon's DIVERSE_REPLICAS: put replicas on distinct servers (carbon router only).
    #[arg(long)]
    pub diverse: bool,
    /// Read NODE arguments in carbon's DESTINATIONS syntax, `host:port[:instance]`, commas allowed.
    #[arg(long)]
    pub destinations: bool,
    /// Ring members in configuration order: `host[:port][=instance]`, IPv6 as `[addr][:port][=instance]`.
    #[arg(required = true, value_name = "NODE")]
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

/// The ring and, for each node, its text as given on the command line.
fn build(args: &RingArgs) -> Result<(Ring, Vec<String>)> {
    let hash: Hash = args.hash.parse()?;
    let router: Option<Router> = args.router.as_deref().map(str::parse).transpose()?;
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
    let ring = Ring::new(nodes, hash, router, args.replicas, args.diverse)?;
    Ok((ring, labels))
}

fn locate(args: &LocateArgs) -> Result<ExitStatus> {
    let (ring, labels) = build(&args.ring)?;
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
    let (ring, labels) = build(args)?;
    let mut out = BufWriter::new(io::stdout().lock());
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
