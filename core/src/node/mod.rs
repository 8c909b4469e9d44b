//! A whole node on one machine: the Subject, the Integration Manager, and
//! supervised worker processes.
//!
//! Shutdown order (graceful, on SIGTERM or Ctrl-C): the Subject stops
//! intake and drains — workers keep working until nothing is in flight or
//! `drain_timeout` passes — then the workers stop, then the Integration
//! Manager once everything before it has handed over what it had.

pub mod config;
pub mod duration;
pub mod reload;
pub mod shutdown;
pub mod supervisor;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::catalog::diagnostic::Diagnostics;
use crate::components::registry::Registry;
use crate::dead_letter::DeadLetterStore;
use crate::integration_manager;
use crate::journal::{
    Backend, Journal, JournalError, JournalWriter, Location, Retention, Unfinished,
};
use crate::node::config::{Endpoints, NodeConfig};
use crate::node::supervisor::{Backoff, WorkerCommand};
use crate::security::operator::OperatorCookie;
use crate::subject::{self, Counters, Links, SubjectOptions};
use crate::transport::zap::Domain;
use crate::transport::{self, AsyncSocket, Gatekeeper, Limits};
use crate::wire::Message;

/// Why a node did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NodeError {
    #[error("the flows, mappings and components have errors:\n{0}")]
    Catalog(Diagnostics),
    #[error("cannot listen on {endpoint}: {reason}")]
    Bind { endpoint: String, reason: String },
    #[error(transparent)]
    DeadLetters(#[from] crate::dead_letter::StoreError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// Another node took the journal over while this one ran: it stopped.
    #[error("{0}")]
    Fenced(String),
    #[error(
        "{0} would listen beyond this machine, and nothing authenticates its peers: anyone who reaches it could push as any service, read every result and join as a worker. Listen on loopback or ipc, or start with --insecure on a network you trust (docs/security.md)"
    )]
    Exposed(String),
    #[error("security: {0}")]
    Security(String),
    #[error(transparent)]
    Operator(#[from] crate::security::operator::CookieError),
    #[error("cannot start the journal writer: {0}")]
    JournalWriter(#[source] std::io::Error),
    #[error(
        "the HTTP server cannot listen on {address}: {source} (another node? `--http ADDR` or `--no-http`)"
    )]
    Http {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot prepare {path}: {source}")]
    Ipc {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// Runs a node until `shutdown` is cancelled. `worker_program` is the
/// `zmanager` binary (its `worker` subcommand is run per worker);
/// `on_ready` is called with the endpoints actually bound (port 0 resolved),
/// and the HTTP server's address when it is on.
pub async fn run(
    config: NodeConfig,
    worker_program: PathBuf,
    shutdown: CancellationToken,
    on_ready: impl FnOnce(&Endpoints, Option<SocketAddr>),
) -> Result<Counters, NodeError> {
    let (sources, catalog, mut diagnostics) = config.load_versioned();
    // The node loads the dynamic components too, so that a library that
    // cannot be used stops it here, with its file and reason, before any
    // worker starts.
    let registry = Registry::with_libraries(&config.components, &mut diagnostics);
    registry.check(&catalog, &mut diagnostics);
    if diagnostics.has_errors() {
        return Err(NodeError::Catalog(diagnostics));
    }
    for warning in diagnostics.warnings() {
        tracing::warn!("{warning}");
    }

    // With keys, every socket authenticates its peers: services at intake
    // and publish, workers at the workers socket — the node's own with a
    // pair made for this start, given to them on their stdin.
    let keys = match &config.security {
        Some(security) => Some(security.load().map_err(NodeError::Security)?),
        None => None,
    };
    let worker_keys = match &keys {
        Some(keys) => {
            let (public, secret) = crate::security::new_pair().map_err(NodeError::Security)?;
            Some(transport::ClientKeys {
                server: keys.public,
                public,
                secret,
            })
        }
        None => None,
    };
    let http_at = if config.http.enabled {
        let at = config.http.listen.parse::<SocketAddr>();
        Some(at.map_err(|e| NodeError::Http {
            address: config.http.listen.clone(),
            source: std::io::Error::other(e),
        })?)
    } else {
        None
    };
    let mut exposed: Vec<String> = config
        .endpoints
        .exposed()
        .iter()
        .filter(|_| keys.is_none())
        .map(|(name, endpoint)| format!("{name} {endpoint}"))
        .collect();
    // The HTTP server has no authentication, keys or not.
    if let Some(at) = http_at.filter(|at| !at.ip().is_loopback()) {
        exposed.push(format!("http {at}"));
    }
    if !exposed.is_empty() {
        let exposed = exposed.join(", ");
        if !config.insecure {
            return Err(NodeError::Exposed(exposed));
        }
        tracing::warn!(endpoints = %exposed, "--insecure: listening beyond this machine with no authentication; anyone who reaches these endpoints can push as any service, read every result and join as a worker");
    }

    // A journal in PostgreSQL before the sockets: its lease is what keeps a
    // second node off it, and a standby waits here, bound to nothing (its
    // services and workers reach the active node meanwhile), until the
    // active node is gone.
    let journal_at = config.journal.location(&config.data_dir);
    let claimed = match &journal_at {
        Location::Postgres(_) if config.journal.enabled => Some(off_runtime(|| {
            Backend::open(
                &journal_at,
                config.journal.sync,
                &config.journal.lease(),
                &|| shutdown.is_cancelled(),
            )
        })?),
        _ => None,
    };
    let taken_over = claimed.as_ref().and_then(Backend::taken_over);
    // The node's other connections to a PostgreSQL journal (dead letters,
    // retention, reload) write only while this node holds its lease.
    let holding = match &claimed {
        Some(Backend::Postgres(journal)) => journal.holding(),
        _ => None,
    };
    let dead_letters_beside = match &holding {
        Some(holding) => Some(off_runtime(|| DeadLetterStore::beside(holding))?),
        None => None,
    };

    // The sockets before the data directory: a second node started by
    // mistake stops here, without touching the first one's journal.
    let context = zmq::Context::new();
    // Before any socket that asks it binds; it ends with the context.
    let connections = transport::zap::Connections::default();
    let _zap = transport::zap::start(
        &context,
        transport::zap::Gate {
            admitted: keys.as_ref().map(|keys| transport::zap::Admitted {
                services: keys.services.clone(),
                workers: keys
                    .workers
                    .iter()
                    .copied()
                    .chain(worker_keys.as_ref().map(|w| w.public))
                    .collect(),
            }),
            max_connections: config.max_connections,
            connections: connections.clone(),
        },
    )
    .map_err(|e| NodeError::Security(format!("cannot start the ZAP handler: {e}")))?;
    let limits = |domain, max_frame_bytes: usize, send_hwm: i32| Limits {
        max_frame_bytes,
        handshake: config.handshake_timeout,
        send_hwm,
        receive_hwm: 1000,
        linger: Duration::ZERO,
        curve: keys.as_ref().map(|k| k.secret),
        gate: Some(Gatekeeper {
            domain,
            connections: connections.clone(),
        }),
    };
    let (intake, intake_at) = bind(
        &context,
        zmq::PULL,
        &config.endpoints.intake,
        &limits(Domain::Intake, config.max_message_bytes, 1000),
    )?;
    // Results come back one frame per payload; an action's result may be
    // larger than a request (up to WORKER_FRAME_BYTES).
    let worker_frame = config.max_message_bytes.max(WORKER_FRAME_BYTES);
    let (router, workers_at) = bind(
        &context,
        zmq::ROUTER,
        &config.endpoints.workers,
        &limits(Domain::Workers, worker_frame, 100_000),
    )?;
    // A subscriber sends only subscriptions; what it is sent queues up to
    // the high-water mark, then PUB drops for that subscriber alone.
    let (publisher, publish_at) = bind(
        &context,
        zmq::XPUB,
        &config.endpoints.publish,
        &Limits {
            linger: integration_manager::LINGER,
            ..limits(Domain::Publish, config.max_message_bytes, 100_000)
        },
    )?;
    let bound = Endpoints {
        intake: intake_at,
        workers: workers_at,
        publish: publish_at,
    };
    let http_listener = match http_at {
        Some(at) => {
            Some(
                tokio::net::TcpListener::bind(at)
                    .await
                    .map_err(|source| NodeError::Http {
                        address: at.to_string(),
                        source,
                    })?,
            )
        }
        None => None,
    };
    let http_bound = match &http_listener {
        Some(listener) => Some(listener.local_addr().map_err(|source| NodeError::Http {
            address: config.http.listen.clone(),
            source,
        })?),
        None => None,
    };

    // Then the journal, before the dead-letter store: opening it is what
    // reads what a crash left in its log, before any other connection
    // touches the file.
    let (writer, recovered, remembered, catalogs) =
        off_runtime(|| open_journal(&config, claimed, sources, catalog))?;
    let retention = if config.journal.enabled {
        Some(off_runtime(|| {
            Retention::start(&journal_at, &config.journal, holding.as_ref())
        })?)
    } else {
        None
    };
    let dead_letters = match dead_letters_beside {
        Some(store) => store,
        None => DeadLetterStore::open(&config.journal.dead_letters(&config.data_dir))?,
    };
    let operator = OperatorCookie::load_or_create(&config.data_dir)?;
    // The HTTP server's own connection, read-only: journeys, and results
    // past the dedupe window.
    let journal_reader = if config.journal.enabled && config.http.enabled {
        Some(Arc::new(std::sync::Mutex::new(off_runtime(|| {
            Backend::open_to_read(&journal_at)
        })?)))
    } else {
        None
    };

    // Spans only with an exporter installed in this process for them
    // (`zmanager up` installs one when `otlp_endpoint` is set).
    let record_spans = config.telemetry.otlp_endpoint.is_some();
    if record_spans && crate::telemetry::installed().is_none() {
        tracing::warn!(
            "telemetry.otlp_endpoint is set, but this process installed no exporter (crate::telemetry::Telemetry::install): no spans"
        );
    }
    let record_spans = record_spans && crate::telemetry::installed().is_some();
    let (publish_tx, publish_rx) = mpsc::channel(integration_manager::QUEUE);
    let permissions = config.security.as_ref().map_or_else(
        crate::security::Permissions::open,
        crate::security::Permissions::of,
    );
    let taps = integration_manager::Taps::default();
    let published_bytes = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let im = tokio::spawn(integration_manager::run(
        publisher,
        publish_rx,
        permissions.clone(),
        taps.clone(),
        Arc::clone(&published_bytes),
    ));
    let (kill_tx, kill_rx) = mpsc::channel(64);
    let (asks_tx, asks_rx) = mpsc::channel(64);
    let (gateway_tx, gateway_rx) = mpsc::channel(64);
    let (exited_tx, exited_rx) = mpsc::channel(64);
    let drain = CancellationToken::new();
    let worker_restarts = Arc::default();
    let newest = catalogs.newest().clone();
    let catalog = crate::catalog::version::Current::new(newest.number, Arc::clone(&newest.catalog));
    let reloader = reload::start(reload::Reloading {
        config: config.clone(),
        registry,
        journal: if config.journal.enabled {
            Some(Arc::new(std::sync::Mutex::new(off_runtime(|| {
                Backend::open_beside(&journal_at, config.journal.sync, holding.as_ref())
            })?)))
        } else {
            None
        },
        asks: asks_tx.clone(),
        newest,
        current: catalog.clone(),
    });
    on_hangup(reloader.clone(), shutdown.clone());
    let journal_health = writer.as_ref().map(JournalWriter::health);
    let subject = tokio::spawn(subject::run(
        intake,
        router,
        catalogs,
        SubjectOptions {
            batch: config.batch,
            max_pending: config.max_pending,
            max_pending_bytes: config.max_pending_mb << 20,
            max_message_bytes: config.max_message_bytes,
            heartbeat: config.heartbeat,
            liveness: config.liveness,
            message_timeout: config.message_timeout,
            max_attempts: config.max_attempts,
            dedupe_window: config.dedupe_window,
            dedupe_capacity: config.dedupe_capacity,
            dedupe_max_bytes: config.dedupe_max_mb << 20,
            drain_timeout: config.drain_timeout,
            async_timeout: config.async_timeout,
            max_suspended: config.max_suspended,
            service_liveness: config.service_liveness,
            max_services: config.max_services,
            service_step_timeout: config.service_step_timeout,
            service_backoff: crate::services::steps::recoverer_backoff(
                config.service_retry,
                config.service_retry_max,
            ),
            max_service_steps: config.max_service_steps,
            durable_retention: crate::services::durable::Retention {
                max_messages: config.durable_max_messages,
                max_bytes: config.durable_max_mb << 20,
                max_age: config.durable_max_age,
            },
            max_durables: config.max_durables,
            start_traces: config.telemetry.starts_traces(),
            record_spans,
        },
        Links {
            publish: publish_tx,
            kill: kill_tx,
            dead_letters,
            drain: drain.clone(),
            journal: writer,
            recovered,
            remembered,
            operator: Some(operator.clone()),
            exited: exited_rx,
            permissions: permissions.clone(),
            asks: asks_rx,
            gateway: gateway_rx,
        },
    ));
    let http_stop = CancellationToken::new();
    let http = http_listener.map(|listener| {
        let state = crate::http::HttpState {
            asks: asks_tx,
            intake: gateway_tx,
            taps,
            identities: config.security.as_ref().map_or_else(
                crate::http::auth::Identities::open,
                crate::http::auth::Identities::of,
            ),
            journal: journal_reader,
            max_message_bytes: config.max_message_bytes,
            dead_letters: Arc::new(crate::dead_letter::StorePool::new(
                config.journal.dead_letters(&config.data_dir),
            )),
            catalog,
            reloader: Some(reloader),
            operator,
            published_bytes,
            permissions: permissions.clone(),
            streams: Arc::new(tokio::sync::Semaphore::new(crate::http::MAX_STREAMS)),
            stop: http_stop.clone(),
            replaying: crate::http::Replaying::default(),
            worker_restarts: Arc::clone(&worker_restarts),
            history: crate::http::history::History::default(),
        };
        let limits = config.http.clone();
        tokio::spawn(crate::http::serve(
            listener,
            state,
            limits,
            http_stop.clone(),
        ))
    });

    let workers_stop = CancellationToken::new();
    let command = WorkerCommand {
        program: worker_program,
        args: worker_args(&config, &bound.workers, worker_keys.is_some()),
        keys: worker_keys,
        env: config.worker_env.clone(),
    };
    let supervisor = tokio::spawn(supervisor::run(
        config.worker_count(),
        command,
        Backoff::default(),
        workers_stop.clone(),
        kill_rx,
        exited_tx,
        worker_restarts,
    ));
    tracing::info!(intake = %bound.intake, workers = %bound.workers, publish = %bound.publish, worker_processes = config.worker_count(), curve = keys.is_some(), "node listening");
    if let Some(keys) = &keys {
        tracing::info!(public_key = %crate::security::z85(&keys.public), services = keys.services.len(), "CURVE on every socket: only the services and workers in [security], and this node's own workers, connect");
    }
    if let Some(at) = http_bound {
        tracing::info!(%at, "HTTP: /healthz, /readyz, /metrics, /v1, /console");
    }
    on_ready(&bound, http_bound);

    tokio::select! {
        () = shutdown.cancelled() => {}
        error = fenced(journal_health, taken_over) => {
            // Another node runs on the journal: nothing this one does can
            // be committed, and nothing it has not committed may go out.
            // Stop at once, without draining.
            tracing::error!(error = %error, "stopping at once: another node holds the journal");
            subject.abort();
            http_stop.cancel();
            workers_stop.cancel();
            let _ = supervisor.await;
            return Err(NodeError::Fenced(error));
        }
    }
    tracing::info!("stopping: draining in-flight work first");
    drain.cancel();
    let counters = subject.await.unwrap_or_default();
    // Up while the node drains (`/readyz` says it is not ready once the
    // Subject is gone).
    http_stop.cancel();
    if let Some(http) = http {
        let _ = http.await;
    }
    workers_stop.cancel();
    let _ = supervisor.await;
    let _ = im.await;
    if let Some(retention) = retention {
        // It joins a thread that stops at once (a channel, not a sleep).
        let _ = tokio::task::spawn_blocking(move || retention.stop()).await;
    }
    tracing::info!("node stopped");
    Ok(counters)
}

/// Resolves with the error once another node holds the journal: a commit
/// refused for it (the writer's health), or, while nothing is committed,
/// the lease's renewal finding another generation (`taken_over`). Never
/// with the journal off or on SQLite.
async fn fenced(
    health: Option<tokio::sync::watch::Receiver<crate::journal::Health>>,
    taken_over: Option<Arc<std::sync::atomic::AtomicBool>>,
) -> String {
    let Some(mut health) = health else {
        return std::future::pending().await;
    };
    let mut look = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            changed = health.changed() => {
                if changed.is_err() {
                    return std::future::pending().await;
                }
                let now = health.borrow_and_update();
                if now.fenced {
                    return now.last_error.clone().unwrap_or_default();
                }
            }
            _ = look.tick(), if taken_over.is_some() => {
                if taken_over.as_ref().is_some_and(|t| t.load(std::sync::atomic::Ordering::SeqCst)) {
                    return "another node holds the journal's lease now; this node commits nothing more".to_owned();
                }
            }
        }
    }
}

