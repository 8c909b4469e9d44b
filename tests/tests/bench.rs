//! `zmanager bench` end to end, with a tiny load: it runs, prints every
//! figure and writes them as JSON. No timing is asserted: the figures are
//! the benchmark's to print, not a test's to judge.

use zmanager_tests::cli::zmanager;
use zmanager_tests::temp;

#[test]
fn bench_runs_end_to_end_and_reports_every_figure() {
    let dir = temp::dir("bench");
    let json = dir.path().join("bench.json");
    let out = zmanager(["bench", "--requests", "300", "--in-flight", "20"])
        .args([
            "--services",
            "2",
            "--workers",
            "2",
            "--payload-bytes",
            "100",
        ])
        .args([
            "--warmup",
            "10",
            "--raw-messages",
            "2000",
            "--raw-runs",
            "2",
            "--json",
        ])
        .arg(&json)
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for field in [
        "throughput",
        "requests/s",
        "p50",
        "p90",
        "p99",
        "max",
        "raw ZeroMQ",
        "ratio",
        "node",
        "worker 1",
        "worker 2",
        "service 1",
        "service 2",
        "peak RSS",
        "CPU s",
        "journal off",
        "journal on",
        "% of journal off",
    ] {
        assert!(stdout.contains(field), "no {field:?} in:\n{stdout}");
    }
    assert!(
        stderr.contains("bench: running"),
        "no progress in:\n{stderr}"
    );

    let text = std::fs::read_to_string(&json).expect("the JSON file");
    let report: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
    assert_eq!(report["completed"], 300, "{report:#}");
    assert_eq!(report["errors"], 0, "{report:#}");
    assert_eq!(report["config"]["payload_bytes"], 100);
    assert_eq!(report["config"]["journal"], "both");
    // With the journal on, the services asked for acknowledgements and got
    // them (a service stops counting at its last result, and the last
    // acknowledgements may come after it: results do not wait for the disk).
    assert!(
        report["accepted"].as_u64().is_some_and(|n| n > 0),
        "{report:#}"
    );
    let comparison = &report["journal_comparison"];
    assert_eq!(comparison["off_rps"].as_array().map(Vec::len), Some(1));
    assert_eq!(comparison["on_rps"].as_array().map(Vec::len), Some(1));
    assert!(
        comparison["ratio"].as_f64().is_some_and(|r| r > 0.0),
        "{report:#}"
    );
    for key in [
        "throughput_rps",
        "elapsed_s",
        "cpu_us_per_request",
        "idle_rss_kib",
        "idle_pss_kib",
        "ratio_to_raw",
    ] {
        assert!(report[key].is_number(), "{key} in {report:#}");
    }
    for key in ["p50", "p90", "p99", "max", "mean"] {
        assert!(report["latency_us"][key].is_number(), "{key} in {report:#}");
    }
    assert_eq!(report["raw_zeromq"]["messages_per_run"], 2000);
    assert_eq!(
        report["raw_zeromq"]["runs_per_s"].as_array().map(Vec::len),
        Some(2)
    );
    assert!(report["raw_zeromq"]["rate_per_s"].is_number());
    let processes = report["processes"].as_array().expect("processes");
    let roles: Vec<&str> = processes
        .iter()
        .map(|p| p["role"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(
        roles,
        ["node", "worker 1", "worker 2", "service 1", "service 2"]
    );
    for p in processes {
        assert!(p["cpu_s"].is_number(), "{p}");
        assert!(p["peak_rss_kib"].as_u64().is_some_and(|k| k > 0), "{p}");
    }
}

#[test]
fn bad_options_are_refused_before_anything_starts() {
    let out = zmanager(["bench", "--rounds", "0", "--requests", "10"]).run();
    let stderr = &out.stderr;
    assert!(!out.status.success());
    assert!(stderr.contains("--rounds must be at least 1"), "{stderr}");
    assert!(
        !stderr.contains("bench: starting"),
        "refused before starting anything: {stderr}"
    );
}

/// Over ipc, each raw ZeroMQ run binds the same socket file again: the
/// second run used to fail with "Address already in use".
#[test]
fn bench_over_ipc_runs_every_raw_baseline() {
    let out = zmanager(["bench", "--transport", "ipc", "--requests", "200"])
        .args(["--in-flight", "20", "--journal", "off", "--warmup", "10"])
        .args(["--raw-messages", "2000", "--raw-runs", "3"])
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let raw = stdout
        .lines()
        .find(|l| l.starts_with("raw ZeroMQ"))
        .unwrap_or_else(|| panic!("no raw line in:\n{stdout}"));
    assert!(raw.contains("median of 3"), "{raw}");
}

/// `--scrape-every`: runs scraped and not alternate, the scraped ones had
/// their `/metrics` read while they ran, and both are reported.
#[test]
fn bench_compares_runs_scraped_and_not() {
    let dir = temp::dir("bench-scrape");
    let json = dir.path().join("bench.json");
    let out = zmanager(["bench", "--requests", "5000", "--in-flight", "50"])
        .args(["--journal", "off", "--rounds", "2", "--raw-messages", "0"])
        .args(["--warmup", "10", "--scrape-every", "10ms", "--json"])
        .arg(&json)
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for field in [
        "not scraped",
        "scraped is",
        "% of not scraped",
        "scrapes answered",
    ] {
        assert!(stdout.contains(field), "no {field:?} in:\n{stdout}");
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON")).expect("valid");
    let scrape = &report["scrape_comparison"];
    assert_eq!(scrape["every_ms"], 10, "{report:#}");
    assert_eq!(scrape["runs"]["off_rps"].as_array().map(Vec::len), Some(2));
    assert_eq!(scrape["runs"]["on_rps"].as_array().map(Vec::len), Some(2));
    // Each scraped run lasts well past 10 ms in a debug build.
    assert!(
        scrape["scrapes"].as_u64().is_some_and(|n| n >= 2),
        "{report:#}"
    );
    // The detailed figures are a run that was not scraped.
    assert_eq!(report["completed"], 5000, "{report:#}");
}

/// `--journal-url`: each run's journal in a schema of its own in the
/// database given, dropped after the run; what else the database holds is
/// left as it was.
#[test]
fn bench_keeps_each_runs_journal_in_a_postgres_schema_it_drops() {
    let Some(server) = zmanager_test_postgres::shared("zmanager bench --journal-url") else {
        return;
    };
    let url = server.database();
    let mut db = postgres::Client::connect(&url, postgres::NoTls).expect("connect");
    db.batch_execute("CREATE TABLE mine (n int); INSERT INTO mine VALUES (7)")
        .expect("the user's own table");
    let out = zmanager(["bench", "--requests", "300", "--in-flight", "20"])
        .args(["--journal", "both", "--rounds", "2", "--warmup", "10"])
        .args(["--raw-messages", "0", "--journal-url", &url])
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("(sync Full, postgres)"), "{stdout}");
    assert!(stdout.contains("journal on "), "{stdout}");
    assert!(stdout.contains("300 acknowledged"), "{stdout}");
    let schemas: i64 = db
        .query_one(
            "SELECT COUNT(*) FROM pg_namespace WHERE nspname LIKE 'zmanager_bench_%'",
            &[],
        )
        .expect("schemas")
        .get(0);
    assert_eq!(schemas, 0, "every run's schema dropped");
    let mine: i32 = db
        .query_one("SELECT n FROM mine", &[])
        .expect("the user's table is still there")
        .get(0);
    assert_eq!(mine, 7);
    // Nothing of a journal was left outside the runs' schemas either.
    let stray: Option<String> = db
        .query_one("SELECT to_regclass('journal_events')::text", &[])
        .expect("look")
        .get(0);
    assert_eq!(stray, None);
}

/// `--report`: every point of both axes is run, journal off then on, and
/// drawn: a chart per view, a table row and a JSON point per run, raw
/// ZeroMQ measured at each payload size. No figure is judged.
#[test]
fn bench_report_runs_every_point_and_draws_them() {
    let dir = temp::dir("bench-report");
    let (page, json) = (
        dir.path().join("report.html"),
        dir.path().join("report.json"),
    );
    let out = zmanager(["bench", "--requests", "300", "--warmup", "10"])
        .args(["--in-flight", "20", "--raw-messages", "2000"])
        .args(["--report-in-flight", "1,20", "--report-payloads", "64,4096"])
        .arg("--report")
        .arg(&page)
        .arg("--json")
        .arg(&json)
        .run();
    let (stdout, stderr) = (&out.stdout, &out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let html = std::fs::read_to_string(&page).expect("the page");
    assert_eq!(html.matches("<svg").count(), 4, "{html}");
    assert_eq!(html.matches("<tr><td>").count(), 8, "{html}");
    let sweep: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("JSON")).expect("valid");
    let points = sweep["points"].as_array().expect("points");
    let seen: Vec<(&str, bool, u64, u64)> = points
        .iter()
        .map(|p| {
            (
                p["axis"].as_str().unwrap_or_default(),
                p["journal"].as_bool().unwrap_or_default(),
                p["in_flight"].as_u64().unwrap_or_default(),
                p["payload_bytes"].as_u64().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("in_flight", false, 1, 64),
            ("in_flight", true, 1, 64),
            ("in_flight", false, 20, 64),
            ("in_flight", true, 20, 64),
            ("payload", false, 20, 64),
            ("payload", true, 20, 64),
            ("payload", false, 20, 4096),
            ("payload", true, 20, 4096),
        ]
    );
    for p in points {
        // 300 is fewer than a point's least: each ran what was asked.
        assert_eq!(p["requests"], 300, "{p}");
        assert_eq!(p["errors"], 0, "{p}");
        assert!(p["throughput_rps"].as_f64().is_some_and(|r| r > 0.0), "{p}");
        let raw = p["axis"] == "payload" && p["journal"] == false;
        assert_eq!(p["raw_mb_per_s"].is_number(), raw, "{p}");
    }
    assert_eq!(
        stdout
            .lines()
            .filter(|l| l.contains(" off ") || l.contains(" on "))
            .count(),
        8,
        "{stdout}"
    );
}

#[test]
fn a_report_with_an_empty_payload_and_report_axes_without_a_report_are_refused() {
    let out = zmanager(["bench", "--report", "r.html", "--report-payloads", "0"]).run();
    assert!(!out.status.success());
    assert!(
        out.stderr
            .contains("a payload size must be at least 1 byte"),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("bench: starting"), "{}", out.stderr);
    let out = zmanager(["bench", "--report-in-flight", "10"]).run();
    assert!(!out.status.success());
    assert!(out.stderr.contains("--report"), "{}", out.stderr);
}
