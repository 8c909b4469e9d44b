//! The Subject (DigitalPy's ventilator): takes requests from services, works
//! out each one's next flow step, dispatches work to the workers, and sees
//! every accepted request through to a result or to the dead-letter store.
//!
//! Tasks and sockets:
//! - the intake task owns the PULL socket services push to, and feeds a
//!   bounded channel;
//! - the worker-reader task owns the ROUTER's receiving half, and a monitor
//!   task reports worker disconnections, both into a second channel;
//! - the Subject's loop (this module's [`run`]) owns the ROUTER's sending
//!   half, the [`InFlightTable`] and the dead-letter store, and hands results
//!   to the Integration Manager.
//!
//! Reliability (`docs/reliability.md` states the promise):
//! - a worker that disconnects, stops heartbeating (`liveness`), or holds a
//!   message past `message_timeout` is lost: its messages are sent again
//!   elsewhere with `attempt + 1`, and a hung process is killed;
//! - an action that panics is retried the same way;
//! - after `max_attempts` deliveries a message is dead-lettered: stored with
//!   the reason of every attempt, published on `@deadletter~<flow>~`, and
//!   answered with an error result;
//! - an action with a retry policy (`retry`) that fails waits its delay in
//!   the delay queue, not on a worker, and runs again from the failed step;
//!   its last failure, or an error kind the policy does not retry, goes to
//!   the dead-letter store;
//! - in an ordered flow, a request waits in the key gate (`ordering`) until
//!   every earlier request with its key has ended;
//! - a request pushed again while in flight is absorbed; within
//!   `dedupe_window` after it finished, its result is published again;
//! - on drain (SIGTERM) intake stops and the loop runs until nothing is in
//!   flight or `drain_timeout` passes.
//!
//! Journal (`journal::Recorder`): each step of an accepted message's life
//! is recorded — accepted, dispatched, suspended, resumed, completed,
//! dead-lettered — and submitted once per turn of the loop (group commit);
//! a request that asked for `ack` is acknowledged only after its
//! acceptance is committed. At start-up the unfinished messages the
//! journal hands over are taken up again before any new request.
//!
//! Backpressure: when the pending queue is full the loop stops taking from
//! the intake channel; the intake task then blocks, and ZeroMQ's TCP flow
//! control pushes back on the services.
//!
//! Sends to workers are awaited without a timeout. A zmq.rs ROUTER `send`
//! blocks only when that peer's 100,000-message queue is full, and that
//! cannot happen here: `WORK` frames are bounded by the worker's credits,
//! and a worker that stops reading is lost after `liveness` (a few
//! heartbeats later), after which nothing more is sent to it. Whoever
//! changes either bound must revisit this.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::{
    PullSocket, RouterSendHalf, RouterSocket, Socket, SocketEvent, SocketRecv, SocketSend,
    ZmqMessage,
};

use crate::action_key::ActionKey;
use crate::catalog::{Catalog, RoutedFlow, StepRole};
use crate::dead_letter::DeadLetterStore;
use crate::dedupe::Recent;
use crate::envelope::{Envelope, Kind, PROTOCOL_VERSION, Status, now_us};
use crate::error_code::ErrorCode;
use crate::inflight::{InFlightTable, MessageKey, Refused, WorkerId, key_of};
use crate::integration_manager::Publication;
use crate::journal::{Checkpoint, Event, Recorder, Unfinished};
use crate::ordering::{self, KeyGate, OrderBy};
use crate::retry::{self, DelayQueue, Jitter, RetryPolicy};
use crate::service_registry::{self, ServiceRegistry};
use crate::topic::Topic;
use crate::wire::{self, FromWorker, Message, WireError};

/// Tuning of the Subject.
#[derive(Debug, Clone, Copy)]
pub struct SubjectOptions {
    /// Most messages per frame to a worker.
    pub batch: usize,
    /// Most requests waiting for a worker.
    pub max_pending: usize,
    pub heartbeat: Duration,
    pub liveness: Duration,
    pub message_timeout: Duration,
    pub max_attempts: u32,
    pub dedupe_window: Duration,
    pub dedupe_capacity: usize,
    pub drain_timeout: Duration,
    /// How long a flow waits at an `@ASYNC` step for its answer.
    pub async_timeout: Duration,
    /// The most flows suspended at `@ASYNC` steps at once.
    pub max_suspended: usize,
    /// A registered service silent this long is listed as down.
    pub service_liveness: Duration,
    /// The most services registered at once.
    pub max_services: usize,
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
}

/// What the Subject needs besides its sockets.
#[derive(Debug)]
pub struct Links {
    /// To the Integration Manager.
    pub publish: mpsc::Sender<Publication>,
    /// Process ids of hung workers, for the supervisor to kill.
    pub kill: mpsc::Sender<u32>,
    /// Where dead letters are kept (locked only inside `block_in_place`,
    /// never across an `.await`).
    pub dead_letters: std::sync::Mutex<DeadLetterStore>,
    /// Cancelled to stop intake and drain.
    pub drain: CancellationToken,
    /// The journal (or a recorder that records nothing, when it is off).
    pub journal: Recorder,
    /// What the journal had unfinished at start-up, in acceptance order.
    pub recovered: Vec<Unfinished>,
}

