//! The node's HTTP server: is it alive (`/healthz`), can it take work
//! (`/readyz`), what it does (`/metrics`, Prometheus text:
//! `docs/observability.md`), and the gateway under `/v1` (`docs/http.md`):
//! requests into flows, their state and journey.
//!
//! It runs on the node's runtime. It asks the Subject between two of its
//! turns ([`Ask`]), hands requests to it through the intake's channel,
//! and hears of their answers through the Integration Manager's taps; the
//! gateway's requests are on the path of messages like any service's, the
//! rest is not.
//!
//! - `auth`: who a request comes from (bearer tokens with `[security]`);
//! - `error`: errors as JSON with the wire's stable codes;
//! - `payload`: JSON and MessagePack bodies;
//! - `gateway`: `POST /v1/flows/{flow}/requests`;
//! - `requests`: a request's state, result and journey;
//! - `topics`: `GET /v1/topics`, what is published, as server-sent events;
//! - `dead_letters`: list, show and replay dead letters;
//! - `inventory`: the services and workers the node has;
//! - `overview`, `history`: the node at a glance and its last minutes;
//! - `flows`: the flows it runs, with each step's figures;
//! - `reload`: new flows and mappings on a running node;
//! - `page`: lists read a page at a time;
//! - `console`: the web console (`/console`, `docs/console.md`), a client
//!   of the routes above;
//! - `metrics`: the Prometheus text;
//! - `server`: accepting connections, within limits.
//!
//! The node listens on loopback for it unless started with `--insecure`
//! (`crate::node`): nothing here encrypts, so a token sent from another
//! machine would cross the network in clear.

pub mod auth;
mod console;
mod dead_letters;
pub mod error;
mod flows;
mod gateway;
pub mod history;
mod inventory;
mod metrics;
mod overview;
mod page;
mod payload;
mod reload;
mod requests;
mod server;
mod topics;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use zeromq::ZmqMessage;

use crate::integration_manager::Taps;
use crate::subject::{Ask, Stats};

pub use dead_letters::Replaying;
pub use requests::JournalReader;
pub use topics::MAX_STREAMS;

/// How long a request waits for the Subject's answer: a Subject that does
/// not answer in this time is not ready.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share.
#[derive(Debug, Clone)]
pub struct HttpState {
    /// Questions to the Subject.
    pub asks: mpsc::Sender<Ask>,
    /// Into the Subject's intake, with the service each request is made
    /// as when a token proved it.
    pub intake: mpsc::Sender<(ZmqMessage, Option<String>)>,
    /// What the Integration Manager publishes.
    pub taps: Taps,
    pub identities: auth::Identities,
    /// The journal, to read (journeys, and results past the dedupe
    /// window).
    pub journal: JournalReader,
    /// The largest request body taken.
    pub max_message_bytes: usize,
    /// The node's dead letters: connections to their store, reused.
    pub dead_letters: std::sync::Arc<crate::dead_letter::StorePool>,
    /// The flows and mappings the node runs new requests on (its newest
    /// catalog version).
    pub catalog: crate::catalog::version::Current,
    /// Reloads the node's flows and mappings (`POST /v1/reload`).
    pub reloader: Option<crate::node::reload::Reloader>,
    /// The cookie the node's own tools present to resume a request at a
    /// step of its flow (a dead letter's replay).
    pub operator: crate::security::operator::OperatorCookie,
    /// Bytes the Integration Manager has sent (all frames of every
    /// message published).
    pub published_bytes: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// What `[security]` grants each service: what it may read (topic
    /// streams, as its subscriptions), `operate` (dead letters, workers).
    pub permissions: crate::security::Permissions,
    /// Places for topic streams, [`MAX_STREAMS`] of them.
    pub streams: std::sync::Arc<tokio::sync::Semaphore>,
    /// Cancelled when the server stops: topic streams end then (a
    /// graceful shutdown waits for every answer to end).
    pub stop: CancellationToken,
    /// The dead letters being replayed now.
    pub replaying: Replaying,
    /// Worker processes the supervisor started again.
    pub worker_restarts: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The last minutes, sampled each second while the server runs.
    pub history: history::History,
}

impl HttpState {
    /// The caller of a request for operators (`operate` with
    /// `[security]`; everyone without), named by `headers` or `named`.
    fn operator(
        &self,
        headers: &axum::http::HeaderMap,
        named: Option<&str>,
    ) -> Result<auth::Caller, error::ApiError> {
        let caller = self.identities.caller(headers, named)?;
        caller.must_operate(&self.permissions)?;
        Ok(caller)
    }

