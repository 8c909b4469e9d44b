//! `zmanager journal stats|list|show|replay` on journals prepared by
//! appending events with the library's `SqliteJournal` directly (not by a
//! node recording them), and a replay into a real node.

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zmanager::journal::{Event, Journal, PostgresJournal, SqliteJournal, SyncMode};
use zmanager::wire::Message;
use zmanager::wire::envelope::{Envelope, Kind};
use zmanager_tests::checker::Checker;
use zmanager_tests::cli::{Output, zmanager};
use zmanager_tests::client::{RawClient, json};
use zmanager_tests::node::TestNode;
use zmanager_tests::{runtime, temp};

/// 2025-01-15T10:00:00Z, in microseconds since the epoch.
const T0: u64 = 1_736_935_200_000_000;
const SECOND: u64 = 1_000_000;

/// A fresh data directory, removed on drop.
struct DataDir(tempfile::TempDir);

impl DataDir {
    fn new(name: &str) -> Self {
        Self(temp::dir(&format!("journal-cli-{name}")))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }

    /// Appends `events` to the journal in this directory.
    fn record(&self, events: &[Event]) {
        let journal = SqliteJournal::open(self.path(), SyncMode::Off).expect("open journal");
        journal.append(events).expect("append");
    }

    /// `zmanager journal <args> --data-dir <this>`.
    fn journal(&self, args: &[&str]) -> Output {
        zmanager(["journal"])
            .args(args)
            .arg("--data-dir")
            .arg(self.path())
            .run()
    }
}

fn stdout(out: &Output) -> String {
    out.stdout.clone()
}

fn stderr(out: &Output) -> String {
    out.stderr.clone()
}

/// Asserts success and returns stdout.
fn ok(out: &Output) -> String {
    assert!(out.status.success(), "{}\n{}", stdout(out), stderr(out));
    stdout(out)
}

/// A request `id` of `service` into `flow` with a JSON payload.
fn request(service: &str, id: &str, flow: &str, payload: &serde_json::Value) -> Message {
    let mut envelope = Envelope::request(id, flow);
    envelope.service = service.into();
    let bytes = rmp_serde::to_vec_named(payload).expect("encode payload");
    Message::new(envelope, Bytes::from(bytes))
}

fn key(service: &str, id: &str) -> (String, String) {
    (service.into(), id.into())
}

fn dispatched(at_us: u64, service: &str, id: &str, attempt: u32, worker: &str) -> Event {
    Event::Dispatched {
        at_us,
        key: key(service, id),
        attempt,
        worker: Bytes::copy_from_slice(worker.as_bytes()),
    }
}

/// Four messages: one completed, one suspended at an `@ASYNC` step (after
/// an earlier answer), one dead-lettered after two attempts, one just
/// accepted. Two services used the id `1`.
fn prepared(name: &str) -> DataDir {
    let dir = DataDir::new(name);
    dir.record(&prepared_events());
    dir
}

/// The events of [`prepared`]'s journal.
fn prepared_events() -> Vec<Event> {
    let mut suspended = request("svc-a", "2", "Ask", &serde_json::json!({"asked": true}));
    suspended.envelope.step = 2;
    suspended.envelope.key = "?Ask@ASYNC?question_response".into();
    let answer = request("svc-a", "2", "Ask", &serde_json::json!({"answer": 42}));
    vec![
        Event::accepted(
            T0,
            request("svc-a", "1", "Echo", &serde_json::json!("hello")),
        ),
        dispatched(T0 + 10, "svc-a", "1", 1, "w-100"),
        Event::Completed {
            result: None,
            at_us: T0 + 20,
            key: key("svc-a", "1"),
        },
        Event::accepted(
            T0 + SECOND,
            request("svc-a", "2", "Ask", &serde_json::json!({"q": "why"})),
        ),
        Event::Suspended {
            at_us: T0 + SECOND + 10,
            key: key("svc-a", "2"),
            step: 2,
            message: suspended.clone(),
        },
        Event::Resumed {
            at_us: T0 + SECOND + 20,
            key: key("svc-a", "2"),
            step: 2,
            message: answer,
        },
        Event::Suspended {
            at_us: T0 + SECOND + 30,
            key: key("svc-a", "2"),
            step: 2,
            message: suspended,
        },
        Event::accepted(
            T0 + 2 * SECOND,
            request("svc-b", "1", "Boom", &serde_json::json!([1, 2])),
        ),
        dispatched(T0 + 2 * SECOND + 10, "svc-b", "1", 1, "w-100"),
        dispatched(T0 + 2 * SECOND + 20, "svc-b", "1", 2, "w-200"),
        Event::DeadLettered {
            at_us: T0 + 2 * SECOND + 30,
            key: key("svc-b", "1"),
            reason: "panicked 2 times: boom".into(),
        },
        Event::accepted(
            T0 + 3 * SECOND,
            request("svc-b", "3", "Echo", &serde_json::json!({"n": 3})),
        ),
    ]
}

