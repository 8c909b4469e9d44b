//! A row of `journal_events`, the one table both backends keep: the
//! columns an event is written as, and an event, a message, a recovery
//! checkpoint or a console line read back from rows. The backends differ
//! in their SQL, not in what a row means, which is said here once.

use std::sync::Arc;

use bytes::Bytes;

use super::{
    Checkpoint, Event, EventKind, JournalStats, MessageState, RecentRequest, RecordedEvent,
    Unfinished,
};
use crate::inflight::MessageKey;
use crate::wire::Message;
use crate::wire::envelope::Envelope;

/// The kinds that end a message, as an SQL list.
pub(super) const TERMINAL: &str = "('completed', 'dead_lettered')";

/// What one event is written as: the columns besides its time, kind and
/// key. Only what the kind has is set.
#[derive(Debug, Default)]
pub(super) struct Columns<'a> {
    pub(super) flow: &'a str,
    pub(super) attempt: Option<i64>,
    pub(super) worker: Option<&'a [u8]>,
    pub(super) step: Option<i64>,
    /// A dead letter's reason, or an error result's code name (for the
    /// failed requests' index, [`Journal::recent`](super::Journal::recent)).
    pub(super) reason: Option<&'a str>,
    pub(super) envelope: Option<Vec<u8>>,
    pub(super) payload: Option<&'a [u8]>,
    /// When an acceptance's row holds its first dispatch too (`batch`):
    /// that dispatch's time, its attempt and worker being in `attempt` and
    /// `worker`.
    pub(super) dispatched_us: Option<i64>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(event: &'a Event) -> Self {
        let with_message = |message: &'a Message| Columns {
            flow: &message.envelope.flow,
            envelope: Some(message.envelope.encode()),
            payload: Some(message.payload.as_ref()),
            ..Columns::default()
        };
        match event {
            Event::Accepted { message, .. } => with_message(message),
            Event::Dispatched {
                attempt, worker, ..
            } => Columns {
                attempt: Some(i64::from(*attempt)),
                worker: Some(worker.as_ref()),
                ..Columns::default()
            },
            Event::Suspended { step, message, .. } | Event::Resumed { step, message, .. } => {
                Columns {
                    step: Some(i64::from(*step)),
                    ..with_message(message)
                }
            }
            Event::Completed { result, .. } => match result {
                Some(result) => Columns {
                    reason: result.envelope.error.as_ref().map(|e| e.code.name()),
                    ..with_message(result)
                },
                None => Columns::default(),
            },
            Event::DeadLettered { reason, .. } => Columns {
                reason: Some(reason),
                ..Columns::default()
            },
        }
    }
}

/// A whole row, as read back (`seq, at_us, kind, service, id, attempt,
/// worker, step, reason, envelope, payload, dispatched_us`).
#[derive(Debug)]
pub(super) struct Stored {
    pub(super) seq: i64,
    pub(super) at_us: i64,
    pub(super) kind: String,
    pub(super) service: String,
    pub(super) id: String,
    pub(super) attempt: Option<i64>,
    pub(super) worker: Option<Vec<u8>>,
    pub(super) step: Option<i64>,
    pub(super) reason: Option<String>,
    pub(super) envelope: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
    pub(super) dispatched_us: Option<i64>,
}

/// The columns of a [`Stored`] row, in its order.
pub(super) const COLUMNS: &str = "seq, at_us, kind, service, id, attempt, worker, step, reason, envelope, payload, dispatched_us";

/// The same, from a journal written before acceptances' rows held their
/// dispatch (no `dispatched_us` column), opened only to be read.
pub(super) const COLUMNS_UNMERGED: &str = "seq, at_us, kind, service, id, attempt, worker, step, reason, envelope, payload, \
     CAST(NULL AS BIGINT)";

pub(super) fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

pub(super) fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn count(v: Option<i64>) -> u32 {
    u32::try_from(v.unwrap_or(0)).unwrap_or(0)
}

