//! `bucky copy --src HOST:PORT --dst HOST:PORT`: heal every metric of one agent into another (whole
//! node, or a regex), verified by content like rebalance. Never deletes. Needs no ring: the agents may
//! belong to different clusters.

use clap::Args;

use super::Ctx;
use crate::cli::{ClusterArgs, EngineArgs};
use crate::client::ListQuery;
use crate::cluster::short_error;
use crate::config::Addr;
use crate::engine::{self, Job, Operation};
use crate::engine_settings::engine_options;
use crate::{ExitStatus, UsageError};

/// `bucky copy`.
#[derive(Debug, Args)]
pub struct CopyArgs {
    /// Common flags (`-h` is not used).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Engine flags.
    #[command(flatten)]
    pub engine: EngineArgs,
    /// The agent to copy from, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub src: String,
    /// The agent to copy into, HOST[:PORT].
    #[arg(long, value_name = "HOST:PORT")]
    pub dst: String,
    /// Only metrics matching this regex (RE2 syntax).
    #[arg(short = 'r', long, value_name = "REGEX")]
    pub regex: Option<String>,
}

/// Copies a node.
pub async fn run(args: &CopyArgs) -> anyhow::Result<ExitStatus> {
    let ctx = Ctx::new(&args.cluster)?;
    let options = engine_options(Operation::Copy, &args.engine, ctx.config.workers, false)?;
    let src = Addr::parse(&args.src, crate::config::DEFAULT_PORT)?;
    let dst = Addr::parse(&args.dst, crate::config::DEFAULT_PORT)?;
    if src == dst {
        return Err(UsageError("--src and --dst are the same agent".into()).into());
    }
    if let Some(r) = &args.regex {
        regex::Regex::new(r).map_err(|e| UsageError(format!("invalid regex: {e}")))?;
    }
    let query = ListQuery { regex: args.regex.clone(), force: ctx.config.force };
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
        .map_err(|e| anyhow::anyhow!("cannot list {src}: {}", short_error(&e)))?;
    ctx.printer.info(format!("{} metrics on {src}", jobs.len()));
    engine::run_jobs(&ctx.client, &ctx.printer, options, jobs, args.engine.no_op).await
}
