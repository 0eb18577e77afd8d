//! One module per subcommand. Cluster commands are async and share a [`Ctx`]: the validated config, the
//! HTTP client and the printer.

pub mod backfill;
pub mod config;
pub mod copy;
pub mod delete;
pub mod demo;
pub mod drain;
pub mod du;
pub mod gentestmetrics;
pub mod inconsistent;
pub mod json;
pub mod list;
pub mod locate;
pub mod rebalance;
pub mod restore;
pub mod ring;
pub mod servers;
pub mod stat;
pub mod tar;
pub mod whisper;

use anyhow::Context;

use crate::cli::{ClusterArgs, Command};
use crate::client::Client;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::printer::Printer;
use crate::ExitStatus;

/// What every cluster command works with.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Validated common flags.
    pub config: Config,
    /// The HTTP client.
    pub client: Client,
    /// All output.
    pub printer: Printer,
}

impl Ctx {
    /// Validates the common flags and builds the client and the printer.
    pub fn new(args: &ClusterArgs) -> anyhow::Result<Ctx> {
        let config = Config::from_args(args)?;
        let client = Client::new(&config).context("cannot set up the HTTP client")?;
        let printer = Printer::from_config(&config);
        Ok(Ctx { config, client, printer })
    }

    /// Discovers the cluster from the seed (problems are printed as warnings).
    pub async fn cluster(&self) -> anyhow::Result<Cluster> {
        Cluster::connect(&self.client, &self.config, &self.printer).await
    }
}

/// Runs a command: local ones directly, cluster ones on a Tokio runtime.
pub fn run(command: Command) -> anyhow::Result<ExitStatus> {
    match command {
        Command::Whisper(cmd) => whisper::run(cmd),
        Command::Ring(cmd) => ring::run(cmd),
        Command::Json(args) => json::run(&args),
        Command::GenTestMetrics(args) => gentestmetrics::run(&args),
        Command::Modify(args) => whisper::run(whisper::WhisperCommand::Modify(args)),
        Command::Config(cmd) => config::run(&cmd),
        other => {
            let runtime = tokio::runtime::Builder::new_multi_thread()
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
