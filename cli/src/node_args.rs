//! Where a command finds the node: its configuration (`--config`, or
//! `ZMANAGER_CONFIG`), and the endpoints and data directory, each taken from
//! its flag (or environment variable), else the configuration, else the
//! built-in default. So a node run on its own configuration is reached by
//! every command with that one file.

use std::path::PathBuf;

use anyhow::Context;
use zmanager::node::config::NodeConfig;
use zmanager::security::{read_key_file, read_public_key, z85};
use zmanager::transport::ClientKeys;
use zmanager_client::ServiceOptions;

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
    #[command(flatten)]
    keys: KeyArgs,
}

impl EndpointArgs {
    /// Options for a service named `name` connecting to the node of
    /// `config` (the flags first), with its keys when it has some.
    pub(crate) fn service(self, name: &str, config: &NodeConfig) -> anyhow::Result<ServiceOptions> {
        let keys = self.keys.load(config)?;
        Ok(ServiceOptions {
            intake: self
                .intake
                .unwrap_or_else(|| config.endpoints.intake.clone()),
            publish: self
                .publish
                .unwrap_or_else(|| config.endpoints.publish.clone()),
            // With a key, the service is the id the node binds it to.
            id: keys.as_ref().and_then(|k| service_of(config, k)),
            keys,
            ..ServiceOptions::local(name)
        })
    }
}

/// `--key-file` and `--server-key`: CURVE, for a node with `[security]`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    /// This client's key pair (`zmanager keys new`): its public key must be
    /// one the node lists under `[[security.service]]`.
    #[arg(long, global = true, env = "ZMANAGER_KEY_FILE", value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The node's public key, as Z85 text or its `.pub` file [default: the
    /// public key of the configuration's `security.key_file`]. Z85 has
    /// `-` in its alphabet, so a key may begin with one.
    #[arg(
        long,
        global = true,
        env = "ZMANAGER_SERVER_KEY",
        value_name = "KEY|FILE",
        allow_hyphen_values = true
    )]
    server_key: Option<String>,
}

impl KeyArgs {
    /// The keys named, if a key file is.
    pub(crate) fn load(&self, config: &NodeConfig) -> anyhow::Result<Option<ClientKeys>> {
        let Some(file) = &self.key_file else {
            anyhow::ensure!(
                self.server_key.is_none(),
                "--server-key needs --key-file: the client's own key pair"
            );
            return Ok(None);
        };
        let (public, secret) = read_key_file(file).map_err(anyhow::Error::msg)?;
        let server = match (&self.server_key, &config.security) {
            (Some(given), _) => {
                read_public_key(given).map_err(|e| anyhow::anyhow!("--server-key: {e}"))?
            }
            (None, Some(security)) => read_public_key(&security.key_file.display().to_string())
                .map_err(anyhow::Error::msg)
                .context("the node's public key, from its configuration's security.key_file")?,
            (None, None) => anyhow::bail!(
                "--key-file needs the node's public key: --server-key KEY|FILE, or --config with its [security]"
            ),
        };
        Ok(Some(ClientKeys {
            server,
            public,
            secret,
        }))
    }
}

/// The service id `config` binds `keys`' public key to, if it lists it.
fn service_of(config: &NodeConfig, keys: &ClientKeys) -> Option<String> {
    let public = z85(&keys.public);
    config
        .security
        .as_ref()?
        .services
        .iter()
        .find(|s| s.public_key == public)
        .map(|s| s.id.clone())
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
        self.endpoints.service(name, &config)
    }
}
