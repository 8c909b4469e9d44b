//! The Python clients in `examples/python/` get along with the Rust node:
//! `quickstart.py` gets its results, `moderator.py` takes the steps the
//! `Review` flow gives to service `moderator` (protocol §7c), `durable.py`
//! goes on where it stopped in a durable subscription (protocol §7d). The
//! wire protocol as documented works from another language, with CURVE
//! keys too (`docs/security.md`).
//!
//! Needs python3 with pyzmq and msgpack (`.ci/run` installs them). Without
//! them the tests say so and pass locally, but fail under CI (`CI` set),
//! where they must run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use zmanager::node::config::Endpoints;
use zmanager::security;
use zmanager::services::durable::DurableInfo;
use zmanager::services::registry;
use zmanager::wire::envelope::Status;
use zmanager::wire::error_code::ErrorCode;
use zmanager_tests::cli::zmanager;
use zmanager_tests::client::{RawClient, Received, json, msgpack};
use zmanager_tests::node::{TestNode, fixed_endpoints};
use zmanager_tests::temp::{self, config_file};
use zmanager_tests::{kill, runtime, secure, workspace_root};

/// The Python to run: `ZMANAGER_PYTHON` (CI points it at its virtual
/// environment), or `python3`.
fn python() -> String {
    std::env::var("ZMANAGER_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// True when python has pyzmq and msgpack; false (and the test is skipped)
/// when not, except under CI.
fn python_ready() -> bool {
    let ready = Command::new(python())
        .args(["-c", "import zmq, msgpack"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with pyzmq and msgpack (pip install -r examples/python/requirements.txt)"
        );
        eprintln!("SKIPPED: python3 with pyzmq and msgpack is not installed");
    }
    ready
}

fn script() -> std::path::PathBuf {
    workspace_root().join("examples/python/quickstart.py")
}

/// `quickstart.py` pointed at `node`.
fn quickstart(node: &TestNode) -> Command {
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["--intake", &node.endpoints.intake])
        .args(["--publish", &node.endpoints.publish]);
    cmd
}

/// A command running to its end in the background, its output collected.
struct Run {
    pid: u32,
    started: Instant,
    done: mpsc::Receiver<std::io::Result<Output>>,
}

impl Run {
    fn start(mut cmd: Command) -> Self {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the python example");
        let (tx, done) = mpsc::channel();
        let pid = child.id();
        std::thread::spawn(move || tx.send(child.wait_with_output()));
        Self {
            pid,
            started: Instant::now(),
            done,
        }
    }

    /// Its output and how long it ran; panics (and kills it) if it has not
    /// ended `limit` after it started.
    fn finish(self, limit: Duration) -> (Output, Duration) {
        let left = limit.saturating_sub(self.started.elapsed());
        match self.done.recv_timeout(left) {
            Ok(out) => (
                out.expect("the python example's output"),
                self.started.elapsed(),
            ),
            Err(_) => {
                kill("KILL", self.pid);
                panic!("the python example still ran after {limit:?}");
            }
        }
    }
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The run got all `count` results, each ok and acknowledged; returns the
/// request ids it printed.
fn assert_every_result(out: &Output, count: usize) -> Vec<String> {
    let (stdout, stderr) = text(out);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status.code()
    );
    // Every request was acknowledged (the ids come in the `accepted`
    // messages' payloads).
    let summary = format!("{count}/{count} result(s), {count} accepted,");
    assert!(
        stdout.contains(&summary),
        "missing {summary:?} in:\n{stdout}"
    );
    for i in [0, 7, count - 1] {
        let line = format!("-{i} ok {{'greeting': 'HELLO, ADA {i}!'}}");
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    stdout
        .lines()
        .filter(|l| l.contains(" ok {'greeting'"))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// The run did not get through the handshake within its `--timeout 3`:
/// exit status 2, no request pushed, no result.
fn assert_refused(out: &Output, took: Duration, what: &str) -> String {
    let (stdout, stderr) = text(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit {:?}\n{stdout}\n{stderr}",
        out.status.code()
    );
    assert!(stderr.contains("no ping came back on"), "{what}:\n{stderr}");
    assert!(
        !stdout.contains("pushing") && !stdout.contains(" ok "),
        "{what}: got through:\n{stdout}"
    );
    // 3 s of handshake, then no wait for the queued pings (linger 0).
    assert!(took < Duration::from_secs(8), "{what}: took {took:?}");
    stderr
}

#[test]
fn the_python_quickstart_gets_its_results() {
    if !python_ready() {
        return;
    }
    let node = TestNode::start_builtin(2);
    let mut cmd = quickstart(&node);
    cmd.args(["--count", "20"]);
    let (out, _) = Run::start(cmd).finish(Duration::from_secs(60));
    assert_every_result(&out, 20);
}

/// With `--standby`, the script uses the first node that answers: here the
/// one it is given is not running, and its standby serves.
#[test]
fn the_python_quickstart_moves_to_a_standby_when_the_node_does_not_answer() {
    if !python_ready() {
        return;
    }
    let node = TestNode::start_builtin(2);
    let (gone, _) = zmanager_tests::node::fixed_endpoints();
    let mut cmd = Command::new(python());
    cmd.arg(script())
        .args(["--intake", &gone.intake, "--publish", &gone.publish])
        .args(["--standby", &node.endpoints.intake, &node.endpoints.publish])
        .args(["--count", "10", "--timeout", "3"]);
    let (out, _) = Run::start(cmd).finish(Duration::from_secs(60));
    assert_every_result(&out, 10);
}

/// `zmanager keys new NAME` in `dir`, as the README says.
fn keys_new(dir: &Path, name: &str) {
    let out = zmanager(["keys", "new", name]).current_dir(dir).run();
    assert!(out.status.success(), "{out:?}");
}

/// The README's "With keys": keys made with `zmanager keys new`, a node
/// with `[security]` granting `ada` the Greeting flow, and the script with
/// `--service-id ada --key-file ada.key --server-key node.pub`. The same
/// script with a key the node does not list, or with no keys at all, or as
/// another service than its key's, gets nothing.
#[test]
fn the_python_quickstart_connects_to_a_node_with_keys() {
    if !python_ready() {
        return;
    }
    let dir = temp::dir("python-keys");
    let at = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    for name in ["node", "ada", "stranger"] {
        keys_new(dir.path(), name);
    }
    let mode = |name: &str| {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.path().join(name)).expect("a key file");
        meta.permissions().mode() & 0o777
    };
    assert_eq!(
        mode("node.key"),
        0o600,
        "the secret stays the node's user's"
    );
    let (ada, _) = security::read_key_file(&dir.path().join("ada.key")).expect("ada.key");
    let (stranger, _) =
        security::read_key_file(&dir.path().join("stranger.key")).expect("stranger.key");
    let (server, _) = security::read_key_file(&dir.path().join("node.key")).expect("node.key");
    let config = secure::write_config(dir.path(), &[("ada", &ada, "push = [\"Greeting\"]\n")]);
    let node = secure::start(&config);
    let limit = Duration::from_secs(60);

    let mut cmd = quickstart(&node);
    cmd.args(["--service-id", "ada", "--count", "20"]).args([
        "--key-file",
        &at("ada.key"),
        "--server-key",
        &at("node.pub"),
    ]);
    let (out, _) = Run::start(cmd).finish(limit);
    let first = assert_every_result(&out, 20);
    let (stdout, _) = text(&out);
    let intro = format!(
        "service ada, results on '@reply~ada~', request ids ada-\
         {}-<n>\nCURVE: node key {}, this service's public key {}\n",
        first[0].split('-').nth(1).unwrap_or_default(),
        security::z85(&server),
        security::z85(&ada)
    );
    assert!(stdout.starts_with(&intro), "not {intro:?}:\n{stdout}");

    // Again, as on a Python without tomllib (before 3.11): the key file is
    // read by the script's own two-line reader. The node's key is given in
    // Z85 this time. The ids differ from the first run's: the node would
    // otherwise take them for the same requests (dedupe_window_ms) and not
    // run them again.
    let mut cmd = Command::new(python());
    cmd.args([
        "-c",
        "import runpy, sys; sys.modules['tomllib'] = None; sys.argv = sys.argv[1:]; \
         runpy.run_path(sys.argv[0], run_name='__main__')",
    ])
    .arg(script())
    .args(["--intake", &node.endpoints.intake])
    .args(["--publish", &node.endpoints.publish])
    .args(["--service-id", "ada", "--count", "20"])
    .args(["--key-file", &at("ada.key")])
    .args(["--server-key", &security::z85(&server)]);
    let (out, _) = Run::start(cmd).finish(limit);
    let second = assert_every_result(&out, 20);
    assert_eq!((first.len(), second.len()), (20, 20));
    assert!(
        first.iter().all(|id| !second.contains(id)),
        "the second run reused ids: {first:?} {second:?}"
    );
    assert!(
        first[0].starts_with("ada-") && second[0].starts_with("ada-"),
        "{first:?}"
    );

    // The three that fail, at once: each waits out its 3 s handshake.
    let failing = |extra: &[&str]| {
        let mut cmd = quickstart(&node);
        cmd.args(["--timeout", "3"]).args(extra);
        Run::start(cmd)
    };
    let stranger_run = failing(&[
        "--service-id",
        "ada",
        "--key-file",
        &at("stranger.key"),
        "--server-key",
        &at("node.pub"),
    ]);
    // No keys: the NULL mechanism, which a CURVE-only socket does not
    // speak. That this gets nothing where the runs above got everything is
    // what shows they used CURVE.
    let null_run = failing(&["--service-id", "ada"]);
    // ada's key, but another service's id: its pings are refused (code 19,
    // on ada's topic) and its subscription too.
    let bob_run = failing(&[
        "--service-id",
        "bob",
        "--key-file",
        &at("ada.key"),
        "--server-key",
        &at("node.pub"),
    ]);

    let (out, took) = stranger_run.finish(limit);
    let stderr = assert_refused(&out, took, "an unknown key");
    assert!(
        stderr.contains("the node may have refused the keys"),
        "{stderr}"
    );
    let (out, took) = null_run.finish(limit);
    let stderr = assert_refused(&out, took, "no keys");
    assert!(stderr.contains("takes only clients with keys"), "{stderr}");
    let (out, took) = bob_run.finish(limit);
    assert_refused(&out, took, "another service's id");

    let log = node.log();
    let refused = format!(
        "refused a connection: its key is not in [security] key={}",
        security::z85(&stranger)
    );
    assert!(log.contains(&refused), "no {refused:?} in:\n{log}");
    assert!(
        log.contains("the message says service \"bob\", but its key is \"ada\"'s"),
        "{log}"
    );
}

/// What `quickstart.py` says, with exit status 3 and before it connects
/// anywhere, about keys it cannot use.
#[test]
fn the_python_quickstart_says_what_is_wrong_with_its_keys() {
    if !python_ready() {
        return;
    }
    let dir = temp::dir("python-bad-keys");
    let at = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    keys_new(dir.path(), "node");
    keys_new(dir.path(), "ada");
    let ada = std::fs::read_to_string(dir.path().join("ada.key")).expect("ada.key");
    let write =
        |name: &str, text: &str| std::fs::write(dir.path().join(name), text).expect("write");
    // A secret key one character short, one with a character Z85 lacks, and
    // a secret key from another pair.
    let secret_at = ada.find("secret_key = \"").expect("a secret_key line") + 14;
    write(
        "short.key",
        &format!("{}{}", &ada[..secret_at], &ada[secret_at + 1..]),
    );
    write(
        "tilde.key",
        &format!("{}~{}", &ada[..secret_at], &ada[secret_at + 1..]),
    );
    keys_new(dir.path(), "other");
    let other = std::fs::read_to_string(dir.path().join("other.key")).expect("other.key");
    let other_secret = other
        .lines()
        .find(|l| l.starts_with("secret_key"))
        .expect("a secret_key line");
    let mixed: Vec<&str> = ada
        .lines()
        .map(|l| {
            if l.starts_with("secret_key") {
                other_secret
            } else {
                l
            }
        })
        .collect();
    write("mixed.key", &mixed.join("\n"));

    let (ada_key, node_pub) = (at("ada.key"), at("node.pub"));
    let (missing, ada_pub) = (at("missing.key"), at("ada.pub"));
    let (short, tilde, mixed) = (at("short.key"), at("tilde.key"), at("mixed.key"));
    let with_keys = |key_file: &str, server_key: &str| {
        vec![
            "--service-id".to_owned(),
            "ada".to_owned(),
            "--key-file".to_owned(),
            key_file.to_owned(),
            "--server-key".to_owned(),
            server_key.to_owned(),
        ]
    };
    let only = |args: &[&str]| -> Vec<String> { args.iter().map(|&a| a.to_owned()).collect() };
    let cases = [
        (
            with_keys(&missing, &node_pub),
            "missing.key: No such file or directory",
        ),
        (with_keys(&ada_pub, &node_pub), "ada.pub: no secret_key"),
        (
            with_keys(&short, &node_pub),
            "secret_key: a key is 40 Z85 characters, this one is 39",
        ),
        (
            with_keys(&tilde, &node_pub),
            "secret_key: not Z85: '~' is not a Z85 character",
        ),
        (
            with_keys(&mixed, &node_pub),
            "public_key is not the public half of secret_key",
        ),
        (
            with_keys(&ada_key, "node.pub.missing"),
            "--server-key node.pub.missing: no such file, nor a 40-character Z85 key",
        ),
        (
            only(&["--service-id", "ada", "--key-file", &ada_key]),
            "--key-file needs --server-key too",
        ),
        (
            only(&["--service-id", "ada", "--server-key", &node_pub]),
            "--server-key needs --key-file too",
        ),
        // The node would take its key's id only.
        (
            only(&["--key-file", &ada_key, "--server-key", &node_pub]),
            "--key-file needs --service-id",
        ),
        (
            only(&["--service-id", "a~b"]),
            "--service-id: use letters, digits",
        ),
    ];
    for (args, expected) in cases {
        let mut cmd = Command::new(python());
        cmd.arg(script()).args(&args);
        let (out, _) = Run::start(cmd).finish(Duration::from_secs(30));
        let (stdout, stderr) = text(&out);
        assert_eq!(
            out.status.code(),
            Some(3),
            "{args:?}: exit {:?}\n{stdout}\n{stderr}",
            out.status.code()
        );
        assert!(
            stderr.contains(expected),
            "{args:?}: {expected:?} not in:\n{stderr}"
        );
        // Nothing printed: it stopped before it connected.
        assert!(stdout.is_empty(), "{args:?}: it went on:\n{stdout}");
    }
}

/// A script of `examples/python/` running beside a node, its output read
/// as it comes: stdout has one line per thing it handled (`moderator.py`:
/// `step ORIGIN ID` per step; `durable.py`: `SEQ TOPIC ID` per delivery),
/// stderr the rest.
struct Script {
    name: &'static str,
    child: Child,
    lines: mpsc::Receiver<(bool, String)>,
    stdout: Vec<String>,
    stderr: Vec<String>,
}

/// What a script that ended left: its exit status, its stdout lines and
/// its stderr.
struct Ended {
    status: ExitStatus,
    lines: Vec<String>,
    stderr: String,
}

impl Script {
    fn start(name: &'static str, endpoints: &Endpoints, extra: &[&str]) -> Self {
        let mut child = Command::new(python())
            .arg(workspace_root().join("examples/python").join(name))
            .args(["--intake", &endpoints.intake])
            .args(["--publish", &endpoints.publish])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {name}: {e}"));
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("its stdout");
        let err = child.stderr.take().expect("its stderr");
        for (reader, is_stderr) in [
            (Box::new(out) as Box<dyn std::io::Read + Send>, false),
            (Box::new(err), true),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(reader).lines() {
                    let Ok(line) = line else { return };
                    if tx.send((is_stderr, line)).is_err() {
                        return;
                    }
                }
            });
        }
        Self {
            name,
            child,
            lines,
            stdout: Vec::new(),
            stderr: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Takes one line, waiting until `until` at most; false when none came
    /// (or both streams are closed).
    fn read_line(&mut self, until: Instant) -> bool {
        let left = until.saturating_duration_since(Instant::now());
        match self.lines.recv_timeout(left) {
            Ok((true, line)) => self.stderr.push(line),
            Ok((false, line)) => self.stdout.push(line),
            Err(_) => return false,
        }
        true
    }

    /// Waits for a line of stderr containing `what`.
    fn wait_for(&mut self, what: &str, limit: Duration) {
        let until = Instant::now() + limit;
        while !self.stderr.iter().any(|l| l.contains(what)) {
            if !self.read_line(until) {
                let _ = self.child.kill();
                panic!(
                    "{} did not say {what:?} within {limit:?}:\n{}\n{}",
                    self.name,
                    self.stdout.join("\n"),
                    self.stderr.join("\n")
                );
            }
        }
    }

    /// Waits until it has written `n` lines on stdout.
    fn wait_for_lines(&mut self, n: usize, limit: Duration) {
        let until = Instant::now() + limit;
        while self.stdout.len() < n {
            if !self.read_line(until) {
                let _ = self.child.kill();
                panic!(
                    "{} did not write {n} lines within {limit:?}:\n{}\n{}",
                    self.name,
                    self.stdout.join("\n"),
                    self.stderr.join("\n")
                );
            }
        }
    }

    /// Waits for it to exit (within `limit`), and everything it wrote.
    fn finish(&mut self, limit: Duration) -> Ended {
        let until = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("wait for the script") {
                break status;
            }
            if Instant::now() >= until {
                let _ = self.child.kill();
                panic!(
                    "{} still ran after {limit:?}:\n{}\n{}",
                    self.name,
                    self.stdout.join("\n"),
                    self.stderr.join("\n")
                );
            }
            self.read_line(Instant::now() + Duration::from_millis(50));
        };
        // What it wrote last, until both pipes are closed.
        while self.read_line(Instant::now() + Duration::from_secs(5)) {}
        Ended {
            status,
            lines: self.stdout.clone(),
            stderr: self.stderr.join("\n"),
        }
    }

    /// SIGTERM (as Ctrl-C), then [`Script::finish`].
    fn stop(&mut self, limit: Duration) -> Ended {
        kill("TERM", self.pid());
        self.finish(limit)
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `moderator.py` beside the node at `endpoints`.
fn moderator(endpoints: &Endpoints, extra: &[&str]) -> Script {
    Script::start("moderator.py", endpoints, extra)
}

/// The line `moderator.py` writes on stderr once it takes steps.
const TAKING: &str = "steps at once on '@reply~moderator~steps-";

/// The results of `ids`, by id, as they come to `client`; panics if one
/// has not come within `limit`.
async fn results(
    client: &mut RawClient,
    ids: &[&str],
    limit: Duration,
) -> BTreeMap<String, Received> {
    let until = Instant::now() + limit;
    let mut got = BTreeMap::new();
    while got.len() < ids.len() {
        let left = until.saturating_duration_since(Instant::now());
        let Some(r) = client.recv(left).await else {
            panic!(
                "results missing after {limit:?}: have {:?} of {ids:?}",
                got.keys()
            );
        };
        assert!(ids.contains(&r.envelope.id.as_str()), "unexpected: {r:?}");
        got.insert(r.envelope.id.clone(), r);
    }
    got
}

/// `"<text> (approved)"`, uppercased by the flow's last step.
fn assert_approved(r: &Received, expected: &str) {
    assert_eq!(r.envelope.status, Status::Ok, "{r:?}");
    assert_eq!(json(&r.payload), serde_json::json!(expected), "{r:?}");
}

/// The moderator's error answer ends the flow, at the step it was given;
/// the result carries what that step received (the text, trimmed), which
/// the answer sent back.
fn assert_refused_by_moderator(r: &Received, text: &str) {
    assert_eq!(r.envelope.status, Status::Error, "{r:?}");
    assert_eq!(json(&r.payload), serde_json::json!(text), "{r:?}");
    let error = r.envelope.error.as_ref().expect("an error");
    assert_eq!(error.code, ErrorCode::ActionFailed, "{error:?}");
    assert_eq!(error.name, "action_failed");
    assert_eq!(error.message, "refused by the moderator");
    assert_eq!(r.envelope.key, "?Review?moderate");
}

/// The shipped `Review` flow (Text.trim → the step given to service
/// `moderator` → Text.upper) with `moderator.py --count 3` taking its
/// steps: two texts approved, one refused, one `step` line each, and the
/// script stops by itself.
#[test]
fn the_python_moderator_takes_the_steps_of_review() {
    if !python_ready() {
        return;
    }
    let node = TestNode::start_builtin(1);
    let limit = Duration::from_secs(30);
    let mut moderator = moderator(&node.endpoints, &["--count", "3"]);
    moderator.wait_for(TAKING, limit);
    let got = runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "writer").await;
        client.request("Review", "r-1", &"  a fine text ").await;
        client.request("Review", "r-2", &"  spam, spam ").await;
        client.request("Review", "r-3", &"another one  ").await;
        results(&mut client, &["r-1", "r-2", "r-3"], limit).await
    });
    assert_approved(&got["r-1"], "A FINE TEXT (APPROVED)");
    assert_approved(&got["r-3"], "ANOTHER ONE (APPROVED)");
    assert_refused_by_moderator(&got["r-2"], "spam, spam");
    let ended = moderator.finish(limit);
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        ended.stderr
    );
    // One line per step. Their order is the order the flows reached the
    // step, after a Text.trim each on the worker: not necessarily r-1's
    // first.
    let mut steps = ended.lines.clone();
    steps.sort();
    assert_eq!(
        steps,
        ["step writer r-1", "step writer r-2", "step writer r-3"],
        "{}",
        ended.stderr
    );
}

