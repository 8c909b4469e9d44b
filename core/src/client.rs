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
