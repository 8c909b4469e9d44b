//! The shell around [`SubjectCore`]: the sockets, the clock, the timers and
//! the journal writer. It carries inputs in and effects out, in order, and
//! decides nothing.
//!
//! Tasks and sockets (libzmq sockets, `crate::transport`: one task each):
//! - the intake task owns the PULL socket services push to, and feeds a
//!   bounded channel;
//! - the router task owns the ROUTER workers connect to: it sends what the
//!   loop hands it (an unbounded channel, so the loop never waits on it)
//!   and feeds what workers send, and every failed send, into a second
//!   channel, with the identities of worker processes the supervisor saw
//!   exit;
//! - a commit watcher awaits each appended turn's commit, in order, and
//!   reports it back;
//! - the loop ([`run`]) owns the dead-letter store, and hands frames to the
//!   router task and publications to the Integration Manager.
//!
//! Spans (with [`SubjectOptions::record_spans`], `super::spans`): the core
//! records the spans of each request's hops with its own clock readings
//! and ids, and the shell hands each finished one to the exporter
//! ([`crate::telemetry::Sink`]) after carrying out the turn's effects. The
//! shell adds what only it sees: when a request arrived (the intake task
//! reads the clock then, only with spans on), and the `publish` span of
//! each result and publication it hands to the Integration Manager.
//!
//! What waits for the router task to send is bounded all the same: `WORK`
//! frames by the workers' credits, heartbeats by one per worker per
//! interval, and a worker that stops reading is lost after `liveness`,
//! after which nothing more is sent to it. A send to a worker whose
//! connection is gone fails at once (`ZMQ_ROUTER_MANDATORY`) and is
//! reported as [`Input::SendFailed`]. Whoever changes those bounds must
//! revisit this.

use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use zeromq::ZmqMessage;

use super::asks::Ask;
use super::core::{Counters, Effect, Input, Now, SubjectCore, SubjectOptions};
use crate::catalog::version::Catalogs;
use crate::dead_letter::{DeadLetterLog as _, DeadLetterStore};
use crate::inflight::WorkerId;
use crate::integration_manager::Publication;
use crate::journal::{Committed, Health, JournalWriter, Unfinished};
use crate::retry;
use crate::security::operator::OperatorCookie;
use crate::transport::AsyncSocket;
use crate::wire::Message;

/// What the Subject needs besides its sockets.
#[derive(Debug)]
pub struct Links {
    /// To the Integration Manager.
    pub publish: mpsc::Sender<Publication>,
    /// Process ids of hung workers, for the supervisor to kill.
    pub kill: mpsc::Sender<u32>,
    /// Where dead letters are kept.
    pub dead_letters: DeadLetterStore,
    /// Cancelled to stop intake and drain.
    pub drain: CancellationToken,
    /// The journal's group-commit writer (`None`: the journal is off).
    pub journal: Option<JournalWriter>,
    /// What the journal had unfinished at start-up, in acceptance order.
    pub recovered: Vec<Unfinished>,
    /// Results the journal recorded within the dedupe window, oldest first,
    /// with when each was recorded.
    pub remembered: Vec<(u64, Message)>,
    /// The cookie the node's own tools present to resume a request at any
    /// step (`crate::security::operator`).
    pub operator: Option<OperatorCookie>,
    /// The identities of worker processes that exited (from the
    /// supervisor): their messages go elsewhere at once, without waiting
    /// for their silence to last `liveness`.
    pub exited: mpsc::Receiver<String>,
    /// What each service may do (`[security]`).
    pub permissions: crate::security::Permissions,
    /// Questions from the HTTP server ([`Ask`]): answered between two
    /// turns, so a scrape costs the loop one copy of its figures.
    pub asks: mpsc::Receiver<Ask>,
    /// Requests from the HTTP gateway, with the service each is made as
    /// (as if pushed to the intake socket by a service with that key).
    pub gateway: mpsc::Receiver<(ZmqMessage, Option<String>)>,
}

/// The most events of one kind handled before dispatching: enough to fill
/// batches under load, few enough that heartbeats stay on time.
const BURST: usize = 256;

/// Appended turns waiting for their commit to be watched. Past it the loop
/// waits (backpressure, like the writer's own queue).
const COMMIT_QUEUE: usize = 64;

