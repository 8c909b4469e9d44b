//! A node with `[security]`: CurveZMQ on intake and publish, each key bound
//! to a service id (`docs/security.md`). The clients are libzmq's, as a
//! pyzmq service's would be.

use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::json;
use zmanager::security::{self, Key};
use zmanager::wire::envelope::{Envelope, Kind, Status};
use zmanager::wire::error_code::ErrorCode;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::msgpack;
use zmanager_tests::node::TestNode;
use zmanager_tests::temp;

/// A service's two libzmq sockets, with its own key pair.
struct Client {
    push: zmq::Socket,
    sub: zmq::Socket,
    service: String,
}

impl Client {
    fn connect(node: &TestNode, server: &Key, keys: (Key, Key), service: &str) -> Self {
        let context = zmq::Context::new();
        let secure = |kind| {
            let socket = context.socket(kind).expect("a socket");
            socket.set_curve_serverkey(server).expect("server key");
            socket.set_curve_publickey(&keys.0).expect("public key");
            socket.set_curve_secretkey(&keys.1).expect("secret key");
            socket.set_linger(0).expect("linger");
            socket
        };
        let push = secure(zmq::PUSH);
        push.connect(&node.endpoints.intake)
            .expect("connect intake");
        let sub = secure(zmq::SUB);
        sub.connect(&node.endpoints.publish)
            .expect("connect publish");
        sub.set_subscribe(format!("@reply~{service}~").as_bytes())
            .expect("subscribe");
        sub.set_rcvtimeo(200).expect("timeout");
        Self {
            push,
            sub,
            service: service.to_owned(),
        }
    }

    fn envelope(&self, id: &str, flow: &str) -> Envelope {
        let mut e = Envelope::request(id, flow);
        e.service.clone_from(&self.service);
        e.reply_to = format!("@reply~{}~", self.service);
        e
    }

    fn send(&self, envelope: &Envelope, payload: &[u8]) {
        let frames = [
            format!("{}~", envelope.flow).into_bytes(),
            envelope.encode(),
            payload.to_vec(),
        ];
        self.push
            .send_multipart(frames, zmq::DONTWAIT)
            .unwrap_or_else(|e| panic!("send: {e}"));
    }

    /// The next message on its reply topic within `limit`.
    fn recv(&self, limit: Duration) -> Option<Envelope> {
        self.recv_with_payload(limit).map(|(e, _)| e)
    }

    /// The same, with its payload.
    fn recv_with_payload(&self, limit: Duration) -> Option<(Envelope, Vec<u8>)> {
        let until = Instant::now() + limit;
        while Instant::now() < until {
            if let Ok(mut frames) = self.sub.recv_multipart(0) {
                let payload = frames.pop().expect("a payload");
                return Some((Envelope::decode(&frames[1]).expect("an envelope"), payload));
            }
        }
        None
    }

    /// Pings until the node answers (the subscription is then live); false
    /// when nothing came back within `limit`.
    fn handshake(&self, limit: Duration) -> bool {
        let until = Instant::now() + limit;
        let mut n = 0;
        while Instant::now() < until {
            n += 1;
            let mut ping = self.envelope(&format!("ping-{n}"), "");
            ping.kind = Kind::Ping;
            let _ = self
                .push
                .send_multipart([b"~".to_vec(), ping.encode(), vec![0xc0]], zmq::DONTWAIT);
            if let Some(e) = self.recv(Duration::from_millis(200)) {
                assert_eq!(e.kind, Kind::Ping);
                while self.recv(Duration::from_millis(200)).is_some() {}
                return true;
            }
        }
        false
    }
}

/// A node whose `[security]` lists `services`, on ipc sockets in `dir`;
/// each may push into Greeting and do nothing else.
fn secure_node(dir: &Path, services: &[(&str, &Key)]) -> (TestNode, Key) {
    let entries: Vec<(&str, &Key, &str)> = services
        .iter()
        .map(|(id, k)| (*id, *k, "push = [\"Greeting\"]\n"))
        .collect();
    secure_node_with(dir, &entries)
}

