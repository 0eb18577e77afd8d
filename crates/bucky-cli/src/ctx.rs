//! [`Ctx`]: what every cluster command works with once its flags are validated: the config, the HTTP
//! client and the printer.

use anyhow::Context;

use crate::client::Client;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::printer::Printer;

/// What every cluster command works with.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    /// Validated common flags.
    pub(crate) config: Config,
    /// The HTTP client.
    pub(crate) client: Client,
    /// All output.
    pub(crate) printer: Printer,
}

impl Ctx {
    /// Builds the client and the printer for `config`.
    pub(crate) fn new(config: Config) -> anyhow::Result<Ctx> {
        let client = Client::new(&config).context("cannot set up the HTTP client")?;
        let printer = Printer::from_config(&config);
        Ok(Ctx { config, client, printer })
    }

    /// Discovers the cluster from the seed (problems are printed as warnings).
    pub(crate) async fn cluster(&self) -> anyhow::Result<Cluster> {
        Cluster::connect(&self.client, &self.config, &self.printer).await
    }
}
