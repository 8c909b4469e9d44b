//! The durable journal: every step of a message's life recorded on disk,
//! so that a node recovers what it had accepted after a crash, and a
//! message's history can be shown and a time range replayed
//! (`docs/reliability.md`, `docs/journal.md`).
//!
//! - [`event`]: the events ([`Event`]) and events as read back.
//! - [`Journal`] and [`CatalogLog`]: the traits a backend implements; [`Backend`], the
//!   journal on the backend a [`Location`] names.
//! - [`sqlite`]: the embedded backend, [`SqliteJournal`], in the node's
//!   `zmanager.db` next to the dead letters, with its [`SyncMode`].
//! - [`postgres`]: [`PostgresJournal`], the same table in a PostgreSQL
//!   database several machines can reach.
//! - `row` (private): what a row of that table means, to both backends;
//!   `batch` (private): the rows a batch of events is written as, an
//!   acceptance's row holding its dispatch when both are in the batch.
//! - [`writer`]: [`JournalWriter`], group commit on a dedicated thread.
//! - [`retention`]: [`Retention`], which removes finished messages after
//!   `retain` or past `max_mb`, on its own thread.
//! - `wal` (private): reading SQLite's write-ahead log to tell what a crash
//!   left in it ([`OpenReport`]).
//! - `suite` (tests): the journal's tests, run on both backends.

mod backend;
mod batch;
pub mod event;
pub mod postgres;
pub mod retention;
mod row;
pub mod sqlite;
#[cfg(test)]
pub(crate) mod suite;
mod wal;
pub mod writer;

use std::sync::Arc;

pub use backend::{Backend, Location};
pub use event::{Checkpoint, Event, EventKind, RecordedEvent, Unfinished};
pub use postgres::PostgresJournal;
pub use retention::Retention;
pub use sqlite::{OpenReport, SqliteJournal, SyncMode};
pub use writer::{BATCH_BOUNDS, COMMIT_BOUNDS_US, CommitFigures, Committed, Health, JournalWriter};

use crate::catalog::version::Sources;
use crate::wire::Message;

/// What a journal backend does. Every method is one transaction.
pub trait Journal {
    /// Records `events`, in order, all or none: one transaction per call,
    /// so a caller that batches gets one commit (and one sync) per batch.
    fn append(&self, events: &[Event]) -> Result<(), JournalError>;

    /// Records several submissions' events, in order, in one transaction
    /// (group commit). The default copies them into one slice; a backend
    /// can write them where they are.
    fn append_batches(&self, batches: &[Vec<Event>]) -> Result<(), JournalError> {
        self.append(&batches.concat())
    }

    /// Messages accepted and neither completed nor dead-lettered, in the
    /// order they were accepted, each at its latest checkpoint (accepted,
    /// suspended or resumed) with the attempt of its latest dispatch.
    fn unfinished(&self) -> Result<Vec<Unfinished>, JournalError>;

    /// The results of the latest `limit` messages that completed at or
    /// after `since_us` with a result recorded, oldest first, each with when
    /// it completed: what a restarted node remembers for duplicates.
    fn recent_results(
        &self,
        since_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, JournalError>;

    /// Every event recorded for the message `id` of `service`, in order.
    fn history(&self, service: &str, id: &str) -> Result<Vec<RecordedEvent>, JournalError>;

    /// Requests accepted at `since_us <= at < until_us` (of `flow` only, if
    /// given), in acceptance order, as accepted: what a replay re-injects.
    fn range(
        &self,
        since_us: u64,
        until_us: u64,
        flow: Option<&str>,
    ) -> Result<Vec<Message>, JournalError>;

    /// Counts per event kind, and the oldest and newest event.
    fn stats(&self) -> Result<JournalStats, JournalError>;

    /// Deletes the events of every message that completed or was
    /// dead-lettered before `finished_before_us`; returns how many messages
    /// were removed. Unfinished messages are never touched.
    fn compact(&self, finished_before_us: u64) -> Result<u64, JournalError>;

    /// Like [`compact`](Self::compact), for at most `max_messages`
    /// messages, those that finished first: a bounded transaction, so a
    /// writer beside it waits little. Returns how many were removed; fewer
    /// than `max_messages` means none is left to remove.
    fn compact_oldest(
        &self,
        finished_before_us: u64,
        max_messages: u64,
    ) -> Result<u64, JournalError>;

    /// Bytes of storage the journal's data takes now (what retention keeps
    /// under `max_mb`). Space freed by [`compact`](Self::compact) counts as
    /// free even if the backend keeps it allocated for reuse.
    fn data_bytes(&self) -> Result<u64, JournalError>;

    /// One line per message matching `filter`, in acceptance order: what
    /// `zmanager journal list` prints.
    fn summaries(&self, filter: &SummaryFilter) -> Result<Vec<MessageSummary>, JournalError>;

    /// A page of requests, newest first: what the console lists. Reads
    /// indexes from the page's cursor on, never the whole journal, so a
    /// page costs the same at a hundred requests or a million.
    fn recent(&self, page: &RecentPage) -> Result<Vec<RecentRequest>, JournalError>;
}

/// The catalog's versions a journal keeps beside its events
/// (`docs/reload.md`): each version a node ran, with its files.
pub trait CatalogLog {
    /// Records version `version` of the catalog, made of `sources`; a
    /// number is recorded once.
    fn record_catalog(
        &self,
        version: u32,
        sources: &Sources,
        at_us: u64,
    ) -> Result<(), JournalError>;

