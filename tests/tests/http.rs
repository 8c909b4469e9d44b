//! The node's HTTP server on a real node, with a real HTTP client
//! (`docs/observability.md`): `/healthz`, `/readyz` turning 503 when no
//! worker is connected, and `/metrics` counters that match the requests
//! sent; and where the server may not listen.

use std::time::{Duration, Instant};

use zmanager_tests::checker::Checker;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::RawClient;
use zmanager_tests::load::collect;
use zmanager_tests::node::{StandaloneWorker, TestNode};
use zmanager_tests::{runtime, workspace_root};

/// `GET path` on the node's HTTP server: its status, content type and body.
fn get(node: &TestNode, path: &str) -> (u16, String, String) {
    let at = node.http.as_deref().expect("the node's HTTP server is on");
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let mut response = agent
        .get(format!("http://{at}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = response.body_mut().read_to_string().expect("a text body");
    (response.status().as_u16(), content_type, body)
}

/// The value of the sample `name` (labels included, as written) in
/// `/metrics` text.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Waits until `/readyz` answers `status`; returns its body.
fn ready_becomes(node: &TestNode, status: u16) -> String {
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (got, _, body) = get(node, "/readyz");
        if got == status {
            return body;
        }
        assert!(Instant::now() < until, "/readyz stayed {got}: {body}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn health_readiness_and_metrics_that_match_the_requests_sent() {
    let node = TestNode::start(1);
    let (status, _, body) = get(&node, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let body = ready_becomes(&node, 200);
    assert_eq!(body, r#"{"ready":true,"reasons":[]}"#);

    const N: usize = 25;
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "metered").await;
        let mut checker = Checker::default();
        for i in 0..N {
            let id = format!("m{i}");
            checker.sent(&id);
            client.request("Echo", &id, &i).await;
        }
        collect(&mut client, &mut checker, Duration::from_secs(30)).await;
        checker.report().assert_clean();
    });

    let (status, content_type, text) = get(&node, "/metrics");
    assert_eq!(status, 200, "{text}");
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    let n = N as f64;
    for (name, expected) in [
        ("zmanager_requests_accepted_total", n),
        ("zmanager_results_total", n),
        (
            "zmanager_requests_ended_total{flow=\"Echo\",outcome=\"ok\"}",
            n,
        ),
        ("zmanager_request_duration_seconds_count{flow=\"Echo\"}", n),
        (
            "zmanager_request_duration_seconds_bucket{le=\"+Inf\",flow=\"Echo\"}",
            n,
        ),
        ("zmanager_dead_letters_total", 0.0),
        ("zmanager_redeliveries_total", 0.0),
        ("zmanager_in_flight", 0.0),
        ("zmanager_pending", 0.0),
        ("zmanager_workers_connected", 1.0),
        ("zmanager_journal_failing", 0.0),
    ] {
        assert_eq!(sample(&text, name), Some(expected), "{name} in\n{text}");
    }
    let duration = sample(
        &text,
        "zmanager_request_duration_seconds_sum{flow=\"Echo\"}",
    )
    .expect("a duration sum");
    assert!(duration > 0.0, "{text}");
    assert!(text.ends_with("# EOF\n"), "{text}");
    // The one worker's credits, as it announced them: the node's window.
    let pid = node.worker_pids()[0];
    let credits = sample(&text, &format!("zmanager_worker_credits{{pid=\"{pid}\"}}"));
    let window = zmanager::node::config::NodeConfig::default().window;
    assert_eq!(credits, Some(f64::from(window)), "{text}");

    // Every metric docs/observability.md lists is served, and nothing is
    // served that it does not list.
    let doc = std::fs::read_to_string(workspace_root().join("docs/observability.md"))
        .expect("docs/observability.md");
    let listed: Vec<&str> = doc
        .split('`')
        .filter(|w| w.starts_with("zmanager_") && !w.contains(' '))
        .collect();
    let served: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for name in &served {
        let total = format!("{name}_total");
        assert!(
            listed.contains(name) || listed.contains(&total.as_str()),
            "{name} is served but not in docs/observability.md"
        );
    }
    for name in &listed {
        let family = name.trim_end_matches("_total");
        assert!(
            served.iter().any(|s| s == &family || s == name),
            "{name} is in docs/observability.md but not served"
        );
    }

    let (status, _, body) = get(&node, "/nope");
    assert_eq!(status, 404);
    assert!(
        body.contains("\"not_found\"") && body.contains("/metrics"),
        "{body}"
    );
}

#[test]
fn readiness_is_503_with_its_reason_until_a_worker_connects() {
    let node = TestNode::start(0);
    let (status, _, body) = get(&node, "/readyz");
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        body,
        r#"{"ready":false,"reasons":["no worker is connected"]}"#
    );
    // Alive all the same.
    assert_eq!(get(&node, "/healthz").0, 200);
    let worker = StandaloneWorker::start(&node.endpoints.workers, "late", &[]);
    ready_becomes(&node, 200);
    drop(worker);
    let body = ready_becomes(&node, 503);
    assert!(body.contains("no worker is connected"), "{body}");
}

#[test]
fn the_http_server_listens_on_loopback_only_unless_insecure() {
    let out = zmanager(["up", "--any-port", "--workers", "0", "--http", "0.0.0.0:0"]).run();
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("http 0.0.0.0:0 would listen beyond this machine")
            && out.stderr.contains("--insecure"),
        "{}",
        out.stderr
    );
    let out = zmanager(["up", "--any-port", "--http", "localhost"]).run();
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("http.listen = \"localhost\": use ip:port, such as \"127.0.0.1:19080\""),
        "{}",
        out.stderr
    );
    // A port taken (by another node's HTTP server) stops a node at start.
    let first = TestNode::start(0);
    let taken = first.http.clone().expect("HTTP on");
    let out = zmanager(["up", "--any-port", "--workers", "0", "--http", &taken]).run();
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains(&format!("the HTTP server cannot listen on {taken}")),
        "{}",
        out.stderr
    );
    // Off, it says so on the line a script reads.
    let node = TestNode::start_with(0, None, &["--no-http"]);
    assert_eq!(node.http, None);
}

