//! What `zmanager journal list`, the console's pages and reload read: one
//! line per message, pages newest first, the catalog's versions.

use bytes::Bytes;

use super::{UnderTest, accepted, finished, key, on_both_backends};
use crate::catalog::source::{Format, SourceFile};
use crate::catalog::version::Sources;
use crate::journal::testing::request;
use crate::journal::{Event, MessageState, RecentPage, StateFilter, SummaryFilter};
use crate::wire::Message;
use crate::wire::error_code::ErrorCode;

fn summaries_are_one_line_per_message_filtered(j: &dyn UnderTest) {
    let mut suspended = request("t", "2", "G");
    suspended.envelope.step = 2;
    j.append(&[
        accepted(100, "s", "1", "F"),
        accepted(200, "t", "2", "G"),
        accepted(300, "s", "3", "F"),
        accepted(400, "t", "1", "F"),
        Event::Dispatched {
            at_us: 101,
            key: key("s", "1"),
            attempt: 1,
            worker: Bytes::from_static(b"w1"),
        },
        Event::Dispatched {
            at_us: 102,
            key: key("s", "1"),
            attempt: 2,
            worker: Bytes::from_static(b"w2"),
        },
        finished(103, "s", "1"),
        Event::Suspended {
            at_us: 201,
            key: key("t", "2"),
            step: 2,
            message: suspended,
        },
        Event::DeadLettered {
            at_us: 301,
            key: key("s", "3"),
            reason: "r".into(),
        },
    ])
    .unwrap();
    let all = j.summaries(&SummaryFilter::default()).unwrap();
    let lines: Vec<_> = all
        .iter()
        .map(|m| {
            (
                m.service.as_str(),
                m.id.as_str(),
                m.flow.as_str(),
                m.accepted_us,
                m.state,
                m.attempts,
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("s", "1", "F", 100, MessageState::Completed, 2),
            ("t", "2", "G", 200, MessageState::Suspended, 0),
            ("s", "3", "F", 300, MessageState::DeadLettered, 0),
            ("t", "1", "F", 400, MessageState::Accepted, 0),
        ]
    );
    let keys = |filter: SummaryFilter| -> Vec<(String, String)> {
        j.summaries(&filter)
            .unwrap()
            .iter()
            .map(|m| key(&m.service, &m.id))
            .collect()
    };
    assert_eq!(
        keys(SummaryFilter {
            state: StateFilter::Unfinished,
            ..SummaryFilter::default()
        }),
        [key("t", "2"), key("t", "1")]
    );
    assert_eq!(
        keys(SummaryFilter {
            state: StateFilter::Is(MessageState::DeadLettered),
            ..SummaryFilter::default()
        }),
        [key("s", "3")]
    );
    assert_eq!(
        keys(SummaryFilter {
            since_us: Some(200),
            until_us: Some(400),
            flow: Some("F".into()),
            ..SummaryFilter::default()
        }),
        [key("s", "3")]
    );
    assert_eq!(
        keys(SummaryFilter {
            id: Some("1".into()),
            ..SummaryFilter::default()
        }),
        [key("s", "1"), key("t", "1")]
    );
    assert_eq!(
        keys(SummaryFilter {
            limit: Some(2),
            ..SummaryFilter::default()
        }),
        [key("s", "3"), key("t", "1")],
        "the latest, in acceptance order"
    );
}

fn completed(at_us: u64, service: &str, id: &str, error: Option<ErrorCode>) -> Event {
    let mut result: Message = request(service, id, "F");
    if let Some(code) = error {
        result.envelope = result.envelope.into_error(code, "it failed".to_owned());
    }
    Event::Completed {
        at_us,
        key: key(service, id),
        result: Some(result.into()),
    }
}

fn page(before: Option<i64>, limit: u32, failed: bool) -> RecentPage {
    RecentPage {
        before,
        limit,
        failed,
    }
}

fn pages_go_back_from_the_newest_and_failures_have_their_own_list(j: &dyn UnderTest) {
    let mut events = Vec::new();
    for n in 0..10u64 {
        let id = n.to_string();
        events.push(accepted(100 + n, "s", &id, "F"));
        events.push(Event::Dispatched {
            at_us: 200 + n,
            key: key("s", &id),
            attempt: 1,
            worker: Bytes::from_static(b"w"),
        });
        match n {
            3 => events.push(completed(300 + n, "s", &id, Some(ErrorCode::ActionFailed))),
            5 => events.push(Event::DeadLettered {
                at_us: 300 + n,
                key: key("s", &id),
                reason: "dead letter #1: boom".into(),
            }),
            9 => {} // still running
            _ => events.push(completed(300 + n, "s", &id, None)),
        }
    }
    j.append(&events).unwrap();

    let first = j.recent(&page(None, 4, false)).unwrap();
    let ids: Vec<&str> = first.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["9", "8", "7", "6"]);
    assert_eq!(first[0].state, MessageState::Accepted);
    assert_eq!((first[0].attempts, first[0].ended_us), (1, None));
    assert_eq!(first[1].state, MessageState::Completed);
    assert_eq!(first[1].ended_us, Some(308));
    assert_eq!(first[1].accepted_us, Some(108));
    assert_eq!(first[1].error, None);

    let second = j.recent(&page(Some(first[3].seq), 4, false)).unwrap();
    let ids: Vec<&str> = second.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["5", "4", "3", "2"]);
    assert_eq!(second[0].state, MessageState::DeadLettered);
    assert_eq!(second[0].error.as_deref(), Some("dead letter #1: boom"));
    assert_eq!(second[2].error.as_deref(), Some("action_failed"));

    let failed = j.recent(&page(None, 10, true)).unwrap();
    let ids: Vec<&str> = failed.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, ["5", "3"], "the dead letter, then the error result");
    assert_eq!(failed[0].flow, "F");
    let older = j.recent(&page(Some(failed[0].seq), 10, true)).unwrap();
    assert_eq!(older.len(), 1);
    assert_eq!(older[0].id, "3");
}

fn catalog_versions_are_kept_with_their_files(j: &dyn UnderTest) {
    assert!(j.catalogs().unwrap().is_empty());
    let one = Sources {
        flows: vec![SourceFile::new(
            "f.ini",
            "[F]\n?F?Push\n??done\n",
            Format::Ini,
        )],
        mappings: vec![SourceFile::new("m.toml", "", Format::Toml)],
    };
    let two = Sources {
        flows: vec![SourceFile::new(
            "f.ini",
            "[G]\n?G?Push\n??done\n",
            Format::Ini,
        )],
        mappings: vec![],
    };
    j.record_catalog(1, &one, 10).unwrap();
    j.record_catalog(2, &two, 20).unwrap();
    assert!(
        j.record_catalog(2, &one, 30).is_err(),
        "a number is recorded once"
    );
    let got = j.catalogs().unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!((got[0].version, got[0].at_us), (1, 10));
    assert_eq!(got[0].sources, one);
    assert_eq!(got[0].digest, one.digest());
    assert_eq!(got[1].sources, two);
}

on_both_backends!(
    summaries_are_one_line_per_message_filtered,
    pages_go_back_from_the_newest_and_failures_have_their_own_list,
    catalog_versions_are_kept_with_their_files,
);