/// Submissions waiting for the journal writer (one per turn of the
/// Subject's loop), and the most events committed in one transaction.
const JOURNAL_QUEUE: usize = 64;
const JOURNAL_MAX_BATCH: usize = 8192;

/// Opens the journal (when it is on) and reads what it has unfinished, and
/// the results of what finished within the dedupe window (for duplicates
/// sent again after a restart).
fn open_journal(
    config: &NodeConfig,
    claimed: Option<Backend>,
    sources: crate::catalog::version::Sources,
    catalog: crate::catalog::Catalog,
) -> Result<Opened, NodeError> {
    if !config.journal.enabled {
        tracing::info!("journal off: work in flight is lost if the node dies");
        let catalogs = reload::at_start(None, sources, catalog, &[])?;
        return Ok((None, Vec::new(), Vec::new(), catalogs));
    }
    let journal = match claimed {
        Some(journal) => journal,
        None => Backend::open(
            &config.journal.location(&config.data_dir),
            config.journal.sync,
            &config.journal.lease(),
            &|| false,
        )?,
    };
    let unfinished = journal.unfinished()?;
    let catalogs = reload::at_start(Some(&journal), sources, catalog, &unfinished)?;
    let window_us = u64::try_from(config.dedupe_window.as_micros()).unwrap_or(u64::MAX);
    let since_us = crate::wire::envelope::now_us().saturating_sub(window_us);
    let remembered = journal.recent_results(since_us, config.dedupe_capacity)?;
    tracing::info!(journal = %journal.name(), sync = ?config.journal.sync, unfinished = unfinished.len(), remembered = remembered.len(), "journal open");
    let writer = JournalWriter::start(journal, JOURNAL_QUEUE, JOURNAL_MAX_BATCH)
        .map_err(NodeError::JournalWriter)?;
    Ok((Some(writer), unfinished, remembered, catalogs))
}

