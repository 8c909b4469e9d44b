//! Flows suspended at an `@ASYNC` step (DigitalPy's `prev_flow`): kept until
//! a service's answer resumes them, or `async_timeout` ends them.

use std::time::Instant;

use super::core::SubjectCore;
use crate::inflight::{MessageKey, key_of};
use crate::journal::Event;
use crate::wire::Message;
use crate::wire::envelope::{Kind, Status};
use crate::wire::error_code::ErrorCode;

use super::outcome::Ending;

/// A flow suspended at an `@ASYNC` step.
#[derive(Debug)]
pub(super) struct Suspended {
    /// The message as it reached the step (original id, service, reply_to).
    pub(super) message: Message,
    /// The index of the `@ASYNC` step; the flow resumes after it.
    pub(super) step: usize,
    /// When `async_timeout` ends it; `None` for a step given to a service,
    /// which waits for its answer however long the service is DOWN.
    pub(super) deadline: Option<Instant>,
    /// The service the step was given to (`[services]`); `None`: an
    /// `@ASYNC` step, which any service granted it may answer.
    pub(super) owner: Option<String>,
}

impl SubjectCore {
    /// Keeps `message` until its answer comes (see [`SubjectCore::on_answer`])
    /// or `async_timeout` passes.
    pub(super) fn suspend(&mut self, message: Message, step: usize) -> bool {
        // Only @ASYNC flows count: a service's steps have `max_service_steps`.
        if self.at_async >= self.options.max_suspended && !self.recovering {
            let text = format!(
                "{} flows are already suspended at @ASYNC steps (max_suspended)",
                self.at_async
            );
            self.conclude(message, Ending::Failed(ErrorCode::Overloaded, text));
            return false;
        }
        let deadline = Some(self.now.at + self.options.async_timeout);
        self.hold(message, step, deadline, None)
    }

    /// Keeps `message` waiting at step `step` — an `@ASYNC` step (with its
    /// deadline), or a step given to service `owner` — within the bytes
    /// bound, journaled as suspended (unless it is being recovered).
    /// False when it could not (an error result was published instead).
    pub(super) fn hold(
        &mut self,
        message: Message,
        step: usize,
        deadline: Option<Instant>,
        owner: Option<String>,
    ) -> bool {
        let size = message.size();
        if self.waiting_bytes() + size > self.options.max_pending_bytes && !self.recovering {
            let text = format!(
                "the node holds {} bytes of waiting requests and suspended flows (max_pending_mb)",
                self.waiting_bytes()
            );
            self.conclude(message, Ending::Failed(ErrorCode::Overloaded, text));
            return false;
        }
        self.held_bytes += size;
        let key = key_of(&message.envelope);
        if !self.recovering {
            let at_us = self.now.wall_us;
            self.commits.record(|| Event::Suspended {
                at_us,
                key: key.clone(),
                step: u32::try_from(step).unwrap_or(u32::MAX),
                message: message.clone(),
            });
        }
        tracing::debug!(id = %key.1, service = %key.0, step, owner = owner.as_deref().unwrap_or("@ASYNC"), "waiting at a step");
        self.counters.suspended += 1;
        self.at_async += usize::from(owner.is_none());
        if self.options.record_spans {
            let now_us = self.now.wall_us;
            self.spans
                .waiting(&message.envelope, owner.as_deref(), now_us);
        }
        self.suspended.insert(
            key,
            Suspended {
                message,
                step,
                deadline,
                owner,
            },
        );
        true
    }

    /// Takes the flow waiting as `key` out of [`SubjectCore::hold`]'s
    /// bookkeeping; `error`: its wait failed (for its span).
    fn unhold(&mut self, key: &MessageKey, error: Option<&str>) -> Option<Suspended> {
        let suspended = self.suspended.remove(key)?;
        if self.options.record_spans {
            self.spans.answered(key, error, self.now.wall_us);
        }
        self.held_bytes -= suspended.message.size();
        self.at_async -= usize::from(suspended.owner.is_none());
        Some(suspended)
    }