/// `received_bytes` and `published_bytes` count exactly the frames that
/// went in and out: 25 requests' frames, and the frames of their 25
/// results as the client received them.
#[test]
fn the_byte_counters_count_every_frame_in_and_out() {
    use bytes::Bytes;
    use zmanager::wire::envelope::Kind;

    let node = TestNode::start(1);
    let counter = |name: &str| -> u64 {
        let (_, _, text) = get(&node, "/metrics");
        sample(&text, name).unwrap_or_else(|| panic!("{name} in {text}")) as u64
    };
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "bytes").await;
        // After the handshake: its pings are counted before this.
        let (in0, out0) = (
            counter("zmanager_received_bytes_total"),
            counter("zmanager_published_bytes_total"),
        );
        let mut sent = 0;
        for i in 0..25u32 {
            let envelope = client.envelope(&format!("b{i}"), "Echo");
            let payload = Bytes::from(rmp_serde::to_vec_named(&"x".repeat(i as usize)).unwrap());
            // The frames `send` makes: the topic, the envelope, the payload.
            sent += format!("{}~", envelope.flow).len() + envelope.encode().len() + payload.len();
            client.send(&envelope, payload).await;
        }
        let mut received = 0;
        for _ in 0..25 {
            let r = client
                .recv(Duration::from_secs(30))
                .await
                .expect("a result");
            assert_eq!(r.envelope.kind, Kind::Result, "{r:?}");
            received += r.topic.len() + r.envelope.encode().len() + r.payload.len();
        }
        assert_eq!(counter("zmanager_received_bytes_total") - in0, sent as u64);
        assert_eq!(
            counter("zmanager_published_bytes_total") - out0,
            received as u64
        );
    });
    let journal = counter("zmanager_journal_bytes");
    assert!(journal > 0, "the journal holds the 25 requests: {journal}");
}