#[test]
fn stats_counts_events_and_unfinished_messages() {
    let dir = prepared("stats");
    let shown = ok(&dir.journal(&["stats"]));
    for line in COUNTED {
        assert!(shown.lines().any(|l| l == line), "{line:?} in\n{shown}");
    }
    assert!(shown.contains(" MiB ("), "{shown}");
}

/// What `journal list` prints of [`prepared`]'s journal.
const LISTED: [&str; 4] = [
    "2025-01-15T10:00:00.000000Z completed     attempts=1 flow=Echo service=svc-a id=1",
    "2025-01-15T10:00:01.000000Z suspended     attempts=0 flow=Ask service=svc-a id=2",
    "2025-01-15T10:00:02.000000Z dead_lettered attempts=2 flow=Boom service=svc-b id=1",
    "2025-01-15T10:00:03.000000Z accepted      attempts=0 flow=Echo service=svc-b id=3",
];

/// The counts `journal stats` prints of [`prepared`]'s journal.
const COUNTED: [&str; 9] = [
    "  accepted      4",
    "  dispatched    3",
    "  suspended     2",
    "  resumed       1",
    "  completed     1",
    "  dead_lettered 1",
    "unfinished messages: 2",
    "oldest event: 2025-01-15T10:00:00.000000Z (1736935200000000 µs)",
    "newest event: 2025-01-15T10:00:03.000000Z (1736935203000000 µs)",
];

#[test]
fn list_shows_one_line_per_message_filtered() {
    let dir = prepared("list");
    let all = ok(&dir.journal(&["list"]));
    let lines: Vec<&str> = all.lines().collect();
    assert_eq!(lines, LISTED, "{all}");
    let ids = |args: &[&str]| -> Vec<String> {
        ok(&dir.journal(args))
            .lines()
            .map(|l| {
                let service = l.split(" service=").nth(1).unwrap_or_default();
                service.replace(" id=", "/")
            })
            .collect()
    };
    assert_eq!(
        ids(&["list", "--state", "unfinished"]),
        ["svc-a/2", "svc-b/3"]
    );
    assert_eq!(ids(&["list", "--state", "dead_lettered"]), ["svc-b/1"]);
    assert_eq!(ids(&["list", "--flow", "Echo"]), ["svc-a/1", "svc-b/3"]);
    assert_eq!(
        ids(&[
            "list",
            "--since",
            "2025-01-15T10:00:01Z",
            "--until",
            "1736935203000000"
        ]),
        ["svc-a/2", "svc-b/1"]
    );
    assert_eq!(ids(&["list", "--limit", "1"]), ["svc-b/3"], "the latest");
    assert!(ids(&["list", "--since", "1h"]).is_empty(), "all in 2025");
}

/// The same commands on a PostgreSQL journal (`[journal] backend =
/// "postgres"` in `--config`), on a private server (`tests/postgres/`).
#[test]
fn the_same_commands_read_a_postgres_journal() {
    let Some(server) = zmanager_test_postgres::shared("zmanager journal on PostgreSQL") else {
        return;
    };
    let url = server.database();
    let config = temp::config_file(&format!(
        "[journal]\nbackend = \"postgres\"\nurl = {url:?}\n"
    ));
    let journal = |args: &[&str]| {
        zmanager(["journal"])
            .args(args)
            .arg("--config")
            .arg(config.path())
            .run()
    };
    // No node ever ran on that database: a clear error, not an empty list.
    let none = journal(&["stats"]);
    assert!(!none.status.success());
    assert!(
        stderr(&none).contains("holds no journal"),
        "{}",
        stderr(&none)
    );

    let recorder = PostgresJournal::open(&url, SyncMode::Off).expect("open the journal");
    recorder.append(&prepared_events()).expect("append");
    let shown = ok(&journal(&["stats"]));
    assert!(
        shown
            .lines()
            .next()
            .is_some_and(|l| l.starts_with("journal postgres://zmanager@")),
        "{shown}"
    );
    for line in COUNTED {
        assert!(shown.lines().any(|l| l == line), "{line:?} in\n{shown}");
    }
    let all = ok(&journal(&["list"]));
    assert_eq!(all.lines().collect::<Vec<_>>(), LISTED, "{all}");
    let history = ok(&journal(&["show", "1", "--service", "svc-b"]));
    assert!(history.contains("dead_lettered"), "{history}");
    assert!(history.contains("panicked 2 times: boom"), "{history}");

    // The url from the environment, the file naming only the backend.
    let bare = temp::config_file("[journal]\nbackend = \"postgres\"\n");
    let listed = zmanager(["journal", "list", "--config", bare.path()])
        .env(zmanager::node::config::JOURNAL_URL_VAR, &url)
        .run();
    assert_eq!(ok(&listed).lines().collect::<Vec<_>>(), LISTED);
    let without = zmanager(["journal", "list", "--config", bare.path()])
        .env_remove(zmanager::node::config::JOURNAL_URL_VAR)
        .run();
    assert!(!without.status.success());
    assert!(
        stderr(&without).contains("or ZMANAGER_JOURNAL_URL in the environment"),
        "{}",
        stderr(&without)
    );
}

