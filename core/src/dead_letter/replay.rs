//! Replaying a dead letter: its message pushed into the node again as a
//! new request, from the step it was delivered at ([`request`]), and what
//! came of it settled in the store ([`settle`]): recorded as a [`Replay`],
//! the letter marked replayed only when the replay completed OK, and
//! superseded by its new dead letter when it was dead-lettered again.
//!
//! `zmanager dlq replay` (over ZeroMQ, as a service) and
//! `POST /v1/dead-letters/{seq}/replay` (through the HTTP gateway) both do
//! exactly this; only how they push and wait differs. [`Replayed`] is how a
//! pushed request ended, which `zmanager journal replay` tells too.

use std::time::Duration;

use bytes::Bytes;

use super::{DeadLetter, DeadLetterLog as _, DeadLetterStore, Replay, StoreError};
use crate::catalog::Catalog;
use crate::wire::envelope::{ErrorInfo, now_us};
use crate::wire::error_code::ErrorCode;
use zmanager_client::{Outcome, describe_failure};

/// A dead letter's message as the request that replays it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayRequest {
    pub flow: String,
    /// The key of the step it enters after (empty: the flow's entry): the
    /// step before the one it was delivered at. Past the entry, only a
    /// request carrying the node's operator cookie is let in there.
    pub after: String,
    /// Its ordering key (`docs/ordering.md`): what a flow ordered by
    /// `envelope` needs, ignored by the others.
    pub order_key: String,
    pub payload: Bytes,
}

/// The request that replays `letter` in the flows of `catalog`; why not,
/// when `catalog` has no step before the one it was delivered at (it was
/// dead-lettered under other flows).
pub fn request(catalog: &Catalog, letter: &DeadLetter) -> Result<ReplayRequest, String> {
    let e = &letter.message.envelope;
    Ok(ReplayRequest {
        flow: e.flow.clone(),
        after: resume_after(catalog, letter)?,
        order_key: e.order_key.clone(),
        payload: letter.message.payload.clone(),
    })
}

/// The key of the step `letter` resumes after: the step before the one it
/// was delivered at (empty: the flow's entry).
pub fn resume_after(catalog: &Catalog, letter: &DeadLetter) -> Result<String, String> {
    let e = &letter.message.envelope;
    let step = usize::try_from(e.step).unwrap_or(usize::MAX);
    match step {
        0 | 1 => Ok(String::new()),
        _ => catalog
            .flow(&e.flow)
            .and_then(|f| f.flow.steps.get(step - 1))
            .map(|s| s.key.to_string())
            .ok_or_else(|| format!("flow {} has no step {} in these flows", e.flow, step - 1)),
    }
}

/// How a pushed request ended.
#[derive(Debug, Clone)]
pub enum Replayed {
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
    /// The end of request `id` that its result told.
    pub fn of(id: String, outcome: Outcome) -> Self {
        match outcome {
            Outcome::Done(reply) => Replayed::Ok {
                id,
                payload: reply.payload,
            },
            Outcome::Refused { key, error } => Replayed::Refused { key, error },
            Outcome::Failed { key, error } => Replayed::Failed { id, key, error },
        }
    }

    /// `ok <json>`, `refused: 3 (unknown_flow): …` and so on: what the
    /// commands print (after the request's name) and the store records.
    pub fn describe(&self, limit: Duration) -> String {
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
    pub fn id(&self) -> Option<&str> {
        match self {
            Replayed::Ok { id, .. } | Replayed::Failed { id, .. } | Replayed::NoResult { id } => {
                Some(id)
            }
            Replayed::Refused { .. } | Replayed::NotAccepted => None,
        }
    }
}

/// A MessagePack payload as JSON text, or what is wrong with it.
pub fn json(payload: &[u8]) -> String {
    zmanager_sdk::decode::<serde_json::Value>(payload).map_or_else(
        |e| format!("<{} bytes that do not decode: {e}>", payload.len()),
        |v| v.to_string(),
    )
}

/// What a replay left its dead letter as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// Completed OK: marked replayed.
    Ok,
    /// Refused on intake, never ran: unreplayed.
    Refused,
    /// Ended in an error result: unreplayed.
    Failed,
    /// Dead-lettered again as this new dead letter: unreplayed, and
    /// superseded by it (it holds the message now).
    DeadLetteredAgain(i64),
    /// Neither accepted nor refused within the time limit: unreplayed.
    NotAccepted,
    /// Accepted, no result within the time limit: unreplayed, and it may
    /// still run.
    NoResult,
}

