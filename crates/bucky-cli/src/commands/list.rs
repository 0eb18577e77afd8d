//! `bucky list [-r] [-l] [names|-|regex]`: which metrics the cluster holds.
//!
//! Lists are streamed from the agents and parsed as they arrive. One agent's list goes straight to
//! stdout; several are kept as compact sorted arenas and merged without duplicates.

use std::collections::BTreeMap;
use std::io::Write;

use clap::Args;
use serde::Serialize;

use super::Ctx;
use crate::cli::ScopeArgs;
use crate::client::ListQuery;
use crate::cluster::{list_agents, short_error, Cluster, MemberState};
use crate::config::Addr;
use crate::names::{merge_sorted, NameArena, Selection};
use crate::ExitStatus;

/// `bucky list`.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Common flags, metrics, --single.
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// Print `server: metric` for every copy (JSON: {server: [metrics]}).
    #[arg(short = 'l', long)]
    pub long: bool,
}

/// Where the selected metrics are, per agent.
#[derive(Debug, Default)]
pub struct Gathered {
    /// Sorted, deduplicated names per agent, in member order.
    pub lists: Vec<(Addr, NameArena)>,
    /// Agents that could not be listed, with the reason.
    pub failed: Vec<(Addr, String)>,
    /// Those of `failed` found unreachable by the cluster's discovery, which warned about them already.
    pub warned: Vec<Addr>,
}

impl Gathered {
    /// Reports failures on stderr (those not warned about already); returns whether there were none.
    pub fn report(&self, ctx: &Ctx) -> bool {
        for (addr, why) in self.failed.iter().filter(|(a, _)| !self.warned.contains(a)) {
            ctx.printer.error(crate::printer::about(addr, why));
        }
        self.failed.is_empty()
    }

    /// Total names over all agents (copies counted).
    pub fn copies(&self) -> usize {
        self.lists.iter().map(|(_, l)| l.len()).sum()
    }
}

/// Metrics that could not be read, grouped by the agent that failed: its reason said once, not per metric.
#[derive(Debug, Default, Serialize)]
pub struct Unread {
    /// Per agent: why (its first error), and the metrics not read from it.
    pub agents: BTreeMap<String, UnreadOn>,
    /// Metrics that failed for a reason of their own (not a valid whisper file, a bad name): why.
    pub metrics: BTreeMap<String, String>,
}

/// What could not be read from one agent.
#[derive(Debug, Default, Serialize)]
pub struct UnreadOn {
    /// The first error (the others are alike: the agent is down, or refuses).
    pub reason: String,
    /// The metrics.
    pub metrics: Vec<String>,
}

impl Unread {
    /// `name` could not be read from `addr`.
    pub fn on_agent(&mut self, addr: &Addr, name: &str, why: String) {
        let on = self.agents.entry(addr.to_string()).or_default();
        if on.reason.is_empty() {
            on.reason = why;
        }
        on.metrics.push(name.to_owned());
    }

    /// `name` could not be used, for a reason of its own.
    pub fn metric(&mut self, name: &str, why: String) {
        self.metrics.insert(name.to_owned(), why);
    }

    /// Metrics not read (a metric counted once per agent that failed it).
    pub fn count(&self) -> usize {
        self.agents.values().map(|a| a.metrics.len()).sum::<usize>() + self.metrics.len()
    }

    /// One error line per agent (reason once, then the first names) and per metric of its own.
    pub fn report(&self, ctx: &Ctx) {
        for (addr, on) in &self.agents {
            ctx.printer.error(format!(
                "{}: {} metrics not read from it: {}",
                crate::printer::about(addr, &on.reason),
                on.metrics.len(),
                crate::printer::first_names(on.metrics.iter().map(String::as_str), on.metrics.len(), 5)
            ));
        }
        for (name, why) in &self.metrics {
            ctx.printer.error(format!("{name}: {why}"));
        }
    }
}

/// The agents a listing command asks: the seed alone, or every member.
pub fn targets(cluster: &Cluster, single: bool) -> (Vec<Addr>, Vec<(Addr, String)>) {
    if single {
        return (vec![cluster.seed.clone()], Vec::new());
    }
    let mut targets = Vec::new();
    let mut failed = Vec::new();
    for member in &cluster.members {
        match &member.state {
            MemberState::Unreachable(why) => failed.push((member.addr.clone(), why.clone())),
            _ => targets.push(member.addr.clone()),
        }
    }
    (targets, failed)
}

/// Finds the selected metrics on `targets`.
pub async fn gather(ctx: &Ctx, selection: &Selection, targets: &[Addr]) -> Gathered {
    let mut gathered = Gathered::default();
    match selection {
        Selection::All | Selection::Regex(_) => {
            let regex = match selection {
                Selection::Regex(r) => Some(r.clone()),
                _ => None,
            };
            let query = ListQuery { regex, force: ctx.config.force };
            for (addr, result) in list_agents(&ctx.client, &query, targets).await {
                match result {
                    Ok(list) => gathered.lists.push((addr, list)),
                    Err(e) => gathered.failed.push((addr, short_error(&e))),
                }
            }
        }
        Selection::Names(names) => {
            let answers =
                futures_util::future::join_all(targets.iter().map(|addr| async move {
                    (addr.clone(), ctx.client.existing(addr, names, ctx.config.force).await)
                }))
                .await;
            for (addr, result) in answers {
                match result {
                    Ok(found) => {
                        let mut list = NameArena::new();
                        for n in &found {
                            list.push(n);
                        }
                        list.sort_dedup();
                        gathered.lists.push((addr, list));
                    }
                    Err(e) => gathered.failed.push((addr, short_error(&e))),
                }
            }
        }
    }
    gathered
}

