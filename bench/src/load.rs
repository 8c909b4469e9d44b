//! The load generator: one service process of `zmanager bench`.
//!
//! It speaks the wire protocol (`docs/protocol.md`) with raw sockets, as a
//! client in any language would — PUSH to the intake, SUB on its own reply
//! topic — not through [`zmanager_client::Service`], so what it measures is
//! the node, not the Rust client's bookkeeping. One task owns both sockets:
//! it keeps `in_flight` requests outstanding, and each result it reads is
//! timed (send to receipt, monotonic clock) and replaced by a new request.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeromq::{PushSocket, Socket, SocketOptions, SocketRecv, SocketSend, SubSocket, ZmqMessage};

use super::BenchError;
use super::histogram::{Histogram, Sparse};
use zmanager_client::wire::envelope::{Envelope, Kind, Status, now_us};
use zmanager_client::wire::topic::Topic;

/// A run gives up when no result arrives for this long.
pub const STALL: Duration = Duration::from_secs(15);

/// What one service process does.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// The node's intake endpoint.
    pub intake: String,
    /// The node's publish endpoint.
    pub publish: String,
    /// This service's id (its reply topic is `@reply~<id>~`).
    pub service: String,
    /// The flow every request goes into.
    pub flow: String,
    /// Bytes of the payload frame (at least 1).
    pub payload: usize,
    /// Ask for the `accepted` acknowledgement of each request.
    pub ack: bool,
    /// Ordering keys: request `n` gets `order_key` `n % keys`; 0 sets none.
    pub keys: u64,
}

/// The outcome of a run, as a service process reports it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoadResult {
    /// Results received (successes and errors).
    pub completed: u64,
    /// `accepted` acknowledgements received.
    #[serde(default)]
    pub accepted: u64,
    /// Error results among them.
    pub errors: u64,
    /// From the first request sent to the last result received, seconds.
    pub elapsed_s: f64,
    /// Latency of each request, nanoseconds.
    pub latency_ns: Sparse,
}

/// The fields of a published envelope the generator reads; the rest of the
/// map is skipped without allocating.
#[derive(Deserialize)]
struct ResultView<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(default)]
    kind: Kind,
    #[serde(default)]
    status: Status,
}

/// A connected service that pushes requests and times their results.
#[allow(missing_debug_implementations)] // zmq.rs sockets are not Debug
pub struct LoadGenerator {
    push: PushSocket,
    sub: SubSocket,
    topic: Bytes,
    payload: Bytes,
    template: Envelope,
    next_id: u64,
    keys: u64,
}

impl LoadGenerator {
    /// Connects, subscribes to its reply topic, and pings until the node
    /// answers (the subscription is then live).
    pub async fn connect(options: &LoadOptions) -> Result<Self, BenchError> {
        let reply_to = format!("@reply~{}~", options.service);
        let socket_options = || {
            let mut o = SocketOptions::default();
            o.connect_timeout(Duration::from_secs(10));
            o
        };
        let mut sub = SubSocket::with_options(socket_options());
        sub.connect(&options.publish)
            .await
            .map_err(|e| BenchError::socket(&options.publish, e))?;
        sub.subscribe(&reply_to)
            .await
            .map_err(|e| BenchError::socket(&options.publish, e))?;
        let mut push = PushSocket::with_options(socket_options());
        push.connect(&options.intake)
            .await
            .map_err(|e| BenchError::socket(&options.intake, e))?;

        let mut template = Envelope::request("", options.flow.clone());
        template.service.clone_from(&options.service);
        template.reply_to = reply_to;
        template.ack = options.ack;
        let topic = Topic {
            flow: options.flow.clone(),
            ..Topic::default()
        };
        let mut generator = Self {
            push,
            sub,
            topic: Bytes::from(topic.to_string()),
            payload: payload_of_size(options.payload),
            template,
            next_id: 0,
            keys: options.keys,
        };
        generator.handshake().await?;
        Ok(generator)
    }

