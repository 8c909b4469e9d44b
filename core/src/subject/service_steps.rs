//! Steps given to services (`[services]` in the mappings): the flow waits
//! at the step as at an `@ASYNC` one (journaled the same way, so it
//! survives a crash), while the service's [`Outbox`] sends the step to an
//! instance that took its steps, again after a failure, until the service
//! answers it. The answer resumes the flow ([`SubjectCore::on_answer`]).

use super::core::SubjectCore;
use super::outcome::Ending;
use crate::catalog::StepRole;
use crate::catalog::topic::starts_with_reply_topic;
use crate::inflight::key_of;
use crate::services::steps::{Outbox, StepsInfo};
use crate::wire::Message;
use crate::wire::envelope::Kind;
use crate::wire::error_code::ErrorCode;

impl SubjectCore {
    /// `message` reached step `step`, given to service `name`: it waits for
    /// the service's answer. False when it could not (an error result was
    /// published instead).
    pub(super) fn give_to_service(&mut self, message: Message, step: usize, name: &str) -> bool {
        let (backoff, now) = (self.options.service_backoff, self.now.at);
        let waiting = self
            .outboxes
            .entry(name.to_owned())
            .or_insert_with(|| Outbox::new(backoff, now))
            .len();
        if waiting >= self.options.max_service_steps && !self.recovering {
            let text =
                format!("{waiting} steps already wait for service {name:?} (max_service_steps)");
            self.conclude(message, Ending::Failed(ErrorCode::Overloaded, text));
            return false;
        }
        let key = key_of(&message.envelope);
        if !self.hold(message, step, None, Some(name.to_owned())) {
            return false;
        }
        if let Some(outbox) = self.outboxes.get_mut(name) {
            outbox.push(key, now);
        }
        true
    }

    /// An instance of the service `message.envelope.service` takes its
    /// steps on its `reply_to` topic, as many at once as the payload says.
    pub(super) fn on_take(&mut self, mut message: Message) {
        let envelope = &message.envelope;
        let name = envelope.service.clone();
        if !starts_with_reply_topic(envelope.reply_to.as_bytes(), &name) {
            let own = crate::catalog::topic::reply_topic(&name);
            let text = format!(
                "a take names the topic its steps go to in reply_to, which must start with the service's own {own:?}"
            );
            // Told on the service's own topic, not the one it named.
            message.envelope.reply_to = own;
            return self.refuse(message, ErrorCode::BadRequest, text);
        }
        let credits: u32 = match zmanager_sdk::decode(&message.payload) {
            Ok(credits) => credits,
            Err(e) => {
                let text = format!("a take's payload is the number of steps it takes at once: {e}");
                return self.refuse(message, ErrorCode::BadRequest, text);
            }
        };
        if !self.serves(&name) {
            let text = format!("no step of any flow is given to service {name:?} ([services])");
            return self.refuse(message, ErrorCode::NotSupported, text);
        }
        let (backoff, now) = (self.options.service_backoff, self.now.at);
        self.outboxes
            .entry(name)
            .or_insert_with(|| Outbox::new(backoff, now))
            .take(&message.envelope.reply_to, credits, now);
    }

    /// True when a step of some flow of some version held is given to
    /// service `name`.
    fn serves(&self, name: &str) -> bool {
        self.catalogs.all().any(|version| {
            version.catalog.flows.values().any(|routed| {
                routed
                    .roles
                    .iter()
                    .any(|(role, _)| matches!(role, StepRole::Service(s) if s == name))
            })
        })
    }

    /// Sends each service what its outbox lets go now, once what the
    /// journal says of it is committed.
    pub(super) fn send_service_steps(&mut self) {
        let now = self.now.at;
        let mut sends = Vec::new();
        for outbox in self.outboxes.values_mut() {
            sends.extend(outbox.next_sends(now));
        }
        for (topic, key) in sends {
            let Some(waiting) = self.suspended.get(&key) else {
                continue;
            };
            let mut step = waiting.message.clone();
            step.envelope.kind = Kind::Step;
            self.publish_result(topic, step);
        }
    }

    /// Time passes for every service: late answers and silent instances.
    pub(super) fn tick_services(&mut self) {
        let now = self.now.at;
        let (timeout, liveness) = (
            self.options.service_step_timeout,
            self.options.service_liveness,
        );
        for (name, outbox) in &mut self.outboxes {
            let was_up = outbox.state().up;
            let jitter = self.jitter.next_unit();
            outbox.tick(now, timeout, liveness, jitter);
            let state = outbox.state();
            if was_up && !state.up {
                tracing::warn!(service = %name, backlog = state.backlog, error = state.last_error.as_deref().unwrap_or(""), "service DOWN: its steps wait for the recoverer");
            }
        }
    }

    /// Each service's steps: UP or DOWN, backlog, last error (the answer
    /// to `ServiceManagement_Steps`).
    pub(super) fn steps_info(&self) -> Vec<StepsInfo> {
        self.outboxes
            .iter()
            .map(|(name, outbox)| StepsInfo::of(name, &outbox.state(), self.now.at))
            .collect()
    }
}
