//! The dead-letter store: messages that failed `max_attempts` times, with
//! the reason of every attempt, kept on disk until they are replayed.
//!
//! SQLite (through `rusqlite`, built in) in the node's data directory,
//! `zmanager.db`, in WAL mode: the node writes while `zmanager dlq` reads.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use crate::envelope::Envelope;
use crate::wire::Message;

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
            );",
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
        let e = &message.envelope;
        let errors = serde_json::to_string(errors).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO dead_letters (at_us, service, id, flow, errors, envelope, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
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
        let e = &message.envelope;
        let errors = serde_json::to_string(errors).unwrap_or_default();
        self.conn
            .execute(
                "INSERT INTO dead_letters (seq, at_us, service, id, flow, errors, envelope, payload)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    i64::try_from(seq).unwrap_or(i64::MAX),
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
    let envelope =
        Envelope::decode(&envelope).map_err(|e| StoreError::Corrupt(format!("#{seq}: {e}")))?;
    let errors: Vec<String> =
        serde_json::from_str(&errors).map_err(|e| StoreError::Corrupt(format!("#{seq}: {e}")))?;
    Ok(DeadLetter {
        seq,
        at_us: u64::try_from(at_us).unwrap_or(0),
        errors,
        message: Message::new(envelope, Bytes::from(payload)),
        replayed_us: replayed_us.and_then(|t| u64::try_from(t).ok()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
