//! A private PostgreSQL server for the tests: `initdb` in a temporary
//! directory, `postgres` listening on a unix socket in it (no TCP port to
//! collide on), trust authentication for the one user `zmanager`. It needs
//! the server's binaries (Debian: `apt-get install postgresql`; found on
//! `PATH`, in `ZMANAGER_PG_BIN`, or in `/usr/lib/postgresql/*/bin`), but no
//! root and no system service. PostgreSQL refuses to run as root, so when
//! the tests do (CI does) the server runs as `nobody`.
//!
//! The server lives as long as the test process: it is started through a
//! small shell that holds the read end of a pipe whose write end only this
//! process has, and stops the server and removes its directory when that
//! pipe closes — when the [`Server`] is dropped, or the process ends in
//! any way, a panic or a `kill -9` included. No test leaves one behind.

use std::io::Write as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The package that has the server's binaries, for messages.
pub const PACKAGE: &str = "postgresql";

/// The one user of the server, with trust authentication.
const USER: &str = "zmanager";

/// The directory of `initdb` and `postgres`: `ZMANAGER_PG_BIN`, else where
/// `initdb` is on `PATH`, else the newest `/usr/lib/postgresql/*/bin`
/// (where Debian puts them, off `PATH`).
pub fn bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("ZMANAGER_PG_BIN") {
        return Some(PathBuf::from(dir));
    }
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| {
            let e = e.ok()?;
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    versions.pop().map(|(_, dir)| dir)
}

/// The server shared by the tests of this process, started on first use.
/// `None` when PostgreSQL is not installed, after printing that `what` was
/// skipped and which package to install; under CI (`CI` set) that panics
/// instead, as does a server that is installed but does not start.
pub fn shared(what: &str) -> Option<&'static Server> {
    static SHARED: OnceLock<Result<Server, String>> = OnceLock::new();
    if bin_dir().is_none() {
        skip(what);
        return None;
    }
    match SHARED.get_or_init(Server::start) {
        Ok(server) => Some(server),
        Err(e) => panic!("the test PostgreSQL server did not start: {e}"),
    }
}

/// Says `what` is skipped; a panic under CI.
fn skip(what: &str) {
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must have PostgreSQL's server (apt-get install {PACKAGE}) for {what}"
    );
    eprintln!("SKIPPED: install {PACKAGE} (PostgreSQL's server) to run {what}");
}

/// A running server of the tests; stopped, and its directory removed,
/// when dropped (or when the process ends).
#[derive(Debug)]
pub struct Server {
    /// The socket's directory, with the data directory in it.
    dir: PathBuf,
    /// The shell that runs the server; its stdin is the lifeline.
    lifeline: Mutex<Option<Child>>,
    databases: AtomicU64,
    /// Its port (also in its unix socket's name).
    port: u16,
    /// With TLS ([`Server::start_tls`]): its TCP port on 127.0.0.1.
    tls: Option<Tls>,
}

/// A TLS server's certificates, made for it by `openssl`.
#[derive(Debug)]
struct Tls {
    /// The authority that signed the server's certificate (for
    /// `localhost` only).
    ca: PathBuf,
    /// An authority that signed nothing of it.
    other_ca: PathBuf,
}

/// Whether this process runs as root (the owner of `/proc/self` is its
/// effective user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `program` with `args`, as `nobody` when this process is root.
fn command(program: &Path, args: &[&str]) -> Command {
    if is_root() {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(program)
            .args(args);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    }
}

/// Stops the server on `stdin`'s end, removes the directory `$1`. The
/// server's output goes to `$1/server.log`.
const LIFELINE: &str = r#"dir="$1"; shift
"$@" </dev/null >"$dir/server.log" 2>&1 &
pid=$!
read _
kill -QUIT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#;

/// A TCP port free on 127.0.0.1 now.
fn free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("find a free port: {e}"))
}