enum WorkerEvent {
    Frames(ZmqMessage),
    Gone(WorkerId),
}

/// The most events of one kind handled before dispatching: enough to fill
/// batches under load, few enough that heartbeats stay on time.
const BURST: usize = 256;

/// A MessagePack nil: the payload of an error result that has no request
/// payload to return.
static NIL: Bytes = Bytes::from_static(&[0xc0]);

/// The topic dead letters of `flow` are published on.
pub fn dead_letter_topic(flow: &str) -> String {
    format!("@deadletter~{flow}~")
}

/// The topic a result is published on: the request's `reply_to`, or the
/// flow's results topic.
pub fn result_topic(envelope: &Envelope) -> String {
    if envelope.reply_to.is_empty() {
        Topic::results(&envelope.flow).to_string()
    } else {
        envelope.reply_to.clone()
    }
}

/// Runs the Subject until it has drained (see [`Links::drain`]).
pub async fn run(
    intake: PullSocket,
    mut router: RouterSocket,
    catalog: Arc<Catalog>,
    options: SubjectOptions,
    links: Links,
) -> Counters {
    let (intake_tx, mut intake_rx) = mpsc::channel::<ZmqMessage>(64);
    let (worker_tx, mut worker_rx) = mpsc::channel::<WorkerEvent>(1024);

    let mut monitor = router.monitor();
    let (sender, mut receiver) = router.split();
    let intake_task = tokio::spawn(read_socket(intake, intake_tx));
    let tasks = [
        tokio::spawn({
            let worker_tx = worker_tx.clone();
            async move {
                loop {
                    match receiver.recv().await {
                        Ok(frames) => {
                            if worker_tx.send(WorkerEvent::Frames(frames)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "worker socket receive failed"),
                    }
                }
            }
        }),
        tokio::spawn(async move {
            while let Some(event) = monitor.next().await {
                if let SocketEvent::Disconnected(peer) = event {
                    let id = Bytes::from(Vec::from(peer));
                    if worker_tx.send(WorkerEvent::Gone(id)).await.is_err() {
                        return;
                    }
                }
            }
        }),
    ];

    let drain = links.drain.clone();
    let Links {
        publish,
        kill,
        dead_letters,
        journal,
        recovered,
        ..
    } = links;
    let mut subject = Subject {
        catalog,
        table: InFlightTable::new(options.max_pending),
        options,
        recent: Recent::new(options.dedupe_window, options.dedupe_capacity),
        failures: HashMap::new(),
        suspended: HashMap::new(),
        services: ServiceRegistry::new(options.service_liveness, options.max_services),
        links: Outlets {
            publish,
            kill,
            dead_letters,
        },
        journal,
        recovering: false,
        sender,
        counters: Counters::default(),
        gate: KeyGate::default(),
        unreleased: VecDeque::new(),
        delayed: DelayQueue::default(),
        jitter: Jitter::default(),
    };
    subject.recover(recovered).await;
    let mut committed = subject.journal.committed();
    let mut tick = tokio::time::interval(options.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_until: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = drain.cancelled(), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + options.drain_timeout);
                intake_task.abort();
                // Requests already read from the socket are accepted too.
                while let Ok(frames) = intake_rx.try_recv() {
                    subject.on_intake(&frames).await;
                }
                tracing::info!(pending = subject.table.pending_len(), in_flight = subject.table.in_flight_len(), "intake stopped; draining");
            }
            Some(event) = worker_rx.recv() => {
                subject.on_worker(event).await;
                // Take what else has arrived before dispatching, so work goes
                // out in batches under load (it never waits for more).
                for _ in 1..BURST {
                    let Ok(event) = worker_rx.try_recv() else { break };
                    subject.on_worker(event).await;
                }
            }
            Some(frames) = intake_rx.recv(), if drain_until.is_none() && subject.has_room() => {
                subject.on_intake(&frames).await;
                for _ in 1..BURST {
                    if !subject.has_room() {
                        break;
                    }
                    let Ok(frames) = intake_rx.try_recv() else { break };
                    subject.on_intake(&frames).await;
                }
            }
            _ = tick.tick() => subject.on_tick().await,
            // The ends of ordered flows are on disk: their keys go free.
            Ok(()) = committed.changed(), if !subject.unreleased.is_empty() => {
                let upto = *committed.borrow_and_update();
                subject.release_committed(upto);
            }
            // A retried message's delay is over (`dispatch` requeues it).
            () = retry::sleep_until(subject.delayed.next_due()) => {}
        }
        subject.dispatch().await;
        subject.journal.flush().await;
        if let Some(until) = drain_until {
            if subject.table.is_idle() {
                tracing::info!("drained: nothing left in flight");
                break;
            }
            if Instant::now() >= until {
                tracing::warn!(
                    pending = subject.table.pending_len(),
                    in_flight = subject.table.in_flight_len(),
                    "drain timeout: stopping with work unfinished"
                );
                break;
            }
        }
    }
    intake_task.abort();
    for task in tasks {
        task.abort();
    }
    let c = subject.counters;
    tracing::info!(
        accepted = c.accepted,
        rejected = c.rejected,
        malformed = c.malformed,
        results = c.results,
        published = c.published,
        suspended = c.suspended,
        resumed = c.resumed,
        async_timeouts = c.async_timeouts,
        still_suspended = subject.suspended.len(),
        late_results = c.late_results,
        redelivered = c.redelivered,
        retried = c.retried,
        dead_lettered = c.dead_lettered,
        duplicates = c.duplicates,
        workers_lost = c.workers_lost,
        pending = subject.table.pending_len(),
        in_flight = subject.table.in_flight_len(),
        "subject stopped"
    );
    subject.journal.close().await;
    c
}

