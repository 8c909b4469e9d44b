//! Durable subscriptions in the Subject: a `subscribe` names one, an `ack`
//! moves it on, and at the end of each turn every publication of the turn
//! is kept by the subscriptions whose prefixes it matches, and what their
//! windows allow is delivered (`crate::services::durable`).

use bytes::Bytes;
use serde::Deserialize;

use super::core::{Effect, SubjectCore};
use crate::catalog::topic::starts_with_reply_topic;
use crate::integration_manager::Publication;
use crate::services::durable::{Durable, DurableInfo};
use crate::wire::Message;
use crate::wire::error_code::ErrorCode;

/// A `subscribe` message's payload.
#[derive(Debug, Deserialize)]
struct Subscribe {
    name: String,
    /// None: the subscription is deleted.
    #[serde(default)]
    prefixes: Vec<String>,
    #[serde(default = "default_window")]
    window: u32,
}

fn default_window() -> u32 {
    100
}

/// An `ack` message's payload.
#[derive(Debug, Deserialize)]
struct Ack {
    name: String,
    seq: u64,
}

impl SubjectCore {
    /// A subscriber names a durable subscription (or deletes it).
    pub(super) fn on_subscribe(&mut self, mut message: Message) {
        let service = message.envelope.service.clone();
        if !starts_with_reply_topic(message.envelope.reply_to.as_bytes(), &service) {
            let own = crate::catalog::topic::reply_topic(&service);
            let text = format!(
                "a subscribe names the topic its deliveries go to in reply_to, which must start with the service's own {own:?}"
            );
            message.envelope.reply_to = own;
            return self.refuse(message, ErrorCode::BadRequest, text);
        }
        let asked: Subscribe = match zmanager_sdk::decode(&message.payload) {
            Ok(asked) => asked,
            Err(e) => {
                let text =
                    format!("a subscribe's payload is a map {{name, prefixes, window}}: {e}");
                return self.refuse(message, ErrorCode::BadRequest, text);
            }
        };
        if asked.name.is_empty()
            || !asked
                .name
                .chars()
                .all(crate::catalog::action_key::is_field_char)
        {
            let text = format!(
                "durable name {:?}: use letters, digits, `_`, `-` and `.`",
                asked.name
            );
            return self.refuse(message, ErrorCode::BadRequest, text);
        }
        let key = (service.clone(), asked.name.clone());
        if asked.prefixes.is_empty() {
            self.durables.remove(&key);
            tracing::info!(%service, name = %asked.name, "durable subscription deleted");
            return;
        }
        if let Some(prefix) = asked
            .prefixes
            .iter()
            .find(|p| !self.permissions.may_read(Some(&service), p.as_bytes()))
        {
            let text =
                format!("service {service:?} may not read {prefix:?} ([security] subscribe)");
            return self.refuse(message, ErrorCode::Forbidden, text);
        }
        let topic = message.envelope.reply_to.clone();
        let mut made = message.envelope.clone();
        made.kind = crate::wire::envelope::Kind::Accepted;
        match self.durables.get_mut(&key) {
            Some(durable) => durable.resubscribe(asked.prefixes, topic.clone(), asked.window),
            None => {
                if self.durables.len() >= self.options.max_durables {
                    let text = format!(
                        "{} durable subscriptions already (max_durables)",
                        self.durables.len()
                    );
                    return self.refuse(message, ErrorCode::Overloaded, text);
                }
                tracing::info!(%service, name = %asked.name, "durable subscription made");
                // Never the time of one made before it by this node (a
                // delete and a subscribe in one turn share the turn's time).
                let made_us = self.now.wall_us.max(self.durable_made_us + 1);
                self.durable_made_us = made_us;
                let durable = Durable::new(
                    asked.prefixes,
                    topic.clone(),
                    asked.window,
                    self.options.durable_retention,
                    made_us,
                );
                self.durables.insert(key.clone(), durable);
            }
        }
        // Told on its topic once made, before anything is delivered on
        // it: the sequence number acknowledged so far, after which the
        // deliveries go on, and (as `accepted_us`) when the subscription
        // was made: another time than before means another subscription
        // (the node restarted and lost the old one), numbered from 1.
        let durable = self.durables.get(&key);
        made.accepted_us = durable.map_or(0, Durable::made_us);
        let acked = durable.map_or(0, Durable::acked);
        let acked = rmp_serde::to_vec(&acked).unwrap_or_default();
        self.publish(topic, Message::new(made, Bytes::from(acked)));
    }

    /// A durable subscriber acknowledges what it got.
    pub(super) fn on_ack(&mut self, message: Message) {
        let ack: Ack = match zmanager_sdk::decode(&message.payload) {
            Ok(ack) => ack,
            Err(e) => {
                let text = format!("an ack's payload is a map {{name, seq}}: {e}");
                return self.refuse(message, ErrorCode::BadRequest, text);
            }
        };
        let key = (message.envelope.service.clone(), ack.name);
        match self.durables.get_mut(&key) {
            Some(durable) => durable.ack(ack.seq),
            None => {
                let text = format!(
                    "service {:?} has no durable subscription {:?}",
                    key.0, key.1
                );
                self.refuse(message, ErrorCode::BadRequest, text);
            }
        }
    }

    /// The turn's publications are kept by the durable subscriptions that
    /// want them; then each sends what its window allows.
    pub(super) fn tend_durables(&mut self) {
        if self.durables.is_empty() {
            return;
        }
        let now = self.now.at;
        for effect in &self.effects {
            let Effect::Publish(p) = effect else {
                continue;
            };
            for durable in self.durables.values_mut() {
                if durable.wants(&p.topic) {
                    durable.keep(&p.topic, Message::clone(&p.message), now);
                }
            }
        }
        let mut deliveries = Vec::new();
        for durable in self.durables.values_mut() {
            durable.expire(now);
            deliveries.extend(durable.next_sends());
        }
        self.effects.extend(
            deliveries
                .into_iter()
                .map(|(topic, message)| Effect::Publish(Publication::new(topic, message))),
        );
    }

    /// Each durable subscription (`ServiceManagement_Durables`).
    pub(super) fn durables_info(&self) -> Bytes {
        let all: Vec<DurableInfo> = self
            .durables
            .iter()
            .map(|((service, name), d)| d.info(service, name))
            .collect();
        // A list of plain structs always encodes.
        Bytes::from(rmp_serde::to_vec_named(&all).unwrap_or_default())
    }
}
