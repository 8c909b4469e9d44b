//! A worker process: connects to the Subject, announces its credits, and
//! runs every message it is sent through its flow (see [`crate::executor`]),
//! returning the results in batches.
//!
//! The DEALER socket is split: one task owns the receiving half and feeds a
//! bounded channel (a zmq.rs `recv` is never put in a `select!`), the loop
//! here owns the sending half. The loop stops when `shutdown` is cancelled,
//! after finishing and answering the batch in hand.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::util::PeerIdentity;
use zeromq::{DealerSocket, Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

use crate::executor::Executor;
use crate::wire::{self, Message, Ready};

/// How a worker connects.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The Subject's worker endpoint.
    pub endpoint: String,
    /// This worker's identity on the Subject's ROUTER; unique per start.
    pub identity: String,
    /// How many messages it takes at once.
    pub credits: u32,
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    #[error("identity {0:?} is not usable (1 to 255 bytes)")]
    Identity(String),
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: zeromq::ZmqError,
    },
    #[error("lost the Subject: {0}")]
    Send(#[source] zeromq::ZmqError),
}

/// Runs a worker until `shutdown` is cancelled or the Subject is lost.
pub async fn run(
    options: WorkerOptions,
    executor: Executor,
    shutdown: CancellationToken,
) -> Result<(), WorkerError> {
    let identity = PeerIdentity::try_from(options.identity.clone().into_bytes())
        .map_err(|_| WorkerError::Identity(options.identity.clone()))?;
    let mut socket_options = SocketOptions::default();
    socket_options.peer_identity(identity);
    let mut socket = DealerSocket::with_options(socket_options);
    socket
        .connect(&options.endpoint)
        .await
        .map_err(|source| WorkerError::Connect {
            endpoint: options.endpoint.clone(),
            source,
        })?;
    let ready = Ready {
        credits: options.credits,
        pid: std::process::id(),
    };
    socket
        .send(wire::ready(ready))
        .await
        .map_err(WorkerError::Send)?;
    tracing::info!(identity = %options.identity, endpoint = %options.endpoint, credits = options.credits, "worker ready");

    let (mut sender, mut receiver) = socket.split();
    let (work_tx, mut work_rx) = mpsc::channel::<ZmqMessage>(4);
    let reader = tokio::spawn(async move {
        loop {
            match receiver.recv().await {
                Ok(frames) => {
                    if work_tx.send(frames).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "worker socket closed");
                    return;
                }
            }
        }
    });

    let result = loop {
        let frames = tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            frames = work_rx.recv() => match frames {
                Some(frames) => frames,
                None => break Ok(()),
            },
        };
        let results = handle(&executor, &frames);
        if results.is_empty() {
            continue;
        }
        if let Err(e) = sender.send(wire::results(&results)).await {
            break Err(WorkerError::Send(e));
        }
    };
    reader.abort();
    result
}

/// Runs one `WORK` batch; returns its results. Frames that are not work are
/// logged and dropped: only the Subject talks to a worker.
fn handle(executor: &Executor, frames: &ZmqMessage) -> Vec<Message> {
    let batch = match wire::decode_work(frames) {
        Ok(batch) => batch,
        Err(e) => {
            tracing::error!(error = %e, "dropping a message that is not WORK");
            return Vec::new();
        }
    };
    batch
        .into_iter()
        .filter_map(|item| match item {
            Ok(message) => Some(executor.run(message)),
            Err(e) => {
                tracing::error!(error = %e, "dropping a work item that does not decode");
                None
            }
        })
        .collect()
}

/// A fresh identity for worker `slot` of the node with process id `node`.
/// Unique per start, as a reused identity would steal the previous
/// connection's messages (see `docs/architecture.md`).
pub fn identity(slot: usize, generation: u64, node: u32) -> String {
    format!("w{slot}.{generation}.{node}")
}
