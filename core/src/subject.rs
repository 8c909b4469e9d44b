//! The Subject (DigitalPy's ventilator): takes requests from services, works
//! out each one's next flow step, and dispatches work to the workers.
//!
//! Tasks and sockets:
//! - the intake task owns the PULL socket services push to, and feeds a
//!   bounded channel;
//! - the worker-reader task owns the ROUTER's receiving half, and a monitor
//!   task reports worker disconnections, both into a second channel;
//! - the Subject's loop (this module's [`run`]) owns the ROUTER's sending
//!   half and the [`InFlightTable`], and hands results to the Integration
//!   Manager.
//!
//! Backpressure: when the pending queue is full the loop stops taking from
//! the intake channel; the intake task then blocks, and ZeroMQ's TCP flow
//! control pushes back on the services.

use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::{
    PullSocket, RouterSendHalf, RouterSocket, Socket, SocketEvent, SocketRecv, SocketSend,
    ZmqMessage,
};

use crate::action_key::ActionKey;
use crate::catalog::{Catalog, StepRole};
use crate::envelope::{Envelope, Kind, PROTOCOL_VERSION, now_us};
use crate::error_code::ErrorCode;
use crate::inflight::{InFlightTable, Refused, WorkerId};
use crate::integration_manager::Publication;
use crate::topic::Topic;
use crate::wire::{self, FromWorker, Message, WireError};

/// Tuning of the Subject.
#[derive(Debug, Clone, Copy)]
pub struct SubjectOptions {
    /// Most messages per frame to a worker.
    pub batch: usize,
    /// Most requests waiting for a worker.
    pub max_pending: usize,
}

/// What happened, for the log line at exit (and for tests reading it).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counters {
    pub accepted: u64,
    pub rejected: u64,
    pub malformed: u64,
    pub results: u64,
    pub late_results: u64,
    pub requeued: u64,
}

/// A MessagePack nil: the payload of an error result that has no request
/// payload to return.
static NIL: Bytes = Bytes::from_static(&[0xc0]);

enum WorkerEvent {
    Frames(ZmqMessage),
    Gone(WorkerId),
}

