//! Workers on other hosts (`docs/deployment.md`): `zmanager worker` run by
//! hand against a node that listens on another loopback address
//! (127.0.0.2, a "host" of its own; no traffic leaves the machine), over
//! tcp with CURVE keys, as a worker on another machine joins. They share
//! the load by credits; a lost one's messages are given to the others; one
//! that cannot run the node's catalog (a component it does not have) says
//! so, the node says so, and it is given none of that work.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;
use zmanager::client::{Service, ServiceOptions};
use zmanager::security::{self, Key};
use zmanager::transport::ClientKeys;
use zmanager::wire::envelope::Status;
use zmanager_tests::cli::zmanager;
use zmanager_tests::node::{TestNode, free_port};
use zmanager_tests::temp;

/// The node's "host".
const HOST: &str = "127.0.0.2";

/// A node on `HOST` with no workers of its own; `[security]` lists the
/// public keys of `workers` (`dir/<name>.key`, written here) and one
/// service, `ada`, that may push into `flows`.
struct Cluster {
    dir: PathBuf,
    node: TestNode,
    server: Key,
    ada: ClientKeys,
}

impl Cluster {
    fn start(dir: &Path, workers: &[&str], flows: &[&str], extra: &[&str]) -> Self {
        let server = security::write_new_pair(&dir.join("node")).expect("node keys");
        let ada_public = security::write_new_pair(&dir.join("ada")).expect("ada's keys");
        let (_, ada_secret) = security::read_key_file(&dir.join("ada.key")).expect("read");
        let listed: Vec<String> = workers
            .iter()
            .map(|name| {
                let public = security::write_new_pair(&dir.join(name)).expect("worker keys");
                format!("{:?}", security::z85(&public))
            })
            .collect();
        let at = |port: u16| format!("tcp://{HOST}:{port}");
        let (intake, workers, publish) = (at(free_port()), at(free_port()), at(free_port()));
        let config = format!(
            "workers = 0\nheartbeat = \"200ms\"\nliveness = \"1s\"\nwindow = 8\n\
             [endpoints]\nintake = {:?}\nworkers = {:?}\npublish = {:?}\n\
             [security]\nkey_file = \"node.key\"\nworkers = [{}]\n\
             [[security.service]]\nid = \"ada\"\npublic_key = {:?}\npush = {flows:?}\n",
            intake,
            workers,
            publish,
            listed.join(", "),
            security::z85(&ada_public),
        );
        let path = dir.join("node.toml");
        std::fs::write(&path, config).expect("write the configuration");
        let mut args = vec!["--config", path.to_str().expect("utf-8")];
        args.extend(extra);
        let node = TestNode::start_fixed(0, None, &args);
        assert_eq!(node.endpoints.workers, workers);
        Self {
            dir: dir.to_path_buf(),
            node,
            server,
            ada: ClientKeys {
                server,
                public: ada_public,
                secret: ada_secret,
            },
        }
    }

    /// `zmanager worker` with the key pair `name` and the identity
    /// `<name>.1`, its log in `dir/<name>.log`, and `extra` arguments (its
    /// flows, its components).
    fn worker(&self, name: &str, extra: &[&std::ffi::OsStr]) -> Worker {
        let identity = format!("{name}.1");
        self.worker_as(name, Some(&identity), extra)
    }

    /// Like [`Cluster::worker`], with `identity` (none: the default,
    /// HOST-PID).
    fn worker_as(&self, name: &str, identity: Option<&str>, extra: &[&std::ffi::OsStr]) -> Worker {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log"))).expect("a log");
        let identity = identity.map(|id| ["--identity", id]);
        let child = zmanager(["worker", "--endpoint", &self.node.endpoints.workers])
            .args(identity.iter().flatten())
            .args(["--heartbeat", "200ms", "--liveness", "1s", "--credits", "8"])
            .arg("--key-file")
            .arg(self.dir.join(format!("{name}.key")))
            .arg("--server-key")
            .arg(security::z85(&self.server))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn();
        Worker(child)
    }

    fn worker_log(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default()
    }

    async fn service(&self) -> Service {
        let mut options = ServiceOptions::with_endpoints("ada", &self.node.endpoints);
        options.id = Some("ada".into());
        options.handshake_timeout = Duration::from_secs(20);
        options.keys = Some(self.ada.clone());
        Service::connect(options).await.expect("ada connects")
    }
}

/// A worker run by hand: it retries its node for ever, so it is killed
/// when dropped, also by a test that fails.
struct Worker(Child);

impl Worker {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Runtime::new().expect("a runtime")
}

/// Waits until `what` holds, for at most `limit`.
fn eventually(limit: Duration, mut what: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if what() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    what()
}

fn test_flows() -> [PathBuf; 2] {
    let (flows, mappings) = zmanager_tests::test_config();
    [flows, mappings]
}

