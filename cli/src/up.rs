//! `zmanager up`: run a node.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use zmanager::node::config::{Endpoints, NodeConfig};

#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Node configuration (TOML); the built-in defaults when absent.
    #[arg(long, short, env = "ZMANAGER_CONFIG")]
    pub(crate) config: Option<PathBuf>,
    /// Number of worker processes (overrides the configuration; 0 for none:
    /// workers then connect from `zmanager worker` processes run separately).
    #[arg(long, short)]
    workers: Option<usize>,
    /// Listen on ipc sockets in this directory instead of tcp.
    #[arg(long, value_name = "DIR")]
    ipc: Option<PathBuf>,
    /// Listen on tcp loopback with ports chosen by the system (for tests).
    #[arg(long, conflicts_with = "ipc")]
    any_port: bool,
    /// Directory of flows (overrides the configuration).
    #[arg(long)]
    flows: Option<PathBuf>,
    /// Directory of action mappings (overrides the configuration).
    #[arg(long)]
    mappings: Option<PathBuf>,
    /// Where the dead-letter store is kept (overrides the configuration).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A dynamic component's shared library, loaded by every worker
    /// (repeatable; added to the configuration's `components`).
    #[arg(long = "component", value_name = "PATH")]
    components: Vec<PathBuf>,
    /// Listen on tcp addresses other than loopback although nothing
    /// authenticates peers (logged as a warning at every start). Without
    /// it, such a configuration is refused.
    #[arg(long)]
    insecure: bool,
    /// Where the HTTP server (health, readiness, metrics) listens, `ip:port`
    /// (overrides the configuration's `[http] listen`).
    #[arg(long, value_name = "ADDR", conflicts_with = "no_http")]
    http: Option<String>,
    /// No HTTP server.
    #[arg(long)]
    no_http: bool,
    /// Stop, as on SIGTERM, when stdin closes: for a parent that starts the
    /// node (`zmanager bench`), so the node never outlives it.
    #[arg(long, hide = true)]
    exit_with_parent: bool,
}

/// Runs a node, logging in `format`; `worker_env` is set on its workers
/// (the log format).
pub(crate) fn run(
    args: Args,
    format: crate::logging::LogFormat,
    worker_env: Vec<(String, String)>,
) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if args.workers.is_some() {
        config.workers = args.workers;
    }
    if let Some(dir) = &args.ipc {
        config.endpoints = Endpoints::ipc(&std::path::absolute(dir)?);
    }
    if args.any_port {
        config.endpoints = Endpoints {
            intake: "tcp://127.0.0.1:0".into(),
            workers: "tcp://127.0.0.1:0".into(),
            publish: "tcp://127.0.0.1:0".into(),
        };
    }
    if args.any_port {
        config.http.listen = "127.0.0.1:0".into();
    }
    if let Some(at) = args.http {
        config.http.listen = at;
        config.http.enabled = true;
    }
    if args.no_http {
        config.http.enabled = false;
    }
    config.validate().map_err(anyhow::Error::msg)?;
    // Dropped last: the spans still queued are exported after the node
    // (and its workers) stopped.
    let telemetry = &config.telemetry;
    let exporter = telemetry
        .otlp_endpoint
        .as_deref()
        .map(|endpoint| crate::logging::Exporter {
            endpoint,
            service_name: &telemetry.service_name,
            role: "node",
        });
    let _telemetry = crate::logging::init(format, exporter)?;
    if let Some(dir) = args.flows {
        config.catalog.flows = Some(std::path::absolute(dir)?);
    }
    if let Some(dir) = args.mappings {
        config.catalog.mappings = Some(std::path::absolute(dir)?);
    }
    if let Some(dir) = args.data_dir {
        config.data_dir = std::path::absolute(dir)?;
    }
    config.insecure = args.insecure;
    config.worker_env = worker_env;
    config.components.extend(args.components);
    // Workers get these paths: absolute, so they do not depend on a
    // working directory.
    for library in &mut config.components {
        *library = std::path::absolute(&*library)?;
    }
    let program =
        std::env::current_exe().context("cannot find the zmanager binary to start workers")?;

    let data_dir = config.data_dir.clone();
    crate::runtime(true)?.block_on(async move {
        let shutdown = zmanager::node::shutdown::on_signal();
        if args.exit_with_parent {
            let token = shutdown.clone();
            std::thread::spawn(move || {
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
                token.cancel();
            });
        }
        zmanager::node::run(config, program, shutdown, |bound, http| {
            // One line a script or test can read.
            let http = http.map_or_else(|| "off".to_owned(), |at| at.to_string());
            println!(
                "zmanager listening intake={} workers={} publish={} http={http} data_dir={}",
                bound.intake,
                bound.workers,
                bound.publish,
                data_dir.display()
            );
        })
        .await?;
        Ok(ExitCode::SUCCESS)
    })
}