/// A request pushed before any moderator runs waits at the step given to
/// the service; `moderator.py` started later takes it.
#[test]
fn the_python_moderator_takes_a_step_that_waited_for_it() {
    if !python_ready() {
        return;
    }
    let node = TestNode::start_builtin(1);
    let limit = Duration::from_secs(30);
    let (got, mut moderator) = runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "writer").await;
        client.request("Review", "early", &"  pushed first ").await;
        let none = client.recv(Duration::from_secs(1)).await;
        assert!(none.is_none(), "no moderator, yet a result: {none:?}");
        let moderator = moderator(&node.endpoints, &["--count", "1"]);
        (results(&mut client, &["early"], limit).await, moderator)
    });
    assert_approved(&got["early"], "PUSHED FIRST (APPROVED)");
    let ended = moderator.finish(limit);
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        ended.stderr
    );
    assert_eq!(ended.lines, ["step writer early"], "{}", ended.stderr);
}

/// A step whose answer is late is given again (same origin and id):
/// `moderator.py`, stopped (SIGSTOP) past `service_step_timeout_ms`, gets
/// it more than once and answers each copy; the first answer continues the
/// flow (one result), the later ones are refused (code 14).
#[test]
fn the_python_moderator_answers_a_step_given_again() {
    if !python_ready() {
        return;
    }
    let config = config_file(
        "heartbeat_ms = 100\nservice_step_timeout_ms = 1000\nservice_retry_ms = 200\nservice_retry_max_ms = 400\n",
    );
    let node = TestNode::start_with(1, None, &["--config", config.path()]);
    let limit = Duration::from_secs(30);
    let mut moderator = moderator(&node.endpoints, &[]);
    moderator.wait_for(TAKING, limit);
    let got = runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "writer").await;
        zmanager_tests::freeze(moderator.pid());
        client.request("Review", "again", &" twice ").await;
        // Three step timeouts (the node ticks every 100 ms here): the step
        // is given again at least once while the moderator cannot answer.
        tokio::time::sleep(Duration::from_secs(3)).await;
        kill("CONT", moderator.pid());
        let got = results(&mut client, &["again"], limit).await;
        let late = client.recv(Duration::from_secs(1)).await;
        assert!(late.is_none(), "a second result: {late:?}");
        got
    });
    assert_approved(&got["again"], "TWICE (APPROVED)");
    let ended = moderator.stop(limit);
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        ended.stderr
    );
    assert!(
        ended.lines.len() >= 2 && ended.lines.iter().all(|l| l == "step writer again"),
        "{:?}",
        ended.lines
    );
    eprintln!(
        "moderator.py was given the step {} times",
        ended.lines.len()
    );
    // Each copy was answered: every answer but the first is refused.
    let refused = |log: &str| {
        log.lines()
            .filter(|l| l.contains("code=\"unknown_async\"") && l.contains("id=again"))
            .count()
    };
    let until = Instant::now() + Duration::from_secs(5);
    while refused(&node.log()) < ended.lines.len() - 1 && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(
        refused(&node.log()),
        ended.lines.len() - 1,
        "{}",
        node.log()
    );
}

