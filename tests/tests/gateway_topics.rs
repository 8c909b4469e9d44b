//! `GET /v1/topics` on a real node (`docs/http-topics.md`): what the node
//! publishes, as server-sent events read line by line by a real HTTP
//! client; the bound on streams; a client that does not read, told what
//! it lost while the node serves on; and who may read what with
//! `[security]`.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zmanager::security::{self, token};
use zmanager_tests::checker::Checker;
use zmanager_tests::client::RawClient;
use zmanager_tests::http::Http;
use zmanager_tests::load::collect;
use zmanager_tests::node::TestNode;
use zmanager_tests::{runtime, temp};

/// Where `Subject?Announce@PUBLISH?announced` publishes.
const ANNOUNCED: &str = "Announce~PUBLISH~Subject~Announce~announced";

/// One server-sent event.
#[derive(Debug, Clone)]
struct Event {
    event: String,
    id: Option<String>,
    data: String,
}

impl Event {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }
}

/// A stream's answer before its body is read.
struct Opened {
    status: u16,
    content_type: String,
    body: ureq::Body,
}

impl Opened {
    /// The error body of a refused stream.
    fn error(self) -> Value {
        let mut body = self.body;
        let text = body.read_to_string().expect("an error body");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
    }

    /// Reads the body in a thread, line by line, and hands over each
    /// event (comments, the keep-alives, are skipped).
    fn follow(self) -> Events {
        if self.status != 200 {
            let status = self.status;
            panic!("a stream refused: {status} {}", self.error());
        }
        let (tx, rx) = mpsc::channel();
        let reader = self.body.into_reader();
        std::thread::spawn(move || {
            let mut event = String::new();
            let mut id = None;
            let mut data = Vec::new();
            for line in BufReader::new(reader).lines() {
                let Ok(line) = line else { return };
                if line.is_empty() {
                    if !data.is_empty() || !event.is_empty() {
                        let sent = Event {
                            event: std::mem::take(&mut event),
                            id: id.take(),
                            data: std::mem::take(&mut data).join("\n"),
                        };
                        if tx.send(sent).is_err() {
                            return;
                        }
                    }
                } else if line.starts_with(':') {
                    // A comment: the keep-alive.
                } else if let Some((field, value)) = line.split_once(':') {
                    let value = value.strip_prefix(' ').unwrap_or(value).to_owned();
                    match field {
                        "event" => event = value,
                        "id" => id = Some(value),
                        "data" => data.push(value),
                        _ => {}
                    }
                }
            }
        });
        Events(rx)
    }
}

/// The events of one stream, as its reader thread hands them over.
struct Events(mpsc::Receiver<Event>);

impl Events {
    fn next(&self, limit: Duration) -> Option<Event> {
        self.0.recv_timeout(limit).ok()
    }
}

/// An agent for streams: no overall time limit (ureq's would cut the
/// body short), a limit on connecting and on the answer's head.
fn stream_agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_recv_response(Some(Duration::from_secs(10)))
        .build()
        .into()
}

