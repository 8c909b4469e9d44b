//! Error codes that travel on the wire, in error results.
//!
//! The numbers are stable: a code keeps its meaning forever and a retired
//! code is never reused. `docs/protocol.md` lists them for clients.

use serde::{Deserialize, Serialize};
use zmanager_sdk::ErrorKind;

/// Why a message ended in an error result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u16", try_from = "u16")]
#[non_exhaustive]
pub enum ErrorCode {
    /// A frame that is not an envelope (or not the right number of frames).
    MalformedMessage = 1,
    /// An envelope whose protocol version this node does not speak.
    UnsupportedVersion = 2,
    /// The envelope names a flow the node does not have.
    UnknownFlow = 3,
    /// The envelope's key matches no step of its flow.
    UnknownStep = 4,
    /// A step no mapping resolves, or a component the worker does not have.
    NoMapping = 5,
    /// The action rejected its request (for example a payload that does not
    /// decode).
    BadRequest = 6,
    /// The action ran and returned an error.
    ActionFailed = 7,
    /// The action panicked.
    ActionPanicked = 8,
    /// The component has no such action.
    UnknownAction = 9,
    /// A message with the same id is already in flight.
    DuplicateId = 10,
    /// The step needs a feature this node does not have yet.
    NotSupported = 11,
}

impl ErrorCode {
    pub const ALL: [ErrorCode; 11] = [
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
    ];

    /// The snake_case name carried next to the code in error results.
    pub fn name(self) -> &'static str {
        match self {
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
        }
    }
}

impl From<ErrorCode> for u16 {
    fn from(code: ErrorCode) -> u16 {
        code as u16
    }
}

impl TryFrom<u16> for ErrorCode {
    type Error = String;

    fn try_from(value: u16) -> Result<Self, Self::Error> {
        ErrorCode::ALL
            .into_iter()
            .find(|c| *c as u16 == value)
            .ok_or_else(|| format!("unknown error code {value}"))
    }
}

impl From<ErrorKind> for ErrorCode {
    fn from(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::BadRequest => ErrorCode::BadRequest,
            ErrorKind::UnknownAction => ErrorCode::UnknownAction,
            _ => ErrorCode::ActionFailed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_stable() {
        let codes: Vec<(u16, &str)> = ErrorCode::ALL.iter().map(|c| (*c as u16, c.name())).collect();
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
            ]
        );
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::try_from(u16::from(code)), Ok(code));
        }
        assert!(ErrorCode::try_from(999).is_err());
    }
}
