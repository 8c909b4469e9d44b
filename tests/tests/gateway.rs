//! The HTTP gateway on a real node, with a real HTTP client
//! (`docs/http.md`): requests with and without `wait`, polling, ids sent
//! again, bodies that are refused, and the journey of a request whose
//! worker was killed in the middle of its action.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zmanager_tests::http::{Answer, Http};
use zmanager_tests::kill;
use zmanager_tests::node::{TestNode, node_with};

#[test]
fn a_request_with_wait_gets_its_result_and_one_without_is_polled_to_it() {
    let node = TestNode::start(1);
    let http = Http::of(&node);

    let answer = http.post_json("/v1/flows/Echo/requests?wait=20s", &json!({"name": "ada"}));
    assert_eq!(answer.status, 200, "{}", answer.text());
    let body = answer.json();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["result"], json!({"name": "ada"}));
    assert_eq!(body["flow"], "Echo");
    assert_eq!(body["service"], "http");
    assert!(body["id"].as_str().unwrap().starts_with("http-"), "{body}");

    // Without wait: 202 once taken (journaled), and a Location to poll.
    let answer = http.post(
        "/v1/flows/Echo/requests?service=shop",
        &[
            ("content-type", "application/json"),
            ("idempotency-key", "order-1"),
        ],
        br#"[1, 2, 3]"#,
    );
    assert_eq!(answer.status, 202, "{}", answer.text());
    let location = answer.header("location").expect("a Location").to_owned();
    assert_eq!(location, "/v1/requests/shop/order-1");
    assert_eq!(answer.json()["location"], location);
    let done = http.poll(&location, Duration::from_secs(20), |a| {
        a.status == 200 && a.json()["status"] == "ok"
    });
    assert_eq!(done.json()["result"], json!([1, 2, 3]));

    // MessagePack in, MessagePack out.
    let payload = rmp_serde::to_vec_named(&("bin", 7)).unwrap();
    let answer = http.post(
        "/v1/flows/Echo/requests?wait=20s",
        &[
            ("content-type", "application/msgpack"),
            ("accept", "application/msgpack"),
        ],
        &payload,
    );
    assert_eq!(answer.status, 200, "{}", answer.text());
    assert_eq!(answer.header("content-type"), Some("application/msgpack"));
    assert_eq!(answer.body, payload);
    assert!(
        answer
            .header("zmanager-id")
            .is_some_and(|id| id.starts_with("http-"))
    );

    // A wait that passes before the result: 202, and the request goes on.
    let slow = http.post_json(
        "/v1/flows/Sleep/requests?wait=300ms&id=slow",
        &json!({"ms": 2000}),
    );
    assert_eq!(slow.status, 202, "{}", slow.text());
    assert_eq!(slow.header("location"), Some("/v1/requests/http/slow"));
    let done = http.poll("/v1/requests/http/slow", Duration::from_secs(20), |a| {
        a.status == 200 && a.json()["status"] == "ok"
    });
    assert_eq!(done.json()["result"], json!({"ms": 2000}));
}

#[test]
fn an_id_sent_again_gets_the_same_result_without_running_again() {
    let node = TestNode::start(2);
    let http = Http::of(&node);
    // `count` answers with the pid of the worker that ran it: a second
    // run could land on the other worker, and would count as accepted.
    let path = "/v1/flows/Count/requests?wait=20s&id=once";
    let first = http.post_json(path, &json!("x"));
    assert_eq!(first.status, 200, "{}", first.text());
    for _ in 0..5 {
        let again = http.post_json(path, &json!("x"));
        assert_eq!(again.status, 200, "{}", again.text());
        assert_eq!(again.json()["result"], first.json()["result"]);
    }
    let metrics = http.get("/metrics", &[]).text();
    let accepted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("zmanager_requests_accepted_total "))
        .expect("the accepted counter");
    assert_eq!(accepted, "1", "{metrics}");
}

/// Two clients sending the same id at once: one run, and both answers are
/// its result.
#[test]
fn the_same_id_sent_twice_at_once_runs_once_and_answers_both() {
    let node = TestNode::start(2);
    let http = Http::of(&node);
    let path = "/v1/flows/Sleep/requests?wait=30s&id=twice";
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..2)
            .map(|_| s.spawn(|| http.post_json(path, &json!({"ms": 1000}))))
            .collect();
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    });
    for answer in &answers {
        assert_eq!(answer.status, 200, "{}", answer.text());
        assert_eq!(answer.json()["result"], json!({"ms": 1000}));
    }
    let metrics = http.get("/metrics", &[]).text();
    let counter = |name: &str| {
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{name} in {metrics}"))
            .to_owned()
    };
    assert_eq!(
        counter("zmanager_requests_accepted_total"),
        "1",
        "{metrics}"
    );
    assert_eq!(counter("zmanager_duplicates_total"), "1", "{metrics}");
}

