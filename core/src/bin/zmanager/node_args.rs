//! Where a command finds the node: its configuration (`--config`, or
//! `ZMANAGER_CONFIG`), and the endpoints and data directory, each taken from
//! its flag (or environment variable), else the configuration, else the
//! built-in default. So a node run on its own configuration is reached by
//! every command with that one file.

use std::path::PathBuf;

use zmanager::config::NodeConfig;
use zmanager::service::ServiceOptions;

/// `--config`: the node's configuration file.
#[derive(Debug, clap::Args)]
pub(crate) struct ConfigArg {
    /// The node's configuration (TOML): its endpoints and data directory
    /// are used unless given otherwise.
    #[arg(long, global = true, env = "ZMANAGER_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
}

impl ConfigArg {
    /// The configuration named, or the built-in defaults.
    pub(crate) fn load(&self) -> anyhow::Result<NodeConfig> {
        Ok(match &self.config {
            Some(path) => NodeConfig::from_file(path)?,
            None => NodeConfig::default(),
        })
    }
}

/// `--intake` and `--publish`.
#[derive(Debug, clap::Args)]
pub(crate) struct EndpointArgs {
    /// The Subject's intake endpoint [default: the configuration's, or
    /// tcp://127.0.0.1:19030].
    #[arg(long, global = true, env = "ZMANAGER_INTAKE")]
    intake: Option<String>,
    /// The Integration Manager's endpoint [default: the configuration's, or
    /// tcp://127.0.0.1:19034].
    #[arg(long, global = true, env = "ZMANAGER_PUBLISH")]
    publish: Option<String>,
}

impl EndpointArgs {
    /// Options for a service named `name` connecting to the node of
    /// `config` (the flags first).
    pub(crate) fn service(self, name: &str, config: &NodeConfig) -> ServiceOptions {
        ServiceOptions {
            intake: self
                .intake
                .unwrap_or_else(|| config.endpoints.intake.clone()),
            publish: self
                .publish
                .unwrap_or_else(|| config.endpoints.publish.clone()),
            ..ServiceOptions::local(name)
        }
    }
}

/// `--data-dir`.
#[derive(Debug, clap::Args)]
pub(crate) struct DataDirArg {
    /// The node's data directory [default: the configuration's, or
    /// zmanager-data].
    #[arg(long, global = true, env = "ZMANAGER_DATA_DIR")]
    data_dir: Option<PathBuf>,
}

impl DataDirArg {
    pub(crate) fn resolve(self, config: &NodeConfig) -> PathBuf {
        self.data_dir.unwrap_or_else(|| config.data_dir.clone())
    }
}

/// A configuration and endpoints: what a command acting as a service needs.
#[derive(Debug, clap::Args)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    config: ConfigArg,
    #[command(flatten)]
    endpoints: EndpointArgs,
}

impl NodeArgs {
    /// Options for a service named `name` connecting to the node.
    pub(crate) fn service(self, name: &str) -> anyhow::Result<ServiceOptions> {
        let config = self.config.load()?;
        Ok(self.endpoints.service(name, &config))
    }
}
