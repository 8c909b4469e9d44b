//! The Rust client of a zmanager node: what a service needs to push
//! requests into flows and get their results, and nothing of the node.
//!
//! ```no_run
//! # async fn demo() -> Result<(), zmanager_client::ServiceError> {
//! use zmanager_client::{Service, ServiceOptions};
//!
//! let service = Service::connect(ServiceOptions::local("my-service")).await?;
//! let reply = service.request("Greeting", &serde_json::json!({"name": "ada"})).await?;
//! let value: serde_json::Value = reply.decode()?;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`service`]: a connected [`Service`]: the ping handshake, requests as
//!   futures ([`Service::request`], [`Service::submit`] then
//!   [`Submitted::finished`]), resent with the same id until their result
//!   comes, subscriptions ([`Subscription`]), answers to `@ASYNC` steps,
//!   registration and heartbeats; the steps a flow gives the service
//!   ([`service::steps`], [`Service::serve_steps`]) and durable
//!   subscriptions ([`service::durable`], [`Service::subscribe_durable`]).
//! - [`wire`]: the wire protocol the node and its services share
//!   (`docs/protocol.md`): the envelope ([`wire::envelope`]), error codes
//!   ([`wire::error_code`]), topics and reply topics ([`wire::topic`]),
//!   and the `[topic, envelope, payload]` frames.
//! - [`registry`]: the payloads of the node's service management
//!   (register, heartbeat, list).
//! - [`keys`]: CurveZMQ keys, for a node with `[security]`.
//! - [`transport`]: libzmq sockets on tokio, with a frame limit and keys.
//!
//! The node (`zmanager`, `core/`) depends on this crate and re-exports
//! its modules under their old paths (`zmanager::client`,
//! `zmanager::wire`, …), so each type has one definition.

pub mod keys;
pub mod registry;
pub mod service;
pub mod transport;
pub mod wire;

pub use keys::ClientKeys;
pub use service::{
    DEFAULT_INTAKE, DEFAULT_PUBLISH, Delivery, DurableSubscription, Endpoints, Outcome, Published,
    RESUBSCRIBE_IDLE, Reply, Service, ServiceError, ServiceOptions, StepError, StepServer,
    Submitted, Subscription, TAKE_EVERY, describe_failure,
};
pub use wire::error_code::ErrorCode;
