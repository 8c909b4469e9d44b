//! A worker process: connects to the Subject, announces its credits, runs
//! every message it is sent through its flow (see [`crate::worker::executor`]), and
//! returns the results in batches.
//!
//! Two threads: actions run on a dedicated thread, so a long action does not
//! stop the socket loop, which keeps heartbeating. The socket loop:
//! - sends `HEARTBEAT` every `heartbeat` when idle, so the Subject can tell a
//!   dead or stopped (SIGSTOP) worker from a busy one;
//! - rebuilds its connection, with a new identity and a new `READY`, when the
//!   Subject is silent for `liveness` or a send fails: libzmq's DEALER
//!   reconnects by itself, but a restarted Subject does not know the old
//!   identity, so this is how a worker survives a Subject restart;
//! - exits the process when one action has run longer than
//!   `message_timeout`: an action cannot be interrupted, so the worker gives
//!   itself up, the supervisor starts a fresh one and the Subject sends its
//!   messages elsewhere.
//!
//! On `shutdown` it finishes and answers the batches in hand, then returns.
//!
//! A worker started by the node's supervisor writes one line, [`SERVING`],
//! on its stdout once it has returned its first results: proof that it
//! loaded, connected and ran actions, which the supervisor's restart policy
//! uses to tell a worker killed after it served from a crash loop.

pub mod executor;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{sleep, timeout};
use tokio_util::sync::CancellationToken;
use zeromq::ZmqMessage;

use crate::transport::{self, AsyncSocket, ClientKeys, Peer};
use crate::wire::envelope::now_us;
use crate::wire::{self, Message, Ready, ToWorker};
use crate::worker::executor::{Book, Executor};

/// The exit status of a worker that gave itself up over a stuck action.
pub const EXIT_STUCK: i32 = 70;

/// The line a worker with [`WorkerOptions::report_serving`] writes on its
/// stdout, once, after its first results reached the Subject.
pub const SERVING: &str = "zmanager-worker: serving";

/// How a worker connects and how it watches its peer.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The Subject's worker endpoints: one, or an active node's and its
    /// standbys' (`docs/deployment.md`). The worker connects to one at a
    /// time, the next one each time it connects again: after the one it
    /// served was silent for `liveness`, or never answered.
    pub endpoints: Vec<String>,
    /// This worker's identity; each connection appends `.c<n>` to it.
    pub identity: String,
    /// How many messages it takes at once.
    pub credits: u32,
    /// How often it heartbeats.
    pub heartbeat: Duration,
    /// Silence from the Subject after which it reconnects.
    pub liveness: Duration,
    /// The longest one action may run before the worker exits.
    pub message_timeout: Duration,
    /// Write [`SERVING`] on stdout after the first results are returned (for
    /// the node's supervisor; `zmanager worker --report-serving`).
    pub report_serving: bool,
    /// CURVE keys, for a node with `[security]`.
    pub keys: Option<ClientKeys>,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("identity {0:?} is not usable (1 to 255 bytes, not starting with a zero byte)")]
    Identity(String),
    #[error("cannot make a socket: {0}")]
    Socket(#[from] transport::SocketError),
    #[error("the action thread stopped")]
    ActionThread,
    #[error("no endpoint to connect to")]
    NoEndpoint,
}

/// The action thread: batches in, results out, and when the current
/// message started (0 when idle).
struct Actions {
    batches: std::sync::mpsc::Sender<Vec<Message>>,
    results: mpsc::Receiver<Vec<Message>>,
    busy_since_us: Arc<AtomicU64>,
    outstanding: usize,
}

impl Actions {
    fn start(executor: Executor) -> Self {
        let (batches, batch_rx) = std::sync::mpsc::channel::<Vec<Message>>();
        let (results_tx, results) = mpsc::channel(64);
        let busy_since_us = Arc::new(AtomicU64::new(0));
        let busy = Arc::clone(&busy_since_us);
        std::thread::Builder::new()
            .name("actions".into())
            .spawn(move || {
                for batch in batch_rx {
                    let results: Vec<Message> = batch
                        .into_iter()
                        .map(|message| {
                            busy.store(now_us().max(1), Ordering::Relaxed);
                            executor.run(message)
                        })
                        .collect();
                    busy.store(0, Ordering::Relaxed);
                    if results_tx.blocking_send(results).is_err() {
                        return;
                    }
                }
            })
            .map_or_else(
                |e| tracing::error!(error = %e, "cannot start the action thread"),
                drop,
            );
        Self {
            batches,
            results,
            busy_since_us,
            outstanding: 0,
        }
    }