/// Like [`secure_node`], each service with the grants its TOML lines give.
fn secure_node_with(dir: &Path, services: &[(&str, &Key, &str)]) -> (TestNode, Key) {
    zmanager_tests::secure::node_with(dir, services)
}

fn pair() -> (Key, Key) {
    security::new_pair().expect("CURVE keys")
}

/// What was measured before keys: a client pushing as service B with the
/// id B would use next had B's own request absorbed as a duplicate and
/// received B's result. Now the key decides the service: the forgery is
/// refused (code 19, told to the forger alone) and B's request runs.
#[test]
fn a_service_is_the_id_its_key_is_bound_to_and_no_other() {
    let dir = temp::dir("secure");
    let (ada_keys, mallory_keys) = (pair(), pair());
    let (node, server) = secure_node(
        dir.path(),
        &[("ada", &ada_keys.0), ("mallory", &mallory_keys.0)],
    );
    let ada = Client::connect(&node, &server, ada_keys, "ada");
    let mallory = Client::connect(&node, &server, mallory_keys, "mallory");
    assert!(
        ada.handshake(Duration::from_secs(10)),
        "ada connects with her key"
    );
    assert!(mallory.handshake(Duration::from_secs(10)));

    // mallory claims to be ada, with the id ada will use, and ada's topic.
    let forged = ada.envelope("g-1", "Greeting");
    mallory.send(&forged, &msgpack(&json!({"name": "mallory"})));
    let refused = mallory.recv(Duration::from_secs(10)).expect("told why");
    assert_eq!(refused.id, "g-1");
    let error = refused.error.expect("an error");
    assert_eq!(error.code, ErrorCode::WrongService);
    assert!(
        error.message.contains("its key is \"mallory\"'s"),
        "{}",
        error.message
    );
    // mallory as herself, but with ada's reply topic: refused too.
    let mut sneaky = mallory.envelope("s-1", "Greeting");
    sneaky.reply_to = "@reply~ada~".into();
    mallory.send(&sneaky, &msgpack(&json!({"name": "mallory"})));
    let refused = mallory.recv(Duration::from_secs(10)).expect("told why");
    assert_eq!(refused.error.map(|e| e.code), Some(ErrorCode::WrongService));

    // ada's own request with that id runs: nothing was absorbed.
    ada.send(
        &ada.envelope("g-1", "Greeting"),
        &msgpack(&json!({"name": "ada"})),
    );
    let result = ada.recv(Duration::from_secs(10)).expect("ada's result");
    assert_eq!((result.id.as_str(), result.status), ("g-1", Status::Ok));
    assert!(
        ada.recv(Duration::from_millis(500)).is_none(),
        "and nothing else"
    );
}

