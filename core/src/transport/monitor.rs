//! The count of a listening socket's open connections, from libzmq's
//! monitor events: a connection counts from its `ACCEPTED` to its
//! `DISCONNECTED` (both name its descriptor), so one still in its handshake
//! counts too. The ZAP handler reads the count ([`super::zap::Gate`]).
//!
//! The events come on a PAIR socket per listening socket, in the same
//! context, which the ZAP handler's thread reads ([`Monitors`]); one is let
//! go when its socket closes (`MONITOR_STOPPED`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use zmq::SocketEvent;

use super::Gatekeeper;

/// The monitors of the node's sockets, read by the ZAP handler's thread
/// (`super::zap`), which polls them beside its own socket and reads every
/// event they hold before each decision. (A thread of their own would
/// count in its own time: on a loaded machine, a connection could be
/// asked about before its `ACCEPTED` was counted, and a ninth get in past
/// eight.)
#[derive(Debug, Clone, Default)]
pub(super) struct Monitors(Arc<Mutex<Vec<Watched>>>);

struct Watched {
    domain: super::zap::Domain,
    events: zmq::Socket,
    /// The descriptors of its open connections.
    open: HashSet<u32>,
    stopped: bool,
}

impl std::fmt::Debug for Watched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watched")
            .field("domain", &self.domain)
            .field("open", &self.open.len())
            .field("stopped", &self.stopped)
            .finish_non_exhaustive()
    }
}

impl Monitors {
    fn add(&self, domain: super::zap::Domain, events: zmq::Socket) {
        self.lock().push(Watched {
            domain,
            events,
            open: HashSet::new(),
            stopped: false,
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Watched>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout_ms` for a request on `zap` or an event on a
    /// monitor, then reads every monitor's events into `counts`; true when
    /// a request waits on `zap`. `Err(ETERM)`: the context is ending.
    pub(super) fn wait(
        &self,
        zap: &zmq::Socket,
        timeout_ms: i64,
        counts: &super::zap::Connections,
    ) -> Result<bool, zmq::Error> {
        let mut watched = self.lock();
        let asked = {
            let mut items = vec![zap.as_poll_item(zmq::POLLIN)];
            items.extend(watched.iter().map(|w| w.events.as_poll_item(zmq::POLLIN)));
            zmq::poll(&mut items, timeout_ms)?;
            items[0].is_readable()
        };
        // Every event issued so far, before any decision: a connection's
        // `ACCEPTED` is issued when it is accepted, before its handshake
        // asks this handler.
        for w in watched.iter_mut() {
            read(w)?;
            counts.set(w.domain, w.open.len());
        }
        watched.retain(|w| !w.stopped);
        Ok(asked)
    }
}

/// Starts counting `socket`'s connections into `gate.connections`. Call it
/// before the socket binds, so that no connection goes uncounted.
pub(super) fn watch(
    context: &zmq::Context,
    socket: &zmq::Socket,
    gate: &Gatekeeper,
) -> Result<(), zmq::Error> {
    static WATCHED: AtomicU64 = AtomicU64::new(0);
    let endpoint = format!(
        "inproc://{}-monitor-{}",
        gate.domain.as_str(),
        WATCHED.fetch_add(1, Ordering::Relaxed)
    );
    let events = [
        SocketEvent::ACCEPTED,
        SocketEvent::DISCONNECTED,
        SocketEvent::MONITOR_STOPPED,
    ]
    .iter()
    .fold(0, |all, e| all | i32::from(e.to_raw()));
    socket.monitor(&endpoint, events)?;
    let events = context.socket(zmq::PAIR)?;
    events.connect(&endpoint)?;
    gate.connections.1.add(gate.domain, events);
    Ok(())
}

/// Reads the events `w` holds now, without waiting.
fn read(w: &mut Watched) -> Result<(), zmq::Error> {
    while !w.stopped {
        let frames = match w.events.recv_multipart(zmq::DONTWAIT) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) => return Ok(()),
            Err(e) => return Err(e),
        };
        // Frame 1: the event (u16) and its value (u32, here a descriptor),
        // in the machine's byte order; frame 2: the endpoint.
        let Some(head) = frames.first().filter(|f| f.len() == 6) else {
            continue;
        };
        let event = u16::from_ne_bytes([head[0], head[1]]);
        let fd = u32::from_ne_bytes([head[2], head[3], head[4], head[5]]);
        if event == SocketEvent::ACCEPTED.to_raw() {
            w.open.insert(fd);
        } else if event == SocketEvent::DISCONNECTED.to_raw() {
            w.open.remove(&fd);
        } else if event == SocketEvent::MONITOR_STOPPED.to_raw() {
            w.stopped = true;
        }
    }
    Ok(())
}
