//! `zmanager chaos`: a flow under load while faults are injected, every
//! result checked (see `zmanager_bench::chaos` and docs/chaos.md).
//! Progress on stderr, the table on stdout; exit 0 clean, 1 something
//! lost, duplicated, unexpected or out of order (or an action ran more
//! than `--max-runs`), 2 bad input (before any load), 3 the run itself
//! failed (the node did not start, …).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use zmanager::node::duration::parse as duration;
use zmanager_bench::BenchError;
use zmanager_bench::chaos::{
    self, ChaosOptions, ChaosProgress, Fault, PayloadSource, Planned, Target,
};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The flow every request goes into.
    #[arg(long)]
    flow: String,
    /// The node's configuration (TOML): chaos starts a node on it.
    #[arg(long, value_name = "FILE", conflicts_with = "intake")]
    config: Option<PathBuf>,
    /// Directory of flows (overrides the configuration's).
    #[arg(long, conflicts_with = "intake")]
    flows: Option<PathBuf>,
    /// Directory of action mappings (overrides the configuration's).
    #[arg(long, conflicts_with = "intake")]
    mappings: Option<PathBuf>,
    /// A dynamic component's shared library (repeatable).
    #[arg(long = "component", value_name = "PATH", conflicts_with = "intake")]
    components: Vec<PathBuf>,
    /// Worker processes of the node chaos starts [default: the
    /// configuration's, or 2 without one].
    #[arg(long, short = 'w', conflicts_with = "intake")]
    workers: Option<usize>,
    /// A running node's intake: chaos starts no node, and only client-side
    /// faults and --fault-command apply.
    #[arg(long, requires = "publish")]
    intake: Option<String>,
    /// A running node's publish endpoint (with --intake).
    #[arg(long, requires = "intake")]
    publish: Option<String>,
    /// Requests, each its own id (K).
    #[arg(long, short = 'k', default_value_t = 2000)]
    requests: u64,
    /// Requests outstanding at once (W).
    #[arg(long, short = 'i', default_value_t = 100)]
    in_flight: usize,
    /// The payload as JSON, with `{seq}` (the request's number, 0…K-1),
    /// `{key}` (seq % --keys) and `{record}` (the --record-file path)
    /// replaced.
    #[arg(long, value_name = "JSON", default_value = "{\"seq\": {seq}}")]
    payload_template: String,
    /// Payloads from a file, used in turn: JSON lines (`.json`, `.jsonl`,
    /// `.ndjson`) or MessagePack values one after another.
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
    /// Ordering keys: `{key}`, and `order_key` for a flow ordered by
    /// `envelope`.
    #[arg(long, default_value_t = 16)]
    keys: u64,
    /// SIGKILL a random worker process this often ("1s").
    #[arg(long, value_name = "EVERY", value_parser = duration)]
    kill_worker: Option<Duration>,
    /// SIGSTOP a random worker process this often; SIGKILL it once the
    /// node's liveness has passed.
    #[arg(long, value_name = "EVERY", value_parser = duration)]
    stop_worker: Option<Duration>,
    /// kill -9 the node and its workers this often, and restart it on the
    /// same data directory and endpoints.
    #[arg(long, value_name = "EVERY", value_parser = duration)]
    kill_node: Option<Duration>,
    /// Stop reading results this often, for --slow-for.
    #[arg(long, value_name = "EVERY", value_parser = duration)]
    slow_subscriber: Option<Duration>,
    /// How long a --slow-subscriber pause lasts.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "2s")]
    slow_for: Duration,
    /// Close the client's sockets and make them again this often.
    #[arg(long, value_name = "EVERY", value_parser = duration)]
    drop_connection: Option<Duration>,
    /// Run a command of yours (`sh -c`) this often: `5s:COMMAND`
    /// (repeatable).
    #[arg(long, value_name = "EVERY:COMMAND")]
    fault_command: Vec<String>,
    /// The file the flow's action appends a line to per call (Probe's
    /// `record` does): the report counts runs per id from it.
    #[arg(long, value_name = "FILE")]
    record_file: Option<PathBuf>,
    /// Which whitespace-separated field of a record line names the
    /// request: its `{seq}` or its id (1 = the first field).
    #[arg(long, default_value_t = 2)]
    record_field: usize,
    /// Fail (exit 1) when the action ran more often than this for one id.
    #[arg(long, value_name = "N")]
    max_runs: Option<u64>,
    /// Send a request again (same id) when it was not acknowledged within
    /// this.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "2s")]
    resend_after: Duration,
    /// Send an acknowledged request again when its result has not come
    /// within this.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "5s")]
    result_patience: Duration,
    /// End the run when no new result came for this long: what is
    /// missing is lost.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "60s")]
    give_up_after: Duration,
    /// After the last result, listen this long for late copies.
    #[arg(long, value_name = "DURATION", value_parser = duration, default_value = "1s")]
    settle: Duration,
    /// Also write the report as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Runs it; `env` is set on every process it starts.