/// Measured before: a third subscriber read 50 of B's 50 results. Now a
/// service with a valid key of its own subscribes to B's reply topic, to
/// the whole `@reply~` space and to everything, and reads none of them,
/// while B reads its own and a service granted `Greeting~~~~done` reads
/// the flow's shared results.
#[test]
fn a_rogue_subscriber_with_a_valid_key_reads_nothing_of_anothers() {
    let dir = temp::dir("secure-rogue");
    let (ada_keys, mallory_keys, auditor_keys) = (pair(), pair(), pair());
    let (node, server) = secure_node_with(
        dir.path(),
        &[
            ("ada", &ada_keys.0, "push = [\"Greeting\"]\n"),
            ("mallory", &mallory_keys.0, ""),
            (
                "auditor",
                &auditor_keys.0,
                "subscribe = [\"Greeting~~~~done\"]\n",
            ),
        ],
    );
    let ada = Client::connect(&node, &server, ada_keys, "ada");
    let mallory = Client::connect(&node, &server, mallory_keys, "mallory");
    let auditor = Client::connect(&node, &server, auditor_keys, "auditor");
    for prefix in ["@reply~ada~", "@reply~", ""] {
        mallory
            .sub
            .set_subscribe(prefix.as_bytes())
            .expect("subscribe");
    }
    auditor
        .sub
        .set_subscribe(b"Greeting~~~~done")
        .expect("subscribe");
    assert!(ada.handshake(Duration::from_secs(10)));
    assert!(mallory.handshake(Duration::from_secs(10)));
    assert!(auditor.handshake(Duration::from_secs(10)));

    for i in 0..50 {
        ada.send(
            &ada.envelope(&format!("r-{i}"), "Greeting"),
            &msgpack(&json!({"name": "ada"})),
        );
    }
    // One request whose result goes to the flow's shared topic.
    let mut shared = ada.envelope("shared-1", "Greeting");
    shared.reply_to.clear();
    ada.send(&shared, &msgpack(&json!({"name": "ada"})));
    let mut got = 0;
    while let Some(e) = ada.recv(Duration::from_secs(5)) {
        assert_eq!(e.status, Status::Ok);
        got += 1;
        if got == 50 {
            break;
        }
    }
    assert_eq!(got, 50, "ada reads her 50");
    let audited = auditor
        .recv(Duration::from_secs(5))
        .expect("the shared result");
    assert_eq!(audited.id, "shared-1");
    assert!(
        auditor.recv(Duration::from_millis(500)).is_none(),
        "and only that"
    );
    assert!(
        mallory.recv(Duration::from_secs(1)).is_none(),
        "mallory reads 0 of ada's"
    );
    let log = node.log();
    assert!(log.contains("refused a subscription"), "{log}");
}

/// A service may push only into the flows it is granted, and use service
/// management only with `register = true`: code 20, to its own topic.
#[test]
fn a_service_may_push_only_into_the_flows_it_is_granted() {
    let dir = temp::dir("secure-push");
    let ada_keys = pair();
    let (node, server) = secure_node(dir.path(), &[("ada", &ada_keys.0)]);
    let ada = Client::connect(&node, &server, ada_keys, "ada");
    assert!(ada.handshake(Duration::from_secs(10)));
    for (id, flow) in [("e-1", "Echo"), ("r-1", "ServiceManagement_Register")] {
        ada.send(&ada.envelope(id, flow), &msgpack(&json!({"id": "ada"})));
        let refused = ada.recv(Duration::from_secs(10)).expect("told why");
        assert_eq!(refused.id, id);
        let error = refused.error.expect("an error");
        assert_eq!(
            error.code,
            ErrorCode::Forbidden,
            "{flow}: {}",
            error.message
        );
        assert!(error.message.contains("may not"), "{}", error.message);
    }
    ada.send(
        &ada.envelope("g-1", "Greeting"),
        &msgpack(&json!({"name": "ada"})),
    );
    let ok = ada.recv(Duration::from_secs(10)).expect("a result");
    assert_eq!((ok.id.as_str(), ok.status), ("g-1", Status::Ok));
}

