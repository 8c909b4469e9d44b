//! The sockets a node listens on: libzmq (through the `zmq` crate), each
//! with limits set before it binds, so that nothing a peer sends is
//! allocated past them.
//!
//! Why libzmq and not zmq.rs: zmq.rs reserves a frame's declared length before reading it, so one
//! frame header announcing 2^62 bytes aborts the process, and it has no
//! way to bound a handshake or to authenticate a peer. libzmq drops such a
//! peer at `ZMQ_MAXMSGSIZE`, reaps silent ones at `ZMQ_HANDSHAKE_IVL`, and
//! speaks CurveZMQ with pyzmq and every other libzmq client
//! (`docs/dependencies.md` has the measurements behind the choice).
//!
//! Every listening socket gets, whatever its kind:
//! - `ZMQ_MAXMSGSIZE`: the largest frame a peer may send (see [`Limits`]);
//!   a larger one closes that peer's connection, and the node serves on;
//! - `ZMQ_HANDSHAKE_IVL`: a peer that has not completed its ZMTP handshake
//!   in time is disconnected;
//! - `ZMQ_LINGER`: how long closing waits for queued messages to leave;
//! - an XPUB, `ZMQ_XPUB_MANUAL`: no subscription counts until the node
//!   has allowed it.
//!
//! The sockets that connect to a node (its workers, the Rust client) are
//! libzmq's too ([`connect`]): they take the same frame limit, so a peer
//! posing as the node cannot make them allocate what it declares, and they
//! speak CURVE with the node's public key when it has one. They, and the
//! tokio adapter every socket goes through ([`AsyncSocket`]), are the
//! client crate's (`zmanager_client::transport`), re-exported here.

mod monitor;
mod xpub;
pub mod zap;

use std::time::Duration;

pub use zmanager_client::keys::ClientKeys;
pub use zmanager_client::transport::{
    AsyncSocket, Peer, SocketError, client_context, connect, millis,
};

/// What a listening socket allows its peers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The largest frame a peer may send, in bytes.
    pub max_frame_bytes: usize,
    /// How long a peer has to complete its handshake.
    pub handshake: Duration,
    /// Most messages queued for one peer before sending waits (ROUTER) or
    /// drops (PUB, by ZeroMQ's design).
    pub send_hwm: i32,
    /// Most messages queued from one peer before reading from it stops.
    pub receive_hwm: i32,
    /// How long closing the socket waits for what it still has to send.
    pub linger: Duration,
    /// CURVE only, with the node's secret key (needs `gate`: the ZAP
    /// handler decides which client keys may connect). `None`: NULL.
    pub curve: Option<crate::security::Key>,
    /// The ZAP handler ([`zap`]) decides each connection, and the socket's
    /// monitor keeps its count of open connections. `None`: neither.
    pub gate: Option<Gatekeeper>,
}

/// How a socket is known to the ZAP handler.
#[derive(Debug, Clone)]
pub struct Gatekeeper {
    pub domain: zap::Domain,
    pub connections: zap::Connections,
}

impl PartialEq for Gatekeeper {
    fn eq(&self, other: &Self) -> bool {
        self.domain == other.domain
    }
}

impl Eq for Gatekeeper {}

