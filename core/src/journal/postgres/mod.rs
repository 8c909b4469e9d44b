//! The PostgreSQL journal: the same events in the same table as SQLite's,
//! in a database several machines can reach (and a standby can take over,
//! `docs/deployment.md`), through rust-postgres's synchronous client.
//!
//! - `schema`: the numbered migrations, applied at start-up.
//! - `events`: [`Journal`](super::Journal) on it: a group commit is one
//!   `INSERT … SELECT FROM UNNEST(…)` statement, one round trip.
//! - `catalogs`: the catalog's versions.
//! - `dead_letters`: the dead-letter store
//!   ([`DeadLetterLog`](crate::dead_letter::DeadLetterLog)) in the same
//!   database.
//!
//! **Connections.** One connection per journal, like SQLite's. A call on a
//! connection that has been lost reconnects first, so the writer's retries
//! carry a node through a database restart. Every connection has a connect
//! timeout and a statement timeout, so a database that stops answering
//! fails a call instead of hanging it; the writer then retries it.
//!
//! **Durability.** [`SyncMode::Full`] commits with `synchronous_commit = on`
//! (the commit waits for the server's WAL flush, and its synchronous
//! replicas if it has any); `normal` and `off` with `synchronous_commit =
//! off`, which may lose the last commits if the *database server* crashes,
//! never if the node does.
//!
//! The synchronous client runs its own small Tokio runtime: it must not be
//! called from a task of another one (it panics there). The node calls it
//! from its own threads: the writer's, retention's, and blocking tasks.

mod catalogs;
mod database;
mod dead_letters;
mod events;
mod lease;
mod schema;

pub use lease::Lease;

use std::cell::{RefCell, RefMut};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use postgres::config::Host;
use postgres::{Client, Config, Statement};

use database::Database;

use super::{JournalError, SyncMode};

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement may run before the server cancels it: a stuck
/// database fails a commit (which the writer retries) rather than hang it.
const STATEMENT_TIMEOUT: &str = "30s";

/// The PostgreSQL journal, connected.
#[derive(Debug)]
pub struct PostgresJournal {
    config: Database,
    /// Where it is, for messages: the URL without its password.
    target: String,
    sync: SyncMode,
    role: Role,
    /// The owner's generation, once it holds the lease.
    generation: Option<i64>,
    /// Another generation holds the lease now (found by a commit or the
    /// renewer): nothing more is written through this journal.
    fenced: Arc<AtomicBool>,
    renewer: Option<lease::Renewer>,
    /// `None` only while it is dropped.
    connection: RefCell<Option<Connection>>,
    /// A reader's, of a schema from before acceptances' rows held their
    /// dispatch (no `dispatched_us` column): its rows read as they are.
    unmerged: bool,
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The node's own (its writer's): holds the lease (`lease`), and
    /// commits only while its generation holds it.
    Owner,
    /// Another of the node's, beside the owner's (retention's, reload's).
    Beside,
    /// Read-only, from any process (`zmanager journal`, the HTTP server).
    Reader,
}

/// A connection and what was prepared on it.
struct Connection {
    client: Client,
    insert: Option<Statement>,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("closed", &self.client.is_closed())
            .finish_non_exhaustive()
    }
}

/// Where `config` connects, without its password: `postgres://user@host:port/db`.
fn target(config: &Config) -> String {
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
        .map(|(host, port)| match host {
            Host::Tcp(name) => format!("{name}:{port}"),
            Host::Unix(dir) => format!("{}:{port}", dir.display()),
        })
        .collect();
    format!(
        "postgres://{}@{}/{}",
        config.get_user().unwrap_or(""),
        hosts.join(","),
        config.get_dbname().unwrap_or("")
    )
}

impl PostgresJournal {
    /// Connects to the journal at `url` (a libpq connection string: a
    /// `postgres://` URL or `key=value` pairs) as the node's own connection,
    /// with the default [`Lease`] (see [`open_owner`](Self::open_owner)).
    pub fn open(url: &str, sync: SyncMode) -> Result<Self, JournalError> {
        Self::open_owner(url, sync, &Lease::default(), &|| false)
    }

