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
//! A request has two steps, as Dynflow's Accepted/Finished: [`Service::submit`]
//! resolves once the node has taken the request (and, with the journal
//! on, recorded it on disk: from then on it survives a crash of the node),
//! and [`Submitted::finished`] once its result arrives. Until accepted, the
//! request is pushed again (same id) every `ack_after`; the node runs an id
//! once, so resending is safe. [`Service::request`] does both.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zmanager_client::ServiceError> {
//! use zmanager_client::{Service, ServiceOptions};
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

use crate::keys::ClientKeys;
use crate::registry::{self, Registration, ServiceInfo};
use crate::transport::{self, AsyncSocket, Peer};
use crate::wire::envelope::{Envelope, ErrorInfo, Kind, Status, now_us};
use crate::wire::error_code::ErrorCode;
use crate::wire::topic::{Topic, is_field_char, reply_topic};
use crate::wire::{self, Message};

pub mod durable;
pub mod steps;

pub use durable::{Delivery, DurableSubscription, RESUBSCRIBE_IDLE};
pub use steps::{StepError, StepServer, TAKE_EVERY};

/// A node's intake endpoint, by default (`[endpoints] intake`).
pub const DEFAULT_INTAKE: &str = "tcp://127.0.0.1:19030";
/// A node's publish endpoint, by default (`[endpoints] publish`).
pub const DEFAULT_PUBLISH: &str = "tcp://127.0.0.1:19034";

/// The two endpoints of a node a service connects to. The node's own
/// configuration (`zmanager::node::config::Endpoints`, which has the
/// workers' too) converts into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoints {
    /// The Subject's intake (PUSH connects here).
    pub intake: String,
    /// The Integration Manager's publisher (SUB connects here).
    pub publish: String,
}

impl Default for Endpoints {
    /// A node on its defaults, on this machine.
    fn default() -> Self {
        Self {
            intake: DEFAULT_INTAKE.to_owned(),
            publish: DEFAULT_PUBLISH.to_owned(),
        }
    }
}

impl From<&Endpoints> for Endpoints {
    fn from(endpoints: &Endpoints) -> Self {
        endpoints.clone()
    }
}

/// Where and how a service connects.
#[derive(Debug, Clone)]
pub struct ServiceOptions {
    /// The Subject's intake endpoint (PUSH connects here).
    pub intake: String,
    /// The Integration Manager's endpoint (SUB connects here).
    pub publish: String,
    /// A readable name; the service id is this plus a random suffix,
    /// unless `id` is set.
    pub name: String,
    /// The service id exactly, when it must be a known one: the id a
    /// policy names (`Iam`), or the one bound to the service's key when
    /// the node has security on. Message ids stay unique across restarts
    /// all the same (they carry a random part).
    pub id: Option<String>,
    /// Most requests awaiting their results at once; more wait their turn.
    pub max_in_flight: usize,
    /// How long to wait for the subscription handshake.
    pub handshake_timeout: Duration,
    /// A request with no result after this long is sent again, with the same
    /// id (the node runs it once: see `docs/reliability.md`), after checking
    /// the connection and rebuilding it if the node does not answer.
    pub retry_after: Duration,
    /// A request not acknowledged as accepted after this long is sent
    /// again (same id), after the same connection check.
    pub ack_after: Duration,
    /// The node's operator cookie (`zmanager::security::operator`), sent with every
    /// request: for the node's own replay tools, whose requests may resume
    /// at any step of their flow. `None` for services.
    pub operator: Option<String>,
    /// CURVE keys, for a node with `[security]`: this service's pair (its
    /// public key listed under `[[security.service]]` with `id`) and the
    /// node's public key. `None`: no keys (a node on loopback or ipc).
    pub keys: Option<ClientKeys>,
    /// Other nodes on the same journal, standbys of the one at `intake`
    /// and `publish` (`docs/deployment.md`): when the node in use does not
    /// answer, the service connects to the next one, in turn. Requests
    /// waiting for their result are sent again there (same ids), and the
    /// new active node answers them. Subscriptions ([`Service::subscribe`])
    /// stay on the node they were made on.
    pub standbys: Vec<Endpoints>,
}

impl ServiceOptions {
    /// The node's default endpoints on this machine.
    pub fn local(name: &str) -> Self {
        Self::with_endpoints(name, Endpoints::default())
    }