#[test]
fn workers_on_another_host_share_the_load_and_a_lost_ones_work_is_given_to_the_other() {
    let dir = temp::dir("remote-workers");
    let [flows, mappings] = test_flows();
    let catalog = [
        "--flows",
        flows.to_str().unwrap(),
        "--mappings",
        mappings.to_str().unwrap(),
    ];
    let cluster = Cluster::start(dir.path(), &["b", "c"], &["Count", "Sleep"], &catalog);
    let own = [
        "--flows".as_ref(),
        flows.as_os_str(),
        "--mappings".as_ref(),
        mappings.as_os_str(),
    ];
    // b names itself as a worker on another machine does by default
    // (its host name and pid); c is named.
    let b = cluster.worker_as("b", None, &own);
    let c = cluster.worker("c", &own);
    let (b_pid, c_pid) = (b.id(), c.id());
    let mut c = Some(c);
    runtime().block_on(async {
        let ada = cluster.service().await;
        // 200 requests at once: each answer names the process that ran it.
        let answers = futures::future::join_all((0..200).map(|n| {
            let ada = &ada;
            async move { ada.request("Count", &json!(n)).await }
        }));
        // What the node and the workers said, should any be missing (once
        // seen under CI's load: a run to look into, not to hide).
        let Ok(answers) = tokio::time::timeout(Duration::from_secs(60), answers).await else {
            panic!(
                "200 not answered within a minute\n--- node ---\n{}\n--- b ---\n{}\n--- c ---\n{}",
                cluster.node.log(),
                cluster.worker_log("b"),
                cluster.worker_log("c")
            );
        };
        let mut by_pid = std::collections::BTreeMap::<u64, u32>::new();
        for (n, answer) in answers.into_iter().enumerate() {
            let reply = answer.expect("answered");
            assert_eq!(reply.envelope.status, Status::Ok, "{:?}", reply.envelope);
            let value: serde_json::Value = reply.decode().expect("decodes");
            assert_eq!(value["payload"], json!(n), "{value}");
            *by_pid
                .entry(value["pid"].as_u64().expect("a pid"))
                .or_default() += 1;
        }
        let pids: Vec<u64> = by_pid.keys().copied().collect();
        assert_eq!(
            pids,
            {
                let mut both = vec![u64::from(b_pid), u64::from(c_pid)];
                both.sort_unstable();
                both
            },
            "both workers ran some: {by_pid:?}"
        );

        // 24 requests of 300 ms each (each worker holds 8): c is killed
        // while it runs some; the node gives them to b. None is sent again
        // once accepted, so one lost would never be answered.
        let started = Instant::now();
        let answers = futures::future::join_all((0..24).map(|n| {
            let ada = &ada;
            async move { ada.request("Sleep", &json!({"ms": 300, "n": n})).await }
        }));
        let killer = async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            drop(c.take().expect("c runs"));
        };
        let (answers, ()) = tokio::time::timeout(
            Duration::from_secs(60),
            futures::future::join(answers, killer),
        )
        .await
        .expect("24 answered within a minute");
        for (n, answer) in answers.into_iter().enumerate() {
            let reply = answer.expect("answered");
            assert_eq!(reply.envelope.status, Status::Ok, "{:?}", reply.envelope);
            let value: serde_json::Value = reply.decode().expect("decodes");
            assert_eq!(value["n"], json!(n), "{value}");
        }
        eprintln!(
            "24 answered in {:?} with a worker killed",
            started.elapsed()
        );
    });
    let log = cluster.node.log();
    assert!(
        log.lines()
            .any(|l| l.contains("worker ready") && l.contains(&format!("-{b_pid}.c"))),
        "b joined as HOST-PID:\n{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("worker lost") && l.contains("c.1") && !l.contains("messages=0")),
        "the node gave the killed worker's messages to the other:\n{log}"
    );
    drop(b);
}

#[test]
fn a_worker_without_a_component_the_catalog_uses_says_so_and_gets_none_of_its_work() {
    let dir = temp::dir("remote-missing-component");
    let component = zmanager_tests::library("zmanager-component-payments");
    let root = zmanager_tests::workspace_root().join("components/payments");
    let (flows, mappings) = (root.join("flows"), root.join("action_mappings"));
    let node_args = [
        "--component",
        component.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "--mappings",
        mappings.to_str().unwrap(),
    ];
    let cluster = Cluster::start(dir.path(), &["lacking", "able"], &["Pay"], &node_args);
    // Its own catalog is the built-in one, and it has no Payments: the
    // node sends it the node's files, which it cannot run.
    let lacking = cluster.worker("lacking", &[]);
    let refused = |log: &str| {
        log.lines().any(|l| {
            l.contains("cannot run this catalog version")
                && l.contains("no component Payments is linked or loaded")
        })
    };
    assert!(
        eventually(Duration::from_secs(20), || refused(&cluster.node.log())),
        "the node says why the worker cannot serve:\n{}",
        cluster.node.log()
    );
    assert!(
        eventually(Duration::from_secs(10), || refused(
            &cluster.worker_log("lacking")
        )),
        "the worker says why it cannot serve:\n{}",
        cluster.worker_log("lacking")
    );
    let ledger = dir.path().join("ledger");
    let payload = json!({"ledger": ledger, "seq": 1, "amount": 5, "sleep_ms": 0});
    runtime().block_on(async {
        let ada = cluster.service().await;
        let submitted = ada.submit("Pay", &payload).await.expect("accepted");
        // Only the worker that cannot run it is there: nothing runs it.
        let mut finished = Box::pin(submitted.finished());
        let early = tokio::time::timeout(Duration::from_secs(3), &mut finished).await;
        assert!(
            early.is_err(),
            "a worker that cannot run it ran it: {early:?}"
        );
        assert!(!ledger.exists(), "nothing charged yet");
        // A worker with the component joins: it runs the request.
        let able = cluster.worker("able", &["--component".as_ref(), component.as_os_str()]);
        let reply = tokio::time::timeout(Duration::from_secs(30), finished)
            .await
            .expect("run once a worker that can is there")
            .expect("answered");
        assert_eq!(reply.envelope.status, Status::Ok, "{:?}", reply.envelope);
        drop(able);
    });
    let charged = std::fs::read_to_string(&ledger).expect("the ledger");
    assert_eq!(charged.lines().count(), 1, "charged once:\n{charged}");
    drop(lacking);
}
