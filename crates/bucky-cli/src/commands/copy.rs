//! `bucky copy --src HOST:PORT --dst HOST:PORT`: heal every metric of one agent into another (whole
//! node, or a regex), verified by content like rebalance. Never deletes. Needs no ring: the agents may
//! belong to different clusters.

use anyhow::Context;

use crate::cli::CopyArgs;
use crate::client::ListQuery;
use crate::config::{Addr, DEFAULT_PORT};
use crate::ctx::Ctx;
use crate::engine::{self, Job, Operation};
use crate::settings::engine_options;
use crate::{settings, ExitStatus, UsageError};

/// Copies a node.
pub(super) async fn run(args: &CopyArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(settings::config(&args.cluster)?)?;
    let options = engine_options(Operation::Copy, &args.engine, ctx.config.workers, false)?;
    let src = Addr::parse(&args.src, DEFAULT_PORT)?;
    let dst = Addr::parse(&args.dst, DEFAULT_PORT)?;
    if src == dst {
        return Err(UsageError("--src and --dst are the same agent".into()).into());
    }
    let query = ListQuery { regex: args.regex.as_ref().map(|r| r.as_str().to_owned()), force: ctx.config.force };
    let mut jobs = Vec::new();
    ctx.client
        .list(&src, &query, |name| {
            jobs.push(Job {
                name: name.clone(),
                source_name: name,
                source: src.clone(),
                dests: vec![dst.clone()],
                keep_source: true,
            })
        })
        .await
        .with_context(|| format!("cannot list {src}"))?;
    ctx.printer.info(format!("{} metrics on {src}", jobs.len()));
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}
