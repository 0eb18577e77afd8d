//! `bucky servers`: the ring, its algorithm, router and replication, every member's view, and health.

use std::io::Write;

use crate::cli::ServersArgs;
use crate::cluster::MemberState;
use crate::ctx::Ctx;
use crate::error::one_line;
use crate::ExitStatus;

/// Prints the cluster; exit status 1 when any member is unreachable or disagrees.
pub(super) async fn run(args: &ServersArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(crate::settings::config(&args.cluster)?)?;
    let cluster = crate::cluster::Cluster::discover_configured(&ctx.client, &ctx.config).await?;
    if ctx.printer.json() {
        ctx.printer.print_json(&cluster.report())?;
    } else {
        let ring = &cluster.ring;
        let mut out = ctx.printer.stdout();
        writeln!(out, "Seed: {} (node {})", cluster.seed, cluster.info.name)?;
        writeln!(out, "Ring: {}", ring.describe())?;
        writeln!(out, "Algorithm: {}", ring.hash())?;
        writeln!(out, "Router: {} ({})", ring.router(), ring.router().peer())?;
        writeln!(out, "Replication factor: {}", ring.replicas())?;
        if cluster.placement.diverse_matters {
            let rule = if ring.diverse() { "on" } else { "off" };
            match &cluster.placement.note {
                Some(note) => writeln!(out, "Diverse replicas: {rule} ({note})")?,
                None => writeln!(out, "Diverse replicas: {rule} (every member says so)")?,
            }
        }
        writeln!(out, "Ring nodes ({}):", ring.nodes().len())?;
        for node in ring.nodes() {
            writeln!(out, "  {node}")?;
        }
        writeln!(out, "Members ({}):", cluster.members.len())?;
        for member in &cluster.members {
            let state = match &member.state {
                MemberState::Agrees => "ok".to_owned(),
                MemberState::Disagrees(d) => format!("DISAGREES: {d}"),
                MemberState::Unreachable(w) => format!("UNREACHABLE: {}", one_line(w)),
            };
            writeln!(out, "  {} at {}: {state}", member.server, member.addr)?;
        }
        if let Some(file) = &cluster.ring_file {
            match &file.disagreement {
                None => writeln!(out, "Ring file: {}: agrees", file.source)?,
                Some(diff) => writeln!(out, "Ring file: {}: DISAGREES: {diff}", file.source)?,
            }
        }
        if cluster.healthy() {
            writeln!(out, "Cluster is healthy.")?;
        } else {
            let odd: Vec<&str> = cluster.members.iter().filter(|m| !m.agrees()).map(|m| m.server.as_str()).collect();
            writeln!(out, "Cluster is NOT healthy: {}", odd.join(", "))?;
        }
        out.flush()?;
    }
    for problem in cluster.problems() {
        ctx.printer.error(problem);
    }
    Ok(ExitStatus::from_ok(cluster.healthy()))
}
