//! Steps given to a service (`[services]`), served by a separate process:
//! the `moderator` example, in the shipped `Review` flow (Text.trim →
//! moderator → Text.upper). `docs/service-steps.md` states the promise.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zmanager::wire::envelope::Status;
use zmanager::wire::error_code::ErrorCode;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::{RawClient, json, msgpack};
use zmanager_tests::node::{TestNode, fixed_endpoints};
use zmanager_tests::temp::config_file;
use zmanager_tests::{example_bin, kill as signal, runtime};

/// The steps each moderator process printed, in the order it got them:
/// (process number, request id).
type Seen = Arc<Mutex<Vec<(usize, String)>>>;

/// Starts moderator process number `n`, taking `credits` steps at once;
/// its lines go to `seen`.
fn moderator(node: &TestNode, n: usize, credits: u32, seen: &Seen) -> Child {
    let mut child = Command::new(example_bin("moderator"))
        .arg(credits.to_string())
        .arg(&node.endpoints.intake)
        .arg(&node.endpoints.publish)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start the moderator");
    let stdout = child.stdout.take().expect("its stdout");
    let seen = Arc::clone(seen);
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if let Some(id) = line.split_whitespace().nth(2) {
                seen.lock().expect("lock").push((n, id.to_owned()));
            }
        }
    });
    child
}

fn kill(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_service_step_is_answered_by_the_service_and_the_flow_goes_on() {
    let node = TestNode::start_builtin(1);
    let seen = Seen::default();
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "writer").await;
        // Given before any moderator is there: the step waits for one.
        client.request("Review", "r-1", &"  a fine text ").await;
        let moderator = moderator(&node, 1, 4, &seen);
        client.request("Review", "r-2", &"spam, spam").await;
        let mut results = BTreeMap::new();
        for _ in 0..2 {
            let r = client
                .recv(Duration::from_secs(30))
                .await
                .expect("a result");
            results.insert(r.envelope.id.clone(), r);
        }
        kill(moderator);
        let approved = &results["r-1"];
        assert_eq!(approved.envelope.status, Status::Ok, "{approved:?}");
        assert_eq!(
            json(&approved.payload),
            serde_json::json!("A FINE TEXT (APPROVED)")
        );
        let refused = &results["r-2"];
        let error = refused.envelope.error.as_ref().expect("an error");
        assert_eq!(error.code, ErrorCode::ActionFailed);
        assert_eq!(error.message, "refused by the moderator");
        assert_eq!(refused.envelope.key, "?Review?moderate");
    });
    let seen = seen.lock().expect("lock");
    assert_eq!(
        seen.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>(),
        ["r-1", "r-2"]
    );
}

