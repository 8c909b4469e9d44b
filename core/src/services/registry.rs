//! Service management's state: which services are registered, the flows and
//! topics each serves, and whether each is up (heartbeating) or down.
//!
//! It lives in the node, owned by the Subject's loop, because it is shared
//! state: workers are separate, stateless processes, and `zmanager
//! services` must see what every service registered. Services reach it
//! through the node's built-in flows below, which the Subject answers
//! itself (they are not in the catalog and no worker runs them):
//!
//! | flow | payload | result |
//! |---|---|---|
//! | [`REGISTER`] | `{"id", "topics": [..], "flows": [..]}` | the entry |
//! | [`HEARTBEAT`] | `{"id"}` or nil | the entry; `unknown_service` if not registered |
//! | [`LIST`] | nil | every entry, `status` `"up"` or `"down"` |
//! | [`ADD_TOPIC`], [`REMOVE_TOPIC`] | `{"service", "topic"}` | the entry |
//! | [`STEPS`] | nil | each service given steps: UP or DOWN, backlog, last error (answered by the Subject from its outboxes) |
//!
//! An empty or absent `id`/`service` means the requesting service. DigitalPy's
//! four service-management flows (`flows/service_management.ini`) are
//! answered by [`crate::services::management`] over these.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::wire::error_code::ErrorCode;

/// The built-in flows' names and their payloads are the wire protocol's,
/// defined once in the client crate.
pub use zmanager_client::registry::{
    ADD_TOPIC, DURABLES, HEARTBEAT, LIST, REGISTER, REMOVE_TOPIC, Registration, STEPS, ServiceInfo,
};

/// True for the flows the Subject answers itself.
pub fn is_builtin(flow: &str) -> bool {
    [
        REGISTER,
        HEARTBEAT,
        LIST,
        ADD_TOPIC,
        REMOVE_TOPIC,
        STEPS,
        DURABLES,
    ]
    .contains(&flow)
}

#[derive(Debug)]
struct Entry {
    topics: Vec<String>,
    flows: Vec<String>,
    last_seen: Instant,
}

/// The registered services (bounded).
#[derive(Debug)]
pub struct ServiceRegistry {
    services: BTreeMap<String, Entry>,
    liveness: Duration,
    capacity: usize,
}

impl ServiceRegistry {
    pub fn new(liveness: Duration, capacity: usize) -> Self {
        Self {
            services: BTreeMap::new(),
            liveness,
            capacity: capacity.max(1),
        }
    }

    /// Answers a built-in flow from `caller` with `payload` (MessagePack);
    /// returns the result's payload or the error to send.
    pub fn handle(
        &mut self,
        flow: &str,
        caller: &str,
        payload: &[u8],
        now: Instant,
    ) -> Result<Vec<u8>, (ErrorCode, String)> {
        let mut request: Registration = if payload.is_empty() || payload == [0xc0] {
            Registration::default()
        } else {
            zmanager_sdk::decode(payload).map_err(|e| {
                (
                    ErrorCode::BadRequest,
                    format!(
                        "{flow}: the payload is not a map of id/service, topics, flows, topic: {e}"
                    ),
                )
            })?
        };
        if request.id.is_empty() {
            caller.clone_into(&mut request.id);
        }
        if request.id.is_empty() {
            return Err((
                ErrorCode::BadRequest,
                format!("{flow}: no service id (set `id` or the envelope's `service`)"),
            ));
        }
        let id = request.id.clone();
        match flow {
            REGISTER => {
                if !self.services.contains_key(&id) && self.services.len() >= self.capacity {
                    self.evict_one_down(now).ok_or_else(|| {
                        (
                            ErrorCode::Overloaded,
                            format!(
                                "{} services are registered and up (max_services)",
                                self.capacity
                            ),
                        )
                    })?;
                }
                tracing::info!(service = %id, topics = ?request.topics, flows = ?request.flows, "service registered");
                self.services.insert(
                    id.clone(),
                    Entry {
                        topics: request.topics,
                        flows: request.flows,
                        last_seen: now,
                    },
                );
                Ok(encode(&self.info(&id, now)))
            }
            HEARTBEAT => {
                self.entry(&id)?.last_seen = now;
                Ok(encode(&self.info(&id, now)))
            }
            ADD_TOPIC | REMOVE_TOPIC => {
                if request.topic.is_empty() {
                    return Err((ErrorCode::BadRequest, format!("{flow}: no `topic`")));
                }
                let entry = self.entry(&id)?;
                entry.topics.retain(|t| *t != request.topic);
                if flow == ADD_TOPIC {
                    entry.topics.push(request.topic);
                }
                Ok(encode(&self.info(&id, now)))
            }
            _ => {
                let all: Vec<ServiceInfo> = self
                    .services
                    .keys()
                    .filter_map(|id| self.info(id, now))
                    .collect();
                Ok(encode(&all))
            }
        }
    }

