//! Questions the node's HTTP server asks the Subject, answered between two
//! turns of its loop: its figures ([`Stats`]), and where one request is
//! ([`Whereabouts`]). Each answer is read from the state the loop keeps
//! anyway, in time independent of the load (a scan of the ordering gate
//! and the retry queue at most, both bounded by `max_pending`).

use std::time::Instant;

use serde::Serialize;
use tokio::sync::oneshot;

use super::core::SubjectCore;
use super::stats::Stats;
use crate::inflight::MessageKey;
use crate::inflight::key_of;
use crate::wire::Message;

/// A question, with where its answer goes.
#[derive(Debug)]
pub enum Ask {
    Stats(oneshot::Sender<Stats>),
    /// Where the request of this service and id is now (`None`: the
    /// Subject holds nothing of it: never accepted, or finished longer ago
    /// than the dedupe window).
    Whereabouts(MessageKey, oneshot::Sender<Option<Whereabouts>>),
    /// The catalog versions held and how many unfinished requests run on
    /// each.
    Versions(oneshot::Sender<std::collections::BTreeMap<u32, usize>>),
    /// Not a question: take this catalog version as the newest
    /// ([`Input::Reload`](super::Input::Reload)); answered once taken.
    Reload(Box<crate::catalog::version::Versioned>, oneshot::Sender<()>),
}

/// Where a request is, as the Subject holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Whereabouts {
    /// Waiting for a worker with a free credit.
    Pending,
    /// In an ordered flow, waiting for the earlier requests with its key.
    WaitingForKey,
    /// A failed attempt waiting out its retry delay.
    Delayed { attempt: u32 },
    /// On a worker.
    InFlight {
        step: u32,
        attempt: u32,
        worker_pid: u32,
    },
    /// Waiting at an `@ASYNC` step for its answer, or at a step given to a
    /// service (`service`).
    Suspended {
        step: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        service: Option<String>,
    },
    /// Finished within the dedupe window: its result.
    #[serde(skip)]
    Finished(Box<Message>),
}

impl SubjectCore {
    /// Where the request `key` is at `now`.
    pub fn whereabouts(&self, key: &MessageKey, now: Instant) -> Option<Whereabouts> {
        if let Some(on) = self.table.in_flight(key) {
            return Some(Whereabouts::InFlight {
                step: on.message.envelope.step,
                attempt: on.message.envelope.attempt,
                worker_pid: self.table.pid(&on.worker).unwrap_or(0),
            });
        }
        if let Some(held) = self.suspended.get(key) {
            return Some(Whereabouts::Suspended {
                step: u32::try_from(held.step).unwrap_or(u32::MAX),
                service: held.owner.clone(),
            });
        }
        if self.table.knows(key) {
            let is = |m: &Message| key_of(&m.envelope) == *key;
            if let Some(m) = self.delayed.iter().find(|m| is(m)) {
                return Some(Whereabouts::Delayed {
                    attempt: m.envelope.attempt,
                });
            }
            if self.gate.waiting().any(|(m, _)| is(m)) {
                return Some(Whereabouts::WaitingForKey);
            }
            return Some(Whereabouts::Pending);
        }
        self.recent
            .get(&key.0, &key.1, now)
            .map(|result| Whereabouts::Finished(Box::new(Message::clone(result))))
    }
}
