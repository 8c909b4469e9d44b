//! `zmanager bench`: the whole-system benchmark.
//!
//! It starts a real node (`zmanager up`, its own process, with its worker
//! processes), pushes requests through a trivial flow from separate service
//! processes, and reports throughput, latency percentiles, and the CPU time
//! and memory of every process. In the same run it measures the raw
//! `zeromq` PUSH→PULL rate between two processes, and gives zmanager's
//! throughput as a ratio of it. `docs/performance.md` has the figures and
//! how to reproduce them.
//!
//! - [`driver`]: starts and stops every process, collects the figures;
//! - [`child`]: the child processes' entry points and the lines they
//!   exchange with the driver;
//! - [`load`]: the load generator (a service speaking the wire protocol);
//! - [`raw`]: the raw ZeroMQ baseline;
//! - [`scratch_schema`]: a fresh PostgreSQL journal per run (`--journal-url`);
//! - [`sweep`]: `--report`, the benchmark over in-flight counts and payload
//!   sizes, journal off and on; [`page`] draws it as an HTML page;
//! - [`histogram`]: the latency histogram;
//! - [`proc_stats`]: CPU time and memory from `/proc`;
//! - [`process`]: the node and child processes of a run, killed on drop
//!   (shared with [`chaos`]);
//! - [`chaos`]: `zmanager chaos`, faults injected into a node under load
//!   and every result checked against its request.

pub mod chaos;
pub mod child;
pub mod driver;
pub mod histogram;
pub mod load;
pub mod page;
pub mod proc_stats;
pub mod process;
pub mod raw;
pub mod scratch_schema;
pub mod sweep;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use driver::run;
use proc_stats::Machine;

use zmanager::journal::SyncMode;

/// Which journal settings to measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum JournalMode {
    Off,
    On,
    /// Both, in alternating runs, compared.
    Both,
}

/// How the node's sockets are reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// tcp on loopback, ports chosen by the system.
    Tcp,
    /// ipc socket files in a temporary directory.
    Ipc,
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// The `zmanager` binary (its `up`, `worker`, `bench-client` and
    /// `bench-raw` subcommands are run).
    pub program: PathBuf,
    /// Environment variables set on every process it starts (the command
    /// line's log format, `ZMANAGER_LOG_FORMAT`).
    pub env: Vec<(String, String)>,
    /// Worker processes of the node.
    pub workers: usize,
    /// Service processes pushing requests.
    pub services: usize,
    /// Requests measured, over all services.
    pub requests: u64,
    /// Requests outstanding at once, over all services.
    pub in_flight: usize,
    /// Bytes of each request's payload frame.
    pub payload: usize,
    /// Run the node with the journal on, off, or both (alternating runs).
    /// With it on, the services ask for the `accepted` acknowledgement, as
    /// services that want durability do.
    pub journal: JournalMode,
    /// The journal's sync setting when it is on.
    pub journal_sync: SyncMode,
    /// With the journal on, keep it in this PostgreSQL database (a schema
    /// of the benchmark's own per run) instead of SQLite.
    pub journal_url: Option<String>,
    /// Measured runs per journal setting (their median is compared).
    pub rounds: usize,
    pub transport: Transport,
    /// The flow requests go into.
    pub flow: String,
    /// Ordering keys set on the requests (`order_key` = request number
    /// modulo `keys`); 0 sets none. For a flow ordered by `envelope`.
    pub keys: u64,
    /// Requests per service before measuring (connections, caches, workers
    /// all up), not counted.
    pub warmup: u64,
    /// The node's credits per worker; its default when `None`.
    pub window: Option<u32>,
    /// The node's most messages per frame to a worker; its default when `None`.
    pub batch: Option<usize>,
    /// Messages per run of the raw ZeroMQ baseline; 0 skips it.
    pub raw_messages: u64,
    /// Runs of the raw baseline: one before the node starts, the others
    /// after it stops, so their median brackets the measured run; 0 skips it.
    pub raw_runs: usize,
    /// Scrape the node's `/metrics` this often during a run, and compare
    /// runs with and without (alternating); `None`: the node runs without
    /// its HTTP server.
    pub scrape_every: Option<std::time::Duration>,
    /// The node's `[telemetry] otlp_endpoint`: every request traced and its
    /// spans exported there; none when `None`.
    pub otlp_endpoint: Option<String>,
}

