//! The one way the tests run the `zmanager` command.
//!
//! [`zmanager()`] starts a [`Cli`] with its arguments; more arguments, the
//! environment, the working directory (the workspace root unless told
//! otherwise) and standard input are added to it, then
//!
//! - [`Cli::run`] runs it to completion within a time limit and returns
//!   its [`Output`]: exit status, stdout and stderr as text;
//! - [`Cli::spawn`] starts a long-running one (a node, a worker, a
//!   subscriber) and hands back its [`Child`], with the standard streams
//!   given by [`Cli::stdin`], [`Cli::stdout`] and [`Cli::stderr`].

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How long [`Cli::run`] waits unless told otherwise: far longer than any
/// command of the tests takes, so that one that hangs fails its test
/// instead of holding the whole run.
pub const DEFAULT_LIMIT: Duration = Duration::from_secs(300);

/// `zmanager` with `args`, run from the workspace root (where `flows/` and
/// `action_mappings/` are, as a user would run it).
pub fn zmanager<I, S>(args: I) -> Cli
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut command = Command::new(crate::zmanager_bin());
    command.current_dir(crate::workspace_root()).args(args);
    Cli {
        command,
        input: None,
        limit: DEFAULT_LIMIT,
        stdin: None,
        stdout: None,
        stderr: None,
    }
}

/// A `zmanager` command to run: see the [module](self).
#[derive(Debug)]
#[must_use]
pub struct Cli {
    command: Command,
    input: Option<Vec<u8>>,
    limit: Duration,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
}

/// What a command run to completion did.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    /// Its standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl Cli {
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Sets an environment variable (the others are the test's own).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Removes an environment variable the test's process may have.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.command.env_remove(key);
        self
    }

    /// Runs it in `dir` instead of the workspace root.
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// What [`Cli::run`] writes to its standard input, which then closes
    /// (without it, the command reads end of file at once).
    pub fn input(mut self, text: impl Into<Vec<u8>>) -> Self {
        self.input = Some(text.into());
        self
    }

    /// How long [`Cli::run`] waits for it to finish ([`DEFAULT_LIMIT`]
    /// unless told): then it is killed and the test fails, showing what it
    /// printed.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.limit = limit;
        self
    }

    /// Standard input of the process [`Cli::spawn`] starts (inherited
    /// unless told).
    pub fn stdin(mut self, stdin: impl Into<Stdio>) -> Self {
        self.stdin = Some(stdin.into());
        self
    }

    /// Standard output of the process [`Cli::spawn`] starts (inherited
    /// unless told).
    pub fn stdout(mut self, stdout: impl Into<Stdio>) -> Self {
        self.stdout = Some(stdout.into());
        self
    }

    /// Standard error of the process [`Cli::spawn`] starts (inherited
    /// unless told).
    pub fn stderr(mut self, stderr: impl Into<Stdio>) -> Self {
        self.stderr = Some(stderr.into());
        self
    }

    /// Runs it to completion and returns what it did. Panics if it cannot
    /// start, or if it is still running after its time limit (it is then
    /// killed).
    pub fn run(self) -> Output {
        let Self {
            mut command,
            input,
            limit,
            stdin,
            stdout,
            stderr,
        } = self;
        assert!(
            stdin.is_none() && stdout.is_none() && stderr.is_none(),
            "run() captures stdout and stderr and feeds stdin from input(); \
             stdin(), stdout() and stderr() are for spawn()"
        );
        let shown = format!("{command:?}");
        command
            .stdin(if input.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("start {shown}: {e}"));
        if let Some(input) = input {
            let mut pipe = child.stdin.take().expect("piped stdin");
            // Apart, so that a command that does not read it all cannot
            // block this one; the pipe closes when the thread ends.
            std::thread::spawn(move || {
                let _ = pipe.write_all(&input);
            });
        }
        let stdout = read_to_end(child.stdout.take());
        let stderr = read_to_end(child.stderr.take());
        let deadline = Instant::now() + limit;
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Ok(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    // A process it started may still hold its pipes open.
                    let grace = Duration::from_secs(1);
                    panic!(
                        "{shown} did not finish within {limit:?} (killed)\n--- stdout:\n{}\n--- stderr:\n{}",
                        stdout.recv_timeout(grace).unwrap_or_default(),
                        stderr.recv_timeout(grace).unwrap_or_default()
                    );
                }
                Err(e) => panic!("wait for {shown}: {e}"),
            }
        };
        Output {
            status,
            stdout: stdout.recv().unwrap_or_default(),
            stderr: stderr.recv().unwrap_or_default(),
        }
    }

    /// Starts it and returns at once; the caller waits for it or kills it.
    pub fn spawn(self) -> Child {
        let Self {
            mut command,
            input,
            stdin,
            stdout,
            stderr,
            ..
        } = self;
        assert!(
            input.is_none(),
            "input() is for run(); spawn() takes stdin()"
        );
        if let Some(stdin) = stdin {
            command.stdin(stdin);
        }
        if let Some(stdout) = stdout {
            command.stdout(stdout);
        }
        if let Some(stderr) = stderr {
            command.stderr(stderr);
        }
        command
            .spawn()
            .unwrap_or_else(|e| panic!("start {command:?}: {e}"))
    }
}

/// Everything `pipe` gives until it closes, read apart, as text.
fn read_to_end(pipe: Option<impl Read + Send + 'static>) -> mpsc::Receiver<String> {
    let (sender, receiver) = mpsc::channel();
    if let Some(mut pipe) = pipe {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            let _ = sender.send(String::from_utf8_lossy(&bytes).into_owned());
        });
    }
    receiver
}
