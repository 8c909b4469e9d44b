//! Minimal async adapter: a libzmq socket driven from tokio through ZMQ_FD + AsyncFd.
//! ZMQ_FD is an edge-style "something changed" signal (readable only); the real state is
//! ZMQ_EVENTS. Rule: always try the non-blocking operation first; only on EAGAIN wait for
//! the fd, clear tokio's readiness, and retry. One task owns the socket (zmq::Socket is !Sync).
use std::os::unix::io::{AsRawFd, RawFd};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

fn naive() -> bool {
    static N: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *N.get_or_init(|| std::env::var("AZ_NAIVE").is_ok())
}

struct Fd(RawFd);
impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

pub struct AZ {
    // field order matters: `afd` is deregistered before the zmq socket (and its fd) is closed
    afd: AsyncFd<Fd>,
    pub sock: zmq::Socket,
}

impl AZ {
    pub fn new(sock: zmq::Socket) -> std::io::Result<Self> {
        let fd = sock.get_fd().map_err(std::io::Error::from)?;
        // SAFETY: the fd is owned by the libzmq socket, which lives as long as `self` (field order) and is not closed while registered.
        let afd = unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(AZ { sock, afd })
    }

    /// Wait until ZMQ_EVENTS contains `want`. ZMQ_EVENTS (not the fd) is the truth: a plain
    /// EAGAIN from send/recv may have skipped command processing (libzmq throttles it), so the
    /// mailbox fd can already be "readable" with no new edge coming. get_events() forces command
    /// processing and drains the fd; only then is waiting for a new edge safe.
    /// (A first version that only awaited the fd after EAGAIN stalled under load: see REPORT.md.)
    async fn wait(&self, want: zmq::PollEvents) -> Result<(), zmq::Error> {
        if naive() {
            // the tempting-but-wrong version, kept to reproduce the stall: AZ_NAIVE=1
            let mut g = self.afd.readable().await.map_err(|_| zmq::Error::EINVAL)?;
            g.clear_ready();
            return Ok(());
        }
        loop {
            if self.sock.get_events()?.contains(want) {
                return Ok(());
            }
            let mut g = self.afd.readable().await.map_err(|_| zmq::Error::EINVAL)?;
            g.clear_ready();
        }
    }

    /// Receive one whole multipart message.
    pub async fn recv_multipart(&self) -> Result<Vec<zmq::Message>, zmq::Error> {
        loop {
            match self.sock.recv_msg(zmq::DONTWAIT) {
                Ok(first) => {
                    let mut parts = vec![first];
                    while self.sock.get_rcvmore()? {
                        // remaining parts of a multipart message are already queued atomically
                        parts.push(self.sock.recv_msg(0)?);
                    }
                    return Ok(parts);
                }
                Err(zmq::Error::EAGAIN) => self.wait(zmq::POLLIN).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Receive one single-part message (keeps the zmq::Message for property access).
    pub async fn recv_msg(&self) -> Result<zmq::Message, zmq::Error> {
        loop {
            match self.sock.recv_msg(zmq::DONTWAIT) {
                Ok(m) => return Ok(m),
                Err(zmq::Error::EAGAIN) => self.wait(zmq::POLLIN).await?,
                Err(e) => return Err(e),
            }
        }
    }

    /// Send a multipart message; waits (asynchronously) while the socket is at HWM.
    pub async fn send_multipart(&self, parts: &[&[u8]]) -> Result<(), zmq::Error> {
        let last = parts.len() - 1;
        for (i, p) in parts.iter().enumerate() {
            let flags = if i < last { zmq::SNDMORE } else { 0 } | zmq::DONTWAIT;
            loop {
                match self.sock.send(*p, flags) {
                    Ok(()) => break,
                    // libzmq: once the first part is accepted the rest are accepted too
                    Err(zmq::Error::EAGAIN) => self.wait(zmq::POLLOUT).await?,
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    pub async fn send(&self, data: &[u8]) -> Result<(), zmq::Error> {
        self.send_multipart(&[data]).await
    }
}