    /// The node at `endpoints` (an [`Endpoints`], or a node's
    /// configuration of them).
    pub fn with_endpoints(name: &str, endpoints: impl Into<Endpoints>) -> Self {
        let Endpoints { intake, publish } = endpoints.into();
        Self {
            intake,
            publish,
            name: name.to_owned(),
            id: None,
            max_in_flight: 1024,
            handshake_timeout: Duration::from_secs(10),
            retry_after: Duration::from_secs(5),
            ack_after: Duration::from_secs(1),
            operator: None,
            keys: None,
            standbys: Vec::new(),
        }
    }

    /// The nodes to use, in turn: the first one, then its standbys.
    fn nodes(&self) -> Vec<Endpoints> {
        let first = Endpoints {
            intake: self.intake.clone(),
            publish: self.publish.clone(),
        };
        std::iter::once(first)
            .chain(self.standbys.iter().cloned())
            .collect()
    }
}

/// What can go wrong for a service.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("service name {0:?} must be letters, digits, `_`, `-` and `.`")]
    Name(String),
    // The reason is the source (printed after it by `{:#}`), not repeated.
    #[error("cannot connect to {endpoint}")]
    Connect {
        endpoint: String,
        #[source]
        source: transport::SocketError,
    },
    #[error(
        "no ping came back from the node within {0:?}: is it running at these endpoints? (With keys: does it list this service's public key, and is the server key its own?)"
    )]
    Handshake(Duration),
    #[error("the connection to the node is closed")]
    Closed,
    #[error("the payload does not encode: {0}")]
    Encode(#[from] rmp_serde::encode::Error),
    #[error("the result payload does not decode: {0}")]
    Decode(#[from] rmp_serde::decode::Error),
    #[error("{}", describe_failure(.key, .error))]
    Failed { key: String, error: ErrorInfo },
}

/// `7 (action_failed) at `?Flow?step`: message`, or without the step when
/// the error is not about one (an unknown flow, say).
pub fn describe_failure(key: &str, error: &ErrorInfo) -> String {
    let code = u16::from(error.code);
    if key.is_empty() {
        format!("{code} ({}): {}", error.name, error.message)
    } else {
        format!("{code} ({}) at `{key}`: {}", error.name, error.message)
    }
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

/// Who waits for what, by message id.
#[derive(Debug)]
struct Waiter {
    /// Told when the node acknowledges the request (taken on first use).
    accepted: Option<oneshot::Sender<()>>,
    /// Given the result (or the ping echoed back).
    done: oneshot::Sender<Message>,
}

type Pending = Arc<Mutex<HashMap<String, Waiter>>>;

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One connection's sockets: the PUSH and SUB tasks; dropping it stops them.
#[derive(Debug)]
struct Link {
    push: mpsc::Sender<Vec<Bytes>>,
    tasks: [JoinHandle<()>; 2],
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// How a service's sockets connect: results may be as large as a
/// worker's ([`wire::RESULT_FRAME_BYTES`]), nothing larger is taken.
fn peer(keys: Option<&ClientKeys>) -> Peer {
    Peer {
        max_frame_bytes: wire::RESULT_FRAME_BYTES,
        send_hwm: 1000,
        receive_hwm: 10_000,
        linger: Duration::ZERO,
        identity: None,
        curve: keys.cloned(),
    }
}

/// A SUB socket on `publish` subscribed to `prefixes`.
fn subscriber(
    publish: &str,
    keys: Option<&ClientKeys>,
    prefixes: &[String],
) -> Result<AsyncSocket, ServiceError> {
    let connect_error = |source| ServiceError::Connect {
        endpoint: publish.to_owned(),
        source,
    };
    let sub = transport::connect(zmq::SUB, publish, &peer(keys)).map_err(connect_error)?;
    for prefix in prefixes {
        sub.get_ref()
            .set_subscribe(prefix.as_bytes())
            .map_err(|e| connect_error(transport::SocketError::from(e)))?;
    }
    Ok(sub)
}

impl Link {
    /// Sockets to the node at `node`.
    fn open(
        options: &ServiceOptions,
        node: &Endpoints,
        reply_to: &str,
        pending: &Pending,
    ) -> Result<Self, ServiceError> {
        let keys = options.keys.as_ref();
        let sub = subscriber(&node.publish, keys, &[reply_to.to_owned()])?;
        let push = transport::connect(zmq::PUSH, &node.intake, &peer(keys)).map_err(|source| {
            ServiceError::Connect {
                endpoint: node.intake.clone(),
                source,
            }
        })?;
        let (push_tx, push_rx) = mpsc::channel(256);
        Ok(Self {
            push: push_tx,
            tasks: [
                tokio::spawn(push_loop(node.intake.clone(), push, push_rx)),
                tokio::spawn(sub_loop(sub, Arc::clone(pending))),
            ],
        })
    }
}

/// A connected service.
#[derive(Debug)]
pub struct Service {
    id: String,
    /// Unique to this connection: the start of its message ids and of its
    /// reply topic (the service id itself when it was not given).
    session: String,
    reply_to: String,
    options: ServiceOptions,
    /// The first node and its standbys; `link` is to `nodes[at]`.
    nodes: Vec<Endpoints>,
    at: std::sync::atomic::AtomicUsize,
    link: Mutex<Link>,
    /// Bumped each time the connection is rebuilt.
    generation: AtomicU64,
    /// The publisher of the node in use: the subscriptions made through
    /// [`Service::subscribe`] follow it to the next node.
    publisher: tokio::sync::watch::Sender<String>,
    /// Held while checking or rebuilding the connection.
    healing: tokio::sync::Mutex<()>,
    pending: Pending,
    permits: Arc<Semaphore>,
    counter: AtomicU64,
}

/// Removes a request's entry if its future is dropped before the result.
#[derive(Debug)]
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
        if options.name.is_empty() || !options.name.chars().all(is_field_char) {
            return Err(ServiceError::Name(options.name));
        }
        if let Some(id) = &options.id
            && (id.is_empty() || !id.chars().all(is_field_char))
        {
            return Err(ServiceError::Name(id.clone()));
        }
        let session = format!("{}-{}", options.name, random_suffix());
        let id = options.id.clone().unwrap_or_else(|| session.clone());
        // A node with keys publishes a service's results on its id's topic
        // only; two connections of one id each take the results of their
        // own requests from it (ids start with the session).
        let reply_to = reply_topic(&id);
        let pending: Pending = Arc::default();
        let nodes = options.nodes();
        let link = Link::open(&options, &nodes[0], &reply_to, &pending)?;
        let publisher = tokio::sync::watch::Sender::new(nodes[0].publish.clone());
        let service = Self {
            id,
            session,
            reply_to,
            nodes,
            at: std::sync::atomic::AtomicUsize::new(0),
            link: Mutex::new(link),
            generation: AtomicU64::new(0),
            publisher,
            healing: tokio::sync::Mutex::new(()),
            pending,
            permits: Arc::new(Semaphore::new(options.max_in_flight.max(1))),
            counter: AtomicU64::new(0),
            options,
        };
        // The first node that answers: with standbys, the active one.
        let mut tried = 0;
        loop {
            let limit = service.options.handshake_timeout;
            match service.ping(limit).await {
                Ok(()) => return Ok(service),
                Err(e) if tried + 1 >= service.nodes.len() => return Err(e),
                Err(_) => {
                    tried += 1;
                    service.move_on()?;
                }
            }
        }
    }

    /// Connects to the next node in turn (no-op with one node).
    fn move_on(&self) -> Result<(), ServiceError> {
        if self.nodes.len() < 2 {
            return Ok(());
        }
        let next = (self.at.load(Ordering::Acquire) + 1) % self.nodes.len();
        let node = &self.nodes[next];
        let link = Link::open(&self.options, node, &self.reply_to, &self.pending)?;
        *lock(&self.link) = link;
        self.at.store(next, Ordering::Release);
        self.generation.fetch_add(1, Ordering::AcqRel);
        self.publisher.send_replace(node.publish.clone());
        tracing::warn!(service = %self.id, intake = %node.intake, "connecting to the next node");
        Ok(())
    }

    /// The node in use.
    fn node(&self) -> Endpoints {
        self.nodes[self.at.load(Ordering::Acquire) % self.nodes.len()].clone()
    }

    /// This service's id (the `service` field of its requests).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The topic this service's results are published on.
    pub fn reply_to(&self) -> &str {
        &self.reply_to
    }

    /// Subscribes to topic prefixes on the node's publisher — the topics of
    /// the `@PUBLISH` steps this service serves, say
    /// `ServiceManagement_GetServiceTopics~PUBLISH~`. Returns once the
    /// subscription is live: it pings the node on a topic of its own until
    /// the ping comes back on the new subscription (the slow-joiner
    /// handshake, as on connect).
    ///
    /// With standbys ([`ServiceOptions::standbys`]), the subscription moves
    /// with the service: when the service connects to the next node, the
    /// subscription subscribes to the same prefixes there. What that node
    /// published before the subscription reached it is not received, as
    /// for any new subscription.
    pub async fn subscribe(&self, prefixes: &[String]) -> Result<Subscription, ServiceError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // The ping comes back on a topic of this service's: with keys, the
        // node takes no other reply topic than its own.
        let probe = if self.options.keys.is_some() {
            self.reply_to.clone()
        } else {
            format!("@probe~{}-{n}~", self.session)
        };
        let mut all = prefixes.to_vec();
        all.push(probe.clone());
        let mut subscription =
            Subscription::following(self.publisher.subscribe(), self.options.keys.clone(), all)?;
        let limit = self.options.handshake_timeout;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let mut ping = self.envelope(&probe, "");
            ping.kind = Kind::Ping;
            probe.clone_into(&mut ping.reply_to);
            self.send(&Message::new(ping, Bytes::from_static(&[0xc0])))
                .await?;
            let wait = tokio::time::sleep(Duration::from_millis(100).min(limit));
            tokio::select! {
                got = subscription.rx.recv() => match got {
                    Some(p) if p.topic == probe => break,
                    Some(_) => {}
                    None => return Err(ServiceError::Closed),
                },
                () = wait => {}
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ServiceError::Handshake(limit));
            }
        }
        // The probe's topic is not passed on, unless asked for.
        if !prefixes.iter().any(|p| probe.starts_with(p.as_str())) {
            subscription.skip = Some(probe);
        }
        Ok(subscription)
    }

    /// Registers this service with the node's service management: the
    /// topics it subscribes to and the flows it serves (what `zmanager
    /// services` lists). Registering again replaces both.
    pub async fn register(
        &self,
        topics: &[String],
        flows: &[String],
    ) -> Result<ServiceInfo, ServiceError> {
        let registration = Registration {
            id: self.id.clone(),
            topics: topics.to_vec(),
            flows: flows.to_vec(),
            topic: String::new(),
        };
        self.request(registry::REGISTER, &registration)
            .await?
            .decode()
    }

    /// Starts a background task that heartbeats every `every` (so the node
    /// lists this service as up) and registers again with `topics` and
    /// `flows` if the node does not know it (it restarted). Abort the
    /// handle to stop it (the task holds an `Arc` of the service).
    pub fn heartbeat_every(
        self: &Arc<Self>,
        every: Duration,
        topics: Vec<String>,
        flows: Vec<String>,
    ) -> JoinHandle<()> {
        let service = Arc::clone(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let beat = service.request(registry::HEARTBEAT, &());
                match tokio::time::timeout(every.max(Duration::from_secs(1)), beat).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(ServiceError::Failed { error, .. }))
                        if error.code == ErrorCode::UnknownService =>
                    {
                        if let Err(e) = service.register(&topics, &flows).await {
                            tracing::warn!(service = %service.id, error = %e, "cannot register again");
                        }
                    }
                    Ok(Err(e)) => {
                        tracing::warn!(service = %service.id, error = %e, "heartbeat failed")
                    }
                    Err(_) => tracing::warn!(service = %service.id, "heartbeat: no answer in time"),
                }
            }
        })
    }

    /// Answers a message published at a `@PUBLISH` step: the flow suspended
    /// at the `@ASYNC` step after it resumes with `payload`, and its result
    /// goes to the service that started it. If the node refuses the answer
    /// (no such suspended flow: answered already, or timed out) it publishes
    /// an `unknown_async` error result on this service's reply topic; this
    /// method does not wait for it.
    pub async fn answer<T: Serialize + ?Sized>(
        &self,
        published: &Published,
        payload: &T,
    ) -> Result<(), ServiceError> {
        let bytes = rmp_serde::to_vec_named(payload)?;
        let envelope = self.answer_envelope(published);
        self.send(&Message::new(envelope, Bytes::from(bytes))).await
    }

    /// Answers a message published at a `@PUBLISH` step with an error: the
    /// suspended flow ends with this error result.
    pub async fn answer_error(
        &self,
        published: &Published,
        code: ErrorCode,
        message: impl Into<String>,
    ) -> Result<(), ServiceError> {
        let envelope = self.answer_envelope(published).into_error(code, message);
        self.send(&Message::new(envelope, Bytes::from_static(&[0xc0])))
            .await
    }

    fn answer_envelope(&self, published: &Published) -> Envelope {
        let mut envelope = self.envelope(&published.envelope.id, &published.envelope.flow);
        envelope.kind = Kind::Result;
        envelope.origin.clone_from(&published.envelope.service);
        envelope
    }

    /// Pings until the node publishes a ping back on our reply topic, or
    /// `limit` passes.
    async fn ping(&self, limit: Duration) -> Result<(), ServiceError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-ping-{n}", self.session);
        let (tx, mut rx) = oneshot::channel();
        let waiter = Waiter {
            accepted: None,
            done: tx,
        };
        lock(&self.pending).insert(id.clone(), waiter);
        let _guard = PendingGuard {
            pending: &self.pending,
            id: id.clone(),
        };
        // Bounded as a whole: a send waits while the socket is full, which
        // it stays while the node is down.
        let pinging = async {
            loop {
                let mut ping = self.envelope(&id, "");
                ping.kind = Kind::Ping;
                self.send(&Message::new(ping, Bytes::from_static(&[0xc0])))
                    .await?;
                let wait = tokio::time::sleep(Duration::from_millis(100).min(limit));
                tokio::select! {
                    answer = &mut rx => return answer.map(|_| ()).map_err(|_| ServiceError::Closed),
                    () = wait => {}
                }
            }
        };
        tokio::time::timeout(limit, pinging)
            .await
            .unwrap_or(Err(ServiceError::Handshake(limit)))
    }

    /// Called when a request got no result in time: checks the connection
    /// with a ping and rebuilds it if the node does not answer (libzmq
    /// reconnects by itself; a fresh pair of sockets also drops whatever
    /// waited in the old ones for a node that is gone). Only one caller
    /// does it per connection generation.
    async fn heal(&self, seen: u64) {
        let _healing = self.healing.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            return;
        }
        if self.ping(Duration::from_secs(1)).await.is_ok() {
            return;
        }
        tracing::warn!(service = %self.id, "the node does not answer; reconnecting");
        // With standbys, to the next node: the one in use may be gone.
        let reconnected = if self.nodes.len() > 1 {
            self.move_on()
        } else {
            Link::open(&self.options, &self.node(), &self.reply_to, &self.pending).map(|link| {
                *lock(&self.link) = link;
                self.generation.fetch_add(1, Ordering::AcqRel);
            })
        };
        match reconnected {
            Ok(()) => {
                if let Err(e) = self.ping(self.options.handshake_timeout).await {
                    tracing::warn!(service = %self.id, error = %e, "reconnected, but no ping came back yet");
                }
            }
            Err(e) => tracing::warn!(service = %self.id, error = %e, "cannot reconnect yet"),
        }
    }

    fn envelope(&self, id: &str, flow: &str) -> Envelope {
        let mut envelope = Envelope::request(id, flow);
        envelope.service.clone_from(&self.id);
        envelope.reply_to.clone_from(&self.reply_to);
        envelope.created_us = now_us();
        if let Some(cookie) = &self.options.operator {
            envelope.operator.clone_from(cookie);
        }
        envelope
    }

    async fn send(&self, message: &Message) -> Result<(), ServiceError> {
        let topic = Topic {
            flow: message.envelope.flow.clone(),
            ..Topic::default()
        };
        let frames = wire::topic_frames(topic.to_string(), message);
        let push = lock(&self.link).push.clone();
        push.send(frames).await.map_err(|_| ServiceError::Closed)
    }

    /// Pushes `payload` (any serde value, sent as MessagePack) into `flow`
    /// and waits for the flow's result: [`Service::submit`], then
    /// [`Submitted::finished`]. Bound the wait with `tokio::time::timeout`
    /// if you need to.
    pub async fn request<T: Serialize + ?Sized>(
        &self,
        flow: &str,
        payload: &T,
    ) -> Result<Reply, ServiceError> {
        self.submit(flow, payload).await?.finished().await
    }

    /// Like [`Service::request`], with a payload already in MessagePack.
    pub async fn request_bytes(&self, flow: &str, payload: Bytes) -> Result<Reply, ServiceError> {
        self.request_bytes_after(flow, "", payload).await
    }

    /// Like [`Service::request_bytes`], starting the flow after the step
    /// whose key is `after` (empty: after the entry step, as usual).
    pub async fn request_bytes_after(
        &self,
        flow: &str,
        after: &str,
        payload: Bytes,
    ) -> Result<Reply, ServiceError> {
        self.submit_bytes_after(flow, after, payload)
            .await?
            .finished()
            .await
    }

    /// Pushes `payload` into `flow` and returns once the node has accepted
    /// the request (with the journal on: recorded it on disk). It is sent
    /// again (same id) every `ack_after` until then. A request the node
    /// refuses (an unknown flow, say) is not accepted: this returns on its
    /// error result, which [`Submitted::finished`] then gives.
    pub async fn submit<T: Serialize + ?Sized>(
        &self,
        flow: &str,
        payload: &T,
    ) -> Result<Submitted<'_>, ServiceError> {
        let bytes = rmp_serde::to_vec_named(payload)?;
        self.submit_bytes_after(flow, "", Bytes::from(bytes)).await
    }

    /// Like [`Service::submit`], with a payload already in MessagePack,
    /// starting the flow after the step whose key is `after` (empty: after
    /// the entry step).
    pub async fn submit_bytes_after(
        &self,
        flow: &str,
        after: &str,
        payload: Bytes,
    ) -> Result<Submitted<'_>, ServiceError> {
        self.submit_message(flow, after, "", payload).await
    }

    /// Like [`Service::submit`], into a flow ordered by `envelope`
    /// (`docs/ordering.md`): requests with the same `order_key` run one at
    /// a time, in the order the node accepts them. Wait for one's
    /// acceptance before submitting the next of its key if their order
    /// matters: two in flight at once may be accepted in either order.
    pub async fn submit_ordered<T: Serialize + ?Sized>(
        &self,
        flow: &str,
        order_key: &str,
        payload: &T,
    ) -> Result<Submitted<'_>, ServiceError> {
        let bytes = rmp_serde::to_vec_named(payload)?;
        self.submit_message(flow, "", order_key, Bytes::from(bytes))
            .await
    }

    /// Like [`Service::submit_bytes_after`], with an ordering key: a
    /// request pushed again as it was first accepted (a replay) carries
    /// its flow, the step it entered after, its `order_key` (needed by a
    /// flow ordered by `envelope`, ignored by others) and its payload.
    pub async fn submit_bytes_ordered(
        &self,
        flow: &str,
        after: &str,
        order_key: &str,
        payload: Bytes,
    ) -> Result<Submitted<'_>, ServiceError> {
        self.submit_message(flow, after, order_key, payload).await
    }

    async fn submit_message(
        &self,
        flow: &str,
        after: &str,
        order_key: &str,
        payload: Bytes,
    ) -> Result<Submitted<'_>, ServiceError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| ServiceError::Closed)?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", self.session);
        let (done, result) = oneshot::channel();
        let (accepted, mut acknowledged) = oneshot::channel();
        let waiter = Waiter {
            accepted: Some(accepted),
            done,
        };
        lock(&self.pending).insert(id.clone(), waiter);
        let guard = PendingGuard {
            pending: &self.pending,
            id: id.clone(),
        };
        let mut envelope = self.envelope(&id, flow);
        after.clone_into(&mut envelope.key);
        order_key.clone_into(&mut envelope.order_key);
        envelope.ack = true;
        let message = Message::new(envelope, payload);
        let mut submitted = Submitted {
            service: self,
            message,
            result,
            early: None,
            _guard: guard,
            _permit: permit,
        };
        loop {
            let seen = self.generation.load(Ordering::Acquire);
            self.send(&submitted.message).await?;
            tokio::select! {
                biased;
                // A result implies acceptance (it may overtake the ack).
                result = &mut submitted.result => {
                    submitted.early = Some(result.map_err(|_| ServiceError::Closed)?);
                    break;
                }
                acked = &mut acknowledged => {
                    acked.map_err(|_| ServiceError::Closed)?;
                    break;
                }
                () = tokio::time::sleep(self.options.ack_after) => {
                    tracing::debug!(%id, "not accepted yet: checking the connection and sending again");
                    self.heal(seen).await;
                }
            }
        }
        Ok(submitted)
    }
}

