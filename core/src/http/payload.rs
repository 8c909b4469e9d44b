//! Payloads over HTTP: a request's body in JSON or MessagePack (by its
//! `Content-Type`) becomes the MessagePack payload a flow carries, and a
//! result's payload is shown as JSON, or given as it is to a client that
//! accepts MessagePack.

use axum::http::{HeaderMap, StatusCode, header};
use bytes::Bytes;

use super::error::ApiError;
use crate::wire::error_code::ErrorCode;

/// The media type of MessagePack bodies this server writes.
pub(super) const MSGPACK: &str = "application/msgpack";

/// The media types read as MessagePack (the ones in use; none is
/// registered).
const MSGPACK_TYPES: [&str; 3] = [MSGPACK, "application/x-msgpack", "application/vnd.msgpack"];

/// The media type of `headers`' `name`, without its parameters.
fn media_type<'a>(headers: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    let value = headers.get(name)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim())
}

/// True when `headers` ask for a MessagePack answer (`Accept`).
pub(super) fn wants_msgpack(headers: &HeaderMap) -> bool {
    headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|accept| {
            accept.split(',').any(|item| {
                let kind = item.split(';').next().unwrap_or("").trim();
                MSGPACK_TYPES.contains(&kind)
            })
        })
}

/// The MessagePack payload of a request body: JSON (the default when no
/// `Content-Type` is given) is converted; MessagePack is taken as it is
/// (the Subject checks it like any service's).
pub(super) fn from_body(headers: &HeaderMap, body: Bytes) -> Result<Bytes, ApiError> {
    match media_type(headers, &header::CONTENT_TYPE) {
        Some(kind) if MSGPACK_TYPES.contains(&kind) => Ok(body),
        None | Some("application/json" | "") => {
            if body.is_empty() {
                // No body: a nil payload, as a service sends for "nothing".
                return Ok(Bytes::from_static(&[0xc0]));
            }
            let value: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                ApiError::coded(
                    ErrorCode::MalformedMessage,
                    format!("the body is not JSON: {e}"),
                )
            })?;
            rmp_serde::to_vec_named(&value)
                .map(Bytes::from)
                .map_err(|e| ApiError::coded(ErrorCode::MalformedMessage, e.to_string()))
        }
        Some(other) => Err(ApiError::http(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("a body of type {other:?}: send application/json or {MSGPACK}"),
        )),
    }
}

/// A result's payload as JSON; an error when it has no JSON form (binary,
/// extension types, keys that are not strings).
pub(super) fn to_json(payload: &[u8]) -> Result<serde_json::Value, ApiError> {
    zmanager_sdk::decode::<serde_json::Value>(payload).map_err(|e| {
        ApiError::http(
            StatusCode::NOT_ACCEPTABLE,
            "not_json",
            format!("the result has no JSON form ({e}): ask for it with Accept: {MSGPACK}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, kind.parse().unwrap());
        headers
    }

    #[test]
    fn json_bodies_become_messagepack_and_back() {
        let body = Bytes::from_static(br#"{"name":"ada","n":[1,2.5,null]}"#);
        let payload = from_body(&typed("application/json; charset=utf-8"), body).unwrap();
        let back = to_json(&payload).unwrap();
        assert_eq!(
            back,
            serde_json::json!({"name": "ada", "n": [1, 2.5, null]})
        );
        assert_eq!(
            from_body(&HeaderMap::new(), Bytes::new()).unwrap()[..],
            [0xc0]
        );
    }

    #[test]
    fn messagepack_is_taken_as_it_is_and_other_types_are_refused() {
        let raw = Bytes::from_static(&[0x92, 0x01, 0x02]);
        assert_eq!(
            from_body(&typed("application/x-msgpack"), raw.clone()).unwrap(),
            raw
        );
        let refused = from_body(&typed("text/plain"), raw).unwrap_err();
        assert_eq!(refused.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        let bad = from_body(&typed("application/json"), Bytes::from_static(b"{")).unwrap_err();
        assert_eq!(bad.code, Some(ErrorCode::MalformedMessage));
    }

    #[test]
    fn a_payload_without_a_json_form_says_how_to_get_it() {
        // A map with an integer key.
        let refused = to_json(&[0x81, 0x01, 0x02]).unwrap_err();
        assert_eq!(refused.status, StatusCode::NOT_ACCEPTABLE);
        assert!(refused.message.contains("Accept: application/msgpack"));
    }

    #[test]
    fn accept_lists_are_read_item_by_item() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT,
            "text/html, application/vnd.msgpack;q=0.9".parse().unwrap(),
        );
        assert!(wants_msgpack(&headers));
        headers.insert(header::ACCEPT, "application/json".parse().unwrap());
        assert!(!wants_msgpack(&headers));
    }
}
