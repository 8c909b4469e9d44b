//! What `zmanager dlq replay` and `zmanager journal replay` share: one
//! recorded request pushed into the node again, and how that ended.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use zmanager::client::{Outcome, Service, ServiceError, describe_failure};
use zmanager::security::operator::OperatorCookie;
use zmanager::wire::envelope::ErrorInfo;

/// The node's operator cookie, which lets a replay resume at the step it
/// was recorded at (a service may start only at an entry point). Without
/// it (a journal copied from elsewhere, another user), replays that start
/// at step 0 still go; the others are refused `not_an_entry`, as warned.
pub(crate) fn operator_cookie(data_dir: &Path) -> Option<String> {
    match OperatorCookie::read(data_dir) {
        Ok(cookie) => Some(cookie.as_str().to_owned()),
        Err(e) => {
            eprintln!(
                "warning: {e}; requests that resume after their flow's entry will be refused (not_an_entry): run this as the node's user, with the node's --data-dir"
            );
            None
        }
    }
}

/// A request as it was recorded, to push again.
#[derive(Debug)]
pub(crate) struct Recorded<'a> {
    pub(crate) flow: &'a str,
    /// The key of the step it enters after (empty: the flow's entry).
    pub(crate) after: &'a str,
    /// Its ordering key (`docs/ordering.md`): what a flow ordered by
    /// `envelope` needs, ignored by the others.
    pub(crate) order_key: &'a str,
    pub(crate) payload: Bytes,
}

/// How a replay ended.
#[derive(Debug)]
pub(crate) enum Replayed {
    /// Accepted as request `id`, completed OK.
    Ok { id: String, payload: Bytes },
    /// Refused by the node on intake: never accepted, never run.
    Refused { key: String, error: ErrorInfo },
    /// Accepted as request `id`, ended in an error result.
    Failed {
        id: String,
        key: String,
        error: ErrorInfo,
    },
    /// Not accepted within the time limit.
    NotAccepted,
    /// Accepted as request `id`; no result within the time limit (it may
    /// still run).
    NoResult { id: String },
}

impl Replayed {
    /// `ok <json>`, `refused: 3 (unknown_flow): …` and so on: what the
    /// commands print (after the request's name) and the store records.
    pub(crate) fn describe(&self, limit: Duration) -> String {
        let secs = limit.as_secs();
        match self {
            Replayed::Ok { payload, .. } => format!("ok {}", json(payload)),
            Replayed::Refused { key, error } => {
                format!("refused: {}", describe_failure(key, error))
            }
            Replayed::Failed { key, error, .. } => {
                format!("failed: {}", describe_failure(key, error))
            }
            Replayed::NotAccepted => format!("not accepted within {secs}s"),
            Replayed::NoResult { .. } => format!("accepted, but no result within {secs}s"),
        }
    }

    /// The replay's own request id, once the node accepted it.
    pub(crate) fn id(&self) -> Option<&str> {
        match self {
            Replayed::Ok { id, .. } | Replayed::Failed { id, .. } | Replayed::NoResult { id } => {
                Some(id)
            }
            Replayed::Refused { .. } | Replayed::NotAccepted => None,
        }
    }
}

/// Pushes `request` into the node and waits, at most `limit` in all, for
/// its acceptance and result; `accepted` is called once the node has
/// accepted or refused it (the next request of its ordering key may go).
/// Errors are the connection's only.
pub(crate) async fn replay(
    service: &Service,
    request: Recorded<'_>,
    limit: Duration,
    accepted: impl FnOnce(),
) -> Result<Replayed, ServiceError> {
    let deadline = tokio::time::Instant::now() + limit;
    let submit = service.submit_bytes_ordered(
        request.flow,
        request.after,
        request.order_key,
        request.payload,
    );
    let submitted = match tokio::time::timeout_at(deadline, submit).await {
        Ok(submitted) => submitted?,
        Err(_) => return Ok(Replayed::NotAccepted),
    };
    accepted();
    let id = submitted.id().to_owned();
    let outcome = match tokio::time::timeout_at(deadline, submitted.outcome()).await {
        Ok(outcome) => outcome?,
        Err(_) => return Ok(Replayed::NoResult { id }),
    };
    Ok(match outcome {
        Outcome::Done(reply) => Replayed::Ok {
            id,
            payload: reply.payload,
        },
        Outcome::Refused { key, error } => Replayed::Refused { key, error },
        Outcome::Failed { key, error } => Replayed::Failed { id, key, error },
    })
}

/// A MessagePack payload as JSON, or what is wrong with it.
pub(crate) fn json(payload: &Bytes) -> String {
    zmanager_sdk::decode::<serde_json::Value>(payload).map_or_else(
        |e| format!("<{} bytes that do not decode: {e}>", payload.len()),
        |v| v.to_string(),
    )
}
