//! The Integration Manager: the single publisher. It holds no business
//! logic: it publishes what it is handed on the topic it is handed.
//!
//! One task owns the PUB socket and is fed by a bounded channel; when the
//! channel is full, whoever publishes waits (backpressure), and the queue
//! never grows without limit.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::transport::AsyncSocket;
use crate::wire::{self, Message};

/// A message to publish and its topic.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: String,
    pub message: Message,
}

/// The capacity of the channel into the Integration Manager.
pub const QUEUE: usize = 1024;

/// How long closing the PUB socket waits for what its queues still hold
/// (its `ZMQ_LINGER`): the last results of a stopping node.
pub const LINGER: Duration = Duration::from_secs(1);

/// Publishes everything received until every sender is dropped, then
/// closes the socket in a blocking thread (it lingers, see [`LINGER`]).
pub async fn run(mut socket: AsyncSocket, mut publications: mpsc::Receiver<Publication>) {
    let mut published: u64 = 0;
    while let Some(Publication { topic, message }) = publications.recv().await {
        let frames = wire::publication(topic, &message);
        if let Err(e) = socket.send(frames.iter().map(Bytes::as_ref)).await {
            tracing::warn!(id = %message.envelope.id, error = %e, "publish failed");
            continue;
        }
        published += 1;
    }
    let _ = tokio::task::spawn_blocking(move || drop(socket)).await;
    tracing::debug!(published, "integration manager stopped");
}