/// A scoped command's start: validated flags, the cluster, and where the selected metrics are.
/// `check` runs after the flags are validated and before any network traffic (for early refusals).
pub async fn open_scope(
    scope: &ScopeArgs,
    require_names: bool,
    check: impl FnOnce(&Ctx) -> anyhow::Result<()>,
) -> anyhow::Result<(Ctx, Cluster, Gathered)> {
    let ctx = Ctx::new(&scope.cluster)?;
    let selection = Selection::from_args(&scope.names, require_names)?;
    check(&ctx)?;
    let cluster = ctx.cluster().await?;
    let (agents, failed) = targets(&cluster, scope.single);
    let mut gathered = gather(&ctx, &selection, &agents).await;
    gathered.warned.extend(failed.iter().map(|(a, _)| a.clone()));
    gathered.failed.extend(failed);
    Ok((ctx, cluster, gathered))
}

/// Lists metrics.
pub async fn run(args: &ListArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.scope.cluster)?;
    let selection = Selection::from_args(&args.scope.names, false)?;
    let cluster = ctx.cluster().await?;
    let (targets, mut failed) = targets(&cluster, args.scope.single);
    if targets.len() == 1 && !args.long && !matches!(selection, Selection::Names(_)) {
        // One agent: stream its list straight through, whatever its size.
        let ok = stream_one(&ctx, &targets[0], &selection).await;
        if let Err(why) = ok {
            failed.push((targets[0].clone(), why));
        }
        let warned = failed.iter().map(|(a, _)| a.clone()).collect();
        let gathered = Gathered { lists: Vec::new(), failed, warned };
        return Ok(ExitStatus::from_ok(gathered.report(&ctx)));
    }
    let mut gathered = gather(&ctx, &selection, &targets).await;
    gathered.warned.extend(failed.iter().map(|(a, _)| a.clone()));
    gathered.failed.extend(failed);
    let mut out = ctx.printer.stdout();
    if args.long {
        if ctx.printer.json() {
            let map: BTreeMap<String, Vec<&str>> =
                gathered.lists.iter().map(|(a, l)| (a.to_string(), l.iter().collect())).collect();
            serde_json::to_writer_pretty(&mut out, &map)?;
            writeln!(out)?;
        } else {
            for (addr, list) in &gathered.lists {
                for name in list.iter() {
                    writeln!(out, "{addr}: {name}")?;
                }
            }
        }
    } else {
        let lists: Vec<&NameArena> = gathered.lists.iter().map(|(_, l)| l).collect();
        let json = ctx.printer.json();
        let mut first = true;
        if json {
            out.write_all(b"[")?;
        }
        merge_sorted(&lists, |name| {
            if json {
                if !first {
                    out.write_all(b",")?;
                }
                first = false;
                serde_json::to_writer(&mut out, name).map_err(std::io::Error::other)
            } else {
                writeln!(out, "{name}")
            }
        })?;
        if json {
            out.write_all(b"]\n")?;
        }
    }
    out.flush()?;
    drop(out);
    ctx.printer.verbose(format!("{} copies on {} agents", gathered.copies(), gathered.lists.len()));
    Ok(ExitStatus::from_ok(gathered.report(&ctx)))
}

/// Streams one agent's list to stdout.
async fn stream_one(ctx: &Ctx, addr: &Addr, selection: &Selection) -> Result<(), String> {
    let regex = match selection {
        Selection::Regex(r) => Some(r.clone()),
        _ => None,
    };
    let query = ListQuery { regex, force: ctx.config.force };
    let json = ctx.printer.json();
    let mut out = ctx.printer.stdout();
    let mut io_error = None;
    let mut first = true;
    if json {
        let _ = out.write_all(b"[");
    }
    let result = ctx
        .client
        .list(addr, &query, |name| {
            if io_error.is_some() {
                return;
            }
            let written = if json {
                let sep = if first { "" } else { "," };
                first = false;
                serde_json::to_string(&name).map_err(std::io::Error::other).and_then(|n| write!(out, "{sep}{n}"))
            } else {
                writeln!(out, "{name}")
            };
            if let Err(e) = written {
                io_error = Some(e);
            }
        })
        .await;
    if let Some(e) = io_error {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            return Ok(());
        }
        return Err(format!("cannot write the list: {e}"));
    }
    if json {
        let _ = out.write_all(b"]\n");
    }
    let _ = out.flush();
    result.map(|_| ()).map_err(|e| short_error(&e))
}
