//! Taking up the work the journal had unfinished at start-up.

use super::core::SubjectCore;
use super::outcome::Ending;
use crate::catalog::StepRole;
use crate::journal::{Checkpoint, Unfinished};
use crate::wire::Message;

impl SubjectCore {
    /// Flows run again from their entry, or from after the `@ASYNC` step
    /// that answered them; flows waiting at an `@ASYNC` step wait again
    /// (with a fresh `async_timeout`).
    pub(super) fn take_up(&mut self, unfinished: Vec<Unfinished>) {
        if unfinished.is_empty() {
            return;
        }
        let total = unfinished.len();
        self.recovering = true;
        let mut suspended = 0;
        for Unfinished { mut message, at } in unfinished {
            // A request journaled before versions existed runs on the
            // newest; the others on theirs, which the node loaded from the
            // journal before starting.
            if message.envelope.catalog == 0 {
                message.envelope.catalog = self.catalogs.newest().number;
            }
            self.catalogs.hold(message.envelope.catalog);
            let Some(catalog) = self.catalog_of(&message.envelope) else {
                let text = format!(
                    "catalog version {} is not in the journal",
                    message.envelope.catalog
                );
                self.conclude(
                    message,
                    Ending::Failed(crate::wire::error_code::ErrorCode::UnknownFlow, text),
                );
                continue;
            };
            match at {
                // Through the ordering gate, in acceptance order: a key's
                // first unfinished request holds it again, the others wait.
                Checkpoint::Accepted => {
                    match super::steps::entry(&catalog, &message.envelope) {
                        Ok((position, _)) => {
                            if let Some(message) = self.admit(message, position + 1) {
                                self.advance(message, position + 1);
                            }
                        }
                        // The flows changed since it was accepted.
                        Err((code, text)) => self.conclude(message, Ending::Failed(code, text)),
                    }
                }
                Checkpoint::Suspended => {
                    suspended += 1;
                    let step = usize::try_from(message.envelope.step).unwrap_or(usize::MAX);
                    if let Some(message) = self.admit(message, step) {
                        self.wait_again(message, step);
                    }
                }
                Checkpoint::Resumed => {
                    let next = usize::try_from(message.envelope.step)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1);
                    if let Some(message) = self.admit(message, next) {
                        self.advance(message, next);
                    }
                }
            }
        }
        self.recovering = false;
        tracing::info!(
            recovered = total,
            suspended,
            "took up the journal's unfinished work"
        );
    }
}

impl SubjectCore {
    /// A flow the journal has waiting at step `step`: for its service's
    /// answer if the step is given to a service (in the order of the
    /// journal, which is the order it first waited in), else at its
    /// `@ASYNC` step.
    fn wait_again(&mut self, message: Message, step: usize) {
        let role = self
            .catalog_of(&message.envelope)
            .as_deref()
            .and_then(|catalog| catalog.flow(&message.envelope.flow))
            .and_then(|routed| routed.roles.get(step).map(|(role, _)| role.clone()));
        match role {
            Some(StepRole::Service(name)) => {
                self.give_to_service(message, step, &name);
            }
            _ => {
                self.suspend(message, step);
            }
        }
    }
}