/// 10,000 requests; the service is killed (SIGKILL) part way, stays away
/// 5 s, and a new process of it starts. Every request is answered once,
/// and the service saw its steps in acceptance order: the first time each
/// step reached it, in increasing order; a step seen again is one given
/// again after the kill (it had not been answered).
#[test]
fn a_service_killed_under_load_loses_nothing_and_sees_its_steps_in_order() {
    let config = config_file(
        "service_step_timeout_ms = 2000\nservice_retry_ms = 200\nservice_retry_max_ms = 1000\nservice_liveness_ms = 1000\nmax_service_steps = 20000\nmax_pending = 20000\n",
    );
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    let seen = Seen::default();
    let n = 10_000usize;
    let id = |i: usize| format!("r-{i:05}");
    let first = moderator(&node, 1, 16, &seen);
    let (results, killed_after) = runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "writer").await;
        for i in 0..n {
            let envelope = client.envelope(&id(i), "Review");
            client
                .send(&envelope, msgpack(&format!(" text {i} ")))
                .await;
        }
        // Kill the service once it has seen a third of the steps.
        let until = Instant::now() + Duration::from_secs(60);
        while seen.lock().expect("lock").len() < n / 3 {
            assert!(Instant::now() < until, "the moderator got no steps");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        kill(first);
        let killed_after = seen.lock().expect("lock").len();
        tokio::time::sleep(Duration::from_secs(5)).await;
        let second = moderator(&node, 2, 16, &seen);
        let mut results: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
        let until = Instant::now() + Duration::from_secs(240);
        let mut answered = 0;
        while answered < n && Instant::now() < until {
            let Some(r) = client.recv(Duration::from_secs(10)).await else {
                continue;
            };
            assert_eq!(r.envelope.status, Status::Ok, "{r:?}");
            let entry = results.entry(r.envelope.id.clone()).or_default();
            if entry.is_empty() {
                answered += 1;
            }
            entry.push(json(&r.payload));
        }
        // Anything late would show up now as a duplicate.
        while let Some(r) = client.recv(Duration::from_secs(1)).await {
            results
                .entry(r.envelope.id.clone())
                .or_default()
                .push(json(&r.payload));
        }
        kill(second);
        (results, killed_after)
    });
    let lost: Vec<String> = (0..n)
        .map(id)
        .filter(|i| !results.contains_key(i))
        .collect();
    let duplicated: Vec<&String> = results
        .iter()
        .filter(|(_, r)| r.len() > 1)
        .map(|(id, _)| id)
        .collect();
    for (i, got) in results.iter().take(5) {
        let k: usize = i[2..].parse().expect("a number");
        assert_eq!(got[0], serde_json::json!(format!("TEXT {k} (APPROVED)")));
    }
    let seen = seen.lock().expect("lock").clone();
    let mut firsts = Vec::new();
    let mut again = 0;
    let mut known = std::collections::HashSet::new();
    for (_, id) in &seen {
        if known.insert(id.clone()) {
            firsts.push(id.clone());
        } else {
            again += 1;
        }
    }
    let out_of_order = firsts.windows(2).filter(|w| w[0] >= w[1]).count();
    let given_again_by_second = seen
        .iter()
        .skip(killed_after)
        .filter(|(_, id)| seen[..killed_after].iter().any(|(_, s)| s == id))
        .count();
    eprintln!(
        "service steps: {n} requests, the service killed after {killed_after} steps and away 5 s: answered {}, lost {}, duplicated {}, steps seen {} ({again} given again after the kill), first sightings out of order {out_of_order}",
        results.len(),
        lost.len(),
        duplicated.len(),
        seen.len()
    );
    assert!(
        lost.is_empty(),
        "lost {} of {n}: {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
    assert!(duplicated.is_empty(), "duplicated: {duplicated:?}");
    assert_eq!(out_of_order, 0, "steps reached the service out of order");
    assert_eq!(
        again, given_again_by_second,
        "a step is seen again only when given again after the kill"
    );
    assert!(
        again <= 16,
        "at most the killed instance's credits are given again: {again}"
    );
}

