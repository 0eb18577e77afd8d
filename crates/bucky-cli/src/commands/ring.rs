//! `bucky ring …`: where metrics live on a carbon_ch / fnv1a_ch / jump_fnv1a_ch ring, via the `hashring` crate.

use std::io::{self, BufRead, BufWriter, Write};

use anyhow::{Context, Result};
use hashring::{Hash, Node, Ring, Router};
use serde_json::json;

use crate::cli::{RingArgs, RingCommand, RingLocateArgs};
use crate::ExitStatus;

/// Runs a `bucky ring` subcommand.
pub(super) fn run(cmd: RingCommand) -> Result<ExitStatus> {
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

fn locate(args: &RingLocateArgs) -> Result<ExitStatus> {
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