#[test]
fn show_prints_a_messages_whole_history() {
    let dir = prepared("show");
    let shown = ok(&dir.journal(&["show", "2"]));
    let lines: Vec<&str> = shown.lines().collect();
    assert_eq!(lines[0], "message 2 of service svc-a", "{shown}");
    let events: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_once("Z ").map_or(*l, |(_, what)| what))
        .collect();
    assert_eq!(
        events,
        [
            r#"accepted      into Ask at its entry step, payload {"q":"why"}"#,
            r#"suspended     at step 2 `?Ask@ASYNC?question_response`, state {"asked":true}"#,
            r#"resumed       after step 2, answer {"answer":42}"#,
            r#"suspended     at step 2 `?Ask@ASYNC?question_response`, state {"asked":true}"#,
        ],
        "{shown}"
    );
    assert!(lines[1].contains("2025-01-15T10:00:01.000000Z"), "{shown}");

    // Two services used the id 1.
    let out = dir.journal(&["show", "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(
            "several services sent a message \"1\": svc-a, svc-b; choose one with --service"
        ),
        "{}",
        stderr(&out)
    );
    let shown = ok(&dir.journal(&["show", "1", "--service", "svc-b"]));
    // Its events' numbers in the journal: the acceptance and the first
    // dispatch, recorded in one commit, are one row (docs/journal.md).
    let numbers: Vec<&str> = shown
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(numbers, ["#7", "#7", "#8", "#9"], "{shown}");
    assert!(
        shown.contains("dispatched    attempt 1 to worker w-100"),
        "{shown}"
    );
    assert!(
        shown.contains("dispatched    attempt 2 to worker w-200"),
        "{shown}"
    );
    assert!(
        shown.contains("dead_lettered panicked 2 times: boom"),
        "{shown}"
    );
    let shown = ok(&dir.journal(&["show", "1", "--service", "svc-a"]));
    assert!(
        shown
            .lines()
            .last()
            .is_some_and(|l| l.ends_with("Z completed")),
        "{shown}"
    );

    let out = dir.journal(&["show", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no message \"nope\" in the journal"));
}

