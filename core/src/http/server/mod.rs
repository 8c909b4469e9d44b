//! Accepting HTTP connections and serving the routes on them, within
//! limits that a hostile or slow client cannot get past
//! (`docs/observability.md`, "Limits"; each from `[http]` in the
//! configuration):
//!
//! - at most `max_connections` open at once: one more is answered 503
//!   and closed as soon as it is accepted, never queued. Each
//!   connection's task holds a semaphore permit, so however it ends
//!   (closed, timed out, panicked, aborted) its place is given back;
//! - a request's head must arrive within `header_timeout` (hyper's
//!   `header_read_timeout`), on a new connection and between the
//!   requests of a kept-alive one, which is therefore also how long an
//!   idle connection stays open: hyper has no idle timeout of its own;
//! - its body within `body_timeout` after the head ([`deadline`]);
//! - on `stop`, the listener closes, requests in flight are finished and
//!   idle connections closed; whatever is still open after
//!   [`SHUTDOWN_GRACE`] (a stuck client, an endless response) is dropped,
//!   so no client can hold up the node's exit.
//!
//! HTTP/1 only, with hyper's `http1::Builder` rather than hyper-util's
//! `auto::Builder`. Without HTTP/2 compiled in, `auto` only adds a first
//! read that looks for HTTP/2's preface, and that read is not timed
//! (hyper's header timer starts after it): a client that connected and
//! said nothing would hold its connection forever. Its graceful shutdown
//! also needs hyper-util's `server-auto` feature, which brings in `h2`.

mod deadline;
mod unread;

use std::io;
#[cfg(test)]
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as _;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::node::config::HttpConfig;
use deadline::Deadline;
use unread::{Tracked, close_if_unread};

/// How long a stopping server waits for its open connections.
pub(super) const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The most a connection buffers of what its client sends: a request
/// head larger than this is answered 431. hyper's default (about 400 KiB)
/// would let `max_connections` clients that each send a huge head hold
/// 400 MiB of the node's memory; with this, 64 MiB.
const MAX_BUF: usize = 64 * 1024;

/// A failed `accept` other than a connection gone before it was taken
/// (out of file descriptors, say) is tried again after this, not at once.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// What a connection past `max_connections` is sent before it is closed.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\n\
content-type: text/plain; charset=utf-8\r\ncontent-length: 26\r\n\
connection: close\r\n\r\ntoo many open connections\n";

/// The server's limits: `[http]` in the configuration, and the shutdown
/// grace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    pub(super) max_connections: usize,
    pub(super) header_timeout: Duration,
    pub(super) body_timeout: Duration,
    pub(super) shutdown_grace: Duration,
}

impl From<&HttpConfig> for Limits {
    fn from(config: &HttpConfig) -> Self {
        Self {
            max_connections: config.max_connections,
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// The configuration's defaults.
impl Default for Limits {
    fn default() -> Self {
        Self::from(&HttpConfig::default())
    }
}

/// Serves `routes` on `listener` within `limits` until `stop` is
/// cancelled; returns once every connection is closed, or
/// `limits.shutdown_grace` after `stop`.
pub(super) async fn serve_with(
    listener: TcpListener,
    routes: Router,
    limits: Limits,
    stop: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF);
    let routes = TowerToHyperService::new(routes);
    // More would panic, and is more than a process has descriptors for.
    let slots = Arc::new(Semaphore::new(
        limits.max_connections.min(Semaphore::MAX_PERMITS),
    ));
    let graceful = GracefulShutdown::new();
    let mut open = JoinSet::new();
    let mut refused: u64 = 0;
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            // Finished connections, reaped as they end.
            Some(ended) = open.join_next() => {
                if let Err(e) = ended {
                    tracing::error!(error = %e, "an HTTP connection's task failed");
                }
            }
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(&e, &stop).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    refuse(&stream);
                    refused += 1;
                    if refused % 1000 == 1 {
                        tracing::warn!(%peer, max_connections = limits.max_connections, refused, "refused an HTTP connection: too many open");
                    }
                    continue;
                };
                let routes = routes.clone();
                let body_timeout = limits.body_timeout;
                let service = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
                    let (head, body) = request.into_parts();
                    let (body, ended) = Tracked::new(Deadline::new(body, body_timeout));
                    let answered = routes.call(hyper::Request::from_parts(head, body));
                    async move { answered.await.map(|response| close_if_unread(response, &ended)) }
                });
                let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
                open.spawn(async move {
                    let _slot = slot;
                    if let Err(e) = connection.await {
                        // Timed out, malformed, reset: the client's doing.
                        tracing::debug!(%peer, error = %e, "HTTP connection ended");
                    }
                });
            }
        }
    }
    drop(listener);
    let at_stop = open.len();
    let drained = tokio::time::timeout(limits.shutdown_grace, graceful.shutdown()).await;
    if drained.is_err() {
        while open.try_join_next().is_some() {}
        tracing::warn!(
            open = open.len(),
            at_stop,
            grace = %crate::node::duration::show(limits.shutdown_grace),
            "the HTTP server stopped with connections still open: dropped"
        );
    }
    // Aborts what is left, and waits until it is gone.
    open.shutdown().await;
}

