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
//!
//! The node keeps subscriptions in memory: one that restarted has lost
//! them, and libzmq reconnects without a word. So the subscriber also
//! subscribes again when nothing came for [`RESUBSCRIBE_IDLE`] and when
//! an ack is refused; the `accepted` of a subscription made afresh has
//! another `accepted_us`, and the numbering starts over from it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Published, Service, ServiceError, Subscription};
use crate::wire::Message;
use crate::wire::envelope::{Envelope, Kind, Status};

/// How long [`DurableSubscription::next`] waits with nothing coming before
/// it subscribes again (the node answers, and sends again what is not
/// acknowledged; a node that restarted makes the subscription afresh).
pub const RESUBSCRIBE_IDLE: Duration = Duration::from_secs(2);

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
    /// When the node made the subscription (the `accepted_us` of its
    /// `accepted`): another value is another subscription.
    made_us: u64,
    /// The id of the last subscribe sent: a refusal with it refuses the
    /// subscription; one with another id refuses an ack.
    subscribe_id: String,
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
            made_us: 0,
            subscribe_id: String::new(),
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
                        self.made_us = published.envelope.accepted_us;
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

    async fn send_subscribe(&mut self) -> Result<(), ServiceError> {
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
        self.subscribe_id = self.control(Kind::Subscribe, payload).await?;
        Ok(())
    }

    /// Sends a `subscribe` or an `ack`; returns its id.
    async fn control(&self, kind: Kind, payload: Vec<u8>) -> Result<String, ServiceError> {
        let service = &self.service;
        let n = service
            .counter
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let id = format!("{}-durable-{n}", service.session);
        let mut envelope = service.envelope(&id, "");
        envelope.kind = kind;
        // A subscribe names the deliveries' topic; anything else keeps the
        // service's own reply topic, the only other a node with keys takes.
        if kind == Kind::Subscribe {
            self.topic.clone_into(&mut envelope.reply_to);
        }
        service
            .send(&Message::new(envelope, Bytes::from(payload)))
            .await?;
        Ok(id)
    }

    /// The next message, in order, each once; `None` when the connection
    /// closed. A refusal of the subscription (a prefix the service may not
    /// read, say) is an error.
    pub async fn next(&mut self) -> Result<Option<Delivery>, ServiceError> {
        loop {
            let published =
                match tokio::time::timeout(RESUBSCRIBE_IDLE, self.subscription.next()).await {
                    Ok(Some(published)) => published,
                    Ok(None) => return Ok(None),
                    Err(_) => {
                        // Quiet: the node may have restarted and lost the
                        // subscription. Its answer says.
                        self.send_subscribe().await?;
                        continue;
                    }
                };
            let Some((seq, topic)) = self.parse(&published) else {
                if published.topic == self.topic {
                    self.on_word(published).await?;
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

    /// The node's word on the subscription's topic that is not a delivery:
    /// the `accepted` of a subscribe sent again, or a refusal.
    async fn on_word(&mut self, published: Published) -> Result<(), ServiceError> {
        let envelope = published.envelope;
        if envelope.kind == Kind::Accepted
            && let Ok(acked) = zmanager_sdk::decode::<u64>(&published.payload)
        {
            if envelope.accepted_us == self.made_us {
                // Deliveries go on after what it has acknowledged (past
                // anything its retention dropped meanwhile).
                self.last = self.last.max(acked);
            } else {
                tracing::info!(name = %self.name, from = acked, "the node made the durable subscription afresh (did it restart?)");
                self.made_us = envelope.accepted_us;
                self.last = acked;
            }
            self.resyncing = false;
            return Ok(());
        }
        let Some(error) = envelope.error.filter(|_| envelope.status == Status::Error) else {
            return Ok(()); // a late ping echo
        };
        if envelope.id == self.subscribe_id {
            return Err(ServiceError::Failed {
                key: String::new(),
                error,
            });
        }
        // An ack refused: the node does not know the subscription (it
        // restarted). Subscribing again makes it afresh.
        if !self.resyncing {
            tracing::debug!(name = %self.name, error = %error.message, "an ack refused; subscribing again");
            self.resyncing = true;
            self.send_subscribe().await?;
        }
        Ok(())
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
        self.control(Kind::Ack, payload).await.map(drop)
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
        self.control(Kind::Subscribe, payload).await.map(drop)
    }
}
