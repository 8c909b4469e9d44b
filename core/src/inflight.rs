//! The Subject's bookkeeping: which worker is ready for how much, which
//! message waits, and which message is in flight on which worker.
//!
//! Dispatch is credit-based. A worker announces a window of credits; each
//! message sent to it takes one, each result returns one. Pending messages
//! go to the worker with the most free credits, so a slow worker (whose
//! credits stay taken) gets less work than a fast one, and a dead worker's
//! messages are known and can be sent elsewhere.
//!
//! This module has no I/O: the Subject's task drives it, and the property
//! test below checks its invariants on random operation sequences.

use std::borrow::Borrow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::wire::Message;
use crate::wire::envelope::Envelope;

/// A worker's identity on the Subject's ROUTER socket.
pub type WorkerId = Bytes;

/// A message's identity: its service and its id (ids are chosen per
/// service, so two services may use the same id).
pub type MessageKey = (String, String);

/// The key of the message `envelope` belongs to.
pub fn key_of(envelope: &Envelope) -> MessageKey {
    (envelope.service.clone(), envelope.id.clone())
}

/// A message's key either owned ([`MessageKey`]) or borrowed from its
/// envelope: the table's sets and maps are looked up with the envelope's
/// own strings, without allocating a key for each lookup. Hashed and
/// compared as the tuple is (`Hash` for a tuple hashes its fields in
/// order), so both forms find the same entries.
pub(crate) trait Key {
    fn parts(&self) -> (&str, &str);
}

impl Key for MessageKey {
    fn parts(&self) -> (&str, &str) {
        (&self.0, &self.1)
    }
}

impl Key for Envelope {
    fn parts(&self) -> (&str, &str) {
        (&self.service, &self.id)
    }
}

impl Hash for dyn Key + '_ {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let (service, id) = self.parts();
        service.hash(state);
        id.hash(state);
    }
}

impl PartialEq for dyn Key + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn Key + '_ {}

impl<'a> Borrow<dyn Key + 'a> for MessageKey {
    fn borrow(&self) -> &(dyn Key + 'a) {
        self
    }
}

/// `envelope`'s key, to look up without a copy.
pub(crate) fn key_in(envelope: &Envelope) -> &dyn Key {
    envelope
}

#[derive(Debug)]
struct Worker {
    credits: u32,
    in_flight: u32,
    pid: u32,
    last_heard: Instant,
    /// When it said READY.
    ready_at: Instant,
    /// The catalog versions it can run (`crate::catalog::version`): it is
    /// given only messages of these.
    serves: Vec<u32>,
}

/// A message on a worker, and since when. The message is shared with the
/// batch it was sent in (encoded, then dropped), so dispatching does not
/// copy it.
#[derive(Debug, Clone)]
pub struct InFlight {
    pub worker: WorkerId,
    pub message: Arc<Message>,
    pub since: Instant,
}

impl InFlight {
    /// The message, copied only if its batch is still held somewhere.
    pub fn into_message(self) -> Message {
        Arc::try_unwrap(self.message).unwrap_or_else(|shared| Message::clone(&shared))
    }
}

/// Why a message was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The pending queue is at its bound.
    Full,
    /// A message with this id is already waiting or in flight.
    DuplicateId,
}

/// Workers, pending messages and in-flight messages.
#[derive(Debug)]
pub struct InFlightTable {
    workers: HashMap<WorkerId, Worker>,
    pending: VecDeque<Message>,
    in_flight: HashMap<MessageKey, InFlight>,
    /// Every message pending or in flight.
    known: HashSet<MessageKey>,
    max_pending: usize,
    /// The bytes ([`Message::size`]) of the pending messages.
    pending_bytes: usize,
}

impl InFlightTable {
    pub fn new(max_pending: usize) -> Self {
        Self {
            workers: HashMap::new(),
            pending: VecDeque::new(),
            in_flight: HashMap::new(),
            known: HashSet::new(),
            max_pending,
            pending_bytes: 0,
        }
    }

