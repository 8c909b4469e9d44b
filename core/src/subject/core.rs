//! The Subject's state, what can happen to it ([`Input`]) and what it asks
//! its shell to do ([`Effect`]).
//!
//! One turn of the loop is any number of [`SubjectCore::handle`] calls and
//! one [`SubjectCore::end_turn`], which dispatches work to workers with free
//! credits and hands the turn's journal events over in one append. Nothing
//! here blocks, reads a clock or touches a socket: time comes in as
//! [`Now`], and everything that leaves the core is an [`Effect`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeromq::ZmqMessage;

use crate::backoff::Jitter;
use crate::catalog::Catalog;
use crate::catalog::version::Catalogs;
use crate::dedupe::Recent;
use crate::inflight::{InFlightTable, MessageKey, WorkerId};
use crate::integration_manager::Publication;
use crate::journal::{Event, Unfinished};
use crate::ordering::KeyGate;
use crate::retry::DelayQueue;
use crate::security::Permissions;
use crate::security::operator::OperatorCookie;
use crate::services::registry::ServiceRegistry;
use crate::wire::Message;

use super::commits::Commits;
use super::suspended::Suspended;

/// Tuning of the Subject.
#[derive(Debug, Clone, Copy)]
pub struct SubjectOptions {
    /// Most messages per frame to a worker.
    pub batch: usize,
    /// Most requests waiting: for a worker, for their key, for a retry
    /// delay.
    pub max_pending: usize,
    /// Most bytes ([`Message::size`]) of those requests and of flows
    /// suspended at `@ASYNC` steps.
    pub max_pending_bytes: usize,
    /// The largest request taken (envelope and payload frames).
    pub max_message_bytes: usize,
    pub heartbeat: Duration,
    pub liveness: Duration,
    pub message_timeout: Duration,
    pub max_attempts: u32,
    pub dedupe_window: Duration,
    pub dedupe_capacity: usize,
    /// Most bytes of results remembered for duplicates.
    pub dedupe_max_bytes: usize,
    pub drain_timeout: Duration,
    /// How long a flow waits at an `@ASYNC` step for its answer.
    pub async_timeout: Duration,
    /// The most flows suspended at `@ASYNC` steps at once.
    pub max_suspended: usize,
    /// A registered service silent this long is listed as down.
    pub service_liveness: Duration,
    /// The most services registered at once.
    pub max_services: usize,
    /// How long a service has to answer a step it was given.
    pub service_step_timeout: Duration,
    /// The recoverer's delays for a service that is DOWN.
    pub service_backoff: crate::backoff::Backoff,
    /// The most steps waiting for one service.
    pub max_service_steps: usize,
    /// What each durable subscription keeps.
    pub durable_retention: crate::services::durable::Retention,
    /// The most durable subscriptions at once.
    pub max_durables: usize,
    /// A request without a valid trace context gets a new one
    /// (`crate::wire::trace_context`).
    pub start_traces: bool,
    /// Record the spans of sampled requests (`spans`): an exporter is
    /// installed (`[telemetry] otlp_endpoint`).
    pub record_spans: bool,
}

/// What happened, for the log line at exit (and for tests reading it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub accepted: u64,
    pub rejected: u64,
    pub malformed: u64,
    pub results: u64,
    /// Messages published at `@PUBLISH` steps.
    pub published: u64,
    pub suspended: u64,
    pub resumed: u64,
    pub async_timeouts: u64,
    pub late_results: u64,
    pub redelivered: u64,
    /// Failed attempts put in the delay queue by a retry policy.
    pub retried: u64,
    pub dead_lettered: u64,
    pub duplicates: u64,
    pub workers_lost: u64,
    /// Bytes of the messages services pushed to the intake (all frames,
    /// as received: malformed and refused ones too).
    pub bytes_in: u64,
}

/// The moment an input is handled: the monotonic clock for deadlines, the
/// wall clock (microseconds since the Unix epoch) for what is recorded.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall_us: u64,
}

