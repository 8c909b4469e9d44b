//! `zmanager worker`: one worker process, started by `zmanager up` — or run
//! by hand against a node started with `--workers 0`, to outlive it.

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::bail;
use zmanager::components::registry::Registry;
use zmanager::node::config::{CatalogPaths, NodeConfig};
use zmanager::node::duration;
use zmanager::security::{read_key_file, read_public_key};
use zmanager::transport::ClientKeys;
use zmanager::worker::WorkerOptions;
use zmanager::worker::executor::Executor;

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The Subject's worker endpoint. Given more than once (an active node
    /// and its standby: docs/deployment.md), the worker connects to one at a
    /// time, and to the next each time it connects again: after the one it
    /// served was silent for --liveness, or never answered.
    #[arg(long, required = true)]
    endpoint: Vec<String>,
    /// This worker's identity, unique per start [default: HOST-PID, this
    /// machine's host name and this process's id].
    #[arg(long)]
    identity: Option<String>,
    /// Messages this worker takes at once.
    #[arg(long, default_value_t = 256)]
    credits: u32,
    /// How often to heartbeat the Subject: "500ms", "1s", or milliseconds
    /// (default: the node's default, 500ms). Must be the node's.
    #[arg(long, alias = "heartbeat-ms", value_name = "DURATION", value_parser = duration::parse)]
    heartbeat: Option<Duration>,
    /// Silence from the Subject after which to reconnect (default 3s).
    #[arg(long, alias = "liveness-ms", value_name = "DURATION", value_parser = duration::parse)]
    liveness: Option<Duration>,
    /// The longest one action may run before this worker exits (default
    /// 30s).
    #[arg(long, alias = "message-timeout-ms", value_name = "DURATION", value_parser = duration::parse)]
    message_timeout: Option<Duration>,
    /// Directory of flows (default: the built-in ones); must be the
    /// node's.
    #[arg(long)]
    flows: Option<PathBuf>,
    /// Directory of action mappings (default: the built-in ones); must be
    /// the node's.
    #[arg(long)]
    mappings: Option<PathBuf>,
    /// A dynamic component's shared library to load (repeatable).
    #[arg(long = "component", value_name = "PATH")]
    components: Vec<PathBuf>,
    /// Stop when stdin closes (the node holds its other end).
    #[arg(long)]
    exit_with_parent: bool,
    /// Write one line on stdout once the first results are returned (the
    /// node's supervisor reads it: a worker that served is restarted at once
    /// when it dies, one that never did with backoff).
    #[arg(long)]
    report_serving: bool,
    /// Read this worker's CURVE keys from the first line of stdin (how the
    /// node gives its own workers theirs: server, public and secret key in
    /// Z85).
    #[arg(long, conflicts_with_all = ["key_file", "server_key"])]
    keys_on_stdin: bool,
    /// This worker's key pair (`zmanager keys new`), for a node with
    /// `[security]` that lists its public key in `security.workers`.
    #[arg(long, value_name = "FILE", requires = "server_key")]
    key_file: Option<PathBuf>,
    /// The node's public key: its Z85 text, or its `.pub` file. Z85 has
    /// `-` in its alphabet, so a key may begin with one.
    #[arg(
        long,
        value_name = "KEY|FILE",
        requires = "key_file",
        allow_hyphen_values = true
    )]
    server_key: Option<String>,
    /// Export the spans of the actions run (`[telemetry] otlp_endpoint`:
    /// an OTLP/HTTP collector, `http://host:4318`). The node gives its
    /// own workers its own.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    /// The `service.name` of those spans.
    #[arg(long, default_value = "zmanager", requires = "otlp_endpoint")]
    service_name: String,
}

/// The keys the arguments name, if any.
fn keys(args: &Args) -> anyhow::Result<Option<ClientKeys>> {
    if args.keys_on_stdin {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line)?;
        let keys =
            ClientKeys::from_line(&line).map_err(|e| anyhow::anyhow!("--keys-on-stdin: {e}"))?;
        return Ok(Some(keys));
    }
    let (Some(file), Some(server)) = (&args.key_file, &args.server_key) else {
        return Ok(None);
    };
    let (public, secret) = read_key_file(file).map_err(anyhow::Error::msg)?;
    let server = read_public_key(server).map_err(|e| anyhow::anyhow!("--server-key: {e}"))?;
    Ok(Some(ClientKeys {
        server,
        public,
        secret,
    }))
}

pub(crate) fn run(args: Args, format: crate::logging::LogFormat) -> anyhow::Result<ExitCode> {
    let exporter = args
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| crate::logging::Exporter {
            endpoint,
            service_name: &args.service_name,
            role: "worker",
        });
    // Dropped last: what is queued is exported as the worker stops.
    let telemetry = crate::logging::init(format, exporter)?;
    // First: the node writes the keys as the worker starts.
    let keys = keys(&args)?;
    let config = NodeConfig {
        catalog: CatalogPaths {
            flows: args.flows,
            mappings: args.mappings,
        },
        ..NodeConfig::default()
    };
    let (sources, catalog, mut diagnostics) = config.load_versioned();
    let registry = Registry::with_libraries(&args.components, &mut diagnostics);
    registry.check(&catalog, &mut diagnostics);
    if diagnostics.has_errors() {
        bail!("the flows, mappings and components have errors:\n{diagnostics}");
    }
    // Its own catalog's digest, for READY: the Subject offers it the
    // versions it holds, with their files when this is not one of them.
    let executor = Executor::new(Arc::new(catalog), registry)
        .with_digest(sources.digest())
        .traced(telemetry.is_some());
    let options = WorkerOptions {
        endpoints: args.endpoint,
        identity: args.identity.unwrap_or_else(default_identity),
        credits: args.credits,
        heartbeat: args.heartbeat.unwrap_or(config.heartbeat),
        liveness: args.liveness.unwrap_or(config.liveness),
        message_timeout: args.message_timeout.unwrap_or(config.message_timeout),
        report_serving: args.report_serving,
        keys,
    };
    crate::runtime(false)?.block_on(async move {
        let shutdown = if args.exit_with_parent {
            zmanager::node::shutdown::on_terminate_only()
        } else {
            zmanager::node::shutdown::on_signal()
        };
        if args.exit_with_parent {
            let token = shutdown.clone();
            std::thread::spawn(move || {
                let _ = std::io::stdin().read_to_end(&mut Vec::new());
                token.cancel();
            });
        }
        zmanager::worker::run(options, executor, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}

/// `HOST-PID`: unique per start on one machine, and telling which machine
/// a worker runs on in the node's log.
fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".to_owned());
    format!("{host}-{}", std::process::id())
}