/// The message stored in row `seq` of the journal `path`, or `None` (with a
/// warning) if it does not decode: one bad row must not stop a recovery.
pub(super) fn message(
    path: &str,
    seq: i64,
    envelope: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
) -> Option<Message> {
    let Some(envelope) = envelope else {
        tracing::warn!(path = %path, seq, "journal row has no envelope; skipped");
        return None;
    };
    match Envelope::decode(&envelope) {
        Ok(envelope) => Some(Message::new(
            envelope,
            Bytes::from(payload.unwrap_or_default()),
        )),
        Err(e) => {
            tracing::warn!(path = %path, seq, error = %e, "journal row's envelope does not decode; skipped");
            None
        }
    }
}

/// Adds the events a row holds to `out`: one, or an acceptance and its
/// dispatch (`batch`); none (with a warning) if the row does not decode.
pub(super) fn events(path: &str, mut row: Stored, out: &mut Vec<RecordedEvent>) {
    let seq = row.seq;
    let merged = match (&row.kind[..], row.dispatched_us) {
        ("accepted", Some(dispatched_us)) => Some(Event::Dispatched {
            at_us: unsigned(dispatched_us),
            key: (row.service.clone(), row.id.clone()),
            attempt: count(row.attempt),
            worker: Bytes::from(row.worker.take().unwrap_or_default()),
        }),
        _ => None,
    };
    let Some(event) = event(path, row) else {
        return;
    };
    out.push(RecordedEvent { seq, event });
    if let Some(event) = merged {
        out.push(RecordedEvent { seq, event });
    }
}

/// The event a row holds as its kind, or `None` (with a warning) if it does
/// not decode.
fn event(path: &str, row: Stored) -> Option<Event> {
    let Some(kind) = EventKind::parse(&row.kind) else {
        tracing::warn!(path = %path, seq = row.seq, kind = %row.kind, "journal row of unknown kind; skipped");
        return None;
    };
    let at_us = unsigned(row.at_us);
    let key: MessageKey = (row.service, row.id);
    Some(match kind {
        EventKind::Accepted => Event::Accepted {
            at_us,
            message: message(path, row.seq, row.envelope, row.payload)?,
        },
        EventKind::Dispatched => Event::Dispatched {
            at_us,
            key,
            attempt: count(row.attempt),
            worker: Bytes::from(row.worker.unwrap_or_default()),
        },
        EventKind::Suspended => Event::Suspended {
            at_us,
            key,
            step: count(row.step),
            message: message(path, row.seq, row.envelope, row.payload)?,
        },
        EventKind::Resumed => Event::Resumed {
            at_us,
            key,
            step: count(row.step),
            message: message(path, row.seq, row.envelope, row.payload)?,
        },
        EventKind::Completed => Event::Completed {
            at_us,
            key,
            result: match row.envelope {
                Some(envelope) => Some(Arc::new(message(
                    path,
                    row.seq,
                    Some(envelope),
                    row.payload,
                )?)),
                None => None,
            },
        },
        EventKind::DeadLettered => Event::DeadLettered {
            at_us,
            key,
            reason: row.reason.unwrap_or_default(),
        },
    })
}

/// A message's latest event of one kind after its latest acceptance
/// (`seq, attempt, envelope, payload`).
#[derive(Debug)]
pub(super) struct Latest {
    pub(super) seq: i64,
    pub(super) attempt: Option<i64>,
    pub(super) envelope: Option<Vec<u8>>,
    pub(super) payload: Option<Vec<u8>>,
}