/// `moderator.py` with keys, against a node with `[security]`: its
/// handshake pings on the service's own reply topic (the only reply_to the
/// node takes on a ping with keys), and it takes and answers the steps of
/// a writer's requests.
#[test]
fn the_python_moderator_takes_steps_with_keys() {
    use zmanager::client::{Service, ServiceError, ServiceOptions};
    use zmanager::transport::ClientKeys;

    if !python_ready() {
        return;
    }
    let dir = temp::dir("python-moderator-keys");
    let at = |name: &str| dir.path().join(name).to_str().expect("utf-8").to_owned();
    for name in ["node", "moderator", "writer"] {
        keys_new(dir.path(), name);
    }
    let key = |name: &str| {
        security::read_key_file(&dir.path().join(format!("{name}.key"))).expect("a key file")
    };
    let ((server, _), (moderator_key, _), (writer, writer_secret)) =
        (key("node"), key("moderator"), key("writer"));
    let config = secure::write_config(
        dir.path(),
        &[
            ("moderator", &moderator_key, ""),
            ("writer", &writer, "push = [\"Review\"]\n"),
        ],
    );
    let node = secure::start(&config);
    let limit = Duration::from_secs(30);
    let mut moderator = moderator(
        &node.endpoints,
        &[
            "--count",
            "2",
            "--key-file",
            &at("moderator.key"),
            "--server-key",
            &at("node.pub"),
        ],
    );
    moderator.wait_for(TAKING, limit);
    runtime().block_on(async {
        let mut options = ServiceOptions::with_endpoints("writer", &node.endpoints);
        options.id = Some("writer".into());
        options.keys = Some(ClientKeys {
            server,
            public: writer,
            secret: writer_secret,
        });
        let writer = Service::connect(options)
            .await
            .expect("the writer connects");
        let approved = writer
            .request("Review", &"  with keys ")
            .await
            .expect("approved");
        let text: String = approved.decode().expect("a string");
        assert_eq!(text, "WITH KEYS (APPROVED)");
        match writer.request("Review", &"keyed spam").await {
            Err(ServiceError::Failed { key, error }) => {
                assert_eq!(error.code, ErrorCode::ActionFailed, "{error:?}");
                assert_eq!(error.message, "refused by the moderator");
                assert_eq!(key, "?Review?moderate");
            }
            other => panic!("not refused: {other:?}"),
        }
    });
    let ended = moderator.finish(limit);
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        ended.stderr
    );
    assert_eq!(ended.lines.len(), 2, "{:?}", ended.lines);
    assert!(
        ended.lines.iter().all(|l| l.starts_with("step writer ")),
        "{:?}",
        ended.lines
    );
    // Nothing of the moderator's was refused as not its own (code 19).
    let log = node.log();
    assert!(!log.contains("wrong_service"), "{log}");
}

