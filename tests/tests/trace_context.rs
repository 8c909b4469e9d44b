//! W3C trace context across a real node and its worker processes
//! (`docs/protocol.md` §3, "Trace context"): a request's `traceparent` and
//! `tracestate` reach its worker, its `@PUBLISH` publication and its
//! result; a request without a valid one gets a new one with
//! `[telemetry] start_traces`, and goes on without one by default.

use std::time::Duration;

use bytes::Bytes;
use zeromq::{DealerSocket, Socket, SocketRecv, SocketSend, ZmqMessage};
use zmanager::wire::envelope::{Kind, Status};
use zmanager::wire::error_code::ErrorCode;
use zmanager::wire::trace_context::TraceParent;
use zmanager::wire::{self, Message, Ready, ToWorker};
use zmanager_tests::client::{RawClient, Received, json, msgpack};
use zmanager_tests::node::TestNode;
use zmanager_tests::temp::{TempFile, config_file};
use zmanager_tests::{runtime, test_config};

const LIMIT: Duration = Duration::from_secs(20);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACESTATE: &str = "congo=t61rcWkgMzE,rojo=00f067aa0ba902b7";

/// Sends a request into `flow` with the given trace context and returns
/// its result.
async fn traced(
    client: &mut RawClient,
    flow: &str,
    id: &str,
    traceparent: &str,
    tracestate: &str,
) -> Received {
    let mut envelope = client.envelope(id, flow);
    envelope.traceparent = traceparent.into();
    envelope.tracestate = tracestate.into();
    client.send(&envelope, msgpack(&id)).await;
    let result = client.recv(LIMIT).await.expect("a result");
    assert_eq!(result.envelope.id, id);
    assert_eq!(result.envelope.kind, Kind::Result);
    result
}

fn trace_id(received: &Received) -> u128 {
    TraceParent::parse(&received.envelope.traceparent)
        .unwrap_or_else(|| panic!("not a valid traceparent: {:?}", received.envelope))
        .trace_id
}

/// A node on the test flows that starts traces (`[telemetry]
/// start_traces`), with `workers` workers.
fn tracing_node(workers: usize) -> (TestNode, TempFile) {
    let config = config_file("[telemetry]\nstart_traces = true\n");
    let (flows, mappings) = test_config();
    let node = TestNode::start_with(
        workers,
        Some((&flows, &mappings)),
        &["--config", config.path()],
    );
    (node, config)
}

#[test]
fn a_request_keeps_its_trace_context_across_the_node_and_its_worker() {
    let (node, _config) = tracing_node(1);
    runtime().block_on(async {
        let mut client =
            RawClient::connect_with_prefix(&node.endpoints, "tracer", Some("Announce~PUBLISH~"))
                .await;
        // Announce: an action, a @PUBLISH step, an action, done. Its result
        // is the envelope the worker returned after the last action.
        let mut envelope = client.envelope("a-1", "Announce");
        envelope.traceparent = TRACEPARENT.into();
        envelope.tracestate = TRACESTATE.into();
        client.send(&envelope, msgpack(&"news")).await;
        let mut got = Vec::new();
        for _ in 0..2 {
            got.push(
                client
                    .recv(LIMIT)
                    .await
                    .expect("the publication and the result"),
            );
        }
        got.sort_by_key(|r| r.envelope.kind == Kind::Result);
        let (published, result) = (&got[0], &got[1]);
        assert!(
            published.topic.starts_with("Announce~PUBLISH~"),
            "{published:?}"
        );
        assert_eq!(result.envelope.status, Status::Ok, "{result:?}");
        assert_eq!(json(&result.payload), serde_json::json!("news"));
        for message in [published, result] {
            assert_eq!(message.envelope.traceparent, TRACEPARENT, "{message:?}");
            assert_eq!(message.envelope.tracestate, TRACESTATE, "{message:?}");
        }

        // Without one, or with a malformed one: a valid new trace each,
        // sampled, and no tracestate.
        let none = traced(&mut client, "Echo", "e-1", "", "").await;
        let bad = traced(&mut client, "Echo", "e-2", "00-not-a-trace", TRACESTATE).await;
        let upper = TRACEPARENT.to_uppercase();
        let upper = traced(&mut client, "Echo", "e-3", &upper, TRACESTATE).await;
        let ids = [trace_id(&none), trace_id(&bad), trace_id(&upper)];
        assert!(
            ids[0] != ids[1] && ids[1] != ids[2] && ids[0] != ids[2],
            "{ids:?}"
        );
        for result in [&none, &bad, &upper] {
            assert_eq!(result.envelope.status, Status::Ok, "{result:?}");
            assert!(result.envelope.traceparent.ends_with("-01"), "{result:?}");
            assert!(result.envelope.tracestate.is_empty(), "{result:?}");
        }

        // A request refused at intake gets one in its error result.
        let refused = traced(&mut client, "Nope", "n-1", "", "").await;
        assert_eq!(
            refused.envelope.error.as_ref().map(|e| e.code),
            Some(ErrorCode::UnknownFlow)
        );
        trace_id(&refused);

        // A ping comes back untouched, malformed context and all.
        let mut ping = client.envelope("p-1", "");
        ping.kind = Kind::Ping;
        ping.traceparent = "garbage".into();
        ping.tracestate = "x=1".into();
        client.send(&ping, Bytes::from_static(&[0xc0])).await;
        let pong = client.recv(LIMIT).await.expect("the ping back");
        assert_eq!(pong.envelope.kind, Kind::Ping);
        assert_eq!(
            (
                pong.envelope.traceparent.as_str(),
                pong.envelope.tracestate.as_str()
            ),
            ("garbage", "x=1")
        );
    });
}