/// An unfinished message as recovery resumes it: `accepted` (its latest
/// acceptance, row `seq`, whose `attempt` column is that of a dispatch
/// written into it, `batch`) at its latest checkpoint — the later of its
/// latest suspension and resumption, if any — with the attempt of a
/// dispatch made after that checkpoint.
pub(super) fn unfinished(
    path: &str,
    (seq, merged): (i64, Option<i64>),
    accepted: Message,
    suspended: Option<Latest>,
    resumed: Option<Latest>,
    dispatched: Option<Latest>,
) -> Unfinished {
    let mut message = accepted;
    let mut since = seq;
    let mut at = Checkpoint::Accepted;
    let checkpoint = match (suspended, resumed) {
        (Some(s), Some(r)) if r.seq > s.seq => Some((Checkpoint::Resumed, r)),
        (Some(s), _) => Some((Checkpoint::Suspended, s)),
        (None, r) => r.map(|r| (Checkpoint::Resumed, r)),
    };
    if let Some((kind, latest)) = checkpoint
        && let Some(state) = self::message(path, latest.seq, latest.envelope, latest.payload)
    {
        message = state;
        since = latest.seq;
        at = kind;
    }
    let attempt = match dispatched {
        Some(Latest {
            seq: d,
            attempt: Some(attempt),
            ..
        }) if d > since => Some(attempt),
        // A dispatch in the acceptance's row came before any other event
        // of the message after it: it counts only with no checkpoint since.
        _ if since == seq => merged,
        _ => None,
    };
    if let Some(attempt) = attempt {
        message.envelope.attempt = u32::try_from(attempt).unwrap_or(0);
    }
    Unfinished { message, at }
}

/// The separator of the fields of a message's latest event, as the
/// console's query packs them into one text (`kind`, `at_us`, `reason`).
pub(super) const UNIT_SEPARATOR: char = '\u{1f}';

/// What the console lists of one request (see [`Journal::recent`]): the
/// flow and time of its latest acceptance, its highest attempt and its
/// latest event other than a dispatch (packed as [`UNIT_SEPARATOR`]d text).
/// `None` when retention kept only dispatches of it.
///
/// [`Journal::recent`]: super::Journal::recent
pub(super) fn recent_request(
    (seq, service, id): (i64, String, String),
    flow: Option<String>,
    accepted_at: Option<i64>,
    attempts: i64,
    latest: Option<String>,
) -> Option<RecentRequest> {
    let latest = latest.unwrap_or_default();
    let mut parts = latest.split(UNIT_SEPARATOR);
    let kind = parts.next().and_then(EventKind::parse);
    let at_us = parts.next().and_then(|t| t.parse::<i64>().ok());
    let reason = parts.next().filter(|r| !r.is_empty()).map(str::to_owned);
    let state = kind.and_then(MessageState::after)?;
    let ended = matches!(state, MessageState::Completed | MessageState::DeadLettered);
    Some(RecentRequest {
        seq,
        service,
        id,
        flow: flow.unwrap_or_default(),
        accepted_us: accepted_at.map(unsigned),
        ended_us: if ended { at_us.map(unsigned) } else { None },
        state,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        error: if ended { reason } else { None },
    })
}

/// The states named in SQL (`'accepted', …`), for the summaries' query:
/// each state is named after the event kind that leads to it.
pub(super) fn quoted_states(filter: impl Fn(MessageState) -> bool) -> String {
    [
        MessageState::Accepted,
        MessageState::Suspended,
        MessageState::Resumed,
        MessageState::Completed,
        MessageState::DeadLettered,
    ]
    .into_iter()
    .filter(|s| filter(*s))
    .map(|s| format!("'{}'", s.as_str()))
    .collect::<Vec<_>>()
    .join(", ")
}

/// Counts `n` more events of `kind` in `stats`; false for a kind this
/// binary does not know (a newer one wrote it).
pub(super) fn count_kind(stats: &mut JournalStats, kind: &str, n: u64) -> bool {
    let count = match EventKind::parse(kind) {
        Some(EventKind::Accepted) => &mut stats.accepted,
        Some(EventKind::Dispatched) => &mut stats.dispatched,
        Some(EventKind::Suspended) => &mut stats.suspended,
        Some(EventKind::Resumed) => &mut stats.resumed,
        Some(EventKind::Completed) => &mut stats.completed,
        Some(EventKind::DeadLettered) => &mut stats.dead_lettered,
        None => return false,
    };
    *count += n;
    true
}
