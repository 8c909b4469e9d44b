//! The component SDK: what a zmanager component implements.
//!
//! A component has a name, a version, a list of actions, and one entry point
//! that turns a request into a response. Requests and responses are
//! MessagePack bytes; most components never see them: [`component!`]
//! writes the [`Component`] implementation from plain functions over your
//! own serde types.
//!
//! ```
//! use serde::{Deserialize, Serialize};
//! use zmanager_sdk::ActionError;
//!
//! #[derive(Debug, Default)]
//! pub struct Greeter;
//!
//! #[derive(Deserialize)]
//! struct Person { name: String }
//!
//! #[derive(Serialize)]
//! struct Greeting { greeting: String }
//!
//! fn greet(person: Person) -> Result<Greeting, ActionError> {
//!     Ok(Greeting { greeting: format!("Hello, {}!", person.name) })
//! }
//!
//! zmanager_sdk::component! {
//!     Greeter as "Greeter" {
//!         "greet" => greet,
//!     }
//! }
//! ```
//!
//! Then either link it into the node ([`register!`], in the component's
//! crate, plus a dependency of `core` on it) or build it as a shared library
//! loaded at run time ([`export_component!`], with `crate-type =
//! ["cdylib"]`). `docs/components.md` walks through both.
//!
//! # Layout
//!
//! - this file: the [`Component`] trait, [`Request`] and [`Context`],
//!   [`ActionError`], MessagePack helpers ([`decode`], [`respond`]);
//! - [`action`]: the [`Action`] trait that lets [`component!`] call plain
//!   functions, and the macro itself;
//! - [`linked`]: registration of components linked into a binary
//!   ([`register!`], [`Linked`]);
//! - [`abi`]: the C ABI of dynamically loaded components
//!   ([`export_component!`]); the only module with `unsafe` code.

use std::fmt;

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Serialize};

pub mod abi;
pub mod action;
pub mod linked;

pub use action::Action;
pub use linked::Linked;

/// Not public API: what the macros expand to.
#[doc(hidden)]
pub mod __private {
    pub use inventory;
}

/// A component: a named set of actions.
///
/// `call` runs on a worker process's thread; a panic inside it is caught by
/// the worker and becomes an error result for that message.
pub trait Component: Send + Sync + 'static {
    /// The name action mappings use (`Name.action`).
    fn name(&self) -> &'static str;
    /// The component's version, for diagnostics (`zmanager check` prints
    /// it). [`component!`] sets it to the crate's version.
    fn version(&self) -> &'static str {
        "unversioned"
    }
    /// Every action `call` accepts.
    fn actions(&self) -> &'static [&'static str];
    /// Runs `action` on `request`; returns the response payload (MessagePack).
    fn call(&self, action: &str, request: &Request<'_>) -> Result<Vec<u8>, ActionError>;
}

/// What an action receives: the payload and where it comes from.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The payload, MessagePack bytes.
    pub payload: &'a [u8],
    pub context: Context<'a>,
}

/// The envelope fields an action may want to read. (`Default` is empty
/// strings and attempt 0, for tests.)
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The message id (stable across redeliveries: use it for idempotence).
    pub message_id: &'a str,
    pub flow: &'a str,
    /// The action key of the step being run.
    pub key: &'a str,
    /// The id of the service that pushed the request.
    pub service: &'a str,
    /// 1 on first delivery, more after a redelivery.
    pub attempt: u32,
}

/// The deepest nesting of arrays and maps any decoder here accepts.
///
/// `rmp_serde`'s own limit (1024) can overflow a 2 MiB thread stack in a
/// debug build, which aborts the process: no `catch_unwind` stops that.
pub const MAX_DEPTH: usize = 256;

/// Decodes MessagePack bytes into `T`, nested at most [`MAX_DEPTH`] deep.
/// Use it for every value read from the network or a file.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    let mut deserializer = rmp_serde::Deserializer::from_read_ref(bytes);
    deserializer.set_max_depth(MAX_DEPTH);
    T::deserialize(&mut deserializer)
}

/// Decodes exactly one dynamically typed MessagePack value: nested at most
/// [`MAX_DEPTH`] deep, no reserved `0xc1` marker (which `rmpv` alone would
/// read as nil), no bytes after it.
pub fn decode_value(bytes: &[u8]) -> Result<rmpv::Value, String> {
    let mut checker = rmp_serde::Deserializer::from_read_ref(bytes);
    checker.set_max_depth(MAX_DEPTH);
    IgnoredAny::deserialize(&mut checker).map_err(|e| e.to_string())?;
    let mut rest = bytes;
    let value = rmpv::decode::read_value(&mut rest).map_err(|e| e.to_string())?;
    if !rest.is_empty() {
        return Err(format!("{} bytes after the value", rest.len()));
    }
    Ok(value)
}

