//! The PostgreSQL journal: the same events in the same table as SQLite's,
//! in a database several machines can reach (and a standby can take over,
//! `docs/deployment.md`), through rust-postgres's synchronous client.
//!
//! - `schema`: the numbered migrations, applied at start-up.
//! - `events`: [`Journal`](super::Journal) on it: a group commit is one
//!   `INSERT … SELECT FROM UNNEST(…)` statement, one round trip.
//! - `catalogs`: the catalog's versions.
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
mod events;
mod schema;

use std::cell::{Cell, RefCell, RefMut};
use std::str::FromStr as _;
use std::time::Duration;

use postgres::config::Host;
use postgres::{Client, Config, NoTls, Statement};

use super::{JournalError, SyncMode};

/// How long a connection attempt may take when the URL does not say.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one statement may run before the server cancels it: a stuck
/// database fails a commit (which the writer retries) rather than hang it.
const STATEMENT_TIMEOUT: &str = "30s";

/// The PostgreSQL journal, connected.
#[derive(Debug)]
pub struct PostgresJournal {
    config: Config,
    /// Where it is, for messages: the URL without its password.
    target: String,
    sync: SyncMode,
    role: Role,
    /// The owner's generation (see [`Role::Owner`]), once claimed.
    generation: Cell<Option<i64>>,
    /// Another node ran on the journal since this owner's generation.
    fenced: Cell<bool>,
    /// `None` only while it is dropped.
    connection: RefCell<Option<Connection>>,
}

/// What a connection is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// The node's own (its writer's): holds the journal's lock, so that a
    /// second node on the same database does not start, and claims the next
    /// generation in `journal_owner`. When it connects again it takes the
    /// lock again and checks the generation is still its own: if another
    /// node ran on the journal meanwhile, this one is fenced off for good.
    Owner,
    /// Another of the node's, beside the owner's (retention's, reload's).
    Beside,
    /// Read-only, from any process (`zmanager journal`, the HTTP server).
    Reader,
}