    async fn handshake(&mut self) -> Result<(), BenchError> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ping = self.template.clone();
        ping.kind = Kind::Ping;
        ping.id = "ping".to_owned();
        while Instant::now() < deadline {
            let mut frames = ZmqMessage::from(self.topic.clone());
            frames.push_back(Bytes::from(ping.encode()));
            frames.push_back(Bytes::from_static(&[0xc0]));
            self.push
                .send(frames)
                .await
                .map_err(|e| BenchError::Protocol(format!("cannot push a ping: {e}")))?;
            // A timed-out `recv` may drop a message (zmq.rs `recv` is not
            // cancel-safe); only pings travel now, and one is enough.
            if let Ok(Ok(frames)) =
                tokio::time::timeout(Duration::from_millis(100), self.sub.recv()).await
                && frames.len() == 3
            {
                return Ok(());
            }
        }
        Err(BenchError::Protocol(
            "no ping came back from the node within 10 s".to_owned(),
        ))
    }

    fn request(&mut self) -> (u64, ZmqMessage) {
        let id = self.next_id;
        self.next_id += 1;
        self.template.id.clear();
        // Writing to a String cannot fail.
        let _ = write!(self.template.id, "{id}");
        if self.keys > 0 {
            self.template.order_key.clear();
            let _ = write!(self.template.order_key, "{}", id % self.keys);
        }
        self.template.created_us = now_us();
        let mut frames = ZmqMessage::from(self.topic.clone());
        frames.push_back(Bytes::from(self.template.encode()));
        frames.push_back(self.payload.clone());
        (id, frames)
    }

    /// Pushes `count` requests, keeping `in_flight` outstanding, and waits
    /// for every result. `progress` counts results as they arrive.
    pub async fn run(
        &mut self,
        count: u64,
        in_flight: usize,
        progress: &AtomicU64,
    ) -> Result<LoadResult, BenchError> {
        let in_flight = in_flight.max(1) as u64;
        let mut outstanding = Outstanding::new(self.next_id);
        let mut histogram = Histogram::new();
        let (mut sent, mut completed, mut errors, mut accepted) = (0u64, 0u64, 0u64, 0u64);
        let start = Instant::now();
        while sent < count && sent - completed < in_flight {
            self.send_one(&mut outstanding).await?;
            sent += 1;
        }
        while completed < count {
            let frames = match tokio::time::timeout(STALL, self.sub.recv()).await {
                Ok(Ok(frames)) => frames,
                Ok(Err(e)) => return Err(BenchError::Protocol(format!("subscription lost: {e}"))),
                Err(_) => {
                    return Err(BenchError::Stalled {
                        missing: count - completed,
                        waited: STALL,
                    });
                }
            };
            let Some(frame) = frames.get(1) else { continue };
            let Ok(view) = rmp_serde::from_slice::<ResultView<'_>>(frame) else {
                continue;
            };
            if view.kind == Kind::Accepted {
                // Its payload is the array of the ids it acknowledges.
                let ids = frames
                    .get(2)
                    .and_then(|p| rmp_serde::from_slice::<Vec<&str>>(p).ok());
                accepted += ids.map_or(1, |ids| ids.len() as u64);
                continue;
            }
            if view.kind != Kind::Result {
                continue;
            }
            let Some(at) = view.id.parse().ok().and_then(|id| outstanding.take(id)) else {
                continue; // not ours, or a duplicate
            };
            histogram.record(u64::try_from(at.elapsed().as_nanos()).unwrap_or(u64::MAX));
            completed += 1;
            if view.status != Status::Ok {
                errors += 1;
            }
            progress.store(completed, Ordering::Relaxed);
            if sent < count {
                self.send_one(&mut outstanding).await?;
                sent += 1;
            }
        }
        Ok(LoadResult {
            completed,
            accepted,
            errors,
            elapsed_s: start.elapsed().as_secs_f64(),
            latency_ns: histogram.to_sparse(),
        })
    }

    async fn send_one(&mut self, outstanding: &mut Outstanding) -> Result<(), BenchError> {
        let (id, frames) = self.request();
        outstanding.sent(id, Instant::now());
        self.push
            .send(frames)
            .await
            .map_err(|e| BenchError::Protocol(format!("cannot push a request: {e}")))
    }
}

