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
//! Configuration (what a node runs):
//! - [`action_key`]: `Sender?Context@Decorator?Action` keys, decorators,
//!   wildcard matching.
//! - [`topic`]: `flow~decorator~sender~context~action` topics.
//! - [`flow`]: flows (ordered steps) from INI or TOML files.
//! - [`mapping`]: action mappings (key → component action or service) and
//!   DigitalPy's resolution order.
//! - [`catalog`]: all flows and mappings validated together, each step
//!   resolved to its [`catalog::StepRole`].
//! - [`diagnostic`]: errors and warnings with file and line, all collected.
//! - [`source`]: configuration files read from disk.
//! - `ini` (private): the INI dialect of DigitalPy's files, with line numbers.
//!
//! Messages on the wire:
//! - [`envelope`]: the MessagePack map every message carries.
//! - [`payload`]: the cheap check that a payload is exactly one
//!   MessagePack value, nested at most so deep.
//! - [`error_code`]: stable numbers of error results.
//! - [`wire`]: frame layouts of each socket; decoding separates incomplete
//!   from invalid.
//!
//! The node (`docs/architecture.md` says why it is built this way):
//! - [`node`]: one node: binds the sockets, starts everything, stops it in order.
//! - [`subject`]: takes requests, finds the next step, dispatches to workers;
//!   a state machine without I/O ([`subject::SubjectCore`]) in a thin shell
//!   around the sockets, one file per concept, with its model test.
//! - [`inflight`]: the Subject's credits, pending queue and in-flight table.
//! - [`ordering`]: ordering keys of ordered flows and the per-key gate that
//!   runs one request per key at a time.
//! - [`retry`]: retry policies of actions (from the mapping files) and the
//!   delay queue where retried messages wait.
//! - [`worker`]: a worker process's socket loop.
//! - [`executor`]: runs a message through its flow's component actions.
//! - [`registry`]: the components a worker can call: linked into the
//!   binary (they register themselves) or loaded from shared libraries.
//! - [`dynamic`]: loading a component from a shared library through the
//!   versioned C ABI; the only module with `unsafe` code.
//! - [`integration_manager`]: the single publisher.
//! - [`service_registry`]: service management's state (registered services,
//!   their topics, up/down by heartbeat), answered by the Subject.
//! - [`service_steps`]: the outbox of the steps given to each service, and
//!   its recoverer.
//! - [`durable`]: durable subscriptions: what was published for a named
//!   subscriber, kept in order until it acknowledges it.
//! - [`transport`]: libzmq sockets on tokio, with their limits and keys.
//! - [`security`]: keys, the services they are bound to, and what each
//!   may do.
//! - [`journal`]: the durable journal: events, the `Journal` trait, its
//!   SQLite backend, the group-commit writer (which tries a failed commit
//!   again before anything after it) and retention.
//! - [`supervisor`]: starts worker processes and restarts them: at once
//!   after one that served, with exponential backoff while they die before.
//! - [`config`], [`defaults`]: node configuration and built-in flows.
//! - [`shutdown`]: SIGINT/SIGTERM handling.
//!
//! Services:
//! - [`service`]: the Rust client: requests as futures, subscriptions,
//!   registration and heartbeats, answers to `@ASYNC` steps.
//! - [`service_management`]: the service that answers DigitalPy's
//!   service-management flows (`zmanager services serve`).
//!
//! Measuring:
//! - [`bench`](mod@bench): `zmanager bench`, the whole-system benchmark, and its load
//!   generator, latency histogram, `/proc` readings and raw ZeroMQ baseline.

pub mod action_key;
pub mod bench;
pub mod catalog;
pub mod config;
pub mod dead_letter;
pub mod dedupe;
pub mod defaults;
pub mod diagnostic;
pub mod durable;
pub mod dynamic;
pub mod envelope;
pub mod error_code;
pub mod executor;
pub mod flow;
pub mod inflight;
mod ini;
pub mod integration_manager;
pub mod journal;
pub mod mapping;
pub mod node;
pub mod operator;
pub mod ordering;
pub mod payload;
pub mod registry;
pub mod retry;
pub mod security;
pub mod service;
pub mod service_management;
pub mod service_registry;
pub mod service_steps;
pub mod shutdown;
pub mod source;
pub mod subject;
pub mod supervisor;
pub mod topic;
pub mod transport;
pub mod wire;
pub mod worker;

pub use action_key::{ActionKey, Decorator};
pub use catalog::{Catalog, StepRole};
pub use diagnostic::{Diagnostic, Diagnostics, Location};
pub use topic::Topic;