/// Measured before: an answer matched on `origin`/`id` only, so anyone
/// could answer another service's `@ASYNC` step. Now only a service granted
/// the step (`answer`) may: another's answer is refused with code 20 and
/// the flow waits for the right one.
#[test]
fn only_a_service_granted_an_async_step_may_answer_it() {
    let dir = temp::dir("secure-answer");
    let (ada_keys, mgr_keys, mallory_keys) = (pair(), pair(), pair());
    let flow = "ServiceManagement_GetServiceTopics";
    let (node, server) = secure_node_with(
        dir.path(),
        &[
            ("ada", &ada_keys.0, &format!("push = [{flow:?}]\n")),
            (
                "mgr",
                &mgr_keys.0,
                &format!("subscribe = [\"{flow}~\"]\nanswer = [{flow:?}]\n"),
            ),
            ("mallory", &mallory_keys.0, ""),
        ],
    );
    let ada = Client::connect(&node, &server, ada_keys, "ada");
    let mgr = Client::connect(&node, &server, mgr_keys, "mgr");
    mgr.sub
        .set_subscribe(format!("{flow}~").as_bytes())
        .expect("subscribe");
    let mallory = Client::connect(&node, &server, mallory_keys, "mallory");
    assert!(ada.handshake(Duration::from_secs(10)));
    assert!(mgr.handshake(Duration::from_secs(10)));
    assert!(mallory.handshake(Duration::from_secs(10)));

    ada.send(
        &ada.envelope("q-1", flow),
        &msgpack(&json!({"service": "ada"})),
    );
    let published = mgr
        .recv(Duration::from_secs(10))
        .expect("the published step");
    assert_eq!(
        (published.id.as_str(), published.service.as_str()),
        ("q-1", "ada")
    );
    let answer = |client: &Client, text: &str| {
        let mut e = client.envelope("q-1", flow);
        e.kind = Kind::Result;
        e.origin = "ada".into();
        client.send(&e, &msgpack(&json!(text)));
    };
    answer(&mallory, "forged");
    let refused = mallory.recv(Duration::from_secs(10)).expect("told why");
    assert_eq!(refused.error.map(|e| e.code), Some(ErrorCode::Forbidden));
    answer(&mgr, "topics");
    let (result, payload) = ada
        .recv_with_payload(Duration::from_secs(10))
        .expect("ada's result");
    assert_eq!(result.status, Status::Ok, "{:?}", result.error);
    assert_eq!(zmanager_tests::client::json(&payload), json!("topics"));
}

/// A key not in `[security]`, or no key at all, does not connect: nothing
/// it sends is read, and the node says whom it refused.
#[test]
fn a_key_the_node_does_not_know_cannot_connect() {
    let dir = temp::dir("secure-unknown");
    let ada_keys = pair();
    let (node, server) = secure_node(dir.path(), &[("ada", &ada_keys.0)]);
    let stranger = Client::connect(&node, &server, pair(), "ada");
    assert!(
        !stranger.handshake(Duration::from_secs(3)),
        "an unknown key gets nothing back"
    );

    // A client without keys (NULL mechanism), as every client was before.
    let context = zmq::Context::new();
    let push = context.socket(zmq::PUSH).expect("push");
    push.set_linger(0).expect("linger");
    push.connect(&node.endpoints.intake).expect("connect");
    let sub = context.socket(zmq::SUB).expect("sub");
    sub.connect(&node.endpoints.publish).expect("connect");
    sub.set_subscribe(b"").expect("subscribe");
    sub.set_rcvtimeo(200).expect("timeout");
    let mut ping = Envelope::request("p", "");
    ping.kind = Kind::Ping;
    ping.service = "ada".into();
    ping.reply_to = "@reply~ada~".into();
    for _ in 0..10 {
        let _ = push.send_multipart([b"~".to_vec(), ping.encode(), vec![0xc0]], zmq::DONTWAIT);
        assert!(
            sub.recv_multipart(0).is_err(),
            "a NULL client reads nothing"
        );
    }
    let log = node.log();
    assert!(
        log.contains("refused a connection: its key is not in [security]"),
        "{log}"
    );

    // ada, with her key, is served all the while.
    let ada = Client::connect(&node, &server, ada_keys, "ada");
    assert!(ada.handshake(Duration::from_secs(10)));
}

