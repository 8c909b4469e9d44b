//! zmanager: message-driven applications out of components, wired by ZeroMQ.
//!
//! A port of DigitalPy's ZManager. Services push requests; the Subject works
//! out each request's next flow step and spreads the work over worker
//! processes; workers route each message by its action key through the
//! action mappings to component actions; the Integration Manager publishes
//! results on topics.
//!
//! # Layout
//!
//! What a node runs:
//! - [`catalog`]: all flows and mappings validated together, each step
//!   resolved to its [`StepRole`]; with its parts: `Sender?Context@Decorator?Action`
//!   keys ([`catalog::action_key`]), topics ([`catalog::topic`]), flows
//!   from INI or TOML ([`catalog::flow`]), action mappings and DigitalPy's
//!   resolution order ([`catalog::mapping`]), diagnostics with file and line
//!   ([`catalog::diagnostic`]), files read from disk ([`catalog::source`]),
//!   the built-in flows ([`catalog::defaults`]), DigitalPy's component
//!   manifests ([`catalog::manifest`]) and internal mappings
//!   ([`catalog::internal`]), and the INI dialect of DigitalPy's files
//!   (private).
//! - [`digitalpy`]: a DigitalPy application's tree of files, its
//!   `configuration_management.ini` read into node settings, and the
//!   zmanager node imported from them (`zmanager import-digitalpy`).
//!
//! Messages on the wire ([`wire`]): frame layouts of each socket, decoding
//! that separates incomplete from invalid; the MessagePack map every
//! message carries ([`wire::envelope`]); the cheap check that a payload is
//! one MessagePack value nested at most so deep ([`wire::payload`]); the
//! stable numbers of error results ([`wire::error_code`]); the W3C trace
//! context a request carries through its flow ([`wire::trace_context`]).
//! What services share with the node — the envelope, error codes, a
//! service's frames, topics, the registry's payloads, CURVE keys, the
//! libzmq socket adapter — is defined in the client crate,
//! [`zmanager_client`] (`clients/rust/`), and re-exported here under these
//! paths.
//!
//! The node (`docs/architecture.md` says why it is built this way):
//! - [`node`]: one node: binds the sockets, starts everything, stops it in
//!   order; its configuration ([`node::config`]), the supervisor that
//!   starts and restarts worker processes ([`node::supervisor`]), SIGINT
//!   and SIGTERM ([`node::shutdown`]).
//! - [`subject`]: takes requests, finds the next step, dispatches to workers;
//!   a state machine without I/O ([`subject::SubjectCore`]) in a thin shell
//!   around the sockets, one file per concept, with its model test.
//! - [`inflight`]: the Subject's credits, pending queue and in-flight table.
//! - [`ordering`]: ordering keys of ordered flows and the per-key gate that
//!   runs one request per key at a time.
//! - [`dedupe`]: the results kept to answer a request sent again.
//! - [`retry`]: retry policies of actions (read with the mapping files) and
//!   the delay queue where retried messages wait.
//! - [`backoff`]: the exponential backoff that retry delays, worker restarts
//!   and a service's recoverer share, and the jitter that spreads it.
//! - [`dead_letter`]: messages that ran out of attempts, kept to be
//!   replayed; how a replay resumes and is settled ([`dead_letter::replay`]),
//!   the same for `zmanager dlq` and HTTP.
//! - [`integration_manager`]: the single publisher.
//! - [`http`]: the node's HTTP server: health, readiness, metrics, and the
//!   gateway under `/v1` (requests, their state and journey, topic streams,
//!   dead letters, services and workers).
//! - [`services`]: what the node keeps for services: their registry, the
//!   steps given to them, durable subscriptions, and the service-management
//!   service.
//! - [`journal`]: the durable journal: events, the `Journal` trait, its
//!   SQLite backend, the group-commit writer (which tries a failed commit
//!   again before anything after it) and retention.
//! - [`transport`]: libzmq sockets on tokio, with their limits and keys.
//! - [`security`]: keys, the services they are bound to, what each may do,
//!   and the operator's cookie ([`security::operator`]).
//! - [`telemetry`]: traces out of the process, over OTLP/HTTP, when
//!   `[telemetry] otlp_endpoint` is set: the exporter, and the sink the
//!   Subject's recorded spans ([`subject::SpanRecord`]) go to.
//!
//! A worker process:
//! - [`worker`]: its socket loop; [`worker::executor`] runs a message
//!   through its flow's component actions.
//! - [`components`]: the components it can call, linked into the binary or
//!   loaded from shared libraries.
//!
//! Services:
//! - [`client`]: the Rust client, re-exported from its own crate,
//!   `zmanager-client` (`clients/rust/`), which a service depends on
//!   without the node: requests as futures, subscriptions, registration
//!   and heartbeats, answers to `@ASYNC` steps, steps given to the
//!   service, durable subscriptions.
//!
//! The `zmanager` command is the `zmanager-cli` crate (`cli/`), and its
//! whole-system benchmark, `zmanager bench`, the `zmanager-bench` crate
//! (`bench/`).

pub mod backoff;
pub mod buckets;
pub mod catalog;
pub mod client;
pub mod components;
pub mod dead_letter;
pub mod dedupe;
pub mod digitalpy;
pub mod http;
pub mod inflight;
pub mod integration_manager;
pub mod journal;
pub mod node;
pub mod ordering;
pub mod retry;
pub mod security;
pub mod services;
pub mod subject;
pub mod telemetry;
pub mod transport;
pub mod wire;
pub mod worker;

pub use catalog::action_key::{ActionKey, Decorator};
pub use catalog::diagnostic::{Diagnostic, Diagnostics, Location};
pub use catalog::topic::Topic;
pub use catalog::{Catalog, StepRole};
