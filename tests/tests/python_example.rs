//! The Python client in `examples/python/` gets its results from the Rust
//! node: the wire protocol as documented works from another language.
//!
//! Needs python3 with pyzmq and msgpack (`.ci/run` installs them). Without
//! them the test says so and passes locally, but fails under CI (`CI` set),
//! where it must run.

use std::process::Command;

use zmanager_tests::node::TestNode;
use zmanager_tests::workspace_root;

/// The Python to run: `ZMANAGER_PYTHON` (CI points it at its virtual
/// environment), or `python3`.
fn python() -> String {
    std::env::var("ZMANAGER_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

fn python_ready() -> bool {
    Command::new(python())
        .args(["-c", "import zmq, msgpack"])
        .status()
        .is_ok_and(|s| s.success())
}

#[test]
fn the_python_quickstart_gets_its_results() {
    if !python_ready() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with pyzmq and msgpack (pip install -r examples/python/requirements.txt)"
        );
        eprintln!("SKIPPED: python3 with pyzmq and msgpack is not installed");
        return;
    }
    let node = TestNode::start_builtin(2);
    let out = Command::new(python())
        .arg(workspace_root().join("examples/python/quickstart.py"))
        .args(["--intake", &node.endpoints.intake])
        .args(["--publish", &node.endpoints.publish])
        .args(["--count", "20"])
        .output()
        .expect("run the python example");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status.code()
    );
    // Every request was acknowledged (the ids come in the `accepted`
    // messages' payloads).
    assert!(
        stdout.contains("20/20 result(s), 20 accepted,"),
        "missing the acknowledgements in:\n{stdout}"
    );
    for i in [0, 7, 19] {
        let line = format!("-{i} ok {{'greeting': 'HELLO, ADA {i}!'}}");
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
}
