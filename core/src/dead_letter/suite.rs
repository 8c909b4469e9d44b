//! The dead-letter store's tests, run on both backends: each test is a
//! function of a store and where it is (to open a second connection, as
//! `zmanager dlq` does), made a test on a fresh SQLite file and one on a
//! fresh PostgreSQL database (skipped, saying so, where PostgreSQL is not
//! installed, and failing under CI) by `on_both_backends!`.

use bytes::Bytes;

use super::{DeadLetterLog, DeadLetterStore, Replay, Summary};
use crate::journal::{Location, PostgresJournal, SyncMode};
use crate::wire::Message;
use crate::wire::envelope::Envelope;

/// A store on a fresh SQLite file, in a directory removed with the guard.
fn sqlite(name: &str) -> (crate::journal::testing::TempDir, DeadLetterStore, Location) {
    let dir = crate::journal::testing::TempDir::new(&format!("dlq-{name}"));
    let at = Location::Sqlite(dir.path().to_owned());
    let store = DeadLetterStore::open(&at).unwrap();
    (dir, store, at)
}

/// The node's store on a fresh PostgreSQL database (with the journal
/// connection that holds the lease for it), or `None` where PostgreSQL is
/// not installed and CI is not set.
fn postgres(name: &str) -> Option<(PostgresJournal, DeadLetterStore, Location)> {
    let server =
        zmanager_test_postgres::shared(&format!("the dead-letter test {name} on PostgreSQL"))?;
    let url = server.database();
    let journal = PostgresJournal::open(&url, SyncMode::Normal).unwrap();
    let store = DeadLetterStore::beside(&journal.holding().unwrap()).unwrap();
    Some((journal, store, Location::Postgres(url)))
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[test]
                fn $test() {
                    let (_dir, store, at) = super::sqlite(stringify!($test));
                    super::$test(&store, &at);
                }
            )*
        }
        mod postgres {
            $(
                #[test]
                fn $test() {
                    if let Some((_journal, store, at)) = super::postgres(stringify!($test)) {
                        super::$test(&store, &at);
                    }
                }
            )*
        }
    };
}

on_both_backends!(
    numbers_given_by_the_subject_are_never_reused,
    stores_lists_shows_and_marks,
    pages_go_newest_first_below_a_number_without_payloads,
    replays_are_recorded_and_a_dead_lettered_replay_supersedes,
);

fn letter(service: &str, id: &str) -> Message {
    let mut e = Envelope::request(id, "F");
    e.service = service.into();
    Message::new(e, Bytes::from_static(b"\xc0"))
}

/// The Subject numbers dead letters itself from `next_seq`: numbers go on
/// after what is stored, and after what was stored and deleted.
fn numbers_given_by_the_subject_are_never_reused(store: &DeadLetterStore, _: &Location) {
    assert_eq!(store.next_seq().unwrap(), 1);
    let m = letter("s", "m1");
    store.insert_numbered(7, &m, &["e".into()], 1).unwrap();
    assert_eq!(store.get(7).unwrap().unwrap().message, m);
    assert_eq!(store.next_seq().unwrap(), 8);
    // An automatic number comes after it too.
    assert_eq!(store.insert(&m, &[], 2).unwrap(), 8);
    // A number given twice is refused, not stored over the first.
    assert!(
        store
            .insert_numbered(8, &letter("s", "m2"), &[], 3)
            .is_err()
    );
    assert_eq!(store.get(8).unwrap().unwrap().message, m);
    // An operator deletes them all (as by hand in the database).
    match store {
        DeadLetterStore::Sqlite(s) => s.delete_all(),
        DeadLetterStore::Postgres(p) => p.delete_dead_letters(),
    }
    assert_eq!(store.count().unwrap(), 0);
    assert_eq!(store.next_seq().unwrap(), 9, "not reused after a delete");
}