/// The prefix `durable.py` keeps in these tests: the Echo flow's results,
/// where the result of a request without `reply_to` goes.
const ECHO_DONE: &str = "Echo~~~~done";

/// What `durable.py` says on stderr once the node made its subscription,
/// up to the sequence number acknowledged so far.
const SUBSCRIBED: &str =
    "durable: subscribed as 'log' of 'audit' to Echo~~~~done, acknowledged so far ";

/// `durable.py` as service `audit`, subscription `log` on `Echo~~~~done`,
/// with the options `extra` (`--count N`, keys).
fn durable(endpoints: &Endpoints, extra: &[&str]) -> Script {
    let mut args = vec!["--service-id", "audit", "--name", "log"];
    args.extend_from_slice(extra);
    args.push(ECHO_DONE);
    Script::start("durable.py", endpoints, &args)
}

/// The lines `durable.py` prints for the results of Echo requests
/// `e-00000`, `e-00001`…, kept in that order: sequence numbers `seqs`.
fn echo_lines(seqs: std::ops::RangeInclusive<u64>) -> Vec<String> {
    seqs.map(|seq| format!("{seq} {ECHO_DONE} e-{:05}", seq - 1))
        .collect()
}

/// The run exited 0, having printed `expected` (and nothing else on
/// stdout) after the node said it had acknowledged `acked` so far, and
/// said last that the node had the ack of the last one.
fn assert_printed(ended: &Ended, acked: u64, expected: &[String]) {
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        ended.stderr
    );
    assert_eq!(ended.lines, expected, "{}", ended.stderr);
    let subscribed = format!("{SUBSCRIBED}{acked};");
    assert!(ended.stderr.contains(&subscribed), "{}", ended.stderr);
    let last = acked + u64::try_from(expected.len()).expect("a few lines");
    let flushed = format!("durable: the node has the ack of {last}");
    assert!(ended.stderr.ends_with(&flushed), "{}", ended.stderr);
}

