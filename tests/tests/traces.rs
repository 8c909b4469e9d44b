//! Spans over OTLP (`docs/observability.md`, "Traces"): a real node with
//! a worker process and `[telemetry] otlp_endpoint` pointing at a
//! receiver in this test exports one trace for a request — the node's
//! spans children of the request's parent, the worker's `action` spans
//! children of the node's `dispatch` span — and a node without
//! `otlp_endpoint` runs no exporter, in itself or its workers.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message as _;
use zmanager::wire::envelope::Status;
use zmanager_tests::client::{RawClient, json, msgpack};
use zmanager_tests::node::{TestNode, children_of};
use zmanager_tests::runtime;
use zmanager_tests::temp::config_file;

const LIMIT: Duration = Duration::from_secs(20);
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// One span as the receiver got it, with its process's resource.
#[derive(Debug, Clone)]
struct Got {
    name: String,
    trace_id: String,
    span_id: String,
    parent_id: String,
    start: u64,
    end: u64,
    attributes: HashMap<String, String>,
    pid: String,
    role: String,
}

/// An OTLP/HTTP receiver on a port of its own: takes each `POST
/// /v1/traces` (protobuf), answers `200`, keeps the spans.
struct Receiver {
    address: String,
    spans: Arc<Mutex<Vec<Got>>>,
    posts: Arc<Mutex<Vec<String>>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the receiver");
        let address = format!("http://{}", listener.local_addr().expect("its address"));
        let spans = Arc::new(Mutex::new(Vec::new()));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let (kept, paths) = (Arc::clone(&spans), Arc::clone(&posts));
        std::thread::spawn(move || {
            for connection in listener.incoming().flatten() {
                let (kept, paths) = (Arc::clone(&kept), Arc::clone(&paths));
                std::thread::spawn(move || serve(connection, &kept, &paths));
            }
        });
        Self {
            address,
            spans,
            posts,
        }
    }

    fn spans(&self) -> Vec<Got> {
        self.spans.lock().expect("spans").clone()
    }

    /// Waits until `enough` says the spans so far suffice.
    fn wait_for(&self, enough: impl Fn(&[Got]) -> bool) -> Vec<Got> {
        let deadline = Instant::now() + LIMIT;
        loop {
            let spans = self.spans();
            if enough(&spans) || Instant::now() >= deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Serves one keep-alive connection: HTTP/1.1 requests with a
/// `Content-Length` body.
fn serve(connection: TcpStream, kept: &Mutex<Vec<Got>>, paths: &Mutex<Vec<String>>) {
    let mut writer = connection.try_clone().expect("clone the connection");
    let mut reader = BufReader::new(connection);
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
            return;
        }
        let mut length = 0usize;
        loop {
            let mut header = String::new();
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            if let Some((name, value)) = header.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().expect("a content length");
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        paths
            .lock()
            .expect("paths")
            .push(request_line.trim().to_owned());
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).expect("OTLP protobuf");
        kept.lock().expect("spans").extend(spans_of(decoded));
        // An empty ExportTraceServiceResponse.
        let answer =
            "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
        if writer.write_all(answer.as_bytes()).is_err() {
            return;
        }
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(n)) => n.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(list: &[KeyValue]) -> HashMap<String, String> {
    list.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn spans_of(request: ExportTraceServiceRequest) -> Vec<Got> {
    let mut got = Vec::new();
    for resource_spans in request.resource_spans {
        let resource = attributes(
            &resource_spans
                .resource
                .map(|r| r.attributes)
                .unwrap_or_default(),
        );
        for scope in resource_spans.scope_spans {
            for span in scope.spans {
                got.push(Got {
                    name: span.name,
                    trace_id: hex(&span.trace_id),
                    span_id: hex(&span.span_id),
                    parent_id: hex(&span.parent_span_id),
                    start: span.start_time_unix_nano,
                    end: span.end_time_unix_nano,
                    attributes: attributes(&span.attributes),
                    pid: resource.get("process.pid").cloned().unwrap_or_default(),
                    role: resource.get("zmanager.role").cloned().unwrap_or_default(),
                });
            }
        }
    }
    got
}

/// The names of `spans`, sorted.
fn names(spans: &[Got]) -> Vec<&str> {
    let mut names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    names.sort_unstable();
    names
}

#[test]
fn one_request_is_one_trace_across_the_node_and_its_worker() {
    let receiver = Receiver::start();
    let config = config_file(&format!(
        "[telemetry]\notlp_endpoint = \"{}\"\nservice_name = \"zm-test\"\n",
        receiver.address
    ));
    let mut node = TestNode::start_with(1, None, &["--config", config.path()]);
    let workers = node.wait_for_workers(1);
    assert_eq!(workers.len(), 1, "{}", node.log());
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "tracer").await;
        let mut envelope = client.envelope("g-1", "Greeting");
        envelope.traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
        envelope.tracestate = "congo=t61rcWkgMzE".into();
        client
            .send(&envelope, msgpack(&serde_json::json!({"name": "  ada "})))
            .await;
        let result = client.recv(LIMIT).await.expect("a result");
        assert_eq!(result.envelope.status, Status::Ok, "{result:?}");
        assert_eq!(
            json(&result.payload),
            serde_json::json!({"greeting": "HELLO, ADA!"})
        );
        // The request's own context comes back, not the one its work had.
        assert_eq!(
            result.envelope.traceparent,
            format!("00-{TRACE_ID}-{PARENT_ID}-01")
        );
        assert_eq!(result.envelope.tracestate, "congo=t61rcWkgMzE");
    });
    // SIGTERM: the node and its worker export what they hold as they stop.
    node.signal("TERM");
    assert_eq!(node.wait_exit(LIMIT), Some(0), "{}", node.log());
    let spans = receiver.wait_for(|spans| {
        spans.iter().filter(|s| s.name == "action").count() >= 3
            && spans.iter().any(|s| s.name == "publish")
    });
    let log = node.log();
    assert_eq!(
        names(&spans),
        [
            "action", "action", "action", "dispatch", "intake", "publish", "queue"
        ],
        "{spans:#?}\n{log}"
    );
    for post in receiver.posts.lock().expect("posts").iter() {
        assert!(post.starts_with("POST /v1/traces "), "{post}");
    }

    // One trace: the request's.
    for span in &spans {
        assert_eq!(span.trace_id, TRACE_ID, "{span:?}");
        assert!(span.start <= span.end, "{span:?}");
    }
    // Two processes: the node's spans and the worker's.
    let by_id: HashMap<&str, &Got> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let node_pid = node_pid(&spans);
    for span in &spans {
        let (role, pid) = (span.role.as_str(), span.pid.as_str());
        if span.name == "action" {
            assert_eq!((role, pid), ("worker", workers[0].to_string().as_str()));
        } else {
            assert_eq!((role, pid), ("node", node_pid.as_str()), "{span:?}");
        }
    }
    assert_ne!(node_pid, workers[0].to_string());

    // The node's spans: children of the request's parent.
    for span in spans.iter().filter(|s| s.name != "action") {
        assert_eq!(span.parent_id, PARENT_ID, "{span:?}");
        assert_eq!(span.attributes["zmanager.flow"], "Greeting", "{span:?}");
        assert_eq!(span.attributes["zmanager.message_id"], "g-1", "{span:?}");
    }
    // The worker's: children of the node's dispatch span, in the flow's
    // order, each inside it in time.
    let dispatch = spans
        .iter()
        .find(|s| s.name == "dispatch")
        .expect("dispatch");
    let mut actions: Vec<&Got> = spans.iter().filter(|s| s.name == "action").collect();
    actions.sort_by_key(|s| s.start);
    let steps: Vec<(&str, &str, &str, &str)> = actions
        .iter()
        .map(|a| {
            (
                a.attributes["zmanager.step"].as_str(),
                a.attributes["zmanager.key"].as_str(),
                a.attributes["zmanager.action"].as_str(),
                a.attributes["zmanager.attempt"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        steps,
        [
            ("1", "?Greeting?trim", "Text.trim", "1"),
            ("2", "?Greeting?greet", "Greeter.greet", "1"),
            ("3", "?Greeting?upper", "Text.upper", "1"),
        ]
    );
    for action in &actions {
        let parent = by_id.get(action.parent_id.as_str()).expect("a parent");
        assert_eq!(parent.name, "dispatch", "{action:?}");
        assert!(
            action.start >= dispatch.start,
            "{action:?} before {dispatch:?}"
        );
        assert!(action.end <= dispatch.end, "{action:?} after {dispatch:?}");
    }
    // The hops in order: intake, queue, dispatch, publish.
    let at = |name: &str| spans.iter().find(|s| s.name == name).expect(name);
    let (intake, queue, publish) = (at("intake"), at("queue"), at("publish"));
    assert!(intake.end <= queue.start + 1_000, "{intake:?} {queue:?}");
    assert!(
        queue.end <= dispatch.start + 1_000,
        "{queue:?} {dispatch:?}"
    );
    assert!(
        dispatch.end <= publish.start + 1_000,
        "{dispatch:?} {publish:?}"
    );
    assert_eq!(
        dispatch.attributes["zmanager.worker.pid"],
        workers[0].to_string()
    );
    assert_eq!(publish.attributes["zmanager.kind"], "result");
    assert_eq!(publish.attributes["zmanager.topic"], "@reply~tracer~");
}

/// The pid of the node's spans (all but the actions).
fn node_pid(spans: &[Got]) -> String {
    spans
        .iter()
        .find(|s| s.name == "intake")
        .map(|s| s.pid.clone())
        .unwrap_or_default()
}

/// The names of the threads of process `pid`.
fn threads(pid: u32) -> Vec<String> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("comm")).ok())
        .map(|name| name.trim().to_owned())
        .collect()
}

