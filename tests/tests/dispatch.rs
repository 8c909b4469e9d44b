//! Dispatch accounts for worker readiness; the node runs over ipc too; the
//! `send` and `subscribe` commands work against a real node.

use std::process::Stdio;
use std::time::{Duration, Instant};

use zmanager::wire::envelope::Status;
use zmanager_tests::checker::Checker;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::{RawClient, json};
use zmanager_tests::load::collect;
use zmanager_tests::node::TestNode;
use zmanager_tests::{kill, runtime, temp, test_config};

/// With PUSH round-robin (DigitalPy), a stalled worker gets half of all
/// requests. With credits it holds at most its window; the rest flows
/// through the healthy worker, and the held ones finish when it resumes.
#[test]
fn a_stalled_worker_holds_at_most_its_window() {
    let dir = temp::dir("window");
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "window = 8\nbatch = 4\n").expect("write config");
    let (flows, mappings) = test_config();
    let node = TestNode::start_with(
        2,
        Some((&flows, &mappings)),
        &["--config", config.to_str().expect("utf-8 path")],
    );
    let workers = node.wait_for_workers(2);
    assert_eq!(workers.len(), 2);

    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "stall").await;
        // Both workers are ready (the handshake went through the node); stop one.
        zmanager_tests::freeze(workers[0]);
        let total = 200;
        let mut checker = Checker::default();
        for i in 0..total {
            let id = format!("s{i}");
            checker.sent(&id);
            client.request("Echo", &id, &i).await;
        }
        let deadline = Instant::now() + Duration::from_secs(20);
        while checker.missing() > 8 && Instant::now() < deadline {
            if let Some(r) = client.recv(Duration::from_millis(500)).await {
                assert_eq!(r.envelope.status, Status::Ok);
                checker.received(&r.envelope.id);
            }
        }
        let held = checker.missing();
        println!("held by the stalled worker: {held} of {total}");
        assert!(
            held <= 8,
            "the stalled worker held {held} requests, more than its window of 8"
        );

        kill("CONT", workers[0]);
        collect(&mut client, &mut checker, Duration::from_secs(20)).await;
        let report = checker.report();
        println!("{report}");
        report.assert_clean();
    });
}

#[test]
fn the_node_runs_over_ipc() {
    let dir = temp::dir("ipc");
    // A stale socket file left by a dead node must not stop a new one.
    std::fs::write(dir.path().join("intake.sock"), b"stale").expect("write stale file");
    let (flows, mappings) = test_config();
    let node = TestNode::start_with(
        1,
        Some((&flows, &mappings)),
        &["--ipc", dir.path().to_str().expect("utf-8 path")],
    );
    assert!(
        node.endpoints.intake.starts_with("ipc://"),
        "{:?}",
        node.endpoints
    );
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "ipc").await;
        client
            .request("Greeting", "i1", &serde_json::json!({"name": "ipc"}))
            .await;
        let r = client
            .recv(Duration::from_secs(10))
            .await
            .expect("a result over ipc");
        assert_eq!(
            json(&r.payload),
            serde_json::json!({"greeting": "HELLO, IPC!"})
        );
    });
    drop(node);
}

#[test]
fn send_and_subscribe_commands() {
    let node = TestNode::start(1);
    let subscriber = zmanager([
        "subscribe",
        "--publish",
        &node.endpoints.publish,
        "-n",
        "1",
        "@reply~cli-",
    ])
    .stdout(Stdio::piped())
    .spawn();
    // Let the subscription reach the publisher before anything is published.
    std::thread::sleep(Duration::from_millis(500));

    let out = zmanager(["send", "Greeting", "--payload", r#"{"name": " ada "}"#])
        .args([
            "--intake",
            &node.endpoints.intake,
            "--publish",
            &node.endpoints.publish,
        ])
        .run();
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.stdout.trim(), r#"{"greeting":"HELLO, ADA!"}"#);

    let out = zmanager(["send", "Fail", "--payload", "1"])
        .args([
            "--intake",
            &node.endpoints.intake,
            "--publish",
            &node.endpoints.publish,
        ])
        .run();
    assert_eq!(out.status.code(), Some(1));
    let stderr = &out.stderr;
    assert!(
        stderr.contains("error 7 (action_failed) at `?Fail?fail`"),
        "{stderr}"
    );

    let out = zmanager(["send", "Greeting", "--payload", "{not json"]).run();
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("--payload is not JSON"));

    // The subscriber saw the first command's ping (the first message on a
    // `@reply~cli-…` topic) and stopped after one message.
    let out = subscriber.wait_with_output().expect("subscriber output");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("@reply~cli-"), "{stdout}");
}

