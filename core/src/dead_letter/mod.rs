//! The dead-letter store: messages that failed `max_attempts` times, with
//! the reason of every attempt, kept on disk until they are replayed.
//!
//! SQLite (through `rusqlite`, built in) in the node's data directory,
//! `zmanager.db`, in WAL mode: the node writes while `zmanager dlq` reads.
//!
//! Every replay (`zmanager dlq replay`) is recorded with what came of it
//! ([`Replay`]). A dead letter counts as replayed only once a replay
//! completed OK; one whose replay was dead-lettered again is superseded by
//! the new dead letter ([`DeadLetterStore::superseded_by`]), which holds
//! the message from then on. What a replay does — where it resumes, and
//! how its outcome is settled in the store — is [`replay`], shared by
//! `zmanager dlq replay` and `POST /v1/dead-letters/{seq}/replay`.

pub mod replay;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use crate::wire::Message;
use crate::wire::envelope::Envelope;

/// The database file in a data directory.
pub fn database_path(data_dir: &Path) -> PathBuf {
    data_dir.join("zmanager.db")
}

/// A dead letter as stored.
#[derive(Debug, Clone)]
pub struct DeadLetter {
    /// Its number in the store (what `zmanager dlq show` takes).
    pub seq: i64,
    /// When it was dead-lettered, microseconds since the Unix epoch.
    pub at_us: u64,
    /// The reason of each failed attempt, in order.
    pub errors: Vec<String>,
    /// The message as it was last dispatched.
    pub message: Message,
    /// When it was replayed, if it was.
    pub replayed_us: Option<u64>,
}

/// A dead letter without its payload: a line of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    pub seq: i64,
    pub at_us: u64,
    pub flow: String,
    pub service: String,
    pub id: String,
    /// Deliveries it had (the envelope's `attempt`).
    pub attempts: u32,
    pub errors: Vec<String>,
    pub replayed_us: Option<u64>,
}

/// One replay of a dead letter, and what came of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replay {
    /// When its outcome was known, microseconds since the Unix epoch.
    pub at_us: u64,
    /// What came of it, as `zmanager dlq replay` printed it (`ok`,
    /// `refused: 3 (unknown_flow): …`, `failed: …`).
    pub outcome: String,
    /// The dead letter the replay became, when it was dead-lettered again.
    pub dead_letter: Option<i64>,
}

/// What went wrong with the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("dead-letter store {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("a stored dead letter does not decode: {0}")]
    Corrupt(String),
}

/// The store, open.
#[derive(Debug)]
pub struct DeadLetterStore {
    conn: Connection,
    path: String,
}