/// A libzmq PUSH to a node's intake as service `writer`, for Echo requests
/// without `reply_to`: their results go to the flow's results topic,
/// [`ECHO_DONE`]. It reconnects by itself when the node restarts.
struct EchoWriter {
    push: zmq::Socket,
    _context: zmq::Context,
}

/// The CURVE keys of [`EchoWriter`] for a node with `[security]`: the
/// node's public key, then the writer's public and secret keys.
type WriterKeys = (security::Key, security::Key, security::Key);

impl EchoWriter {
    fn connect(intake: &str, keys: Option<&WriterKeys>) -> Self {
        let context = zmq::Context::new();
        let push = context.socket(zmq::PUSH).expect("a socket");
        if let Some((server, public, secret)) = keys {
            push.set_curve_serverkey(server).expect("server key");
            push.set_curve_publickey(public).expect("public key");
            push.set_curve_secretkey(secret).expect("secret key");
        }
        push.set_linger(0).expect("linger");
        push.connect(intake).expect("connect intake");
        Self {
            push,
            _context: context,
        }
    }

    /// Pushes the Echo requests `e-NNNNN` for `ids` (their payloads the
    /// numbers).
    fn push(&self, ids: std::ops::Range<usize>) {
        for i in ids {
            let mut envelope =
                zmanager::wire::envelope::Envelope::request(format!("e-{i:05}"), "Echo");
            envelope.service = "writer".into();
            let frames = [b"Echo~".to_vec(), envelope.encode(), msgpack(&i).to_vec()];
            self.push.send_multipart(frames, 0).expect("send");
        }
    }
}

