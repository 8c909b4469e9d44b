//! The Rust client for services: push requests into flows and await their
//! results; subscribe to topics.
//!
//! A [`Service`] has its own id and its own reply topic
//! (`@reply~<id>~`), so it receives the results of its own requests and
//! nobody else's (the DigitalPy bug #89 this avoids: every subscriber of a
//! flow receiving every response). On connect it proves its subscription
//! is live with a ping round trip before it sends anything, because a ZeroMQ
//! subscription takes a moment to reach the publisher.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zmanager::service::ServiceError> {
//! use zmanager::service::{Service, ServiceOptions};
//!
//! let service = Service::connect(ServiceOptions::local("quickstart")).await?;
//! let reply = service.request("Greeting", &serde_json::json!({"name": "ada"})).await?;
//! let value: serde_json::Value = reply.decode()?;
//! println!("{value}");
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinHandle;
use zeromq::{PushSocket, Socket, SocketOptions, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::config::Endpoints;
use crate::envelope::{Envelope, ErrorInfo, Kind, Status, now_us};
use crate::topic::Topic;
use crate::wire::{self, Message};

/// Where and how a service connects.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The Subject's intake endpoint (PUSH connects here).
    pub intake: String,
    /// The Integration Manager's endpoint (SUB connects here).
    pub publish: String,
    /// A readable name; the service id is this plus a random suffix.
    pub name: String,
    /// Most requests awaiting their results at once; more wait their turn.
    pub max_in_flight: usize,
    /// How long to wait for the subscription handshake.
    pub handshake_timeout: Duration,
}

impl ServiceOptions {
    /// The node's default endpoints on this machine.
    pub fn local(name: &str) -> Self {
        Self::with_endpoints(name, &Endpoints::default())
    }

    pub fn with_endpoints(name: &str, endpoints: &Endpoints) -> Self {
        Self {
            intake: endpoints.intake.clone(),
            publish: endpoints.publish.clone(),
            name: name.to_owned(),
            max_in_flight: 1024,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

/// What can go wrong for a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("service name {0:?} must be letters, digits, `_`, `-` and `.`")]
    Name(String),
    #[error("cannot connect to {endpoint}: {source}")]
    Connect {
        endpoint: String,
        #[source]
        source: zeromq::ZmqError,
    },
    #[error("no ping came back from the node within {0:?}: is it running at these endpoints?")]
    Handshake(Duration),
    #[error("the connection to the node is closed")]
    Closed,
    #[error("the payload does not encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("the result payload does not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("{name} ({code}) at `{key}`: {message}", code = u16::from(.error.code), name = .error.name, message = .error.message)]
    Failed { key: String, error: ErrorInfo },
}

/// A successful result.
#[derive(Debug, Clone)]
pub struct Reply {
    pub envelope: Envelope,
    pub payload: Bytes,
}

impl Reply {
    /// The payload decoded as `T`.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ServiceError> {
        Ok(zmanager_sdk::decode(&self.payload)?)
    }
}

type Pending = Arc<Mutex<HashMap<String, oneshot::Sender<Message>>>>;

fn lock(pending: &Pending) -> MutexGuard<'_, HashMap<String, oneshot::Sender<Message>>> {
    pending.lock().unwrap_or_else(PoisonError::into_inner)
}

/// A connected service.
#[derive(Debug)]
pub struct Service {
    id: String,
    reply_to: String,
    push: mpsc::Sender<ZmqMessage>,
    pending: Pending,
    permits: Arc<Semaphore>,
    counter: AtomicU64,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Service {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Removes a request's entry if its future is dropped before the result.
struct PendingGuard<'a> {
    pending: &'a Pending,
    id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        lock(self.pending).remove(&self.id);
    }
}

impl Service {
    /// Connects to a node and completes the subscription handshake.
    pub async fn connect(options: ServiceOptions) -> Result<Self, ServiceError> {
        if options.name.is_empty() || !options.name.chars().all(crate::action_key::is_field_char) {
            return Err(ServiceError::Name(options.name));
        }
        let id = format!("{}-{}", options.name, random_suffix());
        let reply_to = format!("@reply~{id}~");

        let mut sub = SubSocket::with_options(connect_options(options.handshake_timeout));
        sub.connect(&options.publish)
            .await
            .map_err(|source| ServiceError::Connect {
                endpoint: options.publish.clone(),
                source,
            })?;
        sub.subscribe(&reply_to)
            .await
            .map_err(|source| ServiceError::Connect {
                endpoint: options.publish.clone(),
                source,
            })?;
        let mut push = PushSocket::with_options(connect_options(options.handshake_timeout));
        push.connect(&options.intake)
            .await
            .map_err(|source| ServiceError::Connect {
                endpoint: options.intake.clone(),
                source,
            })?;

        let pending: Pending = Arc::default();
        let (push_tx, push_rx) = mpsc::channel(256);
        let tasks = vec![
            tokio::spawn(push_loop(push, push_rx)),
            tokio::spawn(sub_loop(sub, Arc::clone(&pending))),
        ];
        let service = Self {
            id,
            reply_to,
            push: push_tx,
            pending,
            permits: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            counter: AtomicU64::new(0),
            tasks,
        };
        service.handshake(options.handshake_timeout).await?;
        Ok(service)
    }

    /// This service's id (the `service` field of its requests).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The topic this service's results are published on.
    pub fn reply_to(&self) -> &str {
        &self.reply_to
    }

