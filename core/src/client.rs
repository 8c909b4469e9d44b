//! The Rust client for services, which is its own crate, `zmanager-client`
//! (`clients/rust/`): a service depends on it alone, without the node.
//! Re-exported here so that `zmanager::client::…` keeps working.

pub use zmanager_client::service::*;

use crate::node::config;

/// A node's configured endpoints, as a service connects to them
/// (`ServiceOptions::with_endpoints(name, &config.endpoints)`).
impl From<&config::Endpoints> for Endpoints {
    fn from(endpoints: &config::Endpoints) -> Self {
        Self {
            intake: endpoints.intake.clone(),
            publish: endpoints.publish.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node listens where a client connects by default: both take the
    /// client crate's defaults.
    #[test]
    fn the_node_s_default_endpoints_are_the_client_s() {
        let node = config::Endpoints::default();
        assert_eq!(Endpoints::from(&node), Endpoints::default());
        let options = ServiceOptions::with_endpoints("t", &node);
        assert_eq!(
            (options.intake.as_str(), options.publish.as_str()),
            (DEFAULT_INTAKE, DEFAULT_PUBLISH)
        );
    }
}
