//! The model test of the Subject: random interleavings of everything that
//! can happen to it — requests (duplicates, refused ones whose ids collide
//! with live ones), worker results, errors, panics, workers lost and hung,
//! commits that succeed or fail, `@ASYNC` answers, a service's instances
//! taking, holding, answering and forgetting its steps, durable
//! subscriptions made, acknowledged and made again, time passing — driven
//! through [`SubjectCore`], with its promises checked after every step:
//!
//! - every accepted `(service, id)` ends exactly once, with one result
//!   published at its end (a republished result only answers a duplicate);
//! - no `accepted` goes out for an id whose acceptance is not committed;
//! - an ordered flow's request runs only once every earlier request of its
//!   key has ended and that end is committed, so only a request's own end
//!   frees its key;
//! - every table and queue stays within its bound;
//! - a step given to a service goes out only once its suspension is
//!   committed; every flow waiting at a service's step is in that
//!   service's outbox, and nothing else is;
//! - a durable subscription delivers, under each sequence number, the very
//!   publication that number was given to, in the order published, never
//!   past its window;
//! - every accepted request has a valid trace context — the one it came
//!   with if valid, else a new one — and its work, the steps given for it
//!   and its result carry that one; a request's refusal carries a valid
//!   one too;
//! - nothing panics; and after the faults stop, everything accepted ends.
//!
//! The journal is played by the test: appended turns wait in a queue until
//! an operation commits or fails the oldest (a failed commit is tried
//! again later, as the writer does). Workers are played by the test too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use proptest::prelude::*;
use zeromq::ZmqMessage;

use super::core::{Effect, Input, Now, SubjectCore, SubjectOptions};
use crate::catalog::source::{Format, SourceFile};
use crate::catalog::{Catalog, StepRole};
use crate::inflight::{MessageKey, key_of};
use crate::journal::Event;
use crate::ordering::GroupKey;
use crate::wire::envelope::{Envelope, Kind};
use crate::wire::error_code::ErrorCode;
use crate::wire::trace_context::TraceParent;
use crate::wire::{self, Message, Ready, ToWorker};

/// The digest of the model's one catalog version: its workers say they
/// have it at READY, as a worker that read the node's files does.
const MODEL_DIGEST: &str = "model";

const FLOWS: &str = r#"
[flow.Work]
steps = ["?Work?Push", "?Work?run", "??done"]

[flow.Ordered]
order_by = "envelope"
steps = ["?Ordered?Push", "?Ordered?run", "??done"]

# Ordered, and waiting at an @ASYNC step while it holds its key.
[flow.Wait]
order_by = "envelope"
steps = ["?Wait?Push", "?Wait@ASYNC?answer", "?Wait?run", "??done"]

# An action, then an @ASYNC step (which may be refused: max_suspended).
[flow.Chain]
steps = ["?Chain?Push", "?Chain?run", "?Chain@ASYNC?answer", "??done"]

[flow.Retried]
steps = ["?Retried?Push", "?Retried?run", "??done"]

# An action, then a step given to service `svc` (`[services]`).
[flow.Serve]
steps = ["?Serve?Push", "?Serve?run", "?Serve?moderate", "??done"]
"#;

const MAPPINGS: &str = r#"
[actionmapping]
"??run" = "M.run"
"?Retried?run" = "M.run"

[services]
"?Serve?moderate" = "svc"

[retry."?Retried?run"]
max_attempts = 3
initial_delay_ms = 5000
multiplier = 1.0
"#;

/// About the size ([`Message::size`]) of the model's messages: the bounds
/// in bytes are a few of them, so they bind.
const MODEL_MESSAGE: usize = 600;
const MAX_PENDING_BYTES: usize = 2 * MODEL_MESSAGE;

const FLOW_NAMES: [&str; 6] = ["Work", "Ordered", "Wait", "Chain", "Retried", "Serve"];
/// The service the `Serve` flow gives its step to, and its instances.
const SERVICE: &str = "svc";
const INSTANCES: u8 = 2;
const MAX_STEP_CREDITS: u32 = 2;
const WORKERS: u8 = 2;
const MAX_CREDITS: u32 = 3;

fn options() -> SubjectOptions {
    SubjectOptions {
        batch: 4,
        max_pending: 8,
        max_pending_bytes: MAX_PENDING_BYTES,
        max_message_bytes: 1024,
        heartbeat: Duration::from_millis(100),
        liveness: Duration::from_millis(300),
        message_timeout: Duration::from_millis(1000),
        max_attempts: 3,
        dedupe_window: Duration::from_secs(60),
        dedupe_capacity: 4,
        dedupe_max_bytes: 3 * MODEL_MESSAGE,
        drain_timeout: Duration::from_secs(1),
        async_timeout: Duration::from_millis(500),
        max_suspended: 2,
        service_liveness: Duration::from_secs(1),
        max_services: 4,
        service_step_timeout: Duration::from_millis(400),
        service_backoff: crate::services::steps::recoverer_backoff(
            Duration::from_millis(100),
            Duration::from_millis(800),
        ),
        max_service_steps: 3,
        durable_retention: crate::services::durable::Retention {
            max_messages: 4,
            max_bytes: 4 * MODEL_MESSAGE,
            max_age: Duration::from_secs(5),
        },
        max_durables: 2,
        start_traces: true,
        record_spans: true,
    }
}

fn catalog() -> Arc<Catalog> {
    let flows = [SourceFile::new("model.toml", FLOWS, Format::Toml)];
    let maps = [SourceFile::new("model_map.toml", MAPPINGS, Format::Toml)];
    let (catalog, d) = Catalog::build(&flows, &maps);
    assert!(!d.has_errors(), "{d}");
    Arc::new(catalog)
}

/// How a worker answers.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Ok,
    Fail,
    Panic,
}

/// How a message is refused before acceptance.
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Version,
    UnknownKind,
    AcceptedKind,
    /// A payload that is not MessagePack (`0xc1`).
    BadPayload,
    /// Past `max_message_bytes`.
    TooLarge,
}

#[derive(Debug, Clone)]
enum Op {
    Request {
        service: u8,
        id: u8,
        flow: usize,
        key: u8,
        ack: bool,
    },
    Refused {
        how: Refusal,
        service: u8,
        id: u8,
        flow: usize,
        key: u8,
    },
    Answer {
        service: u8,
        id: u8,
        error: bool,
    },
    Ready {
        worker: u8,
        credits: u32,
    },
    Heartbeat {
        worker: u8,
    },
    Result {
        worker: u8,
        pick: usize,
        outcome: Outcome,
    },
    /// A result from a worker that was lost (a late duplicate).
    LateResult {
        pick: usize,
    },
    Gone {
        worker: u8,
    },
    Commit,
    FailCommit,
    Tick {
        ms: u64,
    },
    /// An instance of `svc` takes its steps (again: its heartbeat), or
    /// stops (0 credits).
    Take {
        instance: u8,
        credits: u32,
    },
    /// An instance answers one of the steps it holds.
    StepAnswer {
        instance: u8,
        pick: usize,
        error: bool,
    },
    /// An instance answers a step it held before (a duplicate answer).
    StaleAnswer {
        pick: usize,
    },
    /// An instance's process dies: what it held is lost with it.
    Vanish {
        instance: u8,
    },
    /// A durable subscriber of service 0's results subscribes (again).
    DurableSubscribe {
        name: u8,
    },
    /// It acknowledges the last it got.
    DurableAck {
        name: u8,
    },
}

/// The prefix the model's durable subscriptions keep: service 0's results.
const DURABLE_PREFIX: &str = "r0";
const DURABLE_WINDOW: u32 = 2;