/// Tells a connection past `max_connections` so, if its socket takes the
/// bytes at once (nothing waits on a client here), and closes it.
fn refuse(stream: &TcpStream) {
    let _ = stream.try_write(BUSY);
}

/// After a failed `accept`: nothing to do for a connection that went
/// away before it was taken; otherwise (no file descriptor left, say) a
/// short wait, since trying again at once would fail the same way.
async fn accept_failed(error: &io::Error, stop: &CancellationToken) {
    if matches!(
        error.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    ) {
        return;
    }
    tracing::warn!(error = %error, "cannot accept an HTTP connection");
    tokio::select! {
        () = stop.cancelled() => {}
        () = tokio::time::sleep(ACCEPT_BACKOFF) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::config::NodeConfig;
    use axum::routing::{get, post};
    use std::time::Instant;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Limits short enough for a test, the others the defaults.
    fn limits() -> Limits {
        Limits {
            max_connections: 16,
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            shutdown_grace: Duration::from_secs(60),
        }
    }

    /// Serves `routes` within `limits` on a port of its own: its address,
    /// the token that stops it, and its task.
    async fn start(
        routes: Router,
        limits: Limits,
    ) -> (SocketAddr, CancellationToken, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let at = listener.local_addr().expect("an address");
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve_with(listener, routes, limits, stop.clone()));
        (at, stop, task)
    }

    /// Everything the server sends on `stream` until it closes it (a
    /// reset counts as closed); panics if it does not within 10 s.
    async fn until_closed(stream: &mut TcpStream) -> String {
        let mut got = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut got));
        match read.await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => assert_eq!(e.kind(), io::ErrorKind::ConnectionReset, "{e}"),
            Err(_) => panic!(
                "not closed in 10 s; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
        String::from_utf8_lossy(&got).into_owned()
    }

    async fn ask(at: SocketAddr, path: &str) -> String {
        let mut stream = TcpStream::connect(at).await.expect("connect");
        let head = format!("GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.expect("send");
        until_closed(&mut stream).await
    }

    #[test]
    fn the_limits_are_the_configurations() {
        let toml =
            "[http]\nmax_connections = 8\nheader_timeout = \"500ms\"\nbody_timeout = \"2s\"\n";
        let config = NodeConfig::from_toml("n.toml", toml).expect("valid");
        let limits = Limits::from(&config.http);
        assert_eq!(limits.max_connections, 8);
        assert_eq!(limits.header_timeout, Duration::from_millis(500));
        assert_eq!(limits.body_timeout, Duration::from_secs(2));
        assert_eq!(limits.shutdown_grace, SHUTDOWN_GRACE);
        let defaults = Limits::default();
        assert_eq!(
            (
                defaults.max_connections,
                defaults.header_timeout,
                defaults.body_timeout
            ),
            (1024, Duration::from_secs(10), Duration::from_secs(30))
        );

        let toml = "[http]\nmax_connections = 0\nheader_timeout = \"0s\"\n";
        let e = NodeConfig::from_toml("n.toml", toml).expect_err("invalid");
        assert_eq!(
            e.to_string(),
            "n.toml: http.max_connections must be at least 1; \
             http.header_timeout and http.body_timeout must be at least 1ms"
        );
    }

    #[test]
    fn busy_is_a_whole_response() {
        let text = std::str::from_utf8(BUSY).expect("text");
        let (head, body) = text.split_once("\r\n\r\n").expect("a head and a body");
        assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
        assert!(
            head.contains(&format!("content-length: {}\r\n", body.len())),
            "{head}"
        );
    }

    #[tokio::test]
    async fn past_max_connections_a_connection_is_told_503_and_closed() {
        let routes = Router::new().route("/", get(|| async { "ok" }));
        let (at, stop, task) = start(
            routes,
            Limits {
                max_connections: 1,
                ..limits()
            },
        )
        .await;
        let held = TcpStream::connect(at).await.expect("connect");
        // The held one is surely accepted before the next is.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut refused = TcpStream::connect(at).await.expect("connect");
        let answer = until_closed(&mut refused).await;
        assert_eq!(answer.as_bytes(), BUSY);
        drop(held);
        // Its place is given back.
        let until = Instant::now() + Duration::from_secs(10);
        while !ask(at, "/").await.starts_with("HTTP/1.1 200") {
            assert!(Instant::now() < until, "a closed connection kept its place");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        task.await.expect("the server stops");
    }

    /// One response read from a kept-alive `stream`: its head (names in
    /// lower case) and body, by its content-length.
    async fn one_response(stream: &mut TcpStream) -> (String, String) {
        let mut got = Vec::new();
        let mut byte = [0u8; 1];
        while !got.ends_with(b"\r\n\r\n") {
            let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte))
                .await
                .expect("a response within 10 s")
                .expect("read");
            assert_eq!(
                n,
                1,
                "closed before a whole head: {:?}",
                String::from_utf8_lossy(&got)
            );
            got.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&got).to_lowercase();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a content-length");
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.expect("the body");
        (head, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test]
    async fn a_response_that_leaves_its_request_body_unread_says_connection_close() {
        let routes = Router::new()
            .route("/", get(|| async { "ok" }))
            .route("/read", post(|body: String| async move { body }))
            .route(
                "/refuse",
                post(|| async { (axum::http::StatusCode::BAD_REQUEST, "no") }),
            );
        let (at, stop, task) = start(routes, limits()).await;
        let mut stream = TcpStream::connect(at).await.expect("connect");
        // Bodies read, or none: the connection is kept for the next.
        let read = "POST /read HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nhello";
        stream.write_all(read.as_bytes()).await.expect("send");
        let (head, body) = one_response(&mut stream).await;
        assert!(
            head.starts_with("http/1.1 200") && body == "hello",
            "{head}{body}"
        );
        assert!(!head.contains("connection: close"), "{head}");
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .expect("send");
        let (head, _) = one_response(&mut stream).await;
        assert!(head.starts_with("http/1.1 200"), "{head}");
        assert!(!head.contains("connection: close"), "{head}");
        // A body not read: the answer says the connection ends, and it does.
        let body = "x".repeat(200_000);
        let refuse = format!(
            "POST /refuse HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\n\r\n",
            body.len()
        );
        stream.write_all(refuse.as_bytes()).await.expect("send");
        // Only part of the body: the handler answers before the rest.
        stream
            .write_all(&body.as_bytes()[..1000])
            .await
            .expect("send");
        let (head, _) = one_response(&mut stream).await;
        assert!(head.starts_with("http/1.1 400"), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        until_closed(&mut stream).await;
        stop.cancel();
        task.await.expect("the server stops");
    }

    #[tokio::test]
    async fn a_body_slower_than_body_timeout_fails_and_its_connection_closes() {
        let routes = Router::new().route("/", post(|body: String| async move { body }));
        let limit = Duration::from_millis(300);
        let (at, stop, task) = start(
            routes,
            Limits {
                body_timeout: limit,
                ..limits()
            },
        )
        .await;
        // In time, it is served.
        let mut stream = TcpStream::connect(at).await.expect("connect");
        let request =
            "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\nconnection: close\r\n\r\nhello";
        stream.write_all(request.as_bytes()).await.expect("send");
        let answer = until_closed(&mut stream).await;
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("hello"),
            "{answer}"
        );
        // Five bytes of a hundred, then nothing.
        let mut stream = TcpStream::connect(at).await.expect("connect");
        let started = Instant::now();
        let request = "POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\nhello";
        stream.write_all(request.as_bytes()).await.expect("send");
        let answer = until_closed(&mut stream).await;
        assert!(started.elapsed() >= limit, "{:?}", started.elapsed());
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        assert!(
            answer.contains("did not arrive within body_timeout (300ms)"),
            "{answer}"
        );
        stop.cancel();
        task.await.expect("the server stops");
    }

    #[tokio::test]
    async fn a_stop_finishes_requests_in_flight_and_gives_up_on_a_stuck_client() {
        let (started_tx, started) = tokio::sync::oneshot::channel::<()>();
        let started_tx = Arc::new(std::sync::Mutex::new(Some(started_tx)));
        let slow = move || {
            let started_tx = Arc::clone(&started_tx);
            async move {
                if let Some(tx) = started_tx.lock().ok().and_then(|mut tx| tx.take()) {
                    let _ = tx.send(());
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
                "done"
            }
        };
        let routes = Router::new().route("/slow", get(slow));
        let grace = Duration::from_secs(1);
        let (at, stop, task) = start(
            routes,
            Limits {
                shutdown_grace: grace,
                ..limits()
            },
        )
        .await;
        // Half a head, and no more (header_timeout is a minute here).
        let mut stuck = TcpStream::connect(at).await.expect("connect");
        stuck
            .write_all(b"GET /slow HTTP/1.1\r\nhost:")
            .await
            .expect("send");
        let in_flight = tokio::spawn(ask(at, "/slow"));
        started.await.expect("the request reaches its handler");
        let stopped = Instant::now();
        stop.cancel();
        let answer = in_flight.await.expect("the client");
        assert!(
            answer.starts_with("HTTP/1.1 200") && answer.ends_with("done"),
            "{answer}"
        );
        tokio::time::timeout(grace + Duration::from_secs(10), task)
            .await
            .expect("the server stops within its grace")
            .expect("the server's task");
        assert!(stopped.elapsed() >= grace, "{:?}", stopped.elapsed());
        // The stuck client was dropped, and no one else is taken.
        until_closed(&mut stuck).await;
        assert!(TcpStream::connect(at).await.is_err());
    }
}
