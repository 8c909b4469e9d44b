//! Error codes that travel on the wire, in error results.
//!
//! The numbers are stable: a code keeps its meaning forever and a retired
//! code is never reused. `docs/protocol.md` lists them for clients.

use serde::{Deserialize, Serialize};
use zmanager_sdk::ErrorKind;

/// Why a message ended in an error result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", from = "u16")]
// Not `#[non_exhaustive]`, though a later protocol adds codes: a code this
// version does not know is read as `Other(n)`, so a client never fails on
// one; and the node's crates match every code exhaustively (the HTTP
// status of each, `zmanager::http::error::status_of`), which a new code
// must fail to build until it is given one. In the crate that defines the
// enum `#[non_exhaustive]` did not stop that; across crates it would.
pub enum ErrorCode {
    /// A frame that is not an envelope (or not the right number of frames).
    MalformedMessage,
    /// An envelope whose protocol version this node does not speak.
    UnsupportedVersion,
    /// The envelope names a flow the node does not have.
    UnknownFlow,
    /// The envelope's key matches no step of its flow.
    UnknownStep,
    /// A step no mapping resolves, or a component the worker does not have.
    NoMapping,
    /// The action rejected its request (for example a payload that does not
    /// decode).
    BadRequest,
    /// The action ran and returned an error.
    ActionFailed,
    /// The action panicked.
    ActionPanicked,
    /// The component has no such action.
    UnknownAction,
    /// A message with the same id is already in flight.
    DuplicateId,
    /// The step needs a feature this node does not have yet.
    NotSupported,
    /// The node cannot take the request now; send it again later.
    Overloaded,
    /// Delivered `max_attempts` times without a result (worker crashes,
    /// hangs, panics): kept in the dead-letter store.
    DeadLettered,
    /// An answer (a `result` from a service) for no suspended flow: unknown
    /// `origin`/`id`, already answered, or timed out.
    UnknownAsync,
    /// A flow suspended at an `@ASYNC` step got no answer within
    /// `async_timeout`.
    AsyncTimeout,
    /// A service-management request names a service that is not registered.
    UnknownService,
    /// The request (envelope and payload) is larger than the node's
    /// `max_message_bytes`.
    TooLarge,
    /// The request's key names a step of its flow that is not an entry
    /// point (step 0, or a step the flow marks `entry`).
    NotAnEntry,
    /// With security on: the message's `service` is not the id its key is
    /// bound to, or its `reply_to` is another service's topic.
    WrongService,
    /// With security on: the service may not do this (push into this flow,
    /// answer this `@ASYNC` step, use service management).
    Forbidden,
    /// A code this build does not know (sent by a newer node): kept, so an
    /// older client still reads the rest of the result.
    Other(u16),
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::MalformedMessage,
        ErrorCode::UnsupportedVersion,
        ErrorCode::UnknownFlow,
        ErrorCode::UnknownStep,
        ErrorCode::NoMapping,
        ErrorCode::BadRequest,
        ErrorCode::ActionFailed,
        ErrorCode::ActionPanicked,
        ErrorCode::UnknownAction,
        ErrorCode::DuplicateId,
        ErrorCode::NotSupported,
        ErrorCode::Overloaded,
        ErrorCode::DeadLettered,
        ErrorCode::UnknownAsync,
        ErrorCode::AsyncTimeout,
        ErrorCode::UnknownService,
        ErrorCode::TooLarge,
        ErrorCode::NotAnEntry,
        ErrorCode::WrongService,
        ErrorCode::Forbidden,
    ];

    /// The stable number.
    pub fn code(self) -> u16 {
        match self {
            ErrorCode::MalformedMessage => 1,
            ErrorCode::UnsupportedVersion => 2,
            ErrorCode::UnknownFlow => 3,
            ErrorCode::UnknownStep => 4,
            ErrorCode::NoMapping => 5,
            ErrorCode::BadRequest => 6,
            ErrorCode::ActionFailed => 7,
            ErrorCode::ActionPanicked => 8,
            ErrorCode::UnknownAction => 9,
            ErrorCode::DuplicateId => 10,
            ErrorCode::NotSupported => 11,
            ErrorCode::Overloaded => 12,
            ErrorCode::DeadLettered => 13,
            ErrorCode::UnknownAsync => 14,
            ErrorCode::AsyncTimeout => 15,
            ErrorCode::UnknownService => 16,
            ErrorCode::TooLarge => 17,
            ErrorCode::NotAnEntry => 18,
            ErrorCode::WrongService => 19,
            ErrorCode::Forbidden => 20,
            ErrorCode::Other(code) => code,
        }
    }

    /// The snake_case name carried next to the code in error results.
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::Other(_) => "unknown",
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::UnknownFlow => "unknown_flow",
            ErrorCode::UnknownStep => "unknown_step",
            ErrorCode::NoMapping => "no_mapping",
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::ActionFailed => "action_failed",
            ErrorCode::ActionPanicked => "action_panicked",
            ErrorCode::UnknownAction => "unknown_action",
            ErrorCode::DuplicateId => "duplicate_id",
            ErrorCode::NotSupported => "not_supported",
            ErrorCode::Overloaded => "overloaded",
            ErrorCode::DeadLettered => "dead_lettered",
            ErrorCode::UnknownAsync => "unknown_async",
            ErrorCode::AsyncTimeout => "async_timeout",
            ErrorCode::UnknownService => "unknown_service",
            ErrorCode::TooLarge => "too_large",
            ErrorCode::NotAnEntry => "not_an_entry",
            ErrorCode::WrongService => "wrong_service",
            ErrorCode::Forbidden => "forbidden",
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code.code()
    }
}

impl From<u16> for ErrorCode {
    fn from(value: u16) -> Self {
        ErrorCode::ALL
            .into_iter()
            .find(|c| c.code() == value)
            .unwrap_or(ErrorCode::Other(value))
    }
}

impl From<ErrorKind> for ErrorCode {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::BadRequest => ErrorCode::BadRequest,
            ErrorKind::UnknownAction => ErrorCode::UnknownAction,
            ErrorKind::Panicked => ErrorCode::ActionPanicked,
            _ => ErrorCode::ActionFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let codes: Vec<(u16, &str)> = ErrorCode::ALL
            .iter()
            .map(|c| (c.code(), c.name()))
            .collect();
        assert_eq!(
            codes,
            [
                (1, "malformed_message"),
                (2, "unsupported_version"),
                (3, "unknown_flow"),
                (4, "unknown_step"),
                (5, "no_mapping"),
                (6, "bad_request"),
                (7, "action_failed"),
                (8, "action_panicked"),
                (9, "unknown_action"),
                (10, "duplicate_id"),
                (11, "not_supported"),
                (12, "overloaded"),
                (13, "dead_lettered"),
                (14, "unknown_async"),
                (15, "async_timeout"),
                (16, "unknown_service"),
                (17, "too_large"),
                (18, "not_an_entry"),
                (19, "wrong_service"),
                (20, "forbidden"),
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::from(u16::from(code)), code);
        }
        // A code from a newer node is kept, not a decode failure.
        assert_eq!(ErrorCode::from(999), ErrorCode::Other(999));
        assert_eq!(u16::from(ErrorCode::Other(999)), 999);
    }
}
