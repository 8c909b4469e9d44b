//! A service's message at the intake: decoded, checked, and accepted,
//! absorbed as a duplicate, answered on the spot (a ping, service
//! management) or refused.

use std::sync::Arc;

use bytes::Bytes;
use zeromq::ZmqMessage;

use super::core::SubjectCore;
use super::result_topic;
use crate::catalog::topic::{self, starts_with_reply_topic};
use crate::inflight::key_in;
use crate::journal::Event;
use crate::services::registry;
use crate::wire::envelope::{Envelope, Kind, PROTOCOL_VERSION, Status};
use crate::wire::error_code::ErrorCode;
use crate::wire::payload;
use crate::wire::trace_context::{self, Adopted};
use crate::wire::{self, Message, WireError};

/// A MessagePack nil: the payload of an error result that has no request
/// payload to return.
static NIL: Bytes = Bytes::from_static(&[0xc0]);

/// How deep a payload may nest: as deep as every decoder here reads
/// (`zmanager_sdk::decode`, whose `rmp_serde` limit of 256 takes 255
/// levels of arrays, maps and extensions).
const MAX_DEPTH: usize = zmanager_sdk::MAX_DEPTH - 1;

impl SubjectCore {
    /// `service`: the id the sender's key is bound to (security on).
    /// `arrived_us`: when the frames were read (0: not known).
    pub(super) fn on_intake(
        &mut self,
        frames: &ZmqMessage,
        service: Option<&str>,
        arrived_us: u64,
    ) {
        let received: usize = frames.iter().map(Bytes::len).sum();
        self.counters.bytes_in += received as u64;
        match wire::decode_topic_message(frames) {
            Ok((_topic, message)) => {
                // The envelope and payload frames, as they came.
                let bytes = frames.iter().skip(1).map(Bytes::len).sum();
                self.accept(message, bytes, service, arrived_us);
            }
            Err(WireError::Invalid {
                mut address,
                source,
            }) => {
                if let Some(who) = service {
                    // Never to a topic of the sender's choosing.
                    address.reply_to = topic::reply_topic(who);
                    who.clone_into(&mut address.service);
                }
                self.counters.malformed += 1;
                let text = format!("the envelope does not decode: {source}");
                tracing::warn!(id = %address.id, reply_to = %address.reply_to, "{text}");
                if address.is_reachable() {
                    let envelope = Envelope::error_for(*address, ErrorCode::MalformedMessage, text);
                    let topic = result_topic(&envelope);
                    self.publish(topic, Message::new(envelope, NIL.clone()));
                }
            }
            Err(e) => {
                self.counters.malformed += 1;
                tracing::warn!(error = %e, "dropping a malformed message from a service");
            }
        }
    }

