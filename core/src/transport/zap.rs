//! The ZAP handler (ZeroMQ RFC 27): libzmq asks it, for every connection
//! to a listening socket of the node, whether the peer may connect, and
//! stamps every message of an accepted connection with the `User-Id` it
//! answers — on a CURVE socket, the service id the key is bound to.
//!
//! It decides two things:
//! - **how many**: a socket has at most `max_connections` open; a peer
//!   finishing its handshake beyond that is refused (status 300), whatever
//!   its mechanism. The count is of every open connection, those still in
//!   their handshake included ([`Connections`], kept from the socket's
//!   monitor events);
//! - **who**, with keys: each socket names a [`Domain`]; the intake and
//!   publish sockets admit the services' keys, the workers socket the
//!   workers' keys (the one the node made for its own workers at start,
//!   and those `[security]` lists for workers started by hand). A
//!   service's key does not open the workers socket, nor a worker's the
//!   intake.
//!
//! It runs on a thread of its own with a REP socket on
//! `inproc://zeromq.zap.01` in the node's context, bound before any socket
//! that asks it; it holds the context, so it lives as long as the node's
//! process (it ends if the context is ever terminated).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::security::{Key, z85};

/// Which of the node's sockets asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Domain {
    Intake,
    Workers,
    Publish,
}

impl Domain {
    const ALL: [Domain; 3] = [Domain::Intake, Domain::Workers, Domain::Publish];

    /// The name the socket gives in its ZAP requests.
    pub fn as_str(self) -> &'static str {
        match self {
            Domain::Intake => "zmanager-intake",
            Domain::Workers => "zmanager-workers",
            Domain::Publish => "zmanager-publish",
        }
    }

    fn index(self) -> usize {
        self as usize
    }

    fn of(name: &[u8]) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|d| d.as_str().as_bytes() == name)
    }
}

/// How many connections each socket has open, kept from its monitor's
/// events (`transport::monitor`), and the monitors themselves: the
/// handler reads every event they have issued before it decides, so a
/// connection it is asked about is always counted, however busy the
/// machine.
#[derive(Debug, Clone, Default)]
pub struct Connections(Arc<[AtomicUsize; 3]>, pub(super) super::monitor::Monitors);

impl Connections {
    /// The open connections of `domain`'s socket.
    pub fn get(&self, domain: Domain) -> usize {
        self.0[domain.index()].load(Ordering::Relaxed)
    }

    pub(super) fn set(&self, domain: Domain, open: usize) {
        self.0[domain.index()].store(open, Ordering::Relaxed);
    }
}

/// What the handler decides with.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The keys admitted; `None`: the sockets have no keys (NULL).
    pub admitted: Option<Admitted>,
    /// The most connections a socket may have open.
    pub max_connections: usize,
    pub connections: Connections,
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

/// Starts the handler deciding by `gate`.
pub fn start(
    context: &zmq::Context,
    gate: Gate,
) -> Result<std::thread::JoinHandle<()>, zmq::Error> {
    let socket = context.socket(zmq::REP)?;
    socket.set_linger(0)?;
    socket.bind("inproc://zeromq.zap.01")?;
    let thread = std::thread::Builder::new()
        .name("zap".to_owned())
        .spawn(move || serve(&socket, &gate))
        .map_err(|_| zmq::Error::EMFILE)?;
    Ok(thread)
}

/// How long the handler waits for a request before it reads the
/// monitors' events anyway (a monitor added since is watched from then).
const POLL_MS: i64 = 100;

fn serve(socket: &zmq::Socket, gate: &Gate) {
    loop {
        let asked = match gate.connections.1.wait(socket, POLL_MS, &gate.connections) {
            Ok(asked) => asked,
            Err(zmq::Error::ETERM) => return,
            Err(e) => {
                tracing::warn!(error = %e, "ZAP handler poll failed");
                continue;
            }
        };
        if !asked {
            continue;
        }
        let request = match socket.recv_multipart(zmq::DONTWAIT) {
            Ok(request) => request,
            Err(zmq::Error::ETERM) => return,
            Err(zmq::Error::EAGAIN) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "ZAP handler receive failed");
                continue;
            }
        };
        let (status, text, user) = decide(&request, gate);
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

/// Refusals for too many connections, for the log (the first, then one
/// line in a thousand).
static CROWDED: AtomicU64 = AtomicU64::new(0);