/// What the node refuses around service steps, each with its code, told
/// to the service that sent it: a take for a service no step is given to
/// (11), a take whose topic is not under the service's own (6), an answer
/// from a service the step is not given to (20, and the flow still waits
/// for its own), and a second answer to a step already answered (14).
#[test]
fn takes_and_answers_that_do_not_fit_are_refused_with_their_code() {
    use zmanager::wire::envelope::Kind;
    let node = TestNode::start_builtin(1);
    runtime().block_on(async {
        let e = &node.endpoints;
        let limit = Duration::from_secs(20);
        let topic = "@reply~moderator~steps-t~";
        let mut m = RawClient::connect_with_prefix(e, "moderator", Some(topic)).await;
        let mut stranger = RawClient::connect(e, "nobody").await;
        let mut writer = RawClient::connect(e, "writer").await;
        let take = |client: &RawClient, reply_to: &str| {
            let mut t = client.envelope("take-1", "");
            t.kind = Kind::Take;
            reply_to.clone_into(&mut t.reply_to);
            t
        };

        stranger
            .send(&take(&stranger, "@reply~nobody~steps~"), msgpack(&4u32))
            .await;
        let r = stranger.recv(limit).await.expect("refused");
        assert_eq!(
            r.envelope.error.map(|e| e.code),
            Some(ErrorCode::NotSupported)
        );

        m.send(&take(&m, "@reply~writer~"), msgpack(&4u32)).await;
        let r = m.recv(limit).await.expect("refused");
        assert_eq!(r.topic, "@reply~moderator~", "told on its own topic");
        assert_eq!(
            r.envelope.error.map(|e| e.code),
            Some(ErrorCode::BadRequest)
        );

        m.send(&take(&m, topic), msgpack(&1u32)).await;
        writer.request("Review", "r-1", &" hello ").await;
        let step = m.recv(limit).await.expect("the step");
        assert_eq!(step.topic, topic);
        assert_eq!(step.envelope.kind, Kind::Step);
        assert_eq!(
            (step.envelope.id.as_str(), step.envelope.service.as_str()),
            ("r-1", "writer")
        );
        assert_eq!(json(&step.payload), serde_json::json!("hello"));

        let answer = |client: &RawClient| {
            let mut a = client.envelope("r-1", "Review");
            a.kind = Kind::Result;
            a.origin = "writer".into();
            a
        };
        stranger.send(&answer(&stranger), msgpack(&"forged")).await;
        let r = stranger.recv(limit).await.expect("refused");
        assert_eq!(r.envelope.error.map(|e| e.code), Some(ErrorCode::Forbidden));
        // Without a reply_to, the refusal is dropped: not published on the
        // flow's results topic, where it would be news of the flow's.
        let mut watcher =
            RawClient::connect_with_prefix(e, "watcher", Some("Review~~~~done")).await;
        let mut quiet = answer(&stranger);
        quiet.reply_to.clear();
        stranger.send(&quiet, msgpack(&"forged")).await;
        assert!(
            watcher.recv(Duration::from_millis(700)).await.is_none(),
            "nothing on Review~~~~done"
        );

        m.send(&answer(&m), msgpack(&"hello (approved)")).await;
        let result = writer.recv(limit).await.expect("the result");
        assert_eq!(json(&result.payload), serde_json::json!("HELLO (APPROVED)"));

        m.send(&answer(&m), msgpack(&"again")).await;
        let r = m.recv(limit).await.expect("refused");
        assert_eq!(
            r.envelope.error.map(|e| e.code),
            Some(ErrorCode::UnknownAsync)
        );
        assert!(
            writer.recv(Duration::from_millis(500)).await.is_none(),
            "one result"
        );

        // `status: error` without an error map ends the flow all the same.
        writer.request("Review", "r-2", &" bye ").await;
        let step = m.recv(limit).await.expect("the step");
        assert_eq!(step.envelope.id, "r-2");
        let mut bare = m.envelope("r-2", "Review");
        bare.kind = Kind::Result;
        bare.origin = "writer".into();
        bare.status = Status::Error;
        m.send(&bare, msgpack(&"bye")).await;
        let result = writer.recv(limit).await.expect("the result");
        let error = result.envelope.error.expect("an error result");
        assert_eq!(error.code, ErrorCode::ActionFailed);
        assert!(error.message.contains("no error map"), "{}", error.message);
    });
}