/// Runs `open` on a thread of its own and waits for it. The PostgreSQL
/// journal's client runs a Tokio runtime of its own, which must not be
/// started from a task of the node's; the node waits for its journal at
/// start-up anyway.
fn off_runtime<T: Send>(open: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        scope
            .spawn(open)
            .join()
            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
    })
}

/// The writer, the unfinished messages, the recent results, the catalog's
/// versions.
type Opened = (
    Option<JournalWriter>,
    Vec<Unfinished>,
    Vec<(u64, Message)>,
    crate::catalog::version::Catalogs,
);

/// SIGHUP reloads the flows and mappings (as `zmanager reload`), until
/// the node stops.
fn on_hangup(reloader: reload::Reloader, shutdown: CancellationToken) {
    #[cfg(unix)]
    tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hangups) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload with zmanager reload");
            return;
        };
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                got = hangups.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the flows and mappings");
            // The outcome is logged by the reloading task.
            let _ = reloader.reload(false).await;
        }
    });
}

/// The arguments of `zmanager worker` for this configuration.
fn worker_args(config: &NodeConfig, endpoint: &str, keys: bool) -> Vec<String> {
    let mut args = vec![
        "worker".to_owned(),
        "--endpoint".to_owned(),
        endpoint.to_owned(),
        "--credits".to_owned(),
        config.window.to_string(),
        "--heartbeat".to_owned(),
        duration::show(config.heartbeat),
        "--liveness".to_owned(),
        duration::show(config.liveness),
        "--message-timeout".to_owned(),
        duration::show(config.message_timeout),
        "--exit-with-parent".to_owned(),
        "--report-serving".to_owned(),
    ];
    if keys {
        args.push("--keys-on-stdin".to_owned());
    }
    if let Some(dir) = &config.catalog.flows {
        args.extend(["--flows".to_owned(), dir.display().to_string()]);
    }
    if let Some(dir) = &config.catalog.mappings {
        args.extend(["--mappings".to_owned(), dir.display().to_string()]);
    }
    for library in &config.components {
        args.extend(["--component".to_owned(), library.display().to_string()]);
    }
    // Workers export their spans where the node does; without it they
    // install no exporter.
    if let Some(endpoint) = &config.telemetry.otlp_endpoint {
        args.extend([
            "--otlp-endpoint".to_owned(),
            endpoint.clone(),
            "--service-name".to_owned(),
            config.telemetry.service_name.clone(),
        ]);
    }
    args
}

/// The largest frame a worker may send: a result's payload (and so the
/// largest a service takes, which is why the client crate defines it).
pub const WORKER_FRAME_BYTES: usize = zmanager_client::wire::RESULT_FRAME_BYTES;

/// Binds a socket of `kind` with `limits`; returns it and the endpoint
/// actually bound (a tcp port 0 is resolved). For ipc, the directory is
/// created and a stale socket file left by a dead node is removed first.
fn bind(
    context: &zmq::Context,
    kind: zmq::SocketType,
    endpoint: &str,
    limits: &Limits,
) -> Result<(AsyncSocket, String), NodeError> {
    if let Some(path) = endpoint.strip_prefix("ipc://") {
        prepare_ipc(Path::new(path))?;
    }
    transport::bind(context, kind, endpoint, limits).map_err(|e| NodeError::Bind {
        endpoint: endpoint.to_owned(),
        reason: e.to_string(),
    })
}

fn prepare_ipc(path: &Path) -> Result<(), NodeError> {
    let error = |source| NodeError::Ipc {
        path: path.display().to_string(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(error)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => tracing::info!(path = %path.display(), "removed a stale ipc socket file"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    Ok(())
}
