//! Components: linked ones register themselves, dynamic ones are loaded from
//! shared libraries built here (`zmanager_tests::library`), and both serve
//! flows in a real node. The walk-through of `docs/components.md` is
//! `the_walkthrough_of_docs_components_md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;
use zmanager::catalog::Catalog;
use zmanager::catalog::diagnostic::Diagnostics;
use zmanager::catalog::source::SourceFile;
use zmanager::components::registry::Registry;
use zmanager::wire::Message;
use zmanager::wire::envelope::{Envelope, Status};
use zmanager::wire::error_code::ErrorCode;
use zmanager::worker::executor::Executor;
use zmanager_sdk::{ActionError, Component, Context, ErrorKind, Request};
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::{RawClient, Received, json as decoded};
use zmanager_tests::node::TestNode;
use zmanager_tests::{library, runtime, temp, workspace_root};

const LIMIT: Duration = Duration::from_secs(20);

fn reverse_dir() -> PathBuf {
    workspace_root().join("components/reverse")
}

fn faulty_config() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/faulty");
    (dir.join("flows"), dir.join("mappings"))
}

fn text(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

/// A text file named like a shared library, in a temp directory (removed
/// on drop).
fn not_a_library() -> (tempfile::TempDir, PathBuf) {
    let dir = temp::dir("components");
    let path = dir.path().join("libnot_a_library.so");
    std::fs::write(&path, "this is a text file, not a library\n").expect("write");
    (dir, path)
}

fn check(args: &[&str]) -> (Option<i32>, String, String) {
    let out = zmanager(["check"]).args(args).run();
    (out.status.code(), out.stdout, out.stderr)
}

async fn recv(client: &mut RawClient) -> Received {
    client.recv(LIMIT).await.expect("a result")
}

/// Steps 5 to 8 of docs/components.md, as written there: build the library,
/// check, run a node with it, send it requests.
#[test]
fn the_walkthrough_of_docs_components_md() {
    let lib = library("zmanager-component-reverse");
    let flows = reverse_dir().join("flows");
    let mappings = reverse_dir().join("action_mappings");

    let (code, stdout, stderr) = check(&[
        "--flows",
        text(&flows),
        "--mappings",
        text(&mappings),
        "--component",
        text(&lib),
    ]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("component Reverse 0.1.0  (loaded from "),
        "{stdout}"
    );
    assert!(
        stdout.contains("?Reverse?reverse  -> Reverse.reverse (loaded)"),
        "{stdout}"
    );
    assert!(stderr.contains(": 0 errors, 0 warnings"), "{stderr}");

    let node = TestNode::start_with(1, Some((&flows, &mappings)), &["--component", text(&lib)]);
    let send = |flow: &str, payload: &str| {
        let out = zmanager(["send", flow, "--payload", payload])
            .args(["--intake", &node.endpoints.intake])
            .args(["--publish", &node.endpoints.publish])
            .run();
        (
            out.status.code(),
            out.stdout.trim().to_owned(),
            out.stderr.trim().to_owned(),
        )
    };
    assert_eq!(
        send("Reverse", r#"{"text": "hello"}"#),
        (Some(0), r#"{"text":"olleh"}"#.to_owned(), String::new())
    );
    assert_eq!(
        send("Count", r#"{"text": "hello world"}"#),
        (
            Some(0),
            r#"{"chars":11,"words":2}"#.to_owned(),
            String::new()
        )
    );
    // A loaded action and a linked one in one flow.
    assert_eq!(
        send("Shout", r#"{"text": "hello"}"#).1,
        r#"{"text":"OLLEH"}"#
    );
    let (code, _, stderr) = send("Reverse", r#"{"text": ""}"#);
    assert_eq!(code, Some(1));
    assert_eq!(
        stderr,
        "error 6 (bad_request) at `?Reverse?reverse`: Reverse.reverse: text is empty"
    );

    // The same node, from its configuration file (step 7's other form):
    // only the library path differs, since the test's profile decides it.
    let dir = temp::dir("walkthrough");
    let shipped = std::fs::read_to_string(reverse_dir().join("node.toml")).expect("node.toml");
    assert!(
        shipped.contains("components = [\"../../target/debug/libzmanager_component_reverse.so\"]"),
        "{shipped}"
    );
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "components = [{:?}]\n[catalog]\nflows = {:?}\nmappings = {:?}\n",
            text(&lib),
            text(&flows),
            text(&mappings)
        ),
    )
    .expect("write config");
    let (code, stdout, stderr) = check(&["--quiet", "--config", text(&config)]);
    assert_eq!(code, Some(0), "{stdout}\n{stderr}");
}

#[test]
fn a_panic_in_a_dynamic_component_is_an_error_result_and_the_worker_keeps_serving() {
    let lib = library("zmanager-fixture-faulty");
    let (flows, mappings) = faulty_config();
    let node = TestNode::start_with(1, Some((&flows, &mappings)), &["--component", text(&lib)]);
    let workers = node.wait_for_workers(1);
    assert_eq!(workers.len(), 1);
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "faulty").await;
        client.request("FaultyPid", "pid-before", &()).await;
        let before: u32 = zmanager_sdk::decode(&recv(&mut client).await.payload).expect("a pid");

        for round in 0..20 {
            client
                .request("FaultyPanic", &format!("p{round}"), &round)
                .await;
            let r = recv(&mut client).await;
            assert_eq!(r.envelope.id, format!("p{round}"));
            assert_eq!(r.envelope.status, Status::Error);
            // The step it was delivered at (where a replay starts); the step
            // that panicked is named in the reason.
            assert_eq!(r.envelope.key, "?FaultyPanic?echo");
            // A panic is delivered again (it may be transient) and, still
            // panicking after max_attempts, dead-lettered with its reason.
            let error = r.envelope.error.expect("an error");
            assert_eq!(error.code, ErrorCode::DeadLettered);
            assert!(
                error.message.ends_with(
                    "Faulty.panic at `?FaultyPanic?panic` panicked: faulty: panicking on purpose (`zmanager dlq show %`)"
                        .replace('%', &(round + 1).to_string())
                        .as_str()
                ),
                "{}",
                error.message
            );
            // The payload is the request as it was delivered.
            assert_eq!(decoded(&r.payload), json!(round));

            client
                .request("FaultyEcho", &format!("e{round}"), &json!({"n": round}))
                .await;
            let r = recv(&mut client).await;
            assert_eq!(r.envelope.status, Status::Ok, "{:?}", r.envelope.error);
            assert_eq!(decoded(&r.payload), json!({"n": round}));
        }

        client.request("FaultyFail", "f", &()).await;
        let error = recv(&mut client).await.envelope.error.expect("an error");
        assert_eq!(error.code, ErrorCode::ActionFailed);
        assert!(error.message.ends_with("faulty: failing on purpose"));

        client.request("FaultyPid", "pid-after", &()).await;
        let after: u32 = zmanager_sdk::decode(&recv(&mut client).await.payload).expect("a pid");
        assert_eq!(before, after, "the worker process was replaced");
        assert_eq!(before, workers[0]);
    });
    assert_eq!(node.worker_pids(), workers);
}

/// Every file docs/components.md shows (after a `<!-- file: PATH -->`
/// line) is, byte for byte, the file in the repository.
#[test]
fn docs_components_md_shows_the_example_files() {
    let doc = std::fs::read_to_string(workspace_root().join("docs/components.md")).expect("read");
    let mut shown = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        let Some(path) = line
            .strip_prefix("<!-- file: ")
            .and_then(|rest| rest.strip_suffix(" -->"))
        else {
            continue;
        };
        let fence = lines.next().unwrap_or_default();
        assert!(
            fence.starts_with("```"),
            "{path}: no code block after the marker"
        );
        let mut block = String::new();
        for line in lines.by_ref().take_while(|l| *l != "```") {
            block.push_str(line);
            block.push('\n');
        }
        let file = std::fs::read_to_string(workspace_root().join(path)).expect(path);
        assert_eq!(block, file, "docs/components.md shows another {path}");
        shown.push(path);
    }
    assert_eq!(
        shown,
        [
            "components/reverse/Cargo.toml",
            "components/reverse/src/lib.rs",
            "components/reverse/action_mappings/reverse.toml",
            "components/reverse/flows/reverse.ini",
            "components/reverse/node.toml",
        ]
    );
}

