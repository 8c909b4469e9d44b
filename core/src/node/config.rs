//! The node's configuration: TOML with defaults that run a whole node on one
//! machine, so no file is needed.
//!
//! Durations are written with units, `"500ms"`, `"30s"`, `"1h 30m"`
//! ([`crate::node::duration`]); an integer is milliseconds, and
//! each one's old key with `_ms` (`heartbeat_ms = 500`) is still read.
//!
//! ```toml
//! workers = 2                 # worker processes (default: one per core; 0: none,
//!                             # for workers run by hand with `zmanager worker`)
//! window = 256                # messages in flight per worker (its credits)
//! batch = 64                  # messages per frame to a worker, at most
//! max_pending = 10000         # requests waiting (for a worker, a key, a retry), at most
//! max_pending_mb = 256        # ... and their bytes, with flows suspended at @ASYNC
//! max_message_bytes = 1048576 # a request's envelope and payload, at most
//! handshake_timeout = "5s"    # a peer must finish its ZeroMQ handshake by then
//! max_connections = 1024      # open connections per socket (intake, workers, publish)
//! heartbeat = "500ms"         # how often the Subject and workers heartbeat
//! liveness = "3s"             # silence after which a worker is declared lost
//! message_timeout = "30s"     # the longest one action may run
//! max_attempts = 5            # deliveries of a message before it is dead-lettered
//! dedupe_window = "1m"        # a request pushed again within this is not run again
//! dedupe_capacity = 10000     # results remembered for that, at most
//! dedupe_max_mb = 64          # ... and their bytes
//! drain_timeout = "10s"       # how long SIGTERM waits for in-flight work
//! async_timeout = "1m"        # a flow suspended at @ASYNC fails after this
//! max_suspended = 10000       # flows suspended at @ASYNC at once, at most
//! service_liveness = "10s"    # a service silent this long is listed as down
//! max_services = 1000         # registered services, at most
//! service_step_timeout = "30s" # a service's answer to a step it was given, at most
//! service_retry = "1s"        # the recoverer's first delay for a service that is DOWN
//! service_retry_max = "1m"    # ... doubled at each failure, up to this
//! max_service_steps = 10000   # steps waiting for one service, at most
//! max_durables = 64           # durable subscriptions, at most
//! durable_max_messages = 10000 # what one keeps, at most: messages,
//! durable_max_mb = 8          # ... bytes,
//! durable_max_age = "1h"      # ... and age
//! data_dir = "zmanager-data"  # the journal and dead letters (relative to the config file)
//!
//! # Components loaded from shared libraries by every worker, besides the
//! # linked ones (default: none). Relative paths are relative to this file.
//! components = ["../target/release/libzmanager_component_reverse.so"]
//!
//! [endpoints]                 # tcp on loopback by default; ipc:///path works too
//! intake = "tcp://127.0.0.1:19030"    # services PUSH requests here
//! workers = "tcp://127.0.0.1:19031"   # workers connect here
//! publish = "tcp://127.0.0.1:19034"   # services SUBscribe here
//!
//! [catalog]                   # default: the flows and mappings built in
//! flows = "flows"
//! mappings = "action_mappings"
//!
//! [http]                      # health, readiness, metrics: docs/observability.md
//! enabled = true
//! listen = "127.0.0.1:19080"  # loopback only, unless `zmanager up --insecure`
//! max_connections = 1024      # open at once, at most; one more is answered 503 and closed
//! header_timeout = "10s"      # a request's head must have arrived by then, and the next
//!                             # one on a kept-alive connection too: else it is closed
//! body_timeout = "30s"        # a request's body must have arrived by then after its head
//!
//! [telemetry]                 # docs/observability.md, "Traces"
//! start_traces = false        # give a request without a traceparent a new trace
//! otlp_endpoint = "http://127.0.0.1:4318"  # export spans over OTLP/HTTP (default: none)
//! service_name = "zmanager"   # the spans' service.name
//!
//! [log]
//! format = "text"             # or "json"; --log-format and ZMANAGER_LOG_FORMAT come first
//!
//! [journal]                   # docs/reliability.md says what each setting promises
//! enabled = true              # record every request before acknowledging it
//! sync = "full"               # full | normal | off: how hard a commit reaches the disk
//! retain = "1h"               # finished messages are compacted after this
//! max_mb = 1024               # ... or sooner, oldest first, past this much data
//! compact_every = "10s"       # how often retention runs
//! backend = "sqlite"          # or "postgres": docs/deployment.md
//! # url = "postgres://zmanager@db.example/zmanager"  # backend = "postgres" only; else ZMANAGER_JOURNAL_URL
//! lease = "5s"                # postgres: a standby takes over this long after the active died
//! standby = false             # postgres: wait for the active node to go, then take over
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::catalog::Catalog;
use crate::catalog::defaults;
use crate::catalog::diagnostic::Diagnostics;
use crate::catalog::source::SourceFile;
use crate::journal::postgres::Lease;
use crate::journal::{Location, SyncMode};
use crate::node::duration;

