//! The durable journal, proven on real processes: the whole node (Subject,
//! Integration Manager and workers) is killed with SIGKILL and restarted on
//! the same data directory; every request it had acknowledged as accepted
//! must still be answered, without the service sending it again.
//!
//! The restarted node runs without workers until the service has
//! resubscribed, so that no result is published into the void while the
//! service reconnects (a PUB/SUB subscription is not there at once); then
//! workers are started and the recovered work runs.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use zmanager::config::Endpoints;
use zmanager::envelope::{Kind, Status};
use zmanager_tests::checker::Checker;
use zmanager_tests::client::{RawClient, Received, json};
use zmanager_tests::node::{StandaloneWorker, TempFile, TestNode, config_file, free_port};
use zmanager_tests::{kill, runtime, test_config};

const TIMING: [&str; 4] = ["--heartbeat-ms", "200", "--liveness-ms", "1000"];

/// A node without workers of its own on fixed ports (so that it can be
/// restarted where its services and workers expect it), with `extra` TOML.
fn fixed_node(extra: &str) -> (TestNode, TempFile) {
    let ports = [free_port(), free_port(), free_port()];
    let endpoints = Endpoints {
        intake: format!("tcp://127.0.0.1:{}", ports[0]),
        workers: format!("tcp://127.0.0.1:{}", ports[1]),
        publish: format!("tcp://127.0.0.1:{}", ports[2]),
    };
    let toml = format!(
        "heartbeat_ms = 200\nliveness_ms = 1000\n{extra}\n[endpoints]\nintake = \"{}\"\nworkers = \"{}\"\npublish = \"{}\"\n",
        endpoints.intake, endpoints.workers, endpoints.publish
    );
    let config = config_file(&toml);
    let (flows, mappings) = test_config();
    let node = TestNode::start_fixed(0, Some((&flows, &mappings)), &["--config", config.path()]);
    (node, config)
}

fn workers(node: &TestNode, names: &[&str]) -> Vec<StandaloneWorker> {
    names
        .iter()
        .map(|name| StandaloneWorker::start(&node.endpoints.workers, name, &TIMING))
        .collect()
}

/// The ids an `accepted` message acknowledges (its payload).
fn acknowledged(r: &Received) -> Vec<String> {
    rmp_serde::from_slice(&r.payload).expect("an accepted message's payload is its ids")
}

/// A request's payload: its number, how long the probe's `sleep` takes
/// over it, and padding that makes journal writes long.
#[derive(serde::Serialize, serde::Deserialize)]
struct Work {
    n: u64,
    ms: u64,
    #[serde(default)]
    pad: String,
}

/// What a run saw, per request id.
#[derive(Default)]
struct Seen {
    acked: HashSet<String>,
    results: Checker,
}

impl Seen {
    /// Counts an acknowledgement or a result (its payload the request's,
    /// echoed).
    fn take(&mut self, r: &Received) {
        match r.envelope.kind {
            Kind::Accepted => self.acked.extend(acknowledged(r)),
            Kind::Result => {
                assert_eq!(r.envelope.status, Status::Ok, "{:?}", r.envelope.error);
                let echoed: Work = zmanager_sdk::decode(&r.payload).expect("echoed payload");
                assert_eq!(
                    format!("m{}", echoed.n),
                    r.envelope.id,
                    "payload of another request"
                );
                self.results.received(&r.envelope.id);
            }
            other => panic!("unexpected {other:?} message"),
        }
    }

    /// Acknowledged requests without a result yet.
    fn acked_unanswered(&self) -> usize {
        self.acked
            .iter()
            .filter(|id| !self.results.has_received(id))
            .count()
    }
}

/// The number the node's log gives for `field` in its last "journal open"
/// line.
fn journal_open(log: &str, field: &str) -> u64 {
    let line = log
        .lines()
        .rev()
        .find(|l| l.contains("journal open"))
        .unwrap_or_else(|| panic!("no 'journal open' line in:\n{log}"));
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{field}=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {field}= in {line:?}"))
}

/// Sends `Sleep` requests (asking for acknowledgements; each takes a
/// worker 2 ms, so work piles up behind the acknowledgements) for `load`,
/// then kills the node and its workers with SIGKILL at once; returns what
/// the service saw before the kill.
async fn load_then_kill(
    node: &TestNode,
    workers: Vec<StandaloneWorker>,
    load: Duration,
    payload_bytes: usize,
) -> Seen {
    let mut client = RawClient::connect(&node.endpoints, "durable").await;
    let mut seen = Seen::default();
    let padding = "x".repeat(payload_bytes);
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < load {
        while seen.results.missing() < 2_000 {
            let id = format!("m{sent}");
            seen.results.sent(&id);
            let mut envelope = client.envelope(&id, "Sleep");
            envelope.ack = true;
            let work = Work {
                n: sent,
                ms: 2,
                pad: padding.clone(),
            };
            let payload = rmp_serde::to_vec_named(&work).expect("encode");
            client.send(&envelope, Bytes::from(payload)).await;
            sent += 1;
        }
        if let Some(r) = client.recv(Duration::from_millis(20)).await {
            seen.take(&r);
        }
        while let Some(r) = client.try_recv() {
            seen.take(&r);
        }
    }
    node.signal("KILL");
    for worker in &workers {
        kill("KILL", worker.pid());
    }
    // What was already on its way to the service still arrives.
    while let Some(r) = client.recv(Duration::from_millis(300)).await {
        seen.take(&r);
    }
    drop(workers);
    seen
}

