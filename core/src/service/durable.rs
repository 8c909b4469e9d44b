//! A durable subscription from the Rust client:
//! [`Service::subscribe_durable`] (`docs/durable.md`).
//!
//! The node keeps what it published on the subscription's prefixes, under
//! its name, until it is acknowledged, and delivers it in order on a topic
//! of this service's own: `@reply~ID~durable-NAME~`, each delivery's topic
//! followed by its sequence number and the topic it was published on
//! (`…~42~Greeting~~~~done`). [`DurableSubscription::next`] returns each message once,
//! in order; a gap (a delivery lost on the way, as a publisher drops for a
//! slow subscriber) makes it subscribe again, and the node sends again
//! everything not acknowledged.

use std::sync::Arc;

use bytes::Bytes;

use super::{Published, Service, ServiceError, Subscription};
use crate::envelope::{Envelope, Kind, Status};
use crate::wire::Message;

/// One message of a durable subscription.
#[derive(Debug, Clone)]
pub struct Delivery {
    /// Its place in the subscription: 1, 2, 3… Acknowledge it with
    /// [`DurableSubscription::ack`].
    pub seq: u64,
    /// The topic it was published on.
    pub topic: String,
    pub envelope: Envelope,
    pub payload: Bytes,
}

/// A durable subscription of a [`Service`].
#[derive(Debug)]
pub struct DurableSubscription {
    service: Arc<Service>,
    name: String,
    prefixes: Vec<String>,
    window: u32,
    topic: String,
    subscription: Subscription,
    /// The last sequence number returned.
    last: u64,
    /// A gap was seen and a subscribe sent again: more gaps until the next
    /// message in order are the same one.
    resyncing: bool,
}

impl Service {
    /// Subscribes under the durable `name` to topics starting with one of
    /// `prefixes`, with up to `window` messages sent and unacknowledged at
    /// once. Subscribing again under the same name (after a reconnect, or
    /// from a new process of the same service) gets first what was not
    /// acknowledged, in order, then what comes.
    pub async fn subscribe_durable(
        self: &Arc<Self>,
        name: &str,
        prefixes: &[String],
        window: u32,
    ) -> Result<DurableSubscription, ServiceError> {
        let topic = format!("{}durable-{name}~", self.reply_to);
        let subscription = self.subscribe(std::slice::from_ref(&topic)).await?;
        let durable = DurableSubscription {
            service: Arc::clone(self),
            name: name.to_owned(),
            prefixes: prefixes.to_vec(),
            window,
            topic,
            subscription,
            last: 0,
            resyncing: false,
        };
        let mut durable = durable;
        durable.subscribe_and_wait().await?;
        Ok(durable)
    }
}

impl DurableSubscription {
    /// Subscribes and waits until the node says the subscription is made
    /// (an `accepted` on its topic, with the sequence number acknowledged
    /// so far), or refuses it.
    async fn subscribe_and_wait(&mut self) -> Result<(), ServiceError> {
        let limit = self.service.options.handshake_timeout;
        self.send_subscribe().await?;
        let waiting = async {
            loop {
                let Some(published) = self.subscription.next().await else {
                    return Err(ServiceError::Closed);
                };
                if published.topic != self.topic {
                    continue;
                }
                match (published.envelope.kind, published.envelope.error) {
                    (Kind::Accepted, _) => {
                        // Deliveries go on after what is acknowledged: a
                        // new process of the subscriber starts there.
                        let acked: u64 = zmanager_sdk::decode(&published.payload)?;
                        self.last = acked;
                        return Ok(());
                    }
                    (_, Some(error)) => {
                        return Err(ServiceError::Failed {
                            key: String::new(),
                            error,
                        });
                    }
                    _ => {}
                }
            }
        };
        tokio::time::timeout(limit, waiting)
            .await
            .unwrap_or(Err(ServiceError::Handshake(limit)))
    }

