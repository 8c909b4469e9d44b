//! The embedded journal: SQLite (through `rusqlite`, built in), in the
//! node's `zmanager.db` next to the dead letters, in WAL mode.
//!
//! One table, `journal_events`, one row per event (but an acceptance and
//! its first dispatch in one commit share one, `batch`), indexed by message
//! (`service`, `id`) and by time. A message's state is derived from its
//! events, so an append is only ever an `INSERT`.
//!
//! **Torn writes.** A crash in the middle of a write is SQLite's business:
//! with its write-ahead log, a transaction whose commit did not reach the
//! log whole is rolled back when the database is next opened, and the
//! transactions before it are kept. There is no hand-written log format to
//! repair. SQLite does that without a word, so opening the journal also
//! measures what the previous process left in the log and what SQLite
//! discarded of it ([`OpenReport`], in the `wal` module), and says so in
//! the node's log. What SQLite cannot repair — a file damaged underneath it (a bad
//! disk, another program writing into it) — is caught on open by
//! `PRAGMA quick_check` and reported as [`JournalError::Corrupt`] naming
//! the file; nothing is written to a damaged file.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use rusqlite::{
    Connection, ErrorCode, OpenFlags, OptionalExtension, Transaction, TransactionBehavior, params,
};

use super::row::{self, COLUMNS, COLUMNS_UNMERGED, Latest, Stored, TERMINAL, int, unsigned};
use super::{
    Event, EventKind, Journal, JournalError, JournalStats, MessageState, MessageSummary,
    RecentPage, RecentRequest, RecordedEvent, SummaryFilter, Unfinished, batch, wal,
};
use crate::dead_letter::database_path;
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
    opened: OpenReport,
    /// The columns of a whole row as this file has them ([`COLUMNS`], or
    /// [`COLUMNS_UNMERGED`] for a file written before `dispatched_us`
    /// existed and opened only to read).
    columns: &'static str,
}

/// What opening the journal found in the write-ahead log the previous
/// process left ([`SqliteJournal::opened`]). All zero when that process
/// closed the journal cleanly (the last connection to close removes its
/// log), or the journal is new.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Bytes of log left: the previous process did not close the journal
    /// (it crashed or was killed).
    pub left_log_bytes: u64,
    /// Frames of that log SQLite kept: every batch committed before the
    /// end, which is in the journal.
    pub kept_frames: u64,
    /// Bytes after the last committed batch that SQLite discarded: a write
    /// cut off by the crash. What they held was never committed, so never
    /// acknowledged to anyone.
    pub discarded_bytes: u64,
}

impl OpenReport {
    /// Whether the previous process closed the journal cleanly.
    pub fn clean(&self) -> bool {
        self.left_log_bytes == 0
    }
}

/// The write-ahead log of the database file `db`: `<db>-wal`.
fn wal_path(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    PathBuf::from(name)
}

/// The log as the previous process left it, read before SQLite opens the
/// database.
#[derive(Debug, Default)]
struct LeftLog {
    len: u64,
    header: Option<wal::Header>,
}

impl LeftLog {
    fn read(path: &Path) -> Self {
        let len = std::fs::metadata(path).map_or(0, |m| m.len());
        if len == 0 {
            return Self::default();
        }
        let mut bytes = Vec::with_capacity(32);
        let header = std::fs::File::open(path)
            .and_then(|f| f.take(wal::HEADER_LEN).read_to_end(&mut bytes))
            .ok()
            .and_then(|_| wal::Header::parse(&bytes));
        Self { len, header }
    }

