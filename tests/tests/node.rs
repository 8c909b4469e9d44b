//! End-to-end: a real `zmanager up` with real worker processes.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zeromq::{DealerSocket, Socket, SocketSend, ZmqMessage};
use zmanager::client::{Service, ServiceError, ServiceOptions};
use zmanager::wire::envelope::{Kind, Status};
use zmanager::wire::error_code::ErrorCode;
use zmanager_tests::checker::Checker;
use zmanager_tests::client::{RawClient, json};
use zmanager_tests::load::echo_load;
use zmanager_tests::node::{TestNode, is_alive};
use zmanager_tests::runtime;

const LIMIT: Duration = Duration::from_secs(20);

#[derive(serde::Serialize)]
struct Person {
    name: String,
}

#[test]
fn a_three_step_flow_across_two_components() {
    let node = TestNode::start(2);
    runtime().block_on(async {
        let service = Service::connect(ServiceOptions::with_endpoints("t", &node.endpoints))
            .await
            .expect("connect");
        let reply = service
            .request(
                "Greeting",
                &Person {
                    name: "  ada ".into(),
                },
            )
            .await
            .expect("a result");
        assert_eq!(
            json(&reply.payload),
            serde_json::json!({"greeting": "HELLO, ADA!"})
        );
        assert_eq!(reply.envelope.kind, Kind::Result);
        assert_eq!(reply.envelope.key, "??done");
        assert_eq!(reply.envelope.service, service.id());
        assert_eq!(reply.envelope.attempt, 1);
    });
}

#[test]
fn two_services_get_only_their_own_results() {
    let node = TestNode::start(2);
    runtime().block_on(async {
        let mut a = RawClient::connect(&node.endpoints, "svc-a").await;
        let mut b = RawClient::connect(&node.endpoints, "svc-b").await;
        let n = 300;
        for i in 0..n {
            a.request(
                "Greeting",
                &format!("a{i}"),
                &Person {
                    name: format!("a{i}"),
                },
            )
            .await;
            b.request(
                "Greeting",
                &format!("b{i}"),
                &Person {
                    name: format!("b{i}"),
                },
            )
            .await;
        }
        for (client, prefix) in [(&mut a, "a"), (&mut b, "b")] {
            let mut checker = Checker::default();
            (0..n).for_each(|i| checker.sent(&format!("{prefix}{i}")));
            let deadline = Instant::now() + LIMIT;
            while checker.missing() > 0 && Instant::now() < deadline {
                let Some(r) = client.recv(Duration::from_secs(1)).await else {
                    continue;
                };
                assert_eq!(r.topic, client.reply_to);
                assert_eq!(
                    r.envelope.service, client.service,
                    "a result of another service"
                );
                let want = format!("HELLO, {}!", r.envelope.id.to_uppercase());
                assert_eq!(json(&r.payload), serde_json::json!({ "greeting": want }));
                checker.received(&r.envelope.id);
            }
            // Nothing else arrives afterwards.
            while let Some(r) = client.recv(Duration::from_millis(300)).await {
                checker.received(&r.envelope.id);
            }
            let report = checker.report();
            println!("{prefix}: {report}");
            report.assert_clean();
        }
    });
}

#[test]
fn errors_and_panics_become_error_results_and_the_node_keeps_serving() {
    let node = TestNode::start(2);
    let pids_before: HashSet<u32> = node.wait_for_workers(2).into_iter().collect();
    assert_eq!(pids_before.len(), 2);
    runtime().block_on(async {
        let service = Service::connect(ServiceOptions::with_endpoints("t", &node.endpoints))
            .await
            .expect("connect");
        for _ in 0..5 {
            match service.request("Fail", &1).await {
                Err(ServiceError::Failed { key, error }) => {
                    assert_eq!(error.code, ErrorCode::ActionFailed);
                    assert_eq!(key, "?Fail?fail");
                    assert!(
                        error.message.contains("failing on purpose"),
                        "{}",
                        error.message
                    );
                }
                other => panic!("expected an action error, got {other:?}"),
            }
        }
        // A panic is retried (it may be transient), then dead-lettered.
        for _ in 0..2 {
            match service.request("Boom", &1).await {
                Err(ServiceError::Failed { key, error }) => {
                    assert_eq!(error.code, ErrorCode::DeadLettered);
                    // The step it was delivered at (where a replay starts);
                    // the failing step is named in the reason.
                    assert_eq!(key, "?Boom?echo");
                    assert!(
                        error.message.contains("`?Boom?panic` panicked"),
                        "{}",
                        error.message
                    );
                    assert!(
                        error.message.contains("after 5 attempts"),
                        "{}",
                        error.message
                    );
                    assert!(
                        error.message.contains("panicking on purpose"),
                        "{}",
                        error.message
                    );
                }
                other => panic!("expected a dead letter, got {other:?}"),
            }
        }
        // Everything else still works, on the same worker processes.
        let service = &service;
        let requests = (0..200).map(|i| async move {
            service
                .request(
                    "Greeting",
                    &Person {
                        name: format!("p{i}"),
                    },
                )
                .await
        });
        let results = futures::future::join_all(requests).await;
        assert!(
            results.iter().all(Result::is_ok),
            "{:?}",
            results.iter().find(|r| r.is_err())
        );
    });
    let pids_after: HashSet<u32> = node.worker_pids().into_iter().collect();
    assert_eq!(pids_before, pids_after, "a worker process was replaced");
}