    fn submit(&mut self, batch: Vec<Message>) -> Result<(), WorkerError> {
        self.batches
            .send(batch)
            .map_err(|_| WorkerError::ActionThread)?;
        self.outstanding += 1;
        Ok(())
    }

    /// How long the current action has been running, if one is.
    fn running_for(&self) -> Option<Duration> {
        match self.busy_since_us.load(Ordering::Relaxed) {
            0 => None,
            since => Some(Duration::from_micros(now_us().saturating_sub(since))),
        }
    }
}

/// Whether [`SERVING`] is still to be written.
struct Serving(bool);

impl Serving {
    /// Results were returned: writes [`SERVING`] the first time.
    fn served(&mut self) {
        if !std::mem::take(&mut self.0) {
            return;
        }
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if let Err(e) = writeln!(out, "{SERVING}").and_then(|()| out.flush()) {
            tracing::warn!(error = %e, "cannot tell the supervisor this worker serves");
        }
    }
}

/// Why a connection ended.
enum Ended {
    /// Reconnect (the Subject went silent or away).
    Lost,
    /// Stop: shutdown was asked and nothing is outstanding.
    Done,
}

/// Runs a worker until `shutdown` is cancelled and its work is answered.
pub async fn run(
    options: WorkerOptions,
    executor: Executor,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let book = executor.book();
    let mut actions = Actions::start(executor);
    let mut serving = Serving(options.report_serving);
    let mut delay = Duration::from_millis(100);
    for connection in 1u64.. {
        let identity = format!("{}.c{connection}", options.identity);
        // Connecting may wait for a Subject that is not there; a worker asked
        // to stop (its node gone) does not wait for it.
        let connected = tokio::select! {
            connected = connect(&options, connection - 1, &identity, book.digests()) => connected?,
            () = shutdown.cancelled(), if actions.outstanding == 0 => return Ok(()),
        };
        match connected {
            Some(socket) => {
                delay = Duration::from_millis(100);
                match serve(
                    socket,
                    &options,
                    &identity,
                    &book,
                    &mut actions,
                    &mut serving,
                    &shutdown,
                )
                .await?
                {
                    Ended::Done => return Ok(()),
                    Ended::Lost if shutdown.is_cancelled() => return Ok(()),
                    Ended::Lost => {}
                }
            }
            None if shutdown.is_cancelled() => return Ok(()),
            None => {}
        }
        tokio::select! {
            () = sleep(delay) => {}
            () = shutdown.cancelled() => if actions.outstanding == 0 { return Ok(()) },
        }
        delay = (delay * 2).min(Duration::from_secs(2));
    }
    Ok(())
}

/// A socket connecting to the Subject with `READY` queued, or `None` to
/// retry later. libzmq connects in the background: `READY` leaves when the
/// connection (and its CURVE handshake) is up; a Subject that never answers
/// is found silent after `liveness`.
async fn connect(
    options: &WorkerOptions,
    connection: u64,
    identity: &str,
    catalogs: Vec<String>,
) -> Result<Option<AsyncSocket>, WorkerError> {
    // libzmq reserves routing ids starting with a zero byte.
    if identity.is_empty() || identity.len() > 255 || identity.starts_with('\0') {
        return Err(WorkerError::Identity(identity.to_owned()));
    }
    let peer = Peer {
        max_frame_bytes: crate::node::WORKER_FRAME_BYTES,
        send_hwm: 1000,
        receive_hwm: 1000,
        linger: Duration::ZERO,
        identity: Some(identity.as_bytes().to_vec()),
        curve: options.keys.clone(),
    };
    let endpoint = options
        .endpoints
        .get(usize::try_from(connection).unwrap_or(0) % options.endpoints.len().max(1))
        .ok_or(WorkerError::NoEndpoint)?;
    let mut socket = transport::connect(zmq::DEALER, endpoint, &peer)?;
    let ready = Ready {
        credits: options.credits,
        pid: std::process::id(),
        catalogs,
    };
    match timeout(options.liveness, send(&mut socket, &wire::ready(&ready))).await {
        Ok(Ok(())) => {
            tracing::info!(%identity, %endpoint, credits = options.credits, curve = options.keys.is_some(), "worker ready");
            Ok(Some(socket))
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "cannot announce to the Subject");
            Ok(None)
        }
        Err(_) => {
            tracing::warn!("announcing to the Subject timed out");
            Ok(None)
        }
    }
}

