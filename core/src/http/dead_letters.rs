//! Dead letters over HTTP (`docs/http-operate.md`): a page of them
//! (`GET /v1/dead-letters`), one in full (`GET /v1/dead-letters/{seq}`),
//! and its replay (`POST /v1/dead-letters/{seq}/replay`).
//!
//! A replay is what `zmanager dlq replay` does ([`crate::dead_letter::replay`]:
//! the same step to resume at, the node's operator cookie, the same
//! recording and settling), pushed through the gateway as a request of
//! the caller's service and waited for with the taps. It runs in a task
//! of its own: a client that goes away does not leave it unsettled.
//!
//! The store is read with a connection of each request's own, off the
//! runtime; pages are read by the primary key, so a page costs the same
//! with a hundred thousand letters stored as with ten.
//!
//! With `[security]`, all of this is for a service granted `operate`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::HttpState;
use super::error::ApiError;
use super::gateway::{self, location};
use super::page;
use super::payload;
use crate::catalog::topic::reply_topic;
use crate::dead_letter::replay::{self, Replayed, Settled};
use crate::dead_letter::{DeadLetterLog as _, DeadLetterStore, StoreError, Summary};
use crate::integration_manager::Watch;
use crate::wire::Message;
use crate::wire::envelope::{Envelope, Kind, now_us};
use zmanager_client::Outcome;

/// How long a replay waits for its result when the request does not say.
const DEFAULT_WAIT: Duration = Duration::from_secs(30);

/// The dead letters being replayed now: a second replay of one of them is
/// refused until the first is settled (it would run the message twice).
#[derive(Debug, Clone, Default)]
pub struct Replaying(Arc<Mutex<HashSet<i64>>>);

impl Replaying {
    /// Takes `seq` for a replay; `None` if one is under way.
    fn claim(&self, seq: i64) -> Option<Claim> {
        let taken = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(seq);
        taken.then(|| Claim {
            set: Arc::clone(&self.0),
            seq,
        })
    }
}

/// A dead letter taken for a replay, given back when dropped.
#[derive(Debug)]
struct Claim {
    set: Arc<Mutex<HashSet<i64>>>,
    seq: i64,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&self.seq);
    }
}