impl Now {
    /// The clocks as they are.
    pub fn read() -> Self {
        Self {
            at: Instant::now(),
            wall_us: crate::wire::envelope::now_us(),
        }
    }
}

/// Something that happened, carried in by the shell.
#[derive(Debug)]
pub enum Input {
    /// Frames a service pushed to the intake, the service id its key is
    /// bound to (security on; `None` without keys), and when they arrived
    /// (microseconds since the Unix epoch; 0 when not read, as it is only
    /// with [`SubjectOptions::record_spans`]).
    Intake(ZmqMessage, Option<String>, u64),
    /// Frames from a worker, its ROUTER identity first.
    Worker(ZmqMessage),
    /// A worker's connection closed.
    WorkerGone(WorkerId),
    /// A send to a worker failed.
    SendFailed(WorkerId, String),
    /// The journal committed every event appended up to this turn.
    Committed(u64),
    /// The journal could not commit its oldest appended turn (the writer
    /// tries it again first).
    CommitFailed { error: String },
    /// The journal commits again after [`Input::CommitFailed`] (said by the
    /// writer, not inferred from an [`Input::Committed`], which may be an
    /// earlier batch's, told late).
    CommitsAgain,
    /// The heartbeat period passed: heartbeats, liveness, `@ASYNC` deadlines.
    Tick,
    /// A new catalog version (`zmanager reload`), already journaled: new
    /// requests run on it from now on.
    Reload(crate::catalog::version::Versioned),
}

/// Something the shell must do, in the order given.
#[derive(Debug)]
pub enum Effect {
    /// Frames to a worker, its ROUTER identity first. A failed send comes
    /// back as [`Input::SendFailed`].
    ToWorker(WorkerId, ZmqMessage),
    /// A message for the Integration Manager to publish.
    Publish(Publication),
    /// The events of turn `turn`, to append in one commit; its outcome
    /// comes back as [`Input::Committed`], in the order of appending
    /// (after any number of [`Input::CommitFailed`]).
    Append { turn: u64, events: Vec<Event> },
    /// Store a dead letter under the number `seq` (the core numbers them,
    /// so its error result can name it).
    StoreDeadLetter {
        seq: u64,
        /// Boxed: the other effects are small, and this one is rare.
        message: Box<Message>,
        errors: Vec<String>,
        at_us: u64,
    },
    /// Kill the worker process with this pid (hung): its supervisor starts
    /// another.
    Kill(u32),
}

/// The Subject without I/O.
#[derive(Debug)]
pub struct SubjectCore {
    /// The catalog's versions: the newest, for new requests, and the
    /// older ones unfinished requests use (`catalog::version`).
    pub(super) catalogs: Catalogs,
    pub(super) table: InFlightTable,
    pub(super) options: SubjectOptions,
    pub(super) recent: Recent,
    /// The reason of each failed attempt of messages not finished yet.
    pub(super) failures: HashMap<MessageKey, Vec<String>>,
    /// Flows waiting at an `@ASYNC` step for their answer (DigitalPy's
    /// `prev_flow`), by (service, id) of the request.
    pub(super) suspended: HashMap<MessageKey, Suspended>,
    /// How many of `suspended` wait at an `@ASYNC` step (no owner): what
    /// `max_suspended` bounds.
    pub(super) at_async: usize,
    /// Service management's registry (`service_registry`).
    pub(super) services: ServiceRegistry,
    /// The steps given to each service (`[services]`), by its name.
    pub(super) outboxes: std::collections::BTreeMap<String, crate::services::steps::Outbox>,
    /// Durable subscriptions, by (service, name).
    pub(super) durables:
        std::collections::BTreeMap<(String, String), crate::services::durable::Durable>,
    /// When the last durable subscription was made (its `made_us`).
    pub(super) durable_made_us: u64,
    /// True while taking up recovered work: it was accepted before, so it
    /// is queued even past `max_pending` and `max_suspended`.
    pub(super) recovering: bool,
    pub(super) counters: Counters,
    /// How each flow's requests ended, and how long they took.
    pub(super) flow_stats: super::stats::FlowTable,
    /// Requests of ordered flows waiting for their key, with the step each
    /// starts at (`ordering`); held in `table` while they wait.
    pub(super) gate: KeyGate<(Message, usize)>,
    /// Failed messages waiting out their retry delay (`retry`); held in
    /// `table` while they wait.
    pub(super) delayed: DelayQueue<Message>,
    pub(super) jitter: Jitter,
    /// The bytes of the messages in `gate`, `delayed` and `suspended`.
    pub(super) held_bytes: usize,
    /// The journal's side: this turn's events, and what waits for commits.
    pub(super) commits: Commits,
    /// The number the next dead letter is stored under.
    pub(super) next_dead_letter: u64,
    /// Intake stopped (draining).
    pub(super) draining: bool,
    /// The cookie that lets the node's own tools resume a request at any
    /// step (`crate::security::operator`); `None`: nobody may.
    pub(super) operator: Option<OperatorCookie>,
    /// What each authenticated service may do (everything without keys).
    pub(super) permissions: Permissions,
    pub(super) effects: Vec<Effect>,
    /// The spans of requests' hops (with `record_spans`).
    pub(super) spans: super::spans::SpanBook,
    /// The moment of the input being handled.
    pub(super) now: Now,
}

