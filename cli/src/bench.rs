//! `zmanager bench`: the whole-system benchmark (see `zmanager::bench`),
//! and the hidden `bench-client` and `bench-raw` subcommands it starts.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use zmanager::journal::SyncMode;
use zmanager_bench::load::LoadOptions;
use zmanager_bench::page::{plural, thousands};
use zmanager_bench::{self as bench, BenchOptions, JournalMode, Progress, Report, Transport};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum JournalArg {
    On,
    Off,
    /// Both, in alternating runs, compared.
    Both,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum SyncArg {
    Full,
    Normal,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum TransportArg {
    Tcp,
    Ipc,
}

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Worker processes of the node (N; `-w` as for `zmanager up`).
    #[arg(long, short = 'w', default_value_t = 2)]
    workers: usize,
    /// Requests measured, over all services (K).
    #[arg(long, short = 'k', default_value_t = 1_000_000)]
    requests: u64,
    /// Requests outstanding at once, over all services (W).
    #[arg(long, short = 'i', default_value_t = 1000)]
    in_flight: usize,
    /// Service processes pushing requests (S).
    #[arg(long, short = 's', default_value_t = 1)]
    services: usize,
    /// Bytes of each request's payload (P; `send --payload` is JSON, so
    /// this one is named for what it counts).
    #[arg(
        long = "payload-bytes",
        short = 'b',
        alias = "payload",
        default_value_t = 64
    )]
    payload: usize,
    /// Run the node with the journal on, off, or both (alternating runs,
    /// compared). With it on, services wait for each request's `accepted`
    /// acknowledgement, as services that want durability do.
    #[arg(long, value_enum, default_value_t = JournalArg::Both)]
    journal: JournalArg,
    /// The journal's sync setting when it is on.
    #[arg(long, value_enum, default_value_t = SyncArg::Full)]
    journal_sync: SyncArg,
    /// Keep the journal (when on) in this PostgreSQL database instead of
    /// SQLite: a libpq connection string. Each run gets a schema of its own
    /// there (`zmanager_bench_…`, dropped after the run); nothing else in
    /// the database is touched. The database server's own CPU is not in
    /// the figures.
    #[arg(long, value_name = "URL")]
    journal_url: Option<String>,
    /// Measured runs per journal setting; the comparison uses medians.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// How services and workers reach the node.
    #[arg(long, value_enum, default_value_t = TransportArg::Tcp)]
    transport: TransportArg,
    /// The flow requests go into (its steps should be cheap actions).
    #[arg(long, default_value = "Echo")]
    flow: String,
    /// Requests per service before measuring, not counted.
    #[arg(long, default_value_t = 2000)]
    warmup: u64,
    /// The node's credits per worker (default: the node's default).
    #[arg(long)]
    window: Option<u32>,
    /// The node's most messages per frame to a worker (default: the node's).
    #[arg(long)]
    batch: Option<usize>,
    /// Messages per run of the raw ZeroMQ PUSH→PULL baseline; 0 skips it.
    #[arg(long, default_value_t = 1_000_000)]
    raw_messages: u64,
    /// Runs of the raw baseline (one before the node starts, the others
    /// after it stops); the ratio uses their median.
    #[arg(long, default_value_t = 3)]
    raw_runs: usize,
    /// Also measure the ordered flow `EchoOrdered` with `--keys` ordering
    /// keys, after the unordered run, and compare them.
    #[arg(long)]
    ordered: bool,
    /// Ordering keys of the `--ordered` run (request n has key n % keys).
    #[arg(long, default_value_t = 1000)]
    keys: u64,
    /// Also scrape the node's `/metrics` this often during runs ("1s"),
    /// and compare runs scraped and not (alternating, medians): what
    /// watching a node costs it.
    #[arg(long, value_name = "DURATION", value_parser = zmanager::node::duration::parse)]
    scrape_every: Option<std::time::Duration>,
    /// Also write the figures as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Instead of one run, measure the journal off and on at every count
    /// of `--report-in-flight` (at `--payload-bytes`) and every size of
    /// `--report-payloads` (at `--in-flight`, with raw ZeroMQ at that
    /// size), and write charts of throughput, bytes per second and
    /// latency to this HTML file (`--json`: the figures). `--requests` is
    /// the most a point runs; few in flight and large payloads run fewer.
    #[arg(long, value_name = "FILE.html")]
    report: Option<PathBuf>,
    /// The in-flight counts of `--report`, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "1,10,100,1000,10000",
        requires = "report"
    )]
    report_in_flight: Vec<usize>,
    /// The payload sizes of `--report`, bytes, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "64,1024,16384,65536",
        requires = "report"
    )]
    report_payloads: Vec<usize>,
    /// Run the node with `[telemetry] otlp_endpoint` set to this URL: every
    /// request is traced and its spans exported there (docs/observability.md,
    /// "Traces"), to measure what that costs.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

