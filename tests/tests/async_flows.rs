//! `@PUBLISH` and `@ASYNC` steps and service management, end to end on real
//! processes (`docs/decorators.md` explains both decorators).

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use zmanager::client::{Service, ServiceOptions};
use zmanager::wire::envelope::{Kind, Status};
use zmanager::wire::error_code::ErrorCode;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::{RawClient, json, msgpack};
use zmanager_tests::node::TestNode;
use zmanager_tests::runtime;
use zmanager_tests::temp::config_file;
use zmanager_tests::test_config;

const LIMIT: Duration = Duration::from_secs(20);

#[test]
fn a_publish_step_reaches_two_subscribers_and_the_flow_goes_on() {
    let node = TestNode::start(1);
    runtime().block_on(async {
        let prefix = "Announce~PUBLISH~";
        let mut first =
            RawClient::connect_with_prefix(&node.endpoints, "sub-1", Some(prefix)).await;
        let mut second =
            RawClient::connect_with_prefix(&node.endpoints, "sub-2", Some(prefix)).await;
        let mut requester = RawClient::connect(&node.endpoints, "req").await;
        requester.request("Announce", "a-1", &"news").await;

        for subscriber in [&mut first, &mut second] {
            let got = subscriber.recv(LIMIT).await.expect("the published step");
            assert_eq!(got.topic, "Announce~PUBLISH~Subject~Announce~announced");
            assert_eq!(got.envelope.kind, Kind::Request);
            assert_eq!(got.envelope.id, "a-1");
            assert_eq!(got.envelope.service, "req");
            assert_eq!(got.envelope.key, "Subject?Announce@PUBLISH?announced");
            assert_eq!(json(&got.payload), serde_json::json!("news"));
        }
        let result = requester.recv(LIMIT).await.expect("the flow's result");
        assert_eq!(
            result.envelope.status,
            Status::Ok,
            "{:?}",
            result.envelope.error
        );
        assert_eq!(result.envelope.key, "??done");
        assert_eq!(json(&result.payload), serde_json::json!("news"));
        // Published once per request, not once per subscriber.
        assert!(first.recv(Duration::from_millis(300)).await.is_none());
    });
}

#[test]
fn an_async_flow_resumes_with_a_services_answer_and_a_second_answer_is_rejected() {
    let node = TestNode::start(1);
    runtime().block_on(async {
        let mut answerer =
            RawClient::connect_with_prefix(&node.endpoints, "answerer", Some("Ask~PUBLISH~")).await;
        let mut requester = RawClient::connect(&node.endpoints, "req").await;
        requester.request("Ask", "q-1", &"what time is it?").await;

        let question = answerer.recv(LIMIT).await.expect("the published question");
        assert_eq!(question.topic, "Ask~PUBLISH~Subject~Ask~question");
        assert_eq!(
            (
                question.envelope.id.as_str(),
                question.envelope.service.as_str()
            ),
            ("q-1", "req")
        );
        assert_eq!(
            json(&question.payload),
            serde_json::json!("what time is it?")
        );
        // Nothing comes to the requester while the flow is suspended.
        assert!(requester.recv(Duration::from_millis(300)).await.is_none());

        let answer = answerer.answer_to(&question);
        answerer.send(&answer, msgpack(&"noon")).await;
        let result = requester
            .recv(LIMIT)
            .await
            .expect("the resumed flow's result");
        assert_eq!(
            result.envelope.status,
            Status::Ok,
            "{:?}",
            result.envelope.error
        );
        assert_eq!(
            (result.envelope.id.as_str(), result.envelope.key.as_str()),
            ("q-1", "??done")
        );
        assert_eq!(json(&result.payload), serde_json::json!("noon"));

        // The same answer again: refused, to the answering service only.
        answerer.send(&answer, msgpack(&"noon again")).await;
        let refused = answerer
            .recv(LIMIT)
            .await
            .expect("an error for the second answer");
        assert_eq!(refused.topic, "@reply~answerer~");
        assert_eq!(refused.envelope.status, Status::Error);
        let error = refused.envelope.error.expect("an error");
        assert_eq!(error.code, ErrorCode::UnknownAsync, "{}", error.message);
        assert!(
            error.message.contains("already finished"),
            "{}",
            error.message
        );
        // An answer for an id nobody asked about: refused too.
        let mut stray = answerer.answer_to(&question);
        stray.id = "never-asked".into();
        answerer.send(&stray, msgpack(&1)).await;
        let refused = answerer
            .recv(LIMIT)
            .await
            .expect("an error for a stray answer");
        assert_eq!(
            refused.envelope.error.map(|e| e.code),
            Some(ErrorCode::UnknownAsync)
        );
        assert!(requester.recv(Duration::from_millis(300)).await.is_none());
    });
}