impl BenchOptions {
    /// The defaults of `zmanager bench`.
    pub fn new(program: PathBuf) -> Self {
        Self {
            env: Vec::new(),
            program,
            workers: 2,
            services: 1,
            requests: 1_000_000,
            in_flight: 1000,
            payload: 64,
            journal: JournalMode::Both,
            journal_sync: SyncMode::default(),
            journal_url: None,
            rounds: 1,
            transport: Transport::Tcp,
            flow: "Echo".to_owned(),
            keys: 0,
            warmup: 2000,
            window: None,
            batch: None,
            raw_messages: 1_000_000,
            raw_runs: 3,
            scrape_every: None,
            otlp_endpoint: None,
        }
    }

    /// Where the journal is kept when on: `sqlite` or `postgres`.
    pub fn journal_backend(&self) -> &'static str {
        if self.journal_url.is_some() {
            "postgres"
        } else {
            "sqlite"
        }
    }

    /// Every problem with the values, in one error.
    pub fn validate(&self) -> Result<(), BenchError> {
        let mut problems = Vec::new();
        for (name, value) in [
            ("workers", self.workers as u64),
            ("services", self.services as u64),
            ("requests", self.requests),
            ("in-flight", self.in_flight as u64),
            ("payload", self.payload as u64),
            ("rounds", self.rounds as u64),
        ] {
            if value == 0 {
                problems.push(format!("--{name} must be at least 1"));
            }
        }
        if self.requests < self.services as u64 {
            problems.push("--requests must be at least --services".to_owned());
        }
        if self.in_flight < self.services {
            problems.push("--in-flight must be at least --services".to_owned());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(BenchError::Invalid(problems.join("; ")))
        }
    }
}

/// Why a benchmark did not complete.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("cannot use {endpoint}: {source}")]
    Socket {
        endpoint: String,
        #[source]
        source: zeromq::ZmqError,
    },
    #[error("{0}")]
    Protocol(String),
    #[error("stalled: {missing} results still missing after {waited:?} without any")]
    Stalled { missing: u64, waited: Duration },
    #[error("{what}{}", if .log.is_empty() { String::new() } else { format!("\n--- its log ---\n{}", .log) })]
    Child { what: String, log: String },
}

impl BenchError {
    fn socket(endpoint: &str, source: zeromq::ZmqError) -> Self {
        Self::Socket {
            endpoint: endpoint.to_owned(),
            source,
        }
    }
}

/// Where a benchmark is, for a progress line.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub phase: &'static str,
    /// Results (or messages) so far, out of `total`.
    pub done: u64,
    pub total: u64,
    /// Since the phase started.
    pub elapsed: Duration,
}

/// Everything a run measured; printed by `zmanager bench` and written as
/// JSON with `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub config: ReportConfig,
    pub machine: Machine,
    /// Results received (successes and errors).
    pub completed: u64,
    /// `accepted` acknowledgements received (journal on only).
    pub accepted: u64,
    /// Error results among them.
    pub errors: u64,
    /// From `go` to the last service done, seconds.
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    pub latency_us: Latency,
    /// CPU seconds of all processes during the measured run, per request.
    pub cpu_us_per_request: f64,
    /// Every process: the node, its workers, the services.
    pub processes: Vec<ProcessReport>,
    /// Resident memory of the idle node and its workers, before any load,
    /// summed over processes (shared pages counted once per process).
    pub idle_rss_kib: u64,
    /// The same as proportional set sizes: shared pages divided among the
    /// processes that share them, so this sum is the memory they use.
    pub idle_pss_kib: u64,
    /// The raw ZeroMQ baseline; absent when skipped.
    pub raw_zeromq: Option<RawSummary>,
    /// `throughput_rps` divided by the raw rate (the median of its runs).
    pub ratio_to_raw: Option<f64>,
    /// Throughput with the journal off and on (`--journal both`).
    pub journal_comparison: Option<JournalComparison>,
    /// Throughput with the node's `/metrics` scraped and not, from
    /// alternating runs in the journal setting of the detailed figures.
    pub scrape_comparison: Option<ScrapeComparison>,
}

/// What scraping `/metrics` costs: the runs without and with it.
#[derive(Debug, Clone, Serialize)]
pub struct ScrapeComparison {
    /// How often the node was scraped, in ms.
    pub every_ms: u64,
    /// Scrapes answered 200 over all the scraped runs (each run scrapes).
    pub scrapes: u64,
    /// `off_rps`: runs with the HTTP server off; `on_rps`: scraped.
    pub runs: JournalComparison,
}

