//! `--log-format json` and `ZMANAGER_LOG_FORMAT=json` (README, "Logs"):
//! every line a node, its workers and a worker run by hand write on
//! stderr is one JSON object with the event's level, message and fields;
//! `RUST_LOG` filters them, `info` by default.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::RawClient;
use zmanager_tests::node::TestNode;
use zmanager_tests::temp::TempFile;
use zmanager_tests::{kill, runtime, test_config};

const LIMIT: Duration = Duration::from_secs(20);

/// Each non-empty line of `log` as a JSON object (panics on any other).
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let value: Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("not a JSON line ({e}): {line}\n--- log:\n{log}"));
            assert!(value.is_object(), "{line}");
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(value.get(key).is_some(), "no {key}: {line}");
            }
            value
        })
        .collect()
}

/// The line whose message is `message` from `target`, if any.
fn line<'a>(lines: &'a [Value], target: &str, message: &str) -> Option<&'a Value> {
    lines
        .iter()
        .find(|l| l["target"] == target && l["fields"]["message"] == message)
}

#[test]
fn a_node_its_workers_and_a_worker_by_hand_write_json_lines() {
    let (flows, mappings) = test_config();
    let mut node = TestNode::start_with(1, Some((&flows, &mappings)), &["--log-format", "json"]);
    // Its worker is told the format by the node (ZMANAGER_LOG_FORMAT).
    assert_eq!(node.wait_for_workers(1).len(), 1);
    // A worker run by hand, told only by the variable; its log filtered
    // to warnings but for its own target.
    let worker_log = TempFile::new("worker-json-log", "");
    let mut by_hand = zmanager(["worker", "--endpoint", &node.endpoints.workers])
        .args(["--identity", "by-hand", "--flows"])
        .arg(&flows)
        .arg("--mappings")
        .arg(&mappings)
        .env("ZMANAGER_LOG_FORMAT", "json")
        .env("RUST_LOG", "warn,zmanager::worker=info")
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(worker_log.path()).expect("create the worker's log"))
        .spawn();
    let deadline = Instant::now() + LIMIT;
    while !std::fs::read_to_string(worker_log.path())
        .unwrap_or_default()
        .contains("worker ready")
    {
        assert!(
            Instant::now() < deadline,
            "the worker by hand never got ready"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "logger").await;
        for i in 0..4 {
            client.request("Echo", &format!("l-{i}"), &i).await;
        }
        for _ in 0..4 {
            client.recv(LIMIT).await.expect("a result");
        }
    });
    // Stopped by SIGTERM, it logs that at info (`zmanager::node::shutdown`),
    // which its filter leaves out.
    kill("TERM", by_hand.id());
    let deadline = Instant::now() + LIMIT;
    while by_hand.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the worker by hand did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    node.signal("TERM");
    assert_eq!(node.wait_exit(LIMIT), Some(0), "{}", node.log());

    let lines = json_lines(&node.log());
    assert!(
        lines
            .iter()
            .all(|l| ["INFO", "WARN", "ERROR"].contains(&l["level"].as_str().unwrap_or_default())),
        "info and above by default: {lines:#?}"
    );
    assert!(line(&lines, "zmanager::node::shutdown", "SIGTERM received").is_some());
    let stopped = line(&lines, "zmanager::subject::shell", "subject stopped")
        .unwrap_or_else(|| panic!("no `subject stopped` line: {lines:#?}"));
    assert_eq!(stopped["level"], "INFO");
    assert_eq!(stopped["fields"]["accepted"], 4, "{stopped}");
    assert_eq!(stopped["fields"]["results"], 4, "{stopped}");
    // The node's own worker process, logging as the node was told.
    let ready = line(&lines, "zmanager::worker", "worker ready")
        .unwrap_or_else(|| panic!("no line from the node's worker: {lines:#?}"));
    assert!(ready["fields"]["credits"].is_u64(), "{ready}");

    let by_hand = json_lines(&std::fs::read_to_string(worker_log.path()).expect("read"));
    let ready = line(&by_hand, "zmanager::worker", "worker ready")
        .unwrap_or_else(|| panic!("no `worker ready` line: {by_hand:#?}"));
    let identity = ready["fields"]["identity"].as_str().unwrap_or_default();
    assert!(identity.starts_with("by-hand"), "{ready}");
    assert!(
        by_hand
            .iter()
            .all(|l| l["target"] == "zmanager::worker" || l["level"] != "INFO"),
        "RUST_LOG leaves the rest out: {by_hand:#?}"
    );
}

/// Without the flag or the variable, lines are text, as before.
#[test]
fn text_is_the_default() {
    let node = TestNode::start(1);
    node.wait_for_workers(1);
    let deadline = Instant::now() + LIMIT;
    while !node.log().contains("worker ready") {
        assert!(Instant::now() < deadline, "no worker ready line");
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = node.log();
    assert!(
        log.lines().all(|l| !l.trim_start().starts_with('{')),
        "{log}"
    );
    assert!(log.contains("node listening"), "{log}");
}

/// `[log] format = "json"` in the configuration: the node and its workers
/// write JSON lines; `--log-format text` on the command line comes first.
#[test]
fn the_configuration_sets_the_format_and_the_command_line_comes_first() {
    let (node, _config) = zmanager_tests::node::node_with(1, "[log]\nformat = \"json\"\n");
    node.wait_for_workers(1);
    let deadline = Instant::now() + LIMIT;
    while !node.log().contains("worker ready") {
        assert!(
            Instant::now() < deadline,
            "no worker ready line: {}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = json_lines(&node.log());
    assert!(
        line(&lines, "zmanager::worker", "worker ready").is_some(),
        "{lines:#?}"
    );
    drop(node);

    let config = zmanager_tests::temp::config_file("[log]\nformat = \"json\"\n");
    let (flows, mappings) = test_config();
    let node = TestNode::start_with(
        1,
        Some((&flows, &mappings)),
        &["--config", config.path(), "--log-format", "text"],
    );
    let deadline = Instant::now() + LIMIT;
    while !node.log().contains("worker ready") {
        assert!(
            Instant::now() < deadline,
            "no worker ready line: {}",
            node.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = node.log();
    assert!(
        log.lines().all(|l| !l.trim_start().starts_with('{')),
        "{log}"
    );
    // A format the configuration cannot have is the configuration's error.
    let bad = zmanager_tests::temp::config_file("[log]\nformat = \"xml\"\n");
    let out = zmanager(["up", "--config"]).arg(bad.path()).run();
    assert!(!out.status.success());
    assert!(
        out.stderr.contains("unknown variant `xml`"),
        "{}",
        out.stderr
    );
}
