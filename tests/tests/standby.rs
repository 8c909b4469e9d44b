//! An active node and a standby on one PostgreSQL journal, as on two hosts
//! (each on a loopback address of its own, 127.0.0.2 and 127.0.0.3), with
//! a private PostgreSQL server for the test (`tests/postgres/`):
//!
//! - the active node killed with SIGKILL while it holds 10,000
//!   acknowledged requests: the standby takes over once the lease runs out
//!   and answers every one of them, by recovery alone;
//! - the active node frozen (SIGSTOP) while its workers run its requests,
//!   the standby taking over, then the old active thawed (SIGCONT): it
//!   serves nothing more and stops, and every request is answered once;
//! - a service and workers given both nodes' endpoints, moving to the
//!   standby by themselves;
//! - the active node's dead letters, the standby's once it takes over.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use zmanager::journal::{Backend, Event, EventKind, Journal, Location};
use zmanager::wire::envelope::{Kind, Status};
use zmanager_client::{Service, ServiceOptions};
use zmanager_tests::checker::Checker;
use zmanager_tests::client::{RawClient, Received};
use zmanager_tests::node::{StandaloneWorker, TestNode, endpoints_on};
use zmanager_tests::temp::{TempFile, config_file};
use zmanager_tests::{freeze, kill, runtime, test_config};

const TIMING: [&str; 4] = ["--heartbeat-ms", "200", "--liveness-ms", "1000"];
const SERVICE: &str = "ha";

#[derive(Debug, Serialize, Deserialize)]
struct Work {
    n: u64,
    ms: u64,
}

/// A node's configuration on the journal `url`, as a standby (the first
/// started is the active one: it finds the lease free).
fn node_config(url: &str, host: &str) -> TempFile {
    let (_, endpoints) = endpoints_on(host);
    config_file(&format!(
        "heartbeat_ms = 200\nliveness_ms = 1000\nmax_pending = 20000\n\
         [journal]\nsync = \"full\"\nbackend = \"postgres\"\nurl = {url:?}\n\
         lease = \"1s\"\nstandby = true\n{endpoints}"
    ))
}

/// Starts a node with no workers of its own on `config`; returns once it
/// listens, which a standby does only once it holds the lease.
fn start(config: &TempFile) -> TestNode {
    let (flows, mappings) = test_config();
    TestNode::start_fixed(0, Some((&flows, &mappings)), &["--config", config.path()])
}

/// A fresh database of the test PostgreSQL server, and the configurations
/// of two nodes on it (on 127.0.0.2 and 127.0.0.3); `None` without
/// PostgreSQL.
fn journal_and_configs(what: &str) -> Option<(String, [TempFile; 2])> {
    let url = zmanager_test_postgres::shared(what)?.database();
    let configs = [
        node_config(&url, "127.0.0.2"),
        node_config(&url, "127.0.0.3"),
    ];
    Some((url, configs))
}

/// The endpoints in a node's configuration: a standby's, before it listens.
fn endpoints_of(config: &TempFile) -> zmanager::node::config::Endpoints {
    zmanager::node::config::NodeConfig::from_file(std::path::Path::new(config.path()))
        .expect("the node's configuration")
        .endpoints
}

/// Starts the node of `config` on a thread of its own: the thread ends
/// once the node listens (a standby: once it took the lease over), with
/// the node and when that was.
fn start_standby(config: TempFile) -> std::thread::JoinHandle<(TestNode, Instant, TempFile)> {
    std::thread::spawn(move || {
        let node = start(&config);
        (node, Instant::now(), config)
    })
}

/// Pushes `m<n>` into the `Sleep` flow (`ms` each), asking for its
/// acknowledgement.
async fn send(client: &mut RawClient, n: u64, ms: u64) {
    let mut envelope = client.envelope(&format!("m{n}"), "Sleep");
    envelope.ack = true;
    let payload = rmp_serde::to_vec_named(&Work { n, ms }).expect("encode");
    client.send(&envelope, Bytes::from(payload)).await;
}

/// Acknowledgements and results, per request id, over both nodes.
#[derive(Default)]
struct Seen {
    acked: HashSet<String>,
    results: Checker,
}

impl Seen {
    fn take(&mut self, r: &Received) {
        match r.envelope.kind {
            Kind::Accepted => {
                let ids: Vec<String> = rmp_serde::from_slice(&r.payload).expect("acked ids");
                self.acked.extend(ids);
            }
            Kind::Result => {
                assert_eq!(r.envelope.status, Status::Ok, "{:?}", r.envelope.error);
                let echoed: Work = zmanager_sdk::decode(&r.payload).expect("echoed payload");
                assert_eq!(format!("m{}", echoed.n), r.envelope.id, "another's payload");
                self.results.received(&r.envelope.id);
            }
            other => panic!("unexpected {other:?} message"),
        }
    }

