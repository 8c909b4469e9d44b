//! The embedded journal: SQLite (through `rusqlite`, built in), in the
//! node's `zmanager.db` next to the dead letters, in WAL mode.
//!
//! One table, `journal_events`, one row per event, indexed by message
//! (`service`, `id`) and by time. A message's state is derived from its
//! events, so an append is only ever an `INSERT`.
//!
//! **Torn writes.** A crash in the middle of a write is SQLite's business:
//! with its write-ahead log, a transaction whose commit did not reach the
//! log whole is rolled back when the database is next opened, and the
//! transactions before it are kept. There is no hand-written log format to
//! repair. What SQLite cannot repair — a file damaged underneath it (a bad
//! disk, another program writing into it) — is caught on open by
//! `PRAGMA quick_check` and reported as [`JournalError::Corrupt`] naming
//! the file; nothing is written to a damaged file.

use std::path::Path;

use bytes::Bytes;
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};

use super::{
    Checkpoint, Event, EventKind, Journal, JournalError, JournalStats, RecordedEvent, Unfinished,
};
use crate::dead_letter::database_path;
use crate::envelope::Envelope;
use crate::wire::Message;

/// How hard a commit tries to reach the disk: SQLite's `synchronous`
/// setting (in WAL mode). Named `SyncMode`, not `Sync`, so as not to shadow
/// the `Sync` marker trait where it is imported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncMode {
    /// `synchronous = FULL`: the log is synced to disk at every commit. A
    /// committed batch survives a crash of the process, of the operating
    /// system and a power loss. The slowest: one fsync per batch.
    #[default]
    Full,
    /// `synchronous = NORMAL`: the log is synced only at checkpoints. A
    /// committed batch survives a crash of the process (`kill -9`); an
    /// operating-system crash or power loss may roll back the last batches,
    /// but the database stays consistent.
    Normal,
    /// `synchronous = OFF`: never synced; data is handed to the operating
    /// system and left there. Survives a crash of the process; an
    /// operating-system crash or power loss may lose recent batches and can
    /// corrupt the database.
    Off,
}

impl SyncMode {
    fn pragma(self) -> &'static str {
        match self {
            Self::Full => "FULL",
            Self::Normal => "NORMAL",
            Self::Off => "OFF",
        }
    }
}

/// The SQLite journal, open.
#[derive(Debug)]
pub struct SqliteJournal {
    conn: Connection,
    path: String,
}

/// `seq` is the rowid (no `AUTOINCREMENT`): a new row's is one more than
/// the largest kept, so events stay in append order even after compaction,
/// without the extra write per insert `AUTOINCREMENT` costs. Every index
/// costs a b-tree insert per event, so the time indexes are partial: only
/// the events that queries by time look for (acceptances for `range` and
/// recovery, final events for compaction), not dispatches.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS journal_events (
    seq INTEGER PRIMARY KEY,
    at_us INTEGER NOT NULL,
    kind TEXT NOT NULL,
    service TEXT NOT NULL,
    id TEXT NOT NULL,
    flow TEXT NOT NULL DEFAULT '',
    attempt INTEGER,
    worker BLOB,
    step INTEGER,
    reason TEXT,
    envelope BLOB,
    payload BLOB
);
CREATE INDEX IF NOT EXISTS journal_events_message ON journal_events (service, id, seq);
CREATE INDEX IF NOT EXISTS journal_accepted_time ON journal_events (at_us) WHERE kind = 'accepted';
CREATE INDEX IF NOT EXISTS journal_finished_time ON journal_events (at_us)
    WHERE kind IN ('completed', 'dead_lettered');
";

const COLUMNS: &str =
    "seq, at_us, kind, service, id, attempt, worker, step, reason, envelope, payload";

/// Whether an error means the file itself is damaged.
fn is_damage(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::NotADatabase | ErrorCode::DatabaseCorrupt)
    )
}