impl SubjectCore {
    /// A core for `catalogs`; `journal` says whether events are recorded
    /// (and acknowledgements wait for their commit); dead letters are
    /// numbered from `next_dead_letter`.
    pub fn new(
        catalogs: Catalogs,
        options: SubjectOptions,
        journal: bool,
        next_dead_letter: u64,
        now: Now,
    ) -> Self {
        Self {
            catalogs,
            table: InFlightTable::new(options.max_pending),
            options,
            recent: Recent::new(
                options.dedupe_window,
                options.dedupe_capacity,
                options.dedupe_max_bytes,
            ),
            failures: HashMap::new(),
            suspended: HashMap::new(),
            at_async: 0,
            flow_stats: std::collections::HashMap::new(),
            services: ServiceRegistry::new(options.service_liveness, options.max_services),
            outboxes: std::collections::BTreeMap::new(),
            durables: std::collections::BTreeMap::new(),
            durable_made_us: 0,
            recovering: false,
            counters: Counters::default(),
            gate: KeyGate::default(),
            delayed: DelayQueue::default(),
            jitter: Jitter::default(),
            held_bytes: 0,
            commits: Commits::new(journal),
            next_dead_letter,
            draining: false,
            operator: None,
            permissions: Permissions::open(),
            effects: Vec::new(),
            spans: super::spans::SpanBook::default(),
            now,
        }
    }

    /// The catalog versions held, and the unfinished requests on each.
    pub fn catalog_users(&self) -> std::collections::BTreeMap<u32, usize> {
        self.catalogs.users()
    }

    /// The catalog `envelope` runs on: the version it was accepted under
    /// (`None` once that version is gone, which only a request the node
    /// never accepted can meet).
    pub(super) fn catalog_of(
        &self,
        envelope: &crate::wire::envelope::Envelope,
    ) -> Option<Arc<Catalog>> {
        self.catalogs
            .get(envelope.catalog)
            .map(|v| Arc::clone(&v.catalog))
    }

    /// What each service, authenticated by its key, may do.
    pub fn set_permissions(&mut self, permissions: Permissions) {
        self.permissions = permissions;
    }

    /// Lets requests that carry `cookie` name any step of their flow.
    pub fn trust_operator(&mut self, cookie: OperatorCookie) {
        self.operator = Some(cookie);
    }

    /// True when `presented` is the operator cookie.
    pub(super) fn is_operator(&self, presented: &str) -> bool {
        !presented.is_empty() && self.operator.as_ref().is_some_and(|c| c.matches(presented))
    }

