//! `zmanager chaos` end to end: a flow through worker kills and a node
//! kill (nothing lost or unexpected), a fault asked for that the load
//! ended before (a failed run, not a clean one), an action that is not
//! idempotent on purpose (its extra runs reported), and bad input refused
//! with exit 2 before any load.

use std::time::Duration;

use zmanager_tests::cli::{Output, zmanager};
use zmanager_tests::{temp, test_config};

/// The report `--json` wrote.
fn report(path: &std::path::Path, out: &Output) -> serde_json::Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("no JSON report ({e}):\n{}\n{}", out.stdout, out.stderr));
    serde_json::from_str(&text).expect("valid JSON")
}

#[test]
fn a_flow_loses_nothing_through_worker_kills_and_a_node_kill() {
    let dir = temp::dir("chaos-sleep");
    let json = dir.path().join("chaos.json");
    let (flows, mappings) = test_config();
    // Probe.sleep for 2 ms, at most 4 requests in flight on 2 workers: the
    // load lasts at least 2 s on any machine, so the node kill due at 1 s
    // comes (a run it did not reach fails: it would have tested nothing).
    let out = zmanager(["chaos", "--flow", "Sleep", "--workers", "2"])
        .arg("--flows")
        .arg(&flows)
        .arg("--mappings")
        .arg(&mappings)
        .args(["--requests", "2000", "--in-flight", "4"])
        .args(["--payload-template", r#"{"ms": 2, "n": {seq}}"#])
        .args(["--kill-worker", "250ms", "--kill-node", "1s"])
        .arg("--json")
        .arg(&json)
        .timeout(Duration::from_secs(120))
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for row in [
        "sent",
        "answered",
        "lost",
        "duplicated",
        "unexpected",
        "clean",
    ] {
        assert!(stdout.contains(row), "no {row:?} in:\n{stdout}");
    }
    assert!(
        stderr.contains("chaos: running"),
        "no progress in:\n{stderr}"
    );
    let r = report(&json, &out);
    let c = &r["counts"];
    assert_eq!(c["sent"], 2000, "{r:#}");
    assert_eq!(c["answered"], 2000, "{r:#}");
    assert_eq!(c["ok"], 2000, "{r:#}");
    assert_eq!(
        (c["lost"].as_u64(), c["unexpected"].as_u64()),
        (Some(0), Some(0)),
        "{r:#}"
    );
    assert_eq!(c["duplicated"], 0, "{r:#}");
    assert_eq!(r["clean"], true);
    assert_eq!(r["never_came"], serde_json::json!([]), "{r:#}");
    assert_eq!(r["journal"], true);
    let f = &r["faults"];
    assert!(f["node_kills"].as_u64().is_some_and(|n| n >= 1), "{r:#}");
    assert!(f["worker_kills"].as_u64().is_some_and(|n| n >= 1), "{r:#}");
}

/// A run that ended before a fault it was asked for tested nothing under
/// that fault: it is not clean, and says why.
#[test]
fn a_fault_the_load_ended_before_fails_the_run() {
    let dir = temp::dir("chaos-short");
    let json = dir.path().join("chaos.json");
    let out = zmanager(["chaos", "--flow", "Echo", "--workers", "1"])
        .args(["--requests", "20", "--kill-node", "10m"])
        .arg("--json")
        .arg(&json)
        .timeout(Duration::from_secs(120))
        .run();
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("--kill-node 10m never came"),
        "{}",
        out.stdout
    );
    let r = report(&json, &out);
    assert_eq!(r["counts"]["lost"], 0, "{r:#}");
    assert_eq!(r["faults"]["node_kills"], 0, "{r:#}");
    assert_eq!(
        r["never_came"],
        serde_json::json!(["--kill-node 10m"]),
        "{r:#}"
    );
    assert_eq!(r["clean"], false, "{r:#}");
}

#[test]
fn an_action_that_is_not_idempotent_shows_its_extra_runs() {
    let dir = temp::dir("chaos-record");
    let json = dir.path().join("chaos.json");
    let log = dir.path().join("calls.log");
    let (flows, mappings) = test_config();
    // A worker killed is noticed within a second; each holds few messages.
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "heartbeat = \"200ms\"\nliveness = \"1s\"\nwindow = 8\n",
    )
    .unwrap();
    // Probe.record appends a line per call (a counter in a file), then
    // takes 20 ms: a worker killed meanwhile has run it for requests the
    // node delivers again.
    let out = zmanager(["chaos", "--flow", "Recorded", "--workers", "2"])
        .arg("--config")
        .arg(&config)
        .arg("--flows")
        .arg(&flows)
        .arg("--mappings")
        .arg(&mappings)
        .args(["--requests", "300", "--in-flight", "40"])
        .args([
            "--payload-template",
            r#"{"log": "{record}", "key": "k{key}", "seq": {seq}, "sleep_ms": 20}"#,
        ])
        .args(["--kill-worker", "700ms", "--max-runs", "1"])
        .arg("--record-file")
        .arg(&log)
        .arg("--json")
        .arg(&json)
        .timeout(Duration::from_secs(120))
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    // Nothing lost; but the action ran twice for some ids: --max-runs 1
    // fails the run.
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stdout.contains("run > once"), "{stdout}");
    assert!(stdout.contains("--max-runs 1"), "{stdout}");
    let r = report(&json, &out);
    assert_eq!(r["counts"]["lost"], 0, "{r:#}");
    assert_eq!(r["counts"]["unexpected"], 0, "{r:#}");
    assert_eq!(r["counts"]["answered"], 300, "{r:#}");
    let m = &r["multiplicity"];
    assert_eq!(m["ids_run"], 300, "every request ran: {r:#}");
    assert!(m["max_runs"].as_u64().is_some_and(|n| n >= 2), "{r:#}");
    let more = m["ids_run_more_than_once"].as_u64().unwrap_or(0);
    assert!(more >= 1, "{r:#}");
    assert!(m["extra_runs"].as_u64().is_some_and(|n| n >= more), "{r:#}");
    // What the file says, counted here too.
    let text = std::fs::read_to_string(&log).expect("the record file");
    assert_eq!(
        m["calls"].as_u64(),
        Some(text.lines().count() as u64),
        "{r:#}"
    );
    assert!(r["faults"]["worker_kills"].as_u64().is_some_and(|n| n >= 1));
}

