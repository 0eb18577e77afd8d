//! The metrics of a scoped command (`list`, `du`, `stat`, `tar`, `delete`): where they are, statted, and
//! what could not be read, grouped by the agent that failed.

use std::collections::BTreeMap;

use bucky_wire::MetricStat;
use futures_util::StreamExt;
use serde::Serialize;

use crate::client::ClientError;
use crate::cluster::Cluster;
use crate::config::Addr;
use crate::ctx::Ctx;
use crate::plan::{gather, targets, Gathered};
use crate::settings::Scope;

/// Metrics that could not be read, grouped by the agent that failed: its reason said once, not per metric.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Unread {
    /// Per agent: why (its first error), and the metrics not read from it.
    pub(crate) agents: BTreeMap<String, UnreadOn>,
    /// Metrics that failed for a reason of their own (not a valid whisper file, a bad name): why.
    pub(crate) metrics: BTreeMap<String, String>,
}

/// What could not be read from one agent.
#[derive(Debug, Default, Serialize)]
pub(crate) struct UnreadOn {
    /// The first error (the others are alike: the agent is down, or refuses).
    pub(crate) reason: String,
    /// The metrics.
    pub(crate) metrics: Vec<String>,
}

impl Unread {
    /// `name` could not be read from `addr`.
    pub(crate) fn on_agent(&mut self, addr: &Addr, name: &str, why: String) {
        let on = self.agents.entry(addr.to_string()).or_default();
        if on.reason.is_empty() {
            on.reason = why;
        }
        on.metrics.push(name.to_owned());
    }

    /// `name` could not be used, for a reason of its own.
    pub(crate) fn metric(&mut self, name: &str, why: String) {
        self.metrics.insert(name.to_owned(), why);
    }

    /// Metrics not read (a metric counted once per agent that failed it).
    pub(crate) fn count(&self) -> usize {
        self.agents.values().map(|a| a.metrics.len()).sum::<usize>() + self.metrics.len()
    }

    /// One error line per agent (reason once, then the first names) and per metric of its own.
    pub(crate) fn report(&self, ctx: &Ctx) {
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

/// A scoped command's start: the client, the cluster, and where the selected metrics are.
/// `check` runs before any network traffic (for early refusals).
pub(crate) async fn open_scope(
    scope: Scope,
    check: impl FnOnce(&Ctx) -> anyhow::Result<()>,
) -> anyhow::Result<(Ctx, Cluster, Gathered)> {
    let Scope { config, selection, single } = scope;
    let ctx = Ctx::new(config)?;
    check(&ctx)?;
    let cluster = ctx.cluster().await?;
    let (agents, failed) = targets(&cluster, single);
    let mut gathered = gather(&ctx, &selection, &agents).await;
    gathered.warned.extend(failed.iter().map(|(a, _)| a.clone()));
    gathered.failed.extend(failed);
    Ok((ctx, cluster, gathered))
}

/// Stats every listed copy, `--workers` requests per agent, in list order; calls `each` per answer.
pub(crate) async fn stat_each(
    ctx: &Ctx,
    gathered: &Gathered,
    mut each: impl FnMut(&Addr, &str, Result<Option<MetricStat>, ClientError>) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let progress = ctx
        .printer
        .progress("stat", &gathered.lists.iter().map(|(a, l)| (a.to_string(), l.len() as u64)).collect::<Vec<_>>());
    let width = ctx.config.workers * gathered.lists.len().max(1);
    let copies = gathered.lists.iter().flat_map(|(addr, list)| list.iter().map(move |name| (addr, name)));
    let mut answers = futures_util::stream::iter(copies)
        .map(|(addr, name)| async move { (addr, name, ctx.client.stat(addr, name).await) })
        .buffered(width);
    while let Some((addr, name, result)) = answers.next().await {
        progress.inc(&addr.to_string());
        each(addr, name, result)?;
    }
    Ok(())
}