/// `GET /v1/topics?prefix=…` on `node`, with `headers`.
fn open(node: &TestNode, prefix: &str, headers: &[(&str, &str)]) -> Opened {
    let at = node.http.as_deref().expect("the node's HTTP server is on");
    let mut request = stream_agent()
        .get(format!("http://{at}/v1/topics"))
        .query("prefix", prefix);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let response = request
        .call()
        .unwrap_or_else(|e| panic!("GET /v1/topics?prefix={prefix}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    Opened {
        status: response.status().as_u16(),
        content_type,
        body: response.into_body(),
    }
}

/// The next `message` event's data, within `limit`.
fn next_message(events: &Events, limit: Duration) -> Option<Value> {
    let until = Instant::now() + limit;
    loop {
        let event = events.next(until.saturating_duration_since(Instant::now()))?;
        if event.event == "message" {
            return Some(event.json());
        }
    }
}

#[test]
fn every_publication_on_the_prefix_arrives_and_no_other() {
    let node = TestNode::start(1);
    let http = Http::of(&node);
    let announce = open(&node, "Announce~", &[]);
    assert_eq!(announce.status, 200);
    assert!(
        announce.content_type.starts_with("text/event-stream"),
        "{}",
        announce.content_type
    );
    let announce = announce.follow();
    let other = open(&node, "Other~", &[]).follow();
    let everything = open(&node, "", &[]).follow();

    let mut sent = Vec::new();
    for i in 0..5 {
        let payload = json!({"n": i, "word": format!("w{i}"), "nested": [i, {"x": null}]});
        let answer = http.post_json("/v1/flows/Announce/requests?wait=20s", &payload);
        assert_eq!(answer.status, 200, "{}", answer.text());
        let id = answer.json()["id"].as_str().expect("an id").to_owned();
        sent.push((id, payload));
    }

    // In the order published, numbered by the stream.
    for (n, (id, payload)) in sent.iter().enumerate() {
        let event = announce
            .next(Duration::from_secs(20))
            .unwrap_or_else(|| panic!("announcement {n} did not arrive"));
        assert_eq!(event.event, "message", "{event:?}");
        assert_eq!(event.id.as_deref(), Some((n + 1).to_string().as_str()));
        let data = event.json();
        assert_eq!(data["topic"], ANNOUNCED, "{data}");
        assert_eq!(data["id"], id.as_str(), "{data}");
        assert_eq!(data["payload"], *payload, "{data}");
        assert_eq!(data["flow"], "Announce");
        assert_eq!(data["service"], "http");
        assert_eq!(data["kind"], "request");
        assert_eq!(data["status"], "ok");
    }

    // The empty prefix: the announcements and the results (on the
    // caller's reply topic) alike.
    let mut seen = HashSet::new();
    while seen.len() < 2 * sent.len() {
        let data = next_message(&everything, Duration::from_secs(20))
            .unwrap_or_else(|| panic!("the empty prefix saw only {seen:?}"));
        let topic = data["topic"].as_str().unwrap().to_owned();
        assert!(topic == ANNOUNCED || topic == "@reply~http~", "{data}");
        seen.insert((topic, data["id"].as_str().unwrap().to_owned()));
    }
    for (id, _) in &sent {
        assert!(seen.contains(&(ANNOUNCED.to_owned(), id.clone())), "{id}");
        assert!(
            seen.contains(&("@reply~http~".to_owned(), id.clone())),
            "{id}"
        );
    }

    // Everything was published by now: the other prefix got none of it.
    if let Some(event) = other.next(Duration::from_millis(500)) {
        panic!("a stream of Other~ got {event:?}");
    }
    assert!(announce.next(Duration::from_millis(200)).is_none());
}

#[test]
fn at_most_max_streams_are_open_and_a_closed_one_frees_its_place() {
    let node = TestNode::start(1);
    let http = Http::of(&node);
    let max = zmanager::http::MAX_STREAMS;
    let mut open_streams: Vec<Opened> = (0..max)
        .map(|i| {
            let opened = open(&node, "Announce~", &[]);
            assert_eq!(opened.status, 200, "stream {i}");
            opened
        })
        .collect();
    let refused = open(&node, "Announce~", &[]);
    assert_eq!(refused.status, 503);
    let error = refused.error();
    assert_eq!(error["error"]["name"], "too_many_streams", "{error}");
    // The rest of the server is not held by them.
    assert_eq!(http.get("/healthz", &[]).status, 200);

    // A client that goes away gives its place back (noticed when the
    // connection closes, at the latest at the next keep-alive).
    drop(open_streams.pop());
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let again = open(&node, "Announce~", &[]);
        if again.status == 200 {
            open_streams.push(again);
            break;
        }
        assert_eq!(again.status, 503);
        assert!(Instant::now() < until, "the place was not given back");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_client_that_does_not_read_is_told_what_it_lost_and_slows_nothing() {
    const N: usize = 5_000;
    let node = TestNode::start(1);
    let http = Http::of(&node);
    // Opened, not read: what the socket's buffers and the stream's own
    // hold is all it can take (4 KiB a message, 20 MB in all).
    let stalled = open(&node, "Announce~", &[]);
    assert_eq!(stalled.status, 200);

    // /healthz while the load runs, answered every time and quickly.
    let running = Arc::new(AtomicBool::new(true));
    let prober = {
        let running = Arc::clone(&running);
        let http = http.clone();
        std::thread::spawn(move || {
            let mut slowest = Duration::ZERO;
            let mut probes = 0;
            while running.load(Ordering::Relaxed) {
                let start = Instant::now();
                let answer = http.get("/healthz", &[]);
                assert_eq!(answer.status, 200, "{}", answer.text());
                slowest = slowest.max(start.elapsed());
                probes += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            (probes, slowest)
        })
    };

    let padding = "x".repeat(4096);
    let report = runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "loud").await;
        let mut checker = Checker::default();
        for i in 0..N {
            let id = format!("a{i}");
            checker.sent(&id);
            client
                .request("Announce", &id, &json!({"i": i, "pad": padding}))
                .await;
        }
        collect(&mut client, &mut checker, Duration::from_secs(120)).await;
        checker.report()
    });
    running.store(false, Ordering::Relaxed);
    let (probes, slowest) = prober.join().expect("the prober");
    // Every request was answered: the stalled stream held nothing up.
    report.assert_clean();
    assert!(probes > 0);
    assert!(
        slowest < Duration::from_secs(2),
        "/healthz took {slowest:?}"
    );

    // Now read it: what fit, a `lagged` with the total lost, and what
    // fit after; together, every announcement, none twice.
    let events = stalled.follow();
    let mut delivered = HashSet::new();
    let mut lost = 0;
    let mut lagged = 0;
    while delivered.len() + usize::try_from(lost).unwrap() < N {
        let Some(event) = events.next(Duration::from_secs(20)) else {
            panic!(
                "stopped at {} delivered and {lost} lost of {N}",
                delivered.len()
            );
        };
        match event.event.as_str() {
            "lagged" => {
                lagged += 1;
                let told = event.json()["lost"].as_u64().expect("a count");
                assert!(told > lost, "{event:?}");
                lost = told;
            }
            "message" => {
                let data = event.json();
                assert_eq!(data["topic"], ANNOUNCED);
                let id = data["id"].as_str().unwrap().to_owned();
                assert!(delivered.insert(id.clone()), "{id} twice");
            }
            other => panic!("an event {other:?}"),
        }
    }
    assert!(lagged >= 1 && lost > 0, "nothing was lost: {lost}");
    assert!(delivered.len() >= 1024, "{} delivered", delivered.len());
    assert_eq!(delivered.len() + usize::try_from(lost).unwrap(), N);
    eprintln!(
        "delivered {}, lost {lost}, in {lagged} lagged event(s); {probes} /healthz, slowest {slowest:?}",
        delivered.len()
    );
}