async fn read_socket(mut socket: PullSocket, tx: mpsc::Sender<ZmqMessage>) {
    loop {
        match socket.recv().await {
            Ok(frames) => {
                if tx.send(frames).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "intake receive failed"),
        }
    }
}

struct Subject {
    catalog: Arc<Catalog>,
    table: InFlightTable,
    options: SubjectOptions,
    recent: Recent,
    /// The reason of each failed attempt of messages not finished yet.
    failures: HashMap<MessageKey, Vec<String>>,
    /// Flows waiting at an `@ASYNC` step for their answer (DigitalPy's
    /// `prev_flow`), by (service, id) of the request. In memory only.
    suspended: HashMap<MessageKey, Suspended>,
    /// Service management's registry (`service_registry`).
    services: ServiceRegistry,
    links: Outlets,
    journal: Recorder,
    /// True while taking up recovered work: it was accepted before, so it
    /// is queued even past `max_pending` and `max_suspended`.
    recovering: bool,
    sender: RouterSendHalf,
    counters: Counters,
    /// Requests of ordered flows waiting for their key, with the step each
    /// starts at (`ordering`); held in `table` while they wait.
    gate: KeyGate<(Message, usize)>,
    /// Ordering keys whose flows ended, each with the journal turn that
    /// records the end: released once that turn is committed.
    unreleased: VecDeque<(u64, ordering::GroupKey, MessageKey)>,
    /// Failed messages waiting out their retry delay (`retry`); held in
    /// `table` while they wait.
    delayed: DelayQueue<Message>,
    jitter: Jitter,
}

/// Where the Subject's loop sends what is not a worker's business.
struct Outlets {
    publish: mpsc::Sender<Publication>,
    kill: mpsc::Sender<u32>,
    dead_letters: std::sync::Mutex<DeadLetterStore>,
}

/// A flow suspended at an `@ASYNC` step.
struct Suspended {
    /// The message as it reached the step (original id, service, reply_to).
    message: Message,
    /// The index of the `@ASYNC` step; the flow resumes after it.
    step: usize,
    deadline: Instant,
}

fn worker_name(worker: &WorkerId) -> String {
    String::from_utf8_lossy(worker).into_owned()
}

impl Subject {
    async fn publish(&self, topic: String, message: Message) {
        // The Integration Manager outlives the Subject's loop; a send error
        // only happens at shutdown.
        let _ = self
            .links
            .publish
            .send(Publication { topic, message })
            .await;
    }

    async fn reject(&mut self, message: Message, code: ErrorCode, text: String) {
        tracing::warn!(id = %message.envelope.id, flow = %message.envelope.flow, code = code.name(), "{text}");
        self.counters.rejected += 1;
        self.release_key(&message.envelope);
        let envelope = message.envelope.into_error(code, text);
        let topic = result_topic(&envelope);
        self.publish(topic, Message::new(envelope, message.payload))
            .await;
    }

    /// Ends an accepted message with an error result (recorded as
    /// completed: it will not be taken up again).
    async fn fail(&mut self, message: Message, code: ErrorCode, text: String) {
        self.journal.record(|| Event::Completed {
            at_us: now_us(),
            key: key_of(&message.envelope),
        });
        self.reject(message, code, text).await;
    }

    /// The `accepted` acknowledgement of the request `envelope`, queued to
    /// go out once its acceptance is committed; nothing if it did not ask.
    fn acknowledge(&mut self, envelope: &Envelope) {
        if !envelope.ack {
            return;
        }
        self.journal.acknowledge(&result_topic(envelope), envelope);
    }

