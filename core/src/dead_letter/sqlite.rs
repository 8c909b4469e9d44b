//! The dead-letter store in SQLite: the node's data directory's
//! `zmanager.db`, beside the journal, in WAL mode, so that the node writes
//! while `zmanager dlq` reads.

use std::path::Path;

use bytes::Bytes;
use rusqlite::{Connection, OptionalExtension, params};

use super::{DeadLetter, DeadLetterLog, Replay, StoreError, Summary, database_path};
use crate::wire::Message;

/// The store in SQLite, open.
#[derive(Debug)]
pub struct SqliteDeadLetters {
    conn: Connection,
    path: String,
}

impl SqliteDeadLetters {
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

    /// Where it is.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Removes every dead letter (not their numbers): for tests of what
    /// follows an operator's delete.
    #[cfg(test)]
    pub(super) fn delete_all(&self) {
        self.conn.execute("DELETE FROM dead_letters", []).unwrap();
    }
}

impl DeadLetterLog for SqliteDeadLetters {
    fn next_seq(&self) -> Result<u64, StoreError> {
        // `sqlite_sequence` keeps the highest ever given, deleted or not.
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

    fn insert_numbered(
        &self,
        seq: u64,
        message: &Message,
        errors: &[String],
        at_us: u64,
    ) -> Result<(), StoreError> {
        let e = &message.envelope;
        let errors = super::encode_errors(errors);
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

    fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
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

    fn page(&self, before: Option<i64>, limit: usize) -> Result<Vec<Summary>, StoreError> {
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
            out.push(Summary::of(seq, at_us, &errors, &envelope, replayed_us)?);
        }
        Ok(out)
    }

    fn get(&self, seq: i64) -> Result<Option<DeadLetter>, StoreError> {
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

    fn mark_replayed(&self, seq: i64, at_us: u64) -> Result<(), StoreError> {
        self.conn
            .execute(
                "UPDATE dead_letters SET replayed_us = ?2 WHERE seq = ?1",
                params![seq, i64::try_from(at_us).unwrap_or(i64::MAX)],
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(())
    }

    fn find(&self, service: &str, id: &str) -> Result<Option<DeadLetter>, StoreError> {
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

    fn record_replay(&self, seq: i64, replay: &Replay) -> Result<(), StoreError> {
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

    fn replays(&self, seq: i64) -> Result<Vec<Replay>, StoreError> {
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

    fn superseded_by(&self, seq: i64) -> Result<Option<i64>, StoreError> {
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

    fn count(&self) -> Result<u64, StoreError> {
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
    DeadLetter::of(
        seq,
        at_us,
        &errors,
        &envelope,
        Bytes::from(payload),
        replayed_us,
    )
}