    /// The node's own connection: applies the migrations the database
    /// lacks (a schema newer than this binary knows is refused), then
    /// claims the lease, waiting while another node holds it — as long as
    /// it takes for a standby, at most one lease otherwise (then
    /// [`JournalError::Held`]), and no longer once `stopping` says so.
    pub fn open_owner(
        url: &str,
        sync: SyncMode,
        lease: &Lease,
        stopping: &dyn Fn() -> bool,
    ) -> Result<Self, JournalError> {
        let mut journal = Self::connect(url, sync, Role::Owner)?;
        let found = {
            let mut connection = journal.connection()?;
            schema::migrate(&mut connection.client).map_err(|e| journal.error(e))?
        };
        match found {
            schema::Found::Current { applied } if applied > 0 => {
                tracing::info!(target_db = %journal.target, applied, version = schema::known(), "journal: schema migrated");
            }
            schema::Found::Current { .. } => {}
            schema::Found::Newer(version) => return Err(journal.too_new(version)),
        }
        let holder = lease::holder();
        let started = Instant::now();
        let mut said = false;
        let generation = loop {
            let claimed = lease::claim(&mut journal.connection()?.client, lease, &holder)
                .map_err(|e| journal.error(e))?;
            let held = match claimed {
                Ok(generation) => break generation,
                Err(held) => held,
            };
            let gave_up = !lease.standby && started.elapsed() > lease.duration + lease.poll();
            if gave_up || stopping() {
                return Err(JournalError::Held {
                    path: journal.target.clone(),
                    detail: held,
                });
            }
            if !said {
                tracing::info!(target_db = %journal.target, standby = lease.standby, "journal: waiting for the lease: {held}");
                said = true;
            }
            std::thread::sleep(lease.poll());
        };
        journal.generation = Some(generation);
        journal.renewer = Some(
            lease::Renewer::start(
                journal.config.clone(),
                *lease,
                generation,
                journal.target.clone(),
                Arc::clone(&journal.fenced),
            )
            .map_err(JournalError::Thread)?,
        );
        tracing::info!(target_db = %journal.target, generation, waited_ms = started.elapsed().as_millis() as u64, lease_ms = lease.duration.as_millis() as u64, tls = journal.config.tls(), "journal: this node holds the lease");
        Ok(journal)
    }

    /// Another connection beside the node's (retention's): the node's
    /// opening applied the migrations.
    pub fn open_beside(url: &str, sync: SyncMode) -> Result<Self, JournalError> {
        Self::connect(url, sync, Role::Beside)
    }

    /// A read-only connection to an existing journal, from another process
    /// than the node's (`zmanager journal`). A database where no node ever
    /// ran gives [`JournalError::Missing`].
    pub fn open_to_read(url: &str) -> Result<Self, JournalError> {
        Self::open_existing(url, Role::Reader).map(|(journal, _)| journal)
    }

    /// A connection to the dead letters of an existing journal, from
    /// another process than the node's or its HTTP server (`zmanager dlq`,
    /// which records replays): [`JournalError::Missing`] where no node ran,
    /// or none of a zmanager that kept its dead letters there.
    pub fn open_for_dead_letters(url: &str) -> Result<Self, JournalError> {
        let (journal, version) = Self::open_existing(url, Role::Beside)?;
        if version < schema::DEAD_LETTERS {
            return Err(JournalError::Missing {
                path: journal.target.clone(),
                detail: format!(
                    "the journal's schema is version {version}, from before dead letters were kept in PostgreSQL ({}): start a node of this zmanager on it once to migrate it",
                    schema::DEAD_LETTERS
                ),
            });
        }
        Ok(journal)
    }

    /// A connection to a database a node has migrated, and its schema's
    /// version.
    fn open_existing(url: &str, role: Role) -> Result<(Self, i32), JournalError> {
        let mut journal = Self::connect(url, SyncMode::default(), role)?;
        let version = {
            let mut connection = journal.connection()?;
            schema::version(&mut connection.client).map_err(|e| journal.error(e))?
        };
        match version {
            None => Err(JournalError::Missing {
                path: journal.target.clone(),
                detail: "the database holds no journal (was a node run on it with [journal] backend = \"postgres\"?)".into(),
            }),
            Some(v) if v > schema::known() => Err(journal.too_new(v)),
            Some(v) => {
                journal.unmerged = v < schema::MERGED_DISPATCHES;
                Ok((journal, v))
            }
        }
    }