fn stores_lists_shows_and_marks(store: &DeadLetterStore, at: &Location) {
    let mut e = Envelope::request("m1", "F");
    e.service = "svc".into();
    e.attempt = 5;
    let m = Message::new(e, Bytes::from_static(b"\x01"));
    let errors = vec![
        "attempt 1: panicked".to_owned(),
        "attempt 2: worker lost".to_owned(),
    ];
    let seq = store.insert(&m, &errors, 42).unwrap();
    assert_eq!(store.count().unwrap(), 1);
    let got = store.get(seq).unwrap().unwrap();
    assert_eq!(got.message, m);
    assert_eq!(got.errors, errors);
    assert_eq!((got.at_us, got.replayed_us), (42, None));
    store.mark_replayed(seq, 43).unwrap();
    // A second connection (as `zmanager dlq` opens) sees the same.
    let other = DeadLetterStore::open(at).unwrap();
    let listed = other.list(10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].replayed_us, Some(43));
    assert!(other.get(999).unwrap().is_none());
    // The most recent, oldest first.
    for n in 0..3 {
        store
            .insert(&letter("svc", &format!("n{n}")), &[], 50 + n)
            .unwrap();
    }
    let ids = |letters: Vec<super::DeadLetter>| -> Vec<String> {
        letters.into_iter().map(|d| d.message.envelope.id).collect()
    };
    assert_eq!(ids(other.list(2).unwrap()), ["n1", "n2"]);
    assert_eq!(ids(other.list(10).unwrap()), ["m1", "n0", "n1", "n2"]);
}

fn pages_go_newest_first_below_a_number_without_payloads(store: &DeadLetterStore, _: &Location) {
    for n in 1..=7 {
        let mut e = Envelope::request(format!("m{n}"), "F");
        e.service = "svc".into();
        e.attempt = 3;
        let m = Message::new(e, Bytes::from_static(b"\x01"));
        store.insert(&m, &[format!("attempt {n}")], n).unwrap();
    }
    let seqs = |page: &[Summary]| page.iter().map(|d| d.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&store.page(None, 3).unwrap()), [7, 6, 5]);
    assert_eq!(seqs(&store.page(Some(5), 3).unwrap()), [4, 3, 2]);
    assert_eq!(seqs(&store.page(Some(2), 3).unwrap()), [1]);
    assert!(store.page(Some(1), 3).unwrap().is_empty());
    let top = &store.page(None, 1).unwrap()[0];
    assert_eq!(
        (top.flow.as_str(), top.service.as_str(), top.id.as_str()),
        ("F", "svc", "m7")
    );
    assert_eq!((top.attempts, top.at_us), (3, 7));
    assert_eq!(top.errors, ["attempt 7"]);
}

fn replays_are_recorded_and_a_dead_lettered_replay_supersedes(
    store: &DeadLetterStore,
    _: &Location,
) {
    let first = store.insert(&letter("svc", "m1"), &[], 1).unwrap();
    assert!(store.replays(first).unwrap().is_empty());
    assert_eq!(store.superseded_by(first).unwrap(), None);
    let refused = Replay {
        at_us: 2,
        outcome: "refused: 3 (unknown_flow): unknown flow \"F\"".into(),
        dead_letter: None,
    };
    store.record_replay(first, &refused).unwrap();
    assert_eq!(
        store.superseded_by(first).unwrap(),
        None,
        "refused: still its own"
    );
    // Its replay is dead-lettered again, as a request of the replaying service.
    let again = store
        .insert(&letter("dlq-replay-1", "dlq-replay-1-0"), &[], 3)
        .unwrap();
    let found = store
        .find("dlq-replay-1", "dlq-replay-1-0")
        .unwrap()
        .unwrap();
    assert_eq!(found.seq, again);
    assert!(store.find("svc", "nope").unwrap().is_none());
    let dead = Replay {
        at_us: 4,
        outcome: "dead-lettered again".into(),
        dead_letter: Some(again),
    };
    store.record_replay(first, &dead).unwrap();
    let later = Replay {
        at_us: 5,
        outcome: "failed: timeout".into(),
        dead_letter: None,
    };
    store.record_replay(first, &later).unwrap();
    assert_eq!(store.replays(first).unwrap(), [refused, dead, later]);
    assert_eq!(store.superseded_by(first).unwrap(), Some(again));
    assert_eq!(store.superseded_by(again).unwrap(), None);
    assert_eq!(store.get(first).unwrap().unwrap().replayed_us, None);
}