/// A rogue DEALER on the workers socket, announcing itself as a worker
/// with many credits: before, any peer that reached the socket took
/// requests with their payloads and returned results the Subject trusted.
/// Now the workers socket is CURVE too, and admits only the keys of the
/// node's own workers (made at each start) and those `security.workers`
/// lists: a NULL peer, a stranger's key and a service's key get no work,
/// and every request is served by the node's own worker.
#[test]
fn a_rogue_worker_gets_no_work() {
    let dir = temp::dir("secure-rogue-worker");
    let ada_keys = pair();
    let (node, server) = secure_node(dir.path(), &[("ada", &ada_keys.0)]);
    let context = zmq::Context::new();
    let rogue = |name: &str, keys: Option<(Key, Key)>| {
        let socket = context.socket(zmq::DEALER).expect("a dealer");
        socket.set_linger(0).expect("linger");
        socket.set_identity(name.as_bytes()).expect("identity");
        if let Some((public, secret)) = keys {
            socket.set_curve_serverkey(&server).expect("server key");
            socket.set_curve_publickey(&public).expect("public key");
            socket.set_curve_secretkey(&secret).expect("secret key");
        }
        socket.connect(&node.endpoints.workers).expect("connect");
        let ready = zmanager::wire::ready(&zmanager::wire::Ready {
            credits: 1000,
            pid: std::process::id(),
            catalogs: Vec::new(),
        });
        let frames: Vec<Vec<u8>> = ready.into_vec().iter().map(|f| f.to_vec()).collect();
        socket.send_multipart(frames, 0).expect("queue READY");
        socket.set_rcvtimeo(100).expect("timeout");
        socket
    };
    let rogues = [
        ("null", rogue("null", None)),
        ("stranger", rogue("stranger", Some(pair()))),
        ("ada's key", rogue("ada", Some(ada_keys))),
    ];
    std::thread::sleep(Duration::from_secs(1));

    let ada = Client::connect(&node, &server, ada_keys, "ada");
    assert!(ada.handshake(Duration::from_secs(10)));
    let n = 30;
    for i in 0..n {
        ada.send(
            &ada.envelope(&format!("w-{i}"), "Greeting"),
            &msgpack(&json!({"name": format!("ada {i}")})),
        );
    }
    let mut answered = std::collections::BTreeSet::new();
    let until = Instant::now() + Duration::from_secs(20);
    while answered.len() < n && Instant::now() < until {
        if let Some(e) = ada.recv(Duration::from_millis(200)) {
            assert_eq!(e.status, Status::Ok, "{e:?}");
            answered.insert(e.id);
        }
    }
    assert_eq!(
        answered.len(),
        n,
        "every request served by the node's worker"
    );
    for (name, socket) in &rogues {
        let got = socket.recv_multipart(0);
        assert!(got.is_err(), "the {name} rogue received {got:?}");
    }
    let log = node.log();
    assert!(
        log.contains("refused a connection: its key is not in [security]")
            && log.contains("socket=\"zmanager-workers\""),
        "{log}"
    );
}