#[test]
fn an_async_flow_without_an_answer_times_out_with_an_error_result() {
    let config = config_file("async_timeout_ms = 400\nheartbeat_ms = 100\nliveness_ms = 1000\n");
    let (flows, mappings) = test_config();
    let node = TestNode::start_with(1, Some((&flows, &mappings)), &["--config", config.path()]);
    runtime().block_on(async {
        let mut requester = RawClient::connect(&node.endpoints, "req").await;
        let started = std::time::Instant::now();
        requester.request("Ask", "q-1", &"anyone?").await;
        let result = requester.recv(LIMIT).await.expect("an error result");
        assert!(started.elapsed() >= Duration::from_millis(400));
        assert_eq!(result.envelope.status, Status::Error);
        let error = result.envelope.error.expect("an error");
        assert_eq!(error.code, ErrorCode::AsyncTimeout, "{}", error.message);
        assert_eq!(result.envelope.key, "?Ask@ASYNC?question_response");
        // The request's payload comes back with the error.
        assert_eq!(json(&result.payload), serde_json::json!("anyone?"));
    });
}

/// `zmanager services serve` against `node`; killed on drop.
struct ServiceManager(std::process::Child);

impl ServiceManager {
    fn start(node: &TestNode) -> Self {
        let mut child = zmanager(["services", "serve", "--intake", &node.endpoints.intake])
            .args(["--publish", &node.endpoints.publish])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("read its first line");
        assert!(line.starts_with("service management serving"), "{line:?}");
        Self(child)
    }
}

impl Drop for ServiceManager {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs `zmanager <args> --intake .. --publish ..`; returns (success, stdout, stderr).
fn cli(node: &TestNode, args: &[&str]) -> (bool, String, String) {
    let out = zmanager(args)
        .args(["--intake", &node.endpoints.intake])
        .args(["--publish", &node.endpoints.publish])
        .run();
    (out.status.success(), out.stdout, out.stderr)
}

#[test]
fn get_service_topics_returns_a_registered_services_topics_from_the_cli() {
    let node = TestNode::start_builtin(1);
    let _manager = ServiceManager::start(&node);
    let rt = runtime();
    let service = rt.block_on(async {
        let service = Service::connect(ServiceOptions::with_endpoints("chat", &node.endpoints))
            .await
            .expect("connect");
        let info = service
            .register(&["Chat~PUBLISH~".to_owned()], &["Chat".to_owned()])
            .await
            .expect("register");
        assert_eq!(info.status, "up");
        service
    });
    let payload = format!(r#"{{"service": "{}"}}"#, service.id());
    let (ok, out, err) = cli(
        &node,
        &[
            "send",
            "ServiceManagement_GetServiceTopics",
            "--payload",
            &payload,
        ],
    );
    assert!(ok, "{out}\n{err}");
    let answer: serde_json::Value = serde_json::from_str(out.trim()).expect("JSON");
    assert_eq!(
        answer,
        serde_json::json!({"service": service.id(), "topics": ["Chat~PUBLISH~"]})
    );

    // Put, then Delete, then status: the other three flows, the same way.
    let put = format!(r#"{{"service": "{}", "topic": "News~"}}"#, service.id());
    let (ok, out, err) = cli(
        &node,
        &[
            "send",
            "ServiceManagement_PutServiceTopic",
            "--payload",
            &put,
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(r#"["Chat~PUBLISH~","News~"]"#), "{out}");
    let (ok, out, err) = cli(
        &node,
        &[
            "send",
            "ServiceManagement_DeleteServiceTopic",
            "--payload",
            &put,
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(r#"["Chat~PUBLISH~"]"#), "{out}");
    let (ok, out, err) = cli(
        &node,
        &[
            "send",
            "ServiceManagement_GetServiceStatus",
            "--payload",
            &payload,
        ],
    );
    assert!(ok, "{out}\n{err}");
    assert!(out.contains(r#""status":"up""#), "{out}");
    // An unknown service: an error result, through the same flow.
    let (ok, _, err) = cli(
        &node,
        &[
            "send",
            "ServiceManagement_GetServiceTopics",
            "--payload",
            r#"{"service": "nobody"}"#,
        ],
    );
    assert!(!ok);
    assert!(err.contains("unknown_service"), "{err}");
    drop(service);
}

#[test]
fn a_service_that_stops_heartbeating_is_listed_as_down() {
    let config = config_file("service_liveness_ms = 600\n");
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    let rt = runtime();
    let (silent, beating, beat) = rt.block_on(async {
        let options = |name| ServiceOptions::with_endpoints(name, &node.endpoints);
        let silent = Service::connect(options("silent")).await.expect("connect");
        silent.register(&[], &[]).await.expect("register");
        let beating = Arc::new(Service::connect(options("beating")).await.expect("connect"));
        beating
            .register(&[], &["Echo".to_owned()])
            .await
            .expect("register");
        let beat = beating.heartbeat_every(Duration::from_millis(150), Vec::new(), Vec::new());
        (silent, beating, beat)
    });
    let (ok, out, err) = cli(&node, &["services"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("\tup\t").count(), 2, "{out}");
    std::thread::sleep(Duration::from_millis(1_200));
    let (ok, out, err) = cli(&node, &["services"]);
    assert!(ok, "{err}");
    let status = |id: &str| -> String {
        out.lines()
            .find(|l| l.starts_with(id))
            .and_then(|l| l.split('\t').nth(1))
            .unwrap_or_else(|| panic!("{id} not listed:\n{out}"))
            .to_owned()
    };
    assert_eq!(status(silent.id()), "down", "{out}");
    assert_eq!(status(beating.id()), "up", "{out}");
    assert!(out.contains("flows=Echo"), "{out}");
    beat.abort();
}