/// With no node at the endpoints, `send --timeout 2` gives up after about
/// 2 s (not zmq.rs's own 10 s and more) with one clear line.
#[test]
fn send_without_a_node_gives_up_within_its_timeout() {
    // Ports nothing listens on: bound, then let go.
    let free = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| format!("tcp://{a}"))
            .expect("a free port")
    };
    let (intake, publish) = (free(), free());
    let started = Instant::now();
    let out = zmanager(["send", "Greeting", "--timeout", "2"])
        .args(["--intake", &intake, "--publish", &publish])
        .run();
    let took = started.elapsed();
    let stderr = &out.stderr;
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(took < Duration::from_secs(6), "took {took:?}: {stderr}");
    let line = stderr.trim();
    assert_eq!(line.lines().count(), 1, "{stderr}");
    assert!(line.starts_with("error: "), "{stderr}");
    // The reason once, not repeated by its source.
    for reason in ["Connect timed out", "no node answered"] {
        assert!(line.matches(reason).count() <= 1, "{stderr}");
    }
}

/// A node on its own configuration is reached by every command with that
/// file alone: `--config`, or `ZMANAGER_CONFIG` (issue 22: endpoints and
/// the data directory had to be repeated on each command).
#[test]
fn commands_find_the_node_through_its_configuration() {
    let node = TestNode::start_builtin(1);
    let temp = temp::dir("config-cmds");
    let dir = temp.path().to_path_buf();
    let data_dir = format!("data_dir = {:?}", node.data_dir.display().to_string());
    let config = node.write_config(&dir, &data_dir);
    let run = |args: &[&str], env: bool| {
        let command = zmanager(args).current_dir(&dir);
        let command = if env {
            command.env("ZMANAGER_CONFIG", &config)
        } else {
            command.arg("--config").arg(&config)
        };
        let out = command.run();
        let (stdout, stderr) = (out.stdout, out.stderr);
        assert!(out.status.success(), "{args:?}: {stdout}\n{stderr}");
        stdout
    };
    let greeting = run(
        &[
            "send",
            "Greeting",
            "--payload",
            r#"{"name": "ada"}"#,
            "--timeout",
            "20",
        ],
        false,
    );
    assert_eq!(greeting.trim(), r#"{"greeting":"HELLO, ADA!"}"#);
    let again = run(&["send", "Echo", "--payload", "7", "--timeout", "20"], true);
    assert_eq!(again.trim(), "7");
    // The data directory too: the node's store, not ./zmanager-data.
    run(&["dlq", "list"], false);
    run(&["journal", "stats"], true);
    // And one value each, without a configuration.
    let out = zmanager(["send", "Echo", "--payload", "8", "--timeout", "20"])
        .env("ZMANAGER_INTAKE", &node.endpoints.intake)
        .env("ZMANAGER_PUBLISH", &node.endpoints.publish)
        .current_dir(&dir)
        .run();
    assert_eq!(out.stdout.trim(), "8", "{out:?}");
    let out = zmanager(["journal", "stats"])
        .env("ZMANAGER_DATA_DIR", &node.data_dir)
        .current_dir(&dir)
        .run();
    assert!(out.status.success(), "{out:?}");
    assert!(!dir.join("zmanager-data").exists());
}