    /// A worker announced itself with `credits`. A worker already known under
    /// this id restarted: what it had in flight is returned, for the caller
    /// to send again or give up on.
    pub fn worker_ready(
        &mut self,
        worker: WorkerId,
        credits: u32,
        pid: u32,
        now: Instant,
    ) -> Vec<Message> {
        let lost = self.worker_lost(&worker);
        self.workers.insert(
            worker,
            Worker {
                credits: credits.max(1),
                in_flight: 0,
                pid,
                last_heard: now,
                ready_at: now,
                serves: Vec::new(),
            },
        );
        lost
    }

    /// A worker was heard from (any message). False for an unknown worker.
    pub fn heard(&mut self, worker: &WorkerId, now: Instant) -> bool {
        match self.workers.get_mut(worker) {
            Some(w) => {
                w.last_heard = now;
                true
            }
            None => false,
        }
    }

    /// A worker is gone: its in-flight messages are removed and returned in
    /// their order of acceptance, for the caller to [`requeue`] or give up
    /// on. Empty for an unknown worker.
    ///
    /// [`requeue`]: InFlightTable::requeue
    pub fn worker_lost(&mut self, worker: &WorkerId) -> Vec<Message> {
        if self.workers.remove(worker).is_none() {
            return Vec::new();
        }
        let ids: Vec<MessageKey> = self
            .in_flight
            .iter()
            .filter(|(_, f)| f.worker == *worker)
            .map(|(id, _)| id.clone())
            .collect();
        let mut lost: Vec<Message> = ids
            .iter()
            .filter_map(|id| self.in_flight.remove(id))
            .map(InFlight::into_message)
            .collect();
        lost.sort_by_key(|m| m.envelope.accepted_us);
        lost
    }

    /// Puts messages taken out of flight back at the front of the queue, in
    /// the given order; each is known again (a completed one's id was let
    /// go: a resend of it must still be taken as a duplicate). They are
    /// never refused, so the queue may exceed its bound by at most what was
    /// in flight (itself bounded by the workers' credits).
    pub fn requeue(&mut self, messages: Vec<Message>) {
        for m in messages.into_iter().rev() {
            self.known.insert(key_of(&m.envelope));
            self.pending_bytes += m.size();
            self.pending.push_front(m);
        }
    }

    /// Counts a message the caller keeps outside the queue — waiting for its
    /// ordering key, or for its retry delay — as known: [`contains`] sees
    /// it and the table is not idle. It comes back with [`requeue`], or is
    /// let go with [`forget`].
    ///
    /// [`contains`]: InFlightTable::contains
    /// [`requeue`]: InFlightTable::requeue
    /// [`forget`]: InFlightTable::forget
    pub fn hold(&mut self, key: MessageKey) {
        self.known.insert(key);
    }

    /// Forgets a message taken out of flight for good (dead-lettered).
    pub fn forget(&mut self, envelope: &Envelope) {
        self.known.remove(key_in(envelope));
    }

    /// True when the message is waiting or in flight.
    pub fn contains(&self, envelope: &Envelope) -> bool {
        self.known.contains(key_in(envelope))
    }

    /// The message `key` if it is on a worker now.
    pub fn in_flight(&self, key: &MessageKey) -> Option<&InFlight> {
        self.in_flight.get(key)
    }

    /// True when the message `key` is waiting or in flight.
    pub fn knows(&self, key: &MessageKey) -> bool {
        self.known.contains(key)
    }

    /// Workers not heard from for longer than `liveness`.
    pub fn silent_workers(&self, now: Instant, liveness: Duration) -> Vec<WorkerId> {
        let mut ids: Vec<WorkerId> = self
            .workers
            .iter()
            .filter(|(_, w)| now.saturating_duration_since(w.last_heard) > liveness)
            .map(|(id, _)| id.clone())
            .collect();
        // In a stable order, so what follows does not depend on hashing.
        ids.sort();
        ids
    }