    /// What another connection of the node needs to write only while this
    /// one's generation holds the lease: `None` unless this is the node's
    /// own connection and holds it.
    pub fn holding(&self) -> Option<Holding> {
        Some(Holding {
            config: self.config.clone(),
            target: self.target.clone(),
            sync: self.sync,
            generation: self.generation.filter(|_| self.role == Role::Owner)?,
            fenced: Arc::clone(&self.fenced),
        })
    }

    fn connect(url: &str, sync: SyncMode, role: Role) -> Result<Self, JournalError> {
        let mut database =
            Database::parse(url).map_err(|detail| JournalError::Config { detail })?;
        let config = &mut database.config;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("zmanager");
        }
        let target = target(config);
        let config = database;
        Self::connect_with(config, target, sync, role, None, Arc::default())
    }

    fn connect_with(
        config: Database,
        target: String,
        sync: SyncMode,
        role: Role,
        generation: Option<i64>,
        fenced: Arc<AtomicBool>,
    ) -> Result<Self, JournalError> {
        let client = Self::session(&config, &target, sync, role)?;
        Ok(Self {
            config,
            target,
            sync,
            role,
            generation,
            fenced,
            renewer: None,
            connection: RefCell::new(Some(Connection {
                client,
                insert: None,
            })),
            unmerged: false,
        })
    }

    /// A new connection with this journal's session settings.
    fn session(
        config: &Database,
        target: &str,
        sync: SyncMode,
        role: Role,
    ) -> Result<Client, JournalError> {
        let error = |source| JournalError::Postgres {
            target: target.to_owned(),
            source,
        };
        let mut client = config.connect().map_err(error)?;
        let commit = match sync {
            SyncMode::Full => "on",
            SyncMode::Normal | SyncMode::Off => "off",
        };
        client
            .batch_execute(&format!(
                "SET statement_timeout = '{STATEMENT_TIMEOUT}';
                 SET synchronous_commit = {commit};
                 SET default_transaction_read_only = {}",
                role == Role::Reader
            ))
            .map_err(error)?;
        Ok(client)
    }

    /// The connection, connected again first if it was lost.
    fn connection(&self) -> Result<RefMut<'_, Connection>, JournalError> {
        if self.fenced.load(Ordering::SeqCst) {
            return Err(self.fenced());
        }
        let mut connection = RefMut::map(self.connection.borrow_mut(), |c| {
            c.as_mut()
                .expect("the connection is there until the journal is dropped")
        });
        if connection.client.is_closed() {
            tracing::warn!(target_db = %self.target, "journal: the database connection was lost; connecting again");
            connection.client = Self::session(&self.config, &self.target, self.sync, self.role)?;
            connection.insert = None;
        }
        Ok(connection)
    }

    /// The node's connection's flag, set once another generation holds the
    /// lease (`None` for other connections).
    pub fn taken_over(&self) -> Option<Arc<AtomicBool>> {
        self.generation.map(|_| Arc::clone(&self.fenced))
    }

    /// Where the journal is: its URL without the password.
    pub fn target(&self) -> &str {
        &self.target
    }

    fn error(&self, source: postgres::Error) -> JournalError {
        JournalError::Postgres {
            target: self.target.clone(),
            source,
        }
    }

    fn fenced(&self) -> JournalError {
        JournalError::Fenced {
            path: self.target.clone(),
        }
    }

    fn too_new(&self, version: i32) -> JournalError {
        JournalError::SchemaTooNew {
            path: self.target.clone(),
            found: i64::from(version),
            known: i64::from(schema::known()),
        }
    }
}

/// Whether `url` is a connection string the journal can use: its syntax,
/// and with `sslrootcert`, the certificates in that file.
pub fn check_url(url: &str) -> Result<(), String> {
    Database::parse(url).map(drop)
}

/// The node's hold on the journal, for its other connections (the
/// dead-letter store's): they write only while the node's generation holds
/// the lease, and stop with it ([`PostgresJournal::holding`]).
#[derive(Clone)]
pub struct Holding {
    config: Database,
    target: String,
    sync: SyncMode,
    generation: i64,
    fenced: Arc<AtomicBool>,
}