/// Whether commits may fail: not when `MODEL_NO_FAILED_COMMITS` is set
/// (to hunt what else breaks a promise).
fn failed_commits() -> bool {
    std::env::var_os("MODEL_NO_FAILED_COMMITS").is_none()
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Ok),
        2 => Just(Outcome::Fail),
        1 => Just(Outcome::Panic),
    ];
    let refusal = prop_oneof![
        Just(Refusal::Version),
        Just(Refusal::UnknownKind),
        Just(Refusal::AcceptedKind),
        Just(Refusal::BadPayload),
        Just(Refusal::TooLarge),
    ];
    prop_oneof![
        8 => (0u8..2, 0u8..16, 0usize..FLOW_NAMES.len(), 0u8..2, any::<bool>())
            .prop_map(|(service, id, flow, key, ack)| Op::Request { service, id, flow, key, ack }),
        2 => (refusal, 0u8..2, 0u8..12, 0usize..FLOW_NAMES.len(), 0u8..2)
            .prop_map(|(how, service, id, flow, key)| Op::Refused { how, service, id, flow, key }),
        2 => (0u8..2, 0u8..12, any::<bool>())
            .prop_map(|(service, id, error)| Op::Answer { service, id, error }),
        2 => (0..WORKERS, 1..=MAX_CREDITS).prop_map(|(worker, credits)| Op::Ready { worker, credits }),
        3 => (0..WORKERS).prop_map(|worker| Op::Heartbeat { worker }),
        8 => (0..WORKERS, 0usize..8, outcome)
            .prop_map(|(worker, pick, outcome)| Op::Result { worker, pick, outcome }),
        1 => (0usize..8).prop_map(|pick| Op::LateResult { pick }),
        1 => (0..WORKERS).prop_map(|worker| Op::Gone { worker }),
        6 => Just(Op::Commit),
        2 => Just(if failed_commits() { Op::FailCommit } else { Op::Commit }),
        3 => (0u64..400).prop_map(|ms| Op::Tick { ms }),
        3 => (0..INSTANCES, 0..=MAX_STEP_CREDITS).prop_map(|(instance, credits)| Op::Take { instance, credits }),
        4 => (0..INSTANCES, 0usize..4, any::<bool>())
            .prop_map(|(instance, pick, error)| Op::StepAnswer { instance, pick, error }),
        1 => (0usize..4).prop_map(|pick| Op::StaleAnswer { pick }),
        1 => (0..INSTANCES).prop_map(|instance| Op::Vanish { instance }),
        1 => (0u8..2).prop_map(|name| Op::DurableSubscribe { name }),
        2 => (0u8..2).prop_map(|name| Op::DurableAck { name }),
    ]
}

/// One accepted request's life, as the journal tells it.
#[derive(Debug, Default)]
struct Life {
    live: bool,
    /// The `traceparent` each acceptance gave it, oldest first.
    traceparents: Vec<String>,
    /// Acceptances recorded, and how many of them are committed.
    accepted: u32,
    accepted_committed: u32,
    /// The results published at its ends, oldest first.
    results: Vec<Message>,
}

/// The test's side: the fake workers and journal, and what the promises
/// are checked against.
struct Harness {
    core: SubjectCore,
    catalog: Arc<Catalog>,
    start: Instant,
    elapsed: Duration,
    /// What each connected worker holds (received, not answered).
    workers: HashMap<u8, Vec<Message>>,
    /// Each worker's start: a restarted worker has a new identity.
    generations: HashMap<u8, u32>,
    /// What lost workers held, with their identity: their results are late.
    zombies: Vec<(Bytes, Message)>,
    /// Appended turns not committed yet, oldest first.
    appended: VecDeque<(u64, Vec<Event>)>,
    lives: HashMap<MessageKey, Life>,
    /// Per ordering key, the requests accepted and not yet ended-and-
    /// committed, in acceptance order.
    order: HashMap<GroupKey, VecDeque<MessageKey>>,
    /// The ordering key of each life of an id whose end is not committed,
    /// oldest first (a later life may be in another flow).
    group_of: HashMap<MessageKey, VecDeque<Option<GroupKey>>>,
    /// Per id, the lives whose `accepted` acknowledgement is due, in the
    /// order they were asked for (a request with `ack` that the node took,
    /// or absorbed as a duplicate of a live one).
    acks_due: HashMap<MessageKey, VecDeque<u32>>,
    /// Per id, ends whose result has not been published yet (results wait
    /// for the commit of the end).
    results_due: HashMap<MessageKey, usize>,
    /// Per id, requests sent again after its end: each may get the result
    /// published again.
    republish_due: HashMap<MessageKey, usize>,
    /// Whether the last service message reached the core.
    delivered: bool,
    /// Every result published on a result topic, in order.
    published: Vec<Message>,
    /// Whether the last step's service message reached the core.
    delivered_last: bool,
    /// The steps each instance of `svc` holds (received, not answered), by
    /// its topic, and the credits it took last.
    instances: HashMap<String, (u32, Vec<Message>)>,
    /// Steps answered once, for duplicate answers.
    answered_steps: Vec<Message>,
    /// Every publication on [`DURABLE_PREFIX`] topics, in order.
    on_prefix: Vec<Message>,
    /// Per durable name: how many publications on the prefix came before
    /// it was made (its sequence number 1 is the next one), and the
    /// highest sequence number it got.
    durable: HashMap<u8, (usize, u64)>,
    /// Requests whose suspension at a step is committed in their current
    /// life (cleared when the id is accepted again).
    suspension_committed: HashSet<MessageKey>,
    /// A commit failed and none succeeded since (the writer's health).
    writer_failing: bool,
}

/// Whether the promise `name` is checked: all are, unless `MODEL_ONLY`
/// names one (`acks`, `ends`, `keys`, `bounds`, `failures`), to hunt one
/// counterexample at a time.
fn checking(name: &str) -> bool {
    std::env::var("MODEL_ONLY").map_or(true, |only| only == name)
}

fn service_name(service: u8) -> String {
    format!("s{service}")
}

fn identity(worker: u8, generation: u32) -> Bytes {
    Bytes::from(format!("w{worker}.{generation}"))
}

fn frames(mut message: ZmqMessage, identity: Bytes) -> ZmqMessage {
    message.push_front(identity);
    message
}

impl Harness {
    fn new() -> Self {
        Self::with(options())
    }

    fn with(options: SubjectOptions) -> Self {
        let catalog = catalog();
        let start = Instant::now();
        let now = Now {
            at: start,
            wall_us: 1_000_000,
        };
        Self {
            core: SubjectCore::new(
                crate::catalog::version::Catalogs::single(Arc::clone(&catalog), MODEL_DIGEST),
                options,
                true,
                1,
                now,
            ),
            catalog,
            start,
            elapsed: Duration::ZERO,
            workers: HashMap::new(),
            generations: HashMap::new(),
            zombies: Vec::new(),
            appended: VecDeque::new(),
            lives: HashMap::new(),
            order: HashMap::new(),
            group_of: HashMap::new(),
            acks_due: HashMap::new(),
            results_due: HashMap::new(),
            republish_due: HashMap::new(),
            delivered: false,
            published: Vec::new(),
            delivered_last: false,
            instances: HashMap::new(),
            answered_steps: Vec::new(),
            on_prefix: Vec::new(),
            durable: HashMap::new(),
            suspension_committed: HashSet::new(),
            writer_failing: false,
        }
    }

    fn durable_topic(name: u8) -> String {
        format!("@reply~d~durable-{name}~")
    }

    fn instance_topic(instance: u8) -> String {
        format!("@reply~{SERVICE}~i{instance}~")
    }