    /// Pings until the node publishes a ping back on our reply topic.
    async fn handshake(&self, limit: Duration) -> Result<(), ServiceError> {
        let id = format!("{}-ping", self.id);
        let (tx, mut rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        let _guard = PendingGuard {
            pending: &self.pending,
            id: id.clone(),
        };
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut ping = self.envelope(&id, "");
            ping.kind = Kind::Ping;
            self.send(Message::new(ping, Bytes::from_static(&[0xc0])))
                .await?;
            let wait = tokio::time::sleep(Duration::from_millis(100));
            tokio::select! {
                answer = &mut rx => return answer.map(|_| ()).map_err(|_| ServiceError::Closed),
                () = wait => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::Handshake(limit));
            }
        }
    }

    fn envelope(&self, id: &str, flow: &str) -> Envelope {
        let mut envelope = Envelope::request(id, flow);
        envelope.service.clone_from(&self.id);
        envelope.reply_to.clone_from(&self.reply_to);
        envelope.created_us = now_us();
        envelope
    }

    async fn send(&self, message: Message) -> Result<(), ServiceError> {
        let topic = Topic {
            flow: message.envelope.flow.clone(),
            ..Topic::default()
        };
        let frames = wire::topic_message(&topic.to_string(), &message);
        self.push
            .send(frames)
            .await
            .map_err(|_| ServiceError::Closed)
    }

    /// Pushes `payload` (any serde value, sent as MessagePack) into `flow`
    /// and waits for the flow's result.
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        flow: &str,
        payload: &T,
    ) -> Result<Reply, ServiceError> {
        let bytes = rmp_serde::to_vec_named(payload)?;
        self.request_bytes(flow, Bytes::from(bytes)).await
    }

    /// Like [`Service::request`], with a payload already in MessagePack.
    pub async fn request_bytes(&self, flow: &str, payload: Bytes) -> Result<Reply, ServiceError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError::Closed)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.id);
        let (tx, rx) = oneshot::channel();
        lock(&self.pending).insert(id.clone(), tx);
        let _guard = PendingGuard {
            pending: &self.pending,
            id: id.clone(),
        };
        self.send(Message::new(self.envelope(&id, flow), payload))
            .await?;
        let result = rx.await.map_err(|_| ServiceError::Closed)?;
        match (result.envelope.status, result.envelope.error.clone()) {
            (Status::Error, Some(error)) => Err(ServiceError::Failed {
                key: result.envelope.key,
                error,
            }),
            _ => Ok(Reply {
                envelope: result.envelope,
                payload: result.payload,
            }),
        }
    }
}

/// Socket options that give up connecting after `limit` (zmq.rs retries for
/// 30 s by default).
fn connect_options(limit: Duration) -> SocketOptions {
    let mut options = SocketOptions::default();
    options.connect_timeout(limit);
    options
}

async fn push_loop(mut socket: PushSocket, mut rx: mpsc::Receiver<ZmqMessage>) {
    while let Some(frames) = rx.recv().await {
        if let Err(e) = socket.send(frames).await {
            tracing::warn!(error = %e, "service cannot push to the node");
        }
    }
}

async fn sub_loop(mut socket: SubSocket, pending: Pending) {
    loop {
        let frames = match socket.recv().await {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "service subscription closed");
                return;
            }
        };
        let message = match wire::decode_topic_message(&frames) {
            Ok((_, message)) => message,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable message on the reply topic");
                continue;
            }
        };
        let waiter = lock(&pending).remove(&message.envelope.id);
        match waiter {
            Some(tx) => {
                let _ = tx.send(message);
            }
            None => {
                tracing::debug!(id = %message.envelope.id, "result for no waiting request (duplicate or abandoned)")
            }
        }
    }
}

/// 16 hex digits, different per call and per process.
fn random_suffix() -> String {
    use std::hash::{BuildHasher, Hasher};
    static CALLS: AtomicU64 = AtomicU64::new(0);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u64(now_us());
    hasher.write_u32(std::process::id());
    hasher.write_u64(CALLS.fetch_add(1, Ordering::Relaxed));
    format!("{:016x}", hasher.finish())
}

/// A message published by the Integration Manager.
#[derive(Debug, Clone)]
pub struct Published {
    pub topic: String,
    pub envelope: Envelope,
    pub payload: Bytes,
}

/// A subscription to topic prefixes, as a stream of [`Published`] messages.
///
/// Subscriptions reach the publisher a moment after [`Subscription::connect`]
/// returns; messages published before that are not received (ZeroMQ's
/// "slow joiner").
#[derive(Debug)]
pub struct Subscription {
    rx: mpsc::Receiver<Published>,
    task: JoinHandle<()>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// Subscribes to every topic starting with one of `prefixes` (an empty
    /// prefix receives everything).
    pub async fn connect(publish: &str, prefixes: &[String]) -> Result<Self, ServiceError> {
        let mut sub = SubSocket::new();
        let connect_error = |source| ServiceError::Connect {
            endpoint: publish.to_owned(),
            source,
        };
        sub.connect(publish).await.map_err(connect_error)?;
        for prefix in prefixes {
            sub.subscribe(prefix).await.map_err(connect_error)?;
        }
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            while let Ok(frames) = sub.recv().await {
                let published = match wire::decode_topic_message(&frames) {
                    Ok((topic, message)) => Published {
                        topic: String::from_utf8_lossy(&topic).into_owned(),
                        envelope: message.envelope,
                        payload: message.payload,
                    },
                    Err(e) => {
                        tracing::warn!(error = %e, "undecodable published message");
                        continue;
                    }
                };
                if tx.send(published).await.is_err() {
                    return;
                }
            }
        });
        Ok(Self { rx, task })
    }

    /// The next published message; `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<Published> {
        self.rx.recv().await
    }
}
