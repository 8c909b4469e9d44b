//! The sockets a client connects to a node with: libzmq's (through the
//! `zmq` crate), driven from tokio ([`AsyncSocket`]).
//!
//! Why libzmq, as the node: a frame larger than the socket's limit is
//! refused before it is allocated (so a peer posing as the node cannot
//! make a client allocate what it declares: zmq.rs reserves a frame's
//! declared length before reading it), and it speaks CurveZMQ with the
//! node's public key when it has one (`docs/dependencies.md` has the
//! measurements behind the choice). The node's workers connect with these
//! too; the node's listening side (limits, ZAP) is `zmanager::transport`.

mod socket;

use std::time::Duration;

pub use socket::AsyncSocket;

use crate::keys::ClientKeys;

/// Why a socket could not listen or connect.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SocketError(String);

impl SocketError {
    /// An error saying `why`.
    pub fn new(why: impl Into<String>) -> Self {
        Self(why.into())
    }
}

impl From<zmq::Error> for SocketError {
    fn from(e: zmq::Error) -> Self {
        Self(e.to_string())
    }
}

/// What a connecting socket allows the node it connects to, and how it
/// presents itself.
#[derive(Debug, Clone)]
pub struct Peer {
    /// The largest frame the node may send it, in bytes.
    pub max_frame_bytes: usize,
    pub send_hwm: i32,
    pub receive_hwm: i32,
    pub linger: Duration,
    /// Its routing id (a worker's), if it has one.
    pub identity: Option<Vec<u8>>,
    /// CURVE, when the node has keys; `None`: NULL.
    pub curve: Option<ClientKeys>,
}

/// The context of the sockets a process connects with (one I/O thread,
/// shared by every client socket of the process).
pub fn client_context() -> &'static zmq::Context {
    static CONTEXT: std::sync::OnceLock<zmq::Context> = std::sync::OnceLock::new();
    CONTEXT.get_or_init(zmq::Context::new)
}

/// A socket of `kind` connecting to `endpoint` as `peer` says. libzmq
/// connects in the background and reconnects by itself; what is sent
/// before the connection is up waits in the socket (up to `send_hwm`).
/// Call it inside a tokio runtime.
pub fn connect(
    kind: zmq::SocketType,
    endpoint: &str,
    peer: &Peer,
) -> Result<AsyncSocket, SocketError> {
    let error = |e: zmq::Error| SocketError(format!("{endpoint}: {e}"));
    let socket = client_context().socket(kind).map_err(error)?;
    let max = i64::try_from(peer.max_frame_bytes).unwrap_or(i64::MAX);
    socket.set_maxmsgsize(max).map_err(error)?;
    socket.set_linger(millis(peer.linger)).map_err(error)?;
    socket.set_sndhwm(peer.send_hwm).map_err(error)?;
    socket.set_rcvhwm(peer.receive_hwm).map_err(error)?;
    if let Some(identity) = &peer.identity {
        socket.set_identity(identity).map_err(error)?;
    }
    if let Some(keys) = &peer.curve {
        socket.set_curve_serverkey(&keys.server).map_err(error)?;
        socket.set_curve_publickey(&keys.public).map_err(error)?;
        socket.set_curve_secretkey(&keys.secret).map_err(error)?;
    }
    socket.connect(endpoint).map_err(error)?;
    AsyncSocket::new(socket).map_err(error)
}

/// A duration as libzmq's milliseconds, saturated.
pub fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    /// A PUSH connected before its peer binds delivers once it does, and a
    /// frame past `max_frame_bytes` never reaches the receiver.
    #[tokio::test]
    async fn connected_sockets_deliver_within_their_frame_limit() {
        let context = zmq::Context::new();
        let pull = context.socket(zmq::PULL).unwrap();
        pull.bind("tcp://127.0.0.1:0").unwrap();
        let bound = pull.get_last_endpoint().unwrap().unwrap();
        let mut pull = AsyncSocket::new(pull).unwrap();
        let peer = Peer {
            max_frame_bytes: 1000,
            send_hwm: 10,
            receive_hwm: 10,
            linger: Duration::ZERO,
            identity: None,
            curve: None,
        };
        let mut push = connect(zmq::PUSH, &bound, &peer).unwrap();
        push.send([&b"topic"[..], b"envelope", b"payload"])
            .await
            .unwrap();
        let frames = tokio::time::timeout(Duration::from_secs(5), pull.recv())
            .await
            .expect("within 5 s")
            .unwrap();
        assert_eq!(
            frames,
            [
                Bytes::from_static(b"topic"),
                Bytes::from_static(b"envelope"),
                Bytes::from_static(b"payload")
            ]
        );

        // The other way: the client's PULL refuses what is past its limit.
        let sender = context.socket(zmq::PUSH).unwrap();
        sender.bind("tcp://127.0.0.1:0").unwrap();
        let from = sender.get_last_endpoint().unwrap().unwrap();
        let mut receiver = connect(zmq::PULL, &from, &peer).unwrap();
        sender.send(vec![7u8; 1001], 0).unwrap();
        let refused = tokio::time::timeout(Duration::from_millis(300), receiver.recv()).await;
        assert!(refused.is_err(), "the oversized frame never arrives");
    }

    #[test]
    fn a_bad_endpoint_is_an_error_naming_it() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = rt.enter();
        let peer = Peer {
            max_frame_bytes: 1000,
            send_hwm: 10,
            receive_hwm: 10,
            linger: Duration::ZERO,
            identity: None,
            curve: None,
        };
        let e = connect(zmq::PUSH, "nope://x", &peer).unwrap_err();
        assert!(e.to_string().starts_with("nope://x: "), "{e}");
    }
}
