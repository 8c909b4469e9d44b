//! A request's state and result (`GET /v1/requests/{service}/{id}`) and
//! its journey (`…/journey`): every step of its life the journal recorded.
//!
//! The state comes from the Subject first (where the request is now, or
//! its result within the dedupe window), then from the journal (when it is
//! on). A request is its own service's to read: with `[security]`, a token
//! reads only its service's requests.

use std::sync::{Arc, Mutex};

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use super::HttpState;
use super::error::ApiError;
use super::gateway::result_response;
use super::page;
use super::payload;
use crate::journal::{
    Backend, Event, Journal, MessageState, RecentPage, RecentRequest, RecordedEvent,
};
use crate::subject::{Ask, Whereabouts};

/// The journal, opened to read (`None`: the journal is off).
pub type JournalReader = Option<Arc<Mutex<Backend>>>;

/// `GET /v1/requests/{service}/{id}`.
pub(super) async fn state(
    State(state): State<HttpState>,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.identities.caller(&headers, None)?.must_be(&service)?;
    let (reply, answer) = oneshot::channel();
    state
        .asks
        .send(Ask::Whereabouts((service.clone(), id.clone()), reply))
        .await
        .map_err(|_| ApiError::unavailable("the node is stopping"))?;
    let held = tokio::time::timeout(super::ASK_TIMEOUT, answer)
        .await
        .map_err(|_| ApiError::unavailable("the Subject does not answer"))?
        .map_err(|_| ApiError::unavailable("the node is stopping"))?;
    match held {
        Some(Whereabouts::Finished(result)) => Ok(result_response(&result, &headers)),
        Some(now) => {
            let mut body = serde_json::to_value(&now).unwrap_or(Value::Null);
            body["id"] = json!(id);
            body["service"] = json!(service);
            Ok((StatusCode::OK, Json(body)).into_response())
        }
        None => from_journal(&state.journal, service, id, headers).await,
    }
}

/// What the journal knows of a request the Subject holds nothing of.
async fn from_journal(
    journal: &JournalReader,
    service: String,
    id: String,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let Some(journal) = journal.clone() else {
        return Err(unknown(
            &service,
            &id,
            "the journal is off, and the Subject remembers results for dedupe_window only",
        ));
    };
    let history = read_history(journal, service.clone(), id.clone()).await?;
    let Some(state) = history
        .iter()
        .filter_map(|r| MessageState::after(r.event.kind()))
        .next_back()
    else {
        return Err(unknown(&service, &id, "the journal has no record of it"));
    };
    let result = history.iter().rev().find_map(|r| match &r.event {
        Event::Completed { result, .. } => result.clone(),
        _ => None,
    });
    if let (MessageState::Completed, Some(result)) = (state, &result) {
        return Ok(result_response(result, &headers));
    }
    let mut body = json!({ "id": id, "service": service, "state": state.as_str() });
    if let Some(Event::DeadLettered { reason, .. }) = history.last().map(|r| &r.event) {
        body["reason"] = json!(reason);
    }
    Ok((StatusCode::OK, Json(body)).into_response())
}

#[derive(Debug, serde::Deserialize)]
pub(super) struct ListParams {
    limit: Option<String>,
    before: Option<String>,
    failed: Option<String>,
    service: Option<String>,
}

