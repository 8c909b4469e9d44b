//! The Integration Manager: the single publisher. It holds no business
//! logic: it publishes what it is handed on the topic it is handed.
//!
//! One task owns the publish socket (an XPUB that applies a subscription
//! only once the node allows it, [`Permissions::may_read`]) and is fed by a bounded
//! channel; when the channel is full, whoever publishes waits
//! (backpressure), and the queue never grows without limit.
//!
//! What it publishes is offered to the in-process [`Taps`] too (the HTTP
//! gateway's), first, without waiting on them.

mod taps;

pub use taps::{Stream, Taps, Watch};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::security::Permissions;
use crate::transport::AsyncSocket;
use crate::wire::{self, Message};

/// A message to publish and its topic. The message is shared: a result
/// is published and kept for duplicates (`crate::dedupe`) without a copy.
#[derive(Debug, Clone)]
pub struct Publication {
    pub topic: String,
    pub message: Arc<Message>,
}

impl Publication {
    pub fn new(topic: String, message: impl Into<Arc<Message>>) -> Self {
        Self {
            topic,
            message: message.into(),
        }
    }
}

/// The capacity of the channel into the Integration Manager.
pub const QUEUE: usize = 1024;

/// The most publications taken from the channel at once, between two
/// looks for a subscription.
const BATCH: usize = 256;

/// How long closing the PUB socket waits for what its queues still hold
/// (its `ZMQ_LINGER`): the last results of a stopping node.
pub const LINGER: Duration = Duration::from_secs(1);

/// Publishes everything received until every sender is dropped (adding
/// the bytes of each message sent, all its frames, to `sent`), then
/// closes the socket in a blocking thread (it lingers, see [`LINGER`]).
/// Meanwhile it applies the subscriptions `readers` allow.
pub async fn run(
    mut socket: AsyncSocket,
    mut publications: mpsc::Receiver<Publication>,
    readers: Permissions,
    taps: Taps,
    sent: Arc<AtomicU64>,
) {
    let mut published: u64 = 0;
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        // What is queued is taken at once: each turn of this loop also
        // looks for a subscription, which costs libzmq a receive (and a
        // poll of its mailbox) when there is none, so a turn per
        // publication spent more on looking than on publishing.
        tokio::select! {
            taken = publications.recv_many(&mut batch, BATCH) => {
                if taken == 0 {
                    break;
                }
                for publication in batch.drain(..) {
                    taps.offer(&publication);
                    let Publication { topic, message } = publication;
                    let frames = wire::publication(topic, &message);
                    let bytes: usize = frames.iter().map(Bytes::len).sum();
                    if let Err(e) = socket.send(frames.iter().map(Bytes::as_ref)).await {
                        tracing::warn!(id = %message.envelope.id, error = %e, "publish failed");
                        continue;
                    }
                    published += 1;
                    sent.fetch_add(bytes as u64, Ordering::Relaxed);
                }
            }
            // Receiving is cancel-safe (`crate::transport`).
            subscription = socket.recv_from() => match subscription {
                Ok((frames, service)) => decide(&socket, &readers, &frames, service.as_deref()),
                Err(e) => tracing::warn!(error = %e, "subscription receive failed"),
            },
        }
    }
    let _ = tokio::task::spawn_blocking(move || drop(socket)).await;
    tracing::debug!(published, "integration manager stopped");
}

/// Applies one (un)subscription message — `[1 or 0, prefix...]` — if
/// `readers` allow it; it must be applied before the next is received.
fn decide(socket: &AsyncSocket, readers: &Permissions, frames: &[Bytes], service: Option<&str>) {
    let Some((&verb, prefix)) = frames.first().and_then(|f| f.split_first()) else {
        return;
    };
    let applied = match verb {
        1 if readers.may_read(service, prefix) => socket.get_ref().set_subscribe(prefix),
        1 => {
            tracing::warn!(service = service.unwrap_or(""), prefix = %String::from_utf8_lossy(prefix), "refused a subscription: not this service's to read ([security] subscribe)");
            return;
        }
        0 => socket.get_ref().set_unsubscribe(prefix),
        _ => return,
    };
    if let Err(e) = applied {
        tracing::warn!(error = %e, "cannot apply a subscription");
    }
}
