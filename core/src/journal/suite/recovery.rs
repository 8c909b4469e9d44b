//! What a restarted node reads back: the unfinished messages at their
//! checkpoints, the recent results for duplicates, a time range to replay,
//! each message's history, and the order events were appended in.

use bytes::Bytes;

use super::{UnderTest, accepted, ids, key, message_ids, on_both_backends};
use crate::journal::testing::request;
use crate::journal::{Checkpoint, Event, EventKind};
use crate::wire::Message;

fn unfinished_are_the_accepted_not_finished_in_order_as_last_recorded(j: &dyn UnderTest) {
    let mut suspended = request("other", "1", "G");
    suspended.envelope.step = 2;
    j.append(&[
        accepted(10, "svc", "1", "F"),
        accepted(11, "svc", "2", "F"),
        accepted(12, "other", "1", "G"),
        accepted(13, "svc", "3", "F"),
    ])
    .unwrap();
    j.append(&[
        Event::Dispatched {
            at_us: 20,
            key: key("svc", "1"),
            attempt: 1,
            worker: Bytes::from_static(b"w1"),
        },
        Event::Dispatched {
            at_us: 21,
            key: key("svc", "1"),
            attempt: 2,
            worker: Bytes::from_static(b"w2"),
        },
        Event::Completed {
            result: None,
            at_us: 22,
            key: key("svc", "2"),
        },
        Event::Dispatched {
            at_us: 23,
            key: key("other", "1"),
            attempt: 1,
            worker: Bytes::from_static(b"w1"),
        },
        Event::Suspended {
            at_us: 24,
            key: key("other", "1"),
            step: 2,
            message: suspended.clone(),
        },
        Event::DeadLettered {
            at_us: 25,
            key: key("svc", "3"),
            reason: "poison".into(),
        },
    ])
    .unwrap();
    let unfinished = j.unfinished().unwrap();
    assert_eq!(ids(&unfinished), [key("svc", "1"), key("other", "1")]);
    assert_eq!(unfinished[0].message.envelope.attempt, 2, "latest dispatch");
    assert_eq!(unfinished[0].at, Checkpoint::Accepted);
    assert_eq!(unfinished[1].message, suspended, "latest suspension");
    assert_eq!(unfinished[1].at, Checkpoint::Suspended);

    // Answered: the flow goes on from the answer, not from the suspension.
    let mut answered = suspended.clone();
    answered.payload = Bytes::from_static(b"answer");
    j.append(&[Event::Resumed {
        at_us: 26,
        key: key("other", "1"),
        step: 2,
        message: answered.clone(),
    }])
    .unwrap();
    let unfinished = j.unfinished().unwrap();
    assert_eq!(unfinished[1].message, answered, "latest checkpoint");
    assert_eq!(unfinished[1].at, Checkpoint::Resumed);
    assert_eq!(j.stats().unwrap().resumed, 1);

    let history = j.history("svc", "1").unwrap();
    let kinds: Vec<_> = history.iter().map(|r| r.event.kind()).collect();
    assert_eq!(
        kinds,
        [
            EventKind::Accepted,
            EventKind::Dispatched,
            EventKind::Dispatched
        ]
    );
    assert!(history.windows(2).all(|w| w[0].seq < w[1].seq));
    assert_eq!(
        history[2].event,
        Event::Dispatched {
            at_us: 21,
            key: key("svc", "1"),
            attempt: 2,
            worker: Bytes::from_static(b"w2"),
        }
    );
    let dead = j.history("svc", "3").unwrap();
    assert!(matches!(&dead[1].event, Event::DeadLettered { reason, .. } if reason == "poison"));
    assert!(j.history("svc", "nope").unwrap().is_empty());
}