    async fn send_subscribe(&self) -> Result<(), ServiceError> {
        #[derive(serde::Serialize)]
        struct Subscribe<'a> {
            name: &'a str,
            prefixes: &'a [String],
            window: u32,
        }
        let payload = rmp_serde::to_vec_named(&Subscribe {
            name: &self.name,
            prefixes: &self.prefixes,
            window: self.window,
        })?;
        self.control(Kind::Subscribe, payload).await
    }

    async fn control(&self, kind: Kind, payload: Vec<u8>) -> Result<(), ServiceError> {
        let service = &self.service;
        let n = service
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut envelope = service.envelope(&format!("{}-durable-{n}", service.session), "");
        envelope.kind = kind;
        // A subscribe names the deliveries' topic; anything else keeps the
        // service's own reply topic, the only other a node with keys takes.
        if kind == Kind::Subscribe {
            self.topic.clone_into(&mut envelope.reply_to);
        }
        service
            .send(&Message::new(envelope, Bytes::from(payload)))
            .await
    }

    /// The next message, in order, each once; `None` when the connection
    /// closed. A refusal of the subscription (a prefix the service may not
    /// read, say) is an error.
    pub async fn next(&mut self) -> Result<Option<Delivery>, ServiceError> {
        loop {
            let Some(published) = self.subscription.next().await else {
                return Ok(None);
            };
            let Some((seq, topic)) = self.parse(&published) else {
                // The node's answer to a subscribe sent again: deliveries
                // go on after what it has acknowledged (past anything its
                // retention dropped meanwhile).
                if published.topic == self.topic
                    && published.envelope.kind == Kind::Accepted
                    && let Ok(acked) = zmanager_sdk::decode::<u64>(&published.payload)
                {
                    self.last = self.last.max(acked);
                    self.resyncing = false;
                    continue;
                }
                if published.envelope.status == Status::Error
                    && let Some(error) = published.envelope.error
                {
                    return Err(ServiceError::Failed {
                        key: String::new(),
                        error,
                    });
                }
                continue;
            };
            if seq <= self.last {
                continue; // sent again after a resubscribe: had it
            }
            if seq > self.last + 1 {
                // One went missing on the way: all of it again, from what
                // is not acknowledged (once: the rest of what was on the
                // way is as late).
                if !self.resyncing {
                    tracing::debug!(name = %self.name, expected = self.last + 1, got = seq, "a gap in a durable subscription; subscribing again");
                    self.resyncing = true;
                    self.send_subscribe().await?;
                }
                continue;
            }
            self.last = seq;
            self.resyncing = false;
            return Ok(Some(Delivery {
                seq,
                topic,
                envelope: published.envelope,
                payload: published.payload,
            }));
        }
    }

    /// `SEQ~TOPIC` after the subscription's topic.
    fn parse(&self, published: &Published) -> Option<(u64, String)> {
        let rest = published.topic.strip_prefix(&self.topic)?;
        let (seq, topic) = rest.split_once('~')?;
        Some((seq.parse().ok()?, topic.to_owned()))
    }

    /// Acknowledges everything up to `seq`: the node forgets it, and sends
    /// more as the window allows.
    pub async fn ack(&self, seq: u64) -> Result<(), ServiceError> {
        #[derive(serde::Serialize)]
        struct Ack<'a> {
            name: &'a str,
            seq: u64,
        }
        let payload = rmp_serde::to_vec_named(&Ack {
            name: &self.name,
            seq,
        })?;
        self.control(Kind::Ack, payload).await
    }

    /// Returns once every acknowledgement sent before has reached the node
    /// (a ping's round trip behind them): call it before exiting, or the
    /// last ones may be lost with the process, and their messages sent
    /// again next time.
    pub async fn flush(&self) -> Result<(), ServiceError> {
        self.service
            .ping(self.service.options.handshake_timeout)
            .await
    }

    /// Deletes the subscription on the node: what it kept is gone.
    pub async fn delete(self) -> Result<(), ServiceError> {
        #[derive(serde::Serialize)]
        struct Delete<'a> {
            name: &'a str,
            prefixes: [String; 0],
        }
        let payload = rmp_serde::to_vec_named(&Delete {
            name: &self.name,
            prefixes: [],
        })?;
        self.control(Kind::Subscribe, payload).await
    }
}
