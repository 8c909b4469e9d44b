//! A real node for a test: `zmanager up` on ports the system picks.

use crate::temp::{TempFile, config_file};
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use zmanager::node::config::Endpoints;

/// A running `zmanager up`; killed (and its workers with it) on drop.
#[derive(Debug)]
pub struct TestNode {
    child: Option<Child>,
    pub endpoints: Endpoints,
    /// Where its HTTP server listens (`ip:port`), when it is on.
    pub http: Option<String>,
    /// The node's data directory (journal, dead letters), removed on drop.
    pub data_dir: std::path::PathBuf,
    /// A temp directory of its own, removed on drop: its log (stderr), and
    /// its data directory unless it was given one.
    scratch: tempfile::TempDir,
    /// The arguments of `zmanager`, for [`TestNode::restart`].
    args: Vec<OsString>,
}

impl TestNode {
    /// Starts a node with `workers` worker processes on the test flows.
    pub fn start(workers: usize) -> Self {
        let (flows, mappings) = crate::test_config();
        Self::start_with(workers, Some((&flows, &mappings)), &[])
    }

    /// Starts a node on its built-in flows and mappings, as `zmanager up`.
    pub fn start_builtin(workers: usize) -> Self {
        Self::start_with(workers, None, &[])
    }

    /// Starts a node with the given flows and mappings (or the built-in
    /// ones) and extra arguments, on ports the system picks.
    pub fn start_with(workers: usize, catalog: Option<(&Path, &Path)>, extra: &[&str]) -> Self {
        Self::spawn(workers, catalog, extra, !extra.contains(&"--ipc"), None)
    }

    /// Like [`TestNode::start_with`], on the endpoints of the configuration
    /// (for a node restarted on the same ports).
    pub fn start_fixed(workers: usize, catalog: Option<(&Path, &Path)>, extra: &[&str]) -> Self {
        Self::spawn(workers, catalog, extra, false, None)
    }

    /// Like [`TestNode::start_fixed`], with `data_dir` as its data
    /// directory (a small disk, say) instead of a fresh one. It is still
    /// emptied on drop, unless [`TestNode::restart_on`] moved the node.
    pub fn start_fixed_in(
        data_dir: &Path,
        workers: usize,
        catalog: Option<(&Path, &Path)>,
        extra: &[&str],
    ) -> Self {
        Self::spawn(workers, catalog, extra, false, Some(data_dir.to_path_buf()))
    }

    fn spawn(
        workers: usize,
        catalog: Option<(&Path, &Path)>,
        extra: &[&str],
        any_port: bool,
        data_dir: Option<std::path::PathBuf>,
    ) -> Self {
        let scratch = crate::temp::dir("test-node");
        let data_dir = data_dir.unwrap_or_else(|| scratch.path().join("data"));
        let mut args: Vec<OsString> =
            vec!["up".into(), "--workers".into(), workers.to_string().into()];
        args.extend(["--data-dir".into(), data_dir.clone().into_os_string()]);
        if any_port {
            args.push("--any-port".into());
        } else if !extra.iter().any(|a| *a == "--http" || *a == "--no-http") {
            // A port of its own, kept across restarts: nodes of other
            // tests run at the same time.
            args.extend(["--http".into(), format!("127.0.0.1:{}", free_port()).into()]);
        }
        if let Some((flows, mappings)) = catalog {
            args.extend([
                "--flows".into(),
                flows.as_os_str().to_owned(),
                "--mappings".into(),
                mappings.as_os_str().to_owned(),
            ]);
        }
        args.extend(extra.iter().map(OsString::from));
        let (child, endpoints, http) = launch(&args, &stderr_log(&scratch));
        Self {
            child: Some(child),
            endpoints,
            http,
            data_dir,
            scratch,
            args,
        }
    }

