//! A client that speaks the wire protocol (`docs/protocol.md`) with raw
//! ZeroMQ sockets: PUSH to the intake, SUB on its own reply topic.

use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::mpsc;
use zeromq::{PushSocket, Socket, SocketRecv, SocketSend, SubSocket, ZmqMessage};
use zmanager::node::config::Endpoints;
use zmanager_client::wire::envelope::{Envelope, Kind};

/// A message received on the reply topic.
#[derive(Debug, Clone)]
pub struct Received {
    pub topic: String,
    pub envelope: Envelope,
    pub payload: Bytes,
}

/// A service made of raw sockets.
#[allow(missing_debug_implementations)] // zmq.rs sockets are not Debug
pub struct RawClient {
    /// Frames to the intake, sent by a task that owns the PUSH socket (so
    /// sending never waits on receiving, and the reverse).
    push: mpsc::Sender<ZmqMessage>,
    rx: mpsc::Receiver<Received>,
    pub service: String,
    pub reply_to: String,
}

impl RawClient {
    /// Connects, subscribes to its reply topic, and pings until the node
    /// answers (the subscription is then live).
    pub async fn connect(endpoints: &Endpoints, service: &str) -> Self {
        Self::connect_with_prefix(endpoints, service, None).await
    }

    /// Like [`RawClient::connect`], also subscribed to `extra` (a topic
    /// prefix other than its own reply topic).
    pub async fn connect_with_prefix(
        endpoints: &Endpoints,
        service: &str,
        extra: Option<&str>,
    ) -> Self {
        let reply_to = format!("@reply~{service}~");
        let mut sub = SubSocket::new();
        sub.connect(&endpoints.publish).await.expect("connect SUB");
        sub.subscribe(&reply_to).await.expect("subscribe");
        if let Some(prefix) = extra {
            sub.subscribe(prefix).await.expect("subscribe");
        }
        let (tx, rx) = mpsc::channel(100_000);
        tokio::spawn(async move {
            while let Ok(frames) = sub.recv().await {
                let frames = frames.into_vec();
                assert_eq!(frames.len(), 3, "a published message has 3 frames");
                let envelope = Envelope::decode(&frames[1]).expect("published envelope decodes");
                let received = Received {
                    topic: String::from_utf8_lossy(&frames[0]).into_owned(),
                    envelope,
                    payload: frames[2].clone(),
                };
                if tx.send(received).await.is_err() {
                    return;
                }
            }
        });
        let mut socket = PushSocket::new();
        socket
            .connect(&endpoints.intake)
            .await
            .expect("connect PUSH");
        let (push, mut frames_rx) = mpsc::channel::<ZmqMessage>(1024);
        tokio::spawn(async move {
            while let Some(frames) = frames_rx.recv().await {
                socket.send(frames).await.expect("push to the intake");
            }
        });
        let mut client = Self {
            push,
            rx,
            service: service.to_owned(),
            reply_to,
        };
        client.handshake().await;
        client
    }

    async fn handshake(&mut self) {
        for _ in 0..100 {
            let mut ping = self.envelope("ping", "");
            ping.kind = Kind::Ping;
            self.send(&ping, Bytes::from_static(&[0xc0])).await;
            if let Some(r) = self.recv(Duration::from_millis(100)).await {
                assert_eq!(r.envelope.kind, Kind::Ping);
                // Drain later copies of the ping.
                while self.recv(Duration::from_millis(150)).await.is_some() {}
                return;
            }
        }
        panic!("no ping came back within 10 s");
    }

    /// A request envelope from this client.
    pub fn envelope(&self, id: &str, flow: &str) -> Envelope {
        let mut e = Envelope::request(id, flow);
        e.service.clone_from(&self.service);
        e.reply_to.clone_from(&self.reply_to);
        e
    }

    /// This client's answer to the message `published` at an `@ASYNC`
    /// flow's `@PUBLISH` step (protocol §7a).
    pub fn answer_to(&self, published: &Received) -> Envelope {
        let mut answer = self.envelope(&published.envelope.id, &published.envelope.flow);
        answer.kind = Kind::Result;
        answer.origin.clone_from(&published.envelope.service);
        answer
    }

    /// Sends `[topic, envelope, payload]`.
    pub async fn send(&mut self, envelope: &Envelope, payload: Bytes) {
        let mut frames = ZmqMessage::from(format!("{}~", envelope.flow));
        frames.push_back(Bytes::from(envelope.encode()));
        frames.push_back(payload);
        self.send_frames(frames).await;
    }

    /// Sends any frames to the intake.
    pub async fn send_frames(&mut self, frames: ZmqMessage) {
        self.push.send(frames).await.expect("the push task runs");
    }

    /// Pushes a request into `flow` with a serde payload.
    pub async fn request(&mut self, flow: &str, id: &str, payload: &impl Serialize) {
        let bytes = rmp_serde::to_vec_named(payload).expect("encode payload");
        let envelope = self.envelope(id, flow);
        self.send(&envelope, Bytes::from(bytes)).await;
    }

    /// A message already received on the reply topic, without waiting.
    pub fn try_recv(&mut self) -> Option<Received> {
        self.rx.try_recv().ok()
    }

    /// The next message on the reply topic, waiting at most `limit`.
    pub async fn recv(&mut self, limit: Duration) -> Option<Received> {
        tokio::time::timeout(limit, self.rx.recv())
            .await
            .ok()
            .flatten()
    }
}

/// `value` as a MessagePack payload.
pub fn msgpack(value: &impl Serialize) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(value).expect("encode"))
}

/// Decodes a payload into JSON, for assertions.
pub fn json(payload: &[u8]) -> serde_json::Value {
    zmanager_sdk::decode(payload).expect("payload decodes")
}