/// Throughput of runs in two settings, off and on, from alternating runs
/// (the journal's, or scraping's).
#[derive(Debug, Clone, Serialize)]
pub struct JournalComparison {
    /// Each run's requests/s, in the order they ran.
    pub off_rps: Vec<f64>,
    pub on_rps: Vec<f64>,
    pub median_off_rps: f64,
    pub median_on_rps: f64,
    /// `median_on_rps / median_off_rps`.
    pub ratio: f64,
}

impl JournalComparison {
    fn new(off_rps: Vec<f64>, on_rps: Vec<f64>) -> Self {
        let median_off_rps = median(&off_rps);
        let median_on_rps = median(&on_rps);
        Self {
            ratio: if median_off_rps > 0.0 {
                median_on_rps / median_off_rps
            } else {
                0.0
            },
            off_rps,
            on_rps,
            median_off_rps,
            median_on_rps,
        }
    }
}

/// The median of `values` (0 for none).
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// The raw ZeroMQ PUSH→PULL baseline: messages per second between two
/// processes, in several runs.
#[derive(Debug, Clone, Serialize)]
pub struct RawSummary {
    pub messages_per_run: u64,
    pub payload_bytes: usize,
    /// Each run's rate, in the order they ran (the first before the node
    /// started).
    pub runs_per_s: Vec<f64>,
    /// The median of `runs_per_s`.
    pub rate_per_s: f64,
}

impl RawSummary {
    fn new(messages_per_run: u64, payload_bytes: usize, runs_per_s: Vec<f64>) -> Self {
        let rate_per_s = median(&runs_per_s);
        Self {
            messages_per_run,
            payload_bytes,
            runs_per_s,
            rate_per_s,
        }
    }
}

/// The run's settings, as used (defaults resolved).
#[derive(Debug, Clone, Serialize)]
pub struct ReportConfig {
    pub workers: usize,
    pub services: usize,
    pub requests: u64,
    pub in_flight: usize,
    pub payload_bytes: usize,
    pub journal: JournalMode,
    pub journal_sync: SyncMode,
    /// Where the journal was kept when on: `sqlite` or `postgres`.
    pub journal_backend: &'static str,
    pub rounds: usize,
    pub transport: Transport,
    pub flow: String,
    /// Ordering keys of the requests (0: none).
    pub keys: u64,
    pub warmup_per_service: u64,
    pub window: u32,
    pub batch: usize,
    pub max_pending: usize,
}

/// Latency from a request's send to its result's receipt, microseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
    pub min: f64,
}

/// One process's share.
#[derive(Debug, Clone, Serialize)]
pub struct ProcessReport {
    /// `node`, `worker 1`, `service 1`, …
    pub role: String,
    pub pid: u32,
    /// CPU seconds (user + system) during the measured run; absent when the
    /// process could not be read at both ends (it exited).
    pub cpu_s: Option<f64>,
    /// Peak resident memory since it started, KiB.
    pub peak_rss_kib: Option<u64>,
    /// Resident memory before the load, KiB (node and workers only).
    pub idle_rss_kib: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_raw_rate_is_the_median_of_its_runs() {
        let median = |runs: &[f64]| RawSummary::new(1, 64, runs.to_vec()).rate_per_s;
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0]), 2.5);
        assert_eq!(median(&[]), 0.0);
        let summary = RawSummary::new(1, 64, vec![3.0, 1.0, 2.0]);
        assert_eq!(summary.runs_per_s, [3.0, 1.0, 2.0], "in the order they ran");
    }

    #[test]
    fn the_journal_comparison_is_of_medians() {
        let c = JournalComparison::new(vec![100.0, 300.0, 200.0], vec![50.0, 100.0, 90.0]);
        assert_eq!((c.median_off_rps, c.median_on_rps), (200.0, 90.0));
        assert!((c.ratio - 0.45).abs() < 1e-9);
        assert_eq!(c.off_rps, [100.0, 300.0, 200.0], "in the order they ran");
    }

    #[test]
    fn empty_runs_are_refused() {
        let mut options = BenchOptions::new(PathBuf::from("zmanager"));
        assert!(options.validate().is_ok());
        options.requests = 0;
        options.payload = 0;
        let e = options.validate().unwrap_err().to_string();
        assert!(e.contains("--requests") && e.contains("--payload"), "{e}");
    }
}