/// Restarts the node, resubscribes the service, then starts workers and
/// collects until every acknowledged request is answered (or `limit`).
async fn restart_and_collect(
    node: &mut TestNode,
    seen: &mut Seen,
    names: &[&str],
    limit: Duration,
) -> Vec<StandaloneWorker> {
    node.restart();
    let mut client = RawClient::connect(&node.endpoints, "durable").await;
    let started = workers(node, names);
    let start = Instant::now();
    while seen.acked_unanswered() > 0 && start.elapsed() < limit {
        if let Some(r) = client.recv(Duration::from_millis(200)).await {
            seen.take(&r);
        }
    }
    // Late duplicates still count.
    while let Some(r) = client.recv(Duration::from_millis(500)).await {
        seen.take(&r);
    }
    started
}

#[test]
fn a_whole_node_killed_under_load_loses_nothing_it_accepted() {
    let (mut node, _config) = fixed_node("[journal]\nsync = \"full\"");
    runtime().block_on(async {
        let running = workers(&node, &["k-a", "k-b"]);
        let mut seen = load_then_kill(&node, running, Duration::from_millis(1500), 0).await;
        let before = seen.results.report();
        let unanswered = seen.acked_unanswered();
        let _workers = restart_and_collect(
            &mut node,
            &mut seen,
            &["k-c", "k-d"],
            Duration::from_secs(60),
        )
        .await;
        let recovered = journal_open(&node.log(), "unfinished");
        let after = seen.results.report();
        let lost_acked = seen.acked_unanswered();
        println!(
            "whole-node kill -9: sent {}, acknowledged {}, answered before the kill {}, \
             acknowledged but unanswered at the kill {unanswered}, recovered from the journal \
             {recovered}; after the restart: lost among acknowledged {lost_acked}, \
             duplicated {}, unexpected {}, never acknowledged nor answered {}",
            after.sent,
            seen.acked.len(),
            before.delivered,
            after.duplicated,
            after.unexpected,
            after.lost,
        );
        assert!(
            unanswered > 0,
            "the kill came when nothing acknowledged was unanswered: nothing to recover"
        );
        assert!(
            recovered >= unanswered as u64,
            "the journal had less than was acknowledged"
        );
        assert_eq!(lost_acked, 0, "acknowledged requests lost");
        assert_eq!(after.unexpected, 0);
    });
}

#[test]
fn an_async_flow_suspended_across_a_restart_resumes_with_its_answer() {
    let (mut node, _config) = fixed_node("");
    let _workers = workers(&node, &["a-a"]);
    runtime().block_on(async {
        let limit = Duration::from_secs(10);
        let mut answerer =
            RawClient::connect_with_prefix(&node.endpoints, "answerer", Some("Ask~PUBLISH~")).await;
        let mut requester = RawClient::connect(&node.endpoints, "req").await;
        let mut envelope = requester.envelope("q-1", "Ask");
        envelope.ack = true;
        let payload = Bytes::from(rmp_serde::to_vec_named(&"what time is it?").expect("encode"));
        requester.send(&envelope, payload).await;
        let question = answerer.recv(limit).await.expect("the published question");
        assert_eq!(question.envelope.id, "q-1");
        // Accepted (and, the flow being suspended, nothing else yet).
        let ack = requester.recv(limit).await.expect("the acknowledgement");
        assert_eq!(ack.envelope.kind, Kind::Accepted);
        assert_eq!(acknowledged(&ack), ["q-1"]);

        node.signal("KILL");
        node.wait_exit(Duration::from_secs(5));
        node.restart();
        assert_eq!(journal_open(&node.log(), "unfinished"), 1, "{}", node.log());

        let mut answerer = RawClient::connect(&node.endpoints, "answerer").await;
        let mut requester = RawClient::connect(&node.endpoints, "req").await;
        let mut answer = answerer.envelope("q-1", "Ask");
        answer.kind = Kind::Result;
        answer.origin = "req".into();
        let payload = Bytes::from(rmp_serde::to_vec_named(&"noon").expect("encode"));
        answerer.send(&answer, payload).await;
        let result = requester
            .recv(limit)
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
        assert!(
            answerer.recv(Duration::from_millis(300)).await.is_none(),
            "answer refused"
        );
    });
}