#[test]
fn bad_requests_get_a_4xx_with_the_stable_code_and_the_node_serves_on() {
    let (node, _config) = node_with(1, "max_message_bytes = 4096\n");
    let http = Http::of(&node);
    let error = |a: &Answer| a.json()["error"].clone();

    let unknown = http.post_json("/v1/flows/Nope/requests?wait=10s", &json!(1));
    assert_eq!(unknown.status, 404, "{}", unknown.text());
    assert_eq!(error(&unknown)["code"], 3);
    assert_eq!(error(&unknown)["name"], "unknown_flow");
    // Without wait, the refusal is the answer too (no 202 for it).
    let unknown = http.post_json("/v1/flows/Nope/requests", &json!(1));
    assert_eq!(unknown.status, 404, "{}", unknown.text());

    let bad_json = http.post(
        "/v1/flows/Echo/requests",
        &[("content-type", "application/json")],
        b"{",
    );
    assert_eq!(bad_json.status, 400, "{}", bad_json.text());
    assert_eq!(error(&bad_json)["name"], "malformed_message");

    let bad_msgpack = http.post(
        "/v1/flows/Echo/requests?wait=10s",
        &[("content-type", "application/msgpack")],
        &[0xc1],
    );
    assert_eq!(bad_msgpack.status, 400, "{}", bad_msgpack.text());

    // Past the limit, yet small enough to sit in the socket buffers: a
    // server answers before reading what it refuses, and a client still
    // writing a large body would see its pipe broken rather than the answer.
    let huge = vec![b' '; 16 << 10];
    let too_large = http.post(
        "/v1/flows/Echo/requests",
        &[("content-type", "application/json")],
        &huge,
    );
    assert_eq!(too_large.status, 413, "{}", too_large.text());
    assert_eq!(error(&too_large)["name"], "too_large");

    let odd = http.post(
        "/v1/flows/Echo/requests",
        &[("content-type", "text/plain")],
        b"hi",
    );
    assert_eq!(odd.status, 415, "{}", odd.text());
    let wait = http.post_json("/v1/flows/Echo/requests?wait=forever", &json!(1));
    assert_eq!(wait.status, 400, "{}", wait.text());
    let service = http.post_json("/v1/flows/Echo/requests?service=a~b", &json!(1));
    assert_eq!(service.status, 400, "{}", service.text());
    let failed = http.post_json("/v1/flows/Fail/requests?wait=10s", &json!(1));
    assert_eq!(failed.status, 422, "{}", failed.text());
    assert_eq!(error(&failed)["name"], "action_failed");
    let nobody = http.get("/v1/requests/http/never-sent", &[]);
    assert_eq!(nobody.status, 404, "{}", nobody.text());
    assert_eq!(error(&nobody)["name"], "unknown_request");
    // A query string axum cannot read: a JSON error too, not plain text.
    let query = http.post_json("/v1/flows/Echo/requests?wait=1s&wait=2s", &json!(1));
    assert_eq!(query.status, 400, "{}", query.text());
    assert_eq!(error(&query)["name"], "bad_query");
    let lost = http.get("/v2/anything", &[]);
    assert_eq!(lost.status, 404);
    assert_eq!(error(&lost)["name"], "not_found");

    let fine = http.post_json("/v1/flows/Echo/requests?wait=20s", &json!("still here"));
    assert_eq!(fine.status, 200, "{}", fine.text());
}

