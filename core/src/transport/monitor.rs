//! The count of a listening socket's open connections, from libzmq's
//! monitor events: a connection counts from its `ACCEPTED` to its
//! `DISCONNECTED` (both name its descriptor), so one still in its handshake
//! counts too. The ZAP handler reads the count ([`super::zap::Gate`]).
//!
//! One thread per socket reads the events from a PAIR socket in the same
//! context; it ends when the socket closes (`MONITOR_STOPPED`).

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};

use zmq::SocketEvent;

use super::Gatekeeper;

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
    let gate = gate.clone();
    std::thread::Builder::new()
        .name(format!("{}-monitor", gate.domain.as_str()))
        .spawn(move || count(&events, &gate))
        .map_err(|_| zmq::Error::EMFILE)?;
    Ok(())
}

fn count(events: &zmq::Socket, gate: &Gatekeeper) {
    let mut open = HashSet::new();
    loop {
        let frames = match events.recv_multipart(0) {
            Ok(frames) => frames,
            Err(zmq::Error::ETERM) => return,
            Err(e) => {
                tracing::warn!(error = %e, "socket monitor receive failed");
                continue;
            }
        };
        // Frame 1: the event (u16) and its value (u32, here a descriptor),
        // in the machine's byte order; frame 2: the endpoint.
        let Some(head) = frames.first().filter(|f| f.len() == 6) else {
            continue;
        };
        let event = u16::from_ne_bytes([head[0], head[1]]);
        let fd = u32::from_ne_bytes([head[2], head[3], head[4], head[5]]);
        if event == SocketEvent::ACCEPTED.to_raw() {
            open.insert(fd);
        } else if event == SocketEvent::DISCONNECTED.to_raw() {
            open.remove(&fd);
        } else if event == SocketEvent::MONITOR_STOPPED.to_raw() {
            return;
        }
        gate.connections.set(gate.domain, open.len());
    }
}