/// Runs the Subject until it has drained (see [`Links::drain`]).
pub async fn run(
    intake: AsyncSocket,
    router: AsyncSocket,
    catalogs: Catalogs,
    options: SubjectOptions,
    mut links: Links,
) -> Counters {
    let (intake_tx, mut intake_rx) = mpsc::channel::<Arrived>(64);
    let stamp = options.record_spans;
    let (worker_tx, mut worker_rx) = mpsc::channel::<Input>(1024);
    let (to_workers, outgoing) = mpsc::unbounded_channel::<(WorkerId, ZmqMessage)>();
    let (appended_tx, appended_rx) = mpsc::channel::<(u64, Committed)>(COMMIT_QUEUE);
    // The latest turn committed: a watch, not a queue, so the watcher never
    // waits for the loop (which may be waiting for the watcher's queue).
    let (commit_tx, mut commit_rx) = watch::channel::<u64>(0);

    let gateway_task = tokio::spawn(forward(links_gateway(&mut links), intake_tx.clone(), stamp));
    let intake_task = tokio::spawn(read_socket(intake, intake_tx, stamp));
    let watcher = tokio::spawn(watch_commits(appended_rx, commit_tx));
    let mut exited = std::mem::replace(&mut links.exited, mpsc::channel(1).1);
    let tasks = [
        tokio::spawn(serve_router(router, outgoing, worker_tx.clone())),
        tokio::spawn(async move {
            while let Some(identity) = exited.recv().await {
                let id = Bytes::from(identity.into_bytes());
                if worker_tx.send(Input::WorkerGone(id)).await.is_err() {
                    return;
                }
            }
        }),
    ];

    let Links {
        publish,
        kill,
        dead_letters,
        drain,
        journal,
        recovered,
        remembered,
        operator,
        exited: _,
        permissions,
        mut asks,
        gateway: _,
    } = links;
    // The store's client may block (PostgreSQL's runs a runtime of its own).
    let next_dead_letter =
        tokio::task::block_in_place(|| dead_letters.next_seq()).unwrap_or_else(|e| {
            tracing::error!(error = %e, "cannot read the dead-letter store's last number");
            1
        });
    let mut core = SubjectCore::new(
        catalogs,
        options,
        journal.is_some(),
        next_dead_letter,
        Now::read(),
    );
    if let Some(cookie) = operator {
        core.trust_operator(cookie);
    }
    core.set_permissions(permissions);
    let mut health = journal.as_ref().map(JournalWriter::health);
    let mut shell = Shell {
        to_workers,
        publish,
        kill,
        dead_letters,
        journal,
        appended: Some(appended_tx),
        spans: options
            .record_spans
            .then(crate::telemetry::installed)
            .flatten(),
    };
    core.remember(remembered, Now::read());
    core.recover(recovered, Now::read());
    core.end_turn(Now::read());
    shell.carry_out(&mut core).await;

    let mut tick = tokio::time::interval(options.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut drain_until: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            () = drain.cancelled(), if drain_until.is_none() => {
                drain_until = Some(Instant::now() + options.drain_timeout);
                intake_task.abort();
                gateway_task.abort();
                // Requests already read from the socket are accepted too.
                while let Ok((frames, service, at)) = intake_rx.try_recv() {
                    core.handle(Input::Intake(frames, service, at), Now::read());
                }
                core.stop_intake();
                tracing::info!(pending = core.pending_len(), in_flight = core.in_flight_len(), "intake stopped; draining");
            }
            Some(input) = worker_rx.recv() => {
                core.handle(input, Now::read());
                // Take what else has arrived before dispatching, so work goes
                // out in batches under load (it never waits for more).
                for _ in 1..BURST {
                    let Ok(input) = worker_rx.try_recv() else { break };
                    core.handle(input, Now::read());
                }
            }
            Some((frames, service, at)) = intake_rx.recv(), if core.has_room() => {
                core.handle(Input::Intake(frames, service, at), Now::read());
                for _ in 1..BURST {
                    if !core.has_room() {
                        break;
                    }
                    let Ok((frames, service, at)) = intake_rx.try_recv() else { break };
                    core.handle(Input::Intake(frames, service, at), Now::read());
                }
            }
            _ = tick.tick() => core.handle(Input::Tick, Now::read()),
            Ok(()) = commit_rx.changed() => {
                let turn = *commit_rx.borrow_and_update();
                core.handle(Input::Committed(turn), Now::read());
            }
            failing = commit_health(&mut health) => {
                let input = match failing {
                    Some(error) => Input::CommitFailed { error },
                    None => Input::CommitsAgain,
                };
                core.handle(input, Now::read());
            }
            // A retried message's delay is over (`end_turn` requeues it).
            () = retry::sleep_until(core.next_due()) => {}
            Some(ask) = asks.recv() => match ask {
                Ask::Stats(reply) => {
                    let mut figures = core.stats();
                    figures.journal = shell.journal.as_ref().map(JournalWriter::figures);
                    let _ = reply.send(figures);
                }
                Ask::Whereabouts(key, reply) => {
                    let _ = reply.send(core.whereabouts(&key, Instant::now()));
                }
                Ask::Versions(reply) => {
                    let _ = reply.send(core.catalog_users());
                }
                Ask::Reload(version, reply) => {
                    core.handle(Input::Reload(*version), Now::read());
                    let _ = reply.send(());
                }
            },
        }
        core.end_turn(Now::read());
        shell.carry_out(&mut core).await;
        if let Some(until) = drain_until {
            if core.is_idle() {
                tracing::info!("drained: nothing left in flight");
                break;
            }
            if Instant::now() >= until {
                tracing::warn!(
                    pending = core.pending_len(),
                    in_flight = core.in_flight_len(),
                    "drain timeout: stopping with work unfinished"
                );
                break;
            }
        }
    }
    intake_task.abort();
    gateway_task.abort();
    for task in tasks {
        task.abort();
    }
    // What was appended is committed and acknowledged before the end.
    shell.appended = None;
    while core.awaits_commits() {
        if commit_rx.changed().await.is_err() {
            break;
        }
        let turn = *commit_rx.borrow_and_update();
        core.handle(Input::Committed(turn), Now::read());
        core.end_turn(Now::read());
        shell.carry_out(&mut core).await;
    }
    let _ = watcher.await;
    let c = core.counters();
    tracing::info!(
        accepted = c.accepted,
        rejected = c.rejected,
        malformed = c.malformed,
        results = c.results,
        published = c.published,
        suspended = c.suspended,
        resumed = c.resumed,
        async_timeouts = c.async_timeouts,
        still_suspended = core.suspended_len(),
        late_results = c.late_results,
        redelivered = c.redelivered,
        retried = c.retried,
        dead_lettered = c.dead_lettered,
        duplicates = c.duplicates,
        workers_lost = c.workers_lost,
        pending = core.pending_len(),
        in_flight = core.in_flight_len(),
        "subject stopped"
    );
    if let Some(writer) = shell.journal.take() {
        // Dropping the writer joins its thread after its last commit.
        let _ = tokio::task::spawn_blocking(move || drop(writer)).await;
    }
    c
}

