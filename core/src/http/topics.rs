//! `GET /v1/topics?prefix=…`: what the node publishes on topics starting
//! with a prefix, from the moment of the request, as server-sent events
//! (`docs/http.md`). The HTTP form of a SUB socket's subscription,
//! with the same rule for who may read what
//! ([`Permissions::may_read`]).
//!
//! - `event: message`, `id:` the stream's own count (1, 2, …), `data:` the
//!   publication as one JSON object ([`message_json`]);
//! - `event: lagged`, `data: {"lost": N}`: the client reads more slowly
//!   than the node publishes, and N publications (in all, so far) were
//!   not sent to it. It comes before the first message published after
//!   the loss.
//!
//! A stream never slows the node: it reads from an in-process tap
//! ([`Taps::stream`](crate::integration_manager::Taps::stream)) that holds
//! at most [`CAPACITY`] publications and loses (and counts) what comes past
//! that. At most [`MAX_STREAMS`] are open at once; each ends when the
//! client goes, or when the HTTP server stops (a graceful shutdown waits
//! for every answer to end, and a stream would not end on its own).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;

use super::HttpState;
use super::auth::Caller;
use super::error::ApiError;
use super::payload;
use crate::integration_manager::{Publication, Stream};
use crate::security::Permissions;
use crate::wire::error_code::ErrorCode;

/// The most topic streams open at once: each holds a connection and up to
/// `CAPACITY` publications.
pub const MAX_STREAMS: usize = 64;

/// The publications a stream holds for a client that reads slowly; past
/// it, they are lost and counted (`lagged`).
const CAPACITY: usize = 1024;

/// How often an idle stream sends a comment, so that proxies keep it open
/// and a client that went away is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

#[derive(Debug, Deserialize)]
pub(super) struct Params {
    /// The topic prefix; absent or empty: every topic.
    prefix: Option<String>,
    service: Option<String>,
}

/// The handler.
pub(super) async fn stream(
    State(state): State<HttpState>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = super::error::query(params)?;
    let caller = state
        .identities
        .caller(&headers, params.service.as_deref())?;
    let prefix = params.prefix.unwrap_or_default();
    authorize(&state.permissions, &caller, &prefix)?;
    let permit = Arc::clone(&state.streams)
        .try_acquire_owned()
        .map_err(|_| {
            ApiError::http(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_streams",
                format!(
                    "{MAX_STREAMS} topic streams are open, the most this node serves: close one, or subscribe on the publish socket"
                ),
            )
        })?;
    tracing::debug!(service = %caller.service, prefix = %prefix, "topic stream opened");
    let feed = Feed::new(
        state.taps.stream(prefix, CAPACITY),
        state.stop.clone(),
        permit,
    );
    Ok(Sse::new(feed.events())
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response())
}

/// Refuses a prefix `caller` may not read: the rule of a subscription on
/// the publish socket. On a node without keys everyone reads everything;
/// with `[security]`, a service reads its own results and what its
/// `subscribe` grants cover (the empty prefix only with a `""` grant).
fn authorize(permissions: &Permissions, caller: &Caller, prefix: &str) -> Result<(), ApiError> {
    if permissions.may_read(caller.bound().as_deref(), prefix.as_bytes()) {
        return Ok(());
    }
    Err(ApiError::coded(
        ErrorCode::Forbidden,
        format!(
            "service {:?} may not read topics starting with {prefix:?}: its [security] subscribe grants do not cover them",
            caller.service
        ),
    ))
}

/// One stream's state: its tap, what it told the client, and its place
/// among the [`MAX_STREAMS`] (given back when it is dropped).
#[derive(Debug)]
struct Feed {
    tap: Stream,
    stop: CancellationToken,
    /// Messages sent: the last one's `id`.
    sent: u64,
    /// The loss last told (`lagged`).
    told_lost: u64,
    /// A message held back while a `lagged` goes first.
    held: Option<Publication>,
    _permit: OwnedSemaphorePermit,
}