    /// `svc`'s answer to `step`.
    fn step_answer(step: &Message, error: bool) -> Message {
        let mut e = Envelope::request(step.envelope.id.clone(), step.envelope.flow.clone());
        e.kind = Kind::Result;
        e.service = SERVICE.into();
        e.reply_to = format!("@reply~{SERVICE}~");
        e.origin.clone_from(&step.envelope.service);
        if error {
            e = e.into_error(ErrorCode::ActionFailed, "the service says no");
        }
        Message::new(e, Bytes::from_static(&[0x91, 0x04]))
    }

    fn now(&self) -> Now {
        Now {
            at: self.start + self.elapsed,
            wall_us: 1_000_000 + u64::try_from(self.elapsed.as_micros()).unwrap_or(u64::MAX),
        }
    }

    /// The trace context a request with id `id` comes with: none, a
    /// valid one, or a malformed one, by `id % 3` (the ops stay as they
    /// were, so the committed regressions still mean what they meant).
    fn trace_of(id: u8) -> (String, String) {
        match id % 3 {
            0 => (String::new(), String::new()),
            1 => (
                format!("00-{:032x}-{:016x}-01", 0xa000 + u32::from(id), 7),
                format!("m=i{id}"),
            ),
            _ => ("00-zz".to_owned(), "m=1".to_owned()),
        }
    }

    fn request(service: u8, id: u8, flow: usize, key: u8, ack: bool) -> Message {
        let mut e = Envelope::request(format!("i{id}"), FLOW_NAMES[flow]);
        e.service = service_name(service);
        e.reply_to = format!("r{service}");
        e.ack = ack;
        e.order_key = format!("k{key}");
        (e.traceparent, e.tracestate) = Self::trace_of(id);
        // Ids from 8 up carry 300 bytes, so the bounds in bytes bind.
        let payload = if id >= 8 {
            Bytes::from(rmp_serde::to_vec(&"x".repeat(300)).expect("bytes"))
        } else {
            Bytes::from_static(&[0x91, 0x01])
        };
        Message::new(e, payload)
    }

    fn identity(&self, worker: u8) -> Bytes {
        identity(worker, self.generations.get(&worker).copied().unwrap_or(0))
    }

    /// The worker's process is gone: what it held comes back late, if at all.
    fn bury(&mut self, worker: u8) {
        let id = self.identity(worker);
        if let Some(held) = self.workers.remove(&worker) {
            self.zombies
                .extend(held.into_iter().map(|m| (id.clone(), m)));
        }
    }

    /// A service's message reaches the core only while it has room: the
    /// shell stops reading the intake otherwise (the service waits).
    fn intake(&mut self, message: &Message) {
        self.delivered = self.core.has_room();
        if !self.delivered {
            return;
        }
        let input = Input::Intake(wire::topic_message("", message), None, 0);
        self.core.handle(input, self.now());
    }

    /// The result a worker would return for `message`.
    fn result(&self, message: &Message, outcome: Outcome) -> Message {
        let mut envelope = message.envelope.clone();
        envelope.kind = Kind::Result;
        match outcome {
            Outcome::Ok => {
                let routed = self.catalog.flow(&envelope.flow).expect("a model flow");
                let mut step = usize::try_from(envelope.step).unwrap_or(usize::MAX);
                while matches!(routed.roles.get(step), Some((StepRole::Action(_), _))) {
                    step += 1;
                }
                envelope.step = u32::try_from(step).unwrap_or(u32::MAX);
                envelope.key = routed
                    .flow
                    .steps
                    .get(step)
                    .map(|s| s.key.to_string())
                    .unwrap_or_default();
                Message::new(envelope, Bytes::from_static(&[0x91, 0x02]))
            }
            Outcome::Fail => Message::new(
                envelope.into_error(ErrorCode::ActionFailed, "it failed"),
                message.payload.clone(),
            ),
            Outcome::Panic => Message::new(
                envelope.into_error(ErrorCode::ActionPanicked, "it panicked"),
                message.payload.clone(),
            ),
        }
    }

