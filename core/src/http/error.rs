//! An HTTP error: the status, and a JSON body with the stable error code
//! and name the ZeroMQ protocol uses (`docs/protocol.md` §6), so a client
//! tells errors apart the same way over either.

use axum::Json;
use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};

use crate::wire::envelope::ErrorInfo;
use crate::wire::error_code::ErrorCode;

/// An error answered over HTTP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// The stable code; `None` for errors of HTTP itself (an unknown path,
    /// a missing token), which have no code on the wire.
    pub code: Option<ErrorCode>,
    /// The name given without a code: `not_found`, `unauthorized`, …
    pub name: &'static str,
    pub message: String,
}

impl ApiError {
    /// An error with a wire code, at the status [`status_of`] gives it.
    pub fn coded(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            status: status_of(code),
            code: Some(code),
            name: code.name(),
            message: message.into(),
        }
    }

    /// An error of HTTP itself.
    pub fn http(status: StatusCode, name: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: None,
            name,
            message: message.into(),
        }
    }

    /// The error of an error result.
    pub fn of_result(error: &ErrorInfo) -> Self {
        Self::coded(error.code, error.message.clone())
    }

    /// The node cannot answer now (the Subject is stopping or does not
    /// answer in time).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::http(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

/// The parameters of a query string, or a JSON error naming what is wrong
/// with it (axum's own rejection is plain text).
pub(super) fn query<T>(
    got: Result<axum::extract::Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    got.map(|axum::extract::Query(params)| params)
        .map_err(|e| ApiError::http(StatusCode::BAD_REQUEST, "bad_query", e.body_text()))
}

/// The HTTP status of an error result with `code`: 4xx where the request
/// is at fault, 5xx where the node or the application is.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::MalformedMessage
        | ErrorCode::UnsupportedVersion
        | ErrorCode::BadRequest
        | ErrorCode::NotAnEntry
        | ErrorCode::UnknownStep => StatusCode::BAD_REQUEST,
        ErrorCode::UnknownFlow | ErrorCode::UnknownService | ErrorCode::UnknownAsync => {
            StatusCode::NOT_FOUND
        }
        ErrorCode::DuplicateId => StatusCode::CONFLICT,
        ErrorCode::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::WrongService | ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::ActionFailed => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::NotSupported => StatusCode::NOT_IMPLEMENTED,
        ErrorCode::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::AsyncTimeout => StatusCode::GATEWAY_TIMEOUT,
        ErrorCode::NoMapping
        | ErrorCode::ActionPanicked
        | ErrorCode::UnknownAction
        | ErrorCode::DeadLettered
        | ErrorCode::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "error": {
                "code": self.code.map(ErrorCode::code),
                "name": self.name,
                "message": self.message,
            }
        });
        let mut response = (self.status, Json(body)).into_response();
        if self.code == Some(ErrorCode::Overloaded) {
            response
                .headers_mut()
                .insert(RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_status_that_blames_the_right_side() {
        for code in ErrorCode::ALL {
            let status = status_of(code);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{code:?}"
            );
        }
        assert_eq!(status_of(ErrorCode::UnknownFlow), StatusCode::NOT_FOUND);
        assert_eq!(
            status_of(ErrorCode::TooLarge),
            StatusCode::PAYLOAD_TOO_LARGE
        );
        assert_eq!(
            status_of(ErrorCode::Other(999)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
