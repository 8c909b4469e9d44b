//! The client's connection to the node: a PUSH socket and a SUB socket on
//! the run's reply topic, each owned by its own task and fed by (or
//! feeding) a bounded channel, so the driver never waits on a socket and
//! never drops a `recv` half done (zmq.rs `recv` is not cancel-safe: only
//! the channel is read in a `select!`). Dropping the connection closes
//! both sockets: `--drop-connection` and a node restart make a new one.

use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeromq::{PushSocket, Socket, SocketOptions, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use crate::BenchError;
use zmanager_client::wire::envelope::{Envelope, Kind};

/// Frames waiting to be pushed, at most.
const PUSH_QUEUE: usize = 4096;
/// Published messages read and not yet handled, at most: past this the
/// SUB task stops reading (a slow subscriber is one that does not drain).
const SUB_QUEUE: usize = 4096;

/// Both sockets, as channels.
#[allow(missing_debug_implementations)] // zmq.rs sockets are not Debug
pub struct Connection {
    push: mpsc::Sender<ZmqMessage>,
    pub received: mpsc::Receiver<Vec<Bytes>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Connection {
    /// Connects and subscribes to `reply_to`, then pings until one comes
    /// back (the subscription is live), for at most `limit`.
    pub async fn open(
        intake: &str,
        publish: &str,
        service: &str,
        reply_to: &str,
        limit: Duration,
    ) -> Result<Self, BenchError> {
        let options = || {
            let mut o = SocketOptions::default();
            o.connect_timeout(Duration::from_secs(10));
            o
        };
        let mut sub = SubSocket::with_options(options());
        sub.connect(publish)
            .await
            .map_err(|e| BenchError::socket(publish, e))?;
        sub.subscribe(reply_to)
            .await
            .map_err(|e| BenchError::socket(publish, e))?;
        let mut push = PushSocket::with_options(options());
        push.connect(intake)
            .await
            .map_err(|e| BenchError::socket(intake, e))?;
        let (sub_tx, received) = mpsc::channel(SUB_QUEUE);
        let reader = tokio::spawn(async move {
            while let Ok(message) = sub.recv().await {
                if sub_tx.send(message.into_vec()).await.is_err() {
                    return;
                }
            }
        });
        let (push_tx, mut push_rx) = mpsc::channel::<ZmqMessage>(PUSH_QUEUE);
        let writer = tokio::spawn(async move {
            while let Some(frames) = push_rx.recv().await {
                if push.send(frames).await.is_err() {
                    return;
                }
            }
        });
        let mut connection = Self {
            push: push_tx,
            received,
            tasks: vec![reader, writer],
        };
        connection.handshake(service, reply_to, limit).await?;
        Ok(connection)
    }

    async fn handshake(
        &mut self,
        service: &str,
        reply_to: &str,
        limit: Duration,
    ) -> Result<(), BenchError> {
        let deadline = Instant::now() + limit;
        let mut ping = Envelope::request("chaos-ping", "");
        ping.kind = Kind::Ping;
        ping.service = service.to_owned();
        ping.reply_to = reply_to.to_owned();
        while Instant::now() < deadline {
            let _ = self.push([
                Bytes::new(),
                Bytes::from(ping.encode()),
                Bytes::from_static(&[0xc0]),
            ]);
            let wait = tokio::time::sleep(Duration::from_millis(100));
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    message = self.received.recv() => match message {
                        Some(frames) if is_ping(&frames) => return Ok(()),
                        Some(_) => {}
                        None => return Err(BenchError::Protocol("the subscription closed".to_owned())),
                    },
                    () = &mut wait => break,
                }
            }
        }
        Err(BenchError::Protocol(format!(
            "no ping came back from the node within {limit:?}"
        )))
    }

    /// Queues three frames for the intake; `false` when the queue is full
    /// (the request counts as not sent: it is sent again later).
    pub fn push(&self, frames: [Bytes; 3]) -> bool {
        let [topic, envelope, payload] = frames;
        let mut message = ZmqMessage::from(topic);
        message.push_back(envelope);
        message.push_back(payload);
        self.push.try_send(message).is_ok()
    }
}

fn is_ping(frames: &[Bytes]) -> bool {
    frames.len() == 3 && Envelope::decode(&frames[1]).is_ok_and(|e| e.kind == Kind::Ping)
}

impl Drop for Connection {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}