fn error(path: &str, source: rusqlite::Error) -> JournalError {
    if is_damage(&source) {
        JournalError::Corrupt {
            path: path.to_owned(),
            detail: source.to_string(),
        }
    } else {
        JournalError::Sqlite {
            path: path.to_owned(),
            source,
        }
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unsigned(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal in `data_dir`'s `zmanager.db`.
    pub fn open(data_dir: &Path, sync: SyncMode) -> Result<Self, JournalError> {
        std::fs::create_dir_all(data_dir).map_err(|source| JournalError::Create {
            path: data_dir.display().to_string(),
            source,
        })?;
        Self::open_file(&database_path(data_dir), sync)
    }

    /// Opens (creating if needed) the journal in the database file `path`.
    /// A damaged file gives [`JournalError::Corrupt`] and is not written to.
    pub fn open_file(path: &Path, sync: SyncMode) -> Result<Self, JournalError> {
        let name = path.display().to_string();
        let sqlite = |source| error(&name, source);
        let conn = Connection::open(path).map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        // Checked before anything is written. `quick_check` is `O(size)`
        // and finds damaged pages and records; unlike `integrity_check` it
        // does not cross-check indexes against tables.
        let problems: Vec<String> = {
            let mut check = conn.prepare("PRAGMA quick_check").map_err(sqlite)?;
            let rows = check
                .query_map([], |r| r.get::<_, String>(0))
                .map_err(sqlite)?;
            rows.collect::<Result<_, _>>().map_err(sqlite)?
        };
        if problems.first().map(String::as_str) != Some("ok") {
            let shown: Vec<_> = problems.iter().take(5).cloned().collect();
            return Err(JournalError::Corrupt {
                path: name,
                detail: format!("integrity check failed: {}", shown.join("; ")),
            });
        }
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", sync.pragma())
            .map_err(sqlite)?;
        conn.execute_batch(SCHEMA).map_err(sqlite)?;
        Ok(Self { conn, path: name })
    }

    /// The database file.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> JournalError {
        error(&self.path, source)
    }

    /// The message stored in row `seq`, or `None` (with a warning) if it
    /// does not decode.
    fn message(
        &self,
        seq: i64,
        envelope: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
    ) -> Option<Message> {
        let Some(envelope) = envelope else {
            tracing::warn!(path = %self.path, seq, "journal row has no envelope; skipped");
            return None;
        };
        match Envelope::decode(&envelope) {
            Ok(envelope) => Some(Message::new(
                envelope,
                Bytes::from(payload.unwrap_or_default()),
            )),
            Err(e) => {
                tracing::warn!(path = %self.path, seq, error = %e, "journal row's envelope does not decode; skipped");
                None
            }
        }
    }

    fn event(&self, row: Stored) -> Option<RecordedEvent> {
        let Some(kind) = EventKind::parse(&row.kind) else {
            tracing::warn!(path = %self.path, seq = row.seq, kind = %row.kind, "journal row of unknown kind; skipped");
            return None;
        };
        let at_us = unsigned(row.at_us);
        let key = (row.service, row.id);
        let event = match kind {
            EventKind::Accepted => Event::Accepted {
                at_us,
                message: self.message(row.seq, row.envelope, row.payload)?,
            },
            EventKind::Dispatched => Event::Dispatched {
                at_us,
                key,
                attempt: u32::try_from(row.attempt.unwrap_or(0)).unwrap_or(0),
                worker: Bytes::from(row.worker.unwrap_or_default()),
            },
            EventKind::Suspended => Event::Suspended {
                at_us,
                key,
                step: u32::try_from(row.step.unwrap_or(0)).unwrap_or(0),
                message: self.message(row.seq, row.envelope, row.payload)?,
            },
            EventKind::Resumed => Event::Resumed {
                at_us,
                key,
                step: u32::try_from(row.step.unwrap_or(0)).unwrap_or(0),
                message: self.message(row.seq, row.envelope, row.payload)?,
            },
            EventKind::Completed => Event::Completed { at_us, key },
            EventKind::DeadLettered => Event::DeadLettered {
                at_us,
                key,
                reason: row.reason.unwrap_or_default(),
            },
        };
        Some(RecordedEvent {
            seq: row.seq,
            event,
        })
    }

    /// Messages stored by `sql` (selecting `seq, envelope, payload`).
    fn messages(
        &self,
        sql: &str,
        params: impl rusqlite::Params,
    ) -> Result<Vec<(i64, Message)>, JournalError> {
        let mut statement = self.conn.prepare_cached(sql).map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params, |r| Ok((r.get::<_, i64>(0)?, r.get(1)?, r.get(2)?)))
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (seq, envelope, payload) = r.map_err(|e| self.sqlite(e))?;
            if let Some(m) = self.message(seq, envelope, payload) {
                out.push((seq, m));
            }
        }
        Ok(out)
    }
}