/// A worker started by hand joins a node with `[security]` when its public
/// key is in `security.workers`, and serves.
#[test]
fn a_worker_started_by_hand_joins_with_a_listed_key() {
    let dir = temp::dir("secure-hand-worker");
    let ada_keys = pair();
    let worker_public = security::write_new_pair(&dir.path().join("worker")).expect("worker keys");
    let server = security::write_new_pair(&dir.path().join("node")).expect("node keys");
    let config = format!(
        "workers = 0\n[endpoints]\nintake = \"ipc://{0}/intake.sock\"\nworkers = \"ipc://{0}/workers.sock\"\npublish = \"ipc://{0}/publish.sock\"\n[security]\nkey_file = \"node.key\"\nworkers = [{1:?}]\n[[security.service]]\nid = \"ada\"\npublic_key = {2:?}\npush = [\"Greeting\"]\n",
        dir.path().display(),
        security::z85(&worker_public),
        security::z85(&ada_keys.0),
    );
    let path = dir.path().join("node.toml");
    std::fs::write(&path, config).expect("write the configuration");
    let node = TestNode::start_fixed(0, None, &["--config", path.to_str().expect("utf-8")]);
    let mut worker = zmanager(["worker", "--endpoint", &node.endpoints.workers])
        .args(["--identity", "by-hand.1"])
        .arg("--key-file")
        .arg(dir.path().join("worker.key"))
        .arg("--server-key")
        .arg(dir.path().join("node.pub"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let ada = Client::connect(&node, &server, ada_keys, "ada");
    assert!(ada.handshake(Duration::from_secs(10)));
    ada.send(
        &ada.envelope("h-1", "Greeting"),
        &msgpack(&json!({"name": "ada"})),
    );
    let result = ada.recv_with_payload(Duration::from_secs(20));
    let _ = worker.kill();
    let _ = worker.wait();
    let (envelope, payload) = result.expect("served by the worker started by hand");
    assert_eq!(envelope.status, Status::Ok, "{envelope:?}");
    let value: serde_json::Value = rmp_serde::from_slice(&payload).expect("msgpack");
    assert_eq!(value, json!({"greeting": "HELLO, ADA!"}));
}

/// `zmanager keys new` makes the pair a configuration names; `keys show`
/// prints its public half; an existing file is never overwritten.
#[test]
fn keys_new_writes_a_pair_once() {
    let dir = temp::dir("keys");
    let name = dir.path().join("svc");
    let out = zmanager(["keys", "new"]).arg(&name).run();
    assert!(out.status.success(), "{out:?}");
    let printed = out.stdout;
    let (public, _) = security::read_key_file(&dir.path().join("svc.key")).expect("a key file");
    assert_eq!(
        printed,
        format!("public_key = \"{}\"\n", security::z85(&public))
    );
    let shown = zmanager(["keys", "show"])
        .arg(dir.path().join("svc.key"))
        .run();
    assert_eq!(shown.stdout, printed);
    let again = zmanager(["keys", "new"]).arg(&name).run();
    assert!(!again.status.success());
    assert!(again.stderr.contains("File exists"));
}

/// `zmanager keys token` writes a token readable by its owner only and
/// prints the digest a configuration lists; never overwrites one.
#[test]
fn keys_token_writes_a_token_once_and_prints_its_digest() {
    let dir = temp::dir("token");
    let name = dir.path().join("svc");
    let out = zmanager(["keys", "token"]).arg(&name).run();
    assert!(out.status.success(), "{out:?}");
    let path = dir.path().join("svc.token");
    let token = std::fs::read_to_string(&path).expect("a token file");
    let token = token.trim_end();
    assert_eq!(token.len(), 64, "{token:?}");
    assert_eq!(
        out.stdout,
        format!("http_token = \"{}\"\n", security::token::show_digest(token))
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let again = zmanager(["keys", "token"]).arg(&name).run();
    assert!(!again.status.success());
    assert_eq!(
        std::fs::read_to_string(&path).expect("kept").trim_end(),
        token
    );
}

/// The Rust client with keys: `Service` as ada is served; without keys it
/// cannot connect; `zmanager send --key-file` and `zmanager subscribe
/// --key-file` take the service id the configuration binds the key to.
#[test]
fn the_rust_client_and_the_cli_connect_with_keys() {
    use zmanager::client::{Service, ServiceError, ServiceOptions, Subscription};
    use zmanager::transport::ClientKeys;

    let dir = temp::dir("secure-rust");
    let ada_path = dir.path().join("ada");
    let ada_public = security::write_new_pair(&ada_path).expect("ada's keys");
    let (_, ada_secret) = security::read_key_file(&dir.path().join("ada.key")).expect("read");
    let (node, server) = secure_node(dir.path(), &[("ada", &ada_public)]);
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        let mut options = ServiceOptions::with_endpoints("ada", &node.endpoints);
        options.id = Some("ada".into());
        options.handshake_timeout = Duration::from_secs(3);
        let without = Service::connect(options.clone()).await;
        assert!(
            matches!(without, Err(ServiceError::Handshake(_))),
            "a client without keys cannot connect: {without:?}"
        );
        options.handshake_timeout = Duration::from_secs(10);
        options.keys = Some(ClientKeys {
            server,
            public: ada_public,
            secret: ada_secret,
        });
        let ada = Service::connect(options.clone())
            .await
            .expect("ada connects");
        let reply = ada
            .request("Greeting", &json!({"name": "ada"}))
            .await
            .expect("served");
        let value: serde_json::Value = reply.decode().expect("decodes");
        assert_eq!(value, json!({"greeting": "HELLO, ADA!"}));
        // A subscription with the key reads ada's own results only.
        let mut own = Subscription::connect_with(
            &node.endpoints.publish,
            options.keys.as_ref(),
            &["@reply~ada~".to_owned()],
        )
        .expect("subscribe");
        // Give the subscription time to reach the node, then one more.
        tokio::time::sleep(Duration::from_millis(500)).await;
        ada.request("Greeting", &json!({"name": "bo"}))
            .await
            .expect("served");
        let seen = tokio::time::timeout(Duration::from_secs(10), own.next())
            .await
            .expect("the subscription gets ada's result")
            .expect("a message");
        assert!(seen.topic.starts_with("@reply~ada~"), "{}", seen.topic);
        // `Service::subscribe`'s handshake works with keys too (its ping
        // comes back on the service's own topic, the one it may read).
        ada.subscribe(&[]).await.expect("a live subscription");
    });

    let config = dir.path().join("node.toml");
    let out = zmanager([
        "send",
        "Greeting",
        "--payload",
        r#"{"name":"cy"}"#,
        "--timeout",
        "20",
    ])
    .arg("--config")
    .arg(&config)
    .arg("--key-file")
    .arg(dir.path().join("ada.key"))
    .run();
    let stdout = &out.stdout;
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("HELLO, CY!"), "{stdout}");
    // Without the key, the same command gets nothing back and says why.
    let out = zmanager(["send", "Greeting", "--payload", "{}", "--timeout", "3"])
        .arg("--config")
        .arg(&config)
        .run();
    assert!(!out.status.success(), "{out:?}");
    let stderr = &out.stderr;
    assert!(stderr.contains("With keys"), "{stderr}");
}