/// What carries the core's effects out.
struct Shell {
    /// To the router task.
    to_workers: mpsc::UnboundedSender<(WorkerId, ZmqMessage)>,
    publish: mpsc::Sender<Publication>,
    kill: mpsc::Sender<u32>,
    dead_letters: DeadLetterStore,
    journal: Option<JournalWriter>,
    /// To the commit watcher (`None` once the loop has ended).
    appended: Option<mpsc::Sender<(u64, Committed)>>,
    /// Where finished spans go (with `record_spans` and an exporter).
    spans: Option<crate::telemetry::Sink>,
}

impl Shell {
    /// Carries out the core's effects, in order, until it has none (a
    /// failed send is an input that may have effects of its own).
    async fn carry_out(&mut self, core: &mut SubjectCore) {
        loop {
            if let Some(sink) = &self.spans {
                for span in core.finished_spans() {
                    sink.record(&span);
                }
            }
            let effects: Vec<Effect> = core.effects().collect();
            if effects.is_empty() {
                return;
            }
            let mut failed = Vec::new();
            for effect in effects {
                if let Some(input) = self.carry(effect).await {
                    failed.push(input);
                }
            }
            if failed.is_empty() {
                return;
            }
            for input in failed {
                core.handle(input, Now::read());
            }
            core.end_turn(Now::read());
        }
    }

    async fn carry(&mut self, effect: Effect) -> Option<Input> {
        match effect {
            Effect::ToWorker(worker, frames) => {
                // The router task outlives the loop; reports a failure itself.
                let _ = self.to_workers.send((worker, frames));
            }
            Effect::Publish(publication) => {
                let span = self.spans.as_ref().and_then(|_| publish_span(&publication));
                // The Integration Manager outlives the Subject's loop; a send
                // error only happens at shutdown.
                let _ = self.publish.send(publication).await;
                if let (Some(sink), Some(mut span)) = (&self.spans, span) {
                    span.end_us = crate::wire::envelope::now_us().max(span.start_us);
                    sink.record(&span);
                }
            }
            Effect::Append { turn, events } => {
                if let (Some(writer), Some(appended)) = (&self.journal, &self.appended) {
                    let committed = writer.submit(events).await;
                    let _ = appended.send((turn, committed)).await;
                }
            }
            Effect::StoreDeadLetter {
                seq,
                message,
                errors,
                at_us,
            } => {
                let stored = tokio::task::block_in_place(|| {
                    self.dead_letters
                        .insert_numbered(seq, &message, &errors, at_us)
                });
                if let Err(e) = stored {
                    tracing::error!(id = %message.envelope.id, seq, error = %e, "cannot store a dead letter; it is still published");
                }
            }
            Effect::Kill(pid) => {
                let _ = self.kill.try_send(pid);
            }
        }
        None
    }
}

