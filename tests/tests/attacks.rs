//! Attacks on a running node, each of which worked before the node defended
//! against it (`docs/security.md`): every test here fails on a node that
//! does not.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use zmanager::envelope::Status;
use zmanager::error_code::ErrorCode;
use zmanager::operator::OperatorCookie;
use zmanager_tests::client::{RawClient, Received, msgpack};
use zmanager_tests::node::{TempDir, TestNode};
use zmanager_tests::{runtime, zmanager};

const LIMIT: Duration = Duration::from_secs(20);

async fn recv(client: &mut RawClient) -> Received {
    client.recv(LIMIT).await.expect("a result")
}

fn code(r: &Received) -> Option<ErrorCode> {
    r.envelope.error.as_ref().map(|e| e.code)
}

/// A request that names the authorization step as the step it is at would
/// run from the step after it: `mallory`, whom `Iam` refuses, was greeted.
/// Only step 0 and the steps a flow marks `entry` may be named; the node's
/// own replay tools (holding its operator cookie) may resume anywhere.
#[test]
fn a_request_cannot_skip_the_authorization_step() {
    let node = TestNode::start_builtin(1);
    runtime().block_on(async {
        let mut mallory = RawClient::connect(&node.endpoints, "mallory").await;
        for (id, key) in [
            ("skip-1", "?SecureGreeting?authorize"),
            ("skip-2", "?SecureGreeting?trim"),
            ("skip-3", "mallory?SecureGreeting?authorize"),
        ] {
            let mut e = mallory.envelope(id, "SecureGreeting");
            e.key = key.into();
            mallory
                .send(&e, msgpack(&json!({"user": "ada", "name": "mallory"})))
                .await;
            let r = recv(&mut mallory).await;
            assert_eq!(r.envelope.id, id);
            assert_eq!(code(&r), Some(ErrorCode::NotAnEntry), "{key}: {r:?}");
            let text = &r.envelope.error.as_ref().expect("an error").message;
            assert!(text.contains("not an entry point"), "{text}");
        }

        // At its entry, as the flow means: Iam refuses mallory, whatever
        // user the payload names.
        mallory
            .request(
                "SecureGreeting",
                "entry-1",
                &json!({"user": "ada", "name": "mallory"}),
            )
            .await;
        let r = recv(&mut mallory).await;
        assert_eq!(code(&r), Some(ErrorCode::ActionFailed), "{r:?}");
        assert_eq!(r.envelope.key, "?SecureGreeting?authorize");

        // A cookie that is not the node's changes nothing, and says so.
        let mut e = mallory.envelope("forged-cookie", "SecureGreeting");
        e.key = "?SecureGreeting?authorize".into();
        e.operator = "0".repeat(64);
        mallory.send(&e, msgpack(&json!({"name": "mallory"}))).await;
        let r = recv(&mut mallory).await;
        assert_eq!(code(&r), Some(ErrorCode::NotAnEntry), "{r:?}");
        let text = &r.envelope.error.as_ref().expect("an error").message;
        assert!(
            text.contains("operator cookie it carries is not this node's"),
            "{text}"
        );
        assert!(r.envelope.operator.is_empty(), "the cookie is not echoed");

        // The node's own cookie (what `zmanager dlq replay` reads from the
        // data directory) may resume at any step.
        let cookie = OperatorCookie::read(&node.data_dir).expect("the node made its cookie");
        let mut e = mallory.envelope("operator-1", "SecureGreeting");
        e.key = "?SecureGreeting?authorize".into();
        e.operator = cookie.as_str().to_owned();
        mallory.send(&e, msgpack(&json!({"name": " ops "}))).await;
        let r = recv(&mut mallory).await;
        assert_eq!(r.envelope.status, Status::Ok, "{r:?}");
        assert!(r.envelope.operator.is_empty(), "the cookie is not echoed");
        assert_eq!(
            zmanager_tests::client::json(&r.payload),
            json!({"greeting": "HELLO, OPS!"})
        );
    });
}

/// A flow may mark steps other than step 0 as entry points: a request that
/// names one runs from the step after it; naming any other is refused.
#[test]
fn a_flow_marks_the_steps_a_request_may_start_at() {
    let node = TestNode::start(1);
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "svc").await;
        // From step 0, step 1 fails.
        client.request("Entered", "e-0", &"x").await;
        let r = recv(&mut client).await;
        assert_eq!(code(&r), Some(ErrorCode::ActionFailed), "{r:?}");
        // Naming step 1 (an entry point) runs from step 2.
        let mut e = client.envelope("e-1", "Entered");
        e.key = "?Entered?fail".into();
        client.send(&e, msgpack(&"x")).await;
        let r = recv(&mut client).await;
        assert_eq!(r.envelope.status, Status::Ok, "{r:?}");
        // Step 2 is not an entry point.
        e.id = "e-2".into();
        e.key = "?Entered?echo".into();
        client.send(&e, msgpack(&"x")).await;
        let r = recv(&mut client).await;
        assert_eq!(code(&r), Some(ErrorCode::NotAnEntry), "{r:?}");
    });
}

/// Nothing authenticates peers yet, so a node listening beyond loopback
/// would let anyone who reaches it push as any service: without
/// `--insecure` it does not start (and touches no data directory); with
/// it, it starts and says why that is dangerous.
#[test]
fn a_node_without_keys_listens_beyond_loopback_only_when_told_insecure() {
    let dir = TempDir::new("exposed");
    let data_dir = dir.path().join("data");
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "workers = 0\ndata_dir = {:?}\n[endpoints]\nintake = \"tcp://0.0.0.0:0\"\nworkers = \"tcp://127.0.0.1:0\"\npublish = \"tcp://127.0.0.1:0\"\n",
            data_dir.display().to_string()
        ),
    )
    .expect("write the configuration");
    let out = zmanager()
        .args(["up", "--config"])
        .arg(&config)
        .output()
        .expect("run zmanager up");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("intake tcp://0.0.0.0:0 would listen beyond this machine")
            && stderr.contains("--insecure"),
        "{stderr}"
    );
    assert!(
        !data_dir.exists(),
        "a refused node touches no data directory"
    );

    let mut node = zmanager()
        .args(["up", "--insecure", "--exit-with-parent", "--config"])
        .arg(&config)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start zmanager up --insecure");
    let mut line = String::new();
    BufReader::new(node.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("read the listening line");
    assert!(
        line.starts_with("zmanager listening intake=tcp://0.0.0.0:"),
        "{line}"
    );
    drop(node.stdin.take());
    let out = node.wait_with_output().expect("the node stops");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--insecure: listening beyond this machine with no authentication"),
        "{stderr}"
    );
}