/// `GET /v1/requests?limit=N&before=SEQ&failed=true`: the journal's
/// requests, newest first, or only the failed ones (by when they failed);
/// every service's, so for a caller that may operate the node.
pub(super) async fn list(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<ListParams>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = super::error::query(query)?;
    state.operator(&headers, params.service.as_deref())?;
    let limit = page::limit(params.limit.as_deref())?;
    let before = page::before(params.before.as_deref(), "a request's `seq`")?;
    let failed = match params.failed.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::http(
                StatusCode::BAD_REQUEST,
                "bad_failed",
                format!("failed={other:?}: true or false"),
            ));
        }
    };
    let Some(journal) = state.journal.clone() else {
        return Err(no_journal("lists requests"));
    };
    // One more than asked: whether there is a next page.
    let page = RecentPage {
        before,
        limit: u32::try_from(limit + 1).unwrap_or(u32::MAX),
        failed,
    };
    let mut listed = tokio::task::spawn_blocking(move || {
        let journal = journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        journal.recent(&page)
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the journal read stopped: {e}")))?
    .map_err(journal_error)?;
    let next = (listed.len() > limit).then(|| listed[limit - 1].seq);
    listed.truncate(limit);
    let requests: Vec<Value> = listed.iter().map(listed_request).collect();
    let body = json!({ "requests": requests, "next": next });
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn listed_request(r: &RecentRequest) -> Value {
    json!({
        "seq": r.seq,
        "service": r.service,
        "id": r.id,
        "flow": r.flow,
        "state": r.state.as_str(),
        "attempts": r.attempts,
        "accepted_us": r.accepted_us,
        "ended_us": r.ended_us,
        "error": r.error,
    })
}

fn no_journal(what: &str) -> ApiError {
    ApiError::http(
        StatusCode::NOT_FOUND,
        "no_journal",
        format!("the journal is off ([journal] enabled = false): nothing {what}"),
    )
}

fn journal_error(e: crate::journal::JournalError) -> ApiError {
    ApiError::http(
        StatusCode::INTERNAL_SERVER_ERROR,
        "journal_error",
        format!("cannot read the journal: {e}"),
    )
}

/// `GET /v1/requests/{service}/{id}/journey`.
pub(super) async fn journey(
    State(state): State<HttpState>,
    Path((service, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.identities.caller(&headers, None)?.must_be(&service)?;
    let Some(journal) = state.journal.clone() else {
        return Err(no_journal("records a request's journey"));
    };
    let history = read_history(journal, service.clone(), id.clone()).await?;
    if history.is_empty() {
        return Err(unknown(&service, &id, "the journal has no record of it"));
    }
    let steps: Vec<Value> = history.iter().map(step).collect();
    let body = json!({ "id": id, "service": service, "steps": steps });
    Ok((StatusCode::OK, Json(body)).into_response())
}

async fn read_history(
    journal: Arc<Mutex<Backend>>,
    service: String,
    id: String,
) -> Result<Vec<RecordedEvent>, ApiError> {
    tokio::task::spawn_blocking(move || {
        let journal = journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        journal.history(&service, &id)
    })
    .await
    .map_err(|e| ApiError::unavailable(format!("the journal read stopped: {e}")))?
    .map_err(journal_error)
}

fn unknown(service: &str, id: &str, why: &str) -> ApiError {
    ApiError::http(
        StatusCode::NOT_FOUND,
        "unknown_request",
        format!("no request {id:?} of service {service:?} is known: {why}"),
    )
}

/// A payload as JSON, or `null` with a note when it has none.
fn shown(payload: &[u8]) -> Value {
    payload::to_json(payload).unwrap_or(Value::Null)
}

/// One step of a journey.
fn step(recorded: &RecordedEvent) -> Value {
    let event = &recorded.event;
    let mut out = json!({
        "seq": recorded.seq,
        "at_us": event.at_us(),
        "event": event.kind().as_str(),
    });
    match event {
        Event::Accepted { message, .. } => {
            out["flow"] = json!(message.envelope.flow);
            out["key"] = json!(message.envelope.key);
            out["payload"] = shown(&message.payload);
            out["envelope"] = serde_json::to_value(&message.envelope).unwrap_or(Value::Null);
        }
        Event::Dispatched {
            attempt, worker, ..
        } => {
            out["attempt"] = json!(attempt);
            out["worker"] = json!(String::from_utf8_lossy(worker));
            // A dispatch after the first: the one before it was lost (a
            // worker that crashed, hung or panicked) or failed and retried.
            out["redelivery"] = json!(*attempt > 1);
        }
        Event::Suspended { step, message, .. } => {
            out["step"] = json!(step);
            out["key"] = json!(message.envelope.key);
        }
        Event::Resumed { step, message, .. } => {
            out["step"] = json!(step);
            out["payload"] = shown(&message.payload);
        }
        Event::Completed { result, .. } => {
            if let Some(result) = result {
                let e = &result.envelope;
                out["status"] = json!(if e.error.is_some() { "error" } else { "ok" });
                out["payload"] = shown(&result.payload);
                out["envelope"] = serde_json::to_value(e).unwrap_or(Value::Null);
                if let Some(error) = &e.error {
                    out["error"] = json!({ "code": error.code.code(), "name": error.name, "message": error.message });
                }
            }
        }
        Event::DeadLettered { reason, .. } => {
            out["reason"] = json!(reason);
        }
    }
    out
}
