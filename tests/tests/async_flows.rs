//! `@PUBLISH` and `@ASYNC` steps and service management, end to end on real
//! processes (`docs/decorators.md` explains both decorators).

use std::time::Duration;

use bytes::Bytes;
use zmanager::envelope::{Envelope, Kind, Status};
use zmanager::error_code::ErrorCode;
use zmanager_tests::client::{RawClient, Received, json};
use zmanager_tests::node::{TestNode, config_file};
use zmanager_tests::test_config;

const LIMIT: Duration = Duration::from_secs(20);

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

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

/// An answer to the question `published` from `answerer`.
fn answer_to(answerer: &RawClient, published: &Received) -> Envelope {
    let mut answer = answerer.envelope(&published.envelope.id, &published.envelope.flow);
    answer.kind = Kind::Result;
    answer.origin.clone_from(&published.envelope.service);
    answer
}

fn msgpack(value: &impl serde::Serialize) -> Bytes {
    Bytes::from(rmp_serde::to_vec_named(value).expect("encode"))
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

        let answer = answer_to(&answerer, &question);
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
        let mut stray = answer_to(&answerer, &question);
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