/// Makes, in `dir`, an authority (`ca.crt`), the server's key and a
/// certificate for `localhost` it signed (`server.key`, `server.crt`, as
/// the server's user: PostgreSQL wants its key its own and private), and
/// another authority (`other-ca.crt`).
fn certificates(dir: &Path) -> Result<Tls, String> {
    let at = |name: &str| dir.join(name).to_string_lossy().into_owned();
    std::fs::write(dir.join("san.ext"), "subjectAltName=DNS:localhost\n")
        .map_err(|e| format!("write san.ext: {e}"))?;
    let openssl = Path::new("openssl");
    // A self-signed authority named `subject`, its files `<file>.key` and
    // `<file>.crt`.
    let authority = |subject: &str, file: &str| -> Vec<String> {
        let mut args: Vec<String> = ["req", "-x509", "-newkey", "rsa:2048", "-nodes"]
            .map(String::from)
            .to_vec();
        args.extend(["-days".into(), "2".into(), "-subj".into(), subject.into()]);
        args.extend(["-keyout".into(), at(&format!("{file}.key"))]);
        args.extend(["-out".into(), at(&format!("{file}.crt"))]);
        args
    };
    let steps: [Vec<String>; 4] = [
        authority("/CN=zmanager test CA", "ca"),
        authority("/CN=another CA", "other-ca"),
        vec![
            "req".into(),
            "-newkey".into(),
            "rsa:2048".into(),
            "-nodes".into(),
            "-subj".into(),
            "/CN=localhost".into(),
            "-keyout".into(),
            at("server.key"),
            "-out".into(),
            at("server.csr"),
        ],
        vec![
            "x509".into(),
            "-req".into(),
            "-in".into(),
            at("server.csr"),
            "-CA".into(),
            at("ca.crt"),
            "-CAkey".into(),
            at("ca.key"),
            "-CAcreateserial".into(),
            "-days".into(),
            "2".into(),
            "-extfile".into(),
            at("san.ext"),
            "-out".into(),
            at("server.crt"),
        ],
    ];
    for step in &steps {
        let args: Vec<&str> = step.iter().map(String::as_str).collect();
        let made = command(openssl, &args)
            .output()
            .map_err(|e| format!("run openssl (apt-get install openssl): {e}"))?;
        if !made.status.success() {
            return Err(format!(
                "openssl {} failed: {}",
                step[0],
                String::from_utf8_lossy(&made.stderr).trim()
            ));
        }
    }
    let private = command(Path::new("chmod"), &["600", &at("server.key")])
        .status()
        .map_err(|e| format!("run chmod: {e}"))?;
    if !private.success() {
        return Err("chmod 600 server.key failed".into());
    }
    Ok(Tls {
        ca: dir.join("ca.crt"),
        other_ca: dir.join("other-ca.crt"),
    })
}

/// Removes what servers of earlier test processes left in `temp` when
/// their lifeline shell could not (it was killed itself): directories
/// `zmanager-pg-*` older than [`STALE`] whose server is not running (no
/// `postmaster.pid`, or one naming no live process).
fn sweep(temp: &Path) {
    let Ok(entries) = std::fs::read_dir(temp) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let ours = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with("zmanager-pg-"));
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > STALE));
        if ours && old && !running(&path.join("data")) {
            let _ = std::fs::remove_dir_all(&path);
        }
    }
}

/// A directory younger than this may be a server still starting.
const STALE: Duration = Duration::from_secs(600);

/// Whether the server of the data directory `data` runs: the first line of
/// its `postmaster.pid` names a live process.
fn running(data: &Path) -> bool {
    std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|text| text.lines().next()?.trim().parse::<u32>().ok())
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

impl Server {
    /// A server of its own (most tests share one: [`shared`]).
    pub fn start() -> Result<Self, String> {
        Self::start_with(false)
    }

    /// A server of its own that also listens on TCP on 127.0.0.1 with TLS,
    /// its certificate made for `localhost` and signed by an authority of
    /// its own ([`Server::tls_database`]). Needs `openssl`.
    pub fn start_tls() -> Result<Self, String> {
        Self::start_with(true)
    }