impl DeadLetterStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::Create {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = database_path(data_dir);
        let name = path.display().to_string();
        let sqlite = |source| StoreError::Sqlite {
            path: name.clone(),
            source,
        };
        let conn = Connection::open(&path).map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS dead_letters (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                at_us INTEGER NOT NULL,
                service TEXT NOT NULL,
                id TEXT NOT NULL,
                flow TEXT NOT NULL,
                errors TEXT NOT NULL,
                envelope BLOB NOT NULL,
                payload BLOB NOT NULL,
                replayed_us INTEGER
            );
            CREATE TABLE IF NOT EXISTS dead_letter_replays (
                seq INTEGER NOT NULL,
                at_us INTEGER NOT NULL,
                outcome TEXT NOT NULL,
                dead_letter INTEGER
            );
            CREATE INDEX IF NOT EXISTS dead_letter_replays_by_seq
                ON dead_letter_replays (seq);
            CREATE INDEX IF NOT EXISTS dead_letters_by_request
                ON dead_letters (service, id);",
        )
        .map_err(sqlite)?;
        Ok(Self { conn, path: name })
    }

    fn sqlite(&self, source: rusqlite::Error) -> StoreError {
        StoreError::Sqlite {
            path: self.path.clone(),
            source,
        }
    }

    /// Stores a dead letter; returns its number.
    pub fn insert(
        &self,
        message: &Message,
        errors: &[String],
        at_us: u64,
    ) -> Result<i64, StoreError> {
        self.write(None, message, errors, at_us)?;
        Ok(self.conn.last_insert_rowid())
    }

    /// The number the next dead letter gets: one past the highest ever
    /// given (numbers are never reused, even after letters are deleted).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        let highest: Option<i64> = self
            .conn
            .query_row(
                "SELECT MAX(seq) FROM (SELECT seq FROM sqlite_sequence WHERE name = 'dead_letters'
                 UNION ALL SELECT MAX(seq) FROM dead_letters)",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(u64::try_from(highest.unwrap_or(0)).unwrap_or(0) + 1)
    }

    /// Stores a dead letter under the number `seq` (given by the Subject,
    /// which names it in the error result before the store is written).
    pub fn insert_numbered(
        &self,
        seq: u64,
        message: &Message,
        errors: &[String],
        at_us: u64,
    ) -> Result<(), StoreError> {
        self.write(
            Some(i64::try_from(seq).unwrap_or(i64::MAX)),
            message,
            errors,
            at_us,
        )
    }

    /// One row; a `seq` of `None` (NULL) takes the next number.
    fn write(
        &self,
        seq: Option<i64>,
        message: &Message,
        errors: &[String],
        at_us: u64,
    ) -> Result<(), StoreError> {
        let e = &message.envelope;
        let errors = serde_json::to_string(errors).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO dead_letters (seq, at_us, service, id, flow, errors, envelope, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    seq,
                    i64::try_from(at_us).unwrap_or(i64::MAX),
                    e.service,
                    e.id,
                    e.flow,
                    errors,
                    e.encode(),
                    message.payload.as_ref()
                ],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// The most recent `limit` dead letters, oldest first.
    pub fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT seq, at_us, errors, envelope, payload, replayed_us FROM
                 (SELECT * FROM dead_letters ORDER BY seq DESC LIMIT ?1) ORDER BY seq",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([i64::try_from(limit).unwrap_or(i64::MAX)], row)
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for r in rows {
            out.push(decode(r.map_err(|e| self.sqlite(e))?)?);
        }
        Ok(out)
    }

    /// At most `limit` dead letters numbered below `before` (all, without
    /// it), newest first, without their payloads: a page of a listing, read
    /// by the primary key whatever the store holds.
    pub fn page(&self, before: Option<i64>, limit: usize) -> Result<Vec<Summary>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT seq, at_us, errors, envelope, replayed_us FROM dead_letters
                 WHERE seq < ?1 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(
                params![
                    before.unwrap_or(i64::MAX),
                    i64::try_from(limit).unwrap_or(i64::MAX)
                ],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, Vec<u8>>(3)?,
                        r.get::<_, Option<i64>>(4)?,
                    ))
                },
            )
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (seq, at_us, errors, envelope, replayed_us) = r.map_err(|e| self.sqlite(e))?;
            let (envelope, errors) = decode_parts(seq, &envelope, &errors)?;
            out.push(Summary {
                seq,
                at_us: u64::try_from(at_us).unwrap_or(0),
                flow: envelope.flow,
                service: envelope.service,
                id: envelope.id,
                attempts: envelope.attempt,
                errors,
                replayed_us: replayed_us.and_then(|t| u64::try_from(t).ok()),
            });
        }
        Ok(out)
    }

    /// One dead letter by number.
    pub fn get(&self, seq: i64) -> Result<Option<DeadLetter>, StoreError> {
        let raw = self
            .conn
            .query_row(
                "SELECT seq, at_us, errors, envelope, payload, replayed_us FROM dead_letters WHERE seq = ?1",
                [seq],
                row,
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        raw.map(decode).transpose()
    }

    /// Records that a dead letter was replayed.
    pub fn mark_replayed(&self, seq: i64, at_us: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE dead_letters SET replayed_us = ?2 WHERE seq = ?1",
                params![seq, i64::try_from(at_us).unwrap_or(i64::MAX)],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// The newest dead letter of the request `id` of `service`: where a
    /// request that was dead-lettered went (a replay's, say).
    pub fn find(&self, service: &str, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        let raw = self
            .conn
            .query_row(
                "SELECT seq, at_us, errors, envelope, payload, replayed_us FROM dead_letters
                 WHERE service = ?1 AND id = ?2 ORDER BY seq DESC LIMIT 1",
                [service, id],
                row,
            )
            .optional()
            .map_err(|e| self.sqlite(e))?;
        raw.map(decode).transpose()
    }

    /// Records a replay of the dead letter `seq` and what came of it.
    pub fn record_replay(&self, seq: i64, replay: &Replay) -> Result<(), StoreError> {
        self.conn
            .execute(
                "INSERT INTO dead_letter_replays (seq, at_us, outcome, dead_letter)
                 VALUES (?1, ?2, ?3, ?4)",
                params![
                    seq,
                    i64::try_from(replay.at_us).unwrap_or(i64::MAX),
                    replay.outcome,
                    replay.dead_letter
                ],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    /// The replays of the dead letter `seq`, oldest first.
    pub fn replays(&self, seq: i64) -> Result<Vec<Replay>, StoreError> {
        let mut statement = self
            .conn
            .prepare(
                "SELECT at_us, outcome, dead_letter FROM dead_letter_replays
                 WHERE seq = ?1 ORDER BY rowid",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([seq], |r| {
                Ok(Replay {
                    at_us: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                    outcome: r.get(1)?,
                    dead_letter: r.get(2)?,
                })
            })
            .map_err(|e| self.sqlite(e))?;
        rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))
    }

    /// The dead letter that a replay of `seq` became, if one was
    /// dead-lettered again (the latest such replay): it holds the message
    /// now, so `zmanager dlq replay --all` replays it and not `seq`.
    pub fn superseded_by(&self, seq: i64) -> Result<Option<i64>, StoreError> {
        self.conn
            .query_row(
                "SELECT dead_letter FROM dead_letter_replays
                 WHERE seq = ?1 AND dead_letter IS NOT NULL ORDER BY rowid DESC LIMIT 1",
                [seq],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.sqlite(e))
    }

    /// How many are stored.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.conn
            .query_row("SELECT COUNT(*) FROM dead_letters", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|n| u64::try_from(n).unwrap_or(0))
            .map_err(|e| self.sqlite(e))
    }
}