    /// Takes up the work the journal had unfinished: flows run again from
    /// their entry, or from after the `@ASYNC` step that answered them;
    /// flows waiting at an `@ASYNC` step wait again (with a fresh
    /// `async_timeout`).
    async fn recover(&mut self, unfinished: Vec<Unfinished>) {
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
                Checkpoint::Accepted => match entry(&self.catalog, &message.envelope) {
                    Ok((position, _)) => {
                        if let Some(message) = self.admit(message, position + 1) {
                            self.advance(message, position + 1).await;
                        }
                    }
                    // The flows changed since it was accepted.
                    Err((code, text)) => self.fail(message, code, text).await,
                },
                Checkpoint::Suspended => {
                    suspended += 1;
                    let step = usize::try_from(message.envelope.step).unwrap_or(usize::MAX);
                    if let Some(message) = self.admit(message, step) {
                        self.suspend(message, step).await;
                    }
                }
                Checkpoint::Resumed => {
                    let next = usize::try_from(message.envelope.step)
                        .unwrap_or(usize::MAX)
                        .saturating_add(1);
                    if let Some(message) = self.admit(message, next) {
                        self.advance(message, next).await;
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

    async fn on_intake(&mut self, frames: &ZmqMessage) {
        match wire::decode_topic_message(frames) {
            Ok((_topic, message)) => self.accept(message).await,
            Err(WireError::Invalid { address, source }) => {
                self.counters.malformed += 1;
                let text = format!("the envelope does not decode: {source}");
                tracing::warn!(id = %address.id, reply_to = %address.reply_to, "{text}");
                if address.is_reachable() {
                    let envelope = Envelope::error_for(*address, ErrorCode::MalformedMessage, text);
                    let topic = result_topic(&envelope);
                    self.publish(topic, Message::new(envelope, NIL.clone()))
                        .await;
                }
            }
            Err(e) => {
                self.counters.malformed += 1;
                tracing::warn!(error = %e, "dropping a malformed message from a service");
            }
        }
    }

    async fn accept(&mut self, mut message: Message) {
        let envelope = &message.envelope;
        if envelope.v != PROTOCOL_VERSION {
            let text = format!(
                "protocol version {} is not supported (this node speaks {PROTOCOL_VERSION})",
                envelope.v
            );
            return self
                .reject(message, ErrorCode::UnsupportedVersion, text)
                .await;
        }
        match envelope.kind {
            Kind::Request => {}
            Kind::Ping => {
                if envelope.reply_to.is_empty() {
                    tracing::warn!(id = %envelope.id, "dropping a ping without reply_to");
                } else {
                    let topic = envelope.reply_to.clone();
                    self.publish(topic, message).await;
                }
                return;
            }
            Kind::Unknown => {
                let text = "unknown message kind".to_owned();
                return self.reject(message, ErrorCode::NotSupported, text).await;
            }
            Kind::Accepted => {
                let text = "`accepted` is sent by the node, not to it".to_owned();
                return self.reject(message, ErrorCode::NotSupported, text).await;
            }
            Kind::Result => return self.on_answer(message).await,
        }
        if self.table.contains(envelope) || self.suspended.contains_key(&key_of(envelope)) {
            self.counters.duplicates += 1;
            tracing::debug!(id = %envelope.id, service = %envelope.service, "duplicate of a request in flight: absorbed");
            let envelope = envelope.clone();
            self.acknowledge(&envelope);
            return;
        }
        if let Some(result) = self.recent.get(&key_of(envelope), Instant::now()) {
            self.counters.duplicates += 1;
            tracing::debug!(id = %envelope.id, service = %envelope.service, "duplicate of a finished request: its result is published again");
            let result = result.clone();
            self.publish(result_topic(&result.envelope), result).await;
            return;
        }
        if service_registry::is_builtin(&envelope.flow) {
            let answer = self.services.handle(
                &envelope.flow,
                &envelope.service,
                &message.payload,
                Instant::now(),
            );
            return match answer {
                Ok(payload) => {
                    // Answered on the spot: nothing to journal.
                    self.counters.accepted += 1;
                    message.payload = Bytes::from(payload);
                    message.envelope.accepted_us = now_us();
                    self.publish_result(message).await;
                }
                Err((code, text)) => self.reject(message, code, text).await,
            };
        }
        let catalog = Arc::clone(&self.catalog);
        let (position, routed) = match entry(&catalog, envelope) {
            Ok(found) => found,
            Err((code, text)) => return self.reject(message, code, text).await,
        };
        if let Err(text) = set_order_key(&mut message, routed.flow.order_by.as_ref()) {
            return self.reject(message, ErrorCode::BadRequest, text).await;
        }
        message.envelope.accepted_us = now_us();
        message.envelope.attempt = 0;
        let at_us = message.envelope.accepted_us;
        self.journal
            .record(|| Event::accepted(at_us, message.clone()));
        let asked = message.envelope.ack.then(|| message.envelope.clone());
        let started = match self.admit(message, position + 1) {
            Some(message) => {
                let started = self.advance(message, position + 1).await;
                self.counters.accepted += u64::from(started);
                started
            }
            // Accepted (counted), waiting behind an earlier request with
            // its key.
            None => true,
        };
        if let (true, Some(envelope)) = (started, asked) {
            self.acknowledge(&envelope);
        }
    }

    /// An ordered flow's request holds its key from now until its flow
    /// ends, or waits in the gate (accepted) while an earlier one holds it.
    /// Returns the request when it may go on now (also any request of an
    /// unordered flow); `None` when it waits.
    fn admit(&mut self, message: Message, next: usize) -> Option<Message> {
        let Some(group) = ordering::group_of(&message.envelope) else {
            return Some(message);
        };
        let id = key_of(&message.envelope);
        match self.gate.admit(group, id.clone(), (message, next)) {
            Some((message, _)) => Some(message),
            None => {
                self.table.hold(id);
                self.counters.accepted += 1;
                None
            }
        }
    }

    /// The flow of `envelope` ended: if it held its ordering key, the next
    /// request with that key may start — with the journal on, once the end
    /// is committed (see [`Subject::release_committed`]): released earlier,
    /// a crash could leave the journal with this request unfinished while
    /// the next one of its key had run, and recovery would run it again
    /// after that one.
    fn release_key(&mut self, envelope: &Envelope) {
        if let Some(group) = ordering::group_of(envelope) {
            let id = key_of(envelope);
            if self.journal.is_on() {
                self.unreleased.push_back((self.journal.turn(), group, id));
            } else {
                self.gate.release(&group, &id);
            }
        }
    }

    /// Releases the keys whose flows' ends are committed (turns up to
    /// `committed`).
    fn release_committed(&mut self, committed: u64) {
        while let Some((turn, _, _)) = self.unreleased.front() {
            if *turn > committed {
                break;
            }
            if let Some((_, group, id)) = self.unreleased.pop_front() {
                self.gate.release(&group, &id);
            }
        }
    }

    /// Room for another request: the queue and the requests waiting for
    /// their key share `max_pending`.
    fn has_room(&self) -> bool {
        self.table.pending_len() + self.gate.waiting_len() < self.options.max_pending
    }

    /// Requeues the retried messages whose delay is over, and starts the
    /// requests whose key became free (while the queue has room).
    async fn start_waiting(&mut self) {
        if let Some(due) = self.delayed.next_due() {
            let now = tokio::time::Instant::now();
            if due <= now {
                let mut again = Vec::new();
                while let Some(message) = self.delayed.pop_due(now) {
                    again.push(message);
                }
                self.table.requeue(again);
            }
        }
        while self.gate.has_ready() && self.table.has_room() {
            let Some((message, next)) = self.gate.next_ready() else {
                break;
            };
            self.table.forget(&message.envelope);
            self.advance(message, next).await;
        }
    }

    /// Moves `message` on from step `next` of its flow: an action step is
    /// queued for the workers; `done` or the end of the flow finishes it; an
    /// `@PUBLISH` step is published on its topic and the flow goes on at the
    /// step after it. Returns false when the message was refused (an error
    /// result was published instead).
    async fn advance(&mut self, mut message: Message, mut next: usize) -> bool {
        let catalog = Arc::clone(&self.catalog);
        let Some(routed) = catalog.flow(&message.envelope.flow) else {
            let text = format!("unknown flow {:?}", message.envelope.flow);
            self.fail(message, ErrorCode::UnknownFlow, text).await;
            return false;
        };
        loop {
            let step = routed.flow.steps.get(next);
            let envelope = &mut message.envelope;
            envelope.step = u32::try_from(next).unwrap_or(u32::MAX);
            envelope.key = step.map(|s| s.key.to_string()).unwrap_or_default();
            envelope.kind = Kind::Request;
            match (step, routed.roles.get(next).map(|(role, _)| role)) {
                (_, Some(StepRole::Action(_))) => {
                    envelope.attempt = 0;
                    let queued = if self.recovering {
                        self.table.enqueue_recovered(message)
                    } else {
                        self.table.enqueue(message)
                    };
                    return match queued {
                        Ok(()) => true,
                        Err((Refused::DuplicateId, message)) => {
                            let text = format!(
                                "a message with id {:?} is already in flight",
                                message.envelope.id
                            );
                            self.fail(*message, ErrorCode::DuplicateId, text).await;
                            false
                        }
                        Err((Refused::Full, message)) => {
                            let text = "the node's queue is full".to_owned();
                            self.fail(*message, ErrorCode::Overloaded, text).await;
                            false
                        }
                    };
                }
                (_, None | Some(StepRole::Done)) => {
                    self.finish(message).await;
                    return true;
                }
                (Some(step), Some(StepRole::Publish)) => {
                    let topic = Topic::new(&routed.flow.name, &step.key).to_string();
                    tracing::debug!(id = %message.envelope.id, %topic, "published a @PUBLISH step");
                    self.counters.published += 1;
                    self.publish(topic, message.clone()).await;
                    next += 1;
                }
                (_, Some(StepRole::Async)) => return self.suspend(message, next).await,
                (_, Some(role)) => {
                    let text = not_supported(role, &message.envelope.key);
                    self.fail(message, ErrorCode::NotSupported, text).await;
                    return false;
                }
            }
        }
    }

    /// Keeps `message` until its answer comes (see [`Subject::on_answer`]) or
    /// `async_timeout` passes.
    async fn suspend(&mut self, message: Message, step: usize) -> bool {
        if self.suspended.len() >= self.options.max_suspended && !self.recovering {
            let text = format!(
                "{} flows are already suspended at @ASYNC steps (max_suspended)",
                self.suspended.len()
            );
            self.fail(message, ErrorCode::Overloaded, text).await;
            return false;
        }
        let key = key_of(&message.envelope);
        if !self.recovering {
            self.journal.record(|| Event::Suspended {
                at_us: now_us(),
                key: key.clone(),
                step: u32::try_from(step).unwrap_or(u32::MAX),
                message: message.clone(),
            });
        }
        tracing::debug!(id = %key.1, service = %key.0, step, "suspended at an @ASYNC step");
        self.counters.suspended += 1;
        let deadline = Instant::now() + self.options.async_timeout;
        self.suspended.insert(
            key,
            Suspended {
                message,
                step,
                deadline,
            },
        );
        true
    }

    /// A service's answer to a suspended flow: `origin` and `id` name the
    /// flow's request. The flow resumes after its `@ASYNC` step with the
    /// answer's payload (or ends with the answer's error). An answer for no
    /// suspended flow is refused to the answering service.
    async fn on_answer(&mut self, answer: Message) {
        let key = (answer.envelope.origin.clone(), answer.envelope.id.clone());
        let Some(suspended) = self.suspended.remove(&key) else {
            let why = if self.recent.get(&key, Instant::now()).is_some() {
                "that flow has already finished (answered twice, or timed out)"
            } else {
                "no flow is suspended for it"
            };
            let text = format!("answer for id {:?} of service {:?}: {why}", key.1, key.0);
            if answer.envelope.reply_to.is_empty() {
                self.counters.rejected += 1;
                tracing::warn!(id = %key.1, origin = %key.0, "{text} (no reply_to to tell the answering service)");
            } else {
                self.reject(answer, ErrorCode::UnknownAsync, text).await;
            }
            return;
        };
        self.counters.resumed += 1;
        let Suspended {
            mut message, step, ..
        } = suspended;
        tracing::debug!(id = %key.1, service = %key.0, answered_by = %answer.envelope.service, "resumed after an @ASYNC step");
        message.payload = answer.payload;
        if answer.envelope.status != Status::Error {
            self.journal.record(|| Event::Resumed {
                at_us: now_us(),
                key: key.clone(),
                step: u32::try_from(step).unwrap_or(u32::MAX),
                message: message.clone(),
            });
        }
        if let (Status::Error, Some(error)) = (answer.envelope.status, answer.envelope.error) {
            message.envelope.status = Status::Error;
            message.envelope.error = Some(error);
            message.envelope.kind = Kind::Result;
            self.finish(message).await;
            return;
        }
        self.advance(message, step + 1).await;
    }

    /// Ends the flows whose answer did not come in time.
    async fn expire_suspended(&mut self, now: Instant) {
        let expired: Vec<MessageKey> = self
            .suspended
            .iter()
            .filter(|(_, s)| s.deadline <= now)
            .map(|(key, _)| key.clone())
            .collect();
        for key in expired {
            let Some(suspended) = self.suspended.remove(&key) else {
                continue;
            };
            self.counters.async_timeouts += 1;
            let text = format!(
                "no answer to `{}` within {} ms (async_timeout_ms)",
                suspended.message.envelope.key,
                self.options.async_timeout.as_millis()
            );
            tracing::warn!(id = %key.1, service = %key.0, "{text}");
            let Message { envelope, payload } = suspended.message;
            let envelope = envelope.into_error(ErrorCode::AsyncTimeout, text);
            self.finish(Message::new(envelope, payload)).await;
        }
    }

    /// Publishes a flow's outcome as a result and remembers it for
    /// duplicate suppression.
    async fn finish(&mut self, message: Message) {
        self.journal.record(|| Event::Completed {
            at_us: now_us(),
            key: key_of(&message.envelope),
        });
        self.publish_result(message).await;
    }

    /// Publishes a result and remembers it for duplicate suppression.
    async fn publish_result(&mut self, mut message: Message) {
        message.envelope.kind = Kind::Result;
        self.counters.results += 1;
        self.release_key(&message.envelope);
        let key = key_of(&message.envelope);
        self.failures.remove(&key);
        self.recent.insert(key, message.clone(), Instant::now());
        self.publish(result_topic(&message.envelope), message).await;
    }

    async fn on_worker(&mut self, event: WorkerEvent) {
        let frames = match event {
            WorkerEvent::Gone(worker) => {
                self.lose_worker(&worker, "its connection closed", false)
                    .await;
                return;
            }
            WorkerEvent::Frames(frames) => frames,
        };
        let mut frames = frames.into_vec();
        if frames.is_empty() {
            return;
        }
        let worker = frames.remove(0);
        let known = self.table.heard(&worker, Instant::now());
        let (what, bad) = match wire::decode_from_worker(&frames) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::error!(worker = %worker_name(&worker), error = %e, "malformed message from a worker");
                return;
            }
        };
        for e in bad {
            tracing::error!(worker = %worker_name(&worker), error = %e, "a result from a worker does not decode");
        }
        match what {
            FromWorker::Ready(ready) => {
                let lost = self.table.worker_ready(
                    worker.clone(),
                    ready.credits,
                    ready.pid,
                    Instant::now(),
                );
                tracing::info!(worker = %worker_name(&worker), pid = ready.pid, credits = ready.credits, "worker ready");
                self.retry_or_dead_letter(lost, "its worker announced itself again")
                    .await;
            }
            FromWorker::Heartbeat => {
                if !known {
                    tracing::debug!(worker = %worker_name(&worker), "heartbeat from an unknown worker; it will reconnect");
                }
            }
            FromWorker::Results(results) => {
                for result in results {
                    self.on_result(&worker, result).await;
                }
            }
        }
    }

    async fn on_result(&mut self, worker: &WorkerId, result: Message) {
        let Some(in_flight) = self.table.complete(worker, &result.envelope) else {
            self.counters.late_results += 1;
            tracing::debug!(id = %result.envelope.id, "dropping a result not in flight on its worker (late duplicate)");
            return;
        };
        if result.envelope.error.is_some() {
            let catalog = Arc::clone(&self.catalog);
            let step = usize::try_from(result.envelope.step).unwrap_or(usize::MAX);
            if let Some(policy) = catalog.retry_policy(&result.envelope.flow, step) {
                self.retry_later(result, policy).await;
                return;
            }
        }
        if let Some(error) = &result.envelope.error {
            if error.code == ErrorCode::ActionPanicked {
                // A panic may be transient (a bad worker state, a resource):
                // the message is delivered again, up to max_attempts.
                let reason = error.message.clone();
                self.retry_or_dead_letter(vec![in_flight.message], &reason)
                    .await;
                return;
            }
        }
        let catalog = Arc::clone(&self.catalog);
        let step = usize::try_from(result.envelope.step).unwrap_or(usize::MAX);
        let role = catalog
            .flow(&result.envelope.flow)
            .and_then(|routed| routed.roles.get(step))
            .map(|(role, _)| role);
        match role {
            Some(StepRole::Publish | StepRole::Async | StepRole::Service(_))
                if result.envelope.error.is_none() =>
            {
                // The worker stopped at a step the Subject moves on.
                self.advance(result, step).await;
            }
            _ => self.finish(result).await,
        }
    }

    /// An action with a retry policy failed (error or panic): the message
    /// waits its delay in the delay queue, then runs again from the failed
    /// step with that step's request; or, at its last attempt or with an
    /// error kind the policy does not retry, it is dead-lettered.
    async fn retry_later(&mut self, result: Message, policy: &RetryPolicy) {
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
            self.dead_letter(message).await;
            return;
        }
        let delay = policy.delay(attempt, self.jitter.next_unit());
        tracing::debug!(id = %message.envelope.id, attempt, delay_ms = delay.as_millis(), "retrying after a delay");
        self.counters.retried += 1;
        self.table.hold(key_of(&message.envelope));
        self.delayed
            .push(tokio::time::Instant::now() + delay, message);
    }