    async fn ask(&self) -> Option<Stats> {
        let (reply, answer) = oneshot::channel();
        self.asks.send(Ask::Stats(reply)).await.ok()?;
        let mut stats: Stats = tokio::time::timeout(ASK_TIMEOUT, answer).await.ok()?.ok()?;
        stats.worker_restarts = self
            .worker_restarts
            .load(std::sync::atomic::Ordering::Relaxed);
        Some(stats)
    }
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/overview", get(overview::overview))
        .route("/v1/flows", get(flows::list))
        .route("/v1/reload", post(reload::reload))
        .route("/v1/flows/{flow}/requests", post(gateway::post))
        .route("/v1/requests", get(requests::list))
        .route("/v1/requests/{service}/{id}", get(requests::state))
        .route(
            "/v1/requests/{service}/{id}/journey",
            get(requests::journey),
        )
        .route("/v1/topics", get(topics::stream))
        .route("/v1/dead-letters", get(dead_letters::list))
        .route("/v1/dead-letters/{seq}", get(dead_letters::show))
        .route("/v1/dead-letters/{seq}/replay", post(dead_letters::replay))
        .route("/v1/services", get(inventory::services))
        .route("/v1/workers", get(inventory::workers))
        .route("/console", get(console::page))
        .route("/console/", get(console::page))
        .route("/console/assets/{file}", get(console::asset))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the routes within `config`'s limits until `stop` is cancelled.
pub async fn serve(
    listener: TcpListener,
    state: HttpState,
    config: crate::node::config::HttpConfig,
    stop: CancellationToken,
) {
    tokio::spawn(history::sample(
        state.clone(),
        state.history.clone(),
        stop.clone(),
    ));
    server::serve_with(listener, router(state), server::Limits::from(&config), stop).await;
}

/// Alive: the process answers HTTP.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready to take work: a worker is connected and the journal commits.
/// 503 with the reasons otherwise.
async fn readyz(State(state): State<HttpState>) -> Response {
    let reasons = match state.ask().await {
        None => vec!["the Subject does not answer".to_owned()],
        Some(stats) => not_ready(&stats),
    };
    let status = if reasons.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({ "ready": reasons.is_empty(), "reasons": reasons });
    (status, axum::Json(body)).into_response()
}

/// Why a node with these figures cannot take work (none: it can).
pub fn not_ready(stats: &Stats) -> Vec<String> {
    let mut reasons = Vec::new();
    if stats.workers.is_empty() {
        reasons.push("no worker is connected".to_owned());
    }
    if let Some(error) = &stats.journal_failing {
        reasons.push(format!("the journal cannot commit: {error}"));
    }
    reasons
}

async fn metrics(State(state): State<HttpState>) -> Response {
    let Some(stats) = state.ask().await else {
        let text = "the Subject does not answer\n";
        return (StatusCode::SERVICE_UNAVAILABLE, text).into_response();
    };
    let traffic = metrics::Node {
        bytes_out: state
            .published_bytes
            .load(std::sync::atomic::Ordering::Relaxed),
        journal_bytes: journal_bytes(&state.journal).await,
    };
    match metrics::render(&stats, &traffic) {
        Ok(text) => ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode the metrics");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "cannot encode the metrics\n",
            )
                .into_response()
        }
    }
}

/// The OpenAPI document of these routes (a test checks that it lists
/// every route and no other).
static OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}

/// The bytes of the journal's data now (`None`: the journal is off, or
/// cannot be read; the error is logged).
async fn journal_bytes(journal: &JournalReader) -> Option<u64> {
    let journal = journal.clone()?;
    let read = tokio::task::spawn_blocking(move || {
        use crate::journal::Journal;
        let journal = journal
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        journal.data_bytes()
    })
    .await
    .ok()?;
    read.inspect_err(|e| tracing::warn!(error = %e, "cannot read the journal's size"))
        .ok()
}

async fn not_found() -> Response {
    error::ApiError::http(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such path: /healthz, /readyz, /metrics, /console, and /v1 (docs/http.md)",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::WorkerStats;
    use std::collections::BTreeSet;

    /// `(method, path)` of every `.route(…)` in this file's router.
    fn routed() -> BTreeSet<(String, String)> {
        let source = include_str!("mod.rs");
        let router = &source[source.find("pub fn router").unwrap()..];
        let router = &router[..router.find("\n}\n").unwrap()];
        let compact: String = router.split_whitespace().collect();
        let mut out = BTreeSet::new();
        for part in compact.split(".route(\"").skip(1) {
            let (path, rest) = part.split_once('"').unwrap();
            let handlers = rest.split(".fallback(").next().unwrap();
            for method in ["get", "post", "put", "delete", "patch"] {
                let called = format!("{method}(");
                let found = handlers
                    .match_indices(&called)
                    .any(|(at, _)| handlers[..at].ends_with(',') || handlers[..at].ends_with('.'));
                if found {
                    out.insert((method.to_owned(), path.to_owned()));
                }
            }
        }
        out
    }

    #[test]
    fn the_openapi_document_lists_every_route_and_no_other() {
        let document: serde_json::Value = serde_json::from_str(OPENAPI).expect("valid JSON");
        assert_eq!(document["openapi"], "3.1.0");
        let mut listed = BTreeSet::new();
        for (path, item) in document["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("an item").keys() {
                listed.insert((method.clone(), path.clone()));
            }
        }
        // The console's pages are HTML for browsers, not the API.
        let (console, routed): (BTreeSet<_>, BTreeSet<_>) = routed()
            .into_iter()
            .partition(|(_, path)| path.starts_with("/console"));
        assert!(routed.len() >= 7, "{routed:?}");
        assert_eq!(console.len(), 3, "{console:?}");
        assert_eq!(listed, routed);
    }

    #[test]
    fn not_ready_says_why() {
        let mut stats = Stats::default();
        assert_eq!(not_ready(&stats), ["no worker is connected"]);
        stats.workers.push(WorkerStats {
            pid: 7,
            in_flight: 0,
            credits: 1,
            ready_us: 0,
        });
        assert!(not_ready(&stats).is_empty());
        stats.journal_failing = Some("database or disk is full".into());
        assert_eq!(
            not_ready(&stats),
            ["the journal cannot commit: database or disk is full"]
        );
    }
}
