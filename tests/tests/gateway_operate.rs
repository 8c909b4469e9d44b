//! Operating a node over HTTP (`docs/http-operate.md`) on a real node:
//! dead letters listed a page at a time, shown and replayed as `zmanager
//! dlq replay` replays them; the services registered over ZeroMQ; the
//! workers, and their restarts in `/metrics`.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use zmanager::client::{Service, ServiceOptions};
use zmanager_tests::cli::zmanager;
use zmanager_tests::http::{Answer, Http};
use zmanager_tests::node::{TestNode, node_with};
use zmanager_tests::temp::TempFile;
use zmanager_tests::{kill, runtime};

fn letters(answer: &Answer) -> Vec<Value> {
    assert_eq!(answer.status, 200, "{}", answer.text());
    answer.json()["dead_letters"]
        .as_array()
        .expect("a list")
        .clone()
}

#[test]
fn a_dead_letter_is_listed_shown_and_replayed_once_its_fault_is_gone() {
    let (node, _config) = node_with(1, "max_attempts = 3\n");
    let http = Http::of(&node);
    let marker = TempFile::new("fault", "");
    let payload = json!({ "marker": marker.path() });

    let dead = http.post_json("/v1/flows/Flaky/requests?wait=60s&id=poison", &payload);
    assert_eq!(dead.status, 500, "{}", dead.text());
    assert_eq!(dead.json()["error"]["name"], "dead_lettered");

    let listed = letters(&http.get("/v1/dead-letters", &[]));
    assert_eq!(listed.len(), 1, "{listed:?}");
    let letter = &listed[0];
    assert_eq!(letter["seq"], 1);
    assert_eq!(letter["flow"], "Flaky");
    assert_eq!(letter["service"], "http");
    assert_eq!(letter["id"], "poison");
    assert_eq!(letter["attempts"], 3);
    assert_eq!(letter["errors"].as_array().unwrap().len(), 3, "{letter}");
    assert_eq!(letter["replayed_us"], Value::Null);
    assert_eq!(letter["superseded_by"], Value::Null);
    assert!(letter["at_us"].as_u64().unwrap() > 0);
    assert_eq!(
        http.get("/v1/dead-letters", &[]).json()["next"],
        Value::Null
    );

    let shown = http.get("/v1/dead-letters/1", &[]);
    assert_eq!(shown.status, 200, "{}", shown.text());
    let shown = shown.json();
    assert_eq!(shown["payload"], payload);
    let errors = shown["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 3, "one reason per attempt: {shown}");
    assert!(
        errors.iter().all(|e| e.as_str().unwrap().contains("panic")),
        "{shown}"
    );
    assert_eq!(shown["replays"], json!([]));
    assert_eq!(shown["step"], 1);

    for path in ["/v1/dead-letters/99", "/v1/dead-letters/nine"] {
        let missing = http.get(path, &[]);
        assert!(matches!(missing.status, 400 | 404), "{}", missing.text());
    }
    let missing = http.post("/v1/dead-letters/99/replay", &[], b"");
    assert_eq!(missing.status, 404, "{}", missing.text());
    assert_eq!(missing.json()["error"]["name"], "unknown_dead_letter");

    drop(marker); // the fault goes away
    let replayed = http.post("/v1/dead-letters/1/replay?wait=30s", &[], b"");
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    let replayed = replayed.json();
    assert_eq!(replayed["seq"], 1);
    assert_eq!(replayed["outcome"], "ok", "{replayed}");
    assert_eq!(replayed["result"], payload);
    assert_eq!(replayed["replay"]["service"], "http");

    let shown = http.get("/v1/dead-letters/1", &[]).json();
    assert!(shown["replayed_us"].as_u64().is_some(), "{shown}");
    let replays = shown["replays"].as_array().unwrap();
    assert_eq!(replays.len(), 1, "{shown}");
    assert!(
        replays[0]["outcome"].as_str().unwrap().starts_with("ok {"),
        "{shown}"
    );
    // The CLI reads the same store, and sees it replayed.
    let out = zmanager(["dlq", "list", "--data-dir"])
        .arg(&node.data_dir)
        .run();
    assert!(
        out.stdout.contains("#1 flow=Flaky id=poison"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("(replayed)"), "{}", out.stdout);

    let again = http.post("/v1/dead-letters/1/replay?wait=30s", &[], b"");
    assert_eq!(again.status, 409, "{}", again.text());
    assert_eq!(again.json()["error"]["name"], "already_replayed");
    let forced = http.post("/v1/dead-letters/1/replay?wait=30s&force=true", &[], b"");
    assert_eq!(forced.status, 200, "{}", forced.text());
    assert_eq!(forced.json()["outcome"], "ok");
    let replays = http.get("/v1/dead-letters/1", &[]).json()["replays"].clone();
    assert_eq!(replays.as_array().unwrap().len(), 2, "{replays}");
}

/// A replay that is dead-lettered again is superseded by its new dead
/// letter, which the answer names; replaying the old one again is refused.
#[test]
fn a_replay_dead_lettered_again_names_its_new_dead_letter() {
    let (node, _config) = node_with(1, "max_attempts = 2\n");
    let http = Http::of(&node);
    let marker = TempFile::new("fault", "");
    let payload = json!({ "marker": marker.path() });
    let dead = http.post_json("/v1/flows/Flaky/requests?wait=60s", &payload);
    assert_eq!(dead.status, 500, "{}", dead.text());

    let replayed = http.post("/v1/dead-letters/1/replay?wait=60s", &[], b"");
    assert_eq!(replayed.status, 200, "{}", replayed.text());
    let replayed = replayed.json();
    assert_eq!(replayed["outcome"], "dead_lettered_again", "{replayed}");
    assert_eq!(replayed["new_seq"], 2, "{replayed}");
    assert_eq!(replayed["error"]["name"], "dead_lettered");

    let listed = letters(&http.get("/v1/dead-letters", &[]));
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[1]["seq"], 1, "newest first: {listed:?}");
    assert_eq!(listed[1]["superseded_by"], 2);
    assert_eq!(listed[1]["replayed_us"], Value::Null);
    let refused = http.post("/v1/dead-letters/1/replay", &[], b"");
    assert_eq!(refused.status, 409, "{}", refused.text());
    assert_eq!(refused.json()["error"]["name"], "superseded");

    drop(marker);
    let replayed = http.post("/v1/dead-letters/2/replay?wait=30s", &[], b"");
    assert_eq!(replayed.json()["outcome"], "ok", "{}", replayed.text());
}

#[test]
fn dead_letters_are_paged_newest_first_without_repeats() {
    let (node, _config) = node_with(1, "max_attempts = 2\n");
    let http = Http::of(&node);
    for n in 0..7 {
        let sent = http.post_json(&format!("/v1/flows/Boom/requests?id=boom-{n}"), &json!(n));
        assert_eq!(sent.status, 202, "{}", sent.text());
    }
    http.poll("/v1/dead-letters?limit=500", Duration::from_secs(60), |a| {
        letters(a).len() == 7
    });

    let mut seen = Vec::new();
    let mut sizes = Vec::new();
    let mut path = "/v1/dead-letters?limit=3".to_owned();
    loop {
        let page = http.get(&path, &[]);
        let listed = letters(&page);
        sizes.push(listed.len());
        seen.extend(listed.iter().map(|d| d["seq"].as_i64().unwrap()));
        match page.json()["next"].as_i64() {
            Some(next) => path = format!("/v1/dead-letters?limit=3&before={next}"),
            None => break,
        }
    }
    assert_eq!(sizes, [3, 3, 1]);
    assert_eq!(seen, [7, 6, 5, 4, 3, 2, 1], "newest first, no repeats");
    let ids: HashSet<String> = letters(&http.get("/v1/dead-letters?limit=500", &[]))
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 7);

    for bad in ["limit=0", "limit=501", "limit=many", "before=x"] {
        let refused = http.get(&format!("/v1/dead-letters?{bad}"), &[]);
        assert_eq!(refused.status, 400, "{bad}: {}", refused.text());
    }
}