    /// The most deliveries of `message`: its step's retry policy's, or the
    /// node's `max_attempts`.
    fn max_attempts(&self, message: &Message) -> u32 {
        let step = usize::try_from(message.envelope.step).unwrap_or(usize::MAX);
        self.catalog
            .retry_policy(&message.envelope.flow, step)
            .map_or(self.options.max_attempts, |p| p.max_attempts)
    }

    /// Each message failed an attempt for `reason`: it goes back to the front
    /// of the queue, or to the dead-letter store after `max_attempts` (its
    /// step's retry policy's, if it has one).
    async fn retry_or_dead_letter(&mut self, messages: Vec<Message>, reason: &str) {
        let mut again = Vec::with_capacity(messages.len());
        for message in messages {
            let attempt = message.envelope.attempt;
            let max_attempts = self.max_attempts(&message);
            let history = self.failures.entry(key_of(&message.envelope)).or_default();
            history.push(format!("attempt {attempt}: {reason}"));
            if attempt >= max_attempts {
                self.dead_letter(message).await;
            } else {
                self.counters.redelivered += 1;
                again.push(message);
            }
        }
        self.table.requeue(again);
    }

    async fn dead_letter(&mut self, message: Message) {
        self.table.forget(&message.envelope);
        self.release_key(&message.envelope);
        let errors = self
            .failures
            .remove(&key_of(&message.envelope))
            .unwrap_or_default();
        let stored = tokio::task::block_in_place(|| {
            let store = self
                .links
                .dead_letters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            store.insert(&message, &errors, now_us())
        });
        let seq = match stored {
            Ok(seq) => seq.to_string(),
            Err(e) => {
                tracing::error!(id = %message.envelope.id, error = %e, "cannot store a dead letter; it is still published");
                "(not stored)".to_owned()
            }
        };
        self.counters.dead_lettered += 1;
        let last = errors.last().map_or("", String::as_str);
        self.journal.record(|| Event::DeadLettered {
            at_us: now_us(),
            key: key_of(&message.envelope),
            reason: format!("dead letter #{seq}: {last}"),
        });
        let text = format!(
            "dead-lettered as #{seq} after {} attempts; last: {last} (`zmanager dlq show {seq}`)",
            message.envelope.attempt
        );
        tracing::error!(id = %message.envelope.id, service = %message.envelope.service, flow = %message.envelope.flow, "{text}");
        let envelope = message.envelope.into_error(ErrorCode::DeadLettered, text);
        let result = Message::new(envelope, message.payload);
        self.publish(dead_letter_topic(&result.envelope.flow), result.clone())
            .await;
        self.publish(result_topic(&result.envelope), result).await;
    }