#[test]
fn ten_thousand_requests_each_result_exactly_once() {
    let mut node = TestNode::start(2);
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "bulk").await;
        let total = 10_000;
        let forever = Duration::from_secs(3600);
        let report = echo_load(
            &mut client,
            total,
            500,
            Duration::from_secs(60),
            forever,
            || {},
        )
        .await;
        println!("10k: {report}");
        assert_eq!(report.sent, total);
        report.assert_clean();
    });
    node.signal("INT");
    assert_eq!(node.wait_exit(LIMIT), Some(0));
    let log = node.log();
    assert!(
        log.contains("accepted=10000") && log.contains("results=10000"),
        "the node's counts:\n{log}"
    );
}

#[test]
fn bad_input_gets_an_error_result_and_the_node_keeps_running() {
    let node = TestNode::start(1);
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "bad").await;
        let wait = Duration::from_secs(5);

        // An unknown flow.
        client.request("Nope", "u1", &1).await;
        let r = client.recv(wait).await.expect("an error result");
        assert_eq!(
            (r.envelope.id.as_str(), r.envelope.status),
            ("u1", Status::Error)
        );
        assert_eq!(
            r.envelope.error.expect("error").code,
            ErrorCode::UnknownFlow
        );

        // A key that matches no step of the flow.
        let mut e = client.envelope("u2", "Greeting");
        e.key = "?Greeting?nothing".into();
        client.send(&e, Bytes::from_static(&[0xc0])).await;
        let r = client.recv(wait).await.expect("an error result");
        assert_eq!(
            r.envelope.error.expect("error").code,
            ErrorCode::UnknownStep
        );

        // A malformed key.
        e.id = "u3".into();
        e.key = "not a key".into();
        client.send(&e, Bytes::from_static(&[0xc0])).await;
        let r = client.recv(wait).await.expect("an error result");
        assert_eq!(
            r.envelope.error.expect("error").code,
            ErrorCode::UnknownStep
        );

        // A payload the action cannot decode.
        client.request("Greeting", "u4", &42).await;
        let r = client.recv(wait).await.expect("an error result");
        let error = r.envelope.error.expect("error");
        assert_eq!(
            (error.code, r.envelope.key.as_str()),
            (ErrorCode::BadRequest, "?Greeting?greet")
        );

        // An envelope that does not decode, but whose reply_to can be read.
        #[derive(serde::Serialize)]
        struct Broken<'a> {
            id: &'a str,
            reply_to: &'a str,
            step: &'a str,
        }
        let broken = rmp_serde::to_vec_named(&Broken {
            id: "u5",
            reply_to: &client.reply_to,
            step: "x",
        })
        .expect("encode");
        let mut frames = ZmqMessage::from("x");
        frames.push_back(Bytes::from(broken));
        frames.push_back(Bytes::new());
        client.send_frames(frames).await;
        let r = client.recv(wait).await.expect("an error result");
        assert_eq!(r.envelope.id, "u5");
        assert_eq!(
            r.envelope.error.expect("error").code,
            ErrorCode::MalformedMessage
        );

        // A duplicate while the first is in flight is absorbed: one result.
        client
            .request("Sleep", "u6", &serde_json::json!({"ms": 500}))
            .await;
        client
            .request("Sleep", "u6", &serde_json::json!({"ms": 0}))
            .await;
        let first = client.recv(wait).await.expect("a result");
        assert_eq!(
            (first.envelope.id.as_str(), first.envelope.status),
            ("u6", Status::Ok)
        );
        assert_eq!(
            json(&first.payload),
            serde_json::json!({"ms": 500}),
            "the first request ran"
        );
        assert!(
            client.recv(Duration::from_millis(700)).await.is_none(),
            "a second result"
        );
        // Pushed again after it finished: not run again, the result is re-sent.
        client
            .request("Sleep", "u6", &serde_json::json!({"ms": 0}))
            .await;
        let again = client.recv(wait).await.expect("the result again");
        assert_eq!(json(&again.payload), serde_json::json!({"ms": 500}));

        // Frames that cannot be answered: wrong counts, garbage.
        for frames in [
            vec![Bytes::from_static(b"one")],
            vec![Bytes::new(); 5],
            vec![
                Bytes::from_static(b"t"),
                Bytes::from_static(b"\xc1\xc1"),
                Bytes::new(),
            ],
        ] {
            let mut m = ZmqMessage::from(frames[0].clone());
            for f in &frames[1..] {
                m.push_back(f.clone());
            }
            client.send_frames(m).await;
        }

        // Garbage on the workers' socket, as a fake worker.
        let mut dealer = DealerSocket::new();
        dealer
            .connect(&node.endpoints.workers)
            .await
            .expect("connect to the workers socket");
        for frames in [
            vec![Bytes::from_static(b"HELLO")],
            vec![Bytes::from_static(b"READY"), Bytes::from_static(b"\xc1")],
            vec![
                Bytes::from_static(b"RESULT"),
                Bytes::from_static(b"junk"),
                Bytes::new(),
            ],
            vec![Bytes::from_static(b"RESULT")],
        ] {
            let mut m = ZmqMessage::from(frames[0].clone());
            for f in &frames[1..] {
                m.push_back(f.clone());
            }
            dealer.send(m).await.expect("send garbage");
        }

        // Raw garbage bytes on every bound TCP port (not even ZMTP).
        for endpoint in [
            &node.endpoints.intake,
            &node.endpoints.workers,
            &node.endpoints.publish,
        ] {
            let address = endpoint.trim_start_matches("tcp://");
            let mut stream = tokio::net::TcpStream::connect(address)
                .await
                .expect("tcp connect");
            use tokio::io::AsyncWriteExt;
            let _ = stream
                .write_all(b"\xff\x00\x00GET / HTTP/1.1\r\n\r\ngarbage")
                .await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // The node still serves.
        client
            .request("Greeting", "after", &Person { name: "bo".into() })
            .await;
        let r = client.recv(wait).await.expect("the node still serves");
        assert_eq!(r.envelope.id, "after");
        assert_eq!(
            json(&r.payload),
            serde_json::json!({"greeting": "HELLO, BO!"})
        );
    });
    let log = node.log();
    assert!(
        log.contains("malformed"),
        "malformed input is logged:\n{log}"
    );
    assert!(!log.contains("panicked"), "nothing panicked:\n{log}");
}

