//! Shared helpers for the integration tests in `tests/tests/`.
//!
//! - [`cli::zmanager`] runs the real `zmanager` command, to completion
//!   (status, stdout and stderr as text) or in the background;
//!   [`zmanager_bin`] builds and finds its binary, and [`library`] the
//!   shared libraries of dynamic components;
//! - [`temp`] makes temporary files and directories (`tempfile`), removed
//!   on drop;
//! - [`node::TestNode`] runs `zmanager up` on free ports and stops it on drop;
//!   [`secure::node_with`] one with `[security]` (CURVE keys);
//! - [`client::RawClient`] speaks the wire protocol directly (not through the
//!   library's `Service`), so the tests check the protocol as documented;
//! - [`http::Http`] is a real HTTP client of a node's HTTP server;
//! - [`checker::Checker`] counts lost, duplicated and unexpected results;
//! - [`disk::SmallDisk`] mounts a small tmpfs, for a data directory that
//!   fills up;
//! - [`load::echo_load`] pushes a windowed Echo load and checks every result;
//!   [`load::EchoLoad`] runs one in stages, to compare their throughput.

pub mod checker;
pub mod cli;
pub mod client;
pub mod disk;
pub mod http;
pub mod load;
pub mod node;
pub mod secure;
pub mod temp;

/// The Tokio runtime the tests drive their clients with.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Stops `pid` with `SIGSTOP` and returns once every thread of it is
/// stopped. `kill -STOP` returns before they are: one thread takes the
/// signal and then stops the others, which run on until it has (a node so
/// stopped answered 14 of 500 pings sent right after `kill` returned, on a
/// loaded machine; none once this returned).
pub fn freeze(pid: u32) {
    kill("STOP", pid);
    let stopped = || {
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            return true; // gone
        };
        tasks.flatten().all(|task| {
            std::fs::read_to_string(task.path().join("stat")).is_ok_and(|stat| {
                // pid (comm) STATE …; comm may hold spaces and parentheses.
                stat.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with(['T', 't']))
            })
        })
    };
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !stopped() {
        assert!(
            std::time::Instant::now() < until,
            "process {pid} did not stop"
        );
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

/// Sends `signal` (`"KILL"`, `"STOP"`, …) to `pid`; a process already gone
/// is not an error. To stop one, [`freeze`] it.
pub fn kill(signal: &str, pid: u32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .stderr(std::process::Stdio::null())
        .status();
}

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The workspace root (where `flows/` and `action_mappings/` are).
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests crate lives one level below the workspace root")
}

/// The test configuration: flows and mappings on the Probe component.
pub fn test_config() -> (PathBuf, PathBuf) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    (dir.join("flows"), dir.join("mappings"))
}

/// The path of the `zmanager` binary, built on first use. It belongs to
/// another package, so `CARGO_BIN_EXE_*` is not available here: it is built
/// with the same profile as the test.
pub fn zmanager_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = cargo_build()
            .args(["-p", "zmanager-cli", "--bin", "zmanager"])
            .status()
            .expect("run cargo build");
        assert!(
            status.success(),
            "cargo build of the zmanager binary failed"
        );
        let bin = profile_dir().join(format!("zmanager{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
}

/// The path of example `name` of the `zmanager-examples` package (a
/// service in Rust, such as `moderator`), built on first use with the
/// test's profile.
pub fn example_bin(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<Vec<String>>> = OnceLock::new();
    let built = BUILT.get_or_init(Default::default);
    let mut built = built
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if !built.iter().any(|b| b == name) {
        let status = cargo_build()
            .args(["-p", "zmanager-examples", "--example", name])
            .status()
            .expect("run cargo build");
        assert!(status.success(), "cargo build of example {name} failed");
        built.push(name.to_owned());
    }
    let bin = profile_dir()
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(bin.exists(), "{} was not built", bin.display());
    bin
}

/// The shared libraries the tests load, built together on first use with
/// the test's profile (as [`zmanager_bin`]): the example dynamic components
/// and the fixtures under `tests/fixtures/`.
pub const LIBRARIES: [&str; 5] = [
    "zmanager-component-reverse",
    "zmanager-component-payments",
    "zmanager-fixture-faulty",
    "zmanager-fixture-wrong-abi",
    "zmanager-fixture-missing-symbol",
];

/// The path of the shared library of `package` (one of [`LIBRARIES`]),
/// built on first use: `target/<profile>/lib<crate>.so` on Linux.
pub fn library(package: &str) -> PathBuf {
    assert!(
        LIBRARIES.contains(&package),
        "{package} is not in LIBRARIES"
    );
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let mut build = cargo_build();
        for package in LIBRARIES {
            build.args(["-p", package]);
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build of {LIBRARIES:?} failed");
    });
    let file = format!(
        "{}{}{}",
        std::env::consts::DLL_PREFIX,
        package.replace('-', "_"),
        std::env::consts::DLL_SUFFIX
    );
    let path = profile_dir().join(file);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// `target/<profile>` of the running test.
fn profile_dir() -> PathBuf {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent()
        .and_then(Path::parent)
        .expect("test binary lives in target/<profile>/deps")
        .to_path_buf()
}

/// `cargo build --quiet` from the workspace root, with the test's profile.
fn cargo_build() -> Command {
    let release = profile_dir().file_name().is_some_and(|n| n == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut build = Command::new(cargo);
    build
        .current_dir(workspace_root())
        .args(["build", "--quiet"]);
    if release {
        build.arg("--release");
    }
    build
}