    /// Applies `op` and ends the turn.
    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Request {
                service,
                id,
                flow,
                key,
                ack,
            } => {
                let message = Self::request(service, id, flow, key, ack);
                self.intake(&message);
            }
            Op::Refused {
                how,
                service,
                id,
                flow,
                key,
            } => {
                let mut message = Self::request(service, id, flow, key, false);
                match how {
                    Refusal::Version => message.envelope.v = 2,
                    Refusal::UnknownKind => message.envelope.kind = Kind::Unknown,
                    Refusal::AcceptedKind => message.envelope.kind = Kind::Accepted,
                    Refusal::BadPayload => message.payload = Bytes::from_static(&[0xc1]),
                    Refusal::TooLarge => {
                        message.payload =
                            Bytes::from(rmp_serde::to_vec(&vec![0u8; 1024]).expect("bytes"));
                    }
                }
                self.intake(&message);
            }
            Op::Answer { service, id, error } => {
                let mut e = Envelope::request(format!("i{id}"), "Wait");
                e.kind = Kind::Result;
                e.service = "answerer".into();
                e.reply_to = "ranswerer".into();
                e.origin = service_name(service);
                if error {
                    e = e.into_error(ErrorCode::ActionFailed, "the service says no");
                }
                self.intake(&Message::new(e, Bytes::from_static(&[0x91, 0x03])));
            }
            Op::Ready { worker, credits } => {
                // A worker process (re)started: a new identity; the old
                // one's connection closed.
                if self.workers.contains_key(&worker) {
                    let old = self.identity(worker);
                    self.bury(worker);
                    self.core.handle(Input::WorkerGone(old), self.now());
                }
                *self.generations.entry(worker).or_default() += 1;
                self.workers.insert(worker, Vec::new());
                let ready = wire::ready(&Ready {
                    credits,
                    pid: 100 + u32::from(worker),
                    catalogs: vec![MODEL_DIGEST.to_owned()],
                });
                let input = Input::Worker(frames(ready, self.identity(worker)));
                self.core.handle(input, self.now());
            }
            Op::Heartbeat { worker } => {
                if self.workers.contains_key(&worker) {
                    let input = Input::Worker(frames(wire::heartbeat(), self.identity(worker)));
                    self.core.handle(input, self.now());
                }
            }
            Op::Result {
                worker,
                pick,
                outcome,
            } => {
                let Some(held) = self.workers.get_mut(&worker) else {
                    return self.end_turn(op);
                };
                if held.is_empty() {
                    return self.end_turn(op);
                }
                let message = held.remove(pick % held.len());
                let result = self.result(&message, outcome);
                let input = Input::Worker(frames(wire::results([&result]), self.identity(worker)));
                self.core.handle(input, self.now());
            }
            Op::LateResult { pick } => {
                if !self.zombies.is_empty() {
                    let (id, message) = self.zombies.remove(pick % self.zombies.len());
                    let result = self.result(&message, Outcome::Ok);
                    let input = Input::Worker(frames(wire::results([&result]), id));
                    self.core.handle(input, self.now());
                }
            }
            Op::Gone { worker } => {
                let id = self.identity(worker);
                self.bury(worker);
                self.core.handle(Input::WorkerGone(id), self.now());
            }
            Op::Commit => {
                if let Some((turn, events)) = self.appended.pop_front() {
                    self.committed(&events);
                    // The writer says it commits again on its health
                    // channel, before the commit's notice comes.
                    if std::mem::take(&mut self.writer_failing) {
                        self.core.handle(Input::CommitsAgain, self.now());
                    }
                    self.core.handle(Input::Committed(turn), self.now());
                }
            }
            Op::FailCommit => {
                // The writer tries a failed commit again: the turn stays
                // first in line.
                if !self.appended.is_empty() {
                    let input = Input::CommitFailed {
                        error: "database or disk is full".into(),
                    };
                    self.writer_failing = true;
                    self.core.handle(input, self.now());
                }
            }
            Op::Tick { ms } => {
                self.elapsed += Duration::from_millis(ms);
                self.core.handle(Input::Tick, self.now());
            }
            Op::Take { instance, credits } => {
                let topic = Self::instance_topic(instance);
                let mut e = Envelope::request(format!("take-{instance}"), "");
                e.kind = Kind::Take;
                e.service = SERVICE.into();
                e.reply_to.clone_from(&topic);
                let payload = Bytes::from(rmp_serde::to_vec(&credits).expect("an int"));
                if credits == 0 {
                    // It stops: what it held goes back to the node.
                    self.instances.remove(&topic);
                } else {
                    self.instances.entry(topic).or_default().0 = credits;
                }
                self.intake(&Message::new(e, payload));
            }
            Op::StepAnswer {
                instance,
                pick,
                error,
            } => {
                let topic = Self::instance_topic(instance);
                let Some((_, held)) = self.instances.get_mut(&topic) else {
                    return self.end_turn(op);
                };
                if held.is_empty() {
                    return self.end_turn(op);
                }
                let step = held.remove(pick % held.len());
                let answer = Self::step_answer(&step, error);
                self.answered_steps.push(step);
                self.intake(&answer);
            }
            Op::StaleAnswer { pick } => {
                if !self.answered_steps.is_empty() {
                    let step = self.answered_steps[pick % self.answered_steps.len()].clone();
                    self.intake(&Self::step_answer(&step, false));
                }
            }
            Op::Vanish { instance } => {
                self.instances.remove(&Self::instance_topic(instance));
            }
            Op::DurableSubscribe { name } => {
                let mut e = Envelope::request(format!("sub-{name}"), "");
                e.kind = Kind::Subscribe;
                e.service = "d".into();
                e.reply_to = Self::durable_topic(name);
                let payload = rmp_serde::to_vec_named(&serde_json::json!({
                    "name": format!("n{name}"),
                    "prefixes": [DURABLE_PREFIX],
                    "window": DURABLE_WINDOW,
                }))
                .expect("a map");
                let known = self
                    .core
                    .durables
                    .contains_key(&("d".to_owned(), format!("n{name}")));
                self.intake(&Message::new(e, Bytes::from(payload)));
                let made = self
                    .core
                    .durables
                    .contains_key(&("d".to_owned(), format!("n{name}")));
                if made && !known {
                    self.durable.insert(name, (self.on_prefix.len(), 0));
                }
            }
            Op::DurableAck { name } => {
                if let Some(&(_, got)) = self.durable.get(&name) {
                    let mut e = Envelope::request(format!("ack-{name}"), "");
                    e.kind = Kind::Ack;
                    e.service = "d".into();
                    e.reply_to = Self::durable_topic(name);
                    let payload = rmp_serde::to_vec_named(
                        &serde_json::json!({"name": format!("n{name}"), "seq": got}),
                    )
                    .expect("a map");
                    self.intake(&Message::new(e, Bytes::from(payload)));
                }
            }
        }
        self.end_turn(op)
    }

    /// What a commit makes true in the journal.
    fn committed(&mut self, events: &[Event]) {
        for event in events {
            match event {
                Event::Accepted { message, .. } => {
                    let life = self.lives.entry(key_of(&message.envelope)).or_default();
                    life.accepted_committed += 1;
                }
                Event::Suspended { key, .. } => {
                    self.suspension_committed.insert(key.clone());
                }
                Event::Completed { key, .. } | Event::DeadLettered { key, .. } => {
                    let group = self.group_of.get_mut(key).and_then(VecDeque::pop_front);
                    if let Some(Some(group)) = group {
                        // The oldest life of that id (a later one may wait).
                        if let Some(queue) = self.order.get_mut(&group)
                            && let Some(at) = queue.iter().position(|k| k == key)
                        {
                            queue.remove(at);
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn end_turn(&mut self, op: &Op) -> Result<(), TestCaseError> {
        self.core.end_turn(self.now());
        let effects: Vec<Effect> = self.core.effects().collect();
        let spans: Vec<_> = self.core.finished_spans().collect();
        if std::env::var_os("MODEL_TRACE").is_some() {
            eprintln!("{op:?}");
            for e in &effects {
                if let Effect::Append { events, .. } = e {
                    for ev in events {
                        eprintln!("    {:?} {:?}", ev.kind(), ev.key());
                    }
                } else if let Effect::Publish(p) = e {
                    eprintln!(
                        "    publish {} {:?} {:?} {:?}",
                        p.topic,
                        p.message.envelope.kind,
                        p.message.envelope.id,
                        p.message.envelope.error.as_ref().map(|e| e.code)
                    );
                }
            }
        }
        let mut ended: HashSet<MessageKey> = HashSet::new();
        let mut results: Vec<Message> = Vec::new();
        // What the journal records first: the acknowledgements of this
        // step refer to the lives it knows of then.
        for effect in &effects {
            if let Effect::Append { events, .. } = effect {
                for event in events {
                    self.recorded(event, &mut ended)?;
                }
            }
        }
        if let (
            Op::Request {
                service, id, ack, ..
            },
            true,
        ) = (op, self.delivered)
        {
            let key = (service_name(*service), format!("i{id}"));
            match self.lives.get(&key) {
                Some(life) if life.live && *ack => {
                    let n = life.accepted;
                    self.acks_due.entry(key).or_default().push_back(n);
                }
                Some(life) if life.live => {}
                Some(life) if life.accepted > 0 && !ended.contains(&key) => {
                    *self.republish_due.entry(key).or_default() += 1;
                }
                _ => {}
            }
        }
        self.delivered_last = self.delivered;
        self.delivered = false;
        // What durable subscriptions may deliver this turn includes this
        // turn's publications.
        for effect in &effects {
            if let Effect::Publish(p) = effect
                && p.topic.starts_with(DURABLE_PREFIX)
            {
                self.on_prefix.push(Message::clone(&p.message));
            }
        }
        for effect in effects {
            match effect {
                Effect::ToWorker(worker, message) => {
                    let mut frames = message.into_vec();
                    let worker_id = frames.remove(0);
                    prop_assert_eq!(&worker_id, &worker);
                    let message = ZmqMessage::try_from(frames).expect("frames");
                    let n = (0..WORKERS).find(|&n| self.identity(n) == worker);
                    prop_assert!(n.is_some(), "work sent to a worker that is gone");
                    let n = n.unwrap_or_default();
                    if let ToWorker::Work(batch) = wire::decode_to_worker(&message).expect("work") {
                        let held = self.workers.get_mut(&n);
                        prop_assert!(held.is_some(), "work sent to a worker that is not there");
                        let held = held.unwrap_or_else(|| unreachable!());
                        for m in batch {
                            let m = m.expect("work decodes");
                            let life = self.lives.get(&key_of(&m.envelope));
                            // Its request's trace, the node's `dispatch`
                            // span as the parent (`spans`).
                            let given = life
                                .and_then(|l| l.traceparents.last())
                                .and_then(|t| TraceParent::parse(t));
                            let sent = TraceParent::parse(&m.envelope.traceparent);
                            prop_assert_eq!(
                                given.map(|t| (t.trace_id, t.flags)),
                                sent.map(|t| (t.trace_id, t.flags)),
                                "work for {:?} without its request's trace context",
                                key_of(&m.envelope)
                            );
                            // Without spans: as given.
                            let rewritten = given.map(|t| t.parent_id) != sent.map(|t| t.parent_id);
                            prop_assert_eq!(
                                rewritten,
                                self.core.options.record_spans,
                                "work for {:?}: its parent is the request's with spans off, its dispatch span's with them on",
                                key_of(&m.envelope)
                            );
                            held.push(m);
                        }
                        prop_assert!(held.len() <= MAX_CREDITS as usize, "credits exceeded");
                    }
                }
                Effect::Publish(p) if p.topic.starts_with("@reply~d~durable-") => {
                    self.delivered_durable(&p.topic, &p.message)?;
                }
                Effect::Publish(p) => match p.message.envelope.kind {
                    Kind::Accepted => {
                        let ids: Vec<String> =
                            rmp_serde::from_slice(&p.message.payload).expect("ids");
                        for id in ids {
                            let key = (p.message.envelope.service.clone(), id);
                            let due = self.acks_due.get_mut(&key).and_then(VecDeque::pop_front);
                            prop_assert!(
                                due.is_some(),
                                "`accepted` sent for {:?}, which did not ask",
                                key
                            );
                            let committed =
                                self.lives.get(&key).map_or(0, |l| l.accepted_committed);
                            prop_assert!(
                                !checking("acks") || due.is_some_and(|n| committed >= n),
                                "`accepted` sent for {:?} (life {:?}), whose acceptance is not committed ({} committed)",
                                key,
                                due,
                                committed
                            );
                        }
                    }
                    Kind::Result if p.topic == super::result_topic(&p.message.envelope) => {
                        self.published.push(Message::clone(&p.message));
                        results.push(Message::clone(&p.message));
                    }
                    Kind::Step => {
                        let key = key_of(&p.message.envelope);
                        // After the commit, and only while the flow waits
                        // for it as it was given: a step queued behind a
                        // commit that goes out after the flow ended, or
                        // after its id was accepted again, could be
                        // answered for another life.
                        prop_assert!(
                            self.suspension_committed.contains(&key),
                            "a step given for {:?} before its suspension was committed",
                            key
                        );
                        prop_assert!(
                            self.core.suspended.get(&key).is_some_and(|w| {
                                w.message.envelope.accepted_us == p.message.envelope.accepted_us
                                    && w.message.payload == p.message.payload
                            }),
                            "a step given for {:?}, whose flow no longer waits for it",
                            key
                        );
                        prop_assert_eq!(&p.message.envelope.key, "?Serve?moderate");
                        prop_assert_eq!(
                            self.lives.get(&key).and_then(|l| l.traceparents.last()),
                            Some(&p.message.envelope.traceparent),
                            "a step given for {:?} without its request's trace context",
                            key
                        );
                        // An instance that stopped or vanished gets it
                        // nowhere: the node gives it again later.
                        // A step given again replaces the copy the
                        // instance held (the node took it back). How many
                        // an instance holds at once is the outbox's unit
                        // tests' to check: the node may take steps back
                        // that the instance still holds here.
                        if let Some((_, held)) = self.instances.get_mut(&p.topic) {
                            held.retain(|m| key_of(&m.envelope) != key);
                            held.push(Message::clone(&p.message));
                        }
                    }
                    _ => {}
                },
                Effect::Append { turn, events } => self.appended.push_back((turn, events)),
                Effect::StoreDeadLetter { .. } => {}
                Effect::Kill(pid) => {
                    let worker = u8::try_from(pid - 100).expect("a model pid");
                    self.bury(worker);
                }
            }
        }
        self.check_results(op, &ended, results)?;
        // Each span recorded is of its request's trace, and ends no
        // earlier than it began.
        for span in spans {
            let key = (span.service.clone(), span.id.clone());
            let trace = self
                .lives
                .get(&key)
                .and_then(|l| l.traceparents.last())
                .and_then(|t| TraceParent::parse(t))
                .map(|t| t.trace_id);
            prop_assert!(
                trace.is_none() || trace == Some(span.trace_id),
                "span {:?} not in its request's trace",
                span
            );
            prop_assert!(span.start_us <= span.end_us, "{:?}", span);
        }
        self.check_bounds()
    }

    /// A durable delivery: the publication its sequence number was given
    /// to, within the window.
    fn delivered_durable(&mut self, topic: &str, message: &Message) -> Result<(), TestCaseError> {
        let rest = topic.trim_start_matches("@reply~d~durable-");
        let (name, rest) = rest.split_once('~').expect("NAME~");
        let name: u8 = name.parse().expect("a model name");
        if rest.is_empty() {
            // The node's answer to a subscribe (or its refusal).
            return Ok(());
        }
        let (seq, original) = rest.split_once('~').expect("SEQ~TOPIC");
        let seq: u64 = seq.parse().expect("a number");
        prop_assert!(original.starts_with(DURABLE_PREFIX), "{}", topic);
        let Some(&(made_at, got)) = self.durable.get(&name) else {
            return Err(TestCaseError::fail(format!(
                "a delivery for {name}, never made"
            )));
        };
        let index = made_at + usize::try_from(seq).unwrap_or(usize::MAX) - 1;
        prop_assert_eq!(
            self.on_prefix.get(index),
            Some(message),
            "durable n{} delivered under {} something else than publication {}",
            name,
            seq,
            index
        );
        let acked = self
            .core
            .durables
            .get(&("d".to_owned(), format!("n{name}")))
            .map_or(0, crate::services::durable::Durable::acked);
        prop_assert!(
            seq <= acked + u64::from(DURABLE_WINDOW),
            "durable n{} delivered {} past its window (acknowledged {})",
            name,
            seq,
            acked
        );
        self.durable.insert(name, (made_at, got.max(seq)));
        Ok(())
    }

    /// What the core recorded, against the lives so far.
    fn recorded(
        &mut self,
        event: &Event,
        ended: &mut HashSet<MessageKey>,
    ) -> Result<(), TestCaseError> {
        match event {
            Event::Accepted { message, .. } => {
                let key = key_of(&message.envelope);
                let life = self.lives.entry(key.clone()).or_default();
                prop_assert!(
                    !checking("ends") || !life.live,
                    "{:?} accepted again while it is live",
                    key
                );
                life.live = true;
                life.accepted += 1;
                let traceparent = &message.envelope.traceparent;
                prop_assert!(
                    TraceParent::parse(traceparent).is_some(),
                    "{:?} accepted with traceparent {:?}",
                    key,
                    traceparent
                );
                let id: u8 = key.1[1..].parse().expect("a model id");
                let (given, state) = Self::trace_of(id);
                if TraceParent::parse(&given).is_some() {
                    prop_assert_eq!(traceparent, &given, "a valid traceparent is kept");
                    prop_assert_eq!(&message.envelope.tracestate, &state);
                } else {
                    prop_assert!(
                        message.envelope.tracestate.is_empty(),
                        "a tracestate without a valid traceparent is dropped"
                    );
                }
                life.traceparents.push(traceparent.clone());
                self.suspension_committed.remove(&key);
                let group = (!message.envelope.order_key.is_empty()).then(|| {
                    (
                        message.envelope.flow.clone(),
                        message.envelope.order_key.clone(),
                    )
                });
                if let Some(group) = &group {
                    self.order
                        .entry(group.clone())
                        .or_default()
                        .push_back(key.clone());
                }
                self.group_of.entry(key).or_default().push_back(group);
            }
            Event::Dispatched { key, .. } | Event::Suspended { key, .. } => {
                prop_assert!(
                    !checking("ends") || self.lives.get(key).is_some_and(|l| l.live),
                    "{:?} ran after its end",
                    key
                );
                let group = self
                    .group_of
                    .get(key)
                    .and_then(|g| g.back().cloned().flatten());
                if let (true, Some(group)) = (checking("keys"), group) {
                    let first = self.order.get(&group).and_then(|q| q.front());
                    prop_assert_eq!(
                        first,
                        Some(key),
                        "{:?} ran while an earlier request of its key {:?} had not ended (or its end was not committed)",
                        key,
                        group
                    );
                }
            }
            Event::Resumed { key, .. } => {
                prop_assert!(self.lives.get(key).is_some_and(|l| l.live));
            }
            Event::Completed { key, .. } | Event::DeadLettered { key, .. } => {
                let life = self.lives.get_mut(key);
                prop_assert!(
                    !checking("ends") || life.as_ref().is_some_and(|l| l.live),
                    "{:?} ended twice, or without being accepted",
                    key
                );
                if let Some(life) = life {
                    life.live = false;
                }
                prop_assert!(
                    ended.insert(key.clone()) || !checking("ends"),
                    "{:?} ended twice in a turn",
                    key
                );
            }
        }
        Ok(())
    }

    /// One result per end (once the end is committed); any other result
    /// answers a message of this step (a refusal) or republishes the result
    /// of an id sent again after its end.
    fn check_results(
        &mut self,
        op: &Op,
        ended: &HashSet<MessageKey>,
        results: Vec<Message>,
    ) -> Result<(), TestCaseError> {
        if !checking("ends") {
            return Ok(());
        }
        for key in ended {
            *self.results_due.entry(key.clone()).or_default() += 1;
        }
        for result in results {
            let key = key_of(&result.envelope);
            let own = match *op {
                Op::Request { service, id, .. } | Op::Refused { service, id, .. } => {
                    key == (service_name(service), format!("i{id}"))
                }
                Op::Answer { id, .. } => key == ("answerer".to_owned(), format!("i{id}")),
                Op::Take { instance, .. } => {
                    key == (SERVICE.to_owned(), format!("take-{instance}"))
                }
                Op::StepAnswer { .. } | Op::StaleAnswer { .. } => key.0 == SERVICE,
                _ => false,
            };
            let refused = result.envelope.error.as_ref().is_some_and(|e| {
                matches!(
                    e.code,
                    ErrorCode::UnsupportedVersion
                        | ErrorCode::BadRequest
                        | ErrorCode::TooLarge
                        | ErrorCode::NotSupported
                        | ErrorCode::UnknownAsync
                        | ErrorCode::Forbidden
                        | ErrorCode::Overloaded
                )
            });
            if own && refused {
                if matches!(op, Op::Request { .. }) {
                    prop_assert!(
                        TraceParent::parse(&result.envelope.traceparent).is_some(),
                        "a refused request's result without a valid traceparent: {:?}",
                        result.envelope
                    );
                }
                continue;
            }
            if let Some(life) = self.lives.get(&key) {
                prop_assert!(
                    life.traceparents.contains(&result.envelope.traceparent),
                    "a result for {:?} without the trace context of its request ({:?})",
                    key,
                    result.envelope.traceparent
                );
            }
            // A republish carries a result already published (results go
            // out in order); anything else due is the end's own.
            let seen = self
                .lives
                .get(&key)
                .is_some_and(|l| l.results.contains(&result));
            let republish = seen && self.republish_due.get(&key).is_some_and(|d| *d > 0);
            if let Some(due) = self
                .results_due
                .get_mut(&key)
                .filter(|d| **d > 0 && !republish)
            {
                *due -= 1;
                if let Some(life) = self.lives.get_mut(&key) {
                    life.results.push(result);
                }
                continue;
            }

            let again = self.republish_due.get_mut(&key).filter(|d| **d > 0);
            let same = self
                .lives
                .get(&key)
                .is_some_and(|l| l.results.contains(&result));
            prop_assert!(
                again.is_some() && same,
                "a result for {:?} that is neither its end's, a refusal of this step's message, nor a republished result ({:?})",
                key,
                op
            );
            if let Some(again) = self.republish_due.get_mut(&key) {
                *again -= 1;
            }
        }
        Ok(())
    }

    fn check_bounds(&self) -> Result<(), TestCaseError> {
        let core = &self.core;
        let o = &core.options;
        let credits = usize::from(WORKERS) * MAX_CREDITS as usize;
        let waiting = core.table.pending_len() + core.gate.waiting_len() + core.delayed.len();
        prop_assert!(
            !checking("bounds") || waiting <= o.max_pending + credits,
            "{} requests wait (queue {}, key gate {}, retry delay {}); the bound is {} + {} in flight",
            waiting,
            core.table.pending_len(),
            core.gate.waiting_len(),
            core.delayed.len(),
            o.max_pending,
            credits
        );
        let at_async = core
            .suspended
            .values()
            .filter(|s| s.owner.is_none())
            .count();
        prop_assert!(at_async <= o.max_suspended);
        prop_assert_eq!(at_async, core.at_async, "the count of @ASYNC flows drifted");
        for (name, outbox) in &core.outboxes {
            prop_assert!(
                !checking("bounds") || outbox.len() <= o.max_service_steps,
                "{} steps wait for {}; the bound is {}",
                outbox.len(),
                name,
                o.max_service_steps
            );
        }
        // Every flow at a service's step is in its outbox, and the reverse.
        for (key, s) in &core.suspended {
            if let Some(owner) = &s.owner {
                prop_assert!(
                    core.outboxes.get(owner).is_some_and(|o| o.contains(key)),
                    "{:?} waits for {} but is not in its outbox",
                    key,
                    owner
                );
            }
        }
        let in_outboxes: usize = core
            .outboxes
            .values()
            .map(crate::services::steps::Outbox::len)
            .sum();
        let owned = core
            .suspended
            .values()
            .filter(|s| s.owner.is_some())
            .count();
        prop_assert_eq!(
            in_outboxes,
            owned,
            "outboxes vs flows waiting at a service's step"
        );
        prop_assert!(core.recent.len() <= o.dedupe_capacity);
        prop_assert!(core.recent.bytes() <= o.dedupe_max_bytes);
        // Open spans are of live requests only: an end closes them.
        for key in core.spans.keys() {
            prop_assert!(
                self.lives.get(key).is_some_and(|l| l.live),
                "{:?} has open spans but has ended",
                key
            );
        }
        // The bytes counted as they come and go are the bytes there.
        let there: usize = core.table.pending().map(Message::size).sum::<usize>()
            + core.gate.waiting().map(|(m, _)| m.size()).sum::<usize>()
            + core.delayed.iter().map(Message::size).sum::<usize>()
            + core
                .suspended
                .values()
                .map(|s| s.message.size())
                .sum::<usize>();
        prop_assert_eq!(core.waiting_bytes(), there, "bytes counted vs held");
        // Intake stops at the bound, so what waits passes it by at most one
        // message, and what comes back from lost workers.
        prop_assert!(
            !checking("bounds") || there <= MAX_PENDING_BYTES + (1 + credits) * MODEL_MESSAGE,
            "{} bytes wait; the bound is {} + one message + {} in flight",
            there,
            MAX_PENDING_BYTES,
            credits
        );
        for key in core.failures.keys() {
            prop_assert!(
                !checking("failures") || self.lives.get(key).is_some_and(|l| l.live),
                "failed attempts of {:?} kept after its end",
                key
            );
        }
        Ok(())
    }

    /// No more faults: commit everything, answer every message, let time
    /// pass; everything accepted ends.
    fn settle(&mut self) -> Result<(), TestCaseError> {
        for worker in 0..WORKERS {
            if !self.workers.contains_key(&worker) {
                self.apply(&Op::Ready {
                    worker,
                    credits: MAX_CREDITS,
                })?;
            }
        }
        for _ in 0..400 {
            while !self.appended.is_empty() {
                self.apply(&Op::Commit)?;
            }
            // An instance takes the steps (its heartbeat too) and answers
            // them all.
            self.apply(&Op::Take {
                instance: 0,
                credits: MAX_STEP_CREDITS,
            })?;
            while self
                .instances
                .get(&Self::instance_topic(0))
                .is_some_and(|(_, h)| !h.is_empty())
            {
                self.apply(&Op::StepAnswer {
                    instance: 0,
                    pick: 0,
                    error: false,
                })?;
            }
            for worker in 0..WORKERS {
                while self.workers.get(&worker).is_some_and(|h| !h.is_empty()) {
                    self.apply(&Op::Result {
                        worker,
                        pick: 0,
                        outcome: Outcome::Ok,
                    })?;
                }
                self.apply(&Op::Heartbeat { worker })?;
            }
            let live = self.lives.values().any(|l| l.live);
            if !live && self.core.is_idle() && self.appended.is_empty() {
                let unanswered: Vec<&MessageKey> = self
                    .results_due
                    .iter()
                    .filter(|(_, d)| **d > 0)
                    .map(|(k, _)| k)
                    .collect();
                prop_assert!(
                    !checking("ends") || unanswered.is_empty(),
                    "ended without their result: {:?}",
                    unanswered
                );
                return Ok(());
            }
            self.apply(&Op::Tick { ms: 100 })?;
        }
        let live: Vec<&MessageKey> = self
            .lives
            .iter()
            .filter(|(_, l)| l.live)
            .map(|(k, _)| k)
            .collect();
        prop_assert!(!checking("ends"), "never ended: {:?}", live);
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 1024,
        max_shrink_iters: 20_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_subject_keeps_its_promises(ops in proptest::collection::vec(op(), 1..250)) {
        let mut harness = Harness::new();
        for op in &ops {
            harness.apply(op)?;
        }
        harness.settle()?;
    }
}

/// A request's `status`, `error` and `origin` are the node's to set: they
/// never reach its result (`docs/protocol.md` §7).
#[test]
fn request_fields_the_node_sets_do_not_reach_the_result() {
    let mut h = Harness::new();
    h.apply(&Op::Ready {
        worker: 0,
        credits: 1,
    })
    .expect("ready");
    let mut request = Harness::request(0, 1, 0, 0, false);
    request.envelope = request
        .envelope
        .into_error(ErrorCode::ActionFailed, "forged by the service");
    request.envelope.kind = Kind::Request;
    request.envelope.origin = "someone-else".into();
    h.intake(&request);
    h.end_turn(&Op::Commit).expect("the turn");
    let work = h.workers[&0].first().cloned();
    let work = work.expect("the request went to the worker");
    assert_eq!(work.envelope.status, crate::wire::envelope::Status::Ok);
    assert!(work.envelope.error.is_none());
    assert!(work.envelope.origin.is_empty());
    let result = h.result(&work, Outcome::Ok);
    let input = Input::Worker(frames(wire::results([&result]), h.identity(0)));
    h.core.handle(input, h.now());
    h.end_turn(&Op::Commit).expect("the turn");
    while !h.appended.is_empty() {
        h.apply(&Op::Commit).expect("a commit");
    }
    assert_eq!(h.published.len(), 1, "{:?}", h.published);
    let result = &h.published[0].envelope;
    assert_eq!(result.status, crate::wire::envelope::Status::Ok);
    assert!(result.error.is_none(), "{:?}", result.error);
    assert!(result.origin.is_empty());
}

/// Intake stops at `max_pending_bytes` (past it by one message at most),
/// and a flow reaching an `@ASYNC` step past it ends `overloaded`.
#[test]
fn the_bytes_waiting_stay_within_their_bound() {
    let mut h = Harness::new();
    let big = Harness::request(0, 8, 0, 0, false).size();
    assert!(big > 300 && big <= MODEL_MESSAGE, "{big}");
    let mut taken = 0;
    for id in 8..16 {
        h.apply(&Op::Request {
            service: 0,
            id,
            flow: 0,
            key: 0,
            ack: false,
        })
        .expect("a request");
        taken += usize::from(h.delivered_last);
        assert!(h.core.waiting_bytes() < MAX_PENDING_BYTES + big);
    }
    assert_eq!(taken, MAX_PENDING_BYTES.div_ceil(big), "then intake stops");
    assert!(!h.core.has_room());
    // Big flows suspend at their @ASYNC step until the bytes run out; the
    // next one ends overloaded.
    let mut h = Harness::new();
    for id in 8..11 {
        h.apply(&Op::Request {
            service: 1,
            id,
            flow: 2,
            key: id,
            ack: false,
        })
        .expect("a request");
    }
    assert_eq!(h.core.suspended_len(), 2, "the third does not fit");
    let refused = h
        .published
        .iter()
        .filter(|m| m.envelope.error.as_ref().map(|e| e.code) == Some(ErrorCode::Overloaded));
    assert_eq!(refused.count(), 0, "its result waits for the commit");
    while !h.appended.is_empty() {
        h.apply(&Op::Commit).expect("a commit");
    }
    let refused: Vec<&Message> = h
        .published
        .iter()
        .filter(|m| m.envelope.error.as_ref().map(|e| e.code) == Some(ErrorCode::Overloaded))
        .collect();
    assert_eq!(refused.len(), 1, "{:?}", h.published);
    assert_eq!(refused[0].envelope.id, "i10");
}

/// `max_suspended` bounds the flows at `@ASYNC` steps only: flows waiting
/// for a service's steps (bounded by `max_service_steps`) leave room for
/// them.
#[test]
fn steps_given_to_services_do_not_count_against_max_suspended() {
    let mut h = Harness::with(SubjectOptions {
        max_suspended: 1,
        max_pending_bytes: 100 * MODEL_MESSAGE,
        ..options()
    });
    h.apply(&Op::Ready {
        worker: 0,
        credits: 2,
    })
    .expect("ready");
    for id in 1..=2 {
        h.apply(&Op::Request {
            service: 0,
            id,
            flow: 5,
            key: id,
            ack: false,
        })
        .expect("a request to Serve");
        h.apply(&Op::Result {
            worker: 0,
            pick: 0,
            outcome: Outcome::Ok,
        })
        .expect("its action's result");
    }
    let given = h.core.suspended.values().filter(|s| s.owner.is_some());
    assert_eq!(given.count(), 2, "both wait for {SERVICE}");
    for id in 3..=4 {
        h.apply(&Op::Request {
            service: 0,
            id,
            flow: 2,
            key: id,
            ack: false,
        })
        .expect("a request to Wait");
    }
    while !h.appended.is_empty() {
        h.apply(&Op::Commit).expect("a commit");
    }
    let refused: Vec<&str> = h
        .published
        .iter()
        .filter_map(|m| m.envelope.error.as_ref())
        .filter(|e| e.code == ErrorCode::Overloaded)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(h.core.at_async, 1, "one @ASYNC flow suspends");
    assert_eq!(refused.len(), 1, "the second is refused: {refused:?}");
    assert!(
        refused[0].contains("1 flows are already suspended"),
        "{refused:?}"
    );
}

/// The notice that an earlier turn was committed may come after the
/// writer said a later one fails (two channels): it does not mean the
/// journal commits again, and requests are still refused until the writer
/// says it does. (Taken, they would wait unacknowledged on a full disk.)
#[test]
fn a_late_commit_notice_does_not_end_a_failing_journal() {
    let mut h = Harness::new();
    for id in 1..=2 {
        h.apply(&Op::Request {
            service: 0,
            id,
            flow: 0,
            key: 0,
            ack: true,
        })
        .expect("a request");
    }
    let (first, _) = h.appended.pop_front().expect("the first turn");
    // The second turn fails; then the first one's notice comes, late.
    h.core.handle(
        Input::CommitFailed {
            error: "database or disk is full".into(),
        },
        h.now(),
    );
    h.core.handle(Input::Committed(first), h.now());
    h.core.end_turn(h.now());
    let _ = h.core.effects().count();
    let overloaded = |h: &mut Harness, id: u8| {
        let message = wire::topic_message("", &Harness::request(0, id, 0, 0, false));
        h.core.handle(Input::Intake(message, None, 0), h.now());
        h.core.end_turn(h.now());
        h.core.effects().any(|e| {
            matches!(e, Effect::Publish(p) if p.message.envelope.error.as_ref().map(|e| e.code) == Some(ErrorCode::Overloaded))
        })
    };
    assert!(
        overloaded(&mut h, 3),
        "refused while the writer still fails"
    );
    h.core.handle(Input::CommitsAgain, h.now());
    assert!(!overloaded(&mut h, 4), "taken once it commits again");
}

/// A payload that is not one MessagePack value is refused at intake with
/// `bad_request` (`0xc1` is a byte MessagePack never uses), a message past
/// `max_message_bytes` with `too_large` (its payload not echoed); neither
/// is accepted, journaled or run.
#[test]
fn bad_payloads_and_large_messages_are_refused_at_intake() {
    let mut h = Harness::new();
    h.apply(&Op::Ready {
        worker: 0,
        credits: 3,
    })
    .expect("ready");
    for (how, code) in [
        (Refusal::BadPayload, ErrorCode::BadRequest),
        (Refusal::TooLarge, ErrorCode::TooLarge),
    ] {
        let before = h.published.len();
        h.apply(&Op::Refused {
            how,
            service: 0,
            id: 1,
            flow: 0,
            key: 0,
        })
        .expect("a refusal");
        let got = &h.published[before..];
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].envelope.error.as_ref().map(|e| e.code), Some(code));
        if code == ErrorCode::TooLarge {
            assert_eq!(got[0].payload.as_ref(), [0xc0]);
        }
    }
    assert!(h.lives.is_empty(), "nothing was accepted");
    assert!(h.workers[&0].is_empty(), "nothing was run");
    assert!(h.appended.is_empty(), "nothing was journaled");
}

/// A request sent again after a restart gets the result the journal kept
/// for it (within the dedupe window), not a second run.
#[test]
fn a_restarted_node_republishes_what_finished_before_it_stopped() {
    let mut before = Harness::new();
    before
        .apply(&Op::Ready {
            worker: 0,
            credits: 1,
        })
        .expect("ready");
    before
        .apply(&Op::Request {
            service: 0,
            id: 1,
            flow: 0,
            key: 0,
            ack: false,
        })
        .expect("a request");
    before
        .apply(&Op::Result {
            worker: 0,
            pick: 0,
            outcome: Outcome::Ok,
        })
        .expect("its result");
    // What the journal recorded with the end.
    let kept: Vec<(u64, Message)> = before
        .appended
        .iter()
        .flat_map(|(_, events)| events)
        .filter_map(|e| match e {
            Event::Completed {
                at_us,
                result: Some(r),
                ..
            } => Some((*at_us, Message::clone(r))),
            _ => None,
        })
        .collect();
    assert_eq!(kept.len(), 1);
    let mut after = Harness::new();
    after.elapsed = Duration::from_secs(5);
    let now = after.now();
    after.core.remember(kept.clone(), now);
    // What the checker knows of that id: one life, ended with that result.
    after.lives.insert(
        ("s0".to_owned(), "i1".to_owned()),
        Life {
            live: false,
            traceparents: vec![kept[0].1.envelope.traceparent.clone()],
            accepted: 1,
            accepted_committed: 1,
            results: vec![kept[0].1.clone()],
        },
    );
    after
        .apply(&Op::Request {
            service: 0,
            id: 1,
            flow: 0,
            key: 0,
            ack: false,
        })
        .expect("sent again");
    let life = &after.lives[&("s0".to_owned(), "i1".to_owned())];
    assert_eq!(life.accepted, 1, "not accepted again");
    while !after.appended.is_empty() {
        after.apply(&Op::Commit).expect("a commit");
    }
    assert_eq!(after.published, [kept[0].1.clone()]);
}

/// A request's trace context goes with it: to its worker, to the service
/// its step is given to, into its result; a request without a valid one
/// gets a new one of its own (`docs/protocol.md` §3, "Trace context").
#[test]
fn a_request_carries_its_trace_context_through_its_flow() {
    // Without spans recorded: with them, its work names the node's
    // `dispatch` span as its parent (checked by the model test).
    let mut h = Harness::with(SubjectOptions {
        record_spans: false,
        ..options()
    });
    let ok = |r: Result<(), TestCaseError>| r.expect("a step of the model");
    ok(h.apply(&Op::Ready {
        worker: 0,
        credits: 3,
    }));
    ok(h.apply(&Op::Take {
        instance: 0,
        credits: 3,
    }));
    // Ids 1, 3 and 5 come with a valid, no, and a malformed traceparent.
    for id in [1, 3, 5] {
        ok(h.apply(&Op::Request {
            service: 0,
            id,
            flow: 5,
            key: id,
            ack: false,
        }));
    }
    let trace_of = |m: &Message| (m.envelope.id.clone(), m.envelope.traceparent.clone());
    let work: HashMap<String, String> = h.workers[&0].iter().map(trace_of).collect();
    assert_eq!(work.len(), 3, "{work:?}");
    assert_eq!(work["i1"], Harness::trace_of(1).0, "kept as given");
    let started: Vec<TraceParent> = ["i3", "i5"]
        .iter()
        .map(|id| TraceParent::parse(&work[*id]).expect("a valid new one"))
        .collect();
    assert_ne!(started[0].trace_id, started[1].trace_id, "one trace each");
    assert!(started.iter().all(|p| p.flags == TraceParent::SAMPLED));
    for _ in 0..3 {
        ok(h.apply(&Op::Result {
            worker: 0,
            pick: 0,
            outcome: Outcome::Ok,
        }));
    }
    while !h.appended.is_empty() {
        ok(h.apply(&Op::Commit));
    }
    // The service answers each step it is given (the node may give them
    // one at a time).
    let topic = Harness::instance_topic(0);
    let mut steps = HashMap::new();
    for _ in 0..10 {
        ok(h.apply(&Op::Tick { ms: 0 }));
        let held = &h.instances[&topic].1;
        steps.extend(held.iter().map(trace_of));
        for _ in 0..held.len() {
            ok(h.apply(&Op::StepAnswer {
                instance: 0,
                pick: 0,
                error: false,
            }));
        }
        while !h.appended.is_empty() {
            ok(h.apply(&Op::Commit));
        }
    }
    assert_eq!(steps, work, "the steps given to the service");
    let results: HashMap<String, String> = h.published.iter().map(trace_of).collect();
    assert_eq!(results, work, "the results");
    let state = h.published.iter().find(|m| m.envelope.id == "i1");
    assert_eq!(
        state.map(|m| m.envelope.tracestate.as_str()),
        Some("m=i1"),
        "with its tracestate"
    );

    // A message that is not a request keeps no malformed context: an
    // answer for no flow is refused without it.
    let mut answer = Envelope::request("i9", "Wait");
    answer.kind = Kind::Result;
    answer.service = "answerer".into();
    answer.reply_to = "ranswerer".into();
    answer.origin = service_name(0);
    (answer.traceparent, answer.tracestate) = Harness::trace_of(2);
    let before = h.published.len();
    h.intake(&Message::new(answer, Bytes::from_static(&[0x91, 0x03])));
    ok(h.end_turn(&Op::Answer {
        service: 0,
        id: 9,
        error: false,
    }));
    let refused = &h.published[before..];
    assert_eq!(refused.len(), 1, "{refused:?}");
    let refused = &refused[0].envelope;
    assert_eq!(
        refused.error.as_ref().map(|e| e.code),
        Some(ErrorCode::UnknownAsync)
    );
    assert!(refused.traceparent.is_empty() && refused.tracestate.is_empty());
}
