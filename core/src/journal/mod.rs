//! The durable journal (groundwork, issue 7): every step of a message's
//! life recorded on disk, so that a node could recover what it had accepted
//! after a crash, show a message's history and replay a time range.
//!
//! **Not wired in yet**: the node does not write to it. What exists:
//! - [`event`]: the events ([`Event`]) and events as read back.
//! - [`Journal`]: the narrow trait a backend implements (a PostgreSQL
//!   backend shared by several nodes could implement it later).
//! - [`sqlite`]: the embedded backend, [`SqliteJournal`], in the node's
//!   `zmanager.db` next to the dead letters, with its [`SyncMode`].
//! - [`writer`]: [`JournalWriter`], group commit on a dedicated thread.

pub mod event;
pub mod recorder;
pub mod sqlite;
pub mod writer;

use std::sync::Arc;

pub use event::{Checkpoint, Event, EventKind, RecordedEvent, Unfinished};
pub use recorder::Recorder;
pub use sqlite::{SqliteJournal, SyncMode};
pub use writer::{Committed, JournalWriter};

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
    /// The database file is damaged (SQLite's integrity check failed, or it
    /// is not a database at all). Nothing was changed in it.
    #[error("journal {path} is damaged: {detail}")]
    Corrupt { path: String, detail: String },
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

    use crate::envelope::Envelope;
    use crate::wire::Message;

    /// A fresh directory, removed when dropped.
    #[derive(Debug)]
    pub(crate) struct TempDir(PathBuf);

    impl TempDir {
        pub(crate) fn new(name: &str) -> Self {
            let dir = std::env::temp_dir()
                .join(format!("zmanager-journal-{name}-{}", std::process::id()));
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