    /// Workers holding a message dispatched longer ago than `limit`.
    pub fn overdue_workers(&self, now: Instant, limit: Duration) -> Vec<WorkerId> {
        let mut ids: Vec<WorkerId> = self
            .in_flight
            .values()
            .filter(|f| now.saturating_duration_since(f.since) > limit)
            .map(|f| f.worker.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// The process id a worker announced.
    pub fn pid(&self, worker: &WorkerId) -> Option<u32> {
        self.workers.get(worker).map(|w| w.pid)
    }

    /// The credits a worker announced: how many messages it may hold.
    pub fn credits(&self, worker: &WorkerId) -> Option<u32> {
        self.workers.get(worker).map(|w| w.credits)
    }

    /// `worker` can run the catalog versions `versions` too (a worker
    /// not known is left alone).
    pub fn serve(&mut self, worker: &WorkerId, versions: &[u32]) {
        if let Some(w) = self.workers.get_mut(worker) {
            for v in versions {
                if !w.serves.contains(v) {
                    w.serves.push(*v);
                }
            }
        }
    }

    /// The catalog versions `worker` can run.
    pub fn serves(&self, worker: &WorkerId) -> &[u32] {
        self.workers.get(worker).map_or(&[], |w| &w.serves)
    }

    /// When `worker` said READY (its latest READY: a worker that restarts
    /// under the same id starts again).
    pub fn ready_at(&self, worker: &WorkerId) -> Option<Instant> {
        self.workers.get(worker).map(|w| w.ready_at)
    }

    /// Every known worker.
    pub fn workers(&self) -> impl Iterator<Item = &WorkerId> {
        self.workers.keys()
    }

    /// Nothing waiting and nothing in flight.
    pub fn is_idle(&self) -> bool {
        self.known.is_empty()
    }

    /// Queues a message for dispatch; a refused message is handed back.
    pub fn enqueue(&mut self, message: Message) -> Result<(), (Refused, Box<Message>)> {
        if self.pending.len() >= self.max_pending {
            return Err((Refused::Full, Box::new(message)));
        }
        self.enqueue_recovered(message)
    }

    /// Queues a message taken up again from the journal at start-up. It was
    /// accepted before the restart, so it is queued even past `max_pending`
    /// (the journal holds no more than a node had waiting and in flight).
    pub fn enqueue_recovered(&mut self, message: Message) -> Result<(), (Refused, Box<Message>)> {
        if !self.known.insert(key_of(&message.envelope)) {
            return Err((Refused::DuplicateId, Box::new(message)));
        }
        self.pending_bytes += message.size();
        self.pending.push_back(message);
        Ok(())
    }

    /// True when the queue can take another message.
    pub fn has_room(&self) -> bool {
        self.pending.len() < self.max_pending
    }

    /// Takes up to `max_batch` pending messages for the worker with the most
    /// free credits, marks them in flight there (attempt + 1), and returns
    /// them; `None` when nothing is pending or no worker has a free credit.
    pub fn next_batch(
        &mut self,
        max_batch: usize,
        now: Instant,
    ) -> Option<(WorkerId, Vec<Arc<Message>>)> {
        let version = self.pending.front()?.envelope.catalog;
        let (id, worker) = self
            .workers
            .iter_mut()
            .filter(|(_, w)| w.in_flight < w.credits && w.serves.contains(&version))
            // Ties go to the lowest identity: the same state always picks
            // the same worker.
            .max_by(|(a_id, a), (b_id, b)| {
                (a.credits - a.in_flight)
                    .cmp(&(b.credits - b.in_flight))
                    .then_with(|| b_id.cmp(a_id))
            })?;
        let free = usize::try_from(worker.credits - worker.in_flight).unwrap_or(usize::MAX);
        let most = free.min(max_batch.max(1)).min(self.pending.len());
        // The messages at the front this worker can run: a message of
        // another version waits for a worker that serves it.
        let take = self
            .pending
            .iter()
            .take(most)
            .take_while(|m| worker.serves.contains(&m.envelope.catalog))
            .count();
        let mut batch = Vec::with_capacity(take);
        for mut message in self.pending.drain(..take) {
            self.pending_bytes -= message.size();
            message.envelope.attempt += 1;
            let key = key_of(&message.envelope);
            let message = Arc::new(message);
            self.in_flight.insert(
                key,
                InFlight {
                    worker: id.clone(),
                    message: Arc::clone(&message),
                    since: now,
                },
            );
            batch.push(message);
        }
        worker.in_flight += u32::try_from(take).unwrap_or(u32::MAX);
        Some((id.clone(), batch))
    }

    /// A worker finished the message of `envelope`. Returns what was in
    /// flight, or `None` when it is not in flight on that worker (a late
    /// duplicate after a redelivery, or a message the worker never had).
    pub fn complete(&mut self, worker: &WorkerId, envelope: &Envelope) -> Option<InFlight> {
        let key = key_in(envelope);
        if self.in_flight.get(key).is_none_or(|f| f.worker != *worker) {
            return None;
        }
        let done = self.in_flight.remove(key)?;
        self.known.remove(key);
        if let Some(w) = self.workers.get_mut(worker) {
            w.in_flight = w.in_flight.saturating_sub(1);
        }
        Some(done)
    }

    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The pending messages, next first.
    #[cfg(test)]
    pub(crate) fn pending(&self) -> impl Iterator<Item = &Message> {
        self.pending.iter()
    }

    /// The bytes of the pending messages.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes
    }

    pub fn in_flight_len(&self) -> usize {
        self.in_flight.len()
    }

    pub fn worker_count(&self) -> usize {
        self.workers.len()
    }

    /// Messages in flight on `worker`.
    pub fn in_flight_on(&self, worker: &WorkerId) -> usize {
        self.workers.get(worker).map_or(0, |w| w.in_flight as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::envelope::Envelope;
    use proptest::prelude::*;

    fn message(id: u32) -> Message {
        let mut e = Envelope::request(format!("m{id}"), "F");
        e.accepted_us = u64::from(id);
        Message::new(e, Bytes::new())
    }

    fn done(t: &mut InFlightTable, worker: &WorkerId, id: &str) -> Option<InFlight> {
        t.complete(worker, &Envelope::request(id, "F"))
    }

    fn ready(t: &mut InFlightTable, worker: WorkerId, credits: u32) -> Vec<Message> {
        let lost = t.worker_ready(worker.clone(), credits, 0, Instant::now());
        t.serve(&worker, &[0]);
        lost
    }

    fn w(n: u8) -> WorkerId {
        Bytes::from(vec![n])
    }

    #[test]
    fn an_envelope_finds_its_own_key_and_no_other() {
        let mut t = InFlightTable::new(100);
        let envelope = |service: &str, id: &str| {
            let mut e = Envelope::request(id, "F");
            e.service = service.into();
            e
        };
        let m = Message::new(envelope("ab", "c"), Bytes::new());
        t.enqueue(m).expect("queued");
        assert!(t.contains(&envelope("ab", "c")));
        assert!(t.knows(&("ab".into(), "c".into())));
        // The same letters split otherwise are another key.
        assert!(!t.contains(&envelope("a", "bc")));
        assert!(!t.contains(&envelope("abc", "")));
        ready(&mut t, w(1), 1);
        t.next_batch(1, Instant::now()).expect("a batch");
        assert!(t.complete(&w(1), &envelope("a", "bc")).is_none());
        assert!(t.complete(&w(1), &envelope("ab", "c")).is_some());
        assert!(!t.contains(&envelope("ab", "c")));
        assert!(t.is_idle());
    }

    #[test]
    fn a_busy_worker_gets_less_work() {
        let mut t = InFlightTable::new(100);
        ready(&mut t, w(1), 4);
        ready(&mut t, w(2), 4);
        for i in 0..6 {
            t.enqueue(message(i)).unwrap();
        }
        // Both start with 4 free credits: the first batch fills one worker.
        let (first, batch) = t.next_batch(4, Instant::now()).unwrap();
        assert_eq!(batch.len(), 4);
        let (second, batch) = t.next_batch(4, Instant::now()).unwrap();
        assert_ne!(first, second);
        assert_eq!(batch.len(), 2);
        // The first worker finishes one; it now has 1 free, the second 2.
        assert!(done(&mut t, &first, "m0").is_some());
        for i in 6..9 {
            t.enqueue(message(i)).unwrap();
        }
        let (next, batch) = t.next_batch(1, Instant::now()).unwrap();
        assert_eq!((next, batch.len()), (second.clone(), 1));
    }

    #[test]
    fn no_credit_no_dispatch_and_a_full_queue_refuses() {
        let mut t = InFlightTable::new(2);
        t.enqueue(message(1)).unwrap();
        assert!(t.next_batch(8, Instant::now()).is_none(), "no worker yet");
        ready(&mut t, w(1), 1);
        assert_eq!(t.next_batch(8, Instant::now()).unwrap().1.len(), 1);
        t.enqueue(message(2)).unwrap();
        assert!(
            t.next_batch(8, Instant::now()).is_none(),
            "the only credit is taken"
        );
        t.enqueue(message(3)).unwrap();
        assert_eq!(t.enqueue(message(4)).unwrap_err().0, Refused::Full);
        assert_eq!(t.enqueue(message(1)).unwrap_err().0, Refused::Full);
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let mut t = InFlightTable::new(10);
        t.enqueue(message(1)).unwrap();
        assert_eq!(t.enqueue(message(1)).unwrap_err().0, Refused::DuplicateId);
        ready(&mut t, w(1), 8);
        t.next_batch(8, Instant::now()).unwrap();
        assert_eq!(t.enqueue(message(1)).unwrap_err().0, Refused::DuplicateId);
        // The same id from another service is another message.
        let mut other = message(1);
        other.envelope.service = "other".into();
        t.enqueue(other).unwrap();
        // Once completed, the id may be used again.
        assert!(done(&mut t, &w(1), "m1").is_some());
        t.enqueue(message(1)).unwrap();
    }

    #[test]
    fn a_lost_workers_messages_are_redelivered_in_order_with_a_new_attempt() {
        let mut t = InFlightTable::new(10);
        ready(&mut t, w(1), 8);
        for i in 0..3 {
            t.enqueue(message(i)).unwrap();
        }
        t.next_batch(8, Instant::now()).unwrap();
        t.enqueue(message(3)).unwrap();
        let lost = t.worker_lost(&w(1));
        assert_eq!(lost.len(), 3);
        t.requeue(lost);
        ready(&mut t, w(2), 8);
        let (_, batch) = t.next_batch(8, Instant::now()).unwrap();
        let got: Vec<(&str, u32)> = batch
            .iter()
            .map(|m| (m.envelope.id.as_str(), m.envelope.attempt))
            .collect();
        assert_eq!(got, [("m0", 2), ("m1", 2), ("m2", 2), ("m3", 1)]);
        // A late result from the lost worker is not taken as completion.
        assert!(done(&mut t, &w(1), "m0").is_none());
        assert!(done(&mut t, &w(2), "m0").is_some());
    }

    #[test]
    fn a_worker_is_given_only_messages_of_versions_it_serves() {
        let mut t = InFlightTable::new(10);
        let at = Instant::now();
        t.worker_ready(w(1), 8, 11, at);
        let of = |n: u32, version: u32| {
            let mut m = message(n);
            m.envelope.catalog = version;
            m
        };
        t.enqueue(of(1, 1)).unwrap();
        assert!(t.next_batch(8, at).is_none(), "it serves nothing yet");
        t.serve(&w(1), &[1]);
        t.enqueue(of(2, 1)).unwrap();
        t.enqueue(of(3, 2)).unwrap();
        t.enqueue(of(4, 1)).unwrap();
        let (_, batch) = t.next_batch(8, at).unwrap();
        let ids: Vec<&str> = batch.iter().map(|m| m.envelope.id.as_str()).collect();
        assert_eq!(ids, ["m1", "m2"], "up to the first message of version 2");
        assert!(
            t.next_batch(8, at).is_none(),
            "version 2 waits for a worker that serves it"
        );
        t.worker_ready(w(2), 8, 22, at);
        t.serve(&w(2), &[2]);
        let (to, batch) = t.next_batch(8, at).unwrap();
        assert_eq!((to, batch.len()), (w(2), 1));
        assert_eq!(t.serves(&w(2)), [2]);
    }

    #[test]
    fn silent_and_overdue_workers_are_found() {
        let mut t = InFlightTable::new(10);
        let start = Instant::now();
        t.worker_ready(w(1), 4, 11, start);
        t.worker_ready(w(2), 4, 22, start);
        t.serve(&w(1), &[0]);
        t.serve(&w(2), &[0]);
        t.enqueue(message(1)).unwrap();
        let (busy, _) = t.next_batch(4, start).unwrap();
        let later = start + Duration::from_secs(5);
        assert!(t.heard(&w(1), later));
        assert!(!t.heard(&w(9), later));
        assert_eq!(t.silent_workers(later, Duration::from_secs(3)), [w(2)]);
        assert_eq!(
            t.overdue_workers(later, Duration::from_secs(4)),
            vec![busy.clone()]
        );
        assert!(t.overdue_workers(later, Duration::from_secs(6)).is_empty());
        assert_eq!(t.pid(&w(2)), Some(22));
        assert!(!t.is_idle());
        let lost = t.worker_lost(&busy);
        t.forget(&lost[0].envelope);
        assert!(t.is_idle());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Ready(u8, u32),
        Lost(u8),
        Enqueue,
        Dispatch(usize),
        Complete(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..3, 1u32..5).prop_map(|(w, c)| Op::Ready(w, c)),
            (0u8..3).prop_map(Op::Lost),
            Just(Op::Enqueue),
            Just(Op::Enqueue),
            (1usize..4).prop_map(Op::Dispatch),
            (0usize..16).prop_map(Op::Complete),
        ]
    }

    proptest! {
        /// Every accepted message is, at every moment, exactly one of:
        /// pending, in flight, or completed; credits are never exceeded.
        #[test]
        fn nothing_is_lost_or_doubled(ops in proptest::collection::vec(op(), 0..200)) {
            let mut t = InFlightTable::new(8);
            let mut next = 0u32;
            let mut accepted = 0usize;
            let mut completed: Vec<MessageKey> = Vec::new();
            let mut credits: HashMap<WorkerId, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Ready(n, c) => { let lost = ready(&mut t, w(n), c); t.requeue(lost); credits.insert(w(n), c); }
                    Op::Lost(n) => { let lost = t.worker_lost(&w(n)); t.requeue(lost); credits.remove(&w(n)); }
                    Op::Enqueue => {
                        if t.enqueue(message(next)).is_ok() { accepted += 1; }
                        next += 1;
                    }
                    Op::Dispatch(max) => { let _ = t.next_batch(max, Instant::now()); }
                    Op::Complete(i) => {
                        let target = t.in_flight.iter().nth(i % t.in_flight.len().max(1))
                            .map(|(id, f)| (id.clone(), f.worker.clone()));
                        if let Some((id, worker)) = target {
                            let envelope = Envelope::request(id.1.clone(), "F");
                            prop_assert!(t.complete(&worker, &envelope).is_some());
                            prop_assert!(!completed.contains(&id));
                            completed.push(id);
                        }
                    }
                }
                prop_assert_eq!(t.pending_len() + t.in_flight_len() + completed.len(), accepted);
                prop_assert_eq!(t.known.len(), t.pending_len() + t.in_flight_len());
                for (id, c) in &credits {
                    let on = u32::try_from(t.in_flight_on(id)).unwrap();
                    prop_assert!(on <= *c);
                    prop_assert_eq!(on, t.workers[id].in_flight);
                }
                // Intake stops at the bound; messages coming back from a lost
                // worker may exceed it by at most what was in flight (3 workers
                // of at most 4 credits here), never without limit.
                prop_assert!(t.pending_len() + t.in_flight_len() <= 8 + 3 * 4);
            }
        }
    }
}