/// The node's durable subscription `log` of `audit`, asked with request id
/// `id` on `client`'s connection (`ServiceManagement_Durables`); None when
/// it has none.
async fn subscription_log(client: &mut RawClient, id: &str) -> Option<DurableInfo> {
    client.request(registry::DURABLES, id, &()).await;
    let answer = client
        .recv(Duration::from_secs(30))
        .await
        .expect("the durables");
    let all: Vec<DurableInfo> = rmp_serde::from_slice(&answer.payload).expect("a list");
    all.into_iter()
        .find(|d| (d.service.as_str(), d.name.as_str()) == ("audit", "log"))
}

/// `durable.py --count 3`, subscribed before 5 Echo results are published
/// on `Echo~~~~done`, prints the first 3 and exits; run again with
/// `--count 2`, it prints the 2 it missed while away, and none of the
/// first 3 again: the node had its acknowledgements, the last one too
/// (the script's ping after it), so it starts after 3. The node then has
/// everything acknowledged, nothing kept.
#[test]
fn the_python_durable_subscriber_goes_on_where_it_stopped() {
    if !python_ready() {
        return;
    }
    let node = TestNode::start_builtin(1);
    let limit = Duration::from_secs(30);
    let mut first = durable(&node.endpoints, &["--count", "3"]);
    first.wait_for(&format!("{SUBSCRIBED}0;"), limit);
    let endpoints = node.endpoints.clone();
    let (first, second, kept) = runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        for i in 0..5 {
            // No reply_to: the result goes to the flow's results topic.
            let mut envelope = writer.envelope(&format!("e-{i:05}"), "Echo");
            envelope.reply_to.clear();
            writer.send(&envelope, msgpack(&i)).await;
        }
        let first = tokio::task::spawn_blocking(move || first.finish(limit))
            .await
            .expect("joined");
        let second = tokio::task::spawn_blocking(move || {
            durable(&endpoints, &["--count", "2"]).finish(limit)
        })
        .await
        .expect("joined");
        // Asked right after it exited, on another connection: the node
        // has its last ack already, because the script waited for it.
        let kept = subscription_log(&mut writer, "durables").await;
        (first, second, kept)
    });
    assert_printed(&first, 0, &echo_lines(1..=3));
    assert_printed(&second, 3, &echo_lines(4..=5));
    let log = kept.expect("the subscription log");
    assert_eq!(
        (log.acked, log.unacked, log.backlog, log.dropped),
        (5, 0, 0, 0),
        "{log:?}"
    );
}

/// In `dir`: key pairs for the node, `audit` and `writer` (`zmanager keys
/// new`), and the node's configuration with `[security]` letting `audit`
/// read `Echo~~~~done` and `writer` push into `Echo`. Returns the
/// configuration's path, the writer's keys, and `durable.py`'s key options
/// (audit's key file, the node's public key).
fn durable_keys(dir: &Path) -> (std::path::PathBuf, WriterKeys, Vec<String>) {
    for name in ["node", "audit", "writer"] {
        keys_new(dir, name);
    }
    let key =
        |name: &str| security::read_key_file(&dir.join(format!("{name}.key"))).expect("a key file");
    let ((server, _), (audit, _), (writer, writer_secret)) =
        (key("node"), key("audit"), key("writer"));
    let config = secure::write_config(
        dir,
        &[
            ("audit", &audit, "subscribe = [\"Echo~~~~done\"]\n"),
            ("writer", &writer, "push = [\"Echo\"]\n"),
        ],
    );
    let at = |name: &str| dir.join(name).to_str().expect("utf-8").to_owned();
    let options = vec![
        "--key-file".to_owned(),
        at("audit.key"),
        "--server-key".to_owned(),
        at("node.pub"),
    ];
    (config, (server, writer, writer_secret), options)
}

/// `durable.py` with keys, against a node with `[security]` that lets
/// `audit` read `Echo~~~~done`: it pings and acknowledges on `audit`'s own
/// reply topic, the only `reply_to` the node takes on those with keys
/// (protocol.md §7d), so the second run goes on after the first.
#[test]
fn the_python_durable_subscriber_acknowledges_with_keys() {
    if !python_ready() {
        return;
    }
    let dir = temp::dir("python-durable-keys");
    let (config, writer_keys, options) = durable_keys(dir.path());
    let node = secure::start(&config);
    let limit = Duration::from_secs(30);
    let with_keys = |count| {
        let keys: Vec<&str> = options.iter().map(String::as_str).collect();
        durable(&node.endpoints, &[&["--count", count], &keys[..]].concat())
    };
    let mut first = with_keys("2");
    first.wait_for(&format!("{SUBSCRIBED}0;"), limit);
    // Kept to the end: closed, it drops what it has not sent yet.
    let echo = EchoWriter::connect(&node.endpoints.intake, Some(&writer_keys));
    echo.push(0..3);
    assert_printed(&first.finish(limit), 0, &echo_lines(1..=2));
    let second = with_keys("1").finish(limit);
    assert_printed(&second, 2, &echo_lines(3..=3));
    let log = node.log();
    assert!(!log.contains("wrong_service"), "{log}");
}

