//! The steps a flow gives to a service (`[services]` in the mappings): one
//! [`Outbox`] per service, after Synapse's application-service
//! transactions (seed `003_…`).
//!
//! - The steps wait in the order flows reached them, each with a sequence
//!   number; they go out in that order to the service's instances, each
//!   instance taking as many at once as the credits it announced (a `take`
//!   message; `docs/service-steps.md`).
//! - A step stays sent until the service answers it: the answer is the
//!   acknowledgement (the step's result continues the flow, so a separate
//!   ack would say nothing more).
//! - No answer within the step timeout, or no instance left: the service is
//!   DOWN. Its sent steps go back in front of the queue (in order), nothing
//!   more is sent, and the recoverer sends the oldest step alone after an
//!   exponential backoff with jitter, capped; its answer makes the service
//!   UP, and the rest drain in order. An instance that comes back is tried
//!   at once.
//!
//! This module is the state machine alone: no clock read, no socket, no
//! message (the Subject keeps the flows, by key, and does the sending).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;
use crate::inflight::MessageKey;

/// The recoverer's delays: `initial` after the first failure, doubled at
/// each one after, at most `max`; each is shortened by up to a fifth at
/// random (so that services that failed together are not retried
/// together).
pub fn recoverer_backoff(initial: Duration, max: Duration) -> Backoff {
    Backoff::doubling(initial, max).with_jitter(RECOVERER_JITTER)
}

/// The fraction of its delay by which the recoverer's wait is shortened at
/// most.
const RECOVERER_JITTER: f64 = 0.2;

/// Why a service is DOWN before any instance answered a step.
const NEVER_TAKEN: &str = "no instance has taken its steps yet";

/// Whether the service is served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    /// Steps go out as credits allow.
    Up,
    /// Nothing goes out but the recoverer's one step, at `next_try`.
    Down {
        /// Failures in a row.
        failures: u32,
        next_try: Instant,
    },
}

/// One instance of the service, by the topic it takes its steps on.
#[derive(Debug, Clone)]
struct Instance {
    credits: u32,
    used: u32,
    heard: Instant,
}

/// A sent step.
#[derive(Debug, Clone)]
struct Sent {
    seq: u64,
    instance: String,
    at: Instant,
}

/// One service's steps.
#[derive(Debug)]
pub struct Outbox {
    /// Not sent (or sent back), in order.
    queue: BTreeMap<u64, MessageKey>,
    /// Sent, waiting for their answer.
    sent: HashMap<MessageKey, Sent>,
    /// The time each waiting step was queued first, by sequence number.
    queued_at: HashMap<u64, Instant>,
    next_seq: u64,
    instances: BTreeMap<String, Instance>,
    health: Health,
    /// The recoverer's step in flight while DOWN.
    probe: Option<MessageKey>,
    last_error: Option<String>,
    backoff: Backoff,
}

/// A service's steps as `ServiceManagement_Steps` answers them (`zmanager
/// services`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StepsInfo {
    pub service: String,
    /// `"up"` or `"down"`.
    pub status: String,
    /// Steps waiting: not sent, and sent without an answer.
    pub backlog: usize,
    pub sent: usize,
    pub instances: usize,
    /// How long the oldest waiting step has waited, in milliseconds.
    pub oldest_ms: Option<u64>,
    pub last_error: Option<String>,
    /// In how many milliseconds the recoverer tries (DOWN only).
    pub next_try_ms: Option<u64>,
}

impl StepsInfo {
    /// `state` of service `service`, its times counted from `now`.
    pub fn of(service: &str, state: &OutboxState, now: Instant) -> Self {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            service: service.to_owned(),
            status: if state.up { "up" } else { "down" }.to_owned(),
            backlog: state.backlog,
            sent: state.sent,
            instances: state.instances,
            oldest_ms: state.oldest.map(|t| ms(now.saturating_duration_since(t))),
            last_error: state.last_error.clone(),
            next_try_ms: state.next_try.map(|t| ms(t.saturating_duration_since(now))),
        }
    }
}

