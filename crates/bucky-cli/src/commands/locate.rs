//! `bucky locate names|-`: the ring nodes each metric belongs on, every replica, in replica order.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use clap::Args;

use super::Ctx;
use crate::cli::ClusterArgs;
use crate::names::Selection;
use crate::{ExitStatus, UsageError};

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

/// Prints `metric => node[, node…]` per name (JSON: {metric: [nodes]}).
pub async fn run(args: &LocateArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.cluster)?;
    let names_args = crate::cli::NamesArgs { regex: false, names: args.names.clone() };
    let Selection::Names(names) = Selection::from_args(&names_args, true)? else {
        return Err(UsageError("locate needs metric names".into()).into());
    };
    let cluster = ctx.cluster().await?;
    let mut spread: HashMap<String, u64> = HashMap::new();
    if ctx.printer.json() {
        let map: BTreeMap<&str, Vec<String>> = names.iter().map(|n| (n.as_str(), cluster.nodes_of(n))).collect();
        ctx.printer.print_json(&map)?;
    } else {
        let mut out = ctx.printer.stdout();
        for name in &names {
            let nodes = cluster.nodes_of(name);
            for n in &nodes {
                *spread.entry(n.clone()).or_default() += 1;
            }
            writeln!(out, "{name} => {}", nodes.join(", "))?;
        }
        out.flush()?;
    }
    if ctx.printer.is_verbose() {
        let mut spread: Vec<_> = spread.into_iter().collect();
        spread.sort();
        for (node, count) in spread {
            ctx.printer.info(format!("{node}: {count} metrics"));
        }
    }
    Ok(ExitStatus::Success)
}