/// The shortest duration most settings take.
const MS: Duration = Duration::from_millis(1);

/// The whole node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Worker processes the node starts; `None` means one per core, 0 none
    /// (workers are then run separately with `zmanager worker`).
    pub workers: Option<usize>,
    /// Credits per worker: how many messages it may hold at once.
    pub window: u32,
    /// Most messages sent to a worker in one frame.
    pub batch: usize,
    /// Most requests queued in the Subject waiting for a free worker; past
    /// it the Subject stops reading its intake socket (backpressure).
    pub max_pending: usize,
    /// Most bytes of requests waiting (for a worker, for their ordering key,
    /// for a retry delay) and of flows suspended at `@ASYNC` steps, in MiB.
    pub max_pending_mb: usize,
    /// The largest request taken (envelope and payload); a larger one is
    /// refused with `too_large`. It is also the largest frame a service may
    /// send at all: a larger one closes its connection before it is read.
    pub max_message_bytes: usize,
    /// How long a peer of any of the node's sockets has to complete its
    /// ZeroMQ handshake before it is disconnected.
    #[serde(alias = "handshake_timeout_ms", deserialize_with = "duration::setting")]
    pub handshake_timeout: Duration,
    /// The most connections each of the node's sockets keeps open: a peer
    /// completing its handshake beyond that is refused. Those still in
    /// their handshake count.
    pub max_connections: usize,
    /// How often the Subject and the workers heartbeat each other.
    #[serde(alias = "heartbeat_ms", deserialize_with = "duration::setting")]
    pub heartbeat: Duration,
    /// Silence after which a worker is declared lost (and a worker
    /// reconnects to a silent Subject).
    #[serde(alias = "liveness_ms", deserialize_with = "duration::setting")]
    pub liveness: Duration,
    /// The longest one action may run; past it the worker exits and its
    /// messages go elsewhere.
    #[serde(alias = "message_timeout_ms", deserialize_with = "duration::setting")]
    pub message_timeout: Duration,
    /// Deliveries of a message (crashes, hangs, panics) before it goes to
    /// the dead-letter store.
    pub max_attempts: u32,
    /// A request pushed again with the same service and id within this
    /// window is not processed again; its result is published again.
    #[serde(alias = "dedupe_window_ms", deserialize_with = "duration::setting")]
    pub dedupe_window: Duration,
    /// The most results remembered for duplicate suppression.
    pub dedupe_capacity: usize,
    /// The most bytes of results remembered for duplicate suppression, in
    /// MiB.
    pub dedupe_max_mb: usize,
    /// How long a stopping node waits for in-flight work to finish.
    #[serde(alias = "drain_timeout_ms", deserialize_with = "duration::setting")]
    pub drain_timeout: Duration,
    /// How long a flow suspended at an `@ASYNC` step waits for its answer
    /// before it ends with an `async_timeout` error result.
    #[serde(alias = "async_timeout_ms", deserialize_with = "duration::setting")]
    pub async_timeout: Duration,
    /// The most flows suspended at `@ASYNC` steps at once; past it a flow
    /// reaching one ends with an `overloaded` error result.
    pub max_suspended: usize,
    /// A registered service with no heartbeat for this long is listed as
    /// down.
    #[serde(alias = "service_liveness_ms", deserialize_with = "duration::setting")]
    pub service_liveness: Duration,
    /// The most services registered at once (down ones are forgotten first).
    pub max_services: usize,
    /// How long a service has to answer a step it was given (`[services]`)
    /// before it is marked DOWN and the step is given again.
    #[serde(
        alias = "service_step_timeout_ms",
        deserialize_with = "duration::setting"
    )]
    pub service_step_timeout: Duration,
    /// The recoverer's first delay before it gives a DOWN service its
    /// oldest step again; doubled at each failure, up to
    /// `service_retry_max`.
    #[serde(alias = "service_retry_ms", deserialize_with = "duration::setting")]
    pub service_retry: Duration,
    #[serde(alias = "service_retry_max_ms", deserialize_with = "duration::setting")]
    pub service_retry_max: Duration,
    /// The most steps waiting for one service; a flow reaching its step
    /// past that ends with code 12 (`overloaded`).
    pub max_service_steps: usize,
    /// The most durable subscriptions at once.
    pub max_durables: usize,
    /// What one durable subscription keeps unacknowledged, at most: past
    /// any of these the oldest messages are dropped (and counted).
    pub durable_max_messages: usize,
    pub durable_max_mb: usize,
    #[serde(alias = "durable_max_age_ms", deserialize_with = "duration::setting")]
    pub durable_max_age: Duration,
    /// Where the node keeps its journal and dead-letter store.
    pub data_dir: PathBuf,
    /// Shared libraries of dynamic components, loaded by the node (to check
    /// them at start-up) and by every worker.
    pub components: Vec<PathBuf>,
    pub endpoints: Endpoints,
    pub catalog: CatalogPaths,
    pub journal: JournalConfig,
    pub http: HttpConfig,
    pub telemetry: TelemetryConfig,
    pub log: LogConfig,
    /// CurveZMQ keys (`crate::security`); `None`: peers are not
    /// authenticated, and the node listens on loopback and ipc only.
    pub security: Option<crate::security::SecurityConfig>,
    /// Listen beyond this machine (a tcp address other than loopback)
    /// although nothing authenticates peers. Only from `zmanager up
    /// --insecure`, never from a file: see `docs/security.md`.
    #[serde(skip)]
    pub insecure: bool,
    /// Environment variables the node sets on the worker processes it
    /// starts (the command line's log format). Never from a file.
    #[serde(skip)]
    pub worker_env: Vec<(String, String)>,
}

