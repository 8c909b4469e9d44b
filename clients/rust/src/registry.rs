//! What a service sends to, and gets from, the node's service management:
//! the built-in flows the node answers itself, and their payloads
//! (`docs/decorators.md`, "Service management"). The registry's own state
//! is the node's (`zmanager::services::registry`), which re-exports these.
//!
//! | flow | payload | result |
//! |---|---|---|
//! | [`REGISTER`] | a [`Registration`]: `{"id", "topics": [..], "flows": [..]}` | the [`ServiceInfo`] |
//! | [`HEARTBEAT`] | `{"id"}` or nil | the [`ServiceInfo`]; `unknown_service` if not registered |
//! | [`LIST`] | nil | every [`ServiceInfo`], `status` `"up"` or `"down"` |
//! | [`ADD_TOPIC`], [`REMOVE_TOPIC`] | `{"service", "topic"}` | the [`ServiceInfo`] |
//! | [`STEPS`] | nil | each service given steps |
//! | [`DURABLES`] | nil | the durable subscriptions |
//!
//! An empty or absent `id`/`service` means the requesting service.

use serde::{Deserialize, Serialize};

pub const REGISTER: &str = "ServiceManagement_Register";
pub const HEARTBEAT: &str = "ServiceManagement_Heartbeat";
pub const LIST: &str = "ServiceManagement_List";
pub const ADD_TOPIC: &str = "ServiceManagement_AddTopic";
pub const REMOVE_TOPIC: &str = "ServiceManagement_RemoveTopic";
/// The steps given to each service (`[services]`): a list of the node's
/// `zmanager::services::steps::StepsInfo`.
pub const STEPS: &str = "ServiceManagement_Steps";
/// The durable subscriptions: a list of the node's
/// `zmanager::services::durable::DurableInfo`.
pub const DURABLES: &str = "ServiceManagement_Durables";

/// A request to the registry (every field optional).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registration {
    #[serde(default, alias = "service")]
    pub id: String,
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub flows: Vec<String>,
    #[serde(default)]
    pub topic: String,
}

/// What the registry says about a service.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    pub id: String,
    pub topics: Vec<String>,
    pub flows: Vec<String>,
    /// `"up"` or `"down"` (no heartbeat for `service_liveness`).
    pub status: String,
    /// Milliseconds since its last registration or heartbeat.
    pub last_seen_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A registration as another language writes it: `service` for `id`,
    /// fields left out.
    #[test]
    fn a_registration_takes_service_for_id_and_defaults() {
        #[derive(Serialize)]
        struct Theirs<'a> {
            service: &'a str,
            topics: [&'a str; 1],
        }
        let bytes = rmp_serde::to_vec_named(&Theirs {
            service: "ada",
            topics: ["Announce~"],
        })
        .unwrap();
        let r: Registration = zmanager_sdk::decode(&bytes).unwrap();
        assert_eq!(r.id, "ada");
        assert_eq!(r.topics, ["Announce~"]);
        assert!(r.flows.is_empty() && r.topic.is_empty());
    }

    #[test]
    fn service_info_round_trips_as_a_map() {
        let info = ServiceInfo {
            id: "ada".into(),
            topics: vec!["Announce~".into()],
            flows: vec!["Chat".into()],
            status: "up".into(),
            last_seen_ms: 12,
        };
        let bytes = rmp_serde::to_vec_named(&info).unwrap();
        let back: ServiceInfo = zmanager_sdk::decode(&bytes).unwrap();
        assert_eq!(back, info);
    }
}
