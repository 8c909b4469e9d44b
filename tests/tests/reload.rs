//! Changing flows and mappings on a running node (`docs/reload.md`): under
//! load, with requests suspended at `@ASYNC`, a reload changes the middle
//! step's action; every request accepted before it runs the old action,
//! every one after it the new one (each result says which), none lost or
//! answered twice — also across `kill -9` of the node and its recovery. A
//! reload with errors changes nothing and says every error; a worker that
//! read edited files still runs each message on its own version.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use zmanager::wire::envelope::{Kind, Status};
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::{RawClient, Received, json as decoded, msgpack};
use zmanager_tests::http::Http;
use zmanager_tests::node::{TestNode, fixed_endpoints};
use zmanager_tests::runtime;
use zmanager_tests::temp::{self, config_file};

const LIMIT: Duration = Duration::from_secs(120);

const FLOWS: &str = "\
[Versioned]
?Versioned?Push
?Versioned?first
?Versioned?middle
?Versioned?last
??done

; Waits at @ASYNC for a service's answer, then runs the middle step.
[Waiting]
?Waiting?Push
Subject?Waiting@PUBLISH?question
?Waiting@ASYNC?answer
?Waiting?middle
??done
";

/// The mappings with the middle steps' action: `Probe.echo` before the
/// reload (the payload comes back as sent), `Probe.count` after it (the
/// payload comes back inside `{"pid", "payload"}`).
fn mappings(middle: &str) -> String {
    format!(
        "[actionmapping]\n?Versioned?first = Probe.sleep\n?Versioned?middle = {middle}\n\
         ?Versioned?last = Probe.echo\n?Waiting?middle = {middle}\n"
    )
}

/// A catalog of its own, in files the test edits.
struct Catalog {
    _dir: tempfile::TempDir,
    flows: PathBuf,
    mappings: PathBuf,
}

impl Catalog {
    fn new() -> Self {
        let dir = temp::dir("reload-catalog");
        let (flows, mappings) = (dir.path().join("flows"), dir.path().join("mappings"));
        std::fs::create_dir_all(&flows).expect("a flows directory");
        std::fs::create_dir_all(&mappings).expect("a mappings directory");
        std::fs::write(flows.join("versioned.ini"), FLOWS).expect("the flows");
        let catalog = Self {
            _dir: dir,
            flows,
            mappings,
        };
        catalog.set_middle("Probe.echo");
        catalog
    }

    fn set_middle(&self, action: &str) {
        std::fs::write(self.mappings.join("versioned.ini"), mappings(action))
            .expect("the mappings");
    }

    fn dirs(&self) -> (&Path, &Path) {
        (&self.flows, &self.mappings)
    }
}

/// The catalog version a result ran on and whether its middle step was
/// the new action.
fn ran(result: &Received) -> (u32, bool) {
    assert_eq!(
        result.envelope.status,
        Status::Ok,
        "{:?}",
        result.envelope.error
    );
    let payload = decoded(&result.payload);
    (result.envelope.catalog, payload.get("pid").is_some())
}

fn reload(node: &TestNode, extra: &[&str]) -> std::process::Output {
    let at = node.http.as_deref().expect("HTTP on");
    let out = zmanager(["reload", "--http", at]).args(extra).run();
    std::process::Output {
        status: out.status,
        stdout: out.stdout.into_bytes(),
        stderr: out.stderr.into_bytes(),
    }
}

/// Sends `ids` into `flow` asking for an acknowledgement, and returns
/// once the node accepted every one (results that come first count).
async fn send_accepted(
    client: &mut RawClient,
    flow: &str,
    ids: &[String],
    results: &mut BTreeMap<String, Vec<Received>>,
) {
    for id in ids {
        let mut envelope = client.envelope(id, flow);
        envelope.ack = true;
        client
            .send(&envelope, msgpack(&json!({ "ms": 5, "id": id })))
            .await;
    }
    let mut accepted = BTreeSet::new();
    let until = Instant::now() + LIMIT;
    while accepted.len() < ids.len() {
        assert!(
            Instant::now() < until,
            "{} of {} accepted",
            accepted.len(),
            ids.len()
        );
        let Some(got) = client.recv(Duration::from_secs(1)).await else {
            continue;
        };
        match got.envelope.kind {
            // Its payload lists the ids acknowledged (protocol §7b).
            Kind::Accepted => {
                let listed: Vec<String> =
                    serde_json::from_value(decoded(&got.payload)).expect("a list of ids");
                accepted.extend(listed.into_iter().filter(|id| ids.contains(id)));
            }
            Kind::Result => {
                let id = got.envelope.id.clone();
                if ids.contains(&id) {
                    accepted.insert(id.clone());
                }
                results.entry(id).or_default().push(got);
            }
            _ => {}
        }
    }
}