impl Feed {
    fn new(tap: Stream, stop: CancellationToken, permit: OwnedSemaphorePermit) -> Self {
        Self {
            tap,
            stop,
            sent: 0,
            told_lost: 0,
            held: None,
            _permit: permit,
        }
    }

    /// The events, until the server stops.
    fn events(self) -> impl futures::Stream<Item = Result<Event, Infallible>> {
        futures::stream::unfold(self, |mut feed| async move {
            let event = feed.next().await?;
            Some((Ok(event), feed))
        })
    }

    /// The next event; `None` once the server stops.
    async fn next(&mut self) -> Option<Event> {
        let publication = match self.held.take() {
            Some(held) => held,
            None => tokio::select! {
                biased;
                () = self.stop.cancelled() => return None,
                // Receiving from the tap is cancel-safe (an mpsc channel).
                next = self.tap.next() => next?,
            },
        };
        // A publication that came after a loss was counted sees the count
        // (the tap counts before it hands over the next one): the
        // `lagged` goes out before it.
        let lost = self.tap.lost();
        if lost > self.told_lost {
            self.told_lost = lost;
            self.held = Some(publication);
            let data = serde_json::json!({ "lost": lost });
            return Some(Event::default().event("lagged").data(data.to_string()));
        }
        self.sent += 1;
        Some(
            Event::default()
                .event("message")
                .id(self.sent.to_string())
                .data(message_json(&publication).to_string()),
        )
    }
}

/// A publication as the `data` of a `message` event: its topic, the
/// envelope's `id`, `service`, `flow`, `kind` and `status` (and `error`,
/// on an error result), and the payload as JSON. A payload without a JSON
/// form (binary, extension types, keys that are not strings) is
/// `"payload": null` with the MessagePack bytes in hex beside it,
/// `payload_msgpack_hex`.
fn message_json(publication: &Publication) -> serde_json::Value {
    let e = &publication.message.envelope;
    let mut body = serde_json::json!({
        "topic": publication.topic,
        "id": e.id,
        "service": e.service,
        "flow": e.flow,
        "kind": e.kind,
        "status": e.status,
    });
    match payload::to_json(&publication.message.payload) {
        Ok(value) => body["payload"] = value,
        Err(_) => {
            body["payload"] = serde_json::Value::Null;
            body["payload_msgpack_hex"] = hex(&publication.message.payload).into();
        }
    }
    if let Some(error) = &e.error {
        body["error"] = serde_json::json!({
            "code": error.code.code(),
            "name": error.name,
            "message": error.message,
        });
    }
    body
}