pub(crate) fn run(args: Args, env: Vec<(String, String)>) -> ExitCode {
    match run_inner(args, env) {
        Ok(code) => code,
        Err(e) => {
            let code = match e.downcast_ref::<BenchError>() {
                Some(BenchError::Invalid(_)) => 2,
                _ => 3,
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

fn run_inner(args: Args, env: Vec<(String, String)>) -> anyhow::Result<ExitCode> {
    let invalid = |e: String| anyhow::Error::new(BenchError::Invalid(e));
    let program = std::env::current_exe()
        .map_err(|e| anyhow::anyhow!("cannot find the zmanager binary to start processes: {e}"))?;
    let target = match (args.intake, args.publish) {
        (Some(intake), Some(publish)) => Target::Running { intake, publish },
        _ => Target::Start {
            workers: args.workers.or(args.config.is_none().then_some(2)),
            config: args.config,
            flows: args.flows,
            mappings: args.mappings,
            components: args.components,
        },
    };
    let mut faults = Vec::new();
    for (every, fault) in [
        (args.kill_worker, Fault::KillWorker),
        (args.stop_worker, Fault::StopWorker),
        (args.kill_node, Fault::KillNode),
        (args.slow_subscriber, Fault::SlowSubscriber),
        (args.drop_connection, Fault::DropConnection),
    ] {
        if let Some(every) = every {
            faults.push(Planned { fault, every });
        }
    }
    for text in &args.fault_command {
        faults.push(chaos::schedule::parse_command(text).map_err(invalid)?);
    }
    let options = ChaosOptions {
        env,
        target,
        requests: args.requests,
        in_flight: args.in_flight,
        payload: match args.payload_file {
            Some(path) => PayloadSource::File(path),
            None => PayloadSource::Template(args.payload_template),
        },
        keys: args.keys,
        faults,
        slow_for: args.slow_for,
        record_file: args.record_file.as_deref().map(chaos::record_path),
        record_field: args.record_field,
        max_runs: args.max_runs,
        resend_after: args.resend_after,
        result_patience: args.result_patience,
        give_up_after: args.give_up_after,
        settle: args.settle,
        ..ChaosOptions::new(program, &args.flow)
    };
    let mut progress = ProgressLine::new();
    let report = chaos::run(&options, &mut |p| progress.show(p));
    progress.clear();
    let report = report?;
    print!("{}", report.render());
    if let Some(path) = &args.json {
        let json = serde_json::to_string_pretty(&report)?;
        std::fs::write(path, json + "\n")
            .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    }
    Ok(if report.clean {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// One updating line on stderr (a line per second when stderr is not a
/// terminal).
struct ProgressLine {
    terminal: bool,
    last: Option<Instant>,
}

impl ProgressLine {
    fn new() -> Self {
        Self {
            terminal: std::io::stderr().is_terminal(),
            last: None,
        }
    }

    fn show(&mut self, p: &ChaosProgress) {
        let f = &p.faults;
        let text = if p.phase == "running" {
            format!(
                "chaos: running  {} / {} answered, {} sent, {} in flight; kills: {} workers, {} nodes; \
                 {} stops, {} drops, {} pauses, {} commands  {:.1} s",
                p.answered,
                p.total,
                p.sent,
                p.in_flight,
                f.worker_kills,
                f.node_kills,
                f.worker_stops,
                f.dropped_connections,
                f.slow_subscriber,
                f.commands,
                p.elapsed.as_secs_f64()
            )
        } else {
            format!("chaos: {}", p.phase)
        };
        let mut err = std::io::stderr().lock();
        if self.terminal {
            let _ = write!(err, "\r\x1b[2K{text}");
            let _ = err.flush();
        } else if p.phase != "running" {
            let _ = writeln!(err, "{text}");
        } else if self
            .last
            .is_none_or(|at| at.elapsed() >= Duration::from_secs(1))
        {
            // Only running lines are throttled: a phase line just before
            // must not swallow the first of them.
            let _ = writeln!(err, "{text}");
            self.last = Some(Instant::now());
        }
    }

    fn clear(&mut self) {
        if self.terminal {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
        }
    }
}
