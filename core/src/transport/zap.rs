//! The ZAP handler (ZeroMQ RFC 27): libzmq asks it, for every connection
//! to a CURVE socket, whether the client's public key may connect, and
//! stamps every message of an accepted connection with the `User-Id` it
//! answers — here, the service id the key is bound to.
//!
//! It runs on a thread of its own with a REP socket on
//! `inproc://zeromq.zap.01` in the node's context, bound before any CURVE
//! socket is; it holds the context, so it lives as long as the node's
//! process (it ends if the context is ever terminated).

use std::collections::BTreeMap;

use crate::security::{Key, z85};

/// The domain the node's CURVE sockets name in their requests.
pub const DOMAIN: &str = "zmanager";

/// Starts the handler for `services` (each id by its public key).
pub fn start(
    context: &zmq::Context,
    services: BTreeMap<Key, String>,
) -> Result<std::thread::JoinHandle<()>, zmq::Error> {
    let socket = context.socket(zmq::REP)?;
    socket.set_linger(0)?;
    socket.bind("inproc://zeromq.zap.01")?;
    let thread = std::thread::Builder::new()
        .name("zap".to_owned())
        .spawn(move || serve(&socket, &services))
        .map_err(|_| zmq::Error::EMFILE)?;
    Ok(thread)
}

fn serve(socket: &zmq::Socket, services: &BTreeMap<Key, String>) {
    loop {
        let request = match socket.recv_multipart(0) {
            Ok(request) => request,
            Err(zmq::Error::ETERM) => return,
            Err(e) => {
                tracing::warn!(error = %e, "ZAP handler receive failed");
                continue;
            }
        };
        let (status, text, user) = decide(&request, services);
        let request_id = request.get(1).cloned().unwrap_or_default();
        let reply: [&[u8]; 6] = [
            b"1.0",
            &request_id,
            status.as_bytes(),
            text.as_bytes(),
            user.as_bytes(),
            b"",
        ];
        if let Err(e) = socket.send_multipart(reply, 0) {
            if e == zmq::Error::ETERM {
                return;
            }
            tracing::warn!(error = %e, "ZAP handler reply failed");
        }
    }
}

/// Status, status text and user id for one request: `[version,
/// request_id, domain, address, identity, mechanism, credentials...]`.
fn decide(request: &[Vec<u8>], services: &BTreeMap<Key, String>) -> (&'static str, String, String) {
    let field = |i: usize| request.get(i).map_or(&[][..], Vec::as_slice);
    if request.len() < 6 || field(0) != b"1.0" {
        return ("500", "malformed ZAP request".to_owned(), String::new());
    }
    let address = String::from_utf8_lossy(field(3)).into_owned();
    match field(5) {
        b"CURVE" => match Key::try_from(field(6)) {
            Ok(key) => match services.get(&key) {
                Some(id) => {
                    tracing::debug!(service = %id, %address, "key accepted");
                    ("200", "OK".to_owned(), id.clone())
                }
                None => {
                    tracing::warn!(key = %z85(&key), %address, "refused a connection: its key is not in [security]");
                    ("400", "unknown key".to_owned(), String::new())
                }
            },
            Err(_) => ("400", "no client key".to_owned(), String::new()),
        },
        // Sockets without keys (the workers' ipc socket) name no domain
        // and are not the handler's to judge.
        b"NULL" => ("200", "OK".to_owned(), String::new()),
        _ => ("400", "mechanism not offered".to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(mechanism: &[u8], key: &[u8]) -> Vec<Vec<u8>> {
        [
            b"1.0".as_slice(),
            b"7",
            DOMAIN.as_bytes(),
            b"127.0.0.1",
            b"",
            mechanism,
            key,
        ]
        .iter()
        .map(|f| f.to_vec())
        .collect()
    }

    #[test]
    fn a_listed_key_is_its_service_and_no_other_key_gets_in() {
        let ada = [1u8; 32];
        let services = BTreeMap::from([(ada, "ada".to_owned())]);
        assert_eq!(decide(&request(b"CURVE", &ada), &services).2, "ada");
        assert_eq!(decide(&request(b"CURVE", &[2; 32]), &services).0, "400");
        assert_eq!(decide(&request(b"CURVE", b"short"), &services).0, "400");
        assert_eq!(decide(&request(b"PLAIN", b"x"), &services).0, "400");
        assert_eq!(decide(&request(b"NULL", b""), &services).0, "200");
        assert_eq!(decide(&[b"2.0".to_vec()], &services).0, "500");
    }
}