/// What an outbox reports of itself (`zmanager services`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxState {
    pub up: bool,
    /// Steps waiting: not sent yet, and sent without an answer.
    pub backlog: usize,
    pub sent: usize,
    pub instances: usize,
    /// Since when the oldest waiting step waits.
    pub oldest: Option<Instant>,
    pub last_error: Option<String>,
    /// When the recoverer tries next (DOWN only).
    pub next_try: Option<Instant>,
}

impl Outbox {
    /// An empty outbox. A service with no instance yet is DOWN, to be
    /// tried as soon as one takes steps.
    pub fn new(backoff: Backoff, now: Instant) -> Self {
        Self {
            queue: BTreeMap::new(),
            sent: HashMap::new(),
            queued_at: HashMap::new(),
            next_seq: 0,
            instances: BTreeMap::new(),
            health: Health::Down {
                failures: 0,
                next_try: now,
            },
            probe: None,
            last_error: Some(NEVER_TAKEN.to_owned()),
            backoff,
        }
    }

    /// Steps waiting: queued and sent.
    pub fn len(&self) -> usize {
        self.queue.len() + self.sent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// Adds a step at the end.
    pub fn push(&mut self, key: MessageKey, now: Instant) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.insert(seq, key);
        self.queued_at.insert(seq, now);
    }

    /// True when `key` waits here (queued or sent).
    pub fn contains(&self, key: &MessageKey) -> bool {
        self.sent.contains_key(key) || self.queue.values().any(|k| k == key)
    }

    /// An instance on `topic` takes up to `credits` steps at once (0: it
    /// stops, and the steps it had go back to the queue). Instances send
    /// it again every so often: it is also their heartbeat.
    pub fn take(&mut self, topic: &str, credits: u32, now: Instant) {
        if credits == 0 {
            self.instances.remove(topic);
            self.send_back(|sent| sent.instance == topic);
            return;
        }
        let fresh = !self.instances.contains_key(topic);
        let instance = self.instances.entry(topic.to_owned()).or_insert(Instance {
            credits,
            used: 0,
            heard: now,
        });
        instance.credits = credits;
        instance.heard = now;
        // A service coming back is tried at once, not after its backoff.
        if fresh && let Health::Down { next_try, .. } = &mut self.health {
            *next_try = now;
        }
    }

    /// The steps to send now, each with the topic of the instance that
    /// takes it, in order.
    pub fn next_sends(&mut self, now: Instant) -> Vec<(String, MessageKey)> {
        let mut out = Vec::new();
        match self.health {
            Health::Up => {
                while let Some((&seq, _)) = self.queue.first_key_value() {
                    let Some(topic) = self.free_instance() else {
                        break;
                    };
                    let key = self.queue.remove(&seq).unwrap_or_default();
                    out.push(self.mark_sent(seq, key, topic, now));
                }
            }
            Health::Down { next_try, .. } => {
                if self.probe.is_some() || next_try > now {
                    return out;
                }
                let Some((&seq, _)) = self.queue.first_key_value() else {
                    return out;
                };
                let Some(topic) = self.free_instance() else {
                    return out;
                };
                let key = self.queue.remove(&seq).unwrap_or_default();
                self.probe = Some(key.clone());
                out.push(self.mark_sent(seq, key, topic, now));
            }
        }
        out
    }

    fn free_instance(&self) -> Option<String> {
        self.instances
            .iter()
            .filter(|(_, i)| i.used < i.credits)
            .max_by_key(|(_, i)| i.credits - i.used)
            .map(|(topic, _)| topic.clone())
    }

    fn mark_sent(
        &mut self,
        seq: u64,
        key: MessageKey,
        topic: String,
        now: Instant,
    ) -> (String, MessageKey) {
        if let Some(instance) = self.instances.get_mut(&topic) {
            instance.used += 1;
        }
        self.sent.insert(
            key.clone(),
            Sent {
                seq,
                instance: topic.clone(),
                at: now,
            },
        );
        (topic, key)
    }