/// The durable journal (`docs/reliability.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JournalConfig {
    /// Record every request (and each step of its life) before it is
    /// acknowledged, and recover unfinished work at start-up. Off: faster,
    /// and everything in flight dies with the node.
    pub enabled: bool,
    /// How hard each group commit tries to reach the disk.
    pub sync: SyncMode,
    /// Messages that finished (completed or dead-lettered) longer ago than
    /// this are removed from the journal.
    #[serde(alias = "retain_ms", deserialize_with = "duration::setting")]
    pub retain: Duration,
    /// Past this many megabytes of journal data, finished messages are
    /// removed oldest first before `retain`.
    pub max_mb: u64,
    /// How often retention runs.
    #[serde(alias = "compact_every_ms", deserialize_with = "duration::setting")]
    pub compact_every: Duration,
    /// Where the journal is kept.
    pub backend: JournalBackend,
    /// The PostgreSQL database of `backend = "postgres"`: a libpq
    /// connection string (`postgres://user:password@host:port/database`,
    /// or `host=… user=… dbname=…`).
    pub url: Option<DatabaseUrl>,
    /// With PostgreSQL: how long the node's hold on the journal lasts
    /// unless renewed (every third of it). A standby takes over at most
    /// this long after the active node died, hung or was cut off.
    #[serde(deserialize_with = "duration::setting")]
    pub lease: Duration,
    /// With PostgreSQL: while another node holds the journal, wait for it
    /// (without binding a socket) and take over when it is gone, rather
    /// than give up after one lease.
    pub standby: bool,
}

/// Where the journal is kept (`[journal] backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JournalBackend {
    /// SQLite, in the data directory's `zmanager.db`, beside the dead
    /// letters: one machine.
    #[default]
    Sqlite,
    /// PostgreSQL, at `url`: a database other machines can reach.
    Postgres,
}

/// The environment variable a PostgreSQL journal's `url` is taken from
/// when the configuration has none.
pub const JOURNAL_URL_VAR: &str = "ZMANAGER_JOURNAL_URL";

/// A database's connection string, which may hold a password: never shown
/// (its `Debug` hides it).
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct DatabaseUrl(pub String);

impl std::fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

impl JournalConfig {
    /// Where the journal of a node with this data directory is.
    pub fn location(&self, data_dir: &Path) -> Location {
        match (self.backend, &self.url) {
            (JournalBackend::Postgres, Some(url)) => Location::Postgres(url.0.clone()),
            // Without a url the configuration does not validate.
            _ => Location::Sqlite(data_dir.to_owned()),
        }
    }

    /// Where the dead letters of a node with this data directory are:
    /// beside the journal, and in the data directory when it is off.
    pub fn dead_letters(&self, data_dir: &Path) -> Location {
        if self.enabled {
            self.location(data_dir)
        } else {
            Location::Sqlite(data_dir.to_owned())
        }
    }