#[test]
fn workers_and_services_are_listed_and_restarts_counted() {
    let node = TestNode::start(1);
    let http = Http::of(&node);
    let pids = node.wait_for_workers(1);
    let listed = http
        .poll("/v1/workers", Duration::from_secs(20), |a| {
            a.status == 200 && a.json()["workers"].as_array().is_some_and(|w| w.len() == 1)
        })
        .json();
    let worker = &listed["workers"][0];
    assert_eq!(worker["pid"].as_u64(), Some(u64::from(pids[0])), "{listed}");
    assert_eq!(worker["in_flight"], 0);
    assert!(worker["credits"].as_u64().unwrap() > 0, "{listed}");
    assert_eq!(listed["restarts"], 0);

    // A registered service, over ZeroMQ.
    let rt = runtime();
    let service = rt.block_on(async {
        let service = Service::connect(ServiceOptions::with_endpoints("shop", &node.endpoints))
            .await
            .expect("connect");
        service
            .register(&["Shop~PUBLISH~".to_owned()], &["Echo".to_owned()])
            .await
            .expect("register");
        service
    });
    let services = http.get("/v1/services", &[]);
    assert_eq!(services.status, 200, "{}", services.text());
    let services = services.json();
    let entry = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == service.id())
        .unwrap_or_else(|| panic!("{} is not listed: {services}", service.id()))
        .clone();
    assert_eq!(entry["status"], "up");
    assert_eq!(entry["topics"], json!(["Shop~PUBLISH~"]));
    assert_eq!(entry["flows"], json!(["Echo"]));
    assert!(services["steps"].is_array(), "{services}");

    // A worker killed is started again, and counted.
    kill("KILL", pids[0]);
    let listed = http
        .poll("/v1/workers", Duration::from_secs(30), |a| {
            let body = a.json();
            body["restarts"] == 1
                && body["workers"].as_array().is_some_and(|w| {
                    w.len() == 1 && w[0]["pid"].as_u64() != Some(u64::from(pids[0]))
                })
        })
        .json();
    let pid = listed["workers"][0]["pid"].as_u64().unwrap();
    assert_eq!(
        node.worker_pids()
            .into_iter()
            .map(u64::from)
            .collect::<Vec<_>>(),
        [pid]
    );
    let metrics = http.get("/metrics", &[]).text();
    assert!(
        metrics
            .lines()
            .any(|l| l == "zmanager_worker_restarts_total 1"),
        "{metrics}"
    );
    drop(service);
}

