//! The node endpoints a command that acts as a service connects to.

use zmanager::config::Endpoints;
use zmanager::service::ServiceOptions;

/// `--intake` and `--publish`, the node's defaults unless given.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    /// The Subject's intake endpoint.
    #[arg(long, default_value_t = Endpoints::default().intake)]
    pub(crate) intake: String,
    /// The Integration Manager's endpoint.
    #[arg(long, default_value_t = Endpoints::default().publish)]
    pub(crate) publish: String,
}

impl NodeArgs {
    /// Options for a service named `name` connecting to these endpoints.
    pub(crate) fn service(self, name: &str) -> ServiceOptions {
        ServiceOptions {
            intake: self.intake,
            publish: self.publish,
            ..ServiceOptions::local(name)
        }
    }
}