/// The whole node killed (`kill -9`) while its service is away, with every
/// request acknowledged and waiting at the service's step: after the
/// restart, each is given to the service when it comes, in acceptance
/// order, and answered once.
#[test]
fn steps_waiting_for_a_service_survive_a_kill_of_the_node() {
    use zmanager::wire::envelope::Kind;
    let (_, endpoints) = fixed_endpoints();
    let config = config_file(&format!(
        "service_liveness_ms = 1000\nservice_retry_ms = 200\n{endpoints}"
    ));
    let mut node = TestNode::start_fixed(1, None, &["--config", config.path()]);
    let n = 300usize;
    let id = |i: usize| format!("k-{i:04}");
    runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        for i in 0..n {
            let mut envelope = writer.envelope(&id(i), "Review");
            envelope.ack = true;
            writer
                .send(&envelope, msgpack(&format!(" text {i} ")))
                .await;
        }
        let mut acked = std::collections::HashSet::new();
        while acked.len() < n {
            let Some(r) = writer.recv(Duration::from_secs(20)).await else {
                panic!(
                    "{} of {n} acknowledged; the node's log:\n{}",
                    acked.len(),
                    node.log()
                );
            };
            assert_eq!(r.envelope.kind, Kind::Accepted, "no result yet: {r:?}");
            let ids: Vec<String> = rmp_serde::from_slice(&r.payload).expect("ids");
            acked.extend(ids);
        }
        // Their first step done, every one waits for the moderator.
        tokio::time::sleep(Duration::from_secs(2)).await;
    });
    signal("KILL", node.pid());
    node.restart();
    let seen = Seen::default();
    let (results, moderator) = runtime().block_on(async {
        // Subscribed first: a result published before is not received.
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        let moderator = moderator(&node, 1, 8, &seen);
        let mut results: BTreeMap<String, usize> = BTreeMap::new();
        let until = Instant::now() + Duration::from_secs(60);
        while results.len() < n && Instant::now() < until {
            if let Some(r) = writer.recv(Duration::from_secs(5)).await {
                assert_eq!(r.envelope.status, Status::Ok, "{r:?}");
                *results.entry(r.envelope.id).or_default() += 1;
            }
        }
        while let Some(r) = writer.recv(Duration::from_secs(1)).await {
            *results.entry(r.envelope.id).or_default() += 1;
        }
        (results, moderator)
    });
    kill(moderator);
    let lost = (0..n).filter(|&i| !results.contains_key(&id(i))).count();
    let duplicated = results.values().filter(|&&c| c > 1).count();
    let seen: Vec<String> = seen
        .lock()
        .expect("lock")
        .iter()
        .map(|(_, id)| id.clone())
        .collect();
    let out_of_order = seen.windows(2).filter(|w| w[0] >= w[1]).count();
    eprintln!(
        "node kill: {n} acknowledged and waiting for the service: answered {}, lost {lost}, duplicated {duplicated}, steps seen {}, out of order {out_of_order}",
        results.len(),
        seen.len()
    );
    let log = node.log();
    let tail: Vec<&str> = log.lines().rev().take(12).collect();
    assert_eq!(lost, 0, "the node's log, last lines first: {tail:#?}");
    assert_eq!(duplicated, 0);
    assert_eq!(
        out_of_order, 0,
        "given in acceptance order after the restart"
    );
}

/// A service's queue is bounded: with `max_service_steps = 3` and no
/// instance, three requests wait at its step and the next ones end at once
/// with code 12 (`overloaded`), saying why; once the service comes, the
/// three are answered.
#[test]
fn a_services_queue_is_bounded_and_past_it_a_flow_ends_with_code_12() {
    let config = config_file("max_service_steps = 3\n");
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    let seen = Seen::default();
    runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        for i in 0..5 {
            writer
                .request("Review", &format!("b-{i}"), &format!("text {i}"))
                .await;
        }
        let mut refused = Vec::new();
        for _ in 0..2 {
            let r = writer
                .recv(Duration::from_secs(20))
                .await
                .expect("refusals");
            let error = r.envelope.error.expect("an error");
            assert_eq!(error.code, ErrorCode::Overloaded);
            assert!(
                error.message.contains("max_service_steps"),
                "{}",
                error.message
            );
            refused.push(r.envelope.id);
        }
        refused.sort();
        assert_eq!(refused, ["b-3", "b-4"]);
        let moderator = moderator(&node, 1, 4, &seen);
        let mut answered = Vec::new();
        for _ in 0..3 {
            let r = writer.recv(Duration::from_secs(20)).await.expect("answers");
            assert_eq!(r.envelope.status, Status::Ok, "{r:?}");
            answered.push(r.envelope.id);
        }
        kill(moderator);
        answered.sort();
        assert_eq!(answered, ["b-0", "b-1", "b-2"]);
    });
}

