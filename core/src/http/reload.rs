//! `POST /v1/reload` (`docs/reload.md`): reload the node's flows and
//! mappings from its configured directories, or with `dry_run=true` say
//! what a reload would change. What `zmanager reload` and SIGHUP do.
//!
//! With `[security]`, for a service granted `operate`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::HttpState;
use super::error::{self, ApiError};

#[derive(Debug, serde::Deserialize)]
pub(super) struct Params {
    dry_run: Option<String>,
    service: Option<String>,
}

pub(super) async fn reload(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<Params>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = error::query(query)?;
    state.operator(&headers, params.service.as_deref())?;
    let dry_run = match params.dry_run.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::http(
                StatusCode::BAD_REQUEST,
                "bad_dry_run",
                format!("dry_run={other:?}: true or false"),
            ));
        }
    };
    let Some(reloader) = &state.reloader else {
        return Err(ApiError::unavailable("this node does not reload"));
    };
    let outcome = reloader
        .reload(dry_run)
        .await
        .map_err(ApiError::unavailable)?;
    // Files with errors change nothing: the request was not one the node
    // could take.
    let status = if outcome.outcome == "invalid" {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Json(outcome)).into_response())
}
