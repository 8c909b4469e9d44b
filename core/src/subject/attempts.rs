//! A worker's result, and what a failed attempt leads to: the next step,
//! redelivery (`max_attempts`), a retry delay (`retry` policies), or the
//! dead-letter store.

use super::core::SubjectCore;
use crate::catalog::StepRole;
use crate::inflight::{WorkerId, key_of};
use crate::retry::RetryPolicy;
use crate::wire::Message;
use crate::wire::envelope::{Kind, Status};
use crate::wire::error_code::ErrorCode;

use super::outcome::Ending;

impl SubjectCore {
    pub(super) fn on_result(&mut self, worker: &WorkerId, mut result: Message) {
        let Some(in_flight) = self.table.complete(worker, &result.envelope) else {
            self.counters.late_results += 1;
            tracing::debug!(id = %result.envelope.id, "dropping a result not in flight on its worker (late duplicate)");
            return;
        };
        // The version is the Subject's to say, not the worker's.
        result.envelope.catalog = in_flight.message.envelope.catalog;
        if self.options.record_spans {
            // Its work named the dispatch span as its parent; the request
            // goes on with its own context.
            result
                .envelope
                .traceparent
                .clone_from(&in_flight.message.envelope.traceparent);
            let error = result.envelope.error.as_ref().map(|e| e.message.as_str());
            let key = key_of(&result.envelope);
            self.spans.returned(&key, error, self.now.wall_us);
        }
        let catalog = self.catalog_of(&result.envelope).unwrap_or_default();
        if result.envelope.error.is_some() {
            let step = usize::try_from(result.envelope.step).unwrap_or(usize::MAX);
            if let Some(policy) = catalog.retry_policy(&result.envelope.flow, step) {
                self.retry_later(result, policy);
                return;
            }
        }
        if let Some(error) = &result.envelope.error
            && error.code == ErrorCode::ActionPanicked
        {
            // A panic may be transient (a bad worker state, a resource):
            // the message is delivered again, up to max_attempts.
            let reason = error.message.clone();
            self.retry_or_dead_letter(vec![in_flight.into_message()], &reason);
            return;
        }
        let step = usize::try_from(result.envelope.step).unwrap_or(usize::MAX);
        let routed = catalog.flow(&result.envelope.flow);
        let role = routed
            .and_then(|routed| routed.roles.get(step))
            .map(|(role, _)| role);
        let moves_on = matches!(
            role,
            Some(StepRole::Publish | StepRole::Async | StepRole::Service(_))
        ) && result.envelope.error.is_none();
        if let Some(routed) = routed {
            // The worker ran the steps after the one it was given, up to
            // the one it stopped at: the one that failed, or `done`; a
            // step the Subject moves on is counted when it does.
            let first = in_flight.message.envelope.step as usize + 1;
            let last = if moves_on {
                step.saturating_sub(1)
            } else {
                step
            };
            let last = last.min(routed.flow.steps.len().saturating_sub(1));
            self.record_steps(&routed.flow.name, first..=last);
        }
        if moves_on {
            // The worker stopped at a step the Subject moves on.
            self.advance(result, step);
        } else {
            self.conclude(result, Ending::Finished);
        }
    }

    /// An action with a retry policy failed (error or panic): the message
    /// waits its delay in the delay queue, then runs again from the failed
    /// step with that step's request; or, at its last attempt or with an
    /// error kind the policy does not retry, it is dead-lettered.
    fn retry_later(&mut self, result: Message, policy: &RetryPolicy) {
        let Message {
            mut envelope,
            payload,
        } = result;
        let Some(error) = envelope.error.take() else {
            return;
        };
        envelope.kind = Kind::Request;
        envelope.status = Status::Ok;
        let message = Message::new(envelope, payload);
        let attempt = message.envelope.attempt;
        let kind = error.code.name();
        let retried = policy.retries(kind);
        let history = self.failures.entry(key_of(&message.envelope)).or_default();
        history.push(format!(
            "attempt {attempt}: {kind}: {}{}",
            error.message,
            if retried { "" } else { " (no_retry)" }
        ));
        if !retried || attempt >= policy.max_attempts {
            self.conclude(message, Ending::DeadLettered);
            return;
        }
        let delay = policy.delay(attempt, self.jitter.next_unit());
        tracing::debug!(id = %message.envelope.id, attempt, delay_ms = delay.as_millis(), "retrying after a delay");
        self.counters.retried += 1;
        self.table.hold(key_of(&message.envelope));
        self.held_bytes += message.size();
        self.delayed
            .push(tokio::time::Instant::from_std(self.now.at) + delay, message);
    }

    /// The most deliveries of `message`: its step's retry policy's, or the
    /// node's `max_attempts`.
    fn max_attempts(&self, message: &Message) -> u32 {
        let step = usize::try_from(message.envelope.step).unwrap_or(usize::MAX);
        self.catalog_of(&message.envelope)
            .and_then(|catalog| {
                catalog
                    .retry_policy(&message.envelope.flow, step)
                    .map(|p| p.max_attempts)
            })
            .unwrap_or(self.options.max_attempts)
    }

    /// Each message failed an attempt for `reason`: it goes back to the front
    /// of the queue, or to the dead-letter store after `max_attempts` (its
    /// step's retry policy's, if it has one).
    pub(super) fn retry_or_dead_letter(&mut self, messages: Vec<Message>, reason: &str) {
        let mut again = Vec::with_capacity(messages.len());
        for message in messages {
            if self.options.record_spans {
                let key = key_of(&message.envelope);
                self.spans.returned(&key, Some(reason), self.now.wall_us);
            }
            let attempt = message.envelope.attempt;
            let max_attempts = self.max_attempts(&message);
            let history = self.failures.entry(key_of(&message.envelope)).or_default();
            history.push(format!("attempt {attempt}: {reason}"));
            if attempt >= max_attempts {
                self.conclude(message, Ending::DeadLettered);
            } else {
                self.counters.redelivered += 1;
                again.push(message);
            }
        }
        self.table.requeue(again);
    }
}