/// Runs the Subject until `shutdown` is cancelled.
pub async fn run(
    intake: PullSocket,
    mut router: RouterSocket,
    publish: mpsc::Sender<Publication>,
    catalog: Arc<Catalog>,
    options: SubjectOptions,
    shutdown: CancellationToken,
) -> Counters {
    let (intake_tx, mut intake_rx) = mpsc::channel::<ZmqMessage>(1024);
    let (worker_tx, mut worker_rx) = mpsc::channel::<WorkerEvent>(1024);

    let mut monitor = router.monitor();
    let (sender, mut receiver) = router.split();
    let tasks = [
        tokio::spawn(read_socket(intake, intake_tx)),
        tokio::spawn({
            let worker_tx = worker_tx.clone();
            async move {
                while let Ok(frames) = receiver.recv().await {
                    if worker_tx.send(WorkerEvent::Frames(frames)).await.is_err() {
                        return;
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

    let mut subject = Subject {
        catalog,
        table: InFlightTable::new(options.max_pending),
        batch: options.batch,
        publish,
        sender,
        counters: Counters::default(),
    };
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(event) = worker_rx.recv() => subject.on_worker(event).await,
            Some(frames) = intake_rx.recv(), if subject.table.has_room() => {
                subject.on_intake(&frames).await;
            }
            else => break,
        }
        subject.dispatch().await;
    }
    for task in tasks {
        task.abort();
    }
    let c = subject.counters;
    tracing::info!(
        accepted = c.accepted,
        rejected = c.rejected,
        malformed = c.malformed,
        results = c.results,
        late_results = c.late_results,
        requeued = c.requeued,
        pending = subject.table.pending_len(),
        in_flight = subject.table.in_flight_len(),
        "subject stopped"
    );
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
    batch: usize,
    publish: mpsc::Sender<Publication>,
    sender: RouterSendHalf,
    counters: Counters,
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

impl Subject {
    async fn publish(&self, message: Message) {
        let topic = result_topic(&message.envelope);
        // The Integration Manager outlives the Subject's loop; a send error
        // only happens at shutdown.
        let _ = self.publish.send(Publication { topic, message }).await;
    }

    async fn reject(&mut self, message: Message, code: ErrorCode, text: String) {
        tracing::warn!(id = %message.envelope.id, flow = %message.envelope.flow, code = code.name(), "{text}");
        self.counters.rejected += 1;
        let envelope = message.envelope.into_error(code, text);
        self.publish(Message::new(envelope, message.payload)).await;
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
                    self.publish(Message::new(envelope, NIL.clone())).await;
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
                    self.publish(message).await;
                }
                return;
            }
            Kind::Unknown => {
                let text = "unknown message kind".to_owned();
                return self.reject(message, ErrorCode::NotSupported, text).await;
            }
            Kind::Result => {
                let text = "results from services (answers to ASYNC steps) are not supported by this node yet".to_owned();
                return self.reject(message, ErrorCode::NotSupported, text).await;
            }
        }
        let catalog = Arc::clone(&self.catalog);
        let Some(routed) = catalog.flow(&envelope.flow) else {
            let text = format!("unknown flow {:?}", envelope.flow);
            return self.reject(message, ErrorCode::UnknownFlow, text).await;
        };
        let position = if envelope.key.is_empty() {
            Some(0)
        } else {
            match ActionKey::parse(&envelope.key) {
                Ok(key) => routed.flow.position(&key),
                Err(e) => {
                    let text = format!("key {:?}: {e}", envelope.key);
                    return self.reject(message, ErrorCode::UnknownStep, text).await;
                }
            }
        };
        let Some(position) = position else {
            let text = format!(
                "key {:?} matches no step of flow {}",
                envelope.key, routed.flow.name
            );
            return self.reject(message, ErrorCode::UnknownStep, text).await;
        };
        let next = position + 1;
        let step_key = routed.flow.steps.get(next).map(|s| s.key.to_string());
        let envelope = &mut message.envelope;
        envelope.step = u32::try_from(next).unwrap_or(u32::MAX);
        envelope.key = step_key.unwrap_or_default();
        envelope.accepted_us = now_us();
        envelope.attempt = 0;
        match routed.roles.get(next).map(|(role, _)| role) {
            Some(StepRole::Action(_)) => match self.table.enqueue(message) {
                Ok(()) => self.counters.accepted += 1,
                Err((Refused::DuplicateId, message)) => {
                    let text = format!(
                        "a message with id {:?} is already in flight",
                        message.envelope.id
                    );
                    self.reject(*message, ErrorCode::DuplicateId, text).await;
                }
                Err((Refused::Full, message)) => {
                    let text = "the node's queue is full".to_owned();
                    self.reject(*message, ErrorCode::Overloaded, text).await;
                }
            },
            None | Some(StepRole::Done) => {
                self.counters.accepted += 1;
                self.finish(message).await;
            }
            Some(role) => {
                let text = not_supported(role, &message.envelope.key);
                self.reject(message, ErrorCode::NotSupported, text).await;
            }
        }
    }

    /// Publishes a flow's outcome as a result.
    async fn finish(&mut self, mut message: Message) {
        message.envelope.kind = Kind::Result;
        self.counters.results += 1;
        self.publish(message).await;
    }

    async fn on_worker(&mut self, event: WorkerEvent) {
        let frames = match event {
            WorkerEvent::Gone(worker) => {
                let requeued = self.table.worker_lost(&worker);
                self.counters.requeued += requeued as u64;
                tracing::warn!(worker = %String::from_utf8_lossy(&worker), requeued, "worker disconnected");
                return;
            }
            WorkerEvent::Frames(frames) => frames,
        };
        let mut frames = frames.into_vec();
        if frames.is_empty() {
            return;
        }
        let worker = frames.remove(0);
        let name = String::from_utf8_lossy(&worker).into_owned();
        let (what, bad) = match wire::decode_from_worker(&frames) {
            Ok(decoded) => decoded,
            Err(e) => {
                tracing::error!(worker = %name, error = %e, "malformed message from a worker");
                return;
            }
        };
        for e in bad {
            tracing::error!(worker = %name, error = %e, "a result from a worker does not decode");
        }
        match what {
            FromWorker::Ready(ready) => {
                let requeued = self.table.worker_ready(worker, ready.credits);
                tracing::info!(worker = %name, pid = ready.pid, credits = ready.credits, requeued, "worker ready");
            }
            FromWorker::Results(results) => {
                for result in results {
                    self.on_result(&worker, result).await;
                }
            }
        }
    }

    async fn on_result(&mut self, worker: &WorkerId, result: Message) {
        if self.table.complete(worker, &result.envelope).is_none() {
            self.counters.late_results += 1;
            tracing::debug!(id = %result.envelope.id, "dropping a result not in flight on its worker (late duplicate)");
            return;
        }
        let catalog = Arc::clone(&self.catalog);
        let step = usize::try_from(result.envelope.step).unwrap_or(usize::MAX);
        let role = catalog
            .flow(&result.envelope.flow)
            .and_then(|routed| routed.roles.get(step))
            .map(|(role, _)| role);
        match role {
            Some(role @ (StepRole::Publish | StepRole::Async | StepRole::Service(_)))
                if result.envelope.error.is_none() =>
            {
                let text = not_supported(role, &result.envelope.key);
                self.reject(result, ErrorCode::NotSupported, text).await;
            }
            _ => self.finish(result).await,
        }
    }

    /// Sends pending messages to workers with free credits.
    async fn dispatch(&mut self) {
        while let Some((worker, batch)) = self.table.next_batch(self.batch) {
            let mut frames = wire::work(&batch);
            frames.push_front(worker.clone());
            if let Err(e) = self.sender.send(frames).await {
                let requeued = self.table.worker_lost(&worker);
                self.counters.requeued += requeued as u64;
                tracing::warn!(worker = %String::from_utf8_lossy(&worker), error = %e, requeued, "cannot send to worker");
            }
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
