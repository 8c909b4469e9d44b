//! What a node has (`docs/http-operate.md`): the services registered with
//! it and the services given steps (`GET /v1/services`), and its workers
//! (`GET /v1/workers`).
//!
//! The services come from service management's built-in flows, pushed
//! through the gateway as the caller's requests, exactly what `zmanager
//! services` sends over ZeroMQ: the Subject answers them, and holds the
//! caller to the same grant (`register`, with `[security]`). The workers
//! come from the Subject's figures, with the supervisor's count of
//! restarts.

use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::auth::Caller;
use super::error::ApiError;
use super::gateway;
use super::payload;
use crate::catalog::topic::reply_topic;
use crate::services::registry;
use crate::wire::Message;
use crate::wire::envelope::{Envelope, Status, now_us};

/// How long the Subject may take to answer a built-in flow (it answers
/// them in the turn it reads them: only a stuck node takes long).
const BUILTIN_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Deserialize)]
pub(super) struct Named {
    service: Option<String>,
}

/// `GET /v1/services`: the registry's list and the services given steps.
pub(super) async fn services(
    State(state): State<HttpState>,
    Query(params): Query<Named>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state
        .identities
        .caller(&headers, params.service.as_deref())?;
    let services = builtin(&state, &caller, registry::LIST).await?;
    let steps = builtin(&state, &caller, registry::STEPS).await?;
    let body = json!({ "services": services, "steps": steps });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// The answer of the built-in flow `flow`, asked with a nil payload as
/// `caller`.
async fn builtin(state: &HttpState, caller: &Caller, flow: &str) -> Result<Value, ApiError> {
    let token = crate::security::token::new_token().map_err(ApiError::unavailable)?;
    let mut envelope = Envelope::request(format!("http-{}", &token[..32]), flow);
    envelope.service.clone_from(&caller.service);
    envelope.reply_to = reply_topic(&caller.service);
    envelope.created_us = now_us();
    let message = Message::new(envelope, bytes::Bytes::from_static(&[0xc0]));
    let mut watch = gateway::submit(state, caller, &message).await?;
    let result = gateway::until_result(&mut watch, BUILTIN_WAIT)
        .await
        .ok_or_else(|| {
            ApiError::unavailable(format!(
                "the node did not answer {flow} within {}s",
                BUILTIN_WAIT.as_secs()
            ))
        })?;
    let e = &result.envelope;
    if let Some(error) = &e.error {
        return Err(ApiError::of_result(error));
    }
    if e.status != Status::Ok {
        return Err(ApiError::unavailable(format!(
            "{flow}: an error result without its error"
        )));
    }
    payload::to_json(&result.payload)
}

/// `GET /v1/workers`: each connected worker, and how many were restarted.
pub(super) async fn workers(
    State(state): State<HttpState>,
    Query(params): Query<Named>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.operator(&headers, params.service.as_deref())?;
    let stats = state
        .ask()
        .await
        .ok_or_else(|| ApiError::unavailable("the Subject does not answer"))?;
    let workers: Vec<Value> = stats
        .workers
        .iter()
        .map(|w| json!({ "pid": w.pid, "in_flight": w.in_flight, "credits": w.credits }))
        .collect();
    let body = json!({
        "workers": workers,
        "restarts": stats.worker_restarts,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}
