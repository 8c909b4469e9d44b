//! The Integration Manager: the single publisher. It holds no business
//! logic: it publishes what it is handed on the topic it is handed.
//!
//! One task owns the PUB socket and is fed by a bounded channel; when the
//! channel is full, whoever publishes waits (backpressure), and the queue
//! never grows without limit.

use std::time::Duration;

use tokio::sync::mpsc;
use zeromq::{PubSocket, SocketSend};

use crate::wire::{self, Message};

/// A message to publish and its topic.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: String,
    pub message: Message,
}

/// The capacity of the channel into the Integration Manager.
pub const QUEUE: usize = 1024;

/// How long the socket is kept open after the last publication. zmq.rs has
/// no linger: dropping a PUB socket discards what its queues still hold, so
/// a stopping node waits this long for the last results to leave.
pub const LINGER: Duration = Duration::from_secs(1);

/// Publishes everything received until every sender is dropped, then
/// lingers (see [`LINGER`]).
pub async fn run(mut socket: PubSocket, mut publications: mpsc::Receiver<Publication>) {
    let mut published: u64 = 0;
    while let Some(Publication { topic, message }) = publications.recv().await {
        // The topic's String becomes the frame without a copy.
        if let Err(e) = socket.send(wire::publication(topic, &message)).await {
            tracing::warn!(id = %message.envelope.id, error = %e, "publish failed");
            continue;
        }
        published += 1;
    }
    tokio::time::sleep(LINGER).await;
    tracing::debug!(published, "integration manager stopped");
}
