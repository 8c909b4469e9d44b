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

on_both_backends!(
    unfinished_are_the_accepted_not_finished_in_order_as_last_recorded,
    a_message_accepted_again_after_it_finished_is_unfinished_again,
    results_are_kept_with_their_end_and_read_back_newest_within_a_window,
    range_selects_acceptance_time_and_flow,
    a_group_commit_keeps_the_order_events_were_submitted_in,
);