/// Status, status text and user id for one request: `[version,
/// request_id, domain, address, identity, mechanism, credentials...]`.
fn decide(request: &[Vec<u8>], gate: &Gate) -> (&'static str, String, String) {
    let field = |i: usize| request.get(i).map_or(&[][..], Vec::as_slice);
    if request.len() < 6 || field(0) != b"1.0" {
        return ("500", "malformed ZAP request".to_owned(), String::new());
    }
    let address = String::from_utf8_lossy(field(3)).into_owned();
    let Some(domain) = Domain::of(field(2)) else {
        return ("400", "unknown domain".to_owned(), String::new());
    };
    // This connection is one of those counted.
    let open = gate.connections.get(domain);
    if open > gate.max_connections {
        let n = CROWDED.fetch_add(1, Ordering::Relaxed);
        if n.is_multiple_of(1000) {
            tracing::warn!(socket = domain.as_str(), %address, open, max_connections = gate.max_connections, refused = n + 1, "refused a connection: too many open");
        }
        return ("300", "too many connections".to_owned(), String::new());
    }
    match (field(5), &gate.admitted) {
        (b"CURVE", Some(admitted)) => {
            let Ok(key) = Key::try_from(field(6)) else {
                return ("400", "no client key".to_owned(), String::new());
            };
            let found = match domain {
                Domain::Intake | Domain::Publish => admitted.services.get(&key).cloned(),
                Domain::Workers => admitted.workers.contains(&key).then(|| WORKER.to_owned()),
            };
            match found {
                Some(id) => {
                    tracing::debug!(user = %id, %address, "key accepted");
                    ("200", "OK".to_owned(), id)
                }
                None => {
                    tracing::warn!(key = %z85(&key), %address, socket = domain.as_str(), "refused a connection: its key is not in [security]");
                    ("400", "unknown key".to_owned(), String::new())
                }
            }
        }
        // A socket without keys: only the count is the handler's to judge
        // (a CURVE socket never lets a NULL peer get this far).
        (b"NULL", None) => ("200", "OK".to_owned(), String::new()),
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

    fn gate(admitted: Option<Admitted>) -> Gate {
        Gate {
            admitted,
            max_connections: 10,
            connections: Connections::default(),
        }
    }

    #[test]
    fn a_listed_key_is_its_service_and_no_other_key_gets_in() {
        let ada = [1u8; 32];
        let gate = gate(Some(Admitted {
            services: BTreeMap::from([(ada, "ada".to_owned())]),
            workers: BTreeSet::new(),
        }));
        let s = Domain::Intake;
        assert_eq!(decide(&request(s, b"CURVE", &ada), &gate).2, "ada");
        assert_eq!(
            decide(&request(Domain::Publish, b"CURVE", &ada), &gate).2,
            "ada"
        );
        assert_eq!(decide(&request(s, b"CURVE", &[2; 32]), &gate).0, "400");
        assert_eq!(decide(&request(s, b"CURVE", b"short"), &gate).0, "400");
        assert_eq!(decide(&request(s, b"PLAIN", b"x"), &gate).0, "400");
        assert_eq!(decide(&request(s, b"NULL", b""), &gate).0, "400");
        assert_eq!(decide(&[b"2.0".to_vec()], &gate).0, "500");
    }

    #[test]
    fn a_key_opens_the_sockets_of_its_own_domain_only() {
        let (ada, worker) = ([1u8; 32], [3u8; 32]);
        let gate = gate(Some(Admitted {
            services: BTreeMap::from([(ada, "ada".to_owned())]),
            workers: BTreeSet::from([worker]),
        }));
        let (s, w) = (Domain::Intake, Domain::Workers);
        assert_eq!(decide(&request(w, b"CURVE", &worker), &gate).0, "200");
        assert_eq!(decide(&request(w, b"CURVE", &worker), &gate).2, WORKER);
        assert_eq!(decide(&request(w, b"CURVE", &ada), &gate).0, "400");
        assert_eq!(decide(&request(s, b"CURVE", &worker), &gate).0, "400");
        let mut other = request(s, b"CURVE", &ada);
        other[2] = b"elsewhere".to_vec();
        assert_eq!(decide(&other, &gate).0, "400");
    }

    #[test]
    fn a_socket_with_its_connections_full_refuses_the_next() {
        let gate = gate(None);
        let d = Domain::Publish;
        gate.connections.set(d, 10);
        assert_eq!(
            decide(&request(d, b"NULL", b""), &gate).0,
            "200",
            "the 10th"
        );
        gate.connections.set(d, 11);
        assert_eq!(
            decide(&request(d, b"NULL", b""), &gate).0,
            "300",
            "the 11th"
        );
        assert_eq!(
            decide(&request(Domain::Intake, b"NULL", b""), &gate).0,
            "200",
            "per socket"
        );
        // Keys or not.
        let ada = [1u8; 32];
        let mut keyed = gate.clone();
        keyed.admitted = Some(Admitted {
            services: BTreeMap::from([(ada, "ada".to_owned())]),
            workers: BTreeSet::new(),
        });
        assert_eq!(decide(&request(d, b"CURVE", &ada), &keyed).0, "300");
    }
}
