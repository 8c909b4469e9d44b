//! The journal's test suite, run on both backends: every test here is a
//! function of a journal, and `on_both_backends!` makes it a test on a
//! fresh SQLite file and one on a fresh PostgreSQL database (a private
//! server, `tests/postgres/`: skipped, saying so, where PostgreSQL is not
//! installed, and failing under CI). What only one backend has — SQLite's
//! damaged files and torn logs, PostgreSQL's migrations and lost
//! connections — is tested beside that backend.
//!
//! - `recovery`: what a restarted node reads back.
//! - `compaction`: what retention removes, and what it measures.
//! - `listing`: what `zmanager journal`, the console and reload read.

mod compaction;
mod listing;
mod recovery;

use super::testing::{TempDir, request};
use super::{CatalogLog, Event, Journal, PostgresJournal, SqliteJournal, SyncMode, Unfinished};
use crate::wire::Message;
use bytes::Bytes;

/// A journal of either backend.
pub(super) trait UnderTest: Journal + CatalogLog {}
impl<J: Journal + CatalogLog> UnderTest for J {}

/// A fresh SQLite journal, in a directory removed with the guard.
pub(super) fn sqlite(name: &str) -> (TempDir, SqliteJournal) {
    let dir = TempDir::new(&format!("suite-{name}"));
    let journal = SqliteJournal::open(dir.path(), SyncMode::Normal).unwrap();
    (dir, journal)
}

/// A journal on a fresh database of the test PostgreSQL server, or `None`
/// (the test skipped) where PostgreSQL is not installed and CI is not set.
pub(super) fn postgres(name: &str) -> Option<PostgresJournal> {
    let server = zmanager_test_postgres::shared(&format!("the journal test {name} on PostgreSQL"))?;
    Some(PostgresJournal::open(&server.database(), SyncMode::Normal).unwrap())
}

/// Each named test function of the calling module as a test on SQLite
/// (`…::sqlite::name`) and one on PostgreSQL (`…::postgres::name`).
macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    let (_dir, journal) = crate::journal::suite::sqlite(stringify!($test));
                    super::$test(&journal);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    if let Some(journal) = crate::journal::suite::postgres(stringify!($test)) {
                        super::$test(&journal);
                    }
                }
            )*
        }
    };
}
pub(super) use on_both_backends;

pub(super) fn key(service: &str, id: &str) -> (String, String) {
    (service.into(), id.into())
}

pub(super) fn accepted(at_us: u64, service: &str, id: &str, flow: &str) -> Event {
    Event::accepted(at_us, request(service, id, flow))
}

pub(super) fn finished(at_us: u64, service: &str, id: &str) -> Event {
    Event::Completed {
        result: None,
        at_us,
        key: key(service, id),
    }
}

pub(super) fn ids(unfinished: &[Unfinished]) -> Vec<(String, String)> {
    unfinished
        .iter()
        .map(|u| key(&u.message.envelope.service, &u.message.envelope.id))
        .collect()
}

pub(super) fn message_ids(messages: &[Message]) -> Vec<(String, String)> {
    messages
        .iter()
        .map(|m| key(&m.envelope.service, &m.envelope.id))
        .collect()
}

/// A journal written before acceptances' rows held their dispatch reads as
/// it is, and as it was written once upgraded. `old` makes a journal of that
/// layout holding the events it is given, one a commit; `reader` opens it
/// to read, `owner` as the node does (which upgrades it).
pub(super) fn an_unmerged_journal_reads_as_it_is<J: Journal>(
    old: impl FnOnce(&[Event]),
    reader: impl FnOnce() -> J,
    owner: impl FnOnce() -> J,
) {
    let dispatched = |at_us, id: &str| Event::Dispatched {
        at_us,
        key: key("s", id),
        attempt: 1,
        worker: Bytes::from_static(b"w"),
    };
    let events = |j: &J, id| -> Vec<Event> {
        j.history("s", id)
            .unwrap()
            .into_iter()
            .map(|r| r.event)
            .collect()
    };
    let old_life = [accepted(1, "s", "old", "F"), dispatched(2, "old")];
    old(&old_life);
    {
        let reader = reader();
        assert_eq!(events(&reader, "old"), old_life);
        assert_eq!(reader.unfinished().unwrap()[0].message.envelope.attempt, 1);
        assert_eq!(reader.stats().unwrap().dispatched, 1);
    }
    let j = owner();
    let new_life = [accepted(3, "s", "new", "F"), dispatched(4, "new")];
    j.append(&new_life).unwrap();
    assert_eq!(events(&j, "old"), old_life);
    assert_eq!(events(&j, "new"), new_life);
    let history = j.history("s", "new").unwrap();
    assert_eq!(history[0].seq, history[1].seq, "merged into one row");
    let attempts: Vec<u32> = j
        .unfinished()
        .unwrap()
        .iter()
        .map(|u| u.message.envelope.attempt)
        .collect();
    assert_eq!(attempts, [1, 1]);
    assert_eq!(j.stats().unwrap().dispatched, 2);
}