/// A row of `journal_events`, in [`COLUMNS`] order.
struct Stored {
    seq: i64,
    at_us: i64,
    kind: String,
    service: String,
    id: String,
    attempt: Option<i64>,
    worker: Option<Vec<u8>>,
    step: Option<i64>,
    reason: Option<String>,
    envelope: Option<Vec<u8>>,
    payload: Option<Vec<u8>>,
}

fn stored(r: &rusqlite::Row<'_>) -> rusqlite::Result<Stored> {
    Ok(Stored {
        seq: r.get(0)?,
        at_us: r.get(1)?,
        kind: r.get(2)?,
        service: r.get(3)?,
        id: r.get(4)?,
        attempt: r.get(5)?,
        worker: r.get(6)?,
        step: r.get(7)?,
        reason: r.get(8)?,
        envelope: r.get(9)?,
        payload: r.get(10)?,
    })
}

const TERMINAL: &str = "('completed', 'dead_lettered')";

impl SqliteJournal {
    /// Inserts `events` in one transaction.
    fn insert<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Result<(), JournalError> {
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.sqlite(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO journal_events
                     (at_us, kind, service, id, flow, attempt, worker, step, reason, envelope, payload)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .map_err(|e| self.sqlite(e))?;
            for event in events {
                let (service, id) = event.key();
                let (mut flow, mut attempt, mut worker, mut step, mut reason) =
                    (String::new(), None, None, None, None);
                let (mut envelope, mut payload) = (None, None);
                match event {
                    Event::Accepted { message, .. } => {
                        flow.clone_from(&message.envelope.flow);
                        envelope = Some(message.envelope.encode());
                        payload = Some(message.payload.as_ref());
                    }
                    Event::Dispatched {
                        attempt: a,
                        worker: w,
                        ..
                    } => {
                        attempt = Some(i64::from(*a));
                        worker = Some(w.as_ref());
                    }
                    Event::Suspended {
                        step: s, message, ..
                    }
                    | Event::Resumed {
                        step: s, message, ..
                    } => {
                        flow.clone_from(&message.envelope.flow);
                        step = Some(i64::from(*s));
                        envelope = Some(message.envelope.encode());
                        payload = Some(message.payload.as_ref());
                    }
                    Event::Completed { .. } => {}
                    Event::DeadLettered { reason: r, .. } => reason = Some(r.as_str()),
                }
                insert
                    .execute(params![
                        int(event.at_us()),
                        event.kind().as_str(),
                        service,
                        id,
                        flow,
                        attempt,
                        worker,
                        step,
                        reason,
                        envelope,
                        payload
                    ])
                    .map_err(|e| self.sqlite(e))?;
            }
        }
        tx.commit().map_err(|e| self.sqlite(e))
    }
}

impl Journal for SqliteJournal {
    fn append(&self, events: &[Event]) -> Result<(), JournalError> {
        self.insert(events.iter())
    }

    fn append_batches(&self, batches: &[Vec<Event>]) -> Result<(), JournalError> {
        self.insert(batches.iter().flatten())
    }