/// Each broken library is refused by `zmanager check` with its file and
/// reason, and stops `zmanager up` before it listens.
#[test]
fn a_library_that_cannot_be_used_is_refused_with_its_reason() {
    let (_not_a_library_dir, not_a_library) = not_a_library();
    let cases = [
        (
            library("zmanager-fixture-wrong-abi"),
            "error: built for component ABI version 999, but this zmanager loads version 1; rebuild it against this zmanager-sdk"
                .to_owned(),
        ),
        (
            library("zmanager-fixture-missing-symbol"),
            "error: does not export `zmanager_component_call`, which component ABI version 1 requires"
                .to_owned(),
        ),
        (
            not_a_library,
            "error: cannot load it as a shared library: ".to_owned(),
        ),
        (
            workspace_root().join("tests/no-such-library.so"),
            "error: cannot load it as a shared library: ".to_owned(),
        ),
    ];
    for (path, reason) in &cases {
        let shown = zmanager::components::dynamic::absolute(path)
            .display()
            .to_string();
        let expected = format!("{shown}: {reason}");

        let (code, stdout, stderr) = check(&["--quiet", "--component", text(path)]);
        assert_eq!(code, Some(1), "{stdout}\n{stderr}");
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
        assert!(stderr.contains(": 1 errors, 0 warnings"), "{stderr}");

        let out = zmanager([
            "up",
            "--any-port",
            "--workers",
            "1",
            "--component",
            text(path),
        ])
        .timeout(LIMIT)
        .run();
        let (stdout, stderr) = (&out.stdout, &out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
        assert!(!stdout.contains("listening"), "{stdout}");
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

#[test]
fn a_shared_object_that_is_not_a_component_is_refused() {
    // libzmanager_fixture_faulty.so is a component; the C library is not.
    let libc = [
        "/lib/x86_64-linux-gnu/libc.so.6",
        "/usr/lib/libc.so.6",
        "/lib64/libc.so.6",
    ]
    .into_iter()
    .map(Path::new)
    .find(|p| p.exists());
    let Some(libc) = libc else {
        println!("SKIPPED: no libc.so.6 found at the usual paths");
        return;
    };
    let error = zmanager::components::dynamic::load(libc).expect_err("libc is not a component");
    assert_eq!(
        error.to_string(),
        format!(
            "{}: not a zmanager component: it does not export `zmanager_component_abi_version`",
            zmanager::components::dynamic::absolute(libc).display()
        )
    );
}

/// `check` reports a mapping to an action the loaded component lacks (an
/// error), an action of it no mapping names and a loaded component no
/// mapping names (warnings), and a component loaded twice (an error).
#[test]
fn check_compares_loaded_components_with_the_mappings() {
    let lib = library("zmanager-component-reverse");
    let temp = temp::dir("check-dyn");
    let dir = temp.path();
    for sub in ["flows", "mappings"] {
        std::fs::create_dir_all(dir.join(sub)).expect("mkdir");
    }
    std::fs::write(
        dir.join("flows/f.ini"),
        "[Backwards]\n?Backwards?Push\n?Backwards?reverse\n?Backwards?flip\n??done\n",
    )
    .expect("write");
    std::fs::write(
        dir.join("mappings/m.ini"),
        "[actionmapping]\n??reverse = Reverse.reverse\n??flip = Reverse.flip\n",
    )
    .expect("write");
    let (flows, mappings) = (dir.join("flows"), dir.join("mappings"));
    let base = ["--flows", text(&flows), "--mappings", text(&mappings)];
    let lib_shown = zmanager::components::dynamic::absolute(&lib)
        .display()
        .to_string();

    let (code, stdout, stderr) = check(&[&base[..], &["--quiet"]].concat());
    assert_eq!(code, Some(1), "{stdout}\n{stderr}");
    assert!(
        stderr.contains("m.ini:2: error: `??reverse` maps to Reverse.reverse, but no component Reverse is linked or loaded"),
        "{stderr}"
    );

    let (code, _, stderr) = check(&[&base[..], &["--quiet", "--component", text(&lib)]].concat());
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        "m.ini:3: error: `??flip` maps to Reverse.flip, but component Reverse has no action \"flip\" (it declares reverse, count)".to_owned(),
        format!("{lib_shown}: warning: component Reverse declares action \"count\", which no mapping names"),
    ] {
        assert!(stderr.contains(&expected), "missing {expected:?} in:\n{stderr}");
    }
    assert!(stderr.contains(": 1 errors, 1 warnings"), "{stderr}");

    // Loaded, but nothing maps it; and loaded twice.
    let (code, _, stderr) = check(&[
        "--quiet",
        "--component",
        text(&lib),
        "--component",
        text(&lib),
    ]);
    assert_eq!(code, Some(1), "{stderr}");
    for expected in [
        format!("{lib_shown}: warning: component Reverse is loaded, but no mapping names it"),
        format!(
            "{lib_shown}: error: component Reverse is already loaded from {lib_shown}; a name is served once"
        ),
    ] {
        assert!(
            stderr.contains(&expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
}

/// The same component code, linked into this test and loaded from its own
/// shared library, answers every request the same, directly and through a
/// worker's executor.
#[test]
fn the_same_component_behaves_the_same_linked_or_loaded() {
    let linked = zmanager_component_reverse::Reverse;
    let loaded =
        zmanager::components::dynamic::load(&library("zmanager-component-reverse")).expect("loads");
    assert_eq!(
        (linked.name(), linked.version(), linked.actions()),
        (loaded.name(), loaded.version(), loaded.actions())
    );

    let payloads: Vec<Vec<u8>> = vec![
        rmp_serde::to_vec_named(&json!({"text": "hello wörld"})).expect("encode"),
        rmp_serde::to_vec_named(&json!({"text": "a  b\tc"})).expect("encode"),
        rmp_serde::to_vec_named(&json!({"text": ""})).expect("encode"),
        rmp_serde::to_vec_named(&json!({"text": 7})).expect("encode"),
        rmp_serde::to_vec_named(&json!({"other": "x"})).expect("encode"),
        rmp_serde::to_vec_named(&json!("text")).expect("encode"),
        vec![],
        vec![0xc1],
        [vec![0x91; 300], vec![0xc0]].concat(),
    ];
    let mut outcomes = BTreeSet::new();
    for action in ["reverse", "count", "nope", ""] {
        for payload in &payloads {
            let request = Request {
                payload,
                context: Context {
                    message_id: "m1",
                    flow: "Reverse",
                    key: "??reverse",
                    service: "svc",
                    attempt: 1,
                },
            };
            let a = linked.call(action, &request);
            let b = loaded.call(action, &request);
            assert_eq!(a, b, "{action} {payload:x?}");
            outcomes.insert(match a {
                Ok(_) => "ok".to_owned(),
                Err(ActionError { kind, .. }) => format!("{kind:?}"),
            });
        }
    }
    // The cases cover every outcome the component has.
    assert_eq!(
        outcomes.into_iter().collect::<Vec<_>>(),
        ["BadRequest", "UnknownAction", "ok"]
    );
    assert_eq!(
        loaded.call(
            "nope",
            &Request {
                payload: &[0xc0],
                context: context()
            }
        ),
        Err(ActionError::new(
            ErrorKind::UnknownAction,
            "component Reverse has no action \"nope\""
        ))
    );

    // Through the executor, with Text (linked) in the Shout flow.
    let mut diagnostics = Diagnostics::default();
    let flows = SourceFile::read_dir(&reverse_dir().join("flows"), &mut diagnostics);
    let mappings = SourceFile::read_dir(&reverse_dir().join("action_mappings"), &mut diagnostics);
    let (catalog, found) = Catalog::build(&flows, &mappings);
    diagnostics.extend(found);
    assert!(!diagnostics.has_errors(), "{diagnostics}");
    let catalog = Arc::new(catalog);
    let mut with_linked = Registry::linked();
    assert!(with_linked.register(zmanager_component_reverse::Reverse));
    let mut with_loaded = Registry::linked();
    assert!(with_loaded.load(&library("zmanager-component-reverse"), &mut diagnostics));
    let linked = Executor::new(Arc::clone(&catalog), with_linked);
    let loaded = Executor::new(catalog, with_loaded);
    for flow in ["Reverse", "Count", "Shout"] {
        for payload in &payloads {
            let message = || {
                let mut envelope = Envelope::request("m1", flow);
                envelope.step = 1;
                envelope.attempt = 1;
                Message::new(envelope, Bytes::from(payload.clone()))
            };
            let a = linked.run(message());
            let b = loaded.run(message());
            assert_eq!(
                (
                    &a.envelope.status,
                    &a.envelope.error,
                    &a.envelope.key,
                    &a.payload
                ),
                (
                    &b.envelope.status,
                    &b.envelope.error,
                    &b.envelope.key,
                    &b.payload
                ),
                "{flow} {payload:x?}"
            );
        }
    }
}

fn context() -> Context<'static> {
    Context {
        message_id: "m1",
        flow: "F",
        key: "??x",
        service: "svc",
        attempt: 1,
    }
}

/// The Iam component is a dependency of `core` and nothing else names it:
/// no hand-written source of the node, no list. It is linked all the same
/// (because `core/build.rs` names every `zmanager-component-*` dependency),
/// and serves the shipped SecureGreeting flow.
#[test]
fn a_linked_component_that_no_code_names_serves_a_shipped_flow() {
    let mut named_in = Vec::new();
    let mut stack = vec![workspace_root().join("core")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read core").flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs")
                && std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .contains("zmanager_component_iam")
            {
                named_in.push(path);
            }
        }
    }
    assert!(named_in.is_empty(), "Iam is named in {named_in:?}");
    let manifest = std::fs::read_to_string(workspace_root().join("core/Cargo.toml")).expect("read");
    assert!(manifest.contains("\nzmanager-component-iam.workspace = true\n"));

    let node = TestNode::start_builtin(1);
    runtime().block_on(async {
        // Iam authorizes the service that pushed the request (the node's
        // `service` field), not a `user` of the payload.
        let mut ada = RawClient::connect(&node.endpoints, "ada").await;
        ada.request("SecureGreeting", "r1", &json!({"name": "  ada "}))
            .await;
        let r = recv(&mut ada).await;
        assert_eq!(r.envelope.status, Status::Ok, "{:?}", r.envelope.error);
        assert_eq!(decoded(&r.payload), json!({"greeting": "HELLO, ADA!"}));

        let mut guest = RawClient::connect(&node.endpoints, "guest").await;
        guest
            .request(
                "SecureGreeting",
                "r1",
                &json!({"user": "ada", "name": "eve"}),
            )
            .await;
        let r = recv(&mut guest).await;
        assert_eq!(r.envelope.key, "?SecureGreeting?authorize");
        let error = r.envelope.error.expect("forbidden");
        assert_eq!(error.code, ErrorCode::ActionFailed);
        assert_eq!(
            error.message,
            "Iam.authorize: forbidden: service \"guest\" may not \"SecureGreeting\""
        );
    });

    // As the flow file and the README show it, from the command line.
    let send = |service: &str| {
        zmanager([
            "send",
            "SecureGreeting",
            "--service",
            service,
            "-p",
            r#"{"name": "ada"}"#,
        ])
        .args([
            "--intake",
            &node.endpoints.intake,
            "--publish",
            &node.endpoints.publish,
        ])
        .run()
    };
    let out = send("ada");
    assert!(out.status.success(), "{out:?}");
    assert_eq!(out.stdout, "{\"greeting\":\"HELLO, ADA!\"}\n");
    let out = send("mallory");
    assert!(!out.status.success());
    let stderr = &out.stderr;
    assert!(
        stderr.contains("forbidden: service \"mallory\""),
        "{stderr}"
    );
}

/// `unsafe` code lives in the two modules that cross a shared-library
/// boundary, the one that registers libzmq's descriptor with tokio (in the
/// client crate), the one that sets the option the `zmq` crate does not
/// wrap, and the fixtures that imitate broken libraries: nowhere else may
/// allow the workspace's `unsafe_code` lint or use the keyword.
#[test]
fn unsafe_code_is_confined_to_the_abi_modules() {
    let allowed: BTreeSet<&str> = [
        "components/sdk/src/abi.rs",
        "clients/rust/src/transport/socket.rs",
        "core/src/components/dynamic.rs",
        "core/src/transport/xpub.rs",
        "tests/fixtures/missing-symbol/src/lib.rs",
        "tests/fixtures/wrong-abi/src/lib.rs",
    ]
    .into();
    let this_file = "tests/tests/components.rs";
    let mut found = BTreeSet::new();
    let mut stack = vec![workspace_root().to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let path = entry.path();
            let name = entry.file_name();
            if path.is_dir() {
                // `tools/` holds measurements of other libraries, outside
                // the workspace.
                let outside = name == "target" || (dir == workspace_root() && name == "tools");
                if !outside && !name.to_string_lossy().starts_with('.') {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path
                .strip_prefix(workspace_root())
                .expect("under the root")
                .to_string_lossy()
                .into_owned();
            if relative == this_file {
                continue;
            }
            let source = std::fs::read_to_string(&path).unwrap_or_default();
            let uses_unsafe = source.lines().any(|line| {
                let code = line.split("//").next().unwrap_or_default();
                code.contains("unsafe")
            });
            if uses_unsafe || source.contains("allow(unsafe_code)") {
                found.insert(relative);
            }
        }
    }
    assert_eq!(
        found.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        allowed
    );
    let manifest = std::fs::read_to_string(workspace_root().join("Cargo.toml")).expect("read");
    assert!(
        manifest.contains("\nunsafe_code = \"deny\"\n"),
        "{manifest}"
    );
}