    /// Compares what was left with what SQLite kept (once it has opened
    /// the file on `conn`), and says so in the log.
    fn report(self, conn: &Connection, name: &str, path: &Path) -> OpenReport {
        if self.len == 0 {
            return OpenReport::default();
        }
        let found = (|| -> Result<OpenReport, String> {
            // Its second column is the number of frames in the log as
            // SQLite recovered it (-1 when not in WAL mode).
            let kept: i64 = conn
                .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| r.get(1))
                .map_err(|e| e.to_string())?;
            let kept = unsigned(kept);
            let discarded = match self.header {
                // Not a valid header: SQLite ignored the whole log.
                None => self.len,
                Some(header) => {
                    let mut log = std::fs::File::open(path).map_err(|e| e.to_string())?;
                    wal::discarded_after(&mut log, self.len, header, kept)
                        .map_err(|e| e.to_string())?
                }
            };
            Ok(OpenReport {
                left_log_bytes: self.len,
                kept_frames: kept,
                discarded_bytes: discarded,
            })
        })();
        match found {
            Ok(report) if report.discarded_bytes > 0 => {
                tracing::warn!(
                    path = %name,
                    discarded_bytes = report.discarded_bytes,
                    kept_frames = report.kept_frames,
                    "journal: discarded an incomplete tail of {} bytes (a write cut off by a crash); every committed batch before it is kept",
                    report.discarded_bytes
                );
                report
            }
            Ok(report) => {
                tracing::info!(
                    path = %name,
                    log_bytes = report.left_log_bytes,
                    kept_frames = report.kept_frames,
                    "journal: the previous run did not close the journal (a crash or kill); its log was recovered whole, nothing discarded"
                );
                report
            }
            Err(e) => {
                tracing::warn!(
                    path = %name,
                    log_bytes = self.len,
                    error = %e,
                    "journal: the previous run did not close the journal (a crash or kill); SQLite recovered its log, but how much of it was kept could not be measured"
                );
                OpenReport {
                    left_log_bytes: self.len,
                    ..OpenReport::default()
                }
            }
        }
    }
}

/// SQLite's `quick_check` of the file on `conn`: [`JournalError::Corrupt`]
/// if it finds damage. `O(size)`; it finds damaged pages and records, but
/// unlike `integrity_check` does not cross-check indexes against tables.
fn check(conn: &Connection, name: &str) -> Result<(), JournalError> {
    let sqlite = |source| error(name, source);
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
            path: name.to_owned(),
            detail: format!("integrity check failed: {}", shown.join("; ")),
        });
    }
    Ok(())
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
    payload BLOB,
    dispatched_us INTEGER
);
CREATE INDEX IF NOT EXISTS journal_events_message ON journal_events (service, id, seq);
CREATE INDEX IF NOT EXISTS journal_accepted_time ON journal_events (at_us) WHERE kind = 'accepted';
CREATE INDEX IF NOT EXISTS journal_finished_time ON journal_events (at_us)
    WHERE kind IN ('completed', 'dead_lettered');
CREATE INDEX IF NOT EXISTS journal_failures ON journal_events (seq)
    WHERE kind = 'dead_lettered' OR (kind = 'completed' AND reason IS NOT NULL);
CREATE TABLE IF NOT EXISTS journal_catalogs (
    version INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    sources BLOB NOT NULL,
    at_us INTEGER NOT NULL
);
";

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

/// Whether the journal's table has the `dispatched_us` column (added after
/// the first release: `batch`).
fn has_dispatch_column(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('journal_events')
         WHERE name = 'dispatched_us')",
        [],
        |r| r.get(0),
    )
}

/// How a connection is opened: what it checks and whether it may create.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The node's own connection, opened at start-up: checks the file,
    /// looks at the log the previous process left, creates the table.
    Owner,
    /// Another connection of the same process, beside the owner's: the
    /// owner did the checks.
    Beside,
    /// A reader in another process (`zmanager journal`): checks the file,
    /// creates nothing, and opens it read-only so that closing it never
    /// checkpoints or removes a log that the node has not looked at yet.
    Reader,
}

