//! Durable subscriptions on a real node (`docs/durable.md`): a subscriber
//! away while messages are published on its prefix gets them all when it
//! comes back, in order, then live ones; past the retention bound it sees
//! how many were dropped.

use std::sync::Arc;
use std::time::{Duration, Instant};

use zmanager::client::{Service, ServiceOptions};
use zmanager::services::durable::DurableInfo;
use zmanager::services::registry;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::{RawClient, msgpack};
use zmanager_tests::node::{TestNode, fixed_endpoints};
use zmanager_tests::runtime;
use zmanager_tests::temp::config_file;

const PREFIX: &str = "Echo~~~~done";

async fn subscriber(node: &TestNode) -> Arc<Service> {
    let mut options = ServiceOptions::with_endpoints("audit", &node.endpoints);
    options.id = Some("audit".into());
    Arc::new(Service::connect(options).await.expect("connects"))
}

/// Pushes `n` Echo requests whose results go to the flow's results topic
/// (no `reply_to`), numbered from `from`.
async fn publish(client: &mut RawClient, from: usize, n: usize) {
    for i in from..from + n {
        let mut envelope = client.envelope(&format!("e-{i:05}"), "Echo");
        envelope.reply_to.clear();
        client.send(&envelope, msgpack(&i)).await;
    }
}

/// The node's durable subscriptions (`ServiceManagement_Durables`).
async fn durables(service: &Service) -> Vec<DurableInfo> {
    service
        .request(registry::DURABLES, &())
        .await
        .expect("answered")
        .decode()
        .expect("a list")
}