    fn start_with(tls: bool) -> Result<Self, String> {
        let bin = bin_dir().ok_or_else(|| format!("no PostgreSQL server: install {PACKAGE}"))?;
        sweep(&std::env::temp_dir());
        let dir = tempfile::Builder::new()
            .prefix("zmanager-pg-")
            .tempdir()
            .map_err(|e| format!("create a temp directory: {e}"))?
            .keep();
        if is_root() {
            let owned = Command::new("chown")
                .arg("nobody:nogroup")
                .arg(&dir)
                .status()
                .map_err(|e| format!("run chown: {e}"))?;
            if !owned.success() {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("chown nobody {} failed", dir.display()));
            }
        }
        let started = Self::start_in(&bin, &dir, tls);
        if started.is_err() {
            let _ = std::fs::remove_dir_all(&dir);
        }
        started
    }

    fn start_in(bin: &Path, dir: &Path, tls: bool) -> Result<Self, String> {
        let data = dir.join("data");
        let certificates = if tls { Some(certificates(dir)?) } else { None };
        let port = if tls { free_port()? } else { 5432 };
        let data_arg = data.to_str().ok_or("a temp directory that is not UTF-8")?;
        let init = command(
            &bin.join("initdb"),
            &[
                "-D",
                data_arg,
                "-U",
                USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
            ],
        )
        .output()
        .map_err(|e| format!("run initdb: {e}"))?;
        if !init.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&init.stderr).trim()
            ));
        }
        let dir_arg = dir.to_str().ok_or("a temp directory that is not UTF-8")?;
        let port_arg = port.to_string();
        let mut args = vec![
            "-D",
            data_arg,
            "-k",
            dir_arg,
            "-p",
            &port_arg,
            // A test server: no fsync (a crash of the machine is not what
            // these tests are about), small shared memory in files.
            "-c",
            "fsync=off",
            "-c",
            "dynamic_shared_memory_type=mmap",
        ];
        let (cert, key) = (
            format!("ssl_cert_file={dir_arg}/server.crt"),
            format!("ssl_key_file={dir_arg}/server.key"),
        );
        if tls {
            args.extend([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "ssl=on",
                "-c",
                &cert,
                "-c",
                &key,
            ]);
        } else {
            args.extend(["-c", "listen_addresses="]);
        }
        let server = command(&bin.join("postgres"), &args);
        let mut shell = Command::new("sh");
        shell
            .args(["-c", LIFELINE, "lifeline", dir_arg])
            .arg(server.get_program())
            .args(server.get_args())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = shell.spawn().map_err(|e| format!("run sh: {e}"))?;
        let server = Self {
            dir: dir.to_owned(),
            lifeline: Mutex::new(Some(child)),
            databases: AtomicU64::new(0),
            port,
            tls: certificates,
        };
        server.wait_ready(&data)?;
        Ok(server)
    }

    /// Waits for `postmaster.pid`'s status line to say `ready`.
    fn wait_ready(&self, data: &Path) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let status = std::fs::read_to_string(data.join("postmaster.pid")).unwrap_or_default();
            if status.lines().nth(7).is_some_and(|l| l.trim() == "ready") {
                return Ok(());
            }
            let exited = self
                .lifeline
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .as_mut()
                .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))));
            if exited || Instant::now() > deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                return Err(format!(
                    "the server {}: {}",
                    if exited {
                        "exited"
                    } else {
                        "was not ready in 60 s"
                    },
                    log.trim()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The directory of the server's unix socket.
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    /// A libpq connection string for database `name` of this server.
    pub fn conninfo(&self, name: &str) -> String {
        format!(
            "host='{}' port={} user={USER} dbname={name}",
            self.dir.display(),
            self.port
        )
    }

    /// A new, empty database of this server, for one test; its connection
    /// string.
    pub fn database(&self) -> String {
        let name = format!(
            "test_{}_{}",
            std::process::id(),
            self.databases.fetch_add(1, Ordering::Relaxed)
        );
        let mut admin = postgres::Client::connect(&self.conninfo("postgres"), postgres::NoTls)
            .unwrap_or_else(|e| panic!("connect to the test server: {e}"));
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .unwrap_or_else(|e| panic!("create database {name}: {e}"));
        self.conninfo(&name)
    }

    /// With TLS: a new, empty database reached over TCP with TLS,
    /// `sslmode=verify-full` and `sslrootcert` the authority of the
    /// server's certificate (`ca`), or one that did not sign it; `host`
    /// `localhost` (the certificate's name) or another name of the same
    /// address (`127.0.0.1`, which it is not made for).
    pub fn tls_database(&self, host: &str, right_ca: bool) -> Option<String> {
        let tls = self.tls.as_ref()?;
        let local = self.database();
        let name = local
            .rsplit("dbname=")
            .next()
            .unwrap_or_default()
            .to_owned();
        let ca = if right_ca { &tls.ca } else { &tls.other_ca };
        Some(format!(
            "host={host} port={} user={USER} dbname={name} sslmode=verify-full sslrootcert='{}'",
            self.port,
            ca.display()
        ))
    }

    /// Stops the server now (an immediate shutdown, as a crash would) and
    /// removes its directory; a no-op the second time.
    pub fn stop(&self) {
        let child = self
            .lifeline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        if let Some(mut child) = child {
            // Closing the pipe is the signal; a line is as good.
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(b"\n");
            }
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sweep_removes_only_old_directories_of_stopped_servers() {
        let temp = tempfile::tempdir().unwrap();
        let make = |name: &str, pid: Option<u32>, old: bool| {
            let data = temp.path().join(name).join("data");
            std::fs::create_dir_all(&data).unwrap();
            if let Some(pid) = pid {
                std::fs::write(data.join("postmaster.pid"), format!("{pid}\n/x\n")).unwrap();
            }
            if old {
                let touched = Command::new("touch")
                    .args(["-d", "1 hour ago"])
                    .arg(temp.path().join(name))
                    .status()
                    .unwrap();
                assert!(touched.success());
            }
        };
        make("zmanager-pg-stopped", None, true);
        make("zmanager-pg-dead", Some(u32::MAX - 1), true);
        make("zmanager-pg-running", Some(std::process::id()), true);
        make("zmanager-pg-starting", None, false);
        make("someone-elses", None, true);
        sweep(temp.path());
        let mut left: Vec<String> = std::fs::read_dir(temp.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                "someone-elses",
                "zmanager-pg-running",
                "zmanager-pg-starting"
            ]
        );
    }
}
