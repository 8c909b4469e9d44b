//! Taking up the work the journal had unfinished at start-up.

use super::core::SubjectCore;
use super::outcome::Ending;
use crate::journal::{Checkpoint, Unfinished};

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
        for Unfinished { message, at } in unfinished {
            match at {
                // Through the ordering gate, in acceptance order: a key's
                // first unfinished request holds it again, the others wait.
                Checkpoint::Accepted => {
                    match super::steps::entry(&self.catalog, &message.envelope) {
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
                        self.suspend(message, step);
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
