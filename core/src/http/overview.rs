//! `GET /v1/overview` (`docs/http-operate.md`): the node at a glance, for
//! the console's first page: what it holds, its workers, its journal, how
//! each flow's requests ended, and the last minutes sampled each second
//! ([`History`]).
//!
//! With `[security]`, for a service granted `operate`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::{self, ApiError};
use super::history::History;
use super::{HttpState, journal_bytes};
use crate::buckets::Buckets;
use crate::subject::Stats;

#[derive(Debug, serde::Deserialize)]
pub(super) struct Named {
    pub(super) service: Option<String>,
}

/// The median and 99th percentile of `buckets`, in µs.
pub(super) fn percentiles(buckets: &Buckets) -> Value {
    json!({ "p50_us": buckets.quantile(0.5), "p99_us": buckets.quantile(0.99) })
}

pub(super) async fn overview(
    State(state): State<HttpState>,
    query: Result<axum::extract::Query<Named>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let params = error::query(query)?;
    state.operator(&headers, params.service.as_deref())?;
    let stats = state
        .ask()
        .await
        .ok_or_else(|| ApiError::unavailable("the Subject does not answer"))?;
    let bytes = journal_bytes(&state.journal).await;
    let body = render(&stats, state.journal.is_some(), bytes, &state.history);
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn render(stats: &Stats, journal_on: bool, journal_bytes: Option<u64>, history: &History) -> Value {
    let c = &stats.counters;
    let workers: Vec<Value> = stats
        .workers
        .iter()
        .map(|w| {
            json!({
                "pid": w.pid,
                "in_flight": w.in_flight,
                "credits": w.credits,
                "ready_us": w.ready_us,
            })
        })
        .collect();
    let flows: serde_json::Map<String, Value> = stats
        .flows
        .iter()
        .map(|(name, f)| {
            let mut figures = percentiles(&f.latency);
            figures["ended"] = json!(f.ended);
            (name.clone(), figures)
        })
        .collect();
    let journal = journal_on.then(|| {
        let mut out = json!({
            "bytes": journal_bytes,
            "failing": stats.journal_failing,
        });
        if let Some(commits) = &stats.journal {
            out["commits"] = json!(commits.seconds_us.count);
            out["commit"] = percentiles(&commits.seconds_us);
        }
        out
    });
    json!({
        "now_us": crate::wire::envelope::now_us(),
        "counters": {
            "accepted": c.accepted,
            "results": c.results,
            "rejected": c.rejected,
            "redelivered": c.redelivered,
            "retried": c.retried,
            "dead_lettered": c.dead_lettered,
            "duplicates": c.duplicates,
            "workers_lost": c.workers_lost,
            "published": c.published,
        },
        "holding": {
            "pending": stats.pending,
            "in_flight": stats.in_flight,
            "at_async": stats.at_async,
            "at_services": stats.at_services,
            "delayed": stats.delayed,
            "waiting_bytes": stats.waiting_bytes,
            "durables": stats.durables,
        },
        "workers": workers,
        "worker_restarts": stats.worker_restarts,
        "journal": journal,
        "flows": flows,
        "history": history.samples(),
    })
}
