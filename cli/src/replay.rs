//! What `zmanager dlq replay` and `zmanager journal replay` share: one
//! recorded request pushed into the node again, and how that ended.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use zmanager::security::operator::OperatorCookie;
use zmanager_client::{Service, ServiceError};

/// How a replay ended, and its payloads as JSON text: the node's own
/// (`POST /v1/dead-letters/{seq}/replay` tells the same).
pub(crate) use zmanager::dead_letter::replay::{Replayed, json};

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
    Ok(Replayed::of(id, outcome))
}