#[test]
fn bad_input_gets_a_clear_error() {
    let parent = temp::dir("journal-cli-no-such-dir");
    let missing = parent.path().join("no-such-dir");
    let out = zmanager(["journal", "stats", "--data-dir"])
        .arg(&missing)
        .run();
    assert_eq!(out.status.code(), Some(1));
    let text = stderr(&out);
    assert!(
        text.starts_with("error: cannot read the journal in"),
        "{text}"
    );
    assert!(text.contains("no such file"), "{text}");
    assert!(!missing.exists(), "nothing created");

    let dir = prepared("bad");
    for (args, expected) in [
        (
            &["list", "--since", "yesterday"][..],
            "\"yesterday\" is not a time",
        ),
        (
            &[
                "replay",
                "--since",
                "2025-01-15T10:00:02Z",
                "--until",
                "2025-01-15T10:00:01Z",
            ],
            "--since (2025-01-15T10:00:02.000000Z) must be before --until (2025-01-15T10:00:01.000000Z)",
        ),
        (&["replay", "--since", "1h"], "--until"),
        (&["list", "--state", "lost"], "invalid value 'lost'"),
    ] {
        let out = dir.journal(args);
        assert!(!out.status.success(), "{args:?}");
        assert!(
            stderr(&out).contains(expected),
            "{args:?}: {}",
            stderr(&out)
        );
    }

    // A damaged database file: SQLite's check finds it.
    let db = dir.path().join("zmanager.db");
    let mut bytes = std::fs::read(&db).expect("read db");
    for b in bytes.iter_mut().skip(4096).take(4096) {
        *b = 0x5a;
    }
    std::fs::write(&db, bytes).expect("write db");
    let out = dir.journal(&["stats"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is damaged"), "{}", stderr(&out));
}

/// Requests accepted in three windows; a replay of the middle one runs
/// exactly those in the node, none of the others.
#[test]
fn replay_reprocesses_exactly_a_time_range() {
    let dir = DataDir::new("replay");
    let window = |name: &str, start: u64| -> Vec<Event> {
        (0..3)
            .map(|i| {
                let payload = serde_json::json!(format!("{name}-{i}"));
                let m = request("old-svc", &format!("{name}-{i}"), "Count", &payload);
                Event::accepted(start + i * SECOND, m)
            })
            .collect()
    };
    dir.record(&window("early", T0));
    dir.record(&window("middle", T0 + 60 * SECOND));
    dir.record(&window("late", T0 + 120 * SECOND));
    // A request of another flow inside the window, left out by --flow.
    dir.record(&[Event::accepted(
        T0 + 61 * SECOND,
        request("old-svc", "other", "Echo", &serde_json::json!("other")),
    )]);
    let (since, until) = ("2025-01-15T10:01:00Z", "2025-01-15T10:02:00Z");

    let dry = ok(&dir.journal(&[
        "replay",
        "--since",
        since,
        "--until",
        until,
        "--flow",
        "Count",
        "--dry-run",
    ]));
    let listed: Vec<&str> = dry.lines().collect();
    assert_eq!(
        listed,
        [
            "old-svc/middle-0 would be replayed into Count \"middle-0\"",
            "old-svc/middle-1 would be replayed into Count \"middle-1\"",
            "old-svc/middle-2 would be replayed into Count \"middle-2\"",
        ],
        "{dry}"
    );

    let node = TestNode::start(1);
    runtime().block_on(async {
        // Sees every result the node publishes (an empty prefix matches
        // every topic), including those for the replay command.
        let mut watcher =
            RawClient::connect_with_prefix(&node.endpoints, "watcher", Some("")).await;
        let out = tokio::task::spawn_blocking({
            let (intake, publish) = (
                node.endpoints.intake.clone(),
                node.endpoints.publish.clone(),
            );
            let data_dir = dir.path().to_owned();
            move || {
                zmanager(["journal", "replay", "--since", since, "--until", until])
                    .args([
                        "--flow",
                        "Count",
                        "--intake",
                        &intake,
                        "--publish",
                        &publish,
                    ])
                    .arg("--data-dir")
                    .arg(data_dir)
                    .run()
            }
        })
        .await
        .expect("replay ran");
        let printed = ok(&out);
        // A journal from elsewhere has no operator cookie of this node:
        // said once; requests at their flow's entry go all the same.
        let warned = stderr(&out);
        assert_eq!(
            warned.matches("warning: operator cookie").count(),
            1,
            "{warned}"
        );
        assert!(
            warned.contains("will be refused (not_an_entry)"),
            "{warned}"
        );
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 3, "{printed}");
        for (i, line) in lines.iter().enumerate() {
            assert!(
                line.starts_with(&format!("old-svc/middle-{i} replayed as journal-replay-")),
                "{printed}"
            );
            assert!(
                line.contains(&format!("\"payload\":\"middle-{i}\"")),
                "{printed}"
            );
        }
        assert!(
            stderr(&out).contains("3 to replay: 3 ok, 0 refused, 0 failed, 0 without a result"),
            "{}",
            stderr(&out)
        );

        let mut checker = Checker::default();
        for i in 0..3 {
            checker.sent(&format!("middle-{i}"));
        }
        // What the node processed: Count results, whoever they were for,
        // until a quiet half second after the last expected one.
        let mut quiet_until = Instant::now() + Duration::from_secs(10);
        while Instant::now() < quiet_until {
            let Some(r) = watcher.recv(Duration::from_millis(100)).await else {
                continue;
            };
            if r.envelope.kind == Kind::Result && r.envelope.flow == "Count" {
                let result = json(&r.payload);
                checker.received(result["payload"].as_str().unwrap_or("not a string"));
                if checker.missing() == 0 {
                    quiet_until = Instant::now() + Duration::from_millis(500);
                }
            }
        }
        let report = checker.report();
        println!("replay: {report}");
        report.assert_clean();
    });
}

/// `zmanager journal replay --since T0 --until T0+1h` of `dir` into `node`.
fn replay_into(dir: &DataDir, node: &TestNode) -> Output {
    zmanager(["journal", "replay", "--since", "1736935200000000"])
        .args(["--until", "1736938800000000"])
        .args(["--intake", &node.endpoints.intake])
        .args(["--publish", &node.endpoints.publish])
        .arg("--data-dir")
        .arg(dir.path())
        .run()
}

/// Requests of a flow ordered by `envelope`, as the node journals them
/// (with their `order_key`): replayed with their keys (without one, the
/// node refuses them with code 6), each key's in the order accepted.
#[test]
fn replay_carries_each_requests_order_key_and_keeps_its_order() {
    let dir = DataDir::new("replay-ordered");
    let log = dir.path().join("calls.log");
    let mut events = Vec::new();
    for seq in 0..10u64 {
        for key in ["acc-1", "acc-2"] {
            let payload = serde_json::json!({ "log": log, "key": key, "seq": seq });
            let id = format!("{key}-{seq}");
            let mut m = request("old-svc", &id, "OrderedByEnvelope", &payload);
            m.envelope.order_key = key.into();
            events.push(Event::accepted(T0 + seq * SECOND, m));
        }
    }
    dir.record(&events);

    let node = TestNode::start(2);
    let out = replay_into(&dir, &node);
    let printed = ok(&out);
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 20, "{printed}");
    assert!(
        lines[0].starts_with("old-svc/acc-1-0 replayed as journal-replay-"),
        "{printed}"
    );
    assert!(lines.iter().all(|l| l.contains(": ok {")), "{printed}");
    assert!(
        stderr(&out).contains("20 to replay: 20 ok, 0 refused, 0 failed, 0 without a result"),
        "{}",
        stderr(&out)
    );
    // What the component saw, per key: 0, 1, …, 9, each once.
    let calls = std::fs::read_to_string(&log).expect("read the record log");
    for key in ["acc-1", "acc-2"] {
        let seqs: Vec<u64> = calls
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{key} ")))
            .map(|rest| {
                rest.split(' ')
                    .next()
                    .and_then(|s| s.parse().ok())
                    .expect("seq")
            })
            .collect();
        assert_eq!(seqs, (0..10).collect::<Vec<u64>>(), "{key}: {calls}");
    }
}