/// With keys, the service a step is given to takes it with its own key:
/// `moderator`'s instance takes steps on a topic under its own reply topic
/// and answers them; a requester with a key of its own gets the result;
/// another key cannot take the moderator's steps (its take says it is
/// someone else: code 19).
#[test]
fn a_service_takes_its_steps_with_its_key() {
    use std::sync::Arc;
    use zmanager::client::{Service, ServiceOptions, StepError};
    use zmanager::transport::ClientKeys;

    let dir = temp::dir("secure-steps");
    let moderator_public = security::write_new_pair(&dir.path().join("moderator")).expect("keys");
    let (_, moderator_secret) =
        security::read_key_file(&dir.path().join("moderator.key")).expect("read");
    let ada_keys = pair();
    let mallory_keys = pair();
    let (node, server) = secure_node_with(
        dir.path(),
        &[
            ("moderator", &moderator_public, ""),
            ("ada", &ada_keys.0, "push = [\"Review\"]\n"),
            ("mallory", &mallory_keys.0, ""),
        ],
    );
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    // Two instances with the one key; each counts the steps it handles.
    // Kept to the end: they serve on the runtime's threads.
    let handled = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let _servers: Vec<_> = (0..2)
        .map(|_| {
            let handled = Arc::clone(&handled);
            runtime.block_on(async {
                let mut options = ServiceOptions::with_endpoints("moderator", &node.endpoints);
                options.id = Some("moderator".into());
                options.keys = Some(ClientKeys {
                    server,
                    public: moderator_public,
                    secret: moderator_secret,
                });
                let moderator = Arc::new(Service::connect(options).await.expect("connects"));
                moderator
                    .serve_steps(4, move |step| {
                        handled.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        async move {
                            let text: String = zmanager_sdk::decode(&step.payload)?;
                            Ok::<_, StepError>(bytes::Bytes::from(rmp_serde::to_vec(&format!(
                                "{text} ok"
                            ))?))
                        }
                    })
                    .await
                    .expect("serves its steps")
            })
        })
        .collect();
    let ada = Client::connect(&node, &server, ada_keys, "ada");
    assert!(ada.handshake(Duration::from_secs(10)));
    ada.send(&ada.envelope("s-1", "Review"), &msgpack(&json!(" hi ")));
    let (result, payload) = ada
        .recv_with_payload(Duration::from_secs(20))
        .expect("the result");
    assert_eq!(result.status, Status::Ok, "{result:?}");
    let value: serde_json::Value = rmp_serde::from_slice(&payload).expect("msgpack");
    assert_eq!(value, json!("HI OK"));
    // Each step is handled by the instance it was given to alone (both
    // hear the service's reply topic, under which each takes its steps).
    for i in 2..=20 {
        ada.send(
            &ada.envelope(&format!("s-{i}"), "Review"),
            &msgpack(&json!("x")),
        );
    }
    let mut got = 1;
    while got < 20 && ada.recv(Duration::from_secs(20)).is_some() {
        got += 1;
    }
    assert_eq!(got, 20, "every request answered");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        handled.load(std::sync::atomic::Ordering::Relaxed),
        20,
        "a step handled once"
    );

    // mallory's take for the moderator's steps: refused, told to her.
    let mallory = Client::connect(&node, &server, mallory_keys, "mallory");
    assert!(mallory.handshake(Duration::from_secs(10)));
    let mut take = mallory.envelope("t-1", "");
    take.kind = Kind::Take;
    take.service = "moderator".into();
    take.reply_to = "@reply~moderator~steps-m~".into();
    mallory.send(&take, &msgpack(&json!(4)));
    let refused = mallory.recv(Duration::from_secs(10)).expect("told why");
    assert_eq!(refused.error.map(|e| e.code), Some(ErrorCode::WrongService));
}