    /// Every version recorded, oldest first. A row whose files do not
    /// decode is an error (the journal is damaged).
    fn catalogs(&self) -> Result<Vec<RecordedCatalog>, JournalError>;
}

/// Which page [`Journal::recent`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecentPage {
    /// Only events recorded before this sequence number (a previous
    /// page's last [`RecentRequest::seq`]); `None`: from the newest.
    pub before: Option<i64>,
    /// At most this many.
    pub limit: u32,
    /// Only the requests that failed: dead-lettered, or completed with an
    /// error result; listed by when they failed. Otherwise every request,
    /// listed by when it was accepted.
    pub failed: bool,
}

/// One request of a [`RecentPage`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecentRequest {
    /// The sequence number it is listed by (its acceptance, or its
    /// failure): the next page's cursor.
    pub seq: i64,
    pub service: String,
    pub id: String,
    pub flow: String,
    /// When it was (last) accepted, if the journal still has it.
    pub accepted_us: Option<u64>,
    /// When it completed or was dead-lettered.
    pub ended_us: Option<u64>,
    pub state: MessageState,
    /// The highest delivery attempt recorded.
    pub attempts: u32,
    /// The error code's name of an error result, or a dead letter's reason.
    pub error: Option<String>,
}

/// Where a message stands, by the latest step of its life recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageState {
    /// Accepted, and maybe dispatched: its flow is running.
    Accepted,
    /// Waiting at an `@ASYNC` step for its answer.
    Suspended,
    /// Answered at an `@ASYNC` step: its flow is running again.
    Resumed,
    /// Its flow finished.
    Completed,
    /// It went to the dead-letter store.
    DeadLettered,
}

impl MessageState {
    /// The name used on the command line and in output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Accepted => "accepted",
            Self::Suspended => "suspended",
            Self::Resumed => "resumed",
            Self::Completed => "completed",
            Self::DeadLettered => "dead_lettered",
        }
    }

    /// Whether the message still has work to do (recovery resumes it).
    pub fn is_unfinished(self) -> bool {
        matches!(self, Self::Accepted | Self::Suspended | Self::Resumed)
    }

    /// The state an event of `kind` leaves a message in (a dispatch does
    /// not change it).
    pub fn after(kind: EventKind) -> Option<Self> {
        Some(match kind {
            EventKind::Accepted => Self::Accepted,
            EventKind::Dispatched => return None,
            EventKind::Suspended => Self::Suspended,
            EventKind::Resumed => Self::Resumed,
            EventKind::Completed => Self::Completed,
            EventKind::DeadLettered => Self::DeadLettered,
        })
    }
}

/// Which states [`Journal::summaries`] selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum StateFilter {
    /// Every message.
    #[default]
    Any,
    /// Messages in this state.
    Is(MessageState),
    /// Messages not finished (accepted, suspended or resumed).
    Unfinished,
}

impl StateFilter {
    pub fn matches(self, state: MessageState) -> bool {
        match self {
            Self::Any => true,
            Self::Is(s) => s == state,
            Self::Unfinished => state.is_unfinished(),
        }
    }
}