/// A request the node has accepted (or refused: then its error result is
/// already here); [`Submitted::finished`] waits for its result.
#[derive(Debug)]
pub struct Submitted<'a> {
    service: &'a Service,
    message: Message,
    result: oneshot::Receiver<Message>,
    /// The result, if it came before the acknowledgement.
    early: Option<Message>,
    _guard: PendingGuard<'a>,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

impl Submitted<'_> {
    /// The request's id (unique per service).
    pub fn id(&self) -> &str {
        &self.message.envelope.id
    }

    /// Waits for the result. If none comes within `retry_after` (a result
    /// lost while the node or the connection was down), the request is
    /// sent again with the same id: the node publishes the result again if
    /// it has it, or runs the request (at least once).
    pub async fn finished(self) -> Result<Reply, ServiceError> {
        match self.outcome().await? {
            Outcome::Done(reply) => Ok(reply),
            Outcome::Refused { key, error } | Outcome::Failed { key, error } => {
                Err(ServiceError::Failed { key, error })
            }
        }
    }

    /// Like [`Submitted::finished`], telling a request the node refused
    /// from one it accepted that then failed: what a replay needs to know
    /// (`zmanager dlq replay` marks a dead letter replayed only on
    /// [`Outcome::Done`]). Errors are the connection's only.
    pub async fn outcome(mut self) -> Result<Outcome, ServiceError> {
        let service = self.service;
        let result = match self.early.take() {
            Some(result) => result,
            None => loop {
                let seen = service.generation.load(Ordering::Acquire);
                tokio::select! {
                    result = &mut self.result => break result.map_err(|_| ServiceError::Closed)?,
                    () = tokio::time::sleep(service.options.retry_after) => {
                        tracing::debug!(id = %self.message.envelope.id, "no result yet: checking the connection and sending again");
                        service.heal(seen).await;
                        service.send(&self.message).await?;
                    }
                }
            },
        };
        Ok(Outcome::of(result))
    }
}