    fn accept(
        &mut self,
        mut message: Message,
        bytes: usize,
        authenticated: Option<&str>,
        arrived_us: u64,
    ) {
        // Taken off first: no result, log line or journal record carries it.
        let operator = std::mem::take(&mut message.envelope.operator);
        // A request keeps a valid trace context and gets one otherwise
        // (with `start_traces`), so everything it leads to (its refusal
        // too) carries it; any other
        // message loses a malformed one; a ping goes back untouched.
        let adopted = match message.envelope.kind {
            Kind::Request => {
                let start = self.options.start_traces;
                let adopted = trace_context::adopt(&mut message.envelope, start);
                if adopted == Adopted::Replaced {
                    tracing::debug!(id = %message.envelope.id, service = %message.envelope.service, "malformed traceparent: dropped, with its tracestate; a new trace started");
                }
                adopted
            }
            Kind::Ping => Adopted::Without,
            _ => {
                trace_context::drop_malformed(&mut message.envelope);
                Adopted::Without
            }
        };
        if let Some(who) = authenticated {
            let envelope = &message.envelope;
            let reply_to = envelope.reply_to.as_bytes();
            // A take names a topic of the service's own for its instance.
            let reply_to_ok = reply_to.is_empty()
                || (starts_with_reply_topic(reply_to, who)
                    && (reply_to.len() == "@reply~~".len() + who.len()
                        || matches!(envelope.kind, Kind::Take | Kind::Subscribe)));
            if envelope.service != who || !reply_to_ok {
                let own = topic::reply_topic(who);
                let text = if envelope.service == who {
                    format!(
                        "reply_to {:?} is not yours: a service's results go to {own:?} or its flow's results topic",
                        envelope.reply_to
                    )
                } else {
                    format!(
                        "the message says service {:?}, but its key is {who:?}'s",
                        envelope.service
                    )
                };
                // Told to the sender, never to the service it named.
                message.envelope.reply_to = own;
                return self.refuse(message, ErrorCode::WrongService, text);
            }
        }
        let envelope = &message.envelope;
        if envelope.v != PROTOCOL_VERSION {
            let text = format!(
                "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                envelope.v
            );
            return self.refuse(message, ErrorCode::UnsupportedVersion, text);
        }
        if bytes > self.options.max_message_bytes {
            let text = format!(
                "the message is {bytes} bytes (envelope and payload); this node takes at most {} (max_message_bytes)",
                self.options.max_message_bytes
            );
            // Not echoed back: the payload is what is too large.
            message.payload = NIL.clone();
            return self.refuse(message, ErrorCode::TooLarge, text);
        }
        if matches!(envelope.kind, Kind::Request | Kind::Result)
            && let Err(e) = payload::check(&message.payload, MAX_DEPTH)
        {
            let text = format!("the payload is not one MessagePack value: {e}");
            return self.refuse(message, ErrorCode::BadRequest, text);
        }
        let envelope = &message.envelope;
        match envelope.kind {
            Kind::Request => {}
            Kind::Ping => {
                if envelope.reply_to.is_empty() {
                    tracing::warn!(id = %envelope.id, "dropping a ping without reply_to");
                } else {
                    let topic = envelope.reply_to.clone();
                    self.publish(topic, message);
                }
                return;
            }
            Kind::Unknown => {
                let text = "unknown message kind".to_owned();
                return self.refuse(message, ErrorCode::NotSupported, text);
            }
            Kind::Accepted => {
                let text = "`accepted` is sent by the node, not to it".to_owned();
                return self.refuse(message, ErrorCode::NotSupported, text);
            }
            Kind::Result => return self.on_answer(message),
            Kind::Take => return self.on_take(message),
            Kind::Subscribe => return self.on_subscribe(message),
            Kind::Ack => return self.on_ack(message),
            Kind::Step => {
                let text = "`step` is sent by the node, not to it".to_owned();
                return self.refuse(message, ErrorCode::NotSupported, text);
            }
        }
        if let Some(who) = authenticated {
            let flow = &envelope.flow;
            let (allowed, what) = if registry::is_builtin(flow) {
                (
                    self.permissions.may_register(who),
                    "use service management (register = true)".to_owned(),
                )
            } else {
                (
                    self.permissions.may_push(who, flow),
                    format!("push into flow {flow:?} (push = [...])"),
                )
            };
            if !allowed {
                let text = format!("service {who:?} may not {what} ([security])");
                return self.refuse(message, ErrorCode::Forbidden, text);
            }
        }
        // What only the node sets on a request: a service's values mean
        // nothing, and must not reach its result (§3).
        message.envelope.status = Status::Ok;
        message.envelope.error = None;
        message.envelope.origin.clear();
        let envelope = &message.envelope;
        if self.table.contains(envelope) || self.suspended.contains_key(key_in(envelope)) {
            self.counters.duplicates += 1;
            tracing::debug!(id = %envelope.id, service = %envelope.service, "duplicate of a request in flight: absorbed");
            let envelope = envelope.clone();
            self.acknowledge(&envelope);
            return;
        }
        if let Some(result) = self.recent_result(&envelope.service, &envelope.id).cloned() {
            self.counters.duplicates += 1;
            tracing::debug!(id = %envelope.id, service = %envelope.service, "duplicate of a finished request: its result is published again");
            // Behind the commit of its end, like the first time.
            self.publish_result(result_topic(&result.envelope), result);
            return;
        }
        if envelope.flow == registry::DURABLES {
            message.payload = self.durables_info();
            message.envelope.accepted_us = self.now.wall_us;
            return self.answer_now(message);
        }
        if envelope.flow == registry::STEPS {
            let steps = self.steps_info();
            // A list of plain structs always encodes.
            message.payload = Bytes::from(rmp_serde::to_vec_named(&steps).unwrap_or_default());
            message.envelope.accepted_us = self.now.wall_us;
            return self.answer_now(message);
        }
        if registry::is_builtin(&envelope.flow) {
            let answer = self.services.handle(
                &envelope.flow,
                &envelope.service,
                &message.payload,
                self.now.at,
            );
            return match answer {
                Ok(payload) => {
                    message.payload = Bytes::from(payload);
                    message.envelope.accepted_us = self.now.wall_us;
                    self.answer_now(message);
                }
                Err((code, text)) => self.refuse(message, code, text),
            };
        }
        if let Some(error) = self.commits.failing() {
            let text = format!(
                "the node cannot record requests now (journal: {error}); send it again later"
            );
            return self.refuse(message, ErrorCode::Overloaded, text);
        }
        let newest = self.catalogs.newest();
        let (version, catalog) = (newest.number, Arc::clone(&newest.catalog));
        let (position, routed) = match super::steps::entry(&catalog, envelope) {
            Ok(found) => found,
            Err((code, text)) => return self.refuse(message, code, text),
        };
        if !routed.flow.is_entry(position) && !self.is_operator(&operator) {
            let mut text = format!(
                "key {:?} names step {position} of flow {}, which is not an entry point (a request starts at step 0, or at a step its flow marks `entry`)",
                envelope.key, routed.flow.name
            );
            if !operator.is_empty() {
                text.push_str("; the operator cookie it carries is not this node's");
            }
            return self.refuse(message, ErrorCode::NotAnEntry, text);
        }
        if let Err(text) = super::steps::set_order_key(&mut message, routed.flow.order_by.as_ref())
        {
            return self.refuse(message, ErrorCode::BadRequest, text);
        }
        message.envelope.accepted_us = self.now.wall_us;
        message.envelope.attempt = 0;
        // Its version for its whole life, held until it ends (`conclude`).
        message.envelope.catalog = version;
        self.catalogs.hold(version);
        let at_us = message.envelope.accepted_us;
        if self.options.record_spans {
            self.spans
                .accepted(&message.envelope, adopted, arrived_us, at_us);
        }
        self.commits
            .record(|| Event::accepted(at_us, message.clone()));
        // Acknowledged now, while the request is at hand (no copy of its
        // envelope kept for later), and taken back if it is refused.
        let acked = self.acknowledge(&message.envelope);
        let started = match self.admit(message, position + 1) {
            Some(message) => {
                let started = self.advance(message, position + 1);
                self.counters.accepted += u64::from(started);
                started
            }
            // Accepted (counted), waiting behind an earlier request with
            // its key.
            None => true,
        };
        if let (false, Some(acked)) = (started, acked) {
            self.commits.retract(acked);
        }
    }
}