async fn send(socket: &mut AsyncSocket, frames: &ZmqMessage) -> Result<(), zmq::Error> {
    socket.send(frames.iter().map(Bytes::as_ref)).await
}

/// Serves one connection until it is lost or the worker is done.
async fn serve(
    mut socket: AsyncSocket,
    options: &WorkerOptions,
    identity: &str,
    book: &Book,
    actions: &mut Actions,
    serving: &mut Serving,
    shutdown: &CancellationToken,
) -> Result<Ended, WorkerError> {
    let send_limit = options.liveness;
    let mut last_heard = Instant::now();
    let mut tick = tokio::time::interval(options.heartbeat);
    let mut stopping = shutdown.is_cancelled();
    let ended = loop {
        if stopping && actions.outstanding == 0 {
            break Ended::Done;
        }
        tokio::select! {
            () = shutdown.cancelled(), if !stopping => stopping = true,
            frames = socket.recv() => {
                let frames = match frames.map(ZmqMessage::try_from) {
                    Ok(Ok(frames)) => frames,
                    Ok(Err(_)) => continue,
                    Err(e) => {
                        tracing::warn!(error = %e, "connection to the Subject failed");
                        break Ended::Lost;
                    }
                };
                last_heard = Instant::now();
                match wire::decode_to_worker(&frames) {
                    Ok(ToWorker::Work(items)) => {
                        let batch: Vec<Message> = items
                            .into_iter()
                            .filter_map(|item| {
                                item.map_err(|e| tracing::error!(error = %e, "dropping a work item that does not decode")).ok()
                            })
                            .collect();
                        if !batch.is_empty() {
                            actions.submit(batch)?;
                        }
                    }
                    Ok(ToWorker::Heartbeat) => {}
                    // Taken before any work of its version, which the
                    // Subject sends after it on this socket.
                    Ok(ToWorker::Catalog(offer)) => {
                        let version = offer.version;
                        let serves = book.accept(*offer);
                        for (refused, why) in &serves.refused {
                            tracing::error!(version = refused, "this worker cannot run this catalog version, and is given none of its work: {why}");
                        }
                        tracing::info!(version, serves = ?serves.versions, "catalog version offered");
                        if timeout(send_limit, send(&mut socket, &wire::catalogs::serves(&serves))).await.is_err() {
                            tracing::warn!("telling the Subject the catalogs it serves timed out; reconnecting");
                            break Ended::Lost;
                        }
                    }
                    Err(e) => tracing::error!(error = %e, "dropping a message that is not for a worker"),
                }
            }
            results = actions.results.recv() => {
                let Some(results) = results else {
                    return Err(WorkerError::ActionThread);
                };
                actions.outstanding = actions.outstanding.saturating_sub(1);
                match timeout(send_limit, send(&mut socket, &wire::results(&results))).await {
                    Ok(Ok(())) => serving.served(),
                    Ok(Err(e)) => {
                        tracing::warn!(error = %e, results = results.len(), "cannot return results; reconnecting");
                        break Ended::Lost;
                    }
                    Err(_) => {
                        tracing::warn!(results = results.len(), "returning results timed out; reconnecting");
                        break Ended::Lost;
                    }
                }
            }
            _ = tick.tick() => {
                if let Some(running) = actions.running_for()
                    && running > options.message_timeout {
                        tracing::error!(
                            running_ms = running.as_millis() as u64,
                            limit_ms = options.message_timeout.as_millis() as u64,
                            "an action exceeded message_timeout; exiting so this worker is replaced and its messages are sent elsewhere"
                        );
                        std::process::exit(EXIT_STUCK);
                    }
                if last_heard.elapsed() > options.liveness {
                    tracing::warn!(%identity, silent_ms = last_heard.elapsed().as_millis() as u64, "the Subject is silent; reconnecting");
                    break Ended::Lost;
                }
                match timeout(send_limit, send(&mut socket, &wire::heartbeat())).await {
                    Ok(Ok(())) => {}
                    _ => {
                        tracing::warn!(%identity, "cannot heartbeat the Subject; reconnecting");
                        break Ended::Lost;
                    }
                }
            }
        }
    };
    Ok(ended)
}

/// A fresh identity for worker `slot` of the node with process id `node`.
/// Unique per start, as a reused identity would steal the previous
/// connection's messages (see `docs/architecture.md`).
pub fn identity(slot: usize, generation: u64, node: u32) -> String {
    format!("w{slot}.{generation}.{node}")
}