/// What the node refuses on intake — a flow it does not have, an ordered
/// flow's request without its key — is reported as refused, apart from
/// what ran, and the command fails.
#[test]
fn replay_reports_the_requests_the_node_refuses() {
    let dir = DataDir::new("replay-refused");
    let log = dir.path().join("calls.log");
    let unkeyed = serde_json::json!({ "log": log, "key": "", "seq": 0 });
    dir.record(&[
        Event::accepted(
            T0,
            request("old-svc", "1", "Echo", &serde_json::json!("hello")),
        ),
        Event::accepted(
            T0 + SECOND,
            request("old-svc", "2", "Gone", &serde_json::json!("gone")),
        ),
        // Journaled before its flow was ordered: no key.
        Event::accepted(
            T0 + 2 * SECOND,
            request("old-svc", "3", "OrderedByEnvelope", &unkeyed),
        ),
    ]);

    let node = TestNode::start(1);
    let out = replay_into(&dir, &node);
    let printed = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{printed}\n{}", stderr(&out));
    let lines: Vec<&str> = printed.lines().collect();
    assert_eq!(lines.len(), 3, "{printed}");
    assert!(
        lines[0].starts_with("old-svc/1 replayed as journal-replay-"),
        "{printed}"
    );
    assert!(lines[0].ends_with(": ok \"hello\""), "{printed}");
    assert_eq!(
        lines[1], "old-svc/2 refused: 3 (unknown_flow): unknown flow \"Gone\"",
        "{printed}"
    );
    assert!(
        lines[2].starts_with("old-svc/3 refused: 6 (bad_request): "),
        "{printed}"
    );
    assert!(
        stderr(&out).contains("3 to replay: 1 ok, 2 refused, 0 failed, 0 without a result"),
        "{}",
        stderr(&out)
    );
    assert!(!log.exists(), "the refused request did not run");
}