/// With keys, a durable subscription's prefixes are checked as a
/// subscription's are: mallory may keep her own results, not ada's.
#[test]
fn a_durable_subscription_reads_only_what_its_service_may() {
    use std::sync::Arc;
    use zmanager::client::{Service, ServiceError, ServiceOptions};
    use zmanager::transport::ClientKeys;

    let dir = temp::dir("secure-durable");
    let mallory_public = security::write_new_pair(&dir.path().join("mallory")).expect("keys");
    let (_, mallory_secret) =
        security::read_key_file(&dir.path().join("mallory.key")).expect("read");
    let (node, server) = secure_node_with(
        dir.path(),
        &[("mallory", &mallory_public, "register = true\n")],
    );
    tokio::runtime::Runtime::new()
        .expect("a runtime")
        .block_on(async {
            let mut options = ServiceOptions::with_endpoints("mallory", &node.endpoints);
            options.id = Some("mallory".into());
            options.keys = Some(ClientKeys {
                server,
                public: mallory_public,
                secret: mallory_secret,
            });
            let mallory = Arc::new(Service::connect(options).await.expect("connects"));
            let refused = mallory
                .subscribe_durable("spy", &["@reply~ada~".to_owned()], 10)
                .await;
            assert!(
                matches!(&refused, Err(ServiceError::Failed { error, .. }) if error.code == ErrorCode::Forbidden),
                "{refused:?}"
            );
            let mut own = mallory
                .subscribe_durable("own", &["@reply~mallory~".to_owned()], 10)
                .await
                .expect("her own results she may keep");
            // A ping's echo on her reply topic is kept, delivered and, with
            // keys too, acknowledged (an ack naming another topic than her
            // own would be refused: code 19).
            let ping = mallory.subscribe(&[]).await.expect("a ping round trip");
            drop(ping);
            let d = own.next().await.expect("no error").expect("a delivery");
            own.ack(d.seq).await.expect("sent");
            own.flush().await.expect("flushed");
            let info: Vec<zmanager::services::durable::DurableInfo> = mallory
                .request(zmanager::services::registry::DURABLES, &())
                .await
                .expect("answered (register = true)")
                .decode()
                .expect("a list");
            assert!(
                info.iter().any(|i| i.name == "own" && i.acked == d.seq),
                "the ack was taken: {info:?}"
            );
        });
}