/// Send times of the requests awaiting results. Ids are consecutive and
/// results come back nearly in order, so a window starting at the oldest
/// outstanding id does what a hash map would, without hashing.
struct Outstanding {
    /// The id of `window[0]`.
    base: u64,
    /// `None` for a request already answered (a hole until the oldest is).
    window: VecDeque<Option<Instant>>,
}

impl Outstanding {
    fn new(first_id: u64) -> Self {
        Self {
            base: first_id,
            window: VecDeque::new(),
        }
    }

    /// Request `id` (the next id in sequence) was sent `at`.
    fn sent(&mut self, id: u64, at: Instant) {
        debug_assert_eq!(id, self.base + self.window.len() as u64);
        self.window.push_back(Some(at));
    }

    /// The send time of `id`, once: `None` for an id not outstanding.
    fn take(&mut self, id: u64) -> Option<Instant> {
        let index = usize::try_from(id.checked_sub(self.base)?).ok()?;
        let at = self.window.get_mut(index)?.take()?;
        while let Some(None) = self.window.front() {
            self.window.pop_front();
            self.base += 1;
        }
        Some(at)
    }
}

/// A MessagePack `bin` value of exactly `size` bytes in all (header
/// included); a nil for a size of 1 or less.
pub fn payload_of_size(size: usize) -> Bytes {
    let mut out = Vec::with_capacity(size.max(1));
    if size <= 1 {
        out.push(0xc0);
    } else if let Ok(n) = u8::try_from(size - 2) {
        out.extend([0xc4, n]);
    } else if let Some(n) = size.checked_sub(3).and_then(|n| u16::try_from(n).ok()) {
        out.push(0xc5);
        out.extend(n.to_be_bytes());
    } else {
        let n = u32::try_from(size - 5).unwrap_or(u32::MAX);
        out.push(0xc6);
        out.extend(n.to_be_bytes());
    }
    let body = size.saturating_sub(out.len());
    out.extend((0..body).map(|i| (i % 251) as u8));
    Bytes::from(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_have_the_size_asked_and_decode() {
        for size in [1, 2, 64, 257, 258, 259, 1024, 65_538, 70_000] {
            let p = payload_of_size(size);
            assert_eq!(p.len(), size, "size {size}");
            let value: rmpv::Value = rmp_serde::from_slice(&p).expect("one MessagePack value");
            if size >= 2 {
                assert!(value.is_bin(), "size {size}");
            }
        }
    }

    #[test]
    fn outstanding_requests_are_taken_once_in_any_order() {
        let now = Instant::now();
        let mut o = Outstanding::new(10);
        for id in 10..15 {
            o.sent(id, now);
        }
        assert!(o.take(12).is_some());
        assert!(o.take(12).is_none(), "a duplicate");
        assert!(o.take(9).is_none() && o.take(15).is_none(), "not ours");
        assert!(o.take(10).is_some());
        assert_eq!((o.base, o.window.len()), (11, 4));
        assert!(o.take(11).is_some());
        assert_eq!((o.base, o.window.len()), (13, 2), "holes closed");
        o.sent(15, now);
        for id in [15, 14, 13] {
            assert!(o.take(id).is_some());
        }
        assert!(o.window.is_empty());
    }

    #[test]
    fn reads_only_what_it_needs_of_a_result() {
        let mut e = Envelope::request("17", "Echo");
        e.kind = Kind::Result;
        e.key = "??done".into();
        let bytes = e.encode();
        let view: ResultView<'_> = rmp_serde::from_slice(&bytes).unwrap();
        assert_eq!(
            (view.id, view.kind, view.status),
            ("17", Kind::Result, Status::Ok)
        );
    }
}