#[test]
fn ctrl_c_stops_the_node_and_every_worker() {
    let mut node = TestNode::start(3);
    let workers = node.wait_for_workers(3);
    assert_eq!(workers.len(), 3, "three worker processes");
    node.signal("INT");
    assert_eq!(node.wait_exit(LIMIT), Some(0), "the node exits cleanly");
    std::thread::sleep(Duration::from_millis(200));
    let alive: Vec<u32> = workers.into_iter().filter(|p| is_alive(*p)).collect();
    assert!(alive.is_empty(), "orphan workers: {alive:?}");
}

#[test]
fn kill_9_of_the_node_leaves_no_orphan_worker() {
    let mut node = TestNode::start(2);
    let workers = node.wait_for_workers(2);
    assert_eq!(workers.len(), 2);
    node.signal("KILL");
    node.wait_exit(LIMIT);
    let deadline = Instant::now() + Duration::from_secs(5);
    while workers.iter().any(|p| is_alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let alive: Vec<u32> = workers.into_iter().filter(|p| is_alive(*p)).collect();
    assert!(alive.is_empty(), "orphan workers: {alive:?}");
}

/// A second node on the endpoints of a running one stops at once, says why
/// once, and does not touch a data directory (it never opens a journal).
#[test]
fn a_second_node_on_the_same_endpoints_stops_before_touching_its_data() {
    let node = TestNode::start(0);
    let dir = zmanager_tests::temp::dir("second-up");
    let config = node.write_config(dir.path(), "workers = 0");
    let data = dir.path().join("data");
    let out = zmanager_tests::cli::zmanager(["up", "--no-http"])
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(&data)
        .run();
    let stderr = &out.stderr;
    assert!(!out.status.success(), "{stderr}");
    assert_eq!(
        stderr.matches("Address already in use").count(),
        1,
        "{stderr}"
    );
    assert!(!data.exists(), "a data directory was created: {stderr}");
}
