//! One module per subcommand, each thin: it validates its flags ([`crate::settings`]), asks [`crate::plan`],
//! [`crate::scope`] or [`crate::engine`] for the work, and prints. Cluster commands are async and share a
//! [`crate::ctx::Ctx`]. No command uses another's internals.

mod audit;
mod backfill;
mod config;
mod copy;
mod delete;
mod demo;
mod drain;
mod du;
mod gentestmetrics;
mod inconsistent;
mod json;
mod list;
mod locate;
mod rebalance;
mod repair;
mod restore;
mod ring;
mod servers;
mod stat;
mod tar;
mod whisper;

use anyhow::Context;

use crate::cli::Command;
use crate::ExitStatus;

/// Runs a command: local ones directly, cluster ones on a Tokio runtime.
pub(crate) fn run(command: Command) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Whisper(cmd) => whisper::run(cmd),
        Command::Ring(cmd) => ring::run(cmd),
        Command::Json(args) => json::run(&args),
        Command::GenTestMetrics(args) => gentestmetrics::run(&args),
        Command::Modify(args) => whisper::run(crate::cli::WhisperCommand::Modify(args)),
        Command::Config(cmd) => config::run(&cmd),
        other => {
            // One worker thread (besides the main thread, which drives the command): a cluster command
            // waits on the network, and its CPU (snappy, verifying copies: about 0.2 ms a metric moved) fits
            // in one thread at thousands of metrics per second. Each more thread that allocates gets a
            // malloc arena of its own, which keeps the memory it freed: with one thread per core the
            // rebalance of scripts/bench-cluster.sh peaked at 80 MB, with one at 60 MB, in the same time.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .context("cannot start the async runtime")?;
            runtime.block_on(run_async(other))
        }
    }
}

async fn run_async(command: Command) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Servers(args) => servers::run(&args).await,
        Command::List(args) => list::run(&args).await,
        Command::Locate(args) => locate::run(&args).await,
        Command::Inconsistent(args) => inconsistent::run(&args).await,
        Command::Rebalance(args) => rebalance::run(&args).await,
        Command::Drain(args) => drain::run(&args).await,
        Command::Audit(args) => audit::run(&args).await,
        Command::Repair(args) => repair::run(&args).await,
        Command::Backfill(args) => backfill::run(&args).await,
        Command::Backfill2(args) => backfill::run_between_clusters(&args).await,
        Command::Copy(args) => copy::run(&args).await,
        Command::Tar(args) => tar::run(&args).await,
        Command::Restore(args) => restore::run(&args).await,
        Command::Delete(args) => delete::run(&args).await,
        Command::Du(args) => du::run(&args).await,
        Command::Stat(args) => stat::run(&args).await,
        Command::Demo(args) => demo::run(&args).await,
        Command::Whisper(_)
        | Command::Ring(_)
        | Command::Json(_)
        | Command::GenTestMetrics(_)
        | Command::Modify(_)
        | Command::Config(_) => {
            unreachable!("local commands run without the runtime")
        }
    }
}
