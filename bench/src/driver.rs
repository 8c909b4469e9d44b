//! The benchmark driver: starts the node and the service processes, runs
//! them, reads every process's CPU time and memory, stops everything, then
//! measures the raw ZeroMQ baseline with nothing else running.
//!
//! Every child is killed if the driver returns early (error or panic): no
//! process outlives a benchmark ([`super::process`] has the machinery,
//! shared with `zmanager chaos`).

use std::io::{BufRead, BufReader};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::histogram::Histogram;
use super::load::LoadResult;
use super::proc_stats::{self, Machine, ProcSample};
use super::process::{Node, Process, START_LIMIT, TempDir};
use super::scratch_schema::ScratchSchema;
use super::{
    BenchError, BenchOptions, JournalComparison, JournalMode, Latency, ProcessReport, Progress,
    RawSummary, Report, ReportConfig, ScrapeComparison, Transport,
};
use zmanager::journal::SyncMode;
use zmanager::node::config::NodeConfig;

/// How often the progress callback is called.
const TICK: Duration = Duration::from_millis(250);

/// Runs a benchmark. `on_progress` is called a few times a second.
pub fn run(
    options: &BenchOptions,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Report, BenchError> {
    options.validate()?;
    let machine = Machine::read();
    let dir = TempDir::new("zmanager-bench")?;
    let defaults = NodeConfig::default();
    let window = options.window.unwrap_or(defaults.window);
    let batch = options.batch.unwrap_or(defaults.batch);

    // One raw baseline run before the node starts, the others after it
    // stops: their median brackets the measured runs in time.
    let raw_wanted = options.raw_messages > 0 && options.raw_runs > 0;
    let mut raw_rates = Vec::with_capacity(options.raw_runs);
    if raw_wanted {
        raw_rates.push(raw_baseline(options, &dir, on_progress)?);
    }

    // With the journal on and off, the runs alternate, so that a change in
    // the machine's load affects both alike.
    let modes: &[bool] = match options.journal {
        JournalMode::Off => &[false],
        JournalMode::On => &[true],
        JournalMode::Both => &[false, true],
    };
    // Scraped and not, alternating too, in each journal setting.
    let scrapes: &[bool] = match options.scrape_every {
        Some(_) => &[false, true],
        None => &[false],
    };
    let mut all: Vec<(bool, bool, Measured)> = Vec::new();
    for round in 0..options.rounds {
        for &journal in modes {
            for &scrape in scrapes {
                // A fresh journal per run, in SQLite or in PostgreSQL.
                let schema = match (&options.journal_url, journal) {
                    (Some(url), true) => Some(ScratchSchema::create(
                        url,
                        &format!("zmanager_bench_{}_{round}_{scrape}", std::process::id()),
                    )?),
                    _ => None,
                };
                let setup = Setup {
                    journal,
                    window,
                    batch,
                    data_dir: format!("data-{round}-{journal}-{scrape}"),
                    journal_url: schema.as_ref().map(|s| s.url.clone()),
                    scrape: scrape.then_some(options.scrape_every).flatten(),
                };
                all.push((
                    journal,
                    scrape,
                    measure(options, &setup, &dir, on_progress)?,
                ));
            }
        }
    }
    // The detailed figures are those of the last run in the node's own
    // setting (journal on, unless only off was asked for), not scraped.
    let shown = options.journal != JournalMode::Off;
    let scrape_comparison = options.scrape_every.map(|every| {
        let rates = |scraped: bool| -> Vec<f64> {
            all.iter()
                .filter(|(j, s, _)| *j == shown && *s == scraped)
                .map(|(_, _, m)| m.throughput_rps)
                .collect()
        };
        ScrapeComparison {
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            scrapes: all.iter().map(|(_, _, m)| m.scrapes).sum(),
            runs: JournalComparison::new(rates(false), rates(true)),
        }
    });
    let runs: Vec<(bool, Measured)> = all
        .into_iter()
        .filter(|(_, scraped, _)| !scraped)
        .map(|(journal, _, m)| (journal, m))
        .collect();

    if raw_wanted {
        for _ in 1..options.raw_runs {
            raw_rates.push(raw_baseline(options, &dir, on_progress)?);
        }
    }
    let raw = raw_wanted.then(|| RawSummary::new(options.raw_messages, options.payload, raw_rates));

    let journal_comparison = (options.journal == JournalMode::Both).then(|| {
        let rates = |on: bool| -> Vec<f64> {
            runs.iter()
                .filter(|(j, _)| *j == on)
                .map(|(_, m)| m.throughput_rps)
                .collect()
        };
        JournalComparison::new(rates(false), rates(true))
    });
    let Some((_, main)) = runs.into_iter().rev().find(|(j, _)| *j == shown) else {
        return Err(BenchError::Protocol("no run was measured".to_owned()));
    };
    Ok(Report {
        config: ReportConfig {
            workers: options.workers,
            services: options.services,
            requests: options.requests,
            in_flight: options.in_flight,
            payload_bytes: options.payload,
            journal: options.journal,
            journal_sync: options.journal_sync,
            journal_backend: options.journal_backend(),
            rounds: options.rounds,
            transport: options.transport,
            flow: options.flow.clone(),
            keys: options.keys,
            warmup_per_service: options.warmup,
            window,
            batch,
            max_pending: NodeConfig::default().max_pending,
        },
        machine,
        completed: main.completed,
        accepted: main.accepted,
        errors: main.errors,
        elapsed_s: main.elapsed_s,
        throughput_rps: main.throughput_rps,
        latency_us: main.latency,
        cpu_us_per_request: main.cpu_us_per_request,
        processes: main.processes,
        idle_rss_kib: main.idle_rss_kib,
        idle_pss_kib: main.idle_pss_kib,
        ratio_to_raw: raw
            .as_ref()
            .filter(|r| r.rate_per_s > 0.0)
            .map(|r| main.throughput_rps / r.rate_per_s),
        raw_zeromq: raw,
        journal_comparison,
        scrape_comparison,
    })
}

/// How one measured run's node is set up.
struct Setup {
    journal: bool,
    window: u32,
    batch: usize,
    /// The node's data directory, inside the benchmark's: a fresh journal
    /// per run.
    data_dir: String,
    /// The PostgreSQL journal of the run (a fresh schema), instead of
    /// SQLite in `data_dir`.
    journal_url: Option<String>,
    /// Scrape `/metrics` this often during the measured run (`None`: the
    /// node runs without its HTTP server).
    scrape: Option<Duration>,
}

/// What one measured run measured.
struct Measured {
    completed: u64,
    accepted: u64,
    errors: u64,
    elapsed_s: f64,
    throughput_rps: f64,
    latency: Latency,
    cpu_us_per_request: f64,
    processes: Vec<ProcessReport>,
    idle_rss_kib: u64,
    idle_pss_kib: u64,
    /// `/metrics` scrapes answered during the run.
    scrapes: u64,
}

/// Starts a node, runs the services against it, stops it.
fn measure(
    options: &BenchOptions,
    setup: &Setup,
    dir: &TempDir,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<Measured, BenchError> {
    let phase_start = Instant::now();
    on_progress(&Progress {
        phase: "starting the node",
        done: 0,
        total: 0,
        elapsed: Duration::ZERO,
    });
    let mut node = start_node(options, setup, dir)?;
    let workers = node.wait_for_workers(options.workers)?;
    // Let the workers connect and settle before the idle reading.
    std::thread::sleep(Duration::from_millis(500));
    let node_pids: Vec<u32> = std::iter::once(node.process.pid())
        .chain(workers.iter().copied())
        .collect();
    let idle: Vec<Option<ProcSample>> = node_pids.iter().map(|p| proc_stats::sample(*p)).collect();

    // The service processes, each with its share of requests and in-flight.
    let (tx, rx) = mpsc::channel::<(usize, Option<String>)>();
    let mut services = Vec::with_capacity(options.services);
    for i in 0..options.services {
        let requests = share(options.requests, options.services, i);
        let in_flight = share(options.in_flight as u64, options.services, i);
        let mut command = Command::new(&options.program);
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        command.args([
            "bench-client",
            "--intake",
            &node.intake,
            "--publish",
            &node.publish,
            "--service",
            &format!("bench-{}-{i}", std::process::id()),
            "--flow",
            &options.flow,
            "--keys",
            &options.keys.to_string(),
            "--payload",
            &options.payload.to_string(),
            "--warmup",
            &options.warmup.to_string(),
            "--requests",
            &requests.to_string(),
            "--in-flight",
            &in_flight.to_string(),
        ]);
        if setup.journal {
            // Services that want durability wait for the acknowledgement.
            command.arg("--ack");
        }
        let mut process = Process::spawn(command, &format!("service {}", i + 1), dir)?;
        let stdout = process.take_stdout()?;
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send((i, Some(line))).is_err() {
                    return;
                }
            }
            let _ = tx.send((i, None));
        });
        services.push(process);
    }
    drop(tx);

    // Wait for every service to be connected and warmed up.
    let mut ready = 0;
    let deadline = Instant::now() + START_LIMIT;
    while ready < options.services {
        on_progress(&Progress {
            phase: "warming up",
            done: ready as u64,
            total: options.services as u64,
            elapsed: phase_start.elapsed(),
        });
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left.min(TICK)) {
            Ok((_, Some(line))) if line == "ready" => ready += 1,
            Ok((i, Some(line))) => return Err(services[i].failed(&line)),
            Ok((i, None)) => return Err(services[i].failed("exited before it was ready")),
            Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {}
            Err(_) => {
                return Err(BenchError::Protocol(format!(
                    "services not ready within {START_LIMIT:?}"
                )));
            }
        }
    }

    // The measured run.
    let all_pids: Vec<u32> = node_pids
        .iter()
        .copied()
        .chain(services.iter().map(|s| s.pid()))
        .collect();
    let before: Vec<Option<ProcSample>> = all_pids.iter().map(|p| proc_stats::sample(*p)).collect();
    let start = Instant::now();
    let scraper = match (setup.scrape, &node.http) {
        (Some(every), Some(at)) => Some(Scraper::start(at, every)),
        _ => None,
    };
    for service in &mut services {
        service.say("go")?;
    }
    let mut progress = vec![0u64; options.services];
    let mut results: Vec<Option<LoadResult>> = vec![None; options.services];
    let mut last_tick = Instant::now();
    while results.iter().any(Option::is_none) {
        match rx.recv_timeout(TICK) {
            Ok((i, Some(line))) => {
                if let Some(n) = line.strip_prefix("progress ") {
                    progress[i] = n.parse().unwrap_or(progress[i]);
                } else if let Some(json) = line.strip_prefix("done ") {
                    let result: LoadResult = serde_json::from_str(json).map_err(|e| {
                        BenchError::Protocol(format!("service {} wrote {json:?}: {e}", i + 1))
                    })?;
                    progress[i] = result.completed;
                    results[i] = Some(result);
                } else {
                    return Err(services[i].failed(&line));
                }
            }
            Ok((i, None)) => return Err(services[i].failed("exited before it was done")),
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            on_progress(&Progress {
                phase: "running",
                done: progress.iter().sum(),
                total: options.requests,
                elapsed: start.elapsed(),
            });
        }
    }
    let elapsed = start.elapsed();
    let after: Vec<Option<ProcSample>> = all_pids.iter().map(|p| proc_stats::sample(*p)).collect();
    let scrapes = match scraper {
        Some(scraper) => scraper.stop()?,
        None => 0,
    };
    on_progress(&Progress {
        phase: "running",
        done: progress.iter().sum(),
        total: options.requests,
        elapsed,
    });

    // Let the services go, then stop the node.
    for service in &mut services {
        service.close_stdin();
    }
    for service in &mut services {
        service.wait(Duration::from_secs(10));
    }
    node.stop();

    // The figures.
    let mut histogram = Histogram::new();
    let (mut completed, mut errors, mut accepted) = (0, 0, 0);
    for result in results.iter().flatten() {
        histogram.merge(&Histogram::from_sparse(&result.latency_ns));
        completed += result.completed;
        errors += result.errors;
        accepted += result.accepted;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    let latency = Latency {
        p50: us(histogram.quantile(0.50)),
        p90: us(histogram.quantile(0.90)),
        p99: us(histogram.quantile(0.99)),
        max: us(histogram.max()),
        mean: histogram.mean() / 1000.0,
        min: us(histogram.min()),
    };
    let roles = std::iter::once("node".to_owned())
        .chain((1..=workers.len()).map(|i| format!("worker {i}")))
        .chain((1..=services.len()).map(|i| format!("service {i}")));
    let processes: Vec<ProcessReport> = roles
        .zip(&all_pids)
        .enumerate()
        .map(|(k, (role, &pid))| ProcessReport {
            role,
            pid,
            cpu_s: match (before[k], after[k]) {
                (Some(b), Some(a)) => Some(a.cpu_s - b.cpu_s),
                _ => None,
            },
            peak_rss_kib: after[k].map(|a| a.peak_rss_kib),
            idle_rss_kib: idle.get(k).copied().flatten().map(|s| s.rss_kib),
        })
        .collect();
    let cpu_total: f64 = processes.iter().filter_map(|p| p.cpu_s).sum();
    let seconds = elapsed.as_secs_f64();
    let throughput = if seconds > 0.0 {
        completed as f64 / seconds
    } else {
        0.0
    };
    Ok(Measured {
        completed,
        accepted,
        errors,
        elapsed_s: seconds,
        throughput_rps: throughput,
        latency,
        cpu_us_per_request: if completed > 0 {
            cpu_total * 1e6 / completed as f64
        } else {
            0.0
        },
        processes,
        idle_rss_kib: idle.iter().flatten().map(|s| s.rss_kib).sum(),
        idle_pss_kib: idle.iter().flatten().map(|s| s.pss_kib).sum(),
        scrapes,
    })
}