impl SqliteJournal {
    /// Opens (creating if needed) the journal in `data_dir`'s `zmanager.db`:
    /// the node's own connection, at start-up (see [`open_file`]).
    ///
    /// [`open_file`]: Self::open_file
    pub fn open(data_dir: &Path, sync: SyncMode) -> Result<Self, JournalError> {
        std::fs::create_dir_all(data_dir).map_err(|source| JournalError::Create {
            path: data_dir.display().to_string(),
            source,
        })?;
        Self::open_file(&database_path(data_dir), sync)
    }

    /// Opens (creating if needed) the journal in the database file `path`.
    /// A damaged file gives [`JournalError::Corrupt`] and is not written to.
    ///
    /// It also looks at the write-ahead log the previous process left (see
    /// [`OpenReport`], returned by [`opened`](Self::opened)) and logs what it
    /// found: a warning if SQLite discarded an incomplete write, a note if
    /// the previous process did not close the journal. That finding is
    /// only right for the first connection to the file since the previous
    /// process ended, made before anything is written to it: the node opens
    /// its journal this way at start-up, and any other connection with
    /// [`open_beside`](Self::open_beside) or [`open_to_read`](Self::open_to_read).
    pub fn open_file(path: &Path, sync: SyncMode) -> Result<Self, JournalError> {
        Self::open_as(path, sync, Role::Owner)
    }

    /// Another connection to the journal in `data_dir`, beside the one the
    /// node opened with [`open`](Self::open) (retention works on one): no
    /// integrity check and no look at the log, which that opening did.
    pub fn open_beside(data_dir: &Path, sync: SyncMode) -> Result<Self, JournalError> {
        Self::open_as(&database_path(data_dir), sync, Role::Beside)
    }

    /// Opens an existing journal in `data_dir` to read it, from another
    /// process than the node's (`zmanager journal`), whether the node runs
    /// or not. A missing file or a database without a journal gives
    /// [`JournalError::Missing`], a damaged one [`JournalError::Corrupt`].
    /// The connection is read-only: writing through it fails.
    pub fn open_to_read(data_dir: &Path) -> Result<Self, JournalError> {
        Self::open_as(&database_path(data_dir), SyncMode::default(), Role::Reader)
    }

    fn open_as(path: &Path, sync: SyncMode, role: Role) -> Result<Self, JournalError> {
        let name = path.display().to_string();
        let sqlite = |source| error(&name, source);
        let log_path = wal_path(path);
        // Measured before SQLite opens the file: it recovers the log
        // without a word.
        let left = match role {
            Role::Owner => LeftLog::read(&log_path),
            Role::Beside | Role::Reader => LeftLog::default(),
        };
        let conn = match role {
            Role::Owner | Role::Beside => Connection::open(path),
            Role::Reader => {
                if !path.is_file() {
                    return Err(JournalError::Missing {
                        path: name,
                        detail: "no such file".into(),
                    });
                }
                Connection::open_with_flags(
                    path,
                    OpenFlags::SQLITE_OPEN_READ_ONLY
                        | OpenFlags::SQLITE_OPEN_URI
                        | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
            }
        }
        .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        if role != Role::Beside {
            check(&conn, &name)?;
        }
        let opened = match role {
            Role::Owner => left.report(&conn, &name, &log_path),
            Role::Beside | Role::Reader => OpenReport::default(),
        };
        if role == Role::Reader {
            let exists: bool = conn
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM sqlite_master
                     WHERE type = 'table' AND name = 'journal_events')",
                    [],
                    |r| r.get(0),
                )
                .map_err(sqlite)?;
            if !exists {
                return Err(JournalError::Missing {
                    path: name,
                    detail:
                        "the database holds no journal (was the node run with [journal] enabled?)"
                            .into(),
                });
            }
        } else {
            conn.pragma_update(None, "journal_mode", "WAL")
                .map_err(sqlite)?;
            conn.pragma_update(None, "synchronous", sync.pragma())
                .map_err(sqlite)?;
            conn.execute_batch(SCHEMA).map_err(sqlite)?;
            if !has_dispatch_column(&conn).map_err(sqlite)? {
                // A journal of before acceptances' rows held their
                // dispatch: its rows read as they are.
                conn.execute_batch("ALTER TABLE journal_events ADD COLUMN dispatched_us INTEGER")
                    .map_err(sqlite)?;
            }
        }
        let columns = if has_dispatch_column(&conn).map_err(sqlite)? {
            COLUMNS
        } else {
            COLUMNS_UNMERGED
        };
        Ok(Self {
            conn,
            path: name,
            opened,
            columns,
        })
    }

    /// What opening found in the log the previous process left (always
    /// empty for [`open_beside`](Self::open_beside) and
    /// [`open_to_read`](Self::open_to_read), which do not look).
    pub fn opened(&self) -> &OpenReport {
        &self.opened
    }

    /// The database file.
    pub fn path(&self) -> &str {
        &self.path
    }

    fn sqlite(&self, source: rusqlite::Error) -> JournalError {
        error(&self.path, source)
    }

    fn message(
        &self,
        seq: i64,
        envelope: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
    ) -> Option<Message> {
        row::message(&self.path, seq, envelope, payload)
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
        dispatched_us: r.get(11)?,
    })
}

