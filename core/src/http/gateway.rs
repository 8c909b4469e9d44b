//! `POST /v1/flows/{flow}/requests`: a request into a flow over HTTP, made
//! as the caller's service (`auth`) and taken by the Subject exactly as if
//! that service had pushed it to the intake socket — the same checks,
//! grants, duplicates, journal and acknowledgement.
//!
//! - `?wait=5s`: the answer is the result (200, or the error result's
//!   status and code); past the wait, 202 as below.
//! - without `wait`: the request asks for an acknowledgement, and the
//!   answer (202, with a `Location` to poll) comes once the node has taken
//!   it — with the journal on, once it is on disk.
//!
//! The id is the `Idempotency-Key` header, or the `id` query parameter, or
//! a new one: sending a request again with its id is safe, as over ZeroMQ
//! (a request in flight is absorbed; one finished within the dedupe window
//! gets its result again).

use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;

use super::HttpState;
use super::auth::Caller;
use super::error::ApiError;
use super::payload;
use crate::catalog::topic::reply_topic;
use crate::integration_manager::Watch;
use crate::wire::envelope::{Envelope, Kind, Status, now_us};
use crate::wire::error_code::ErrorCode;
use crate::wire::{self, Message};

/// The longest `wait` a request may ask for: a client that wants longer
/// polls (a held connection is memory and a connection slot).
pub(super) const MAX_WAIT: Duration = Duration::from_secs(300);

/// How long a request without `wait` waits for its acknowledgement before
/// the node is called unavailable.
const ACK_WAIT: Duration = Duration::from_secs(10);

/// The most bytes of an id given over HTTP.
const MAX_ID: usize = 256;

#[derive(Debug, Deserialize)]
pub(super) struct Params {
    wait: Option<String>,
    id: Option<String>,
    service: Option<String>,
}