/// Scrapes a node's `/metrics` on its own thread, as Prometheus would,
/// until stopped.
struct Scraper {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<Result<u64, String>>,
}

impl Scraper {
    fn start(at: &str, every: Duration) -> Self {
        let url = format!("http://{at}/metrics");
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            let agent: ureq::Agent = ureq::Agent::config_builder()
                .timeout_global(Some(Duration::from_secs(10)))
                .build()
                .into();
            let mut answered = 0;
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let mut response = agent.get(&url).call().map_err(|e| format!("{url}: {e}"))?;
                // Read whole, as a scraper does: the node renders it all.
                response
                    .body_mut()
                    .read_to_vec()
                    .map_err(|e| format!("{url}: {e}"))?;
                answered += 1;
            }
            Ok(answered)
        });
        Self { stop, thread }
    }

    /// Stops it; how many scrapes were answered.
    fn stop(self) -> Result<u64, BenchError> {
        let _ = self.stop.send(());
        self.thread
            .join()
            .map_err(|_| BenchError::Protocol("the scraper panicked".to_owned()))?
            .map_err(|e| BenchError::Protocol(format!("a /metrics scrape failed: {e}")))
    }
}

/// Service `i`'s part of `total` split over `n` (the first ones take the
/// remainder).
fn share(total: u64, n: usize, i: usize) -> u64 {
    let n = n as u64;
    total / n + u64::from((i as u64) < total % n)
}