    /// Remembers results recorded before a restart (at their wall-clock
    /// times, oldest first), for duplicates within the dedupe window.
    pub fn remember(&mut self, results: Vec<(u64, Message)>, now: Now) {
        for (at_us, result) in results {
            let age = Duration::from_micros(now.wall_us.saturating_sub(at_us));
            let at = now.at.checked_sub(age).unwrap_or(now.at);
            let result = Arc::new(result);
            self.recent.insert(
                (&result.envelope.service, &result.envelope.id),
                Arc::clone(&result),
                at,
            );
        }
    }

    /// Takes up what the journal had unfinished (before any input).
    pub fn recover(&mut self, unfinished: Vec<Unfinished>, now: Now) {
        self.now = now;
        self.take_up(unfinished);
    }

    /// Handles one input; its effects wait in [`SubjectCore::effects`].
    pub fn handle(&mut self, input: Input, now: Now) {
        self.now = now;
        match input {
            Input::Intake(frames, service, arrived_us) => {
                self.on_intake(&frames, service.as_deref(), arrived_us);
            }
            Input::Worker(frames) => self.on_worker(frames),
            Input::WorkerGone(worker) => self.lose_worker(&worker, "its connection closed", false),
            Input::SendFailed(worker, error) => {
                let reason = format!("cannot send to it: {error}");
                self.lose_worker(&worker, &reason, false);
            }
            Input::Committed(turn) => self.on_committed(turn),
            Input::CommitFailed { error } => self.on_commit_failed(&error),
            Input::CommitsAgain => self.on_commits_again(),
            Input::Tick => self.on_tick(),
            Input::Reload(version) => self.on_reload(version),
        }
    }

    /// Ends a turn: requeues retries whose delay is over, starts requests
    /// whose key is free, sends work to workers with free credits, and
    /// appends the turn's journal events.
    pub fn end_turn(&mut self, now: Now) {
        self.now = now;
        self.dispatch();
        self.send_service_steps();
        self.flush_journal();
        self.tend_durables();
    }

    /// The effects of what was handled, in order.
    pub fn effects(&mut self) -> std::vec::Drain<'_, Effect> {
        self.effects.drain(..)
    }

    /// The spans finished since the last call (`spans`), for the shell to
    /// export; none without [`SubjectOptions::record_spans`].
    pub fn finished_spans(&mut self) -> std::vec::Drain<'_, super::spans::SpanRecord> {
        self.spans.finished()
    }

    /// Stops intake (drain): the shell stops reading the intake socket.
    pub fn stop_intake(&mut self) {
        self.draining = true;
    }

    /// Room for another request: the queue, the requests waiting for their
    /// key and those waiting out a retry delay share `max_pending`.
    pub fn has_room(&self) -> bool {
        !self.draining
            && self.waiting_len() < self.options.max_pending
            && self.waiting_bytes() < self.options.max_pending_bytes
    }

    /// The bytes of what waits (see [`SubjectCore::waiting_len`]) and of the
    /// flows suspended at `@ASYNC` steps.
    pub fn waiting_bytes(&self) -> usize {
        self.table.pending_bytes() + self.held_bytes
    }

    /// Accepted requests waiting: for a worker, for their key, or for a
    /// retry delay.
    pub fn waiting_len(&self) -> usize {
        self.table.pending_len() + self.gate.waiting_len() + self.delayed.len()
    }

    /// Nothing waiting, in flight, or waiting for a retry delay.
    pub fn is_idle(&self) -> bool {
        self.table.is_idle()
    }

    /// When the next retried message is due, if one waits.
    pub fn next_due(&self) -> Option<tokio::time::Instant> {
        self.delayed.next_due()
    }

    /// True while appended events wait for their commit.
    pub fn awaits_commits(&self) -> bool {
        self.commits.awaits_commits()
    }

    pub fn counters(&self) -> Counters {
        self.counters
    }

    pub fn pending_len(&self) -> usize {
        self.table.pending_len()
    }

    pub fn in_flight_len(&self) -> usize {
        self.table.in_flight_len()
    }

    pub fn suspended_len(&self) -> usize {
        self.suspended.len()
    }

    pub(super) fn emit(&mut self, effect: Effect) {
        self.effects.push(effect);
    }
}