/// Waits until the node keeps `backlog` messages for the subscription.
async fn wait_for_backlog(service: &Service, backlog: usize) -> DurableInfo {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let all = durables(service).await;
        if let Some(d) = all.iter().find(|d| d.name == "log" && d.backlog >= backlog) {
            return d.clone();
        }
        assert!(
            Instant::now() < until,
            "backlog never reached {backlog}: {all:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[test]
fn a_subscriber_away_gets_everything_it_missed_in_order_then_live_ones() {
    let config = config_file("durable_max_messages = 20000\ndurable_max_mb = 64\n");
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        let audit = subscriber(&node).await;
        let mut log = audit
            .subscribe_durable("log", &[PREFIX.to_owned()], 200)
            .await
            .expect("subscribes");
        // Live first, to see it works before the subscriber goes away.
        publish(&mut writer, 0, 10).await;
        for seq in 1..=10 {
            let d = log.next().await.expect("no error").expect("a message");
            assert_eq!(d.seq, seq);
            assert_eq!(d.topic, PREFIX);
            log.ack(d.seq).await.expect("acked");
        }
        // The node has the acknowledgements (what a process had not
        // acknowledged when it went away it would get again).
        let watcher = Service::connect(ServiceOptions::with_endpoints("watch", &node.endpoints))
            .await
            .expect("connects");
        let until = Instant::now() + Duration::from_secs(10);
        while durables(&watcher).await.iter().all(|d| d.acked < 10) {
            assert!(Instant::now() < until, "the acknowledgements never arrived");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        // Away: its process (sockets and all) is gone.
        drop(log);
        drop(audit);
        let away = Instant::now();
        let n: usize = std::env::var("DURABLE_N").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
        publish(&mut writer, 10, n).await;
        let kept = wait_for_backlog(&watcher, n).await;
        assert_eq!((kept.dropped, kept.acked), (0, 10), "{kept:?}");
        let waited = away.elapsed();
        if waited < Duration::from_secs(5) {
            tokio::time::sleep(Duration::from_secs(5) - waited).await;
        }

        // Back, under the same name.
        let audit = subscriber(&node).await;
        let mut log = audit
            .subscribe_durable("log", &[PREFIX.to_owned()], 200)
            .await
            .expect("subscribes again");
        let mut ids = Vec::with_capacity(n);
        for expected in 11..=(10 + n as u64) {
            let d = tokio::time::timeout(Duration::from_secs(30), log.next())
                .await
                .unwrap_or_else(|_| panic!("no message {expected} within 30 s"))
                .expect("no error")
                .expect("a message");
            assert_eq!(d.seq, expected, "in order, each once");
            ids.push(d.envelope.id.clone());
            log.ack(d.seq).await.expect("acked");
        }
        let sorted = {
            let mut s = ids.clone();
            s.sort();
            s
        };
        assert_eq!(ids, sorted, "in the order they were published");
        assert_eq!(ids.first().map(String::as_str), Some("e-00010"));
        assert_eq!(ids.last().map(String::as_str), Some("e-10009"));
        // Then live ones.
        publish(&mut writer, 20_000, 5).await;
        for expected in (11 + n as u64)..(16 + n as u64) {
            let d = log.next().await.expect("no error").expect("a message");
            assert_eq!(d.seq, expected);
        }
        let after = durables(&watcher).await;
        let log_info = after.iter().find(|d| d.name == "log").expect("listed");
        eprintln!(
            "durable: away {:?} while {n} were published: got {} in order, then 5 live; {log_info:?}",
            away.elapsed(),
            ids.len()
        );
        assert_eq!(log_info.dropped, 0);
    });
}

#[test]
fn past_its_retention_bound_a_subscription_counts_what_it_dropped() {
    let config = config_file("durable_max_messages = 100\n");
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        let audit = subscriber(&node).await;
        let log = audit
            .subscribe_durable("log", &[PREFIX.to_owned()], 50)
            .await
            .expect("subscribes");
        drop(log);
        drop(audit);
        publish(&mut writer, 0, 300).await;
        let watcher = Service::connect(ServiceOptions::with_endpoints("watch", &node.endpoints))
            .await
            .expect("connects");
        let until = Instant::now() + Duration::from_secs(30);
        let info = loop {
            let all = durables(&watcher).await;
            let d = all.into_iter().find(|d| d.name == "log").expect("listed");
            if d.dropped + d.backlog as u64 >= 300 || Instant::now() > until {
                break d;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert_eq!((info.backlog, info.dropped), (100, 200), "{info:?}");
        let audit = subscriber(&node).await;
        let mut log = audit
            .subscribe_durable("log", &[PREFIX.to_owned()], 50)
            .await
            .expect("subscribes again");
        let first = log.next().await.expect("no error").expect("a message");
        assert_eq!(first.seq, 201, "the kept ones: after the 200 dropped");
        let out = zmanager(["services", "--intake", &node.endpoints.intake])
            .args(["--publish", &node.endpoints.publish])
            .run();
        let shown = out.stdout;
        let row = shown
            .lines()
            .find(|l| l.starts_with("audit\tlog\t"))
            .unwrap_or_else(|| panic!("{shown}"));
        assert!(row.ends_with("\t200"), "DROPPED is the last column: {row}");
    });
}

/// `zmanager subscribe --durable NAME` prints each message with its
/// sequence number and acknowledges it; run again under the same name, it
/// goes on after the last one it printed.
#[test]
fn zmanager_subscribe_durable_goes_on_where_it_stopped() {
    let node = TestNode::start_builtin(1);
    let (intake, publish_at) = (
        node.endpoints.intake.clone(),
        node.endpoints.publish.clone(),
    );
    let cli = move |count: &str| {
        zmanager(["subscribe", "--durable", "cli", "--service", "audit"])
            .args(["--intake", intake.as_str()])
            .args(["--publish", publish_at.as_str()])
            .args(["-n", count, PREFIX])
    };
    runtime().block_on(async {
        let first = cli("2").stdout(std::process::Stdio::piped()).spawn();
        let watcher = Service::connect(ServiceOptions::with_endpoints("watch", &node.endpoints))
            .await
            .expect("connects");
        let until = Instant::now() + Duration::from_secs(20);
        while !durables(&watcher).await.iter().any(|d| d.name == "cli") {
            assert!(Instant::now() < until, "the subscription never appeared");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        publish(&mut writer, 0, 3).await;
        let out = tokio::task::spawn_blocking(move || first.wait_with_output())
            .await
            .expect("joined")
            .expect("ran");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        let lines: Vec<&str> = printed.lines().collect();
        assert_eq!(lines.len(), 2, "{printed}");
        assert!(
            lines[0].starts_with("1 Echo~~~~done id=e-00000 "),
            "{printed}"
        );
        assert!(
            lines[1].starts_with("2 Echo~~~~done id=e-00001 "),
            "{printed}"
        );
        let again = cli.clone();
        let second = tokio::task::spawn_blocking(move || again("1").run())
            .await
            .expect("joined");
        let printed = second.stdout;
        assert!(
            printed.starts_with("3 Echo~~~~done id=e-00002 "),
            "the next one, not one again: {printed}"
        );
    });
}

/// The node keeps durable subscriptions in memory: restarted, it has lost
/// them, and libzmq reconnects without a word. The subscriber notices (it
/// subscribes again when nothing comes), the node makes the subscription
/// afresh (another `accepted_us`), and the subscriber takes its numbering
/// from 1 again instead of skipping its first messages as ones it had.
#[test]
fn after_the_node_restarts_the_subscriber_gets_the_new_subscriptions_messages() {
    let (_, endpoints) = fixed_endpoints();
    let config = config_file(&endpoints);
    let mut node = TestNode::start_fixed(1, None, &["--config", config.path()]);
    let limit = Duration::from_secs(30);
    runtime().block_on(async {
        let audit = subscriber(&node).await;
        let mut log = audit
            .subscribe_durable("log", &[PREFIX.to_owned()], 10)
            .await
            .expect("subscribes");
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        publish(&mut writer, 0, 3).await;
        for seq in 1..=3 {
            let d = tokio::time::timeout(limit, log.next())
                .await
                .expect("in time")
                .expect("no error")
                .expect("a message");
            assert_eq!(
                (d.seq, d.envelope.id.as_str()),
                (seq, format!("e-{:05}", seq - 1).as_str())
            );
            log.ack(d.seq).await.expect("acked");
        }
        log.flush().await.expect("the acks reached the node");
        drop(writer);

        node.restart();
        node.wait_for_workers(1);
        let reading = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 3 {
                let d = log.next().await.expect("no error").expect("a message");
                log.ack(d.seq).await.expect("acked");
                got.push((d.seq, d.envelope.id));
            }
            got
        });
        // Published once the node has the subscription again (before, it
        // keeps nothing for it: what a restart loses).
        let until = Instant::now() + limit;
        while !durables(&audit).await.iter().any(|d| d.name == "log") {
            assert!(
                Instant::now() < until,
                "the subscriber never subscribed again"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        publish(&mut writer, 3, 3).await;
        let got = tokio::time::timeout(limit, reading)
            .await
            .expect("the new messages came")
            .expect("joined");
        let expected: Vec<(u64, String)> = (1..=3)
            .map(|seq| (seq, format!("e-{:05}", seq + 2)))
            .collect();
        assert_eq!(got, expected, "numbered from 1 again, none skipped");
    });
}

/// What the node refuses around durable subscriptions, told to the
/// subscriber with its code: deliveries to a topic not its own (6), a
/// subscription past `max_durables` (12), an ack under a name it has no
/// subscription under (6).
#[test]
fn subscribes_and_acks_that_do_not_fit_are_refused_with_their_code() {
    use zmanager::wire::envelope::Kind;
    use zmanager::wire::error_code::ErrorCode;
    let config = config_file("max_durables = 1\n");
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    runtime().block_on(async {
        let topic = "@reply~audit~durable-x~";
        let mut audit = RawClient::connect_with_prefix(&node.endpoints, "audit", Some(topic)).await;
        let limit = Duration::from_secs(20);
        let control = |client: &RawClient, kind: Kind, reply_to: &str| {
            let mut e = client.envelope("c-1", "");
            e.kind = kind;
            reply_to.clone_into(&mut e.reply_to);
            e
        };
        let subscribe =
            |name: &str| msgpack(&serde_json::json!({"name": name, "prefixes": [PREFIX]}));
        audit
            .send(
                &control(&audit, Kind::Subscribe, "@reply~writer~"),
                subscribe("a"),
            )
            .await;
        let r = audit.recv(limit).await.expect("refused");
        assert_eq!(r.topic, "@reply~audit~", "told on its own topic");
        assert_eq!(
            r.envelope.error.map(|e| e.code),
            Some(ErrorCode::BadRequest)
        );

        audit
            .send(&control(&audit, Kind::Subscribe, topic), subscribe("a"))
            .await;
        let made = audit.recv(limit).await.expect("made");
        assert_eq!(made.envelope.kind, Kind::Accepted);
        let acked: u64 = rmp_serde::from_slice(&made.payload).expect("a number");
        assert_eq!(acked, 0);
        audit
            .send(&control(&audit, Kind::Subscribe, topic), subscribe("b"))
            .await;
        let r = audit.recv(limit).await.expect("refused");
        let error = r.envelope.error.expect("an error");
        assert_eq!(error.code, ErrorCode::Overloaded);
        assert!(error.message.contains("max_durables"), "{}", error.message);

        let ack = msgpack(&serde_json::json!({"name": "nope", "seq": 1}));
        audit.send(&control(&audit, Kind::Ack, topic), ack).await;
        let r = audit.recv(limit).await.expect("refused");
        assert_eq!(
            r.envelope.error.map(|e| e.code),
            Some(ErrorCode::BadRequest)
        );
    });
}