    fn entry(&mut self, id: &str) -> Result<&mut Entry, (ErrorCode, String)> {
        self.services.get_mut(id).ok_or_else(|| {
            (
                ErrorCode::UnknownService,
                format!("no service {id:?} is registered (register it first)"),
            )
        })
    }

    fn is_up(&self, entry: &Entry, now: Instant) -> bool {
        now.duration_since(entry.last_seen) <= self.liveness
    }

    fn info(&self, id: &str, now: Instant) -> Option<ServiceInfo> {
        let entry = self.services.get(id)?;
        Some(ServiceInfo {
            id: id.to_owned(),
            topics: entry.topics.clone(),
            flows: entry.flows.clone(),
            status: if self.is_up(entry, now) { "up" } else { "down" }.to_owned(),
            last_seen_ms: u64::try_from(now.duration_since(entry.last_seen).as_millis())
                .unwrap_or(u64::MAX),
        })
    }

    /// Forgets the service down the longest; None if every one is up.
    fn evict_one_down(&mut self, now: Instant) -> Option<()> {
        let oldest = self
            .services
            .iter()
            .filter(|(_, e)| !self.is_up(e, now))
            .min_by_key(|(_, e)| e.last_seen)
            .map(|(id, _)| id.clone())?;
        self.services.remove(&oldest);
        Some(())
    }
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap_or_else(|_| vec![0xc0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp(value: &impl Serialize) -> Vec<u8> {
        rmp_serde::to_vec_named(value).unwrap()
    }

    #[test]
    fn registers_heartbeats_lists_and_marks_down() {
        let mut r = ServiceRegistry::new(Duration::from_secs(1), 2);
        let t0 = Instant::now();
        let reg = Registration {
            topics: vec!["A~PUBLISH~".into()],
            flows: vec!["A".into()],
            ..Registration::default()
        };
        r.handle(REGISTER, "svc", &mp(&reg), t0).unwrap();
        let list: Vec<ServiceInfo> =
            zmanager_sdk::decode(&r.handle(LIST, "x", &[0xc0], t0).unwrap()).unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(
            (list[0].id.as_str(), list[0].status.as_str()),
            ("svc", "up")
        );
        assert_eq!(list[0].topics, ["A~PUBLISH~"]);
        let later = t0 + Duration::from_secs(2);
        let list: Vec<ServiceInfo> =
            zmanager_sdk::decode(&r.handle(LIST, "x", &[0xc0], later).unwrap()).unwrap();
        assert_eq!(list[0].status, "down");
        r.handle(HEARTBEAT, "svc", &[0xc0], later).unwrap();
        let info: ServiceInfo =
            zmanager_sdk::decode(&r.handle(HEARTBEAT, "svc", &[0xc0], later).unwrap()).unwrap();
        assert_eq!(info.status, "up");
        let err = r.handle(HEARTBEAT, "nobody", &[0xc0], later).unwrap_err();
        assert_eq!(err.0, ErrorCode::UnknownService);
        let put = Registration {
            id: "svc".into(),
            topic: "B~".into(),
            ..Registration::default()
        };
        let info: ServiceInfo =
            zmanager_sdk::decode(&r.handle(ADD_TOPIC, "x", &mp(&put), later).unwrap()).unwrap();
        assert_eq!(info.topics, ["A~PUBLISH~", "B~"]);
        let info: ServiceInfo =
            zmanager_sdk::decode(&r.handle(REMOVE_TOPIC, "x", &mp(&put), later).unwrap()).unwrap();
        assert_eq!(info.topics, ["A~PUBLISH~"]);
    }

    #[test]
    fn is_bounded_and_evicts_down_services_first() {
        let mut r = ServiceRegistry::new(Duration::from_secs(1), 1);
        let t0 = Instant::now();
        r.handle(REGISTER, "a", &[0xc0], t0).unwrap();
        let err = r.handle(REGISTER, "b", &[0xc0], t0).unwrap_err();
        assert_eq!(err.0, ErrorCode::Overloaded);
        r.handle(REGISTER, "b", &[0xc0], t0 + Duration::from_secs(5))
            .unwrap();
        let list: Vec<ServiceInfo> = zmanager_sdk::decode(
            &r.handle(LIST, "x", &[0xc0], t0 + Duration::from_secs(5))
                .unwrap(),
        )
        .unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].id, "b");
    }
}
