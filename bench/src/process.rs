//! The processes a driver starts and stops: `zmanager bench`'s and
//! `zmanager chaos`'s node, its workers and their helpers.
//!
//! - [`TempDir`]: logs, configuration and ipc sockets of one run, removed
//!   on drop;
//! - [`Process`]: a child process with its stderr in a log file, killed on
//!   drop, so no process outlives a driver that returns early;
//! - [`Node`]: `zmanager up` in its own process, its endpoints read from its
//!   first line, its workers found in `/proc`, stopped (SIGTERM) or killed
//!   (SIGKILL of the node and its workers at once, as a crash does).

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use super::BenchError;
use super::proc_stats;

/// Longest wait for the node, its workers, or a service to be ready.
pub const START_LIMIT: Duration = Duration::from_secs(60);

/// A temporary directory for logs, configuration and ipc sockets; removed
/// on drop.
#[derive(Debug)]
pub struct TempDir {
    pub path: PathBuf,
}

impl TempDir {
    /// A fresh directory named `<prefix>-<pid>-<nanos>` in the system's
    /// temporary directory.
    pub fn new(prefix: &str) -> Result<Self, BenchError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = std::env::temp_dir().join(format!("{prefix}-{}-{nanos:09}", std::process::id()));
        std::fs::create_dir_all(&path)
            .map_err(|e| BenchError::Io(format!("cannot create {}", path.display()), e))?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// A child process, killed on drop, its stderr in a log file.
#[derive(Debug)]
pub struct Process {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    log: PathBuf,
}

impl Process {
    /// Starts `command` with piped stdin and stdout, its stderr in
    /// `<dir>/<name>.log`.
    pub fn spawn(mut command: Command, name: &str, dir: &TempDir) -> Result<Self, BenchError> {
        let log = dir.path.join(format!("{}.log", name.replace(' ', "-")));
        let file = std::fs::File::create(&log)
            .map_err(|e| BenchError::Io(format!("cannot create {}", log.display()), e))?;
        if std::env::var_os("RUST_LOG").is_none() {
            command.env("RUST_LOG", "warn");
        }
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(file)
            .spawn()
            .map_err(|e| BenchError::Io(format!("cannot start the {name}"), e))?;
        let stdin = child.stdin.take();
        Ok(Self {
            name: name.to_owned(),
            child: Some(child),
            stdin,
            log,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    pub fn take_stdout(&mut self) -> Result<std::process::ChildStdout, BenchError> {
        self.child
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or_else(|| BenchError::Protocol(format!("no stdout for the {}", self.name)))
    }

    /// Writes one line to its stdin.
    pub fn say(&mut self, line: &str) -> Result<(), BenchError> {
        let Some(stdin) = self.stdin.as_mut() else {
            return Err(BenchError::Protocol(format!(
                "the {} has no stdin",
                self.name
            )));
        };
        writeln!(stdin, "{line}")
            .and_then(|()| stdin.flush())
            .map_err(|e| BenchError::Io(format!("cannot talk to the {}", self.name), e))
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `limit` for it to exit, then kills it.
    pub fn wait(&mut self, limit: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills it (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.stdin = None;
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// An error for this process, with the end of its log.
    pub fn failed(&self, what: &str) -> BenchError {
        BenchError::Child {
            what: format!("the {}: {what}", self.name),
            log: log_tail(&self.log),
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The last lines of a log file.
pub fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}

/// Sends `signal` (`"TERM"`, `"KILL"`, `"STOP"`, …) to `pid`. std cannot
/// send a signal other than SIGKILL without unsafe code; kill(1) can.
pub fn signal(pid: u32, signal: &str) {
    if pid == 0 {
        return;
    }
    let _ = Command::new("kill")
        .args([format!("-{signal}"), pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The node under test: `zmanager up` in its own process.
#[derive(Debug)]
pub struct Node {
    pub process: Process,
    pub intake: String,
    pub publish: String,
    /// Where its HTTP server listens (`None`: off).
    pub http: Option<String>,
}

impl Node {
    /// Starts `command` (a `zmanager up …`) as `name` and reads its
    /// endpoints from the line it prints once it listens.
    pub fn spawn(command: Command, name: &str, dir: &TempDir) -> Result<Self, BenchError> {
        let mut process = Process::spawn(command, name, dir)?;
        let mut line = String::new();
        BufReader::new(process.take_stdout()?)
            .read_line(&mut line)
            .map_err(|e| BenchError::Io("cannot read the node's first line".to_owned(), e))?;
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .map(str::to_owned)
        };
        let (Some(intake), Some(publish)) = (field("intake"), field("publish")) else {
            return Err(process.failed("did not start"));
        };
        let http = field("http").filter(|at| at != "off");
        Ok(Self {
            process,
            intake,
            publish,
            http,
        })
    }

    /// Its worker processes now.
    pub fn worker_pids(&self) -> Vec<u32> {
        proc_stats::children_of(self.process.pid())
    }

    /// Waits until `n` worker processes run; returns their pids.
    pub fn wait_for_workers(&self, n: usize) -> Result<Vec<u32>, BenchError> {
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let pids = self.worker_pids();
            if pids.len() >= n {
                return Ok(pids);
            }
            if Instant::now() >= deadline {
                return Err(self.process.failed(&format!(
                    "{} of {n} worker processes running after {START_LIMIT:?}",
                    pids.len()
                )));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the node as Ctrl-C would (SIGTERM: workers drain first), or
    /// kills it after 10 s.
    pub fn stop(&mut self) {
        signal(self.process.pid(), "TERM");
        self.process.wait(Duration::from_secs(10));
    }

    /// Kills the node and its workers at once (SIGKILL), as a crash of the
    /// whole node does, and reaps the node.
    pub fn kill_all(&mut self) {
        let workers = self.worker_pids();
        signal(self.process.pid(), "KILL");
        for pid in workers {
            signal(pid, "KILL");
        }
        self.process.kill();
    }
}
