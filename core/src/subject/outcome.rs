//! Every way a message ends. An accepted message ends through
//! [`SubjectCore::conclude`], which does each piece of bookkeeping once:
//! its journal record, its ordering key, its failed attempts, its place in
//! the table, the dedupe store and its one result. A message that was never
//! accepted is answered by [`SubjectCore::refuse`], which touches none of
//! that: it cannot free a key, end a flow or hide a result that is not its
//! own, whatever ids it carries.

use std::sync::Arc;

use super::commits::Acked;
use super::core::{Effect, SubjectCore};
use super::{dead_letter_topic, result_topic};
use crate::inflight::{key_in, key_of};
use crate::integration_manager::Publication;
use crate::journal::Event;
use crate::wire::Message;
use crate::wire::envelope::{Envelope, Kind};
use crate::wire::error_code::ErrorCode;

/// How an accepted message ends.
#[derive(Debug)]
pub(super) enum Ending {
    /// Its flow is over: the message is its result (an error result when
    /// the flow ended with an error: an action's, an answer's, a timeout).
    /// Remembered for duplicates within the dedupe window.
    Finished,
    /// The node could not take it further (a full queue, a step it cannot
    /// run): an error result. Not remembered: sent again, it is taken again.
    Failed(ErrorCode, String),
    /// Out of attempts: stored in the dead-letter store, published on
    /// `@deadletter~<flow>~`, answered with an error result.
    DeadLettered,
}

impl SubjectCore {
    pub(super) fn publish(&mut self, topic: String, message: impl Into<Arc<Message>>) {
        self.emit(Effect::Publish(Publication::new(topic, message)));
    }

    /// Publishes a result once what it reports is committed (at once with
    /// the journal off).
    pub(super) fn publish_result(&mut self, topic: String, message: impl Into<Arc<Message>>) {
        if self.commits.is_on() {
            self.commits
                .publish_after_commit(Publication::new(topic, message));
        } else {
            self.publish(topic, message);
        }
    }

    /// Ends the accepted `message`.
    pub(super) fn conclude(&mut self, message: Message, ending: Ending) {
        if self.options.record_spans {
            self.spans
                .ended(&key_of(&message.envelope), self.now.wall_us);
        }
        self.table.forget(&message.envelope);
        self.catalogs.release(message.envelope.catalog);
        // No key is made for the message: it is looked up by its strings,
        // and copied only into what keeps it (a journal event).
        let errors = if self.failures.is_empty() {
            Vec::new()
        } else {
            self.failures
                .remove(key_in(&message.envelope))
                .unwrap_or_default()
        };
        self.release_key(&message.envelope);
        let at_us = self.now.wall_us;
        let Message {
            mut envelope,
            payload,
        } = message;
        match ending {
            Ending::Finished => {
                envelope.kind = Kind::Result;
                self.counters.results += 1;
                let outcome = envelope.error.as_ref().map_or("ok", |e| e.code.name());
                self.record_end(&envelope.flow, envelope.step, envelope.accepted_us, outcome);
                let result = Arc::new(Message::new(envelope, payload));
                self.commits.record(|| Event::Completed {
                    at_us,
                    key: key_of(&result.envelope),
                    result: Some(Arc::clone(&result)),
                });
                self.recent.insert(
                    (&result.envelope.service, &result.envelope.id),
                    Arc::clone(&result),
                    self.now.at,
                );
                self.publish_result(result_topic(&result.envelope), result);
            }
            Ending::Failed(code, text) => {
                tracing::warn!(id = %envelope.id, flow = %envelope.flow, code = code.name(), "{text}");
                self.counters.rejected += 1;
                self.record_end(
                    &envelope.flow,
                    envelope.step,
                    envelope.accepted_us,
                    code.name(),
                );
                self.commits.record(|| Event::Completed {
                    at_us,
                    key: key_of(&envelope),
                    result: None,
                });
                let envelope = envelope.into_error(code, text);
                self.publish_result(result_topic(&envelope), Message::new(envelope, payload));
            }
            Ending::DeadLettered => {
                let seq = self.next_dead_letter;
                self.next_dead_letter += 1;
                let message = Message::new(envelope, payload.clone());
                let last = errors.last().cloned().unwrap_or_default();
                self.commits.record(|| Event::DeadLettered {
                    at_us,
                    key: key_of(&message.envelope),
                    reason: format!("dead letter #{seq}: {last}"),
                });
                let text = format!(
                    "dead-lettered as #{seq} after {} attempts; last: {last} (`zmanager dlq show {seq}`)",
                    message.envelope.attempt
                );
                tracing::error!(id = %message.envelope.id, service = %message.envelope.service, flow = %message.envelope.flow, "{text}");
                self.counters.dead_lettered += 1;
                let name = ErrorCode::DeadLettered.name();
                let e = &message.envelope;
                self.record_end(&e.flow, e.step, e.accepted_us, name);
                let envelope = message
                    .envelope
                    .clone()
                    .into_error(ErrorCode::DeadLettered, text);
                self.emit(Effect::StoreDeadLetter {
                    seq,
                    message: Box::new(message),
                    errors,
                    at_us,
                });
                let result = Arc::new(Message::new(envelope, payload));
                self.publish_result(
                    dead_letter_topic(&result.envelope.flow),
                    Arc::clone(&result),
                );
                self.publish_result(result_topic(&result.envelope), result);
            }
        }
    }

    /// Answers a message that was not accepted with an error result on its
    /// reply topic.
    pub(super) fn refuse(&mut self, message: Message, code: ErrorCode, text: String) {
        tracing::warn!(id = %message.envelope.id, flow = %message.envelope.flow, code = code.name(), "{text}");
        self.counters.rejected += 1;
        let envelope = message.envelope.into_error(code, text);
        let topic = result_topic(&envelope);
        self.publish(topic, Message::new(envelope, message.payload));
    }

    /// A request answered on the spot (service management): never queued
    /// or journaled; remembered for duplicates like any result.
    pub(super) fn answer_now(&mut self, mut message: Message) {
        message.envelope.kind = Kind::Result;
        self.counters.accepted += 1;
        self.counters.results += 1;
        let topic = result_topic(&message.envelope);
        let message = Arc::new(message);
        self.recent.insert(
            (&message.envelope.service, &message.envelope.id),
            Arc::clone(&message),
            self.now.at,
        );
        self.publish(topic, message);
    }

    /// The `accepted` acknowledgement of the request `envelope`, queued to
    /// go out once its acceptance is committed; nothing if it did not ask.
    pub(super) fn acknowledge(&mut self, envelope: &Envelope) -> Option<Acked> {
        if !envelope.ack {
            return None;
        }
        Some(self.commits.acknowledge(&result_topic(envelope), envelope))
    }

    /// The result of the message `id` of `service` if it finished within
    /// the dedupe window.
    pub(super) fn recent_result(&self, service: &str, id: &str) -> Option<&Arc<Message>> {
        self.recent.get(service, id, self.now.at)
    }
}