/// How a request ended ([`Submitted::outcome`]).
///
/// Not `#[non_exhaustive]`: a caller handles every way a request can end,
/// and a new one should fail its build, not fall into a catch-all arm.
#[derive(Debug, Clone)]
// One per request, moved once to its caller: boxing the success would add
// an allocation to every request to shrink the rarer errors.
#[allow(clippy::large_enum_variant)]
pub enum Outcome {
    /// A successful result.
    Done(Reply),
    /// The node refused the request on intake, before accepting it: it was
    /// never recorded nor run (an unknown flow or step, an ordered flow's
    /// request without its key, an unsupported version or kind). Such a
    /// result keeps the `accepted_us` the request was sent with, 0: the
    /// node sets it only when it accepts a request.
    Refused { key: String, error: ErrorInfo },
    /// The node accepted the request, and its flow ended in an error
    /// result (an action's error, a dead letter, a full queue…).
    Failed { key: String, error: ErrorInfo },
}

impl Outcome {
    /// The outcome a result message tells.
    pub fn of(result: Message) -> Self {
        let Message { envelope, payload } = result;
        match (envelope.status, envelope.error.clone()) {
            (Status::Error, Some(error)) if envelope.accepted_us == 0 => Outcome::Refused {
                key: envelope.key,
                error,
            },
            (Status::Error, Some(error)) => Outcome::Failed {
                key: envelope.key,
                error,
            },
            _ => Outcome::Done(Reply { envelope, payload }),
        }
    }
}

