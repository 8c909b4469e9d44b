//! The journal on whichever backend the configuration names (`[journal]
//! backend`): one type for the node, the HTTP server, reload, retention and
//! `zmanager journal` to hold, so that none of them says which.

use std::path::PathBuf;

use super::postgres::{Holding, Lease};
use super::{
    CatalogLog, Event, Journal, JournalError, JournalStats, MessageSummary, PostgresJournal,
    RecentPage, RecentRequest, RecordedCatalog, RecordedEvent, SqliteJournal, SummaryFilter,
    SyncMode, Unfinished,
};
use crate::catalog::version::Sources;
use crate::wire::Message;

/// Where a journal is.
#[derive(Clone, PartialEq, Eq)]
pub enum Location {
    /// SQLite, in this data directory's `zmanager.db`.
    Sqlite(PathBuf),
    /// PostgreSQL, at this connection string (a URL or `key=value` pairs;
    /// it may hold a password, so it is never shown).
    Postgres(String),
}

impl std::fmt::Debug for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Sqlite(dir) => f.debug_tuple("Sqlite").field(dir).finish(),
            Self::Postgres(_) => f.write_str("Postgres(..)"),
        }
    }
}

/// A journal, open, on either backend.
#[derive(Debug)]
pub enum Backend {
    Sqlite(SqliteJournal),
    /// Boxed: its client's configuration is large, and a journal is made
    /// once per connection.
    Postgres(Box<PostgresJournal>),
}

impl Backend {
    /// The node's own connection, at start-up: SQLite checks its file and
    /// what a crash left in its log; PostgreSQL applies its migrations and
    /// claims the `lease`, waiting for it as the lease says (and no longer
    /// once `stopping` says so).
    pub fn open(
        at: &Location,
        sync: SyncMode,
        lease: &Lease,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Self, JournalError> {
        Ok(match at {
            Location::Sqlite(dir) => Self::Sqlite(SqliteJournal::open(dir, sync)?),
            Location::Postgres(url) => Self::Postgres(Box::new(PostgresJournal::open_owner(
                url, sync, lease, stopping,
            )?)),
        })
    }

    /// Another connection of the node's, beside the one [`open`](Self::open)
    /// made (retention's, reload's). In PostgreSQL, given the node's
    /// `holding` of the lease, it writes only while the node holds it.
    pub fn open_beside(
        at: &Location,
        sync: SyncMode,
        holding: Option<&Holding>,
    ) -> Result<Self, JournalError> {
        Ok(match (at, holding) {
            (Location::Sqlite(dir), _) => Self::Sqlite(SqliteJournal::open_beside(dir, sync)?),
            (Location::Postgres(_), Some(holding)) => Self::Postgres(Box::new(holding.connect()?)),
            (Location::Postgres(url), None) => {
                Self::Postgres(Box::new(PostgresJournal::open_beside(url, sync)?))
            }
        })
    }

    /// A read-only connection to an existing journal (`zmanager journal`,
    /// the HTTP server).
    pub fn open_to_read(at: &Location) -> Result<Self, JournalError> {
        Ok(match at {
            Location::Sqlite(dir) => Self::Sqlite(SqliteJournal::open_to_read(dir)?),
            Location::Postgres(url) => {
                Self::Postgres(Box::new(PostgresJournal::open_to_read(url)?))
            }
        })
    }

    /// Where it is, for messages: the database file, or the URL without
    /// its password.
    pub fn name(&self) -> &str {
        match self {
            Self::Sqlite(j) => j.path(),
            Self::Postgres(j) => j.target(),
        }
    }

    /// Set once another node holds the journal's lease (PostgreSQL's node
    /// connection only): this one commits nothing more.
    pub fn taken_over(&self) -> Option<std::sync::Arc<std::sync::atomic::AtomicBool>> {
        match self {
            Self::Sqlite(_) => None,
            Self::Postgres(j) => j.taken_over(),
        }
    }

    fn inner(&self) -> &dyn Journal {
        match self {
            Self::Sqlite(j) => j,
            Self::Postgres(j) => j.as_ref(),
        }
    }
}

impl CatalogLog for Backend {
    fn record_catalog(
        &self,
        version: u32,
        sources: &Sources,
        at_us: u64,
    ) -> Result<(), JournalError> {
        match self {
            Self::Sqlite(j) => j.record_catalog(version, sources, at_us),
            Self::Postgres(j) => j.record_catalog(version, sources, at_us),
        }
    }

    fn catalogs(&self) -> Result<Vec<RecordedCatalog>, JournalError> {
        match self {
            Self::Sqlite(j) => j.catalogs(),
            Self::Postgres(j) => j.catalogs(),
        }
    }
}

impl Journal for Backend {
    fn append(&self, events: &[Event]) -> Result<(), JournalError> {
        self.inner().append(events)
    }

    fn append_batches(&self, batches: &[Vec<Event>]) -> Result<(), JournalError> {
        self.inner().append_batches(batches)
    }

    fn unfinished(&self) -> Result<Vec<Unfinished>, JournalError> {
        self.inner().unfinished()
    }

    fn recent_results(
        &self,
        since_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, JournalError> {
        self.inner().recent_results(since_us, limit)
    }

    fn history(&self, service: &str, id: &str) -> Result<Vec<RecordedEvent>, JournalError> {
        self.inner().history(service, id)
    }

    fn range(
        &self,
        since_us: u64,
        until_us: u64,
        flow: Option<&str>,
    ) -> Result<Vec<Message>, JournalError> {
        self.inner().range(since_us, until_us, flow)
    }

    fn stats(&self) -> Result<JournalStats, JournalError> {
        self.inner().stats()
    }

    fn compact(&self, finished_before_us: u64) -> Result<u64, JournalError> {
        self.inner().compact(finished_before_us)
    }

    fn compact_oldest(
        &self,
        finished_before_us: u64,
        max_messages: u64,
    ) -> Result<u64, JournalError> {
        self.inner()
            .compact_oldest(finished_before_us, max_messages)
    }

    fn data_bytes(&self) -> Result<u64, JournalError> {
        self.inner().data_bytes()
    }

    fn summaries(&self, filter: &SummaryFilter) -> Result<Vec<MessageSummary>, JournalError> {
        self.inner().summaries(filter)
    }

    fn recent(&self, page: &RecentPage) -> Result<Vec<RecentRequest>, JournalError> {
        self.inner().recent(page)
    }
}
