//! What waits for the journal: the events of the turn being gathered, the
//! `accepted` acknowledgements that go out only once the acceptance they
//! acknowledge is committed, the results that go out only once the end they
//! report is committed (so a service never holds a result of a request
//! that a crash would make the node run again), and the ordering keys that
//! go free only once the end of their holder is committed.
//!
//! Turns are numbered. A turn is *durable* once it has ended and every turn
//! up to it that appended events has been committed. An acknowledgement
//! or a key release of turn `t` waits until `t` is durable. With the
//! journal off, every ended turn is durable.
//!
//! One `accepted` message per reply topic per turn acknowledges all the
//! turn's requests of that service: its payload is the array of their ids
//! (`docs/protocol.md`). Under load that is one publication for hundreds of
//! requests instead of one each.

use std::collections::VecDeque;

use bytes::Bytes;

use super::core::{Effect, SubjectCore};
use crate::inflight::{MessageKey, key_of};
use crate::integration_manager::Publication;
use crate::journal::Event;
use crate::ordering::GroupKey;
use crate::wire::Message;
use crate::wire::envelope::{Envelope, Kind};

/// An acknowledgement given this turn, to take back ([`Commits::retract`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Acked {
    group: usize,
    /// The ids of its group then.
    ids: usize,
}

/// The journal's side of the Subject.
#[derive(Debug)]
pub(super) struct Commits {
    on: bool,
    events: Vec<Event>,
    /// The turn's acknowledgements: per reply topic, the first request's
    /// envelope and every id.
    acks: Vec<(String, Envelope, Vec<String>)>,
    /// The turn's results.
    results: Vec<Publication>,
    /// The number of the turn being gathered.
    turn: u64,
    /// Turns whose events were appended and are not committed yet, oldest
    /// first.
    outstanding: VecDeque<u64>,
    /// Acknowledgements and results of ended turns, waiting for those turns
    /// to be durable.
    waiting: VecDeque<(u64, Vec<Publication>)>,
    /// Ordering keys whose holders ended, each with the turn that records
    /// the end.
    unreleased: VecDeque<(u64, GroupKey, MessageKey)>,
    /// The error of the last failed commit, while no commit has succeeded
    /// since.
    failing: Option<String>,
}

impl Commits {
    pub(super) fn new(on: bool) -> Self {
        Self {
            on,
            events: Vec::new(),
            acks: Vec::new(),
            results: Vec::new(),
            turn: 1,
            outstanding: VecDeque::new(),
            waiting: VecDeque::new(),
            unreleased: VecDeque::new(),
            failing: None,
        }
    }

    /// Whether events are recorded.
    pub(super) fn is_on(&self) -> bool {
        self.on
    }

    /// Records the event `make` builds (only built when the journal is on).
    pub(super) fn record(&mut self, make: impl FnOnce() -> Event) {
        if self.on {
            self.events.push(make());
        }
    }

    /// Takes back the acknowledgement `acked` gave, the latest this turn
    /// (its request was refused after all).
    pub(super) fn retract(&mut self, acked: Acked) {
        let Some((_, _, ids)) = self.acks.get_mut(acked.group) else {
            return;
        };
        // Only the latest: nothing was acknowledged since.
        if ids.len() != acked.ids {
            return;
        }
        ids.pop();
        if ids.is_empty() {
            self.acks.remove(acked.group);
        }
    }

    /// Acknowledges the request `envelope` on `topic` once everything
    /// recorded so far is committed.
    pub(super) fn acknowledge(&mut self, topic: &str, envelope: &Envelope) -> Acked {
        // A turn's requests come from few services: a short scan.
        let group = match self.acks.iter().position(|(t, _, _)| t == topic) {
            Some(group) => group,
            None => {
                self.acks
                    .push((topic.to_owned(), envelope.clone(), Vec::new()));
                self.acks.len() - 1
            }
        };
        let ids = &mut self.acks[group].2;
        ids.push(envelope.id.clone());
        Acked {
            group,
            ids: ids.len(),
        }
    }

    /// Publishes `result` once this turn is durable.
    pub(super) fn publish_after_commit(&mut self, result: Publication) {
        self.results.push(result);
    }

    /// The key `group` held by `id` goes free once this turn is durable.
    pub(super) fn release_after_commit(&mut self, group: GroupKey, id: MessageKey) {
        self.unreleased.push_back((self.turn, group, id));
    }