    /// Starts the node again with the same arguments and data directory
    /// (after it was killed or stopped): the endpoints must be fixed
    /// ([`TestNode::start_fixed`]). Its log goes on in the same file.
    pub fn restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let (child, endpoints, http) = launch(&self.args, &stderr_log(&self.scratch));
        assert_eq!(endpoints, self.endpoints, "restarted on other endpoints");
        self.child = Some(child);
        self.http = http;
    }

    /// Like [`TestNode::restart`], on `data_dir` instead of its own (where
    /// the old one's files were copied): the node's data directory from
    /// now on, removed on drop like the first.
    pub fn restart_on(&mut self, data_dir: &Path) {
        let at = self
            .args
            .iter()
            .position(|a| a == "--data-dir")
            .expect("a node is started with --data-dir")
            + 1;
        self.args[at] = data_dir.as_os_str().to_owned();
        self.data_dir = data_dir.to_path_buf();
        self.restart();
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the node wrote to stderr so far (its log).
    pub fn log(&self) -> String {
        std::fs::read_to_string(stderr_log(&self.scratch)).unwrap_or_default()
    }

    /// The pids of the node's live worker processes.
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// Waits until `n` worker processes run; returns their pids.
    pub fn wait_for_workers(&self, n: usize) -> Vec<u32> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pids = self.worker_pids();
            if pids.len() >= n || Instant::now() >= deadline {
                return pids;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends `signal` (e.g. "INT", "KILL") to the node process.
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Waits for the node to exit; returns its exit code.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Some(status.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if std::env::var_os("ZMANAGER_TEST_LOG").is_some() {
            eprintln!("---- node {} log ----\n{}", self.pid(), self.log());
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        // A data directory it was given (not in `scratch`) is emptied too;
        // `scratch`, with the log, goes after this.
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

/// Where a node with `scratch` as its temp directory writes its stderr.
fn stderr_log(scratch: &tempfile::TempDir) -> std::path::PathBuf {
    scratch.path().join("node.log")
}

/// Runs `zmanager` with `args`, its stderr appended to `log`; returns it
/// and the endpoints (and HTTP address) its first line announces.
fn launch(args: &[OsString], log: &Path) -> (Child, Endpoints, Option<String>) {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("open the node log");
    let mut child = crate::cli::zmanager(args)
        .stdout(Stdio::piped())
        .stderr(file)
        .spawn();
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the node's first line");
    if line.is_empty() {
        let _ = child.wait();
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("the node did not start:\n{log}");
    }
    let field = |name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
            .to_owned()
    };
    let endpoints = Endpoints {
        intake: field("intake"),
        workers: field("workers"),
        publish: field("publish"),
    };
    let http = Some(field("http")).filter(|at| at != "off");
    (child, endpoints, http)
}

/// Pids whose parent is `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent pid of `pid`, if it is alive (zombies count as dead).
pub fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // pid (comm) state ppid ...; comm may contain spaces, so split after ')'.
    let rest = stat.rsplit_once(')')?.1;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?;
    if state == "Z" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// True when `pid` is a live (non-zombie) process.
pub fn is_alive(pid: u32) -> bool {
    parent_of(pid).is_some()
}

impl TestNode {
    /// Writes `dir/node.toml`: `extra` (top-level keys), then this node's
    /// endpoints, so that another command or node can be pointed at it.
    pub fn write_config(&self, dir: &Path, extra: &str) -> std::path::PathBuf {
        let e = &self.endpoints;
        let path = dir.join("node.toml");
        std::fs::write(
            &path,
            format!(
                "{extra}\n[endpoints]\nintake = {:?}\nworkers = {:?}\npublish = {:?}\n",
                e.intake, e.workers, e.publish
            ),
        )
        .expect("write the configuration");
        path
    }
}

/// Resident memory of `pid` in KiB (VmRSS), if it is alive.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// A TCP port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A node on the test flows with `toml` as its configuration; keep the
/// returned file alive as long as the node.
pub fn node_with(workers: usize, toml: &str) -> (TestNode, TempFile) {
    let config = config_file(toml);
    let (flows, mappings) = crate::test_config();
    let node = TestNode::start_with(
        workers,
        Some((&flows, &mappings)),
        &["--config", config.path()],
    );
    (node, config)
}

/// Three tcp endpoints on loopback, on ports free now, and the
/// configuration's `[endpoints]` table naming them: for a node restarted
/// where its services and workers expect it.
pub fn fixed_endpoints() -> (Endpoints, String) {
    endpoints_on("127.0.0.1")
}

/// Like [`fixed_endpoints`], on `host` (a loopback address other than
/// 127.0.0.1 stands for another machine).
pub fn endpoints_on(host: &str) -> (Endpoints, String) {
    let at = |port: u16| format!("tcp://{host}:{port}");
    let endpoints = Endpoints {
        intake: at(free_port()),
        workers: at(free_port()),
        publish: at(free_port()),
    };
    let toml = format!(
        "[endpoints]\nintake = \"{}\"\nworkers = \"{}\"\npublish = \"{}\"\n",
        endpoints.intake, endpoints.workers, endpoints.publish
    );
    (endpoints, toml)
}

/// A `zmanager worker` run by hand (not by a node); killed on drop.
#[derive(Debug)]
pub struct StandaloneWorker(Child);

impl StandaloneWorker {
    pub fn start(endpoint: &str, identity: &str, extra: &[&str]) -> Self {
        let (flows, mappings) = crate::test_config();
        let child =
            crate::cli::zmanager(["worker", "--endpoint", endpoint, "--identity", identity])
                .arg("--flows")
                .arg(flows)
                .arg("--mappings")
                .arg(mappings)
                .args(extra)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .spawn();
        Self(child)
    }

    pub fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for StandaloneWorker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