    /// A worker is gone, silent or stuck: its messages are sent again
    /// elsewhere (or dead-lettered), and if it may still be running, its
    /// process is killed so the supervisor replaces it.
    async fn lose_worker(&mut self, worker: &WorkerId, reason: &str, kill: bool) {
        let pid = self.table.pid(worker);
        if pid.is_none() {
            return;
        }
        let lost = self.table.worker_lost(worker);
        self.counters.workers_lost += 1;
        tracing::warn!(worker = %worker_name(worker), pid, reason, messages = lost.len(), "worker lost");
        let reason = format!("worker {} lost: {reason}", worker_name(worker));
        self.retry_or_dead_letter(lost, &reason).await;
        if let (true, Some(pid)) = (kill, pid) {
            let _ = self.links.kill.try_send(pid);
        }
    }

    /// Heartbeats every worker; loses the silent and the stuck.
    async fn on_tick(&mut self) {
        let now = Instant::now();
        self.expire_suspended(now).await;
        for worker in self.table.silent_workers(now, self.options.liveness) {
            let reason = format!("no heartbeat for {} ms", self.options.liveness.as_millis());
            self.lose_worker(&worker, &reason, true).await;
        }
        let limit = self.options.message_timeout + self.options.liveness;
        for worker in self.table.overdue_workers(now, limit) {
            let reason = format!("a message ran past {} ms", limit.as_millis());
            self.lose_worker(&worker, &reason, true).await;
        }
        let workers: Vec<WorkerId> = self.table.workers().cloned().collect();
        for worker in workers {
            let mut frames = wire::heartbeat();
            frames.push_front(worker.clone());
            if let Err(e) = self.sender.send(frames).await {
                let reason = format!("cannot send to it: {e}");
                self.lose_worker(&worker, &reason, false).await;
            }
        }
    }