#[test]
fn with_security_a_service_streams_only_what_its_grants_cover() {
    let dir = temp::dir("topics-secure");
    let pair = || security::new_pair().expect("CURVE keys");
    let (reader_key, stranger_key) = (pair(), pair());
    let reader_grants = format!(
        "push = [\"Announce\"]\nsubscribe = [\"Announce~\"]\nhttp_token = {:?}\n",
        token::show_digest("reader-token")
    );
    let stranger_grants = format!(
        "push = [\"Announce\"]\nhttp_token = {:?}\n",
        token::show_digest("stranger-token")
    );
    let (node, _server) = zmanager_tests::secure::node_with(
        dir.path(),
        &[
            ("reader", &reader_key.0, &reader_grants),
            ("stranger", &stranger_key.0, &stranger_grants),
        ],
    );
    let http = Http::of(&node);
    let reader = [("authorization", "Bearer reader-token")];
    let stranger = [("authorization", "Bearer stranger-token")];

    let none = open(&node, "Announce~", &[]);
    assert_eq!(none.status, 401);
    let refused = open(&node, "Announce~", &stranger);
    assert_eq!(refused.status, 403);
    let error = refused.error();
    assert_eq!(error["error"]["name"], "forbidden", "{error}");
    assert_eq!(error["error"]["code"], 20, "{error}");
    // Wider than granted, or another's results: refused too.
    assert_eq!(open(&node, "", &reader).status, 403);
    assert_eq!(open(&node, "Ann", &reader).status, 403);
    assert_eq!(open(&node, "@reply~reader~", &stranger).status, 403);
    // Its own results need no grant.
    assert_eq!(open(&node, "@reply~stranger~", &stranger).status, 200);

    let stream = open(&node, "Announce~", &reader);
    assert_eq!(stream.status, 200);
    let stream = stream.follow();
    let answer = http.post(
        "/v1/flows/Announce/requests?wait=20s",
        &[
            ("content-type", "application/json"),
            ("authorization", "Bearer stranger-token"),
        ],
        br#"{"secret": "no"}"#,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    let data = next_message(&stream, Duration::from_secs(20)).expect("the announcement");
    assert_eq!(data["topic"], ANNOUNCED);
    assert_eq!(data["service"], "stranger");
    assert_eq!(data["payload"], json!({"secret": "no"}));
}

#[test]
fn an_open_stream_does_not_hold_the_node_when_it_stops() {
    let mut node = TestNode::start(1);
    let events = open(&node, "", &[]).follow();
    let _idle = open(&node, "Announce~", &[]);
    let start = Instant::now();
    node.signal("TERM");
    let code = node.wait_exit(Duration::from_secs(10));
    assert_eq!(code, Some(0), "the node did not stop: {}", node.log());
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "stopping took {:?}",
        start.elapsed()
    );
    // The stream ended: its reader saw the end of the body.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        match events.0.recv_timeout(Duration::from_millis(100)) {
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            Ok(_) | Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
    }
    panic!("the stream did not end with the node");
}