/// With `[security]`, dead letters and workers are for a service granted
/// `operate`; the services' list for one granted `register`, as over
/// ZeroMQ.
#[test]
fn with_keys_operating_takes_the_operate_grant() {
    let dir = zmanager_tests::temp::dir("gateway-operate-secure");
    let (ops_token, ada_token) = ("ops-secret-token", "ada-secret-token");
    let key = |_: ()| zmanager::security::new_pair().expect("CURVE keys").0;
    let (ops_key, ada_key) = (key(()), key(()));
    let grants = |extra: &str, token: &str| {
        format!(
            "{extra}http_token = {:?}\n",
            zmanager::security::token::show_digest(token)
        )
    };
    let ops_grants = grants("operate = true\nregister = true\n", ops_token);
    let ada_grants = grants("push = [\"Echo\"]\n", ada_token);
    let (node, _) = zmanager_tests::secure::node_with(
        dir.path(),
        &[
            ("ops", &ops_key, &ops_grants),
            ("ada", &ada_key, &ada_grants),
        ],
    );
    let http = Http::of(&node);
    let get =
        |token: &str, path: &str| http.get(path, &[("authorization", &format!("Bearer {token}"))]);
    for path in [
        "/v1/dead-letters",
        "/v1/dead-letters/1",
        "/v1/workers",
        "/v1/services",
    ] {
        let refused = get(ada_token, path);
        assert_eq!(refused.status, 403, "{path}: {}", refused.text());
        assert_eq!(refused.json()["error"]["name"], "forbidden", "{path}");
        let anonymous = http.get(path, &[]);
        assert_eq!(anonymous.status, 401, "{path}: {}", anonymous.text());
    }
    let refused = http.post(
        "/v1/dead-letters/1/replay",
        &[("authorization", &format!("Bearer {ada_token}"))],
        b"",
    );
    assert_eq!(refused.status, 403, "{}", refused.text());

    let listed = get(ops_token, "/v1/dead-letters");
    assert_eq!(listed.status, 200, "{}", listed.text());
    assert_eq!(listed.json(), json!({ "dead_letters": [], "next": null }));
    let missing = get(ops_token, "/v1/dead-letters/1");
    assert_eq!(missing.status, 404, "{}", missing.text());
    let workers = get(ops_token, "/v1/workers");
    assert_eq!(workers.status, 200, "{}", workers.text());
    let services = get(ops_token, "/v1/services");
    assert_eq!(services.status, 200, "{}", services.text());
}
