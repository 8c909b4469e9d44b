//! The raw transport baseline: how fast the `zeromq` crate alone moves
//! messages from a PUSH in one process to a PULL in another, on this
//! machine, now. zmanager's throughput is reported as a ratio of it, which
//! holds across machines of different speed and across noisy neighbours
//! better than a figure in requests per second.
//!
//! Both ends run on a current-thread Tokio runtime, the faster of the two
//! flavours for zmq.rs (`docs/performance.md`), so the ratio is not flattered.

use std::time::Instant;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zeromq::{Endpoint, PullSocket, PushSocket, Socket, SocketRecv, SocketSend, ZmqMessage};

use super::BenchError;

/// What the receiving end measured.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct RawResult {
    /// Messages received.
    pub messages: u64,
    /// Bytes per message (one frame).
    pub payload_bytes: usize,
    /// From the first message received to the last, seconds.
    pub seconds: f64,
    /// Messages per second.
    pub rate_per_s: f64,
}

/// A bound PULL socket, ready to count.
#[allow(missing_debug_implementations)] // zmq.rs sockets are not Debug
pub struct Receiver {
    socket: PullSocket,
    /// The endpoint actually bound (a tcp port 0 resolved).
    pub endpoint: String,
}

impl Receiver {
    /// Binds a PULL socket to `endpoint` (`tcp://127.0.0.1:0` picks a port).
    pub async fn bind(endpoint: &str) -> Result<Self, BenchError> {
        let mut socket = PullSocket::new();
        let bound = socket
            .bind(endpoint)
            .await
            .map_err(|e| BenchError::socket(endpoint, e))?;
        let endpoint = match bound {
            Endpoint::Tcp(host, port) => format!("tcp://{host}:{port}"),
            other => other.to_string(),
        };
        Ok(Self { socket, endpoint })
    }

    /// Receives `count` messages; times them from the first to the last.
    pub async fn count(mut self, count: u64) -> Result<RawResult, BenchError> {
        let mut payload_bytes = 0;
        let mut start = None;
        for _ in 0..count.max(1) {
            let message = self
                .socket
                .recv()
                .await
                .map_err(|e| BenchError::Protocol(format!("raw receive failed: {e}")))?;
            if start.is_none() {
                start = Some(Instant::now());
                payload_bytes = message.get(0).map_or(0, Bytes::len);
            }
        }
        let seconds = start.map_or(0.0, |s| s.elapsed().as_secs_f64());
        // The clock starts at the first message: count the intervals.
        let rate_per_s = if seconds > 0.0 {
            (count.max(1) - 1) as f64 / seconds
        } else {
            0.0
        };
        Ok(RawResult {
            messages: count.max(1),
            payload_bytes,
            seconds,
            rate_per_s,
        })
    }
}

/// Connects a PUSH socket to `endpoint` and sends `count` messages of
/// `size` bytes as fast as it can. The caller must keep the runtime alive
/// until the receiver has them all: zmq.rs has no linger.
pub async fn send(endpoint: &str, count: u64, size: usize) -> Result<PushSocket, BenchError> {
    let mut socket = PushSocket::new();
    socket
        .connect(endpoint)
        .await
        .map_err(|e| BenchError::socket(endpoint, e))?;
    let body = Bytes::from(vec![0x5a; size]);
    for _ in 0..count {
        socket
            .send(ZmqMessage::from(body.clone()))
            .await
            .map_err(|e| BenchError::Protocol(format!("raw send failed: {e}")))?;
    }
    Ok(socket)
}