fn a_message_accepted_again_after_it_finished_is_unfinished_again(j: &dyn UnderTest) {
    j.append(&[
        accepted(1, "s", "1", "F"),
        Event::Completed {
            result: None,
            at_us: 2,
            key: key("s", "1"),
        },
        accepted(3, "s", "1", "F"),
    ])
    .unwrap();
    assert_eq!(ids(&j.unfinished().unwrap()), [key("s", "1")]);
}

fn results_are_kept_with_their_end_and_read_back_newest_within_a_window(j: &dyn UnderTest) {
    let result = |id: &str| {
        let mut m = request("s", id, "F");
        m.envelope.kind = crate::wire::envelope::Kind::Result;
        m
    };
    let mut events = Vec::new();
    for (at, id) in [(100, "a"), (200, "b"), (300, "c"), (400, "d")] {
        events.push(accepted(at, "s", id, "F"));
        events.push(Event::Completed {
            at_us: at + 1,
            key: key("s", id),
            // "b" ended with no result to give again (a refusal).
            result: (id != "b").then(|| result(id).into()),
        });
    }
    j.append(&events).unwrap();
    let ids = |got: Vec<(u64, Message)>| -> Vec<(u64, String)> {
        got.into_iter().map(|(t, m)| (t, m.envelope.id)).collect()
    };
    assert_eq!(
        ids(j.recent_results(150, 10).unwrap()),
        [(301, "c".to_owned()), (401, "d".to_owned())]
    );
    // The newest `limit`, oldest first.
    assert_eq!(
        ids(j.recent_results(0, 2).unwrap()),
        [(301, "c".to_owned()), (401, "d".to_owned())]
    );
    // And the history shows the result with the end.
    let history = j.history("s", "a").unwrap();
    assert!(matches!(
        &history[1].event,
        Event::Completed { result: Some(m), .. } if m.envelope.kind == crate::wire::envelope::Kind::Result
    ));
}

fn range_selects_acceptance_time_and_flow(j: &dyn UnderTest) {
    j.append(&[
        accepted(100, "s", "a", "F"),
        accepted(200, "s", "b", "G"),
        accepted(300, "s", "c", "F"),
        accepted(400, "s", "d", "F"),
        Event::Completed {
            result: None,
            at_us: 250,
            key: key("s", "a"),
        },
    ])
    .unwrap();
    let all = j.range(100, 400, None).unwrap();
    assert_eq!(
        message_ids(&all),
        [key("s", "a"), key("s", "b"), key("s", "c")]
    );
    assert_eq!(all[0], request("s", "a", "F"), "as accepted");
    let f = j.range(0, u64::MAX, Some("F")).unwrap();
    assert_eq!(
        message_ids(&f),
        [key("s", "a"), key("s", "c"), key("s", "d")]
    );
    assert!(j.range(500, 600, None).unwrap().is_empty());
}

/// A group commit of several submissions, large enough to fill many
/// pages, keeps every event in the order it was submitted.
fn a_group_commit_keeps_the_order_events_were_submitted_in(j: &dyn UnderTest) {
    let batches: Vec<Vec<Event>> = (0..3u64)
        .map(|b| {
            (0..400u64)
                .map(|i| accepted(b * 1_000 + i, "s", &format!("{b}-{i:03}"), "F"))
                .collect()
        })
        .collect();
    j.append_batches(&batches).unwrap();
    j.append_batches(&[Vec::new()]).unwrap();
    let expected: Vec<_> = batches.iter().flatten().map(Event::key).collect();
    assert_eq!(ids(&j.unfinished().unwrap()), expected);
    assert_eq!(message_ids(&j.range(0, u64::MAX, None).unwrap()), expected);
    assert_eq!(j.stats().unwrap().accepted, 1_200);
}