/// A socket of `kind` listening on `endpoint` with `limits` (a ROUTER
/// also refuses to drop messages to a peer it does not know: the send
/// fails instead). Returns it and the endpoint actually bound (a tcp port
/// 0 resolved). Call it inside a tokio runtime.
pub fn bind(
    context: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
    limits: &Limits,
) -> Result<(AsyncSocket, String), SocketError> {
    let error = SocketError::from;
    let mut socket = context.socket(kind).map_err(error)?;
    if kind == zmq::XPUB {
        // The node decides each subscription (`crate::integration_manager`).
        xpub::set_xpub_manual(&mut socket).map_err(error)?;
    }
    let max = i64::try_from(limits.max_frame_bytes).unwrap_or(i64::MAX);
    socket.set_maxmsgsize(max).map_err(error)?;
    socket
        .set_handshake_ivl(millis(limits.handshake).max(1))
        .map_err(error)?;
    socket.set_linger(millis(limits.linger)).map_err(error)?;
    socket.set_sndhwm(limits.send_hwm).map_err(error)?;
    socket.set_rcvhwm(limits.receive_hwm).map_err(error)?;
    if kind == zmq::ROUTER {
        socket.set_router_mandatory(true).map_err(error)?;
    }
    if let Some(gate) = &limits.gate {
        socket.set_zap_domain(gate.domain.as_str()).map_err(error)?;
    }
    if let Some(secret) = &limits.curve {
        if limits.gate.is_none() {
            // libzmq would take any client key.
            return Err(SocketError::new("CURVE without the ZAP handler"));
        }
        socket.set_curve_server(true).map_err(error)?;
        socket.set_curve_secretkey(secret).map_err(error)?;
    }
    if let Some(gate) = &limits.gate {
        monitor::watch(context, &socket, gate).map_err(error)?;
    }
    socket.bind(endpoint).map_err(error)?;
    let bound = match socket.get_last_endpoint().map_err(error)? {
        Ok(bound) => bound,
        Err(raw) => String::from_utf8_lossy(&raw).into_owned(),
    };
    let socket = AsyncSocket::new(socket).map_err(error)?;
    Ok((socket, bound))
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use bytes::Bytes;

    use super::*;

    const LIMITS: Limits = Limits {
        max_frame_bytes: 1 << 20,
        handshake: Duration::from_millis(300),
        send_hwm: 1000,
        receive_hwm: 1000,
        linger: Duration::ZERO,
        curve: None,
        gate: None,
    };

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    }

    /// A ZMTP 3.0 greeting (NULL mechanism, as server = false) and a READY
    /// command naming `socket_type`.
    fn handshake(socket_type: &str) -> Vec<u8> {
        let mut greeting = vec![0xff, 0, 0, 0, 0, 0, 0, 0, 1, 0x7f, 3, 0];
        let mut mechanism = *b"NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
        mechanism[4..].fill(0);
        greeting.extend_from_slice(&mechanism);
        greeting.push(0);
        greeting.extend_from_slice(&[0; 31]);
        let mut body = vec![5];
        body.extend_from_slice(b"READY");
        body.push(11);
        body.extend_from_slice(b"Socket-Type");
        body.extend_from_slice(&u32::try_from(socket_type.len()).unwrap().to_be_bytes());
        body.extend_from_slice(socket_type.as_bytes());
        greeting.push(0x04);
        greeting.push(u8::try_from(body.len()).unwrap());
        greeting.extend_from_slice(&body);
        greeting
    }

    /// The attack that aborted a node on zmq.rs: a message frame whose
    /// 8-byte length says 2^62. The peer is dropped; the socket serves the
    /// next one.
    #[test]
    fn a_huge_declared_frame_drops_the_peer_not_the_process() {
        runtime().block_on(async {
            let context = zmq::Context::new();
            let (mut pull, bound) =
                bind(&context, zmq::PULL, "tcp://127.0.0.1:0", &LIMITS).expect("bind");
            let address = bound.trim_start_matches("tcp://").to_owned();
            let attacker = std::thread::spawn(move || {
                let mut tcp = TcpStream::connect(&address).expect("connect");
                tcp.write_all(&handshake("PUSH")).expect("handshake");
                let mut header = vec![0x02];
                header.extend_from_slice(&(1u64 << 62).to_be_bytes());
                tcp.write_all(&header).expect("the header");
                tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                // The node's greeting, then end of stream: it hung up.
                let mut sink = Vec::new();
                let read = tcp.read_to_end(&mut sink);
                read.is_ok()
            });
            let hung_up = tokio::task::spawn_blocking(move || attacker.join().unwrap())
                .await
                .unwrap();
            assert!(hung_up, "the socket closed the attacker's connection");

            let push = context.socket(zmq::PUSH).unwrap();
            push.connect(&bound).unwrap();
            push.send("after", 0).unwrap();
            let frames = tokio::time::timeout(Duration::from_secs(5), pull.recv())
                .await
                .expect("a message within 5 s")
                .expect("received");
            assert_eq!(frames, [Bytes::from_static(b"after")]);
        });
    }

    /// A frame one byte past the limit is refused the same way; one at the
    /// limit arrives.
    #[test]
    fn the_limit_is_the_largest_frame_taken() {
        runtime().block_on(async {
            let context = zmq::Context::new();
            let limits = Limits {
                max_frame_bytes: 1000,
                ..LIMITS
            };
            let (mut pull, bound) =
                bind(&context, zmq::PULL, "tcp://127.0.0.1:0", &limits).unwrap();
            let big = context.socket(zmq::PUSH).unwrap();
            big.connect(&bound).unwrap();
            big.send(vec![7u8; 1001], 0).unwrap();
            let fits = context.socket(zmq::PUSH).unwrap();
            fits.connect(&bound).unwrap();
            fits.send(vec![8u8; 1000], 0).unwrap();
            let frames = tokio::time::timeout(Duration::from_secs(5), pull.recv())
                .await
                .expect("a message")
                .unwrap();
            assert_eq!(frames[0].len(), 1000);
            assert_eq!(frames[0][0], 8);
            let more = tokio::time::timeout(Duration::from_millis(300), pull.recv()).await;
            assert!(more.is_err(), "the oversized frame never arrives");
        });
    }

    /// A peer that connects and says nothing is disconnected when its
    /// handshake time is up.
    #[test]
    fn a_silent_peer_is_disconnected_after_the_handshake_time() {
        let context = zmq::Context::new();
        let rt = runtime();
        let _guard = rt.enter();
        let (_pull, bound) = bind(&context, zmq::PULL, "tcp://127.0.0.1:0", &LIMITS).unwrap();
        let mut tcp = TcpStream::connect(bound.trim_start_matches("tcp://")).unwrap();
        tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let started = std::time::Instant::now();
        let mut sink = Vec::new();
        tcp.read_to_end(&mut sink).expect("closed, not timed out");
        let waited = started.elapsed();
        assert!(waited >= Duration::from_millis(250), "{waited:?}");
        assert!(waited < Duration::from_secs(4), "{waited:?}");
    }

    /// Many messages through one socket pair: every one arrives, in order,
    /// with the sender waiting at the high-water mark (the case where a
    /// reader that waits on the descriptor alone stalls).
    #[test]
    fn a_flood_arrives_whole_and_in_order() {
        runtime().block_on(async {
            let context = zmq::Context::new();
            let limits = Limits {
                send_hwm: 10,
                receive_hwm: 10,
                ..LIMITS
            };
            let (mut pull, bound) =
                bind(&context, zmq::PULL, "tcp://127.0.0.1:0", &limits).unwrap();
            let push = context.socket(zmq::PUSH).unwrap();
            push.set_sndhwm(10).unwrap();
            push.connect(&bound).unwrap();
            let mut push = AsyncSocket::new(push).unwrap();
            let n = 200_000u32;
            let sender = async move {
                for i in 0..n {
                    let bytes = i.to_be_bytes();
                    push.send([&b"k"[..], &bytes[..]]).await.expect("send");
                }
                push
            };
            let receiver = async move {
                for i in 0..n {
                    let frames = pull.recv().await.expect("recv");
                    assert_eq!(frames.len(), 2);
                    assert_eq!(frames[1].as_ref(), i.to_be_bytes());
                }
            };
            let (_push, ()) = tokio::time::timeout(Duration::from_secs(60), async {
                tokio::join!(sender, receiver)
            })
            .await
            .expect("no stall");
        });
    }
}