impl std::fmt::Debug for Holding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holding")
            .field("target", &self.target)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Holding {
    /// Another connection, writing under the node's generation (it neither
    /// renews nor gives up the lease).
    pub fn connect(&self) -> Result<PostgresJournal, JournalError> {
        PostgresJournal::connect_with(
            self.config.clone(),
            self.target.clone(),
            self.sync,
            Role::Beside,
            Some(self.generation),
            Arc::clone(&self.fenced),
        )
    }
}

impl Drop for PostgresJournal {
    /// Stops renewing the lease and gives it up (a standby takes over at
    /// once rather than when it runs out), then closes the connection.
    /// Closing the client blocks on its own runtime, which panics on a
    /// thread that runs another runtime's tasks (the node drops its HTTP
    /// reader and reload's connection there): that is done on a thread of
    /// its own then.
    fn drop(&mut self) {
        self.renewer = None;
        let Some(mut connection) = self.connection.get_mut().take() else {
            return;
        };
        let release = self
            .generation
            .filter(|_| self.role == Role::Owner && !self.fenced.load(Ordering::SeqCst));
        let target = self.target.clone();
        let close = move || {
            if let Some(generation) = release
                && !connection.client.is_closed()
                && let Err(e) = lease::release(&mut connection.client, generation)
            {
                tracing::warn!(target_db = %target, error = %describe(&e), "journal: could not give the lease up; a standby takes over when it runs out");
            }
            drop(connection);
        };
        if tokio::runtime::Handle::try_current().is_ok() {
            let _ = std::thread::Builder::new()
                .name("journal-close".into())
                .spawn(close);
        } else {
            close();
        }
    }
}