    /// Why the journal cannot commit, while it cannot.
    pub(super) fn failing(&self) -> Option<&str> {
        self.failing.as_deref()
    }

    pub(super) fn awaits_commits(&self) -> bool {
        !self.outstanding.is_empty()
    }

    fn durable(&self, turn: u64) -> bool {
        turn < self.turn && self.outstanding.front().is_none_or(|&o| o > turn)
    }
}

impl SubjectCore {
    /// Ends the turn's journal work: appends its events, queues its
    /// acknowledgements behind their commit.
    pub(super) fn flush_journal(&mut self) {
        let c = &mut self.commits;
        if c.events.is_empty() && c.acks.is_empty() && c.results.is_empty() {
            return;
        }
        let turn = c.turn;
        c.turn += 1;
        if !c.events.is_empty() {
            // The next turn's vector starts at this one's size: events are
            // large, and regrowing it each turn copies them.
            let next = Vec::with_capacity(c.events.len());
            let events = std::mem::replace(&mut c.events, next);
            c.outstanding.push_back(turn);
            self.effects.push(Effect::Append { turn, events });
        }
        let c = &mut self.commits;
        if !c.acks.is_empty() || !c.results.is_empty() {
            let mut out: Vec<Publication> = c.acks.drain(..).map(ack_message).collect();
            out.append(&mut c.results);
            c.waiting.push_back((turn, out));
        }
        self.release_durable();
    }

    /// The journal committed every turn up to `turn`.
    pub(super) fn on_committed(&mut self, turn: u64) {
        while self.commits.outstanding.front().is_some_and(|&o| o <= turn) {
            self.commits.outstanding.pop_front();
        }
        self.release_durable();
    }

    /// The journal's writer committed after failing: requests are taken
    /// again.
    pub(super) fn on_commits_again(&mut self) {
        if self.commits.failing.take().is_some() {
            tracing::info!("the journal commits again: requests are taken again");
        }
    }

    /// The journal could not commit its oldest appended turn; the writer
    /// tries it again before anything after it. Until a commit succeeds,
    /// nothing waiting for one goes out (no acknowledgement, no key), and
    /// new requests are refused (`overloaded`) so that what waits stays
    /// bounded.
    pub(super) fn on_commit_failed(&mut self, error: &str) {
        if self.commits.failing.is_none() {
            tracing::error!(
                error,
                "the journal cannot commit: new requests are refused until it can"
            );
        }
        self.commits.failing = Some(error.to_owned());
    }

    /// False for a step given to a service whose flow no longer waits for
    /// it, as sent (answered meanwhile, or the same id accepted again
    /// since): a step queued behind a commit goes out that much later, and
    /// an instance that got the old one could answer the new life with it.
    fn still_due(&self, p: &Publication) -> bool {
        let step = &p.message;
        if step.envelope.kind != Kind::Step {
            return true;
        }
        self.suspended
            .get(&key_of(&step.envelope))
            .is_some_and(|w| {
                w.message.envelope.accepted_us == step.envelope.accepted_us
                    && w.message.envelope.step == step.envelope.step
                    && w.message.payload == step.payload
            })
    }

    /// Publishes the acknowledgements and results, and frees the keys,
    /// whose turns are durable.
    fn release_durable(&mut self) {
        while let Some((turn, _)) = self.commits.waiting.front() {
            if !self.commits.durable(*turn) {
                break;
            }
            if let Some((_, out)) = self.commits.waiting.pop_front() {
                for p in out {
                    if self.still_due(&p) {
                        self.effects.push(Effect::Publish(p));
                    }
                }
            }
        }
        while let Some((turn, _, _)) = self.commits.unreleased.front() {
            if !self.commits.durable(*turn) {
                break;
            }
            if let Some((_, group, id)) = self.commits.unreleased.pop_front() {
                self.gate.release(&group, &id);
            }
        }
    }
}

/// One `accepted` message for `ids`: the envelope of the first request
/// (kind `accepted`), the ids as a MessagePack array.
fn ack_message((topic, mut envelope, ids): (String, Envelope, Vec<String>)) -> Publication {
    envelope.kind = Kind::Accepted;
    envelope.ack = false;
    // Strings into a Vec cannot fail to encode.
    let payload = rmp_serde::to_vec(&ids).unwrap_or_default();
    Publication::new(topic, Message::new(envelope, Bytes::from(payload)))
}