/// One run of the raw ZeroMQ PUSH→PULL baseline between two processes:
/// messages per second.
fn raw_baseline(
    options: &BenchOptions,
    dir: &TempDir,
    on_progress: &mut dyn FnMut(&Progress),
) -> Result<f64, BenchError> {
    on_progress(&Progress {
        phase: "raw zeromq",
        done: 0,
        total: options.raw_messages,
        elapsed: Duration::ZERO,
    });
    let bind = match options.transport {
        Transport::Tcp => "tcp://127.0.0.1:0".to_owned(),
        Transport::Ipc => {
            // The previous run's receiver has exited, leaving its socket
            // file: binding again on it says "Address already in use".
            let path = dir.path.join("raw.sock");
            let _ = std::fs::remove_file(&path);
            format!("ipc://{}", path.display())
        }
    };
    let mut command = Command::new(&options.program);
    command.envs(options.env.iter().map(|(k, v)| (k, v)));
    command.args([
        "bench-raw",
        "receive",
        "--endpoint",
        &bind,
        "--count",
        &options.raw_messages.to_string(),
    ]);
    let mut receiver = Process::spawn(command, "raw receiver", dir)?;
    let mut lines = BufReader::new(receiver.take_stdout()?).lines();
    let mut next_line = |what: &Process| match lines.next() {
        Some(Ok(line)) => Ok(line),
        _ => Err(what.failed("exited early")),
    };
    let line = next_line(&receiver)?;
    let endpoint = line
        .strip_prefix("bound ")
        .ok_or_else(|| receiver.failed(&line))?
        .to_owned();
    let mut command = Command::new(&options.program);
    command.envs(options.env.iter().map(|(k, v)| (k, v)));
    command.args([
        "bench-raw",
        "send",
        "--endpoint",
        &endpoint,
        "--count",
        &options.raw_messages.to_string(),
        "--size",
        &options.payload.to_string(),
    ]);
    let mut sender = Process::spawn(command, "raw sender", dir)?;
    let line = next_line(&receiver)?;
    let json = line
        .strip_prefix("done ")
        .ok_or_else(|| receiver.failed(&line))?;
    let result: super::raw::RawResult = serde_json::from_str(json)
        .map_err(|e| BenchError::Protocol(format!("raw receiver wrote {json:?}: {e}")))?;
    sender.close_stdin();
    sender.wait(Duration::from_secs(10));
    receiver.wait(Duration::from_secs(10));
    Ok(result.rate_per_s)
}