    /// How the node holds a PostgreSQL journal.
    pub fn lease(&self) -> Lease {
        Lease {
            duration: self.lease,
            standby: self.standby,
        }
    }

    fn problems(&self, problems: &mut Vec<String>) {
        if self.max_mb == 0 {
            problems.push("journal.max_mb must be at least 1".to_owned());
        }
        if self.compact_every < MS {
            problems.push("journal.compact_every must be at least 1ms".to_owned());
        }
        match (self.backend, &self.url) {
            (JournalBackend::Postgres, None) => problems.push(
                format!("journal.backend = \"postgres\" needs journal.url, the database's connection string (postgres://user@host/database), or {JOURNAL_URL_VAR} in the environment"),
            ),
            (JournalBackend::Sqlite, Some(_)) => problems.push(
                "journal.url is for backend = \"postgres\"; the sqlite journal is in data_dir".to_owned(),
            ),
            (JournalBackend::Postgres, Some(url)) => {
                if let Err(e) = crate::journal::postgres::check_url(&url.0) {
                    problems.push(e.replacen("[journal] url", "journal.url", 1));
                }
            }
            (JournalBackend::Sqlite, None) => {}
        }
        if self.lease < Duration::from_millis(300) || self.lease > Duration::from_secs(3600) {
            problems.push("journal.lease must be 300ms to 1h".to_owned());
        }
        if self.standby && self.backend != JournalBackend::Postgres {
            problems.push(
                "journal.standby needs backend = \"postgres\": a standby shares the active node's journal".to_owned(),
            );
        }
    }
}

impl Default for JournalConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            sync: SyncMode::Full,
            retain: Duration::from_secs(3600),
            max_mb: 1_024,
            compact_every: Duration::from_secs(10),
            backend: JournalBackend::Sqlite,
            url: None,
            lease: Duration::from_secs(5),
            standby: false,
        }
    }
}

/// The node's HTTP server: health, readiness and metrics
/// (`docs/observability.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub enabled: bool,
    /// `ip:port`; loopback unless the node runs with `--insecure` (the
    /// server has no authentication yet).
    pub listen: String,
    /// The most connections open at once; one more is answered 503 and
    /// closed as soon as it is accepted.
    pub max_connections: usize,
    /// How long a client has to send a request's head (its request line
    /// and headers), from when the server starts waiting for it: on a new
    /// connection, and on a kept-alive one after each response, so it is
    /// also how long an idle connection stays open. Past it the connection
    /// is closed.
    #[serde(deserialize_with = "duration::setting")]
    pub header_timeout: Duration,
    /// How long a request's body may take to arrive, in full, after its
    /// head; reading it fails past that.
    #[serde(deserialize_with = "duration::setting")]
    pub body_timeout: Duration,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: "127.0.0.1:19080".into(),
            max_connections: 1024,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// The node's log (`zmanager up`; README, "Logs").
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// How lines are written; `--log-format` and `ZMANAGER_LOG_FORMAT`
    /// come first, and text is the default.
    pub format: Option<LogFormat>,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    /// For people (colored on a terminal unless `NO_COLOR` is set).
    Text,
    /// One JSON object a line, for log collectors.
    Json,
}

/// Traces (`docs/protocol.md` §3, "Trace context"; `docs/observability.md`,
/// "Traces").
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetryConfig {
    /// Give a request that comes without a valid `traceparent` a new trace
    /// context (off: it goes on without; one given is always carried).
    /// Implied by `otlp_endpoint`.
    pub start_traces: bool,
    /// Where an OpenTelemetry collector takes OTLP over HTTP (protobuf), as
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` is written: `http://host:4318`, to
    /// which `/v1/traces` is added. Set: the node and its workers record
    /// spans and export them there (`crate::telemetry`). Unset (the
    /// default): no exporter, and no span is made.
    pub otlp_endpoint: Option<String>,
    /// The `service.name` of the spans' resource.
    pub service_name: String,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            start_traces: false,
            otlp_endpoint: None,
            service_name: "zmanager".into(),
        }
    }
}

impl TelemetryConfig {
    /// Whether a request without a valid trace context gets a new one:
    /// `start_traces`, or spans exported (a span needs a trace).
    pub fn starts_traces(&self) -> bool {
        self.start_traces || self.otlp_endpoint.is_some()
    }

    fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Some(endpoint) = &self.otlp_endpoint
            && let Err(e) = crate::telemetry::traces_url(endpoint)
        {
            problems.push(format!("telemetry.otlp_endpoint = {endpoint:?}: {e}"));
        }
        if self.service_name.is_empty() {
            problems.push("telemetry.service_name must not be empty".to_owned());
        }
        problems
    }
}

/// Where the node's three sockets listen.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Endpoints {
    pub intake: String,
    pub workers: String,
    pub publish: String,
}

/// Directories of flows and mappings; the built-in ones when absent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogPaths {
    pub flows: Option<PathBuf>,
    pub mappings: Option<PathBuf>,
}

/// A configuration file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            workers: None,
            window: 256,
            batch: 64,
            max_pending: 10_000,
            max_pending_mb: 256,
            max_message_bytes: 1 << 20,
            handshake_timeout: Duration::from_secs(5),
            max_connections: 1024,
            heartbeat: Duration::from_millis(500),
            liveness: Duration::from_secs(3),
            message_timeout: Duration::from_secs(30),
            max_attempts: 5,
            dedupe_window: Duration::from_secs(60),
            dedupe_capacity: 10_000,
            dedupe_max_mb: 64,
            drain_timeout: Duration::from_secs(10),
            async_timeout: Duration::from_secs(60),
            max_suspended: 10_000,
            service_liveness: Duration::from_secs(10),
            max_services: 1_000,
            service_step_timeout: Duration::from_secs(30),
            service_retry: Duration::from_secs(1),
            service_retry_max: Duration::from_secs(60),
            max_service_steps: 10_000,
            max_durables: 64,
            durable_max_messages: 10_000,
            durable_max_mb: 8,
            durable_max_age: Duration::from_secs(3600),
            data_dir: PathBuf::from("zmanager-data"),
            components: Vec::new(),
            endpoints: Endpoints::default(),
            catalog: CatalogPaths::default(),
            journal: JournalConfig::default(),
            http: HttpConfig::default(),
            telemetry: TelemetryConfig::default(),
            log: LogConfig::default(),
            security: None,
            insecure: false,
            worker_env: Vec::new(),
        }
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self {
            intake: zmanager_client::DEFAULT_INTAKE.into(),
            workers: "tcp://127.0.0.1:19031".into(),
            publish: zmanager_client::DEFAULT_PUBLISH.into(),
        }
    }
}

impl Endpoints {
    /// The endpoints reachable from other machines, by name: tcp on any
    /// address but loopback (`127.0.0.0/8`, `::1`, `localhost`). ipc is a
    /// file, guarded by its directory's permissions.
    pub fn exposed(&self) -> Vec<(&'static str, &str)> {
        [
            ("intake", self.intake.as_str()),
            ("workers", self.workers.as_str()),
            ("publish", self.publish.as_str()),
        ]
        .into_iter()
        .filter(|(_, endpoint)| {
            endpoint
                .strip_prefix("tcp://")
                .is_some_and(|address| !is_loopback(address))
        })
        .collect()
    }

    /// All three sockets as ipc files in `dir`.
    pub fn ipc(dir: &Path) -> Self {
        let at = |name: &str| format!("ipc://{}", dir.join(name).display());
        Self {
            intake: at("intake.sock"),
            workers: at("workers.sock"),
            publish: at("publish.sock"),
        }
    }
}