fn ids(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i}")).collect()
}

/// The load of both tests: 1,800 requests of `Versioned` and 200 of
/// `Waiting` (suspended at `@ASYNC`) accepted before the reload, 500 of
/// `Versioned` after it. With `kill` the node is killed (`kill -9`) once
/// the last are accepted, and started again on its journal.
fn reload_under_load(kill: bool) {
    let catalog = Catalog::new();
    let (_, endpoints_toml) = fixed_endpoints();
    let config = config_file(&format!(
        "max_pending = 10000\nmax_suspended = 1000\nasync_timeout = \"5m\"\n{endpoints_toml}"
    ));
    let mut node = TestNode::start_fixed(2, Some(catalog.dirs()), &["--config", config.path()]);
    let (before, waiting, after) = (ids("before", 1800), ids("waiting", 200), ids("after", 500));
    let mut results: BTreeMap<String, Vec<Received>> = BTreeMap::new();
    let rt = runtime();
    rt.block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "load").await;
        send_accepted(&mut client, "Waiting", &waiting, &mut results).await;
        send_accepted(&mut client, "Versioned", &before, &mut results).await;

        // 2,000 accepted; most not finished, 200 waiting for an answer.
        let held: Value = Http::of(&node).get("/v1/overview", &[]).json();
        let holding = &held["holding"];
        let count = |key: &str| holding[key].as_u64().unwrap_or(0);
        let unfinished = count("pending") + count("in_flight") + count("at_async");
        assert!(unfinished >= 1000, "the reload comes under load: {holding}");
        assert_eq!(holding["at_async"], 200, "{holding}");

        catalog.set_middle("Probe.count");
        let out = reload(&node, &[]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(said.contains("reloaded: catalog version 2"), "{said}");
        assert!(
            said.contains("step 2 ?Versioned?middle: Probe.echo -> Probe.count"),
            "{said}"
        );
        send_accepted(&mut client, "Versioned", &after, &mut results).await;

        if kill {
            node.signal("KILL");
            node.restart();
            client = RawClient::connect(&node.endpoints, "load").await;
        }
        // The answers to the suspended flows (protocol §7a), sent as the
        // service that was asked answers.
        let mut answerer = RawClient::connect(&node.endpoints, "answerer").await;
        for id in &waiting {
            let mut answer = answerer.envelope(id, "Waiting");
            answer.kind = Kind::Result;
            answer.origin = "load".into();
            answerer
                .send(&answer, msgpack(&json!({ "answer": id })))
                .await;
        }

        // Every result, resending what a kill may have hidden: the same id
        // again is answered from the journal, not run again.
        let all: Vec<&String> = waiting.iter().chain(&before).chain(&after).collect();
        let until = Instant::now() + LIMIT;
        let mut last_resend = Instant::now();
        while results.len() < all.len() {
            assert!(
                Instant::now() < until,
                "{} of {} results",
                results.len(),
                all.len()
            );
            if let Some(got) = client.recv(Duration::from_millis(500)).await {
                if got.envelope.kind == Kind::Result {
                    results
                        .entry(got.envelope.id.clone())
                        .or_default()
                        .push(got);
                }
                continue;
            }
            if kill && last_resend.elapsed() > Duration::from_secs(5) {
                for id in all.iter().filter(|id| !results.contains_key(**id)) {
                    let flow = if id.starts_with("waiting") {
                        "Waiting"
                    } else {
                        "Versioned"
                    };
                    let envelope = client.envelope(id, flow);
                    client
                        .send(&envelope, msgpack(&json!({ "ms": 5, "id": id })))
                        .await;
                }
                last_resend = Instant::now();
            }
        }
        // Late copies, if any, within a second.
        while let Some(got) = client.recv(Duration::from_secs(1)).await {
            if got.envelope.kind == Kind::Result {
                results
                    .entry(got.envelope.id.clone())
                    .or_default()
                    .push(got);
            }
        }
    });
    for id in waiting.iter().chain(&before) {
        for result in &results[id] {
            assert_eq!(
                ran(result),
                (1, false),
                "{id} was accepted before the reload"
            );
        }
    }
    for id in &after {
        for result in &results[id] {
            assert_eq!(ran(result), (2, true), "{id} was accepted after the reload");
        }
    }
    let copies: usize = results.values().map(Vec::len).sum();
    assert_eq!(results.len(), 2500, "every request answered");
    if !kill {
        assert_eq!(copies, 2500, "each answered once");
    }
    // The journal says which version each ran on.
    for (id, version) in [("before-0", 1), ("waiting-0", 1), ("after-0", 2)] {
        let out = zmanager(["journal", "show", id, "--data-dir"])
            .arg(&node.data_dir)
            .run();
        let says = format!("on catalog version {version} at its entry step");
        assert!(
            out.stdout.contains(&says),
            "{id}: {}{}",
            out.stdout,
            out.stderr
        );
    }
}

