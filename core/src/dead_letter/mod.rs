//! The dead-letter store: messages that failed `max_attempts` times, with
//! the reason of every attempt, kept until they are replayed.
//!
//! It is kept beside the journal ([`DeadLetterStore::open`] takes the
//! journal's [`Location`]): in SQLite, the data directory's `zmanager.db`
//! (`sqlite`); in PostgreSQL, the journal's database
//! (`journal/postgres/dead_letters.rs`), so that a standby that takes the
//! journal over has the dead letters of the node before it, and `zmanager
//! dlq` reads them from any machine. [`DeadLetterLog`] is what both do.
//!
//! Every replay (`zmanager dlq replay`) is recorded with what came of it
//! ([`Replay`]). A dead letter counts as replayed only once a replay
//! completed OK; one whose replay was dead-lettered again is superseded by
//! the new dead letter ([`DeadLetterStore::superseded_by`]), which holds
//! the message from then on. What a replay does — where it resumes, and
//! how its outcome is settled in the store — is [`replay`], shared by
//! `zmanager dlq replay` and `POST /v1/dead-letters/{seq}/replay`.

mod pool;
pub mod replay;
mod sqlite;
#[cfg(test)]
mod suite;

pub use pool::StorePool;
pub use sqlite::SqliteDeadLetters;

use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::journal::{JournalError, Location, PostgresJournal};
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
    /// The PostgreSQL database the store is in (the journal's) failed, or
    /// holds no journal.
    #[error("dead-letter store: {0}")]
    Postgres(#[source] JournalError),
    #[error("a stored dead letter does not decode: {0}")]
    Corrupt(String),
}

impl From<JournalError> for StoreError {
    fn from(e: JournalError) -> Self {
        Self::Postgres(e)
    }
}

/// What a dead-letter store does, on either backend.
pub trait DeadLetterLog {
    /// The number the next dead letter gets: one past the highest ever
    /// given (numbers are never reused, even after letters are deleted).
    fn next_seq(&self) -> Result<u64, StoreError>;

    /// Stores a dead letter under the number `seq` (given by the Subject,
    /// which names it in the error result before the store is written).
    /// In PostgreSQL, only while the node holds the journal's lease (a
    /// node another took over from stores nothing: [`JournalError::Fenced`]).
    fn insert_numbered(
        &self,
        seq: u64,
        message: &Message,
        errors: &[String],
        at_us: u64,
    ) -> Result<(), StoreError>;

    /// Stores a dead letter under the next number; returns it.
    fn insert(&self, message: &Message, errors: &[String], at_us: u64) -> Result<i64, StoreError> {
        let seq = self.next_seq()?;
        self.insert_numbered(seq, message, errors, at_us)?;
        Ok(i64::try_from(seq).unwrap_or(i64::MAX))
    }

    /// The most recent `limit` dead letters, oldest first.
    fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError>;

    /// At most `limit` dead letters numbered below `before` (all, without
    /// it), newest first, without their payloads: a page of a listing, read
    /// by the primary key whatever the store holds.
    fn page(&self, before: Option<i64>, limit: usize) -> Result<Vec<Summary>, StoreError>;

    /// One dead letter by number.
    fn get(&self, seq: i64) -> Result<Option<DeadLetter>, StoreError>;

    /// Records that a dead letter was replayed.
    fn mark_replayed(&self, seq: i64, at_us: u64) -> Result<(), StoreError>;

    /// The newest dead letter of the request `id` of `service`: where a
    /// request that was dead-lettered went (a replay's, say).
    fn find(&self, service: &str, id: &str) -> Result<Option<DeadLetter>, StoreError>;

    /// Records a replay of the dead letter `seq` and what came of it.
    fn record_replay(&self, seq: i64, replay: &Replay) -> Result<(), StoreError>;

    /// The replays of the dead letter `seq`, oldest first.
    fn replays(&self, seq: i64) -> Result<Vec<Replay>, StoreError>;

    /// The dead letter that a replay of `seq` became, if one was
    /// dead-lettered again (the latest such replay): it holds the message
    /// now, so `zmanager dlq replay --all` replays it and not `seq`.
    fn superseded_by(&self, seq: i64) -> Result<Option<i64>, StoreError>;

    /// How many are stored.
    fn count(&self) -> Result<u64, StoreError>;
}

/// The store, open, on either backend.
#[derive(Debug)]
pub enum DeadLetterStore {
    Sqlite(SqliteDeadLetters),
    /// A connection to the journal's database (boxed, as in
    /// [`Backend`](crate::journal::Backend)).
    Postgres(Box<PostgresJournal>),
}

