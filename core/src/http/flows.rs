//! `GET /v1/flows` (`docs/http-operate.md`): the flows the node runs, each
//! step with what performs it (a component's action, a service, the
//! Subject itself at `@PUBLISH` and `@ASYNC`, the end), and how often each
//! step was entered and failed since the node started.
//!
//! The catalog is the node's own (`HttpState::catalog`); the figures are
//! the Subject's, asked between two of its turns.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::HttpState;
use super::error::{self, ApiError};
use super::overview::{Named, percentiles};
use crate::catalog::{RoutedFlow, StepRole};
use crate::subject::{FlowStats, StepStats};

pub(super) async fn list(
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
    let catalog = state.catalog.get();
    let flows: Vec<Value> = catalog
        .flows
        .values()
        .map(|routed| flow(routed, stats.flows.get(&routed.flow.name)))
        .collect();
    let body = json!({ "version": state.catalog.number(), "flows": flows });
    Ok((StatusCode::OK, Json(body)).into_response())
}

fn flow(routed: &RoutedFlow, figures: Option<&FlowStats>) -> Value {
    let steps: Vec<Value> = routed
        .flow
        .steps
        .iter()
        .enumerate()
        .map(|(position, step)| {
            let (role, by) = match routed.roles.get(position).map(|(role, _)| role) {
                Some(StepRole::Entry) => ("entry", None),
                Some(StepRole::Done) => ("done", None),
                Some(StepRole::Publish) => ("publish", None),
                Some(StepRole::Async) => ("async", None),
                Some(StepRole::Service(name)) => ("service", Some(name.clone())),
                Some(StepRole::Action(target)) => ("action", Some(target.to_string())),
                Some(StepRole::Unresolved) | None => ("unresolved", None),
            };
            let counts = figures
                .and_then(|f| f.steps.get(position))
                .copied()
                .unwrap_or(StepStats::default());
            json!({
                "position": position,
                "key": step.key.to_string(),
                "role": role,
                "by": by,
                "entered": counts.entered,
                "failed": counts.failed,
            })
        })
        .collect();
    let mut out = json!({
        "name": routed.flow.name,
        "ordered": routed.flow.order_by.is_some(),
        "file": routed.flow.location.file.as_ref(),
        "steps": steps,
        "ended": figures.map(|f| json!(f.ended)).unwrap_or(json!({})),
    });
    if let Some(f) = figures {
        let p = percentiles(&f.latency);
        out["p50_us"] = p["p50_us"].clone();
        out["p99_us"] = p["p99_us"].clone();
    }
    out
}