#[test]
fn requests_accepted_before_a_reload_finish_on_the_old_steps_and_the_others_on_the_new() {
    reload_under_load(false);
}

#[test]
fn the_versions_hold_across_a_kill_of_the_node_and_its_recovery() {
    reload_under_load(true);
}

#[test]
fn a_reload_with_errors_changes_nothing_and_says_every_error_and_sighup_reloads() {
    let catalog = Catalog::new();
    let node = TestNode::start_with(1, Some(catalog.dirs()), &[]);
    let http = Http::of(&node);
    let before = http.post_json(
        "/v1/flows/Versioned/requests?wait=10s&id=v-1",
        &json!({ "ms": 1 }),
    );
    assert_eq!(before.status, 200, "{}", before.text());

    // Two errors in two files: a component no worker has, a flow line
    // that is not a key.
    std::fs::write(catalog.mappings.join("versioned.ini"), mappings("Nope.run")).unwrap();
    std::fs::write(
        catalog.flows.join("broken.ini"),
        "[Broken]\n?Broken?Push\nnot a key\n",
    )
    .unwrap();
    let dry = reload(&node, &["--dry-run"]);
    assert!(!dry.status.success(), "a dry run with errors fails too");
    let out = reload(&node, &[]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains("not reloaded: the files have errors; nothing changed"),
        "{said}"
    );
    assert!(said.contains("Nope"), "the unknown component: {said}");
    assert!(
        said.contains("broken.ini:3"),
        "the bad line, with its file and line: {said}"
    );

    let still = http.post_json(
        "/v1/flows/Versioned/requests?wait=10s&id=v-2",
        &json!({ "ms": 1 }),
    );
    assert_eq!(still.status, 200, "{}", still.text());
    assert_eq!(
        still.json()["result"],
        json!({ "ms": 1 }),
        "still the old middle step"
    );
    let flows = http.get("/v1/flows", &[]).json();
    assert!(
        flows["flows"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "Broken"),
        "nothing of the files was taken"
    );

    // Fixed, SIGHUP reloads (as `zmanager reload`).
    std::fs::remove_file(catalog.flows.join("broken.ini")).unwrap();
    catalog.set_middle("Probe.count");
    assert_eq!(http.get("/v1/flows", &[]).json()["version"], 1);
    node.signal("HUP");
    http.poll("/v1/flows", Duration::from_secs(30), |a| {
        a.json()["version"] == 2
    });
    let after = http.post_json(
        "/v1/flows/Versioned/requests?wait=10s&id=v-3",
        &json!({ "ms": 1 }),
    );
    assert!(after.json()["result"]["pid"].is_u64(), "{}", after.text());
}

#[test]
fn a_worker_that_read_edited_files_runs_each_message_on_its_own_version() {
    let catalog = Catalog::new();
    let node = TestNode::start_with(0, Some(catalog.dirs()), &[]);
    let http = Http::of(&node);
    // Edited on disk, not reloaded: the node still runs version 1.
    catalog.set_middle("Probe.count");
    let worker = zmanager([
        "worker",
        "--endpoint",
        node.endpoints.workers.as_str(),
        "--identity",
        "edited",
    ])
    .arg("--flows")
    .arg(&catalog.flows)
    .arg("--mappings")
    .arg(&catalog.mappings)
    .stdin(Stdio::null())
    .stderr(Stdio::null())
    .spawn();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _worker = Kill(worker);
    let old = http.post_json(
        "/v1/flows/Versioned/requests?wait=30s&id=e-1",
        &json!({ "ms": 1 }),
    );
    assert_eq!(old.status, 200, "{}", old.text());
    assert_eq!(
        old.json()["result"],
        json!({ "ms": 1 }),
        "version 1's middle step, not the files'"
    );

    // Reloaded: the node's version 2 is the worker's own files.
    let out = reload(&node, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let new = http.post_json(
        "/v1/flows/Versioned/requests?wait=30s&id=e-2",
        &json!({ "ms": 1 }),
    );
    assert!(new.json()["result"]["pid"].is_u64(), "{}", new.text());
}
