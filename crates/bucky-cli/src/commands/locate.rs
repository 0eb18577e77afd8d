//! `bucky locate names|-`: the ring nodes each metric belongs on, every replica, in replica order.
//!
//! The text is buckytools' `metric => host` (the ring's server, without carbon's port or instance, which
//! scripts written for buckytools parse), with every replica's host after it: `metric => host1, host2`.
//! `--json` has the whole ring nodes, `{metric: ["server:port=instance", …]}`.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;

use crate::cli::{LocateArgs, NamesArgs};
use crate::cluster::Cluster;
use crate::ctx::Ctx;
use crate::settings::{self, Selection};
use crate::{ExitStatus, UsageError};

/// Prints `metric => host[, host…]` per name (JSON: {metric: [nodes with port and instance]}).
pub(super) async fn run(args: &LocateArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(settings::config(&args.cluster)?)?;
    let names_args = NamesArgs { regex: false, names: args.names.clone() };
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
            let hosts = hosts_of(&cluster, name);
            for host in &hosts {
                *spread.entry(host.clone()).or_default() += 1;
            }
            writeln!(out, "{name} => {}", hosts.join(", "))?;
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

/// The distinct hosts (ring servers) of `name`'s replicas, in replica order: what buckytools printed.
fn hosts_of(cluster: &Cluster, name: &str) -> Vec<String> {
    let mut hosts: Vec<String> = Vec::new();
    for node in cluster.ring.nodes_for(name) {
        if !hosts.contains(&node.server) {
            hosts.push(node.server.clone());
        }
    }
    hosts
}