    /// Sends pending messages to workers with free credits.
    async fn dispatch(&mut self) {
        self.start_waiting().await;
        while let Some((worker, batch)) = self.table.next_batch(self.options.batch, Instant::now())
        {
            if self.journal.is_on() {
                let at_us = now_us();
                for m in &batch {
                    self.journal.record(|| Event::Dispatched {
                        at_us,
                        key: key_of(&m.envelope),
                        attempt: m.envelope.attempt,
                        worker: worker.clone(),
                    });
                }
            }
            let mut frames = wire::work(&batch);
            frames.push_front(worker.clone());
            if let Err(e) = self.sender.send(frames).await {
                let reason = format!("cannot send to it: {e}");
                self.lose_worker(&worker, &reason, false).await;
            }
        }
    }
}

/// The step a request enters its flow at — the step its `key` names (the
/// flow's entry when empty); it runs from the step after it — and the flow.
fn entry<'c>(
    catalog: &'c Catalog,
    envelope: &Envelope,
) -> Result<(usize, &'c RoutedFlow), (ErrorCode, String)> {
    let Some(routed) = catalog.flow(&envelope.flow) else {
        let text = format!("unknown flow {:?}", envelope.flow);
        return Err((ErrorCode::UnknownFlow, text));
    };
    if envelope.key.is_empty() {
        return Ok((0, routed));
    }
    let key = ActionKey::parse(&envelope.key).map_err(|e| {
        let text = format!("key {:?}: {e}", envelope.key);
        (ErrorCode::UnknownStep, text)
    })?;
    let position = routed.flow.position(&key).ok_or_else(|| {
        let text = format!(
            "key {:?} matches no step of flow {}",
            envelope.key, routed.flow.name
        );
        (ErrorCode::UnknownStep, text)
    })?;
    Ok((position, routed))
}

/// Sets the request's `order_key` from its flow's `order_by` (an ordered
/// flow), or clears it (a key the service set means nothing to an
/// unordered flow). An ordered flow's request without a usable key is
/// refused with the reason.
fn set_order_key(message: &mut Message, by: Option<&OrderBy>) -> Result<(), String> {
    let Some(by) = by else {
        message.envelope.order_key.clear();
        return Ok(());
    };
    match by.key_of(&message.envelope, &message.payload) {
        Ok(key) => {
            message.envelope.order_key = key;
            Ok(())
        }
        Err(text) => {
            message.envelope.order_key.clear();
            Err(text)
        }
    }
}

fn not_supported(role: &StepRole, key: &str) -> String {
    let what = match role {
        StepRole::Publish => "an @PUBLISH step",
        StepRole::Async => "an @ASYNC step",
        StepRole::Service(_) => "a service's step",
        _ => "a step of this kind",
    };
    format!("`{key}` is {what}; this node does not run such steps yet")
}