    /// The service answered `key` (from any of its instances): true when
    /// the step waited here. The service is UP again.
    pub fn answered(&mut self, key: &MessageKey, now: Instant) -> bool {
        let found = if let Some(sent) = self.sent.remove(key) {
            if let Some(instance) = self.instances.get_mut(&sent.instance) {
                instance.used = instance.used.saturating_sub(1);
                instance.heard = now;
            }
            self.queued_at.remove(&sent.seq);
            true
        } else if let Some((&seq, _)) = self.queue.iter().find(|(_, k)| *k == key) {
            // Sent before, sent back, answered late: done all the same.
            self.queue.remove(&seq);
            self.queued_at.remove(&seq);
            true
        } else {
            false
        };
        if found {
            self.probe = None;
            if self.health != Health::Up {
                self.health = Health::Up;
                // What kept it DOWN before its first answer is over; a
                // failure since then stays, for `zmanager services`.
                if self.last_error.as_deref() == Some(NEVER_TAKEN) {
                    self.last_error = None;
                }
            }
        }
        found
    }

    /// Drops `key` without an answer (its flow ended otherwise).
    pub fn remove(&mut self, key: &MessageKey) {
        if let Some(sent) = self.sent.remove(key) {
            if let Some(instance) = self.instances.get_mut(&sent.instance) {
                instance.used = instance.used.saturating_sub(1);
            }
            self.queued_at.remove(&sent.seq);
        } else if let Some((&seq, _)) = self.queue.iter().find(|(_, k)| *k == key) {
            self.queue.remove(&seq);
            self.queued_at.remove(&seq);
        }
        if self.probe.as_ref() == Some(key) {
            self.probe = None;
        }
    }

    /// Time passes: instances silent past `liveness` are gone (their steps
    /// go back); a step sent more than `timeout` ago makes the service
    /// DOWN. `jitter` in [0, 1) shortens the backoff by up to its jitter
    /// (a fifth, with [`recoverer_backoff`]).
    pub fn tick(&mut self, now: Instant, timeout: Duration, liveness: Duration, jitter: f64) {
        let silent: Vec<String> = self
            .instances
            .iter()
            .filter(|(_, i)| now.saturating_duration_since(i.heard) > liveness)
            .map(|(topic, _)| topic.clone())
            .collect();
        for topic in &silent {
            self.instances.remove(topic);
        }
        if !silent.is_empty() {
            self.send_back(|sent| silent.contains(&sent.instance));
        }
        let late = self
            .sent
            .iter()
            .filter(|(_, s)| now.saturating_duration_since(s.at) > timeout)
            .min_by_key(|(_, s)| s.seq)
            .map(|(key, _)| key.clone());
        if let Some(key) = late {
            let text = format!(
                "no answer to step {:?} of {:?} within {} ms",
                key.1,
                key.0,
                timeout.as_millis()
            );
            self.fail(text, now, jitter);
        } else if self.instances.is_empty() && !self.is_empty() && self.health == Health::Up {
            self.fail("no instance takes its steps".to_owned(), now, jitter);
        }
    }

    /// The service is DOWN (again): what was sent goes back, the recoverer
    /// waits its backoff.
    fn fail(&mut self, error: String, now: Instant, jitter: f64) {
        let failures = match self.health {
            Health::Up => 1,
            Health::Down { failures, .. } => failures.saturating_add(1),
        };
        let delay = self.backoff.delay(failures, jitter);
        self.health = Health::Down {
            failures,
            next_try: now + delay,
        };
        self.probe = None;
        self.last_error = Some(error);
        self.send_back(|_| true);
    }