#[derive(Debug, Deserialize)]
pub(super) struct PageParams {
    limit: Option<String>,
    before: Option<String>,
    service: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Named {
    service: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct ReplayParams {
    wait: Option<String>,
    force: Option<String>,
    service: Option<String>,
}

/// `GET /v1/dead-letters?limit=N&before=SEQ`: newest first.
pub(super) async fn list(
    State(state): State<HttpState>,
    Query(params): Query<PageParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.operator(&headers, params.service.as_deref())?;
    let limit = page::limit(params.limit.as_deref())?;
    let before = page::before(params.before.as_deref(), "a dead letter's number")?;
    let (page, superseded) = with_store(&state, move |store| {
        // One more than asked: whether there is a next page.
        let page = store.page(before, limit + 1)?;
        let superseded = page
            .iter()
            .take(limit)
            .map(|d| store.superseded_by(d.seq))
            .collect::<Result<Vec<_>, _>>()?;
        Ok((page, superseded))
    })
    .await?;
    let next = (page.len() > limit).then(|| page[limit - 1].seq);
    let letters: Vec<Value> = page
        .iter()
        .zip(superseded)
        .map(|(d, by)| summary(d, by))
        .collect();
    let body = json!({ "dead_letters": letters, "next": next });
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn summary(d: &Summary, superseded_by: Option<i64>) -> Value {
    json!({
        "seq": d.seq,
        "flow": d.flow,
        "service": d.service,
        "id": d.id,
        "attempts": d.attempts,
        "errors": d.errors,
        "at_us": d.at_us,
        "replayed_us": d.replayed_us,
        "superseded_by": superseded_by,
    })
}

/// `GET /v1/dead-letters/{seq}`: with its payload and replays.
pub(super) async fn show(
    State(state): State<HttpState>,
    Path(seq): Path<String>,
    Query(params): Query<Named>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state.operator(&headers, params.service.as_deref())?;
    let seq = parse_seq(&seq)?;
    let (letter, replays, superseded) = with_store(&state, move |store| {
        let Some(letter) = store.get(seq)? else {
            return Ok(None);
        };
        Ok(Some((
            letter,
            store.replays(seq)?,
            store.superseded_by(seq)?,
        )))
    })
    .await?
    .ok_or_else(|| unknown(seq))?;
    let e = &letter.message.envelope;
    let replays: Vec<Value> = replays
        .iter()
        .map(|r| json!({ "at_us": r.at_us, "outcome": r.outcome, "dead_letter": r.dead_letter }))
        .collect();
    let body = json!({
        "seq": letter.seq,
        "flow": e.flow,
        "service": e.service,
        "id": e.id,
        "step": e.step,
        "key": e.key,
        "order_key": e.order_key,
        "reply_to": e.reply_to,
        "attempts": e.attempt,
        "accepted_us": e.accepted_us,
        "at_us": letter.at_us,
        "errors": letter.errors,
        "replayed_us": letter.replayed_us,
        "superseded_by": superseded,
        "payload": payload::to_json(&letter.message.payload).unwrap_or(Value::Null),
        "replays": replays,
    });
    Ok((StatusCode::OK, Json(body)).into_response())
}

/// `POST /v1/dead-letters/{seq}/replay?wait=30s&force=true`.
pub(super) async fn replay(
    State(state): State<HttpState>,
    Path(seq): Path<String>,
    Query(params): Query<ReplayParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let caller = state.operator(&headers, params.service.as_deref())?;
    let seq = parse_seq(&seq)?;
    let wait = match params.wait.as_deref() {
        None => DEFAULT_WAIT,
        Some(text) => gateway::parse_wait(text)?,
    };
    let force = match params.force.as_deref() {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad("bad_force", format!("force={other:?}: true or false"))),
    };
    let claim = state.replaying.claim(seq).ok_or_else(|| {
        ApiError::http(
            StatusCode::CONFLICT,
            "replay_in_progress",
            format!("dead letter #{seq} is being replayed now: wait for that replay's answer"),
        )
    })?;
    let (letter, superseded) = with_store(&state, move |store| {
        let Some(letter) = store.get(seq)? else {
            return Ok(None);
        };
        Ok(Some((letter, store.superseded_by(seq)?)))
    })
    .await?
    .ok_or_else(|| unknown(seq))?;
    if !force {
        if letter.replayed_us.is_some() {
            return Err(ApiError::http(
                StatusCode::CONFLICT,
                "already_replayed",
                format!("dead letter #{seq} was replayed already: add ?force=true to run it again"),
            ));
        }
        if let Some(new) = superseded {
            return Err(ApiError::http(
                StatusCode::CONFLICT,
                "superseded",
                format!(
                    "dead letter #{seq} was dead-lettered again as #{new}, which holds it now: replay #{new} (or add ?force=true to replay #{seq} as well)"
                ),
            ));
        }
    }
    let request = replay::request(&state.catalog.get(), &letter).map_err(|why| {
        ApiError::http(
            StatusCode::CONFLICT,
            "not_resumable",
            format!("dead letter #{seq} is not sent: {why} (it was dead-lettered under other flows); not replayed"),
        )
    })?;
    let token = crate::security::token::new_token().map_err(ApiError::unavailable)?;
    let mut envelope =
        Envelope::request(format!("dlq-replay-{seq}-{}", &token[..16]), &request.flow);
    envelope.service.clone_from(&caller.service);
    envelope.reply_to = reply_topic(&caller.service);
    envelope.created_us = now_us();
    envelope.key = request.after;
    envelope.order_key = request.order_key;
    envelope.operator = state.operator.as_str().to_owned();
    envelope.ack = true;
    let message = Message::new(envelope, request.payload);
    let mut watch = gateway::submit(&state, &caller, &message).await?;
    // Settled whatever becomes of this connection.
    let settling = tokio::spawn(async move {
        let _claim = claim;
        let id = message.envelope.id.clone();
        let replayed = until_replayed(&mut watch, id, wait).await;
        let service = caller.service.clone();
        let settled = {
            let replayed = replayed.clone();
            with_store(&state, move |store| {
                replay::settle(store, seq, &service, &replayed, wait)
            })
            .await
        };
        settled.map(|settlement| answer(seq, &caller.service, &replayed, &settlement))
    });
    settling
        .await
        .map_err(|e| ApiError::unavailable(format!("the replay stopped: {e}")))?
}

/// How the replayed request `id` ended, within `wait` in all. Not
/// the gateway's `until_taken` then `until_result`: the first gives
/// up on an acknowledgement after its own 10 s, and a replay told to wait
/// longer must not be recorded as "not accepted within {wait}" sooner.
async fn until_replayed(watch: &mut Watch, id: String, wait: Duration) -> Replayed {
    let mut accepted = false;
    let result = tokio::time::timeout(wait, async {
        while let Some(message) = watch.next().await {
            match message.envelope.kind {
                Kind::Accepted => accepted = true,
                // A refusal, a duplicate's result, or the result.
                Kind::Result => return Some(message),
                _ => {}
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    match result {
        Some(result) => Replayed::of(id, Outcome::of(result)),
        None if accepted => Replayed::NoResult { id },
        None => Replayed::NotAccepted,
    }
}

/// The answer of a settled replay.
fn answer(
    seq: i64,
    service: &str,
    replayed: &Replayed,
    settlement: &replay::Settlement,
) -> Response {
    let mut body = json!({
        "seq": seq,
        "outcome": settlement.settled.as_str(),
        "message": settlement.line,
    });
    if let Some(id) = replayed.id() {
        body["replay"] = json!({ "service": service, "id": id, "location": location(service, id) });
    }
    match replayed {
        Replayed::Ok { payload, .. } => {
            body["result"] = payload::to_json(payload).unwrap_or(Value::Null);
        }
        Replayed::Refused { key, error } | Replayed::Failed { key, error, .. } => {
            body["error"] = json!({
                "code": error.code.code(),
                "name": error.name,
                "message": error.message,
                "key": key,
            });
        }
        Replayed::NotAccepted | Replayed::NoResult { .. } => {}
    }
    if let Settled::DeadLetteredAgain(new) = settlement.settled {
        body["new_seq"] = json!(new);
    }
    (StatusCode::OK, Json(body)).into_response()
}

/// Runs `work` on a connection to the node's dead-letter store (one kept
/// open for the next request, [`StorePool`]), off the runtime.
async fn with_store<T: Send + 'static>(
    state: &HttpState,
    work: impl FnOnce(&DeadLetterStore) -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    let stores = Arc::clone(&state.dead_letters);
    tokio::task::spawn_blocking(move || stores.with(work))
        .await
        .map_err(|e| ApiError::unavailable(format!("the dead-letter store read stopped: {e}")))?
        .map_err(|e| {
            ApiError::http(
                StatusCode::INTERNAL_SERVER_ERROR,
                "dead_letter_store",
                format!("the dead-letter store: {e}"),
            )
        })
}

fn parse_seq(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .map_err(|_| bad("bad_seq", format!("{text:?} is not a dead letter's number")))
}

fn unknown(seq: i64) -> ApiError {
    ApiError::http(
        StatusCode::NOT_FOUND,
        "unknown_dead_letter",
        format!("no dead letter #{seq}"),
    )
}

fn bad(name: &'static str, message: impl Into<String>) -> ApiError {
    ApiError::http(StatusCode::BAD_REQUEST, name, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_letter_is_replayed_by_one_request_at_a_time() {
        let replaying = Replaying::default();
        let first = replaying.claim(7).expect("free");
        assert!(replaying.claim(7).is_none(), "taken");
        let other = replaying.claim(8).expect("another letter is free");
        drop(first);
        assert!(replaying.claim(7).is_some(), "given back");
        drop(other);
    }
}