impl DeadLetterStore {
    /// Opens the store beside the journal at `at`: in SQLite, created in
    /// the data directory if needed; in PostgreSQL, in a database a node
    /// has migrated (else [`JournalError::Missing`]). What a tool or the
    /// HTTP server opens; the node's own is [`beside`](Self::beside).
    pub fn open(at: &Location) -> Result<Self, StoreError> {
        Ok(match at {
            Location::Sqlite(dir) => Self::Sqlite(SqliteDeadLetters::open(dir)?),
            Location::Postgres(url) => {
                Self::Postgres(Box::new(PostgresJournal::open_for_dead_letters(url)?))
            }
        })
    }

    /// The node's own store in PostgreSQL, beside its journal connection:
    /// it stores dead letters only while that journal holds the lease.
    pub fn beside(journal: &crate::journal::postgres::Holding) -> Result<Self, StoreError> {
        Ok(Self::Postgres(Box::new(journal.connect()?)))
    }

    /// Where it is: the file, or the database's URL without its password.
    pub fn name(&self) -> &str {
        match self {
            Self::Sqlite(s) => s.path(),
            Self::Postgres(p) => p.target(),
        }
    }

    fn log(&self) -> &dyn DeadLetterLog {
        match self {
            Self::Sqlite(s) => s,
            Self::Postgres(p) => &**p,
        }
    }
}

impl DeadLetterLog for DeadLetterStore {
    fn next_seq(&self) -> Result<u64, StoreError> {
        self.log().next_seq()
    }
    fn insert_numbered(
        &self,
        seq: u64,
        message: &Message,
        errors: &[String],
        at_us: u64,
    ) -> Result<(), StoreError> {
        self.log().insert_numbered(seq, message, errors, at_us)
    }
    fn list(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.log().list(limit)
    }
    fn page(&self, before: Option<i64>, limit: usize) -> Result<Vec<Summary>, StoreError> {
        self.log().page(before, limit)
    }
    fn get(&self, seq: i64) -> Result<Option<DeadLetter>, StoreError> {
        self.log().get(seq)
    }
    fn mark_replayed(&self, seq: i64, at_us: u64) -> Result<(), StoreError> {
        self.log().mark_replayed(seq, at_us)
    }
    fn find(&self, service: &str, id: &str) -> Result<Option<DeadLetter>, StoreError> {
        self.log().find(service, id)
    }
    fn record_replay(&self, seq: i64, replay: &Replay) -> Result<(), StoreError> {
        self.log().record_replay(seq, replay)
    }
    fn replays(&self, seq: i64) -> Result<Vec<Replay>, StoreError> {
        self.log().replays(seq)
    }
    fn superseded_by(&self, seq: i64) -> Result<Option<i64>, StoreError> {
        self.log().superseded_by(seq)
    }
    fn count(&self) -> Result<u64, StoreError> {
        self.log().count()
    }
}

impl DeadLetter {
    /// A dead letter from its stored columns.
    pub(crate) fn of(
        seq: i64,
        at_us: i64,
        errors: &str,
        envelope: &[u8],
        payload: Bytes,
        replayed_us: Option<i64>,
    ) -> Result<Self, StoreError> {
        let (envelope, errors) = decode_parts(seq, envelope, errors)?;
        Ok(Self {
            seq,
            at_us: u64::try_from(at_us).unwrap_or(0),
            errors,
            message: Message::new(envelope, payload),
            replayed_us: replayed_us.and_then(|t| u64::try_from(t).ok()),
        })
    }
}

impl Summary {
    /// A line of a listing from its stored columns.
    pub(crate) fn of(
        seq: i64,
        at_us: i64,
        errors: &str,
        envelope: &[u8],
        replayed_us: Option<i64>,
    ) -> Result<Self, StoreError> {
        let (envelope, errors) = decode_parts(seq, envelope, errors)?;
        Ok(Self {
            seq,
            at_us: u64::try_from(at_us).unwrap_or(0),
            flow: envelope.flow,
            service: envelope.service,
            id: envelope.id,
            attempts: envelope.attempt,
            errors,
            replayed_us: replayed_us.and_then(|t| u64::try_from(t).ok()),
        })
    }
}

/// The errors of every attempt as stored: a JSON list of strings.
pub(crate) fn encode_errors(errors: &[String]) -> String {
    serde_json::to_string(errors).unwrap_or_default()
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
