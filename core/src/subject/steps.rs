//! Moving a message along its flow: the step it enters at, the ordering
//! gate of ordered flows, and each step's role (an action for the workers,
//! `@PUBLISH`, `@ASYNC`, the end).

use super::core::SubjectCore;
use crate::catalog::action_key::ActionKey;
use crate::catalog::topic::Topic;
use crate::catalog::{Catalog, RoutedFlow, StepRole};
use crate::inflight::{Refused, key_of};
use crate::ordering::{self, OrderBy};
use crate::wire::Message;
use crate::wire::envelope::{Envelope, Kind};
use crate::wire::error_code::ErrorCode;

use super::outcome::Ending;

impl SubjectCore {
    /// An ordered flow's request holds its key from now until its flow
    /// ends, or waits in the gate (accepted) while an earlier one holds it.
    /// Returns the request when it may go on now (also any request of an
    /// unordered flow); `None` when it waits.
    pub(super) fn admit(&mut self, message: Message, next: usize) -> Option<Message> {
        let Some(group) = ordering::group_of(&message.envelope) else {
            return Some(message);
        };
        let id = key_of(&message.envelope);
        let size = message.size();
        match self.gate.admit(group, id.clone(), (message, next)) {
            Some((message, _)) => Some(message),
            None => {
                self.held_bytes += size;
                self.table.hold(id);
                self.counters.accepted += 1;
                None
            }
        }
    }

    /// The flow of `envelope` ended: if it held its ordering key, the next
    /// request with that key may start — with the journal on, once the end
    /// is committed (`commits`): released earlier, a crash could leave the
    /// journal with this request unfinished while the next one of its key
    /// had run, and recovery would run it again after that one.
    pub(super) fn release_key(&mut self, envelope: &Envelope) {
        if let Some(group) = ordering::group_of(envelope) {
            let id = key_of(envelope);
            if self.commits.is_on() {
                self.commits.release_after_commit(group, id);
            } else {
                self.gate.release(&group, &id);
            }
        }
    }

    /// Requeues the retried messages whose delay is over, and starts the
    /// requests whose key became free (while the queue has room).
    pub(super) fn start_waiting(&mut self) {
        if let Some(due) = self.delayed.next_due() {
            let now = tokio::time::Instant::from_std(self.now.at);
            if due <= now {
                let mut again = Vec::new();
                while let Some(message) = self.delayed.pop_due(now) {
                    self.held_bytes -= message.size();
                    again.push(message);
                }
                self.table.requeue(again);
            }
        }
        while self.gate.has_ready() && self.table.has_room() {
            let Some((message, next)) = self.gate.next_ready() else {
                break;
            };
            self.held_bytes -= message.size();
            self.table.forget(&message.envelope);
            self.advance(message, next);
        }
    }

    /// Moves `message` on from step `next` of its flow: an action step is
    /// queued for the workers; `done` or the end of the flow finishes it; an
    /// `@PUBLISH` step is published on its topic and the flow goes on at the
    /// step after it. Returns false when the message was refused (an error
    /// result was published instead).
    pub(super) fn advance(&mut self, mut message: Message, mut next: usize) -> bool {
        let catalog = self.catalog_of(&message.envelope).unwrap_or_default();
        let Some(routed) = catalog.flow(&message.envelope.flow) else {
            let text = format!("unknown flow {:?}", message.envelope.flow);
            self.conclude(message, Ending::Failed(ErrorCode::UnknownFlow, text));
            return false;
        };
        loop {
            let step = routed.flow.steps.get(next);
            if step.is_some() {
                self.record_step(&routed.flow.name, next);
            }
            let envelope = &mut message.envelope;
            envelope.step = u32::try_from(next).unwrap_or(u32::MAX);
            envelope.key = step.map(|s| s.key.to_string()).unwrap_or_default();
            envelope.kind = Kind::Request;
            match (step, routed.roles.get(next).map(|(role, _)| role)) {
                (_, Some(StepRole::Action(_))) => {
                    envelope.attempt = 0;
                    let queued = if self.recovering {
                        self.table.enqueue_recovered(message)
                    } else {
                        self.table.enqueue(message)
                    };
                    return match queued {
                        Ok(()) => true,
                        Err((Refused::DuplicateId, message)) => {
                            let text = format!(
                                "a message with id {:?} is already in flight",
                                message.envelope.id
                            );
                            self.conclude(*message, Ending::Failed(ErrorCode::DuplicateId, text));
                            false
                        }
                        Err((Refused::Full, message)) => {
                            let text = "the node's queue is full".to_owned();
                            self.conclude(*message, Ending::Failed(ErrorCode::Overloaded, text));
                            false
                        }
                    };
                }
                (_, None | Some(StepRole::Done)) => {
                    self.conclude(message, Ending::Finished);
                    return true;
                }
                (Some(step), Some(StepRole::Publish)) => {
                    let topic = Topic::new(&routed.flow.name, &step.key).to_string();
                    tracing::debug!(id = %message.envelope.id, %topic, "published a @PUBLISH step");
                    self.counters.published += 1;
                    self.publish(topic, message.clone());
                    next += 1;
                }
                (_, Some(StepRole::Async)) => return self.suspend(message, next),
                (_, Some(StepRole::Service(name))) => {
                    let name = name.clone();
                    return self.give_to_service(message, next, &name);
                }
                (_, Some(role)) => {
                    let text = not_supported(role, &message.envelope.key);
                    self.conclude(message, Ending::Failed(ErrorCode::NotSupported, text));
                    return false;
                }
            }
        }
    }
}

/// The step a request enters its flow at — the step its `key` names (the
/// flow's entry when empty); it runs from the step after it — and the flow.
pub(super) fn entry<'c>(
    catalog: &'c Catalog,
    envelope: &Envelope,
) -> Result<(usize, &'c RoutedFlow), (ErrorCode, String)> {
    let Some(routed) = catalog.flow(&envelope.flow) else {
        let text = format!("unknown flow {:?}", envelope.flow);
        return Err((ErrorCode::UnknownFlow, text));
    };
    if envelope.key.is_empty() {
        return Ok((0, routed));
    }
    let key = ActionKey::parse(&envelope.key).map_err(|e| {
        let text = format!("key {:?}: {e}", envelope.key);
        (ErrorCode::UnknownStep, text)
    })?;
    let position = routed.flow.position(&key).ok_or_else(|| {
        let text = format!(
            "key {:?} matches no step of flow {}",
            envelope.key, routed.flow.name
        );
        (ErrorCode::UnknownStep, text)
    })?;
    Ok((position, routed))
}

/// Sets the request's `order_key` from its flow's `order_by` (an ordered
/// flow), or clears it (a key the service set means nothing to an
/// unordered flow). An ordered flow's request without a usable key is
/// refused with the reason.
pub(super) fn set_order_key(message: &mut Message, by: Option<&OrderBy>) -> Result<(), String> {
    let Some(by) = by else {
        message.envelope.order_key.clear();
        return Ok(());
    };
    match by.key_of(&message.envelope, &message.payload) {
        Ok(key) => {
            message.envelope.order_key = key;
            Ok(())
        }
        Err(text) => {
            message.envelope.order_key.clear();
            Err(text)
        }
    }
}

fn not_supported(role: &StepRole, key: &str) -> String {
    let what = match role {
        StepRole::Publish => "an @PUBLISH step",
        StepRole::Async => "an @ASYNC step",
        StepRole::Service(_) => "a service's step",
        _ => "a step of this kind",
    };
    format!("`{key}` is {what}; this node does not run such steps yet")
}