/// Runs the benchmark; `env` is set on every process it starts.
pub(crate) fn run(args: Args, env: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    let program =
        std::env::current_exe().context("cannot find the zmanager binary to start processes")?;
    let options = BenchOptions {
        env,
        workers: args.workers,
        services: args.services,
        requests: args.requests,
        in_flight: args.in_flight,
        payload: args.payload,
        journal: match args.journal {
            JournalArg::On => JournalMode::On,
            JournalArg::Off => JournalMode::Off,
            JournalArg::Both => JournalMode::Both,
        },
        journal_sync: match args.journal_sync {
            SyncArg::Full => SyncMode::Full,
            SyncArg::Normal => SyncMode::Normal,
            SyncArg::Off => SyncMode::Off,
        },
        journal_url: args.journal_url,
        rounds: args.rounds,
        transport: match args.transport {
            TransportArg::Tcp => Transport::Tcp,
            TransportArg::Ipc => Transport::Ipc,
        },
        flow: args.flow,
        warmup: args.warmup,
        window: args.window,
        batch: args.batch,
        raw_messages: args.raw_messages,
        raw_runs: args.raw_runs,
        scrape_every: args.scrape_every,
        otlp_endpoint: args.otlp_endpoint,
        ..BenchOptions::new(program)
    };
    options.validate()?;
    if args.ordered && args.keys == 0 {
        anyhow::bail!("--keys must be at least 1");
    }
    let mut progress = ProgressLine::new();
    if let Some(page) = &args.report {
        if args.ordered {
            anyhow::bail!("--report measures the flow of --flow; --ordered is a run of its own");
        }
        let axes = bench::sweep::Axes {
            in_flight: args.report_in_flight.clone(),
            payloads: args.report_payloads.clone(),
        };
        let sweep = bench::sweep::run(&options, &axes, &mut |p| progress.show(p));
        progress.clear();
        let sweep = sweep?;
        print!("{}", render_sweep(&sweep));
        std::fs::write(page, bench::page::render(&sweep))
            .with_context(|| format!("cannot write {}", page.display()))?;
        println!("report       {}", page.display());
        if let Some(path) = &args.json {
            let json = serde_json::to_string_pretty(&sweep)?;
            std::fs::write(path, json + "\n")
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let report = bench::run(&options, &mut |p| progress.show(p));
    progress.clear();
    let report = report?;
    print!("{}", render(&report));
    let json = if args.ordered {
        // The same load into the ordered Echo flow, without the raw
        // baseline (measured once, above).
        let ordered_options = BenchOptions {
            flow: "EchoOrdered".to_owned(),
            keys: args.keys,
            raw_messages: 0,
            ..options
        };
        let ordered = bench::run(&ordered_options, &mut |p| progress.show(p));
        progress.clear();
        let ordered = ordered?;
        println!();
        print!("{}", render(&ordered));
        let ratio = ordered.throughput_rps / report.throughput_rps.max(1e-9);
        println!();
        println!(
            "ordered      {} requests/s with {} keys = {:.1}% of unordered ({} requests/s)",
            thousands(ordered.throughput_rps as u64),
            thousands(args.keys),
            ratio * 100.0,
            thousands(report.throughput_rps as u64),
        );
        serde_json::json!({ "unordered": report, "ordered": ordered, "ordered_ratio": ratio })
    } else {
        serde_json::to_value(&report)?
    };
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&json)?;
        std::fs::write(path, json + "\n")
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// One updating line on stderr (a line per second when stderr is not a
/// terminal).
struct ProgressLine {
    terminal: bool,
    last: Option<(&'static str, Instant)>,
}

impl ProgressLine {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, p: &Progress) {
        let text = if p.phase == "running" {
            let rate = p.done as f64 / p.elapsed.as_secs_f64().max(1e-9);
            format!(
                "bench: running  {} / {} requests  {}/s  {:.1} s",
                thousands(p.done),
                thousands(p.total),
                thousands(rate as u64),
                p.elapsed.as_secs_f64()
            )
        } else if p.total > 0 && p.phase == "warming up" {
            format!(
                "bench: warming up ({} of {} services ready)",
                p.done, p.total
            )
        } else {
            format!("bench: {}", p.phase)
        };
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        } else {
            let due = match self.last {
                Some((phase, at)) => phase != p.phase || at.elapsed() >= Duration::from_secs(1),
                None => true,
            };
            if due {
                let _ = writeln!(err, "{text}");
                self.last = Some((p.phase, Instant::now()));
            }
        }
    }

    fn clear(&mut self) {
        if self.terminal {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}

fn micros(us: f64) -> String {
    if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "-".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// A `--report` sweep as text: a line per run.
fn render_sweep(sweep: &bench::sweep::Sweep) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "zmanager bench --report: flow {}, {}, {}, journal on: {} (sync {:?})",
        sweep.flow,
        plural(sweep.workers, "worker"),
        plural(sweep.services, "service"),
        sweep.journal_backend,
        sweep.journal_sync
    );
    let _ = writeln!(
        out,
        "{:>9} {:>9} {:>7} {:>9} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "in flight",
        "payload",
        "journal",
        "requests",
        "requests/s",
        "MB/s",
        "raw MB/s",
        "p50",
        "p99",
        "CPU µs"
    );
    for p in &sweep.points {
        let _ = writeln!(
            out,
            "{:>9} {:>9} {:>7} {:>9} {:>12} {:>9.1} {:>9} {:>9} {:>9} {:>9.1}",
            p.in_flight,
            p.payload_bytes,
            if p.journal { "on" } else { "off" },
            thousands(p.requests),
            thousands(p.throughput_rps as u64),
            p.payload_mb_per_s,
            p.raw_mb_per_s
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
            micros(p.latency_us.p50),
            micros(p.latency_us.p99),
            p.cpu_us_per_request,
        );
    }
    out
}

/// The report as text.
fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let c = &r.config;
    let m = &r.machine;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "zmanager bench: flow {}, {}, {}, {} requests, {} in flight, {}-byte payload, journal {} (sync {:?}, {}), {} (window {}, batch {})",
        c.flow,
        plural(c.workers, "worker"),
        plural(c.services, "service"),
        thousands(c.requests),
        c.in_flight,
        c.payload_bytes,
        match c.journal {
            JournalMode::On => "on",
            JournalMode::Off => "off",
            JournalMode::Both => "on and off",
        },
        c.journal_sync,
        c.journal_backend,
        match c.transport {
            Transport::Tcp => "tcp",
            Transport::Ipc => "ipc",
        },
        c.window,
        c.batch,
    );
    if c.keys > 0 {
        let _ = writeln!(out, "ordering keys: {}", thousands(c.keys));
    }
    let _ = writeln!(
        out,
        "machine: {} CPUs, {}, Linux {}, load average {:.2} at start",
        m.cpus, m.cpu_model, m.kernel, m.load_average
    );
    let _ = writeln!(out);
    if let Some(j) = &r.journal_comparison {
        let runs = |v: &[f64]| {
            v.iter()
                .map(|r| thousands(*r as u64))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(
            out,
            "journal off  {} requests/s  (median of {}: {})",
            thousands(j.median_off_rps as u64),
            j.off_rps.len(),
            runs(&j.off_rps)
        );
        let _ = writeln!(
            out,
            "journal on   {} requests/s  (median of {}: {}; sync {:?}, services wait for acks)",
            thousands(j.median_on_rps as u64),
            j.on_rps.len(),
            runs(&j.on_rps),
            c.journal_sync
        );
        let _ = writeln!(out, "journal on is {:.0}% of journal off", j.ratio * 100.0);
        let _ = writeln!(
            out,
            "(the figures below are the last run with the journal on)"
        );
        let _ = writeln!(out);
    }
    if let Some(s) = &r.scrape_comparison {
        let j = &s.runs;
        let _ = writeln!(
            out,
            "not scraped  {} requests/s  (median of {}, HTTP off)",
            thousands(j.median_off_rps as u64),
            j.off_rps.len()
        );
        let _ = writeln!(
            out,
            "scraped      {} requests/s  (median of {}, /metrics every {} ms, {} scrapes answered)",
            thousands(j.median_on_rps as u64),
            j.on_rps.len(),
            s.every_ms,
            s.scrapes
        );
        let _ = writeln!(out, "scraped is {:.1}% of not scraped", j.ratio * 100.0);
        let _ = writeln!(out);
    }
    let _ = writeln!(
        out,
        "throughput   {} requests/s  ({} in {:.2} s, {} errors, {} acknowledged)",
        thousands(r.throughput_rps as u64),
        thousands(r.completed),
        r.elapsed_s,
        r.errors,
        thousands(r.accepted)
    );
    let l = &r.latency_us;
    let _ = writeln!(
        out,
        "latency      p50 {}  p90 {}  p99 {}  max {}  (mean {})",
        micros(l.p50),
        micros(l.p90),
        micros(l.p99),
        micros(l.max),
        micros(l.mean)
    );
    match (&r.raw_zeromq, r.ratio_to_raw) {
        (Some(raw), Some(ratio)) => {
            let runs: Vec<String> = raw
                .runs_per_s
                .iter()
                .map(|r| format!("{:.2}M", r / 1e6))
                .collect();
            let _ = writeln!(
                out,
                "raw ZeroMQ   {} messages/s PUSH→PULL between two processes (median of {}: {}; {} × {} B each)",
                thousands(raw.rate_per_s as u64),
                raw.runs_per_s.len(),
                runs.join(", "),
                thousands(raw.messages_per_run),
                raw.payload_bytes,
            );
            let _ = writeln!(
                out,
                "ratio        {ratio:.3} of raw ZeroMQ (requests/s ÷ raw messages/s)"
            );
        }
        _ => {
            let _ = writeln!(out, "raw ZeroMQ   not measured (--raw-messages 0)");
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>9} {:>12} {:>12}",
        "process", "pid", "CPU s", "peak RSS", "idle RSS"
    );
    for p in &r.processes {
        let cpu = p
            .cpu_s
            .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"));
        let idle = if p.idle_rss_kib.is_some() {
            mib(p.idle_rss_kib)
        } else {
            String::new()
        };
        let _ = writeln!(
            out,
            "{:<12} {:>8} {:>9} {:>12} {:>12}",
            p.role,
            p.pid,
            cpu,
            mib(p.peak_rss_kib),
            idle
        );
    }
    let cpu_total: f64 = r.processes.iter().filter_map(|p| p.cpu_s).sum();
    let _ = writeln!(
        out,
        "{:<12} {:>8} {:>9} {:>12} {:>12}",
        "all",
        "",
        format!("{cpu_total:.2}"),
        "",
        mib(Some(r.idle_rss_kib))
    );
    let _ = writeln!(
        out,
        "CPU per request: {:.1} µs (all processes); idle node with its workers: {} resident \
         in total ({} as RSS summed, which counts the shared binary once per process)",
        r.cpu_us_per_request,
        mib(Some(r.idle_pss_kib)),
        mib(Some(r.idle_rss_kib))
    );
    out
}

#[derive(Debug, clap::Args)]
pub(crate) struct ClientArgs {
    #[arg(long)]
    intake: String,
    #[arg(long)]
    publish: String,
    #[arg(long)]
    service: String,
    #[arg(long, default_value = "Echo")]
    flow: String,
    #[arg(long, default_value_t = 64)]
    payload: usize,
    #[arg(long, default_value_t = 0)]
    keys: u64,
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    #[arg(long)]
    requests: u64,
    #[arg(long)]
    in_flight: usize,
    /// Ask for each request's `accepted` acknowledgement.
    #[arg(long)]
    ack: bool,
}

/// One service process of `zmanager bench`.
pub(crate) fn client(args: ClientArgs) -> anyhow::Result<ExitCode> {
    let options = LoadOptions {
        intake: args.intake,
        publish: args.publish,
        service: args.service,
        flow: args.flow,
        payload: args.payload,
        ack: args.ack,
        keys: args.keys,
    };
    bench::child::service(&options, args.warmup, args.requests, args.in_flight)?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RawRole {
    /// Bind a PULL socket and count.
    Receive,
    /// Connect a PUSH socket and send.
    Send,
}

#[derive(Debug, clap::Args)]
pub(crate) struct RawArgs {
    #[arg(value_enum)]
    role: RawRole,
    /// Where to bind (receive) or connect (send).
    #[arg(long)]
    endpoint: String,
    #[arg(long)]
    count: u64,
    /// Bytes per message (send).
    #[arg(long, default_value_t = 64)]
    size: usize,
}

/// One end of the raw ZeroMQ baseline.
pub(crate) fn raw(args: RawArgs) -> anyhow::Result<ExitCode> {
    match args.role {
        RawRole::Receive => bench::child::raw_receiver(&args.endpoint, args.count)?,
        RawRole::Send => bench::child::raw_sender(&args.endpoint, args.count, args.size)?,
    }
    Ok(ExitCode::SUCCESS)
}