/// The session-level advisory lock the node's own connection holds while it
/// runs ("zmnd" in ASCII); the server releases it when that session ends.
const NODE_LOCK: i64 = 0x7a6d_6e64;

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
    /// `postgres://` URL or `key=value` pairs), applying the migrations its
    /// database lacks: the node's own connection. A database whose schema
    /// is newer than this binary knows is refused.
    pub fn open(url: &str, sync: SyncMode) -> Result<Self, JournalError> {
        let journal = Self::connect(url, sync, Role::Owner)?;
        let found = {
            let mut connection = journal.connection()?;
            schema::migrate(&mut connection.client).map_err(|e| journal.error(e))?
        };
        match found {
            schema::Found::Current { applied } => {
                if applied > 0 {
                    tracing::info!(target_db = %journal.target, applied, version = schema::known(), "journal: schema migrated");
                }
                let generation: i64 = journal
                    .connection()?
                    .client
                    .query_one(
                        "INSERT INTO journal_owner (id, generation) VALUES (true, 1)
                         ON CONFLICT (id) DO UPDATE
                         SET generation = journal_owner.generation + 1, since = now()
                         RETURNING generation",
                        &[],
                    )
                    .map_err(|e| journal.error(e))?
                    .get(0);
                journal.generation.set(Some(generation));
                tracing::info!(target_db = %journal.target, generation, "journal: this node runs on the journal");
                Ok(journal)
            }
            schema::Found::Newer(version) => Err(journal.too_new(version)),
        }
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
        let journal = Self::connect(url, SyncMode::default(), Role::Reader)?;
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
            Some(_) => Ok(journal),
        }
    }

    fn connect(url: &str, sync: SyncMode, role: Role) -> Result<Self, JournalError> {
        let mut config = Config::from_str(url).map_err(|e| JournalError::Config {
            detail: format!("[journal] url is not a PostgreSQL connection string: {e}"),
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("zmanager");
        }
        let target = target(&config);
        let client = Self::session(&config, &target, sync, role)?;
        Ok(Self {
            config,
            target,
            sync,
            role,
            generation: Cell::new(None),
            fenced: Cell::new(false),
            connection: RefCell::new(Some(Connection {
                client,
                insert: None,
            })),
        })
    }

    /// A new connection with this journal's session settings.
    fn session(
        config: &Config,
        target: &str,
        sync: SyncMode,
        role: Role,
    ) -> Result<Client, JournalError> {
        let error = |source| JournalError::Postgres {
            target: target.to_owned(),
            source,
        };
        let mut client = config.connect(NoTls).map_err(error)?;
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
        if role == Role::Owner {
            let locked: bool = client
                .query_one("SELECT pg_try_advisory_lock($1)", &[&NODE_LOCK])
                .map_err(error)?
                .get(0);
            if !locked {
                return Err(JournalError::Held {
                    path: target.to_owned(),
                    detail: Self::holder(&mut client).map_err(error)?,
                });
            }
        }
        Ok(client)
    }

    /// Who holds the node's lock, as the server knows it.
    fn holder(client: &mut Client) -> Result<String, postgres::Error> {
        let rows = client.query(
            "SELECT a.pid, COALESCE(host(a.client_addr), 'a local socket'), a.backend_start::text
             FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
             WHERE l.locktype = 'advisory' AND l.granted
               AND l.classid = ($1::bigint >> 32)::oid AND l.objid = ($1::bigint & 4294967295)::oid
               AND l.objsubid = 1",
            &[&NODE_LOCK],
        )?;
        Ok(match rows.first() {
            Some(r) => format!(
                "another node holds it: its session (server process {}) connected from {} at {}",
                r.get::<_, i32>(0),
                r.get::<_, String>(1),
                r.get::<_, String>(2)
            ),
            None => "another node holds it".to_owned(),
        })
    }

    /// The connection, connected again first if it was lost.
    fn connection(&self) -> Result<RefMut<'_, Connection>, JournalError> {
        if self.fenced.get() {
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
            if let Some(mine) = self.generation.get() {
                let now: i64 = connection
                    .client
                    .query_one("SELECT generation FROM journal_owner", &[])
                    .map_err(|e| self.error(e))?
                    .get(0);
                if now != mine {
                    // For good: the lock is let go, and nothing more is
                    // written through this journal.
                    self.fenced.set(true);
                    let _ = connection
                        .client
                        .execute("SELECT pg_advisory_unlock($1)", &[&NODE_LOCK]);
                    tracing::error!(target_db = %self.target, generation = mine, now, "journal: another node ran on the journal while this node's connection was lost; this node commits nothing more to it");
                    return Err(self.fenced());
                }
            }
        }
        Ok(connection)
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

impl Drop for PostgresJournal {
    /// Closing the client blocks on its own runtime, which panics on a
    /// thread that runs another runtime's tasks (the node drops its HTTP
    /// reader and reload's connection there): it is closed on a thread of
    /// its own then.
    fn drop(&mut self) {
        if let Some(connection) = self.connection.get_mut().take()
            && tokio::runtime::Handle::try_current().is_ok()
        {
            let _ = std::thread::Builder::new()
                .name("journal-close".into())
                .spawn(move || drop(connection));
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
        Client::connect(url, NoTls).unwrap()
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

    #[test]
    fn a_second_node_on_the_same_journal_is_refused_until_the_first_is_gone() {
        let Some(url) = database("the PostgreSQL journal's lock") else {
            return;
        };
        let first = PostgresJournal::open(&url, SyncMode::Full).unwrap();
        let e = PostgresJournal::open(&url, SyncMode::Full).unwrap_err();
        assert!(matches!(e, JournalError::Held { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "another node holds it: its session (server process {})",
                backend_pid(&first)
            )),
            "{text}"
        );
        assert!(text.contains("one node at a time"), "{text}");
        // Its own other connections, and readers, are not the node's.
        PostgresJournal::open_beside(&url, SyncMode::Full).unwrap();
        PostgresJournal::open_to_read(&url).unwrap();
        drop(first);
        PostgresJournal::open(&url, SyncMode::Full).unwrap();
    }

    #[test]
    fn a_node_whose_journal_another_took_over_commits_nothing_more() {
        let Some(url) = database("the PostgreSQL journal's fencing") else {
            return;
        };
        let old = PostgresJournal::open(&url, SyncMode::Full).unwrap();
        old.append(&[accepted(1, "s", "old-1", "F")]).unwrap();
        // Its session ends (its host cut off, say) and another node starts.
        raw(&url)
            .execute("SELECT pg_terminate_backend($1)", &[&backend_pid(&old)])
            .unwrap();
        let new = PostgresJournal::open(&url, SyncMode::Full).unwrap();
        new.append(&[accepted(2, "s", "new-1", "F")]).unwrap();
        // The old one connects again: the lock is held by the new one.
        assert!(old.append(&[accepted(3, "s", "old-2", "F")]).is_err());
        let e = old.append(&[accepted(3, "s", "old-2", "F")]).unwrap_err();
        assert!(matches!(e, JournalError::Held { .. }), "{e:?}");
        // The new one stops too: the old one could take the lock again,
        // but another node ran meanwhile, so it is fenced off for good.
        drop(new);
        let e = old.append(&[accepted(3, "s", "old-2", "F")]).unwrap_err();
        assert!(matches!(e, JournalError::Fenced { .. }), "{e:?}");
        assert!(e.to_string().contains("another node took over"), "{e}");
        let e = old.append(&[accepted(4, "s", "old-3", "F")]).unwrap_err();
        assert!(matches!(e, JournalError::Fenced { .. }), "for good: {e:?}");
        // And it let the lock go: a node can start.
        let next = PostgresJournal::open(&url, SyncMode::Full).unwrap();
        let ids: Vec<String> = next
            .unfinished()
            .unwrap()
            .into_iter()
            .map(|u| u.message.envelope.id)
            .collect();
        assert_eq!(ids, ["old-1", "new-1"], "nothing from the fenced node");
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