    fn unanswered(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .acked
            .iter()
            .filter(|id| !self.results.has_received(id))
            .cloned()
            .collect();
        ids.sort();
        ids
    }
}

/// Takes what `client` receives until `done` says so or `limit` passes.
async fn collect(
    client: &mut RawClient,
    seen: &mut Seen,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) {
    collect_all(&mut [client], seen, limit, done).await;
}

/// Takes what any of `clients` receives until `done` says so or `limit`
/// passes.
async fn collect_all(
    clients: &mut [&mut RawClient],
    seen: &mut Seen,
    limit: Duration,
    done: impl Fn(&Seen) -> bool,
) {
    let deadline = Instant::now() + limit;
    while !done(seen) && Instant::now() < deadline {
        let mut idle = true;
        for client in clients.iter_mut() {
            while let Some(r) = client.try_recv() {
                seen.take(&r);
                idle = false;
            }
        }
        if idle {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// What the journal (read off the runtime: the PostgreSQL client runs its
/// own) says of each of `ids`: how many times it completed, and whether
/// workers of both nodes (named `a-…` and `b-…`) were given it.
fn histories(url: &str, ids: &[String]) -> Vec<(String, usize, bool)> {
    let journal = Backend::open_to_read(&Location::Postgres(url.to_owned())).expect("the journal");
    ids.iter()
        .map(|id| {
            let history = journal.history(SERVICE, id).expect("history");
            let completed = history
                .iter()
                .filter(|e| e.event.kind() == EventKind::Completed)
                .count();
            let given_to = |prefix: &[u8]| {
                history.iter().any(|e| {
                    matches!(&e.event, Event::Dispatched { worker, .. } if worker.starts_with(prefix))
                })
            };
            (id.clone(), completed, given_to(b"a-") && given_to(b"b-"))
        })
        .collect()
}

#[test]
fn a_standby_takes_over_from_a_killed_active_and_answers_every_acknowledged_request() {
    let Some((_, [config_a, config_b])) = journal_and_configs("the standby's takeover") else {
        return;
    };
    let active = start(&config_a);
    let standby_intake =
        zmanager::node::config::NodeConfig::from_file(std::path::Path::new(config_b.path()))
            .expect("the standby's configuration")
            .endpoints
            .intake;
    let standby = start_standby(config_b);
    const N: u64 = 10_000;
    let mut seen = Seen::default();
    let killed = runtime().block_on(async {
        let mut client = RawClient::connect(&active.endpoints, SERVICE).await;
        for n in 0..N {
            seen.results.sent(&format!("m{n}"));
            send(&mut client, n, 1).await;
        }
        collect(&mut client, &mut seen, Duration::from_secs(60), |s| {
            s.acked.len() as u64 == N
        })
        .await;
        assert_eq!(seen.acked.len() as u64, N, "every request acknowledged");
        // No worker ran anything: all 10,000 are pending in the active
        // node when it dies.
        assert_eq!(seen.results.answered(), 0);
        // The standby, waiting for the lease, listens on nothing.
        let address = standby_intake.trim_start_matches("tcp://");
        assert!(
            std::net::TcpStream::connect(address).is_err(),
            "the waiting standby accepted a connection at {address}"
        );
        kill("KILL", active.pid());
        Instant::now()
    });
    let (standby, serving_at, _config_b) = standby.join().expect("the standby started");
    let takeover = serving_at.duration_since(killed);
    let log = standby.log();
    assert!(log.contains("journal: waiting for the lease"), "{log}");
    assert!(log.contains("journal: this node holds the lease"), "{log}");
    runtime().block_on(async {
        let mut client = RawClient::connect(&standby.endpoints, SERVICE).await;
        let _workers: Vec<StandaloneWorker> = ["b-1", "b-2"]
            .iter()
            .map(|name| StandaloneWorker::start(&standby.endpoints.workers, name, &TIMING))
            .collect();
        // Nothing is sent again: recovery alone must answer them all.
        collect(&mut client, &mut seen, Duration::from_secs(120), |s| {
            s.unanswered().is_empty()
        })
        .await;
        // Late copies count as duplicates.
        collect(&mut client, &mut seen, Duration::from_secs(1), |_| false).await;
    });
    let report = seen.results.report();
    println!(
        "active killed with {N} acknowledged requests pending: the standby served {} ms later \
         (lease 1 s); answered {} of {N} by recovery alone, lost {}, duplicated {}, unexpected {}",
        takeover.as_millis(),
        seen.results.answered(),
        seen.unanswered().len(),
        report.duplicated,
        report.unexpected
    );
    let unanswered = seen.unanswered();
    assert!(
        unanswered.is_empty(),
        "{} acknowledged, never answered: {:?}",
        unanswered.len(),
        &unanswered[..unanswered.len().min(10)]
    );
    assert_eq!(report.duplicated, 0, "duplicated results");
    assert_eq!(report.unexpected, 0);
}

#[test]
fn an_old_active_that_comes_back_serves_nothing_and_stops() {
    let Some((url, [config_a, config_b])) = journal_and_configs("the old active's fencing") else {
        return;
    };
    let mut active = start(&config_a);
    let standby = start_standby(config_b);
    const N: u64 = 600;
    let mut seen = Seen::default();
    let rt = runtime();
    // The old active's service stays subscribed to it throughout: any
    // result it published after the takeover would be counted.
    let mut on_old = rt.block_on(async {
        let mut client = RawClient::connect(&active.endpoints, SERVICE).await;
        let _workers: Vec<StandaloneWorker> = ["a-1", "a-2"]
            .iter()
            .map(|name| StandaloneWorker::start(&active.endpoints.workers, name, &TIMING))
            .collect();
        for n in 0..N {
            seen.results.sent(&format!("m{n}"));
            send(&mut client, n, 20).await;
        }
        collect(&mut client, &mut seen, Duration::from_secs(60), |s| {
            s.acked.len() as u64 == N && s.results.answered() >= 50
        })
        .await;
        assert_eq!(seen.acked.len() as u64, N, "every request acknowledged");
        // Frozen while its workers run its requests: they go on and send
        // their results to it.
        freeze(active.pid());
        (client, _workers)
    });
    let answered_before = seen.results.answered();
    let (standby, _, _config_b) = standby.join().expect("the standby started");
    rt.block_on(async {
        let mut client = RawClient::connect(&standby.endpoints, SERVICE).await;
        let _workers: Vec<StandaloneWorker> = ["b-1", "b-2"]
            .iter()
            .map(|name| StandaloneWorker::start(&standby.endpoints.workers, name, &TIMING))
            .collect();
        // The old active thaws while the standby serves. What it had
        // committed before it froze it may still publish; nothing else.
        kill("CONT", active.pid());
        let both = &mut [&mut client, &mut on_old.0];
        collect_all(both, &mut seen, Duration::from_secs(20), |s| {
            s.unanswered().is_empty()
        })
        .await;
        // A result the old active had committed, but whose publication
        // died with it, never comes: asked again (within the dedupe
        // window), the new active answers it from the journal.
        let missed = seen.unanswered();
        // Only those the journal has completed are asked again: a resend
        // of a request the journal lost would run it anew and hide it.
        let recorded = tokio::task::block_in_place(|| histories(&url, &missed));
        let not_completed: Vec<&String> = recorded
            .iter()
            .filter(|(_, completed, _)| *completed != 1)
            .map(|(id, _, _)| id)
            .collect();
        assert!(
            not_completed.is_empty(),
            "unanswered and not completed in the journal: {not_completed:?}"
        );
        for id in &missed {
            let n: u64 = id.trim_start_matches('m').parse().expect("m<n>");
            send(both[0], n, 20).await;
        }
        collect_all(both, &mut seen, Duration::from_secs(20), |s| {
            s.unanswered().is_empty()
        })
        .await;
        collect_all(both, &mut seen, Duration::from_secs(1), |_| false).await;
        println!("asked again for a result that never came: {}", missed.len());
    });
    let code = active.wait_exit(Duration::from_secs(30));
    let log = active.log();
    assert!(
        matches!(code, Some(c) if c != 0),
        "the old active stopped, failing: {code:?}\n{log}"
    );
    assert!(
        log.contains("stopping at once: another node holds the journal"),
        "{log}"
    );
    let report = seen.results.report();
    let ids: Vec<String> = (0..N).map(|n| format!("m{n}")).collect();
    let histories = histories(&url, &ids);
    let completed_twice: Vec<&(String, usize, bool)> =
        histories.iter().filter(|(_, n, _)| *n != 1).collect();
    let taken_from_the_old = histories.iter().filter(|(_, _, both)| *both).count();
    println!(
        "old active frozen after {answered_before} of {N} answered, thawed while the standby \
         served: exited with {code:?}; answered {} of {N}, duplicated {}, unexpected {}, \
         completed other than once in the journal {}; in flight at the old active's workers \
         and run again by the new one's {taken_from_the_old}",
        seen.results.answered(),
        report.duplicated,
        report.unexpected,
        completed_twice.len()
    );
    assert!(
        taken_from_the_old > 0,
        "nothing was in flight at the old active when it froze: fencing was not tested"
    );
    assert!(
        log.contains("journal commit refused: another node holds the journal")
            || log.contains("another node holds the lease now"),
        "the old active found it was fenced off:\n{log}"
    );
    assert!(seen.unanswered().is_empty(), "{:?}", seen.unanswered());
    assert_eq!(report.duplicated, 0, "a result published by both nodes");
    assert_eq!(report.unexpected, 0);
    assert!(
        completed_twice.is_empty(),
        "completed other than once: {:?}",
        &completed_twice[..completed_twice.len().min(10)]
    );
}

/// A service (the Rust client) and workers given both nodes' endpoints
/// move to the standby by themselves when the active node dies: every
/// request the service submitted is answered, by a node that has no
/// workers of its own, so the workers must have moved too. The client
/// resends what has no result yet (that is how it moves), so this test
/// cannot see a request the journal lost: the first test, which sends
/// nothing again, is the one that does.
#[test]
fn a_service_and_workers_given_both_nodes_move_to_the_new_active_by_themselves() {
    let Some((_, [config_a, config_b])) = journal_and_configs("the clients' failover") else {
        return;
    };
    let active = start(&config_a);
    let standby_endpoints = endpoints_of(&config_b);
    let standby = start_standby(config_b);
    let _workers: Vec<StandaloneWorker> = ["w-1", "w-2"]
        .iter()
        .map(|name| {
            let mut args = TIMING.to_vec();
            args.extend(["--endpoint", standby_endpoints.workers.as_str()]);
            StandaloneWorker::start(&active.endpoints.workers, name, &args)
        })
        .collect();
    const N: u64 = 300;
    let rt = runtime();
    let (answered, killed_after) = rt.block_on(async {
        let mut options = ServiceOptions::with_endpoints("mover", &active.endpoints);
        options.standbys = vec![(&standby_endpoints).into()];
        options.retry_after = Duration::from_secs(2);
        options.handshake_timeout = Duration::from_secs(3);
        let service = std::sync::Arc::new(Service::connect(options).await.expect("connect"));
        // A subscription of the service, which moves with it.
        let mut announced = service
            .subscribe(&["Announce~PUBLISH~".to_owned()])
            .await
            .expect("subscribe");
        let announce = |what: &'static str| {
            let service = std::sync::Arc::clone(&service);
            async move { service.request("Announce", &what).await.expect("announced") }
        };
        announce("before").await;
        let got = tokio::time::timeout(Duration::from_secs(10), announced.next())
            .await
            .expect("published by the active node")
            .expect("a publication");
        assert_eq!(got.topic, "Announce~PUBLISH~Subject~Announce~announced");
        let answered = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let tasks: Vec<_> = (0..N)
            .map(|n| {
                let service = std::sync::Arc::clone(&service);
                let answered = std::sync::Arc::clone(&answered);
                tokio::spawn(async move {
                    let reply = service
                        .request("Sleep", &Work { n, ms: 20 })
                        .await
                        .expect("a result");
                    let echoed: Work = reply.decode().expect("echoed");
                    assert_eq!(echoed.n, n, "another request's result");
                    answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    n
                })
            })
            .collect();
        // The active node dies in the middle of the work.
        while answered.load(std::sync::atomic::Ordering::SeqCst) < N / 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let killed_after = answered.load(std::sync::atomic::Ordering::SeqCst);
        kill("KILL", active.pid());
        let mut ns = Vec::new();
        for task in tasks {
            let n = tokio::time::timeout(Duration::from_secs(120), task)
                .await
                .expect("answered in time")
                .expect("the request's task");
            ns.push(n);
        }
        ns.sort_unstable();
        // The service is on the standby now, and so is its subscription.
        let seen: String = announce("after").await.decode().expect("echoed");
        assert_eq!(seen, "after");
        let got = tokio::time::timeout(Duration::from_secs(10), announced.next())
            .await
            .expect("published by the new active node, on the moved subscription")
            .expect("a publication");
        let said: String = rmp_serde::from_slice(&got.payload).expect("its payload");
        assert_eq!(said, "after");
        (ns, killed_after)
    });
    let (standby, _, _config_b) = standby.join().expect("the standby started");
    println!(
        "the active node killed after {killed_after} of {N} results: the service and both \
         workers moved to the standby by themselves; {} of {N} answered",
        answered.len()
    );
    assert_eq!(
        answered,
        (0..N).collect::<Vec<_>>(),
        "every request answered once"
    );
    let log = standby.log();
    assert!(
        log.contains("worker ready worker=w-1"),
        "the workers moved:\n{log}"
    );
    assert!(
        log.contains("worker ready worker=w-2"),
        "the workers moved:\n{log}"
    );
}

/// `zmanager dlq <args> --config <node's>`: the dead letters of the
/// journal's database, whichever node wrote them.
fn dlq(config: &TempFile, args: &[&str]) -> zmanager_tests::cli::Output {
    zmanager_tests::cli::zmanager(["dlq"])
        .args(args)
        .arg("--config")
        .arg(config.path())
        .run()
}

/// Dead letters are kept in the journal's database: the active node's are
/// the standby's once it takes over, numbered on from them, and `zmanager
/// dlq` lists and replays them there from the configuration alone (no
/// data directory: the node's has none of them).
#[test]
fn the_dead_letters_of_the_active_are_the_standbys_and_are_replayed_there() {
    let Some((url, [config_a, config_b])) = journal_and_configs("dead letters on PostgreSQL")
    else {
        return;
    };
    let active = start(&config_a);
    let standby_endpoints = endpoints_of(&config_b);
    let standby = start_standby(config_b);
    let _worker = {
        let mut args = TIMING.to_vec();
        args.extend(["--endpoint", standby_endpoints.workers.as_str()]);
        StandaloneWorker::start(&active.endpoints.workers, "w-1", &args)
    };
    let scratch = zmanager_tests::temp::dir("dlq-marker");
    let marker = scratch.path().join("broken");
    std::fs::write(&marker, b"").expect("the fault's marker");
    let rt = runtime();
    // `Flaky` panics while the marker exists: dead-lettered after every attempt.
    let dead_letter = |endpoints: &zmanager::node::config::Endpoints, id: &str| {
        rt.block_on(async {
            let service = Service::connect(ServiceOptions::with_endpoints(SERVICE, endpoints))
                .await
                .expect("connect");
            let reply = service
                .request("Flaky", &serde_json::json!({ "marker": marker, "id": id }))
                .await;
            match reply {
                Err(zmanager::client::ServiceError::Failed { error, .. }) => assert_eq!(
                    error.code,
                    zmanager::wire::error_code::ErrorCode::DeadLettered,
                    "{error:?}"
                ),
                other => panic!("expected a dead letter, got {other:?}"),
            }
        });
    };
    let began = Instant::now();
    dead_letter(&active.endpoints, "first");
    println!("dead-lettered by the active after {:?}", began.elapsed());
    let active_data = active.data_dir.clone();
    kill("KILL", active.pid());
    drop(active);
    let (standby, _, config_b) = standby.join().expect("the standby started");
    // The worker moved to the standby by itself; the next dead letter is
    // numbered after the old active's.
    println!("the standby took over after {:?}", began.elapsed());
    dead_letter(&standby.endpoints, "second");
    println!("dead-lettered by the standby after {:?}", began.elapsed());
    assert!(
        !zmanager::dead_letter::database_path(&active_data).exists(),
        "no dead letter was kept in the data directory"
    );

    let listed = dlq(&config_b, &["list"]);
    let text = listed.stdout.clone();
    assert!(listed.status.success(), "{text}\n{}", listed.stderr);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(lines[0].starts_with("#1 flow=Flaky"), "{text}");
    assert!(lines[1].starts_with("#2 flow=Flaky"), "{text}");
    let shown = dlq(&config_b, &["show", "1"]);
    let shown = shown.stdout;
    assert!(shown.contains("\"id\":\"first\""), "{shown}");
    assert!(shown.contains("probe: panicking"), "{shown}");

    // The fault goes away: both replayed through the standby, marked there.
    std::fs::remove_file(&marker).expect("remove the marker");
    let replayed = dlq(&config_b, &["replay", "--all"]);
    println!("replayed after {:?}", began.elapsed());
    let (out, err) = (&replayed.stdout, &replayed.stderr);
    assert!(replayed.status.success(), "{out}\n{err}");
    assert!(
        err.contains("2 dead letters: 2 ok (marked replayed)"),
        "{out}\n{err}"
    );
    let listed = dlq(&config_b, &["list"]);
    let text = listed.stdout.clone();
    assert_eq!(text.matches("(replayed)").count(), 2, "{text}");
    // As the database has it, whoever asks.
    let store =
        zmanager::dead_letter::DeadLetterStore::open(&Location::Postgres(url)).expect("the store");
    use zmanager::dead_letter::DeadLetterLog as _;
    assert_eq!(store.count().expect("count"), 2);
    drop(standby);
}