/// The `publish` span of a result, an `@PUBLISH` publication or a step
/// given to a service, begun now, if its context is sampled: a child of the
/// request's parent, as the core's spans are (`super::spans`).
fn publish_span(publication: &Publication) -> Option<crate::subject::SpanRecord> {
    use crate::wire::envelope::Kind;
    use crate::wire::trace_context::TraceParent;
    let envelope = &publication.message.envelope;
    let kind = match envelope.kind {
        Kind::Result => "result",
        // A request's message published at its flow's `@PUBLISH` step.
        Kind::Request => "publication",
        Kind::Step => "step",
        _ => return None,
    };
    let parent = TraceParent::parse(&envelope.traceparent)
        .filter(|p| p.flags & TraceParent::SAMPLED != 0)?;
    let now_us = crate::wire::envelope::now_us();
    Some(crate::subject::SpanRecord {
        name: "publish",
        trace_id: parent.trace_id,
        span_id: fastrand::u64(1..),
        parent_id: Some(parent.parent_id),
        parent_is_remote: true,
        start_us: now_us,
        end_us: now_us,
        flow: envelope.flow.clone(),
        id: envelope.id.clone(),
        service: envelope.service.clone(),
        step: Some(envelope.step),
        key: envelope.key.clone(),
        attempt: None,
        worker_pid: None,
        extra: vec![
            ("zmanager.topic", publication.topic.clone()),
            ("zmanager.kind", kind.to_owned()),
        ],
        error: envelope.error.as_ref().map(|e| e.message.clone()),
    })
}

/// Frames from a service, the id its key is bound to, and when they
/// arrived (0: not read).
type Arrived = (ZmqMessage, Option<String>, u64);

/// The time of an arrival, read only when spans are recorded.
fn arrival(stamp: bool) -> u64 {
    if stamp {
        crate::wire::envelope::now_us()
    } else {
        0
    }
}

/// Reports each appended turn's commit, in the order of appending (the
/// latest turn committed; commits are in order).
async fn watch_commits(mut appended: mpsc::Receiver<(u64, Committed)>, report: watch::Sender<u64>) {
    while let Some((turn, committed)) = appended.recv().await {
        if let Err(e) = committed.await {
            // Given up while stopping: what waited on it never goes out.
            tracing::error!(turn, error = %e, "journal commit given up");
            return;
        }
        report.send_replace(turn);
    }
}

/// The journal writer's next word on its health: the error while it
/// fails, `None` once it commits again (never a word with the journal
/// off). Cancel-safe: it only waits on a watch.
async fn commit_health(health: &mut Option<watch::Receiver<Health>>) -> Option<String> {
    if let Some(health) = health
        && health.changed().await.is_ok()
    {
        let now = health.borrow_and_update();
        return now
            .failing
            .then(|| now.last_error.clone().unwrap_or_default());
    }
    std::future::pending().await
}

/// Takes the gateway's channel out of `links` (its place gets a closed one).
fn links_gateway(links: &mut Links) -> mpsc::Receiver<(ZmqMessage, Option<String>)> {
    std::mem::replace(&mut links.gateway, mpsc::channel(1).1)
}

/// Feeds the gateway's requests into the intake channel, behind the same
/// bound as the socket's.
async fn forward(
    mut from: mpsc::Receiver<(ZmqMessage, Option<String>)>,
    to: mpsc::Sender<Arrived>,
    stamp: bool,
) {
    while let Some((frames, service)) = from.recv().await {
        if to.send((frames, service, arrival(stamp))).await.is_err() {
            return;
        }
    }
}

async fn read_socket(mut socket: AsyncSocket, tx: mpsc::Sender<Arrived>, stamp: bool) {
    loop {
        match socket.recv_from().await {
            Ok((frames, service)) => {
                // libzmq never delivers a message of no frames.
                let Ok(frames) = ZmqMessage::try_from(frames) else {
                    continue;
                };
                if tx.send((frames, service, arrival(stamp))).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "intake receive failed"),
        }
    }
}

/// Owns the ROUTER: sends what the loop hands it, and reports what
/// workers send and which sends failed. Both waits are cancel-safe
/// (`crate::transport`).
async fn serve_router(
    mut router: AsyncSocket,
    mut outgoing: mpsc::UnboundedReceiver<(WorkerId, ZmqMessage)>,
    inputs: mpsc::Sender<Input>,
) {
    loop {
        let input = tokio::select! {
            sent = outgoing.recv() => {
                let Some((worker, frames)) = sent else { return };
                match router.send(frames.iter().map(Bytes::as_ref)).await {
                    Ok(()) => continue,
                    Err(e) => Input::SendFailed(worker, e.to_string()),
                }
            }
            received = router.recv() => match received.map(ZmqMessage::try_from) {
                Ok(Ok(frames)) => Input::Worker(frames),
                Ok(Err(_)) => continue,
                Err(e) => {
                    tracing::warn!(error = %e, "worker socket receive failed");
                    continue;
                }
            },
        };
        if inputs.send(input).await.is_err() {
            return;
        }
    }
}
