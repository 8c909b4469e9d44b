//! The node's HTTP server (`docs/observability.md`): is it alive
//! (`/healthz`), can it take work (`/readyz`), and what it does
//! (`/metrics`, Prometheus text). It runs on the node's runtime and asks
//! the Subject for its figures at each request; nothing here is on the
//! path of a message.
//!
//! It has no authentication yet: the node listens on loopback for it
//! unless started with `--insecure` (`crate::node`).

mod metrics;
mod server;

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::subject::Stats;

/// How long a request waits for the Subject's figures: a Subject that
/// does not answer in this time is not ready.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the handlers share: the way to ask the Subject for its figures.
#[derive(Debug, Clone)]
pub struct HttpState {
    pub stats: mpsc::Sender<oneshot::Sender<Stats>>,
}

impl HttpState {
    async fn ask(&self) -> Option<Stats> {
        let (reply, answer) = oneshot::channel();
        self.stats.send(reply).await.ok()?;
        tokio::time::timeout(ASK_TIMEOUT, answer).await.ok()?.ok()
    }
}

/// The routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Serves the routes until `stop` is cancelled.
pub async fn serve(listener: TcpListener, state: HttpState, stop: CancellationToken) {
    server::serve(listener, router(state), stop).await;
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
    match metrics::render(&stats) {
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

async fn not_found() -> Response {
    let body = serde_json::json!({
        "error": "not found",
        "paths": ["/healthz", "/readyz", "/metrics"],
    });
    (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subject::WorkerStats;

    #[test]
    fn not_ready_says_why() {
        let mut stats = Stats::default();
        assert_eq!(not_ready(&stats), ["no worker is connected"]);
        stats.workers.push(WorkerStats {
            pid: 7,
            in_flight: 0,
        });
        assert!(not_ready(&stats).is_empty());
        stats.journal_failing = Some("database or disk is full".into());
        assert_eq!(
            not_ready(&stats),
            ["the journal cannot commit: database or disk is full"]
        );
    }
}