/// Stopped (SIGTERM, as Ctrl-C) while the node is frozen (SIGSTOP),
/// `durable.py` does not exit before the node has its last ack: it waits
/// for the ping it sent behind the ack, and exits once the node goes on.
/// (A script that exited at once could leave its last ack on the way, and
/// the next run would get that message again.)
#[test]
fn the_python_durable_subscriber_exits_once_the_node_has_its_last_ack() {
    if !python_ready() {
        return;
    }
    let node = TestNode::start_builtin(1);
    let limit = Duration::from_secs(30);
    let mut run = durable(&node.endpoints, &[]);
    run.wait_for(&format!("{SUBSCRIBED}0;"), limit);
    let (early, ended) = runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        for i in 0..3 {
            let mut envelope = writer.envelope(&format!("e-{i:05}"), "Echo");
            envelope.reply_to.clear();
            writer.send(&envelope, msgpack(&i)).await;
        }
        tokio::task::spawn_blocking(move || {
            run.wait_for_lines(3, limit);
            zmanager_tests::freeze(node.pid());
            kill("TERM", run.pid());
            std::thread::sleep(Duration::from_millis(1500));
            let early = run.child.try_wait().expect("wait for durable.py");
            node.signal("CONT");
            (early, run.finish(limit))
        })
        .await
        .expect("joined")
    });
    assert!(
        early.is_none(),
        "exited ({early:?}) while the node was stopped:\n{}\n{}",
        ended.lines.join("\n"),
        ended.stderr
    );
    assert_printed(&ended, 0, &echo_lines(1..=3));
}

/// What `durable.py` says on stderr when the node answers a subscribe with
/// another subscription than the one it had (another `accepted_us`), up to
/// the number it goes on from.
const AFRESH: &str =
    "durable: the node made the subscription afresh (did it restart?); going on from ";

/// The script said once that the node made the subscription afresh, going
/// on from 0, and never for another subscribe.
fn assert_afresh_once(ended: &Ended) {
    let afresh: Vec<&str> = ended
        .stderr
        .lines()
        .filter(|l| l.starts_with(AFRESH))
        .collect();
    assert_eq!(afresh, [format!("{AFRESH}0")], "{}", ended.stderr);
}

/// `durable.py --count 5` (and `extra`, keys say) beside `node`, which is
/// killed and started again on the same endpoints once the script printed
/// 3 Echo results and then heard nothing for longer than 2 s (so it sent
/// the subscribe again once before, to the subscription it had: the same
/// `accepted_us`, nothing said); 2 more are published once the script says
/// the node made the subscription afresh (published before, the new
/// subscription would not have been there to keep them). Returns how the
/// script ended.
fn restart_under_durable(node: &mut TestNode, echo: &EchoWriter, extra: &[&str]) -> Ended {
    let limit = Duration::from_secs(30);
    let mut run = durable(&node.endpoints, &[&["--count", "5"], extra].concat());
    run.wait_for(&format!("{SUBSCRIBED}0;"), limit);
    echo.push(0..3);
    run.wait_for_lines(3, limit);
    std::thread::sleep(Duration::from_secs(3));
    node.restart();
    node.wait_for_workers(1);
    run.wait_for(&format!("{AFRESH}0"), limit);
    echo.push(3..5);
    run.finish(limit)
}

/// [`restart_under_durable`] went as it should: the 3 results of before
/// the restart, then the 2 of after it, numbered from 1 again; the new
/// subscription told once (not for the subscribe of before the restart);
/// and the node has the ack of 2, the last of the new subscription.
fn assert_went_on_afresh(ended: &Ended) {
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        ended.stderr
    );
    let mut expected = echo_lines(1..=3);
    expected.extend([
        "1 Echo~~~~done e-00003".to_owned(),
        "2 Echo~~~~done e-00004".to_owned(),
    ]);
    assert_eq!(ended.lines, expected, "{}", ended.stderr);
    assert_afresh_once(ended);
    let flushed = "durable: the node has the ack of 2";
    assert!(ended.stderr.ends_with(flushed), "{}", ended.stderr);
}

/// The node keeps durable subscriptions in memory: killed and started
/// again, it has lost `durable.py`'s, and libzmq reconnects the script
/// without telling it. Heard nothing for 2 s, the script subscribes again
/// (or an ack of its on the way is refused); the node's accepted says
/// acknowledged 0, with an `accepted_us` that is not the one the script
/// had, so it goes on from 0, not from the 3 it printed: the 2 results
/// published after the restart, numbered 1 and 2, are printed too, and
/// the node has both acknowledged.
#[test]
fn the_python_durable_subscriber_goes_on_after_the_node_restarts() {
    if !python_ready() {
        return;
    }
    let (_, endpoints) = fixed_endpoints();
    let config = config_file(&endpoints);
    let mut node = TestNode::start_fixed(1, None, &["--config", config.path()]);
    let echo = EchoWriter::connect(&node.endpoints.intake, None);
    let ended = restart_under_durable(&mut node, &echo, &[]);
    assert_went_on_afresh(&ended);
    let log = runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "writer").await;
        subscription_log(&mut client, "durables").await
    });
    let log = log.expect("the subscription log");
    assert_eq!(
        (log.acked, log.unacked, log.backlog, log.dropped),
        (2, 0, 0, 0),
        "{log:?}"
    );
}

/// The same with keys: an ack's refusal then goes to `@reply~audit~`,
/// which the script does not listen to outside its pings, so only the
/// quiet tells it that the restarted node lost the subscription.
#[test]
fn the_python_durable_subscriber_goes_on_after_the_node_restarts_with_keys() {
    if !python_ready() {
        return;
    }
    let dir = temp::dir("python-durable-restart-keys");
    let (config, writer_keys, options) = durable_keys(dir.path());
    let mut node = secure::start(&config);
    let echo = EchoWriter::connect(&node.endpoints.intake, Some(&writer_keys));
    let keys: Vec<&str> = options.iter().map(String::as_str).collect();
    let ended = restart_under_durable(&mut node, &echo, &keys);
    assert_went_on_afresh(&ended);
    let log = node.log();
    assert!(!log.contains("wrong_service"), "{log}");
}