/// A serde error in MessagePack's words, for the people who send payloads:
/// `invalid type: unit value, expected struct Person` becomes `invalid
/// type: nil, expected a map (Person)`.
fn plain(error: &str) -> String {
    let mut text = error
        .replace("unit value", "nil")
        .replace("a sequence", "an array")
        .replace("sequence", "array");
    if let Some(at) = text.find("expected struct ") {
        let name_at = at + "expected struct ".len();
        let end = text[name_at..]
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| name_at + n);
        let name = text[name_at..end].to_owned();
        text.replace_range(at..end, &format!("expected a map ({name})"));
    }
    text
}

impl<'a> Request<'a> {
    /// A request with an empty [`Context`]: for tests.
    pub fn new(payload: &'a [u8]) -> Self {
        Self {
            payload,
            context: Context::default(),
        }
    }

    /// Decodes the payload into `T`; a payload that does not decode is a
    /// [`ErrorKind::BadRequest`].
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, ActionError> {
        decode(self.payload).map_err(|e| {
            ActionError::bad_request(format!(
                "payload does not decode: {}",
                plain(&e.to_string())
            ))
        })
    }

    /// The payload as a dynamically typed value (see [`decode_value`]); a
    /// payload that does not decode is a [`ErrorKind::BadRequest`].
    pub fn value(&self) -> Result<rmpv::Value, ActionError> {
        decode_value(self.payload)
            .map_err(|e| ActionError::bad_request(format!("payload does not decode: {e}")))
    }
}

/// Encodes a response value as MessagePack (maps keep their field names, so
/// any language reads them).
pub fn respond<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, ActionError> {
    rmp_serde::to_vec_named(value)
        .map_err(|e| ActionError::failed(format!("response does not encode: {e}")))
}

/// Why an action did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind}: {message}")]
pub struct ActionError {
    pub kind: ErrorKind,
    pub message: String,
}

/// The kinds of action errors. Each has a stable wire code (see
/// `docs/protocol.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is wrong (a payload that does not decode, a bad value).
    BadRequest,
    /// The action ran and failed.
    Failed,
    /// The component has no such action.
    UnknownAction,
    /// The action panicked; the message is the panic's. Workers produce it
    /// when they catch a panic, and so does a dynamically loaded component
    /// (a panic never unwinds across the library boundary).
    Panicked,
}

impl ActionError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    pub fn failed(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Failed, message)
    }

    pub fn panicked(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Panicked, message)
    }

    /// The error for a caught panic, with the panic's message.
    pub fn from_panic(panic: &(dyn std::any::Any + Send)) -> Self {
        Self::panicked(panic_message(panic))
    }

    pub fn unknown_action(component: &str, action: &str) -> Self {
        Self::new(
            ErrorKind::UnknownAction,
            format!("component {component} has no action {action:?}"),
        )
    }
}

/// The message of a caught panic (`"(no message)"` when it is not a string).
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "(no message)"
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorKind::BadRequest => "bad request",
            ErrorKind::Failed => "action failed",
            ErrorKind::UnknownAction => "unknown action",
            ErrorKind::Panicked => "panicked",
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Person {
        name: String,
    }

    fn context() -> Context<'static> {
        Context {
            message_id: "m1",
            flow: "F",
            key: "?F?a",
            service: "s",
            attempt: 1,
        }
    }

    #[test]
    fn decode_errors_speak_messagepack_not_serde() {
        assert_eq!(
            plain("invalid type: unit value, expected struct Person"),
            "invalid type: nil, expected a map (Person)"
        );
        assert_eq!(
            plain("invalid type: sequence, expected struct Person at x"),
            "invalid type: array, expected a map (Person) at x"
        );
        let nil = [0xc0];
        let error = Request::new(&nil).decode::<Person>().unwrap_err();
        assert_eq!(
            error.message,
            "payload does not decode: invalid type: nil, expected a map (Person)"
        );
    }

    #[test]
    fn decode_and_respond_round_trip() {
        let bytes = respond(&Person { name: "ada".into() }).unwrap();
        let request = Request {
            payload: &bytes,
            context: context(),
        };
        assert_eq!(
            request.decode::<Person>().unwrap(),
            Person { name: "ada".into() }
        );
    }

    #[test]
    fn a_payload_that_does_not_decode_is_a_bad_request() {
        let bytes = respond(&42u32).unwrap();
        let request = Request {
            payload: &bytes,
            context: context(),
        };
        let error = request.decode::<Person>().unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequest);
        assert!(!error.message.contains("struct"), "{error}");
        assert!(
            error.message.starts_with("payload does not decode"),
            "{error}"
        );
    }

    #[test]
    fn nesting_is_limited_and_reserved_bytes_refused() {
        let deep = |n: usize| [vec![0x91; n], vec![0x07]].concat();
        assert!(decode::<rmpv::Value>(&deep(MAX_DEPTH - 1)).is_ok());
        assert!(decode::<IgnoredAny>(&deep(MAX_DEPTH + 1)).is_err());
        assert!(decode_value(&deep(MAX_DEPTH + 1)).is_err());
        assert!(decode_value(b"\xc1").is_err());
        assert_eq!(
            decode_value(b"\x07\x08"),
            Err("1 bytes after the value".into())
        );
        assert_eq!(decode_value(b"\x07"), Ok(rmpv::Value::from(7)));
    }
}