/// By default the node starts no trace: a request without a valid
/// context goes on without one (a malformed one dropped), and one given is
/// carried all the same.
#[test]
fn by_default_a_request_without_a_trace_context_goes_on_without_one() {
    let node = TestNode::start(1);
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "untraced").await;
        let none = traced(&mut client, "Echo", "e-1", "", TRACESTATE).await;
        let bad = traced(&mut client, "Echo", "e-2", "00-not-a-trace", TRACESTATE).await;
        for result in [&none, &bad] {
            assert_eq!(result.envelope.status, Status::Ok, "{result:?}");
            assert_eq!(
                (
                    result.envelope.traceparent.as_str(),
                    result.envelope.tracestate.as_str()
                ),
                ("", ""),
                "{result:?}"
            );
        }
        let given = traced(&mut client, "Echo", "e-3", TRACEPARENT, TRACESTATE).await;
        assert_eq!(given.envelope.traceparent, TRACEPARENT);
        assert_eq!(given.envelope.tracestate, TRACESTATE);
    });
}

/// What a worker receives carries the request's context: a test plays the
/// worker, on a node started without workers of its own.
#[test]
fn the_work_a_worker_receives_carries_the_trace_context() {
    let (node, _config) = tracing_node(0);
    runtime().block_on(async {
        let mut worker = DealerSocket::new();
        worker
            .connect(&node.endpoints.workers)
            .await
            .expect("connect to the workers socket");
        let ready = Ready {
            credits: 4,
            pid: std::process::id(),
            catalogs: Vec::new(),
        };
        worker.send(wire::ready(&ready)).await.expect("READY");
        let mut client = RawClient::connect(&node.endpoints, "tracer").await;
        for (id, traceparent) in [("w-1", TRACEPARENT), ("w-2", ""), ("w-3", "00-zz")] {
            let mut envelope = client.envelope(id, "Echo");
            envelope.traceparent = traceparent.into();
            envelope.tracestate = TRACESTATE.into();
            client.send(&envelope, msgpack(&id)).await;

            let work = receive_work(&mut worker).await;
            assert_eq!(work.envelope.id, id);
            let given = TraceParent::parse(&work.envelope.traceparent);
            assert!(given.is_some(), "{:?}", work.envelope);
            if traceparent == TRACEPARENT {
                assert_eq!(work.envelope.traceparent, TRACEPARENT);
                assert_eq!(work.envelope.tracestate, TRACESTATE);
            } else {
                assert!(work.envelope.tracestate.is_empty(), "{:?}", work.envelope);
            }
            // Echo: `?Echo?echo` is step 1; the worker ends at `??done`.
            let mut result = work.clone();
            result.envelope.kind = Kind::Result;
            result.envelope.step = 2;
            result.envelope.key = "??done".into();
            worker.send(wire::results([&result])).await.expect("RESULT");
            let answered = client.recv(LIMIT).await.expect("the result");
            assert_eq!(answered.envelope.id, id);
            assert_eq!(answered.envelope.traceparent, work.envelope.traceparent);
        }
    });
}

/// The next `WORK` item on a fake worker's socket (heartbeats skipped).
async fn receive_work(worker: &mut DealerSocket) -> Message {
    loop {
        let frames: ZmqMessage = tokio::time::timeout(LIMIT, worker.recv())
            .await
            .expect("work within the limit")
            .expect("a message from the Subject");
        match wire::decode_to_worker(&frames).expect("decodes") {
            ToWorker::Work(mut batch) => {
                assert_eq!(batch.len(), 1);
                return batch.remove(0).expect("the work decodes");
            }
            ToWorker::Heartbeat => {}
            // The node's catalog, offered with its files: this fake worker
            // runs whatever it is given, so it serves it.
            ToWorker::Catalog(offer) => {
                let serves = wire::catalogs::Serves {
                    versions: vec![offer.version],
                    refused: Vec::new(),
                };
                worker
                    .send(wire::catalogs::serves(&serves))
                    .await
                    .expect("SERVES");
            }
        }
    }
}