/// Starts the benchmark's node: its own configuration (window, batch, a
/// fresh data directory, the journal setting), on tcp or ipc.
fn start_node(options: &BenchOptions, setup: &Setup, dir: &TempDir) -> Result<Node, BenchError> {
    let config = dir.path.join("node.toml");
    let sync = match options.journal_sync {
        SyncMode::Full => "full",
        SyncMode::Normal => "normal",
        SyncMode::Off => "off",
    };
    let mut text = format!(
        "window = {}\nbatch = {}\ndata_dir = {:?}\n[journal]\nenabled = {}\nsync = {sync:?}\n",
        setup.window, setup.batch, setup.data_dir, setup.journal
    );
    if let Some(url) = &setup.journal_url {
        text.push_str(&format!("backend = \"postgres\"\nurl = {url:?}\n"));
    }
    if let Some(endpoint) = &options.otlp_endpoint {
        text.push_str(&format!("[telemetry]\notlp_endpoint = {endpoint:?}\n"));
    }
    std::fs::write(&config, text)
        .map_err(|e| BenchError::Io(format!("cannot write {}", config.display()), e))?;
    let mut command = Command::new(&options.program);
    command.envs(options.env.iter().map(|(k, v)| (k, v)));
    command.args(["up", "--exit-with-parent"]);
    match (setup.scrape, options.transport) {
        // Its figures come from its processes, not from HTTP.
        (None, _) => command.arg("--no-http"),
        (Some(_), Transport::Tcp) => &mut command, // --any-port: port 0
        (Some(_), Transport::Ipc) => command.args(["--http", "127.0.0.1:0"]),
    };
    command
        .arg("--config")
        .arg(&config)
        .args(["--workers", &options.workers.to_string()]);
    match options.transport {
        Transport::Tcp => command.arg("--any-port"),
        Transport::Ipc => command.arg("--ipc").arg(dir.path.join("node")),
    };
    let node = Node::spawn(command, "node", dir)?;
    if setup.scrape.is_some() && node.http.is_none() {
        return Err(node.process.failed("started without its HTTP server"));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up() {
        for (total, n) in [(10, 3), (1, 1), (1_000_000, 7), (5, 5)] {
            let parts: Vec<u64> = (0..n).map(|i| share(total, n, i)).collect();
            assert_eq!(parts.iter().sum::<u64>(), total);
            assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
        }
    }
}