/// `zmanager services` shows each service given steps: DOWN with its
/// backlog and why while no instance takes them, UP with nothing waiting
/// once one has answered them.
#[test]
fn zmanager_services_shows_a_services_steps_up_or_down() {
    let node = TestNode::start_builtin(1);
    let list = || {
        let out = zmanager(["services", "--intake", &node.endpoints.intake])
            .args(["--publish", &node.endpoints.publish])
            .run();
        assert!(out.status.success(), "{out:?}");
        out.stdout
    };
    let seen = Seen::default();
    runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        for i in 0..2 {
            writer.request("Review", &format!("l-{i}"), &"text").await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let shown = list();
        assert!(shown.contains("STEPS FOR\tSTATUS\tBACKLOG"), "{shown}");
        let row = shown
            .lines()
            .find(|l| l.starts_with("moderator\t"))
            .unwrap_or_else(|| panic!("{shown}"));
        let fields: Vec<&str> = row.split('\t').collect();
        assert_eq!(&fields[1..5], ["down", "2", "0", "0"], "{row}");
        assert_eq!(fields[7], "no instance has taken its steps yet", "{row}");
        let moderator = moderator(&node, 1, 4, &seen);
        for _ in 0..2 {
            writer
                .recv(Duration::from_secs(20))
                .await
                .expect("answered");
        }
        let shown = list();
        kill(moderator);
        let row = shown
            .lines()
            .find(|l| l.starts_with("moderator\t"))
            .unwrap_or_else(|| panic!("{shown}"));
        let fields: Vec<&str> = row.split('\t').collect();
        assert_eq!(&fields[1..5], ["up", "0", "0", "1"], "{row}");
        assert_eq!(fields[7], "-", "no error once it answered: {row}");
    });
}

/// The recoverer's delays on real time: an instance that takes a step and
/// never answers it is given it again after `service_step_timeout_ms` plus
/// `service_retry_ms` doubled at each failure, capped at
/// `service_retry_max_ms`, each shortened by up to a fifth. A gap can come
/// late on a loaded machine, never early.
#[test]
fn the_recoverer_backs_off_as_configured() {
    use zmanager::wire::envelope::Kind;
    let config = config_file(
        "heartbeat_ms = 50\nservice_step_timeout_ms = 300\nservice_retry_ms = 400\nservice_retry_max_ms = 1600\n",
    );
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    runtime().block_on(async {
        let topic = "@reply~moderator~steps-silent~";
        let mut silent = RawClient::connect_with_prefix(&node.endpoints, "moderator", Some(topic)).await;
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        let mut take = silent.envelope("take", "");
        take.kind = Kind::Take;
        take.reply_to = topic.into();
        silent.send(&take, msgpack(&1u32)).await;
        writer.request("Review", "slow-1", &"text").await;
        let mut at = Vec::new();
        while at.len() < 6 {
            let r = silent.recv(Duration::from_secs(10)).await.expect("the step, again");
            assert_eq!((r.envelope.kind, r.envelope.id.as_str()), (Kind::Step, "slow-1"));
            at.push(Instant::now());
        }
        let gaps: Vec<u64> = at.windows(2).map(|w| (w[1] - w[0]).as_millis() as u64).collect();
        eprintln!("recoverer: gaps between deliveries {gaps:?} ms (timeout 300 + 400, 800, 1600, 1600, 1600 less up to a fifth)");
        for (gap, delay) in gaps.iter().zip([400u64, 800, 1600, 1600, 1600]) {
            let earliest = 300 + delay * 4 / 5;
            let latest = 300 + delay + 1000;
            assert!(*gap >= earliest, "a retry came early: {gap} ms < {earliest} ({gaps:?})");
            assert!(*gap <= latest, "a retry came {gap} ms after the last, past {latest} ({gaps:?})");
        }
    });
}