/// A user's component loaded from its shared library (components/payments,
/// the example of docs/chaos.md): the charge that looks for its own line
/// before charging runs once per id through worker kills; the one that
/// does not is caught charging twice.
#[test]
fn a_users_component_is_checked_for_charging_twice() {
    let dir = temp::dir("chaos-payments");
    let component = zmanager_tests::library("zmanager-component-payments");
    let root = zmanager_tests::workspace_root().join("components/payments");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "heartbeat = \"200ms\"\nliveness = \"1s\"\nwindow = 8\n",
    )
    .unwrap();
    let run = |flow: &str| {
        let json = dir.path().join(format!("{flow}.json"));
        let ledger = dir.path().join(format!("{flow}.ledger"));
        let out = zmanager(["chaos", "--flow", flow, "--workers", "2"])
            .arg("--config")
            .arg(&config)
            .arg("--component")
            .arg(&component)
            .arg("--flows")
            .arg(root.join("flows"))
            .arg("--mappings")
            .arg(root.join("action_mappings"))
            .args(["--requests", "300", "--in-flight", "40"])
            .args([
                "--payload-template",
                r#"{"ledger": "{record}", "seq": {seq}, "amount": 5, "sleep_ms": 20}"#,
            ])
            .args(["--kill-worker", "700ms", "--max-runs", "1"])
            .arg("--record-file")
            .arg(&ledger)
            .arg("--json")
            .arg(&json)
            .timeout(Duration::from_secs(120))
            .run();
        let r = report(&json, &out);
        assert_eq!(r["counts"]["answered"], 300, "{flow}: {r:#}");
        assert_eq!(r["counts"]["lost"], 0, "{flow}: {r:#}");
        assert!(
            r["faults"]["worker_kills"].as_u64().is_some_and(|n| n >= 1),
            "{r:#}"
        );
        (out, r)
    };

    let (out, r) = run("Pay");
    assert!(out.status.success(), "{}\n{}", out.stdout, out.stderr);
    let m = &r["multiplicity"];
    assert_eq!(
        (m["ids_run"].as_u64(), m["max_runs"].as_u64()),
        (Some(300), Some(1)),
        "{r:#}"
    );
    assert_eq!(m["extra_runs"], 0, "{r:#}");

    let (out, r) = run("PayUnchecked");
    assert_eq!(out.status.code(), Some(1), "{}\n{}", out.stdout, out.stderr);
    let m = &r["multiplicity"];
    assert!(
        m["ids_run_more_than_once"].as_u64().is_some_and(|n| n >= 1),
        "{r:#}"
    );
}

/// Bad input: exit 2 and a message, before any node or load.
fn refused(args: &[&str], expected: &str) {
    let out = zmanager(["chaos"])
        .args(args)
        .timeout(Duration::from_secs(60))
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert_eq!(out.status.code(), Some(2), "{args:?}:\n{stdout}\n{stderr}");
    assert!(
        stderr.contains(expected),
        "{args:?}: no {expected:?} in:\n{stderr}"
    );
    assert!(!stderr.contains("chaos: running"), "load started: {stderr}");
    assert!(
        !stderr.contains("starting the node"),
        "a node started: {stderr}"
    );
}

#[test]
fn bad_input_is_refused_before_any_load() {
    refused(&["--flow", "Nope"], "unknown flow \"Nope\"");
    let dir = temp::dir("chaos-bad");
    let bad = dir.path().join("payloads.jsonl");
    std::fs::write(&bad, "{\"a\": 1}\n{not json\n").unwrap();
    let bad = bad.to_str().expect("utf-8");
    refused(
        &["--flow", "Echo", "--payload-file", bad],
        "line 2: not JSON",
    );
    let packed = dir.path().join("payloads.msgpack");
    std::fs::write(&packed, [0x92, 0x01]).unwrap();
    let packed = packed.to_str().expect("utf-8");
    refused(
        &["--flow", "Echo", "--payload-file", packed],
        "not a MessagePack value",
    );
    refused(
        &["--flow", "Echo", "--workers", "0", "--kill-worker", "1s"],
        "--kill-worker cannot be met: the node runs no worker processes",
    );
    refused(
        &[
            "--flow",
            "Echo",
            "--intake",
            "tcp://127.0.0.1:1",
            "--publish",
            "tcp://127.0.0.1:2",
            "--kill-node",
            "1s",
        ],
        "--kill-node needs a node started by chaos",
    );
}
