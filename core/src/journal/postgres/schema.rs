//! The PostgreSQL journal's schema, as numbered migrations applied in
//! order at start-up. `zmanager_schema` lists those applied. A node applies
//! the ones it knows and has not been applied yet, under an advisory lock,
//! so two nodes starting on one database do not apply the same migration
//! twice. A node finding a schema newer than it knows refuses to start
//! rather than write into it: an older binary does not know the meaning of
//! the newer tables.
//!
//! A migration is never edited once released; a change is a new one.

use postgres::GenericClient;

/// The advisory lock migrations are applied under ("zmgr" in ASCII).
const LOCK: i64 = 0x7a6d_6772;

/// The migrations, the first one being version 1.
///
const MIGRATIONS: &[&str] = &[
    // Version 1: the same table as SQLite's (`seq` an identity column, so
    // events keep their append order), with the same partial indexes, and the
    // catalog's versions.
    "
CREATE TABLE journal_events (
    seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_us BIGINT NOT NULL,
    kind TEXT NOT NULL,
    service TEXT NOT NULL,
    id TEXT NOT NULL,
    flow TEXT NOT NULL DEFAULT '',
    attempt BIGINT,
    worker BYTEA,
    step BIGINT,
    reason TEXT,
    envelope BYTEA,
    payload BYTEA
);
CREATE INDEX journal_events_message ON journal_events (service, id, seq);
CREATE INDEX journal_accepted_time ON journal_events (at_us) WHERE kind = 'accepted';
CREATE INDEX journal_finished_time ON journal_events (at_us)
    WHERE kind IN ('completed', 'dead_lettered');
CREATE INDEX journal_failures ON journal_events (seq)
    WHERE kind = 'dead_lettered' OR (kind = 'completed' AND reason IS NOT NULL);
CREATE TABLE journal_catalogs (
    version BIGINT PRIMARY KEY,
    digest TEXT NOT NULL,
    sources BYTEA NOT NULL,
    at_us BIGINT NOT NULL
);
",
    // Version 2: the lease (`lease.rs`): which generation of node runs on
    // the journal, who that is, since and until when.
    "
CREATE TABLE journal_owner (
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    generation BIGINT NOT NULL,
    holder TEXT NOT NULL,
    since TIMESTAMPTZ NOT NULL DEFAULT now(),
    deadline TIMESTAMPTZ NOT NULL
);
",
    // Version 3: the dead letters (`dead_letters.rs`), as SQLite keeps them
    // beside its journal; `dead_letter_numbers` keeps the highest number
    // ever given, so that none is reused after a delete.
    "
CREATE TABLE dead_letters (
    seq BIGINT PRIMARY KEY,
    at_us BIGINT NOT NULL,
    service TEXT NOT NULL,
    id TEXT NOT NULL,
    flow TEXT NOT NULL,
    errors TEXT NOT NULL,
    envelope BYTEA NOT NULL,
    payload BYTEA NOT NULL,
    replayed_us BIGINT
);
CREATE INDEX dead_letters_by_request ON dead_letters (service, id);
CREATE TABLE dead_letter_numbers (
    id BOOLEAN PRIMARY KEY DEFAULT true CHECK (id),
    highest BIGINT NOT NULL
);
CREATE TABLE dead_letter_replays (
    replay BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    seq BIGINT NOT NULL,
    at_us BIGINT NOT NULL,
    outcome TEXT NOT NULL,
    dead_letter BIGINT
);
CREATE INDEX dead_letter_replays_by_seq ON dead_letter_replays (seq);
",
    // Version 4: an acceptance's row holds its first dispatch when both
    // were in one batch (`journal::batch`): that dispatch's time; its
    // attempt and worker are in the row's `attempt` and `worker`.
    "
ALTER TABLE journal_events ADD COLUMN dispatched_us BIGINT;
",
];

/// The version that added the dead letters.
pub(super) const DEAD_LETTERS: i32 = 3;

/// The version from which an acceptance's row may hold its dispatch.
pub(super) const MERGED_DISPATCHES: i32 = 4;

/// The newest schema this binary knows.
pub(super) fn known() -> i32 {
    i32::try_from(MIGRATIONS.len()).unwrap_or(i32::MAX)
}

/// What [`migrate`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Found {
    /// The schema is at [`known`] (now).
    Current { applied: usize },
    /// The database has a newer schema than this binary knows.
    Newer(i32),
}

/// Applies the migrations `client`'s database lacks, in one transaction.
pub(super) fn migrate(client: &mut postgres::Client) -> Result<Found, postgres::Error> {
    let mut tx = client.transaction()?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS zmanager_schema (
             version INTEGER PRIMARY KEY,
             applied_at TIMESTAMPTZ NOT NULL DEFAULT now())",
    )?;
    let current = version(&mut tx)?.unwrap_or(0);
    if current > known() {
        return Ok(Found::Newer(current));
    }
    let mut applied = 0;
    for (n, migration) in (1..)
        .zip(MIGRATIONS)
        .skip(usize::try_from(current).unwrap_or(0))
    {
        tx.batch_execute(migration)?;
        tx.execute("INSERT INTO zmanager_schema (version) VALUES ($1)", &[&n])?;
        tracing::info!(version = n, "journal: applied schema migration");
        applied += 1;
    }
    tx.commit()?;
    Ok(Found::Current { applied })
}

/// The schema's version, or `None` if the database has none (no node ever
/// ran on it).
pub(super) fn version(client: &mut impl GenericClient) -> Result<Option<i32>, postgres::Error> {
    let exists: bool = client
        .query_one("SELECT to_regclass('zmanager_schema') IS NOT NULL", &[])?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_one("SELECT MAX(version) FROM zmanager_schema", &[])?
        .get(0))
}