    /// Puts the sent steps `which` picks back in the queue, in order.
    fn send_back(&mut self, which: impl Fn(&Sent) -> bool) {
        let back: Vec<MessageKey> = self
            .sent
            .iter()
            .filter(|(_, s)| which(s))
            .map(|(k, _)| k.clone())
            .collect();
        for key in back {
            if let Some(sent) = self.sent.remove(&key) {
                if let Some(instance) = self.instances.get_mut(&sent.instance) {
                    instance.used = instance.used.saturating_sub(1);
                }
                if self.probe.as_ref() == Some(&key) {
                    self.probe = None;
                }
                self.queue.insert(sent.seq, key);
            }
        }
    }

    /// What `zmanager services` shows.
    pub fn state(&self) -> OutboxState {
        OutboxState {
            up: self.health == Health::Up,
            backlog: self.len(),
            sent: self.sent.len(),
            instances: self.instances.len(),
            oldest: self.queued_at.values().min().copied(),
            last_error: self.last_error.clone(),
            next_try: match self.health {
                Health::Down { next_try, .. } => Some(next_try),
                Health::Up => None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn key(n: u32) -> MessageKey {
        ("s".to_owned(), format!("i{n}"))
    }

    fn ids(sends: &[(String, MessageKey)]) -> Vec<String> {
        sends.iter().map(|(_, k)| k.1.clone()).collect()
    }

    fn outbox(t0: Instant) -> Outbox {
        Outbox::new(recoverer_backoff(100 * MS, 1000 * MS), t0)
    }

    #[test]
    fn steps_go_out_in_order_as_credits_allow_and_answers_free_them() {
        let t0 = Instant::now();
        let mut o = outbox(t0);
        for n in 0..5 {
            o.push(key(n), t0);
        }
        assert!(o.next_sends(t0).is_empty(), "no instance yet");
        o.take("@reply~svc~a", 2, t0);
        let first = o.next_sends(t0);
        assert_eq!(
            ids(&first),
            ["i0"],
            "DOWN until one answers: the oldest alone"
        );
        assert!(o.answered(&key(0), t0));
        assert_eq!(o.health(), &Health::Up);
        assert_eq!(ids(&o.next_sends(t0)), ["i1", "i2"], "two credits");
        assert!(o.next_sends(t0).is_empty());
        assert!(o.answered(&key(2), t0));
        assert_eq!(ids(&o.next_sends(t0)), ["i3"]);
        assert!(!o.answered(&key(9), t0), "not ours");
        assert_eq!(o.len(), 3);
    }

    #[test]
    fn a_late_answer_makes_the_service_down_and_the_recoverer_backs_off() {
        let t0 = Instant::now();
        let mut o = outbox(t0);
        o.take("a", 3, t0);
        for n in 0..4 {
            o.push(key(n), t0);
        }
        // The first answer brings it UP.
        assert_eq!(ids(&o.next_sends(t0)), ["i0"]);
        assert!(o.answered(&key(0), t0));
        let sent = o.next_sends(t0);
        assert_eq!(ids(&sent), ["i1", "i2", "i3"]);
        let timeout = 500 * MS;
        let liveness = Duration::from_secs(3600);
        o.tick(t0 + 400 * MS, timeout, liveness, 0.0);
        assert_eq!(o.health(), &Health::Up);
        let t1 = t0 + 600 * MS;
        o.tick(t1, timeout, liveness, 0.0);
        assert_eq!(
            o.health(),
            &Health::Down {
                failures: 1,
                next_try: t1 + 100 * MS
            }
        );
        assert!(
            o.state()
                .last_error
                .unwrap()
                .contains("no answer to step \"i1\"")
        );
        assert!(o.next_sends(t1 + 50 * MS).is_empty(), "backing off");
        let probe = o.next_sends(t1 + 100 * MS);
        assert_eq!(ids(&probe), ["i1"], "the oldest, alone, with the same id");
        assert!(o.next_sends(t1 + 100 * MS).is_empty());
        // No answer again: the next delay doubles.
        let t2 = t1 + 100 * MS + 600 * MS;
        o.tick(t2, timeout, liveness, 0.0);
        assert_eq!(
            o.health(),
            &Health::Down {
                failures: 2,
                next_try: t2 + 200 * MS
            }
        );
        let probe = o.next_sends(t2 + 200 * MS);
        assert_eq!(ids(&probe), ["i1"]);
        assert!(o.answered(&key(1), t2 + 250 * MS));
        assert_eq!(o.health(), &Health::Up);
        assert_eq!(
            ids(&o.next_sends(t2 + 250 * MS)),
            ["i2", "i3"],
            "the rest drain in order"
        );
    }

    #[test]
    fn the_backoff_doubles_to_its_cap_and_jitter_shortens_it() {
        let b = recoverer_backoff(100 * MS, 1000 * MS);
        let delays: Vec<u64> = (1..8).map(|f| b.base(f).as_millis() as u64).collect();
        assert_eq!(delays, [100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(b.base(u32::MAX), 1000 * MS);
        let t0 = Instant::now();
        let mut o = outbox(t0);
        o.take("a", 1, t0);
        o.push(key(0), t0);
        let _ = o.next_sends(t0);
        o.tick(
            t0 + Duration::from_secs(1),
            10 * MS,
            Duration::from_secs(60),
            0.999,
        );
        let Health::Down { next_try, .. } = *o.health() else {
            panic!("down")
        };
        let delay = next_try - (t0 + Duration::from_secs(1));
        assert!(delay >= 80 * MS && delay < 101 * MS, "{delay:?}");
    }

    #[test]
    fn a_silent_instance_gives_its_steps_back_to_the_others_in_order() {
        let t0 = Instant::now();
        let mut o = outbox(t0);
        o.take("a", 2, t0);
        o.take("b", 2, t0);
        for n in 0..4 {
            o.push(key(n), t0);
        }
        let _ = o.next_sends(t0);
        assert!(o.answered(&key(0), t0));
        let sent = o.next_sends(t0);
        assert_eq!(sent.len(), 3);
        // b stays alive, a goes silent.
        let t1 = t0 + 200 * MS;
        o.take("b", 2, t1);
        o.tick(t1, Duration::from_secs(60), 100 * MS, 0.0);
        assert_eq!(o.state().instances, 1);
        let again = o.next_sends(t1);
        assert!(again.iter().all(|(topic, _)| topic == "b"), "{again:?}");
        // Everything is still there, once.
        assert_eq!(o.len(), 3);
        for n in 1..4 {
            assert!(o.contains(&key(n)));
        }
    }

    #[test]
    fn a_service_with_no_instance_left_is_down_and_one_coming_back_is_tried_at_once() {
        let t0 = Instant::now();
        let mut o = outbox(t0);
        o.take("a", 1, t0);
        o.push(key(0), t0);
        o.push(key(1), t0);
        let _ = o.next_sends(t0);
        assert!(o.answered(&key(0), t0));
        let _ = o.next_sends(t0);
        o.take("a", 0, t0);
        o.tick(t0, Duration::from_secs(60), Duration::from_secs(60), 0.0);
        assert!(!o.state().up);
        assert_eq!(
            o.state().last_error.as_deref(),
            Some("no instance takes its steps")
        );
        let t1 = t0 + 10 * MS;
        o.take("c", 4, t1);
        assert_eq!(ids(&o.next_sends(t1)), ["i1"], "tried at once");
    }

    #[test]
    fn a_step_removed_or_answered_after_it_was_sent_back_is_gone() {
        let t0 = Instant::now();
        let mut o = outbox(t0);
        o.take("a", 5, t0);
        for n in 0..3 {
            o.push(key(n), t0);
        }
        let _ = o.next_sends(t0);
        let _ = o.answered(&key(0), t0);
        let _ = o.next_sends(t0);
        o.tick(
            t0 + Duration::from_secs(2),
            Duration::from_secs(1),
            Duration::from_secs(60),
            0.0,
        );
        // Sent back by the failure; the late answer still counts.
        assert!(o.answered(&key(1), t0 + Duration::from_secs(2)));
        o.remove(&key(2));
        assert!(o.is_empty());
        assert_eq!(o.state().oldest, None);
    }
}