/// What [`Journal::summaries`] selects. The default selects every message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SummaryFilter {
    /// Accepted at or after this time (µs since the epoch).
    pub since_us: Option<u64>,
    /// Accepted before this time.
    pub until_us: Option<u64>,
    /// Of this flow.
    pub flow: Option<String>,
    /// With this message id (of any service).
    pub id: Option<String>,
    pub state: StateFilter,
    /// At most this many, the latest accepted (all if `None`).
    pub limit: Option<u64>,
}

/// One message, as [`Journal::summaries`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSummary {
    pub service: String,
    pub id: String,
    pub flow: String,
    /// When it was (last) accepted.
    pub accepted_us: u64,
    pub state: MessageState,
    /// The highest delivery attempt recorded (0: never dispatched).
    pub attempts: u32,
}

/// What [`Journal::stats`] reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JournalStats {
    pub accepted: u64,
    pub dispatched: u64,
    pub suspended: u64,
    pub resumed: u64,
    pub completed: u64,
    pub dead_lettered: u64,
    /// Time of the oldest event kept, if any.
    pub oldest_us: Option<u64>,
    /// Time of the newest event kept, if any.
    pub newest_us: Option<u64>,
}

/// One version of the catalog the journal recorded (`docs/reload.md`):
/// each version a node ran, with its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCatalog {
    pub version: u32,
    pub digest: String,
    pub sources: Sources,
    pub at_us: u64,
}

/// What went wrong with the journal.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    #[error("cannot create {path}: {source}")]
    Create {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("journal {path}: {source}")]
    Sqlite {
        path: String,
        #[source]
        source: rusqlite::Error,
    },
    /// The PostgreSQL journal at `target` (its URL without the password)
    /// failed: it could not be reached, or a statement failed.
    #[error("journal {target}: {}", postgres::describe(source))]
    Postgres {
        target: String,
        #[source]
        source: ::postgres::Error,
    },
    /// The journal's schema is newer than this binary knows: it was
    /// migrated by a newer zmanager. Nothing was written to it.
    #[error(
        "journal {path} has schema version {found}, newer than this zmanager knows ({known}): run a zmanager at least as new as the one that migrated it"
    )]
    SchemaTooNew {
        path: String,
        found: i64,
        known: i64,
    },
    /// Another node runs on this journal (PostgreSQL): one node at a
    /// time commits to it. Nothing was written.
    #[error("journal {path} is in use: {detail}; one node at a time runs on a journal")]
    Held { path: String, detail: String },
    /// Another node ran on this journal (PostgreSQL) while this node's
    /// connection was lost: this node may not commit to it any more, or
    /// two nodes would run the same requests.
    #[error(
        "journal {path}: another node took over this journal while this node's connection to it was lost; this node commits nothing more to it (restart it to run on the journal again, once the other has stopped)"
    )]
    Fenced { path: String },
    /// The journal's configuration cannot be used.
    #[error("{detail}")]
    Config { detail: String },
    /// The database file is damaged (SQLite's integrity check failed, or it
    /// is not a database at all). Nothing was changed in it.
    #[error("journal {path} is damaged: {detail}")]
    Corrupt { path: String, detail: String },
    /// There is no journal where one was expected to be read.
    #[error("no journal at {path}: {detail}")]
    Missing { path: String, detail: String },
    /// A journal thread (the writer's, retention's) could not be started.
    #[error("cannot start a journal thread: {0}")]
    Thread(#[source] std::io::Error),
    /// The writer's thread is gone (it stopped, or the journal failed).
    #[error("the journal writer has stopped")]
    WriterStopped,
    /// The batch the events were committed with failed.
    #[error("journal batch failed: {0}")]
    Batch(#[source] Arc<JournalError>),
}

/// Helpers shared by the journal's tests.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::{Path, PathBuf};

    use bytes::Bytes;

    use crate::wire::Message;
    use crate::wire::envelope::Envelope;

    /// A fresh directory, removed when dropped.
    #[derive(Debug)]
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        /// A fresh directory, never another's: tests run in parallel in
        /// one process, and two given the same `name` must not remove or
        /// replace each other's files.
        pub(crate) fn new(name: &str) -> Self {
            static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
            let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let dir = std::env::temp_dir().join(format!(
                "zmanager-journal-{name}-{}-{n}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir).unwrap();
            Self(dir)
        }

        pub(crate) fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// A request `id` of `service` into `flow`.
    pub(crate) fn request(service: &str, id: &str, flow: &str) -> Message {
        let mut e = Envelope::request(id, flow);
        e.service = service.into();
        Message::new(e, Bytes::copy_from_slice(id.as_bytes()))
    }
}
