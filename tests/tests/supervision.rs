//! Supervision under sustained kills, on real processes (see
//! `docs/reliability.md`, "Supervision"): a worker killed after it served
//! is replaced at once, so the node keeps serving at about the rate its
//! live workers allow; a worker that dies before it serves is restarted
//! with exponential backoff, so a crash loop does not spin.
//!
//! `cargo test -p zmanager-tests --test supervision -- --nocapture` prints
//! the figures.

use std::time::Duration;

use zmanager::node::supervisor::Backoff;
use zmanager_tests::client::RawClient;
use zmanager_tests::load::EchoLoad;
use zmanager_tests::node::node_with;
use zmanager_tests::{kill, runtime};

const WORKERS: usize = 4;
/// The quiet stage whose throughput the stages under kills are compared with.
const BASELINE: Duration = Duration::from_secs(10);
/// Requests unanswered at any time (enough to keep 4 workers busy).
const WINDOW: usize = 2_000;

/// 4 workers; a quiet baseline, then one random worker SIGKILLed every
/// second for a minute, measured as two halves: each half must serve at
/// least half the baseline's throughput, with one result per request.
///
/// A minute, in halves, because the old policy (double the delay at every
/// exit, reset it only after 10 s of life) takes a while to collapse: on
/// the 2-core test machine it still served 0.86 of the baseline in the
/// first 30 s, 0.18 in the next 30 s, with 16 seconds of no worker alive.
/// A shorter test would not catch it, so this one (about 75 s) is not
/// behind `#[ignore]`.
#[test]
fn a_worker_sigkilled_every_second_for_a_minute_keeps_half_the_throughput() {
    // max_attempts above the default: a message on a killed worker is
    // delivered again, and this test is about supervision, not about a
    // message unlucky enough to be on 5 killed workers in a row.
    let (node, _config) = node_with(WORKERS, "max_attempts = 10\n");
    assert_eq!(node.wait_for_workers(WORKERS).len(), WORKERS);
    let mut rng = fastrand::Rng::with_seed(u64::from(std::process::id()));
    let mut kills = 0usize;
    let mut none_alive = 0usize;
    let mut alive = 0usize;
    let mut chaos = || {
        let workers = node.worker_pids();
        alive += workers.len();
        if workers.is_empty() {
            none_alive += 1;
        } else {
            kill("KILL", workers[rng.usize(..workers.len())]);
            kills += 1;
        }
    };
    let half = Duration::from_secs(30);
    let (quiet, storm, report) = runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "storm").await;
        let mut load = EchoLoad::new(&mut client, WINDOW);
        let quiet = load
            .run_for(BASELINE, Duration::from_secs(3600), || {})
            .await;
        let mut storm = Vec::new();
        for _ in 0..2 {
            storm.push(load.run_for(half, Duration::from_secs(1), &mut chaos).await);
        }
        let report = load.finish(Duration::from_secs(60)).await;
        (quiet, storm, report)
    });
    let ratios: Vec<f64> = storm
        .iter()
        .map(|s| s.throughput() / quiet.throughput())
        .collect();
    let seconds = kills + none_alive;
    println!(
        "supervision: {WORKERS} workers; quiet {:.0}s: {:.0} req/s; one SIGKILL a second, \
         first {:.0}s: {:.0} req/s (ratio {:.2}), next {:.0}s: {:.0} req/s (ratio {:.2}); \
         {kills} kills, {none_alive} of {seconds} seconds with no worker alive, \
         {:.1} workers alive on average at a kill; {report}",
        quiet.elapsed.as_secs_f64(),
        quiet.throughput(),
        storm[0].elapsed.as_secs_f64(),
        storm[0].throughput(),
        ratios[0],
        storm[1].elapsed.as_secs_f64(),
        storm[1].throughput(),
        ratios[1],
        alive as f64 / seconds.max(1) as f64,
    );
    assert!(kills >= 1, "no worker was killed");
    report.assert_clean();
    for (i, ratio) in ratios.iter().enumerate() {
        assert!(
            *ratio >= 0.5,
            "under kills, half {} served {ratio:.2} of the quiet throughput (at least 0.5 expected)",
            i + 1
        );
    }
    assert_eq!(none_alive, 0, "seconds with no worker alive");
}

/// Every request makes the worker that runs it exit, so each worker dies
/// before it returns a single result: both slots back off, and restart no
/// more often than the backoff allows.
#[test]
fn workers_dying_before_they_serve_back_off() {
    let (node, _config) = node_with(2, "max_attempts = 1000\n");
    assert_eq!(node.wait_for_workers(2).len(), 2);
    let span = Duration::from_secs(6);
    runtime().block_on(async {
        let mut client = RawClient::connect(&node.endpoints, "crash").await;
        for i in 0..4 {
            client.request("Crash", &format!("crash{i}"), &i).await;
        }
        tokio::time::sleep(span).await;
    });
    let exits = node.log().matches("worker exited").count();
    // A slot whose workers die at once waits initial, 2×initial, 4×initial,
    // … up to max before each start: count the starts that fit in the span,
    // with a second of slack (starting a process and seeing it exit take
    // time). Stated here from the documented policy, not taken from the
    // code, so the test also runs against the supervisor before the change.
    let backoff = Backoff::default();
    let (mut waited, mut delay, mut starts) = (Duration::ZERO, backoff.initial, 1);
    while waited + delay <= span + Duration::from_secs(1) {
        waited += delay;
        delay = (delay * 2).min(backoff.max);
        starts += 1;
    }
    let bound = 2 * starts;
    let quick = 2 * (span.as_millis() / backoff.initial.as_millis()) as usize;
    println!(
        "crash loop: {exits} worker exits in {}s on 2 slots; backoff allows at most {bound}, \
         restarting after {} ms each time would allow {quick}",
        span.as_secs(),
        backoff.initial.as_millis()
    );
    assert!(
        exits >= 4,
        "the workers did not keep crashing: {exits} exits"
    );
    assert!(
        exits <= bound,
        "{exits} worker exits in {}s: more than the backoff allows ({bound})",
        span.as_secs()
    );
}
