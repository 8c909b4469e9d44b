//! The Python package in `clients/python/` passes its own tests against
//! real nodes: `$ZMANAGER_PYTHON -m pytest clients/python/tests -q`, with
//! `ZMANAGER_BIN` the `zmanager` built for this test (its conftest starts
//! and kills the nodes itself).
//!
//! Needs a Python with the package and pytest installed (`.ci/run` does:
//! `pip install ./clients/python pytest`). Without them the test says so
//! and passes locally, but fails under CI (`CI` set), where it must run.

use std::process::Command;
use std::time::Instant;

use zmanager_tests::{workspace_root, zmanager_bin};

/// The Python to run: `ZMANAGER_PYTHON` (CI points it at its virtual
/// environment), or `python3`.
fn python() -> String {
    std::env::var("ZMANAGER_PYTHON").unwrap_or_else(|_| "python3".to_owned())
}

/// True when the Python has the `zmanager` package and pytest; false (and
/// the test is skipped) when not, except under CI.
fn python_ready() -> bool {
    let ready = Command::new(python())
        .args(["-c", "import zmanager, zmanager.aio, pytest"])
        .status()
        .is_ok_and(|s| s.success());
    if !ready {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must have a Python with the zmanager package and pytest \
             (pip install ./clients/python 'pytest>=8,<9')"
        );
        eprintln!(
            "SKIPPED: {} lacks the zmanager package or pytest \
             (pip install ./clients/python 'pytest>=8,<9', and set ZMANAGER_PYTHON)",
            python()
        );
    }
    ready
}

#[test]
fn the_python_package_passes_its_tests_against_real_nodes() {
    if !python_ready() {
        return;
    }
    let bin = zmanager_bin();
    // A database on a private PostgreSQL server for the failover test
    // (test_failover.py); without PostgreSQL (never under CI) it is skipped.
    let postgres = zmanager_test_postgres::shared("the Python client's failover test")
        .map(|server| server.database());
    let started = Instant::now();
    let mut pytest = Command::new(python());
    if let Some(url) = &postgres {
        pytest.env("ZMANAGER_TEST_POSTGRES_URL", url);
    }
    let out = pytest
        .current_dir(workspace_root())
        .args([
            "-m",
            "pytest",
            "clients/python/tests",
            "-q",
            "-p",
            "no:cacheprovider",
        ])
        .env("ZMANAGER_BIN", bin)
        .output()
        .expect("run pytest");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "pytest ({:.1} s):\n{stdout}{stderr}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        out.status.success(),
        "pytest failed (exit {:?}):\n{stdout}\n{stderr}",
        out.status.code()
    );
    // Something ran, and nothing was skipped for want of the binary (or,
    // with PostgreSQL here, of a database).
    let summary = stdout.lines().last().unwrap_or_default();
    assert!(
        summary.contains(" passed") && (postgres.is_none() || !summary.contains("skipped")),
        "{summary}"
    );
}