/// Asks for the subscription `log` of `audit` on `client` until `done`
/// holds of it (`what` it waits for); panics after 20 s.
async fn wait_for_log(
    client: &mut RawClient,
    what: &str,
    done: impl Fn(Option<&DurableInfo>) -> bool,
) {
    let until = Instant::now() + Duration::from_secs(20);
    for n in 0.. {
        // A new id each time: the same one again would get the first
        // answer again (dedupe_window_ms).
        let log = subscription_log(client, &format!("durables-{n}")).await;
        if done(log.as_ref()) {
            return;
        }
        assert!(Instant::now() < until, "{what}: still {log:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Pushes the Echo requests `e-NNNNN` for `ids` from `writer`, without
/// `reply_to`: their results go to [`ECHO_DONE`].
async fn publish_echo(writer: &mut RawClient, ids: std::ops::Range<usize>) {
    for i in ids {
        let mut envelope = writer.envelope(&format!("e-{i:05}"), "Echo");
        envelope.reply_to.clear();
        writer.send(&envelope, msgpack(&i)).await;
    }
}

/// An ack the node refuses (code 6: it has no subscription under the name,
/// as after a restart) makes `durable.py` subscribe again, once, instead
/// of exiting. Here the subscription is deleted (a subscribe without
/// prefixes) while the script is frozen (SIGSTOP) with results 4 and 5
/// sent to it; let go, it prints them, both acks are refused, it
/// subscribes again once, and the node makes the subscription afresh: the
/// script goes on from 0 and prints the 2 results published then, as 1
/// and 2. (Frozen well under 2 s, it does not subscribe again for the
/// quiet first: then the acks would not be refused.)
#[test]
fn the_python_durable_subscriber_subscribes_again_when_an_ack_is_refused() {
    use zmanager::wire::envelope::Kind;

    if !python_ready() {
        return;
    }
    let node = TestNode::start_builtin(1);
    let limit = Duration::from_secs(30);
    let mut run = durable(&node.endpoints, &["--count", "7"]);
    run.wait_for(&format!("{SUBSCRIBED}0;"), limit);
    let (ended, log) = runtime().block_on(async {
        let mut writer = RawClient::connect(&node.endpoints, "writer").await;
        publish_echo(&mut writer, 0..3).await;
        let mut run = tokio::task::spawn_blocking(move || {
            run.wait_for_lines(3, limit);
            zmanager_tests::freeze(run.pid());
            run
        })
        .await
        .expect("joined");
        publish_echo(&mut writer, 3..5).await;
        wait_for_log(&mut writer, "4 and 5 sent", |log| {
            log.is_some_and(|l| l.acked + l.unacked == 5)
        })
        .await;
        let mut delete = writer.envelope("delete-log", "");
        delete.kind = Kind::Subscribe;
        delete.service = "audit".into();
        delete.reply_to = "@reply~audit~durable-log~".into();
        let no_prefixes = serde_json::json!({"name": "log", "prefixes": []});
        writer.send(&delete, msgpack(&no_prefixes)).await;
        wait_for_log(&mut writer, "deleted", |log| log.is_none()).await;
        kill("CONT", run.pid());
        let mut run = tokio::task::spawn_blocking(move || {
            run.wait_for(&format!("{AFRESH}0"), limit);
            run
        })
        .await
        .expect("joined");
        publish_echo(&mut writer, 5..7).await;
        let ended = tokio::task::spawn_blocking(move || run.finish(limit))
            .await
            .expect("joined");
        (ended, subscription_log(&mut writer, "durables").await)
    });
    assert!(
        ended.status.success(),
        "{:?}: {}",
        ended.status,
        ended.stderr
    );
    let mut expected = echo_lines(1..=5);
    expected.extend([
        "1 Echo~~~~done e-00005".to_owned(),
        "2 Echo~~~~done e-00006".to_owned(),
    ]);
    assert_eq!(ended.lines, expected, "{}", ended.stderr);
    // One refused ack said, and one subscribe for them all.
    let refused: Vec<&str> = ended
        .stderr
        .lines()
        .filter(|l| l.starts_with("durable: the node refused"))
        .collect();
    assert_eq!(refused.len(), 1, "{}", ended.stderr);
    assert!(
        refused[0].contains("-ack-")
            && refused[0]
                .contains("6 bad_request: service \"audit\" has no durable subscription \"log\"")
            && refused[0].ends_with("; subscribing again"),
        "{}",
        ended.stderr
    );
    assert_afresh_once(&ended);
    assert!(
        ended.stderr.ends_with("durable: the node has the ack of 2"),
        "{}",
        ended.stderr
    );
    let log = log.expect("the subscription log");
    assert_eq!(
        (log.acked, log.unacked, log.backlog, log.dropped),
        (2, 0, 0, 0),
        "{log:?}"
    );
}

/// True when python has `requests`; false (and the test is skipped) when
/// not, except under CI.
fn python_has_requests() -> bool {
    let ready = Command::new(python())
        .args(["-c", "import requests"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have python3 with requests (pip install -r examples/python/requirements.txt)"
        );
        eprintln!("SKIPPED: python3 with requests is not installed");
    }
    ready
}

/// `http_quickstart.py` (requests only, docs/http.md) against a node on its
/// built-in flows: the result with wait, 202 then polled, the same key
/// answered again, the journey, and the unknown flow's 404.
#[test]
fn the_http_example_gets_its_results_with_requests_only() {
    if !python_has_requests() {
        return;
    }
    let node = TestNode::start_builtin(1);
    let url = format!("http://{}", node.http.as_deref().expect("HTTP on"));
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("examples/python/http_quickstart.py"))
        .args(["--url", &url]);
    let (out, _) = Run::start(cmd).finish(Duration::from_secs(60));
    let (stdout, stderr) = text(&out);
    assert!(
        out.status.success(),
        "exit {:?}\n{stdout}\n{stderr}",
        out.status.code()
    );
    let greeting = "{'greeting': 'HELLO, ADA!'}";
    for line in [
        format!("with wait: {greeting}"),
        format!("polled: {greeting}"),
        format!("sent again: {greeting}"),
        "journey: accepted -> dispatched -> completed".to_owned(),
        "unknown flow: 404 3 unknown_flow".to_owned(),
    ] {
        assert!(stdout.contains(&line), "missing {line:?} in:\n{stdout}");
    }
    assert!(
        stdout.contains("taken: accepted at /v1/requests/http/py-"),
        "{stdout}"
    );

    // A node that is not there: exit 2, said so.
    let mut cmd = Command::new(python());
    cmd.arg(workspace_root().join("examples/python/http_quickstart.py"))
        .args([
            "--url",
            &format!("http://127.0.0.1:{}", zmanager_tests::node::free_port()),
        ]);
    let (out, _) = Run::start(cmd).finish(Duration::from_secs(60));
    assert_eq!(out.status.code(), Some(2), "{:?}", text(&out));
}