impl Settled {
    /// Its name over HTTP.
    pub fn as_str(self) -> &'static str {
        match self {
            Settled::Ok => "ok",
            Settled::Refused => "refused",
            Settled::Failed => "failed",
            Settled::DeadLetteredAgain(_) => "dead_lettered_again",
            Settled::NotAccepted => "not_accepted",
            Settled::NoResult => "no_result",
        }
    }
}

/// What [`settle`] did, and the line `zmanager dlq replay` prints for it
/// (after `#SEQ `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settlement {
    pub settled: Settled,
    pub line: String,
}

/// Records what came of the replay of dead letter `seq`, pushed as a
/// request of `service` and waited for at most `limit`, and marks it
/// replayed if it completed OK.
///
/// A replay the node refused, or that failed or got no result in time,
/// leaves the letter unreplayed (`--all` tries it again). A replay that
/// was dead-lettered again leaves it unreplayed too, but superseded: the
/// new dead letter holds the message now, and `--all` replays that one
/// instead of both.
pub fn settle(
    store: &DeadLetterStore,
    seq: i64,
    service: &str,
    replayed: &Replayed,
    limit: Duration,
) -> Result<Settlement, StoreError> {
    let outcome = replayed.describe(limit);
    let mut again = None;
    let (settled, line) = match replayed {
        Replayed::Ok { .. } => {
            store.mark_replayed(seq, now_us())?;
            (Settled::Ok, outcome.clone())
        }
        Replayed::Refused { .. } => (
            Settled::Refused,
            format!("{outcome} (not taken by the node); not replayed"),
        ),
        Replayed::Failed { id, error, .. } if error.code == ErrorCode::DeadLettered => {
            match store.find(service, id)? {
                Some(new) => {
                    again = Some(new.seq);
                    (
                        Settled::DeadLetteredAgain(new.seq),
                        format!(
                            "dead-lettered again as #{}: {outcome}; not replayed, #{} holds it now",
                            new.seq, new.seq
                        ),
                    )
                }
                None => (
                    Settled::Failed,
                    format!(
                        "{outcome} (its dead letter is not in this store: is it the \
                         node's, its --data-dir or [journal] url?); not replayed"
                    ),
                ),
            }
        }
        Replayed::Failed { .. } => (Settled::Failed, format!("{outcome}; not replayed")),
        Replayed::NotAccepted => (Settled::NotAccepted, format!("{outcome}; not replayed")),
        Replayed::NoResult { .. } => (
            Settled::NoResult,
            format!("{outcome}; not replayed (it may still run: check before replaying again)"),
        ),
    };
    let record = Replay {
        at_us: now_us(),
        outcome: match replayed.id() {
            Some(id) => format!("{outcome} (as {id})"),
            None => outcome,
        },
        dead_letter: again,
    };
    store.record_replay(seq, &record)?;
    Ok(Settlement { settled, line })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::Message;
    use crate::wire::envelope::Envelope;

    fn error(code: ErrorCode) -> ErrorInfo {
        ErrorInfo {
            code,
            name: code.name().into(),
            message: "m".into(),
        }
    }

    #[test]
    fn a_replay_resumes_after_the_step_before_the_one_it_was_delivered_at() {
        use crate::catalog::source::{Format, SourceFile};
        let flows = [SourceFile::new(
            "f.toml",
            "[flow.F]\nsteps = [\"?F?Push\", \"?F?a\", \"?F?b\", \"??done\"]\n",
            Format::Toml,
        )];
        let maps = [SourceFile::new(
            "m.toml",
            "[actionmapping]\n\"??a\" = \"M.a\"\n\"??b\" = \"M.b\"\n",
            Format::Toml,
        )];
        let (catalog, d) = Catalog::build(&flows, &maps);
        assert!(!d.has_errors(), "{d}");
        let at = |step: u32| {
            let mut e = Envelope::request("m", "F");
            e.step = step;
            e.order_key = "k".into();
            let letter = DeadLetter {
                seq: 1,
                at_us: 0,
                errors: vec![],
                message: Message::new(e, Bytes::from_static(b"\x01")),
                replayed_us: None,
            };
            request(&catalog, &letter)
        };
        assert_eq!(at(1).unwrap().after, "");
        let from_b = at(2).unwrap();
        assert_eq!(
            (
                from_b.flow.as_str(),
                from_b.after.as_str(),
                from_b.order_key.as_str()
            ),
            ("F", "?F?a", "k")
        );
        assert_eq!(from_b.payload, Bytes::from_static(b"\x01"));
        assert_eq!(at(9).unwrap_err(), "flow F has no step 8 in these flows");
    }

    #[test]
    fn a_replay_is_marked_only_when_ok_and_superseded_when_dead_lettered_again() {
        let dir = crate::journal::testing::TempDir::new("dlq-settle");
        let store =
            DeadLetterStore::open(&crate::journal::Location::Sqlite(dir.path().into())).unwrap();
        let letter = |service: &str, id: &str| {
            let mut e = Envelope::request(id, "F");
            e.service = service.into();
            Message::new(e, Bytes::from_static(b"\xc0"))
        };
        let first = store.insert(&letter("svc", "m1"), &[], 1).unwrap();
        let limit = Duration::from_secs(30);

        let refused = Replayed::Refused {
            key: String::new(),
            error: error(ErrorCode::UnknownFlow),
        };
        let s = settle(&store, first, "op", &refused, limit).unwrap();
        assert_eq!(s.settled, Settled::Refused);
        assert!(s.line.ends_with("(not taken by the node); not replayed"));

        let waiting = Replayed::NoResult { id: "op-1".into() };
        let s = settle(&store, first, "op", &waiting, limit).unwrap();
        assert_eq!(s.settled, Settled::NoResult);
        assert!(s.line.starts_with("accepted, but no result within 30s"));

        // Dead-lettered again: its new letter is the replay's request.
        let again = store.insert(&letter("op", "op-2"), &[], 2).unwrap();
        let dead = Replayed::Failed {
            id: "op-2".into(),
            key: "?F?x".into(),
            error: error(ErrorCode::DeadLettered),
        };
        let s = settle(&store, first, "op", &dead, limit).unwrap();
        assert_eq!(s.settled, Settled::DeadLetteredAgain(again));
        assert_eq!(store.superseded_by(first).unwrap(), Some(again));
        // One the store does not hold is a failure, not a supersession.
        let elsewhere = Replayed::Failed {
            id: "op-9".into(),
            key: String::new(),
            error: error(ErrorCode::DeadLettered),
        };
        let s = settle(&store, first, "op", &elsewhere, limit).unwrap();
        assert_eq!(s.settled, Settled::Failed);
        assert_eq!(store.get(first).unwrap().unwrap().replayed_us, None);

        let ok = Replayed::Ok {
            id: "op-3".into(),
            payload: Bytes::from_static(b"\x01"),
        };
        let s = settle(&store, first, "op", &ok, limit).unwrap();
        assert_eq!((s.settled, s.line.as_str()), (Settled::Ok, "ok 1"));
        assert!(store.get(first).unwrap().unwrap().replayed_us.is_some());
        let replays = store.replays(first).unwrap();
        assert_eq!(replays.len(), 5);
        assert_eq!(replays[4].outcome, "ok 1 (as op-3)");
        assert!(replays[0].outcome.starts_with("refused: 3 (unknown_flow)"));
    }
}