/// Lowercase hex.
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integration_manager::Taps;
    use crate::security::{SecurityConfig, ServiceKey};
    use crate::wire::Message;
    use crate::wire::envelope::{Envelope, ErrorInfo, Kind, Status};

    fn publication(topic: &str, id: &str, payload: &'static [u8]) -> Publication {
        let mut envelope = Envelope::request(id, "Announce");
        envelope.service = "shop".into();
        Publication {
            topic: topic.into(),
            message: Message::new(envelope, bytes::Bytes::from_static(payload)).into(),
        }
    }

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(tokio::sync::Semaphore::new(1))
            .try_acquire_owned()
            .unwrap()
    }

    /// The text axum writes for `event`.
    async fn text(event: Event) -> String {
        let body = Sse::new(futures::stream::iter([Ok::<_, Infallible>(event)])).into_response();
        let bytes = axum::body::to_bytes(body.into_body(), 1 << 20).await;
        String::from_utf8(bytes.unwrap().to_vec()).unwrap()
    }

    fn caller(service: &str, authenticated: bool) -> Caller {
        Caller {
            service: service.into(),
            authenticated,
        }
    }

    #[test]
    fn a_prefix_is_read_under_the_subscription_rule() {
        let key = |id: &str, subscribe: &[&str]| ServiceKey {
            id: id.into(),
            public_key: String::new(),
            subscribe: subscribe.iter().map(|s| (*s).to_owned()).collect(),
            push: vec![],
            answer: vec![],
            register: false,
            operate: false,
            http_token: Some(crate::security::token::show_digest(id)),
        };
        let config = SecurityConfig {
            key_file: "node.key".into(),
            services: vec![
                key("ada", &["Announce~"]),
                key("ops", &[""]),
                key("bob", &[]),
            ],
            workers: vec![],
        };
        let secure = Permissions::of(&config);
        let ada = caller("ada", true);
        assert!(authorize(&secure, &ada, "Announce~").is_ok());
        assert!(authorize(&secure, &ada, "Announce~PUBLISH~").is_ok());
        assert!(authorize(&secure, &ada, "@reply~ada~").is_ok(), "its own");
        for wider in ["", "Ann", "Other~", "@reply~bob~", "@reply~"] {
            let refused = authorize(&secure, &ada, wider).unwrap_err();
            assert_eq!(refused.status, StatusCode::FORBIDDEN, "{wider:?}");
            assert_eq!(refused.code, Some(ErrorCode::Forbidden));
        }
        assert!(authorize(&secure, &caller("ops", true), "").is_ok());
        assert!(authorize(&secure, &caller("bob", true), "Announce~").is_err());
        // A caller no token proved is refused by a node with keys.
        assert!(authorize(&secure, &caller("ada", false), "Announce~").is_err());
        // Without keys, everyone reads everything.
        assert!(authorize(&Permissions::open(), &caller("http", false), "").is_ok());
    }

    #[test]
    fn a_message_carries_its_topic_envelope_and_payload() {
        // {"n": 1}
        let p = publication("Announce~PUBLISH~x", "7", &[0x81, 0xa1, b'n', 0x01]);
        let body = message_json(&p);
        assert_eq!(
            body,
            serde_json::json!({
                "topic": "Announce~PUBLISH~x", "id": "7", "service": "shop",
                "flow": "Announce", "kind": "request", "status": "ok",
                "payload": {"n": 1},
            })
        );
        // A map with an integer key has no JSON form: its bytes in hex.
        let mut p = publication("Announce~~~~done", "8", &[0x81, 0x01, 0x02]);
        let message = std::sync::Arc::make_mut(&mut p.message);
        message.envelope.kind = Kind::Result;
        message.envelope.status = Status::Error;
        message.envelope.error = Some(ErrorInfo {
            code: ErrorCode::ActionFailed,
            name: "action_failed".into(),
            message: "no".into(),
        });
        let body = message_json(&p);
        assert_eq!(body["payload"], serde_json::Value::Null);
        assert_eq!(body["payload_msgpack_hex"], "810102");
        assert_eq!(body["kind"], "result");
        assert_eq!(body["error"]["code"], ErrorCode::ActionFailed.code());
    }

    #[tokio::test]
    async fn a_loss_is_told_before_the_next_message_and_stop_ends_the_stream() {
        let taps = Taps::default();
        let stop = CancellationToken::new();
        let mut feed = Feed::new(taps.stream("Announce~".into(), 2), stop.clone(), permit());
        for id in ["1", "2", "3", "4"] {
            taps.offer(&publication("Announce~x", id, &[0xc0]));
        }
        taps.offer(&publication("Other~x", "9", &[0xc0]));
        let lagged = text(feed.next().await.unwrap()).await;
        assert_eq!(lagged, "event: lagged\ndata: {\"lost\":2}\n\n");
        let first = text(feed.next().await.unwrap()).await;
        assert!(
            first.starts_with("event: message\nid: 1\ndata: {"),
            "{first}"
        );
        assert!(first.contains("\"id\":\"1\""), "{first}");
        let second = text(feed.next().await.unwrap()).await;
        assert!(second.starts_with("event: message\nid: 2\n"), "{second}");
        // Nothing lost since: no second `lagged`.
        taps.offer(&publication("Announce~x", "5", &[0xc0]));
        let third = text(feed.next().await.unwrap()).await;
        assert!(third.contains("\"id\":\"5\""), "{third}");
        stop.cancel();
        assert!(feed.next().await.is_none());
        drop(feed);
        assert_eq!(taps.open(), 0, "the tap is closed with its stream");
    }

    #[test]
    fn hex_is_lowercase_two_digits_a_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }
}
