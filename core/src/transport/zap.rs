//! The ZAP handler (ZeroMQ RFC 27): libzmq asks it, for every connection
//! to a CURVE socket, whether the client's public key may connect, and
//! stamps every message of an accepted connection with the `User-Id` it
//! answers — here, the service id the key is bound to.
//!
//! Each CURVE socket names a [`Domain`]: the intake and publish sockets
//! admit the services' keys, the workers socket the workers' keys (the one
//! the node made for its own workers at start, and those `[security]`
//! lists for workers started by hand). A service's key does not open the
//! workers socket, nor a worker's the intake.
//!
//! It runs on a thread of its own with a REP socket on
//! `inproc://zeromq.zap.01` in the node's context, bound before any CURVE
//! socket is; it holds the context, so it lives as long as the node's
//! process (it ends if the context is ever terminated).

use std::collections::{BTreeMap, BTreeSet};

use crate::security::{Key, z85};

/// Whose keys a CURVE socket admits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    /// The services': intake and publish.
    Services,
    /// The workers': the workers socket.
    Workers,
}

impl Domain {
    /// The name the socket gives in its ZAP requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Services => "zmanager",
            Domain::Workers => "zmanager-workers",
        }
    }
}

/// The `User-Id` of a worker's connection.
pub const WORKER: &str = "worker";

/// The keys the handler admits.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// Each service's id, by its public key.
    pub services: BTreeMap<Key, String>,
    /// The workers' public keys.
    pub workers: BTreeSet<Key>,
}

/// Starts the handler for the `admitted` keys.
pub fn start(
    context: &zmq::Context,
    admitted: Admitted,
) -> Result<std::thread::JoinHandle<()>, zmq::Error> {
    let socket = context.socket(zmq::REP)?;
    socket.set_linger(0)?;
    socket.bind("inproc://zeromq.zap.01")?;
    let thread = std::thread::Builder::new()
        .name("zap".to_owned())
        .spawn(move || serve(&socket, &admitted))
        .map_err(|_| zmq::Error::EMFILE)?;
    Ok(thread)
}

fn serve(socket: &zmq::Socket, admitted: &Admitted) {
    loop {
        let request = match socket.recv_multipart(0) {
            Ok(request) => request,
            Err(zmq::Error::ETERM) => return,
            Err(e) => {
                tracing::warn!(error = %e, "ZAP handler receive failed");
                continue;
            }
        };
        let (status, text, user) = decide(&request, admitted);
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
fn decide(request: &[Vec<u8>], admitted: &Admitted) -> (&'static str, String, String) {
    let field = |i: usize| request.get(i).map_or(&[][..], Vec::as_slice);
    if request.len() < 6 || field(0) != b"1.0" {
        return ("500", "malformed ZAP request".to_owned(), String::new());
    }
    let address = String::from_utf8_lossy(field(3)).into_owned();
    let domain = field(2);
    match field(5) {
        b"CURVE" => {
            let Ok(key) = Key::try_from(field(6)) else {
                return ("400", "no client key".to_owned(), String::new());
            };
            let found = if domain == Domain::Services.as_str().as_bytes() {
                admitted.services.get(&key).cloned()
            } else if domain == Domain::Workers.as_str().as_bytes() {
                admitted.workers.contains(&key).then(|| WORKER.to_owned())
            } else {
                None
            };
            match found {
                Some(id) => {
                    tracing::debug!(user = %id, %address, "key accepted");
                    ("200", "OK".to_owned(), id)
                }
                None => {
                    let socket = if domain == Domain::Workers.as_str().as_bytes() {
                        "workers"
                    } else {
                        "services"
                    };
                    tracing::warn!(key = %z85(&key), %address, socket, "refused a connection: its key is not in [security]");
                    ("400", "unknown key".to_owned(), String::new())
                }
            }
        }
        // Sockets without keys name no domain and are not the handler's
        // to judge.
        b"NULL" => ("200", "OK".to_owned(), String::new()),
        _ => ("400", "mechanism not offered".to_owned(), String::new()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(domain: Domain, mechanism: &[u8], key: &[u8]) -> Vec<Vec<u8>> {
        [
            b"1.0".as_slice(),
            b"7",
            domain.as_str().as_bytes(),
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
        let admitted = Admitted {
            services: BTreeMap::from([(ada, "ada".to_owned())]),
            workers: BTreeSet::new(),
        };
        let s = Domain::Services;
        assert_eq!(decide(&request(s, b"CURVE", &ada), &admitted).2, "ada");
        assert_eq!(decide(&request(s, b"CURVE", &[2; 32]), &admitted).0, "400");
        assert_eq!(decide(&request(s, b"CURVE", b"short"), &admitted).0, "400");
        assert_eq!(decide(&request(s, b"PLAIN", b"x"), &admitted).0, "400");
        assert_eq!(decide(&request(s, b"NULL", b""), &admitted).0, "200");
        assert_eq!(decide(&[b"2.0".to_vec()], &admitted).0, "500");
    }

    #[test]
    fn a_key_opens_the_sockets_of_its_own_domain_only() {
        let (ada, worker) = ([1u8; 32], [3u8; 32]);
        let admitted = Admitted {
            services: BTreeMap::from([(ada, "ada".to_owned())]),
            workers: BTreeSet::from([worker]),
        };
        let (s, w) = (Domain::Services, Domain::Workers);
        assert_eq!(decide(&request(w, b"CURVE", &worker), &admitted).0, "200");
        assert_eq!(decide(&request(w, b"CURVE", &worker), &admitted).2, WORKER);
        assert_eq!(decide(&request(w, b"CURVE", &ada), &admitted).0, "400");
        assert_eq!(decide(&request(s, b"CURVE", &worker), &admitted).0, "400");
        let mut other = request(s, b"CURVE", &ada);
        other[2] = b"elsewhere".to_vec();
        assert_eq!(decide(&other, &admitted).0, "400");
    }
}
