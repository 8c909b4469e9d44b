//! What retention removes (finished messages only, oldest first, in
//! bounded steps) and the size it measures.

use bytes::Bytes;

use super::{UnderTest, accepted, finished, ids, key, on_both_backends};
use crate::journal::testing::request;
use crate::journal::{Event, JournalStats};

fn compact_removes_messages_finished_before_the_time_only(j: &dyn UnderTest) {
    j.append(&[
        accepted(10, "s", "done", "F"),
        accepted(11, "s", "dead", "F"),
        accepted(12, "s", "open", "F"),
        Event::Dispatched {
            at_us: 13,
            key: key("s", "done"),
            attempt: 1,
            worker: Bytes::from_static(b"w"),
        },
        Event::Completed {
            result: None,
            at_us: 100,
            key: key("s", "done"),
        },
        Event::DeadLettered {
            at_us: 300,
            key: key("s", "dead"),
            reason: "r".into(),
        },
    ])
    .unwrap();
    let before = j.stats().unwrap();
    assert_eq!(
        before,
        JournalStats {
            accepted: 3,
            dispatched: 1,
            suspended: 0,
            resumed: 0,
            completed: 1,
            dead_lettered: 1,
            oldest_us: Some(10),
            newest_us: Some(300),
        }
    );
    assert_eq!(j.compact(200).unwrap(), 1);
    assert!(j.history("s", "done").unwrap().is_empty());
    assert_eq!(j.history("s", "dead").unwrap().len(), 2);
    assert_eq!(j.compact(200).unwrap(), 0, "nothing more before 200");
    assert_eq!(j.compact(1_000).unwrap(), 1);
    let after = j.stats().unwrap();
    assert_eq!(
        (after.accepted, after.completed, after.dead_lettered),
        (1, 0, 0)
    );
    assert_eq!((after.oldest_us, after.newest_us), (Some(12), Some(12)));
    assert_eq!(ids(&j.unfinished().unwrap()), [key("s", "open")]);
    assert_eq!(j.compact(u64::MAX).unwrap(), 0, "unfinished are kept");
}

fn empty_journal_stats(j: &dyn UnderTest) {
    assert_eq!(j.stats().unwrap(), JournalStats::default());
    assert!(j.unfinished().unwrap().is_empty());
}

fn compact_oldest_removes_in_bounded_steps_oldest_first(j: &dyn UnderTest) {
    j.append(&[
        accepted(1, "s", "a", "F"),
        accepted(2, "s", "b", "F"),
        accepted(3, "s", "c", "F"),
        accepted(4, "s", "open", "F"),
        finished(30, "s", "b"),
        finished(10, "s", "c"),
        Event::DeadLettered {
            at_us: 20,
            key: key("s", "a"),
            reason: "r".into(),
        },
    ])
    .unwrap();
    assert_eq!(j.compact_oldest(u64::MAX, 2).unwrap(), 2);
    assert!(j.history("s", "c").unwrap().is_empty(), "finished first");
    assert!(j.history("s", "a").unwrap().is_empty(), "then this one");
    assert_eq!(j.history("s", "b").unwrap().len(), 2);
    assert_eq!(j.compact_oldest(25, 10).unwrap(), 0, "b finished at 30");
    assert_eq!(j.compact_oldest(u64::MAX, 10).unwrap(), 1);
    assert_eq!(j.compact_oldest(u64::MAX, 10).unwrap(), 0);
    assert_eq!(ids(&j.unfinished().unwrap()), [key("s", "open")]);
}

/// Payloads that do not compress (PostgreSQL compresses large values), so
/// that the bytes stored are the bytes written.
fn data_bytes_counts_rows_in_use_not_freed_ones(j: &dyn UnderTest) {
    let empty = j.data_bytes().unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let mut events = Vec::new();
    for i in 0..500 {
        let mut m = request("s", &format!("{i}"), "F");
        m.payload = Bytes::from((0..2_000).map(|_| rng.u8(..)).collect::<Vec<u8>>());
        events.push(Event::accepted(i, m));
        events.push(finished(i + 1, "s", &format!("{i}")));
    }
    j.append(&events).unwrap();
    let full = j.data_bytes().unwrap();
    assert!(full > empty + 500 * 2_000, "{empty} -> {full}");
    assert_eq!(j.compact(u64::MAX).unwrap(), 500);
    let after = j.data_bytes().unwrap();
    assert!(
        after < empty + 50_000,
        "freed space does not count: {after}"
    );
}

on_both_backends!(
    compact_removes_messages_finished_before_the_time_only,
    empty_journal_stats,
    compact_oldest_removes_in_bounded_steps_oldest_first,
    data_bytes_counts_rows_in_use_not_freed_ones,
);