/// What the server or the connection said: rust-postgres's own text of a
/// server's error is only "db error", its message being in a source.
pub(super) fn describe(e: &postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let more = s.to_string();
                if !text.contains(&more) {
                    text.push_str(": ");
                    text.push_str(&more);
                }
                source = s.source();
            }
            text
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::Journal;
    use crate::journal::suite::accepted;

    fn database(what: &str) -> Option<String> {
        zmanager_test_postgres::shared(what).map(|server| server.database())
    }

    fn raw(url: &str) -> Client {
        Client::connect(url, postgres::NoTls).unwrap()
    }

    /// A database of before migration 4 (no `dispatched_us`) is read as it
    /// is; a node's opening migrates it, and old and new rows read alike.
    #[test]
    fn a_journal_of_before_merged_dispatches_reads_as_it_is_and_is_migrated() {
        let Some(url) = database("the PostgreSQL journal's merged dispatches") else {
            return;
        };
        crate::journal::suite::an_unmerged_journal_reads_as_it_is(
            |events| {
                let j = PostgresJournal::open(&url, SyncMode::Full).unwrap();
                for event in events {
                    j.append(std::slice::from_ref(event)).unwrap();
                }
                drop(j);
                raw(&url)
                    .batch_execute(&format!(
                        "ALTER TABLE journal_events DROP COLUMN dispatched_us;
                         DELETE FROM zmanager_schema WHERE version >= {}",
                        schema::MERGED_DISPATCHES
                    ))
                    .unwrap();
            },
            || PostgresJournal::open_to_read(&url).unwrap(),
            || PostgresJournal::open(&url, SyncMode::Full).unwrap(),
        );
    }

    #[test]
    fn migrations_are_applied_once_and_a_newer_schema_is_refused() {
        let Some(url) = database("the PostgreSQL journal's migrations") else {
            return;
        };
        let first = PostgresJournal::open(&url, SyncMode::Full).unwrap();
        first.append(&[accepted(1, "s", "1", "F")]).unwrap();
        drop(first);
        // The next node on the same database: nothing applied again.
        let second = PostgresJournal::open(&url, SyncMode::Full).unwrap();
        assert_eq!(second.stats().unwrap().accepted, 1);
        drop(second);
        let versions: Vec<i32> = raw(&url)
            .query("SELECT version FROM zmanager_schema ORDER BY version", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert_eq!(versions, (1..=schema::known()).collect::<Vec<_>>());

        // A newer zmanager migrated it further: this one writes nothing.
        raw(&url)
            .execute(
                "INSERT INTO zmanager_schema (version) VALUES ($1)",
                &[&(schema::known() + 1)],
            )
            .unwrap();
        for e in [
            PostgresJournal::open(&url, SyncMode::Full).unwrap_err(),
            PostgresJournal::open_to_read(&url).unwrap_err(),
        ] {
            assert!(matches!(e, JournalError::SchemaTooNew { .. }), "{e:?}");
            let text = e.to_string();
            assert!(text.contains("newer than this zmanager knows"), "{text}");
            assert!(!text.contains("password"), "{text}");
        }
    }

    #[test]
    fn a_reader_needs_a_journal_and_cannot_write() {
        let Some(url) = database("the PostgreSQL journal's reader") else {
            return;
        };
        let e = PostgresJournal::open_to_read(&url).unwrap_err();
        assert!(matches!(e, JournalError::Missing { .. }), "{e:?}");
        assert!(e.to_string().contains("holds no journal"), "{e}");
        PostgresJournal::open(&url, SyncMode::Normal)
            .unwrap()
            .append(&[accepted(1, "s", "1", "F")])
            .unwrap();
        let reader = PostgresJournal::open_to_read(&url).unwrap();
        assert_eq!(reader.stats().unwrap().accepted, 1);
        let e = reader.append(&[accepted(2, "s", "2", "F")]).unwrap_err();
        assert!(e.to_string().contains("read-only"), "{e}");
        assert_eq!(reader.stats().unwrap().accepted, 1);
    }

    #[test]
    fn a_lost_connection_fails_one_call_and_the_next_connects_again() {
        let Some(url) = database("the PostgreSQL journal's reconnection") else {
            return;
        };
        let j = PostgresJournal::open(&url, SyncMode::Full).unwrap();
        j.append(&[accepted(1, "s", "1", "F")]).unwrap();
        // The server ends the journal's session, as a restart or a
        // failover of the database would.
        let pid: i32 = j
            .connection()
            .unwrap()
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0);
        let ended: bool = raw(&url)
            .query_one("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap()
            .get(0);
        assert!(ended);
        // The call that finds the connection gone fails (the writer tries
        // it again); the next one connects again and succeeds.
        let lost = j.append(&[accepted(2, "s", "2", "F")]);
        assert!(
            matches!(lost, Err(JournalError::Postgres { .. })),
            "{lost:?}"
        );
        j.append(&[accepted(2, "s", "2", "F")]).unwrap();
        let ids: Vec<String> = j
            .unfinished()
            .unwrap()
            .into_iter()
            .map(|u| u.message.envelope.id)
            .collect();
        assert_eq!(ids, ["1", "2"], "nothing lost, nothing twice");
    }

    /// The server process of `j`'s session.
    fn backend_pid(j: &PostgresJournal) -> i32 {
        j.connection()
            .unwrap()
            .client
            .query_one("SELECT pg_backend_pid()", &[])
            .unwrap()
            .get(0)
    }

    fn lease(ms: u64, standby: bool) -> Lease {
        Lease {
            duration: Duration::from_millis(ms),
            standby,
        }
    }

    fn owner(url: &str, lease: &Lease) -> Result<PostgresJournal, JournalError> {
        PostgresJournal::open_owner(url, SyncMode::Full, lease, &|| false)
    }

    fn unfinished_ids(j: &PostgresJournal) -> Vec<String> {
        j.unfinished()
            .unwrap()
            .into_iter()
            .map(|u| u.message.envelope.id)
            .collect()
    }

    #[test]
    fn a_second_node_on_the_same_journal_is_refused_until_the_first_gives_the_lease_up() {
        let Some(url) = database("the PostgreSQL journal's lease") else {
            return;
        };
        let first = owner(&url, &lease(300, false)).unwrap();
        let e = owner(&url, &lease(300, false)).unwrap_err();
        assert!(matches!(e, JournalError::Held { .. }), "{e:?}");
        let text = e.to_string();
        let me = format!("pid {} (generation 1, since", std::process::id());
        assert!(text.contains("another node holds it: "), "{text}");
        assert!(text.contains(&me), "who holds it: {text}");
        assert!(text.contains("one node at a time"), "{text}");
        // Its own other connections, and readers, do not need it.
        PostgresJournal::open_beside(&url, SyncMode::Full).unwrap();
        PostgresJournal::open_to_read(&url).unwrap();
        // Stopping gives it up: the next one need not wait for it to run out.
        drop(first);
        let next = owner(&url, &lease(60_000, false)).unwrap();
        assert_eq!(next.generation, Some(2));
    }

    #[test]
    fn a_standby_takes_over_only_once_the_active_stops_renewing() {
        let Some(url) = database("the PostgreSQL journal's standby") else {
            return;
        };
        let active = owner(&url, &lease(400, false)).unwrap();
        active.append(&[accepted(1, "s", "1", "F")]).unwrap();
        let (done, took_over) = std::sync::mpsc::channel();
        let standby_url = url.clone();
        let standby = std::thread::spawn(move || {
            let j = owner(&standby_url, &lease(400, true)).unwrap();
            let _ = done.send(Instant::now());
            j
        });
        // The active renews: the standby waits, for many leases.
        assert!(
            took_over.recv_timeout(Duration::from_secs(3)).is_err(),
            "took over from a live active"
        );
        // The active dies without a word (its renewals stop, its session
        // ends, nothing given up): the standby takes over once it runs out.
        let died = Instant::now();
        let mut active = active;
        active.renewer = None;
        raw(&url)
            .execute("SELECT pg_terminate_backend($1)", &[&backend_pid(&active)])
            .unwrap();
        let at = took_over
            .recv_timeout(Duration::from_secs(30))
            .expect("the standby took over");
        let standby = standby.join().unwrap();
        println!(
            "standby took over {} ms after the active stopped renewing (lease 400 ms)",
            at.duration_since(died).as_millis()
        );
        assert_eq!(standby.generation, Some(2));
        assert_eq!(unfinished_ids(&standby), ["1"], "what the active accepted");
        // The old active, back, commits nothing: its generation is gone.
        let e = active.append(&[accepted(2, "s", "2", "F")]);
        assert!(e.is_err(), "the lost connection");
        let e = active.append(&[accepted(2, "s", "2", "F")]).unwrap_err();
        assert!(matches!(e, JournalError::Fenced { .. }), "{e:?}");
        assert_eq!(unfinished_ids(&standby), ["1"]);
    }

    #[test]
    fn a_node_whose_journal_another_took_over_commits_nothing_more() {
        let Some(url) = database("the PostgreSQL journal's fencing") else {
            return;
        };
        let mut old = owner(&url, &lease(300, false)).unwrap();
        old.append(&[accepted(1, "s", "old-1", "F")]).unwrap();
        // It stops renewing (frozen, or cut off) but keeps its session.
        old.renewer = None;
        let new = owner(&url, &lease(300, true)).unwrap();
        new.append(&[accepted(2, "s", "new-1", "F")]).unwrap();
        // Its next commit, on the same session, finds another generation.
        let e = old.append(&[accepted(3, "s", "old-2", "F")]).unwrap_err();
        assert!(matches!(e, JournalError::Fenced { .. }), "{e:?}");
        assert!(e.to_string().contains("another node took over"), "{e}");
        // For good, even once the other has gone.
        drop(new);
        let e = old.append(&[accepted(4, "s", "old-3", "F")]).unwrap_err();
        assert!(matches!(e, JournalError::Fenced { .. }), "for good: {e:?}");
        // It does not give up a lease it does not hold.
        drop(old);
        let next = owner(&url, &lease(300, false)).unwrap();
        assert_eq!(next.generation, Some(3));
        assert_eq!(
            unfinished_ids(&next),
            ["old-1", "new-1"],
            "nothing from the fenced node"
        );
    }

    /// The node's other connections (retention's, reload's), made from
    /// its holding of the lease at start-up, write nothing once another
    /// node took the lease over.
    #[test]
    fn the_other_connections_of_a_node_another_took_over_from_write_nothing() {
        let Some(url) = database("the fencing of the node's other connections") else {
            return;
        };
        use crate::catalog::version::Sources;
        use crate::journal::CatalogLog as _;
        let mut old = owner(&url, &lease(300, false)).unwrap();
        let retention = old.holding().unwrap().connect().unwrap();
        let reload = old.holding().unwrap().connect().unwrap();
        let none = Sources {
            flows: vec![],
            mappings: vec![],
        };
        reload.record_catalog(1, &none, 1).unwrap();
        old.append(&[
            accepted(1, "s", "a", "F"),
            crate::journal::suite::finished(2, "s", "a"),
            accepted(3, "s", "b", "F"),
            crate::journal::suite::finished(4, "s", "b"),
        ])
        .unwrap();
        assert_eq!(
            retention.compact_oldest(3, u64::MAX).unwrap(),
            1,
            "while it holds it"
        );
        old.renewer = None;
        let new = owner(&url, &lease(300, true)).unwrap();
        assert_eq!(retention.compact(u64::MAX).unwrap(), 0, "removes nothing");
        let e = reload.record_catalog(2, &none, 5).unwrap_err();
        assert!(matches!(e, JournalError::Fenced { .. }), "{e:?}");
        assert_eq!(new.catalogs().unwrap().len(), 1);
        assert_eq!(new.stats().unwrap().completed, 1, "b is still there");
        // The new node's own retention does.
        let mine = new.holding().unwrap().connect().unwrap();
        assert_eq!(mine.compact(u64::MAX).unwrap(), 1);
    }

    /// With `sslrootcert`, the journal's connections are TLS, and the
    /// server's certificate is verified: its authority and its name.
    #[test]
    fn a_tls_connection_is_verified_by_its_authority_and_its_name() {
        if zmanager_test_postgres::bin_dir().is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have PostgreSQL's server for the TLS test"
            );
            eprintln!("SKIPPED: install postgresql to run the TLS test");
            return;
        }
        let server = zmanager_test_postgres::Server::start_tls().expect("a TLS server");
        let url = server.tls_database("localhost", true).unwrap();
        let journal = PostgresJournal::open(&url, SyncMode::Full).expect("over TLS");
        journal.append(&[accepted(1, "s", "1", "F")]).unwrap();
        let encrypted: bool = journal
            .connection()
            .unwrap()
            .client
            .query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )
            .unwrap()
            .get(0);
        assert!(encrypted, "the session is TLS");
        drop(journal);
        for (url, why) in [
            (
                server.tls_database("localhost", false).unwrap(),
                "another authority",
            ),
            (
                server.tls_database("127.0.0.1", true).unwrap(),
                "not its name",
            ),
        ] {
            let e = PostgresJournal::open(&url, SyncMode::Full).unwrap_err();
            let text = e.to_string();
            assert!(matches!(e, JournalError::Postgres { .. }), "{why}: {e:?}");
            assert!(
                text.contains("certificate") || text.contains("Certificate"),
                "{why}: {text}"
            );
        }
    }

    #[test]
    fn sync_full_waits_for_the_servers_flush_and_the_others_do_not() {
        let Some(url) = database("the PostgreSQL journal's sync setting") else {
            return;
        };
        let setting = |sync| -> String {
            let j = PostgresJournal::open(&url, sync).unwrap();
            let shown: String = j
                .connection()
                .unwrap()
                .client
                .query_one("SHOW synchronous_commit", &[])
                .unwrap()
                .get(0);
            shown
        };
        assert_eq!(setting(SyncMode::Full), "on");
        assert_eq!(setting(SyncMode::Normal), "off");
        assert_eq!(setting(SyncMode::Off), "off");
    }

    #[test]
    fn a_bad_url_or_an_unreachable_server_is_a_clear_error() {
        let e = PostgresJournal::open("postgres://[::1", SyncMode::Full).unwrap_err();
        assert!(matches!(e, JournalError::Config { .. }), "{e:?}");
        assert!(e.to_string().contains("[journal] url"), "{e}");
        // Nothing listens on this socket directory.
        let dir = crate::journal::testing::TempDir::new("pg-unreachable");
        let url = format!(
            "host={} user=u password=secret dbname=d connect_timeout=2",
            dir.path().display()
        );
        let e = PostgresJournal::open(&url, SyncMode::Full).unwrap_err();
        let text = e.to_string();
        assert!(matches!(e, JournalError::Postgres { .. }), "{e:?}");
        assert!(text.contains("postgres://u@"), "names where: {text}");
        assert!(!text.contains("secret"), "never the password: {text}");
    }
}