/// A dispatch appended in its acceptance's batch is written into the
/// acceptance's row (`batch`): everything read back is as if each event
/// had a row of its own, which is how the same life appended one event at
/// a time is stored.
fn a_dispatch_in_its_acceptances_row_reads_back_as_its_own_event(j: &dyn UnderTest) {
    let dispatched = |at_us, id: &str, attempt, worker: &'static [u8]| Event::Dispatched {
        at_us,
        key: key("s", id),
        attempt,
        worker: Bytes::from_static(worker),
    };
    let suspended = |id: &str| {
        let mut state = request("s", id, "F");
        state.envelope.step = 2;
        state
    };
    // Dispatched once; dispatched again (a redelivery); dispatched, then
    // suspended (the dispatch is before the checkpoint, so recovery takes
    // the suspension's attempt).
    let lives = |id: &str| -> [Vec<Event>; 3] {
        let (once, again, waiting) = (format!("{id}1"), format!("{id}2"), format!("{id}3"));
        [
            vec![
                accepted(10, "s", &once, "F"),
                dispatched(11, &once, 1, b"w1"),
            ],
            vec![
                accepted(20, "s", &again, "F"),
                dispatched(21, &again, 1, b"w1"),
                dispatched(22, &again, 2, b"w2"),
            ],
            vec![
                accepted(30, "s", &waiting, "F"),
                dispatched(31, &waiting, 3, b"w2"),
                Event::Suspended {
                    at_us: 32,
                    key: key("s", &waiting),
                    step: 2,
                    message: suspended(&waiting),
                },
            ],
        ]
    };
    // "m": each life in one batch; "u": one event a batch, nothing merged.
    let merged = lives("m");
    let unmerged = lives("u");
    for life in &merged {
        j.append(life).unwrap();
    }
    for event in unmerged.iter().flatten() {
        j.append(std::slice::from_ref(event)).unwrap();
    }
    for life in merged.iter().chain(&unmerged) {
        let (_, id) = life[0].key();
        let history = j.history("s", &id).unwrap();
        let events: Vec<&Event> = history.iter().map(|r| &r.event).collect();
        assert_eq!(events, life.iter().collect::<Vec<_>>(), "{id}");
        // How it was stored: the first dispatch in the acceptance's row
        // (one row number for both) only where they were in one batch.
        assert_eq!(
            history[0].seq == history[1].seq,
            id.starts_with('m'),
            "{id}"
        );
    }
    let unfinished = j.unfinished().unwrap();
    let found: Vec<(String, u32, Checkpoint)> = unfinished
        .iter()
        .map(|u| {
            (
                u.message.envelope.id.clone(),
                u.message.envelope.attempt,
                u.at,
            )
        })
        .collect();
    let expected = |id: &str| {
        [
            (format!("{id}1"), 1, Checkpoint::Accepted),
            (format!("{id}2"), 2, Checkpoint::Accepted),
            (format!("{id}3"), 0, Checkpoint::Suspended),
        ]
    };
    assert_eq!(found, [expected("m"), expected("u")].concat());
    assert_eq!(unfinished[2].message, suspended("m3"));
    let stats = j.stats().unwrap();
    assert_eq!(
        (stats.accepted, stats.dispatched, stats.suspended),
        (6, 8, 2)
    );
    let attempts: Vec<(String, u32)> = j
        .summaries(&crate::journal::SummaryFilter::default())
        .unwrap()
        .into_iter()
        .map(|m| (m.id, m.attempts))
        .collect();
    for (id, attempts_of) in [
        ("m1", 1),
        ("m2", 2),
        ("m3", 3),
        ("u1", 1),
        ("u2", 2),
        ("u3", 3),
    ] {
        assert!(
            attempts.contains(&(id.to_owned(), attempts_of)),
            "{id}: {attempts:?}"
        );
    }
}

on_both_backends!(
    a_dispatch_in_its_acceptances_row_reads_back_as_its_own_event,
    unfinished_are_the_accepted_not_finished_in_order_as_last_recorded,
    a_message_accepted_again_after_it_finished_is_unfinished_again,
    results_are_kept_with_their_end_and_read_back_newest_within_a_window,
    range_selects_acceptance_time_and_flow,
    a_group_commit_keeps_the_order_events_were_submitted_in,
);