type Raw = (i64, i64, String, Vec<u8>, Vec<u8>, Option<i64>);

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Raw> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
    ))
}

fn decode(
    (seq, at_us, errors, envelope, payload, replayed_us): Raw,
) -> Result<DeadLetter, StoreError> {
    let (envelope, errors) = decode_parts(seq, &envelope, &errors)?;
    Ok(DeadLetter {
        seq,
        at_us: u64::try_from(at_us).unwrap_or(0),
        errors,
        message: Message::new(envelope, Bytes::from(payload)),
        replayed_us: replayed_us.and_then(|t| u64::try_from(t).ok()),
    })
}

/// A stored envelope and error list, decoded.
fn decode_parts(
    seq: i64,
    envelope: &[u8],
    errors: &str,
) -> Result<(Envelope, Vec<String>), StoreError> {
    let envelope =
        Envelope::decode(envelope).map_err(|e| StoreError::Corrupt(format!("#{seq}: {e}")))?;
    let errors: Vec<String> =
        serde_json::from_str(errors).map_err(|e| StoreError::Corrupt(format!("#{seq}: {e}")))?;
    Ok((envelope, errors))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Subject numbers dead letters itself from `next_seq`: numbers go
    /// on after what is stored, and after what was stored and deleted.
    #[test]
    fn numbers_given_by_the_subject_are_never_reused() {
        let dir = std::env::temp_dir().join(format!("zmanager-dlq-seq-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DeadLetterStore::open(&dir).unwrap();
        assert_eq!(store.next_seq().unwrap(), 1);
        let m = Message::new(Envelope::request("m1", "F"), Bytes::from_static(b"\xc0"));
        store.insert_numbered(7, &m, &["e".into()], 1).unwrap();
        assert_eq!(store.get(7).unwrap().unwrap().message, m);
        assert_eq!(store.next_seq().unwrap(), 8);
        // An automatic number comes after it too.
        assert_eq!(store.insert(&m, &[], 2).unwrap(), 8);
        store.conn.execute("DELETE FROM dead_letters", []).unwrap();
        assert_eq!(store.next_seq().unwrap(), 9, "not reused after a delete");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn stores_lists_shows_and_marks() {
        let dir = std::env::temp_dir().join(format!("zmanager-dlq-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DeadLetterStore::open(&dir).unwrap();
        let mut e = Envelope::request("m1", "F");
        e.service = "svc".into();
        e.attempt = 5;
        let m = Message::new(e, Bytes::from_static(b"\x01"));
        let errors = vec![
            "attempt 1: panicked".to_owned(),
            "attempt 2: worker lost".to_owned(),
        ];
        let seq = store.insert(&m, &errors, 42).unwrap();
        assert_eq!(store.count().unwrap(), 1);
        let got = store.get(seq).unwrap().unwrap();
        assert_eq!(got.message, m);
        assert_eq!(got.errors, errors);
        assert_eq!((got.at_us, got.replayed_us), (42, None));
        store.mark_replayed(seq, 43).unwrap();
        // A second connection (as `zmanager dlq` opens) sees the same.
        let other = DeadLetterStore::open(&dir).unwrap();
        let listed = other.list(10).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].replayed_us, Some(43));
        assert!(other.get(999).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn pages_go_newest_first_below_a_number_without_payloads() {
        let dir = std::env::temp_dir().join(format!("zmanager-dlq-page-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DeadLetterStore::open(&dir).unwrap();
        for n in 1..=7 {
            let mut e = Envelope::request(format!("m{n}"), "F");
            e.service = "svc".into();
            e.attempt = 3;
            let m = Message::new(e, Bytes::from_static(b"\x01"));
            store.insert(&m, &[format!("attempt {n}")], n).unwrap();
        }
        let seqs = |page: &[Summary]| page.iter().map(|d| d.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&store.page(None, 3).unwrap()), [7, 6, 5]);
        assert_eq!(seqs(&store.page(Some(5), 3).unwrap()), [4, 3, 2]);
        assert_eq!(seqs(&store.page(Some(2), 3).unwrap()), [1]);
        assert!(store.page(Some(1), 3).unwrap().is_empty());
        let top = &store.page(None, 1).unwrap()[0];
        assert_eq!(
            (top.flow.as_str(), top.service.as_str(), top.id.as_str()),
            ("F", "svc", "m7")
        );
        assert_eq!((top.attempts, top.at_us), (3, 7));
        assert_eq!(top.errors, ["attempt 7"]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn replays_are_recorded_and_a_dead_lettered_replay_supersedes() {
        let dir =
            std::env::temp_dir().join(format!("zmanager-dlq-replays-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let store = DeadLetterStore::open(&dir).unwrap();
        let letter = |service: &str, id: &str| {
            let mut e = Envelope::request(id, "F");
            e.service = service.into();
            Message::new(e, Bytes::from_static(b"\xc0"))
        };
        let first = store.insert(&letter("svc", "m1"), &[], 1).unwrap();
        assert!(store.replays(first).unwrap().is_empty());
        assert_eq!(store.superseded_by(first).unwrap(), None);
        let refused = Replay {
            at_us: 2,
            outcome: "refused: 3 (unknown_flow): unknown flow \"F\"".into(),
            dead_letter: None,
        };
        store.record_replay(first, &refused).unwrap();
        assert_eq!(
            store.superseded_by(first).unwrap(),
            None,
            "refused: still its own"
        );
        // Its replay is dead-lettered again, as a request of the replaying service.
        let again = store
            .insert(&letter("dlq-replay-1", "dlq-replay-1-0"), &[], 3)
            .unwrap();
        let found = store
            .find("dlq-replay-1", "dlq-replay-1-0")
            .unwrap()
            .unwrap();
        assert_eq!(found.seq, again);
        assert!(store.find("svc", "nope").unwrap().is_none());
        let dead = Replay {
            at_us: 4,
            outcome: "dead-lettered again".into(),
            dead_letter: Some(again),
        };
        store.record_replay(first, &dead).unwrap();
        assert_eq!(store.replays(first).unwrap(), [refused, dead]);
        assert_eq!(store.superseded_by(first).unwrap(), Some(again));
        assert_eq!(store.superseded_by(again).unwrap(), None);
        assert_eq!(store.get(first).unwrap().unwrap().replayed_us, None);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