/// Without `otlp_endpoint` nothing is installed: no exporter thread in the
/// node or its worker, and the worker is not told of one. (That nothing
/// reaches a collector then is trivially true: no address is known.)
#[test]
fn without_otlp_endpoint_no_exporter_runs_in_the_node_or_its_workers() {
    let check = |toml: &str, exporting: bool| {
        let config = config_file(toml);
        let node = TestNode::start_with(1, None, &["--config", config.path()]);
        let workers = node.wait_for_workers(1);
        assert_eq!(workers.len(), 1, "{}", node.log());
        runtime().block_on(async {
            let mut client = RawClient::connect(&node.endpoints, "quiet").await;
            let mut envelope = client.envelope("q-1", "Greeting");
            envelope.traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");
            client
                .send(&envelope, msgpack(&serde_json::json!({"name": "ada"})))
                .await;
            client.recv(LIMIT).await.expect("a result");
        });
        // The SDK names its processor's thread
        // "OpenTelemetry.Traces.BatchProcessor" (15 characters shown).
        for pid in [node.pid(), workers[0]] {
            let exporter = threads(pid).iter().any(|t| t.starts_with("OpenTelemetry"));
            assert_eq!(exporter, exporting, "pid {pid}: {:?}", threads(pid));
        }
        let command_line = std::fs::read(format!("/proc/{}/cmdline", workers[0]))
            .expect("the worker's command line");
        let told = String::from_utf8_lossy(&command_line).contains("--otlp-endpoint");
        assert_eq!(told, exporting);
        assert_eq!(children_of(node.pid()).len(), 1);
    };
    check("[telemetry]\nstart_traces = true\n", false);
    // The same check sees the exporter when there is one (nothing listens
    // there: exports fail quietly, in the exporter's thread).
    let unused = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let at = unused.local_addr().expect("its address");
    drop(unused);
    check(
        &format!("[telemetry]\notlp_endpoint = \"http://{at}\"\n"),
        true,
    );
}
