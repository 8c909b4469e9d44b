//! A libzmq socket driven from tokio: its `ZMQ_FD` registered with tokio's
//! reactor, every operation tried without blocking first.
//!
//! `ZMQ_FD` is not a data descriptor: it signals, edge-style, that the
//! socket's state *may* have changed, and `ZMQ_EVENTS` says what it is. A
//! failed non-blocking call can leave commands unprocessed while the
//! descriptor reads as already signalled, so the socket waits only after
//! `ZMQ_EVENTS` (which processes them) says the operation cannot go on;
//! waiting on the descriptor alone stalls under load.
//!
//! The one `unsafe` block registers libzmq's descriptor with tokio (see
//! its SAFETY note); this module is one of the few allowed `unsafe`
//! (`tests/tests/components.rs` keeps the list). The node's sockets are
//! these too (`zmanager::transport` re-exports it).
//!
//! Receiving is cancel-safe: a message is taken only once its first frame
//! is, and libzmq delivers a multipart message whole, so the remaining
//! frames are read without waiting. Sending waits only before the first
//! frame: once it is taken, libzmq takes the rest.

use std::os::fd::{AsRawFd, RawFd};

use bytes::Bytes;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

/// The descriptor libzmq owns; tokio only watches it (dropping this does
/// not close it).
#[derive(Debug)]
struct Signal(RawFd);

impl AsRawFd for Signal {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

/// A received frame, owned by the `Bytes` that show it.
struct Frame(zmq::Message);

impl AsRef<[u8]> for Frame {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A libzmq socket for one task (libzmq sockets are not thread-safe: it is
/// `Send`, not `Sync`, and every method takes `&mut self`).
pub struct AsyncSocket {
    // Declared first: deregistered before the socket (and its descriptor)
    // is closed.
    signal: AsyncFd<Signal>,
    socket: zmq::Socket,
}

impl std::fmt::Debug for AsyncSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncSocket")
            .field("fd", &self.signal.get_ref().0)
            .finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> zmq::Error {
    tracing::warn!(error = %e, "cannot watch a zmq socket");
    zmq::Error::EINVAL
}

impl AsyncSocket {
    /// Watches `socket` from the current tokio runtime.
    #[allow(unsafe_code)]
    pub fn new(socket: zmq::Socket) -> Result<Self, zmq::Error> {
        let fd = socket.get_fd()?;
        // SAFETY: `fd` is the socket's own signalling descriptor, open for
        // as long as the socket is; the socket is a field of `Self`,
        // dropped after `signal` (declared first), and never replaced.
        let signal = unsafe { AsyncFd::register_with_interest(Signal(fd), Interest::READABLE) }
            .map_err(|e| io(e.to_string()))?;
        Ok(Self { signal, socket })
    }

    /// The socket, for options and `bind`.
    pub fn get_ref(&self) -> &zmq::Socket {
        &self.socket
    }

    /// Waits until `ZMQ_EVENTS` has `wanted`.
    async fn ready(&mut self, wanted: zmq::PollEvents) -> Result<(), zmq::Error> {
        loop {
            if self.socket.get_events()?.contains(wanted) {
                return Ok(());
            }
            let mut guard = self.signal.readable().await.map_err(io)?;
            guard.clear_ready();
        }
    }

    /// The next whole message, its frames in order.
    pub async fn recv(&mut self) -> Result<Vec<Bytes>, zmq::Error> {
        loop {
            match self.try_recv() {
                Err(zmq::Error::EAGAIN) => self.ready(zmq::POLLIN).await?,
                done => return done,
            }
        }
    }

    /// The next whole message if one is there now; `EAGAIN` if not.
    pub fn try_recv(&mut self) -> Result<Vec<Bytes>, zmq::Error> {
        self.try_recv_from().map(|(frames, _)| frames)
    }

    /// The next whole message and the `User-Id` of the connection it came
    /// in on: on a CURVE socket, the service id the ZAP handler bound to
    /// the client's key (`None` on a NULL socket).
    pub async fn recv_from(&mut self) -> Result<(Vec<Bytes>, Option<String>), zmq::Error> {
        loop {
            match self.try_recv_from() {
                Err(zmq::Error::EAGAIN) => self.ready(zmq::POLLIN).await?,
                done => return done,
            }
        }
    }

    fn try_recv_from(&mut self) -> Result<(Vec<Bytes>, Option<String>), zmq::Error> {
        let mut first = self.socket.recv_msg(zmq::DONTWAIT)?;
        let user = first
            .gets("User-Id")
            .filter(|u| !u.is_empty())
            .map(str::to_owned);
        // Each frame keeps libzmq's buffer: no copy.
        let mut frames = vec![Bytes::from_owner(Frame(first))];
        while self.socket.get_rcvmore()? {
            frames.push(Bytes::from_owner(Frame(self.socket.recv_msg(0)?)));
        }
        Ok((frames, user))
    }

    /// Sends `frames` as one message, waiting while the socket is at its
    /// high-water mark. An empty message sends nothing.
    pub async fn send<'f>(
        &mut self,
        frames: impl IntoIterator<Item = &'f [u8]>,
    ) -> Result<(), zmq::Error> {
        let mut frames = frames.into_iter().peekable();
        let mut first = true;
        while let Some(frame) = frames.next() {
            let more = if frames.peek().is_some() {
                zmq::SNDMORE
            } else {
                0
            };
            loop {
                match self.socket.send(frame, more | zmq::DONTWAIT) {
                    Ok(()) => break,
                    Err(zmq::Error::EAGAIN) if first => self.ready(zmq::POLLOUT).await?,
                    // libzmq takes the rest of a message whose first frame
                    // it took; a refusal now is an error, not a wait.
                    Err(e) => return Err(e),
                }
            }
            first = false;
        }
        Ok(())
    }
}
