//! A batch of events as the rows it is written as: one row an event, but
//! for the commonest case. A request dispatched in the same batch as its
//! acceptance — nine in ten of them under load (`docs/performance.md`) —
//! has its dispatch written into its acceptance's row (the row's
//! `attempt`, `worker` and `dispatched_us`), not a row of its own: a row,
//! and an entry in each index, fewer a request. Readers give such a row
//! back as the two events it holds (`row::events`). Only a dispatch that
//! follows the acceptance with no other event of its message between is
//! merged, so the rows of a message keep the order of its events.

use std::collections::HashMap;

use super::Event;
use super::row::{Columns, int};

/// One row to write.
#[derive(Debug)]
pub(super) struct Row<'a> {
    pub(super) at_us: i64,
    pub(super) kind: &'static str,
    pub(super) service: &'a str,
    pub(super) id: &'a str,
    pub(super) columns: Columns<'a>,
}

/// The rows `events` are written as, in their order.
pub(super) fn rows<'a>(events: impl Iterator<Item = &'a Event>) -> Vec<Row<'a>> {
    let mut rows: Vec<Row<'a>> = Vec::with_capacity(events.size_hint().0);
    // The acceptances written so far with no later event of their message.
    let mut open: HashMap<(&'a str, &'a str), usize> = HashMap::new();
    for event in events {
        let key = event.key_str();
        match event {
            Event::Accepted { .. } => {
                open.insert(key, rows.len());
            }
            Event::Dispatched {
                at_us,
                attempt,
                worker,
                ..
            } => {
                if let Some(at) = open.remove(&key) {
                    let columns = &mut rows[at].columns;
                    columns.attempt = Some(i64::from(*attempt));
                    columns.worker = Some(worker.as_ref());
                    columns.dispatched_us = Some(int(*at_us));
                    continue;
                }
            }
            _ => {
                open.remove(&key);
            }
        }
        rows.push(Row {
            at_us: int(event.at_us()),
            kind: event.kind().as_str(),
            service: key.0,
            id: key.1,
            columns: Columns::of(event),
        });
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::suite::accepted;
    use bytes::Bytes;

    fn dispatched(at_us: u64, id: &str, attempt: u32) -> Event {
        Event::Dispatched {
            at_us,
            key: ("s".into(), id.into()),
            attempt,
            worker: Bytes::from_static(b"w"),
        }
    }

    fn completed(at_us: u64, id: &str) -> Event {
        Event::Completed {
            at_us,
            key: ("s".into(), id.into()),
            result: None,
        }
    }

    /// (kind, id, attempt, dispatched_us) of each row.
    fn shape(events: &[Event]) -> Vec<(&'static str, String, Option<i64>, Option<i64>)> {
        rows(events.iter())
            .into_iter()
            .map(|r| {
                (
                    r.kind,
                    r.id.to_owned(),
                    r.columns.attempt,
                    r.columns.dispatched_us,
                )
            })
            .collect()
    }

    #[test]
    fn a_dispatch_right_after_its_acceptance_goes_into_its_row() {
        let events = [
            accepted(1, "s", "a", "F"),
            accepted(2, "s", "b", "F"),
            dispatched(3, "b", 1),
            dispatched(4, "a", 1),
            completed(5, "a"),
        ];
        assert_eq!(
            shape(&events),
            [
                ("accepted", "a".into(), Some(1), Some(4)),
                ("accepted", "b".into(), Some(1), Some(3)),
                ("completed", "a".into(), None, None),
            ]
        );
    }

    #[test]
    fn only_the_first_dispatch_with_nothing_of_its_message_between_is_merged() {
        let events = [
            // A second dispatch (a redelivery) gets its own row.
            accepted(1, "s", "a", "F"),
            dispatched(2, "a", 1),
            dispatched(3, "a", 2),
            // Another event of the message between: not merged.
            accepted(4, "s", "b", "F"),
            completed(5, "b"),
            dispatched(6, "b", 1),
            // A dispatch whose acceptance is in an earlier batch.
            dispatched(7, "c", 3),
        ];
        assert_eq!(
            shape(&events),
            [
                ("accepted", "a".into(), Some(1), Some(2)),
                ("dispatched", "a".into(), Some(2), None),
                ("accepted", "b".into(), None, None),
                ("completed", "b".into(), None, None),
                ("dispatched", "b".into(), Some(1), None),
                ("dispatched", "c".into(), Some(3), None),
            ]
        );
    }

    #[test]
    fn a_message_accepted_again_in_the_batch_merges_into_its_latest_acceptance() {
        let events = [
            accepted(1, "s", "a", "F"),
            completed(2, "a"),
            accepted(3, "s", "a", "F"),
            dispatched(4, "a", 1),
        ];
        assert_eq!(
            shape(&events),
            [
                ("accepted", "a".into(), None, None),
                ("completed", "a".into(), None, None),
                ("accepted", "a".into(), Some(1), Some(4)),
            ]
        );
    }
}