impl SqliteJournal {
    /// Inserts `events` in one transaction, as the rows `batch` makes of
    /// them.
    fn insert<'a>(&self, events: impl Iterator<Item = &'a Event>) -> Result<(), JournalError> {
        let rows = batch::rows(events);
        let tx = self
            .conn
            .unchecked_transaction()
            .map_err(|e| self.sqlite(e))?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO journal_events
                     (at_us, kind, service, id, flow, attempt, worker, step, reason, envelope,
                      payload, dispatched_us)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
                )
                .map_err(|e| self.sqlite(e))?;
            for row in rows {
                let c = row.columns;
                insert
                    .execute(params![
                        row.at_us,
                        row.kind,
                        row.service,
                        row.id,
                        c.flow,
                        c.attempt,
                        c.worker,
                        c.step,
                        c.reason,
                        c.envelope,
                        c.payload,
                        c.dispatched_us
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
        // The latest acceptance of each message with nothing final after
        // it, with the attempt of a dispatch written into its row.
        let accepted: Vec<(i64, Message, Option<i64>)> = {
            let mut statement = self
                .conn
                .prepare_cached(&format!(
                    "SELECT a.seq, a.envelope, a.payload, a.attempt FROM journal_events a
                     WHERE a.kind = 'accepted' AND NOT EXISTS (
                         SELECT 1 FROM journal_events t
                         WHERE t.service = a.service AND t.id = a.id AND t.seq > a.seq
                           AND (t.kind = 'accepted' OR t.kind IN {TERMINAL}))
                     ORDER BY a.seq"
                ))
                .map_err(|e| self.sqlite(e))?;
            let rows = statement
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
                .map_err(|e| self.sqlite(e))?;
            let mut found = Vec::new();
            for r in rows {
                let (seq, envelope, payload, merged) = r.map_err(|e| self.sqlite(e))?;
                if let Some(m) = self.message(seq, envelope, payload) {
                    found.push((seq, m, merged));
                }
            }
            found
        };
        let mut out = Vec::with_capacity(accepted.len());
        for (seq, message, merged) in accepted {
            let (service, id) = (&message.envelope.service, &message.envelope.id);
            let latest = |kind: &str| {
                self.conn
                    .prepare_cached(
                        "SELECT seq, attempt, envelope, payload FROM journal_events
                         WHERE service = ?1 AND id = ?2 AND seq > ?3 AND kind = ?4
                         ORDER BY seq DESC LIMIT 1",
                    )
                    .and_then(|mut s| {
                        s.query_row(params![service, id, seq, kind], |r| {
                            Ok(Latest {
                                seq: r.get(0)?,
                                attempt: r.get(1)?,
                                envelope: r.get(2)?,
                                payload: r.get(3)?,
                            })
                        })
                        .optional()
                    })
                    .map_err(|e| self.sqlite(e))
            };
            let (suspended, resumed, dispatched) = (
                latest("suspended")?,
                latest("resumed")?,
                latest("dispatched")?,
            );
            out.push(row::unfinished(
                &self.path,
                (seq, merged),
                message,
                suspended,
                resumed,
                dispatched,
            ));
        }
        Ok(out)
    }

    fn history(&self, service: &str, id: &str) -> Result<Vec<RecordedEvent>, JournalError> {
        let mut statement = self
            .conn
            .prepare_cached(&format!(
                "SELECT {} FROM journal_events WHERE service = ?1 AND id = ?2 ORDER BY seq",
                self.columns
            ))
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(params![service, id], stored)
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for r in rows {
            row::events(&self.path, r.map_err(|e| self.sqlite(e))?, &mut out);
        }
        Ok(out)
    }

    fn recent_results(
        &self,
        since_us: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Message)>, JournalError> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT seq, at_us, envelope, payload FROM journal_events
                 WHERE kind = 'completed' AND envelope IS NOT NULL AND at_us >= ?1
                 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(
                params![int(since_us), i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get(2)?,
                        r.get(3)?,
                    ))
                },
            )
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (seq, at_us, envelope, payload) = r.map_err(|e| self.sqlite(e))?;
            if let Some(m) = self.message(seq, envelope, payload) {
                out.push((unsigned(at_us), m));
            }
        }
        out.reverse();
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
            // An acceptance's row with an attempt holds its dispatch too.
            .prepare_cached(
                "SELECT kind, COUNT(*), COUNT(attempt) FROM journal_events GROUP BY kind",
            )
            .map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, i64>(1)?,
                    r.get::<_, i64>(2)?,
                ))
            })
            .map_err(|e| self.sqlite(e))?;
        for r in rows {
            let (kind, n, with_attempt) = r.map_err(|e| self.sqlite(e))?;
            let n = unsigned(n);
            if !row::count_kind(&mut stats, &kind, n) {
                tracing::warn!(path = %self.path, kind = %kind, n, "journal rows of unknown kind");
            }
            if kind == EventKind::Accepted.as_str() {
                stats.dispatched += unsigned(with_attempt);
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
        // Immediate: it takes the write lock before it reads, so a writer
        // committing in between cannot make its read stale (which SQLite
        // reports as busy, without waiting).
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
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

    fn compact_oldest(
        &self,
        finished_before_us: u64,
        max_messages: u64,
    ) -> Result<u64, JournalError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)
            .map_err(|e| self.sqlite(e))?;
        // The final events, oldest first (through the time index: the ones
        // removed by earlier calls are gone from its front).
        let finished: Vec<(String, String, i64)> = {
            let mut select = tx
                .prepare_cached(&format!(
                    "SELECT service, id, seq FROM journal_events
                     WHERE kind IN {TERMINAL} AND at_us < ?1
                     ORDER BY at_us, seq LIMIT ?2"
                ))
                .map_err(|e| self.sqlite(e))?;
            let rows = select
                .query_map(params![int(finished_before_us), int(max_messages)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?))
                })
                .map_err(|e| self.sqlite(e))?;
            rows.collect::<Result<_, _>>().map_err(|e| self.sqlite(e))?
        };
        let mut removed = std::collections::HashSet::new();
        {
            let mut delete = tx
                .prepare_cached(
                    "DELETE FROM journal_events WHERE service = ?1 AND id = ?2 AND seq <= ?3",
                )
                .map_err(|e| self.sqlite(e))?;
            for (service, id, seq) in finished {
                delete
                    .execute(params![service, id, seq])
                    .map_err(|e| self.sqlite(e))?;
                removed.insert((service, id));
            }
        }
        tx.commit().map_err(|e| self.sqlite(e))?;
        Ok(removed.len() as u64)
    }

    /// The pages in use in the whole `zmanager.db` (the dead letters share
    /// it) times their size. Deleted rows free pages, which SQLite keeps in
    /// the file for reuse (the file only shrinks with `VACUUM`): those are
    /// not counted.
    fn data_bytes(&self) -> Result<u64, JournalError> {
        let bytes: i64 = self
            .conn
            .query_row(
                "SELECT (c.page_count - f.freelist_count) * s.page_size
                 FROM pragma_page_count() c, pragma_freelist_count() f, pragma_page_size() s",
                [],
                |r| r.get(0),
            )
            .map_err(|e| self.sqlite(e))?;
        Ok(unsigned(bytes))
    }

    fn recent(&self, page: &RecentPage) -> Result<Vec<RecentRequest>, JournalError> {
        self.recent_page(page)
    }

    fn summaries(&self, filter: &SummaryFilter) -> Result<Vec<MessageSummary>, JournalError> {
        let lifecycle = row::quoted_states(|_| true);
        let selected = row::quoted_states(|s| filter.state.matches(s));
        let sql = format!(
            "WITH m AS (
                 SELECT service, id,
                        MAX(CASE WHEN kind = 'accepted' THEN seq END) AS accepted_seq,
                        MAX(CASE WHEN kind IN ({lifecycle}) THEN seq END) AS state_seq,
                        COALESCE(MAX(attempt), 0) AS attempts
                 FROM journal_events
                 WHERE (?5 IS NULL OR id = ?5)
                 GROUP BY service, id)
             SELECT m.service, m.id, a.flow, a.at_us, s.kind, m.attempts
             FROM m JOIN journal_events a ON a.seq = m.accepted_seq
                    JOIN journal_events s ON s.seq = m.state_seq
             WHERE (?1 IS NULL OR a.at_us >= ?1) AND (?2 IS NULL OR a.at_us < ?2)
               AND (?3 IS NULL OR a.flow = ?3) AND s.kind IN ({selected})
             ORDER BY a.seq DESC
             LIMIT ?4"
        );
        let mut statement = self.conn.prepare(&sql).map_err(|e| self.sqlite(e))?;
        let rows = statement
            .query_map(
                params![
                    filter.since_us.map(int),
                    filter.until_us.map(int),
                    filter.flow,
                    filter.limit.map_or(-1, int),
                    filter.id
                ],
                |r| {
                    Ok((
                        r.get::<_, String>(0)?,
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, i64>(3)?,
                        r.get::<_, String>(4)?,
                        r.get::<_, i64>(5)?,
                    ))
                },
            )
            .map_err(|e| self.sqlite(e))?;
        let mut out = Vec::new();
        for r in rows {
            let (service, id, flow, at_us, kind, attempts) = r.map_err(|e| self.sqlite(e))?;
            let Some(state) = EventKind::parse(&kind).and_then(MessageState::after) else {
                continue; // not selected by the query
            };
            out.push(MessageSummary {
                service,
                id,
                flow,
                accepted_us: unsigned(at_us),
                state,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        out.reverse();
        Ok(out)
    }
}

mod catalogs;
mod recent;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dead_letter::DeadLetterLog as _;
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
    fn events_survive_reopening_and_share_the_file_with_dead_letters() {
        let dir = TempDir::new("reopen");
        {
            let j = SqliteJournal::open(dir.path(), SyncMode::Full).unwrap();
            j.append(&[accepted(1, "s", "1", "F"), accepted(2, "s", "2", "F")])
                .unwrap();
        }
        let dlq = crate::dead_letter::SqliteDeadLetters::open(dir.path()).unwrap();
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
        // A reader (`zmanager journal`) in between neither hides nor
        // repairs the evidence: it leaves the log as it found it.
        let torn_log = std::fs::metadata(wal_path(&database_path(torn.path())))
            .unwrap()
            .len();
        {
            let reader = SqliteJournal::open_to_read(torn.path()).unwrap();
            assert_eq!(reader.stats().unwrap().accepted, 1 + 2 + 3 + 4);
            assert!(reader.opened().clean(), "a reader does not look");
            assert!(reader.append(&[accepted(9, "s", "x", "F")]).is_err());
        }
        assert_eq!(
            std::fs::metadata(wal_path(&database_path(torn.path())))
                .unwrap()
                .len(),
            torn_log
        );
        let copy = SqliteJournal::open(torn.path(), SyncMode::Full).unwrap();
        assert_eq!(
            copy.stats().unwrap().accepted,
            1 + 2 + 3 + 4,
            "batch 5 torn"
        );
        let report = *copy.opened();
        assert!(!report.clean());
        assert_eq!(report.left_log_bytes, torn_log);
        assert!(report.kept_frames > 0);
        // Batch 5's frames, less the 100 bytes cut off.
        assert!(report.discarded_bytes > 0, "{report:?}");
        let frame = 24 + 4096;
        assert_eq!(
            report.kept_frames * frame + 32 + report.discarded_bytes,
            torn_log,
            "{report:?}"
        );
        drop(copy);
        // Closed cleanly now: nothing to report on the next opening.
        let again = SqliteJournal::open(torn.path(), SyncMode::Full).unwrap();
        assert_eq!(*again.opened(), OpenReport::default());
        assert_eq!(again.stats().unwrap().accepted, 1 + 2 + 3 + 4);
        drop(j);
    }

    #[test]
    fn an_unclean_close_with_a_whole_log_discards_nothing() {
        let dir = TempDir::new("unclean");
        let j = SqliteJournal::open(dir.path(), SyncMode::Full).unwrap();
        assert!(j.opened().clean(), "a new journal");
        j.append(&[accepted(1, "s", "1", "F")]).unwrap();
        // As a kill -9 leaves them: the file and its whole log.
        let copy = TempDir::new("unclean-copy");
        let db = database_path(dir.path());
        std::fs::copy(&db, database_path(copy.path())).unwrap();
        std::fs::copy(wal_path(&db), wal_path(&database_path(copy.path()))).unwrap();
        let reopened = SqliteJournal::open(copy.path(), SyncMode::Full).unwrap();
        let report = *reopened.opened();
        assert!(!report.clean());
        assert!(report.kept_frames > 0);
        assert_eq!(report.discarded_bytes, 0, "{report:?}");
        assert_eq!(reopened.stats().unwrap().accepted, 1);
        drop(j);
    }

    /// A journal written before acceptances' rows held their dispatch (no
    /// `dispatched_us` column) reads as it is, read-only; the node's
    /// opening adds the column, and old and new rows read alike.
    #[test]
    fn a_journal_of_before_merged_dispatches_reads_as_it_is_and_is_upgraded() {
        let dir = TempDir::new("unmerged");
        crate::journal::suite::an_unmerged_journal_reads_as_it_is(
            |events| {
                let j = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
                for event in events {
                    j.append(std::slice::from_ref(event)).unwrap();
                }
                drop(j);
                Connection::open(database_path(dir.path()))
                    .unwrap()
                    .execute_batch("ALTER TABLE journal_events DROP COLUMN dispatched_us")
                    .unwrap();
            },
            || SqliteJournal::open_to_read(dir.path()).unwrap(),
            || SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap(),
        );
    }

    #[test]
    fn a_reader_needs_an_existing_journal() {
        let dir = TempDir::new("reader");
        let e = SqliteJournal::open_to_read(dir.path()).unwrap_err();
        assert!(matches!(e, JournalError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("no such file"), "{e}");
        crate::dead_letter::SqliteDeadLetters::open(dir.path()).unwrap();
        let e = SqliteJournal::open_to_read(dir.path()).unwrap_err();
        assert!(e.to_string().contains("holds no journal"), "{e}");
    }
}