/// The handler.
pub(super) async fn post(
    State(state): State<HttpState>,
    Path(flow): Path<String>,
    params: Result<Query<Params>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Result<Response, ApiError> {
    let params = super::error::query(params)?;
    let caller = state
        .identities
        .caller(&headers, params.service.as_deref())?;
    let wait = match params.wait.as_deref() {
        None => None,
        Some(text) => Some(parse_wait(text)?),
    };
    let id = request_id(&headers, params.id)?;
    let body = read_body(body, state.max_message_bytes).await?;
    let payload = payload::from_body(&headers, body)?;

    let mut envelope = Envelope::request(id, flow);
    envelope.service.clone_from(&caller.service);
    envelope.reply_to = reply_topic(&caller.service);
    envelope.created_us = now_us();
    envelope.ack = wait.is_none();
    if let Some(parent) = text_header(&headers, "traceparent") {
        envelope.traceparent = parent;
        envelope.tracestate = text_header(&headers, "tracestate").unwrap_or_default();
    }
    let message = Message::new(envelope, payload);
    let mut watch = submit(&state, &caller, &message).await?;
    let answer = match wait {
        Some(wait) => until_result(&mut watch, wait).await,
        None => until_taken(&mut watch).await?,
    };
    Ok(match answer {
        Some(result) => result_response(&result, &headers),
        None => accepted_response(&message.envelope),
    })
}

/// Hands `message` to the Subject as `caller`; the watch hears of what is
/// published for it.
pub(super) async fn submit(
    state: &HttpState,
    caller: &Caller,
    message: &Message,
) -> Result<Watch, ApiError> {
    let key = (
        message.envelope.service.clone(),
        message.envelope.id.clone(),
    );
    // Watching first: the answer cannot come before anyone listens.
    let watch = state.taps.watch(key);
    let frames = wire::topic_message(&message.envelope.flow, message);
    // The intake's channel is bounded and the Subject stops taking from it
    // when its pending queue is full: a request waits for room as long as
    // a service's push would, and no longer than this.
    let sent = tokio::time::timeout(ACK_WAIT, state.intake.send((frames, caller.bound())));
    match sent.await {
        Ok(Ok(())) => Ok(watch),
        Ok(Err(_)) => Err(ApiError::unavailable(
            "the node is stopping: it takes no new requests",
        )),
        Err(_) => Err(ApiError::coded(
            ErrorCode::Overloaded,
            format!(
                "the node's intake has had no room for {}s (its pending queue is full): send it again later with the same id",
                ACK_WAIT.as_secs()
            ),
        )),
    }
}

/// The result, if it comes within `wait`.
pub(super) async fn until_result(watch: &mut Watch, wait: Duration) -> Option<Message> {
    let result = async {
        while let Some(message) = watch.next().await {
            if message.envelope.kind == Kind::Result {
                return Some(message);
            }
        }
        None
    };
    tokio::time::timeout(wait, result).await.ok().flatten()
}

/// Waits until the request is taken (its acknowledgement: `None`) or
/// answered at once (a refusal, a duplicate's result: `Some`).
async fn until_taken(watch: &mut Watch) -> Result<Option<Message>, ApiError> {
    let taken = async {
        while let Some(message) = watch.next().await {
            match message.envelope.kind {
                Kind::Accepted => return Some(None),
                Kind::Result => return Some(Some(message)),
                _ => {}
            }
        }
        None
    };
    match tokio::time::timeout(ACK_WAIT, taken).await {
        Ok(Some(answer)) => Ok(answer),
        _ => Err(ApiError::unavailable(format!(
            "the node did not take the request within {}s (overloaded, or its journal cannot commit): send it again with the same id",
            ACK_WAIT.as_secs()
        ))),
    }
}

/// The answer of a request that has a result: 200 with it, or the error
/// result's status. JSON, or the payload itself for a client that accepts
/// MessagePack.
pub(super) fn result_response(result: &Message, headers: &HeaderMap) -> Response {
    let e = &result.envelope;
    if e.status != Status::Ok || e.error.is_some() {
        let error = e
            .error
            .clone()
            .unwrap_or_else(|| crate::wire::envelope::ErrorInfo {
                code: ErrorCode::Other(0),
                name: "unknown".into(),
                message: "an error result without its error".into(),
            });
        let status = super::error::status_of(error.code);
        let body = serde_json::json!({
            "id": e.id,
            "service": e.service,
            "flow": e.flow,
            "status": "error",
            "error": { "code": error.code.code(), "name": error.name, "message": error.message },
        });
        return (status, axum::Json(body)).into_response();
    }
    if payload::wants_msgpack(headers) {
        let mut response = (
            StatusCode::OK,
            [(header::CONTENT_TYPE, payload::MSGPACK)],
            result.payload.clone(),
        )
            .into_response();
        if let Ok(id) = HeaderValue::from_str(&e.id) {
            response.headers_mut().insert("zmanager-id", id);
        }
        return response;
    }
    match payload::to_json(&result.payload) {
        Ok(value) => {
            let body = serde_json::json!({
                "id": e.id,
                "service": e.service,
                "flow": e.flow,
                "status": "ok",
                "result": value,
            });
            (StatusCode::OK, axum::Json(body)).into_response()
        }
        Err(error) => error.into_response(),
    }
}

/// 202: taken, not finished; where to ask for its result.
fn accepted_response(envelope: &Envelope) -> Response {
    let location = location(&envelope.service, &envelope.id);
    let body = serde_json::json!({
        "id": envelope.id,
        "service": envelope.service,
        "flow": envelope.flow,
        "state": "accepted",
        "location": location,
    });
    let mut response = (StatusCode::ACCEPTED, axum::Json(body)).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// Where a request's state is read.
pub(super) fn location(service: &str, id: &str) -> String {
    format!("/v1/requests/{}/{}", escape(service), escape(id))
}

/// Percent-encodes what a path segment cannot hold as is.
fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub(super) fn parse_wait(text: &str) -> Result<Duration, ApiError> {
    let wait = crate::node::duration::parse(text).map_err(|e| {
        ApiError::http(
            StatusCode::BAD_REQUEST,
            "bad_wait",
            format!("wait={text:?}: {e}"),
        )
    })?;
    if wait > MAX_WAIT {
        return Err(ApiError::http(
            StatusCode::BAD_REQUEST,
            "bad_wait",
            format!(
                "wait={text:?}: at most {}s; poll the request's Location for longer",
                MAX_WAIT.as_secs()
            ),
        ));
    }
    Ok(wait)
}

/// The request's id: `Idempotency-Key`, else `?id=`, else a new one.
fn request_id(headers: &HeaderMap, query: Option<String>) -> Result<String, ApiError> {
    let given = match text_header(headers, "idempotency-key") {
        Some(key) => {
            if query.as_ref().is_some_and(|q| *q != key) {
                return Err(bad_id(
                    "the Idempotency-Key header and the id parameter differ",
                ));
            }
            Some(key)
        }
        None => query,
    };
    match given {
        Some(id) if id.is_empty() || id.len() > MAX_ID => Err(bad_id(format!(
            "an id of {} bytes: give 1 to {MAX_ID}",
            id.len()
        ))),
        Some(id) => Ok(id),
        None => {
            let token = crate::security::token::new_token().map_err(ApiError::unavailable)?;
            Ok(format!("http-{}", &token[..32]))
        }
    }
}

fn bad_id(message: impl Into<String>) -> ApiError {
    ApiError::http(StatusCode::BAD_REQUEST, "bad_id", message)
}

fn text_header(headers: &HeaderMap, name: &str) -> Option<String> {
    Some(headers.get(name)?.to_str().ok()?.trim().to_owned())
}

/// Reads a body of at most `limit` bytes; a larger one is refused with
/// the code the intake gives a request past `max_message_bytes`.
async fn read_body(body: axum::body::Body, limit: usize) -> Result<Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let too_large = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if too_large {
            ApiError::coded(
                ErrorCode::TooLarge,
                format!("the body is larger than max_message_bytes ({limit})"),
            )
        } else {
            ApiError::http(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("cannot read the body: {e}"),
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_escape_what_a_path_cannot_hold() {
        assert_eq!(
            location("shop", "order 7/a"),
            "/v1/requests/shop/order%207%2Fa"
        );
    }

    #[test]
    fn waits_are_bounded_and_ids_checked() {
        assert_eq!(parse_wait("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_wait("250ms").unwrap(), Duration::from_millis(250));
        assert!(parse_wait("301s").is_err());
        assert!(parse_wait("soon").is_err());
        let mut headers = HeaderMap::new();
        assert!(request_id(&headers, None).unwrap().starts_with("http-"));
        assert_eq!(request_id(&headers, Some("a".into())).unwrap(), "a");
        headers.insert("idempotency-key", "k1".parse().unwrap());
        assert_eq!(request_id(&headers, None).unwrap(), "k1");
        assert!(request_id(&headers, Some("k2".into())).is_err());
        assert!(request_id(&HeaderMap::new(), Some("x".repeat(257))).is_err());
    }
}