/// Owns the PUSH socket. libzmq reconnects it when the node restarts;
/// while the node is away, sends wait at the high-water mark. A send that
/// fails is dropped: its request's retry sends it again.
async fn push_loop(endpoint: String, mut socket: AsyncSocket, mut rx: mpsc::Receiver<Vec<Bytes>>) {
    while let Some(frames) = rx.recv().await {
        if let Err(e) = socket.send(frames.iter().map(Bytes::as_ref)).await {
            tracing::warn!(error = %e, %endpoint, "push failed");
        }
    }
}

async fn sub_loop(mut socket: AsyncSocket, pending: Pending) {
    loop {
        let frames = match socket.recv().await {
            Ok(frames) => frames,
            Err(e) => {
                tracing::warn!(error = %e, "service subscription closed");
                return;
            }
        };
        let message = match wire::decode_topic_frames(&frames) {
            Ok((_, message)) => message,
            Err(e) => {
                tracing::warn!(error = %e, "undecodable message on the reply topic");
                continue;
            }
        };
        if message.envelope.kind == Kind::Step {
            // A step for an instance of this service ([`Service::serve_steps`]),
            // on a topic under this one: not a result, whatever its id.
            continue;
        }
        if message.envelope.kind == Kind::Accepted {
            // One acknowledgement for many requests: their ids.
            let ids: Vec<String> = zmanager_sdk::decode(&message.payload)
                .unwrap_or_else(|_| vec![message.envelope.id.clone()]);
            let mut pending = lock(&pending);
            for id in ids {
                if let Some(ack) = pending.get_mut(&id).and_then(|w| w.accepted.take()) {
                    let _ = ack.send(());
                }
            }
            continue;
        }
        let waiter = lock(&pending).remove(&message.envelope.id);
        match waiter {
            Some(waiter) => {
                let _ = waiter.done.send(message);
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
    /// A topic of the handshake whose late copies are not returned.
    skip: Option<String>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Subscription {
    /// Subscribes to every topic starting with one of `prefixes` (an empty
    /// prefix receives everything), on a node without keys.
    pub fn connect(publish: &str, prefixes: &[String]) -> Result<Self, ServiceError> {
        Self::connect_with(publish, None, prefixes)
    }

    /// Like [`Subscription::connect`], with CURVE `keys` for a node with
    /// `[security]` (which applies only the subscriptions the key's
    /// service may read).
    pub fn connect_with(
        publish: &str,
        keys: Option<&ClientKeys>,
        prefixes: &[String],
    ) -> Result<Self, ServiceError> {
        let (_fixed, publisher) = tokio::sync::watch::channel(publish.to_owned());
        Self::following(publisher, keys.cloned(), prefixes.to_vec())
    }

    /// Subscribed to `prefixes` on the publisher `publisher` names, and on
    /// the next one each time it changes (a service moving to a standby).
    fn following(
        mut publisher: tokio::sync::watch::Receiver<String>,
        keys: Option<ClientKeys>,
        prefixes: Vec<String>,
    ) -> Result<Self, ServiceError> {
        let mut sub = subscriber(&publisher.borrow_and_update(), keys.as_ref(), &prefixes)?;
        let (tx, rx) = mpsc::channel(1024);
        let task = tokio::spawn(async move {
            // Once the sender is gone (a fixed publisher, or the service
            // dropped), only the socket is waited on.
            let mut moves = true;
            loop {
                let frames = tokio::select! {
                    frames = sub.recv() => match frames {
                        Ok(frames) => frames,
                        Err(_) => return,
                    },
                    changed = publisher.changed(), if moves => {
                        if changed.is_err() {
                            moves = false;
                            continue;
                        }
                        let publish = publisher.borrow_and_update().clone();
                        match subscriber(&publish, keys.as_ref(), &prefixes) {
                            Ok(next) => {
                                tracing::warn!(%publish, "subscription moved to the next node");
                                sub = next;
                            }
                            Err(e) => tracing::error!(%publish, error = %e, "cannot subscribe on the next node; still on the last one"),
                        }
                        continue;
                    }
                };
                let published = match wire::decode_topic_frames(&frames) {
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
        Ok(Self {
            rx,
            task,
            skip: None,
        })
    }

    /// The next published message; `None` when the subscription ended.
    pub async fn next(&mut self) -> Option<Published> {
        loop {
            let published = self.rx.recv().await?;
            if self.skip.as_deref() != Some(published.topic.as_str()) {
                return Some(published);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(accepted_us: u64, error: Option<ErrorCode>) -> Message {
        let mut envelope = Envelope::request("s-1", "F");
        envelope.kind = Kind::Result;
        envelope.key = "?F?a".into();
        envelope.accepted_us = accepted_us;
        if let Some(code) = error {
            envelope = envelope.into_error(code, "why");
        }
        Message::new(envelope, Bytes::from_static(&[0xc0]))
    }

    #[test]
    fn a_result_tells_refused_from_failed_by_its_acceptance_time() {
        assert!(matches!(
            Outcome::of(result(0, Some(ErrorCode::UnknownFlow))),
            Outcome::Refused { error, .. } if error.code == ErrorCode::UnknownFlow
        ));
        assert!(matches!(
            Outcome::of(result(17, Some(ErrorCode::DeadLettered))),
            Outcome::Failed { key, error } if key == "?F?a" && error.code == ErrorCode::DeadLettered
        ));
        assert!(matches!(
            Outcome::of(result(17, None)),
            Outcome::Done(reply) if reply.payload[..] == [0xc0]
        ));
    }
}