#[test]
fn the_journey_of_a_request_whose_worker_was_killed_shows_both_attempts() {
    let node = TestNode::start(1);
    let http = Http::of(&node);
    let sent = http.post_json("/v1/flows/Sleep/requests?id=slow", &json!({"ms": 3000}));
    assert_eq!(sent.status, 202, "{}", sent.text());
    let on_worker = http.poll("/v1/requests/http/slow", Duration::from_secs(20), |a| {
        a.status == 200 && a.json()["state"] == "in_flight"
    });
    let first = on_worker.json();
    assert_eq!(first["attempt"], 1, "{first}");
    let pid = u32::try_from(first["worker_pid"].as_u64().expect("a pid")).unwrap();
    kill("KILL", pid);

    let done = http.poll("/v1/requests/http/slow", Duration::from_secs(60), |a| {
        a.status == 200 && a.json()["status"] == "ok"
    });
    assert_eq!(done.json()["result"], json!({"ms": 3000}));

    // Poll: the completion may be published before its commit is read.
    let journey = http
        .poll(
            "/v1/requests/http/slow/journey",
            Duration::from_secs(20),
            |a| {
                a.status == 200
                    && a.json()["steps"]
                        .as_array()
                        .is_some_and(|s| s.iter().any(|e| e["event"] == "completed"))
            },
        )
        .json();
    let steps = journey["steps"].as_array().unwrap();
    let events: Vec<&str> = steps.iter().map(|s| s["event"].as_str().unwrap()).collect();
    assert_eq!(
        events,
        ["accepted", "dispatched", "dispatched", "completed"],
        "{journey}"
    );
    let dispatches: Vec<&Value> = steps
        .iter()
        .filter(|s| s["event"] == "dispatched")
        .collect();
    assert_eq!(dispatches[0]["attempt"], 1);
    assert_eq!(dispatches[0]["redelivery"], false);
    assert_eq!(dispatches[1]["attempt"], 2);
    assert_eq!(dispatches[1]["redelivery"], true);
    assert_ne!(
        dispatches[0]["worker"], dispatches[1]["worker"],
        "{journey}"
    );
    assert_eq!(steps[3]["status"], "ok");
    let times: Vec<u64> = steps.iter().map(|s| s["at_us"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// With `[security]`, a bearer token is the service: the one its digest is
/// listed for, with that service's grants, and no other.
#[test]
fn with_keys_a_token_is_its_service_and_no_other() {
    let dir = zmanager_tests::temp::dir("gateway-secure");
    let (ada_token, bob_token) = ("ada-secret-token", "bob-secret-token");
    let key = |_: ()| zmanager::security::new_pair().expect("CURVE keys").0;
    let (ada_key, bob_key) = (key(()), key(()));
    let grants = |push: &str, token: &str| {
        format!(
            "push = [{push}]\nhttp_token = {:?}\n",
            zmanager::security::token::show_digest(token)
        )
    };
    let (ada_grants, bob_grants) = (grants("\"Greeting\"", ada_token), grants("", bob_token));
    let (node, _) = zmanager_tests::secure::node_with(
        dir.path(),
        &[
            ("ada", &ada_key, &ada_grants),
            ("bob", &bob_key, &bob_grants),
        ],
    );
    let http = Http::of(&node);
    let post = |token: Option<&str>, path: &str| {
        let bearer = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![("content-type", "application/json")];
        if let Some(bearer) = &bearer {
            headers.push(("authorization", bearer.as_str()));
        }
        http.post(path, &headers, br#"{"name": "ada"}"#)
    };
    let path = "/v1/flows/Greeting/requests?wait=20s&id=g-1";

    for token in [None, Some("not-a-listed-token")] {
        let refused = post(token, path);
        assert_eq!(refused.status, 401, "{token:?}: {}", refused.text());
        assert_eq!(refused.json()["error"]["name"], "unauthorized");
    }
    let done = post(Some(ada_token), path);
    assert_eq!(done.status, 200, "{}", done.text());
    assert_eq!(done.json()["service"], "ada");

    // bob may push into no flow: the Subject refuses him as over ZeroMQ.
    let forbidden = post(Some(bob_token), path);
    assert_eq!(forbidden.status, 403, "{}", forbidden.text());
    assert_eq!(forbidden.json()["error"]["name"], "forbidden");
    // Naming another service than the token's is refused, not ignored.
    let posing = post(Some(bob_token), &format!("{path}&service=ada"));
    assert_eq!(posing.status, 403, "{}", posing.text());
    assert_eq!(posing.json()["error"]["name"], "wrong_service");

    // A request is its service's to read.
    let read = |token: &str| {
        http.get(
            "/v1/requests/ada/g-1",
            &[("authorization", &format!("Bearer {token}"))],
        )
    };
    assert_eq!(read(ada_token).status, 200, "{}", read(ada_token).text());
    let nosy = read(bob_token);
    assert_eq!(nosy.status, 403, "{}", nosy.text());
    assert_eq!(nosy.json()["error"]["name"], "wrong_service");
    let journey = http.get(
        "/v1/requests/ada/g-1/journey",
        &[("authorization", &format!("Bearer {bob_token}"))],
    );
    assert_eq!(journey.status, 403, "{}", journey.text());
}

/// A node with no room: its pending queue full (no worker to take it),
/// the intake's bounded channels full behind it. Requests over HTTP then
/// wait for room as a service's push would, at most 10 s, and are
/// answered 503 (`overloaded` when they found no room at all, `unavailable`
/// when taken by the channel but not by the Subject); none hangs, and the
/// node answers its health meanwhile.
#[test]
fn a_full_node_answers_503_instead_of_holding_requests() {
    let (node, _config) = node_with(0, "max_pending = 1\n");
    let http = Http::of(&node);
    let first = http.post_json("/v1/flows/Echo/requests?id=first", &json!(0));
    assert_eq!(first.status, 202, "{}", first.text());
    let started = Instant::now();
    let answers: Vec<Answer> = std::thread::scope(|s| {
        let sent: Vec<_> = (0..160)
            .map(|i| {
                let http = &http;
                s.spawn(move || {
                    http.post_json(&format!("/v1/flows/Echo/requests?id=r{i}"), &json!(i))
                })
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        assert_eq!(http.get("/healthz", &[]).status, 200, "alive while full");
        sent.into_iter().map(|t| t.join().unwrap()).collect()
    });
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "{:?}",
        started.elapsed()
    );
    let names: Vec<String> = answers
        .iter()
        .map(|a| {
            assert_eq!(a.status, 503, "{}", a.text());
            a.json()["error"]["name"].as_str().unwrap_or("").to_owned()
        })
        .collect();
    assert!(names.iter().any(|n| n == "overloaded"), "{names:?}");
    assert!(
        names
            .iter()
            .all(|n| n == "overloaded" || n == "unavailable"),
        "{names:?}"
    );
    let overloaded = answers
        .iter()
        .find(|a| a.json()["error"]["name"] == "overloaded")
        .unwrap();
    assert_eq!(overloaded.header("retry-after"), Some("1"));
}