    /// A service's answer to a suspended flow: `origin` and `id` name the
    /// flow's request. The flow resumes after its `@ASYNC` step with the
    /// answer's payload (or ends with the answer's error). An answer for no
    /// suspended flow is refused to the answering service.
    pub(super) fn on_answer(&mut self, answer: Message) {
        let key = (answer.envelope.origin.clone(), answer.envelope.id.clone());
        if let Some(waiting) = self.suspended.get(&key) {
            let (flow, step) = (
                &waiting.message.envelope.flow,
                &waiting.message.envelope.key,
            );
            if let Some(owner) = &waiting.owner {
                if &answer.envelope.service != owner {
                    let text = format!(
                        "service {:?} may not answer step {step} of flow {flow}: it is given to service {owner:?}",
                        answer.envelope.service
                    );
                    return self.refuse_answer(answer, ErrorCode::Forbidden, text);
                }
            } else if !self
                .permissions
                .may_answer(&answer.envelope.service, flow, step)
            {
                let text = format!(
                    "service {:?} may not answer step {step} of flow {flow} ([security] answer)",
                    answer.envelope.service
                );
                return self.refuse_answer(answer, ErrorCode::Forbidden, text);
            }
        }
        let failed = (answer.envelope.status == Status::Error).then_some("answered with an error");
        let Some(suspended) = self.unhold(&key, failed) else {
            let why = if self.recent_result(&key.0, &key.1).is_some() {
                "that flow has already finished (answered twice, or timed out)"
            } else {
                "no flow is suspended for it"
            };
            let text = format!("answer for id {:?} of service {:?}: {why}", key.1, key.0);
            return self.refuse_answer(answer, ErrorCode::UnknownAsync, text);
        };
        self.counters.resumed += 1;
        if let Some(owner) = &suspended.owner
            && let Some(outbox) = self.outboxes.get_mut(owner)
        {
            outbox.answered(&key, self.now.at);
        }
        let Suspended {
            mut message, step, ..
        } = suspended;
        tracing::debug!(id = %key.1, service = %key.0, answered_by = %answer.envelope.service, "resumed after an @ASYNC step");
        message.payload = answer.payload;
        // `status: error` without its `error` map still ends the flow.
        let mut answer_error = answer.envelope.error;
        if answer.envelope.status == Status::Error && answer_error.is_none() {
            let code = ErrorCode::ActionFailed;
            answer_error = Some(crate::wire::envelope::ErrorInfo {
                code,
                name: code.name().to_owned(),
                message: format!(
                    "service {:?} answered with status error and no error map",
                    answer.envelope.service
                ),
            });
        }
        if answer.envelope.status != Status::Error {
            let at_us = self.now.wall_us;
            self.commits.record(|| Event::Resumed {
                at_us,
                key: key.clone(),
                step: u32::try_from(step).unwrap_or(u32::MAX),
                message: message.clone(),
            });
        }
        if let (Status::Error, Some(error)) = (answer.envelope.status, answer_error) {
            message.envelope.status = Status::Error;
            message.envelope.error = Some(error);
            message.envelope.kind = Kind::Result;
            self.conclude(message, Ending::Finished);
            return;
        }
        self.advance(message, step + 1);
    }

    /// Refuses an answer to the answering service's `reply_to`; without
    /// one, only counts and logs it: a refusal published on the flow's
    /// results topic would tell the flow's subscribers of an error that is
    /// not the flow's.
    fn refuse_answer(&mut self, answer: Message, code: ErrorCode, text: String) {
        if answer.envelope.reply_to.is_empty() {
            self.counters.rejected += 1;
            tracing::warn!(id = %answer.envelope.id, origin = %answer.envelope.origin, answered_by = %answer.envelope.service, code = u16::from(code), "{text} (no reply_to to tell the answering service)");
        } else {
            self.refuse(answer, code, text);
        }
    }

    /// Ends the flows whose answer did not come in time.
    pub(super) fn expire_suspended(&mut self) {
        let now = self.now.at;
        let mut expired: Vec<(Instant, MessageKey)> = self
            .suspended
            .iter()
            .filter_map(|(key, s)| s.deadline.filter(|&d| d <= now).map(|d| (d, key.clone())))
            .collect();
        // Oldest deadline first, in a stable order.
        expired.sort();
        for (_, key) in expired {
            let Some(suspended) = self.unhold(&key, Some("no answer within async_timeout")) else {
                continue;
            };
            self.counters.async_timeouts += 1;
            let text = format!(
                "no answer to `{}` within {} ms (async_timeout)",
                suspended.message.envelope.key,
                self.options.async_timeout.as_millis()
            );
            tracing::warn!(id = %key.1, service = %key.0, "{text}");
            let Message { envelope, payload } = suspended.message;
            let envelope = envelope.into_error(ErrorCode::AsyncTimeout, text);
            self.conclude(Message::new(envelope, payload), Ending::Finished);
        }
    }
}