    fn unfinished(&self) -> Result<Vec<Unfinished>, JournalError> {
        // The latest acceptance of each message with nothing final after it.
        let accepted = self.messages(
            &format!(
                "SELECT a.seq, a.envelope, a.payload FROM journal_events a
                 WHERE a.kind = 'accepted' AND NOT EXISTS (
                     SELECT 1 FROM journal_events t
                     WHERE t.service = a.service AND t.id = a.id AND t.seq > a.seq
                       AND (t.kind = 'accepted' OR t.kind IN {TERMINAL}))
                 ORDER BY a.seq"
            ),
            [],
        )?;
        let mut out = Vec::with_capacity(accepted.len());
        for (seq, mut message) in accepted {
            let (service, id) = (
                message.envelope.service.clone(),
                message.envelope.id.clone(),
            );
            let latest = |kind: &str| {
                self.conn
                    .prepare_cached(
                        "SELECT seq, attempt, envelope, payload FROM journal_events
                         WHERE service = ?1 AND id = ?2 AND seq > ?3 AND kind = ?4
                         ORDER BY seq DESC LIMIT 1",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![service, id, seq, kind], |r| {
                            Ok((
                                r.get::<_, i64>(0)?,
                                r.get::<_, Option<i64>>(1)?,
                                r.get::<_, Option<Vec<u8>>>(2)?,
                                r.get::<_, Option<Vec<u8>>>(3)?,
                            ))
                        })
                        .optional()
                    })
                    .map_err(|e| self.sqlite(e))
            };
            let mut since = seq;
            let mut at = Checkpoint::Accepted;
            let suspended = latest("suspended")?;
            let resumed = latest("resumed")?;
            let checkpoint = match (suspended, resumed) {
                (Some(s), Some(r)) if r.0 > s.0 => Some((Checkpoint::Resumed, r)),
                (Some(s), _) => Some((Checkpoint::Suspended, s)),
                (None, r) => r.map(|r| (Checkpoint::Resumed, r)),
            };
            if let Some((kind, (s, _, envelope, payload))) = checkpoint {
                if let Some(state) = self.message(s, envelope, payload) {
                    message = state;
                    since = s;
                    at = kind;
                }
            }
            if let Some((d, Some(attempt), _, _)) = latest("dispatched")? {
                if d > since {
                    message.envelope.attempt = u32::try_from(attempt).unwrap_or(0);
                }
            }
            out.push(Unfinished { message, at });
        }
        Ok(out)
    }

    fn history(&self, service: &str, id: &str) -> Result<Vec<RecordedEvent>, JournalError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {COLUMNS} FROM journal_events WHERE service = ?1 AND id = ?2 ORDER BY seq"
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params![service, id], stored)
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.extend(self.event(r.map_err(|e| self.sqlite(e))?));
        }
        Ok(out)
    }

    fn range(
        &self,
        since_us: u64,
        until_us: u64,
        flow: Option<&str>,
    ) -> Result<Vec<Message>, JournalError> {
        let found = self.messages(
            "SELECT seq, envelope, payload FROM journal_events
             WHERE kind = 'accepted' AND at_us >= ?1 AND at_us < ?2 AND (?3 IS NULL OR flow = ?3)
             ORDER BY seq",
            params![int(since_us), int(until_us), flow],
        )?;
        Ok(found.into_iter().map(|(_, m)| m).collect())
    }

    fn stats(&self) -> Result<JournalStats, JournalError> {
        let mut stats = JournalStats::default();
        let mut statement = self
            .conn
            .prepare_cached("SELECT kind, COUNT(*) FROM journal_events GROUP BY kind")
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))
            .map_err(|e| self.sqlite(e))?;
        for r in rows {
            let (kind, n) = r.map_err(|e| self.sqlite(e))?;
            let n = unsigned(n);
            match EventKind::parse(&kind) {
                Some(EventKind::Accepted) => stats.accepted = n,
                Some(EventKind::Dispatched) => stats.dispatched = n,
                Some(EventKind::Suspended) => stats.suspended = n,
                Some(EventKind::Resumed) => stats.resumed = n,
                Some(EventKind::Completed) => stats.completed = n,
                Some(EventKind::DeadLettered) => stats.dead_lettered = n,
                None => {
                    tracing::warn!(path = %self.path, kind = %kind, n, "journal rows of unknown kind")
                }
            }
        }
        let (oldest, newest) = self
            .conn
            .query_row(
                // Events are appended in time order: the first and the last
                // row, without an index on every event's time.
                "SELECT (SELECT at_us FROM journal_events ORDER BY seq LIMIT 1),
                        (SELECT at_us FROM journal_events ORDER BY seq DESC LIMIT 1)",
                [],
                |r| Ok((r.get::<_, Option<i64>>(0)?, r.get::<_, Option<i64>>(1)?)),
            )
            .map_err(|e| self.sqlite(e))?;
        stats.oldest_us = oldest.map(unsigned);
        stats.newest_us = newest.map(unsigned);
        Ok(stats)
    }

    fn compact(&self, finished_before_us: u64) -> Result<u64, JournalError> {
        let before = int(finished_before_us);
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.sqlite(e))?;
        let removed: i64 = tx
            .query_row(
                &format!(
                    "SELECT COUNT(*) FROM journal_events WHERE kind IN {TERMINAL} AND at_us < ?1"
                ),
                [before],
                |r| r.get(0),
            )
            .map_err(|e| self.sqlite(e))?;
        // Every event of such a message up to (and with) its final event.
        tx.execute(
            &format!(
                "DELETE FROM journal_events WHERE seq IN (
                     SELECT e.seq FROM journal_events t JOIN journal_events e
                       ON e.service = t.service AND e.id = t.id AND e.seq <= t.seq
                     WHERE t.kind IN {TERMINAL} AND t.at_us < ?1)"
            ),
            [before],
        )
        .map_err(|e| self.sqlite(e))?;
        tx.commit().map_err(|e| self.sqlite(e))?;
        Ok(unsigned(removed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::testing::{TempDir, request};

    fn key(service: &str, id: &str) -> (String, String) {
        (service.into(), id.into())
    }

    fn accepted(at_us: u64, service: &str, id: &str, flow: &str) -> Event {
        Event::accepted(at_us, request(service, id, flow))
    }

    fn ids(unfinished: &[Unfinished]) -> Vec<(String, String)> {
        unfinished
            .iter()
            .map(|u| key(&u.message.envelope.service, &u.message.envelope.id))
            .collect()
    }

    fn message_ids(messages: &[Message]) -> Vec<(String, String)> {
        messages
            .iter()
            .map(|m| key(&m.envelope.service, &m.envelope.id))
            .collect()
    }

    #[test]
    fn unfinished_are_the_accepted_not_finished_in_order_as_last_recorded() {
        let dir = TempDir::new("unfinished");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        let mut suspended = request("other", "1", "G");
        suspended.envelope.step = 2;
        j.append(&[
            accepted(10, "svc", "1", "F"),
            accepted(11, "svc", "2", "F"),
            accepted(12, "other", "1", "G"),
            accepted(13, "svc", "3", "F"),
        ])
        .unwrap();
        j.append(&[
            Event::Dispatched {
                at_us: 20,
                key: key("svc", "1"),
                attempt: 1,
                worker: Bytes::from_static(b"w1"),
            },
            Event::Dispatched {
                at_us: 21,
                key: key("svc", "1"),
                attempt: 2,
                worker: Bytes::from_static(b"w2"),
            },
            Event::Completed {
                at_us: 22,
                key: key("svc", "2"),
            },
            Event::Dispatched {
                at_us: 23,
                key: key("other", "1"),
                attempt: 1,
                worker: Bytes::from_static(b"w1"),
            },
            Event::Suspended {
                at_us: 24,
                key: key("other", "1"),
                step: 2,
                message: suspended.clone(),
            },
            Event::DeadLettered {
                at_us: 25,
                key: key("svc", "3"),
                reason: "poison".into(),
            },
        ])
        .unwrap();
        let unfinished = j.unfinished().unwrap();
        assert_eq!(ids(&unfinished), [key("svc", "1"), key("other", "1")]);
        assert_eq!(unfinished[0].message.envelope.attempt, 2, "latest dispatch");
        assert_eq!(unfinished[0].at, Checkpoint::Accepted);
        assert_eq!(unfinished[1].message, suspended, "latest suspension");
        assert_eq!(unfinished[1].at, Checkpoint::Suspended);

        // Answered: the flow goes on from the answer, not from the suspension.
        let mut answered = suspended.clone();
        answered.payload = Bytes::from_static(b"answer");
        j.append(&[Event::Resumed {
            at_us: 26,
            key: key("other", "1"),
            step: 2,
            message: answered.clone(),
        }])
        .unwrap();
        let unfinished = j.unfinished().unwrap();
        assert_eq!(unfinished[1].message, answered, "latest checkpoint");
        assert_eq!(unfinished[1].at, Checkpoint::Resumed);
        assert_eq!(j.stats().unwrap().resumed, 1);

        let history = j.history("svc", "1").unwrap();
        let kinds: Vec<_> = history.iter().map(|r| r.event.kind()).collect();
        assert_eq!(
            kinds,
            [
                EventKind::Accepted,
                EventKind::Dispatched,
                EventKind::Dispatched
            ]
        );
        assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
        assert_eq!(
            history[2].event,
            Event::Dispatched {
                at_us: 21,
                key: key("svc", "1"),
                attempt: 2,
                worker: Bytes::from_static(b"w2"),
            }
        );
        let dead = j.history("svc", "3").unwrap();
        assert!(matches!(&dead[1].event, Event::DeadLettered { reason, .. } if reason == "poison"));
        assert!(j.history("svc", "nope").unwrap().is_empty());
    }

    #[test]
    fn a_message_accepted_again_after_it_finished_is_unfinished_again() {
        let dir = TempDir::new("again");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        j.append(&[
            accepted(1, "s", "1", "F"),
            Event::Completed {
                at_us: 2,
                key: key("s", "1"),
            },
            accepted(3, "s", "1", "F"),
        ])
        .unwrap();
        assert_eq!(ids(&j.unfinished().unwrap()), [key("s", "1")]);
    }

    #[test]
    fn range_selects_acceptance_time_and_flow() {
        let dir = TempDir::new("range");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        j.append(&[
            accepted(100, "s", "a", "F"),
            accepted(200, "s", "b", "G"),
            accepted(300, "s", "c", "F"),
            accepted(400, "s", "d", "F"),
            Event::Completed {
                at_us: 250,
                key: key("s", "a"),
            },
        ])
        .unwrap();
        let all = j.range(100, 400, None).unwrap();
        assert_eq!(
            message_ids(&all),
            [key("s", "a"), key("s", "b"), key("s", "c")]
        );
        assert_eq!(all[0], request("s", "a", "F"), "as accepted");
        let f = j.range(0, u64::MAX, Some("F")).unwrap();
        assert_eq!(
            message_ids(&f),
            [key("s", "a"), key("s", "c"), key("s", "d")]
        );
        assert!(j.range(500, 600, None).unwrap().is_empty());
    }

    #[test]
    fn compact_removes_messages_finished_before_the_time_only() {
        let dir = TempDir::new("compact");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        j.append(&[
            accepted(10, "s", "done", "F"),
            accepted(11, "s", "dead", "F"),
            accepted(12, "s", "open", "F"),
            Event::Dispatched {
                at_us: 13,
                key: key("s", "done"),
                attempt: 1,
                worker: Bytes::from_static(b"w"),
            },
            Event::Completed {
                at_us: 100,
                key: key("s", "done"),
            },
            Event::DeadLettered {
                at_us: 300,
                key: key("s", "dead"),
                reason: "r".into(),
            },
        ])
        .unwrap();
        let before = j.stats().unwrap();
        assert_eq!(
            before,
            JournalStats {
                accepted: 3,
                dispatched: 1,
                suspended: 0,
                resumed: 0,
                completed: 1,
                dead_lettered: 1,
                oldest_us: Some(10),
                newest_us: Some(300),
            }
        );
        assert_eq!(j.compact(200).unwrap(), 1);
        assert!(j.history("s", "done").unwrap().is_empty());
        assert_eq!(j.history("s", "dead").unwrap().len(), 2);
        assert_eq!(j.compact(200).unwrap(), 0, "nothing more before 200");
        assert_eq!(j.compact(1_000).unwrap(), 1);
        let after = j.stats().unwrap();
        assert_eq!(
            (after.accepted, after.completed, after.dead_lettered),
            (1, 0, 0)
        );
        assert_eq!((after.oldest_us, after.newest_us), (Some(12), Some(12)));
        assert_eq!(ids(&j.unfinished().unwrap()), [key("s", "open")]);
        assert_eq!(j.compact(u64::MAX).unwrap(), 0, "unfinished are kept");
    }

    #[test]
    fn empty_journal_stats() {
        let dir = TempDir::new("empty");
        let j = SqliteJournal::open(dir.path(), SyncMode::Off).unwrap();
        assert_eq!(j.stats().unwrap(), JournalStats::default());
        assert!(j.unfinished().unwrap().is_empty());
    }

    #[test]
    fn events_survive_reopening_and_share_the_file_with_dead_letters() {
        let dir = TempDir::new("reopen");
        {
            let j = SqliteJournal::open(dir.path(), SyncMode::Full).unwrap();
            j.append(&[accepted(1, "s", "1", "F"), accepted(2, "s", "2", "F")])
                .unwrap();
        }
        let dlq = crate::dead_letter::DeadLetterStore::open(dir.path()).unwrap();
        dlq.insert(&request("s", "x", "F"), &["e".into()], 3)
            .unwrap();
        let j = SqliteJournal::open(dir.path(), SyncMode::Full).unwrap();
        assert_eq!(
            ids(&j.unfinished().unwrap()),
            [key("s", "1"), key("s", "2")]
        );
        assert_eq!(dlq.count().unwrap(), 1);
        assert_eq!(j.path(), database_path(dir.path()).display().to_string());
    }

    #[test]
    fn a_row_that_does_not_decode_is_skipped() {
        let dir = TempDir::new("undecodable");
        let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
        j.append(&[accepted(1, "s", "1", "F")]).unwrap();
        let raw = Connection::open(database_path(dir.path())).unwrap();
        raw.execute(
            "INSERT INTO journal_events (at_us, kind, service, id, envelope, payload)
             VALUES (2, 'accepted', 's', '2', x'c1', x'')",
            [],
        )
        .unwrap();
        raw.execute(
            "INSERT INTO journal_events (at_us, kind, service, id) VALUES (3, 'future_kind', 's', '1')",
            [],
        )
        .unwrap();
        j.append(&[accepted(4, "s", "3", "F")]).unwrap();
        assert_eq!(
            ids(&j.unfinished().unwrap()),
            [key("s", "1"), key("s", "3")]
        );
        assert_eq!(
            message_ids(&j.range(0, 10, None).unwrap()),
            [key("s", "1"), key("s", "3")]
        );
        assert_eq!(j.history("s", "2").unwrap(), []);
        assert_eq!(j.history("s", "1").unwrap().len(), 1);
    }

    fn damaged_copy(dir: &Path, name: &str, at: u64, garbage: &[u8]) -> std::path::PathBuf {
        use std::io::{Seek, SeekFrom, Write};
        let copy = dir.join(name);
        std::fs::copy(database_path(dir), &copy).unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&copy).unwrap();
        f.seek(SeekFrom::Start(at)).unwrap();
        f.write_all(garbage).unwrap();
        copy
    }

    #[test]
    fn a_damaged_file_gives_a_clear_error_naming_it() {
        let dir = TempDir::new("corrupt");
        {
            let j = SqliteJournal::open(dir.path(), SyncMode::Full).unwrap();
            let events: Vec<_> = (0..300)
                .map(|i| accepted(i, "svc", &format!("{i:0>40}"), "Flow"))
                .collect();
            j.append(&events).unwrap();
        } // The last connection closes: the log is checkpointed into the file.
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(151) % 251) as u8)
            .collect();
        for (name, at) in [("header.db", 0), ("page.db", 4096 * 3)] {
            let copy = damaged_copy(dir.path(), name, at, &garbage);
            let e = SqliteJournal::open_file(&copy, SyncMode::Full).unwrap_err();
            assert!(matches!(e, JournalError::Corrupt { .. }), "{name}: {e:?}");
            let text = e.to_string();
            assert!(text.contains(&copy.display().to_string()), "{text}");
            assert!(text.contains("damaged"), "{text}");
        }
        // The original is intact.
        let j = SqliteJournal::open(dir.path(), SyncMode::Full).unwrap();
        assert_eq!(j.stats().unwrap().accepted, 300);
    }

    #[test]
    fn a_torn_log_tail_loses_only_the_last_commit() {
        let dir = TempDir::new("torn");
        let j = SqliteJournal::open(dir.path(), SyncMode::Full).unwrap();
        for batch in 0..5 {
            let events: Vec<_> = (0..=batch)
                .map(|i| accepted(1, "s", &format!("{batch}-{i}"), "F"))
                .collect();
            j.append(&events).unwrap();
        }
        // Copy the file and its write-ahead log as a crash would leave them
        // (the connection is still open: nothing is checkpointed), with the
        // log's last bytes missing, as if the last write was torn.
        let db = database_path(dir.path());
        let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
        let torn = TempDir::new("torn-copy");
        std::fs::copy(&db, database_path(torn.path())).unwrap();
        let log = std::fs::read(&wal).unwrap();
        assert!(log.len() > 100, "the log holds the commits");
        std::fs::write(
            format!("{}-wal", database_path(torn.path()).display()),
            &log[..log.len() - 100],
        )
        .unwrap();
        let copy = SqliteJournal::open(torn.path(), SyncMode::Full).unwrap();
        assert_eq!(
            copy.stats().unwrap().accepted,
            1 + 2 + 3 + 4,
            "batch 5 torn"
        );
        drop(j);
    }
}