/// True when `address` (`host:port`) names a loopback host.
fn is_loopback(address: &str) -> bool {
    let host = address.rsplit_once(':').map_or(address, |(host, _)| host);
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl NodeConfig {
    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: name.clone(),
            source,
        })?;
        let mut config = Self::from_toml(&name, &text)?;
        // Relative catalog and component paths are relative to the
        // configuration file.
        let base = path.parent().unwrap_or(Path::new(""));
        for path in [&mut config.catalog.flows, &mut config.catalog.mappings]
            .into_iter()
            .flatten()
            .chain([&mut config.data_dir])
            .chain(&mut config.components)
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if let Some(security) = &mut config.security {
            security.resolve(base);
        }
        Ok(config)
    }

    /// Parses and validates TOML text; `name` is used in errors. A
    /// PostgreSQL journal's `url` absent from it is taken from the
    /// environment's [`JOURNAL_URL_VAR`], which keeps its password out of
    /// the file.
    pub fn from_toml(name: &str, text: &str) -> Result<Self, ConfigError> {
        Self::from_toml_in(name, text, &|var| std::env::var(var).ok())
    }

    /// [`from_toml`](Self::from_toml) with `env` for the environment.
    fn from_toml_in(
        name: &str,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let mut config: Self = toml::from_str(text).map_err(|e| {
            let line = e
                .span()
                .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1);
            ConfigError::Invalid {
                path: line.map_or(name.to_owned(), |l| format!("{name}:{l}")),
                message: e.message().trim().to_owned(),
            }
        })?;
        if config.journal.backend == JournalBackend::Postgres && config.journal.url.is_none() {
            config.journal.url = env(JOURNAL_URL_VAR).map(DatabaseUrl);
        }
        config.validate().map_err(|message| ConfigError::Invalid {
            path: name.to_owned(),
            message,
        })?;
        Ok(config)
    }

    /// Every problem with the values, in one message.
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.window == 0 {
            problems.push("window must be at least 1".to_owned());
        }
        if self.batch == 0 {
            problems.push("batch must be at least 1".to_owned());
        }
        if self.max_pending == 0 {
            problems.push("max_pending must be at least 1".to_owned());
        }
        if self.max_pending_mb == 0 {
            problems.push("max_pending_mb must be at least 1".to_owned());
        }
        if self.max_message_bytes < 1024 {
            problems.push("max_message_bytes must be at least 1024".to_owned());
        }
        if self.max_message_bytes > self.max_pending_mb << 20 {
            problems.push(format!(
                "max_message_bytes ({}) must not exceed max_pending_mb ({} MiB), or one request could never be taken",
                self.max_message_bytes, self.max_pending_mb
            ));
        }
        if self.max_attempts == 0 {
            problems.push("max_attempts must be at least 1".to_owned());
        }
        if self.heartbeat < MS {
            problems.push("heartbeat must be at least 1ms".to_owned());
        }
        if self.liveness < 2 * self.heartbeat {
            problems.push(format!(
                "liveness ({}) must be at least twice heartbeat ({}), or busy peers look dead",
                duration::show(self.liveness),
                duration::show(self.heartbeat)
            ));
        }
        if self.async_timeout < MS {
            problems.push("async_timeout must be at least 1ms".to_owned());
        }
        if self.max_suspended == 0 {
            problems.push("max_suspended must be at least 1".to_owned());
        }
        if self.handshake_timeout < MS || self.handshake_timeout > Duration::from_secs(3600) {
            problems.push("handshake_timeout must be 1ms to 1h".to_owned());
        }
        if self.service_step_timeout < MS || self.service_retry < MS {
            problems.push("service_step_timeout and service_retry must be at least 1ms".to_owned());
        }
        if self.service_retry_max < self.service_retry {
            problems.push("service_retry_max must be at least service_retry".to_owned());
        }
        if self.max_durables == 0 || self.durable_max_messages == 0 || self.durable_max_mb == 0 {
            problems.push(
                "max_durables, durable_max_messages and durable_max_mb must be at least 1"
                    .to_owned(),
            );
        }
        if self.max_service_steps == 0 {
            problems.push("max_service_steps must be at least 1".to_owned());
        }
        if self.max_connections == 0 {
            problems.push("max_connections must be at least 1".to_owned());
        }
        if self.message_timeout < MS {
            problems.push("message_timeout must be at least 1ms".to_owned());
        }
        self.journal.problems(&mut problems);
        for (name, endpoint) in [
            ("intake", &self.endpoints.intake),
            ("workers", &self.endpoints.workers),
            ("publish", &self.endpoints.publish),
        ] {
            if !(endpoint.starts_with("tcp://") || endpoint.starts_with("ipc://")) {
                problems.push(format!(
                    "endpoints.{name} = {endpoint:?}: use tcp://host:port or ipc:///path"
                ));
            }
        }
        if self.http.enabled && self.http.listen.parse::<std::net::SocketAddr>().is_err() {
            problems.push(format!(
                "http.listen = {:?}: use ip:port, such as \"127.0.0.1:19080\"",
                self.http.listen
            ));
        }
        if self.http.max_connections == 0 {
            problems.push("http.max_connections must be at least 1".to_owned());
        }
        if self.http.header_timeout < MS || self.http.body_timeout < MS {
            problems
                .push("http.header_timeout and http.body_timeout must be at least 1ms".to_owned());
        }
        if let Some(security) = &self.security {
            problems.extend(security.problems());
        }
        problems.extend(self.telemetry.problems());
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems.join("; "))
        }
    }

    /// The number of worker processes to run.
    pub fn worker_count(&self) -> usize {
        self.workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(2, std::num::NonZero::get)
        })
    }

    /// Loads and validates the catalog this configuration names.
    pub fn load_catalog(&self) -> (Catalog, Diagnostics) {
        let (_, catalog, diagnostics) = self.load_versioned();
        (catalog, diagnostics)
    }

    /// The files of the catalog this configuration names (its directories
    /// as they are now, or the built-in ones), and what could not be read.
    pub fn load_sources(&self, diagnostics: &mut Diagnostics) -> crate::catalog::version::Sources {
        let flows = match &self.catalog.flows {
            Some(dir) => SourceFile::read_dir(dir, diagnostics),
            None => defaults::flows(),
        };
        let mappings = match &self.catalog.mappings {
            Some(dir) => SourceFile::read_dir(dir, diagnostics),
            None => defaults::mappings(),
        };
        crate::catalog::version::Sources { flows, mappings }
    }

    /// [`load_catalog`](Self::load_catalog), with the files it was built
    /// from.
    pub fn load_versioned(&self) -> (crate::catalog::version::Sources, Catalog, Diagnostics) {
        let mut diagnostics = Diagnostics::default();
        let sources = self.load_sources(&mut diagnostics);
        let (catalog, found) = sources.build();
        diagnostics.extend(found);
        if let Some(security) = &self.security {
            security.check_steps(&catalog, &mut diagnostics);
        }
        (sources, catalog, diagnostics)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(
            NodeConfig::from_toml("n.toml", "").unwrap(),
            NodeConfig::default()
        );
    }

    #[test]
    fn values_are_read_and_checked() {
        let c = NodeConfig::from_toml(
            "n.toml",
            "workers = 3\n[endpoints]\nintake = \"ipc:///tmp/i.sock\"\n[catalog]\nflows = \"f\"\n",
        )
        .unwrap();
        assert_eq!(c.workers, Some(3));
        assert_eq!(c.endpoints.intake, "ipc:///tmp/i.sock");
        assert_eq!(c.endpoints.publish, Endpoints::default().publish);
        assert_eq!(c.catalog.flows, Some(PathBuf::from("f")));

        let e = NodeConfig::from_toml("n.toml", "heartbeat_ms = 500\nliveness = \"600ms\"\n")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("liveness (600ms) must be at least twice heartbeat (500ms)"),
            "{e}"
        );
        let e = NodeConfig::from_toml("n.toml", "window = 0\nbatch = 0\n").unwrap_err();
        assert_eq!(
            e.to_string(),
            "n.toml: window must be at least 1; batch must be at least 1"
        );
        let e = NodeConfig::from_toml("n.toml", "\nworkerz = 2\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("n.toml:2: unknown field `workerz`"),
            "{e}"
        );
        let c = NodeConfig::from_toml("n.toml", "[journal]\nenabled = false\nsync = \"off\"\n")
            .unwrap();
        assert!(!c.journal.enabled);
        assert_eq!(c.journal.sync, SyncMode::Off);
        let e = NodeConfig::from_toml("n.toml", "[journal]\nsync = \"sometimes\"\n").unwrap_err();
        assert!(e.to_string().contains("unknown variant `sometimes`"), "{e}");
        let e =
            NodeConfig::from_toml("n.toml", "[endpoints]\nintake = \"http://x\"\n").unwrap_err();
        assert!(
            e.to_string().contains("use tcp://host:port or ipc:///path"),
            "{e}"
        );
        let e = NodeConfig::from_toml("n.toml", "max_message_bytes = 10\nmax_pending_mb = 0\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("max_message_bytes must be at least 1024"), "{e}");
        assert!(e.contains("max_pending_mb must be at least 1"), "{e}");
        let e = NodeConfig::from_toml(
            "n.toml",
            "max_message_bytes = 4194304\nmax_pending_mb = 2\n",
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("must not exceed max_pending_mb"),
            "{e}"
        );
    }

    #[test]
    fn a_postgres_journal_needs_a_url_and_hides_it() {
        let url = "postgres://zmanager:s3cret@db.example:5433/journal";
        let c = NodeConfig::from_toml(
            "n.toml",
            &format!("[journal]\nbackend = \"postgres\"\nurl = {url:?}\n"),
        )
        .unwrap();
        assert_eq!(
            c.journal.location(Path::new("data")),
            Location::Postgres(url.to_owned())
        );
        assert!(!format!("{c:?}").contains("s3cret"), "never shown");
        // From the environment when the file has none; the file's first.
        let env = |var: &str| (var == JOURNAL_URL_VAR).then(|| url.to_owned());
        let from_env =
            NodeConfig::from_toml_in("n.toml", "[journal]\nbackend = \"postgres\"\n", &env)
                .unwrap();
        assert_eq!(
            from_env.journal.location(Path::new("d")),
            Location::Postgres(url.to_owned())
        );
        let own = "postgres://other@h/d";
        let from_file = NodeConfig::from_toml_in(
            "n.toml",
            &format!("[journal]\nbackend = \"postgres\"\nurl = {own:?}\n"),
            &env,
        )
        .unwrap();
        assert_eq!(
            from_file.journal.location(Path::new("d")),
            Location::Postgres(own.to_owned())
        );
        let sqlite = NodeConfig::from_toml_in("n.toml", "[journal]\n", &env).unwrap();
        assert_eq!(sqlite.journal.url, None, "only for backend = \"postgres\"");
        assert!(!format!("{:?}", c.journal.location(Path::new("d"))).contains("s3cret"));
        assert_eq!(
            NodeConfig::default().journal.location(Path::new("data")),
            Location::Sqlite(PathBuf::from("data"))
        );
        for (toml, said) in [
            ("backend = \"postgres\"", "needs journal.url"),
            (
                "url = \"postgres://h/d\"",
                "journal.url is for backend = \"postgres\"",
            ),
            (
                "backend = \"postgres\"\nurl = \"postgres://h:notaport/d\"",
                "journal.url is not a PostgreSQL connection string",
            ),
            ("backend = \"mysql\"", "unknown variant `mysql`"),
            (
                "standby = true",
                "journal.standby needs backend = \"postgres\"",
            ),
            ("lease = \"100ms\"", "journal.lease must be 300ms to 1h"),
        ] {
            let e = NodeConfig::from_toml("n.toml", &format!("[journal]\n{toml}\n")).unwrap_err();
            assert!(e.to_string().contains(said), "{toml}: {e}");
        }
    }

    #[test]
    fn component_paths_are_relative_to_the_file() {
        let dir = std::env::temp_dir().join(format!("zmanager-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(&file, "components = [\"lib/libx.so\", \"/abs/liby.so\"]\n").unwrap();
        let config = NodeConfig::from_file(&file).unwrap();
        assert_eq!(
            config.components,
            [dir.join("lib/libx.so"), PathBuf::from("/abs/liby.so")]
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn the_built_in_catalog_is_valid() {
        let (catalog, diagnostics) = NodeConfig::default().load_catalog();
        assert!(!diagnostics.has_errors(), "{diagnostics}");
        assert!(catalog.flow("Greeting").is_some());
        assert!(catalog.flow("Echo").is_some());
    }

    #[test]
    fn only_tcp_beyond_loopback_is_exposed() {
        let at = |intake: &str, workers: &str, publish: &str| Endpoints {
            intake: intake.into(),
            workers: workers.into(),
            publish: publish.into(),
        };
        assert!(Endpoints::default().exposed().is_empty());
        assert!(Endpoints::ipc(Path::new("/run/zm")).exposed().is_empty());
        let local = at("tcp://localhost:1", "tcp://[::1]:2", "tcp://127.8.0.1:3");
        assert!(local.exposed().is_empty());
        let open = at("tcp://0.0.0.0:1", "tcp://127.0.0.1:2", "tcp://*:3");
        assert_eq!(
            open.exposed(),
            [("intake", "tcp://0.0.0.0:1"), ("publish", "tcp://*:3")]
        );
        let named = at("tcp://10.1.2.3:1", "tcp://[::]:2", "tcp://node.example:3");
        assert_eq!(named.exposed().len(), 3);
        // Never from a file.
        let e = NodeConfig::from_toml("n.toml", "insecure = true\n").unwrap_err();
        assert!(e.to_string().contains("unknown field `insecure`"), "{e}");
    }

    #[test]
    fn security_needs_sound_service_entries() {
        let text = "[security]\nkey_file = \"node.key\"\n[[security.service]]\nid = \"ada\"\npublic_key = \"short\"\n";
        let e = NodeConfig::from_toml("n.toml", text)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("security.service \"ada\": public_key: a key is 40 Z85 characters"),
            "{e}"
        );
        // Every endpoint may be tcp: each socket authenticates its peers.
        let ok =
            "[endpoints]\nworkers = \"tcp://0.0.0.0:19031\"\n[security]\nkey_file = \"node.key\"\n";
        let c = NodeConfig::from_toml("n.toml", ok).unwrap();
        assert_eq!(c.security.unwrap().key_file, PathBuf::from("node.key"));
    }
}
